//! Which backup of a repository can reach a recovery target, and on which timeline recovery
//! goes there. Pure: the catalog's backups and the archive's timeline histories in, a choice
//! (or why there is none) out; the WAL coverage of the choice is checked by the caller against
//! the archive's contents.
//!
//! Facts from PostgreSQL (`src/backend/access/transam/xlogrecovery.c`, `timeline.c`):
//! * `recovery_target_timeline = 'latest'` probes the archive for the history files of the
//!   timelines above the restored checkpoint's, one by one, and follows the highest found before
//!   the first missing one (`findNewestTimeLine`) — by number, whichever branch it is on.
//! * Recovery refuses a target timeline whose history does not contain the backup's checkpoint
//!   on the backup's timeline ("requested timeline N is not a child of this server's history").
//! * A target reached before the backup is consistent ends recovery with "requested recovery
//!   stop point is before consistent recovery point"; a target never reached ends it with
//!   "recovery ended before configured recovery target was reached" on 13+, while 10–12 open
//!   the database at the end of the WAL as if the target had been reached.
//!
//! So pgsafe resolves `latest` itself to the newest timeline that descends from the chosen
//! backup (refusing when two branches do, instead of following the higher number), and writes
//! that timeline's ID.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::recovery::{RecoveryTarget, TargetTimeline};
use crate::types::{Lsn, TimelineId};
use crate::wal::TimelineHistory;

/// A recovery target as the planner needs it: a time is an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum PitrTarget {
    Time(#[serde(serialize_with = "rfc3339")] DateTime<Utc>),
    Lsn(Lsn),
    Xid(String),
    Name(String),
    Immediate,
    /// No target: recovery replays every archived segment it can read from the backup on and
    /// opens at the end of the archive (the usual restore after losing the server).
    End,
}

/// Times in JSON: RFC 3339 in UTC (the project's convention).
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

impl PitrTarget {
    /// The setting recovery gets; a time in UTC with microseconds, so the server reads the
    /// instant the backup was chosen for whatever its `timezone` setting.
    /// `None` for [`PitrTarget::End`]: no `recovery_target*` setting at all.
    pub fn recovery_target(&self) -> Option<RecoveryTarget> {
        Some(match self {
            PitrTarget::Time(t) => {
                RecoveryTarget::Time(t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
            }
            PitrTarget::Lsn(l) => RecoveryTarget::Lsn(*l),
            PitrTarget::Xid(x) => RecoveryTarget::Xid(x.clone()),
            PitrTarget::Name(n) => RecoveryTarget::Name(n.clone()),
            PitrTarget::Immediate => RecoveryTarget::Immediate,
            PitrTarget::End => return None,
        })
    }
}

impl fmt::Display for PitrTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PitrTarget::Time(t) => write!(f, "time {}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
            PitrTarget::End => f.write_str("the end of the archived WAL"),
            other => match other.recovery_target() {
                Some(t) => t.fmt(f),
                None => Ok(()),
            },
        }
    }
}

/// Parses a target time that names its offset from UTC: `2026-11-21 10:46:49+00`,
/// `2026-11-21T10:46:49.5+01:00`, `…Z`, `… UTC`. A time without an offset is refused: the
/// server would read it in the restored copy's `timezone`, which the backup was not chosen for.
pub fn parse_target_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    let no_offset = || {
        format!(
            "{s:?}: give the target time with its offset from UTC (e.g. '2026-11-21 \
             10:46:49+00'): without one, PostgreSQL reads it in the restored server's timezone \
             setting"
        )
    };
    let t = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix("UTC"))
        .map(|d| format!("{}+00", d.trim_end()))
        .unwrap_or_else(|| t.to_owned());
    let t = match t.strip_suffix(['Z', 'z']) {
        Some(d) => format!("{d}+00"),
        None => t,
    };
    let t = t.replacen('T', " ", 1);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z"] {
        if let Ok(d) = DateTime::parse_from_str(&t, fmt) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d"] {
        if NaiveDateTime::parse_from_str(&t, fmt).is_ok()
            || chrono::NaiveDate::parse_from_str(&t, fmt).is_ok()
        {
            return Err(no_offset());
        }
    }
    Err(format!(
        "{s:?} is not a time pgsafe can read: use 'YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM]' (or \
         RFC 3339)"
    ))
}

