//! The questions asked of an archive's contents (pure): does it cover the WAL from a backup's
//! start to a target, how far recovery can replay, where WAL is missing, and the
//! recoverability window. How timelines are followed: see the parent module.

use serde::Serialize;

use super::{ArchiveContents, HistoryState};
use crate::types::{Lsn, TimelineId, WalSegment};
use crate::wal::TimelineHistory;

/// Where recovery must get to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "lsn", rename_all = "snake_case")]
pub enum RecoveryEnd {
    /// Every byte before this LSN (a backup's stop LSN: its last segment holds the byte before).
    Before(Lsn),
    /// Every byte up to and including this LSN (a target: the segment containing it).
    Through(Lsn),
}

/// Why the archive does not cover a stretch of WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Missing {
    #[error("WAL segment {segment} is not in the archive")]
    Segment { segment: WalSegment },
    #[error(
        "timeline {timeline} at {lsn} is not part of the history of timeline {history} (another \
         branch)"
    )]
    NotInHistory {
        timeline: TimelineId,
        lsn: Lsn,
        history: TimelineId,
    },
    #[error("the history file of timeline {timeline} is not in the archive (or cannot be read)")]
    History { timeline: TimelineId },
    #[error("the end {end} is before the start {start}")]
    EndBeforeStart { start: Lsn, end: Lsn },
}

/// How far recovery from a point can replay with the archive's WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    /// Every byte before this LSN can be read (the end of the last usable segment, or a
    /// switchpoint when only an older timeline's copy of the next segment is there).
    pub end: Lsn,
    /// The last segment read and its object time (Unix seconds).
    pub last: Option<WalSegment>,
    pub last_time: Option<i64>,
    /// The first segment recovery would miss.
    pub missing: WalSegment,
    /// Segments of the followed history lie after the missing one: a hole, not the end of
    /// what was archived so far.
    pub hole: bool,
}

/// Where a gap comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum GapSource {
    /// Segments missing between present segments of the timeline.
    Hole,
    /// Segments of a timeline missing before (parent) or after (child) the switch to
    /// timeline `to` that its history file records.
    Switch { to: TimelineId },
    /// Recorded by the archiver.
    Recorded {
        reason: String,
        host: String,
        time: String,
    },
}

/// Missing WAL: segments `first..=last` of one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub timeline: TimelineId,
    pub first: WalSegment,
    pub last: WalSegment,
    #[serde(flatten)]
    pub source: GapSource,
}

/// A backup, as the recoverability window sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowBackup {
    pub id: String,
    pub start_tli: TimelineId,
    pub start_lsn: Lsn,
    pub stop_tli: TimelineId,
    pub stop_lsn: Lsn,
    /// Unix seconds.
    pub finished_at: Option<i64>,
    /// Its WAL (start to stop) is stored in the backup, not only in the archive.
    pub wal_in_backup: bool,
}

/// A point of the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowPoint {
    pub timeline: TimelineId,
    pub lsn: Lsn,
    /// Unix seconds, where known (a backup's finish, a segment's object time).
    pub time: Option<i64>,
}

/// Every point from `from` to `to` on the history of `timeline` can be reached by a restore:
/// `from` is the stop point of backup `backup` (the oldest whose WAL is complete and whose
/// continuous WAL reaches `to`), `to` the end of the continuous WAL after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    pub timeline: TimelineId,
    pub backup: String,
    pub from: WindowPoint,
    pub to: WindowPoint,
    /// The WAL after `to` is missing while later WAL is present (a gap; past it only a newer
    /// backup restores), rather than not archived yet.
    pub ends_at_hole: bool,
}

impl ArchiveContents {
    fn segment(&self, tli: TimelineId, segno: u64) -> WalSegment {
        WalSegment::from_segno(tli, segno, self.seg_size)
    }

    fn has(&self, tli: TimelineId, segno: u64) -> bool {
        self.timelines.get(&tli).is_some_and(|t| t.has(segno))
    }

