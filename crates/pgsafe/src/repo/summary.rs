//! The figures of one cluster's catalog that `pgsafe info` shows and monitoring reads: status
//! and problems, the backups in lineage order with what each is, sizes and ages, and the
//! recoverability window. Pure: a [`Catalog`] and the current time in, figures out (rendering
//! is the command's).
//!
//! The recoverability window is made of the stop points of usable backups (complete, not failed
//! at their last verification, not refused by restore): restoring a backup replays its WAL to
//! its stop point (`backup_end` in `src/backend/access/transam/xlogrecovery.c` ends the
//! backup's recovery there), and the repository keeps no WAL between backups, so those points
//! and nothing between them can be reached from it.

use serde::Serialize;

use super::catalog::{BackupEntry, BackupState, Catalog, Verification};
use super::doc::VerifyResult;
use crate::info::{BackupInfo, TablespaceChange, TablespaceChangeKind, TablespaceInfo, WalMode};
use crate::page::FileBlocks;
use crate::storage::Ident;
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegment};

#[cfg(test)]
mod tests;

/// The only backup type so far (incremental backups come with a later format).
pub const FULL: &str = "full";

/// What is wrong in a cluster's part of the repository, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// No usable complete backup: nothing can be restored.
    NoUsableBackup,
    /// Valid backups lie on diverging timelines: `latest` is refused and expire deletes no
    /// complete backup until the abandoned branch's backups are removed.
    DivergingBranches,
    /// A backup's latest verification found problems.
    FailedVerification,
    /// A restore refuses the backup (a tablespace was created while it ran).
    NotRestorable,
    /// `pgsafe.json` cannot be read or parsed.
    Corrupt,
    /// `pgsafe.json` of another cluster than the registered one.
    Foreign,
    /// Pages of the source cluster failed their checksum while the backup copied them.
    SourcePageErrors,
    /// An interrupted backup (no `pgsafe.json`, no live lease).
    Incomplete,
    /// Something in `backups/` that is not a backup folder.
    OddEntry,
    /// A lease or event that cannot be read.
    UnreadableObject,
    /// A live lease that expires further ahead than any holder renews it (a forged lease, or a
    /// holder whose clock is far ahead): what it holds counts as running until then, and
    /// expire never removes it.
    ImplausibleLease,
}

/// A lease expiring further than this beyond now was not written by a holder renewing it
/// (leases live minutes: repo/lease.rs); it is still honoured (deleting on doubt is worse)
/// but reported.
pub const IMPLAUSIBLE_LEASE_US: i64 = 24 * 3600 * 1_000_000;

/// One problem: what, which backup or object, and the message a DBA reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The backup's ID, when the problem is one backup's.
    pub backup: Option<Ident>,
    /// The entry or object name, when the problem is not a backup's.
    pub object: Option<String>,
    pub message: String,
}

/// The latest verification of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerificationSummary {
    pub result: VerifyResult,
    pub problems: u64,
    /// By a restore test (restored, started, amcheck), not only checked.
    pub restore_test: bool,
    /// RFC 3339, as the event recorded it.
    pub time: String,
}

impl From<&Verification> for VerificationSummary {
    fn from(v: &Verification) -> VerificationSummary {
        VerificationSummary {
            result: v.result,
            problems: v.problems,
            restore_test: v.restore_test,
            time: v.time.clone(),
        }
    }
}

/// The live lease of a running backup: who writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Writer {
    pub host: String,
    pub pid: u32,
    pub lease_expires_at: String,
}

/// One backup as `info` lists it. Fields from `pgsafe.json` are `None` for backups without a
/// readable one (running, incomplete, corrupt).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupSummary {
    pub id: Ident,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: &'static str,
    /// Why a corrupt or foreign backup is one.
    pub reason: Option<String>,
    /// Counts in the recoverability window (complete, last verification not failed, not
    /// refused by restore).
    pub usable: bool,
    /// The backup `latest` means (what `restore --backup latest` takes).
    pub latest: bool,
    pub pinned: bool,
    pub label: Option<String>,
    /// Unix seconds (the JSON output turns them into RFC 3339).
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_secs: Option<f64>,
    pub start_lsn: Option<Lsn>,
    pub start_timeline: Option<TimelineId>,
    pub stop_lsn: Option<Lsn>,
    pub stop_timeline: Option<TimelineId>,
    /// The WAL the backup needs: its first and last segment.
    pub wal_first: Option<WalSegment>,
    pub wal_last: Option<WalSegment>,
    /// Data files, uncompressed (`bytes` of `pgsafe.json`).
    pub original_bytes: Option<u64>,
    /// Data files as stored (after compression).
    pub stored_bytes: Option<u64>,
    /// WAL stored in the backup.
    pub wal_bytes: Option<u64>,
    pub verification: Option<VerificationSummary>,
    /// Source pages that failed their checksum during the copy; `None` when not checked.
    pub page_checksum_errors: Option<u64>,
    pub writer: Option<Writer>,
    /// The backup a differential or incremental one stores the changes since.
    pub parent: Option<Ident>,
    /// Why the backup has its type (absent in backups of older pgsafe).
    pub type_reason: Option<String>,
    /// Bytes the backup read from the data directory (absent in backups of older pgsafe).
    pub bytes_read: Option<u64>,
    /// Where a differential or incremental backup's changed blocks came from, and why.
    pub changed_source: Option<crate::info::ChangedSource>,
    /// Why the backup's chain cannot be restored (a missing, incomplete or foreign link).
    pub chain_problem: Option<String>,
}