/// A complete backup the planner may choose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub id: String,
    pub start_lsn: Lsn,
    pub start_tli: TimelineId,
    pub stop_lsn: Lsn,
    pub stop_tli: TimelineId,
    /// When pgsafe finished the backup (unix seconds): its stop point was written before.
    pub finished_at: i64,
    /// The server's clock right after the backup stopped (microseconds since the Unix epoch),
    /// when the backup recorded it: every transaction ended before its stop point ended before.
    pub stop_time_us: Option<i64>,
    /// Its latest verification failed: never chosen unless named.
    pub failed_verification: bool,
}

/// The complete backups of a catalog with their `pgsafe.json`, in lineage order (oldest first).
pub fn candidates(catalog: &crate::repo::Catalog) -> Vec<Candidate> {
    catalog
        .complete()
        .filter_map(|e| {
            let i = e.info.as_ref()?;
            Some(Candidate {
                id: e.id.as_str().to_owned(),
                start_lsn: i.start_lsn,
                start_tli: i.start_tli,
                stop_lsn: i.stop_lsn,
                stop_tli: i.stop_tli,
                finished_at: i.finished_at,
                stop_time_us: i
                    .stop_time
                    .as_deref()
                    .and_then(crate::repo::doc::parse_time),
                failed_verification: e.failed_verification(),
            })
        })
        .collect()
}

/// What recovery must replay, and why this backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selection {
    pub backup: Candidate,
    /// Why this one, in words.
    pub why: String,
    /// The timeline recovery follows (written as `recovery_target_timeline`).
    pub timeline: TimelineId,
    /// How the timeline was chosen.
    pub timeline_why: String,
    /// Newer backups that cannot reach the target, and why.
    pub skipped: Vec<Skipped>,
    /// The target cannot be placed before recovery (a transaction or restore point): the
    /// newest backup was taken, and the DBA should know how to choose another.
    pub unknowable: bool,
}

/// A backup passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub id: String,
    pub why: String,
}

/// A timeline branch offered as a choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Branch {
    pub timeline: TimelineId,
    /// Where it left its parent (`None` for timeline 1).
    pub forked_from: Option<(TimelineId, Lsn)>,
    /// It has a child timeline, yet the archive holds its WAL past the child's switchpoint
    /// (this one): it went on after the fork (an old primary still archiving, or the source of
    /// a copy that was restored, promoted and archived here).
    pub went_on_past: Option<Lsn>,
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timeline {}", self.timeline)?;
        if let Some((p, at)) = self.forked_from {
            write!(f, " (left timeline {p} at {at})")?;
        }
        if let Some(at) = self.went_on_past {
            write!(f, " (went on past {at}, where a child timeline left it)")?;
        }
        Ok(())
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why no backup can be chosen. PostgreSQL's names, not the options that set them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("the repository has no complete backup of this cluster")]
    NoBackups,
    #[error("no backup {0} among the complete backups of this cluster")]
    NoSuchBackup(String),
    #[error(
        "no backup can reach the recovery target {target}: {}. A restore can only reach points \
         after the end of a backup, on a timeline that descends from it",
        list(.skipped.iter().map(|s| format!("{} {}", s.id, s.why)).collect::<Vec<_>>().as_slice())
    )]
    Unreachable {
        target: String,
        skipped: Vec<Skipped>,
    },
    #[error(
        "recovery target timeline {0} is not in the archive (no {hist} history file): PostgreSQL \
         would refuse to start",
        hist = .0.history_file_name()
    )]
    NoSuchTimeline(TimelineId),
    #[error(
        "which timeline recovery should follow from backup {backup} cannot be told: the archive \
         holds diverging branches that descend from it: {}. PostgreSQL's 'latest' would follow \
         the highest number, which may be an abandoned branch (a copy restored and promoted \
         that archived here, or the old primary after a failover). Name the timeline of the \
         live branch (recovery_target_timeline)",
        list(.branches)
    )]
    DivergingTimelines {
        backup: String,
        branches: Vec<Branch>,
    },
    #[error(
        "which backup is the newest cannot be told: backups {first} and {second} lie on \
         diverging timelines. Name the backup to restore, or the timeline of the live branch \
         (recovery_target_timeline)"
    )]
    DivergingBackups { first: String, second: String },
}

