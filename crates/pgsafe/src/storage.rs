//! The storage interface: where backups (and later a repository's catalog, WAL archive and
//! leases) are written and read, independent of whether that is a local folder, memory (tests)
//! or object storage.
//!
//! In the spirit of restic's `Backend` and rustic_core's `ReadBackend`/`WriteBackend`, a
//! [`Backend`] is small: list (with sizes) under a prefix, read whole or a range, write, delete.
//! Its promises, which [`conformance`] checks for every implementation:
//!
//! * **Write-once.** A put creates an object; it never replaces one. Putting the same bytes
//!   under an existing name succeeds ([`PutOutcome::AlreadyPresent`]) — a retried upload, a WAL
//!   segment pushed twice — while other bytes fail with [`ErrorKind::Conflict`]: nothing is
//!   modified in place, which keeps an interrupted writer from damaging what was stored and
//!   makes immutable (object-lock) buckets possible.
//! * **Atomic.** An object is visible complete or not at all; a writer dropped or killed before
//!   [`ObjectWriter::finish`] leaves nothing that lists or reads as an object.
//! * **Durable** when [`PutOptions::durability`] asks for it: after `finish` returns the object
//!   survives a crash. [`Durability::Deferred`] puts are made durable together by
//!   [`Backend::sync_all`] (one `syncfs(2)` for the local backend instead of one fsync per file).
//! * **Contained.** Names are [`ObjectName`]s, checked once: no name leaves the backend's root.
//!   The local backend never follows a symbolic link below its root (a backup folder may have
//!   been written by someone else; see docs/threat-model.md).
//! * **Bounded memory.** Large objects are streamed through [`Backend::read_range`] and
//!   [`Backend::writer`]; only [`Backend::get`] and [`Backend::put`] hold an object in memory.
//!   A local backend also hands out its files ([`Backend::open_file`],
//!   [`ObjectWriter::local_file`]) so copies between local files stay kernel copies.
//!
//! Typed keys ([`Key`]) are turned into names in one place ([`key`]). Retrying transient errors
//! ([`Retry`]) and limiting the rate ([`RateLimit`]) are decorators that wrap any backend, as
//! encryption will be. The API is synchronous: pgsafe's engine runs scoped threads, and an
//! object-storage backend drives its asynchronous client internally.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};

pub mod crypt;
pub mod error;
pub mod key;
pub mod local;
pub mod location;
pub mod memory;
pub mod name;
pub mod prefixed;
pub mod ratelimit;
pub mod retry;
pub mod s3;
mod shared;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(test)]
mod tests;

pub use error::{ErrorKind, Result, StorageError};
pub use key::{FileType, Ident, Key};
pub use local::LocalBackend;
pub use location::Location;
pub use memory::MemoryBackend;
pub use name::ObjectName;
pub use prefixed::Prefixed;
pub use ratelimit::RateLimit;
pub use retry::{Retry, RetryPolicy};

/// One object found by [`Backend::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: ObjectName,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, where the storage says (local: the file's mtime);
    /// `None` where it does not. For reports (archive lag), never for decisions.
    pub modified: Option<std::time::SystemTime>,
}

/// What one entry directly under a prefix is, as [`Backend::list_entries`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// An object of this size.
    Object { size: u64 },
    /// A prefix: more objects lie below it (a folder of a local backend).
    Prefix,
    /// Something that is neither (a symbolic link or special file of a local backend): never
    /// followed or read, reported by callers that must account for every entry.
    NotAnObject,
}

/// One entry directly under a prefix: its last name component (bytes as stored; not checked
/// as an object name component, so that odd names can be reported) and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
}

/// What a successful put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An object with the same name and the same bytes was already there; nothing changed.
    AlreadyPresent,
}

/// When a put's object must be on stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// When [`ObjectWriter::finish`] returns (local: fsync the file, rename, fsync the folder).
    #[default]
    Immediate,
    /// Visible atomically at `finish`, durable only after [`Backend::sync_all`]. For the many
    /// files of one backup, which is incomplete until its last metadata object is written
    /// after `sync_all`.
    Deferred,
}

/// How to write one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOptions {
    pub durability: Durability,
    /// Permission bits of the object where the storage has them (the local backend; at least
    /// owner read and write are kept). Ignored by object storage.
    pub mode: u32,
}

impl Default for PutOptions {
    fn default() -> PutOptions {
        PutOptions {
            durability: Durability::Immediate,
            mode: 0o600,
        }
    }
}

impl PutOptions {
    /// Deferred durability (see [`Durability::Deferred`]).
    pub fn deferred() -> PutOptions {
        PutOptions {
            durability: Durability::Deferred,
            ..PutOptions::default()
        }
    }
}

/// A stream that becomes one object when finished. Dropping it unfinished aborts: nothing
/// becomes visible.
pub trait ObjectWriter: Write + Send {
    /// Makes the object visible (write-once: see [`PutOutcome`] and [`ErrorKind::Conflict`]).
    fn finish(self: Box<Self>) -> Result<PutOutcome>;

    /// The file being written, for writers of local backends (`None` for others): kernel
    /// copies and positioned writes go straight into it, and [`ObjectWriter::finish`] still
    /// makes it visible write-once and durably. Bytes written through `Write` before are
    /// flushed to it first.
    fn local_file(&mut self) -> Option<Result<&File>> {
        None
    }
}

