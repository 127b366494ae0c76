//! Opening files inside a directory tree that someone else may have written — a backup folder —
//! without following symbolic links below it.
//!
//! pgsafe never stores a symbolic link in a backup (tablespaces are stored as directories under
//! `pg_tblspc/<oid>/`), so a link in a backup folder was planted. Following it would let the
//! folder's writer choose what `pgsafe restore`, often run as root, reads and hands to the
//! database user (see docs/threat-model.md). The folder itself is opened as given: the
//! operator named it. Every component below it is opened with `openat(2)` and `O_NOFOLLOW`
//! relative to its parent's descriptor, so a link swapped in after a check is not followed
//! either (a check by path, then an open by path, could be raced).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// A directory whose entries are opened without following symbolic links.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    /// Opens the directory `root` (following links in `root` itself; it must be a directory,
    /// so a FIFO there fails instead of blocking).
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags(OFlag::O_DIRECTORY | OFlag::O_CLOEXEC))
            .open(root)?;
        Ok(Beneath { root: f.into() })
    }

    /// Opens the regular file `rel` (relative, no `.`/`..`) for reading. A symbolic link in any
    /// component, a `..` or absolute path, or something other than a regular file at the end
    /// is an error (`NotFound` only when a component does not exist).
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        let parts = components(rel)?;
        let mut fd: Option<OwnedFd> = None;
        for (i, name) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            // O_NONBLOCK: opening a FIFO for reading must not wait for a writer; it has no
            // effect on regular files.
            let flags = OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | if last {
                    OFlag::O_NONBLOCK
                } else {
                    OFlag::O_DIRECTORY
                };
            let dir = fd.as_ref().unwrap_or(&self.root);
            let next = openat(dir, *name, flags, Mode::empty())
                .map_err(|e| open_error(e, rel, &parts[..=i], last))?;
            fd = Some(next);
        }
        let Some(fd) = fd else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        };
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a regular file", rel.display()),
            ));
        }
        Ok(file)
    }

    /// Reads the whole regular file `rel`, at most `limit` bytes (more is an error);
    /// `Ok(None)` when it does not exist.
    pub fn read_small(&self, rel: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let f = match self.open_file(rel) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        f.take(limit.saturating_add(1)).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is larger than {limit} bytes, more than such a file can be",
                    rel.display()
                ),
            ));
        }
        Ok(Some(out))
    }
}

fn libc_flags(f: OFlag) -> i32 {
    f.bits()
}

/// The components of a relative path without `.`/`..`.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: only relative paths without \"..\" are opened inside a backup",
                        rel.display()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// A clear message for a link (`ELOOP` from `O_NOFOLLOW`; `ENOTDIR` from `O_DIRECTORY` on a
/// link to a file).
fn open_error(e: Errno, rel: &Path, upto: &[&OsStr], last: bool) -> io::Error {
    let at: std::path::PathBuf = upto.iter().collect();
    if e == Errno::ELOOP || (e == Errno::ENOTDIR && !last) {
        return io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is a symbolic link or not a directory (opening {}): pgsafe does not follow \
                 links inside a backup",
                at.display(),
                rel.display()
            ),
        );
    }
    io::Error::from(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("backup");
        fs::create_dir_all(root.join("base/1")).unwrap();
        fs::write(root.join("base/1/112"), b"data").unwrap();
        fs::write(d.path().join("secret"), b"secret").unwrap();
        fs::create_dir(d.path().join("elsewhere")).unwrap();
        fs::write(d.path().join("elsewhere/x"), b"x").unwrap();
        symlink(d.path().join("secret"), root.join("base/1/113")).unwrap();
        symlink(d.path().join("elsewhere"), root.join("base/2")).unwrap();
        let b = Beneath::open(&root).unwrap();
        let mut s = String::new();
        b.open_file(Path::new("base/1/112"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "data");
        let e = b.open_file(Path::new("base/1/113")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = b.open_file(Path::new("base/2/x")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        for bad in ["../secret", "/etc/passwd", "base/../base/1/112", ""] {
            assert!(b.open_file(Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            b.open_file(Path::new("base/1/nope")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(b.open_file(Path::new("base")).is_err(), "a directory");
        assert_eq!(b.read_small(Path::new("nope"), 10).unwrap(), None);
        assert!(b.read_small(Path::new("base/1/112"), 3).is_err());
        assert_eq!(
            b.read_small(Path::new("base/1/112"), 4).unwrap().unwrap(),
            b"data"
        );
    }

    #[test]
    fn a_fifo_does_not_block() {
        let d = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&d.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let b = Beneath::open(d.path()).unwrap();
        let e = b.open_file(Path::new("fifo")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(Beneath::open(&d.path().join("fifo")).is_err());
    }
}
