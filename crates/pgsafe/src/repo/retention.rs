//! Retention: which backups of one cluster `expire` keeps and which it deletes, and the proof that
//! a plan is safe before anything is deleted. Pure: no IO, no clock (the caller passes `now`).
//!
//! The planner ([`plan`]) and the check ([`ExpirePlan::check`]) are written separately on
//! purpose: the check does not trust the planner's reasons, it recomputes what must never be
//! deleted from the entries alone, so a planner bug (or a catalog that changed shape) is refused
//! instead of deleting a backup.
//!
//! Decisions made here (the project's docs, README "Retention", say the same to users):
//! - Backups are ordered by lineage, never by ID or name: within the cluster's system identifier
//!   by stop timeline, then stop LSN, then start and stop time (the ID only breaks exact ties so
//!   that plans are deterministic) — the order the catalog's `latest` uses, so the backup a
//!   restore of `latest` takes is the one retention keeps as the newest. The timeline comes
//!   first because a timeline is only ever created later than those before it (promotion,
//!   point-in-time recovery: src/backend/access/transam/timeline.c, findNewestTimeLine): after
//!   a recovery to an earlier point, the new timeline's backups have LOWER LSNs than the
//!   abandoned timeline's and are still the newest. A pg_upgrade or a re-initdb gives a new
//!   system identifier whose LSNs and timelines start again from the beginning; backups of
//!   another system identifier than the cluster's registration are therefore never ordered
//!   against the cluster's and never expired automatically: they are kept and reported.
//! - `keep_full` counts valid FULL backups (complete, not failed verification, no parent):
//!   "keep 2" means two restorable full backups, and with them every differential or
//!   incremental backup newer than the older of the two (the kept part is contiguous, below). A
//!   backup with a parent is restored from its chain down to a full, so it never counts alone:
//!   a catalog of old pgsafe versions, whose backups are all full, plans as before. `keep_within` keeps the complete backups that stopped within the
//!   duration before `now`; a stop time after `now` (a clock that went backwards) counts as
//!   within. Both together keep the union.
//! - Retention only ever deletes the OLDEST complete backups: every complete backup newer in
//!   lineage than one kept by retention is kept too (a failed one for inspection; one whose
//!   clock says old but whose LSN says new, because the LSN is right). Kept backups thus form a
//!   contiguous newest part of the lineage, which is what a WAL archive's retention needs later
//!   (keep WAL from the oldest kept backup on).
//! - The newest valid backup is always kept. If no complete backup is valid, no complete backup
//!   is deleted (the DBA has a problem to look at first, and old failed backups may be all
//!   there is).
//! - Pinned backups, running backups (live lease), foreign entries and backups of another
//!   system identifier are never deleted.
//! - When two valid backups cannot lie on one history ([`diverges`]: a backup on an older
//!   timeline stopped past the point where a newer timeline's backup shows that timeline had
//!   already begun), the repository holds two branches: a stale promoted standby backed up under
//!   the cluster's name (its higher timeline would make it "newest" and retention would delete
//!   the live primary's newer backups), or the abandoned past of a recovery to an earlier point.
//!   The catalog alone cannot tell which branch the live server is on, so no complete backup is
//!   deleted until the DBA has removed the abandoned branch's backups ([`KeepReason::Branched`]).
//! - Without `keep_full` and `keep_within` nothing complete is deleted: a DBA who types
//!   `expire` without a retention configured must not lose backups. Incomplete leftovers (no
//!   completion marker, no live lease: an interrupted backup, or a backup whose deletion was
//!   interrupted) are deleted in every case: they cannot be restored, hold space, and the
//!   catalog's lease contract says no process writes them any more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::types::{Lsn, SystemId, TimelineId};

#[cfg(test)]
mod tests;

/// One entry of a cluster's catalog, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupEntry {
    /// The backup's ID (its folder name). Identifies it; never used for ordering.
    pub id: String,
    /// Pinned by the DBA (`pin`): never deleted, whatever its state.
    pub pinned: bool,
    #[serde(flatten)]
    pub state: EntryState,
}

