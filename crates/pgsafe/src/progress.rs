//! Progress reporting: the library calls a [`Progress`] as it works; the CLI renders it (bar, log
//! lines, NDJSON). Every method has a no-op default, so an implementation overrides only what it
//! shows. Calls come from several worker threads at once: implementations must be cheap and
//! thread-safe (atomics, not a lock around terminal output per call).
//!
//! The contract every command keeps (asserted for real backups, verifies and restores by
//! `tests/progress_contract.rs`):
//! - work is reported in [`Phase`]s; a phase's counters (files, bytes) start at zero when it
//!   begins, and its totals are unknown until [`Progress::plan`] names them;
//! - a phase that reports files or bytes calls `plan` first, and its totals include everything it
//!   then reports (WAL segments, `pg_control`, label files), so done never exceeds total;
//! - bytes are the uncompressed sizes of the files as the backup's manifest lists them.
//!
//! One file count for a backup, the `files` of every summary (backup's `pgsafe.json` and JSON
//! summary, verify's and restore's reports): the files of the data directory (and its
//! tablespaces) stored in the backup, `global/pg_control` included. Not counted: the WAL (its
//! own count: segments), the files pgsafe writes itself (`backup_label`, `tablespace_map`,
//! `backup_manifest`, `pgsafe.json`; [`crate::layout::OWN_FILES`]), directories. Backup's
//! `copy` and `pg_control` phases add up to it, as do restore's `restore` and `pg_control`.
//!
//! [`Counters`] implements the per-phase counting for renderers.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A step of a command. Each command goes through some of these, in its own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Checks before anything is written (connection, server, target).
    Preflight,
    /// Listing the data directory.
    Plan,
    /// Copying the data directory's files (backup).
    Copy,
    /// Writing `global/pg_control`, last, so a partial copy never looks startable.
    PgControl,
    /// Telling the server the backup has ended.
    Stop,
    /// Copying the WAL the backup needs (backup).
    Wal,
    /// Writing the backup manifest and `pgsafe.json` (backup).
    Manifest,
    /// Checking a stored backup's files and WAL against its manifest.
    Verify,
    /// Writing a backup's files into a data directory (restore).
    Restore,
    /// Writing `backup_label`, `tablespace_map` and the recovery settings (restore).
    Label,
    /// Making what was written durable.
    Sync,
    /// Starting a restored server (restore test).
    Start,
    /// Checking a restored server's indexes and tables (restore test).
    Amcheck,
}

impl Phase {
    /// The phase's stable name, as the log and JSON renderings show it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Plan => "plan",
            Phase::Copy => "copy",
            Phase::PgControl => "pg_control",
            Phase::Stop => "stop",
            Phase::Wal => "wal",
            Phase::Manifest => "manifest",
            Phase::Verify => "verify",
            Phase::Restore => "restore",
            Phase::Label => "label",
            Phase::Sync => "sync",
            Phase::Start => "start",
            Phase::Amcheck => "amcheck",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Receives progress events. `Sync` because copy workers report concurrently.
pub trait Progress: Sync {
    /// A new phase begins: its counters start at zero, its totals are unknown.
    fn phase(&self, _phase: Phase) {}
    /// The work of the current phase: files and bytes (uncompressed). Everything the phase then
    /// reports through [`Progress::file_done`] and [`Progress::bytes`] is included.
    fn plan(&self, _files: u64, _bytes: u64) {}
    /// A file is completely done; `bytes` is its uncompressed size.
    fn file_done(&self, _rel: &str, _bytes: u64) {}
    /// `n` more bytes were done; called often (once per read buffer).
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

/// What a phase has done so far, and its totals once planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// The phase counted, `None` before the first phase.
    pub phase: Option<Phase>,
    pub files: u64,
    pub bytes: u64,
    /// `None` until the phase calls [`Progress::plan`].
    pub total_files: Option<u64>,
    pub total_bytes: Option<u64>,
}

/// Per-phase counters for a renderer: [`Counters::phase`] resets them, [`Counters::plan`] sets the
/// totals. Lock-free on the hot path ([`Counters::bytes`]).
#[derive(Debug, Default)]
pub struct Counters {
    phase: Mutex<Option<Phase>>,
    files: AtomicU64,
    bytes: AtomicU64,
    /// `u64::MAX` while unknown.
    total_files: AtomicU64,
    total_bytes: AtomicU64,
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            total_files: AtomicU64::new(u64::MAX),
            total_bytes: AtomicU64::new(u64::MAX),
            ..Counters::default()
        }
    }

    pub fn phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Some(phase);
        self.files.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.total_files.store(u64::MAX, Ordering::Relaxed);
        self.total_bytes.store(u64::MAX, Ordering::Relaxed);
    }

    pub fn plan(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> Counts {
        let known = |v: u64| (v != u64::MAX).then_some(v);
        Counts {
            phase: *self.phase.lock().unwrap_or_else(|p| p.into_inner()),
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            total_files: known(self.total_files.load(Ordering::Relaxed)),
            total_bytes: known(self.total_bytes.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        none.phase(Phase::Copy);
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

    #[test]
    fn a_phase_resets_the_counts_and_forgets_the_totals() {
        let c = Counters::new();
        assert_eq!(c.get().phase, None);
        assert_eq!(c.get().total_bytes, None);
        c.phase(Phase::Copy);
        c.plan(2, 100);
        c.bytes(60);
        c.file_done();
        assert_eq!(
            c.get(),
            Counts {
                phase: Some(Phase::Copy),
                files: 1,
                bytes: 60,
                total_files: Some(2),
                total_bytes: Some(100)
            }
        );
        c.phase(Phase::Wal);
        assert_eq!(
            c.get(),
            Counts {
                phase: Some(Phase::Wal),
                files: 0,
                bytes: 0,
                total_files: None,
                total_bytes: None
            }
        );
        // A planned total of zero is known, not unknown.
        c.plan(0, 0);
        assert_eq!(c.get().total_files, Some(0));
    }

    #[test]
    fn names_are_stable() {
        let all = [
            Phase::Preflight,
            Phase::Plan,
            Phase::Copy,
            Phase::PgControl,
            Phase::Stop,
            Phase::Wal,
            Phase::Manifest,
            Phase::Verify,
            Phase::Restore,
            Phase::Label,
            Phase::Sync,
            Phase::Start,
            Phase::Amcheck,
        ];
        let names: Vec<String> = all.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names.join(" "),
            "preflight plan copy pg_control stop wal manifest verify restore label sync start amcheck"
        );
    }
}
