//! Where a backup's WAL goes, decided once the server is known, and the wait for WAL in the
//! repository's own archive.
//!
//! A backup into a repository whose server archives into that repository's cluster
//! ([`crate::session::archive_target`]) need not copy WAL: after the stop it waits until every
//! file of its WAL range is an object of the repository's archive — the segments from the
//! start to the stop, the timeline history files and the backup history file — not only
//! `.done` on the server (a `.done` says the command exited 0, not where the file went). The
//! wait comes after the label is written (see `finish.rs`), so a wait that times out or is
//! interrupted never loses it; the backup then stays incomplete, as with the server's archive.
//! A server that archives elsewhere (or not at all) gets its WAL included, as always; the
//! choice and its reason are recorded in `pgsafe.json` ([`crate::info::WalInfo`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres::Client;

use super::{BackupError, BackupWalError};
use crate::codec::Compression;
use crate::info::{RepoWalRef, WalMode};
use crate::session::ServerInfo;
use crate::session::archive_target::{ArchivesInto, ServerArchiving};
use crate::storage::{Backend, ErrorKind, Ident, Key, Location};
use crate::types::TimelineId;

/// What the caller asks for.
#[derive(Clone, Copy)]
pub(super) enum WalRequest<'a> {
    /// A backup folder: the mode asked for (`None`: the default, include).
    Folder(Option<WalMode>),
    /// A backup into a repository's cluster: the mode asked for, or `None` to decide from the
    /// server's archiving.
    Repository {
        asked: Option<WalMode>,
        backend: &'a Arc<dyn Backend>,
        location: &'a Location,
        cluster: &'a Ident,
        /// The repository is encrypted and this host holds only its public keys: it cannot
        /// read archived WAL back.
        write_only: bool,
    },
}

/// The repository archive a backup waits in.
pub(super) struct RepoArchive<'a> {
    pub backend: &'a Arc<dyn Backend>,
    pub location: &'a Location,
    pub cluster: &'a Ident,
}

impl RepoArchive<'_> {
    pub fn reference(&self) -> RepoWalRef {
        RepoWalRef {
            repo: self.location.to_string(),
            cluster: self.cluster.to_string(),
        }
    }

    /// The repository, for messages.
    fn shown(&self) -> PathBuf {
        self.location.shown_path("")
    }
}

/// Where the WAL goes, and why.
pub(super) struct WalPlan<'a> {
    pub mode: WalMode,
    /// `Some` when the WAL is awaited in the repository's archive (mode archive).
    pub repository: Option<RepoArchive<'a>>,
    pub reason: String,
}

/// Decides where the WAL goes (see the module documentation).
pub(super) fn decide<'a>(
    request: WalRequest<'a>,
    client: &mut Client,
    info: &ServerInfo,
) -> Result<WalPlan<'a>, BackupError> {
    let plain = |mode: WalMode, reason: String| WalPlan {
        mode,
        repository: None,
        reason,
    };
    let (asked, backend, location, cluster) = match request {
        WalRequest::Folder(None) => {
            return Ok(plain(
                WalMode::Include,
                "included: a backup folder holds its own WAL by default".into(),
            ));
        }
        WalRequest::Folder(Some(m)) => return Ok(plain(m, asked_reason(m))),
        WalRequest::Repository {
            asked: Some(m @ (WalMode::Include | WalMode::None)),
            ..
        } => return Ok(plain(m, asked_reason(m))),
        // The read-back check of archived WAL needs keys this host does not have (an
        // encrypted repository, public keys only): the backup copies its WAL itself.
        WalRequest::Repository {
            asked: None,
            write_only: true,
            ..
        } => {
            return Ok(plain(
                WalMode::Include,
                "included: this host holds only the encrypted repository's public keys, so it \
                 cannot read archived WAL back to check it; the backup holds its own WAL"
                    .into(),
            ));
        }
        WalRequest::Repository {
            asked,
            backend,
            location,
            cluster,
            ..
        } => (asked, backend, location, cluster),
    };
    let archiving = ServerArchiving::read(client, info.version, info.in_recovery)
        .map_err(|e| BackupWalError::ArchivingCheck(e.into()))?;
    // An object store location is compared as written (its URL).
    let root = location.shown_path("");
    match archiving.archives_into(&root, cluster.as_str()) {
        ArchivesInto::Repository { how } => Ok(WalPlan {
            mode: WalMode::Archive,
            repository: Some(RepoArchive {
                backend,
                location,
                cluster,
            }),
            reason: format!(
                "{}: {how}; the backup waits until its WAL is in the repository instead of \
                 copying it",
                if asked.is_some() {
                    "archive (asked for)"
                } else {
                    "archive (chosen)"
                }
            ),
        }),
        ArchivesInto::Elsewhere { why } => Ok(match asked {
            Some(WalMode::Archive) => plain(
                WalMode::Archive,
                format!(
                    "archive (asked for): the server's own archive, not this repository's \
                     ({why})"
                ),
            ),
            _ => plain(
                WalMode::Include,
                format!("included: {why}, so the backup holds its own WAL"),
            ),
        }),
    }
}

fn asked_reason(mode: WalMode) -> String {
    match mode {
        WalMode::Include => "included (asked for)".into(),
        WalMode::Archive => "archive (asked for): the server's own archive".into(),
        WalMode::None => "none (asked for): your own archive provides it".into(),
    }
}

/// One file the backup needs in the archive: its timeline (where the archive keeps it) and
/// its name as PostgreSQL archives it.
pub(super) type Needed = (TimelineId, String);

