//! The WAL archive part of `pgsafe info`: per timeline the WAL held (first and last segment),
//! the gaps (holes between segments, segments missing around a timeline switch, gaps the
//! archiver recorded), the last archived segment and when, the archive lag, the recoverability
//! window, and what is wrong. Pure: the archive's contents, the cluster's catalog and the time
//! in, figures out (rendering is the command's).
//!
//! Failed pushes come from [`super::failure`] (events in the repository, and the server's
//! local spool when it is readable here): [`add_failures`] puts the last one of each timeline
//! into the summary.

use serde::Serialize;

use super::contents::{ArchiveContents, Gap, GapSource, HistoryState, Window, WindowBackup};
use super::failure::FailedPush;
use crate::info::WalMode;
use crate::repo::catalog::Catalog;
use crate::repo::summary::Status;
use crate::types::{Lsn, TimelineId, WalSegment};

/// One timeline of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineSummary {
    pub timeline: TimelineId,
    /// The oldest and newest segment held (`None`: only other files).
    pub wal_min: Option<WalSegment>,
    pub wal_max: Option<WalSegment>,
    pub segments: u64,
    pub partials: u64,
    /// `parsed`, `broken` or `none` (timeline 1 has none).
    pub history: &'static str,
    /// From the history file: the parent timeline and where it switched.
    pub parent: Option<TimelineId>,
    pub switchpoint: Option<Lsn>,
    pub bytes: u64,
    /// The last failed push of a file of this timeline (see [`add_failures`]).
    pub last_failed: Option<FailedPush>,
}

/// A gap, and what it means for restores (the same fields for every kind of gap, `null`
/// where they do not apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapSummary {
    #[serde(skip)]
    pub gap: Gap,
    pub timeline: TimelineId,
    pub first: WalSegment,
    pub last: WalSegment,
    /// `hole`, `switch` or `recorded`.
    pub source: &'static str,
    /// For `switch`: the timeline whose switch it is.
    pub switch_to: Option<TimelineId>,
    /// For `recorded`: why, by whom and when (RFC 3339, as recorded).
    pub reason: Option<String>,
    pub recorded_by: Option<String>,
    pub recorded_at: Option<String>,
    /// Entirely before the oldest usable backup's start: no restore needs it.
    pub before_oldest_backup: bool,
    /// After the newest usable backup's stop: recovery cannot replay past it, only a new
    /// backup restores beyond.
    pub after_newest_backup: bool,
}

/// The newest segment and when it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastArchived {
    pub segment: WalSegment,
    /// Unix seconds (the object's time).
    pub time: Option<i64>,
}

/// What is wrong with a cluster's WAL archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalProblem {
    /// `wal_gap`, `no_history`, or a kind of [`super::contents::ProblemKind`].
    pub kind: String,
    pub object: Option<String>,
    pub message: String,
}

/// The WAL archive of one cluster, as `info` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalSummary {
    pub objects: u64,
    pub bytes: u64,
    /// Ascending.
    pub timelines: Vec<TimelineSummary>,
    pub gaps: Vec<GapSummary>,
    pub last_archived: Option<LastArchived>,
    /// The last failed push, all timelines (see [`add_failures`]).
    pub last_failed: Option<FailedPush>,
    /// Seconds from the newest object's time to now (0 when it is in the future).
    pub archive_lag_secs: Option<u64>,
    /// On the newest timeline's history; `None` when no usable backup's WAL is complete.
    pub window: Option<Window>,
    pub problems: Vec<WalProblem>,
}

/// The usable complete backups of a catalog as the window sees them.
pub fn window_backups(c: &Catalog) -> Vec<WindowBackup> {
    c.complete()
        .filter(|e| !e.failed_verification())
        .filter_map(|e| {
            let i = e.info.as_ref()?;
            (i.system_identifier == c.registration.system_identifier).then(|| WindowBackup {
                id: e.id.to_string(),
                start_tli: i.start_tli,
                start_lsn: i.start_lsn,
                stop_tli: i.stop_tli,
                stop_lsn: i.stop_lsn,
                finished_at: Some(i.finished_at),
                wal_in_backup: i.wal.mode == WalMode::Include,
            })
        })
        .collect()
}

