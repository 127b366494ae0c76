//! A backend in a local folder, keeping the durability pgsafe's backups have always had and
//! never following a link below its root.
//!
//! * **Write-once and atomic.** An object is written to a temporary file in its folder (named
//!   with [`TEMP_MARKER`], which no object name may contain, so a file left by a crash is never
//!   listed), then renamed into place with `renameat2(RENAME_NOREPLACE)`, which fails instead of
//!   replacing an existing object; on file systems without it, `link(2)` (which never
//!   replaces either) and `unlink(2)` of the temporary name. When the name is taken, the
//!   temporary file is compared with the object: the same bytes are success, other bytes
//!   [`ErrorKind::Conflict`]. Of two writers racing for one name exactly one creates it.
//! * **Durable.** [`Durability::Immediate`]: fsync the file before the rename, then fsync its
//!   folder and every folder the put created. [`Durability::Deferred`]: none of that;
//!   [`Backend::sync_all`] makes everything durable at once with `syncfs(2)`.
//! * **Contained.** Every component is opened with `openat(2)` and `O_NOFOLLOW` relative to its
//!   parent's descriptor, from a descriptor of the root opened once: a symbolic link (or a
//!   link swapped in after a check) is never followed for reading, writing, listing or deleting.
//!   The root itself is opened as given: the operator named it. Links and special files are not
//!   objects: `list` leaves them out and reading one is [`ErrorKind::NotAnObject`].

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use super::error::{ErrorKind, Result, StorageError, errno_kind};
use super::name::{ObjectName, TEMP_MARKER};
use super::{
    Backend, Durability, Entry, EntryKind, ObjectInfo, ObjectReader, ObjectWriter, PutOptions,
    PutOutcome, same_bytes,
};

/// Mode of folders the backend creates.
const DIR_MODE: u32 = 0o700;
/// Write buffer of an object writer (callers often write in small pieces).
const WRITE_BUFFER: usize = 256 * 1024;

/// Objects as files below a root folder, named by their object names.
#[derive(Debug)]
pub struct LocalBackend {
    root: OwnedFd,
    path: PathBuf,
    /// Makes temporary names unique within the process (with the pid, across processes).
    counter: AtomicU64,
}

