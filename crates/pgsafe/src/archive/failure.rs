//! Failed pushes: the durable trace an `archive-push` that fails leaves, so that `info`, `check`
//! and `metrics` can show the last failed file (PostgreSQL's own `pg_stat_archiver` has it too,
//! but only on the server, and it is lost with a statistics reset or a crash on 10–14).
//!
//! A failure is written:
//! * into the repository as a [`EventKind::PushFailed`] event when the repository can take it
//!   (a refused file, a conflict, a repository whose WAL folder fails while its `events/`
//!   folder works);
//! * into the local spool (`pg_wal/pgsafe_archive/failed/<file>.<kind>.json`, see
//!   [`super::spool`]) always when there is one: the record counts the retries and says
//!   whether the repository has the event yet.
//!
//! Bounded: PostgreSQL's archiver retries a failing file every few seconds for as long as it
//! fails (src/backend/postmaster/pgarch.c `pgarch_ArchiverCopyLoop`), so the repository gets at
//! most one event per file and kind of error — the spool's record remembers that it was
//! written — and the spool holds one record per file and kind. A record whose event could not
//! be written (the repository unreachable) is written into the repository by the next push
//! that succeeds; records the repository has are then removed.
//!
//! Nothing here may change what PostgreSQL is told: recording is best effort, and a push that
//! failed still fails.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ArchiveFile;
use super::contents::ArchiveContents;
use super::spool::{Spool, read_record, repo_identity};
use crate::fsutil::{FsError, write_durable};
use crate::repo::doc::{Event, EventKind, format_time, host_name, now_us, parse_time};
use crate::repo::{Registration, RepoError};
use crate::storage::key::repo_prefix;
use crate::storage::{Backend, ErrorKind, FileType, Ident};
use crate::types::{SystemId, TimelineId};

/// The spool's folder of failure records.
const FAILED_DIR: &str = "failed";
const SUFFIX: &str = ".json";
/// Format of a failure record.
const FORMAT: u32 = 1;
/// Longest message kept (the whole error chain; a longer one is cut).
const MESSAGE_MAX: usize = 2000;
/// Largest event read.
const EVENT_LIMIT: u64 = 64 * 1024;

/// `failed/<file>.<kind>.json` in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub format: u32,
    /// The repository (as [`super::spool::repo_identity`] gives it) and cluster pushed into.
    pub repo: String,
    pub cluster: Ident,
    pub file: String,
    pub error: String,
    pub message: String,
    pub first_failed_at: String,
    pub last_failed_at: String,
    pub failures: u64,
    pub host: String,
    /// The repository has the event of this record.
    pub in_repository: bool,
}

/// Where a failure was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedIn {
    /// An event in the repository (and maybe the spool).
    Repository,
    /// Only the server's local spool: the repository could not take it yet.
    Spool,
    /// Nowhere (no spool, and the repository could not take it).
    Nowhere,
}

/// A failed push, as `info`, `check` and `metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedPush {
    pub file: String,
    pub timeline: TimelineId,
    /// The kind of error (`refused`, `conflict`, `io`…) and the error.
    pub error: String,
    pub message: String,
    /// The first and the latest failure known (RFC 3339), and how many.
    pub first_failed_at: String,
    pub last_failed_at: String,
    pub failures: u64,
    pub host: String,
    /// `repository` or `spool` (not in the repository yet).
    pub recorded_in: RecordedIn,
    /// The file is in the archive now: a later push stored it.
    pub archived_since: bool,
}

impl FailedPush {
    fn key(&self) -> (&str, &str) {
        (&self.file, &self.error)
    }

    /// Unix microseconds of the latest failure (0 when unreadable).
    pub fn last_us(&self) -> i64 {
        parse_time(&self.last_failed_at).unwrap_or(0)
    }
}

fn record_name(file: &ArchiveFile, error: &str) -> String {
    format!("{file}.{error}{SUFFIX}")
}

