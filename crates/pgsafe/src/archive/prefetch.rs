//! `archive-get` with prefetch: recovery asks `restore_command` for one segment at a time and
//! replays it before asking for the next (src/backend/access/transam/xlogrecovery.c), so a
//! replay from the archive waits for one fetch, decompression and check after the other. When
//! asked for segment X, this also fetches the next segments of X's timeline on a few threads at
//! once into a bounded queue, `pg_wal/pgsafe_archive/prefetch/` ([`super::spool`]), and later
//! calls are served from it.
//!
//! A queued segment is served only after the same checks as a direct get — exactly the
//! registered segment size, its first page the registered cluster's (page magic of its major,
//! system identifier, segment size, address and timeline of its name) — and only when its
//! record names the same repository, cluster and system identifier and the file still has the
//! size and CRC-32C it had when it was fetched (a damaged or half-written queue file is
//! removed and the segment fetched directly). A queued file is never used under another name:
//! after a timeline switch PostgreSQL asks for the new timeline's names, which are fetched
//! anew. The queue holds at most the configured number of segments past the one asked for
//! (per timeline); segments at or before it are removed, and `archive-push` removes the
//! leftovers of a finished recovery once it archives past them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::repo::Registration;
use crate::repo::doc::{format_time, now_us};
use crate::storage::{Backend, Ident};
use crate::types::{WalSegSize, WalSegment};
use crate::wal::{LONG_HEADER_SIZE, check_segment_header};

use super::get::{get_to, get_to_summed};
use super::spool::{Binding, FileStamp, FileSum, PREFETCH_DIR, Spool, SpoolError, file_sum};
use super::{ArchiveError, ArchiveFile};

/// Segments fetched ahead by default.
pub const DEFAULT_PREFETCH: usize = 8;
/// Threads fetching at once, at most.
const MAX_THREADS: usize = 4;
/// The queue never holds more than this many bytes of segments (whatever the count asked).
const QUEUE_BYTES_MAX: u64 = 1 << 30;
const RECORD_SUFFIX: &str = ".json";

/// How far a get fetches ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// Segments fetched ahead (0: none).
    pub count: usize,
}

impl Default for Prefetch {
    fn default() -> Prefetch {
        Prefetch {
            count: DEFAULT_PREFETCH,
        }
    }
}

impl Prefetch {
    /// The count, bounded so that the queue stays under [`QUEUE_BYTES_MAX`].
    fn bounded(&self, seg: WalSegSize) -> u64 {
        (self.count as u64).min(QUEUE_BYTES_MAX / seg.bytes())
    }
}

/// Where the segment asked for came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From the queue, after its checks.
    Prefetched,
    /// Fetched from the archive now.
    Fetched,
    /// Not in the archive: nothing was written.
    NotFound,
}

/// What a get did.
#[derive(Debug)]
pub struct GetReport {
    pub served: Served,
    /// Segments fetched into the queue.
    pub prefetched: Vec<WalSegment>,
    /// Queue files not served, and why (removed).
    pub rejected: Vec<String>,
    /// Segments that could not be fetched ahead, and why (fetched again when asked for).
    pub failed: Vec<(WalSegment, String)>,
}

/// `prefetch/<segment>.json`: what the queue file `prefetch/<segment>` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct QueueRecord {
    format: u32,
    #[serde(flatten)]
    binding: Binding,
    file: String,
    #[serde(flatten)]
    sum: FileSum,
    /// The queue file's stamp when it was written (records without one are checked by
    /// reading the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stamp: Option<FileStamp>,
    fetched_at: String,
}

const QUEUE_FORMAT: u32 = 1;

