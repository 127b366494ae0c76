//! A backup repository: many backups of many clusters in one place, with a catalog derived from
//! what is stored (never a mutable index).
//!
//! Layout (object names from [`crate::storage::key`]):
//! ```text
//! <repo>/pgsafe-repo.json                     marker and format (written by the first init)
//! <repo>/<cluster>/cluster.json               registration: system identifier, major, WAL
//!                                             segment size, PGDATA as given (written once)
//! <repo>/<cluster>/backups/<ID>/              a plain pgsafe backup folder (what a backup to a
//!                                             folder writes; pg_verifybackup reads it)
//! <repo>/<cluster>/events/<time>-<kind>-<rand>.json   pin, unpin, verified, expire-started
//! <repo>/<cluster>/leases/<kind>-<holder>-<seq>.json  leases with an expiry
//! <repo>/<cluster>/wal-summaries/<timeline>/<log>/<segment>.json  changed blocks of an archived
//!                                             segment (archive-push; crate::archive::summarize)
//! ```
//! Every object is written once (create-only) and never changed in place; what the repository
//! holds is [`catalog::derive`]d from listings and these immutable documents, so a crash at any
//! point leaves a repository whose catalog is right: a backup folder without `pgsafe.json` is
//! running while its lease is live and incomplete after.
//!
//! # The ordering contract between backups and expire
//!
//! A backup writes its lease ([`lease`]) **before** it creates its folder, keeps a live lease
//! until it has written `pgsafe.json` (renewal writes the next lease before deleting the
//! previous one), and deletes it only after. [`load_catalog`] lists the backup folders
//! **first** and the leases **second**. So a folder seen in the first listing either already
//! had `pgsafe.json`, or its lease was visible when the leases were listed (it was written before
//! the folder existed, and is removed only after `pgsafe.json` is there): a running backup is
//! never taken for an interrupted one, even when it runs on another host. Anything that deletes
//! incomplete backups (expire) must decide from a catalog loaded this way
//! ([`catalog::BackupEntry::in_progress`]), and must not reuse a catalog loaded before a lease
//! could have expired and been renewed under a clock-skew margin ([`LeaseTiming`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::HasKind;
use crate::layout::{
    COMPLETE_MARKER, INCOMPLETE_MARKER, INCOMPLETE_NOTE, SMALL_FILE_LIMIT, StoredBackup,
};
use crate::plan::RelPath;
use crate::storage::key::{BackupAt, backup_prefix, repo_prefix};
use crate::storage::{
    Backend, EntryKind, ErrorKind, FileType, Ident, Key, Location, ObjectName, Prefixed,
    PutOptions, PutOutcome, StorageError,
};

pub mod catalog;
pub mod clusters;
pub mod doc;
pub mod encryption;
pub mod expire;
pub mod id;
pub mod lease;
pub mod register;
pub mod retention;
pub mod summary;
#[cfg(test)]
pub(crate) mod testdata;
#[cfg(test)]
mod tests;

pub use catalog::{BackupEntry, BackupState, Catalog};
pub use doc::{Event, EventKind, LeaseDoc, REPO_FORMAT, Registration, RepoMarker, VerifyResult};
pub use lease::{Lease, LeaseTiming};

/// Largest repository document read (a registration, an event, a lease).
const DOC_LIMIT: u64 = 1 << 20;

