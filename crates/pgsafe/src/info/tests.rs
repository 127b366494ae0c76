use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use proptest::prelude::*;

use super::*;

/// `pgsafe.json` as the first pgsafe wrote it (format 1, before the owner, mode, tablespace
/// changes, page checksums, source PGDATA and WAL CRCs were recorded; tablespace locations as
/// plain strings).
const FIRST_FORMAT: &str = r#"{
  "format": 1,
  "pgsafe_version": "0.1.0",
  "label": "pgsafe nightly",
  "system_identifier": "7441234567890123456",
  "server_version": "15.8",
  "from_standby": false,
  "start_lsn": "0/2000028",
  "start_tli": 1,
  "start_wal": "000000010000000000000002",
  "checkpoint_lsn": "0/2000060",
  "stop_lsn": "0/2000138",
  "stop_tli": 1,
  "stop_wal": "000000010000000000000002",
  "wal_segment_size": 16777216,
  "data_checksums": true,
  "compression": "none",
  "checksum": "crc32c",
  "wal": {
    "mode": "include",
    "segments": ["000000010000000000000002"],
    "history_files": [],
    "bytes": 16777216,
    "source": "copied from pg_wal"
  },
  "tablespaces": [{"oid": 16385, "original_path": "/srv/ts1"}],
  "files": 980,
  "bytes": 23456789,
  "stored_bytes": 23456789,
  "vanished_files": 0,
  "shrunk_files": 0,
  "started_at": 1763700000,
  "finished_at": 1763700004,
  "duration_secs": 4.2,
  "copy_secs": 3.1,
  "copy_mib_per_sec": 7.2
}"#;

#[test]
fn the_first_format_still_reads() {
    let i = BackupInfo::parse(FIRST_FORMAT.as_bytes()).unwrap();
    assert_eq!(i.format, 1);
    assert_eq!(i.start_lsn.to_string(), "0/2000028");
    assert_eq!(i.wal.mode, WalMode::Include);
    assert!(i.wal.crc32c.is_empty());
    assert_eq!(i.tablespaces[0].original_path, PathBuf::from("/srv/ts1"));
    assert!(i.pgdata_owner.is_none());
    assert!(i.pgdata_mode.is_none());
    assert!(i.tablespace_changes.is_empty());
    assert!(i.page_checksums.is_none());
    assert!(i.source_pgdata.is_none());
}

#[test]
fn what_pgsafe_writes_reads_back_the_same() {
    let mut i = BackupInfo::parse(FIRST_FORMAT.as_bytes()).unwrap();
    i.pgdata_owner = Some(FileOwner {
        uid: 26,
        gid: 26,
        user: Some("postgres".into()),
        group: None,
    });
    i.pgdata_mode = Some(0o750);
    i.tablespace_changes = vec![TablespaceChange {
        oid: 16390,
        change: TablespaceChangeKind::Created,
        location: "/srv/new".into(),
    }];
    i.wal
        .crc32c
        .insert("000000010000000000000002".into(), crc32c_hex(b"wal"));
    // Not UTF-8: stored as hex (see textbytes.rs) and read back byte for byte.
    i.tablespaces[0].original_path = PathBuf::from(OsString::from_vec(b"/srv/t\xffs".to_vec()));
    let json = i.to_json().unwrap();
    let again = BackupInfo::parse(&json).unwrap();
    assert_eq!(again.to_json().unwrap(), json);
    assert_eq!(
        again.tablespaces[0].original_path,
        i.tablespaces[0].original_path
    );
    assert_eq!(again.pgdata_owner, i.pgdata_owner);
    assert_eq!(again.tablespace_changes, i.tablespace_changes);
}