/// A point a restore can reach: a usable backup's stop point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePoint {
    pub backup: Ident,
    pub lsn: Lsn,
    pub timeline: TimelineId,
    /// When the backup finished (Unix seconds), just after the server's stop point.
    pub time: i64,
}

/// The earliest and latest points a restore from this repository can reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recoverability {
    pub earliest: Option<RestorePoint>,
    pub latest: Option<RestorePoint>,
    /// Usable backups, each one reachable point.
    pub restore_points: u64,
    /// Whether every point between earliest and latest can be reached: not without WAL kept
    /// between backups, which this repository does not store.
    pub continuous: bool,
    /// Timelines the points are on, ascending.
    pub timelines: Vec<TimelineId>,
}

/// How many backups are in each state, and their sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub backups: u64,
    pub complete: u64,
    pub running: u64,
    pub incomplete: u64,
    pub corrupt: u64,
    pub foreign: u64,
    pub pinned: u64,
    pub failed_verification: u64,
    pub never_verified: u64,
    /// Sums over complete backups.
    pub original_bytes: u64,
    pub stored_bytes: u64,
    pub wal_bytes: u64,
}

/// The one-line status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// No problems.
    pub ok: bool,
    pub problems: u64,
    /// The newest usable backup (complete, not failed at its last verification, not refused
    /// by restore), and when it finished.
    pub last_good_backup: Option<Ident>,
    pub last_good_backup_finished_at: Option<i64>,
    /// Seconds from its finish to now (0 when its finish is in the future).
    pub last_good_backup_age_secs: Option<u64>,
    /// The most recent verification of any backup: which, and the result.
    pub last_verified_backup: Option<Ident>,
    pub last_verification: Option<VerificationSummary>,
}

/// A cluster's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrationSummary {
    pub system_identifier: SystemId,
    pub server_version: PgVersion,
    pub major: String,
    pub wal_segment_size: u64,
    pub pgdata: String,
    pub registered_at: String,
}

/// Everything `info` shows about one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterSummary {
    pub cluster: Ident,
    pub registration: RegistrationSummary,
    pub status: Status,
    /// Most serious first.
    pub problems: Vec<Problem>,
    pub recoverability: Recoverability,
    pub totals: Totals,
    /// In lineage order (oldest first), then backups without `pgsafe.json` by ID.
    pub backups: Vec<BackupSummary>,
}

/// Whether a restore refuses the backup: a tablespace created outside PGDATA while it ran
/// (see `restore/isolation.rs`). Returns the changes in words.
fn refused_by_restore(info: &BackupInfo) -> Option<String> {
    let created: Vec<String> = info
        .tablespace_changes
        .iter()
        .filter(|c| c.change == TablespaceChangeKind::Created && !c.location.is_empty())
        .map(|c| c.to_string())
        .collect();
    (!created.is_empty()).then(|| created.join("; "))
}

fn usable(e: &BackupEntry) -> bool {
    e.is_complete()
        && !e.failed_verification()
        && e.info
            .as_ref()
            .is_some_and(|i| refused_by_restore(i).is_none())
}

