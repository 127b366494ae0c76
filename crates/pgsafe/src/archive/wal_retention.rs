//! WAL retention: which archived WAL `expire` deletes once its backup plan is made. Pure
//! planning ([`plan`]) and an independent check ([`WalPlan::check`]); [`apply`] deletes.
//!
//! Rules (README "Retention"):
//! - Only WAL no kept backup needs: segments, `.partial` and backup history files of the
//!   timelines in the history of the oldest kept backup's start timeline, in segments before
//!   the one holding that start. Every kept backup starts at or after it on that history
//!   (kept backups are the newest part of the lineage, see `repo/retention.rs`), and the
//!   newest backup's point-in-time window lies after its own start, so neither loses a
//!   segment. History files are never deleted (small, and needed to follow timelines).
//! - Nothing is deleted on ambiguous evidence: no retention configured, no kept valid backup,
//!   a kept entry whose WAL need is unknown (unreadable or foreign metadata, a running backup),
//!   backups on diverging timelines, a missing or broken history file on the way, or WAL of a
//!   timeline past the point where a history file says it ended (two branches in the archive:
//!   which one the live server continues cannot be told).
//! - The check does not trust the planner: for every kept valid backup it computes how far
//!   recovery from its start can replay ([`ArchiveContents::reach`]) with and without the
//!   deleted segments; any difference refuses the plan.

use std::collections::BTreeSet;

use serde::Serialize;

use super::contents::{ArchiveContents, HistoryState};
use crate::repo::retention::{Decision, EntryState, ExpirePlan, KeepReason, Lineage};
use crate::storage::{Backend, ObjectName, StorageError};
use crate::types::{Lsn, TimelineId, WalSegment};
use crate::wal::TimelineHistory;

/// What WAL expire deletes, or why none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// Segments deleted per timeline: `(timeline, first, last)` ranges of segments held.
    pub delete_segments: Vec<(TimelineId, WalSegment, WalSegment)>,
    /// Object names deleted (segments, partials, backup history files).
    pub delete_objects: Vec<String>,
    pub bytes: u64,
    /// The start the kept WAL begins at: the oldest kept backup's start.
    pub keep_from: Option<(TimelineId, Lsn)>,
    /// Why nothing (more) is deleted, when that is the case.
    pub kept_because: Option<String>,
}

/// A kept valid backup of the cluster, as the WAL check sees it.
fn kept_backups(plan: &ExpirePlan) -> Vec<&Lineage> {
    plan.backups
        .iter()
        .filter(|b| !b.decision.is_delete())
        .filter_map(|b| match &b.backup.state {
            EntryState::Complete(l)
                if l.system_identifier == plan.system_identifier && !l.verification_failed =>
            {
                Some(l)
            }
            _ => None,
        })
        .collect()
}

fn keep_all(why: impl Into<String>) -> WalPlan {
    WalPlan {
        delete_segments: Vec::new(),
        delete_objects: Vec::new(),
        bytes: 0,
        keep_from: None,
        kept_because: Some(why.into()),
    }
}

/// Whether the archive holds WAL of a timeline past where a history file says it ended.
fn branched(c: &ArchiveContents) -> Option<String> {
    let size = c.seg_size.bytes();
    for (&tli, t) in &c.timelines {
        let Some(HistoryState::Parsed { history }) = &t.history else {
            continue;
        };
        for e in history.entries() {
            let switch_seg = e.switchpoint.0 / size;
            if let Some(p) = c.timelines.get(&e.parent_tli)
                && let Some(&newest) = p.segments.keys().next_back()
                && newest > switch_seg
            {
                return Some(format!(
                    "the archive holds WAL of timeline {} past where timeline {tli}'s history \
                     says it ended ({}): two branches, so no WAL is deleted",
                    e.parent_tli, e.switchpoint
                ));
            }
        }
    }
    None
}

