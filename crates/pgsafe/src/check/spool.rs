//! What `archive-push` left in the server's local spool (`pg_wal/pgsafe_archive`, see
//! `archive::spool`), read when the data directory is on this host: the backlog the last push
//! saw and whether archiving falls behind WAL generation, segments dropped by the queue limit
//! whose gap record has not reached the repository yet, and failed pushes
//! (`archive::failure`) — with the repository's record of failed pushes, the last one.

use std::path::Path;

use serde::Serialize;

use super::{Finding, finding};
use crate::archive::contents::ArchiveContents;
use crate::archive::failure::{self, FailedPush, RecordedIn};
use crate::archive::spool::{self, ArchiveStatus, Spool};
use crate::repo::{Registration, Repository};
use crate::storage::Ident;
use crate::types::SystemId;

/// The spool as `check` read it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpoolReport {
    /// The spool's folder, when the server's data directory is readable here.
    pub path: Option<String>,
    /// Why it was not read (another host, no rights), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// What the last push wrote (`None`: no push has run with a spool yet).
    pub status: Option<ArchiveStatus>,
    /// Gap records waiting to reach the repository (WAL dropped by the queue limit).
    pub pending_gaps: u64,
    /// Failed pushes recorded only here (the repository could not take them yet).
    pub pending_failures: u64,
}

/// Reads the spool of the server whose data directory is `data_directory` (as the server
/// reports it) and that has `system_identifier`.
pub(super) fn read(
    data_directory: Option<&str>,
    system_identifier: SystemId,
    repo: &Path,
    cluster: &Ident,
) -> (SpoolReport, Vec<failure::FailureRecord>) {
    let mut out = SpoolReport::default();
    let Some(dir) = data_directory else {
        out.unreadable = Some("the server did not say where its data directory is".into());
        return (out, Vec::new());
    };
    let Some(wal) = failure::local_wal_dir(Path::new(dir), system_identifier) else {
        out.unreadable = Some(format!(
            "the data directory {dir} is not readable here as this server's (another host, or \
             no rights to read it): the spool's backlog, pending gaps and failures are not shown"
        ));
        return (out, Vec::new());
    };
    let s = Spool::of_wal_dir(&wal);
    out.path = Some(s.dir().display().to_string());
    match spool::read_status(&wal) {
        Ok(st) => out.status = st,
        Err(e) => out.unreadable = Some(e.to_string()),
    }
    out.pending_gaps = s.pending_gaps().map(|g| g.len() as u64).unwrap_or(0);
    let records: Vec<_> = failure::spool_records(&s, &spool::repo_identity(repo), cluster)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    out.pending_failures = records.iter().filter(|r| !r.in_repository).count() as u64;
    (out, records)
}

/// The last failed push, from the repository's events and the spool's records.
pub(super) fn last_failed(
    repo: &Repository,
    reg: &Registration,
    cluster: &Ident,
    records: &[failure::FailureRecord],
) -> Result<Option<FailedPush>, String> {
    let contents =
        ArchiveContents::load(repo.backend(), cluster, reg).map_err(|e| e.to_string())?;
    let recorded = failure::recorded(repo.backend(), cluster).map_err(|e| e.to_string())?;
    Ok(failure::merge(recorded, records, &contents).pop())
}

/// Findings about the spool and the last failed push: what they mean and what to do.
pub(super) fn findings(
    r: &SpoolReport,
    last: Option<&FailedPush>,
    problems: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) {
    if r.pending_gaps > 0 {
        problems.push(finding(
            "wal_dropped_unrecorded",
            format!(
                "{} WAL segment(s) were dropped by the archive queue limit (reported archived to \
                 PostgreSQL without being stored, so that pg_wal did not fill its disk) and the \
                 repository does not know yet: the records wait in {}/gap. Point-in-time \
                 recovery across them is impossible",
                r.pending_gaps,
                r.path.as_deref().unwrap_or("pg_wal/pgsafe_archive")
            ),
            Some(
                "make the repository reachable and writable again: the next successful \
                 archive-push writes the gap into it; then take a new full backup"
                    .into(),
            ),
        ));
    }
    if let Some(st) = &r.status {
        if let Some(since) = &st.behind_since {
            warnings.push(finding(
                "archiving_behind",
                format!(
                    "archiving is slower than WAL generation: the backlog has grown since \
                     {since}; at the last push ({}) {} WAL file(s) ({} MiB) waited, the oldest \
                     ({}) since {}. pg_wal grows until archiving catches up",
                    st.updated_at,
                    st.ready_files,
                    st.ready_bytes >> 20,
                    st.oldest_ready.as_deref().unwrap_or("?"),
                    st.oldest_ready_since.as_deref().unwrap_or("?"),
                ),
                Some(
                    "find what slows the pushes (the repository's storage or network, a \
                     failing push in the server log); raise archive_push_parallel; to protect \
                     the server's disk, set archive_push_queue_max (WAL past it is dropped and \
                     a new full backup is needed)"
                        .into(),
                ),
            ));
        }
        if let Some(max) = st.queue_max
            && st.ready_bytes > max / 10 * 8
        {
            warnings.push(finding(
                "archive_queue_near_limit",
                format!(
                    "{} MiB of WAL waited to be archived at the last push, {}% of the archive \
                     queue limit ({} MiB): past it, WAL is dropped without being archived",
                    st.ready_bytes >> 20,
                    st.ready_bytes.saturating_mul(100) / max.max(1),
                    max >> 20
                ),
                None,
            ));
        }
    }
    if let Some(f) = last.filter(|f| !f.archived_since) {
        let local = if f.recorded_in == RecordedIn::Spool {
            " (recorded only in the server's spool: the repository could not take it)"
        } else {
            ""
        };
        warnings.push(finding(
            "push_failed",
            format!(
                "archive-push of {} failed {} time(s), last at {} on {} ({}: {}){local}; the \
                 file is not in the archive yet",
                f.file, f.failures, f.last_failed_at, f.host, f.error, f.message
            ),
            Some(
                "fix what the message names; PostgreSQL retries the file until it is archived"
                    .into(),
            ),
        ));
    }
}
