//! A decorator retrying operations that failed with a transient error ([`ErrorKind::Transient`]:
//! a timeout, throttling, a reset connection), waiting an exponentially growing, randomly
//! jittered time between attempts ("full jitter": a random wait up to the exponential bound, so
//! many clients that failed together do not retry together).
//!
//! Whole-object operations are retried as a whole. A put is safe to retry because puts are
//! write-once: an attempt that stored the object but lost the answer is followed by one that
//! finds the same bytes ([`super::PutOutcome::AlreadyPresent`]). Streams cannot be replayed:
//! opening a reader or writer is retried, what happens on the stream is the caller's to retry.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::Result;
use super::name::ObjectName;
use super::{Backend, ObjectInfo, ObjectReader, ObjectWriter, PutOptions, PutOutcome};

/// How often and how long to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// Bound of the first wait; doubled for each further one.
    pub first_delay: Duration,
    /// Bound of any one wait.
    pub max_delay: Duration,
    /// The waits of one operation add up to at most this; the error is returned when the next
    /// wait would exceed it.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            budget: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry), jittered by `unit` in
    /// `[0, 1)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let bound = self
            .first_delay
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        bound.mul_f64(unit.clamp(0.0, 1.0))
    }
}

type Sleep = Arc<dyn Fn(Duration) + Send + Sync>;

/// Retries `inner`'s transient failures according to a [`RetryPolicy`].
pub struct Retry<B> {
    inner: B,
    policy: RetryPolicy,
    sleep: Sleep,
}

impl<B: Backend> Retry<B> {
    pub fn new(inner: B, policy: RetryPolicy) -> Retry<B> {
        Retry {
            inner,
            policy,
            sleep: Arc::new(std::thread::sleep),
        }
    }

    /// Waits with `sleep` instead of sleeping the thread (tests count the waits).
    pub fn with_sleep(mut self, sleep: impl Fn(Duration) + Send + Sync + 'static) -> Retry<B> {
        self.sleep = Arc::new(sleep);
        self
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn run<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut waited = Duration::ZERO;
        let mut retry = 0u32;
        loop {
            match op() {
                Err(e)
                    if e.kind().is_transient()
                        && retry.saturating_add(1) < self.policy.attempts =>
                {
                    let d = self.policy.delay(retry, fastrand::f64());
                    match waited.checked_add(d) {
                        Some(total) if total <= self.policy.budget => waited = total,
                        _ => return Err(e),
                    }
                    (self.sleep)(d);
                    retry += 1;
                }
                r => return r,
            }
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for Retry<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Backend for Retry<B> {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        self.run(|| self.inner.list(prefix))
    }

    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<super::Entry>> {
        self.run(|| self.inner.list_entries(prefix))
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        self.run(|| self.inner.size(name))
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        self.run(|| self.inner.read_range(name, offset, len))
    }

    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        self.run(|| self.inner.writer(name, opts))
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        self.run(|| self.inner.delete(name))
    }

    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        // Idempotent: a retry deletes what the failed attempt left.
        self.run(|| self.inner.delete_prefix(prefix))
    }

    fn sync_all(&self) -> Result<()> {
        self.run(|| self.inner.sync_all())
    }

    fn create_folder(&self, name: &ObjectName, mode: u32) -> Result<()> {
        self.run(|| self.inner.create_folder(name, mode))
    }

    fn open_file(&self, name: &ObjectName) -> Option<Result<std::fs::File>> {
        self.run(|| self.inner.open_file(name).transpose())
            .transpose()
    }

    fn get(&self, name: &ObjectName, limit: u64) -> Result<Vec<u8>> {
        self.run(|| self.inner.get(name, limit))
    }

    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(|| self.inner.get_range(name, offset, len))
    }

    fn put(&self, name: &ObjectName, bytes: &[u8], opts: PutOptions) -> Result<PutOutcome> {
        self.run(|| self.inner.put(name, bytes, opts))
    }
}
