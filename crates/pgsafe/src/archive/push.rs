//! `archive_command`: one file of `pg_wal` into the archive, checked, compressed, write-once and
//! durably.
//!
//! PostgreSQL removes or recycles a segment once `archive_command` exits 0 (src/backend/
//! postmaster/pgarch.c), so success means the file is on stable storage under its final name:
//! the object is written to a temporary name, synced, renamed without replacing anything and
//! its folder synced ([`crate::storage::local`]). Anything else is a non-zero exit, and
//! PostgreSQL keeps the file and tries again.
//!
//! The file is read as a stream (a segment is exactly the registered segment size; memory stays
//! a few buffers whatever that size) and checked before anything is stored: a segment's first
//! page must carry the long header of the registered cluster — page magic of its major version,
//! system identifier, segment size — with the address and timeline its name says (a renamed or
//! recycled file, a zero page or another cluster's WAL are refused); history and backup history
//! files must parse and name what their file name says.
//!
//! Pushing a file that is already stored (PostgreSQL retries after a crash between storing and
//! recording success) compares the decompressed content with the stored object, under any
//! compression: the same bytes are success; other bytes are a loud error that changes nothing
//! (a split brain, or a restored copy archiving into its source's archive).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::codec::{Compression, DEFAULT_ZSTD_LEVEL};
use crate::label::BackupLabel;
use crate::repo::Registration;
use crate::storage::crypt::is_key_unavailable;
use crate::storage::{Backend, ErrorKind, Ident, ObjectName, PutOptions, PutOutcome};
use crate::wal::{LONG_HEADER_SIZE, TimelineHistory, check_segment_header};

use super::spool::FileSum;
use super::{ArchiveError, ArchiveFile};

/// Largest history or backup history file accepted (both are a few lines of text; a timeline
/// history grows by one line per timeline).
pub(crate) const TEXT_FILE_LIMIT: u64 = 1 << 20;
/// Read and write buffer.
const CHUNK: usize = 256 * 1024;

/// How to push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushOptions {
    /// Compression of segments (history and backup history files are stored as they are).
    pub compression: Compression,
}

impl Default for PushOptions {
    /// zstd level 1, with content checksums: fast enough to keep up with WAL generation on one
    /// core, and a damaged object is detected when it is read back.
    fn default() -> PushOptions {
        PushOptions {
            compression: Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            },
        }
    }
}

/// What a successful push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was stored (durably).
    Stored,
    /// The archive already held this file with the same content; nothing changed.
    AlreadyPresent,
}

/// Pushes `src`, the file PostgreSQL names `file`, into the archive of `cluster` (registered as
/// `reg`) in `backend`. Returns only when the file is durably stored (or already was).
pub fn push_file(
    backend: &dyn Backend,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    src: &Path,
    opts: &PushOptions,
) -> Result<PushOutcome, ArchiveError> {
    push_file_summed(backend, cluster, reg, file, src, opts).map(|p| p.outcome)
}

/// What [`push_file_summed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub outcome: PushOutcome,
    /// The object that holds the file (`None` when it was found already stored, possibly
    /// under more than one name, or another push's object was kept: look it up).
    pub object: Option<ObjectName>,
    /// Size and CRC-32C of the bytes read from the file and stored, taken while they were
    /// read (`None` when the file was already stored: it was compared, not stored).
    pub sum: Option<FileSum>,
}

