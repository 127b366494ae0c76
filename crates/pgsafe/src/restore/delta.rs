//! `restore --delta`: restore into an existing, stopped data directory (a standby to rebuild,
//! yesterday's restore), writing only the files and 8 KiB blocks that differ from the backup.
//!
//! The result is the same as a restore into an empty directory: every file of the backup with
//! the backup's bytes, length, mode and owner, and nothing else (a file or directory the backup
//! does not have is removed; the small files a restore writes are written again). Order:
//! 1. **Refuse, changing nothing** ([`check_target`], [`plan`]): a target with a live
//!    postmaster, a target that is not a data directory of the backup's system (the system
//!    identifier of its `global/pg_control`, or of the restore marker a delta restore leaves
//!    while it runs, see 2), and every refusal of a restore into an empty directory. The scan
//!    of the target reads it without following a symbolic link (`symlink_metadata`), so
//!    nothing a link planted in the target points to is read, written or removed — restore
//!    runs as root (docs/threat-model.md).
//! 2. The restore marker of this restore first, then `global/pg_control` removed (directory
//!    fsynced): from here until pg_control is written last, the target cannot be started
//!    (PostgreSQL refuses a data directory without pg_control), and a delta restore run again
//!    recognises it by the marker's system identifier.
//! 3. Everything the backup does not have removed: files, directories (their whole tree, links
//!    inside removed as links), symbolic links (the link, never what it points to), special
//!    files; also a file of the backup's that is not a regular file or has a second hard link
//!    (writing into it would change the other name's file, anywhere on the file system).
//! 4. The backup's files by the restore's parallel writers: a file the target lacks is written
//!    whole; an existing one is compared block by block with the backup's bytes (read, and
//!    checked against the manifest's checksum, as a restore reads them) and only the blocks
//!    that differ are written, then it is cut to the backup's length.
//! 5. The small files and `global/pg_control` last, as every restore writes them.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{RestoreError, Source, TablespacePlan, Writer};
use crate::control::ControlFile;
use crate::datadir::PostmasterPid;
use crate::fsutil::{self, FsError, IoContext};
use crate::info::RestoreMarker;
use crate::layout::{CONTROL_FILE, RESTORE_MARKER_FILE};
use crate::types::SystemId;

/// PostgreSQL's block size (`BLCKSZ`, the only one pgsafe backs up): the unit compared.
pub(super) const BLOCK: usize = 8192;

/// What a delta restore wrote and left alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeltaReport {
    /// Files of the backup written: new in the target, or with at least one block or their
    /// length changed.
    pub files_written: u64,
    /// Files of the backup the target already had with the same bytes.
    pub files_unchanged: u64,
    /// 8 KiB blocks written (a file's last partial block counts as one).
    pub blocks_written: u64,
    /// Blocks already equal in the target.
    pub blocks_skipped: u64,
    pub bytes_written: u64,
    /// Entries of the target the backup does not have, removed (a directory counts once).
    pub entries_removed: u64,
}

/// The counters the parallel writers add to.
#[derive(Debug, Default)]
pub(super) struct DeltaCounts {
    files_written: AtomicU64,
    files_unchanged: AtomicU64,
    blocks_written: AtomicU64,
    blocks_skipped: AtomicU64,
    bytes_written: AtomicU64,
}

impl DeltaCounts {
    /// A file the target did not have, written whole.
    pub fn new_file(&self, size: u64) {
        self.files_written.fetch_add(1, Ordering::Relaxed);
        self.blocks_written
            .fetch_add(size.div_ceil(BLOCK as u64), Ordering::Relaxed);
        self.bytes_written.fetch_add(size, Ordering::Relaxed);
    }

    pub fn report(&self, entries_removed: u64) -> DeltaReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeltaReport {
            files_written: g(&self.files_written),
            files_unchanged: g(&self.files_unchanged),
            blocks_written: g(&self.blocks_written),
            blocks_skipped: g(&self.blocks_skipped),
            bytes_written: g(&self.bytes_written),
            entries_removed,
        }
    }
}

/// What the scan of the target found; applied by [`prepare`].
#[derive(Debug, Default)]
pub(super) struct DeltaPlan {
    /// Entries to remove (with whether each is a real directory).
    remove: Vec<(PathBuf, bool)>,
    /// Bytes the target needs beyond what its files of the backup already take.
    pub extra_bytes: u64,
}

