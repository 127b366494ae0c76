//! A backup into a repository: the same backup as into a folder ([`super::run_backup`]), into
//! `<repo>/<cluster>/backups/<ID>/`, under a lease.
//!
//! Order (the ordering contract in [`crate::repo`]): the server is checked to be the
//! registered cluster (nothing is written for another one); a backup ID is chosen and its
//! lease written; only then is the folder created (create-only: two backups never share an
//! ID, another suffix is tried); the backup runs while a thread renews the lease; the lease is
//! deleted after `pgsafe.json` is written, or after the failure. A backup killed at any point
//! leaves a folder without `pgsafe.json` whose lease expires: the catalog then shows it as
//! incomplete.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{BackupError, BackupInfo, BackupOptions, Target, repo_wal, run_with};
use crate::error::{ErrorKind, HasKind};
use crate::progress::Progress;
use crate::repo::register::server_info;
use crate::repo::{Lease, LeaseTiming, RepoError, Repository, doc, id};
use crate::storage::Ident;

/// Tries at IDs within one second before giving up (each is a lease put and a mkdir).
const MAX_ID_ATTEMPTS: u32 = 1000;

/// Why a backup into a repository failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoBackupError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "the server is not the cluster registered as {cluster}: {why}. Back it up under the \
         name it is registered with, or register it under a new name"
    )]
    OtherServer { cluster: Ident, why: String },
    #[error("backup {id}: {source}")]
    Backup {
        id: Ident,
        #[source]
        source: Box<BackupError>,
    },
    #[error(
        "backup {id} stopped: its lease could not be renewed before it expired, so another \
         process may take the backup for abandoned; the folder stays incomplete. Check that the \
         repository is writable and reachable"
    )]
    LeaseLost { id: Ident },
    #[error("no free backup ID for this second after {MAX_ID_ATTEMPTS} attempts")]
    NoFreeId,
}

impl HasKind for RepoBackupError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            RepoBackupError::Repo(e) => e.error_kind(),
            RepoBackupError::OtherServer { .. } => ErrorKind::Refused,
            RepoBackupError::Backup { source, .. } => source.error_kind(),
            RepoBackupError::LeaseLost { .. } => ErrorKind::Io,
            RepoBackupError::NoFreeId => ErrorKind::Conflict,
        }
    }
}

/// A finished backup in a repository.
#[derive(Debug)]
pub struct RepoBackup {
    pub id: Ident,
    /// Where the backup is: its folder, or its location in object storage.
    pub folder: PathBuf,
    pub info: BackupInfo,
    /// The lease could not be deleted (it expires by itself): why.
    pub release_warning: Option<String>,
}

/// Runs a backup of the server `opts.conn` reaches into `repo` as `cluster` (`opts.target` is
/// ignored: the backup's folder is chosen here). `opts.cancel` stops it as for a folder, and
/// is also set when the lease is lost.
pub fn run_repo_backup(
    repo: &Repository,
    cluster: &Ident,
    opts: &BackupOptions,
    timing: LeaseTiming,
    progress: &dyn Progress,
) -> Result<RepoBackup, RepoBackupError> {
    let reg = repo.registration(cluster)?;
    let info = server_info(&opts.conn)?;
    if !reg.same_cluster(info.system_id, info.version, info.wal_segment_size) {
        let why = if reg.system_identifier != info.system_id {
            format!(
                "its system identifier is {}, the registered one {}",
                info.system_id, reg.system_identifier
            )
        } else {
            format!(
                "it is PostgreSQL {} with WAL segments of {} bytes, registered: {} with {}",
                info.version,
                info.wal_segment_size.bytes(),
                reg.server_version.major_name(),
                reg.wal_segment_size.bytes()
            )
        };
        return Err(RepoBackupError::OtherServer {
            cluster: cluster.clone(),
            why,
        });
    }
    let b = repo.backend();
    let kind = Ident::new("backup").map_err(RepoError::from)?;
    let now = doc::now_us();
    let mut chosen = None;
    for attempt in 0..MAX_ID_ATTEMPTS {
        let id = id::backup_id(now, attempt);
        // The lease first, then the folder (see the module documentation).
        let Some(lease) = Lease::acquire(b, cluster, &kind, &id, Some(&id), timing)? else {
            continue;
        };
        match repo.claim_backup(cluster, &id) {
            Ok(Some(claim)) => {
                chosen = Some((id, claim, lease));
                break;
            }
            Ok(None) => lease.release(b)?,
            Err(e) => {
                let _ = lease.release(b);
                return Err(e.into());
            }
        }
    }
    let (id, claim, lease) = chosen.ok_or(RepoBackupError::NoFreeId)?;
    let cancel = opts
        .cancel
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let mut opts = opts.clone();
    opts.target = claim.shown.clone();
    let target = match &claim.folder {
        // On this host the backup is written into its folder as into any backup folder.
        Some(folder) => Target::Folder(folder.clone()),
        None => Target::Store {
            store: claim.store.clone(),
            shown: claim.shown.clone(),
            marker_written: claim.marker_written,
        },
    };
    opts.cancel = Some(Arc::clone(&cancel));
    let lost = AtomicBool::new(false);
    let on_lost = || cancel.store(true, Ordering::SeqCst);
    let request = repo_wal::WalRequest::Repository {
        asked: opts.wal,
        backend: b,
        location: repo.location(),
        cluster,
        write_only: repo.encrypted() && !crate::storage::crypt::open::host_can_read(),
    };
    let type_request = super::parent::TypeRequest {
        repo,
        cluster,
        timing,
        asked: opts.backup_type,
    };
    let (result, released) = lease.hold_while(b, &lost, &on_lost, || {
        run_with(&opts, &target, request, Some(type_request), progress)
    });
    let release_warning = released.err().map(|e| e.to_string());
    match result {
        // Complete: pgsafe.json is written (even if the lease lapsed at the very end, the
        // catalog takes it as complete, which it is).
        Ok(info) => Ok(RepoBackup {
            id,
            folder: claim.shown,
            info,
            release_warning,
        }),
        Err(e) => {
            // A failure before the backup wrote anything (preflight) leaves an empty folder:
            // removed, so that it does not show as an interrupted backup.
            let _ = repo.release_unused(&claim);
            if lost.load(Ordering::SeqCst) {
                return Err(RepoBackupError::LeaseLost { id });
            }
            Err(RepoBackupError::Backup {
                id,
                source: Box::new(e),
            })
        }
    }
}
