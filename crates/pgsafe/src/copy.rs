//! Executes a [`BackupPlan`]: the data directory's files become objects of a storage
//! [`Backend`] (a backup folder: [`LocalBackend`]), copied by the workers of the one pool
//! ([`crate::pool`]).
//!
//! * **Scheduling.** The plan's files (largest first) become a fixed work list the pool's
//!   workers take items from, in order. Each worker reuses one read buffer
//!   ([`CopyOptions::buffer_size`], 1 MiB).
//! * **Ranges.** A file larger than [`CopyOptions::split_size`] (64 MiB) is split into ranges
//!   ([`pool::ranges`]) that different workers copy at once, so one large relation does not
//!   hold up the end of the backup. Each range opens the source itself (its own read-ahead) and
//!   reads with positioned reads. Uncompressed into a local folder, ranges are `split_size`
//!   long and written in place with positioned writes into the object's file
//!   ([`ObjectWriter::local_file`]), preallocated with `fallocate` to the planned size.
//!   Compressed (or into a backend without local files), ranges are [`FRAME_SIZE`] (4 MiB)
//!   long and each becomes one frame, compressed in memory and appended in range order (a
//!   worker whose frame is early waits for the frames before it; concatenated zstd or LZ4
//!   frames are one valid stream, and uncompressed frames are the bytes themselves), so a
//!   worker holds at most one frame. Each range computes the CRC-32C of its bytes and the
//!   file's checksum is the ranges' CRCs combined in file order (`crc32c_combine`): no byte is
//!   read twice. SHA-256 cannot be combined, and hashing in a second pass would read every byte
//!   twice, so with `--checksum sha256` files are copied whole (PostgreSQL's 1 GiB segments and
//!   largest-first scheduling still spread a large database over the workers). [`pool::Parts`]
//!   hands the ranges' results to the worker finishing the last one, which completes the file.
//! * **Objects.** Every stored file is one write-once object: it becomes visible complete when
//!   its last range is done, or not at all (a vanished file's partial object is dropped, never
//!   left behind), and a name already taken by other bytes is an error, never overwritten.
//! * **Files that change.** A file whose open fails with ENOENT vanished (a DROP TABLE during the
//!   backup is normal): it is left out and listed in [`CopyReport::vanished`]. Every file is read
//!   up to its planned size at most: one that grew is stored with its planned size (the WAL
//!   replayed at recovery brings the rest). One that shrank is stored as it was read, and the
//!   stored size is what is recorded — pgsafe does not zero-pad to the planned size as
//!   pg_basebackup (whose tar header fixes the size beforehand) does; a shorter file is what a
//!   file-system copy of a live cluster gives, recovery handles it the same way, and the recorded
//!   size, checksum and stored bytes always agree. For a split file the stored content ends at
//!   the first range that came back short (later ranges, read after the file grew again, are
//!   cut off). Files that shrank are listed in [`CopyReport::resized`].
//! * **Failure.** The first error (with the operation and the path) stops every worker before
//!   its next buffer and is returned; a cancel flag set by the caller (Ctrl-C) does the same and
//!   gives [`CopyError::Cancelled`]; a worker's panic is passed on (see [`crate::pool`]).
//!   Objects already written are left in the target (it is incomplete without the completion
//!   marker written by the caller).
//! * **Durability** ([`SyncMode::Storage`]): the data files are written with deferred
//!   durability and made durable together by one [`Backend::sync_all`] — for a local folder one
//!   `syncfs(2)` of its file system, instead of a journal commit per file (each small file's
//!   fsync was the copy's largest cost on ext4). Like PostgreSQL's `--sync-method=syncfs` it
//!   also flushes whatever else is dirty on that file system, and Linux reports write-back
//!   errors through it only from 5.8 on. `pg_control` is then written durably on its own.
//! * **pg_control** is copied last, after all workers have finished and the rest is durable,
//!   from a read whose CRC checks (a torn read of the live file is retried).
//! * **Throttling.** `max_rate` limits reads across all workers (one shared token bucket,
//!   [`crate::storage::ratelimit::TokenBucket`]).

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::checksum::ChecksumAlgorithm;
use crate::control::{ControlError, ControlFile, READ_ATTEMPTS, READ_RETRY_DELAY};
use crate::fsutil::{FsError, IoContext};
use crate::page::PageChecksumReport;
use crate::plan::{BackupPlan, RelPath};
use crate::pool::{self, Halt, Stopped};
use crate::progress::{Phase, Progress};
use crate::storage::{
    Backend, Durability, LocalBackend, ObjectName, ObjectWriter, PutOptions, StorageError,
};

