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
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;

use crate::backup::{BackupInfo, COMPLETE_MARKER, MANIFEST_FILE};
use crate::beneath::Beneath;
use crate::copy::Compression;
use crate::fsutil::{FsError, IoContext};
use crate::label::BackupLabel;
use crate::manifest::{Manifest, ManifestFile};
use crate::plan::RelPath;
use crate::progress::Progress;
use crate::types::{Lsn, SystemId, WalSegSize, WalSegment};
use crate::wal::WalRange;

mod metadata;
mod pages;
mod report;
mod run;
mod wal_check;

pub use report::{Problem, TablespaceLocation, VerifyReport, tablespace_locations};
use run::{Item, Split};

/// The backup's WAL folder.
pub const WAL_DIR: &str = "pg_wal";
/// `backup_label` in the backup root.
pub const LABEL_FILE: &str = "backup_label";
/// `tablespace_map` in the backup root.
pub const MAP_FILE: &str = "tablespace_map";
/// The stored control file (before any compression suffix).
pub const CONTROL_FILE: &str = "global/pg_control";

/// Files stored as they are in every layout (never compressed).
const UNCOMPRESSED_FILES: [&str; 4] = [LABEL_FILE, MAP_FILE, COMPLETE_MARKER, MANIFEST_FILE];

/// Where a manifest file (path as listed) is stored in a backup of `compression`.
pub fn stored_path(path: &[u8], compression: Compression) -> RelPath {
    let as_is = compression.is_none()
        || UNCOMPRESSED_FILES.iter().any(|f| f.as_bytes() == path)
        || path.starts_with(b"pg_wal/");
    let rel = RelPath::from_bytes(path);
    if as_is {
        rel
    } else {
        rel.with_suffix(compression.suffix())
    }
}

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

/// What a backup folder holds. Symbolic links are listed, never followed (pg_verifybackup
/// follows them; pgsafe never stores one, and following a planted one would let the folder's
/// writer choose what a root-run restore reads: docs/threat-model.md).
#[derive(Debug, Default)]
pub struct Listing {
    /// Directories, parents before children.
    pub dirs: Vec<RelPath>,
    /// Regular files and their sizes.
    pub files: BTreeMap<RelPath, u64>,
    /// Entries that are neither (sockets, fifos, devices).
    pub special: Vec<RelPath>,
    /// Symbolic links and what they point to.
    pub links: Vec<(RelPath, PathBuf)>,
    /// Regular files with more than one name (also in `files`).
    pub hard_links: Vec<RelPath>,
    /// Directories below the root that could not be read, with the error.
    pub unreadable: Vec<(RelPath, String)>,
}

/// Deepest directory nesting listed.
const MAX_DEPTH: usize = 64;

/// Lists a backup folder.
pub fn list_backup(root: &Path) -> Result<Listing, FsError> {
    let mut l = Listing::default();
    walk(root, &RelPath::default(), 0, &mut l)?;
    Ok(l)
}

fn walk(dir: &Path, rel: &RelPath, depth: usize, l: &mut Listing) -> Result<(), FsError> {
    let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    // Below the root, an unreadable directory is one problem among others: keep listing.
    let read = fs::read_dir(dir).and_then(|rd| {
        for e in rd {
            let e = e?;
            entries.push((e.file_name().as_bytes().to_vec(), e.path()));
        }
        Ok(())
    });
    match read {
        Ok(()) => {}
        Err(e) if rel.is_empty() => return Err(FsError::new("read directory", dir, e)),
        Err(e) => {
            l.unreadable
                .push((rel.clone(), format!("read directory: {e}")));
            return Ok(());
        }
    }
    entries.sort();
    for (name, path) in entries {
        let child = rel.join(&name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&path).unwrap_or_default();
                l.links.push((child, to));
            }
            Ok(m) if m.is_file() => {
                if m.nlink() > 1 {
                    l.hard_links.push(child.clone());
                }
                l.files.insert(child, m.len());
            }
            Ok(m) if m.is_dir() && depth < MAX_DEPTH => {
                l.dirs.push(child.clone());
                walk(&path, &child, depth + 1, l)?;
            }
            Ok(_) => l.special.push(child),
            // Removed while listing: nothing there to check.
            Err(e) if e.kind() == io::ErrorKind::NotFound => l.special.push(child),
            Err(e) => l.unreadable.push((child, format!("inspect: {e}"))),
        }
    }
    Ok(())
}

