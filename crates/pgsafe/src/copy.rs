//! Executes a [`BackupPlan`] into a target directory with parallel workers.
//!
//! * **Scheduling.** The plan's files (largest first) become a fixed work list that scoped worker
//!   threads take items from through one atomic index: no producer thread, no channel, no queue
//!   memory beyond the list itself. Each worker reuses one read buffer
//!   ([`CopyOptions::buffer_size`], 1 MiB).
//! * **Ranges.** A file larger than [`CopyOptions::split_size`] (64 MiB) is split into ranges
//!   that different workers copy at once, so one large relation does not hold up the end of the
//!   backup. Each range opens the source itself (its own read-ahead) and reads with positioned
//!   reads. Uncompressed, ranges are `split_size` long and written in place with `write_at` into
//!   the destination, preallocated with `fallocate` to the planned size. Compressed, ranges are
//!   [`FRAME_SIZE`] (4 MiB) long and each becomes one zstd or LZ4 frame, compressed in memory
//!   and appended in range order (a worker whose frame is early waits for the frames before it;
//!   concatenated frames are one valid stream for both formats), so a worker holds at most one
//!   frame. Each range computes the CRC-32C of its bytes and the file's checksum is the ranges'
//!   CRCs combined in file order (`crc32c_combine`): no byte is read twice. SHA-256 cannot be
//!   combined, and hashing in a second pass would read every byte twice, so with
//!   `--checksum sha256` files are copied whole (PostgreSQL's 1 GiB segments and largest-first
//!   scheduling still spread a large database over the workers).
//! * **Files that change.** A file whose open fails with ENOENT vanished (a DROP TABLE during the
//!   backup is normal): it is left out and listed in [`CopyReport::vanished`]. Every file is read
//!   up to its planned size at most: one that grew is stored with its planned size (the WAL
//!   replayed at recovery brings the rest). One that shrank is stored as it was read, and the
//!   stored size is what is recorded — pgsafe does not zero-pad to the planned size as
//!   pg_basebackup (whose tar header fixes the size beforehand) does; a shorter file is what a
//!   file-system copy of a live cluster gives, recovery handles it the same way, and the recorded
//!   size, checksum and stored bytes always agree. For a split file the stored content ends at
//!   the first range that came back short (later ranges, read after the file grew again, are
//!   cut off by truncating the destination). Files that shrank are listed in
//!   [`CopyReport::resized`].
//! * **Failure.** The first error (with the operation and the path) stops every worker before
//!   its next buffer and is returned; a cancel flag set by the caller (Ctrl-C) does the same and
//!   gives [`CopyError::Cancelled`]. Files already written are left in the target (it is
//!   incomplete without the completion marker written by the caller).
//! * **Durability.** By default ([`SyncMode::PerFile`]) each completed file is queued (bounded)
//!   to a few syncer threads that fsync it while the workers go on copying — a worker waiting for
//!   each small file's journal commit was the copy's largest cost on ext4 — and every directory
//!   is fsynced at the end; [`SyncMode::FileSystem`] syncs the
//!   target's file system once instead. Either way everything the report lists is on disk when
//!   [`copy_plan`] returns.
//! * **pg_control** is copied last, after all workers have finished, from a read whose CRC
//!   checks (a torn read of the live file is retried).
//! * **Throttling.** `max_rate` limits reads across all workers (a shared token bucket).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use crate::checksum::ChecksumAlgorithm;
use crate::control::{ControlError, ControlFile, READ_ATTEMPTS, READ_RETRY_DELAY};
use crate::fsutil::{FsError, IoContext};
use crate::page::PageChecksumReport;
use crate::plan::{BackupPlan, PlanFile, RelPath};
use crate::progress::{Phase, Progress};

mod engine;
mod file;
mod pages;
#[cfg(test)]
mod tests;

pub use crate::codec::{Compression, DEFAULT_ZSTD_LEVEL};
use engine::Throttle;
pub use pages::PageCheckOptions;

