//! `expire`: applies retention to one cluster of a repository. The plan is made by the pure
//! planner ([`super::retention`]), proved safe by [`ExpirePlan::check`], shown, and only then
//! carried out.
//!
//! Order of work, and why:
//! 1. Take the cluster's `expire` lease, so that two expires (from any host) never run at once:
//!    write our lease (create-only, unique name), then list the expire leases; if another live
//!    one is there, give ours up and refuse. Of two expires racing, at least the later lister
//!    sees the other's lease (each lists after writing its own), so at most one goes on; both
//!    may refuse, and a retry settles it. A dry run deletes nothing and takes no lease.
//! 2. Load the catalog ([`super::load_catalog`]): backup folders listed first, leases second —
//!    the ordering contract of [`crate::repo`] that makes a running backup (even on another
//!    host) show as running, never as an interrupted leftover.
//! 3. Plan, check, hand the plan to the caller (printed before anything is deleted).
//! 4. For each deletion, oldest first: stop if our lease was lost; for an incomplete leftover,
//!    list the leases again and skip it if a backup lease for its ID appeared (a catalog is a
//!    moment's view: the check is repeated right before the delete); write an `expire-started`
//!    event naming the backup (the audit trail, and the explanation of a half-deleted backup);
//!    delete its `pgsafe.json` FIRST, durably — from then on the backup is incomplete, never
//!    `latest`, never restored —; then everything else and its folder
//!    ([`Backend::delete_prefix`], which syncs the parent folder). A SIGKILL at any point leaves
//!    backups that are complete and untouched, or incomplete without a live lease: the next
//!    expire finishes them (incomplete leftovers are deleted in every plan).
//! 5. Remove leases that are dead (expired beyond the clock-skew margin), then give up ours.
//!
//! Time spent is bounded by the deletions: one listing of `backups/` (one level) and one read of
//! each folder's `pgsafe.json` for the catalog, then per deleted backup one event, two lease
//! listings at most and the deletion of its own files.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::catalog::Catalog;
use super::doc::{EventKind, LeaseDoc, now_us};
use super::lease::{Lease, LeaseTiming};
use super::retention::{self, EntryState, ExpirePlan, KeepOptions, RetentionError};
use super::{RepoError, load_catalog, record_event};
use crate::error::{ErrorKind, HasKind};
use crate::layout::COMPLETE_MARKER;
use crate::plan::RelPath;
use crate::storage::key::{BackupAt, backup_prefix, repo_prefix};
use crate::storage::{Backend, FileType, Ident, Key, StorageError};

#[cfg(test)]
mod tests;

/// The kind of the lease that keeps two expires of one cluster apart.
pub const EXPIRE_LEASE: &str = "expire";
/// The kind of the leases backups hold (see [`super::catalog`]).
const BACKUP_LEASE: &str = "backup";
/// Largest lease document read.
const LEASE_LIMIT: u64 = 1 << 20;

/// What `expire` is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExpireOptions {
    pub keep: KeepOptions,
    /// Plan, check and report, delete nothing (and take no lease).
    pub dry_run: bool,
    pub timing: LeaseTiming,
}

/// One backup deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub id: String,
    /// Objects (files) deleted, `pgsafe.json` included.
    pub objects: u64,
}

/// A deletion of the plan that was not done, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub id: String,
    pub why: String,
}

/// What `expire` did.
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    pub cluster: Ident,
    pub dry_run: bool,
    pub plan: ExpirePlan,
    /// Backups deleted, in the order they were.
    pub deleted: Vec<Deleted>,
    pub skipped: Vec<Skipped>,
    /// Dead leases removed (their holders stopped without releasing them).
    pub dead_leases_removed: u64,
}

/// Why `expire` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(
        "another expire of cluster {cluster} is running ({holder}): nothing was deleted. Run \
         expire again once it has finished; if that process is gone, its lease expires by \
         itself at {until} (plus the clock-skew margin)"
    )]
    Busy {
        cluster: Ident,
        holder: String,
        until: String,
    },
    #[error(
        "expire's lease on cluster {cluster} could not be renewed and expired, so it stopped \
         before deleting backup {next} ({done} deleted before): another expire may have taken \
         over. Run expire again"
    )]
    LeaseLost {
        cluster: Ident,
        next: String,
        done: usize,
    },
    #[error(
        "delete backup {id} of cluster {cluster}: {source}. Backups deleted before it are gone; \
         run expire again once the cause is fixed (a half-deleted backup shows as incomplete and \
         is finished then)"
    )]
    Delete {
        cluster: Ident,
        id: String,
        #[source]
        source: Box<StorageError>,
    },
}

impl HasKind for ExpireError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ExpireError::Repo(e) => e.error_kind(),
            ExpireError::Retention(e) => e.error_kind(),
            ExpireError::Busy { .. } | ExpireError::LeaseLost { .. } => ErrorKind::Conflict,
            ExpireError::Delete { source, .. } => source.error_kind(),
        }
    }
}

