//! The local spool of `archive-push` and `archive-get`: a folder `pgsafe_archive` inside
//! `pg_wal` (the folder holding the file PostgreSQL names, `%p`) with
//!
//! * `ack/<file>.json` — acknowledgements: a file the look-ahead pushed before PostgreSQL asked
//!   for it ([`super::lookahead`]). Each binds the repository, the cluster name, the system
//!   identifier, the object it was stored as, and the size and CRC-32C of the local file as it
//!   was pushed (taken while the push read the bytes it stored) and the file's stamp (device,
//!   inode, size, modification and change times). PostgreSQL's later call for the file is
//!   answered from the record only when the local file still has that stamp, or else that size
//!   and CRC-32C ([`Spool::take_ack`] says why the stamp suffices), its first page is the
//!   registered cluster's and the object is in the repository; anything else is not trusted
//!   and the file is pushed as usual (which compares it with what is stored). A record is
//!   consumed by the acknowledgement.
//! * `gap/<segment>.json` — WAL dropped by the queue limit, written durably before `archive-push`
//!   reports success for a segment it did not store, and turned into repository events
//!   ([`crate::repo::EventKind::WalGap`], contiguous segments merged) by the next push that
//!   reaches the repository, before it acknowledges anything.
//! * `prefetch/` — segments `archive-get` fetched ahead ([`super::prefetch`]).
//! * `status.json` — the backlog seen by the last push (for the "archiving is slower than WAL
//!   generation" alert; [`read_status`] for `check` and `metrics`).
//!
//! Why inside `pg_wal`: `archive_command` runs with PGDATA as its working folder and is given
//! `pg_wal/…`, so the spool needs no setting; `pg_wal`'s contents are left out of base backups
//! (`pg_basebackup`, pgsafe's own), so a restored copy does not inherit it; PostgreSQL only
//! removes or recycles files with WAL names there (`RemoveOldXlogFiles` in
//! src/backend/access/transam/xlog.c), never a folder. A file-level copy of the data folder
//! (a storage snapshot, `rsync`, `pg_rewind` copying `pg_wal`) does carry it: that is why no
//! record is trusted on its name alone — an acknowledgement proves the bytes of the local file
//! and names the repository and system identifier, a gap record names its system identifier
//! and is only ever written into that cluster's archive, and a prefetched segment is checked as
//! a fresh one would be.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::fsutil::{FsError, IoContext, write_durable};
use crate::repo::doc::{format_time, host_name, now_us};
use crate::repo::{EventKind, Registration, RepoError};
use crate::storage::{Backend, Ident};
use crate::types::{SystemId, TimelineId, WalSegSize, WalSegment};

use super::{ArchiveError, ArchiveFile};

/// The spool's folder inside `pg_wal`.
pub const SPOOL_DIR: &str = "pgsafe_archive";
const ACK_DIR: &str = "ack";
const GAP_DIR: &str = "gap";
pub(crate) const PREFETCH_DIR: &str = "prefetch";
const STATUS_FILE: &str = "status.json";
const RECORD_SUFFIX: &str = ".json";
/// Format of the spool's records (a newer one is not trusted: the file is pushed again).
const SPOOL_FORMAT: u32 = 1;
/// Largest record read.
const RECORD_LIMIT: u64 = 64 * 1024;

/// Why the spool could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("archive spool: {0}")]
    Fs(#[from] FsError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(
        "WAL that was dropped earlier (the archive queue limit) could not be recorded in the \
         repository, so nothing is acknowledged until it is: {0}"
    )]
    Gap(#[source] RepoError),
}

impl crate::error::HasKind for SpoolError {
    fn error_kind(&self) -> crate::error::ErrorKind {
        match self {
            SpoolError::Fs(e) => crate::error::ErrorKind::of_io(&e.source),
            SpoolError::Archive(e) => e.error_kind(),
            SpoolError::Gap(e) => e.error_kind(),
        }
    }
}