/// Default [`CopyOptions::split_size`]: 64 MiB (a 1 GiB relation segment becomes 16 ranges).
pub const DEFAULT_SPLIT_SIZE: u64 = 64 << 20;
/// Range size of a compressed split file: each range is one zstd or LZ4 frame, compressed in
/// memory (so this bounds a worker's memory) and appended in order.
pub const FRAME_SIZE: u64 = 4 << 20;
/// Threads that fsync completed files in [`SyncMode::PerFile`].
const SYNC_THREADS: usize = 8;
/// Completed files waiting for a syncer, at most (each holds an open file descriptor).
const SYNC_QUEUE: usize = 64;
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
    /// Files larger than this are copied as ranges of this size by several workers (uncompressed
    /// layout with CRC-32C or no checksum only; see the module documentation).
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
            sync: SyncMode::PerFile,
            before_open: None,
            pages: None,
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
    /// `fdatasync` each file as soon as it is complete (by the worker that wrote it), then every
    /// directory: durability is confined to the backup's own files, as pg_basebackup's and
    /// pgBackRest's. Costs one journal commit per file on ext4/XFS.
    #[default]
    PerFile,
    /// One `syncfs(2)` of the target's file system at the end (directories included). Faster
    /// with many small files, but it also flushes whatever else is dirty on that file system,
    /// and Linux reports write-back errors through it only from 5.8 on (PostgreSQL's
    /// `--sync-method=syncfs` has the same caveats).
    FileSystem,
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
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Io(#[from] FsError),
    #[error("copy pg_control {path}: {source}")]
    Control {
        path: PathBuf,
        #[source]
        source: ControlError,
    },
    #[error("the copy was cancelled")]
    Cancelled,
}