/// Why a hard link in a backup folder is refused: pgsafe never makes one, and a link to a file
/// the folder's writer cannot read (possible where `fs.protected_hardlinks` is 0) would make a
/// root-run restore hand that file to the database user, checksums removed by the same writer.
pub const HARD_LINK_WHY: &str = "pgsafe never stores hard links in a backup; one may name a \
    file outside it that the folder's writer could not read";

/// Largest `backup_manifest` read (about 200 bytes per file: millions of files).
pub const MANIFEST_LIMIT: u64 = 1 << 30;
/// Largest `backup_label`, `tablespace_map`, `pgsafe.json` or history file read.
pub const SMALL_FILE_LIMIT: u64 = 16 << 20;

/// Reads a small file of the backup without following links; `Ok(None)` if it does not exist.
fn read_optional(beneath: &Beneath, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, Problem> {
    beneath
        .read_small(Path::new(rel), limit)
        .map_err(|e| Problem::Unreadable {
            path: rel.to_owned(),
            error: e.to_string(),
        })
}

/// Reads a stored file's original content (decompressing); `Ok(None)` if it does not exist,
/// `Err(Ok(msg))` if it does not decompress.
fn read_stored(
    beneath: &Beneath,
    root: &Path,
    rel: &str,
    compression: Compression,
) -> Result<Option<Result<Vec<u8>, String>>, FsError> {
    let stored = stored_path(rel.as_bytes(), compression);
    let path = root.join(stored.as_path());
    let file = match beneath.open_file(stored.as_path()) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("open", path, e)),
    };
    let mut out = Vec::new();
    let read = compression
        .decoder(file)
        .and_then(|d| d.take(1 << 20).read_to_end(&mut out));
    match read {
        Ok(_) => Ok(Some(Ok(out))),
        Err(e) if !compression.is_none() => Ok(Some(Err(e.to_string()))),
        Err(e) => Err(FsError::new("read", path, e)),
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

/// Verifies the backup in `dir` (see the module documentation).
pub fn verify_backup(
    dir: &Path,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(VerifyError::NotADirectory(dir.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::Missing(dir.to_owned()));
        }
        Err(e) => return Err(FsError::new("inspect", dir, e).into()),
    }
    progress.phase("verify");
    let beneath = Beneath::open(dir).ctx("open", dir)?;
    let mut v = Verifier::new(dir, &beneath, opts);
    v.read_metadata()?;
    v.check_control();
    let listing = list_backup(dir)?;
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
    dir: &'a Path,
    beneath: &'a Beneath,
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
    bytes_checked: u64,
    wal_checked: u64,
    wal_records: u64,
    /// From `tablespace_map`: where a restore puts each tablespace unless remapped.
    tablespaces: Vec<TablespaceLocation>,
}

/// Shared state of the parallel checks.
struct Ctx<'a> {
    /// Page checksums to re-check (see the `pages` module).
    pages: Option<&'a pages::PageVerify>,
    dir: &'a Path,
    beneath: &'a Beneath,
    opts: &'a VerifyOptions<'a>,
    compression: Compression,
    seg_size: Option<WalSegSize>,
    sysid: Option<SystemId>,
    major: Option<u32>,
    stop: Option<Lsn>,
    /// The backup's start LSN (where its first WAL record is).
    start: Option<Lsn>,
    /// CRC-32C of the stored WAL files per `pgsafe.json`.
    wal_crcs: Option<&'a BTreeMap<String, String>>,
    files: &'a [FileCheck],
    wal: &'a [WalCheck],
    splits: &'a [Split],
    items: Vec<Item>,
    next: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<VerifyError>>,
    progress: &'a dyn Progress,
}

#[derive(Default)]
struct WorkerOut {
    /// (order class, sort key, problem).
    problems: Vec<(u8, String, Problem)>,
    files: u64,
    wal: u64,
    wal_records: u64,
    bytes: u64,
}

#[cfg(test)]
mod tests;
