//! The catalog: what a repository holds for one cluster, derived from what is stored and never
//! stored itself (no mutable index that a crash could leave half-written or that two writers
//! could race on). [`derive`] is pure: the listing of `<cluster>/backups/` and the documents
//! read ([`Observed`]) in, the [`Catalog`] out; [`super::load_catalog`] does the reading.
//!
//! Each backup folder is in one [`BackupState`]:
//! * complete: `pgsafe.json` parses in a format this pgsafe reads, and names the registered
//!   cluster (system identifier, major version, WAL segment size);
//! * running: no `pgsafe.json` yet, and a live lease of a backup holds its ID;
//! * incomplete: no `pgsafe.json` and no live lease: interrupted (expire removes it);
//! * corrupt: `pgsafe.json` cannot be read or parsed, or its format is newer than this pgsafe;
//! * foreign: `pgsafe.json` is of another cluster than the registered one (planted, or copied
//!   in by mistake).
//!
//! Corrupt and foreign backups are reported and never used (never `latest`, never restored by
//! the catalog's choice). Entries of `backups/` that are not backup folders (a name that is not
//! an ID, a symbolic link, a file) are reported as [`OddEntry`]s and never followed.
//!
//! Events fold in by time (then by object name, which starts with the time): the latest pin or
//! unpin of a backup decides whether it is pinned; the latest verification is the backup's
//! verification state.

use std::collections::BTreeMap;

use serde::Serialize;

use super::doc::{Event, EventKind, LeaseDoc, Registration, VerifyResult, parse_time};
use crate::info::{BackupInfo, BackupType};
use crate::storage::Ident;
use crate::types::{Lsn, TimelineId};

/// What `pgsafe.json` of a backup folder was found to be.
#[derive(Debug, Clone)]
pub enum InfoDoc {
    /// No `pgsafe.json`.
    Missing,
    /// Its bytes.
    Bytes(Vec<u8>),
    /// It could not be read (why).
    Unreadable(String),
}

/// What an entry directly under `<cluster>/backups/` is.
#[derive(Debug, Clone)]
pub enum ObservedKind {
    /// A folder, with its `pgsafe.json`.
    Folder(InfoDoc),
    /// A file where a backup folder should be.
    File,
    /// A symbolic link or special file.
    NotAnObject,
}

/// An entry directly under `<cluster>/backups/`.
#[derive(Debug, Clone)]
pub struct ObservedEntry {
    pub name: Vec<u8>,
    pub kind: ObservedKind,
}

/// A document read from the repository: its object name, and the document or why it is
/// unreadable.
#[derive(Debug, Clone)]
pub struct ObservedDoc<T> {
    pub name: String,
    pub doc: Result<T, String>,
}

/// Everything the catalog is derived from.
#[derive(Debug, Clone)]
pub struct Observed {
    pub registration: Registration,
    /// Listed before the leases (see the ordering contract in [`crate::repo`]).
    pub entries: Vec<ObservedEntry>,
    pub leases: Vec<ObservedDoc<LeaseDoc>>,
    pub events: Vec<ObservedDoc<Event>>,
    /// Now, in microseconds since the epoch.
    pub now_us: i64,
    /// How far another host's clock may be behind ours: a lease counts as live until its expiry
    /// plus this margin.
    pub clock_skew_us: i64,
}

/// The state of one backup folder (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum BackupState {
    Complete,
    Running,
    Incomplete,
    Corrupt { reason: String },
    Foreign { reason: String },
}

impl BackupState {
    pub fn name(&self) -> &'static str {
        match self {
            BackupState::Complete => "complete",
            BackupState::Running => "running",
            BackupState::Incomplete => "incomplete",
            BackupState::Corrupt { .. } => "corrupt",
            BackupState::Foreign { .. } => "foreign",
        }
    }
}

/// The latest verification of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub result: VerifyResult,
    pub problems: u64,
    /// By a restore test (restored, started, amcheck), not only checked.
    pub restore_test: bool,
    pub time: String,
    pub pgsafe_version: String,
}

