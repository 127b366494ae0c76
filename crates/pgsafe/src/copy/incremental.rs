//! Relation files of a differential or incremental backup: stored as the blocks that changed
//! since the parent backup's start ([`crate::layout::incremental`]), or whole.
//!
//! Which files may be stored incrementally follows PostgreSQL's `GetFileBackupMethod`
//! (src/backend/backup/basebackup_incremental.c), tightened for a page scan:
//! * only segments of a relation's **main fork**. The free space map is not WAL-logged; the
//!   visibility map's bits are cleared without WAL and without a new page LSN
//!   (src/backend/access/heap/visibilitymap.c: "Clearing visibility map bits is not separately
//!   WAL-logged"), so a page scan cannot see that a map page changed; init forks are a page or
//!   two. These forks are small and always stored whole;
//! * files whose size is a multiple of the block size and at most one segment;
//! * files the parent backup's chain has: any other file is new since then (or the parent
//!   never saw it), and stored whole;
//! * files of a database whose directory was created again since the parent (its `PG_VERSION`
//!   differs from the parent's: `CREATE DATABASE` writes it anew with either strategy, and so
//!   does moving a database to another tablespace): `CREATE DATABASE … STRATEGY FILE_COPY`
//!   copies a template's files at the file level, keeping the template's old page LSNs, so
//!   a page scan would take such files for unchanged (the WAL summarizer marks the whole
//!   database for the same reason, `SummarizeDbaseRecord` in
//!   src/backend/postmaster/walsummarizer.c).
//!
//! The page scan reads the whole file and keeps every page whose LSN is after the prior start,
//! and every new page ([`crate::page::page_changed_since`]). A page written while it is read
//! may be torn: whichever version its header comes from, the change being written happened
//! after this backup's start checkpoint (that checkpoint wrote out every page changed before
//! it), so the WAL replayed from this backup's start has a full-page image of it.
//!
//! The header of the stored object comes first and holds each block's CRC, so the blocks are
//! kept until the file has been read: in memory up to [`SPOOL_MEMORY`] per worker, beyond that
//! in an unlinked temporary file. When every block changed, the file is stored whole from them.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;

use super::file::Outcome;
use super::work::Ctx;
use super::{CopiedFile, CopyError, SizeChange};
use crate::fsutil::{FsError, IoContext};
use crate::layout::incremental::{IncrHeader, StoredBlock, block_crc, encode_header};
use crate::page::{self, BLCKSZ};
use crate::plan::{PlanFile, RelPath};
use crate::storage::{ObjectName, StorageError};
use crate::types::{Lsn, PgVersion};

/// Changed blocks a worker keeps in memory before it spills them to a temporary file.
pub const SPOOL_MEMORY: usize = 32 << 20;

/// What the copy needs to store relation files incrementally.
#[derive(Debug, Clone)]
pub struct IncrementalCopy {
    /// The prior start: pages with a newer LSN are stored.
    pub since: Lsn,
    /// Manifest paths of the files the parent's chain restores (incremental objects under the
    /// path of the file they stand for).
    pub parent_files: HashSet<Vec<u8>>,
    /// Database directories (`base/<db>`, `pg_tblspc/<oid>/<version>/<db>`) whose database
    /// OID was created again since the parent, by OID: every file of them is stored whole.
    pub recreated_databases: HashSet<u32>,
    pub version: PgVersion,
    /// `RELSEG_SIZE`: blocks per segment file.
    pub relseg_size: u32,
}

impl IncrementalCopy {
    /// Whether the file `rel` of `size` bytes is stored as an incremental object (see the
    /// module documentation); every other file is stored whole.
    pub fn candidate(&self, rel: &RelPath, size: u64) -> bool {
        let path = rel.as_bytes();
        if size == 0
            || size % BLCKSZ as u64 != 0
            || size / BLCKSZ as u64 > u64::from(self.relseg_size)
            || !self.parent_files.contains(path)
        {
            return false;
        }
        let Some((dir, name)) = path
            .iter()
            .rposition(|b| *b == b'/')
            .map(|i| (&path[..i], &path[i + 1..]))
        else {
            return false;
        };
        if page::checksummed_segment(path, self.version).is_none() {
            return false;
        }
        let digits = name.iter().take_while(|b| b.is_ascii_digit()).count();
        // Main fork only: `<digits>` or `<digits>.<segno>` (the fork suffix starts with '_').
        if name.get(digits) == Some(&b'_') {
            return false;
        }
        match database_oid(dir) {
            Some(db) => !self.recreated_databases.contains(&db),
            // `global`: shared relations.
            None => dir == b"global",
        }
    }
}

/// The database OID of a relation directory (`base/<db>` or `pg_tblspc/<oid>/<ver>/<db>`).
pub fn database_oid(dir: &[u8]) -> Option<u32> {
    let comps: Vec<&[u8]> = dir.split(|b| *b == b'/').collect();
    let db = match comps.as_slice() {
        [b"base", db] => db,
        [b"pg_tblspc", _, _, db] => db,
        _ => return None,
    };
    std::str::from_utf8(db).ok()?.parse().ok()
}

