//! `archive-push --async`: a detached background pusher that keeps pushing the WAL waiting in
//! `pg_wal/archive_status` between PostgreSQL's calls of `archive_command`.
//!
//! Look-ahead ([`super::lookahead`]) pushes ahead only inside a call: PostgreSQL's archiver
//! waits for each call (src/backend/postmaster/pgarch.c), so the cores idle while it works off
//! the acknowledgements of a batch and while the last files of a batch finish. The background
//! pusher ([`run`]) is a process of its own, one per `pg_wal` folder (a lock in the spool), that
//! pushes the `.ready` files in the archiver's order on a few threads and records each one
//! durably stored as an acknowledgement in the spool — the same record, made under the same
//! conditions, as a look-ahead push makes ([`super::lookahead`]'s `push_ahead`: stored
//! durably, the local file's stamp unchanged across the push). It exits once nothing has been
//! waiting for a moment ([`PusherOptions::idle_exit`]).
//!
//! A call ([`push_async`]) never acknowledges a file the pusher has not durably stored: it
//! returns 0 only from an acknowledgement checked as every acknowledgement is
//! ([`super::spool::Spool::take_ack`], the object still in the repository), or from pushing
//! the file itself. It asks the pusher for its file (`async/want/<file>`), starts the pusher
//! when none runs, and waits for the acknowledgement; when the pusher reports that it could
//! not store the file (`async/error/<file>.json`), or does not store it within
//! [`PusherOptions::wait_max`], the call pushes the file itself, as without `--async`, and
//! reports that push's result (so a failure reaches PostgreSQL's log and `info` the same way).
//! A pusher killed at any point leaves at most a file stored without its record (pushed again
//! later, found stored) and never a record without its object.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fsutil::{FsError, IoContext};
use crate::repo::Registration;
use crate::storage::{Backend, Ident};

use super::ArchiveFile;
use super::lookahead::{self, Acknowledged, LookAhead, PushReport};
use super::push::PushOptions;
use super::spool::{Binding, Spool, SpoolError, scan_backlog};

/// The pusher's folder in the spool: `pusher.lock`, `want/`, `error/`.
const ASYNC_DIR: &str = "async";
const WANT_DIR: &str = "want";
const ERROR_DIR: &str = "error";
const LOCK_FILE: &str = "pusher.lock";
/// A file the pusher failed to store is tried again after this long (or when a call wants it).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often an idle pusher looks for new `.ready` files.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How often a waiting call looks for its acknowledgement (and, every second, starts a pusher
/// in case the one it waits for has exited or died).
const CALL_POLL: Duration = Duration::from_millis(2);
const RESTART_EVERY: Duration = Duration::from_secs(1);
/// How often the pusher writes the archive status (`status.json`).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How the background pusher works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PusherOptions {
    /// Files pushed at once.
    pub parallel: usize,
    /// The pusher exits when it found nothing to push for this long.
    pub idle_exit: Duration,
    /// A call waits this long for the pusher to store its file before pushing it itself.
    pub wait_max: Duration,
    /// The queue limit (for the status `check` and `metrics` read).
    pub queue_max: Option<u64>,
}

impl Default for PusherOptions {
    fn default() -> PusherOptions {
        PusherOptions {
            parallel: lookahead::DEFAULT_PARALLEL,
            idle_exit: Duration::from_secs(3),
            wait_max: Duration::from_secs(60),
            queue_max: None,
        }
    }
}

/// How a pusher ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PusherEnd {
    /// Another pusher holds the lock of this `pg_wal`: nothing was done.
    AlreadyRunning,
    /// Nothing waited for [`PusherOptions::idle_exit`].
    Idle { stored: usize, failed: usize },
}

/// `pg_wal/pgsafe_archive/async`, created.
fn async_dir(spool: &Spool) -> Result<PathBuf, FsError> {
    spool.sub(ASYNC_DIR)
}

fn record(dir: &Path, sub: &str, file: &ArchiveFile) -> PathBuf {
    dir.join(sub).join(file.to_string())
}

/// What a failed background push leaves for the call waiting on the file.
#[derive(serde::Serialize, serde::Deserialize)]
struct ErrorRecord {
    file: String,
    error: String,
}

