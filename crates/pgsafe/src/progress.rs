//! Progress reporting: the library calls a [`Progress`] as it works; the CLI renders it (bar, log
//! lines, NDJSON). Every method has a no-op default, so an implementation overrides only what it
//! shows. Calls come from several worker threads at once: implementations must be cheap and
//! thread-safe (atomics, not a lock around terminal output per call).

/// Receives progress events. `Sync` because copy workers report concurrently.
pub trait Progress: Sync {
    /// A new phase begins (`"plan"`, `"copy"`, `"pg_control"`, `"sync"`, …).
    fn phase(&self, _name: &str) {}
    /// The work ahead: file count and bytes (uncompressed) of the plan being executed. A new
    /// plan starts a new count (restore verifies, then writes: each its own plan), so what is
    /// done is counted from zero again.
    fn plan(&self, _files: u64, _bytes: u64) {}
    /// A file is completely stored; `bytes` is its uncompressed size as stored.
    fn file_done(&self, _rel: &str, _bytes: u64) {}
    /// `n` more bytes were read (and stored); called often (once per read buffer).
    fn bytes(&self, _n: u64) {}
    /// Something worth telling the user that does not stop the work.
    fn warn(&self, _msg: &str) {}
    /// A fact the user should see before the work goes on (e.g. where a restore will write);
    /// shown even when progress is not.
    fn notice(&self, _msg: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Counting {
        bytes: AtomicU64,
        files: AtomicU64,
    }

    impl Progress for Counting {
        fn bytes(&self, n: u64) {
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
        fn file_done(&self, _rel: &str, _bytes: u64) {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn defaults_are_no_ops_and_overrides_work_across_threads() {
        let none: &dyn Progress = &NoProgress;
        none.phase("copy");
        none.plan(1, 2);
        none.file_done("base/1/1", 3);
        none.bytes(4);
        none.warn("x");

        let c = Counting::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        c.bytes(10);
                    }
                    c.file_done("f", 1000);
                });
            }
        });
        assert_eq!(c.bytes.load(Ordering::Relaxed), 4000);
        assert_eq!(c.files.load(Ordering::Relaxed), 4);
    }
}
