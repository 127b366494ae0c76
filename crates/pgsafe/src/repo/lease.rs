//! Leases: crash-safe locks with an expiry, held across hosts through the repository itself
//! (never a pid file: a pid means nothing on another host, and is reused after a crash).
//!
//! A lease is an object `<cluster>/leases/<kind>-<holder>-<seq>.json` ([`LeaseDoc`]) written
//! create-only. It is live while its `expires_at` plus a clock-skew margin is in the future;
//! a holder that crashed stops renewing and its lease dies by itself. Renewal never changes an
//! object: it writes the next lease (`seq` + 1) and then deletes the previous one, so there is
//! always a live lease while the holder works. See the ordering contract in [`crate::repo`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::RepoError;
use super::doc::{self, LeaseDoc, REPO_FORMAT};
use crate::storage::{Backend, ErrorKind, Ident, Key, ObjectName, PutOptions};

/// Environment variable overriding the lease lifetime in seconds (tests use seconds, not the
/// default minutes).
pub const TTL_ENV: &str = "PGSAFE_LEASE_TTL_SECS";
/// Environment variable overriding the clock-skew margin in seconds.
pub const SKEW_ENV: &str = "PGSAFE_LEASE_SKEW_SECS";

/// How long a lease lives and how much clock disagreement between hosts is allowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A lease expires this long after it was written (renewed every third of it).
    pub ttl: Duration,
    /// A lease counts as live until its expiry plus this margin.
    pub clock_skew: Duration,
}

impl Default for LeaseTiming {
    fn default() -> LeaseTiming {
        LeaseTiming {
            ttl: Duration::from_secs(300),
            clock_skew: Duration::from_secs(60),
        }
    }
}

impl LeaseTiming {
    /// The defaults, overridden by [`TTL_ENV`] and [`SKEW_ENV`] when set (whole seconds; a
    /// value that is not one is an error naming the variable).
    pub fn from_env() -> Result<LeaseTiming, String> {
        let mut t = LeaseTiming::default();
        for (var, field) in [(TTL_ENV, &mut t.ttl), (SKEW_ENV, &mut t.clock_skew)] {
            if let Some(v) = std::env::var_os(var) {
                let secs = v
                    .to_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|s| *s > 0 || var == SKEW_ENV)
                    .ok_or_else(|| format!("{var} must be a whole number of seconds"))?;
                *field = Duration::from_secs(secs);
            }
        }
        Ok(t)
    }

    pub fn ttl_us(&self) -> i64 {
        i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX)
    }

    pub fn skew_us(&self) -> i64 {
        i64::try_from(self.clock_skew.as_micros()).unwrap_or(i64::MAX)
    }
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    cluster: Ident,
    kind: Ident,
    holder: Ident,
    doc: LeaseDoc,
    name: ObjectName,
    timing: LeaseTiming,
}

fn lease_name(
    cluster: &Ident,
    kind: &Ident,
    holder: &Ident,
    seq: u64,
) -> Result<ObjectName, RepoError> {
    let h = Ident::new(format!("{holder}-{seq:06}"))?;
    Ok(Key::Lease {
        cluster,
        kind,
        holder: &h,
    }
    .name()?)
}

impl Lease {
    /// Takes a lease of `kind` for `holder` (a backup ID for `backup` leases). `Ok(None)`: a
    /// lease of that name exists already (another process took the same holder name).
    pub fn acquire(
        b: &dyn Backend,
        cluster: &Ident,
        kind: &Ident,
        holder: &Ident,
        backup: Option<&Ident>,
        timing: LeaseTiming,
    ) -> Result<Option<Lease>, RepoError> {
        let now = doc::now_us();
        let doc = LeaseDoc {
            format: REPO_FORMAT,
            kind: kind.clone(),
            backup: backup.cloned(),
            host: doc::host_name(),
            pid: std::process::id(),
            seq: 0,
            acquired_at: doc::format_time(now),
            expires_at: doc::format_time(now.saturating_add(timing.ttl_us())),
        };
        let name = lease_name(cluster, kind, holder, 0)?;
        match b.put(&name, &doc.to_json(), PutOptions::default()) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        Ok(Some(Lease {
            cluster: cluster.clone(),
            kind: kind.clone(),
            holder: holder.clone(),
            doc,
            name,
            timing,
        }))
    }

    /// Test hook: the lease's expiry (in this process's view) is now, as if the holder had
    /// been stopped past it.
    #[cfg(test)]
    pub(crate) fn expire_now_for_test(&mut self) {
        self.doc.expires_at = doc::format_time(doc::now_us().saturating_sub(1));
    }

    /// The current lease document.
    pub fn doc(&self) -> &LeaseDoc {
        &self.doc
    }

    /// Extends the lease: writes the next one, then deletes the previous.
    pub fn renew(&mut self, b: &dyn Backend) -> Result<(), RepoError> {
        let now = doc::now_us();
        let mut next = self.doc.clone();
        next.seq = next.seq.saturating_add(1);
        next.expires_at = doc::format_time(now.saturating_add(self.timing.ttl_us()));
        let name = lease_name(&self.cluster, &self.kind, &self.holder, next.seq)?;
        b.put(&name, &next.to_json(), PutOptions::default())?;
        let old = std::mem::replace(&mut self.name, name);
        self.doc = next;
        b.delete(&old)?;
        Ok(())
    }

    /// Gives the lease up (deletes it).
    pub fn release(self, b: &dyn Backend) -> Result<(), RepoError> {
        b.delete(&self.name)?;
        Ok(())
    }

    /// Runs `work` while a thread renews the lease every third of its lifetime, then releases
    /// it (whether `work` succeeded or not). When renewal keeps failing until the lease has
    /// expired, `lost` is set and `on_lost` called (once): the work must stop, since others may
    /// now treat what it writes as abandoned. Returns `work`'s result and the release's.
    pub fn hold_while<T>(
        mut self,
        b: &dyn Backend,
        lost: &AtomicBool,
        on_lost: &(dyn Fn() + Sync),
        work: impl FnOnce() -> T,
    ) -> (T, Result<(), RepoError>) {
        let interval = (self.timing.ttl / 3).max(Duration::from_millis(100));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let renewer = s.spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    // Lapsed before we could renew it (the process was stopped, or starved,
                    // longer than the lease lives): others may already have taken the work for
                    // abandoned and deleted it. Renewing now would not undo that, so the lease
                    // is lost and the work must stop, never complete.
                    if self.doc.expires_us() <= doc::now_us() {
                        if !lost.swap(true, Ordering::SeqCst) {
                            on_lost();
                        }
                        break;
                    }
                    // A failed renewal is tried again at the next interval; once the lease has
                    // expired by our own clock, others may take the work for abandoned.
                    if self.renew(b).is_err()
                        && self.doc.expires_us() <= doc::now_us()
                        && !lost.swap(true, Ordering::SeqCst)
                    {
                        on_lost();
                    }
                }
                self
            });
            let out = work();
            drop(stop_tx);
            let released = match renewer.join() {
                Ok(lease) => lease.release(b),
                Err(p) => std::panic::resume_unwind(p),
            };
            (out, released)
        })
    }
}