/// The summary of one backup (`latest`: the ID `latest` means).
pub fn backup_summary(e: &BackupEntry, latest: Option<&Ident>) -> BackupSummary {
    let i = e.info.as_ref();
    let reason = match &e.state {
        BackupState::Corrupt { reason } | BackupState::Foreign { reason } => Some(reason.clone()),
        _ => None,
    };
    BackupSummary {
        id: e.id.clone(),
        kind: e.backup_type.name(),
        state: e.state.name(),
        reason,
        usable: usable(e),
        latest: latest == Some(&e.id),
        pinned: e.pinned,
        label: i.map(|i| i.label.clone()),
        started_at: i.map(|i| i.started_at),
        finished_at: i.map(|i| i.finished_at),
        duration_secs: i.map(|i| i.duration_secs),
        start_lsn: i.map(|i| i.start_lsn),
        start_timeline: i.map(|i| i.start_tli),
        stop_lsn: i.map(|i| i.stop_lsn),
        stop_timeline: i.map(|i| i.stop_tli),
        wal_first: i.map(|i| i.start_wal),
        wal_last: i.map(|i| i.stop_wal),
        original_bytes: i.map(|i| i.bytes),
        stored_bytes: i.map(|i| i.stored_bytes),
        wal_bytes: i.map(|i| i.wal.bytes),
        verification: e.verification.as_ref().map(VerificationSummary::from),
        page_checksum_errors: i
            .and_then(|i| i.page_checksums.as_ref())
            .map(|p| p.corrupt_blocks()),
        writer: e.lease.as_ref().map(|l| Writer {
            host: l.host.clone(),
            pid: l.pid,
            lease_expires_at: l.expires_at.clone(),
        }),
        parent: e.parent.clone(),
        type_reason: i.and_then(|i| i.backup_type_reason.clone()),
        bytes_read: i.and_then(|i| i.bytes_read),
        changed_source: i.and_then(|i| i.changed_source.clone()),
        chain_problem: None,
    }
}

/// [`backup_summary`] with what the catalog says of the backup's chain: a differential or
/// incremental backup whose chain is broken is not usable.
fn summary_in(c: &Catalog, e: &BackupEntry, latest: Option<&Ident>) -> BackupSummary {
    let mut s = backup_summary(e, latest);
    if e.is_complete() && !e.backup_type.is_full() {
        if let Err(why) = c.chain(e.id.as_str()) {
            s.usable = false;
            s.chain_problem = Some(why.to_string());
        }
    }
    s
}

fn problems_of(c: &Catalog, now_us: i64) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut push = |kind, backup: Option<&Ident>, object: Option<&str>, message: String| {
        out.push(Problem {
            kind,
            backup: backup.cloned(),
            object: object.map(str::to_owned),
            message,
        })
    };
    for e in &c.backups {
        let id = Some(&e.id);
        match &e.state {
            BackupState::Corrupt { reason } => push(
                ProblemKind::Corrupt,
                id,
                None,
                format!("backup {} is corrupt and never used: {reason}", e.id),
            ),
            BackupState::Foreign { reason } => push(
                ProblemKind::Foreign,
                id,
                None,
                format!(
                    "backup {} is of another cluster and never used: {reason}",
                    e.id
                ),
            ),
            BackupState::Incomplete => push(
                ProblemKind::Incomplete,
                id,
                None,
                format!(
                    "backup {} is incomplete: interrupted before it wrote pgsafe.json (expire \
                     removes it)",
                    e.id
                ),
            ),
            BackupState::Complete | BackupState::Running => {}
        }
        if let Some(v) = e.verification.as_ref().filter(|_| e.failed_verification()) {
            push(
                ProblemKind::FailedVerification,
                id,
                None,
                format!(
                    "backup {} failed verification at {} ({} problem{} found): it is not used",
                    e.id,
                    v.time,
                    v.problems,
                    if v.problems == 1 { "" } else { "s" }
                ),
            );
        }
        let Some(info) = e.info.as_ref().filter(|_| e.is_complete()) else {
            continue;
        };
        if let Some(changes) = refused_by_restore(info) {
            push(
                ProblemKind::NotRestorable,
                id,
                None,
                format!("backup {} cannot be restored: {changes}", e.id),
            );
        }
        let bad = info
            .page_checksums
            .as_ref()
            .map_or(0, |p| p.corrupt_blocks());
        if bad > 0 {
            push(
                ProblemKind::SourcePageErrors,
                id,
                None,
                format!(
                    "backup {}: {bad} pages of the source cluster failed their checksum while \
                     it was copied (the source is corrupt there; the backup holds the same \
                     bytes)",
                    e.id
                ),
            );
        }
    }
    for o in &c.odd_entries {
        push(
            ProblemKind::OddEntry,
            None,
            Some(&o.name),
            format!("backups/{}: {}", o.name, o.why),
        );
    }
    for o in &c.unreadable {
        push(
            ProblemKind::UnreadableObject,
            None,
            Some(&o.name),
            format!("{} cannot be read: {}", o.name, o.why),
        );
    }
    for l in &c.leases {
        if l.live && l.lease.expires_us() > now_us.saturating_add(IMPLAUSIBLE_LEASE_US) {
            let holds = match &l.lease.backup {
                Some(b) => format!("backup {b} counts as running and expire never removes it"),
                None => format!("it blocks every other {} of the cluster", l.lease.kind),
            };
            push(
                ProblemKind::ImplausibleLease,
                l.lease.backup.as_ref(),
                Some(&l.object),
                format!(
                    "lease {} (host {}, pid {}) expires at {}, far beyond any lease's lifetime \
                     (forged, or written by a host whose clock is wrong): until then {holds}. \
                     Delete the lease if nothing runs on that host",
                    l.object.escape_debug(),
                    l.lease.host.escape_debug(),
                    l.lease.pid,
                    l.lease.expires_at.escape_debug()
                ),
            );
        }
    }
    if let Some((first, second)) = c.diverging() {
        push(
            ProblemKind::DivergingBranches,
            None,
            None,
            format!(
                "backups {first} and {second} lie on diverging timelines (a stale promoted \
                 standby backed up under this cluster's name, or the abandoned past of a \
                 recovery to an earlier point): restore refuses 'latest' and expire deletes no \
                 complete backup until you remove the abandoned branch's backups"
            ),
        );
    }
    if !c.backups.iter().any(usable) {
        push(
            ProblemKind::NoUsableBackup,
            None,
            None,
            format!(
                "cluster {} has no usable complete backup: nothing can be restored",
                c.cluster
            ),
        );
    }
    // Most serious first; within a kind, in lineage order.
    out.sort_by_key(|p| p.kind);
    out
}