impl HasKind for RetentionError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            RetentionError::KeepFullZero | RetentionError::KeepWithinZero => ErrorKind::Usage,
            RetentionError::DuplicateId { .. } => ErrorKind::Corrupt,
            RetentionError::Unsafe { .. } => ErrorKind::Internal,
        }
    }
}

/// Loads the catalog of `cluster` and plans its retention at `now` (unix seconds); the plan
/// has passed its check.
pub fn plan_expire(
    b: &dyn Backend,
    cluster: &Ident,
    keep: KeepOptions,
    timing: LeaseTiming,
) -> Result<(Catalog, ExpirePlan), ExpireError> {
    let catalog = load_catalog(b, cluster, timing)?;
    let now = now_us().div_euclid(1_000_000);
    let plan = retention::plan(
        catalog.retention_entries(),
        catalog.registration.system_identifier,
        keep,
        now,
    )?;
    plan.check()?;
    Ok((catalog, plan))
}

/// Runs `expire` on `cluster`: plans, checks, calls `on_plan` with the checked plan (before
/// anything is deleted), then deletes (unless a dry run). See the module documentation.
pub fn expire(
    b: &dyn Backend,
    cluster: &Ident,
    opts: &ExpireOptions,
    on_plan: impl FnOnce(&ExpirePlan),
) -> Result<ExpireReport, ExpireError> {
    if opts.dry_run {
        let (_, plan) = plan_expire(b, cluster, opts.keep, opts.timing)?;
        on_plan(&plan);
        return Ok(ExpireReport {
            cluster: cluster.clone(),
            dry_run: true,
            plan,
            deleted: Vec::new(),
            skipped: Vec::new(),
            dead_leases_removed: 0,
        });
    }
    // The registration first: a cluster that is not registered is refused before a lease is
    // written under its name.
    super::read_registration(b, cluster)?;
    let lease = take_expire_lease(b, cluster, opts.timing)?;
    let lost = AtomicBool::new(false);
    let (out, released) = lease.hold_while(b, &lost, &|| {}, || {
        let (_, plan) = plan_expire(b, cluster, opts.keep, opts.timing)?;
        on_plan(&plan);
        let mut report = ExpireReport {
            cluster: cluster.clone(),
            dry_run: false,
            plan,
            deleted: Vec::new(),
            skipped: Vec::new(),
            dead_leases_removed: 0,
        };
        let todo: Vec<(String, bool)> = report
            .plan
            .deletions()
            .map(|d| {
                let complete = matches!(d.backup.state, EntryState::Complete(_));
                (d.backup.id.clone(), complete)
            })
            .collect();
        for (id, complete) in todo {
            if lost.load(Ordering::SeqCst) {
                return Err(ExpireError::LeaseLost {
                    cluster: cluster.clone(),
                    next: id,
                    done: report.deleted.len(),
                });
            }
            if !complete && let Some(why) = backup_lease_for(b, cluster, &id, opts.timing)? {
                report.skipped.push(Skipped { id, why });
                continue;
            }
            let objects = delete_backup(b, cluster, &id, complete)?;
            report.deleted.push(Deleted { id, objects });
        }
        report.dead_leases_removed = remove_dead_leases(b, cluster, opts.timing)?;
        Ok(report)
    });
    let report = out?;
    // Our lease not released (the deletions are done): it expires by itself; say nothing.
    let _ = released;
    Ok(report)
}

/// Deletes backup `id`: its event, then `pgsafe.json` (complete backups), then the rest.
fn delete_backup(
    b: &dyn Backend,
    cluster: &Ident,
    id: &str,
    complete: bool,
) -> Result<u64, ExpireError> {
    let err = |source: StorageError| ExpireError::Delete {
        cluster: cluster.clone(),
        id: id.to_owned(),
        source: Box::new(source),
    };
    let ident = Ident::new(id).map_err(err)?;
    record_event(
        b,
        cluster,
        EventKind::ExpireStarted {
            backups: vec![ident.clone()],
        },
    )?;
    let mut objects = 0;
    if complete {
        let marker = RelPath::from_bytes(COMPLETE_MARKER.as_bytes());
        let name = Key::BackupFile {
            at: BackupAt::Repo {
                cluster,
                backup: &ident,
            },
            path: &marker,
        }
        .name()
        .map_err(err)?;
        if b.delete(&name).map_err(err)? {
            objects += 1;
        }
    }
    let prefix = backup_prefix(cluster, &ident).map_err(err)?;
    objects += b.delete_prefix(&prefix).map_err(err)?;
    Ok(objects)
}

/// A lease document read from `leases/`, or why it could not be.
struct FoundLease {
    name: crate::storage::ObjectName,
    doc: Result<LeaseDoc, String>,
}