/// The spool beside one `pg_wal` folder.
#[derive(Debug, Clone)]
pub struct Spool {
    wal_dir: PathBuf,
    dir: PathBuf,
}

impl Spool {
    /// The spool of the `pg_wal` folder holding `src` (the `%p` PostgreSQL gives; relative to
    /// the working folder, PGDATA). `None` when that folder is not a `pg_wal` (it has no
    /// `archive_status`): a file pushed or restored by hand elsewhere gets no spool there.
    pub fn beside(src: &Path) -> Option<Spool> {
        let dir = crate::fsutil::parent_dir(src);
        dir.join("archive_status")
            .is_dir()
            .then(|| Spool::of_wal_dir(&dir))
    }

    /// The spool of the `pg_wal` folder `wal_dir`.
    pub fn of_wal_dir(wal_dir: &Path) -> Spool {
        Spool {
            wal_dir: wal_dir.to_owned(),
            dir: wal_dir.join(SPOOL_DIR),
        }
    }

    /// The `pg_wal` folder.
    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// The spool's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sub-folder `name`, created (0700) when missing.
    pub(crate) fn sub(&self, name: &str) -> Result<PathBuf, FsError> {
        let p = self.dir.join(name);
        match fs::DirBuilder::new().recursive(true).mode(0o700).create(&p) {
            Ok(()) => Ok(p),
            Err(e) => Err(FsError::new("create", &p, e)),
        }
    }

    fn record_path(&self, sub: &str, name: &str) -> PathBuf {
        self.dir.join(sub).join(format!("{name}{RECORD_SUFFIX}"))
    }
}

/// The size and CRC-32C of a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub size: u64,
    pub crc32c: u32,
}

/// The size and CRC-32C of the file at `path`, read once.
pub fn file_sum(path: &Path) -> io::Result<FileSum> {
    // O_NONBLOCK: a FIFO planted under a segment's name must not block the archiver (a
    // regular file reads the same).
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sum = FileSum { size: 0, crc32c: 0 };
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => return Ok(sum),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sum.crc32c = crc32c::crc32c_append(sum.crc32c, &buf[..n]);
        sum.size += n as u64;
    }
}

/// One state of a file, known without reading it: device, inode, size, and modification and
/// change times (nanoseconds). Equal stamps mean the same file, not written, truncated or
/// renamed since (see [`Spool::take_ack`] for why that stands in for reading it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl FileStamp {
    /// The stamp of the file at `path` (a symbolic link is stamped as itself, not followed).
    pub fn of(path: &Path) -> io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path)?;
        Ok(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        })
    }
}

/// What an acknowledgement is bound to: a record made for another repository, cluster name or
/// system identifier acknowledges nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The repository, as an absolute path (resolved when it can be).
    pub repo: String,
    pub cluster: Ident,
    pub system_identifier: SystemId,
}

impl Binding {
    /// The binding for the repository at `repo` (resolved to an absolute path, so that two
    /// spellings of one repository are one, and another repository is another).
    pub fn new(repo: &Path, cluster: &Ident, system_identifier: SystemId) -> Binding {
        Binding {
            repo: repo_identity(repo),
            cluster: cluster.clone(),
            system_identifier,
        }
    }
}

/// `repo` as an absolute, resolved path when it can be resolved (as given otherwise). A
/// repository in object storage (`s3://…`) is named by its URL as it is.
pub fn repo_identity(repo: &Path) -> String {
    if let Some(url) = repo
        .to_str()
        .filter(|s| s.starts_with(crate::storage::location::S3_SCHEME))
    {
        return url.to_owned();
    }
    let abs = fs::canonicalize(repo).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(repo))
            .unwrap_or_else(|_| repo.to_owned())
    });
    abs.to_string_lossy().into_owned()
}