/// One backup of the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct BackupEntry {
    pub id: Ident,
    #[serde(flatten)]
    pub state: BackupState,
    /// `pgsafe.json` (complete backups; foreign ones too, for the report).
    #[serde(skip)]
    pub info: Option<BackupInfo>,
    pub pinned: bool,
    pub verification: Option<Verification>,
    /// The live lease of a running backup.
    pub lease: Option<LeaseDoc>,
    /// From `pgsafe.json` (full when there is none).
    pub backup_type: BackupType,
    /// The backup a differential or incremental one needs (from `pgsafe.json`).
    pub parent: Option<Ident>,
}

impl BackupEntry {
    pub fn is_complete(&self) -> bool {
        self.state == BackupState::Complete
    }

    /// Being written: a live lease holds it and it has no `pgsafe.json` yet. Never delete it.
    pub fn in_progress(&self) -> bool {
        self.state == BackupState::Running
    }

    /// Whether the latest verification found problems.
    pub fn failed_verification(&self) -> bool {
        self.verification
            .as_ref()
            .is_some_and(|v| v.result == VerifyResult::Failed)
    }

    /// The lineage order of complete backups: timeline, then stop LSN, then start time, then
    /// ID only to break exact ties. `None` without `pgsafe.json`.
    pub fn lineage_key(&self) -> Option<(TimelineId, Lsn, i64)> {
        self.info
            .as_ref()
            .map(|i| (i.stop_tli, i.stop_lsn, i.started_at))
    }
}

/// An entry of `backups/` that is not a backup folder: reported, never followed or used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OddEntry {
    /// The name, control characters escaped.
    pub name: String,
    pub why: String,
}

/// A lease found in the repository.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseState {
    pub object: String,
    pub lease: LeaseDoc,
    pub live: bool,
}

/// The derived state of one cluster in a repository.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub cluster: Ident,
    pub registration: Registration,
    /// Complete and foreign backups with a readable `pgsafe.json` in lineage order (oldest
    /// first), then the others by ID.
    pub backups: Vec<BackupEntry>,
    pub odd_entries: Vec<OddEntry>,
    pub leases: Vec<LeaseState>,
    /// Leases and events that could not be read (object and why): reported, and an unreadable
    /// lease keeps the backup its name mentions counted as running.
    pub unreadable: Vec<OddEntry>,
}

impl Catalog {
    /// The backup `id`.
    pub fn get(&self, id: &str) -> Option<&BackupEntry> {
        self.backups.iter().find(|b| b.id.as_str() == id)
    }

    /// The newest complete backup in lineage order whose latest verification did not fail;
    /// `None` also while valid backups lie on diverging branches ([`Catalog::diverging`]): then
    /// no backup is "the latest" until the DBA has chosen.
    pub fn latest(&self) -> Option<&BackupEntry> {
        if self.diverging().is_some() {
            return None;
        }
        self.backups
            .iter()
            .filter(|b| b.is_complete() && !b.failed_verification())
            .max_by(|a, b| {
                a.lineage_key()
                    .cmp(&b.lineage_key())
                    .then_with(|| a.id.cmp(&b.id))
            })
    }

    /// Two valid complete backups on diverging branches (see
    /// [`crate::repo::retention::diverges`]), or `None`. While there is such a pair, the newest
    /// by timeline may be the abandoned branch, so [`Catalog::latest`] is `None` and a restore
    /// takes a backup only when the DBA names it.
    pub fn diverging(&self) -> Option<(String, String)> {
        crate::repo::retention::diverging_pair(
            &self.retention_entries(),
            self.registration.system_identifier,
        )
    }

    /// Retention's view of the catalog: every backup folder with its state, pin and lineage.
    pub fn retention_entries(&self) -> Vec<crate::repo::retention::BackupEntry> {
        use crate::repo::retention::{BackupEntry, EntryState, Lineage};
        self.backups
            .iter()
            .map(|b| {
                let state = match (&b.state, &b.info) {
                    (BackupState::Complete, Some(info)) => EntryState::Complete(Lineage {
                        system_identifier: info.system_identifier,
                        start_lsn: info.start_lsn,
                        stop_lsn: info.stop_lsn,
                        start_tli: info.start_tli,
                        stop_tli: info.stop_tli,
                        started_at: info.started_at,
                        finished_at: info.finished_at,
                        verification_failed: b.failed_verification(),
                        parent: b.parent.as_ref().map(|p| p.as_str().to_owned()),
                    }),
                    // The catalog always has pgsafe.json for a complete backup; without it there is
                    // nothing to order by: never touch it.
                    (BackupState::Complete, None) => EntryState::Corrupt {
                        reason: "complete, but its pgsafe.json is not at hand".into(),
                    },
                    (BackupState::Running, _) => EntryState::Running,
                    (BackupState::Incomplete, _) => EntryState::Incomplete,
                    (BackupState::Corrupt { reason }, _) => EntryState::Corrupt {
                        reason: reason.clone(),
                    },
                    (BackupState::Foreign { reason }, _) => EntryState::Foreign {
                        reason: reason.clone(),
                    },
                };
                BackupEntry {
                    id: b.id.as_str().to_owned(),
                    pinned: b.pinned,
                    state,
                }
            })
            .collect()
    }