fn cut(message: &str) -> String {
    if message.len() <= MESSAGE_MAX {
        return message.to_owned();
    }
    let mut end = MESSAGE_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Records that the push of `file` into the archive of `cluster` (in the repository `repo`,
/// reachable through `backend` when it could be opened) failed with an error of kind `error`:
/// in the spool when there is one, and as an event in the repository unless the spool's
/// record says it is there already. Returns where it is recorded; never fails (a trace that
/// cannot be written must not hide the push's own error).
pub fn record(
    spool: Option<&Spool>,
    backend: Option<&dyn Backend>,
    repo: &str,
    cluster: &Ident,
    file: &ArchiveFile,
    error: &str,
    message: &str,
) -> RecordedIn {
    let now = format_time(now_us());
    let path = spool.map(|s| s.dir().join(FAILED_DIR).join(record_name(file, error)));
    let previous = path
        .as_deref()
        .and_then(|p| read_record(p).ok().flatten())
        .and_then(|b| serde_json::from_slice::<FailureRecord>(&b).ok())
        .filter(|r| r.format == FORMAT && r.repo == repo && r.cluster == *cluster);
    let mut rec = match previous {
        Some(mut r) => {
            r.failures = r.failures.saturating_add(1);
            r.last_failed_at = now;
            r.message = cut(message);
            r
        }
        None => FailureRecord {
            format: FORMAT,
            repo: repo.to_owned(),
            cluster: cluster.clone(),
            file: file.to_string(),
            error: error.to_owned(),
            message: cut(message),
            first_failed_at: now.clone(),
            last_failed_at: now,
            failures: 1,
            host: host_name(),
            in_repository: false,
        },
    };
    if !rec.in_repository
        && let Some(b) = backend
    {
        rec.in_repository = write_event(b, cluster, file.timeline(), &rec).is_ok();
    }
    let local = match (spool, &path) {
        (Some(s), Some(p)) => s.sub(FAILED_DIR).is_ok() && write(p, &rec).is_ok(),
        _ => false,
    };
    match (rec.in_repository, local) {
        (true, _) => RecordedIn::Repository,
        (false, true) => RecordedIn::Spool,
        (false, false) => RecordedIn::Nowhere,
    }
}

fn write(path: &Path, rec: &FailureRecord) -> Result<(), FsError> {
    let bytes = serde_json::to_vec_pretty(rec).unwrap_or_default();
    write_durable(path, &bytes, 0o600)
}

fn write_event(
    b: &dyn Backend,
    cluster: &Ident,
    timeline: TimelineId,
    rec: &FailureRecord,
) -> Result<String, RepoError> {
    crate::repo::record_event(
        b,
        cluster,
        EventKind::PushFailed {
            file: rec.file.clone(),
            timeline,
            error: rec.error.clone(),
            message: rec.message.clone(),
            failed_at: rec.first_failed_at.clone(),
            failed_by: rec.host.clone(),
            failures: rec.failures,
        },
    )
}

/// The failure records of the spool for `repo` and `cluster` (records of another repository
/// or cluster, and unreadable ones, are left out).
pub fn spool_records(spool: &Spool, repo: &str, cluster: &Ident) -> Vec<(PathBuf, FailureRecord)> {
    let dir = spool.dir().join(FAILED_DIR);
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(SUFFIX) {
            continue;
        }
        let path = e.path();
        let Some(rec) = read_record(&path)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<FailureRecord>(&b).ok())
        else {
            continue;
        };
        if rec.format == FORMAT && rec.repo == repo && rec.cluster == *cluster {
            out.push((path, rec));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// After a successful push: the spool's failure records of `repo` and `cluster` that the
/// repository does not have yet are written into it as events, then every record the
/// repository has is removed. Returns how many events were written. Best effort: a record
/// whose event cannot be written stays for the next push.
pub fn flush(spool: &Spool, backend: &dyn Backend, repo: &str, cluster: &Ident) -> usize {
    let mut written = 0;
    for (path, mut rec) in spool_records(spool, repo, cluster) {
        if !rec.in_repository {
            let Ok(file) = ArchiveFile::parse(&rec.file) else {
                let _ = fs::remove_file(&path);
                continue;
            };
            if write_event(backend, cluster, file.timeline(), &rec).is_err() {
                continue;
            }
            rec.in_repository = true;
            written += 1;
        }
        let _ = fs::remove_file(&path);
    }
    written
}

/// The failed pushes the repository records for `cluster` (one listing of its events, a read
/// of each `push-failed` one; events that cannot be read are left out).
pub fn recorded(b: &dyn Backend, cluster: &Ident) -> Result<Vec<FailedPush>, RepoError> {
    let prefix = repo_prefix(cluster, FileType::Event).ok_or_else(|| RepoError::NotRegistered {
        cluster: cluster.clone(),
    })?;
    let kind = format!("-{}-", push_failed_kind());
    let mut out = Vec::new();
    for o in b.list(Some(&prefix))? {
        if !o.name.to_string().contains(&kind) {
            continue;
        }
        let bytes = match b.get(&o.name, EVENT_LIMIT) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if let Ok(ev) = Event::parse(&bytes) {
            out.extend(from_event(&ev));
        }
    }
    Ok(out)
}

fn push_failed_kind() -> &'static str {
    "push-failed"
}

/// The failed push an event records (`None` for other events, or a file name that is not one).
pub fn from_event(ev: &Event) -> Option<FailedPush> {
    let EventKind::PushFailed {
        file,
        timeline,
        error,
        message,
        failed_at,
        failed_by,
        failures,
    } = &ev.what
    else {
        return None;
    };
    let f = ArchiveFile::parse(file).ok()?;
    (f.timeline() == *timeline).then(|| FailedPush {
        file: file.clone(),
        timeline: *timeline,
        error: error.clone(),
        message: message.clone(),
        first_failed_at: failed_at.clone(),
        last_failed_at: failed_at.clone(),
        failures: (*failures).max(1),
        host: failed_by.clone(),
        recorded_in: RecordedIn::Repository,
        archived_since: false,
    })
}

/// The failed push a spool record says.
pub fn from_record(rec: &FailureRecord) -> Option<FailedPush> {
    let f = ArchiveFile::parse(&rec.file).ok()?;
    Some(FailedPush {
        file: rec.file.clone(),
        timeline: f.timeline(),
        error: rec.error.clone(),
        message: rec.message.clone(),
        first_failed_at: rec.first_failed_at.clone(),
        last_failed_at: rec.last_failed_at.clone(),
        failures: rec.failures,
        host: rec.host.clone(),
        recorded_in: if rec.in_repository {
            RecordedIn::Repository
        } else {
            RecordedIn::Spool
        },
        archived_since: false,
    })
}

/// The repository's failed pushes and the spool's (when the server's `pg_wal` is readable
/// here), one per file and kind of error: the spool's record is the newer count of a failure
/// the repository has. Each says whether `contents` holds its file now. Newest last. Pure.
pub fn merge(
    repository: Vec<FailedPush>,
    spool: &[FailureRecord],
    contents: &ArchiveContents,
) -> Vec<FailedPush> {
    let mut out: Vec<FailedPush> = Vec::new();
    for f in repository
        .into_iter()
        .chain(spool.iter().filter_map(from_record))
    {
        match out.iter_mut().find(|o| o.key() == f.key()) {
            // The same failure again (the spool's later count, or an event written twice).
            Some(o) => {
                if f.last_us() > o.last_us() {
                    o.last_failed_at = f.last_failed_at;
                    o.message = f.message;
                }
                o.failures = o.failures.max(f.failures);
                if f.recorded_in == RecordedIn::Repository {
                    o.recorded_in = RecordedIn::Repository;
                }
            }
            None => out.push(f),
        }
    }
    for f in &mut out {
        f.archived_since = ArchiveFile::parse(&f.file).is_ok_and(|a| holds(contents, &a));
    }
    out.sort_by_key(|f| (f.last_us(), f.file.clone()));
    out
}

/// Whether the archive holds `file` (under any compression).
pub fn holds(contents: &ArchiveContents, file: &ArchiveFile) -> bool {
    let Some(tl) = contents.timelines.get(&file.timeline()) else {
        return false;
    };
    match file {
        ArchiveFile::Segment(s) => s
            .segno(contents.seg_size)
            .is_ok_and(|n| tl.segments.contains_key(&n)),
        ArchiveFile::Partial(s) => tl.partials.contains(s),
        ArchiveFile::History(_) => tl.history.is_some(),
        ArchiveFile::BackupHistory { segment, offset } => {
            tl.backup_histories.contains(&(*segment, *offset))
        }
    }
}

/// The `pg_wal` folder of the data directory `pgdata` when it is readable here and belongs to
/// the cluster with `system_identifier` (its `pg_control` says so): where the spool of the
/// server's `archive-push` is. `None` otherwise (another host, no rights).
pub fn local_wal_dir(pgdata: &Path, system_identifier: SystemId) -> Option<PathBuf> {
    let ours = crate::datadir::DataDir::open(pgdata)
        .and_then(|d| d.control())
        .is_ok_and(|c| c.system_identifier == system_identifier);
    let wal = pgdata.join("pg_wal");
    (ours && wal.join("archive_status").is_dir()).then_some(wal)
}

/// The spool's failure records for the repository at `repo` and `cluster`, read from the data
/// directory the registration names when it is this host's (see [`local_wal_dir`]); none
/// otherwise.
pub fn local_records(repo: &Path, cluster: &Ident, reg: &Registration) -> Vec<FailureRecord> {
    let Some(wal) = local_wal_dir(Path::new(&reg.pgdata), reg.system_identifier) else {
        return Vec::new();
    };
    spool_records(&Spool::of_wal_dir(&wal), &repo_identity(repo), cluster)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

#[cfg(test)]
mod tests;
