//! The wait for the switched WAL file: in the repository (and sound), or a reason why not from
//! the server's `pg_stat_archiver`.

use std::time::{Duration, Instant};

use super::{ArchiverStats, Finding, SwitchReport, finding, repository, server};
use crate::archive::ArchiveFile;
use crate::repo::{Registration, Repository};
use crate::storage::Ident;
use crate::types::{Lsn, WalSegment};

/// Pause between two looks while waiting.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// After the archiver counts a failure, how long to keep looking before calling it failing:
/// the archiver retries a failed file three times, a second apart (`NUM_ARCHIVE_RETRIES`,
/// src/backend/postmaster/pgarch.c), so a one-off failure can still end in the file arriving.
const RETRY_GRACE: Duration = Duration::from_secs(5);

/// What the wait found besides the switch report.
#[derive(Default)]
pub(super) struct WaitFindings {
    pub problems: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// Waits until `segment` is in the repository, the archiver reports a failure (and its
/// retries did not bring the file), the archiver reports the file archived while it is not in
/// the repository, or `timeout` passes.
#[allow(clippy::too_many_arguments)]
pub(super) fn wait_for_segment(
    client: &mut postgres::Client,
    repo: &Repository,
    reg: &Registration,
    cluster: &Ident,
    segment: WalSegment,
    lsn: Lsn,
    baseline: Option<ArchiverStats>,
    timeout: Duration,
) -> (SwitchReport, WaitFindings) {
    let began = Instant::now();
    let mut found = WaitFindings::default();
    let mut failed_seen: Option<(Instant, ArchiverStats)> = None;
    let name = segment.to_string();
    let report = |stored_as: Option<String>| SwitchReport {
        lsn,
        segment,
        stored_as,
        waited_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    loop {
        match stored_and_sound(repo, reg, cluster, segment) {
            Ok(Some(object)) => {
                if let Some((_, stats)) = failed_seen {
                    found.warnings.push(finding(
                        "archive_failed_then_succeeded",
                        format!(
                            "the archiver failed once ({}) and then archived {name}: look at \
                             the server log for the failure",
                            failure_words(&stats)
                        ),
                        None,
                    ));
                }
                return (report(Some(object)), found);
            }
            Ok(None) => {}
            Err(f) => {
                found.problems.push(f);
                return (report(None), found);
            }
        }
        let now = server::archiver(client).ok();
        if let (Some(now), Some(base)) = (&now, &baseline) {
            if failed_seen.is_none() && now.failed_count > base.failed_count {
                failed_seen = Some((Instant::now(), now.clone()));
            }
            if now.archived_count > base.archived_count
                && now
                    .last_archived_wal
                    .as_deref()
                    .is_some_and(|l| l.len() == name.len() && l >= name.as_str())
            {
                // The archiver counts a file once its command exited 0; archive-push exits 0
                // only after storing it. One more look, then it went elsewhere.
                if let Ok(Some(object)) = stored_and_sound(repo, reg, cluster, segment) {
                    return (report(Some(object)), found);
                }
                found.problems.push(finding(
                    "archived_elsewhere",
                    format!(
                        "the server reports {name} archived (pg_stat_archiver: last archived \
                         {}), but it is not in the repository: archive_command stores WAL \
                         somewhere else",
                        now.last_archived_wal.as_deref().unwrap_or_default()
                    ),
                    Some("set archive_command as shown above".into()),
                ));
                return (report(None), found);
            }
        }
        if let Some((at, stats)) = &failed_seen
            && (at.elapsed() >= RETRY_GRACE || began.elapsed() >= timeout)
        {
            let latest = now.unwrap_or_else(|| stats.clone());
            // The archiver takes files in order and retries the oldest until it succeeds
            // (`pgarch_readyXlog`, src/backend/postmaster/pgarch.c): an older file failing
            // keeps every later one, the switched one included, out of the archive.
            let order = match latest.last_failed_wal.as_deref() {
                Some(f) if f.len() == name.len() && f < name.as_str() => {
                    format!(" (an older file: the archiver retries it before it reaches {name})")
                }
                _ => String::new(),
            };
            found.problems.push(finding(
                "archive_command_fails",
                format!(
                    "archive_command fails: while check waited for {name}, pg_stat_archiver \
                     counted {} failed attempt(s); {}{order}",
                    latest
                        .failed_count
                        .saturating_sub(baseline.as_ref().map_or(0, |b| b.failed_count)),
                    failure_words(&latest)
                ),
                Some(
                    "the server log has the command's own error message (look for \"archive \
                     command failed\"); fix it and run check again"
                        .into(),
                ),
            ));
            return (report(None), found);
        }
        if began.elapsed() >= timeout {
            let last = now
                .as_ref()
                .and_then(|a| a.last_archived_wal.clone())
                .unwrap_or_else(|| "none".into());
            found.problems.push(finding(
                "not_archived_in_time",
                format!(
                    "{name} did not reach the repository within {} s (pg_stat_archiver: last \
                     archived {last}, no new failure): the archiver is behind or stuck",
                    timeout.as_secs()
                ),
                Some(
                    "look at the backlog (pg_wal/archive_status/*.ready) and the server log, or \
                     wait longer (--timeout)"
                        .into(),
                ),
            ));
            return (report(None), found);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// The object `segment` is stored as, once it is there and reads back as `archive-get` would
/// hand it to PostgreSQL (decompressed, one whole segment, its first page the registered
/// cluster's and naming that segment); a stored object that fails that is a problem, never
/// "archived".
fn stored_and_sound(
    repo: &Repository,
    reg: &Registration,
    cluster: &Ident,
    segment: WalSegment,
) -> Result<Option<String>, Finding> {
    let unreadable = |e: String| {
        finding(
            "repository_unreadable",
            format!("the repository cannot be read while waiting for {segment}: {e}"),
            None,
        )
    };
    let Some(object) = repository::stored_segment(repo.backend(), cluster, &segment)
        .map_err(|e| unreadable(e.to_string()))?
    else {
        return Ok(None);
    };
    match crate::archive::fetch(repo.backend(), cluster, reg, &ArchiveFile::Segment(segment)) {
        Ok(Some(_)) => Ok(Some(object)),
        // Removed between the look and the read (an expire): not there.
        Ok(None) => Ok(None),
        Err(e) => Err(finding(
            "stored_segment_unusable",
            format!("{segment} arrived in the repository as {object}, but it cannot be used: {e}"),
            None,
        )),
    }
}

/// "last failed on X at T" from the archiver's statistics.
fn failure_words(a: &ArchiverStats) -> String {
    let at = a
        .last_failed_time
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "an unknown time".into());
    format!(
        "last failed WAL file {} at {at}",
        a.last_failed_wal.as_deref().unwrap_or("(none)")
    )
}
