//! PostgreSQL data pages: the page checksum, the page-header fields a check needs, which files
//! carry checksummed pages, and the record of bad blocks kept in `pgsafe.json`. Pure: no IO.
//!
//! * **The checksum** is `pg_checksum_page` of `src/include/storage/checksum_impl.h`: the 8 KiB
//!   page read as 32 columns of 32-bit words in the machine's byte order (the server wrote the
//!   files on this machine, so its byte order is ours), each column folded into its own
//!   FNV-1a-derived sum (`sum = (sum ^ v) * 16777619 ^ ((sum ^ v) >> 17)`, 32 fixed start values),
//!   two rounds of zeros, the sums xor-ed together, the block number xor-ed in, then
//!   `% 65535 + 1` (never 0). The stored `pd_checksum` counts as zero while computing.
//! * **Block numbers** are relation-wide: segment number × `RELSEG_SIZE` (from pg_control,
//!   131072 by default) + block in the segment file, in wrapping 32-bit arithmetic as the server
//!   computes them (`src/backend/backup/basebackup.c`, `sendFile`).
//! * **New pages** (`pd_upper == 0`, `PageIsNew`) carry no checksum; PostgreSQL accepts them
//!   only when all 8192 bytes are zero (`PageIsVerified`/`PageIsVerifiedExtended`,
//!   `src/backend/storage/page/bufpage.c`), and so does this check.
//! * **Which files**: relation segment files (`<relfilenode>[_fsm|_vm|_init][.<segno>]`) in
//!   `global/`, `base/<db>/` and `pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/` — the files
//!   pg_basebackup checks (`is_checksummed_file`: everything under `global/`, `base/` and the
//!   tablespaces except `pg_control`, `pg_filenode.map`, `pg_internal.init*`, `PG_VERSION`; the
//!   only other files there are those four, so restricting the check to relation file names is
//!   the same set without the risk of checking a stray non-relation file).
//! * There is **no** "skip pages whose LSN is at or after the backup start" rule (pg_basebackup
//!   has one): a corrupt page can carry any LSN. Pages being written while they are read are told
//!   apart by reading them again (see `copy::pages`).

use serde::{Deserialize, Serialize};

use crate::plan::parse_relation_file_name;
use crate::types::{Lsn, PgVersion};

/// PostgreSQL's block size (`BLCKSZ`). pgsafe checks pages only of clusters built with it.
pub const BLCKSZ: usize = 8192;
/// `RELSEG_SIZE` of a default build: blocks per 1 GiB segment file.
pub const DEFAULT_RELSEG_SIZE: u32 = 131_072;

/// Number of parallel sums (`N_SUMS`): part of the algorithm, not a tuning knob.
const N_SUMS: usize = 32;
/// `FNV_PRIME`.
const FNV_PRIME: u32 = 16_777_619;
/// `checksumBaseOffsets`: each column's start value.
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// Byte offset of `pd_checksum` in the page header (after the 8-byte `pd_lsn`).
const CHECKSUM_AT: usize = 8;
/// Byte offset of `pd_upper`.
const UPPER_AT: usize = 14;

#[inline(always)]
fn comp(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

fn word(page: &[u8; BLCKSZ], at: usize) -> u32 {
    u32::from_ne_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]])
}