mod file;
pub mod incremental;
mod pages;
#[cfg(test)]
mod tests;
mod work;

pub use crate::codec::{Compression, DEFAULT_ZSTD_LEVEL};
pub use incremental::IncrementalCopy;
pub use pages::PageCheckOptions;

/// Default [`CopyOptions::split_size`]: 64 MiB (a 1 GiB relation segment becomes 16 ranges).
pub const DEFAULT_SPLIT_SIZE: u64 = 64 << 20;
/// Range size of a split file appended in order (compressed, or into a backend without local
/// files): each range is one frame, built in memory (so this bounds a worker's memory).
pub const FRAME_SIZE: u64 = 4 << 20;
/// Default [`CopyOptions::buffer_size`].
pub const DEFAULT_BUFFER_SIZE: usize = 1 << 20;

/// How to execute a plan.
#[derive(Clone, Copy)]
pub struct CopyOptions<'a> {
    /// Worker threads (0 counts as 1).
    pub jobs: usize,
    pub compression: Compression,
    /// Per-file checksum over the uncompressed content.
    pub checksum: ChecksumAlgorithm,
    /// Read limit in bytes per second across all workers (`None` or `Some(0)`: no limit).
    pub max_rate: Option<u64>,
    /// Set by the caller to stop the copy (Ctrl-C): [`CopyError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Files larger than this are copied as ranges of this size by several workers (CRC-32C or
    /// no checksum only; see the module documentation).
    pub split_size: u64,
    /// Bytes read (and written) at a time by each worker.
    pub buffer_size: usize,
    /// How the stored files are made durable.
    pub sync: SyncMode,
    /// Called by a worker just before it opens a source file (once per range of a split file):
    /// lets tests change the data directory at a chosen point of the copy.
    pub before_open: Option<&'a (dyn Fn(&RelPath) + Sync)>,
    /// Check the page checksums of relation files while copying them (clusters with data
    /// checksums); see the `pages` module.
    pub pages: Option<PageCheckOptions>,
    /// A differential or incremental backup: relation files are stored as their changed
    /// blocks where they can be ([`incremental`]).
    pub incremental: Option<&'a IncrementalCopy>,
}

impl Default for CopyOptions<'_> {
    fn default() -> Self {
        CopyOptions {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            compression: Compression::None,
            checksum: ChecksumAlgorithm::Crc32c,
            max_rate: None,
            cancel: None,
            split_size: DEFAULT_SPLIT_SIZE,
            buffer_size: DEFAULT_BUFFER_SIZE,
            sync: SyncMode::Storage,
            before_open: None,
            pages: None,
            incremental: None,
        }
    }
}

impl std::fmt::Debug for CopyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("jobs", &self.jobs)
            .field("compression", &self.compression)
            .field("checksum", &self.checksum)
            .field("max_rate", &self.max_rate)
            .field("split_size", &self.split_size)
            .field("buffer_size", &self.buffer_size)
            .field("sync", &self.sync)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

/// How [`copy_plan`] makes what it stored durable before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// The data files are written with [`Durability::Deferred`] and made durable by one
    /// [`Backend::sync_all`] (a local folder: one `syncfs(2)`, directories included) before
    /// `pg_control`, which is written durably on its own (fsync, rename, fsync of `global/`).
    #[default]
    Storage,
    /// No syncing (tests, benchmarks, or a caller that syncs the tree itself).
    None,
}