/// The timelines the archive knows: every history file, parsed, and how far each timeline's
/// archived WAL goes.
#[derive(Debug, Clone, Default)]
pub struct Timelines {
    pub histories: BTreeMap<TimelineId, TimelineHistory>,
    /// Per timeline, the first LSN after its newest archived segment.
    pub archived_end: BTreeMap<TimelineId, Lsn>,
    /// The WAL segment size (bytes) the ends are counted in.
    pub seg_size: u64,
}

impl Timelines {
    pub fn new(histories: impl IntoIterator<Item = TimelineHistory>) -> Timelines {
        Timelines {
            histories: histories.into_iter().map(|h| (h.tli(), h)).collect(),
            archived_end: BTreeMap::new(),
            seg_size: 0,
        }
    }

    /// With the end of each timeline's archived WAL, in segments of `seg_size` bytes.
    pub fn with_ends(
        mut self,
        seg_size: u64,
        ends: impl IntoIterator<Item = (TimelineId, Lsn)>,
    ) -> Timelines {
        self.archived_end = ends.into_iter().collect();
        self.seg_size = seg_size;
        self
    }

    /// Whether the archive holds WAL of `tli` in a segment after the one holding `switch`
    /// (where a child left it): the timeline went on after the fork.
    fn went_on(&self, tli: TimelineId, switch: Lsn, seg_size: u64) -> bool {
        self.archived_end
            .get(&tli)
            .is_some_and(|end| seg_size > 0 && end.0.div_ceil(seg_size) > switch.0 / seg_size + 1)
    }

    /// The history of `tli`: its file, or none for timeline 1 (PostgreSQL's dummy history when
    /// the file is missing).
    pub fn history(&self, tli: TimelineId) -> Option<TimelineHistory> {
        match self.histories.get(&tli) {
            Some(h) => Some(h.clone()),
            None => TimelineHistory::without_parents(tli).ok(),
        }
    }

    /// PostgreSQL's `findNewestTimeLine`: the highest timeline above `from` reached by probing
    /// history files one by one until one is missing.
    pub fn newest_by_number(&self, from: TimelineId) -> TimelineId {
        let mut newest = from;
        while let Some(next) = newest.0.checked_add(1).map(TimelineId) {
            if !self.histories.contains_key(&next) {
                break;
            }
            newest = next;
        }
        newest
    }

    /// The timelines whose history contains `(tli, lsn)` — the point lies on their past — and
    /// `tli` itself.
    fn descendants(&self, tli: TimelineId, lsn: Lsn) -> BTreeSet<TimelineId> {
        let mut out: BTreeSet<TimelineId> = self
            .histories
            .values()
            .filter(|h| on_path(h, tli, lsn))
            .map(|h| h.tli())
            .collect();
        out.insert(tli);
        out
    }

    /// The branches from `(tli, lsn)`: descendants that no other descendant continues, and
    /// those whose archived WAL goes on past where a child left them.
    fn leaves(&self, tli: TimelineId, lsn: Lsn, seg_size: u64) -> Vec<Branch> {
        let d = self.descendants(tli, lsn);
        d.iter()
            .filter_map(|t| {
                // The earliest switchpoint at which a descendant left `t`.
                let left_at = d
                    .iter()
                    .filter(|o| *o != t)
                    .filter_map(|o| self.histories.get(o)?.switchpoint_of(*t))
                    .min();
                let went_on_past = match left_at {
                    None => None,
                    Some(s) if self.went_on(*t, s, seg_size) => Some(s),
                    Some(_) => return None,
                };
                Some(Branch {
                    timeline: *t,
                    forked_from: self
                        .histories
                        .get(t)
                        .and_then(|h| h.entries().last())
                        .map(|e| (e.parent_tli, e.switchpoint)),
                    went_on_past,
                })
            })
            .collect()
    }
}