/// What the catalog knows about an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// The completion marker is there: a backup that can be restored (unless verification
    /// failed).
    Complete(Lineage),
    /// No completion marker, and a live lease: a backup being written, possibly from another
    /// host.
    Running,
    /// No completion marker and no live lease: an interrupted backup, or one whose deletion
    /// was interrupted.
    Incomplete,
    /// A backup of another cluster than the registered one (its `pgsafe.json` names another
    /// system identifier, major version or WAL segment size): never touched.
    Foreign { reason: String },
    /// Its `pgsafe.json` cannot be read or parsed: never touched (it may be a complete backup
    /// that a newer pgsafe wrote, or evidence of damage to look at).
    Corrupt { reason: String },
}

/// Where a complete backup sits in its cluster's history (from its `pgsafe.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lineage {
    pub system_identifier: SystemId,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_tli: TimelineId,
    pub stop_tli: TimelineId,
    /// Unix seconds (the backing-up host's clock).
    pub started_at: i64,
    /// Unix seconds (the backing-up host's clock).
    pub finished_at: i64,
    /// Verification ran and found the backup damaged: it does not count as a valid backup.
    pub verification_failed: bool,
    /// The backup this one needs to be restored (a differential or incremental backup's
    /// parent); none for a full backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl Lineage {
    /// The lineage order key: stop timeline, then stop LSN, then start and stop time. Only
    /// meaningful between backups of one system identifier.
    fn order_key(&self) -> (TimelineId, Lsn, i64, i64) {
        (
            self.stop_tli,
            self.stop_lsn,
            self.started_at,
            self.finished_at,
        )
    }

    fn is_valid(&self) -> bool {
        !self.verification_failed
    }

    /// A valid full backup: what `keep_full` counts (a backup with a parent is restored from
    /// its chain, see [`Need::Parent`]).
    fn is_valid_full(&self) -> bool {
        self.is_valid() && self.parent.is_none()
    }
}

/// How much to keep. `None` for both keeps every complete backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeepOptions {
    /// Keep this many newest valid full backups (at least 1), and every backup newer than the
    /// oldest of them.
    pub keep_full: Option<u32>,
    /// Keep the complete backups that finished within this long before now (more than zero).
    #[serde(rename = "keep_within_secs", serialize_with = "serialize_secs")]
    pub keep_within: Option<Duration>,
}

fn serialize_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

impl KeepOptions {
    /// Whether any retention is configured.
    pub fn is_configured(&self) -> bool {
        self.keep_full.is_some() || self.keep_within.is_some()
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepReason {
    /// Being written (live lease): deleting it would destroy a running backup.
    Running,
    /// A backup of another cluster.
    Foreign,
    /// Its metadata cannot be read.
    Corrupt,
    /// A backup of another system identifier than the cluster's (pg_upgrade, re-initdb).
    OtherSystem { system_identifier: SystemId },
    /// Pinned by the DBA.
    Pinned,
    /// The newest valid backup of the cluster.
    NewestValid,
    /// One of the `of` newest valid full backups (`rank` 1 is the newest).
    WithinNewest { rank: u32, of: u32 },
    /// Finished within the retention duration (or after now).
    WithinDuration {
        #[serde(rename = "within_secs")]
        secs: u64,
    },
    /// Newer in lineage than a backup retention keeps.
    NewerThanKept,
    /// Another kept backup needs it: the parent of a kept differential or incremental backup
    /// (a restore of that backup reads its whole chain).
    NeededBy { id: String },
    /// No complete backup of the cluster is valid: none is deleted.
    NoValidBackup,
    /// No retention configured: no complete backup is deleted.
    NoRetention,
    /// Valid backups lie on diverging branches ([`diverges`]): which one the live server
    /// continues cannot be told from the repository, so no complete backup is deleted.
    Branched { first: String, second: String },
}

/// Why a backup is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DeleteReason {
    /// Older in lineage than every backup retention keeps.
    BeyondRetention,
    /// No completion marker and no live lease: an interrupted backup or deletion.
    IncompleteLeftover,
}

/// Keep or delete, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    Keep(KeepReason),
    Delete(DeleteReason),
}