fn recoverability(c: &Catalog) -> Recoverability {
    let points: Vec<RestorePoint> = c
        .backups
        .iter()
        .filter(|e| usable(e))
        .filter_map(|e| {
            e.info.as_ref().map(|i| RestorePoint {
                backup: e.id.clone(),
                lsn: i.stop_lsn,
                timeline: i.stop_tli,
                time: i.finished_at,
            })
        })
        .collect();
    // The catalog's lineage order (timeline, stop LSN, start time): the first and last.
    let mut timelines: Vec<TimelineId> = points.iter().map(|p| p.timeline).collect();
    timelines.sort();
    timelines.dedup();
    Recoverability {
        earliest: points.first().cloned(),
        latest: points.last().cloned(),
        restore_points: points.len() as u64,
        continuous: false,
        timelines,
    }
}

fn totals(c: &Catalog) -> Totals {
    let mut t = Totals::default();
    for e in &c.backups {
        t.backups += 1;
        match e.state {
            BackupState::Complete => t.complete += 1,
            BackupState::Running => t.running += 1,
            BackupState::Incomplete => t.incomplete += 1,
            BackupState::Corrupt { .. } => t.corrupt += 1,
            BackupState::Foreign { .. } => t.foreign += 1,
        }
        t.pinned += u64::from(e.pinned);
        if e.is_complete() {
            t.failed_verification += u64::from(e.failed_verification());
            t.never_verified += u64::from(e.verification.is_none());
            if let Some(i) = &e.info {
                t.original_bytes = t.original_bytes.saturating_add(i.bytes);
                t.stored_bytes = t.stored_bytes.saturating_add(i.stored_bytes);
                t.wal_bytes = t.wal_bytes.saturating_add(i.wal.bytes);
            }
        }
    }
    t
}

/// The summary of a cluster's catalog at `now_us` (microseconds since the epoch).
pub fn summarize(c: &Catalog, now_us: i64) -> ClusterSummary {
    let latest_id = c.latest().map(|e| e.id.clone());
    // The newest usable backup in lineage order.
    let good = c.backups.iter().rev().find(|e| usable(e));
    let problems = problems_of(c, now_us);
    let finished = good.and_then(|e| e.info.as_ref()).map(|i| i.finished_at);
    let age = finished.map(|f| {
        let secs = now_us.div_euclid(1_000_000).saturating_sub(f);
        u64::try_from(secs).unwrap_or(0)
    });
    let last_verified = c
        .backups
        .iter()
        .filter_map(|e| e.verification.as_ref().map(|v| (e, v)))
        .max_by_key(|(_, v)| super::doc::parse_time(&v.time).unwrap_or(i64::MIN));
    let reg = &c.registration;
    ClusterSummary {
        cluster: c.cluster.clone(),
        registration: RegistrationSummary {
            system_identifier: reg.system_identifier,
            server_version: reg.server_version,
            major: reg.server_version.major_name(),
            wal_segment_size: reg.wal_segment_size.bytes(),
            pgdata: reg.pgdata.clone(),
            registered_at: reg.registered_at.clone(),
        },
        status: Status {
            ok: problems.is_empty(),
            problems: problems.len() as u64,
            last_good_backup: good.map(|e| e.id.clone()),
            last_good_backup_finished_at: finished,
            last_good_backup_age_secs: age,
            last_verified_backup: last_verified.map(|(e, _)| e.id.clone()),
            last_verification: last_verified.map(|(_, v)| VerificationSummary::from(v)),
        },
        problems,
        recoverability: recoverability(c),
        totals: totals(c),
        backups: c
            .backups
            .iter()
            .map(|e| summary_in(c, e, latest_id.as_ref()))
            .collect(),
    }
}