impl LocalBackend {
    /// Opens the existing folder `path` (a link in `path` itself is followed).
    pub fn open(path: &Path) -> Result<LocalBackend> {
        let show = path.display();
        let f = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits())
            .open(path)
            .map_err(|e| StorageError::io("open storage folder", show, e))?;
        Ok(LocalBackend {
            root: f.into(),
            path: path.to_path_buf(),
            counter: AtomicU64::new(0),
        })
    }

    /// Opens `path`, creating it (and missing parents, mode 0700) durably when it is missing.
    pub fn create(path: &Path) -> Result<LocalBackend> {
        use std::os::unix::fs::DirBuilderExt;
        let show = path.display();
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
            Ok(()) => {
                let parent = crate::fsutil::parent_dir(path);
                File::open(&parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| StorageError::io("fsync folder", parent.display(), e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(DIR_MODE)
                    .recursive(true)
                    .create(path)
                    .map_err(|e| StorageError::io("create storage folder", &show, e))?;
            }
            Err(e) => return Err(StorageError::io("create storage folder", show, e)),
        }
        LocalBackend::open(path)
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.path
    }

    /// Opens the folders `comps` below the root, without following links. `create`: makes
    /// missing ones, pushing a descriptor of each folder that got a new entry to `created`.
    fn open_dirs(
        &self,
        comps: &[&[u8]],
        create: Option<&mut Vec<OwnedFd>>,
    ) -> std::result::Result<OwnedFd, Errno> {
        let mut fd = self.root.try_clone().map_err(io_errno)?;
        let mut created = create;
        for c in comps {
            let c = OsStr::from_bytes(c);
            let next = match open_dir_at(fd.as_fd(), c) {
                Err(Errno::ENOENT) if created.is_some() => {
                    match mkdirat(fd.as_fd(), c, Mode::from_bits_truncate(DIR_MODE)) {
                        Ok(()) => {
                            if let Some(list) = created.as_deref_mut() {
                                list.push(fd.try_clone().map_err(io_errno)?);
                            }
                        }
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    open_dir_at(fd.as_fd(), c)?
                }
                r => r?,
            };
            fd = next;
        }
        Ok(fd)
    }

    /// The folder holding `name` and the file name in it; for reading, deleting and sizing
    /// (nothing is created).
    fn locate<'n>(
        &self,
        name: &'n ObjectName,
        action: &'static str,
    ) -> Result<(OwnedFd, &'n OsStr)> {
        let comps: Vec<&[u8]> = name.components().collect();
        let (file, dirs) = comps
            .split_last()
            .ok_or_else(|| StorageError::new(ErrorKind::InvalidName, action, name))?;
        let dir = self
            .open_dirs(dirs, None)
            .map_err(|e| self.path_error(e, dirs, action, name))?;
        Ok((dir, OsStr::from_bytes(file)))
    }

    /// The error for a failed walk through `dirs`: a component that is a regular file means
    /// there is no such object (as in object storage); a link or special file is not an object.
    fn path_error(
        &self,
        e: Errno,
        dirs: &[&[u8]],
        action: &'static str,
        name: &ObjectName,
    ) -> StorageError {
        if e == Errno::ENOTDIR {
            // Which component was it? Walk again with fstat (only on this error path).
            let mut fd = self.root.try_clone().ok();
            for c in dirs {
                let Some(dir) = fd.take() else { break };
                let c = OsStr::from_bytes(c);
                match fstatat(dir.as_fd(), c, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if is(&st, SFlag::S_IFREG) => {
                        return StorageError::new(ErrorKind::NotFound, action, name);
                    }
                    Ok(st) if is(&st, SFlag::S_IFDIR) => fd = open_dir_at(dir.as_fd(), c).ok(),
                    _ => break,
                }
            }
        }
        nix_error(e, action, name)
    }

    /// Opens the regular file `name` for reading.
    fn open_object(&self, name: &ObjectName, action: &'static str) -> Result<File> {
        let (dir, file) = self.locate(name, action)?;
        // O_NONBLOCK: opening a FIFO must not wait for a writer; no effect on regular files.
        let fd = openat(
            dir.as_fd(),
            file,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| nix_error(e, action, name))?;
        let f = File::from(fd);
        let meta = f
            .metadata()
            .map_err(|e| StorageError::io(action, name, e))?;
        if meta.is_dir() {
            // A folder is a prefix, not an object.
            return Err(StorageError::new(ErrorKind::NotFound, action, name));
        }
        if !meta.is_file() {
            return Err(StorageError::new(ErrorKind::NotAnObject, action, name));
        }
        Ok(f)
    }

    fn temp_name(&self) -> OsString {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("{TEMP_MARKER}-{}-{n}", std::process::id()))
    }
}