    /// For `history`, which timeline recovery reads each segment number from: `(tli, first,
    /// last)` segment-number ranges, oldest first (empty ranges left out: two switches in one
    /// segment).
    fn owners(&self, history: &TimelineHistory) -> Vec<(TimelineId, u64, u64, Option<Lsn>)> {
        let size = self.seg_size.bytes();
        let spans = history.spans();
        let mut out = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let first = s.begin.0 / size;
            let last = match spans.get(i + 1) {
                Some(next) => match (next.begin.0 / size).checked_sub(1) {
                    Some(l) if l >= first => l,
                    _ => continue,
                },
                None => u64::MAX,
            };
            out.push((s.tli, first, last, s.end));
        }
        out
    }

    /// Whether an older timeline of `history` than `owner` has segment `segno` and wrote every
    /// byte up to `last_byte` (its copy serves a target before its switchpoint).
    fn older_copy(
        &self,
        history: &TimelineHistory,
        owner: TimelineId,
        segno: u64,
        last_byte: u64,
    ) -> Option<(TimelineId, Lsn)> {
        let size = self.seg_size.bytes();
        history.spans().into_iter().rev().find_map(|s| {
            let end = s.end?;
            let ok = s.tli < owner
                && s.begin.0 / size <= segno
                && last_byte < end.0
                && self.has(s.tli, segno);
            ok.then_some((s.tli, end))
        })
    }

    fn check_start(
        &self,
        from: (TimelineId, Lsn),
        history: &TimelineHistory,
    ) -> Result<(), Missing> {
        let (tli, lsn) = from;
        let on = history
            .spans()
            .iter()
            .any(|s| s.tli == tli && s.begin <= lsn && s.end.is_none_or(|e| lsn <= e));
        if !on {
            return Err(Missing::NotInHistory {
                timeline: tli,
                lsn,
                history: history.tli(),
            });
        }
        if history.tli() != tli && history.tli() != TimelineId::FIRST {
            let archived = matches!(
                self.timelines
                    .get(&history.tli())
                    .and_then(|t| t.history.as_ref()),
                Some(HistoryState::Parsed { .. })
            );
            if !archived {
                return Err(Missing::History {
                    timeline: history.tli(),
                });
            }
        }
        Ok(())
    }

    /// Whether every segment recovery reads from `from` (a backup's start: timeline and LSN) to
    /// `to` on the history `history` (the target timeline's) is in the archive, following the
    /// history across timeline switches; and, when the target timeline is not the start's,
    /// whether its history file is. Returns the first thing missing.
    pub fn covers(
        &self,
        from: (TimelineId, Lsn),
        to: RecoveryEnd,
        history: &TimelineHistory,
    ) -> Result<(), Missing> {
        self.check_start(from, history)?;
        let size = self.seg_size.bytes();
        let last_byte = match to {
            RecoveryEnd::Before(end) if end < from.1 => None,
            RecoveryEnd::Before(end) => Some(end.0.saturating_sub(1).max(from.1.0)),
            RecoveryEnd::Through(end) => (end >= from.1).then_some(end.0),
        };
        let Some(last_byte) = last_byte else {
            let end = match to {
                RecoveryEnd::Before(e) | RecoveryEnd::Through(e) => e,
            };
            return Err(Missing::EndBeforeStart { start: from.1, end });
        };
        let (first_seg, last_seg) = (from.1.0 / size, last_byte / size);
        for (tli, a, b, _) in self.owners(history) {
            let (a, b) = (a.max(first_seg), b.min(last_seg));
            if a > b {
                continue;
            }
            let missing = match self.timelines.get(&tli) {
                Some(t) => t.first_missing(a, b),
                None => Some(a),
            };
            if let Some(m) = missing {
                if m == last_seg && self.older_copy(history, tli, m, last_byte).is_some() {
                    return Ok(());
                }
                return Err(Missing::Segment {
                    segment: self.segment(tli, m),
                });
            }
        }
        Ok(())
    }

    /// How far recovery from `from` can replay on `history` with the archive's WAL (see
    /// [`Reach`]); the start must be on the history (as for [`ArchiveContents::covers`]).
    pub fn reach(
        &self,
        from: (TimelineId, Lsn),
        history: &TimelineHistory,
    ) -> Result<Reach, Missing> {
        self.check_start(from, history)?;
        let size = self.seg_size.bytes();
        let first_seg = from.1.0 / size;
        let owners = self.owners(history);
        let mut last: Option<(TimelineId, u64)> = None;
        for (i, &(tli, a, b, _)) in owners.iter().enumerate() {
            let a = a.max(first_seg);
            if a > b {
                continue;
            }
            let missing = match self.timelines.get(&tli) {
                Some(t) => t.first_missing(a, b),
                None => Some(a),
            };
            let Some(m) = missing else {
                last = Some((tli, b));
                continue;
            };
            let seg_end = m.saturating_mul(size);
            let mut end = Lsn(seg_end.max(from.1.0));
            if m > a {
                last = Some((tli, m - 1));
            }
            // An older timeline's copy of the segment serves up to its switchpoint.
            if let Some((old, sw)) = self.older_copy(history, tli, m, seg_end) {
                if sw > end {
                    end = sw;
                    last = Some((old, m));
                }
            }
            let hole = owners[i..].iter().any(|&(t, oa, ob, _)| {
                let lo = oa.max(m.saturating_add(1));
                lo <= ob
                    && self
                        .timelines
                        .get(&t)
                        .is_some_and(|tl| tl.segments.range(lo..=ob).next().is_some())
            });
            let last_time = last.and_then(|(t, s)| {
                self.timelines
                    .get(&t)
                    .and_then(|tl| tl.segments.get(&s).copied().flatten())
            });
            return Ok(Reach {
                end,
                last: last.map(|(t, s)| self.segment(t, s)),
                last_time,
                missing: self.segment(tli, m),
                hole,
            });
        }
        // Every segment number up to the last one present: cannot happen (u64::MAX segments).
        let (tli, _, _, _) = owners
            .last()
            .copied()
            .unwrap_or((history.tli(), 0, 0, None));
        Ok(Reach {
            end: Lsn(u64::MAX),
            last: None,
            last_time: None,
            missing: self.segment(tli, u64::MAX / size),
            hole: false,
        })
    }

    /// Missing WAL: holes between present segments of each timeline, segments missing around
    /// a switch the history files record (the parent's before the switch, the child's from the
    /// switch segment to its first present one; only for timelines with segments), and the
    /// recorded gaps. Sorted by timeline and first segment.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut out = Vec::new();
        let gap = |tli, first: u64, last: u64, source| Gap {
            timeline: tli,
            first: self.segment(tli, first),
            last: self.segment(tli, last),
            source,
        };
        for (&tli, tl) in &self.timelines {
            for w in tl.runs.windows(2) {
                out.push(gap(tli, w[0].last + 1, w[1].first - 1, GapSource::Hole));
            }
        }
        for (&tli, tl) in &self.timelines {
            let Some(HistoryState::Parsed { history }) = &tl.history else {
                continue;
            };
            let Some(last) = history.entries().last() else {
                continue;
            };
            let switch_seg = last.switchpoint.0 / self.seg_size.bytes();
            let parent = last.parent_tli;
            if let Some(p) = self.timelines.get(&parent)
                && let Some(&newest) = p.segments.keys().next_back()
                && let Some(before) = switch_seg.checked_sub(1)
                && newest < before
            {
                out.push(gap(
                    parent,
                    newest + 1,
                    before,
                    GapSource::Switch { to: tli },
                ));
            }
            if let Some(&oldest) = tl.segments.keys().next()
                && oldest > switch_seg
            {
                out.push(gap(
                    tli,
                    switch_seg,
                    oldest - 1,
                    GapSource::Switch { to: tli },
                ));
            }
        }
        // A recorded gap is closed where its segments are in the archive after all: a segment
        // dropped by the queue limit whose push PostgreSQL retried (a crash between the gap
        // record and the archiver's `.done`) is stored later, and recovery reads it like any
        // other. Only the segments still missing are a gap; a hole they cover is that gap
        // (listed once, with why).
        let mut recorded = Vec::new();
        for g in &self.recorded_gaps {
            let source = GapSource::Recorded {
                reason: g.reason.clone(),
                host: g.host.clone(),
                time: g.time.clone(),
            };
            let (a, b) = match (g.first.segno(self.seg_size), g.last.segno(self.seg_size)) {
                (Ok(a), Ok(b)) if a <= b => (a, b),
                // Not a range of segment names of this size: kept as recorded (never hidden).
                _ => {
                    recorded.push(Gap {
                        timeline: g.timeline,
                        first: g.first,
                        last: g.last,
                        source,
                    });
                    continue;
                }
            };
            let mut from = Some(a);
            let present = self.timelines.get(&g.timeline).map(|t| &t.segments);
            for &s in present
                .into_iter()
                .flat_map(|p| p.range(a..=b))
                .map(|(s, _)| s)
            {
                if let Some(f) = from
                    && s > f
                {
                    recorded.push(gap(g.timeline, f, s - 1, source.clone()));
                }
                from = s.checked_add(1);
            }
            if let Some(f) = from
                && f <= b
            {
                recorded.push(gap(g.timeline, f, b, source));
            }
        }
        out.retain(|h| {
            !(matches!(h.source, GapSource::Hole)
                && recorded
                    .iter()
                    .any(|r| r.timeline == h.timeline && r.first <= h.first && h.last <= r.last))
        });
        out.append(&mut recorded);
        out.sort_by_key(|a| (a.timeline, a.first, a.last));
        out
    }

    /// The recoverability window on `history` (by default the newest timeline's): from the
    /// stop point of the oldest backup whose own WAL is complete (in the backup, or in the
    /// archive) and whose continuous WAL reaches furthest, to the end of that WAL. Backups not
    /// on the history (another branch) are left out. `None` when no backup qualifies.
    pub fn window(&self, backups: &[WindowBackup], history: &TimelineHistory) -> Option<Window> {
        let mut best: Option<(Lsn, Window)> = None;
        let mut sorted: Vec<&WindowBackup> = backups.iter().collect();
        sorted.sort_by_key(|b| (b.stop_lsn, b.start_lsn, b.id.clone()));
        for b in sorted {
            let on = |tli, lsn| history.timeline_of(lsn) == tli;
            if !on(b.start_tli, b.start_lsn) || !on(b.stop_tli, b.stop_lsn) {
                continue;
            }
            let own = b.wal_in_backup
                || self
                    .covers(
                        (b.start_tli, b.start_lsn),
                        RecoveryEnd::Before(b.stop_lsn),
                        history,
                    )
                    .is_ok();
            if !own {
                continue;
            }
            let from = if b.wal_in_backup {
                (b.stop_tli, b.stop_lsn)
            } else {
                (b.start_tli, b.start_lsn)
            };
            let Ok(r) = self.reach(from, history) else {
                continue;
            };
            let end = r.end.max(b.stop_lsn);
            if best.as_ref().is_some_and(|(e, _)| *e >= end) {
                continue;
            }
            let to_tli = history.timeline_of(Lsn(end.0.saturating_sub(1)));
            let reached = end > b.stop_lsn;
            best = Some((
                end,
                Window {
                    timeline: history.tli(),
                    backup: b.id.clone(),
                    from: WindowPoint {
                        timeline: b.stop_tli,
                        lsn: b.stop_lsn,
                        time: b.finished_at,
                    },
                    to: WindowPoint {
                        timeline: if reached { to_tli } else { b.stop_tli },
                        lsn: end,
                        time: if reached { r.last_time } else { b.finished_at },
                    },
                    ends_at_hole: r.hole,
                },
            ));
        }
        best.map(|(_, w)| w)
    }
}