    /// Complete backups, oldest first in lineage order.
    pub fn complete(&self) -> impl Iterator<Item = &BackupEntry> {
        self.backups.iter().filter(|b| b.is_complete())
    }

    /// Backups being written (live lease, no `pgsafe.json`): never to be deleted.
    pub fn in_progress(&self) -> impl Iterator<Item = &BackupEntry> {
        self.backups.iter().filter(|b| b.in_progress())
    }

    /// The chain of backup `id`: the backup, its parent, the parent's parent… newest first,
    /// ending at a full backup. Every link must be complete, of the same system, and the
    /// parent its child recorded (the start LSN it recorded, not later than the child's).
    /// Verification results are not judged here: see [`BackupEntry::failed_verification`].
    pub fn chain(&self, id: &str) -> Result<Vec<&BackupEntry>, ChainError> {
        let mut b = self
            .get(id)
            .ok_or_else(|| ChainError::NotFound { id: id.to_owned() })?;
        let mut out: Vec<&BackupEntry> = Vec::new();
        loop {
            let info = match (&b.state, &b.info) {
                (BackupState::Complete, Some(info)) => info,
                (state, _) => {
                    return Err(ChainError::NotComplete {
                        id: b.id.to_string(),
                        child: out.last().map(|c| c.id.to_string()),
                        state: state.name(),
                        reason: match state {
                            BackupState::Corrupt { reason } | BackupState::Foreign { reason } => {
                                Some(reason.clone())
                            }
                            _ => None,
                        },
                    });
                }
            };
            if out.iter().any(|o| o.id == b.id) {
                return Err(ChainError::Loop {
                    id: b.id.to_string(),
                });
            }
            if let Some(child) = out.last() {
                let child_info = child.info.as_ref();
                if info.system_identifier != self.registration.system_identifier
                    || child_info.is_some_and(|c| c.system_identifier != info.system_identifier)
                {
                    return Err(ChainError::OtherSystem {
                        child: child.id.to_string(),
                        parent: b.id.to_string(),
                    });
                }
                let expected = child_info.and_then(|c| c.parent_start_lsn);
                let child_start = child_info.map_or(info.start_lsn, |c| c.start_lsn);
                if expected != Some(info.start_lsn) || info.start_lsn > child_start {
                    return Err(ChainError::ParentMismatch {
                        child: child.id.to_string(),
                        parent: b.id.to_string(),
                        recorded: expected.map(|l| l.to_string()).unwrap_or_default(),
                        found: info.start_lsn.to_string(),
                    });
                }
            }
            out.push(b);
            let Some(parent) = &b.parent else {
                // derive() makes a diff or incr without a parent corrupt.
                return Ok(out);
            };
            b = self
                .get(parent.as_str())
                .ok_or_else(|| ChainError::MissingParent {
                    child: b.id.to_string(),
                    parent: parent.to_string(),
                })?;
        }
    }
}

/// Why [`Catalog::chain`] cannot give a backup's chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("there is no backup {id} in the repository")]
    NotFound { id: String },
    #[error(
        "backup {child} needs backup {parent}, which is not in the repository (removed by hand?): \
         the chain is broken; take a full backup, and restore an older complete chain meanwhile"
    )]
    MissingParent { child: String, parent: String },
    #[error(
        "backup {id}{} is {state}{}: a chain needs every backup complete; take a full backup",
        child.as_ref().map(|c| format!(" (needed by {c})")).unwrap_or_default(),
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    NotComplete {
        id: String,
        child: Option<String>,
        state: &'static str,
        reason: Option<String>,
    },
    #[error(
        "backup {parent}, the parent of {child}, is of another database system: the chain is \
         broken; take a full backup"
    )]
    OtherSystem { child: String, parent: String },
    #[error(
        "backup {parent} started at {found}, but {child} recorded its parent's start as \
         {recorded}: not the parent it was taken against (replaced?); take a full backup"
    )]
    ParentMismatch {
        child: String,
        parent: String,
        recorded: String,
        found: String,
    },
    #[error("backup {id} is its own ancestor: its pgsafe.json files form a loop")]
    Loop { id: String },
}