/// One stored file, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedFile {
    /// The file's path in PGDATA terms (`base/5/16384`, `pg_tblspc/16385/PG_15_…/5/16386`).
    pub rel_path: RelPath,
    /// Uncompressed bytes stored (what the manifest's `Size` is).
    pub size: u64,
    /// Bytes on disk (equal to `size` when uncompressed).
    pub stored_size: u64,
    /// Checksum of the uncompressed content, lowercase hex; `None` without a checksum.
    pub checksum: Option<String>,
    /// The source's `st_mtime` when the copy opened it, seconds since the Unix epoch.
    pub mtime: i64,
    /// Where it is in the backup: `rel_path` plus the compression suffix.
    pub stored_path: RelPath,
}

/// A file whose size changed between planning and copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeChange {
    pub rel_path: RelPath,
    pub planned: u64,
    pub stored: u64,
}

/// What [`copy_plan`] did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// Every stored file: data files sorted by path, then `global/pg_control` last.
    pub files: Vec<CopiedFile>,
    /// Planned files that no longer existed when the copy opened them (left out).
    pub vanished: Vec<RelPath>,
    /// Stored files shorter than planned (they shrank while the backup ran). A file that grew is
    /// stored with its planned size and not listed.
    pub resized: Vec<SizeChange>,
    /// Uncompressed bytes stored.
    pub bytes: u64,
    /// Bytes on disk.
    pub stored_bytes: u64,
    pub elapsed: Duration,
    /// Page checksums checked ([`CopyOptions::pages`]): pages, corrupt and changed blocks.
    pub pages: Option<PageChecksumReport>,
    /// Bytes read from the data directory's files (pg_control included).
    pub bytes_read: u64,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading the data directory (or preparing a local target) failed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// Storing into the target failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("copy pg_control {path}: {source}")]
    Control {
        path: PathBuf,
        #[source]
        source: ControlError,
    },
    #[error("the copy was cancelled")]
    Cancelled,
}

/// Copies every directory and file of `plan` into the folder `target` (created with PGDATA's
/// mode if missing; objects must not exist there yet with other bytes), then
/// `global/pg_control`, then makes it all durable: [`copy_plan_to`] a [`LocalBackend`].
pub fn copy_plan(
    plan: &BackupPlan,
    target: &Path,
    opts: &CopyOptions<'_>,
    progress: &dyn Progress,
) -> Result<CopyReport, CopyError> {
    let created = create_target(target, plan.root_mode)?;
    let store = LocalBackend::open(target)?;
    let report = copy_plan_to(plan, &store, opts, progress)?;
    if created && opts.sync == SyncMode::Storage {
        crate::fsutil::sync_dir(&crate::fsutil::parent_dir(target))?;
    }
    Ok(report)
}