/// What went wrong with a repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "{path} is not a pgsafe repository: it has no pgsafe-repo.json. Initialise it with pgsafe \
         init, or check the path"
    )]
    NotARepository { path: PathBuf },
    #[error(
        "{path} is not empty and is not a pgsafe repository (no pgsafe-repo.json): a repository \
         is created in a new or empty folder; choose another path"
    )]
    NotEmpty { path: PathBuf },
    #[error(
        "cluster {cluster} is not registered in the repository: register it first (pgsafe init \
         with its data directory and connection)"
    )]
    NotRegistered { cluster: Ident },
    #[error(
        "the name {cluster} is registered for another cluster: {why}. Each name stands for one \
         PostgreSQL cluster (one initdb); register this server under another name"
    )]
    OtherCluster { cluster: Ident, why: String },
    #[error("{object} in the repository cannot be read: {source}")]
    Doc {
        object: String,
        #[source]
        source: doc::DocError,
    },
    #[error("repository: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Encryption(#[from] crate::storage::crypt::open::OpenError),
    #[error("{0}")]
    Keys(#[from] crate::storage::crypt::keys::KeyError),
    #[error("no backup {id} of cluster {cluster} in the repository")]
    NoSuchBackup { cluster: Ident, id: String },
    #[error("backup {id} of cluster {cluster} is {state}: {why}")]
    NotUsable {
        cluster: Ident,
        id: Ident,
        state: &'static str,
        why: String,
    },
    #[error(
        "cluster {cluster} has no complete backup that can be used (none, or every one failed \
         verification)"
    )]
    NoLatest { cluster: Ident },
    #[error(
        "which backup of cluster {cluster} is the latest cannot be told: backups {first} and \
         {second} lie on diverging timelines (one stopped past the point where the other's \
         timeline had begun: a stale promoted standby backed up under this name, or the \
         abandoned past of a recovery to an earlier point). Check which branch the live server \
         is on (its timeline and pg_wal/*.history), then name the backup to use, and remove the \
         abandoned branch's backups"
    )]
    AmbiguousLatest {
        cluster: Ident,
        first: String,
        second: String,
    },
    #[error(
        "{path} is not a folder (a symbolic link or another file): a repository's folders are \
         never followed through links"
    )]
    NotAFolder { path: PathBuf },
    #[error("create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the {what} of backup {id} of cluster {cluster} was recorded ({event}) but does not take \
         effect: a pin or unpin event of that backup dated later (written by a host whose clock \
         is ahead, or planted) overrides it, so the backup is {state}. Find that event in the \
         cluster's events folder, fix that host's clock or remove the event, and run this again"
    )]
    PinOverridden {
        cluster: Ident,
        id: Ident,
        what: &'static str,
        state: &'static str,
        event: String,
    },
    #[error("connect to the server: {0}")]
    Connect(#[from] crate::conninfo::ConnectError),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error("data directory: {0}")]
    DataDir(#[from] crate::datadir::DataDirError),
    #[error(
        "{pgdata} is not the data directory of the server you connected to: {why}. Give the \
         data directory of that server, or connect to the server that runs on it"
    )]
    WrongPgdata { pgdata: PathBuf, why: String },
}

impl HasKind for RepoError {
    fn error_kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            RepoError::NotARepository { .. } => K::Usage,
            RepoError::NotEmpty { .. }
            | RepoError::OtherCluster { .. }
            | RepoError::NotAFolder { .. }
            | RepoError::WrongPgdata { .. } => K::Refused,
            RepoError::NotRegistered { .. }
            | RepoError::NoSuchBackup { .. }
            | RepoError::NoLatest { .. } => K::NotFound,
            RepoError::AmbiguousLatest { .. } => K::Refused,
            RepoError::NotUsable { state, .. } => match *state {
                "running" => K::Conflict,
                "incomplete" | "corrupt" | "foreign" => K::Corrupt,
                _ => K::Refused,
            },
            RepoError::Doc { .. } => K::Corrupt,
            RepoError::PinOverridden { .. } => K::Conflict,
            RepoError::Storage(e) => e.error_kind(),
            RepoError::Encryption(_) | RepoError::Keys(_) => K::Refused,
            RepoError::Create { source, .. } => K::of_io(source),
            RepoError::Connect(e) => e.error_kind(),
            RepoError::Session(e) => e.error_kind(),
            RepoError::DataDir(e) => e.error_kind(),
        }
    }
}

/// A backup repository on a storage backend (a local folder, or an object store).
#[derive(Debug, Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    location: Location,
    /// Encrypted (docs/encryption.md): every object goes through `backend`, never around it
    /// as a local folder.
    encrypted: bool,
}