impl Decision {
    pub fn is_delete(&self) -> bool {
        matches!(self, Decision::Delete(_))
    }
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Running => f.write_str("being written (live lease)"),
            KeepReason::Foreign => f.write_str("not of this cluster: never touched"),
            KeepReason::Corrupt => f.write_str("unreadable metadata: never touched"),
            KeepReason::OtherSystem { system_identifier } => write!(
                f,
                "of system identifier {system_identifier}, not the cluster's: never expired \
                 automatically"
            ),
            KeepReason::Pinned => f.write_str("pinned"),
            KeepReason::NewestValid => f.write_str("the newest valid backup"),
            KeepReason::WithinNewest { rank, of } => {
                write!(f, "within the {of} newest valid full backups (#{rank})")
            }
            KeepReason::WithinDuration { secs } => {
                write!(f, "finished within the last {}", human_secs(*secs))
            }
            KeepReason::NewerThanKept => f.write_str("newer than a backup retention keeps"),
            KeepReason::NeededBy { id } => write!(
                f,
                "needed by kept backup {id}: its parent (a restore of {id} reads its chain \
                 down to a full backup, so expire never breaks it)"
            ),
            KeepReason::NoValidBackup => {
                f.write_str("no complete backup of this cluster is valid: none is deleted")
            }
            KeepReason::NoRetention => f.write_str("no retention configured"),
            KeepReason::Branched { first, second } => write!(
                f,
                "backups {first} and {second} lie on diverging timelines (a stale promoted \
                 standby, or the abandoned past of a recovery to an earlier point): which one \
                 the server continues cannot be told from the repository, so nothing complete \
                 is deleted; remove the abandoned branch's backups first"
            ),
        }
    }
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::BeyondRetention => f.write_str("beyond retention"),
            DeleteReason::IncompleteLeftover => {
                f.write_str("incomplete and no live lease (an interrupted backup or expire)")
            }
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Keep(r) => write!(f, "keep: {r}"),
            Decision::Delete(r) => write!(f, "delete: {r}"),
        }
    }
}

/// Seconds as the largest whole unit (`7d`, `36h`, `90s`).
fn human_secs(secs: u64) -> String {
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= len && secs % len == 0 {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

/// One backup of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedBackup {
    #[serde(flatten)]
    pub backup: BackupEntry,
    pub decision: Decision,
}

/// What `expire` will do: every catalog entry exactly once, with its decision. Entries are in
/// display order: the cluster's complete backups oldest first by lineage, then other system
/// identifiers' backups, then running, incomplete, foreign and corrupt entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpirePlan {
    /// The cluster's registered system identifier.
    pub system_identifier: SystemId,
    pub options: KeepOptions,
    /// Unix seconds the plan was made for.
    #[serde(rename = "planned_at")]
    pub now: i64,
    pub backups: Vec<PlannedBackup>,
}

/// Why no plan was made, or why a plan is refused.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("keeping 0 full backups would delete every backup: keep at least 1")]
    KeepFullZero,
    #[error("a retention duration of 0 keeps nothing: give a duration of at least 1 second")]
    KeepWithinZero,
    #[error(
        "the catalog lists backup ID {id} twice: nothing was deleted; list the repository's \
         backups and remove or rename the duplicate by hand"
    )]
    DuplicateId { id: String },
    #[error(
        "the expire plan failed its safety check, nothing was deleted: {}. This is a bug in \
         pgsafe; please report it with the plan (dry run, JSON)",
        .violations.join("; ")
    )]
    Unsafe { violations: Vec<String> },
}

/// What a kept backup needs to stay restorable. `check` proves that every need of every kept
/// backup is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Its own WAL (start to stop), stored inside the backup: kept with it.
    OwnWal,
    /// The backup it is an increment of.
    Parent(String),
    // When the repository keeps a WAL archive, backups taken without WAL need their WAL range
    // (start LSN on the start timeline to stop LSN on the stop timeline) from the archive: a
    // `ArchiveWal` need is added here and `check` proves the archive's plan keeps that range.
}

impl BackupEntry {
    /// What this entry needs to be restored.
    pub fn needs(&self) -> Vec<Need> {
        match &self.state {
            EntryState::Complete(l) => {
                let mut needs = vec![Need::OwnWal];
                if let Some(parent) = &l.parent {
                    needs.push(Need::Parent(parent.clone()));
                }
                needs
            }
            EntryState::Running
            | EntryState::Incomplete
            | EntryState::Foreign { .. }
            | EntryState::Corrupt { .. } => Vec::new(),
        }
    }
}