/// The target of a delta restore: an existing directory (a link to one is followed, as a data
/// directory may be one) with no live postmaster. `Ok(false)`: it is empty, so the restore is
/// an ordinary one.
pub(super) fn check_target(target: &Path) -> Result<bool, RestoreError> {
    let unusable = |why: String| RestoreError::TargetUnusable {
        target: target.to_owned(),
        why,
    };
    match fs::metadata(target) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(unusable("it exists and is not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(unusable(
                "it does not exist: a delta restore writes into an existing data directory \
                 (restore into a new directory without it)"
                    .into(),
            ));
        }
        Err(e) => return Err(FsError::new("inspect", target, e).into()),
    }
    // Read without following a link: a planted link must not name another process.
    if let Ok(b) = crate::datadir::read_bounded(&target.join("postmaster.pid"), 1 << 16, false) {
        let pid = PostmasterPid::parse(&b).with_liveness();
        // The pid alone is not trusted: a server in another PID namespace (a container
        // sharing the volume) is invisible to it, but its processes are still attached to
        // the shared memory segment the file names, as PostgreSQL itself checks.
        let attached = crate::datadir::shared_memory_in_use(&b) == Some(true);
        if let Some(p) = pid.pid
            && (pid.process_running == Some(true) || attached)
        {
            return Err(RestoreError::TargetRunning {
                target: target.to_owned(),
                pid: p,
            });
        }
    }
    let mut rd = fs::read_dir(target).ctx("read directory", target)?;
    Ok(rd.next().is_some())
}

/// The system identifier of the data directory `target`: its `global/pg_control`'s, else
/// (an interrupted delta restore removed it) the restore marker's.
fn target_system(target: &Path) -> Result<SystemId, RestoreError> {
    let why = |why: String| RestoreError::DeltaNotADataDirectory {
        target: target.to_owned(),
        why,
    };
    let control = target.join(CONTROL_FILE);
    match crate::datadir::read_bounded(&control, 1 << 16, false) {
        Ok(b) => {
            return ControlFile::decode(&b)
                .map(|c| c.system_identifier)
                .map_err(|e| why(format!("its global/pg_control cannot be read: {e}")));
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(why(format!("its global/pg_control cannot be read: {e}")));
        }
        Err(_) => {}
    }
    let marker = target.join(RESTORE_MARKER_FILE);
    let bytes = crate::datadir::read_bounded(&marker, 1 << 20, false).map_err(|_| {
        why("it has no global/pg_control (and no pgsafe restore marker naming its system)".into())
    })?;
    let m = RestoreMarker::parse(&bytes).map_err(|e| {
        why(format!(
            "it has no global/pg_control and its {RESTORE_MARKER_FILE} cannot be read: {e}"
        ))
    })?;
    m.system_identifier.ok_or_else(|| {
        why(format!(
            "it has no global/pg_control and its {RESTORE_MARKER_FILE} names no system"
        ))
    })
}

/// Scans the target (changing nothing): checks its system identifier against the backup's
/// and lists what the backup does not have.
pub(super) fn plan(
    w: &Writer<'_>,
    source: &Source,
    tablespaces: &[TablespacePlan],
    backup_system: SystemId,
) -> Result<DeltaPlan, RestoreError> {
    let found = target_system(w.target)?;
    if found != backup_system {
        return Err(RestoreError::DeltaOtherSystem {
            target: w.target.to_owned(),
            found,
            backup: backup_system,
        });
    }
    let mut files: HashSet<PathBuf> = source.files.iter().map(|f| w.dest_of(&f.rel)).collect();
    files.insert(w.target.join(CONTROL_FILE));
    let mut dirs: HashSet<PathBuf> = source
        .dirs
        .iter()
        .filter(|d| !w.is_tablespace_link(d))
        .map(|d| w.dest_of(d))
        .collect();
    dirs.insert(w.target.join("pg_tblspc"));
    let mut scan = Scan {
        files: &files,
        dirs: &dirs,
        keep: w.target.join(RESTORE_MARKER_FILE),
        out: DeltaPlan::default(),
        sizes: std::collections::HashMap::new(),
    };
    scan.dir(w.target)?;
    // In a tablespace's location only the backup's directories (`PG_<major>_<catalog>`) are
    // the restore's: other entries there (another major's, pg_upgrade's) are left alone.
    for t in tablespaces {
        let prefix = format!("pg_tblspc/{}/", t.oid);
        for d in &source.dirs {
            let Some(rest) = d.as_bytes().strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            if rest.contains(&b'/') {
                continue;
            }
            let p = w.dest_of(d);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => scan.dir(&p)?,
                Ok(_) => scan.out.remove.push((p, false)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FsError::new("inspect", p, e).into()),
            }
        }
    }
    let mut extra = 0u64;
    for f in &source.files {
        let have = scan.sizes.get(&w.dest_of(&f.rel)).copied().unwrap_or(0);
        extra = extra.saturating_add(f.size.saturating_sub(have));
    }
    scan.out.extra_bytes = extra;
    Ok(scan.out)
}