/// A reader of an object's bytes.
pub type ObjectReader<'a> = Box<dyn Read + Send + 'a>;

/// A place that stores objects. See the module documentation for the promises every
/// implementation keeps.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The objects under `prefix` (component-wise: `a/b` lists `a/b/c`, not `a/bc`), or all
    /// objects for `None`, sorted by name, with their sizes. A prefix with nothing under it
    /// gives an empty list. Objects being written are not listed.
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>>;

    /// The entries directly under `prefix` (one level, like a listing with a delimiter in
    /// object storage), sorted by name: what a repository's catalog reads instead of every
    /// object of every backup. Temporary files of puts in progress are left out.
    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<Entry>> {
        let mut out: Vec<Entry> = Vec::new();
        let skip = prefix.as_bytes().len() + 1;
        for o in self.list(Some(prefix))? {
            let rest = o.name.as_bytes().get(skip..).unwrap_or_default();
            let (first, deeper) = match rest.iter().position(|b| *b == b'/') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            if out.last().is_some_and(|e| e.name == first) {
                continue;
            }
            out.push(Entry {
                name: first.to_vec(),
                kind: if deeper {
                    EntryKind::Prefix
                } else {
                    EntryKind::Object { size: o.size }
                },
            });
        }
        // Whole names sort "a.x" before "a/b": sort by the component.
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The size of one object.
    fn size(&self, name: &ObjectName) -> Result<u64>;

    /// A reader of `len` bytes from `offset` (to the end for `None`). The range is cut at the
    /// object's end: a range reaching past it gives the bytes up to the end, one starting at
    /// or past the end gives none.
    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>>;

    /// Starts writing the object `name`; see [`ObjectWriter`].
    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>>;

    /// Deletes one object; `Ok(false)` when there was none.
    fn delete(&self, name: &ObjectName) -> Result<bool>;

    /// Deletes every object under `prefix` (component-wise, as [`Backend::list`] takes it) and,
    /// where the storage has folders, the folders under it and `prefix`'s own folder; returns
    /// how many objects it deleted. For removing a whole backup: its removal is durable when
    /// this returns, but the objects under it go in no particular order, so a caller that must
    /// make one object disappear first (a backup's completion marker) deletes it with
    /// [`Backend::delete`] before. A missing prefix deletes nothing.
    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        let mut deleted = 0;
        for o in self.list(Some(prefix))? {
            if self.delete(&o.name)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Makes every [`Durability::Deferred`] put finished so far durable.
    fn sync_all(&self) -> Result<()> {
        Ok(())
    }

    /// Creates the folder `name` (and missing parents) if it is missing, and sets its
    /// permission bits to `mode`, for backends that have folders (a local folder: a backup's
    /// empty directories, such as `pg_wal/archive_status`, must exist in a copy that restores
    /// as it is). Durable with the next [`Backend::sync_all`]. A folder is not an object: it
    /// is never listed, and objects can be put under it. Object storage has no folders: a
    /// no-op.
    fn create_folder(&self, _name: &ObjectName, _mode: u32) -> Result<()> {
        Ok(())
    }

    /// The object as an open file, for backends that keep objects as local files: kernel
    /// copies (`copy_file_range`) and file checks (the link count) without a copy through
    /// user space. The file is opened as [`Backend::read`] opens it (never through a link).
    /// `None`: not a local backend (use [`Backend::read_range`]).
    fn open_file(&self, _name: &ObjectName) -> Option<Result<File>> {
        None
    }

    /// A reader of the whole object.
    fn read(&self, name: &ObjectName) -> Result<ObjectReader<'_>> {
        self.read_range(name, 0, None)
    }

    /// The whole object in memory; an object larger than `limit` is an error (a stored file
    /// that cannot be that large was planted or damaged).
    fn get(&self, name: &ObjectName, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read(name)?
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| StorageError::io("read", name, e))?;
        if out.len() as u64 > limit {
            return Err(StorageError::new(ErrorKind::Other, "read", name)
                .with_detail(format!("larger than {limit} bytes, more than it can be")));
        }
        Ok(out)
    }

    /// `len` bytes from `offset` in memory, cut at the object's end as in
    /// [`Backend::read_range`].
    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_range(name, offset, Some(len))?
            .read_to_end(&mut out)
            .map_err(|e| StorageError::io("read", name, e))?;
        Ok(out)
    }

    /// Writes `bytes` as the object `name`.
    fn put(&self, name: &ObjectName, bytes: &[u8], opts: PutOptions) -> Result<PutOutcome> {
        let mut w = self.writer(name, opts)?;
        w.write_all(bytes)
            .map_err(|e| StorageError::io("store", name, e))?;
        w.finish()
    }

    /// Writes everything `src` gives as the object `name`, streaming.
    fn put_from(
        &self,
        name: &ObjectName,
        src: &mut dyn Read,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        let mut w = self.writer(name, opts)?;
        io::copy(src, &mut w).map_err(|e| StorageError::io("store", name, e))?;
        w.finish()
    }
}

/// Compares two streams to their ends, in chunks (a write-once put compares what it wrote with
/// what was there without holding either in memory).
pub(crate) fn same_bytes(mut a: impl Read, mut b: impl Read) -> io::Result<bool> {
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb[..n.max(1)])?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the stream ends.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