/// Changed blocks kept until the header can be written.
struct Spool {
    blocks: Vec<StoredBlock>,
    memory: Vec<u8>,
    file: Option<File>,
}

impl Spool {
    fn new() -> Spool {
        Spool {
            blocks: Vec::new(),
            memory: Vec::new(),
            file: None,
        }
    }

    fn push(&mut self, block: u32, page: &[u8]) -> io::Result<()> {
        self.blocks.push(StoredBlock {
            block,
            crc32c: block_crc(page),
        });
        if self.file.is_none() && self.memory.len() + page.len() > SPOOL_MEMORY {
            let mut f = tempfile::tempfile()?;
            f.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(page),
            None => {
                self.memory.extend_from_slice(page);
                Ok(())
            }
        }
    }

    /// Hands the kept bytes, in order, to `out` a piece at a time.
    fn drain(
        &mut self,
        buf: &mut [u8],
        mut out: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        match &mut self.file {
            None => out(&self.memory),
            Some(f) => {
                f.rewind()?;
                loop {
                    let n = f.read(buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    out(&buf[..n])?;
                }
            }
        }
    }
}

impl<'a> Ctx<'a> {
    /// Stores a relation file of an incremental backup (see the module documentation).
    pub(super) fn copy_incremental(
        &self,
        file: &PlanFile,
        inc: &IncrementalCopy,
        buf: &mut [u8],
    ) -> Result<Outcome, CopyError> {
        let Some(src) = self.open_source(file)? else {
            return Ok(Outcome::Vanished(file.rel_path.clone()));
        };
        let mtime = src.metadata().ctx("inspect", &file.source)?.mtime();
        let mut spool = Spool::new();
        let spool_err = |e: io::Error| FsError::new("keep changed blocks of", &file.source, e);
        // Buffers hold whole pages and start on page boundaries (worker_state).
        let done = self.read_range(file, &src, (0, file.size), buf, |b, at| {
            let first = at / BLCKSZ as u64;
            for (i, p) in b.chunks_exact(BLCKSZ).enumerate() {
                let Ok(page) = <&[u8; BLCKSZ]>::try_from(p) else {
                    continue;
                };
                if page::page_changed_since(page, inc.since) {
                    let block = u32::try_from(first + i as u64).unwrap_or(u32::MAX);
                    spool.push(block, p).map_err(spool_err)?;
                }
            }
            Ok(())
        })?;
        // A trailing partial page (the file shrank while read) is left out: PostgreSQL counts
        // whole blocks only (`mdnblocks`, src/backend/storage/smgr/md.c), and the WAL replayed
        // from this backup's start extends the file again where it is needed.
        let file_blocks = u32::try_from(done / BLCKSZ as u64).unwrap_or(u32::MAX);
        let kept = spool.blocks.len() as u64;
        let all_changed = file_blocks > 0 && kept == u64::from(file_blocks);
        let (rel_path, header) = if all_changed {
            (file.rel_path.clone(), Vec::new())
        } else {
            let h = IncrHeader {
                block_size: BLCKSZ as u32,
                file_blocks,
                blocks: std::mem::take(&mut spool.blocks),
            };
            let header = encode_header(&h).map_err(|e| {
                FsError::new(
                    "store the changed blocks of",
                    &file.source,
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            })?;
            let p = crate::layout::incremental_path(file.rel_path.as_bytes());
            (RelPath::from_bytes(p), header)
        };
        let stored_path = rel_path.with_suffix(self.opts.compression.suffix());
        let name = ObjectName::from_rel_path(&stored_path)?;
        let store_err = |e: io::Error| StorageError::io("store", &name, e);
        let w = self.store.writer(
            &name,
            super::put_options(crate::storage::Durability::Deferred, file.mode),
        )?;
        let mut sink = self.opts.compression.sink(w).map_err(store_err)?;
        let mut hasher = self.opts.checksum.hasher();
        let mut size = 0u64;
        hasher.update(&header);
        sink.write_all(&header).map_err(store_err)?;
        size += header.len() as u64;
        let mut piece = vec![0u8; 1 << 20];
        let mut write_err = None;
        spool
            .drain(&mut piece, |b| {
                hasher.update(b);
                size += b.len() as u64;
                sink.write_all(b).inspect_err(|_| write_err = Some(()))
            })
            .map_err(|e| -> CopyError {
                if write_err.is_some() {
                    store_err(e).into()
                } else {
                    spool_err(e).into()
                }
            })?;
        let (w, stored_size) = sink.finish().map_err(store_err)?.into_parts();
        w.finish()?;
        let shrunk = (done < file.size).then(|| SizeChange {
            rel_path: file.rel_path.clone(),
            planned: file.size,
            stored: u64::from(file_blocks) * BLCKSZ as u64,
        });
        Ok(Outcome::StoredIncremental(
            CopiedFile {
                rel_path,
                size,
                stored_size,
                checksum: hasher.finish_hex(),
                mtime,
                stored_path,
            },
            shrunk,
        ))
    }
}

#[cfg(test)]
mod tests;