#[test]
fn a_newer_format_is_refused() {
    let newer = FIRST_FORMAT.replacen("\"format\": 1", "\"format\": 3", 1);
    let e = BackupInfo::parse(newer.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            InfoError::NewerFormat {
                found: 3,
                supported: 2
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("format 3"), "{e}");

    let marker = br#"{"format":2,"backup_id":"b","start_lsn":"0/2000028","restored_at":"t"}"#;
    let e = RestoreMarker::parse(marker).unwrap_err();
    assert!(
        matches!(
            e,
            InfoError::NewerFormat {
                found: 2,
                supported: 1
            }
        ),
        "{e}"
    );
}

#[test]
fn old_backups_read_as_full_and_chain_fields_round_trip() {
    let old = BackupInfo::parse(FIRST_FORMAT.as_bytes()).unwrap();
    assert_eq!(old.backup_type, BackupType::Full);
    assert!(old.parent.is_none() && old.parent_start_lsn.is_none());
    assert!(old.changed_source.is_none() && old.bytes_read.is_none());
    assert_eq!(old.incremental_files, 0);
    // A full backup writes none of the chain fields: format 1 readers see what they know.
    let json = String::from_utf8(old.to_json().unwrap()).unwrap();
    for f in [
        "backup_type",
        "parent",
        "changed_source",
        "incremental_files",
    ] {
        assert!(!json.contains(f), "{f} in {json}");
    }

    let mut i = old;
    i.format = INFO_FORMAT;
    i.backup_type = BackupType::Incr;
    i.parent = Some("20261204T050000Z".into());
    i.parent_start_lsn = Some(Lsn(0x1_0000_0028));
    i.changed_source = Some(ChangedSource {
        kind: ChangedSourceKind::PageScan,
        reason: "no summaries".into(),
    });
    i.bytes_read = Some(123);
    i.incremental_files = 7;
    let json = i.to_json().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    // The names other tools and docs/info-json.md read.
    assert_eq!(v["backup_type"], "incr");
    assert_eq!(v["parent"], "20261204T050000Z");
    assert_eq!(v["parent_start_lsn"], "1/28");
    assert_eq!(v["changed_source"]["kind"], "page_scan");
    assert_eq!(v["changed_source"]["reason"], "no summaries");
    assert_eq!(v["bytes_read"], 123);
    assert_eq!(v["incremental_files"], 7);
    let again = BackupInfo::parse(&json).unwrap();
    assert_eq!(again.to_json().unwrap(), json);
    for (t, n) in [
        (BackupType::Full, "full"),
        (BackupType::Diff, "diff"),
        (BackupType::Incr, "incr"),
    ] {
        assert_eq!(n.parse::<BackupType>().unwrap(), t);
        assert_eq!(t.to_string(), n);
    }
    assert!("incremental".parse::<BackupType>().is_err());
    for k in [
        ChangedSourceKind::ServerSummaries,
        ChangedSourceKind::ArchiveSummaries,
        ChangedSourceKind::PageScan,
    ] {
        assert_eq!(serde_json::to_value(k).unwrap(), k.name());
    }
}

#[test]
fn not_json_is_an_error() {
    for bad in [&b""[..], b"{", b"[]", b"{\"format\": 1}", b"\xff\xfe"] {
        assert!(matches!(BackupInfo::parse(bad), Err(InfoError::Json(_))));
        assert!(matches!(RestoreMarker::parse(bad), Err(InfoError::Json(_))));
    }
}

#[test]
fn crc32c_is_written_as_a_manifest_writes_it() {
    // CRC-32C of "123456789" is E3069283 (the check value of the Castagnoli CRC); manifests
    // store the 4 bytes little-endian as hex.
    assert_eq!(crc32c_hex(b"123456789"), "839206e3");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = BackupInfo::parse(&bytes);
        let _ = RestoreMarker::parse(&bytes);
    }

    #[test]
    fn damaged_documents_never_panic(at in 0usize..1200, byte in any::<u8>()) {
        let mut b = FIRST_FORMAT.as_bytes().to_vec();
        let at = at % b.len();
        b[at] = byte;
        let _ = BackupInfo::parse(&b);
    }
}