fn list_leases(b: &dyn Backend, cluster: &Ident) -> Result<Vec<FoundLease>, ExpireError> {
    let prefix = repo_prefix(cluster, FileType::Lease).ok_or_else(|| RepoError::NotRegistered {
        cluster: cluster.clone(),
    })?;
    let mut out = Vec::new();
    for o in b.list(Some(&prefix)).map_err(RepoError::from)? {
        let doc = match b.get(&o.name, LEASE_LIMIT) {
            Ok(bytes) => LeaseDoc::parse(&bytes).map_err(|e| e.to_string()),
            // Released or renewed since the listing.
            Err(e) if e.kind() == crate::storage::ErrorKind::NotFound => continue,
            Err(e) => Err(e.to_string()),
        };
        out.push(FoundLease { name: o.name, doc });
    }
    Ok(out)
}

fn file_name(name: &crate::storage::ObjectName) -> String {
    let s = name.to_string();
    s.rsplit('/').next().unwrap_or(&s).to_owned()
}

fn is_live(doc: &LeaseDoc, timing: LeaseTiming, now: i64) -> bool {
    doc.expires_us().saturating_add(timing.skew_us()) > now
}

/// Takes the cluster's expire lease, or refuses when another expire holds one.
fn take_expire_lease(
    b: &dyn Backend,
    cluster: &Ident,
    timing: LeaseTiming,
) -> Result<Lease, ExpireError> {
    let kind = Ident::new(EXPIRE_LEASE).map_err(RepoError::from)?;
    let lease = loop {
        let holder = Ident::new(format!("{}-{:08x}", std::process::id(), fastrand::u32(..)))
            .map_err(RepoError::from)?;
        // `None`: the random name is taken; draw another.
        if let Some(l) = Lease::acquire(b, cluster, &kind, &holder, None, timing)? {
            break l;
        }
    };
    let now = now_us();
    let mine = lease.doc().clone();
    let mut other = None;
    for l in list_leases(b, cluster)? {
        let file = file_name(&l.name);
        match &l.doc {
            Ok(doc) if doc.kind.as_str() == EXPIRE_LEASE => {
                if *doc != mine && is_live(doc, timing, now) {
                    other = Some((
                        format!("host {}, pid {}", doc.host, doc.pid),
                        doc.expires_at.clone(),
                    ));
                }
            }
            Ok(_) => {}
            // An unreadable expire lease may be a live one: the safe reading.
            Err(why) if file.starts_with(&format!("{EXPIRE_LEASE}-")) => {
                other = Some((
                    format!(
                        "its lease {} cannot be read: {why}; remove it if no expire runs",
                        l.name
                    ),
                    "unknown".into(),
                ));
            }
            Err(_) => {}
        }
        if other.is_some() {
            break;
        }
    }
    if let Some((holder, until)) = other {
        let _ = lease.release(b);
        return Err(ExpireError::Busy {
            cluster: cluster.clone(),
            holder,
            until,
        });
    }
    Ok(lease)
}

/// Why incomplete backup `id` must not be deleted now: a live (or unreadable) backup lease
/// names it.
fn backup_lease_for(
    b: &dyn Backend,
    cluster: &Ident,
    id: &str,
    timing: LeaseTiming,
) -> Result<Option<String>, ExpireError> {
    let now = now_us();
    for l in list_leases(b, cluster)? {
        match &l.doc {
            Ok(doc)
                if doc.kind.as_str() == BACKUP_LEASE
                    && doc.backup.as_ref().is_some_and(|x| x.as_str() == id)
                    && is_live(doc, timing, now) =>
            {
                return Ok(Some(format!(
                    "a backup holds a live lease on it since the catalog was read (host {}, pid \
                     {}): left for the next expire",
                    doc.host, doc.pid
                )));
            }
            Err(why) if file_name(&l.name).starts_with(&format!("{BACKUP_LEASE}-{id}-")) => {
                return Ok(Some(format!(
                    "its backup lease {} cannot be read ({why}): left alone",
                    l.name
                )));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Removes leases that are dead (expired beyond the clock-skew margin): their holders stopped
/// without releasing them (killed, host lost). A dead lease means nothing to the catalog; this
/// keeps `leases/` from growing. Unreadable leases are left (reported by the catalog).
fn remove_dead_leases(
    b: &dyn Backend,
    cluster: &Ident,
    timing: LeaseTiming,
) -> Result<u64, ExpireError> {
    let now = now_us();
    let mut removed = 0;
    for l in list_leases(b, cluster)? {
        if let Ok(doc) = &l.doc
            && !is_live(doc, timing, now)
            && b.delete(&l.name).map_err(RepoError::from)?
        {
            removed += 1;
        }
    }
    Ok(removed)
}