/// The cluster's complete backups in lineage order, oldest first (indices into `entries`).
fn lineage_order(entries: &[BackupEntry], system: SystemId) -> Vec<usize> {
    let mut order: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.state {
            EntryState::Complete(l) if l.system_identifier == system => Some(i),
            _ => None,
        })
        .collect();
    order.sort_by(|&a, &b| lineage_cmp(&entries[a], &entries[b]));
    order
}

fn lineage_cmp(a: &BackupEntry, b: &BackupEntry) -> std::cmp::Ordering {
    let key = |e: &BackupEntry| match &e.state {
        EntryState::Complete(l) => Some(l.order_key()),
        _ => None,
    };
    key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
}

/// Where an entry goes in the plan's display order (after the cluster's lineage).
fn display_group(e: &BackupEntry, system: SystemId) -> (u8, u64) {
    match &e.state {
        EntryState::Complete(l) if l.system_identifier == system => (0, 0),
        EntryState::Complete(l) => (1, l.system_identifier.0),
        EntryState::Running => (2, 0),
        EntryState::Incomplete => (3, 0),
        EntryState::Foreign { .. } => (4, 0),
        EntryState::Corrupt { .. } => (5, 0),
    }
}

/// Whether two complete backups of one system identifier cannot lie on one history.
///
/// A timeline begins at a switch point on its parent timeline (src/backend/access/transam/
/// timeline.c) and every later timeline of the same history begins at or after it; a backup
/// that started on timeline T started after T began. So a backup on an older timeline that is
/// an ancestor of a newer timeline's backup stopped at or before that backup's start (its stop,
/// when the newer backup itself spans the promotion). One that stopped past it holds WAL the
/// newer timeline never had: the two are on diverging branches. The converse is not proven
/// (the timeline history files would tell); this test only ever reports a divergence that is
/// certain.
pub fn diverges(a: &Lineage, b: &Lineage) -> bool {
    if a.system_identifier != b.system_identifier || a.stop_tli == b.stop_tli {
        return false;
    }
    let (older, newer) = if a.stop_tli < b.stop_tli {
        (a, b)
    } else {
        (b, a)
    };
    let newer_began_by = if newer.start_tli == newer.stop_tli {
        newer.start_lsn
    } else {
        newer.stop_lsn
    };
    older.stop_lsn > newer_began_by
}

/// The IDs of two valid complete backups of `system` on diverging branches ([`diverges`]),
/// or `None` when every valid backup can lie on one history.
pub fn diverging_pair(entries: &[BackupEntry], system: SystemId) -> Option<(String, String)> {
    let valid: Vec<(&str, &Lineage)> = entries
        .iter()
        .filter_map(|e| match &e.state {
            EntryState::Complete(l) if l.system_identifier == system && l.is_valid() => {
                Some((e.id.as_str(), l))
            }
            _ => None,
        })
        .collect();
    for (i, (ia, a)) in valid.iter().enumerate() {
        for (ib, b) in &valid[i + 1..] {
            if diverges(a, b) {
                let (x, y) = if ia <= ib { (ia, ib) } else { (ib, ia) };
                return Some(((*x).to_owned(), (*y).to_owned()));
            }
        }
    }
    None
}