/// Restores `file` from the archive to `dest` like [`get_to`], serving it from the prefetch
/// queue when it is there and passes the checks, and fetching the next segments of its
/// timeline into the queue. `repo` is the repository's path (what queue records are bound to).
#[allow(clippy::too_many_arguments)]
pub fn get(
    backend: &dyn Backend,
    repo: &Path,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    dest: &Path,
    pf: &Prefetch,
) -> Result<GetReport, SpoolError> {
    let mut report = GetReport {
        served: Served::NotFound,
        prefetched: Vec::new(),
        rejected: Vec::new(),
        failed: Vec::new(),
    };
    let seg_size = reg.wal_segment_size;
    let seg = match file {
        ArchiveFile::Segment(s) if pf.count > 0 => *s,
        _ => {
            if get_to(backend, cluster, reg, file, dest)? {
                report.served = Served::Fetched;
            }
            return Ok(report);
        }
    };
    let Ok(segno) = seg.segno(seg_size) else {
        // A name not valid for this segment size: let the direct get refuse it.
        if get_to(backend, cluster, reg, file, dest)? {
            report.served = Served::Fetched;
        }
        return Ok(report);
    };
    // Only into a pg_wal folder (recovery's `pg_wal/RECOVERYXLOG`), and only when the queue
    // can be made there: otherwise a plain get.
    let queue = Spool::beside(dest).and_then(|s| s.sub(PREFETCH_DIR).ok());
    let Some(queue) = queue else {
        if get_to(backend, cluster, reg, file, dest)? {
            report.served = Served::Fetched;
        }
        return Ok(report);
    };
    let binding = Binding::new(repo, cluster, reg.system_identifier);
    let count = pf.bounded(seg_size);

    match take_queued(&queue, &binding, reg, seg, dest) {
        Ok(true) => report.served = Served::Prefetched,
        Ok(false) => {}
        Err(why) => report.rejected.push(why),
    }
    let queued = clean(&queue, segno, count, seg_size);
    // Served from the queue with half of it still ahead: nothing to fetch this time.
    let ahead: Vec<WalSegment> = (1..=count)
        .filter_map(|i| segno.checked_add(i))
        .map(|n| WalSegment::from_segno(seg.tli, n, seg_size))
        .filter(|s| !queued.contains(s))
        .collect();
    let refill = report.served != Served::Prefetched || (ahead.len() as u64) * 2 > count;
    let mut work: Vec<Option<WalSegment>> = Vec::new();
    if report.served != Served::Prefetched {
        work.push(None);
    }
    if refill {
        work.extend(ahead.into_iter().map(Some));
    }
    let own: Mutex<Option<Result<bool, ArchiveError>>> = Mutex::new(None);
    let done: Mutex<Vec<(WalSegment, Result<bool, String>)>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let threads = MAX_THREADS.min(work.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = work.get(i) else {
                        return;
                    };
                    match item {
                        None => *lock(&own) = Some(get_to(backend, cluster, reg, file, dest)),
                        Some(s) => {
                            let r = fetch_ahead(backend, &queue, &binding, cluster, reg, *s);
                            lock(&done).push((*s, r));
                        }
                    }
                }
            });
        }
    });
    for (s, r) in lock(&done).drain(..) {
        match r {
            Ok(true) => report.prefetched.push(s),
            Ok(false) => {}
            Err(why) => report.failed.push((s, why)),
        }
    }
    report.prefetched.sort();
    if let Some(r) = lock(&own).take() {
        report.served = if r? {
            Served::Fetched
        } else {
            Served::NotFound
        };
    }
    Ok(report)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn queue_paths(queue: &Path, seg: WalSegment) -> (PathBuf, PathBuf) {
    (
        queue.join(seg.to_string()),
        queue.join(format!("{seg}{RECORD_SUFFIX}")),
    )
}

/// Moves the queued `seg` to `dest` if it is there and passes every check: `Ok(false)` when it
/// is not queued, `Err(why)` when a queued file was rejected (and removed).
fn take_queued(
    queue: &Path,
    binding: &Binding,
    reg: &Registration,
    seg: WalSegment,
    dest: &Path,
) -> Result<bool, String> {
    let (data, rec_path) = queue_paths(queue, seg);
    let Ok(rec_bytes) = fs::read(&rec_path) else {
        return Ok(false);
    };
    let verdict = check_queued(&data, &rec_bytes, binding, reg, seg);
    let _ = fs::remove_file(&rec_path);
    if let Err(why) = verdict {
        let _ = fs::remove_file(&data);
        return Err(format!(
            "the prefetched copy of {seg} was not used ({why}); it is fetched from the archive"
        ));
    }
    match fs::rename(&data, dest) {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = fs::remove_file(&data);
            Err(format!(
                "the prefetched copy of {seg} could not be moved to {}: {e}",
                dest.display()
            ))
        }
    }
}

