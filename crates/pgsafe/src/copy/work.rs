//! The copy's work list for the pool: a whole file per item, or one range of a split file, and
//! what every worker shares (the target, the stop state, the rate limit, the page findings).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{
    CopiedFile, CopyError, CopyOptions, FRAME_SIZE, SizeChange, Writer, file::Outcome, pages,
};
use crate::checksum::ChecksumAlgorithm;
use crate::page::{BLCKSZ, PageChecksumReport};
use crate::plan::{BackupPlan, PlanFile, RelPath};
use crate::pool::{self, Halt, Parts, lock};
use crate::progress::Progress;
use crate::storage::ratelimit::{SystemClock, TokenBucket};
use crate::storage::{Backend, ObjectName};

/// One unit of work: a whole file, or one range of a split file.
pub(super) enum Work {
    Whole(usize),
    /// A relation file of an incremental backup ([`super::incremental`]).
    Incremental(usize),
    Range {
        split: usize,
        index: usize,
    },
}

/// A file copied as ranges, and what its ranges have done so far.
pub(super) struct Split<'p, 's> {
    pub file: &'p PlanFile,
    /// (offset, length) of each range.
    pub ranges: Vec<(u64, u64)>,
    /// Each range is one frame appended in range order (compressed, or a backend without local
    /// files); otherwise ranges are written in place with positioned writes.
    pub ordered: bool,
    /// The ranges' results, handed to the worker finishing the last one.
    pub parts: Parts<RangeDone>,
    pub state: Mutex<SplitState<'s>>,
    /// Ordered: signalled when `next_write` advances.
    pub turn: Condvar,
}

#[derive(Default)]
pub(super) struct SplitState<'s> {
    /// The object being written, created by the first range that read something.
    pub writer: Option<Writer<'s>>,
    pub mtime: Option<i64>,
    /// Ordered: the range whose frame is appended next.
    pub next_write: usize,
    /// Ordered: a short or vanished range was reached; later frames are dropped.
    pub ended: bool,
    /// Ordered: bytes appended to the object.
    pub stored: u64,
}

/// What one range read.
#[derive(Clone, Copy)]
pub(super) struct RangeDone {
    pub bytes: u64,
    pub crc: u32,
    pub vanished: bool,
}

impl RangeDone {
    pub const VANISHED: RangeDone = RangeDone {
        bytes: 0,
        crc: 0,
        vanished: true,
    };
}

/// What a worker produced.
#[derive(Default)]
pub(super) struct WorkerOut {
    pub files: Vec<CopiedFile>,
    pub vanished: Vec<RelPath>,
    pub resized: Vec<SizeChange>,
}

/// Shared state of one copy.
pub(super) struct Ctx<'a> {
    pub plan: &'a BackupPlan,
    pub store: &'a dyn Backend,
    pub opts: &'a CopyOptions<'a>,
    pub progress: &'a dyn Progress,
    pub halt: &'a Halt<'a, CopyError>,
    pub items: Vec<Work>,
    pub splits: Vec<Split<'a, 'a>>,
    throttle: Option<TokenBucket>,
    /// What the page checks of each file or range found.
    pages: Mutex<pages::Collected>,
    /// Bytes read from the source files.
    bytes_read: AtomicU64,
}

