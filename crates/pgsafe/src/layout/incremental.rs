//! The stored form of a relation file in a differential or incremental backup: the blocks that
//! changed since the parent backup's start, each with its own CRC-32C, so that verify and
//! restore can check every stored block without any other backup's data. Pure: no IO.
//!
//! Object layout (integers little-endian):
//!
//! | bytes          | field                                                             |
//! |----------------|-------------------------------------------------------------------|
//! | 8              | magic `PGSAFEIB`                                                  |
//! | 4              | format version ([`INCR_VERSION`])                                 |
//! | 4              | block size (`BLCKSZ`: a power of two, 1 KiB to 32 KiB)            |
//! | 4              | the file's length in blocks in THIS backup                        |
//! | 4              | number of stored blocks `n`                                       |
//! | 8 × `n`        | per stored block: block number (within the file), CRC-32C of it   |
//! | 4              | CRC-32C of every header byte before it                            |
//! | `n` × block size | the stored blocks' bytes, in the header's order                 |
//!
//! Block numbers are strictly ascending and below the file's length. A restore writes the file
//! with exactly the length recorded here (a relation file that shrank since the parent is cut
//! to it), taking each block from the newest backup of the chain that stores it (the layout is
//! the same idea as PostgreSQL 17's `INCREMENTAL.` files, src/bin/pg_combinebackup/
//! reconstruct.c, but carries a CRC per block and over the header).
//!
//! The object is stored under the relation file's manifest path plus [`INCR_SUFFIX`] (and the
//! backup's compression suffix after that, see [`super::stored_path`]); the manifest lists it
//! under that name, with the size and checksum of the object, so `pg_verifybackup` checks the
//! object of an uncompressed backup like any file.
//!
//! What is stored whole rather than as such an object is the backup side's rule (PostgreSQL's
//! `GetFileBackupMethod` in src/backend/backup/basebackup_incremental.c): every non-relation
//! file, free space map forks, relation files whose length is not a multiple of the block
//! size, and any file the parent backup does not have.

use crate::info::BackupType;

/// What a manifest path of an incremental object ends with.
pub const INCR_SUFFIX: &str = ".pgsafe-incr";
/// The object's first bytes.
pub const INCR_MAGIC: [u8; 8] = *b"PGSAFEIB";
/// The format version written (and the only one read).
pub const INCR_VERSION: u32 = 1;
/// Bytes of the header before the block list: magic, version, block size, length, count.
pub const FIXED_LEN: usize = 24;
/// Bytes of one entry of the block list.
pub const ENTRY_LEN: usize = 8;
/// Most blocks one object may store: 4 Mi blocks (32 GiB of 8 KiB pages, a 32 MiB header),
/// far beyond a segment file of the default 1 GiB. A header claiming more is refused before
/// anything is allocated for it; a backup stores a file with more changed blocks whole.
pub const MAX_STORED_BLOCKS: u32 = 1 << 22;

/// The header of an incremental object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrHeader {
    /// `BLCKSZ` of the cluster.
    pub block_size: u32,
    /// The file's length in blocks in this backup.
    pub file_blocks: u32,
    /// The stored blocks, ascending by block number.
    pub blocks: Vec<StoredBlock>,
}

/// One stored block: its number within the file and the CRC-32C of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlock {
    pub block: u32,
    pub crc32c: u32,
}

/// Why bytes are not a valid incremental object (header). Positions are byte offsets in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncrError {
    #[error("{have} bytes are too short for the header ({need} needed)")]
    Truncated { need: u64, have: u64 },
    #[error("not a pgsafe incremental object (magic {found:02x?})")]
    Magic { found: [u8; 8] },
    #[error("format version {found} is not the one this pgsafe reads ({INCR_VERSION})")]
    Version { found: u32 },
    #[error("block size {0} is not a power of two from 1024 to 32768")]
    BlockSize(u32),
    #[error("{count} stored blocks is more than the file's {file_blocks} blocks")]
    CountPastLength { count: u32, file_blocks: u32 },
    #[error("{0} stored blocks is more than one object may hold ({MAX_STORED_BLOCKS})")]
    TooManyBlocks(u32),
    #[error("stored block {block} is past the file's length of {file_blocks} blocks")]
    BlockPastLength { block: u32, file_blocks: u32 },
    #[error("stored block numbers are not strictly ascending ({previous} then {block})")]
    NotAscending { previous: u32, block: u32 },
    #[error("the header's CRC-32C is {stored:08x}, its bytes give {computed:08x}")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error("{found} bytes of block data where the header lists {expected}")]
    DataLength { expected: u64, found: u64 },
    #[error("block {block}: its bytes are {len} long, not one block of {block_size}")]
    BlockLength {
        block: u32,
        len: usize,
        block_size: u32,
    },
    #[error("block {block}: CRC-32C {computed:08x} of its bytes, the header says {stored:08x}")]
    BlockCrc {
        block: u32,
        stored: u32,
        computed: u32,
    },
}