impl Backend for LocalBackend {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        let shown = prefix.map_or_else(|| self.path.display().to_string(), |p| p.to_string());
        let comps: Vec<&[u8]> = prefix.map(|p| p.components().collect()).unwrap_or_default();
        let start = match self.open_dirs(&comps, None) {
            Ok(fd) => fd,
            // Nothing there, or an object rather than a folder: nothing under the prefix.
            Err(Errno::ENOENT) => return Ok(Vec::new()),
            Err(Errno::ENOTDIR) => {
                return match prefix {
                    Some(p) => match self.path_error(Errno::ENOTDIR, &comps, "list", p) {
                        e if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                        e => Err(e),
                    },
                    None => Err(nix_error(Errno::ENOTDIR, "list", shown)),
                };
            }
            Err(e) => return Err(nix_error(e, "list", shown)),
        };
        let base = prefix.map(|p| p.as_bytes().to_vec()).unwrap_or_default();
        let mut out = Vec::new();
        let mut stack = vec![(start, base)];
        while let Some((fd, base)) = stack.pop() {
            let here = String::from_utf8_lossy(&base).into_owned();
            let dir_fd = fd
                .try_clone()
                .map_err(|e| StorageError::io("list", &here, e))?;
            let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| nix_error(e, "list", &here))?;
            let mut names = Vec::new();
            for entry in dir.iter() {
                let entry = entry.map_err(|e| nix_error(e, "list", &here))?;
                let n = entry.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            for n in names {
                let mut full = base.clone();
                if !full.is_empty() {
                    full.push(b'/');
                }
                full.extend_from_slice(&n);
                // Temporary files (being written, or left by a crash) and names no object can
                // have are not objects.
                let Ok(obj) = ObjectName::new(&full) else {
                    continue;
                };
                let c = OsStr::from_bytes(&n);
                let st = match fstatat(dir_fd.as_fd(), c, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    // Deleted while listing.
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(nix_error(e, "list", &obj)),
                };
                if is(&st, SFlag::S_IFDIR) {
                    match open_dir_at(dir_fd.as_fd(), c) {
                        Ok(sub) => stack.push((sub, full)),
                        // Removed, or swapped for a link, since the fstat.
                        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {}
                        Err(e) => return Err(nix_error(e, "list", &obj)),
                    }
                } else if is(&st, SFlag::S_IFREG) {
                    out.push(ObjectInfo {
                        name: obj,
                        size: u64::try_from(st.st_size).unwrap_or(0),
                        modified: mtime(&st),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<Entry>> {
        let comps: Vec<&[u8]> = prefix.components().collect();
        let fd = match self.open_dirs(&comps, None) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Vec::new()),
            Err(Errno::ENOTDIR) => {
                return match self.path_error(Errno::ENOTDIR, &comps, "list", prefix) {
                    e if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                    e => Err(e),
                };
            }
            Err(e) => return Err(nix_error(e, "list", prefix)),
        };
        let dir_fd = fd
            .try_clone()
            .map_err(|e| StorageError::io("list", prefix, e))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| nix_error(e, "list", prefix))?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| nix_error(e, "list", prefix))?;
            let n = entry.file_name().to_bytes();
            if n == b"." || n == b".." || n.starts_with(TEMP_MARKER.as_bytes()) {
                continue;
            }
            let kind = match fstatat(
                dir_fd.as_fd(),
                OsStr::from_bytes(n),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) if is(&st, SFlag::S_IFDIR) => EntryKind::Prefix,
                Ok(st) if is(&st, SFlag::S_IFREG) => EntryKind::Object {
                    size: u64::try_from(st.st_size).unwrap_or(0),
                },
                Ok(_) => EntryKind::NotAnObject,
                // Deleted while listing.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(nix_error(e, "list", prefix)),
            };
            out.push(Entry {
                name: n.to_vec(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        let f = self.open_object(name, "inspect")?;
        let meta = f
            .metadata()
            .map_err(|e| StorageError::io("inspect", name, e))?;
        Ok(meta.len())
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        let mut f = self.open_object(name, "read")?;
        let size = f
            .metadata()
            .map_err(|e| StorageError::io("read", name, e))?
            .len();
        if offset >= size {
            // Nothing there (and lseek refuses offsets past i64::MAX).
            return Ok(Box::new(io::empty()));
        }
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::io("read", name, e))?;
        }
        Ok(match len {
            Some(l) => Box::new(f.take(l)),
            None => Box::new(f),
        })
    }

    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        let comps: Vec<&[u8]> = name.components().collect();
        let Some((file, dirs)) = comps.split_last() else {
            return Err(StorageError::new(ErrorKind::InvalidName, "store", name));
        };
        let mut created = Vec::new();
        let dir = self
            .open_dirs(dirs, Some(&mut created))
            .map_err(|e| nix_error(e, "store", name))?;
        let tmp = self.temp_name();
        let mode = (opts.mode & 0o777) | 0o600;
        let fd = openat(
            dir.as_fd(),
            tmp.as_os_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| nix_error(e, "store", name))?;
        let f = File::from(fd);
        let perms = f.set_permissions(std::fs::Permissions::from_mode(mode));
        // From here dropping the writer removes the temporary file.
        let w = LocalWriter {
            name: name.clone(),
            file_name: OsStr::from_bytes(file).to_os_string(),
            tmp,
            dir,
            created,
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, f)),
            durability: opts.durability,
        };
        // The mode given to open() is filtered by the umask; it is set exactly.
        perms.map_err(|e| StorageError::io("store", name, e))?;
        Ok(Box::new(w))
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        let (dir, file) = match self.locate(name, "delete") {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match fstatat(dir.as_fd(), file, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is(&st, SFlag::S_IFREG) => {}
            Ok(st) if is(&st, SFlag::S_IFDIR) => return Ok(false),
            Ok(_) => return Err(StorageError::new(ErrorKind::NotAnObject, "delete", name)),
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(nix_error(e, "delete", name)),
        }
        match unlinkat(dir.as_fd(), file, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(nix_error(e, "delete", name)),
        }
        fsync_fd(dir.as_fd()).map_err(|e| nix_error(e, "delete", name))?;
        Ok(true)
    }

    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        let comps: Vec<&[u8]> = prefix.components().collect();
        let Some((last, dirs)) = comps.split_last() else {
            return Err(StorageError::new(ErrorKind::InvalidName, "delete", prefix));
        };
        let parent = match self.open_dirs(dirs, None) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(0),
            Err(e) => {
                return match self.path_error(e, dirs, "delete", prefix) {
                    e if e.kind() == ErrorKind::NotFound => Ok(0),
                    e => Err(e),
                };
            }
        };
        let last = OsStr::from_bytes(last);
        let top = match open_dir_at(parent.as_fd(), last) {
            Ok(fd) => fd,
            // Nothing there, or an object or a link rather than a folder: nothing under it.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(0),
            Err(e) => return Err(nix_error(e, "delete", prefix)),
        };
        let dev = nix::sys::stat::fstat(top.as_fd())
            .map_err(|e| nix_error(e, "delete", prefix))?
            .st_dev;
        let deleted = remove_tree(top, dev, prefix, 0)?;
        match unlinkat(parent.as_fd(), last, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                return Err(StorageError::new(ErrorKind::Conflict, "delete", prefix)
                    .with_detail("something wrote into it while it was being deleted"));
            }
            Err(e) => return Err(nix_error(e, "delete", prefix)),
        }
        fsync_fd(parent.as_fd()).map_err(|e| nix_error(e, "delete", prefix))?;
        Ok(deleted)
    }

    fn sync_all(&self) -> Result<()> {
        nix::unistd::syncfs(self.root.as_fd())
            .map_err(|e| nix_error(e, "sync file system of", self.path.display()))
    }

    fn create_folder(&self, name: &ObjectName, mode: u32) -> Result<()> {
        let comps: Vec<&[u8]> = name.components().collect();
        let mut created = Vec::new();
        let dir = self
            .open_dirs(&comps, Some(&mut created))
            .map_err(|e| nix_error(e, "create folder", name))?;
        // The mode given to mkdir() is filtered by the umask; it is set exactly.
        nix::sys::stat::fchmod(dir.as_fd(), Mode::from_bits_truncate(mode & 0o7777))
            .map_err(|e| nix_error(e, "set permissions of", name))
    }

    fn open_file(&self, name: &ObjectName) -> Option<Result<File>> {
        Some(self.open_object(name, "read"))
    }
}

