//! PostgreSQL 17+ WAL summary files (`pg_wal/summaries/*.summary`): for a stretch of WAL, every
//! relation fork's modified blocks and its "limit block". Parsed into a [`BlockRefTable`] and
//! written back byte for byte as the server writes them. Pure: no IO.
//!
//! Facts (`src/common/blkreftable.c`, `src/include/common/blkreftable.h`,
//! `src/backend/postmaster/walsummarizer.c`):
//! * name: `TTTTTTTT` timeline, then the start and end LSN of the WAL summarized, each as two
//!   8-digit hex halves, `.summary` (`%08X%08X%08X%08X%08X.summary`);
//! * content, little-endian, unaligned: the magic `0x652B137B` (u32); per relation fork,
//!   sorted by tablespace, database, relfilenumber, fork: `RelFileLocator` (3 × u32), fork (i32),
//!   limit block (u32, `0xFFFFFFFF` = none), `nchunks` (u32), then `nchunks` u16 chunk usages,
//!   then the data of each chunk with a non-zero usage: a chunk covers 65536 blocks; usage 4096
//!   (`MAX_ENTRIES_PER_CHUNK`) means a 4096 × u16 bitmap (bit `i % 16` of word `i / 16` is
//!   block `i` of the chunk), a smaller usage that many u16 block offsets; then a terminator of
//!   24 zero bytes; then the CRC-32C of everything before it (u32);
//! * the limit block is the shortest length the fork had in the stretch: 0 when it was created
//!   or dropped, the new length when truncated; blocks at or past it were forgotten when it was
//!   set and were modified again afterwards (the fork was re-extended).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::types::{Lsn, TimelineId};
use crate::wal::record::decode::{Fork, RelFileLocator};

/// `BLOCKREFTABLE_MAGIC`.
pub const BLOCKREFTABLE_MAGIC: u32 = 0x652B_137B;
/// Blocks per chunk (`BLOCKS_PER_CHUNK`).
const BLOCKS_PER_CHUNK: u32 = 1 << 16;
/// Chunk usage that means a bitmap (`MAX_ENTRIES_PER_CHUNK`): 65536 blocks / 16 bits.
const MAX_ENTRIES_PER_CHUNK: u16 = 4096;
/// Size of a serialized entry header (`BlockRefTableSerializedEntry`).
const ENTRY_SIZE: usize = 24;
/// `InvalidBlockNumber`: no limit block.
const INVALID_BLOCK: u32 = u32::MAX;

/// The name of a summary file: which WAL it summarizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SummaryFileName {
    pub tli: TimelineId,
    pub start: Lsn,
    pub end: Lsn,
}

impl SummaryFileName {
    /// `0000000100000000010C80C0000000000171 46C8.summary` (without the space) → timeline 1,
    /// WAL `0/10C80C0`..`0/17146C8`. `None` for any other name.
    pub fn parse(name: &str) -> Option<SummaryFileName> {
        let hex = name.strip_suffix(".summary")?;
        if hex.len() != 40 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
            return None;
        }
        let word = |i: usize| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok();
        let lsn = |i: usize| Some(Lsn((u64::from(word(i)?) << 32) | u64::from(word(i + 1)?)));
        let (start, end) = (lsn(1)?, lsn(3)?);
        (start <= end).then_some(SummaryFileName {
            tli: TimelineId(word(0)?),
            start,
            end,
        })
    }
}

impl std::fmt::Display for SummaryFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, e) = (self.start.0, self.end.0);
        write!(
            f,
            "{:08X}{:08X}{:08X}{:08X}{:08X}.summary",
            self.tli.0,
            s >> 32,
            s & 0xFFFF_FFFF,
            e >> 32,
            e & 0xFFFF_FFFF
        )
    }
}

/// What a summary says about one relation fork.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForkSummary {
    /// The shortest length the fork had (0: created or dropped); `None`: not shortened.
    pub limit_block: Option<u32>,
    /// Blocks modified (those at or past the limit: modified after it was set).
    pub blocks: BTreeSet<u32>,
}

/// A parsed block reference table: relation fork → its summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlockRefTable {
    pub forks: BTreeMap<(RelFileLocator, Fork), ForkSummary>,
}

/// What is wrong with a summary file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SummaryError {
    #[error("the WAL summary ends early ({len} bytes, at least {needed} needed): truncated file")]
    Truncated { len: usize, needed: usize },
    #[error(
        "wrong magic number: expected {BLOCKREFTABLE_MAGIC:08X}, found {found:08X} (not a WAL summary)"
    )]
    Magic { found: u32 },
    #[error("wrong checksum: stored CRC-32C {stored:08X}, computed {computed:08X} (damaged file)")]
    Crc { stored: u32, computed: u32 },
    #[error("entry {index}: fork number {fork} does not exist")]
    Fork { index: usize, fork: i32 },
    #[error("entry {index}: {nchunks} chunks is more than a relation can have (65536)")]
    Chunks { index: usize, nchunks: u32 },
    #[error("entry {index}: chunk {chunk} claims {usage} entries (at most 4096)")]
    ChunkUsage {
        index: usize,
        chunk: u32,
        usage: u16,
    },
    #[error("entry {index} is not in the server's order (or repeats a relation fork)")]
    Order { index: usize },
    #[error("{extra} bytes follow the checksum")]
    Trailing { extra: usize },
}

struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SummaryError> {
        let end = self.at.checked_add(n);
        match end.and_then(|e| self.bytes.get(self.at..e)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => Err(SummaryError::Truncated {
                len: self.bytes.len(),
                needed: self.at.saturating_add(n),
            }),
        }
    }
    fn u32(&mut self) -> Result<u32, SummaryError> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn u16s(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]]))
}

/// Parses a summary file's contents. Stricter than the server's reader: entries must be in
/// the order it writes them, and nothing may follow the checksum.
pub fn parse_summary(bytes: &[u8]) -> Result<BlockRefTable, SummaryError> {
    let len = bytes.len();
    if len < 4 + ENTRY_SIZE + 4 {
        return Err(SummaryError::Truncated {
            len,
            needed: 4 + ENTRY_SIZE + 4,
        });
    }
    let body = &bytes[..len - 4];
    let stored = u32::from_le_bytes([
        bytes[len - 4],
        bytes[len - 3],
        bytes[len - 2],
        bytes[len - 1],
    ]);
    let mut input = Input { bytes: body, at: 0 };
    let magic = input.u32()?;
    if magic != BLOCKREFTABLE_MAGIC {
        return Err(SummaryError::Magic { found: magic });
    }
    let mut table = BlockRefTable::default();
    let mut last: Option<(RelFileLocator, Fork)> = None;
    for index in 0.. {
        let head = input.take(ENTRY_SIZE)?;
        if head.iter().all(|&b| b == 0) {
            break;
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let rel = RelFileLocator {
            spc_oid: word(0),
            db_oid: word(4),
            rel_number: word(8),
        };
        let fork_no = word(12) as i32;
        let Some(fork) = u32::try_from(fork_no).ok().and_then(Fork::from_number) else {
            return Err(SummaryError::Fork {
                index,
                fork: fork_no,
            });
        };
        let limit = word(16);
        let nchunks = word(20);
        if nchunks > BLOCKS_PER_CHUNK {
            return Err(SummaryError::Chunks { index, nchunks });
        }
        if last.is_some_and(|l| l >= (rel, fork)) {
            return Err(SummaryError::Order { index });
        }
        last = Some((rel, fork));
        let usage: Vec<u16> = u16s(input.take(nchunks as usize * 2)?).collect();
        let mut blocks = BTreeSet::new();
        for (chunk, &n) in (0u32..).zip(&usage) {
            if n > MAX_ENTRIES_PER_CHUNK {
                return Err(SummaryError::ChunkUsage {
                    index,
                    chunk,
                    usage: n,
                });
            }
            let base = chunk * BLOCKS_PER_CHUNK;
            let data = input.take(usize::from(n) * 2)?;
            if n == MAX_ENTRIES_PER_CHUNK {
                for (w, word) in (0u32..).zip(u16s(data)) {
                    for bit in (0u32..16).filter(|&b| word & (1u16 << b) != 0) {
                        blocks.insert(base + w * 16 + bit);
                    }
                }
            } else {
                blocks.extend(u16s(data).map(|o| base + u32::from(o)));
            }
        }
        let limit_block = (limit != INVALID_BLOCK).then_some(limit);
        table.forks.insert(
            (rel, fork),
            ForkSummary {
                limit_block,
                blocks,
            },
        );
    }
    let computed = crc32c::crc32c(&body[..input.at]);
    if computed != stored {
        return Err(SummaryError::Crc { stored, computed });
    }
    if input.at != body.len() {
        return Err(SummaryError::Trailing {
            extra: body.len() - input.at,
        });
    }
    Ok(table)
}

/// The summary file the server would write for `table` (`WriteBlockRefTable`): chunks with
/// fewer than 4096 blocks as sorted offset arrays, fuller ones as bitmaps, trailing empty
/// chunks left out.
pub fn encode_summary(table: &BlockRefTable) -> Vec<u8> {
    let mut out = BLOCKREFTABLE_MAGIC.to_le_bytes().to_vec();
    for ((rel, fork), s) in &table.forks {
        let mut chunks: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
        for &b in &s.blocks {
            let offset = (b % BLOCKS_PER_CHUNK) as u16;
            chunks.entry(b / BLOCKS_PER_CHUNK).or_default().push(offset);
        }
        let nchunks = chunks.keys().next_back().map_or(0, |c| c + 1);
        for w in [rel.spc_oid, rel.db_oid, rel.rel_number, *fork as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&s.limit_block.unwrap_or(INVALID_BLOCK).to_le_bytes());
        out.extend_from_slice(&nchunks.to_le_bytes());
        let usage = |c: u32| {
            chunks.get(&c).map_or(0, |o| {
                u16::try_from(o.len())
                    .ok()
                    .filter(|&n| n < MAX_ENTRIES_PER_CHUNK)
                    .unwrap_or(MAX_ENTRIES_PER_CHUNK)
            })
        };
        for c in 0..nchunks {
            out.extend_from_slice(&usage(c).to_le_bytes());
        }
        for (&c, offsets) in &chunks {
            if usage(c) == MAX_ENTRIES_PER_CHUNK {
                let mut bitmap = [0u16; MAX_ENTRIES_PER_CHUNK as usize];
                for &o in offsets {
                    bitmap[usize::from(o / 16)] |= 1 << (o % 16);
                }
                bitmap
                    .iter()
                    .for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
            } else {
                offsets
                    .iter()
                    .for_each(|o| out.extend_from_slice(&o.to_le_bytes()));
            }
        }
    }
    out.extend_from_slice(&[0; ENTRY_SIZE]);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests;