/// Runs the background pusher of the `pg_wal` folder `wal_dir` until it is idle (see the
/// module's documentation). `repo` is the repository's path (what acknowledgements are bound
/// to); `backend` is that repository's storage.
pub fn run(
    backend: &dyn Backend,
    repo: &Path,
    cluster: &Ident,
    reg: &Registration,
    wal_dir: &Path,
    opts: &PushOptions,
    po: &PusherOptions,
) -> Result<PusherEnd, SpoolError> {
    let spool = Spool::of_wal_dir(wal_dir);
    let dir = async_dir(&spool)?;
    let lock_path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .ctx("open", &lock_path)?;
    // Held until this process exits (a killed pusher releases it with its descriptors).
    use nix::fcntl::{Flock, FlockArg};
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(PusherEnd::AlreadyRunning),
        Err((_, e)) => return Err(FsError::new("lock", &lock_path, e.into()).into()),
    };
    // Who holds it, for a DBA looking (and the tests): not used to decide anything.
    let _ = lock.set_len(0);
    let _ = writeln!(lock, "{}", std::process::id());
    for sub in [WANT_DIR, ERROR_DIR] {
        spool.sub(&format!("{ASYNC_DIR}/{sub}"))?;
    }
    let binding = Binding::new(repo, cluster, reg.system_identifier);
    let state = Mutex::new(State::default());
    let threads = po.parallel.max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut idle_since: Option<Instant> = None;
                loop {
                    let next = lock_state(&state).next(&spool, &dir, po);
                    let Some((file, path)) = next else {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if lock_state(&state).in_flight.is_empty()
                            && since.elapsed() >= po.idle_exit
                        {
                            return;
                        }
                        std::thread::sleep(IDLE_POLL);
                        continue;
                    };
                    idle_since = None;
                    let r = lookahead::push_ahead(
                        backend, &spool, &binding, cluster, reg, &file, &path, opts,
                    );
                    lock_state(&state).finish(&dir, &file, r);
                }
            });
        }
    });
    let st = lock_state(&state);
    Ok(PusherEnd::Idle {
        stored: st.stored,
        failed: st.failed_count,
    })
}

/// The pusher's bookkeeping, shared by its threads.
#[derive(Default)]
struct State {
    /// Files to push, in the archiver's order (refilled from `archive_status` when empty).
    queue: VecDeque<ArchiveFile>,
    in_flight: HashSet<String>,
    /// Stored by this pusher (its acknowledgement may already be consumed while PostgreSQL
    /// has not yet marked the file `.done`: not pushed again unless a call wants it).
    done: HashSet<String>,
    /// Failed, and when.
    failed: HashMap<String, Instant>,
    /// When `archive_status` was last listed (an idle pusher lists it every [`IDLE_POLL`],
    /// not once per thread and poll).
    scanned: Option<Instant>,
    /// When the status was last written.
    status_at: Option<Instant>,
    stored: usize,
    failed_count: usize,
}