impl<'a> Ctx<'a> {
    pub fn new(
        plan: &'a BackupPlan,
        store: &'a dyn Backend,
        opts: &'a CopyOptions<'a>,
        progress: &'a dyn Progress,
        halt: &'a Halt<'a, CopyError>,
    ) -> Ctx<'a> {
        // SHA-256 cannot be combined from ranges: such files are copied in one pass.
        let splittable = matches!(
            opts.checksum,
            ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::None
        );
        let split_size = opts.split_size.max(1);
        // Positioned writes need the object's file: a backend keeps `open_file` and
        // `ObjectWriter::local_file` together (storage::conformance, local_files), so asking for
        // any object tells (a local backend answers even for a missing one).
        let ordered = !opts.compression.is_none()
            || plan.files.iter().all(|f| f.size <= split_size)
            || ObjectName::from_rel_path(&plan.control_file.rel_path)
                .map_or(true, |n| store.open_file(&n).is_none());
        let range_size = if ordered {
            split_size.min(FRAME_SIZE)
        } else {
            split_size
        };
        // Page checks need every range to start on a page boundary.
        let range_size = if opts.pages.is_some() {
            range_size.next_multiple_of(BLCKSZ as u64)
        } else {
            range_size
        };
        let mut items = Vec::with_capacity(plan.files.len());
        let mut splits = Vec::new();
        for (i, f) in plan.files.iter().enumerate() {
            if opts
                .incremental
                .is_some_and(|inc| inc.candidate(&f.rel_path, f.size))
            {
                items.push(Work::Incremental(i));
            } else if splittable && f.size > split_size {
                let ranges = pool::ranges(f.size, range_size);
                for index in 0..ranges.len() {
                    items.push(Work::Range {
                        split: splits.len(),
                        index,
                    });
                }
                splits.push(Split {
                    file: f,
                    ordered,
                    parts: Parts::new(ranges.len()),
                    state: Mutex::new(SplitState::default()),
                    turn: Condvar::new(),
                    ranges,
                });
            } else {
                items.push(Work::Whole(i));
            }
        }
        Ctx {
            plan,
            store,
            opts,
            progress,
            halt,
            items,
            splits,
            throttle: opts
                .max_rate
                .filter(|r| *r > 0)
                .map(|r| TokenBucket::new(r, Arc::new(SystemClock::default()))),
            pages: Mutex::new(pages::Collected::default()),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// Bytes read from the data directory's files so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// A worker's state: what it produced, and its read buffer.
    pub fn worker_state(&self) -> (WorkerOut, Vec<u8>) {
        let mut size = self.opts.buffer_size.max(4096);
        if self.opts.pages.is_some() || self.opts.incremental.is_some() {
            // Whole pages per read, so each page is checked (or scanned for its LSN) in the
            // buffer it was read into.
            size = size.next_multiple_of(BLCKSZ);
        }
        (WorkerOut::default(), vec![0u8; size])
    }

    /// Copies one item; a file it completes goes to `out` and to the progress.
    pub fn copy_item(
        &self,
        item: &Work,
        out: &mut WorkerOut,
        buf: &mut [u8],
    ) -> Result<(), CopyError> {
        let outcome = match item {
            Work::Whole(f) => self.copy_whole(&self.plan.files[*f], buf)?,
            Work::Incremental(f) => match self.opts.incremental {
                Some(inc) => self.copy_incremental(&self.plan.files[*f], inc, buf)?,
                None => self.copy_whole(&self.plan.files[*f], buf)?,
            },
            Work::Range { split, index } => {
                let split = &self.splits[*split];
                if split.ordered {
                    self.copy_frame(split, *index, buf)?
                } else {
                    self.copy_range(split, *index, buf)?
                }
            }
        };
        match outcome {
            Outcome::Stored(f, planned) => {
                self.progress.file_done(&f.rel_path.to_string(), f.size);
                if f.size != planned {
                    out.resized.push(SizeChange {
                        rel_path: f.rel_path.clone(),
                        planned,
                        stored: f.size,
                    });
                }
                out.files.push(f);
            }
            Outcome::StoredIncremental(f, shrunk) => {
                self.progress.file_done(&f.rel_path.to_string(), f.size);
                out.resized.extend(shrunk);
                out.files.push(f);
            }
            Outcome::Vanished(rel) => out.vanished.push(rel),
            Outcome::Pending => {}
        }
        Ok(())
    }

    /// Keeps what the page checks of a file or range found.
    pub fn pages_found(&self, rel: &RelPath, found: pages::Findings) {
        lock(&self.pages).parts.push((rel.clone(), found));
    }

    /// The page checks' findings, merged (`None` when pages were not checked).
    pub fn page_report(&self) -> Option<PageChecksumReport> {
        let o = self.opts.pages?;
        let collected = std::mem::take(&mut *lock(&self.pages));
        Some(collected.into_report(o.relseg_size))
    }

    /// Accounts for `n` bytes read: progress, throttling, and the stop check.
    pub fn after_read(&self, n: usize) -> Result<(), CopyError> {
        self.progress.bytes(n as u64);
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(t) = &self.throttle {
            // In pieces of at most one burst, so a stop is seen while waiting.
            let mut left = n as u64;
            while left > 0 && !self.halt.stopped() {
                let piece = left.min(t.piece() as u64);
                t.take(piece);
                left -= piece;
            }
        }
        if self.halt.stopped() {
            return Err(CopyError::Cancelled);
        }
        Ok(())
    }
}