struct Scan<'a> {
    files: &'a HashSet<PathBuf>,
    dirs: &'a HashSet<PathBuf>,
    /// The restore marker: replaced, not removed (see [`prepare`]).
    keep: PathBuf,
    out: DeltaPlan,
    /// Sizes of the backup's files the target has as usable regular files.
    sizes: std::collections::HashMap<PathBuf, u64>,
}

impl Scan<'_> {
    fn dir(&mut self, dir: &Path) -> Result<(), RestoreError> {
        for entry in fs::read_dir(dir).ctx("read directory", dir)? {
            let entry = entry.ctx("read directory", dir)?;
            let p = entry.path();
            // Never follows a link: a link is an entry of its own.
            let m = fs::symlink_metadata(&p).ctx("inspect", &p)?;
            let ft = m.file_type();
            if self.files.contains(&p) {
                if ft.is_file() && m.nlink() == 1 {
                    self.sizes.insert(p, m.len());
                } else {
                    self.out.remove.push((p, ft.is_dir()));
                }
            } else if self.dirs.contains(&p) {
                if ft.is_dir() {
                    self.dir(&p)?;
                } else {
                    self.out.remove.push((p, false));
                }
            } else if p == self.keep && ft.is_file() {
            } else {
                self.out.remove.push((p, ft.is_dir()));
            }
        }
        Ok(())
    }
}

/// Makes the target unstartable and removes what the backup does not have; returns the number
/// of entries removed. `marker` is this restore's marker (written first, see the module
/// documentation).
pub(super) fn prepare(
    w: &Writer<'_>,
    plan: &DeltaPlan,
    marker: &RestoreMarker,
) -> Result<u64, RestoreError> {
    w.write_durable(&w.target.join(RESTORE_MARKER_FILE), &marker.to_json())?;
    let control = w.target.join(CONTROL_FILE);
    match fs::remove_file(&control) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::new("remove", control, e).into()),
    }
    if w.sync {
        fsutil::sync_dir(&fsutil::parent_dir(&control))?;
    }
    let mut parents: HashSet<PathBuf> = HashSet::new();
    for (p, is_dir) in &plan.remove {
        // `remove_dir_all` does not follow links inside the tree (it removes them as links).
        let r = if *is_dir {
            fs::remove_dir_all(p)
        } else {
            fs::remove_file(p)
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::new("remove", p, e).into()),
        }
        parents.insert(fsutil::parent_dir(p));
    }
    if w.sync {
        for d in &parents {
            fsutil::sync_dir(d)?;
        }
    }
    Ok(plan.remove.len() as u64)
}

/// Opens the target's existing file `dest` for the comparison: `None` when there is none. Never
/// through a link, never a FIFO or device, never a file with another hard link.
pub(super) fn open_existing(dest: &Path) -> Result<Option<File>, FsError> {
    let flags = nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits();
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(dest)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("open", dest, e)),
    };
    let m = f.metadata().ctx("inspect", dest)?;
    if !m.is_file() || m.nlink() != 1 {
        return Err(FsError::new(
            "open",
            dest,
            io::Error::new(
                io::ErrorKind::InvalidData,
                "it changed since the scan of the target (not a regular file, or a second hard \
                 link): the delta restore does not write into it",
            ),
        ));
    }
    Ok(Some(f))
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What [`merge`] did to one file.
pub(super) struct Merged {
    /// Bytes read from the backup.
    pub size: u64,
    pub blocks_written: u64,
    pub blocks_skipped: u64,
}