/// `ack/<file>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AckRecord {
    format: u32,
    #[serde(flatten)]
    binding: Binding,
    file: String,
    /// The object it was stored as.
    object: String,
    #[serde(flatten)]
    sum: FileSum,
    /// The local file's stamp when `sum` was taken from the bytes the push stored (records
    /// without one are checked by reading the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stamp: Option<FileStamp>,
    stored_at: String,
}

/// A valid acknowledgement of a file: what it was stored as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub object: String,
}

impl Spool {
    /// Records that `file`, whose local bytes are `sum`, is durably stored as `object` in the
    /// archive `binding` names. Written to a temporary name and renamed, not synced: a record
    /// lost in a crash only costs pushing the file again (which finds it stored).
    pub fn record_ack(
        &self,
        binding: &Binding,
        file: &ArchiveFile,
        object: &str,
        sum: FileSum,
    ) -> Result<(), FsError> {
        self.record_ack_stamped(binding, file, object, sum, None)
    }

    /// [`Spool::record_ack`], with the local file's stamp taken when `sum` was: the
    /// acknowledgement then needs no second read of the file while the stamp is unchanged.
    pub fn record_ack_stamped(
        &self,
        binding: &Binding,
        file: &ArchiveFile,
        object: &str,
        sum: FileSum,
        stamp: Option<FileStamp>,
    ) -> Result<(), FsError> {
        let dir = self.sub(ACK_DIR)?;
        let rec = AckRecord {
            format: SPOOL_FORMAT,
            binding: binding.clone(),
            file: file.to_string(),
            object: object.to_owned(),
            sum,
            stamp,
            stored_at: format_time(now_us()),
        };
        let path = self.record_path(ACK_DIR, &file.to_string());
        let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        fs::write(&tmp, bytes).ctx("write", &tmp)?;
        fs::rename(&tmp, &path).ctx("rename into place", &path)
    }

    /// Whether there is an acknowledgement record for `file` (not checked).
    pub fn has_ack(&self, file: &ArchiveFile) -> bool {
        self.record_path(ACK_DIR, &file.to_string()).exists()
    }

