//! Where each block of a file restored from a chain (a differential or incremental backup, its
//! parent, … down to a full backup) comes from. Pure: what each backup of the chain holds of
//! the file in, a plan out; the restore reads each backup's object once, in block order, and
//! writes each block once.
//!
//! Rules (the same as PostgreSQL's `reconstruct_from_incremental_file` in
//! src/bin/pg_combinebackup/reconstruct.c, with pgsafe's stored format,
//! [`crate::layout::incremental`]):
//! * The file's length is the newest backup's: the length in blocks its incremental object
//!   records (a relation file that shrank is cut), or the whole file's size.
//! * The newest backup that stores a block wins; a backup that holds the file whole ends the
//!   search (it holds every block it has).
//! * A block at or past the length any NEWER backup of the chain recorded is not taken from an
//!   older one: the file was cut there, and a block written again after the cut is stored in
//!   a backup taken after it (every changed block is), so the older bytes are stale.
//! * A block below the length that no backup stores was never written with WAL since the
//!   backup that holds the file whole: the server extended the file with zeros (reconstruct.c
//!   says the same and fills it with zeros too).
//! * A backup of the chain that does not have the file at all, while a newer one stores it as
//!   changes, is a broken chain: the newer backup was not taken against it.

use serde::Serialize;

/// What one backup of the chain holds of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// The whole file, this many bytes long.
    Whole { len: u64 },
    /// An incremental object: the file's length in blocks in that backup and the stored
    /// blocks' numbers (ascending, each below the length: the format's decoder checks both).
    Blocks { file_blocks: u32, stored: Vec<u32> },
    /// The backup does not have the file.
    Absent,
}

/// Where a block of the restored file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BlockSource {
    /// Zeros (see the module documentation).
    Zero,
    /// Backup `backup` of the chain (0 = the newest), its `index`-th stored block (an
    /// incremental object) or block number `index` (a whole file).
    From { backup: usize, index: u32 },
}

/// How one file is restored from a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilePlan {
    /// The newest backup holds it whole: an ordinary copy.
    Whole,
    /// Rebuilt: the file's length in bytes and a source per block (`len / block_size` of
    /// them, the newest length being whole blocks).
    Blocks { len: u64, blocks: Vec<BlockSource> },
}

/// Why a file cannot be restored from the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainGap {
    #[error(
        "backup #{backup} of the chain (counted from the newest, 0) does not have the file, \
         while a newer backup stores only its changes"
    )]
    Missing { backup: usize },
    #[error("no backup of the chain holds the file whole: the chain does not end in a full backup")]
    NoBase,
    #[error("the chain is empty")]
    Empty,
}

impl FilePlan {
    /// The blocks each backup gives, as (block number in the file, index in that backup),
    /// ascending by index — the order its object is read in.
    pub fn reads(&self, backups: usize) -> Vec<Vec<(u32, u32)>> {
        let mut out = vec![Vec::new(); backups];
        if let FilePlan::Blocks { blocks, .. } = self {
            for (b, s) in blocks.iter().enumerate() {
                if let BlockSource::From { backup, index } = *s
                    && let Some(r) = out.get_mut(backup)
                {
                    r.push((b as u32, index));
                }
            }
        }
        for r in &mut out {
            r.sort_by_key(|&(_, i)| i);
        }
        out
    }
}