/// Waits until every `needs` file is an object of the repository's archive (under any of the
/// compressions it may be stored with), `timeout` at most; stops on `cancel`. On time-out the
/// error names the first missing file and what the server's archiver last reported.
pub(super) fn wait_in_repository(
    archive: &RepoArchive<'_>,
    needs: &[Needed],
    timeout: Duration,
    cancel: Option<&AtomicBool>,
    client: &mut Client,
) -> Result<String, BackupError> {
    let began = Instant::now();
    let mut missing: Vec<&Needed> = needs.iter().collect();
    loop {
        let mut still = Vec::with_capacity(missing.len());
        for n in missing {
            if !in_archive(archive, n)? {
                still.push(n);
            }
        }
        missing = still;
        let Some(first) = missing.first() else {
            return Ok(format!(
                "{} WAL file(s) in the repository's archive of cluster {} ({}/)",
                needs.len(),
                archive.cluster,
                archive.location.show(&format!("{}/wal", archive.cluster)),
            ));
        };
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(BackupError::Cancelled);
        }
        if began.elapsed() >= timeout {
            return Err(BackupWalError::NotInRepository {
                file: first.1.clone(),
                missing: missing.len(),
                cluster: archive.cluster.to_string(),
                secs: timeout.as_secs(),
                archiver: last_failure(client),
            }
            .into());
        }
        std::thread::sleep(crate::session::POLL_EVERY);
    }
}

/// Whether `file` is stored in the archive, plain or compressed (the names of
/// [`crate::storage::Key::Wal`]).
fn in_archive(archive: &RepoArchive<'_>, (tli, file): &Needed) -> Result<bool, BackupError> {
    let storage = |source| BackupError::Storage {
        target: archive.shown(),
        source,
    };
    for c in [
        Compression::None,
        Compression::Zstd { level: 1 },
        Compression::Lz4,
    ] {
        let id = Ident::new(format!("{file}{}", c.suffix())).map_err(storage)?;
        let name = Key::Wal {
            cluster: archive.cluster,
            timeline: *tli,
            file: &id,
        }
        .name()
        .map_err(storage)?;
        match archive.backend.size(&name) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(storage(e)),
        }
    }
    Ok(false)
}

/// `pg_stat_archiver`'s last failure, in words, if any.
fn last_failure(client: &mut Client) -> String {
    let row = client.query_opt(
        "SELECT last_failed_wal, last_failed_time::text, last_archived_wal FROM pg_stat_archiver",
        &[],
    );
    let Ok(Some(row)) = row else {
        return "pg_stat_archiver could not be read".into();
    };
    let get = |i| row.try_get::<_, Option<String>>(i).ok().flatten();
    let archived = get(2).map_or_else(
        || "it has archived nothing yet".to_owned(),
        |w| format!("it last archived {w}"),
    );
    match (get(0), get(1)) {
        (Some(w), Some(t)) => {
            format!("the server's archiver last failed on {w} at {t}; {archived}")
        }
        _ => format!("the server's archiver reports no failure; {archived}"),
    }
}

/// Reads the backup's segments back from the repository's archive and checks each as an
/// included segment is checked while copied (size, long page header of this server, every
/// record from `range.0` to `range.1`); returns the `CREATE TABLESPACE` records of the range.
pub(super) fn check_archived(
    archive: &RepoArchive<'_>,
    info: &ServerInfo,
    segments: &[crate::types::WalSegment],
    range: (crate::types::Lsn, crate::types::Lsn),
    progress: &dyn crate::progress::Progress,
) -> Result<Vec<crate::wal::record::TablespaceCreate>, BackupError> {
    let reader = crate::layout::WalArchive::new(
        Arc::clone(archive.backend),
        archive.cluster.clone(),
        &archive.shown(),
    );
    let seg_size = info.wal_segment_size;
    let mut records = None;
    for seg in segments {
        let name = seg.to_string();
        let path = reader.shown().join(&name);
        let bytes = match reader.get(seg.tli, &name, seg_size.bytes()) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(BackupWalError::ArchiveRead {
                    file: name,
                    detail: "it is gone from the archive since the backup found it there (was \
                             it deleted?)"
                        .into(),
                }
                .into());
            }
            Err(e) => {
                return Err(BackupWalError::ArchiveRead {
                    file: name,
                    detail: e.to_string(),
                }
                .into());
            }
        };
        if bytes.len() as u64 != seg_size.bytes() {
            return Err(BackupWalError::SegmentSize {
                path,
                len: bytes.len() as u64,
                expected: seg_size.bytes(),
            }
            .into());
        }
        crate::wal::check_segment_header(
            &bytes,
            *seg,
            seg_size,
            Some(info.system_id),
            Some(info.version.major()),
        )
        .map_err(|source| BackupWalError::SegmentHeader {
            path: path.clone(),
            source,
        })?;
        super::finish::check_records(&mut records, &bytes, *seg, range, seg_size, &path)?;
        progress.bytes(bytes.len() as u64);
    }
    let Some(mut c) = records else {
        return Ok(Vec::new());
    };
    let end = segments
        .last()
        .and_then(|s| s.start_lsn(seg_size).ok())
        .map_or(range.1, |l| {
            crate::types::Lsn(l.0.saturating_add(seg_size.bytes()))
        });
    c.finish(end).map_err(|source| BackupWalError::Incomplete {
        dir: reader.shown().to_owned(),
        source,
    })?;
    Ok(c.tablespaces_created().to_vec())
}
