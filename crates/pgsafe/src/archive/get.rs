//! `restore_command`: one file out of the archive, checked, into the path PostgreSQL gave.
//!
//! PostgreSQL asks for files that do not exist as a matter of course: at the start of archive
//! recovery and at every timeline switch it probes for history files of future timelines, and
//! recovery ends when the next segment is missing (src/backend/access/transam/xlogrecovery.c,
//! `XLogFileReadAnyTLI`, `findNewestTimeLine`). A lookup therefore tries the few names the file
//! can be stored under (one per compression), never a listing of the archive, and "not there"
//! is an answer ([`fetch`] gives `None`), not an error.
//!
//! A stored object that is there but fails the checks — it does not decompress (zstd and LZ4
//! frames carry content checksums), it is not exactly one segment long, its first page is not
//! the registered cluster's (magic of its major, system identifier, segment size) or names
//! another address or timeline, a history file does not parse — is an error, never "not
//! there": PostgreSQL would take a missing file for the end of WAL and end recovery early,
//! silently short of its target. Nothing is written to the destination then.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::codec::Compression;
use crate::repo::Registration;
use crate::storage::{
    Backend, ErrorKind, Ident, ObjectName, ObjectReader, StorageError, read_full,
};
use crate::wal::{LONG_HEADER_SIZE, check_segment_header};

use super::push::{TEXT_FILE_LIMIT, check_text};
use super::spool::FileSum;
use super::{ArchiveError, ArchiveFile};

/// Read buffer.
const CHUNK: usize = 256 * 1024;

/// The content of `file` from the archive of `cluster`, decompressed and checked (see the
/// module documentation); `None` when the archive does not have it.
pub fn fetch(
    backend: &dyn Backend,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let Some((object, c, reader)) = open(backend, cluster, file)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    copy_checked(reader, c, &object, cluster, reg, file, &mut out).map_err(|e| match e {
        Failure::Archive(e) => e,
        // Writing to memory does not fail.
        Failure::Write(source) => ArchiveError::Dest {
            path: PathBuf::from("(memory)"),
            source,
        },
    })?;
    Ok(Some(out))
}

/// Restores `file` from the archive of `cluster` to `dest`: written to a temporary file in
/// `dest`'s folder, checked, then renamed to `dest` (PostgreSQL opens it as soon as the command
/// exits, and must never see part of it). `Ok(false)`: the archive does not have the file, and
/// nothing was written.
///
/// Not synced: PostgreSQL makes a restored file durable itself when it keeps it
/// (`KeepFileRestoredFromArchive` in src/backend/access/transam/xlogarchive.c renames it with
/// `durable_rename`), and after a crash recovery asks for the file again.
pub fn get_to(
    backend: &dyn Backend,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    dest: &Path,
) -> Result<bool, ArchiveError> {
    Ok(get_to_summed(backend, cluster, reg, file, dest)?.is_some())
}

/// [`get_to`], also giving the size and CRC-32C of the bytes written to `dest` (taken while
/// they were written, not by reading `dest` again); `None`: not in the archive.
pub fn get_to_summed(
    backend: &dyn Backend,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    dest: &Path,
) -> Result<Option<FileSum>, ArchiveError> {
    let Some((object, c, reader)) = open(backend, cluster, file)? else {
        return Ok(None);
    };
    let tmp = temp_path(dest);
    let dest_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Dest { path, source }
    };
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        // A file of that name is one a killed get of an earlier process with this pid left.
        .truncate(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .map_err(dest_err(&tmp))?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let mut out = io::BufWriter::with_capacity(CHUNK, out);
    let mut summing = Summing {
        out: &mut out,
        sum: FileSum { size: 0, crc32c: 0 },
    };
    copy_checked(reader, c, &object, cluster, reg, file, &mut summing).map_err(|e| match e {
        Failure::Archive(e) => e,
        Failure::Write(source) => ArchiveError::Dest {
            path: tmp.clone(),
            source,
        },
    })?;
    let sum = summing.sum;
    out.flush().map_err(dest_err(&tmp))?;
    drop(out);
    fs::rename(&tmp, dest).map_err(dest_err(dest))?;
    guard.disarm();
    Ok(Some(sum))
}

/// A writer that sums what goes through it.
struct Summing<'a> {
    out: &'a mut dyn Write,
    sum: FileSum,
}

impl Write for Summing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.sum.crc32c = crc32c::crc32c_append(self.sum.crc32c, done);
        self.sum.size += done.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The temporary name beside `dest`: a dot file PostgreSQL ignores in pg_wal, unique per