fn lock_state(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// The next file to push: one a call waits for first, else the next `.ready` one.
    fn next(
        &mut self,
        spool: &Spool,
        dir: &Path,
        po: &PusherOptions,
    ) -> Option<(ArchiveFile, PathBuf)> {
        if let Ok(rd) = fs::read_dir(dir.join(WANT_DIR)) {
            let mut wanted: Vec<ArchiveFile> = rd
                .flatten()
                .filter_map(|e| ArchiveFile::parse(&e.file_name().to_string_lossy()).ok())
                .collect();
            wanted.sort_by_key(|f| (!matches!(f, ArchiveFile::History(_)), f.to_string()));
            for f in wanted {
                let name = f.to_string();
                let _ = fs::remove_file(dir.join(WANT_DIR).join(&name));
                if self.in_flight.contains(&name) || spool.has_ack(&f) {
                    continue;
                }
                self.queue.retain(|q| *q != f);
                return Some(self.take(spool, f));
            }
        }
        if self.queue.is_empty() && self.scanned.is_none_or(|t| t.elapsed() >= IDLE_POLL) {
            self.scanned = Some(Instant::now());
            let backlog = scan_backlog(spool.wal_dir()).ok()?;
            if self.status_at.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
                // Calls answered from acknowledgements do not write it (see lookahead.rs).
                self.status_at = Some(Instant::now());
                let la = LookAhead {
                    parallel: po.parallel,
                    queue_max: po.queue_max,
                };
                spool.update_status(&backlog, la.batch(), po.queue_max);
            }
            let ready: HashSet<String> = backlog.ready.iter().map(|f| f.to_string()).collect();
            self.done.retain(|f| ready.contains(f));
            self.failed.retain(|f, _| ready.contains(f));
            // Error records of files no longer waiting answer nobody.
            if let Ok(rd) = fs::read_dir(dir.join(ERROR_DIR)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !ready.contains(&name) && !name.starts_with('.') {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            for f in backlog.ready {
                let name = f.to_string();
                let retry = self
                    .failed
                    .get(&name)
                    .is_none_or(|t| t.elapsed() >= RETRY_AFTER);
                if retry
                    && !self.in_flight.contains(&name)
                    && !self.done.contains(&name)
                    && !spool.has_ack(&f)
                {
                    self.queue.push_back(f);
                }
            }
        }
        while let Some(f) = self.queue.pop_front() {
            let name = f.to_string();
            if self.in_flight.contains(&name) || spool.has_ack(&f) {
                continue;
            }
            return Some(self.take(spool, f));
        }
        None
    }

    fn take(&mut self, spool: &Spool, f: ArchiveFile) -> (ArchiveFile, PathBuf) {
        self.in_flight.insert(f.to_string());
        let path = spool.wal_dir().join(f.to_string());
        (f, path)
    }

    fn finish(&mut self, dir: &Path, file: &ArchiveFile, r: Result<(), String>) {
        let name = file.to_string();
        self.in_flight.remove(&name);
        let err_path = record(dir, ERROR_DIR, file);
        match r {
            Ok(()) => {
                self.stored += 1;
                self.done.insert(name);
                self.failed.remove(&file.to_string());
                let _ = fs::remove_file(&err_path);
            }
            Err(error) => {
                self.failed_count += 1;
                self.failed.insert(name.clone(), Instant::now());
                let rec = ErrorRecord { file: name, error };
                let tmp =
                    dir.join(ERROR_DIR)
                        .join(format!(".{}.tmp-{}", rec.file, std::process::id()));
                if fs::write(&tmp, serde_json::to_vec(&rec).unwrap_or_default()).is_ok() {
                    let _ = fs::rename(&tmp, &err_path);
                }
            }
        }
    }
}

/// `archive-push --async` of `file` at `src`: acknowledged from the background pusher's record
/// (a pusher started when none runs: `start`), or pushed here when the pusher could not store
/// it (see the module's documentation). Gap records waiting in the spool are written into the
/// repository first, as by every push.
#[allow(clippy::too_many_arguments)]
pub fn push_async(
    backend: &dyn Backend,
    repo: &Path,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    src: &Path,
    opts: &PushOptions,
    la: &LookAhead,
    po: &PusherOptions,
    start: &mut dyn FnMut(&Path),
) -> Result<PushReport, SpoolError> {
    let Some(spool) = Spool::beside(src) else {
        // Not a file of a pg_wal folder (pushed by hand): no spool, no pusher.
        return lookahead::push(backend, repo, cluster, reg, file, src, opts, la);
    };
    let binding = Binding::new(repo, cluster, reg.system_identifier);
    let flushed = spool.flush_gaps(backend, cluster, reg)?;
    // The gaps this call wrote into the repository go into its report, however it ends.
    let with_gaps = |mut report: PushReport| {
        let mut gaps = flushed.events.clone();
        gaps.append(&mut report.gaps_recorded);
        report.gaps_recorded = gaps;
        let mut foreign = flushed.foreign.clone();
        foreign.append(&mut report.foreign_gaps);
        report.foreign_gaps = foreign;
        report
    };
    let acked = |spool: &Spool| -> Result<Option<bool>, SpoolError> {
        match spool.take_ack(&binding, file, src)? {
            Some(a) => Ok(Some(lookahead::spooled_object_ok(
                backend, reg, file, src, &a.object,
            )?)),
            None => Ok(None),
        }
    };
    let done = || PushReport {
        acknowledged: Acknowledged::Spooled,
        ahead_stored: Vec::new(),
        ahead_failed: Vec::new(),
        gaps_recorded: Vec::new(),
        foreign_gaps: Vec::new(),
        status: None,
    };
    match acked(&spool)? {
        Some(true) => return Ok(with_gaps(done())),
        // A record that does not hold: push the file here (it is compared with what is
        // stored).
        Some(false) => {
            return push_here(backend, repo, cluster, reg, file, src, opts, la).map(with_gaps);
        }
        None => {}
    }
    let dir = async_dir(&spool)?;
    for sub in [WANT_DIR, ERROR_DIR] {
        spool.sub(&format!("{ASYNC_DIR}/{sub}"))?;
    }
    let want = record(&dir, WANT_DIR, file);
    let err_path = record(&dir, ERROR_DIR, file);
    // An error record from before this call is no answer to it.
    let _ = fs::remove_file(&err_path);
    File::create(&want).ctx("create", &want)?;
    let began = Instant::now();
    start(spool.wal_dir());
    let mut started = Instant::now();
    let outcome = loop {
        std::thread::sleep(CALL_POLL);
        if spool.has_ack(file) {
            break acked(&spool)?;
        }
        if err_path.exists() {
            let _ = fs::remove_file(&err_path);
            break None;
        }
        if began.elapsed() >= po.wait_max {
            break None;
        }
        if started.elapsed() >= RESTART_EVERY {
            // The pusher may have exited (idle) or died: another start is a no-op while one
            // holds the lock.
            if !want.exists() {
                let _ = File::create(&want);
            }
            start(spool.wal_dir());
            started = Instant::now();
        }
    };
    let _ = fs::remove_file(&want);
    match outcome {
        Some(true) => Ok(with_gaps(done())),
        _ => push_here(backend, repo, cluster, reg, file, src, opts, la).map(with_gaps),
    }
}

/// The file pushed by the call itself, without looking ahead (the pusher does that).
#[allow(clippy::too_many_arguments)]
fn push_here(
    backend: &dyn Backend,
    repo: &Path,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    src: &Path,
    opts: &PushOptions,
    la: &LookAhead,
) -> Result<PushReport, SpoolError> {
    let one = LookAhead {
        parallel: 1,
        queue_max: la.queue_max,
    };
    lookahead::push(backend, repo, cluster, reg, file, src, opts, &one)
}