/// One row of the page (32 words) into the 32 sums.
#[inline(always)]
fn add_row(sums: &mut [u32; N_SUMS], row: &[u8]) {
    for (s, w) in sums.iter_mut().zip(row.chunks_exact(4)) {
        *s = comp(*s, u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
}

/// `pg_checksum_page(page, blkno)`. `page` is not modified: the first row is summed from a copy
/// whose `pd_checksum` bytes are zero, as the server zeroes them while computing.
pub fn checksum_page(page: &[u8; BLCKSZ], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    let mut first = [0u8; 4 * N_SUMS];
    first.copy_from_slice(&page[..4 * N_SUMS]);
    first[CHECKSUM_AT] = 0;
    first[CHECKSUM_AT + 1] = 0;
    add_row(&mut sums, &first);
    for row in page[4 * N_SUMS..].chunks_exact(4 * N_SUMS) {
        add_row(&mut sums, row);
    }
    for _ in 0..2 {
        for s in sums.iter_mut() {
            *s = comp(*s, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    ((folded % 65535) + 1) as u16
}

/// `pd_checksum` as stored in the page.
pub fn stored_checksum(page: &[u8; BLCKSZ]) -> u16 {
    u16::from_ne_bytes([page[CHECKSUM_AT], page[CHECKSUM_AT + 1]])
}

/// `pd_lsn`: two 32-bit halves, high (`xlogid`) first.
pub fn page_lsn(page: &[u8; BLCKSZ]) -> Lsn {
    Lsn((u64::from(word(page, 0)) << 32) | u64::from(word(page, 4)))
}

/// `pd_upper`: 0 means a new, never initialised page.
pub fn pd_upper(page: &[u8; BLCKSZ]) -> u16 {
    u16::from_ne_bytes([page[UPPER_AT], page[UPPER_AT + 1]])
}

/// What is wrong with a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFault {
    /// `pd_checksum` is not the page's checksum.
    Checksum { stored: u16, computed: u16 },
    /// `pd_upper` is 0 (a new page) but the page is not all zeros.
    NewNotZero,
}

impl std::fmt::Display for PageFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageFault::Checksum { stored, computed } => write!(
                f,
                "checksum {computed:04X} computed, {stored:04X} stored in the page"
            ),
            PageFault::NewNotZero => f.write_str(
                "the header says it is a new page (pd_upper 0) but the page is not all zeros",
            ),
        }
    }
}

/// Checks one page whose relation-wide block number is `blkno`, as PostgreSQL does when it reads
/// it: a new page must be all zeros, any other page must carry its checksum.
pub fn check_page(page: &[u8; BLCKSZ], blkno: u32) -> Result<(), PageFault> {
    if pd_upper(page) == 0 {
        return if page.iter().all(|b| *b == 0) {
            Ok(())
        } else {
            Err(PageFault::NewNotZero)
        };
    }
    let computed = checksum_page(page, blkno);
    let stored = stored_checksum(page);
    if computed == stored {
        Ok(())
    } else {
        Err(PageFault::Checksum { stored, computed })
    }
}

/// The relation block number of block `block_in_file` of segment `segno`.
pub fn relation_block(segno: u32, relseg_size: u32, block_in_file: u32) -> u32 {
    segno.wrapping_mul(relseg_size).wrapping_add(block_in_file)
}

/// If `rel_path` (`base/5/16384.2`, backup-relative) is a relation segment file whose pages
/// carry checksums, its segment number (0 without a `.N` suffix).
pub fn checksummed_segment(rel_path: &[u8], version: PgVersion) -> Option<u32> {
    let (parent, name) = match rel_path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel_path[..i], &rel_path[i + 1..]),
        None => return None,
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let comps: Vec<&[u8]> = parent.split(|b| *b == b'/').collect();
    let relation_dir = match comps.as_slice() {
        [b"global"] => true,
        [b"base", db] => digits(db),
        [b"pg_tblspc", oid, ver, db] => digits(oid) && ver.starts_with(b"PG_") && digits(db),
        _ => false,
    };
    if !relation_dir {
        return None;
    }
    parse_relation_file_name(name, version)?;
    match name.iter().position(|b| *b == b'.') {
        None => Some(0),
        Some(dot) => std::str::from_utf8(&name[dot + 1..]).ok()?.parse().ok(),
    }
}

/// Blocks of one file, by block number within the file (as PostgreSQL's messages count them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBlocks {
    /// Backup-relative path (`base/5/16384.1`).
    pub path: String,
    pub blocks: Vec<u32>,
}

/// What `pgsafe backup` found checking page checksums, as `pgsafe.json` records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageChecksumReport {
    /// Relation files whose pages were checked.
    pub files_checked: u64,
    /// Whole pages checked.
    pub pages_checked: u64,
    /// `RELSEG_SIZE` of the cluster (blocks per segment file), for re-checking the backup.
    pub relseg_size: u32,
    /// Blocks that failed the check and read back identical: the SOURCE cluster's data is
    /// corrupt there (the backup holds the same bytes).
    #[serde(default)]
    pub corrupt: Vec<FileBlocks>,
    /// Blocks that failed the check and read back different: the server was writing them while
    /// they were copied. The newer bytes are stored; if those fail the check too the stored page
    /// is torn, and the WAL replayed at recovery rewrites it (every page written after the
    /// backup's start checkpoint is preceded by a full-page image in the WAL).
    #[serde(default)]
    pub changed_during_copy: Vec<FileBlocks>,
}

