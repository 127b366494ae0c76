//! What one decoded WAL record says about changed blocks: the rules of the server's WAL
//! summarizer (`SummarizeXlogRecord`, `SummarizeSmgrRecord`, `SummarizeDbaseRecord` in
//! `src/backend/postmaster/walsummarizer.c`), applied to a [`ChangedBlocks`]. Pure.
//!
//! * every block reference marks its block (the block reference header is the same for every
//!   resource manager, `src/include/access/xlogrecord.h`);
//! * `XLOG_SMGR_CREATE` (`xl_smgr_create`: `RelFileNode`/`RelFileLocator` 12 bytes, fork i32;
//!   `src/include/catalog/storage_xlog.h`, the same in 10–18): the fork was created: limit 0;
//! * `XLOG_SMGR_TRUNCATE` (`xl_smgr_truncate`: block u32, relation 12 bytes, flags i32 with
//!   `SMGR_TRUNCATE_HEAP` 1, `_VM` 2, `_FSM` 4): the main fork's limit is the new length; the
//!   VM and FSM forks get limit 0 (lower than the server's limit: a superset, never a hole);
//! * database records (`src/include/commands/dbcommands_xlog.h`): 10–14 `XLOG_DBASE_CREATE`
//!   0x00 (`db_id`, `tablespace_id`, source ids) and `XLOG_DBASE_DROP` 0x10 (`db_id`,
//!   `ntablespaces`, tablespace ids); 15+ `CREATE_FILE_COPY` 0x00, `CREATE_WAL_LOG` 0x10 (both
//!   `db_id`, `tablespace_id` first) and `DROP` 0x20: the whole database directory is recreated;
//! * `XLOG_PARAMETER_CHANGE` (`xl_parameter_change`, `src/include/access/xlog_internal.h`)
//!   with `wal_level` minimal: WAL written after it may leave relation data unlogged
//!   (`src/backend/catalog/storage.c`): doubt. `wal_level` is the 5th int in 10–11 and the 6th
//!   from 12 (`max_wal_senders` added);
//! * any other record flagged `XLR_SPECIAL_REL_UPDATE` (an extension's resource manager
//!   changing relation files in ways its block references do not say): doubt.
//!
//! Dropped relations (xact commit and abort records, flagged `XLR_SPECIAL_REL_UPDATE` from 14
//! on, `XactLogCommitRecord` in `src/backend/access/transam/xact.c`) need no rule for a superset: a relation file that no
//! longer exists is not backed up, and a relation number used again is created again, with an
//! `XLOG_SMGR_CREATE` record.

use super::ChangedBlocks;
use crate::wal::record::decode::{
    DecodedRecord, Fork, RelFileLocator, XLR_RMGR_INFO_MASK, XLR_SPECIAL_REL_UPDATE,
};

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const RM_SMGR_ID: u8 = 2;
const RM_DBASE_ID: u8 = 4;
const XLOG_PARAMETER_CHANGE: u8 = 0x60;
const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;
const SMGR_TRUNCATE_HEAP: u32 = 1;
const SMGR_TRUNCATE_VM: u32 = 2;
const SMGR_TRUNCATE_FSM: u32 = 4;
/// `WAL_LEVEL_MINIMAL` (`src/include/access/xlog.h`).
const WAL_LEVEL_MINIMAL: i32 = 0;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn rel_at(b: &[u8], at: usize) -> Option<RelFileLocator> {
    Some(RelFileLocator {
        spc_oid: u32_at(b, at)?,
        db_oid: u32_at(b, at + 4)?,
        rel_number: u32_at(b, at + 8)?,
    })
}

/// Adds what `rec` (a record of PostgreSQL `major`) says to `set`.
pub fn apply_record(set: &mut ChangedBlocks, rec: &DecodedRecord<'_>, major: u32) {
    for b in &rec.blocks {
        set.mark_block(b.rel, b.fork, b.block);
    }
    let info = rec.info & XLR_RMGR_INFO_MASK;
    let data = rec.main_data;
    let lsn = rec.lsn;
    let (rmid, xl_info) = (rec.rmid, rec.info);
    let not_understood = |set: &mut ChangedBlocks, what: &str| {
        set.set_doubt(format!(
            "the WAL record at {lsn} ({what}; resource manager {rmid}, info 0x{xl_info:02X}) \
             could not be understood"
        ));
    };
    match rec.rmid {
        RM_SMGR_ID if info == XLOG_SMGR_CREATE => {
            let fork = u32_at(data, 12).and_then(Fork::from_number);
            match (rel_at(data, 0), fork) {
                (Some(rel), Some(fork)) => set.set_limit(rel, fork, 0),
                _ => not_understood(set, "relation file created"),
            }
        }
        RM_SMGR_ID if info == XLOG_SMGR_TRUNCATE => {
            match (u32_at(data, 0), rel_at(data, 4), u32_at(data, 16)) {
                (Some(block), Some(rel), Some(flags)) => {
                    if flags & SMGR_TRUNCATE_HEAP != 0 {
                        set.set_limit(rel, Fork::Main, block);
                    }
                    if flags & SMGR_TRUNCATE_VM != 0 {
                        set.set_limit(rel, Fork::Vm, 0);
                    }
                    if flags & SMGR_TRUNCATE_FSM != 0 {
                        set.set_limit(rel, Fork::Fsm, 0);
                    }
                }
                _ => not_understood(set, "relation file truncated"),
            }
        }
        RM_SMGR_ID if rec.info & XLR_SPECIAL_REL_UPDATE != 0 => {
            not_understood(set, "storage record")
        }
        RM_DBASE_ID => {
            let drop = if major >= 15 { 0x20 } else { 0x10 };
            let create = if major >= 15 {
                info == 0x00 || info == 0x10
            } else {
                info == 0x00
            };
            match (u32_at(data, 0), u32_at(data, 4)) {
                (Some(db), Some(spc)) if create => set.set_database_recreated(spc, db),
                (Some(db), Some(n)) if info == drop => {
                    let ids = data.get(8..).unwrap_or_default();
                    if ids.len() as u64 != u64::from(n) * 4 {
                        not_understood(set, "database dropped");
                    }
                    for id in ids.chunks_exact(4) {
                        let spc = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
                        set.set_database_recreated(spc, db);
                    }
                }
                _ => not_understood(set, "database record"),
            }
        }
        RM_XLOG_ID if info == XLOG_PARAMETER_CHANGE => {
            let at = if major >= 12 { 20 } else { 16 };
            match u32_at(data, at) {
                Some(l) if l as i32 == WAL_LEVEL_MINIMAL => set.set_doubt(format!(
                    "the WAL record at {lsn} lowers wal_level to minimal: relation data written \
                     after it may not be in the WAL"
                )),
                Some(_) => {}
                None => not_understood(set, "parameter change"),
            }
        }
        // Commits and aborts that drop relations carry the flag (14+): see the module text.
        RM_XACT_ID => {}
        _ if rec.info & XLR_SPECIAL_REL_UPDATE != 0 => {
            not_understood(set, "a special relation update")
        }
        _ => {}
    }
}