impl Repository {
    /// Opens the repository at `location`; a location without the marker is refused.
    pub fn open(location: impl Into<Location>) -> Result<Repository, RepoError> {
        let location = location.into();
        let not_a_repository = |location: &Location| RepoError::NotARepository {
            path: location.shown_path(""),
        };
        let backend = match location.open() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(not_a_repository(&location));
            }
            Err(e) => return Err(e.into()),
        };
        let name = marker_name()?;
        match backend.get(&name, DOC_LIMIT) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(not_a_repository(&location));
            }
            Err(e) => return Err(e.into()),
        }
        Repository::over(backend, location)
    }

    /// A repository over `backend` (tests, and storage opened by the caller) at `location`,
    /// which names it in messages; the marker must be there.
    pub fn over(backend: Arc<dyn Backend>, location: Location) -> Result<Repository, RepoError> {
        let name = marker_name()?;
        let marker = match backend.get(&name, DOC_LIMIT) {
            Ok(bytes) => RepoMarker::parse(&bytes).map_err(|source| RepoError::Doc {
                object: location.show(&name.to_string()),
                source,
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(RepoError::NotARepository {
                    path: location.shown_path(""),
                });
            }
            Err(e) => return Err(e.into()),
        };
        // An encrypted repository is used through the encryption decorator, with this host's
        // keys (storage/crypt/open.rs); a plain one opened with keys given is refused.
        let backend = crate::storage::crypt::open::repository_backend(
            backend,
            marker.encryption.as_ref(),
            &location.show(""),
        )?;
        Ok(Repository {
            backend,
            location,
            encrypted: marker.encryption.is_some(),
        })
    }

    /// Opens the repository at `location`, creating it (the folder if missing, and the marker)
    /// when it is missing or empty. A non-empty location without the marker is refused.
    pub fn create(location: impl Into<Location>) -> Result<Repository, RepoError> {
        let location = location.into();
        let backend = location.create()?;
        Repository::create_over(backend, location)
    }

    /// [`Repository::create`] over `backend` (tests, and storage opened by the caller).
    pub fn create_over(
        backend: Arc<dyn Backend>,
        location: Location,
    ) -> Result<Repository, RepoError> {
        let name = marker_name()?;
        match backend.get(&name, DOC_LIMIT) {
            Ok(_) => return Repository::over(backend, location),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let empty = is_empty(backend.as_ref(), &location)?;
        if !empty {
            // Another init may have just made it a repository.
            if let Ok(r) = Repository::over(Arc::clone(&backend), location.clone()) {
                return Ok(r);
            }
            return Err(RepoError::NotEmpty {
                path: location.shown_path(""),
            });
        }
        let marker = RepoMarker {
            format: REPO_FORMAT,
            created_at: doc::format_time(doc::now_us()),
            pgsafe_version: env!("CARGO_PKG_VERSION").into(),
            encryption: None,
        };
        // Two inits racing: one creates the marker, the other finds another one (Conflict):
        // either way the location is a repository now.
        match backend.put(&name, &marker.to_json(), PutOptions::default()) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e.into()),
        }
        Repository::over(backend, location)
    }

    /// Where the repository is (for messages: [`Location::show`]).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether the repository is encrypted (its objects need keys).
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// The repository's folder, for a repository on this host (`None`: object storage).
    pub fn local_root(&self) -> Option<&Path> {
        if self.encrypted {
            // Its files are ciphertext: folders are not backups, copies go through the
            // decorator.
            return None;
        }
        self.location.local_path()
    }

    /// Whether the repository is encrypted (docs/encryption.md).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The storage the repository's objects are read and written through.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The repository as a path: its folder, or its URL for object storage (what WAL
    /// archiving's local records are bound to, and what a `restore_command` names).
    pub fn path(&self) -> PathBuf {
        self.location.shown_path("")
    }

    /// The WAL archive of `cluster` in this repository, for reading backups' WAL.
    pub fn wal_archive(&self, cluster: &Ident) -> crate::layout::WalArchive {
        crate::layout::WalArchive::new(Arc::clone(&self.backend), cluster.clone(), &self.path())
    }

    /// The registration of `cluster`.
    pub fn registration(&self, cluster: &Ident) -> Result<Registration, RepoError> {
        read_registration(&self.backend, cluster)
    }

    /// Registers `reg.cluster` (once): the same cluster registered again is success
    /// (`Ok(false)`), another cluster under the name is refused.
    pub fn register(&self, reg: &Registration) -> Result<bool, RepoError> {
        let name = Key::Cluster {
            cluster: &reg.cluster,
        }
        .name()?;
        loop {
            match read_registration(&self.backend, &reg.cluster) {
                Ok(old) => {
                    return if old.same_cluster(
                        reg.system_identifier,
                        reg.server_version,
                        reg.wal_segment_size,
                    ) {
                        Ok(false)
                    } else {
                        Err(RepoError::OtherCluster {
                            cluster: reg.cluster.clone(),
                            why: describe_difference(&old, reg),
                        })
                    };
                }
                Err(RepoError::NotRegistered { .. }) => {}
                Err(e) => return Err(e),
            }
            match self
                .backend
                .put(&name, &reg.to_json(), PutOptions::default())
            {
                Ok(PutOutcome::Created | PutOutcome::AlreadyPresent) => return Ok(true),
                // Another init won the race: compare with what it registered.
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The catalog of `cluster` (see [`load_catalog`]).
    pub fn catalog(&self, cluster: &Ident, timing: LeaseTiming) -> Result<Catalog, RepoError> {
        load_catalog(&self.backend, cluster, timing)
    }

    /// Records an event for `cluster`; returns its object name.
    pub fn record_event(&self, cluster: &Ident, what: EventKind) -> Result<String, RepoError> {
        record_event(&self.backend, cluster, what)
    }

    /// The folder of backup `id` of `cluster` in a repository on this host, checked to be a
    /// real folder reached without links (the repository's root is the operator's; everything
    /// below is not followed). `Ok(None)` for a repository in object storage (no folders).
    pub fn backup_folder(&self, cluster: &Ident, id: &Ident) -> Result<Option<PathBuf>, RepoError> {
        let Some(root) = self.local_root() else {
            return Ok(None);
        };
        let mut path = root.to_path_buf();
        for c in [cluster.as_str(), "backups", id.as_str()] {
            path.push(c);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(RepoError::NotAFolder { path }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(RepoError::NoSuchBackup {
                        cluster: cluster.clone(),
                        id: id.to_string(),
                    });
                }
                Err(source) => return Err(RepoError::Create { path, source }),
            }
        }
        Ok(Some(path))
    }

    /// How messages name backup `id` of `cluster` (its folder, or its URL).
    pub fn backup_shown(&self, cluster: &Ident, id: &Ident) -> PathBuf {
        self.location.shown_path(&format!("{cluster}/backups/{id}"))
    }

    /// Backup `id` of `cluster` for reading (verify, restore): in a local repository its
    /// folder (checked as [`Repository::backup_folder`] checks it, and read as a backup folder
    /// is: what is not an object is reported), else its objects under the backup's prefix.
    pub fn stored_backup(&self, cluster: &Ident, id: &Ident) -> Result<StoredBackup, RepoError> {
        if let Some(folder) = self.backup_folder(cluster, id)? {
            return StoredBackup::folder(&folder).map_err(|e| RepoError::Create {
                path: e.path,
                source: e.source,
            });
        }
        Ok(StoredBackup::in_backend(
            Arc::clone(&self.backend),
            Some(backup_prefix(cluster, id)?),
            self.backup_shown(cluster, id),
        ))
    }

    /// Backup `id` of `cluster` as a backend of its own (the objects under its prefix), for
    /// writing it; see [`Prefixed`].
    pub fn backup_store(&self, cluster: &Ident, id: &Ident) -> Result<Prefixed, RepoError> {
        Ok(Prefixed::new(
            Arc::clone(&self.backend),
            backup_prefix(cluster, id)?,
        ))
    }

    /// Claims a new backup `id` of `cluster`, create-only: `Ok(None)` when the ID is taken.
    ///
    /// On this host the claim is the backup's folder, created with `mkdir` (which fails when
    /// it exists); the cluster's folder and `backups/` must be real folders (not links) and
    /// `backups/` is created when missing; durable (the parent is synced). Object storage has
    /// no folders: the claim is the backup's `pgsafe.incomplete` object, put create-only with
    /// content no other claim has (a write-once put of other bytes is a conflict), after which
    /// nothing else may be under the backup's prefix (a finished backup of the same ID no
    /// longer has that object).
    pub fn claim_backup(&self, cluster: &Ident, id: &Ident) -> Result<Option<Claim>, RepoError> {
        let store = self.backup_store(cluster, id)?;
        let shown = self.backup_shown(cluster, id);
        if let Some(root) = self.local_root() {
            return Ok(
                create_backup_folder(root, cluster, id)?.map(|folder| Claim {
                    store,
                    folder: Some(folder),
                    shown,
                    marker_written: false,
                }),
            );
        }
        let marker = ObjectName::new(INCOMPLETE_MARKER)?;
        let mut note = INCOMPLETE_NOTE.to_vec();
        note.extend_from_slice(
            format!(
                "Claimed by pgsafe on {} (process {}, {:016x}).\n",
                doc::host_name(),
                std::process::id(),
                fastrand::u64(..)
            )
            .as_bytes(),
        );
        match store.put(&marker, &note, PutOptions::default()) {
            Ok(PutOutcome::Created) => {}
            Ok(PutOutcome::AlreadyPresent) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Conflict => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let others = store.list(None)?.into_iter().any(|o| o.name != marker);
        if others {
            // A backup of this ID was there before (ours is the only marker: remove it).
            store.delete(&marker)?;
            return Ok(None);
        }
        Ok(Some(Claim {
            store,
            folder: None,
            shown,
            marker_written: true,
        }))
    }

    /// Whether backup `id` of `cluster` is marked incomplete (its `pgsafe.incomplete` is there,
    /// written before anything else and deleted after `pgsafe.json`).
    pub fn marked_incomplete(&self, cluster: &Ident, id: &Ident) -> bool {
        self.backup_store(cluster, id)
            .ok()
            .and_then(|s| s.size(&ObjectName::new(INCOMPLETE_MARKER).ok()?).ok())
            .is_some()
    }

    /// Removes backup `id` of `cluster` when it is marked incomplete (a failed backup the
    /// operator asked to remove); `Ok(false)` when it is not.
    pub fn remove_incomplete(&self, cluster: &Ident, id: &Ident) -> Result<bool, RepoError> {
        if !self.marked_incomplete(cluster, id) {
            return Ok(false);
        }
        match self.backup_folder(cluster, id)? {
            Some(folder) => {
                std::fs::remove_dir_all(&folder).map_err(|source| RepoError::Create {
                    path: folder,
                    source,
                })?;
            }
            None => {
                self.backend.delete_prefix(&backup_prefix(cluster, id)?)?;
            }
        }
        Ok(true)
    }

    /// Gives up a claim before the backup wrote anything into it: the folder or the claim
    /// object is removed, so that it does not show as an interrupted backup. Anything else
    /// there stays (an interrupted backup is the catalog's to show).
    pub fn release_unused(&self, claim: &Claim) -> Result<(), RepoError> {
        if let Some(folder) = &claim.folder {
            // Fails, and keeps the folder, when the backup wrote into it.
            let _ = std::fs::remove_dir(folder);
            return Ok(());
        }
        let marker = ObjectName::new(INCOMPLETE_MARKER)?;
        if claim.store.list(None)?.iter().all(|o| o.name == marker) {
            claim.store.delete(&marker)?;
        }
        Ok(())
    }

    /// Records the result of a verification of backup `id` (`restore_test`: a restore test's
    /// verdict; failed with `problems` > 0).
    pub fn record_verification(
        &self,
        cluster: &Ident,
        id: &Ident,
        problems: u64,
        restore_test: bool,
    ) -> Result<String, RepoError> {
        let result = if problems == 0 {
            VerifyResult::Passed
        } else {
            VerifyResult::Failed
        };
        self.record_event(
            cluster,
            EventKind::Verified {
                backup: id.clone(),
                result,
                problems,
                restore_test,
            },
        )
    }

    /// Pins (`pin`) or unpins backup `id`: it must be in the catalog (in any state, so that a
    /// running backup can be pinned before it completes).
    pub fn set_pinned(
        &self,
        cluster: &Ident,
        id: &str,
        pin: bool,
        timing: LeaseTiming,
    ) -> Result<(BackupEntry, String), RepoError> {
        let catalog = self.catalog(cluster, timing)?;
        let entry = catalog
            .get(id)
            .ok_or_else(|| RepoError::NoSuchBackup {
                cluster: cluster.clone(),
                id: id.escape_debug().to_string(),
            })?
            .clone();
        let backup = entry.id.clone();
        let what = if pin {
            EventKind::Pin { backup }
        } else {
            EventKind::Unpin { backup }
        };
        let event = self.record_event(cluster, what)?;
        // The catalog folds pins by event time: an event dated later than ours (another host's
        // clock ahead) wins over it. Say so rather than report a pin that expire ignores.
        let after = self.catalog(cluster, timing)?;
        if after.get(id).is_some_and(|e| e.pinned != pin) {
            return Err(RepoError::PinOverridden {
                cluster: cluster.clone(),
                id: entry.id.clone(),
                what: if pin { "pin" } else { "unpin" },
                state: if pin {
                    "NOT pinned: expire may delete it"
                } else {
                    "still pinned"
                },
                event,
            });
        }
        Ok((entry, event))
    }

    /// The backup `which` (an ID, or `latest`) of `cluster`: a complete backup of the
    /// registered cluster, and its objects ([`Repository::stored_backup`]).
    pub fn resolve(
        &self,
        cluster: &Ident,
        which: Option<&str>,
        timing: LeaseTiming,
    ) -> Result<(BackupEntry, StoredBackup), RepoError> {
        let catalog = self.catalog(cluster, timing)?;
        let entry = match which {
            None | Some("latest") => {
                if let Some((first, second)) = catalog.diverging() {
                    return Err(RepoError::AmbiguousLatest {
                        cluster: cluster.clone(),
                        first,
                        second,
                    });
                }
                catalog
                    .latest()
                    .ok_or_else(|| RepoError::NoLatest {
                        cluster: cluster.clone(),
                    })?
                    .clone()
            }
            Some(id) => {
                let e = catalog
                    .get(id)
                    .ok_or_else(|| RepoError::NoSuchBackup {
                        cluster: cluster.clone(),
                        id: id.escape_debug().to_string(),
                    })?
                    .clone();
                let why = match &e.state {
                    BackupState::Complete => None,
                    BackupState::Running => Some("it is still being written".to_owned()),
                    BackupState::Incomplete => {
                        Some("it was interrupted and has no pgsafe.json".to_owned())
                    }
                    BackupState::Corrupt { reason } | BackupState::Foreign { reason } => {
                        Some(reason.clone())
                    }
                };
                if let Some(why) = why {
                    return Err(RepoError::NotUsable {
                        cluster: cluster.clone(),
                        id: e.id.clone(),
                        state: e.state.name(),
                        why,
                    });
                }
                e
            }
        };
        let stored = self.stored_backup(cluster, &entry.id)?;
        Ok((entry, stored))
    }
}

/// A claimed backup ID ([`Repository::claim_backup`]): where the backup is written.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The backup's objects.
    pub store: Prefixed,
    /// Its folder, in a repository on this host.
    pub folder: Option<PathBuf>,
    /// How messages name it.
    pub shown: PathBuf,
    /// The claim is the backup's `pgsafe.incomplete` marker, already written.
    pub marker_written: bool,
}

/// Creates `<root>/<cluster>/backups/<id>`, create-only (see [`Repository::claim_backup`]).
fn create_backup_folder(
    root: &Path,
    cluster: &Ident,
    id: &Ident,
) -> Result<Option<PathBuf>, RepoError> {
    use std::os::unix::fs::DirBuilderExt;
    let cluster_dir = root.join(cluster.as_str());
    let backups = cluster_dir.join("backups");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RepoError::Create { path, source }
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&backups) {
        Ok(()) => sync(&cluster_dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&backups)(e)),
    }
    for p in [&cluster_dir, &backups] {
        let m = std::fs::symlink_metadata(p).map_err(io(p))?;
        if !m.is_dir() {
            return Err(RepoError::NotAFolder { path: p.clone() });
        }
    }
    let folder = backups.join(id.as_str());
    match std::fs::DirBuilder::new().mode(0o700).create(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(io(&folder)(e)),
    }
    sync(&backups)?;
    Ok(Some(folder))
}