/// Copies every directory and file of `plan` into `store`, then `global/pg_control`, making it
/// all durable as [`CopyOptions::sync`] says.
pub fn copy_plan_to(
    plan: &BackupPlan,
    store: &dyn Backend,
    opts: &CopyOptions<'_>,
    progress: &dyn Progress,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    progress.phase(Phase::Copy);
    // pg_control is its own phase (below).
    progress.plan(
        plan.total_files().saturating_sub(1),
        plan.total_bytes().saturating_sub(plan.control_file.size),
    );
    // Owner-writable until the files are in; their planned modes are set after.
    for d in &plan.dirs {
        store.create_folder(&ObjectName::from_rel_path(&d.rel_path)?, 0o700)?;
    }

    let halt = Halt::new(opts.cancel);
    let ctx = work::Ctx::new(plan, store, opts, progress, &halt);
    let outputs = pool::run(
        opts.jobs,
        &ctx.items,
        &halt,
        || ctx.worker_state(),
        |(out, buf), item| ctx.copy_item(item, out, buf),
    )
    .map_err(|e| match e {
        Stopped::Failed(e) => e,
        Stopped::Cancelled => CopyError::Cancelled,
    })?;
    let mut report = CopyReport {
        files: Vec::with_capacity(plan.files.len() + 1),
        vanished: Vec::new(),
        resized: Vec::new(),
        bytes: 0,
        stored_bytes: 0,
        elapsed: Duration::ZERO,
        pages: None,
        bytes_read: 0,
    };
    for (out, _) in outputs {
        report.files.extend(out.files);
        report.vanished.extend(out.vanished);
        report.resized.extend(out.resized);
    }
    report.files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    report.vanished.sort();
    report.resized.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    report.pages = ctx.page_report();
    report.bytes_read = ctx.bytes_read();

    // Planned modes, deepest first (PostgreSQL's directories are owner-writable: initdb makes
    // them 0700, or 0750 with group access).
    for d in plan.dirs.iter().rev() {
        if d.mode != 0o700 {
            store.create_folder(&ObjectName::from_rel_path(&d.rel_path)?, d.mode)?;
        }
    }
    let durable = opts.sync == SyncMode::Storage;
    if durable {
        progress.phase(Phase::Sync);
        store.sync_all()?;
    }

    progress.phase(Phase::PgControl);
    progress.plan(1, plan.control_file.size);
    let control = copy_control_file(plan, store, opts)?;
    progress.bytes(control.size);
    progress.file_done(&control.rel_path.to_string(), control.size);
    report.bytes_read += control.size;
    report.files.push(control);

    report.bytes = report.files.iter().map(|f| f.size).sum();
    report.stored_bytes = report.files.iter().map(|f| f.stored_size).sum();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Copies `global/pg_control` into `store` (durably unless [`SyncMode::None`]): reads it until
/// its CRC checks (a running server rewrites it in place; up to [`READ_ATTEMPTS`] reads), then
/// stores it like any file. [`copy_plan_to`] calls this after every other file is stored.
pub fn copy_control_file(
    plan: &BackupPlan,
    store: &dyn Backend,
    opts: &CopyOptions<'_>,
) -> Result<CopiedFile, CopyError> {
    let file = &plan.control_file;
    let mut attempt = 1;
    let (bytes, mtime) = loop {
        let mut src = File::open(&file.source).ctx("open", &file.source)?;
        let mtime = src.metadata().ctx("inspect", &file.source)?.mtime();
        let mut bytes = Vec::with_capacity(8192);
        // pg_control is 8 KiB; read a little more than that at most.
        (&mut src)
            .take(1 << 16)
            .read_to_end(&mut bytes)
            .ctx("read", &file.source)?;
        match ControlFile::decode(&bytes) {
            Ok(_) => break (bytes, mtime),
            Err(ControlError::BadCrc { .. }) if attempt < READ_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(READ_RETRY_DELAY);
            }
            Err(source) => {
                return Err(CopyError::Control {
                    path: file.source.clone(),
                    source,
                });
            }
        }
    };
    let stored_path = file.rel_path.with_suffix(opts.compression.suffix());
    let name = ObjectName::from_rel_path(&stored_path)?;
    let durability = match opts.sync {
        SyncMode::Storage => Durability::Immediate,
        SyncMode::None => Durability::Deferred,
    };
    let mut sink = opts
        .compression
        .sink(store.writer(&name, put_options(durability, file.mode))?)
        .map_err(|e| StorageError::io("store", &name, e))?;
    sink.write_all(&bytes)
        .map_err(|e| StorageError::io("store", &name, e))?;
    let (w, stored_size) = sink
        .finish()
        .map_err(|e| StorageError::io("store", &name, e))?
        .into_parts();
    w.finish()?;
    Ok(CopiedFile {
        rel_path: file.rel_path.clone(),
        size: bytes.len() as u64,
        stored_size,
        checksum: opts.checksum.of(&bytes),
        mtime,
        stored_path,
    })
}

/// How a stored file is put: with the source's permission bits (the backend keeps at least
/// owner read/write).
fn put_options(durability: Durability, mode: u32) -> PutOptions {
    PutOptions {
        durability,
        mode: mode & 0o777,
    }
}

/// An object being written, as the copy holds it.
type Writer<'s> = Box<dyn ObjectWriter + 's>;

/// Creates `target` if missing (mode `root_mode`); returns whether it did.
fn create_target(target: &Path, root_mode: u32) -> Result<bool, FsError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(FsError::new(
            "use target",
            target,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(target)
                .ctx("create", target)?;
            fs::set_permissions(target, fs::Permissions::from_mode(root_mode | 0o700))
                .ctx("set permissions of", target)?;
            Ok(true)
        }
        Err(e) => Err(FsError::new("inspect", target, e)),
    }
}
