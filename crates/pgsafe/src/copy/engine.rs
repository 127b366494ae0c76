//! The copy engine: the work list, the workers taking items from it, the first error and the
//! cancel flag stopping them all, the syncer threads, the shared rate limit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{
    CopyError, CopyOptions, Ctx, FRAME_SIZE, Outcome, SizeChange, Split, SplitState, ToSync, Work,
    WorkerOut, lock, pages,
};
use crate::checksum::ChecksumAlgorithm;
use crate::fsutil::FsError;
use crate::page::BLCKSZ;
use crate::plan::{BackupPlan, RelPath};
use crate::progress::Progress;

impl<'a> Ctx<'a> {
    pub(super) fn new(
        plan: &'a BackupPlan,
        target: &'a Path,
        opts: &'a CopyOptions<'a>,
        progress: &'a dyn Progress,
    ) -> Ctx<'a> {
        // SHA-256 cannot be combined from ranges: such files are copied in one pass.
        let splittable = matches!(
            opts.checksum,
            ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::None
        );
        let split_size = opts.split_size.max(1);
        let ordered = !opts.compression.is_none();
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
            if splittable && f.size > split_size {
                let ranges: Vec<(u64, u64)> = (0..f.size.div_ceil(range_size))
                    .map(|k| {
                        let off = k * range_size;
                        (off, range_size.min(f.size - off))
                    })
                    .collect();
                for index in 0..ranges.len() {
                    items.push(Work::Range {
                        split: splits.len(),
                        index,
                    });
                }
                splits.push(Split {
                    file: f,
                    ordered,
                    state: Mutex::new(SplitState {
                        results: vec![None; ranges.len()],
                        ..SplitState::default()
                    }),
                    turn: Condvar::new(),
                    ranges,
                });
            } else {
                items.push(Work::Whole(i));
            }
        }
        Ctx {
            plan,
            target,
            opts,
            progress,
            items,
            splits,
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            throttle: opts.max_rate.filter(|r| *r > 0).map(Throttle::new),
            sync_tx: Mutex::new(None),
            pages: Mutex::new(pages::Collected::default()),
        }
    }

    /// True once any worker failed or the caller cancelled.
    pub(super) fn cancelled(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
            || self.opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn fail(&self, e: CopyError) {
        let mut slot = lock(&self.error);
        if slot.is_none() && !matches!(e, CopyError::Cancelled) {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    pub(super) fn take_error(&self) -> Option<CopyError> {
        lock(&self.error).take()
    }

    /// Hands a completed file to the syncer threads ([`SyncMode::PerFile`]); a no-op otherwise.
    pub(super) fn sync_later(&self, file: Arc<File>, path: PathBuf) -> Result<(), CopyError> {
        let tx = lock(&self.sync_tx).clone();
        if let Some(tx) = tx {
            // Blocks while the queue is full: at most SYNC_QUEUE files wait, open.
            if tx.send((file, path)).is_err() {
                return Err(CopyError::Cancelled);
            }
        }
        Ok(())
    }

    /// fsyncs the files workers completed, several at once, so that the waits of one file's
    /// journal commit and cache flush overlap with copying and with other files' (the file
    /// system batches concurrent fsyncs) instead of stalling a worker each time.
    pub(super) fn syncer(&self, rx: &Mutex<mpsc::Receiver<ToSync>>) {
        loop {
            let next = lock(rx).recv();
            let Ok((file, path)) = next else {
                return;
            };
            if self.failed.load(Ordering::Relaxed) {
                continue; // drain: the copy failed, nothing will be reported as stored
            }
            if let Err(e) = file.sync_data() {
                self.fail(FsError::new("fsync", path, e).into());
            }
        }
    }

    pub(super) fn worker(&self) -> WorkerOut {
        // A panicking worker stops the others too (one may be waiting for its frame's turn).
        struct StopOnPanic<'f>(&'f AtomicBool);
        impl Drop for StopOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
        }
        let _stop = StopOnPanic(&self.failed);
        let mut out = WorkerOut::default();
        let mut size = self.opts.buffer_size.max(4096);
        if self.opts.pages.is_some() {
            // Whole pages per read, so each page is checked in the buffer it was read into.
            size = size.next_multiple_of(BLCKSZ);
        }
        let mut buf = vec![0u8; size];
        while !self.cancelled() {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = self.items.get(i) else {
                break;
            };
            let result = match item {
                Work::Whole(f) => self.copy_whole(&self.plan.files[*f], &mut buf),
                Work::Range { split, index } => {
                    let split = &self.splits[*split];
                    if split.ordered {
                        self.copy_frame(split, *index, &mut buf)
                    } else {
                        self.copy_range(split, *index, &mut buf)
                    }
                }
            };
            match result {
                Ok(Outcome::Stored(f, planned)) => {
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
                Ok(Outcome::Vanished(rel)) => out.vanished.push(rel),
                Ok(Outcome::Pending) => {}
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
        }
        out
    }

    /// Keeps what the page checks of a file or range found.
    pub(super) fn pages_found(&self, rel: &RelPath, found: pages::Findings) {
        lock(&self.pages).parts.push((rel.clone(), found));
    }

    /// Accounts for `n` bytes read: progress, throttling, and the stop check.
    pub(super) fn after_read(&self, n: usize) -> Result<(), CopyError> {
        self.progress.bytes(n as u64);
        if let Some(t) = &self.throttle {
            t.take(n as u64, || self.cancelled());
        }
        if self.cancelled() {
            return Err(CopyError::Cancelled);
        }
        Ok(())
    }
}

/// A token bucket shared by the workers: `rate` bytes per second, bursts of up to 100 ms.
pub(super) struct Throttle {
    pub(super) rate: f64,
    /// When the bucket will be empty given what was taken so far (theoretical arrival time).
    pub(super) due: Mutex<Instant>,
}

impl Throttle {
    const BURST: Duration = Duration::from_millis(100);

    pub(super) fn new(rate: u64) -> Throttle {
        Throttle {
            rate: rate.max(1) as f64,
            due: Mutex::new(Instant::now()),
        }
    }

    /// Takes `n` bytes, sleeping while the bucket is overdrawn (waking early when `stop()`).
    fn take(&self, n: u64, stop: impl Fn() -> bool) {
        let until = self.reserve(n, Instant::now());
        loop {
            let now = Instant::now();
            if until <= now || stop() {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    /// Books `n` bytes at time `now`; returns when the caller may go on.
    pub(super) fn reserve(&self, n: u64, now: Instant) -> Instant {
        let mut due = lock(&self.due);
        let base = (*due).max(now.checked_sub(Self::BURST).unwrap_or(now));
        *due = base + Duration::from_secs_f64(n as f64 / self.rate);
        *due
    }
}
