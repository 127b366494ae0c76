//! A stored backup as verify and restore read it: the storage backend holding its objects and
//! where they are in it. Every read of a backup's files (metadata, data files, compressed
//! objects, WAL) goes through here, so that a backup in object storage can be verified and
//! restored like one in a folder.
//!
//! A backup folder is read through a [`LocalBackend`], which never follows a symbolic link
//! below the folder and reads nothing but regular files (see `storage/local.rs` and
//! docs/threat-model.md). Its listing also reports what is there and is not an object — links,
//! special files, hard links, unreadable folders ([`super::list_backup`]) — for verify to
//! report and restore to refuse; other backends hold nothing but objects.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::listing::{Listing, list_backup};
use crate::fsutil::FsError;
use crate::plan::RelPath;
use crate::storage::{Backend, ErrorKind, LocalBackend, ObjectName, ObjectReader, StorageError};

/// A backup's objects in a storage backend. Cloning shares the backend.
#[derive(Clone, Debug)]
pub struct StoredBackup {
    backend: Arc<dyn Backend>,
    /// Where the backup's objects are (`None`: the backend holds this backup only).
    prefix: Option<ObjectName>,
    /// The backup folder, when the backend is one.
    folder: Option<PathBuf>,
    /// How messages and reports name the backup.
    shown: PathBuf,
}

impl StoredBackup {
    /// The backup folder `path` (a link in `path` itself is followed: the operator named it).
    pub fn folder(path: &Path) -> Result<StoredBackup, FsError> {
        let backend =
            LocalBackend::open(path).map_err(|e| FsError::new("open", path, e.into_io()))?;
        Ok(StoredBackup {
            backend: Arc::new(backend),
            prefix: None,
            folder: Some(path.to_owned()),
            shown: path.to_owned(),
        })
    }

    /// The backup whose objects are under `prefix` in `backend` (all of them for `None`),
    /// named `shown` in messages and reports.
    pub fn in_backend(
        backend: Arc<dyn Backend>,
        prefix: Option<ObjectName>,
        shown: impl Into<PathBuf>,
    ) -> StoredBackup {
        StoredBackup {
            backend,
            prefix,
            folder: None,
            shown: shown.into(),
        }
    }

    /// The backup's folder, when it is one on this host.
    pub fn local_folder(&self) -> Option<&Path> {
        self.folder.as_deref()
    }

    /// How messages and reports name the backup (the folder, for a folder).
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `rel` in the backup, for messages.
    pub fn shown_path(&self, rel: &RelPath) -> PathBuf {
        self.shown.join(rel.as_path())
    }

    /// The object name of the backup's file `rel` (a path relative to the backup's root).
    pub fn name(&self, rel: &[u8]) -> Result<ObjectName, StorageError> {
        match &self.prefix {
            Some(p) => p.join(rel),
            None => ObjectName::new(rel),
        }
    }

    /// The whole file `rel`, at most `limit` bytes (more is an error); `Ok(None)` when there is
    /// none.
    pub fn get(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        match self.backend.get(&self.name(rel.as_bytes())?, limit) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The size of the file `rel`; `Ok(None)` when there is none.
    pub fn size(&self, rel: &str) -> Result<Option<u64>, StorageError> {
        match self.backend.size(&self.name(rel.as_bytes())?) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether anything is stored as `rel`, a link or special file of a folder included.
    pub fn exists(&self, rel: &str) -> bool {
        !matches!(self.size(rel), Ok(None))
    }

    /// A reader of the file `rel` from `offset` (`len` bytes, or to its end).
    pub fn read_range(
        &self,
        rel: &RelPath,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>, StorageError> {
        self.backend
            .read_range(&self.name(rel.as_bytes())?, offset, len)
    }

    /// A reader of the whole file `rel`.
    pub fn read(&self, rel: &RelPath) -> Result<ObjectReader<'_>, StorageError> {
        self.read_range(rel, 0, None)
    }

    /// The file `rel` opened, for a folder (kernel copies, the link count); `None` for other
    /// backends (read it with [`StoredBackup::read`]).
    pub fn open_file(&self, rel: &RelPath) -> Option<Result<File, StorageError>> {
        match self.name(rel.as_bytes()) {
            Ok(n) => self.backend.open_file(&n),
            Err(e) => Some(Err(e)),
        }
    }

    /// What the backup holds. For a folder, what is not an object too (see the module
    /// documentation); for other backends the folders are those the objects' names imply.
    pub fn list(&self) -> Result<Listing, FsError> {
        if let Some(dir) = &self.folder {
            return list_backup(dir);
        }
        let objects = self
            .backend
            .list(self.prefix.as_ref())
            .map_err(|e| FsError::new("list", &self.shown, e.into_io()))?;
        let cut = self.prefix.as_ref().map_or(0, |p| p.as_bytes().len() + 1);
        let mut dirs = std::collections::BTreeSet::new();
        let mut l = Listing::default();
        for o in objects {
            let Some(rel) = o.name.as_bytes().get(cut..) else {
                continue;
            };
            for (i, _) in rel.iter().enumerate().filter(|(_, c)| **c == b'/') {
                dirs.insert(RelPath::from_bytes(&rel[..i]));
            }
            l.files.insert(RelPath::from_bytes(rel), o.size);
        }
        // Sorted by bytes, a folder comes before everything below it.
        l.dirs = dirs.into_iter().collect();
        Ok(l)
    }
}