/// Plans retention for the entries of one cluster registered with `system`, at `now` (unix
/// seconds). The plan still has to pass [`ExpirePlan::check`] before anything is deleted.
pub fn plan(
    entries: Vec<BackupEntry>,
    system: SystemId,
    options: KeepOptions,
    now: i64,
) -> Result<ExpirePlan, RetentionError> {
    if options.keep_full == Some(0) {
        return Err(RetentionError::KeepFullZero);
    }
    if options.keep_within == Some(Duration::ZERO) {
        return Err(RetentionError::KeepWithinZero);
    }
    let mut seen = HashSet::new();
    for e in &entries {
        if !seen.insert(e.id.as_str()) {
            return Err(RetentionError::DuplicateId { id: e.id.clone() });
        }
    }

    let mut decisions: Vec<Option<Decision>> = vec![None; entries.len()];
    // What never depends on retention.
    for (i, e) in entries.iter().enumerate() {
        decisions[i] = match &e.state {
            EntryState::Running => Some(Decision::Keep(KeepReason::Running)),
            EntryState::Foreign { .. } => Some(Decision::Keep(KeepReason::Foreign)),
            EntryState::Corrupt { .. } => Some(Decision::Keep(KeepReason::Corrupt)),
            EntryState::Complete(l) if l.system_identifier != system => {
                Some(Decision::Keep(KeepReason::OtherSystem {
                    system_identifier: l.system_identifier,
                }))
            }
            _ if e.pinned => Some(Decision::Keep(KeepReason::Pinned)),
            EntryState::Incomplete => Some(Decision::Delete(DeleteReason::IncompleteLeftover)),
            EntryState::Complete(_) => None,
        };
    }

    let order = lineage_order(&entries, system);
    let lineage = |i: usize| match &entries[i].state {
        EntryState::Complete(l) => Some(l),
        _ => None,
    };
    let newest_valid = order
        .iter()
        .rev()
        .copied()
        .find(|&i| lineage(i).is_some_and(Lineage::is_valid));

    let branched = diverging_pair(&entries, system);
    match newest_valid {
        None => {
            for &i in &order {
                decisions[i].get_or_insert(Decision::Keep(KeepReason::NoValidBackup));
            }
        }
        Some(_) if branched.is_some() => {
            let (a, b) = branched.unwrap_or_default();
            for &i in &order {
                decisions[i].get_or_insert(Decision::Keep(KeepReason::Branched {
                    first: a.clone(),
                    second: b.clone(),
                }));
            }
        }
        Some(_) if !options.is_configured() => {
            for &i in &order {
                decisions[i].get_or_insert(Decision::Keep(KeepReason::NoRetention));
            }
        }
        Some(newest) => {
            decisions[newest].get_or_insert(Decision::Keep(KeepReason::NewestValid));
            // The oldest position (in `order`) that retention keeps: everything from there on
            // is kept.
            let mut horizon = order.iter().position(|&i| i == newest).unwrap_or(0);
            if let Some(n) = options.keep_full {
                let mut rank = 0u32;
                for (pos, &i) in order.iter().enumerate().rev() {
                    if rank >= n {
                        break;
                    }
                    if lineage(i).is_some_and(Lineage::is_valid_full) {
                        rank += 1;
                        decisions[i].get_or_insert(Decision::Keep(KeepReason::WithinNewest {
                            rank,
                            of: n,
                        }));
                        horizon = horizon.min(pos);
                    }
                }
            }
            if let Some(within) = options.keep_within {
                let secs = within.as_secs();
                let cutoff = i128::from(now) - i128::from(secs);
                for (pos, &i) in order.iter().enumerate() {
                    if lineage(i).is_some_and(|l| i128::from(l.finished_at) >= cutoff) {
                        decisions[i]
                            .get_or_insert(Decision::Keep(KeepReason::WithinDuration { secs }));
                        horizon = horizon.min(pos);
                    }
                }
            }
            for (pos, &i) in order.iter().enumerate() {
                let d = if pos >= horizon {
                    Decision::Keep(KeepReason::NewerThanKept)
                } else {
                    Decision::Delete(DeleteReason::BeyondRetention)
                };
                decisions[i].get_or_insert(d);
            }
        }
    }

    // Needs: a kept backup's parent is kept too, transitively.
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    let mut todo: Vec<usize> = (0..entries.len())
        .filter(|&i| !decisions[i].as_ref().is_some_and(Decision::is_delete))
        .collect();
    while let Some(i) = todo.pop() {
        for need in entries[i].needs() {
            if let Need::Parent(parent) = need
                && let Some(&p) = index.get(parent.as_str())
                && decisions[p].as_ref().is_some_and(Decision::is_delete)
            {
                decisions[p] = Some(Decision::Keep(KeepReason::NeededBy {
                    id: entries[i].id.clone(),
                }));
                todo.push(p);
            }
        }
    }

    let mut planned: Vec<PlannedBackup> = entries
        .into_iter()
        .zip(decisions)
        .map(|(backup, decision)| PlannedBackup {
            backup,
            // Every entry got a decision above; keeping is the safe answer if one did not.
            decision: decision.unwrap_or(Decision::Keep(KeepReason::NoRetention)),
        })
        .collect();
    planned.sort_by(|a, b| {
        display_group(&a.backup, system)
            .cmp(&display_group(&b.backup, system))
            .then_with(|| lineage_cmp(&a.backup, &b.backup))
    });
    Ok(ExpirePlan {
        system_identifier: system,
        options,
        now,
        backups: planned,
    })
}