/// Plans WAL retention for the backup plan `plan` and the archive `c`.
pub fn plan(backups: &ExpirePlan, c: &ArchiveContents) -> WalPlan {
    if !backups.options.is_configured() {
        return keep_all("no retention configured");
    }
    for b in &backups.backups {
        if b.decision.is_delete() {
            continue;
        }
        let unknown = match (&b.backup.state, &b.decision) {
            (_, Decision::Keep(KeepReason::Branched { .. })) => {
                Some("backups lie on diverging timelines")
            }
            (EntryState::Running, _) => Some("a backup is being written"),
            (EntryState::Corrupt { .. }, _) => Some("a backup's metadata cannot be read"),
            (EntryState::Foreign { .. }, _) => Some("a backup of another cluster is in the folder"),
            _ => None,
        };
        if let Some(why) = unknown {
            return keep_all(format!("{why} ({}): its WAL need is unknown", b.backup.id));
        }
    }
    let kept = kept_backups(backups);
    let Some(oldest) = kept.iter().min_by_key(|l| (l.start_lsn, l.start_tli)) else {
        return keep_all("no valid backup is kept");
    };
    if let Some(why) = branched(c) {
        return keep_all(why);
    }
    let Some(history) = c.history_of(oldest.start_tli) else {
        return keep_all(format!(
            "the history file of timeline {} is not in the archive (or is broken)",
            oldest.start_tli
        ));
    };
    let size = c.seg_size.bytes();
    let first_kept = oldest.start_lsn.0 / size;
    let ancestry: BTreeSet<TimelineId> = history.spans().iter().map(|s| s.tli).collect();
    let mut out = WalPlan {
        delete_segments: Vec::new(),
        delete_objects: Vec::new(),
        bytes: 0,
        keep_from: Some((oldest.start_tli, oldest.start_lsn)),
        kept_because: None,
    };
    for (&tli, t) in &c.timelines {
        if !ancestry.contains(&tli) {
            continue;
        }
        let seg = |s| WalSegment::from_segno(tli, s, c.seg_size);
        for r in &t.runs {
            let last = r.last.min(first_kept.saturating_sub(1));
            if r.first < first_kept && r.first <= last {
                out.delete_segments.push((tli, seg(r.first), seg(last)));
            }
        }
        for o in &t.stored {
            if o.segno < first_kept {
                out.delete_objects.push(o.name.clone());
                out.bytes = out.bytes.saturating_add(o.size);
            }
        }
    }
    out
}

impl WalPlan {
    /// Proves the plan keeps what kept backups need: for each kept valid backup, recovery from
    /// its start replays as far without the deleted objects as with them; and no history file
    /// is deleted.
    pub fn check(&self, backups: &ExpirePlan, c: &ArchiveContents) -> Result<(), String> {
        if self.delete_objects.is_empty() {
            return Ok(());
        }
        if self.delete_objects.iter().any(|n| n.ends_with(".history")) {
            return Err("a history file would be deleted".into());
        }
        let gone: BTreeSet<&str> = self.delete_objects.iter().map(String::as_str).collect();
        let after = c.without(&gone);
        for l in kept_backups(backups) {
            let Some(h) = c
                .history_of(l.stop_tli)
                .or_else(|| c.history_of(l.start_tli))
                .or_else(|| TimelineHistory::without_parents(l.stop_tli).ok())
            else {
                return Err(format!("no history to follow for timeline {}", l.stop_tli));
            };
            let from = (l.start_tli, l.start_lsn);
            let before = c.reach(from, &h).map(|r| r.end);
            let now = after.reach(from, &h).map(|r| r.end);
            if before != now {
                return Err(format!(
                    "the kept backup starting at {} on timeline {} would reach {:?} instead of \
                     {:?}",
                    l.start_lsn, l.start_tli, now, before
                ));
            }
        }
        Ok(())
    }
}