/// Derives the catalog; pure (see the module documentation).
pub fn derive(cluster: &Ident, obs: Observed) -> Catalog {
    let reg = &obs.registration;
    let mut odd = Vec::new();
    let mut unreadable = Vec::new();

    // Leases: live ones by backup ID; unreadable ones keep the IDs their names mention running.
    let mut leases = Vec::new();
    let mut live_backup: BTreeMap<String, LeaseDoc> = BTreeMap::new();
    let mut unreadable_lease_names = Vec::new();
    for l in obs.leases {
        match l.doc {
            Ok(doc) => {
                let live = doc.expires_us().saturating_add(obs.clock_skew_us) > obs.now_us;
                if live && doc.kind.as_str() == "backup" {
                    if let Some(b) = &doc.backup {
                        let keep = live_backup
                            .get(b.as_str())
                            .is_none_or(|old| old.seq < doc.seq);
                        if keep {
                            live_backup.insert(b.as_str().to_owned(), doc.clone());
                        }
                    }
                }
                leases.push(LeaseState {
                    object: l.name,
                    lease: doc,
                    live,
                });
            }
            Err(why) => {
                unreadable_lease_names.push(l.name.clone());
                unreadable.push(OddEntry {
                    name: l.name,
                    why: format!("lease: {why}"),
                });
            }
        }
    }

    // Events in time order, then by name (which starts with the time).
    let mut events: Vec<(i64, String, Event)> = Vec::new();
    for e in obs.events {
        match e.doc {
            Ok(doc) => {
                let t = parse_time(&doc.time).unwrap_or(i64::MIN);
                events.push((t, e.name, doc));
            }
            Err(why) => unreadable.push(OddEntry {
                name: e.name,
                why: format!("event: {why}"),
            }),
        }
    }
    events.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut pinned: BTreeMap<String, bool> = BTreeMap::new();
    let mut verified: BTreeMap<String, Verification> = BTreeMap::new();
    for (_, _, ev) in events {
        match ev.what {
            EventKind::Pin { backup } => {
                pinned.insert(backup.as_str().to_owned(), true);
            }
            EventKind::Unpin { backup } => {
                pinned.insert(backup.as_str().to_owned(), false);
            }
            EventKind::Verified {
                backup,
                result,
                problems,
                restore_test,
            } => {
                verified.insert(
                    backup.as_str().to_owned(),
                    Verification {
                        result,
                        problems,
                        restore_test,
                        time: ev.time,
                        pgsafe_version: ev.pgsafe_version,
                    },
                );
            }
            // WAL gaps and failed pushes are the archive's business (read by
            // `archive::contents` and `archive::failure`).
            EventKind::ExpireStarted { .. }
            | EventKind::WalGap { .. }
            | EventKind::PushFailed { .. }
            | EventKind::Unknown => {}
        }
    }

    let mut backups = Vec::new();
    for entry in obs.entries {
        let shown = String::from_utf8_lossy(&entry.name)
            .escape_debug()
            .to_string();
        let info_doc = match entry.kind {
            ObservedKind::File => {
                odd.push(OddEntry {
                    name: shown,
                    why: "a file where backup folders are: not a backup".into(),
                });
                continue;
            }
            ObservedKind::NotAnObject => {
                odd.push(OddEntry {
                    name: shown,
                    why: "a symbolic link or special file: never followed, not a backup".into(),
                });
                continue;
            }
            ObservedKind::Folder(d) => d,
        };
        let id = match std::str::from_utf8(&entry.name)
            .ok()
            .and_then(|s| Ident::new(s).ok())
        {
            Some(id) => id,
            None => {
                odd.push(OddEntry {
                    name: shown,
                    why: "a folder whose name is not a backup ID: not used".into(),
                });
                continue;
            }
        };
        let (state, info) = match info_doc {
            InfoDoc::Missing => {
                let by_name = unreadable_lease_names
                    .iter()
                    .any(|n| lease_name_mentions(n, id.as_str()));
                if live_backup.contains_key(id.as_str()) || by_name {
                    (BackupState::Running, None)
                } else {
                    (BackupState::Incomplete, None)
                }
            }
            InfoDoc::Unreadable(why) => (
                BackupState::Corrupt {
                    reason: format!("pgsafe.json cannot be read: {why}"),
                },
                None,
            ),
            InfoDoc::Bytes(bytes) => match BackupInfo::parse(&bytes) {
                Err(e) => (
                    BackupState::Corrupt {
                        reason: format!("pgsafe.json: {e}"),
                    },
                    None,
                ),
                Ok(info) => match (foreign_reason(reg, &info), parent_problem(&info)) {
                    (Some(reason), _) => (BackupState::Foreign { reason }, Some(info)),
                    (None, Some(reason)) => (BackupState::Corrupt { reason }, Some(info)),
                    (None, None) => (BackupState::Complete, Some(info)),
                },
            },
        };
        let lease = match state {
            BackupState::Running => live_backup.get(id.as_str()).cloned(),
            _ => None,
        };
        let backup_type = info.as_ref().map_or(BackupType::Full, |i| i.backup_type);
        let parent = info
            .as_ref()
            .and_then(|i| i.parent.as_deref())
            .and_then(|p| Ident::new(p).ok());
        backups.push(BackupEntry {
            backup_type,
            parent,
            pinned: pinned.get(id.as_str()).copied().unwrap_or(false),
            verification: verified.get(id.as_str()).cloned(),
            id,
            state,
            info,
            lease,
        });
    }
    backups.sort_by(|a, b| match (a.lineage_key(), b.lineage_key()) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.id.cmp(&b.id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.id.cmp(&b.id),
    });
    Catalog {
        cluster: cluster.clone(),
        registration: obs.registration,
        backups,
        odd_entries: odd,
        leases,
        unreadable,
    }
}