/// Writes into `out` (the target's file, `path` in messages) the blocks of `src` that differ,
/// reading `src` in `buf`-sized pieces (`buf` holds two: the backup's bytes and the target's).
/// `each` sees every piece of the backup's bytes (checksum, progress) and may stop the copy.
/// The caller checks the size read and cuts the file to it.
pub(super) fn merge(
    src: &mut dyn Read,
    out: &File,
    path: &Path,
    buf: &mut [u8],
    read_error: &dyn Fn(io::Error) -> RestoreError,
    each: &mut dyn FnMut(&[u8]) -> Result<(), RestoreError>,
) -> Result<Merged, RestoreError> {
    let half = buf.len() / 2 / BLOCK * BLOCK;
    let (a, b) = buf.split_at_mut(half);
    let b = &mut b[..half];
    let mut m = Merged {
        size: 0,
        blocks_written: 0,
        blocks_skipped: 0,
    };
    loop {
        let n = read_full(src, a).map_err(read_error)?;
        if n == 0 {
            break;
        }
        each(&a[..n])?;
        let have = read_full_at(out, &mut b[..n], m.size).ctx("read", path)?;
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            if end <= have && a[start..end] == b[start..end] {
                m.blocks_skipped += 1;
            } else {
                out.write_all_at(&a[start..end], m.size + start as u64)
                    .ctx("write", path)?;
                m.blocks_written += 1;
            }
        }
        m.size += n as u64;
    }
    Ok(m)
}

/// `read_at` until `buf` is full or the file ends.
fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl DeltaCounts {
    /// Records a merged file; `cut`: it was longer than the backup's and was cut.
    pub fn merged(&self, m: &Merged, cut: bool) {
        if m.blocks_written == 0 && !cut {
            self.files_unchanged.fetch_add(1, Ordering::Relaxed);
        } else {
            self.files_written.fetch_add(1, Ordering::Relaxed);
        }
        self.blocks_written
            .fetch_add(m.blocks_written, Ordering::Relaxed);
        self.blocks_skipped
            .fetch_add(m.blocks_skipped, Ordering::Relaxed);
        self.bytes_written.fetch_add(
            m.blocks_written.saturating_mul(BLOCK as u64).min(m.size),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(old: &[u8], new: &[u8]) -> (Vec<u8>, Merged) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, old).unwrap();
        let f = open_existing(&p).unwrap().unwrap();
        let mut buf = vec![0u8; 4 * BLOCK];
        let mut seen = 0usize;
        let m = merge(
            &mut &new[..],
            &f,
            &p,
            &mut buf,
            &|e| FsError::new("read", "x", e).into(),
            &mut |b| {
                seen += b.len();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, new.len());
        f.set_len(m.size).unwrap();
        (fs::read(&p).unwrap(), m)
    }

    #[test]
    fn only_differing_blocks_are_written() {
        let old: Vec<u8> = (0..5 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        let mut new = old.clone();
        new[BLOCK + 7] ^= 1;
        new[4 * BLOCK] ^= 1;
        let (out, m) = merged(&old, &new);
        assert_eq!(out, new);
        assert_eq!((m.blocks_written, m.blocks_skipped), (2, 4));
    }

    #[test]
    fn longer_and_shorter_files_end_as_the_backup() {
        let old = vec![7u8; 3 * BLOCK];
        let mut new = old.clone();
        new.extend_from_slice(&[9u8; BLOCK + 1]);
        let (out, m) = merged(&old, &new);
        assert_eq!(out, new);
        assert_eq!((m.blocks_written, m.blocks_skipped), (2, 3));
        let (out, m) = merged(&new, &old);
        assert_eq!(out, old);
        assert_eq!((m.blocks_written, m.blocks_skipped), (0, 3));
        let (out, _) = merged(&old, b"");
        assert!(out.is_empty());
    }

    #[test]
    fn links_fifos_and_hard_links_are_never_opened() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"secret").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(open_existing(&link).is_err());
        let hard = d.path().join("hard");
        fs::hard_link(&victim, &hard).unwrap();
        assert!(open_existing(&hard).is_err());
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(open_existing(&fifo).is_err());
        assert!(open_existing(&d.path().join("none")).unwrap().is_none());
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
    }
}