    /// The acknowledgement of `file` at `src`, if its record is for `binding` and the local
    /// file still has the bytes that were stored (size and CRC-32C). The record is removed
    /// whatever it says (a valid one is used once; an invalid one is never trusted).
    ///
    /// When the record carries the file's stamp and the file's stamp is still the same, the
    /// bytes are not read again: the file is the same inode on the same device, of the same
    /// size, and neither written nor renamed since (every write sets the modification and
    /// change times, a rename or a change of times by hand sets the change time, which no
    /// one can set back short of setting the system clock). PostgreSQL never writes into a segment once it is marked `.ready`
    /// (`XLogArchiveNotifySeg` after the segment was written and flushed, src/backend/access/
    /// transam/xlog.c) and reuses a segment file only after it was archived, by renaming it
    /// to a future segment's name that does not exist yet (`InstallXLogFileSegment`, same
    /// file): a recycled or re-created file under this name is another inode or has another
    /// change time. A copy of the data folder (a snapshot, `rsync`, `pg_rewind`) has other
    /// change times, so its records are checked by reading the bytes, as are records without
    /// a stamp.
    pub fn take_ack(
        &self,
        binding: &Binding,
        file: &ArchiveFile,
        src: &Path,
    ) -> Result<Option<Acked>, FsError> {
        let path = self.record_path(ACK_DIR, &file.to_string());
        let Some(bytes) = read_record(&path)? else {
            return Ok(None);
        };
        remove(&path)?;
        let Ok(rec) = serde_json::from_slice::<AckRecord>(&bytes) else {
            return Ok(None);
        };
        if rec.format != SPOOL_FORMAT || rec.binding != *binding || rec.file != file.to_string() {
            return Ok(None);
        }
        if let Some(stamp) = rec.stamp {
            match FileStamp::of(src) {
                Ok(now) if now == stamp && now.size == rec.sum.size => {
                    return Ok(Some(Acked { object: rec.object }));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                _ => {}
            }
        }
        let now = match file_sum(src) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FsError::new("read", src, e)),
        };
        Ok((now == rec.sum).then_some(Acked { object: rec.object }))
    }

    /// Removes acknowledgement records of files no longer waiting (`waiting` says which are):
    /// PostgreSQL archived them some other way, or they are gone.
    pub fn clean_acks(&self, waiting: &dyn Fn(&str) -> bool) {
        let Ok(rd) = fs::read_dir(self.dir.join(ACK_DIR)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = match name.strip_suffix(RECORD_SUFFIX) {
                Some(f) if !f.starts_with('.') => !waiting(f),
                // A temporary file of a killed push.
                _ => true,
            };
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// A segment dropped by the queue limit (`gap/<segment>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    pub format: u32,
    /// The system identifier in the dropped segment's first page.
    pub system_identifier: SystemId,
    pub segment: WalSegment,
    pub reason: String,
    pub dropped_at: String,
    pub dropped_by: String,
}

impl GapRecord {
    pub fn new(system_identifier: SystemId, segment: WalSegment, reason: String) -> GapRecord {
        GapRecord {
            format: SPOOL_FORMAT,
            system_identifier,
            segment,
            reason,
            dropped_at: format_time(now_us()),
            dropped_by: host_name(),
        }
    }
}

/// A gap record in the spool: its path, and the record (or why it cannot be read).
pub type PendingGap = (PathBuf, Result<GapRecord, String>);

/// Gap records merged into ranges of consecutive segments of one timeline: the events a flush
/// writes, in order. Pure. A record whose segment name is not valid for `seg_size` is left out
/// (a registration of another segment size never took that WAL).
pub fn merge_gaps(records: &[GapRecord], seg_size: WalSegSize) -> Vec<EventKind> {
    let mut by: BTreeMap<(TimelineId, u64), &GapRecord> = BTreeMap::new();
    for r in records {
        if let Ok(n) = r.segment.segno(seg_size) {
            by.entry((r.segment.tli, n)).or_insert(r);
        }
    }
    let mut out: Vec<EventKind> = Vec::new();
    let mut prev: Option<(TimelineId, u64)> = None;
    for ((tli, n), r) in by {
        let extends = prev.is_some_and(|(t, p)| t == tli && p.checked_add(1) == Some(n));
        match out.last_mut() {
            Some(EventKind::WalGap { last, reason, .. }) if extends => {
                *last = r.segment;
                if !reason.contains(r.reason.as_str()) {
                    // Keep the first reason; say that later ones differed.
                    if !reason.ends_with(" (and others)") {
                        reason.push_str(" (and others)");
                    }
                }
            }
            _ => out.push(EventKind::WalGap {
                timeline: tli,
                first: r.segment,
                last: r.segment,
                reason: r.reason.clone(),
                dropped_at: r.dropped_at.clone(),
                dropped_by: r.dropped_by.clone(),
            }),
        }
        prev = Some((tli, n));
    }
    out
}

impl Spool {
    /// Records durably that `rec.segment` was dropped (written, synced, renamed, folder
    /// synced): only then may PostgreSQL be told it is archived.
    pub fn record_gap(&self, rec: &GapRecord) -> Result<(), FsError> {
        self.sub(GAP_DIR)?;
        let path = self.record_path(GAP_DIR, &rec.segment.to_string());
        let bytes = serde_json::to_vec_pretty(rec).unwrap_or_default();
        write_durable(&path, &bytes, 0o600)
    }

    /// The gap records waiting to reach the repository, with their paths; records that cannot
    /// be read are returned as errors (kept, never deleted unread).
    pub fn pending_gaps(&self) -> Result<Vec<PendingGap>, FsError> {
        let dir = self.dir.join(GAP_DIR);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::new("list", &dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.ctx("list", &dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(RECORD_SUFFIX) {
                continue;
            }
            let path = e.path();
            let rec = match read_record(&path)? {
                None => continue,
                Some(bytes) => serde_json::from_slice::<GapRecord>(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display())),
            };
            out.push((path, rec));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Writes the pending gap records of the registered cluster into the repository as
    /// [`EventKind::WalGap`] events (merged), then removes them locally; returns the events
    /// written. A crash between the two writes the events again next time: the same gap twice
    /// is still the same gap. Records of another system identifier (a spool copied with a data
    /// folder) are left alone and returned as `foreign` for the caller to report.
    pub fn flush_gaps(
        &self,
        backend: &dyn Backend,
        cluster: &Ident,
        reg: &Registration,
    ) -> Result<Flushed, SpoolError> {
        let mut flushed = Flushed::default();
        let mut ours = Vec::new();
        let mut paths = Vec::new();
        for (path, rec) in self.pending_gaps()? {
            match rec {
                Ok(r) if r.system_identifier == reg.system_identifier => {
                    ours.push(r);
                    paths.push(path);
                }
                Ok(r) => flushed.foreign.push(format!(
                    "{} (segment {} of system {})",
                    path.display(),
                    r.segment,
                    r.system_identifier
                )),
                Err(why) => flushed.foreign.push(why),
            }
        }
        for ev in merge_gaps(&ours, reg.wal_segment_size) {
            crate::repo::record_event(backend, cluster, ev.clone()).map_err(SpoolError::Gap)?;
            flushed.events.push(ev);
        }
        for p in &paths {
            remove(p)?;
        }
        if !paths.is_empty() {
            crate::fsutil::sync_dir(&self.dir.join(GAP_DIR))?;
        }
        Ok(flushed)
    }
}

/// What [`Spool::flush_gaps`] did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// The events written into the repository.
    pub events: Vec<EventKind>,
    /// Records left alone: another cluster's, or unreadable.
    pub foreign: Vec<String>,
}

/// The WAL waiting to be archived: the files with a `.ready` status in
/// `pg_wal/archive_status`, in the order PostgreSQL's archiver takes them (timeline history
/// files first, then by name: `ready_file_comparator` in src/backend/postmaster/pgarch.c).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// The files, in archiving order (those whose file is gone left out).
    pub ready: Vec<ArchiveFile>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// When the oldest `.ready` status file was written (the oldest WAL waiting).
    pub oldest_since: Option<SystemTime>,
}

/// The files waiting in `wal_dir`'s `archive_status` (names PostgreSQL would not archive are
/// ignored, as its archiver does).
pub fn scan_backlog(wal_dir: &Path) -> Result<Backlog, FsError> {
    let status = wal_dir.join("archive_status");
    let rd = fs::read_dir(&status).ctx("list", &status)?;
    let mut ready = Vec::new();
    let mut b = Backlog::default();
    for e in rd {
        let e = e.ctx("list", &status)?;
        let name = e.file_name();
        let Some(base) = name.to_str().and_then(|n| n.strip_suffix(".ready")) else {
            continue;
        };
        let Ok(file) = ArchiveFile::parse(base) else {
            continue;
        };
        // An orphan status file (its WAL file recycled): PostgreSQL removes it.
        let Ok(meta) = fs::metadata(wal_dir.join(base)) else {
            continue;
        };
        b.bytes = b.bytes.saturating_add(meta.len());
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            b.oldest_since = Some(b.oldest_since.map_or(t, |o| o.min(t)));
        }
        ready.push(file);
    }
    ready.sort_by_key(|f| (!matches!(f, ArchiveFile::History(_)), f.to_string()));
    b.ready = ready;
    Ok(b)
}