/// Deletes the plan's objects (oldest first); returns how many were deleted.
pub fn apply(b: &dyn Backend, plan: &WalPlan) -> Result<u64, StorageError> {
    let mut deleted = 0;
    for n in &plan.delete_objects {
        if b.delete(&ObjectName::new(n.as_str())?)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

impl ArchiveContents {
    /// The contents without the objects named in `gone` (for checks).
    pub fn without(&self, gone: &BTreeSet<&str>) -> ArchiveContents {
        let mut c = self.clone();
        for t in c.timelines.values_mut() {
            t.stored.retain(|o| !gone.contains(o.name.as_str()));
            let present: BTreeSet<u64> = t
                .stored
                .iter()
                .filter(|o| o.segment)
                .map(|o| o.segno)
                .collect();
            t.segments.retain(|s, _| present.contains(s));
            t.runs = super::contents::runs(t.segments.keys().copied());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::archive::ArchiveFile;
    use crate::archive::contents::Listed;
    use crate::codec::Compression;
    use crate::repo::retention::{self, BackupEntry, KeepOptions};
    use crate::storage::Ident;
    use crate::types::{SystemId, WalSegSize};
    use crate::wal::HistoryEntry;

    const MB: u64 = 1 << 20;

    fn size() -> WalSegSize {
        WalSegSize::new(MB).unwrap()
    }

    fn name(f: ArchiveFile) -> String {
        let c = Ident::new("main").unwrap();
        f.object_name(&c, Compression::None).unwrap().to_string()
    }

    fn contents(segs: &[(u32, u64)], h2_switch: Option<u64>) -> ArchiveContents {
        let mut list: Vec<Listed> = segs
            .iter()
            .map(|&(t, s)| Listed {
                name: name(ArchiveFile::Segment(WalSegment::from_segno(
                    TimelineId(t),
                    s,
                    size(),
                ))),
                size: MB,
                modified: None,
            })
            .collect();
        let mut histories = BTreeMap::new();
        if let Some(sw) = h2_switch {
            let h = TimelineHistory::new(
                TimelineId(2),
                vec![HistoryEntry {
                    parent_tli: TimelineId(1),
                    switchpoint: Lsn(sw),
                    reason: Vec::new(),
                }],
            )
            .unwrap();
            let n = name(ArchiveFile::History(TimelineId(2)));
            list.push(Listed {
                name: n.clone(),
                size: 1,
                modified: None,
            });
            histories.insert((TimelineId(2), n), Ok(h.as_bytes().to_vec()));
        }
        ArchiveContents::analyse(
            Ident::new("main").unwrap(),
            size(),
            &list,
            &histories,
            Vec::new(),
        )
    }

    fn backup(id: &str, tli: u32, start: u64, stop: u64) -> BackupEntry {
        BackupEntry {
            id: id.into(),
            pinned: false,
            state: EntryState::Complete(Lineage {
                system_identifier: SystemId(7),
                start_lsn: Lsn(start),
                stop_lsn: Lsn(stop),
                start_tli: TimelineId(tli),
                stop_tli: TimelineId(tli),
                started_at: start as i64,
                finished_at: stop as i64,
                verification_failed: false,
                parent: None,
            }),
        }
    }

    fn backups(keep_full: Option<u32>, entries: Vec<BackupEntry>) -> ExpirePlan {
        let options = KeepOptions {
            keep_full,
            keep_within: None::<Duration>,
        };
        retention::plan(entries, SystemId(7), options, 1 << 40).unwrap()
    }

    #[test]
    fn deletes_wal_before_the_oldest_kept_start_only() {
        let c = contents(&(1..=10).map(|s| (1, s)).collect::<Vec<_>>(), None);
        let b = backups(
            Some(1),
            vec![
                backup("A", 1, 2 * MB + 40, 3 * MB),
                backup("B", 1, 6 * MB + 40, 7 * MB),
            ],
        );
        let w = plan(&b, &c);
        let seg = |s| WalSegment::from_segno(TimelineId(1), s, size());
        assert_eq!(w.kept_because, None);
        assert_eq!(w.delete_segments, vec![(TimelineId(1), seg(1), seg(5))]);
        assert_eq!(w.delete_objects.len(), 5);
        w.check(&b, &c).unwrap();
        // A plan that deletes the kept backup's first segment is refused.
        let mut bad = w.clone();
        bad.delete_objects.push(name(ArchiveFile::Segment(seg(6))));
        assert!(bad.check(&b, &c).is_err());
        // Without retention, nothing.
        let w = plan(&backups(None, vec![backup("B", 1, 6 * MB, 7 * MB)]), &c);
        assert!(w.delete_objects.is_empty() && w.kept_because.is_some());
    }

    #[test]
    fn two_branches_in_the_archive_keep_all_wal() {
        // Timeline 2 began in segment 5, but timeline 1 has segments up to 8.
        let mut segs: Vec<(u32, u64)> = (1..=8).map(|s| (1, s)).collect();
        segs.extend((5..=9).map(|s| (2, s)));
        let c = contents(&segs, Some(5 * MB + 100));
        let b = backups(
            Some(1),
            vec![
                backup("A", 1, 2 * MB, 3 * MB),
                backup("B", 2, 7 * MB, 8 * MB),
            ],
        );
        let w = plan(&b, &c);
        assert!(w.delete_objects.is_empty(), "{w:?}");
        assert!(w.kept_because.unwrap().contains("two branches"));
        // Without the branch, timeline 1's WAL before the switch goes and timeline 2's before
        // B's start too.
        let mut segs: Vec<(u32, u64)> = (1..=4).map(|s| (1, s)).collect();
        segs.extend((5..=9).map(|s| (2, s)));
        let c = contents(&segs, Some(5 * MB + 100));
        let w = plan(&b, &c);
        assert_eq!(w.delete_objects.len(), 6, "{w:?}");
        w.check(&b, &c).unwrap();
    }
}