/// Page-checksum results of a backup, as the detail shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageCheckSummary {
    pub files_checked: u64,
    pub pages_checked: u64,
    pub corrupt_blocks: u64,
    /// Files and blocks of the source that failed their checksum.
    pub corrupt: Vec<FileBlocks>,
    /// Blocks the server wrote while they were copied (WAL replay rewrites them).
    pub changed_during_copy_blocks: u64,
}

/// Everything about one backup (`info --backup`): its summary and, with `pgsafe.json`, what
/// it records.
#[derive(Debug, Clone, Serialize)]
pub struct BackupDetail {
    #[serde(flatten)]
    pub summary: BackupSummary,
    pub server_version: Option<PgVersion>,
    pub system_identifier: Option<SystemId>,
    pub pgsafe_version: Option<String>,
    pub from_standby: Option<bool>,
    pub checkpoint_lsn: Option<Lsn>,
    pub data_checksums: Option<bool>,
    pub wal_mode: Option<WalMode>,
    pub wal_source: Option<String>,
    pub wal_segments_stored: Option<u64>,
    pub compression: Option<String>,
    pub checksum_algorithm: Option<String>,
    pub files: Option<u64>,
    pub tablespaces: Vec<TablespaceInfo>,
    pub tablespace_changes: Vec<TablespaceChange>,
    pub vanished_files: Option<u64>,
    pub shrunk_files: Option<u64>,
    pub copy_secs: Option<f64>,
    pub copy_mib_per_sec: Option<f64>,
    pub page_checksums: Option<PageCheckSummary>,
}

/// The detail of backup `e` of catalog `c`.
pub fn backup_detail(c: &Catalog, e: &BackupEntry) -> BackupDetail {
    let latest = c.latest().map(|l| &l.id);
    let i = e.info.as_ref();
    BackupDetail {
        summary: summary_in(c, e, latest),
        server_version: i.map(|i| i.server_version),
        system_identifier: i.map(|i| i.system_identifier),
        pgsafe_version: i.map(|i| i.pgsafe_version.clone()),
        from_standby: i.map(|i| i.from_standby),
        checkpoint_lsn: i.map(|i| i.checkpoint_lsn),
        data_checksums: i.map(|i| i.data_checksums),
        wal_mode: i.map(|i| i.wal.mode),
        wal_source: i.map(|i| i.wal.source.clone()),
        wal_segments_stored: i
            .filter(|i| i.wal.mode == WalMode::Include)
            .map(|i| i.wal.segments.len() as u64),
        compression: i.map(|i| i.compression.to_string()),
        checksum_algorithm: i.map(|i| i.checksum.to_string()),
        files: i.map(|i| i.files),
        tablespaces: i.map(|i| i.tablespaces.clone()).unwrap_or_default(),
        tablespace_changes: i.map(|i| i.tablespace_changes.clone()).unwrap_or_default(),
        vanished_files: i.map(|i| i.vanished_files),
        shrunk_files: i.map(|i| i.shrunk_files),
        copy_secs: i.map(|i| i.copy_secs),
        copy_mib_per_sec: i.map(|i| i.copy_mib_per_sec),
        page_checksums: i
            .and_then(|i| i.page_checksums.as_ref())
            .map(|p| PageCheckSummary {
                files_checked: p.files_checked,
                pages_checked: p.pages_checked,
                corrupt_blocks: p.corrupt_blocks(),
                corrupt: p.corrupt.clone(),
                changed_during_copy_blocks: p
                    .changed_during_copy
                    .iter()
                    .map(|f| f.blocks.len() as u64)
                    .sum(),
            }),
    }
}