fn sync(dir: &Path) -> Result<(), RepoError> {
    crate::fsutil::sync_dir(dir).map_err(|e| RepoError::Create {
        path: e.path,
        source: e.source,
    })
}

/// Whether a repository's location holds nothing: a local folder without entries (links and
/// files that are not objects count), else a store without objects.
fn is_empty(backend: &dyn Backend, location: &Location) -> Result<bool, RepoError> {
    match location.local_is_empty() {
        Some(r) => r.map_err(|source| RepoError::Create {
            path: location.shown_path(""),
            source,
        }),
        // Object storage: no folders, so nothing but objects can be there.
        None => Ok(backend.list(None)?.is_empty()),
    }
}

fn marker_name() -> Result<ObjectName, RepoError> {
    Ok(Key::Repository.name()?)
}

fn describe_difference(old: &Registration, new: &Registration) -> String {
    if old.system_identifier != new.system_identifier {
        format!(
            "registered with system identifier {}, this server has {}",
            old.system_identifier, new.system_identifier
        )
    } else if old.server_version.major() != new.server_version.major() {
        format!(
            "registered as PostgreSQL {}, this server is {}",
            old.server_version.major_name(),
            new.server_version
        )
    } else {
        format!(
            "registered with WAL segments of {} bytes, this server's are {}",
            old.wal_segment_size.bytes(),
            new.wal_segment_size.bytes()
        )
    }
}