/// Plans the restore of one file from `chain` (newest first).
pub fn plan_file(chain: &[Held], block_size: u32) -> Result<FilePlan, ChainGap> {
    let (file_blocks, stored) = match chain.first() {
        None => return Err(ChainGap::Empty),
        Some(Held::Whole { .. }) => return Ok(FilePlan::Whole),
        Some(Held::Absent) => return Err(ChainGap::Missing { backup: 0 }),
        Some(Held::Blocks {
            file_blocks,
            stored,
        }) => (*file_blocks, stored),
    };
    let mut blocks = vec![None; file_blocks as usize];
    for (i, &b) in stored.iter().enumerate() {
        if let Some(slot) = blocks.get_mut(b as usize) {
            *slot = Some(BlockSource::From {
                backup: 0,
                index: i as u32,
            });
        }
    }
    // Blocks at or past this were cut by a newer backup of the chain.
    let mut limit = file_blocks;
    let mut based = false;
    for (k, held) in chain.iter().enumerate().skip(1) {
        match held {
            Held::Absent => return Err(ChainGap::Missing { backup: k }),
            Held::Blocks {
                file_blocks,
                stored,
            } => {
                for (i, &b) in stored.iter().enumerate() {
                    if b < limit
                        && let Some(slot @ None) = blocks.get_mut(b as usize)
                    {
                        *slot = Some(BlockSource::From {
                            backup: k,
                            index: i as u32,
                        });
                    }
                }
                limit = limit.min(*file_blocks);
            }
            Held::Whole { len } => {
                let have = u32::try_from(len / u64::from(block_size.max(1))).unwrap_or(u32::MAX);
                for b in 0..limit.min(have) {
                    if let Some(slot @ None) = blocks.get_mut(b as usize) {
                        *slot = Some(BlockSource::From {
                            backup: k,
                            index: b,
                        });
                    }
                }
                based = true;
                break;
            }
        }
    }
    if !based {
        return Err(ChainGap::NoBase);
    }
    Ok(FilePlan::Blocks {
        len: u64::from(file_blocks) * u64::from(block_size),
        blocks: blocks
            .into_iter()
            .map(|s| s.unwrap_or(BlockSource::Zero))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A file's versions, oldest first: each a list of block contents (a tag per block; 0 is
    /// a zero block). Backed up as a full of the first version, then a backup per version
    /// storing the blocks that changed (and every block past the parent's length).
    fn chain_of(versions: &[Vec<u8>], extra: &[bool]) -> Vec<Held> {
        let mut chain = vec![Held::Whole {
            len: versions[0].len() as u64,
        }];
        for (v, w) in versions.windows(2).enumerate() {
            let (old, new) = (&w[0], &w[1]);
            let stored: Vec<u32> = (0..new.len())
                .filter(|&b| {
                    old.get(b) != Some(&new[b]) || b >= old.len() || extra[(v + b) % extra.len()]
                })
                .map(|b| b as u32)
                .collect();
            chain.push(Held::Blocks {
                file_blocks: new.len() as u32,
                stored,
            });
        }
        chain.reverse();
        chain
    }

    /// The newest version as rebuilt from `chain` (block size 1, the tag as the block).
    fn rebuild(versions: &[Vec<u8>], chain: &[Held]) -> Vec<u8> {
        let newest_first: Vec<&Vec<u8>> = versions.iter().rev().collect();
        match plan_file(chain, 1).unwrap() {
            FilePlan::Whole => newest_first[0].clone(),
            FilePlan::Blocks { len, blocks } => {
                assert_eq!(len as usize, blocks.len());
                blocks
                    .iter()
                    .map(|s| match *s {
                        BlockSource::Zero => 0,
                        BlockSource::From { backup, index } => match &chain[backup] {
                            Held::Whole { .. } => newest_first[backup][index as usize],
                            Held::Blocks { stored, .. } => {
                                newest_first[backup][stored[index as usize] as usize]
                            }
                            Held::Absent => unreachable!(),
                        },
                    })
                    .collect()
            }
        }
    }

    /// A next version: some blocks rewritten, then cut or extended (new blocks written).
    fn next(prev: &[u8], writes: &[(usize, u8)], len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = prev.to_vec();
        v.truncate(len);
        // Extending writes its blocks (a new page is initialised before it is used).
        while v.len() < len {
            v.push(1 + (v.len() % 250) as u8);
        }
        for &(b, t) in writes {
            if let Some(x) = v.get_mut(b % len.max(1)) {
                *x = t;
            }
        }
        v
    }

    proptest! {
        #[test]
        fn every_chain_rebuilds_the_newest_version(
            first in prop::collection::vec(any::<u8>(), 0..20),
            steps in prop::collection::vec(
                (prop::collection::vec((0usize..40, any::<u8>()), 0..6), 0usize..30), 1..6),
            extra in prop::collection::vec(prop::bool::weighted(0.1), 1..7),
        ) {
            let mut versions = vec![first];
            for (writes, len) in &steps {
                let v = next(versions.last().unwrap(), writes, *len);
                versions.push(v);
            }
            let chain = chain_of(&versions, &extra);
            prop_assert_eq!(&rebuild(&versions, &chain), versions.last().unwrap());
            // Each block is read from one backup, each backup's reads in its object's order.
            let plan = plan_file(&chain, 1).unwrap();
            let reads = plan.reads(chain.len());
            let total: usize = reads.iter().map(Vec::len).sum();
            if let FilePlan::Blocks { blocks, .. } = &plan {
                let zeros = blocks.iter().filter(|s| **s == BlockSource::Zero).count();
                prop_assert_eq!(total + zeros, blocks.len());
            }
        }
    }

    #[test]
    fn a_cut_in_the_middle_of_the_chain_hides_older_blocks() {
        // Full: 4 blocks. Then cut to 1 block. Then extended to 3 without the new blocks
        // stored (a summary that missed them would do this): they are zeros, never the full's.
        let chain = vec![
            Held::Blocks {
                file_blocks: 3,
                stored: vec![],
            },
            Held::Blocks {
                file_blocks: 1,
                stored: vec![],
            },
            Held::Whole { len: 4 * 8192 },
        ];
        let plan = plan_file(&chain, 8192).unwrap();
        assert_eq!(
            plan,
            FilePlan::Blocks {
                len: 3 * 8192,
                blocks: vec![
                    BlockSource::From {
                        backup: 2,
                        index: 0
                    },
                    BlockSource::Zero,
                    BlockSource::Zero
                ]
            }
        );
    }

    #[test]
    fn broken_chains_are_named() {
        let incr = Held::Blocks {
            file_blocks: 1,
            stored: vec![0],
        };
        assert_eq!(
            plan_file(&[incr.clone(), Held::Absent], 8192),
            Err(ChainGap::Missing { backup: 1 })
        );
        assert_eq!(
            plan_file(&[incr.clone(), incr.clone()], 8192),
            Err(ChainGap::NoBase)
        );
        assert_eq!(plan_file(&[], 8192), Err(ChainGap::Empty));
        assert_eq!(
            plan_file(&[Held::Whole { len: 5 }, Held::Absent], 8192),
            Ok(FilePlan::Whole)
        );
    }
}
