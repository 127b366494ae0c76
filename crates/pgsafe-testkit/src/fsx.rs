//! File-system helpers: tree copies (tolerant of files that vanish while a server runs),
//! ownership changes, and a build-once cache shared by concurrent test processes.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::geteuid;

use crate::user::{ServerUser, server_user};

/// What to do with one entry while copying a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Copy,
    Skip,
    /// A directory whose contents are left out (created empty).
    EmptyDir,
}

/// Copies the tree `src` to `dst` (which must not exist), keeping permissions and symlinks (not
/// following them), giving every created entry to `owner` if given. Entries that vanish during the
/// copy (a running server deletes files) are skipped.
pub fn copy_tree(src: &Path, dst: &Path, owner: Option<&ServerUser>) -> io::Result<()> {
    copy_tree_filtered(src, dst, owner, &|_, _| Entry::Copy)
}

/// [`copy_tree`] with a filter that sees each entry's path relative to `src` and whether it is a
/// directory.
pub(crate) fn copy_tree_filtered(
    src: &Path,
    dst: &Path,
    owner: Option<&ServerUser>,
    filter: &dyn Fn(&Path, bool) -> Entry,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            src.display()
        )));
    }
    fs::create_dir(dst)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    if let Some(o) = owner {
        o.chown(dst);
    }
    copy_dir_contents(src, dst, Path::new(""), owner, filter)
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    rel: &Path,
    owner: Option<&ServerUser>,
    filter: &dyn Fn(&Path, bool) -> Entry,
) -> io::Result<()> {
    let entries = match fs::read_dir(src) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let name = entry.file_name();
        let (from, to, rel) = (src.join(&name), dst.join(&name), rel.join(&name));
        let meta = match fs::symlink_metadata(&from) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let action = filter(&rel, meta.is_dir());
        if action == Entry::Skip {
            continue;
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            if let Some(o) = owner {
                o.chown(&to);
            }
            if action == Entry::Copy {
                copy_dir_contents(&from, &to, &rel, owner, filter)?;
            }
        } else if ft.is_symlink() {
            let target = match fs::read_link(&from) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            std::os::unix::fs::symlink(target, &to)?;
            if let Some(o) = owner {
                o.chown(&to);
            }
        } else if ft.is_file() {
            match fs::copy(&from, &to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && !to.exists() => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("copy {}: {e}", from.display()),
                    ));
                }
            }
            if let Some(o) = owner {
                o.chown(&to);
            }
        }
        // Sockets, fifos and devices do not belong in a data directory: skipped.
    }
    Ok(())
}

/// Gives the whole tree at `path` (not following symlinks) to the server user.
pub(crate) fn chown_tree(path: &Path, user: &ServerUser) -> io::Result<()> {
    if user.is_current {
        return Ok(());
    }
    user.chown(path);
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// Adds read (and, for folders and executables, traverse) permission for everybody.
pub(crate) fn make_world_readable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = meta.mode() & 0o7777;
    let extra = if meta.is_dir() || mode & 0o100 != 0 {
        0o055
    } else {
        0o044
    };
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | extra));
    if meta.is_dir()
        && let Ok(rd) = fs::read_dir(path)
    {
        for e in rd.flatten() {
            make_world_readable(&e.path());
        }
    }
}

/// A temporary folder owned by the server user, in [`scratch_root`] (for restore targets and the
/// like: anything a test server will use). Removed on drop.
pub fn server_owned_tempdir() -> tempfile::TempDir {
    let root = scratch_root();
    let dir = tempfile::Builder::new()
        .prefix("pgsafe-test-")
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("creating a temp dir in {}: {e}", root.display()));
    server_user().chown(dir.path());
    dir
}

/// Where cluster data directories (and [`server_owned_tempdir`]s) go: `$PGSAFE_TEST_TMPDIR` if
/// set; else `/dev/shm` when it is a tmpfs with at least 4 GiB free (writing dozens of fresh
/// data directories to disk is the slowest part of the suite, and crash tests only kill
/// processes, which tmpfs survives like any file system); else the temp folder (`$TMPDIR`).
pub fn scratch_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(d) = std::env::var_os("PGSAFE_TEST_TMPDIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        let shm = Path::new("/dev/shm");
        let is_tmpfs = nix::sys::statfs::statfs(shm)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let free = nix::sys::statvfs::statvfs(shm)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .unwrap_or(0);
        let writable = tempfile::Builder::new()
            .prefix("pgsafe-probe-")
            .tempdir_in(shm)
            .is_ok();
        if is_tmpfs && free >= 4 << 30 && writable {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

/// This user's cache folder in the temp folder (templates, mirrored binaries), mode 0755.
pub(crate) fn shared_cache_dir() -> PathBuf {
    let euid = geteuid();
    let dir = std::env::temp_dir().join(format!("pgsafe-testkit-{euid}"));
    match fs::create_dir(&dir) {
        Ok(()) => {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("creating {}: {e}", dir.display()),
    }
    let meta = fs::symlink_metadata(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    if !meta.is_dir() || meta.uid() != euid.as_raw() {
        panic!(
            "{} is not a folder owned by uid {euid}; remove it",
            dir.display()
        );
    }
    dir
}

/// Makes `dest` exist exactly once across threads and processes: under an exclusive lock on
/// `<dest>.lock`, if `dest` is missing, `build` fills a fresh temporary sibling folder which is
/// then renamed to `dest` (atomically: a killed build never leaves a half-made `dest`).
pub(crate) fn build_once(dest: &Path, build: impl FnOnce(&Path)) {
    if dest.is_dir() {
        return;
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock_path = dest.with_file_name(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", lock_path.display()));
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", lock_path.display()));
    if dest.is_dir() {
        return;
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = dest.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755));
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(self.0);
        }
    }
    let cleanup = Cleanup(&tmp);
    build(&tmp);
    fs::rename(&tmp, dest)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), dest.display()));
    std::mem::forget(cleanup);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_keeps_modes_and_links_and_honours_filters() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir_all(s.join("a/b")).unwrap();
        fs::write(s.join("a/b/f"), b"hello").unwrap();
        fs::set_permissions(s.join("a/b/f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir(s.join("skipme")).unwrap();
        fs::write(s.join("skipme/x"), b"x").unwrap();
        fs::create_dir(s.join("emptyme")).unwrap();
        fs::write(s.join("emptyme/x"), b"x").unwrap();
        std::os::unix::fs::symlink("a/b/f", s.join("link")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let d = dst.path().join("copy");
        copy_tree_filtered(s, &d, None, &|rel, _| match rel.to_str() {
            Some("skipme") => Entry::Skip,
            Some("emptyme") => Entry::EmptyDir,
            _ => Entry::Copy,
        })
        .unwrap();
        assert_eq!(fs::read(d.join("a/b/f")).unwrap(), b"hello");
        assert_eq!(fs::metadata(d.join("a/b/f")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_link(d.join("link")).unwrap(), Path::new("a/b/f"));
        assert!(!d.join("skipme").exists());
        assert!(d.join("emptyme").is_dir() && !d.join("emptyme/x").exists());
    }

    #[test]
    fn build_once_builds_once() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("thing");
        let count = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    build_once(&dest, |tmp| {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        fs::write(tmp.join("f"), b"x").unwrap();
                    })
                });
            }
        });
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(dest.join("f").is_file());
    }
}