/// Whether WAL position `lsn` written on timeline `tli` is part of `history`'s past (or its own
/// timeline): `tli` is in it and `lsn` lies in its span (an end exactly at the switch counts).
fn on_path(history: &TimelineHistory, tli: TimelineId, lsn: Lsn) -> bool {
    history
        .spans()
        .iter()
        .any(|s| s.tli == tli && s.begin <= lsn && s.end.is_none_or(|e| lsn <= e))
}

/// Whether recovery on `history` can use backup `b`: both its start and its stop lie on it.
fn backup_on(history: &TimelineHistory, b: &Candidate) -> bool {
    on_path(history, b.start_tli, b.start_lsn) && on_path(history, b.stop_tli, b.stop_lsn)
}

/// The timeline recovery from `b` follows for `goal`, and why.
fn timeline_for(
    goal: TargetTimeline,
    b: &Candidate,
    timelines: &Timelines,
    seg_size: u64,
) -> Result<(TimelineId, String), SelectError> {
    match goal {
        TargetTimeline::Id(t) => {
            if t != TimelineId::FIRST && !timelines.histories.contains_key(&t) {
                return Err(SelectError::NoSuchTimeline(t));
            }
            Ok((t, format!("timeline {t}, as asked")))
        }
        TargetTimeline::Current => Ok((
            b.stop_tli,
            format!("timeline {}, the backup's own (current)", b.stop_tli),
        )),
        TargetTimeline::Latest => {
            let leaves = timelines.leaves(b.stop_tli, b.stop_lsn, seg_size);
            match leaves.as_slice() {
                [one] => {
                    let by_number = timelines.newest_by_number(b.stop_tli);
                    let note = if by_number != one.timeline {
                        format!(
                            "; PostgreSQL's own 'latest' would have followed timeline \
                             {by_number}, which does not descend from this backup"
                        )
                    } else {
                        String::new()
                    };
                    Ok((
                        one.timeline,
                        format!(
                            "timeline {}, the newest in the archive that descends from the \
                             backup (latest){note}",
                            one.timeline
                        ),
                    ))
                }
                _ => Err(SelectError::DivergingTimelines {
                    backup: b.id.clone(),
                    branches: leaves,
                }),
            }
        }
    }
}

/// Why `b`, recovering on `history`, cannot reach `target` (`None`: it can).
fn cannot_reach(b: &Candidate, target: &PitrTarget, history: &TimelineHistory) -> Option<String> {
    if !backup_on(history, b) {
        return Some(format!(
            "(timeline {}, {}..{}) is not part of timeline {}'s history",
            b.stop_tli,
            b.start_lsn,
            b.stop_lsn,
            history.tli()
        ));
    }
    match target {
        PitrTarget::Time(t) => match b.stop_time_us {
            // PostgreSQL compares a time target with the timestamp of each commit and abort
            // record it replays, from the backup's start on (`recoveryStopsBefore`,
            // src/backend/access/transam/xlogrecovery.c), and stopping before the backup's
            // stop point is fatal ("requested recovery stop point is before consistent
            // recovery point"). Every such record before the stop point ended before the
            // server's clock read right after the stop: a target at or after that time is
            // reached.
            Some(stop) => (t.timestamp_micros() < stop).then(|| {
                format!(
                    "stopped at {} (the server's clock), not before the target: a transaction \
                     that ended in its WAL after the target would stop recovery before the \
                     backup is consistent",
                    crate::repo::doc::format_time(stop)
                )
            }),
            // A backup of an older pgsafe: finished_at is pgsafe's clock in whole seconds, and
            // the stop point was written before it: consistent by finished_at + 1 s at the
            // latest.
            None => {
                let done = b.finished_at.saturating_add(1);
                (done > t.timestamp()).then(|| {
                    format!(
                        "finished at {}, not before the target",
                        DateTime::from_timestamp(b.finished_at, 0)
                            .map_or_else(|| b.finished_at.to_string(), |d| d.to_rfc3339())
                    )
                })
            }
        },
        PitrTarget::Lsn(l) => (b.stop_lsn > *l).then(|| {
            format!(
                "ends at {}, after the target (it is consistent only there)",
                b.stop_lsn
            )
        }),
        PitrTarget::Xid(_) | PitrTarget::Name(_) | PitrTarget::Immediate | PitrTarget::End => None,
    }
}