/// Whether a lease object's name (`…/backup-<id>-<seq>.json`) is about backup `id`.
fn lease_name_mentions(object: &str, id: &str) -> bool {
    let file = object.rsplit('/').next().unwrap_or(object);
    file.strip_prefix("backup-")
        .and_then(|rest| rest.strip_prefix(id))
        .is_some_and(|rest| rest.starts_with('-'))
}

/// What is wrong with a backup's parent fields, if anything: a full backup names no parent; a
/// differential or incremental one names a parent by a valid ID, with its start LSN.
fn parent_problem(info: &BackupInfo) -> Option<String> {
    match (info.backup_type, &info.parent) {
        (BackupType::Full, None) => None,
        (BackupType::Full, Some(p)) => Some(format!(
            "pgsafe.json: a full backup that names a parent ({})",
            p.escape_debug()
        )),
        (t, None) => Some(format!("pgsafe.json: a {t} backup without a parent")),
        (t, Some(p)) => {
            if Ident::new(p.as_str()).is_err() {
                Some(format!(
                    "pgsafe.json: the parent of a {t} backup, {}, is not a backup ID",
                    p.escape_debug()
                ))
            } else if info.parent_start_lsn.is_none() {
                Some(format!(
                    "pgsafe.json: a {t} backup without its parent's start LSN"
                ))
            } else {
                None
            }
        }
    }
}

/// Why a backup's `pgsafe.json` is not of the registered cluster, if it is not.
fn foreign_reason(reg: &Registration, info: &BackupInfo) -> Option<String> {
    if info.system_identifier != reg.system_identifier {
        return Some(format!(
            "system identifier {} is not the registered cluster's {}",
            info.system_identifier, reg.system_identifier
        ));
    }
    if info.server_version.major() != reg.server_version.major() {
        return Some(format!(
            "PostgreSQL {} is not the registered cluster's major version {}",
            info.server_version,
            reg.server_version.major_name()
        ));
    }
    if info.wal_segment_size != reg.wal_segment_size {
        return Some(format!(
            "WAL segment size {} is not the registered cluster's {}",
            info.wal_segment_size.bytes(),
            reg.wal_segment_size.bytes()
        ));
    }
    None
}

#[cfg(test)]
mod tests;