/// process, in the form a backup never copies (`.<name>.pgsafe-tmp-<pid>`, see
/// `plan::rules`) should a killed get leave it behind.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}.pgsafe-tmp-{}", std::process::id());
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(tmp),
        _ => PathBuf::from(tmp),
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// The stored object of `file`, its compression and a reader of it; `None` when there is none
/// (a lookup of each name it can have, no listing).
fn open<'b>(
    backend: &'b dyn Backend,
    cluster: &Ident,
    file: &ArchiveFile,
) -> Result<Option<(ObjectName, Compression, ObjectReader<'b>)>, ArchiveError> {
    for (stored, c) in file.stored_candidates() {
        let object = crate::layout::wal_object_name(cluster, file.timeline(), &stored)?;
        match backend.read(&object) {
            Ok(r) => return Ok(Some((object, c, r))),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

enum Failure {
    Archive(ArchiveError),
    Write(io::Error),
}

impl From<ArchiveError> for Failure {
    fn from(e: ArchiveError) -> Failure {
        Failure::Archive(e)
    }
}

/// Decompresses `reader` (the object `object`, compression `c`) into `out`, checking it as the
/// file `file` of the registered cluster. Nothing is written to `out` before the first page's
/// header passed its check; the caller discards `out` on error.
fn copy_checked(
    reader: ObjectReader<'_>,
    c: Compression,
    object: &ObjectName,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    out: &mut dyn Write,
) -> Result<u64, Failure> {
    let corrupt = |why: String| {
        Failure::Archive(ArchiveError::Corrupt {
            object: object.to_string(),
            cluster: cluster.to_string(),
            why,
        })
    };
    // A read error is the storage failing (it carries an OS error or a storage error) or the
    // content failing to decompress (the object is damaged).
    let read_err = |e: io::Error| {
        let from_storage = e.raw_os_error().is_some()
            || e.get_ref()
                .is_some_and(|i| i.downcast_ref::<StorageError>().is_some());
        if from_storage {
            Failure::Archive(StorageError::io("read", object, e).into())
        } else {
            corrupt(format!("it does not decompress ({e})"))
        }
    };
    let mut r = c.decoder(reader).map_err(read_err)?;
    let Some(seg) = file.segment().filter(|_| file.is_wal()) else {
        let mut bytes = Vec::new();
        (&mut r)
            .take(TEXT_FILE_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > TEXT_FILE_LIMIT {
            return Err(corrupt(format!(
                "it is larger than such a file can be ({TEXT_FILE_LIMIT} bytes)"
            )));
        }
        check_text(file, &bytes, reg).map_err(corrupt)?;
        out.write_all(&bytes).map_err(Failure::Write)?;
        return Ok(bytes.len() as u64);
    };
    let want = reg.wal_segment_size.bytes();
    let mut buf = vec![0u8; CHUNK];
    let head = read_full(&mut r, &mut buf[..LONG_HEADER_SIZE]).map_err(read_err)?;
    if head < LONG_HEADER_SIZE {
        return Err(corrupt(format!(
            "it holds {head} bytes, a WAL segment of this cluster is {want}"
        )));
    }
    check_segment_header(
        &buf[..LONG_HEADER_SIZE],
        seg,
        reg.wal_segment_size,
        Some(reg.system_identifier),
        Some(reg.server_version.major()),
    )
    .map_err(|e| corrupt(e.to_string()))?;
    out.write_all(&buf[..LONG_HEADER_SIZE])
        .map_err(Failure::Write)?;
    let mut done = LONG_HEADER_SIZE as u64;
    // One byte more than a segment: a longer object is refused, not cut.
    let mut rest = (&mut r).take(want + 1 - done);
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        done += n as u64;
        if done > want {
            return Err(corrupt(format!(
                "it is longer than a WAL segment of this cluster ({want} bytes)"
            )));
        }
        out.write_all(&buf[..n]).map_err(Failure::Write)?;
    }
    if done != want {
        return Err(corrupt(format!(
            "it holds {done} bytes, a WAL segment of this cluster is {want} (truncated)"
        )));
    }
    // The end of the last frame (and its checksum) is read only when reading past the data.
    let mut tail = [0u8; 1];
    match read_full(&mut r, &mut tail).map_err(read_err)? {
        0 => Ok(done),
        _ => Err(corrupt(format!(
            "it is longer than a WAL segment of this cluster ({want} bytes)"
        ))),
    }
}