/// Copies every directory and file of `plan` into `target` (created if missing; files must not
/// exist there yet), then `global/pg_control`, then makes it all durable.
pub fn copy_plan(
    plan: &BackupPlan,
    target: &Path,
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
    let created_target = create_target(target, plan.root_mode)?;
    // Opened before anything is written, so syncfs reports write-back errors of this copy.
    let target_fd = File::open(target).ctx("open", target)?;
    for d in &plan.dirs {
        create_dir(&target.join(d.rel_path.as_path()))?;
    }

    let ctx = Ctx::new(plan, target, opts, progress);
    let jobs = opts.jobs.clamp(1, ctx.items.len().max(1));
    let (sync_tx, sync_rx) = mpsc::sync_channel::<ToSync>(SYNC_QUEUE);
    let sync_rx = Mutex::new(sync_rx);
    if opts.sync == SyncMode::PerFile {
        *lock(&ctx.sync_tx) = Some(sync_tx);
    }
    let outputs: Vec<WorkerOut> = std::thread::scope(|s| {
        if opts.sync == SyncMode::PerFile {
            for _ in 0..SYNC_THREADS {
                s.spawn(|| ctx.syncer(&sync_rx));
            }
        }
        let handles: Vec<_> = (0..jobs).map(|_| s.spawn(|| ctx.worker())).collect();
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        // The syncers end once the queue is empty and its last sender is gone (also before a
        // worker's panic is passed on: the scope waits for them).
        lock(&ctx.sync_tx).take();
        joined
            .into_iter()
            .map(|r| r.unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    if let Some(e) = ctx.take_error() {
        return Err(e);
    }
    if ctx.cancelled() {
        return Err(CopyError::Cancelled);
    }
    let mut report = CopyReport {
        files: Vec::with_capacity(plan.files.len() + 1),
        vanished: Vec::new(),
        resized: Vec::new(),
        bytes: 0,
        stored_bytes: 0,
        elapsed: Duration::ZERO,
        pages: None,
    };
    for out in outputs {
        report.files.extend(out.files);
        report.vanished.extend(out.vanished);
        report.resized.extend(out.resized);
    }
    report.files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    report.vanished.sort();
    report.resized.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    if let Some(o) = opts.pages {
        let collected = std::mem::take(&mut *lock(&ctx.pages));
        report.pages = Some(collected.into_report(o.relseg_size));
    }

    progress.phase(Phase::PgControl);
    let control = copy_control_file(plan, target, opts)?;
    progress.plan(1, control.size);
    progress.bytes(control.size);
    progress.file_done(&control.rel_path.to_string(), control.size);
    report.files.push(control);

    progress.phase(Phase::Sync);
    finish_dirs(plan, target, created_target, opts.sync == SyncMode::PerFile)?;
    if opts.sync == SyncMode::FileSystem {
        nix::unistd::syncfs(&target_fd)
            .map_err(io::Error::from)
            .ctx("sync the file system of", target)?;
    }
    report.bytes = report.files.iter().map(|f| f.size).sum();
    report.stored_bytes = report.files.iter().map(|f| f.stored_size).sum();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Copies `global/pg_control` into `target` (whose `global/` must exist): reads it until its
/// CRC checks (a running server rewrites it in place; up to [`READ_ATTEMPTS`] reads), then stores
/// it like any file. [`copy_plan`] calls this after every other file is stored.
pub fn copy_control_file(
    plan: &BackupPlan,
    target: &Path,
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
    let dst_path = target.join(stored_path.as_path());
    let dst = create_file(&dst_path, file.mode)?;
    let mut sink = opts.compression.sink(dst).ctx("write", &dst_path)?;
    sink.write_all(&bytes).ctx("write", &dst_path)?;
    let (dst, stored_size) = sink.finish().ctx("write", &dst_path)?.into_parts();
    if opts.sync == SyncMode::PerFile {
        dst.sync_data().ctx("fsync", &dst_path)?;
    }
    Ok(CopiedFile {
        rel_path: file.rel_path.clone(),
        size: bytes.len() as u64,
        stored_size,
        checksum: opts.checksum.of(&bytes),
        mtime,
        stored_path,
    })
}

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

/// Creates one directory of the plan, owner-writable until [`finish_dirs`] sets its mode.
fn create_dir(path: &Path) -> Result<(), FsError> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(FsError::new("create directory", path, e)),
    }
}

/// Sets the planned modes (deepest first) and fsyncs every directory, the target and (when the
/// copy created the target) its parent.
fn finish_dirs(plan: &BackupPlan, target: &Path, created: bool, sync: bool) -> Result<(), FsError> {
    for d in plan.dirs.iter().rev() {
        let path = target.join(d.rel_path.as_path());
        if d.mode != 0o700 {
            fs::set_permissions(&path, fs::Permissions::from_mode(d.mode))
                .ctx("set permissions of", &path)?;
        }
        if sync {
            crate::fsutil::sync_dir(&path)?;
        }
    }
    if sync {
        crate::fsutil::sync_dir(target)?;
        if created {
            crate::fsutil::sync_dir(&crate::fsutil::parent_dir(target))?;
        }
    }
    Ok(())
}

/// Creates a stored file that must not exist yet, with the source's permission bits (at least
/// owner read/write).
fn create_file(path: &Path, mode: u32) -> Result<File, FsError> {
    let mode = (mode & 0o777) | 0o600;
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .ctx("create", path)?;
    // The mode given to open() is filtered by the umask; set it exactly.
    if mode != 0o600 {
        f.set_permissions(fs::Permissions::from_mode(mode))
            .ctx("set permissions of", path)?;
    }
    Ok(f)
}

/// A completed stored file waiting to be fsynced, and its path for the error message.
type ToSync = (Arc<File>, PathBuf);

/// One unit of work: a whole file, or one range of a split file.
enum Work {
    Whole(usize),
    Range { split: usize, index: usize },
}

/// A file copied as ranges, and what its ranges have done so far.
struct Split<'p> {
    file: &'p PlanFile,
    /// (offset, length) of each range.
    ranges: Vec<(u64, u64)>,
    /// Compressed: each range is one frame, appended in range order (see [`Ctx::copy_frame`]);
    /// uncompressed: ranges written in place with positioned writes.
    ordered: bool,
    state: Mutex<SplitState>,
    /// Ordered mode: signalled when `next_write` advances.
    turn: Condvar,
}

#[derive(Default)]
struct SplitState {
    dst: Option<Arc<File>>,
    results: Vec<Option<RangeDone>>,
    done: usize,
    mtime: Option<i64>,
    /// Ordered mode: the range whose frame is appended next.
    next_write: usize,
    /// Ordered mode: a short or vanished range was reached; later frames are dropped.
    ended: bool,
    /// Ordered mode: bytes appended to the stored file.
    stored: u64,
}

#[derive(Clone, Copy)]
struct RangeDone {
    bytes: u64,
    crc: u32,
    vanished: bool,
}

impl RangeDone {
    const VANISHED: RangeDone = RangeDone {
        bytes: 0,
        crc: 0,
        vanished: true,
    };
}

/// What a worker produced.
#[derive(Default)]
struct WorkerOut {
    files: Vec<CopiedFile>,
    vanished: Vec<RelPath>,
    resized: Vec<SizeChange>,
}

enum Outcome {
    Stored(CopiedFile, u64),
    Vanished(RelPath),
    /// A range of a file whose other ranges are still being copied.
    Pending,
}

/// Shared state of one copy.
struct Ctx<'a> {
    plan: &'a BackupPlan,
    target: &'a Path,
    opts: &'a CopyOptions<'a>,
    progress: &'a dyn Progress,
    items: Vec<Work>,
    splits: Vec<Split<'a>>,
    next: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<CopyError>>,
    throttle: Option<Throttle>,
    /// [`SyncMode::PerFile`]: completed files go to the syncer threads through this queue.
    sync_tx: Mutex<Option<mpsc::SyncSender<ToSync>>>,
    /// What the page checks of each file or range found.
    pages: Mutex<pages::Collected>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked while holding the lock is re-raised at join: the data is unused.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
