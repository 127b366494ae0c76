//! WAL missing from the repository's archive of the cluster (`archive::contents`: holes between
//! archived segments, segments missing around a timeline switch, and gaps the archiver recorded
//! when it dropped WAL), judged against the cluster's backups: recovery replays WAL from a
//! backup's start onwards and cannot cross a gap, so a gap that no usable backup starts after
//! means point-in-time recovery past it is impossible until a new full backup is taken.

use serde::Serialize;

use super::{Finding, finding};
use crate::archive::contents::{ArchiveContents, GapSource};
use crate::repo::{LeaseTiming, Registration, Repository};
use crate::storage::Ident;
use crate::types::{TimelineId, WalSegment};

/// One gap, as `check` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapReport {
    pub timeline: TimelineId,
    pub first: WalSegment,
    pub last: WalSegment,
    /// `hole`, `switch` or `recorded` (as `info` names them).
    pub source: &'static str,
    /// For `recorded`: why, by which host, when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
    /// No usable backup (complete, not failed at verification) starts after it.
    pub needs_new_backup: bool,
}

/// The gaps of `cluster`'s archive. A hole at or after `settled` (the oldest file the server
/// had not archived yet when `check` began) is left out: files pushed in parallel can arrive
/// out of order, so such a hole may only be a file still on its way.
pub(super) fn gaps(
    repo: &Repository,
    reg: &Registration,
    cluster: &Ident,
    settled: Option<WalSegment>,
) -> Result<Vec<GapReport>, String> {
    let contents =
        ArchiveContents::load(repo.backend(), cluster, reg).map_err(|e| e.to_string())?;
    let catalog = repo
        .catalog(cluster, LeaseTiming::default())
        .map_err(|e| e.to_string())?;
    let starts: Vec<WalSegment> = catalog
        .complete()
        .filter(|b| !b.failed_verification())
        .filter_map(|b| b.info.as_ref().map(|i| i.start_wal))
        .collect();
    let mut out = Vec::new();
    for g in contents.gaps() {
        let (source, reason, recorded_by, recorded_at) = match g.source {
            GapSource::Hole => ("hole", None, None, None),
            GapSource::Switch { .. } => ("switch", None, None, None),
            GapSource::Recorded { reason, host, time } => {
                ("recorded", Some(reason), Some(host), Some(time))
            }
        };
        if source == "hole" && settled.is_some_and(|s| s.tli == g.timeline && g.last >= s) {
            continue;
        }
        // A later timeline, or a later segment of this one (names order by timeline, then
        // position).
        let needs_new_backup = !starts.iter().any(|s| *s > g.last);
        out.push(GapReport {
            timeline: g.timeline,
            first: g.first,
            last: g.last,
            source,
            reason,
            recorded_by,
            recorded_at,
            needs_new_backup,
        });
    }
    Ok(out)
}

/// A problem for each gap no backup starts after, a warning for the others.
pub(super) fn findings(
    gaps: &[GapReport],
    repo: &str,
    cluster: &Ident,
    problems: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) {
    for g in gaps {
        let what = match (g.source, &g.reason) {
            ("recorded", Some(r)) => format!(
                "dropped without being archived ({r}; recorded by {} at {})",
                g.recorded_by.as_deref().unwrap_or("?"),
                g.recorded_at.as_deref().unwrap_or("?")
            ),
            ("switch", _) => "missing around a timeline switch".into(),
            _ => "missing between archived files".into(),
        };
        let range = if g.first == g.last {
            format!("WAL file {}", g.first)
        } else {
            format!("WAL files {} to {}", g.first, g.last)
        };
        if g.needs_new_backup {
            problems.push(finding(
                "wal_gap",
                format!(
                    "{range} (timeline {}) are {what}: recovery cannot replay across them, and \
                     no usable backup starts after them, so no restore reaches any point after \
                     {}",
                    g.timeline, g.first
                ),
                Some(format!(
                    "take a new full backup now: pgsafe backup --repo {} --cluster {cluster}",
                    crate::session::archive_command::shell_word(repo)
                )),
            ));
        } else {
            warnings.push(finding(
                "wal_gap_before_backup",
                format!(
                    "{range} (timeline {}) are {what}: no restore reaches a point from {} to the \
                     end of the next backup after them (restores from that backup on are not \
                     affected)",
                    g.timeline, g.first
                ),
                None,
            ));
        }
    }
}
