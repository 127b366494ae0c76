//! A decorator limiting the bytes read and written per second, across all threads using one
//! backend (the operator's limit on what a backup may take from the disks or the network).
//!
//! A token bucket kept as the time it will be empty ("theoretical arrival time"): taking `n`
//! bytes moves that time `n / rate` seconds on and waits until it is at most a burst (100 ms of
//! traffic) ahead of now. Large reads and writes are cut into pieces of at most one burst so
//! the flow stays smooth.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::Result;
use super::name::ObjectName;
use super::{Backend, ObjectInfo, ObjectReader, ObjectWriter, PutOptions, PutOutcome};

/// Traffic allowed at once, as time at the limit.
const BURST: Duration = Duration::from_millis(100);
/// Smallest piece a read or write is cut into (very low rates still move whole blocks).
const MIN_PIECE: u64 = 8 * 1024;

/// The time source of a bucket (tests use one whose sleeps only advance its clock).
pub trait Clock: Send + Sync {
    /// Time since some fixed start.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

/// The monotonic clock and real sleeps.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A token bucket of `rate` bytes per second, shared by threads.
pub struct TokenBucket {
    rate: u64,
    /// When the bucket will be empty given what was taken so far.
    due: Mutex<Option<Duration>>,
    clock: Arc<dyn Clock>,
}

impl TokenBucket {
    /// `rate` bytes per second (at least 1).
    pub fn new(rate: u64, clock: Arc<dyn Clock>) -> TokenBucket {
        TokenBucket {
            rate: rate.max(1),
            due: Mutex::new(None),
            clock,
        }
    }

    /// The largest piece one read or write takes at once.
    pub fn piece(&self) -> usize {
        let burst = self.rate / 10;
        usize::try_from(burst.max(MIN_PIECE)).unwrap_or(usize::MAX)
    }

    /// Takes `n` bytes, waiting while the bucket is overdrawn.
    pub fn take(&self, n: u64) {
        if n == 0 {
            return;
        }
        let now = self.clock.now();
        let wait = {
            let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
            let floor = now.saturating_sub(BURST);
            let start = due.map_or(floor, |d| d.max(floor));
            let cost = Duration::from_secs_f64(n as f64 / self.rate as f64);
            let next = start.saturating_add(cost);
            *due = Some(next);
            next.saturating_sub(now)
        };
        if !wait.is_zero() {
            self.clock.sleep(wait);
        }
    }
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBucket")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Limits `inner`'s reads and writes to a rate in bytes per second.
#[derive(Debug)]
pub struct RateLimit<B> {
    inner: B,
    bucket: Arc<TokenBucket>,
}

impl<B: Backend> RateLimit<B> {
    /// At most `bytes_per_second` (at least 1) read plus written.
    pub fn new(inner: B, bytes_per_second: u64) -> RateLimit<B> {
        RateLimit::with_clock(inner, bytes_per_second, Arc::new(SystemClock::default()))
    }

    pub fn with_clock(inner: B, bytes_per_second: u64, clock: Arc<dyn Clock>) -> RateLimit<B> {
        RateLimit {
            inner,
            bucket: Arc::new(TokenBucket::new(bytes_per_second, clock)),
        }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend> Backend for RateLimit<B> {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }

    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<super::Entry>> {
        self.inner.list_entries(prefix)
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        self.inner.size(name)
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        let inner = self.inner.read_range(name, offset, len)?;
        Ok(Box::new(Limited {
            inner,
            bucket: &self.bucket,
        }))
    }

    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        let inner = self.inner.writer(name, opts)?;
        Ok(Box::new(Limited {
            inner,
            bucket: &self.bucket,
        }))
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        self.inner.delete(name)
    }

    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        self.inner.delete_prefix(prefix)
    }

    fn sync_all(&self) -> Result<()> {
        self.inner.sync_all()
    }

    fn create_folder(&self, name: &ObjectName, mode: u32) -> Result<()> {
        self.inner.create_folder(name, mode)
    }

    // No open_file: a kernel copy would bypass the limit.
}

/// A reader or writer taking tokens for every byte it moves.
struct Limited<'a, T> {
    inner: T,
    bucket: &'a TokenBucket,
}

impl<T: Read> Read for Limited<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let cap = buf.len().min(self.bucket.piece());
        let n = self.inner.read(&mut buf[..cap])?;
        self.bucket.take(n as u64);
        Ok(n)
    }
}

impl<T: Write> Write for Limited<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let cap = buf.len().min(self.bucket.piece());
        self.bucket.take(cap as u64);
        self.inner.write(&buf[..cap])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'a> ObjectWriter for Limited<'a, Box<dyn ObjectWriter + 'a>> {
    fn finish(self: Box<Self>) -> Result<PutOutcome> {
        self.inner.finish()
    }
}