/// [`push_file`], also saying which object holds the file and the sum of the bytes stored
/// (for look-ahead acknowledgements, without a second read of the file).
pub fn push_file_summed(
    backend: &dyn Backend,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    src: &Path,
    opts: &PushOptions,
) -> Result<Pushed, ArchiveError> {
    let source = |e| ArchiveError::Source {
        path: src.to_owned(),
        source: e,
    };
    let refused = |why: String| ArchiveError::Refused {
        file: file.to_string(),
        cluster: cluster.to_string(),
        why,
    };
    // Not following a symlink (PostgreSQL's own files in pg_wal never are one: a link is
    // planted, and a history file's parse error would quote the first line of what it points
    // at into the server log) and not waiting on a FIFO (opening one for reading blocks until
    // a writer comes, and PostgreSQL's archiver would wait forever); both refused below.
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(src)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(refused(format!(
                "{} is a symbolic link, not a file PostgreSQL wrote",
                src.display()
            )));
        }
        Err(e) => return Err(source(e)),
    };
    let meta = f.metadata().map_err(source)?;
    if !meta.is_file() {
        return Err(refused(format!("{} is not a regular file", src.display())));
    }
    let size = meta.len();
    // What is stored: a WAL file streamed from `f`, a text file from memory.
    let text = if let Some(seg) = file.segment().filter(|_| file.is_wal()) {
        let want = reg.wal_segment_size.bytes();
        if size != want {
            return Err(refused(format!(
                "the file is {size} bytes, but a WAL segment of this cluster is exactly {want} \
                 bytes ({}){}",
                reg.wal_segment_size,
                if size < want {
                    " (truncated, or still being written?)"
                } else {
                    ""
                }
            )));
        }
        let mut head = [0u8; LONG_HEADER_SIZE];
        f.read_exact(&mut head).map_err(source)?;
        check_segment_header(
            &head,
            seg,
            reg.wal_segment_size,
            Some(reg.system_identifier),
            Some(reg.server_version.major()),
        )
        .map_err(|e| refused(e.to_string()))?;
        f.seek(SeekFrom::Start(0)).map_err(source)?;
        None
    } else {
        if size > TEXT_FILE_LIMIT {
            return Err(refused(format!(
                "the file is {size} bytes, more than a {} file can be ({TEXT_FILE_LIMIT} bytes)",
                kind_name(file)
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut f)
            .take(TEXT_FILE_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(source)?;
        check_text(file, &bytes, reg).map_err(refused)?;
        Some(bytes)
    };

    // Already there, under any compression? Every name is compared: a push killed between
    // writing its object and settling (below) can have left a second one.
    let c = file.stored_compression(opts.compression);
    let object = file.object_name(cluster, c)?;
    let mut present = None;
    for (stored, sc) in file.stored_candidates() {
        let other = crate::layout::wal_object_name(cluster, file.timeline(), &stored)?;
        match compare_stored(backend, cluster, file, &other, sc, &mut f, &text) {
            Ok(Some(outcome)) => present = Some(outcome),
            Ok(None) => {}
            // A host holding only public keys (docs/encryption.md) cannot read what is
            // stored under the name it writes: the write-once put below tells the same bytes
            // from others by the stored object's identity tag instead.
            Err(ArchiveError::Storage(e)) if other == object && is_key_unavailable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(outcome) = present {
        return Ok(Pushed {
            outcome,
            object: None,
            sum: None,
        });
    }

    let mut sum = FileSum { size: 0, crc32c: 0 };
    let mut summary = super::summarize::PushSummary::start(file, reg);
    let put = {
        let writer = backend.writer(&object, PutOptions::default())?;
        let store = |e: io::Error| crate::storage::StorageError::io("store", &object, e);
        let mut sink = c.encoder(writer).map_err(store)?;
        match &text {
            Some(bytes) => {
                sink.write_all(bytes).map_err(store)?;
                sum = FileSum {
                    size: bytes.len() as u64,
                    crc32c: crc32c::crc32c(bytes),
                };
            }
            None => {
                let want = reg.wal_segment_size.bytes();
                let copied = copy_limited(&mut f, want, |buf| {
                    sum.crc32c = crc32c::crc32c_append(sum.crc32c, buf);
                    sum.size += buf.len() as u64;
                    summary.feed(buf);
                    sink.write_all(buf)
                })
                .map_err(|e| match e {
                    Copy::Read(e) => source(e),
                    Copy::Write(e) => ArchiveError::Storage(store(e)),
                })?;
                if copied != want {
                    // Dropping the sink and its writer stores nothing.
                    return Err(refused(format!(
                        "the file changed while it was read ({copied} bytes instead of {want})"
                    )));
                }
            }
        }
        let mut writer = sink.finish().map_err(store)?;
        writer.flush().map_err(store)?;
        writer.finish()
    };
    let pushed = |outcome, sum| Pushed {
        outcome,
        object: Some(object.clone()),
        sum,
    };
    match put {
        Ok(PutOutcome::Created) => match settle(backend, cluster, file, &object, &mut f, &text)? {
            PushOutcome::Stored => {
                summary.store(backend, cluster);
                Ok(pushed(PushOutcome::Stored, Some(sum)))
            }
            // Ours was removed: the same bytes were already stored under another name.
            PushOutcome::AlreadyPresent => Ok(Pushed {
                outcome: PushOutcome::AlreadyPresent,
                object: None,
                sum: None,
            }),
        },
        Ok(PutOutcome::AlreadyPresent) => Ok(pushed(PushOutcome::AlreadyPresent, Some(sum))),
        // Another push of the same file won the race with other compressed bytes (another
        // level): compare what it stored.
        Err(e) if e.kind() == ErrorKind::Conflict => {
            match compare_stored(backend, cluster, file, &object, c, &mut f, &text) {
                Ok(Some(outcome)) => Ok(pushed(outcome, None)),
                Ok(None) => Err(e.into()),
                // Unreadable here (public keys only), and its identity tag differs.
                Err(ArchiveError::Storage(u)) if is_key_unavailable(&u) => {
                    Err(ArchiveError::Conflict {
                        file: file.to_string(),
                        cluster: cluster.to_string(),
                        object: object.to_string(),
                    })
                }
                Err(other) => Err(other),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// After `ours` was created: write-once across the names a file can be stored under. Another
/// push of the file with another compression (PostgreSQL's retry racing a push it gave up on,
/// or two servers archiving as one cluster) may have found no object either and written its
/// own name at the same time. So each push, after writing, compares the other names:
/// * other bytes: ours is removed and this push fails as a Conflict. Of two pushes of
///   different bytes, the one that looks second sees the other's object (each writes before
///   it looks), so at most one succeeds, and what stays is what it stored;
/// * the same bytes under a name looked up before ours (the order archive-get tries): ours is
///   removed, the file is already archived; under a name looked up after ours: that object is
///   removed (the same bytes stay under ours). The first name of the lookup order is never
///   removed for the same bytes, so one object of the file always stays.
fn settle(
    backend: &dyn Backend,
    cluster: &Ident,
    file: &ArchiveFile,
    ours: &ObjectName,
    f: &mut File,
    text: &Option<Vec<u8>>,
) -> Result<PushOutcome, ArchiveError> {
    // Every other name first (other bytes anywhere decide before the same bytes do).
    let mut same = Vec::new();
    let mut before_ours = true;
    for (stored, c) in file.stored_candidates() {
        let other = crate::layout::wal_object_name(cluster, file.timeline(), &stored)?;
        if other == *ours {
            before_ours = false;
            continue;
        }
        match compare_stored(backend, cluster, file, &other, c, f, text) {
            Ok(None) => {}
            Ok(Some(_)) => same.push((other, before_ours)),
            Err(e) if e.is_conflict() => {
                backend.delete(ours)?;
                backend.sync_all()?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    if same.is_empty() {
        return Ok(PushOutcome::Stored);
    }
    if same.iter().any(|(_, before)| *before) {
        backend.delete(ours)?;
        backend.sync_all()?;
        return Ok(PushOutcome::AlreadyPresent);
    }
    for (other, _) in &same {
        backend.delete(other)?;
    }
    backend.sync_all()?;
    Ok(PushOutcome::Stored)
}

fn kind_name(file: &ArchiveFile) -> &'static str {
    match file {
        ArchiveFile::Segment(_) => "WAL segment",
        ArchiveFile::Partial(_) => "partial WAL segment",
        ArchiveFile::History(_) => "timeline history",
        ArchiveFile::BackupHistory { .. } => "backup history",
    }
}

/// Checks a history or backup history file's content against its name (and the
/// registration); the reason when it does not match.
pub(crate) fn check_text(
    file: &ArchiveFile,
    bytes: &[u8],
    reg: &Registration,
) -> Result<(), String> {
    match file {
        ArchiveFile::History(tli) => TimelineHistory::parse(*tli, bytes)
            .map(|_| ())
            .map_err(|e| format!("not a valid timeline history file: {e}")),
        ArchiveFile::BackupHistory { segment, offset } => {
            let label = BackupLabel::parse(bytes)
                .map_err(|e| format!("not a valid backup history file: {e}"))?;
            let start = label.fields().start;
            let seg_size = reg.wal_segment_size.bytes();
            let at = start.lsn.0 % seg_size;
            let named =
                crate::types::WalSegment::containing(start.lsn, segment.tli, reg.wal_segment_size);
            if start.file != *segment || named != *segment || at != u64::from(*offset) {
                return Err(format!(
                    "it records a backup starting at {} (file {}), not where its name says",
                    start.lsn, start.file
                ));
            }
            if label.fields().stop.is_none() {
                return Err(
                    "it has no STOP WAL LOCATION: a backup_label, not a backup history file".into(),
                );
            }
            Ok(())
        }
        ArchiveFile::Segment(_) | ArchiveFile::Partial(_) => Ok(()),
    }
}

/// Compares the stored object `object` (compression `c`), if there is one, with the file being
/// pushed: `None` when there is no such object.
fn compare_stored(
    backend: &dyn Backend,
    cluster: &Ident,
    file: &ArchiveFile,
    object: &ObjectName,
    c: Compression,
    f: &mut File,
    text: &Option<Vec<u8>>,
) -> Result<Option<PushOutcome>, ArchiveError> {
    let reader = match backend.read(object) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |e: io::Error| ArchiveError::Corrupt {
        object: object.to_string(),
        cluster: cluster.to_string(),
        why: format!(
            "the stored copy of {file} cannot be read back to compare it with the file being \
             archived: {e}"
        ),
    };
    let decoded = c.decoder(reader).map_err(corrupt)?;
    let same = match text {
        Some(bytes) => crate::storage::same_bytes(decoded, &bytes[..]),
        None => {
            f.seek(SeekFrom::Start(0)).map_err(corrupt)?;
            crate::storage::same_bytes(decoded, &mut *f)
        }
    }
    .map_err(corrupt)?;
    if !same {
        return Err(ArchiveError::Conflict {
            file: file.to_string(),
            cluster: cluster.to_string(),
            object: object.to_string(),
        });
    }
    // The object may come from a push that was killed after its rename and before the folder
    // was synced: make it durable before answering that it is stored.
    backend.sync_all()?;
    Ok(Some(PushOutcome::AlreadyPresent))
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `limit` bytes of `r` into `write`, in chunks; returns how many.
fn copy_limited(
    r: &mut impl Read,
    limit: u64,
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, Copy> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut r = r.take(limit);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        write(&buf[..n]).map_err(Copy::Write)?;
        done += n as u64;
    }
}
