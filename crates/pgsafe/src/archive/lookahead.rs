//! `archive-push` with look-ahead and the queue limit.
//!
//! PostgreSQL's archiver runs `archive_command` for one file at a time, oldest first (timeline
//! history files before everything), and waits for it; a file is `.ready` in
//! `pg_wal/archive_status` until the command exits 0, then `.done` (src/backend/postmaster/
//! pgarch.c). A backlog is therefore worked off one process start, one read, one compression
//! and one fsync after the other. Look-ahead: when PostgreSQL asks for file X and X is not
//! acknowledged yet, this call also pushes the next `.ready` files (in the archiver's order, up
//! to a bounded batch) on a few threads at once, and records each one stored in the spool
//! ([`super::spool`]); PostgreSQL's later calls for them are acknowledged from those records
//! after checking that the local file is still the one whose bytes were stored (its stamp,
//! else its CRC-32C: [`Spool::take_ack`]). X's own result decides the exit status: 0
//! only once X is durably stored; a look-ahead file that fails is simply pushed again when
//! PostgreSQL asks for it. Memory is a few buffers per thread (files are streamed).
//!
//! The queue limit ([`drop_over_limit`]), opt-in: when the WAL waiting to be archived exceeds
//! it (the repository is unreachable or too slow, and `pg_wal` would fill its disk and stop the
//! server), the segment PostgreSQL asks for is acknowledged WITHOUT being stored, after a
//! durable gap record is written in the spool. The next push that reaches the repository
//! writes those records into it as gap events before it acknowledges anything, so `info`,
//! `check`, `metrics` and `expire` see that point-in-time recovery across the gap is impossible.
//! Only whole segments are ever dropped: timeline history, backup history and `.partial` files
//! are small and needed to follow timelines.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::repo::Registration;
use crate::repo::doc::EventKind;
use crate::storage::{Backend, ErrorKind, Ident};
use crate::types::WalSegSize;
use crate::wal::{LONG_HEADER_SIZE, check_segment_header};

use super::push::{PushOptions, PushOutcome, push_file, push_file_summed};
use super::spool::{
    ArchiveStatus, Backlog, Binding, FileStamp, GapRecord, Spool, SpoolError, file_sum,
    scan_backlog,
};
use super::{ArchiveError, ArchiveFile};

/// Threads of a push by default.
pub const DEFAULT_PARALLEL: usize = 4;
/// Files one push takes per thread (the batch is this times the threads, X included).
const FILES_PER_THREAD: usize = 4;

/// How far a push looks ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookAhead {
    /// Threads pushing at once (1: no look-ahead, only the file asked for).
    pub parallel: usize,
    /// The queue limit in bytes, if any.
    pub queue_max: Option<u64>,
}

impl Default for LookAhead {
    fn default() -> LookAhead {
        LookAhead {
            parallel: DEFAULT_PARALLEL,
            queue_max: None,
        }
    }
}

impl LookAhead {
    /// Files one call pushes at most (the file asked for included).
    pub fn batch(&self) -> usize {
        if self.parallel <= 1 {
            1
        } else {
            self.parallel.saturating_mul(FILES_PER_THREAD)
        }
    }
}

/// How the file PostgreSQL asked for was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledged {
    /// Stored now.
    Stored,
    /// The archive already held it with the same content.
    AlreadyPresent,
    /// A look-ahead push stored it earlier (its spool record checked against the local file).
    Spooled,
}

/// What a push did besides the file asked for.
#[derive(Debug)]
pub struct PushReport {
    pub acknowledged: Acknowledged,
    /// Files stored ahead (recorded in the spool).
    pub ahead_stored: Vec<ArchiveFile>,
    /// Files that could not be stored ahead, with why (they are pushed again when asked for).
    pub ahead_failed: Vec<(ArchiveFile, String)>,
    /// Gap events written into the repository before anything was acknowledged.
    pub gaps_recorded: Vec<EventKind>,
    /// Gap records in the spool that belong to another cluster (left alone).
    pub foreign_gaps: Vec<String>,
    /// The backlog seen, and whether archiving falls behind (`None`: not a pg_wal folder, or
    /// acknowledged from the spool without looking at the backlog).
    pub status: Option<ArchiveStatus>,
}

