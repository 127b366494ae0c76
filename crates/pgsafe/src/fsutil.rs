//! Durable file-system primitives. A file pgsafe promises to keep (a `backup_label`, a manifest,
//! a completion marker) is written to a temporary name in the same directory, fsynced, renamed
//! over the final name, and then the directory is fsynced so the rename itself survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::info::FileOwner;

/// An IO failure with the verb phrase of what was being done and the path it was done to.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> FsError {
        FsError {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Adds the action and path to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, FsError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, FsError> {
        self.map_err(|e| FsError::new(action, path, e))
    }
}

/// Writes `bytes` to `path` durably: temporary file in the same directory (mode `mode`), write,
/// fsync, rename over `path`, fsync the directory. Readers see the old content or the new one,
/// never a mix, and after return the new content survives a crash.
pub fn write_durable(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.pgsafe-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .ctx("create", &tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .ctx("set permissions of", &tmp)?;
        f.write_all(bytes).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        fs::rename(&tmp, path).ctx("rename into place", path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory, making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` (and parents) if missing; then requires it to be owned by the current user and
/// not accessible to group or others, creating it with mode 0700. Returns a clear error for a
/// directory someone else could read or tamper with.
pub fn ensure_private_dir(dir: &Path) -> Result<(), FsError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ctx("create", dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .ctx("set permissions of", dir)?;
    }
    let meta = fs::symlink_metadata(dir).ctx("inspect", dir)?;
    let uid = nix::unistd::geteuid().as_raw();
    let problem = if !meta.is_dir() {
        Some("it is not a directory (or is a symbolic link)".to_owned())
    } else if meta.uid() != uid {
        Some(format!(
            "it is owned by uid {}, not by the current user (uid {uid})",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "its mode is {:04o}; group and others must have no access (chmod 700 it)",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(FsError::new(
            "use private directory",
            dir,
            io::Error::new(io::ErrorKind::PermissionDenied, p),
        )),
        None => Ok(()),
    }
}

/// The owner of `path`, as `pgsafe.json` records PGDATA's (`None` if it cannot be inspected).
pub fn file_owner(path: &Path) -> Option<FileOwner> {
    use nix::unistd::{Gid, Group, Uid, User};
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(FileOwner {
        uid: m.uid(),
        gid: m.gid(),
        user: User::from_uid(Uid::from_raw(m.uid()))
            .ok()
            .flatten()
            .map(|u| u.name),
        group: Group::from_gid(Gid::from_raw(m.gid()))
            .ok()
            .flatten()
            .map(|g| g.name),
    })
}

/// An absolute path without `.`/`..` components (as PostgreSQL writes tablespace locations).
pub fn is_plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !p.as_os_str().as_encoded_bytes().contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_absolute_paths() {
        assert!(is_plain_absolute(Path::new("/srv/ts1")));
        assert!(is_plain_absolute(Path::new("/srv/ts dir/")));
        for bad in ["srv/ts", "/tmp/a/../etc", "../x", "", "/a/.."] {
            assert!(!is_plain_absolute(Path::new(bad)), "{bad}");
        }
    }
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn durable_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("backup_label");
        write_durable(&p, b"one\n", 0o600).unwrap();
        write_durable(&p, b"two\n", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file may remain");
    }

    #[test]
    fn durable_write_reports_the_path_on_failure() {
        let err = write_durable(Path::new("/nonexistent-dir/x"), b"", 0o600).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/"), "{err}");
    }

    #[test]
    fn private_dir_is_created_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("a/b");
        ensure_private_dir(&run).unwrap();
        assert_eq!(fs::metadata(&run).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&run).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }
}
