//! Watching the backup's session while the files are copied.
//!
//! A non-exclusive backup lives and dies with the session that started it: when the server
//! restarts or crashes, or the session's backend is terminated, the server ends the backup
//! (`xlog.c`: "aborting backup due to backend exiting before pg_backup_stop was called"),
//! and nothing copied afterwards can become a backup. Without a watcher the copy would run to
//! the end — hours on a large cluster — and fail only at stop. The copy itself never uses the
//! session, so a watcher thread borrows it for the copy's duration and sends `SELECT 1` every
//! [`PING_INTERVAL`]; the first failure stops the copy (the same flag Ctrl-C sets) and is
//! reported as [`SessionLost`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::session::{BackupStarted, SessionError};

/// How often the session is checked: a lost session is noticed within about this long (plus the
/// time the server takes to answer, or the connection's TCP keepalive limit on a dead network).
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How often the watcher looks at the caller's cancel flag and whether the work is done.
const TICK: Duration = Duration::from_millis(50);

/// The session ended while the copy ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLost {
    /// What the server or the connection said.
    pub detail: String,
}

/// Runs `work` (the copy) while a watcher thread checks the backup's session. The watcher sets
/// `stop` when the session is lost or when the caller's `cancel` flag is set (so `work` needs to
/// watch `stop` only), and ends when `work` returns.
pub fn watch_session<T>(
    started: &mut BackupStarted,
    cancel: Option<&AtomicBool>,
    stop: &AtomicBool,
    work: impl FnOnce() -> T,
) -> (T, Option<SessionLost>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut last_ping = Instant::now();
            while !done.load(Ordering::Acquire) {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    stop.store(true, Ordering::Release);
                }
                if last_ping.elapsed() >= PING_INTERVAL {
                    last_ping = Instant::now();
                    if let Err(e) = started.ping() {
                        stop.store(true, Ordering::Release);
                        return Some(SessionLost {
                            detail: describe(&e),
                        });
                    }
                }
                std::thread::sleep(TICK);
            }
            None
        });
        let out = work();
        done.store(true, Ordering::Release);
        // A panic in the watcher is a bug in pgsafe, not a lost session: pass it on.
        let lost = watcher
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (out, lost)
    })
}

/// The server's own words when it sent them (e.g. "terminating connection due to administrator
/// command"), else the connection error.
fn describe(e: &SessionError) -> String {
    match e {
        SessionError::Sql { source, .. } => crate::session::db_message(source),
        other => other.to_string(),
    }
}