/// Pushes `file` (at `src`) like [`push_file`], acknowledging it from the spool when a
/// look-ahead already stored it, and pushing the next `.ready` files ahead. Gap records waiting
/// in the spool are written into the repository first: if that fails, nothing is acknowledged.
/// `repo` is the repository's path (what acknowledgements are bound to).
#[allow(clippy::too_many_arguments)]
pub fn push(
    backend: &dyn Backend,
    repo: &Path,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    src: &Path,
    opts: &PushOptions,
    la: &LookAhead,
) -> Result<PushReport, SpoolError> {
    let Some(spool) = Spool::beside(src) else {
        // Not a file of a pg_wal folder (pushed by hand): no spool, no look-ahead.
        let acknowledged = match push_file(backend, cluster, reg, file, src, opts)? {
            PushOutcome::Stored => Acknowledged::Stored,
            PushOutcome::AlreadyPresent => Acknowledged::AlreadyPresent,
        };
        return Ok(PushReport {
            acknowledged,
            ahead_stored: Vec::new(),
            ahead_failed: Vec::new(),
            gaps_recorded: Vec::new(),
            foreign_gaps: Vec::new(),
            status: None,
        });
    };
    let binding = Binding::new(repo, cluster, reg.system_identifier);
    let flushed = spool.flush_gaps(backend, cluster, reg)?;
    // Segments a finished recovery fetched ahead and never used: once the server archives past
    // them they are of no use (a standby that archives, `archive_mode = always`, pushes only
    // what it has replayed, so its queue ahead stays).
    if let Some(seg) = file.segment() {
        super::prefetch::discard_upto(&spool, seg, reg.wal_segment_size);
    }
    let mut report = PushReport {
        acknowledged: Acknowledged::Stored,
        ahead_stored: Vec::new(),
        ahead_failed: Vec::new(),
        gaps_recorded: flushed.events,
        foreign_gaps: flushed.foreign,
        status: None,
    };

    // An acknowledgement is answered before the backlog is scanned and the status written:
    // a backlog is mostly acknowledgements (all but one file of each batch), and the scan
    // (a stat of every waiting file) and the status file (a rename over the last one, which
    // ext4 flushes: `auto_da_alloc`) cost more than the acknowledgement itself. The push that
    // stores the next batch brings the status up to date.
    if let Some(acked) = spool.take_ack(&binding, file, src)? {
        if spooled_object_ok(backend, reg, file, src, &acked.object)? {
            report.acknowledged = Acknowledged::Spooled;
            return Ok(report);
        }
    }
    let backlog = scan_backlog(spool.wal_dir()).unwrap_or_default();
    let waiting: std::collections::HashSet<String> =
        backlog.ready.iter().map(|f| f.to_string()).collect();
    spool.clean_acks(&|f| waiting.contains(f) || f == file.to_string());
    report.status = Some(spool.update_status(&backlog, la.batch(), la.queue_max));

    // X first, then the files PostgreSQL will ask for next, not yet acknowledged.
    let mut work: Vec<(ArchiveFile, std::path::PathBuf)> = vec![(*file, src.to_owned())];
    for f in &backlog.ready {
        if work.len() >= la.batch() {
            break;
        }
        if f == file || spool.has_ack(f) {
            continue;
        }
        work.push((*f, spool.wal_dir().join(f.to_string())));
    }
    // X's name already taken (PostgreSQL retrying after a crash, or other bytes: a clone or an
    // old primary archiving as this cluster): X is settled alone. Were it refused, nothing may
    // have been stored ahead of it, under the names the rightful server is about to use.
    if work.len() > 1 && stored_object(backend, cluster, file)?.is_some() {
        work.truncate(1);
    }
    let threads = la.parallel.clamp(1, work.len());
    let next = AtomicUsize::new(0);
    let own: Mutex<Option<Result<PushOutcome, ArchiveError>>> = Mutex::new(None);
    let ahead: Mutex<Vec<(ArchiveFile, Result<(), String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((f, path)) = work.get(i) else {
                        return;
                    };
                    if i == 0 {
                        let r = push_file(backend, cluster, reg, f, path, opts);
                        *lock(&own) = Some(r);
                    } else {
                        let r = push_ahead(backend, &spool, &binding, cluster, reg, f, path, opts);
                        lock(&ahead).push((*f, r));
                    }
                }
            });
        }
    });
    for (f, r) in lock(&ahead).drain(..) {
        match r {
            Ok(()) => report.ahead_stored.push(f),
            Err(why) => report.ahead_failed.push((f, why)),
        }
    }
    report.ahead_stored.sort();
    let own = lock(&own).take();
    report.acknowledged = match own {
        Some(Ok(PushOutcome::Stored)) => Acknowledged::Stored,
        Some(Ok(PushOutcome::AlreadyPresent)) => Acknowledged::AlreadyPresent,
        Some(Err(e)) => return Err(e.into()),
        // The worker that took X panicked: the panic was passed on by the scope.
        None => Acknowledged::Stored,
    };
    Ok(report)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pushes a file ahead and records it in the spool if, and only if, it is stored and the
/// local file was not written meanwhile: its stamp (device, inode, size, modification and
/// change times) is the same before and after the push (a file rewritten meanwhile is not
/// acknowledged: what was stored may be its older content). The record carries the size and
/// CRC-32C of the bytes the push read and stored (taken while they were read, not by a second
/// read) and the stamp, which lets the acknowledgement skip reading the file again
/// ([`Spool::take_ack`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_ahead(
    backend: &dyn Backend,
    spool: &Spool,
    binding: &Binding,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    path: &Path,
    opts: &PushOptions,
) -> Result<(), String> {
    let read = |e: std::io::Error| format!("read {}: {e}", path.display());
    let before = FileStamp::of(path).map_err(read)?;
    let pushed =
        push_file_summed(backend, cluster, reg, file, path, opts).map_err(|e| e.to_string())?;
    let after = FileStamp::of(path).map_err(read)?;
    // Already stored: compared, not stored; the bytes are summed now.
    let sum = match pushed.sum {
        Some(sum) => sum,
        None => file_sum(path).map_err(read)?,
    };
    if after != before || sum.size != after.size {
        return Err(format!("{} changed while it was pushed", path.display()));
    }
    let object = match pushed.object {
        Some(o) => o.to_string(),
        None => stored_object(backend, cluster, file)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{file} is not in the archive after its push"))?,
    };
    spool
        .record_ack_stamped(binding, file, &object, sum, Some(after))
        .map_err(|e| e.to_string())
}