/// Reads the registration of `cluster`.
pub fn read_registration(b: &dyn Backend, cluster: &Ident) -> Result<Registration, RepoError> {
    let name = Key::Cluster { cluster }.name()?;
    let bytes = match b.get(&name, DOC_LIMIT) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(RepoError::NotRegistered {
                cluster: cluster.clone(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    Registration::parse(&bytes).map_err(|source| RepoError::Doc {
        object: name.to_string(),
        source,
    })
}

/// Records an event; returns its object name (`<time>-<kind>-<random>`, create-only).
pub fn record_event(
    b: &dyn Backend,
    cluster: &Ident,
    what: EventKind,
) -> Result<String, RepoError> {
    let now = doc::now_us();
    let stamp = chrono::DateTime::from_timestamp_micros(now)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%S%.6fZ")
        .to_string();
    let ev = Event {
        format: REPO_FORMAT,
        time: doc::format_time(now),
        host: doc::host_name(),
        pgsafe_version: env!("CARGO_PKG_VERSION").into(),
        what,
    };
    let bytes = ev.to_json();
    loop {
        let n = Ident::new(format!(
            "{stamp}-{}-{:08x}",
            ev.what.name(),
            fastrand::u32(..)
        ))?;
        let name = Key::Event { cluster, name: &n }.name()?;
        match b.put(&name, &bytes, PutOptions::default()) {
            Ok(PutOutcome::Created) => return Ok(name.to_string()),
            // A random name taken: draw another.
            Ok(PutOutcome::AlreadyPresent) => return Ok(name.to_string()),
            Err(e) if e.kind() == ErrorKind::Conflict => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Loads the catalog of `cluster`: the registration, then the backup folders (one listing of
/// `backups/` and each folder's `pgsafe.json`), then the leases, then the events — folders
/// before leases, as the ordering contract in the module documentation requires.
pub fn load_catalog(
    b: &dyn Backend,
    cluster: &Ident,
    timing: LeaseTiming,
) -> Result<Catalog, RepoError> {
    use catalog::{InfoDoc, Observed, ObservedEntry, ObservedKind};
    let registration = read_registration(b, cluster)?;
    let prefix = |ty| {
        repo_prefix(cluster, ty)
            .ok_or_else(|| StorageError::new(ErrorKind::InvalidName, "list", cluster))
    };
    let complete = RelPath::from_bytes(COMPLETE_MARKER.as_bytes());
    let mut entries = Vec::new();
    for e in b.list_entries(&prefix(FileType::BackupFile)?)? {
        let kind = match e.kind {
            EntryKind::Object { .. } => ObservedKind::File,
            EntryKind::NotAnObject => ObservedKind::NotAnObject,
            EntryKind::Prefix => {
                let doc = match std::str::from_utf8(&e.name)
                    .ok()
                    .and_then(|s| Ident::new(s).ok())
                {
                    // Not an ID: reported by the catalog, never read.
                    None => InfoDoc::Missing,
                    Some(id) => {
                        let key = Key::BackupFile {
                            at: BackupAt::Repo {
                                cluster,
                                backup: &id,
                            },
                            path: &complete,
                        };
                        match b.get(&key.name()?, SMALL_FILE_LIMIT) {
                            Ok(bytes) => InfoDoc::Bytes(bytes),
                            Err(e) if e.kind() == ErrorKind::NotFound => InfoDoc::Missing,
                            Err(e) => InfoDoc::Unreadable(e.to_string()),
                        }
                    }
                };
                ObservedKind::Folder(doc)
            }
        };
        entries.push(ObservedEntry { name: e.name, kind });
    }
    // Now is taken before the leases are read: the earlier, the longer a lease counts as live.
    let now_us = doc::now_us();
    let leases = read_docs(b, &prefix(FileType::Lease)?, LeaseDoc::parse)?;
    let events = read_docs(b, &prefix(FileType::Event)?, Event::parse)?;
    let obs = Observed {
        registration,
        entries,
        leases,
        events,
        now_us,
        clock_skew_us: timing.skew_us(),
    };
    Ok(catalog::derive(cluster, obs))
}

fn read_docs<T>(
    b: &dyn Backend,
    prefix: &ObjectName,
    parse: fn(&[u8]) -> Result<T, doc::DocError>,
) -> Result<Vec<catalog::ObservedDoc<T>>, RepoError> {
    let mut out = Vec::new();
    for o in b.list(Some(prefix))? {
        let doc = match b.get(&o.name, DOC_LIMIT) {
            Ok(bytes) => parse(&bytes).map_err(|e| e.to_string()),
            // Deleted since the listing (a renewed lease's predecessor): gone, not unreadable.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => Err(e.to_string()),
        };
        out.push(catalog::ObservedDoc {
            name: o.name.to_string(),
            doc,
        });
    }
    Ok(out)
}

/// The object-name prefix of backup `id`'s files (for callers deleting a backup).
pub fn backup_objects(cluster: &Ident, id: &Ident) -> Result<ObjectName, RepoError> {
    Ok(backup_prefix(cluster, id)?)
}