/// CRC-32C of a block, as the header records it.
pub fn block_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

impl IncrHeader {
    /// The header of an object storing `blocks` (number within the file, bytes; ascending) of
    /// a file of `file_blocks` blocks of `block_size`. Checks what [`encode_header`] checks,
    /// and that every block is one block long.
    pub fn for_blocks<'a>(
        block_size: u32,
        file_blocks: u32,
        blocks: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Result<IncrHeader, IncrError> {
        let mut out = Vec::new();
        for (block, bytes) in blocks {
            if u32::try_from(bytes.len()).ok() != Some(block_size) {
                return Err(IncrError::BlockLength {
                    block,
                    len: bytes.len(),
                    block_size,
                });
            }
            out.push(StoredBlock {
                block,
                crc32c: block_crc(bytes),
            });
        }
        let h = IncrHeader {
            block_size,
            file_blocks,
            blocks: out,
        };
        h.check()?;
        Ok(h)
    }

    /// Bytes of the encoded header.
    pub fn header_len(&self) -> u64 {
        header_len_for(self.blocks.len() as u64)
    }

    /// Bytes of block data after the header.
    pub fn data_len(&self) -> u64 {
        (self.blocks.len() as u64).saturating_mul(u64::from(self.block_size))
    }

    /// Bytes of the whole object (header and blocks).
    pub fn object_len(&self) -> u64 {
        self.header_len().saturating_add(self.data_len())
    }

    /// Bytes of the file this object stands for, in this backup.
    pub fn file_len(&self) -> u64 {
        u64::from(self.file_blocks) * u64::from(self.block_size)
    }

    /// Where block `i` of the list (not block number `i`) starts in the object.
    pub fn data_offset(&self, i: usize) -> u64 {
        self.header_len()
            .saturating_add((i as u64).saturating_mul(u64::from(self.block_size)))
    }

    /// Checks block `i` of the list against the header: its length and its CRC.
    pub fn check_block(&self, i: usize, bytes: &[u8]) -> Result<(), IncrError> {
        let Some(b) = self.blocks.get(i) else {
            return Err(IncrError::DataLength {
                expected: self.data_len(),
                found: self.data_offset(i).saturating_sub(self.header_len()),
            });
        };
        if u32::try_from(bytes.len()).ok() != Some(self.block_size) {
            return Err(IncrError::BlockLength {
                block: b.block,
                len: bytes.len(),
                block_size: self.block_size,
            });
        }
        let computed = block_crc(bytes);
        if computed != b.crc32c {
            return Err(IncrError::BlockCrc {
                block: b.block,
                stored: b.crc32c,
                computed,
            });
        }
        Ok(())
    }

    fn check(&self) -> Result<(), IncrError> {
        check_block_size(self.block_size)?;
        let count = u32::try_from(self.blocks.len()).unwrap_or(u32::MAX);
        check_count(count, self.file_blocks)?;
        let mut previous = None;
        for b in &self.blocks {
            check_block_number(previous, b.block, self.file_blocks)?;
            previous = Some(b.block);
        }
        Ok(())
    }
}

fn header_len_for(count: u64) -> u64 {
    (FIXED_LEN as u64 + 4).saturating_add(count.saturating_mul(ENTRY_LEN as u64))
}

fn check_block_size(bs: u32) -> Result<(), IncrError> {
    if bs.is_power_of_two() && (1024..=32768).contains(&bs) {
        Ok(())
    } else {
        Err(IncrError::BlockSize(bs))
    }
}

fn check_count(count: u32, file_blocks: u32) -> Result<(), IncrError> {
    if count > MAX_STORED_BLOCKS {
        return Err(IncrError::TooManyBlocks(count));
    }
    if count > file_blocks {
        return Err(IncrError::CountPastLength { count, file_blocks });
    }
    Ok(())
}

fn check_block_number(
    previous: Option<u32>,
    block: u32,
    file_blocks: u32,
) -> Result<(), IncrError> {
    if block >= file_blocks {
        return Err(IncrError::BlockPastLength { block, file_blocks });
    }
    if let Some(p) = previous {
        if block <= p {
            return Err(IncrError::NotAscending { previous: p, block });
        }
    }
    Ok(())
}