/// The name of the object `file` is stored as, trying each compression (`None`: not stored).
fn stored_object(
    backend: &dyn Backend,
    cluster: &Ident,
    file: &ArchiveFile,
) -> Result<Option<String>, ArchiveError> {
    for (stored, _) in file.stored_candidates() {
        let object = crate::layout::wal_object_name(cluster, file.timeline(), &stored)?;
        // Its size, not its content: a host holding only an encrypted repository's public
        // keys cannot open the object, but can see that it is there.
        match backend.size(&object) {
            Ok(_) => return Ok(Some(object.to_string())),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Whether an acknowledgement's object is still in the archive, and the local file (whose
/// bytes the record proved) is still the registered cluster's: its first page is checked as
/// a push checks it.
pub(crate) fn spooled_object_ok(
    backend: &dyn Backend,
    reg: &Registration,
    file: &ArchiveFile,
    src: &Path,
    object: &str,
) -> Result<bool, SpoolError> {
    if let Some(seg) = file.segment().filter(|_| file.is_wal()) {
        let Ok(head) = read_head(src) else {
            return Ok(false);
        };
        if check_segment_header(
            &head,
            seg,
            reg.wal_segment_size,
            Some(reg.system_identifier),
            Some(reg.server_version.major()),
        )
        .is_err()
        {
            return Ok(false);
        }
    }
    let Ok(name) = crate::storage::ObjectName::new(object) else {
        return Ok(false);
    };
    match backend.read(&name) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SpoolError::Archive(e.into())),
    }
}

fn read_head(path: &Path) -> std::io::Result<[u8; LONG_HEADER_SIZE]> {
    use std::io::Read;
    let mut head = [0u8; LONG_HEADER_SIZE];
    // O_NONBLOCK: a FIFO planted under a segment's name must not block the archiver (a
    // regular file reads the same).
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?
        .read_exact(&mut head)?;
    Ok(head)
}

/// What the queue limit did.
#[derive(Debug)]
pub enum OverLimit {
    /// The segment was dropped: not stored, its gap recorded durably in the spool.
    Dropped { gap: GapRecord, backlog: Backlog },
    /// Over the limit, but a look-ahead had stored the segment (its record checked against
    /// the local bytes): acknowledged without the repository.
    Spooled,
}

/// The queue limit, checked before the repository is opened (it is usually unreachable when
/// the limit is reached): when the WAL waiting to be archived exceeds `queue_max` bytes and
/// `file` is a whole segment, records the gap durably in the spool and returns
/// [`OverLimit::Dropped`] — the caller then reports success to PostgreSQL without storing, and
/// says so loudly. `None`: under the limit (or not a segment), push as usual. The segment's
/// first page gives the system identifier the gap belongs to; a file that is not a valid
/// segment is never dropped (the push refuses it).
pub fn drop_over_limit(
    repo: &Path,
    cluster: &Ident,
    file: &ArchiveFile,
    src: &Path,
    queue_max: u64,
) -> Result<Option<OverLimit>, SpoolError> {
    let ArchiveFile::Segment(seg) = file else {
        return Ok(None);
    };
    let Some(spool) = Spool::beside(src) else {
        return Ok(None);
    };
    let backlog = scan_backlog(spool.wal_dir())?;
    if backlog.bytes <= queue_max {
        return Ok(None);
    }
    let Ok(meta) = std::fs::metadata(src) else {
        return Ok(None);
    };
    let (Ok(size), Ok(head)) = (WalSegSize::new(meta.len()), read_head(src)) else {
        return Ok(None);
    };
    let Ok(h) = check_segment_header(&head, *seg, size, None, None) else {
        return Ok(None);
    };
    let Some(long) = h.long else {
        return Ok(None);
    };
    let binding = Binding::new(repo, cluster, long.sysid);
    if spool.take_ack(&binding, file, src)?.is_some() {
        return Ok(Some(OverLimit::Spooled));
    }
    let waiting_mib = backlog.bytes / (1 << 20);
    let gap = GapRecord::new(
        long.sysid,
        *seg,
        format!(
            "archive queue limit: {} files ({waiting_mib} MiB) were waiting to be archived, more \
             than the limit of {} MiB; the segment was not archived so that pg_wal does not \
             fill its disk",
            backlog.ready.len(),
            queue_max / (1 << 20)
        ),
    );
    spool.record_gap(&gap)?;
    spool.update_status(&backlog, 1, Some(queue_max));
    Ok(Some(OverLimit::Dropped { gap, backlog }))
}
