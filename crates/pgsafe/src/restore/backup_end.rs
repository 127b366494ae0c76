//! How a restore without recovery options ends recovery: at the end of the backup.
//!
//! Such a restore is an archive recovery that fetches nothing (`restore_command 'false'`) and
//! promotes onto a new timeline (see [`super::recovery::recovery_files`]). It normally says
//! `recovery_target = 'immediate'`, so that WAL written after the backup's end (the rest of the
//! last segment) is not replayed. But PostgreSQL only stops at that target when it reads one
//! more record after the one that made the data consistent: `recoveryStopsBefore` checks the
//! target before replaying the *next* record, and `recoveryStopsAfter` checks "immediate" for
//! transaction records only. When the WAL ends right after the record that reaches consistency,
//! recovery runs out of WAL with the target "not reached", and since PostgreSQL 13 that is
//! fatal: "recovery ended before configured recovery target was reached"
//! (`PerformWalRecovery` in `src/backend/access/transam/xlogrecovery.c`). The restored server
//! would not start.
//!
//! That happens with backups taken from a standby: their end is the standby's
//! `minRecoveryPoint` (no end-of-backup record, no WAL switch after it), and the standby may
//! have received nothing after it, e.g. the switch record of the primary's own base backup. A
//! backup of a primary always has the switch record that `pg_backup_stop` writes after its
//! end-of-backup record (`do_pg_backup_stop` in `src/backend/access/transam/xlog.c`).
//!
//! So the restore reads the WAL as the server will: from the backup's redo point to the first
//! record whose end reaches the point where recovery becomes consistent
//! ([`crate::control::consistency_point`]), and one more. When no valid record follows,
//! "immediate" cannot be reached, and recovering to the end of the WAL stops at exactly the
//! same place: the restore then leaves the target out. The full verification before a restore
//! walks the backup's WAL records anyway and reads on to that record ([`from_scan`]); only a
//! restore without it reads the restored WAL here ([`decide`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use crate::types::{Lsn, WalSegSize, WalSegment};
use crate::verify::BackupEndScan;
use crate::wal::record::RecordChecker;

/// Where recovery of a restore without recovery options stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupEnd {
    /// `recovery_target = 'immediate'`: a record follows the consistency point.
    Immediate,
    /// No target: the restored WAL ends at the consistency point, so the end of the WAL is the
    /// end of the backup.
    EndOfWal,
}

/// The decision from the WAL walk of the backup's verification, which read on to the record
/// after the consistency point ([`crate::verify::BackupEndScan`]): the same answer as
/// [`decide`] without reading the WAL a second time.
pub(super) fn from_scan(scan: &BackupEndScan) -> BackupEnd {
    if scan.reached && !scan.record_follows {
        BackupEnd::EndOfWal
    } else {
        BackupEnd::Immediate
    }
}

/// Reads the WAL restored into `pg_wal` from `redo` and decides; see the module documentation.
/// Anything unreadable keeps [`BackupEnd::Immediate`] (what the restore always wrote before):
/// recovery reports what it finds itself.
pub(super) fn decide(
    pg_wal: &Path,
    redo: Lsn,
    consistent_at: Lsn,
    seg_size: WalSegSize,
    blcksz: u32,
) -> BackupEnd {
    match records_after(pg_wal, redo, consistent_at, seg_size, blcksz) {
        Ok((true, 0)) => BackupEnd::EndOfWal,
        _ => BackupEnd::Immediate,
    }
}

/// (whether the WAL reaches `consistent_at`, complete records read after that).
fn records_after(
    pg_wal: &Path,
    redo: Lsn,
    consistent_at: Lsn,
    seg_size: WalSegSize,
    blcksz: u32,
) -> io::Result<(bool, u64)> {
    if !(1024..=65536).contains(&blcksz) || !blcksz.is_power_of_two() {
        return Ok((false, 0));
    }
    // The segment files restored, one per segment number: the highest timeline, which is the
    // one recovery reads once the history switched to it.
    let mut segs: BTreeMap<u64, WalSegment> = BTreeMap::new();
    for e in fs::read_dir(pg_wal)? {
        let name = e?.file_name();
        let Some(seg) = name.to_str().and_then(|n| n.parse::<WalSegment>().ok()) else {
            continue;
        };
        let Ok(segno) = seg.segno(seg_size) else {
            continue;
        };
        let e = segs.entry(segno).or_insert(seg);
        if seg.tli > e.tli {
            *e = seg;
        }
    }
    let size = seg_size.bytes();
    let mut c = RecordChecker::scan_past(redo, consistent_at, seg_size, blcksz);
    let mut page = vec![0u8; blcksz as usize];
    let mut expected = redo.0 / size;
    for (segno, seg) in segs {
        if segno < expected {
            continue;
        }
        if segno > expected {
            break;
        }
        let mut f = File::open(pg_wal.join(seg.to_string()))?;
        let start = segno.saturating_mul(size);
        let mut off = 0u64;
        while off < size {
            if f.read_exact(&mut page).is_err() {
                return Ok((c.mark_reached(), c.records_past_mark()));
            }
            if c.feed_page(Lsn(start + off), &page, seg.tli).is_err() || c.is_done() {
                return Ok((c.mark_reached(), c.records_past_mark()));
            }
            off += u64::from(blcksz);
        }
        expected += 1;
    }
    Ok((c.mark_reached(), c.records_past_mark()))
}
