//! `pgsafe verify`: is a stored backup complete and intact, and does it hold what a restore needs?
//!
//! Checks, for the plain and the compressed layouts:
//! * `pgsafe.json` (the completion marker) is present and readable — without it the backup is
//!   incomplete — and `pgsafe.incomplete` is not;
//! * `backup_manifest` parses and its own `Manifest-Checksum` matches;
//! * every file the manifest lists is stored (as `<path>.zst`/`.lz4` in a compressed layout;
//!   `backup_label`, `tablespace_map`, `pgsafe.json` are always stored as they are) with the
//!   manifest's size and checksum (compressed files are decompressed to check them), and no file
//!   is stored that the manifest does not list;
//! * `backup_label` is present, parses, names the WAL segment of its start LSN, is not an
//!   incremental label, and agrees with the manifest's WAL range and with `pgsafe.json` (start,
//!   checkpoint, timeline);
//! * the stored `global/pg_control` decodes with a correct CRC, and its system identifier, major
//!   version and WAL segment size are the manifest's and `pgsafe.json`'s;
//! * every WAL segment from the start to the stop of the backup is in `pg_wal/` (backups taken
//!   with `--wal include`), has the segment size, a valid first page (the long header with this
//!   system's identifier) and the CRC-32C `pgsafe.json` recorded; every WAL record from the
//!   start LSN to the stop LSN reads as the server would read it (see `verify/wal_check.rs`);
//!   the timeline history files are there too. For `--wal archive` and `--wal none` backups the
//!   report says which segments must come from where.
//!
//! `quick` checks presence and sizes only: no checksums, no page headers, and (since only
//! decompressing tells it) not the sizes of compressed files.
//!
//! Files and WAL segments are checked by parallel workers taking items from one list (largest
//! first); the first IO error stops them all. What is wrong with the backup is reported as a list
//! of [`Problem`]s; [`VerifyError`] is for when the check itself could not run.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::codec::Compression;
use crate::fsutil::FsError;
use crate::info::BackupInfo;
use crate::label::BackupLabel;
use crate::layout::{COMPLETE_MARKER, MANIFEST_FILE, StoredBackup, stored_path};
use crate::manifest::{Manifest, ManifestFile};
use crate::plan::RelPath;
use crate::progress::{Phase, Progress};
use crate::storage::{ErrorKind as StorageErrorKind, StorageError};
use crate::types::{Lsn, SystemId, WalSegSize, WalSegment};
use crate::wal::WalRange;

mod metadata;
mod pages;
mod report;
mod run;
mod wal_check;

// Where the archived WAL of a repository's backup is read (backup, verify and restore).
pub use crate::layout::{ArchiveReadError, WalArchive};
pub use report::{BackupEndScan, Problem, TablespaceLocation, VerifyReport, tablespace_locations};
use run::Split;

/// How to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Presence and sizes only.
    pub quick: bool,
    /// Worker threads (0 counts as 1).
    pub jobs: usize,
    /// Set by the caller to stop (Ctrl-C): [`VerifyError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

impl Default for VerifyOptions<'_> {
    fn default() -> Self {
        VerifyOptions {
            quick: false,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cancel: None,
        }
    }
}

/// Why a backup could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("backup {0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a directory (pass the backup folder)")]
    NotADirectory(PathBuf),
    #[error(
        "{0} is not a pgsafe backup: it has none of {COMPLETE_MARKER}, {MANIFEST_FILE} and \
         backup_label"
    )]
    NotABackup(PathBuf),
    #[error(transparent)]
    Io(#[from] FsError),
    #[error("verification was cancelled")]
    Cancelled,
}

/// Reads a small file of the backup (never through a link); `Ok(None)` if it does not exist.
fn read_optional(backup: &StoredBackup, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, Problem> {
    backup.get(rel, limit).map_err(|e| Problem::Unreadable {
        path: rel.to_owned(),
        error: e.to_string(),
    })
}

/// A storage error reading the backup's `rel` as the error of a check that cannot go on.
fn read_error(
    backup: &StoredBackup,
    action: &'static str,
    rel: &RelPath,
    e: StorageError,
) -> FsError {
    FsError::new(action, backup.shown_path(rel), e.into_io())
}

/// Reads a stored file's original content (decompressing); `Ok(None)` if it does not exist,
/// `Err(Ok(msg))` if it does not decompress.
fn read_stored(
    backup: &StoredBackup,
    rel: &str,
    compression: Compression,
) -> Result<Option<Result<Vec<u8>, String>>, FsError> {
    let stored = stored_path(rel.as_bytes(), compression);
    let file = match backup.read(&stored) {
        Ok(f) => f,
        Err(e) if e.kind() == StorageErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(backup, "open", &stored, e)),
    };
    let mut out = Vec::new();
    let read = compression
        .decoder(file)
        .and_then(|d| d.take(1 << 20).read_to_end(&mut out));
    match read {
        Ok(_) => Ok(Some(Ok(out))),
        Err(e) if !compression.is_none() => Ok(Some(Err(e.to_string()))),
        Err(e) => Err(FsError::new("read", backup.shown_path(&stored), e)),
    }
}

