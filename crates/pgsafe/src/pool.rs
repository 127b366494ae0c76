//! The one worker pool of the commands that work in parallel: backup's copy, verify and
//! restore (its writers and its fsync pass).
//!
//! * **Scheduling.** The caller's work list is fixed before the workers start; scoped threads
//!   take items from it through one atomic index, in list order (callers put the largest first,
//!   and the ranges of one file in file order, which the ordered compressed copy relies on: the
//!   worker holding the range that is due has always taken it already). No producer thread, no
//!   channel, no queue memory beyond the list.
//! * **Memory.** Each worker builds its state once (its read buffer, its output) and reuses it
//!   for every item: memory is bounded by the number of workers, not by the work.
//! * **Ranges.** [`ranges`] cuts a large item (a file) into ranges that different workers work
//!   on at once; [`Parts`] collects their results and hands them, in range order, to the worker
//!   that finishes the last one.
//! * **Stopping.** [`Halt`] is the run's shared stop state: the first error recorded wins and
//!   stops every worker before its next item (callers also check [`Halt::stopped`] between
//!   buffers); later errors are dropped (a caller that must report every problem, as verify
//!   does, keeps them in its worker state and returns `Ok`). The caller's cancel flag (Ctrl-C)
//!   stops the run the same way and gives [`Stopped::Cancelled`].
//! * **Panics.** A worker that panics stops the others (one may be waiting for another's
//!   result), and once every worker has ended its panic is passed on to the caller with its own
//!   payload ([`std::panic::resume_unwind`]): never swallowed, never a hang.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

#[cfg(test)]
mod tests;

/// Why a run stopped before its work was done.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped<E> {
    /// The first error a worker (or a helper thread of the caller) recorded.
    Failed(E),
    /// The caller's cancel flag was set.
    Cancelled,
}

/// The shared stop state of one run: the caller's cancel flag, the failed flag and the
/// first-error slot.
pub struct Halt<'c, E> {
    cancel: Option<&'c AtomicBool>,
    failed: AtomicBool,
    error: Mutex<Option<E>>,
}

impl<'c, E> Halt<'c, E> {
    pub fn new(cancel: Option<&'c AtomicBool>) -> Self {
        Halt {
            cancel,
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    /// True once anything failed or the caller cancelled: work in progress should stop.
    pub fn stopped(&self) -> bool {
        self.failed() || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// True once an error was recorded (or a worker panicked); the caller's cancel flag aside.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Records `e` unless an error was recorded before, and stops the run. The slot is filled
    /// before the flag is set, so an error that only follows from the stop (another worker's
    /// "cancelled") never takes the place of the one that caused it.
    pub fn fail(&self, e: E) {
        lock(&self.error).get_or_insert(e);
        self.failed.store(true, Ordering::Relaxed);
    }

    /// The run's outcome so far: the first error, else whether it was cancelled. Takes the
    /// error out of the slot.
    pub fn check(&self) -> Result<(), Stopped<E>> {
        if let Some(e) = lock(&self.error).take() {
            return Err(Stopped::Failed(e));
        }
        if self.stopped() {
            return Err(Stopped::Cancelled);
        }
        Ok(())
    }
}

/// Runs `work` on every item of `items` on up to `jobs` scoped threads (at least one, at most
/// one per item). Each worker calls `init` once for its state and passes it to every item it
/// takes. An `Err` from `work` is recorded in `halt` ([`Halt::fail`]) and stops the run.
/// Returns the workers' states, or why the run stopped; a worker's panic is re-raised here.
pub fn run<T, S, E>(
    jobs: usize,
    items: &[T],
    halt: &Halt<'_, E>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> Result<(), E> + Sync,
) -> Result<Vec<S>, Stopped<E>>
where
    T: Sync,
    S: Send,
    E: Send,
{
    let next = AtomicUsize::new(0);
    let worker = || {
        let _stop = StopOnPanic(&halt.failed);
        let mut state = init();
        while !halt.stopped() {
            let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            if let Err(e) = work(&mut state, item) {
                halt.fail(e);
                break;
            }
        }
        state
    };
    let jobs = jobs.clamp(1, items.len().max(1));
    let joined: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs).map(|_| s.spawn(worker)).collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut states = Vec::with_capacity(joined.len());
    for j in joined {
        match j {
            Ok(state) => states.push(state),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
    halt.check()?;
    Ok(states)
}

/// Sets the flag if the thread unwinds (a worker's panic stops the other workers).
struct StopOnPanic<'f>(&'f AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// `(offset, length)` of each range of an item of `size` bytes cut into ranges of `range`
/// bytes (the last one shorter): together they cover `0..size` exactly once, in order.
pub fn ranges(size: u64, range: u64) -> Vec<(u64, u64)> {
    let range = range.max(1);
    (0..size.div_ceil(range))
        .map(|k| {
            let off = k * range;
            (off, range.min(size - off))
        })
        .collect()
}

/// What the ranges of one item have produced so far.
pub struct Parts<R> {
    state: Mutex<(Vec<Option<R>>, usize)>,
}

impl<R> Parts<R> {
    pub fn new(count: usize) -> Self {
        Parts {
            state: Mutex::new(((0..count).map(|_| None).collect(), 0)),
        }
    }

    /// Records range `index`'s result. The call that records the last one gets every result,
    /// in range order; the others get `None`.
    pub fn done(&self, index: usize, r: R) -> Option<Vec<R>> {
        let mut st = lock(&self.state);
        let (results, done) = &mut *st;
        if results.is_empty() {
            return None; // completed before (each range reports once)
        }
        if let Some(slot) = results.get_mut(index) {
            if slot.replace(r).is_none() {
                *done += 1;
            }
        }
        if *done < results.len() {
            return None;
        }
        Some(std::mem::take(results).into_iter().flatten().collect())
    }
}

/// Locks `m`; a worker that panicked holding it is re-raised by [`run`], so the data is not
/// used after that.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