fn check_queued(
    data: &Path,
    rec_bytes: &[u8],
    binding: &Binding,
    reg: &Registration,
    seg: WalSegment,
) -> Result<(), String> {
    let rec: QueueRecord =
        serde_json::from_slice(rec_bytes).map_err(|e| format!("its record: {e}"))?;
    if rec.format != QUEUE_FORMAT || rec.file != seg.to_string() {
        return Err("its record is not for this file".into());
    }
    if rec.binding != *binding {
        return Err(format!(
            "it was fetched from another archive (repository {}, cluster {}, system {})",
            rec.binding.repo, rec.binding.cluster, rec.binding.system_identifier
        ));
    }
    // The file as it was written (same inode, size, modification and change times): its
    // bytes are the ones summed while they were written, no need to read them again (see
    // `Spool::take_ack` for why a stamp stands in for the bytes; a queue copied with the data
    // folder has other change times and is read).
    let unchanged = rec.stamp.is_some_and(|st| {
        FileStamp::of(data).is_ok_and(|now| now == st && now.size == rec.sum.size)
    });
    let sum = if unchanged {
        rec.sum
    } else {
        file_sum(data).map_err(|e| format!("read: {e}"))?
    };
    if sum != rec.sum {
        return Err(format!(
            "its content changed since it was fetched ({} bytes, CRC-32C {:08x}; fetched: {} \
             bytes, {:08x})",
            sum.size, sum.crc32c, rec.sum.size, rec.sum.crc32c
        ));
    }
    if sum.size != reg.wal_segment_size.bytes() {
        return Err(format!(
            "it holds {} bytes, a segment of this cluster is {}",
            sum.size,
            reg.wal_segment_size.bytes()
        ));
    }
    let mut head = [0u8; LONG_HEADER_SIZE];
    {
        use std::io::Read;
        fs::File::open(data)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(|e| format!("read: {e}"))?;
    }
    check_segment_header(
        &head,
        seg,
        reg.wal_segment_size,
        Some(reg.system_identifier),
        Some(reg.server_version.major()),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Fetches `seg` into the queue (`Ok(false)`: not in the archive) and records it.
fn fetch_ahead(
    backend: &dyn Backend,
    queue: &Path,
    binding: &Binding,
    cluster: &Ident,
    reg: &Registration,
    seg: WalSegment,
) -> Result<bool, String> {
    let (data, rec_path) = queue_paths(queue, seg);
    let file = ArchiveFile::Segment(seg);
    let Some(sum) =
        get_to_summed(backend, cluster, reg, &file, &data).map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let stamp = FileStamp::of(&data).map_err(|e| format!("read {}: {e}", data.display()))?;
    let rec = QueueRecord {
        format: QUEUE_FORMAT,
        binding: binding.clone(),
        file: seg.to_string(),
        sum,
        stamp: Some(stamp),
        fetched_at: format_time(now_us()),
    };
    let tmp = queue.join(format!(".{seg}{RECORD_SUFFIX}.tmp-{}", std::process::id()));
    let written = fs::write(&tmp, serde_json::to_vec(&rec).unwrap_or_default())
        .and_then(|_| fs::rename(&tmp, &rec_path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&data);
        return Err(format!("record {}: {e}", rec_path.display()));
    }
    Ok(true)
}

/// Removes from the queue everything that can no longer be asked for or lies too far ahead of
/// segment number `segno` (any timeline), temporary files and odd names; returns the segments
/// left queued (data and record both present).
fn clean(queue: &Path, segno: u64, count: u64, seg_size: WalSegSize) -> Vec<WalSegment> {
    let Ok(rd) = fs::read_dir(queue) else {
        return Vec::new();
    };
    let names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut kept = Vec::new();
    for name in &names {
        let base = name.strip_suffix(RECORD_SUFFIX).unwrap_or(name);
        let keep = base
            .parse::<WalSegment>()
            .ok()
            .filter(|s| s.to_string() == base)
            .and_then(|s| s.segno(seg_size).ok().map(|n| (s, n)))
            .filter(|(_, n)| *n > segno && *n - segno <= count);
        match keep {
            Some((s, _)) if name.len() == base.len() => {
                if names.contains(&format!("{base}{RECORD_SUFFIX}")) {
                    kept.push(s);
                }
            }
            Some(_) => {}
            None => {
                let _ = fs::remove_file(queue.join(name));
            }
        }
    }
    kept
}

/// Removes queued segments at or before `seg`'s number (any timeline): called by
/// `archive-push`, which archives past them.
pub fn discard_upto(spool: &Spool, seg: WalSegment, seg_size: WalSegSize) {
    let queue = spool.dir().join(PREFETCH_DIR);
    if !queue.exists() {
        return;
    }
    if let Ok(segno) = seg.segno(seg_size) {
        clean(&queue, segno, u64::MAX, seg_size);
    }
}