impl PageChecksumReport {
    /// Corrupt blocks in all files.
    pub fn corrupt_blocks(&self) -> u64 {
        self.corrupt.iter().map(|f| f.blocks.len() as u64).sum()
    }

    /// Whether block `block` of `path` is listed in `list`.
    pub fn lists(list: &[FileBlocks], path: &str, block: u32) -> bool {
        list.iter()
            .any(|f| f.path == path && f.blocks.binary_search(&block).is_ok())
    }
}

/// Checks the pages of a byte stream (one file, or a range of one starting on a page boundary)
/// fed in pieces of any size; a trailing partial page is not checked (see `finish`).
#[derive(Debug)]
pub struct PageScanner {
    segno: u32,
    relseg_size: u32,
    /// Block (within the file) of the next whole page.
    next_block: u32,
    carry: Vec<u8>,
    pages: u64,
    faults: Vec<(u32, PageFault)>,
}

/// What a [`PageScanner`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanResult {
    pub pages: u64,
    /// (block within the file, fault), in block order.
    pub faults: Vec<(u32, PageFault)>,
    /// Bytes of a trailing partial page, not checked.
    pub trailing: usize,
}

impl PageScanner {
    /// A scanner for segment `segno` of a relation, starting at block `first_block` of the file.
    pub fn new(segno: u32, relseg_size: u32, first_block: u32) -> PageScanner {
        PageScanner {
            segno,
            relseg_size,
            next_block: first_block,
            carry: Vec::new(),
            pages: 0,
            faults: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.carry.is_empty() {
            let take = (BLCKSZ - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < BLCKSZ {
                return;
            }
            let carry = std::mem::take(&mut self.carry);
            if let Ok(page) = <&[u8; BLCKSZ]>::try_from(carry.as_slice()) {
                self.page(page);
            }
        }
        let mut pages = data.chunks_exact(BLCKSZ);
        for p in pages.by_ref() {
            if let Ok(page) = <&[u8; BLCKSZ]>::try_from(p) {
                self.page(page);
            }
        }
        self.carry.extend_from_slice(pages.remainder());
    }

    fn page(&mut self, page: &[u8; BLCKSZ]) {
        let blkno = relation_block(self.segno, self.relseg_size, self.next_block);
        if let Err(f) = check_page(page, blkno) {
            self.faults.push((self.next_block, f));
        }
        self.pages += 1;
        self.next_block = self.next_block.wrapping_add(1);
    }

    pub fn finish(self) -> ScanResult {
        ScanResult {
            pages: self.pages,
            faults: self.faults,
            trailing: self.carry.len(),
        }
    }
}

/// Whether an incremental backup must store `page` (see [`changed_pages`]): its `pd_lsn` is
/// after `since`, or it is new (`pd_upper` 0).
pub fn page_changed_since(page: &[u8; BLCKSZ], since: Lsn) -> bool {
    pd_upper(page) == 0 || page_lsn(page) > since
}

/// The pages of a relation file (`bytes`, from block 0 of the file) an incremental backup
/// must copy when scanning pages is the only source of changes: those whose `pd_lsn` is after
/// `since` (the prior backup's start), and every new page (`pd_upper` 0: not initialised yet,
/// so its LSN says nothing). A trailing partial page is listed too. Block numbers are within
/// the file. Pages written without WAL (unlogged relations, `wal_level = minimal`) are not
/// told apart: callers use this only where every change was WAL-logged.
pub fn changed_pages(bytes: &[u8], since: Lsn) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pages = bytes.chunks_exact(BLCKSZ);
    let mut n: u32 = 0;
    for p in pages.by_ref() {
        if let Ok(page) = <&[u8; BLCKSZ]>::try_from(p) {
            if page_changed_since(page, since) {
                out.push(n);
            }
        }
        n = n.wrapping_add(1);
    }
    if !pages.remainder().is_empty() {
        out.push(n);
    }
    out
}

#[cfg(test)]
mod tests;