/// The summary of `contents` for the cluster of `catalog`, at `now` (Unix seconds).
pub fn summarize(contents: &ArchiveContents, catalog: &Catalog, now: i64) -> WalSummary {
    let size = contents.seg_size;
    let seg = |tli, segno| WalSegment::from_segno(tli, segno, size);
    let mut problems: Vec<WalProblem> = contents
        .problems
        .iter()
        .map(|p| WalProblem {
            kind: serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            object: Some(p.object.clone()),
            message: format!("{}: {}", p.object, p.message),
        })
        .collect();
    let mut timelines = Vec::new();
    let mut last: Option<(Option<i64>, WalSegment)> = None;
    for (&tli, t) in &contents.timelines {
        let (parent, switchpoint, history) = match &t.history {
            Some(HistoryState::Parsed { history }) => {
                let e = history.entries().last();
                (e.map(|e| e.parent_tli), e.map(|e| e.switchpoint), "parsed")
            }
            Some(HistoryState::Broken { .. }) => (None, None, "broken"),
            None => (None, None, "none"),
        };
        if let Some((&segno, &time)) = t.segments.iter().next_back() {
            let s = seg(tli, segno);
            // The newest by object time; by name when times are unknown.
            if last.as_ref().is_none_or(|(lt, ls)| (time, s) > (*lt, *ls)) {
                last = Some((time, s));
            }
        }
        timelines.push(TimelineSummary {
            timeline: tli,
            wal_min: t.segments.keys().next().map(|&s| seg(tli, s)),
            wal_max: t.segments.keys().next_back().map(|&s| seg(tli, s)),
            segments: t.segments.len() as u64,
            partials: t.partials.len() as u64,
            history,
            parent,
            switchpoint,
            bytes: t.bytes,
            last_failed: None,
        });
    }
    let backups = window_backups(catalog);
    let oldest = backups.iter().min_by_key(|b| (b.start_tli, b.start_lsn));
    let newest = backups.iter().max_by_key(|b| (b.stop_tli, b.stop_lsn));
    let start_of = |s: WalSegment| s.start_lsn(size).unwrap_or(Lsn(u64::MAX));
    let gaps: Vec<GapSummary> = contents
        .gaps()
        .into_iter()
        .map(|gap| {
            let end = start_of(gap.last)
                .checked_add(size.bytes())
                .unwrap_or(Lsn(u64::MAX));
            let before = oldest.is_some_and(|o| gap.timeline <= o.start_tli && end <= o.start_lsn);
            let after = newest
                .is_some_and(|n| gap.timeline >= n.stop_tli && start_of(gap.first) >= n.stop_lsn);
            let (source, switch_to, reason, recorded_by, recorded_at) = match &gap.source {
                GapSource::Hole => ("hole", None, None, None, None),
                GapSource::Switch { to } => ("switch", Some(*to), None, None, None),
                GapSource::Recorded { reason, host, time } => (
                    "recorded",
                    None,
                    Some(reason.clone()),
                    Some(host.clone()),
                    Some(time.clone()),
                ),
            };
            GapSummary {
                timeline: gap.timeline,
                first: gap.first,
                last: gap.last,
                source,
                switch_to,
                reason,
                recorded_by,
                recorded_at,
                gap,
                before_oldest_backup: before,
                after_newest_backup: after,
            }
        })
        .collect();
    for g in gaps.iter().filter(|g| !g.before_oldest_backup) {
        let what = match &g.gap.source {
            GapSource::Hole => "missing from the archive".to_owned(),
            GapSource::Switch { to } => format!("missing around the switch to timeline {to}"),
            GapSource::Recorded { reason, host, time } => {
                format!("dropped without archiving by {host} at {time} ({reason})")
            }
        };
        let then = if g.after_newest_backup {
            "point-in-time recovery past it is impossible: take a new full backup"
        } else {
            "point-in-time recovery across it is impossible: restores reach up to it, or start \
             from a backup taken after it"
        };
        problems.push(WalProblem {
            kind: "wal_gap".into(),
            object: None,
            message: format!(
                "WAL of timeline {} from {} to {} is {what}: {then}",
                g.gap.timeline, g.gap.first, g.gap.last
            ),
        });
    }
    let newest_tli = contents
        .newest_timeline()
        .into_iter()
        .chain(backups.iter().map(|b| b.stop_tli))
        .max();
    let history = newest_tli.and_then(|t| contents.history_of(t));
    if let (Some(t), None) = (newest_tli, &history) {
        problems.push(WalProblem {
            kind: "no_history".into(),
            object: Some(t.history_file_name()),
            message: format!(
                "the history file of timeline {t} is not in the archive (or cannot be read): \
                 recovery from an older timeline's backup cannot follow it"
            ),
        });
    }
    let window = history.and_then(|h| contents.window(&backups, &h));
    let objects = contents.timelines.values().map(|t| t.objects).sum::<u64>()
        + contents.problems.len() as u64;
    WalSummary {
        objects,
        bytes: contents.timelines.values().map(|t| t.bytes).sum(),
        timelines,
        gaps,
        last_archived: last.map(|(time, segment)| LastArchived { segment, time }),
        last_failed: None,
        archive_lag_secs: contents
            .newest
            .as_ref()
            .map(|(t, _)| u64::try_from(now.saturating_sub(*t)).unwrap_or(0)),
        window,
        problems,
    }
}

/// Counts the archive's problems in a cluster's status.
pub fn fold_into(status: &mut Status, wal: &WalSummary) {
    status.problems += wal.problems.len() as u64;
    status.ok = status.ok && wal.problems.is_empty();
}

/// Puts the last failed push of each timeline, and the last of all, into `wal` (`failures` as
/// [`super::failure::merge`] gives them: newest last). A timeline the archive holds nothing of
/// gets an entry of its own, so that a push failing from its first file on is shown.
pub fn add_failures(wal: &mut WalSummary, failures: &[FailedPush]) {
    for f in failures {
        let t = match wal.timelines.iter().position(|t| t.timeline == f.timeline) {
            Some(i) => i,
            None => {
                wal.timelines.push(TimelineSummary {
                    timeline: f.timeline,
                    wal_min: None,
                    wal_max: None,
                    segments: 0,
                    partials: 0,
                    history: "none",
                    parent: None,
                    switchpoint: None,
                    bytes: 0,
                    last_failed: None,
                });
                wal.timelines.sort_by_key(|t| t.timeline);
                wal.timelines
                    .iter()
                    .position(|t| t.timeline == f.timeline)
                    .unwrap_or_default()
            }
        };
        if let Some(t) = wal.timelines.get_mut(t) {
            t.last_failed = Some(f.clone());
        }
    }
    wal.last_failed = failures.last().cloned();
}
