//! Documents for the repository's unit tests (shared with retention's and the catalog's).

use super::doc::{Event, EventKind, LeaseDoc, REPO_FORMAT, Registration, format_time};
use crate::storage::Ident;
use crate::types::{PgVersion, SystemId, WalSegSize};

/// The system identifier the test registration has.
pub const SYSID: u64 = 7_441_234_567_890_123_456;

pub fn ident(s: &str) -> Ident {
    Ident::new(s).expect("a test ident")
}

/// A registration of cluster `main`: [`SYSID`], PostgreSQL 15, 16 MiB segments.
pub fn registration() -> Registration {
    Registration {
        format: REPO_FORMAT,
        cluster: ident("main"),
        system_identifier: SystemId(SYSID),
        server_version: PgVersion::from_num(150008).expect("a version"),
        wal_segment_size: WalSegSize::DEFAULT,
        pgdata: "/srv/pg".into(),
        registered_at: format_time(0),
        pgsafe_version: "0.1.0".into(),
    }
}

/// `pgsafe.json` of a backup of system `sysid` on PostgreSQL `major`, stopping at
/// `stop_lsn` on timeline `tli`, started at `started_at` (seconds).
pub fn info_json(sysid: u64, major: u32, tli: u32, stop_lsn: u64, started_at: i64) -> Vec<u8> {
    let lsn = |v: u64| format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff);
    let seg = |v: u64| format!("{tli:08X}{:08X}{:08X}", v >> 32, (v & 0xffff_ffff) >> 24);
    let start = stop_lsn.saturating_sub(0x100);
    format!(
        r#"{{
  "format": 1, "pgsafe_version": "0.1.0", "label": "t",
  "system_identifier": "{sysid}", "server_version": "{major}.2", "from_standby": false,
  "start_lsn": "{s}", "start_tli": {tli}, "start_wal": "{sw}",
  "checkpoint_lsn": "{s}", "stop_lsn": "{e}", "stop_tli": {tli}, "stop_wal": "{ew}",
  "wal_segment_size": 16777216, "data_checksums": true, "compression": "none",
  "checksum": "crc32c",
  "wal": {{"mode": "include", "segments": [], "history_files": [], "bytes": 0, "source": "x"}},
  "tablespaces": [], "files": 1, "bytes": 10, "stored_bytes": 10, "vanished_files": 0,
  "shrunk_files": 0, "started_at": {started_at}, "finished_at": {started_at},
  "duration_secs": 1.0, "copy_secs": 1.0, "copy_mib_per_sec": 1.0
}}"#,
        s = lsn(start),
        sw = seg(start),
        e = lsn(stop_lsn),
        ew = seg(stop_lsn),
    )
    .into_bytes()
}

/// An event at `us` microseconds.
pub fn event(us: i64, what: EventKind) -> Event {
    Event {
        format: REPO_FORMAT,
        time: format_time(us),
        host: "h".into(),
        pgsafe_version: "0.1.0".into(),
        what,
    }
}

/// A backup lease for `backup` expiring at `expires_us`.
pub fn lease(backup: &str, seq: u64, expires_us: i64) -> LeaseDoc {
    LeaseDoc {
        format: REPO_FORMAT,
        kind: ident("backup"),
        backup: Some(ident(backup)),
        host: "h".into(),
        pid: 1,
        seq,
        acquired_at: format_time(0),
        expires_at: format_time(expires_us),
    }
}

/// `pgsafe.json` of a differential or incremental backup (`kind`: "diff" or "incr") of
/// [`info_json`]'s shape whose parent is `parent`, started at `parent_start` (an LSN as
/// [`info_json`] computes it for the parent: its stop LSN − 0x100).
pub fn child_info_json(
    sysid: u64,
    stop_lsn: u64,
    started_at: i64,
    kind: &str,
    parent: &str,
    parent_start: u64,
) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&info_json(sysid, 15, 1, stop_lsn, started_at)).expect("test JSON");
    v["format"] = 2.into();
    v["backup_type"] = kind.into();
    v["parent"] = parent.into();
    v["parent_start_lsn"] =
        format!("{:X}/{:X}", parent_start >> 32, parent_start & 0xffff_ffff).into();
    v["changed_source"] = serde_json::json!({"kind": "page_scan", "reason": "test"});
    serde_json::to_vec(&v).expect("test JSON")
}