/// Chooses the backup: `named` when given (checked to reach the target), else the newest
/// complete backup (lineage order: `candidates` oldest first) not failed at its latest
/// verification that can reach `target` on the timeline `goal` resolves to. `diverging`: the
/// catalog's pair of backups on diverging branches, if any (then only a named backup or
/// timeline decides).
pub fn select(
    candidates: &[Candidate],
    named: Option<&str>,
    target: &PitrTarget,
    goal: TargetTimeline,
    timelines: &Timelines,
    diverging: Option<(String, String)>,
) -> Result<Selection, SelectError> {
    let seg_size = timelines.seg_size;
    if candidates.is_empty() {
        return Err(SelectError::NoBackups);
    }
    let unknowable = matches!(target, PitrTarget::Xid(_) | PitrTarget::Name(_));
    if let Some(id) = named {
        let b = candidates
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| SelectError::NoSuchBackup(id.to_owned()))?;
        let (timeline, timeline_why) = timeline_for(goal, b, timelines, seg_size)?;
        let history = timelines
            .history(timeline)
            .ok_or(SelectError::NoSuchTimeline(timeline))?;
        if let Some(why) = cannot_reach(b, target, &history) {
            return Err(SelectError::Unreachable {
                target: target.to_string(),
                skipped: vec![Skipped {
                    id: b.id.clone(),
                    why,
                }],
            });
        }
        return Ok(Selection {
            backup: b.clone(),
            why: format!("backup {} was named", b.id),
            timeline,
            timeline_why,
            skipped: Vec::new(),
            unknowable,
        });
    }
    if let (Some((first, second)), false) = (diverging, matches!(goal, TargetTimeline::Id(_))) {
        return Err(SelectError::DivergingBackups { first, second });
    }
    let mut skipped = Vec::new();
    for b in candidates.iter().rev() {
        if b.failed_verification {
            skipped.push(Skipped {
                id: b.id.clone(),
                why: "failed its latest verification".into(),
            });
            continue;
        }
        let (timeline, timeline_why) = timeline_for(goal, b, timelines, seg_size)?;
        let Some(history) = timelines.history(timeline) else {
            return Err(SelectError::NoSuchTimeline(timeline));
        };
        if let Some(why) = cannot_reach(b, target, &history) {
            skipped.push(Skipped {
                id: b.id.clone(),
                why,
            });
            continue;
        }
        let why = match target {
            PitrTarget::Time(_) => format!(
                "the newest backup that was consistent before the target time{}",
                if skipped.is_empty() {
                    ""
                } else {
                    " (newer ones are not)"
                }
            ),
            PitrTarget::Lsn(_) => format!(
                "the newest backup that ends at or before the target LSN{}",
                if skipped.is_empty() {
                    ""
                } else {
                    " (newer ones do not)"
                }
            ),
            PitrTarget::Xid(_) | PitrTarget::Name(_) => "the newest backup: where a transaction \
                or restore point lies in the WAL is known only when recovery reaches it"
                .to_owned(),
            PitrTarget::Immediate => "the newest backup".to_owned(),
            PitrTarget::End => {
                "the newest backup: recovery replays the archive from it to the end".to_owned()
            }
        };
        return Ok(Selection {
            backup: b.clone(),
            why,
            timeline,
            timeline_why,
            skipped,
            unknowable,
        });
    }
    Err(SelectError::Unreachable {
        target: target.to_string(),
        skipped,
    })
}

#[cfg(test)]
mod tests;