/// The backlog the last push saw, and whether archiving falls behind (`status.json`): what
/// `check` and `metrics` read ([`read_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStatus {
    pub format: u32,
    /// When the last push wrote this.
    pub updated_at: String,
    /// Files waiting to be archived (`.ready`), and their bytes.
    pub ready_files: u64,
    pub ready_bytes: u64,
    /// The oldest file waiting, and when it became ready.
    #[serde(default)]
    pub oldest_ready: Option<String>,
    #[serde(default)]
    pub oldest_ready_since: Option<String>,
    /// Since when the backlog has kept growing past what one push takes: archiving is slower
    /// than WAL generation (`None`: it keeps up).
    #[serde(default)]
    pub behind_since: Option<String>,
    /// Segments dropped by the queue limit whose record has not reached the repository yet.
    #[serde(default)]
    pub pending_gaps: u64,
    /// The queue limit in bytes, if one is set.
    #[serde(default)]
    pub queue_max: Option<u64>,
}

/// The archive status the last `archive-push` wrote beside `wal_dir` (`pg_wal`), if any. For
/// `check` and `metrics`: `behind_since` set means WAL is generated faster than it is archived;
/// `pending_gaps` > 0 means WAL was dropped and the repository does not know yet.
pub fn read_status(wal_dir: &Path) -> Result<Option<ArchiveStatus>, FsError> {
    let path = wal_dir.join(SPOOL_DIR).join(STATUS_FILE);
    let Some(bytes) = read_record(&path)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

impl Spool {
    /// Writes the status for `backlog` and returns it; `busy` is how many files one push takes
    /// (a backlog above it that grew since the last push means archiving falls behind). Best
    /// effort: a status that cannot be written is not an archiving failure.
    pub fn update_status(
        &self,
        backlog: &Backlog,
        busy: usize,
        queue_max: Option<u64>,
    ) -> ArchiveStatus {
        let prev = read_status(&self.wal_dir).ok().flatten();
        let files = backlog.ready.len() as u64;
        let now = format_time(now_us());
        let growing = prev.as_ref().is_none_or(|p| files >= p.ready_files);
        let behind_since = if files > busy as u64 && growing {
            Some(
                prev.as_ref()
                    .and_then(|p| p.behind_since.clone())
                    .unwrap_or_else(|| now.clone()),
            )
        } else if files > busy as u64 {
            // Shrinking, but still a backlog: keep the flag until it is worked off.
            prev.as_ref().and_then(|p| p.behind_since.clone())
        } else {
            None
        };
        let st = ArchiveStatus {
            format: SPOOL_FORMAT,
            updated_at: now,
            ready_files: files,
            ready_bytes: backlog.bytes,
            oldest_ready: backlog.ready.first().map(|f| f.to_string()),
            oldest_ready_since: backlog.oldest_since.map(system_time),
            behind_since,
            pending_gaps: self.pending_gaps().map(|g| g.len() as u64).unwrap_or(0),
            queue_max,
        };
        if let Ok(dir) = self.sub("") {
            let path = dir.join(STATUS_FILE);
            let tmp = dir.join(format!(".{STATUS_FILE}.tmp-{}", std::process::id()));
            let bytes = serde_json::to_vec_pretty(&st).unwrap_or_default();
            if fs::write(&tmp, bytes)
                .and_then(|_| fs::rename(&tmp, &path))
                .is_err()
            {
                let _ = fs::remove_file(&tmp);
            }
        }
        st
    }
}

fn system_time(t: SystemTime) -> String {
    let us = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    format_time(us)
}

/// A record's bytes (`None` when there is none); a record larger than any pgsafe writes is
/// read as far as the limit (and then fails to parse).
pub(crate) fn read_record(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("open", path, e)),
    };
    let mut bytes = Vec::new();
    f.take(RECORD_LIMIT)
        .read_to_end(&mut bytes)
        .ctx("read", path)?;
    Ok(Some(bytes))
}

fn remove(path: &Path) -> Result<(), FsError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FsError::new("remove", path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
