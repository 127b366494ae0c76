//! The run directory: where holders keep their sockets, locks and records, and its default
//! (the same under cron, su, sudo, ssh and systemd; see README "Snapshot mode").

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::{BackupId, BackupRecord, HoldError, MAX_SOCKET_PATH};
use crate::fsutil::{self, FsError, IoContext};

/// The private directory holding holders' sockets and records.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The default run directory of the effective user: see [`RunDir::default_path_for`].
    pub fn default_path() -> PathBuf {
        Self::default_path_for(nix::unistd::geteuid().as_raw())
    }

    /// The default run directory of `uid`: see [`crate::runrecord::default_run_dir_for`].
    pub fn default_path_for(uid: u32) -> PathBuf {
        crate::runrecord::default_run_dir_for(uid)
    }

    /// Opens (creating with mode 0700 if needed) and checks that it is private.
    pub fn open(path: impl Into<PathBuf>) -> Result<RunDir, HoldError> {
        let path = path.into();
        fsutil::ensure_private_dir(&path)?;
        Ok(RunDir { path })
    }

    /// Opens an existing run directory for reading, creating nothing: `None` when it does not
    /// exist (no backup was ever started there).
    pub fn open_existing(path: impl Into<PathBuf>) -> Result<Option<RunDir>, HoldError> {
        let path = path.into();
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            _ => Self::open(path).map(Some),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn socket(&self, id: &BackupId) -> PathBuf {
        self.path.join(format!("{id}.sock"))
    }
    pub fn record_path(&self, id: &BackupId) -> PathBuf {
        self.path.join(format!("{id}.json"))
    }
    pub fn log(&self, id: &BackupId) -> PathBuf {
        self.path.join(format!("{id}.log"))
    }
    pub(super) fn lock_path(&self, id: &BackupId) -> PathBuf {
        self.path.join(format!("{id}.lock"))
    }

    /// Takes the holder lock of `id` without waiting; `None` if a live holder has it.
    pub fn try_lock(&self, id: &BackupId) -> Result<Option<Flock<File>>, HoldError> {
        let p = self.lock_path(id);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .ctx("open lock file", &p)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(FsError::new("lock", p, io::Error::from(e)).into()),
        }
    }

    /// True if a live holder owns `id`. Creates nothing: without a lock file there is no
    /// holder (read-only commands leave no files behind).
    pub fn is_live(&self, id: &BackupId) -> Result<bool, HoldError> {
        let p = self.lock_path(id);
        let f = match OpenOptions::new().read(true).open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(FsError::new("open lock file", p, e).into()),
        };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(_) => Ok(false),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
            Err((_, e)) => Err(FsError::new("lock", p, io::Error::from(e)).into()),
        }
    }

    /// [`RunDir::is_live`], giving a holder that is ending (its socket gone or closed) a few
    /// seconds to release its lock, so its record can be settled instead of read half-way.
    pub fn is_live_soon(&self, id: &BackupId) -> Result<bool, HoldError> {
        for _ in 0..50 {
            if !self.is_live(id)? {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(true)
    }

    pub fn read_record(&self, id: &BackupId) -> Result<Option<BackupRecord>, HoldError> {
        let p = self.record_path(id);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| HoldError::BadRecord { path: p, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::new("read", p, e).into()),
        }
    }

    pub fn write_record(&self, rec: &BackupRecord) -> Result<(), HoldError> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(|source| HoldError::Encode {
            what: "the backup record",
            source,
        })?;
        fsutil::write_durable(&self.record_path(&rec.id), &bytes, 0o600)?;
        Ok(())
    }

    /// IDs that have a record, sorted.
    pub fn ids(&self) -> Result<Vec<BackupId>, HoldError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.path).ctx("list", &self.path)? {
            let entry = entry.ctx("list", &self.path)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    pub(super) fn check_socket_len(&self, id: &BackupId) -> Result<(), HoldError> {
        let s = self.socket(id);
        if s.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(HoldError::SocketPathTooLong(s));
        }
        Ok(())
    }
}