impl ExpirePlan {
    /// The entries to delete, in the order to delete them (oldest first).
    pub fn deletions(&self) -> impl Iterator<Item = &PlannedBackup> {
        self.backups.iter().filter(|b| b.decision.is_delete())
    }

    /// Proves the plan safe, from the entries alone (not from the planner's reasons):
    /// - the newest valid backup of the cluster is kept;
    /// - no running, pinned, foreign or corrupt entry, and no backup of another system
    ///   identifier, is deleted; only complete backups of the cluster and incomplete leftovers are;
    /// - every need of every kept backup is kept ([`BackupEntry::needs`]);
    /// - if the cluster has a complete backup, one is kept;
    /// - if no retention is configured, no complete backup is deleted;
    /// - if valid backups lie on diverging branches ([`diverges`]), no complete backup is
    ///   deleted;
    /// - every ID appears once.
    pub fn check(&self) -> Result<(), RetentionError> {
        let mut violations = Vec::new();
        let mut by_id: BTreeMap<&str, &PlannedBackup> = BTreeMap::new();
        for b in &self.backups {
            if by_id.insert(b.backup.id.as_str(), b).is_some() {
                violations.push(format!("backup {} is in the plan twice", b.backup.id));
            }
        }
        let entries: Vec<BackupEntry> = self.backups.iter().map(|b| b.backup.clone()).collect();
        let order = lineage_order(&entries, self.system_identifier);
        let deleted = |i: usize| self.backups[i].decision.is_delete();
        let branched = diverging_pair(&entries, self.system_identifier);

        let newest_valid = order
            .iter()
            .rev()
            .copied()
            .find(|&i| matches!(&entries[i].state, EntryState::Complete(l) if l.is_valid()));
        if let Some(i) = newest_valid
            && deleted(i)
        {
            violations.push(format!(
                "backup {} is the newest valid backup and would be deleted",
                entries[i].id
            ));
        }
        if !order.is_empty() && order.iter().all(|&i| deleted(i)) {
            violations.push("every complete backup of the cluster would be deleted".into());
        }
        for (i, b) in self.backups.iter().enumerate() {
            if !deleted(i) {
                continue;
            }
            let id = &b.backup.id;
            if b.backup.pinned {
                violations.push(format!("backup {id} is pinned and would be deleted"));
            }
            match &b.backup.state {
                EntryState::Running => {
                    violations.push(format!("backup {id} is being written and would be deleted"))
                }
                EntryState::Foreign { .. } => violations.push(format!(
                    "backup {id} is of another cluster and would be deleted"
                )),
                EntryState::Corrupt { .. } => violations.push(format!(
                    "backup {id} has unreadable metadata and would be deleted"
                )),
                EntryState::Complete(l) if l.system_identifier != self.system_identifier => {
                    violations.push(format!(
                        "backup {id} is of system identifier {}, not the cluster's {}, and \
                         would be deleted",
                        l.system_identifier, self.system_identifier
                    ))
                }
                EntryState::Complete(_) if !self.options.is_configured() => violations.push(
                    format!("backup {id} is complete and would be deleted without retention"),
                ),
                EntryState::Complete(_) if branched.is_some() => violations.push(format!(
                    "backup {id} is complete and would be deleted while the cluster's backups \
                     lie on diverging timelines"
                )),
                EntryState::Complete(_) | EntryState::Incomplete => {}
            }
        }
        for (i, b) in self.backups.iter().enumerate() {
            if deleted(i) {
                continue;
            }
            for need in b.backup.needs() {
                match need {
                    // Inside the backup: kept with it.
                    Need::OwnWal => {}
                    Need::Parent(parent) => {
                        if by_id
                            .get(parent.as_str())
                            .is_some_and(|p| p.decision.is_delete())
                        {
                            violations.push(format!(
                                "backup {} is kept but its parent {parent} would be deleted",
                                b.backup.id
                            ));
                        }
                    }
                }
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(RetentionError::Unsafe { violations })
        }
    }
}
