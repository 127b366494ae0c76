//! Which blocks of which relation files changed since a point in the WAL: the set an incremental
//! backup copies. Filled from WAL summaries ([`crate::wal::summary`], 17+), from pgsafe's own
//! reading of WAL records ([`crate::wal::record`]) or from a page scan
//! ([`crate::page::changed_pages`]). Pure: no IO.
//!
//! The rules are the server's (`src/common/blkreftable.c`, `src/backend/postmaster/
//! walsummarizer.c`, `GetFileBackupMethod` in `src/backend/backup/basebackup_incremental.c`):
//! * a fork's *limit block* is the shortest length it had in the stretch (0: created, dropped
//!   or recreated; n: truncated to n); blocks at or past it are copied whole whatever else is
//!   known, and setting a limit forgets the modified blocks at or past it;
//! * relfilenumber 0 with a database and tablespace means that whole database directory was
//!   created, copied or dropped: every file in it is copied whole;
//! * the free space map is not fully WAL-logged: FSM forks are always copied whole;
//! * any doubt (a record not understood, WAL written under `wal_level = minimal`, a gap) is
//!   recorded as a reason, and then every file is copied whole: never a missing block.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::wal::record::decode::{Fork, RelFileLocator};
use crate::wal::summary::BlockRefTable;

pub mod records;
pub mod source;
pub use records::apply_record;

/// What is known about one relation fork.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForkChanges {
    /// Shortest length the fork had in the stretch (`None`: never shortened).
    pub limit_block: Option<u32>,
    /// Blocks modified (below the limit, or at/past it after re-extension).
    pub blocks: BTreeSet<u32>,
}

/// How to back up one relation segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FilePlan {
    /// Copy the whole file, and why.
    Whole { reason: String },
    /// Copy these blocks (numbered within the file, ascending; none: unchanged).
    Blocks { blocks: Vec<u32> },
}

/// The changed-block set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangedBlocks {
    forks: BTreeMap<(RelFileLocator, Fork), ForkChanges>,
    /// Why every file must be copied whole (the first doubt met), if any.
    doubt: Option<String>,
}

impl ChangedBlocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Block `block` of the fork was modified.
    pub fn mark_block(&mut self, rel: RelFileLocator, fork: Fork, block: u32) {
        self.forks
            .entry((rel, fork))
            .or_default()
            .blocks
            .insert(block);
    }

    /// The fork was shortened to `limit` blocks (0: created or dropped), as
    /// `BlockRefTableSetLimitBlock` does: only a lower limit counts, and it forgets the
    /// modified blocks at or past it.
    pub fn set_limit(&mut self, rel: RelFileLocator, fork: Fork, limit: u32) {
        let e = self.forks.entry((rel, fork)).or_default();
        if e.limit_block.is_some_and(|l| l <= limit) {
            return;
        }
        e.limit_block = Some(limit);
        e.blocks.retain(|&b| b < limit);
    }

    /// Every relation of database `db` in tablespace `spc` was created, copied or dropped
    /// (relfilenumber 0, as the server's summaries say it).
    pub fn set_database_recreated(&mut self, spc: u32, db: u32) {
        let rel = RelFileLocator {
            spc_oid: spc,
            db_oid: db,
            rel_number: 0,
        };
        self.set_limit(rel, Fork::Main, 0);
    }

    /// From now on every file is copied whole; `reason` says why (the first one is kept).
    pub fn set_doubt(&mut self, reason: impl Into<String>) {
        self.doubt.get_or_insert_with(|| reason.into());
    }

    pub fn doubt(&self) -> Option<&str> {
        self.doubt.as_deref()
    }

    pub fn fork(&self, rel: RelFileLocator, fork: Fork) -> Option<&ForkChanges> {
        self.forks.get(&(rel, fork))
    }

    pub fn forks(&self) -> impl Iterator<Item = (&(RelFileLocator, Fork), &ForkChanges)> {
        self.forks.iter()
    }

    /// The set of one stretch of WAL from a server's summary.
    pub fn from_summary(table: &BlockRefTable) -> Self {
        let mut c = ChangedBlocks::new();
        for (&(rel, fork), s) in &table.forks {
            if let Some(l) = s.limit_block {
                c.set_limit(rel, fork, l);
            }
            for &b in &s.blocks {
                c.mark_block(rel, fork, b);
            }
        }
        c
    }

    /// Adds what `later` (the next stretch of WAL) says, in WAL order: its limits forget this
    /// set's blocks at or past them, then its blocks are added.
    pub fn append(&mut self, later: &ChangedBlocks) {
        if let Some(d) = &later.doubt {
            self.set_doubt(d.clone());
        }
        for (&(rel, fork), s) in &later.forks {
            if let Some(l) = s.limit_block {
                self.set_limit(rel, fork, l);
            }
            for &b in &s.blocks {
                self.mark_block(rel, fork, b);
            }
        }
    }

    /// How to back up segment `segno` (`relseg_size` blocks each) of a fork whose file now has
    /// `blocks_in_file` blocks. A file the prior backup did not have must be copied whole by
    /// the caller whatever this says.
    pub fn plan_segment(
        &self,
        rel: RelFileLocator,
        fork: Fork,
        segno: u32,
        relseg_size: u32,
        blocks_in_file: u32,
    ) -> FilePlan {
        let whole = |reason: &str| FilePlan::Whole {
            reason: reason.to_string(),
        };
        if let Some(d) = &self.doubt {
            return whole(d);
        }
        if fork == Fork::Fsm {
            return whole("the free space map is not fully WAL-logged");
        }
        let db = RelFileLocator {
            rel_number: 0,
            ..rel
        };
        if self
            .forks
            .get(&(db, Fork::Main))
            .is_some_and(|e| e.limit_block == Some(0))
        {
            return whole("its database was created, copied or dropped");
        }
        let Some(e) = self.forks.get(&(rel, fork)) else {
            return FilePlan::Blocks { blocks: Vec::new() };
        };
        if e.limit_block == Some(0) {
            return whole("the relation fork was created, dropped or truncated to nothing");
        }
        let Some(first) = segno.checked_mul(relseg_size) else {
            return whole("segment number out of range");
        };
        let end = first.saturating_add(blocks_in_file);
        let mut blocks: BTreeSet<u32> = e.blocks.range(first..end).copied().collect();
        if let Some(l) = e.limit_block {
            blocks.extend(l.max(first)..end);
        }
        FilePlan::Blocks {
            blocks: blocks.into_iter().map(|b| b - first).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