/// A put in progress: the temporary file in the object's folder.
struct LocalWriter {
    name: ObjectName,
    file_name: OsString,
    tmp: OsString,
    dir: OwnedFd,
    /// Folders that got a new entry (a folder this put created) and need an fsync.
    created: Vec<OwnedFd>,
    /// `None` once finished (the temporary name is then gone).
    file: Option<BufWriter<File>>,
    durability: Durability,
}

impl Write for LocalWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(data),
            None => Err(io::Error::other("object already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectWriter for LocalWriter {
    fn local_file(&mut self) -> Option<Result<&File>> {
        let name = &self.name;
        let f = self.file.as_mut()?;
        Some(
            f.flush()
                .map(|()| f.get_ref())
                .map_err(|e| StorageError::io("store", name, e)),
        )
    }

    fn finish(mut self: Box<Self>) -> Result<PutOutcome> {
        let name = self.name.clone();
        let err = |e: Errno| nix_error(e, "store", &name);
        let Some(buf) = self.file.take() else {
            return Err(StorageError::new(ErrorKind::Other, "store", &name));
        };
        // From here the guard removes the temporary name unless it is renamed away.
        let mut guard = TempGuard {
            dir: self.dir.as_fd(),
            tmp: &self.tmp,
            armed: true,
        };
        let mut f = buf
            .into_inner()
            .map_err(|e| StorageError::io("store", &name, e.into_error()))?;
        let durable = self.durability == Durability::Immediate;
        if durable {
            f.sync_all()
                .map_err(|e| StorageError::io("store", &name, e))?;
        }
        let dir = self.dir.as_fd();
        let renamed = renameat2(
            dir,
            &*self.tmp,
            dir,
            &*self.file_name,
            RenameFlags::RENAME_NOREPLACE,
        );
        let placed = match renamed {
            // File systems without RENAME_NOREPLACE: link(2) never replaces either (the
            // guard then removes the temporary name).
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                linkat(dir, &*self.tmp, dir, &*self.file_name, AtFlags::empty())
            }
            Ok(()) => {
                guard.armed = false;
                Ok(())
            }
            Err(e) => Err(e),
        };
        let outcome = match placed {
            Ok(()) => PutOutcome::Created,
            Err(Errno::EEXIST) => {
                let existing = openat(
                    dir,
                    &*self.file_name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(err)?;
                let existing = File::from(existing);
                let meta = existing
                    .metadata()
                    .map_err(|e| StorageError::io("store", &name, e))?;
                if !meta.is_file() {
                    return Err(StorageError::new(ErrorKind::NotAnObject, "store", &name));
                }
                f.seek(SeekFrom::Start(0))
                    .map_err(|e| StorageError::io("store", &name, e))?;
                let same = same_bytes(&mut f, &existing)
                    .map_err(|e| StorageError::io("store", &name, e))?;
                if !same {
                    return Err(StorageError::new(ErrorKind::Conflict, "store", &name));
                }
                if durable {
                    // The object may come from a deferred put not yet synced.
                    existing
                        .sync_all()
                        .map_err(|e| StorageError::io("store", &name, e))?;
                }
                PutOutcome::AlreadyPresent
            }
            Err(e) => return Err(err(e)),
        };
        drop(guard);
        if durable {
            fsync_fd(dir).map_err(err)?;
            for d in &self.created {
                fsync_fd(d.as_fd()).map_err(err)?;
            }
        }
        Ok(outcome)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Unfinished: abort, removing the temporary file.
        if self.file.take().is_some() {
            let _ = unlinkat(self.dir.as_fd(), &*self.tmp, UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// Removes the temporary name when dropped, unless it was renamed away.
struct TempGuard<'a> {
    dir: BorrowedFd<'a>,
    tmp: &'a OsStr,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = unlinkat(self.dir, self.tmp, UnlinkatFlags::NoRemoveDir);
        }
    }
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::result::Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Deepest folder nesting [`remove_tree`] goes into (a PGDATA is a few levels deep; a planted
/// tree deeper than this is refused rather than recursed into without bound).
const MAX_DEPTH: usize = 64;

/// Empties the folder `dir` (on device `dev`; another file system mounted below is refused,
/// not emptied): removes its files, links and special files (never following a link) and
/// its folders, recursively. Returns how many regular files it removed. The caller removes
/// `dir` itself and makes that durable.
fn remove_tree(dir: OwnedFd, dev: u64, shown: &ObjectName, depth: usize) -> Result<u64> {
    if depth > MAX_DEPTH {
        return Err(StorageError::new(ErrorKind::NotAnObject, "delete", shown)
            .with_detail(format!("folders nested deeper than {MAX_DEPTH} levels")));
    }
    let dir_fd = dir
        .try_clone()
        .map_err(|e| StorageError::io("delete", shown, e))?;
    let mut listing = nix::dir::Dir::from_fd(dir).map_err(|e| nix_error(e, "delete", shown))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| nix_error(e, "delete", shown))?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from(OsStr::from_bytes(n)));
        }
    }
    let mut deleted = 0;
    for n in names {
        let st = match fstatat(dir_fd.as_fd(), n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(nix_error(e, "delete", shown)),
        };
        if is(&st, SFlag::S_IFDIR) {
            if st.st_dev != dev {
                return Err(StorageError::new(ErrorKind::NotAnObject, "delete", shown)
                    .with_detail(format!(
                        "{} is another file system's mount point",
                        n.to_string_lossy()
                    )));
            }
            match open_dir_at(dir_fd.as_fd(), &n) {
                Ok(sub) => deleted += remove_tree(sub, dev, shown, depth + 1)?,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(nix_error(e, "delete", shown)),
            }
            match unlinkat(dir_fd.as_fd(), n.as_os_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(nix_error(e, "delete", shown)),
            }
        } else {
            match unlinkat(dir_fd.as_fd(), n.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => {
                    // Objects only: not links, special files, or a crashed put's temporary file.
                    let temp = n
                        .as_bytes()
                        .windows(TEMP_MARKER.len())
                        .any(|w| w == TEMP_MARKER.as_bytes());
                    if is(&st, SFlag::S_IFREG) && !temp {
                        deleted += 1;
                    }
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(nix_error(e, "delete", shown)),
            }
        }
    }
    Ok(deleted)
}

fn fsync_fd(fd: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    nix::unistd::fsync(fd)
}

/// The modification time of a stat (`None` when it does not fit a `SystemTime`).
fn mtime(st: &FileStat) -> Option<std::time::SystemTime> {
    let secs = u64::try_from(st.st_mtime).ok()?;
    let nanos = u32::try_from(st.st_mtime_nsec).ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos.min(999_999_999)))
}

fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

fn io_errno(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))
}

fn nix_error(e: Errno, action: &'static str, name: impl std::fmt::Display) -> StorageError {
    StorageError::new(errno_kind(e), action, name).with_source(io::Error::from(e))
}
