//! The restore sentinel: the impossible checkpoint location a pgsafe restore writes into the
//! restored pg_control, so that the server cannot start without the backup's `backup_label`.
//! It lives beside pg_control's format because it is a property of that file; restore writes
//! it and doctor recognises it.

use super::ControlFile;
use crate::types::Lsn;

/// The checkpoint location a pgsafe restore writes into the restored pg_control so that the
/// server cannot start without the backup's `backup_label`: `FFFFFFFF/28`.
///
/// Why this value:
/// * Every version checks `XRecOffIsValid(ControlFile->checkPoint)` at the very start of
///   `StartupXLOG`, *before* reading `backup_label` ("control file contains invalid data" /
///   "invalid checkpoint location"). An LSN inside a page header would therefore stop the
///   server even with the label, so the page offset must be ≥ 24 (`SizeOfXLogShortPHD`) for
///   every WAL block size (1–64 kB): the low 16 bits are 0x0028 (offset 40, just past a
///   segment's long header, a place where a record may start).
/// * With `backup_label`, recovery reads the checkpoint named by the label and overwrites
///   pg_control's `checkPoint`, so the sentinel is never used.
/// * Without it, recovery tries to read a checkpoint record at `FFFFFFFF/28`, 16 EiB into the
///   WAL: no such segment can exist, so startup fails with "could not locate a valid checkpoint
///   record" — it cannot start from pg_control and replay the wrong WAL.
/// * PostgreSQL 10 falls back to `prevCheckPoint` when the latest checkpoint is unreadable:
///   [`apply_sentinel`] writes the sentinel there too.
/// * The high word leaves 4 GiB of headroom below `u64::MAX` for segment arithmetic, and
///   `FFFFFFFF/28` is recognisable in `pg_controldata` output.
pub const SENTINEL_CHECKPOINT: Lsn = Lsn(0xFFFF_FFFF_0000_0028);

/// True if pg_control carries the restore sentinel (the directory was restored by pgsafe and
/// has not yet been started successfully from its `backup_label`).
pub fn has_sentinel(control: &ControlFile) -> bool {
    control.checkpoint == SENTINEL_CHECKPOINT
}

/// Sets the sentinel in a pg_control image (checkpoint and, on PostgreSQL 9.6/10, the previous
/// checkpoint). The caller encodes and writes the file (durably, pg_control last).
pub fn apply_sentinel(control: &mut ControlFile) {
    control.checkpoint = SENTINEL_CHECKPOINT;
    if let Some(prev) = control.prev_checkpoint.as_mut() {
        *prev = SENTINEL_CHECKPOINT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_is_a_valid_record_pointer_beyond_any_wal() {
        // XRecOffIsValid: offset in page >= SizeOfXLogShortPHD (24) for every WAL block size.
        for blcksz in [1024u64, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert!(SENTINEL_CHECKPOINT.0 % blcksz >= 24, "blcksz {blcksz}");
        }
        assert_eq!(SENTINEL_CHECKPOINT.to_string(), "FFFFFFFF/28");
        assert!(SENTINEL_CHECKPOINT.checked_add(1 << 30).is_some());
        const { assert!(SENTINEL_CHECKPOINT.0 > (1u64 << 63)) };
    }

    #[test]
    fn sentinel_round_trips_through_pg_control() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/pg_control-15"
        ))
        .unwrap();
        let mut c = ControlFile::decode(&bytes).unwrap();
        assert!(!has_sentinel(&c));
        apply_sentinel(&mut c);
        let again = ControlFile::decode(&c.encode()).unwrap();
        assert!(has_sentinel(&again));
        assert_eq!(again.checkpoint_copy.redo, c.checkpoint_copy.redo);
    }
}