/// The header's bytes (the blocks' bytes follow it in the object, in the header's order).
/// Refuses a header that [`decode_header`] would refuse.
pub fn encode_header(h: &IncrHeader) -> Result<Vec<u8>, IncrError> {
    h.check()?;
    let count = u32::try_from(h.blocks.len()).map_err(|_| IncrError::TooManyBlocks(u32::MAX))?;
    let mut out = Vec::with_capacity(FIXED_LEN + 4 + h.blocks.len() * ENTRY_LEN);
    out.extend_from_slice(&INCR_MAGIC);
    out.extend_from_slice(&INCR_VERSION.to_le_bytes());
    out.extend_from_slice(&h.block_size.to_le_bytes());
    out.extend_from_slice(&h.file_blocks.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for b in &h.blocks {
        out.extend_from_slice(&b.block.to_le_bytes());
        out.extend_from_slice(&b.crc32c.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// The length of the whole header, from its first [`FIXED_LEN`] bytes (more may be given):
/// read that prefix, then the rest of the header. Checks magic, version, block size and the
/// count against the length and [`MAX_STORED_BLOCKS`] first, so a hostile count never makes
/// a reader allocate or read more than a legitimate header's size.
pub fn header_len(prefix: &[u8]) -> Result<usize, IncrError> {
    let have = prefix.len() as u64;
    let truncated = || IncrError::Truncated {
        need: FIXED_LEN as u64,
        have,
    };
    let magic: [u8; 8] = prefix
        .get(..8)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(truncated)?;
    if magic != INCR_MAGIC {
        return Err(IncrError::Magic { found: magic });
    }
    let field = |at| u32_at(prefix, at).ok_or_else(truncated);
    let version = field(8)?;
    if version != INCR_VERSION {
        return Err(IncrError::Version { found: version });
    }
    check_block_size(field(12)?)?;
    let file_blocks = field(16)?;
    let count = field(20)?;
    check_count(count, file_blocks)?;
    // At most FIXED_LEN + 4 + 8 × MAX_STORED_BLOCKS: fits a usize.
    usize::try_from(header_len_for(u64::from(count))).map_err(|_| IncrError::TooManyBlocks(count))
}

/// Reads the header at the start of `bytes` (the rest of the object may follow): the header
/// and its length. Every check is made here: magic, version, block size, counts, block
/// numbers strictly ascending and below the file's length, the header's CRC.
pub fn decode_header(bytes: &[u8]) -> Result<(IncrHeader, usize), IncrError> {
    let len = header_len(bytes)?;
    let Some(header) = bytes.get(..len) else {
        return Err(IncrError::Truncated {
            need: len as u64,
            have: bytes.len() as u64,
        });
    };
    let body = len - 4;
    let stored = u32_at(header, body).unwrap_or(0);
    let computed = crc32c::crc32c(&header[..body]);
    if stored != computed {
        return Err(IncrError::HeaderCrc { stored, computed });
    }
    let block_size = u32_at(header, 12).unwrap_or(0);
    let file_blocks = u32_at(header, 16).unwrap_or(0);
    let mut blocks = Vec::with_capacity((body - FIXED_LEN) / ENTRY_LEN);
    let mut previous = None;
    for e in header[FIXED_LEN..body].chunks_exact(ENTRY_LEN) {
        let block = u32_at(e, 0).unwrap_or(0);
        let crc32c = u32_at(e, 4).unwrap_or(0);
        check_block_number(previous, block, file_blocks)?;
        previous = Some(block);
        blocks.push(StoredBlock { block, crc32c });
    }
    Ok((
        IncrHeader {
            block_size,
            file_blocks,
            blocks,
        },
        len,
    ))
}

/// A whole object (header and blocks) as one buffer: for tests and small files.
pub fn encode_object(
    block_size: u32,
    file_blocks: u32,
    blocks: &[(u32, &[u8])],
) -> Result<Vec<u8>, IncrError> {
    let h = IncrHeader::for_blocks(block_size, file_blocks, blocks.iter().copied())?;
    let mut out = encode_header(&h)?;
    for (_, b) in blocks {
        out.extend_from_slice(b);
    }
    Ok(out)
}

/// Checks a whole object held in memory: its header, that exactly the listed blocks follow,
/// and each block's CRC. The header and the blocks' bytes, in the header's order.
pub fn decode_object(bytes: &[u8]) -> Result<(IncrHeader, Vec<&[u8]>), IncrError> {
    let (h, len) = decode_header(bytes)?;
    let data = &bytes[len..];
    if data.len() as u64 != h.data_len() {
        return Err(IncrError::DataLength {
            expected: h.data_len(),
            found: data.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(h.blocks.len());
    // The block size is at least 1024 (checked by decode_header).
    for (i, b) in data.chunks_exact(h.block_size as usize).enumerate() {
        h.check_block(i, b)?;
        out.push(b);
    }
    Ok((h, out))
}

/// If the manifest path `path` of a backup of `backup_type` is an incremental object, the
/// manifest path of the file it stands for (`base/5/16384.pgsafe-incr` → `base/5/16384`).
/// A full backup has none: a file of the data directory that happens to end in
/// [`INCR_SUFFIX`] is an ordinary file there (a differential or incremental backup is taken
/// as a full one when the data directory has such a file, so the names never collide).
pub fn incremental_target(path: &[u8], backup_type: BackupType) -> Option<&[u8]> {
    if backup_type == BackupType::Full {
        return None;
    }
    path.strip_suffix(INCR_SUFFIX.as_bytes())
        .filter(|t| !t.is_empty() && !t.ends_with(b"/"))
}

/// The manifest path of the incremental object of the relation file `path`.
pub fn incremental_path(path: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    p.extend_from_slice(INCR_SUFFIX.as_bytes());
    p
}

#[cfg(test)]
mod tests;