/// The WAL segments the ranges need (newest range first, as in a manifest): from the segment
/// holding the oldest range's start to the one holding the byte before the newest range's end,
/// each named with the newest timeline that had begun by then (as [`wal::backup_wal_segments`]).
pub fn segments_for_ranges(ranges: &[WalRange], seg_size: WalSegSize) -> Vec<WalSegment> {
    let (Some(newest), Some(oldest)) = (ranges.first(), ranges.last()) else {
        return Vec::new();
    };
    let size = seg_size.bytes();
    let first = oldest.start_lsn.0 / size;
    let last = (newest.end_lsn.0.saturating_sub(1) / size).max(first);
    // Bounded like backup_wal_segments: a damaged range must not allocate the world.
    let last = last.min(first + (1 << 24));
    (first..=last)
        .map(|segno| {
            let tli = ranges
                .iter()
                .find(|r| r.start_lsn.0 / size <= segno)
                .map_or(oldest.tli, |r| r.tli);
            WalSegment::from_segno(tli, segno, seg_size)
        })
        .collect()
}

/// Verifies the backup folder `dir` (see the module documentation).
pub fn verify_backup(
    dir: &Path,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(VerifyError::NotADirectory(dir.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::Missing(dir.to_owned()));
        }
        Err(e) => return Err(FsError::new("inspect", dir, e).into()),
    }
    verify_stored(&StoredBackup::folder(dir)?, opts, progress)
}

/// [`verify_backup`] of a backup folder whose WAL may be in `archive` (a repository's backup
/// taken while its server archived there: its WAL walk reads the archived segments).
pub fn verify_backup_with(
    dir: &Path,
    archive: Option<&WalArchive>,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    if !dir.is_dir() {
        return verify_backup(dir, opts, progress);
    }
    verify_stored_with(&StoredBackup::folder(dir)?, archive, opts, progress)
}

/// Verifies a stored backup, in a folder or any other storage backend (see the module
/// documentation).
pub fn verify_stored(
    backup: &StoredBackup,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    verify_stored_with(backup, None, opts, progress)
}

/// [`verify_stored`] with the WAL archive of the backup's repository, if any: a backup whose
/// WAL is in that archive has it checked there; without it, the report says where the WAL is.
pub fn verify_stored_with(
    backup: &StoredBackup,
    archive: Option<&WalArchive>,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    progress.phase(Phase::Verify);
    let mut v = Verifier::new(backup, opts);
    v.archive = archive;
    v.read_metadata()?;
    v.check_control();
    let listing = backup.list()?;
    let (files, wal) = v.plan_checks(&listing);
    v.run_checks(&files, &wal, progress)?;
    v.check_label();
    Ok(v.report(started))
}

/// A manifest file to check.
struct FileCheck {
    entry: ManifestFile,
    stored: RelPath,
    /// Stored size (from the listing).
    disk_size: u64,
}

/// A WAL segment to check.
struct WalCheck {
    seg: WalSegment,
    disk_size: u64,
}

struct Verifier<'a> {
    /// Every file of the backup is read through it.
    backup: &'a StoredBackup,
    /// The repository's WAL archive, when the backup's WAL is there.
    archive: Option<&'a WalArchive>,
    /// The WAL segments are read from [`Verifier::archive`].
    wal_archived: bool,
    opts: &'a VerifyOptions<'a>,
    info: Option<BackupInfo>,
    manifest: Option<Manifest>,
    label: Option<BackupLabel>,
    compression: Compression,
    problems: Vec<Problem>,
    notes: Vec<String>,
    /// WAL needed: ranges (newest first) and the segment size.
    ranges: Vec<WalRange>,
    seg_size: Option<WalSegSize>,
    files_checked: u64,
    /// The backup's files among them (pgsafe's own files apart; see [`crate::progress`]).
    data_files: u64,
    bytes_checked: u64,
    wal_checked: u64,
    wal_records: u64,
    wal_tablespaces_created: Vec<crate::wal::record::TablespaceCreate>,
    /// The stored pg_control, decoded.
    control: Option<crate::control::ControlFile>,
    /// What the WAL walk found after the consistency point.
    backup_end: Option<BackupEndScan>,
    /// From `tablespace_map`: where a restore puts each tablespace unless remapped.
    tablespaces: Vec<TablespaceLocation>,
}

/// Shared state of the parallel checks.
struct Ctx<'a> {
    /// Page checksums to re-check (see the `pages` module).
    pages: Option<&'a pages::PageVerify>,
    backup: &'a StoredBackup,
    /// Read the WAL segments from here instead of the backup's `pg_wal/`.
    archive: Option<&'a WalArchive>,
    opts: &'a VerifyOptions<'a>,
    compression: Compression,
    seg_size: Option<WalSegSize>,
    sysid: Option<SystemId>,
    major: Option<u32>,
    stop: Option<Lsn>,
    /// The backup's start LSN (where its first WAL record is).
    start: Option<Lsn>,
    /// Where recovery of the backup becomes consistent: the WAL walk reads on to the record
    /// after it (restore decides how recovery ends from that, `restore/backup_end.rs`).
    consistent_at: Option<Lsn>,
    /// CRC-32C of the stored WAL files per `pgsafe.json`.
    wal_crcs: Option<&'a BTreeMap<String, String>>,
    files: &'a [FileCheck],
    wal: &'a [WalCheck],
    splits: &'a [Split],
    /// The checks' stop state (Ctrl-C, or an error that ends the whole check).
    halt: &'a crate::pool::Halt<'a, VerifyError>,
    progress: &'a dyn Progress,
}

#[derive(Default)]
struct WorkerOut {
    /// (order class, sort key, problem).
    problems: Vec<(u8, String, Problem)>,
    files: u64,
    wal: u64,
    wal_records: u64,
    wal_tablespaces_created: Vec<crate::wal::record::TablespaceCreate>,
    backup_end: Option<BackupEndScan>,
    bytes: u64,
}

#[cfg(test)]
mod tests;
