//! Tests of [`super`]: unit, golden and property tests.

use super::*;
use proptest::prelude::*;

/// Columns of the offset table below: one per `pg_control_version`.
const COLUMNS: [u32; 7] = [960, 1002, 1100, 1201, 1300, 1700, 1800];
/// A release catalog version per column (for 1300: PostgreSQL 15).
const CATS: [u32; 7] = [
    201608131, 201707211, 201809051, 201909212, 202209061, 202406281, 202506291,
];
const NO: i32 = -1;
/// Offsets of each major's `ControlFileData` (`src/include/catalog/pg_control.h`), typed in
/// literally (rows in `ControlField` order; -1 = absent).
const REFERENCE: &[(&str, [i32; 7])] = &[
    ("SystemIdentifier", [0, 0, 0, 0, 0, 0, 0]),
    ("PgControlVersion", [8, 8, 8, 8, 8, 8, 8]),
    ("CatalogVersionNo", [12, 12, 12, 12, 12, 12, 12]),
    ("State", [16, 16, 16, 16, 16, 16, 16]),
    ("Time", [24, 24, 24, 24, 24, 24, 24]),
    ("CheckPoint", [32, 32, 32, 32, 32, 32, 32]),
    ("PrevCheckPoint", [40, 40, NO, NO, NO, NO, NO]),
    ("Redo", [48, 48, 40, 40, 40, 40, 40]),
    ("ThisTimeLineId", [56, 56, 48, 48, 48, 48, 48]),
    ("PrevTimeLineId", [60, 60, 52, 52, 52, 52, 52]),
    ("FullPageWrites", [64, 64, 56, 56, 56, 56, 56]),
    ("CheckPointWalLevel", [NO, NO, NO, NO, NO, 60, 60]),
    ("NextXidEpoch", [68, 68, 60, NO, NO, NO, NO]),
    ("NextXid", [72, 72, 64, 64, 64, 64, 64]),
    ("NextOid", [76, 76, 68, 72, 72, 72, 72]),
    ("NextMulti", [80, 80, 72, 76, 76, 76, 76]),
    ("NextMultiOffset", [84, 84, 76, 80, 80, 80, 80]),
    ("OldestXid", [88, 88, 80, 84, 84, 84, 84]),
    ("OldestXidDb", [92, 92, 84, 88, 88, 88, 88]),
    ("OldestMulti", [96, 96, 88, 92, 92, 92, 92]),
    ("OldestMultiDb", [100, 100, 92, 96, 96, 96, 96]),
    ("CheckPointTime", [104, 104, 96, 104, 104, 104, 104]),
    ("OldestCommitTsXid", [112, 112, 104, 112, 112, 112, 112]),
    ("NewestCommitTsXid", [116, 116, 108, 116, 116, 116, 116]),
    ("OldestActiveXid", [120, 120, 112, 120, 120, 120, 120]),
    ("UnloggedLsn", [128, 128, 120, 128, 128, 128, 128]),
    ("MinRecoveryPoint", [136, 136, 128, 136, 136, 136, 136]),
    ("MinRecoveryPointTli", [144, 144, 136, 144, 144, 144, 144]),
    ("BackupStartPoint", [152, 152, 144, 152, 152, 152, 152]),
    ("BackupEndPoint", [160, 160, 152, 160, 160, 160, 160]),
    ("BackupEndRequired", [168, 168, 160, 168, 168, 168, 168]),
    ("WalLevel", [172, 172, 164, 172, 172, 172, 172]),
    ("WalLogHints", [176, 176, 168, 176, 176, 176, 176]),
    ("MaxConnections", [180, 180, 172, 180, 180, 180, 180]),
    ("MaxWorkerProcesses", [184, 184, 176, 184, 184, 184, 184]),
    ("MaxWalSenders", [NO, NO, NO, 188, 188, 188, 188]),
    ("MaxPreparedXacts", [188, 188, 180, 192, 192, 192, 192]),
    ("MaxLocksPerXact", [192, 192, 184, 196, 196, 196, 196]),
    ("TrackCommitTimestamp", [196, 196, 188, 200, 200, 200, 200]),
    ("MaxAlign", [200, 200, 192, 204, 204, 204, 204]),
    ("FloatFormat", [208, 208, 200, 208, 208, 208, 208]),
    ("Blcksz", [216, 216, 208, 216, 216, 216, 216]),
    ("RelsegSize", [220, 220, 212, 220, 220, 220, 220]),
    ("XlogBlcksz", [224, 224, 216, 224, 224, 224, 224]),
    ("XlogSegSize", [228, 228, 220, 228, 228, 228, 228]),
    ("NameDataLen", [232, 232, 224, 232, 232, 232, 232]),
    ("IndexMaxKeys", [236, 236, 228, 236, 236, 236, 236]),
    ("ToastMaxChunkSize", [240, 240, 232, 240, 240, 240, 240]),
    ("Loblksize", [244, 244, 236, 244, 244, 244, 244]),
    ("EnableIntTimes", [248, NO, NO, NO, NO, NO, NO]),
    ("Float4ByVal", [249, 248, 240, 248, NO, NO, NO]),
    ("Float8ByVal", [250, 249, 241, 249, 248, 248, 248]),
    ("DataChecksumVersion", [252, 252, 244, 252, 252, 252, 252]),
    ("DefaultCharSignedness", [NO, NO, NO, NO, NO, NO, 256]),
    (
        "MockAuthenticationNonce",
        [NO, 256, 248, 256, 256, 256, 257],
    ),
    ("Crc", [256, 288, 280, 288, 288, 288, 292]),
];
/// `sizeof(ControlFileData)` per column, from the same headers.
const SIZEOF: [usize; 7] = [264, 296, 288, 296, 296, 296, 296];

fn ref_offset(name: &str, col: usize) -> Option<usize> {
    let row = REFERENCE
        .iter()
        .find(|(n, _)| *n == name)
        .expect("field in table");
    usize::try_from(row.1[col]).ok()
}

/// Width in bytes of a field, from the C types in `pg_control.h`.
fn ref_width(name: &str, col: usize) -> usize {
    match name {
        "SystemIdentifier" | "Time" | "CheckPoint" | "PrevCheckPoint" | "Redo"
        | "CheckPointTime" | "UnloggedLsn" | "MinRecoveryPoint" | "BackupStartPoint"
        | "BackupEndPoint" | "FloatFormat" => 8,
        "NextXid" if col >= 3 => 8,
        "FullPageWrites"
        | "BackupEndRequired"
        | "WalLogHints"
        | "TrackCommitTimestamp"
        | "EnableIntTimes"
        | "Float4ByVal"
        | "Float8ByVal"
        | "DefaultCharSignedness" => 1,
        "MockAuthenticationNonce" => 32,
        _ => 4,
    }
}

fn set_crc(b: &mut [u8], col: usize) {
    let off = ref_offset("Crc", col).unwrap();
    let crc = crc32c::crc32c(&b[..off]);
    b[off..off + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes the synthetic image stores for row `k`: values that must be exact (version,
/// catalog, float format, segment size) or are enums, else a distinct pattern per field.
fn ref_value(k: usize, name: &str, col: usize, cat: u32) -> Vec<u8> {
    let w = ref_width(name, col);
    let pattern = 0x0101_0101_0101_0101u64.wrapping_mul(k as u64 + 1) ^ 0x8040_2010_0804_0201;
    let v: u64 = match name {
        "PgControlVersion" => COLUMNS[col].into(),
        "CatalogVersionNo" => cat.into(),
        "State" => 6,
        "WalLevel" => 2,
        "CheckPointWalLevel" => 1,
        "FloatFormat" => 1234567.0f64.to_bits(),
        "XlogSegSize" => 64 << 20,
        _ if w == 1 => (k % 2) as u64,
        _ => pattern,
    };
    if w == 32 {
        return (0..32u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(k as u8))
            .collect();
    }
    v.to_le_bytes()[..w].to_vec()
}

/// An 8192-byte image laid out from the reference table, with a correct CRC.
fn image(col: usize, cat: u32) -> Vec<u8> {
    let mut b = vec![0u8; PG_CONTROL_FILE_SIZE];
    for (k, (name, _)) in REFERENCE.iter().enumerate() {
        if *name == "Crc" {
            continue;
        }
        if let Some(off) = ref_offset(name, col) {
            let v = ref_value(k, name, col, cat);
            b[off..off + v.len()].copy_from_slice(&v);
        }
    }
    set_crc(&mut b, col);
    b
}

/// The decoded value of a field, as the bytes it was stored as (`None` if absent).
fn decoded_bytes(cf: &ControlFile, name: &str, col: usize) -> Option<Vec<u8>> {
    let c = &cf.checkpoint_copy;
    let u32b = |v: u32| Some(v.to_le_bytes().to_vec());
    let i32b = |v: i32| Some(v.to_le_bytes().to_vec());
    let u64b = |v: u64| Some(v.to_le_bytes().to_vec());
    let i64b = |v: i64| Some(v.to_le_bytes().to_vec());
    let boolb = |v: bool| Some(vec![u8::from(v)]);
    match name {
        "SystemIdentifier" => u64b(cf.system_identifier.0),
        "PgControlVersion" => u32b(cf.pg_control_version),
        "CatalogVersionNo" => u32b(cf.catalog_version_no),
        "State" => u32b(cf.state.to_u32()),
        "Time" => i64b(cf.time),
        "CheckPoint" => u64b(cf.checkpoint.0),
        "PrevCheckPoint" => cf.prev_checkpoint.and_then(|l| u64b(l.0)),
        "Redo" => u64b(c.redo.0),
        "ThisTimeLineId" => u32b(c.this_timeline.0),
        "PrevTimeLineId" => u32b(c.prev_timeline.0),
        "FullPageWrites" => boolb(c.full_page_writes),
        "CheckPointWalLevel" => c.wal_level.and_then(|l| i32b(l.to_i32())),
        "NextXidEpoch" if col < 3 => u32b(c.next_xid.epoch()),
        "NextXidEpoch" => None,
        "NextXid" if col < 3 => u32b(c.next_xid.xid()),
        "NextXid" => u64b(c.next_xid.0),
        "NextOid" => u32b(c.next_oid),
        "NextMulti" => u32b(c.next_multi),
        "NextMultiOffset" => u32b(c.next_multi_offset),
        "OldestXid" => u32b(c.oldest_xid),
        "OldestXidDb" => u32b(c.oldest_xid_db),
        "OldestMulti" => u32b(c.oldest_multi),
        "OldestMultiDb" => u32b(c.oldest_multi_db),
        "CheckPointTime" => i64b(c.time),
        "OldestCommitTsXid" => u32b(c.oldest_commit_ts_xid),
        "NewestCommitTsXid" => u32b(c.newest_commit_ts_xid),
        "OldestActiveXid" => u32b(c.oldest_active_xid),
        "UnloggedLsn" => u64b(cf.unlogged_lsn.0),
        "MinRecoveryPoint" => u64b(cf.min_recovery_point.0),
        "MinRecoveryPointTli" => u32b(cf.min_recovery_point_tli.0),
        "BackupStartPoint" => u64b(cf.backup_start_point.0),
        "BackupEndPoint" => u64b(cf.backup_end_point.0),
        "BackupEndRequired" => boolb(cf.backup_end_required),
        "WalLevel" => i32b(cf.wal_level.to_i32()),
        "WalLogHints" => boolb(cf.wal_log_hints),
        "MaxConnections" => i32b(cf.max_connections),
        "MaxWorkerProcesses" => i32b(cf.max_worker_processes),
        "MaxWalSenders" => cf.max_wal_senders.and_then(i32b),
        "MaxPreparedXacts" => i32b(cf.max_prepared_xacts),
        "MaxLocksPerXact" => i32b(cf.max_locks_per_xact),
        "TrackCommitTimestamp" => boolb(cf.track_commit_timestamp),
        "MaxAlign" => u32b(cf.max_align),
        "FloatFormat" => u64b(cf.float_format.to_bits()),
        "Blcksz" => u32b(cf.blcksz),
        "RelsegSize" => u32b(cf.relseg_size),
        "XlogBlcksz" => u32b(cf.xlog_blcksz),
        "XlogSegSize" => u32b(cf.xlog_seg_size.bytes() as u32),
        "NameDataLen" => u32b(cf.name_data_len),
        "IndexMaxKeys" => u32b(cf.index_max_keys),
        "ToastMaxChunkSize" => u32b(cf.toast_max_chunk_size),
        "Loblksize" => u32b(cf.loblksize),
        "EnableIntTimes" => cf.enable_int_times.and_then(boolb),
        "Float4ByVal" => cf.float4_by_val.and_then(boolb),
        "Float8ByVal" => boolb(cf.float8_by_val),
        "DataChecksumVersion" => u32b(cf.data_checksum_version),
        "DefaultCharSignedness" => cf.default_char_signedness.and_then(boolb),
        "MockAuthenticationNonce" => cf.mock_authentication_nonce.map(|n| n.to_vec()),
        "Crc" => u32b(cf.crc),
        other => panic!("no accessor for {other}"),
    }
}

/// Every field once, in declaration order.
fn all_fields() -> Vec<ControlField> {
    let mut all: Vec<ControlField> = Vec::new();
    for decl in DECLS {
        if let Decl::Field(f, ..) = decl {
            if all.last() != Some(f) {
                all.push(*f);
            }
        }
    }
    all
}

#[test]
fn computed_offsets_match_the_reference_table() {
    let all = all_fields();
    assert_eq!(all.len(), ControlField::COUNT);
    assert_eq!(REFERENCE.len(), ControlField::COUNT);
    for (i, field) in all.iter().enumerate() {
        assert_eq!(*field as usize, i);
        assert_eq!(format!("{field:?}"), REFERENCE[i].0, "table row order");
    }
    assert_eq!(ControlLayout::all().len(), COLUMNS.len());
    for (col, layout) in ControlLayout::all().iter().enumerate() {
        assert_eq!(layout.pg_control_version, COLUMNS[col]);
        assert_eq!(
            layout.struct_size, SIZEOF[col],
            "sizeof for {}",
            COLUMNS[col]
        );
        assert_eq!(Some(layout.crc_offset()), ref_offset("Crc", col));
        for (field, (name, _)) in all.iter().zip(REFERENCE) {
            assert_eq!(
                layout.offset(*field),
                ref_offset(name, col),
                "{name} in {}",
                COLUMNS[col]
            );
        }
    }
}

#[test]
fn synthetic_images_decode_every_field_of_every_layout() {
    for col in 0..COLUMNS.len() {
        let bytes = image(col, CATS[col]);
        let cf = ControlFile::decode(&bytes).unwrap();
        for (k, (name, _)) in REFERENCE.iter().enumerate() {
            let want = ref_offset(name, col).map(|off| match *name {
                "Crc" => bytes[off..off + 4].to_vec(),
                _ => ref_value(k, name, col, CATS[col]),
            });
            assert_eq!(
                decoded_bytes(&cf, name, col),
                want,
                "{name} in {}",
                COLUMNS[col]
            );
        }
        assert_eq!(cf.state, DbState::InProduction);
        assert_eq!(cf.wal_level, WalLevel::Logical);
        assert_eq!(cf.xlog_seg_size.to_string(), "64MB");
        let major = cf.major_version().unwrap();
        assert_eq!(
            major.num(),
            ControlLayout::all()[col].majors[if col == 4 { 2 } else { 0 }].0
        );
        assert!(cf.catalog_version_is_release());
        assert_eq!(cf.encode(), bytes, "round trip of {}", COLUMNS[col]);
    }
}

#[test]
fn next_xid_is_built_from_epoch_and_xid_on_old_versions() {
    let mut b = image(2, CATS[2]);
    b[60..64].copy_from_slice(&3u32.to_le_bytes()); // 11: nextXidEpoch
    b[64..68].copy_from_slice(&724u32.to_le_bytes()); // 11: nextXid
    set_crc(&mut b, 2);
    let cf = ControlFile::decode(&b).unwrap();
    assert_eq!(
        cf.checkpoint_copy.next_xid,
        FullTransactionId((3 << 32) | 724)
    );
    assert_eq!(cf.checkpoint_copy.next_xid.to_string(), "3:724");
}

#[test]
fn major_version_from_catalog_version() {
    let major = |col: usize, cat: u32| {
        let cf = ControlFile::decode(&image(col, cat)).unwrap();
        (
            cf.major_version().map(|v| v.major_name()),
            cf.catalog_version_is_release(),
        )
    };
    for (cat, want) in [
        (202007201, "13"),
        (202107181, "14"),
        (202209061, "15"),
        (202307071, "16"),
    ] {
        assert_eq!(major(4, cat), (Some(want.to_owned()), true));
    }
    assert_eq!(major(0, CATS[0]).0.as_deref(), Some("9.6"));
    assert_eq!(major(6, CATS[6]).0.as_deref(), Some("18"));
    // A 14 beta's catalog number lies between the 13 and 14 releases.
    assert_eq!(major(4, 202105121), (Some("14".to_owned()), false));
    // Newer than every release sharing 1300: a development build of a later major.
    assert_eq!(major(4, 202309999), (None, false));
}

#[test]
fn real_postgresql_15_file_matches_pg_controldata() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pg_control-15"
    ))
    .unwrap();
    assert_eq!(bytes.len(), PG_CONTROL_FILE_SIZE);
    let cf = ControlFile::decode(&bytes).unwrap();
    assert_eq!(cf.pg_control_version, 1300);
    assert_eq!(cf.catalog_version_no, 202209061);
    assert_eq!(cf.major_version().unwrap().major(), 15);
    assert_eq!(cf.system_identifier.to_string(), "7710581175749560089");
    assert_eq!(cf.state.to_string(), "shut down");
    assert_eq!(cf.time, 1795259578); // Sat Nov 21 11:12:58 2026 UTC
    assert_eq!(cf.checkpoint.to_string(), "0/17414F0");
    assert_eq!(cf.prev_checkpoint, None);
    let c = &cf.checkpoint_copy;
    assert_eq!(c.redo.to_string(), "0/17414F0");
    assert_eq!(
        (c.this_timeline, c.prev_timeline),
        (TimelineId(1), TimelineId(1))
    );
    assert!(c.full_page_writes);
    assert_eq!(c.wal_level, None);
    assert_eq!(c.next_xid.to_string(), "0:724");
    assert_eq!(
        (c.next_oid, c.next_multi, c.next_multi_offset),
        (13572, 1, 0)
    );
    assert_eq!(
        (c.oldest_xid, c.oldest_xid_db, c.oldest_active_xid),
        (716, 1, 0)
    );
    assert_eq!((c.oldest_multi, c.oldest_multi_db), (1, 1));
    assert_eq!((c.oldest_commit_ts_xid, c.newest_commit_ts_xid), (0, 0));
    assert_eq!(c.time, 1795259578);
    assert_eq!(cf.unlogged_lsn.to_string(), "0/3E8");
    assert_eq!(cf.min_recovery_point, Lsn(0));
    assert_eq!(cf.min_recovery_point_tli, TimelineId(0));
    assert_eq!(
        (cf.backup_start_point, cf.backup_end_point),
        (Lsn(0), Lsn(0))
    );
    assert!(!cf.backup_end_required);
    assert_eq!(cf.wal_level.to_string(), "replica");
    assert!(!cf.wal_log_hints);
    assert_eq!((cf.max_connections, cf.max_worker_processes), (100, 8));
    assert_eq!(cf.max_wal_senders, Some(10));
    assert_eq!((cf.max_prepared_xacts, cf.max_locks_per_xact), (0, 64));
    assert!(!cf.track_commit_timestamp);
    assert_eq!(
        (cf.max_align, cf.blcksz, cf.relseg_size, cf.xlog_blcksz),
        (8, 8192, 131072, 8192)
    );
    assert_eq!(cf.xlog_seg_size, WalSegSize::DEFAULT);
    assert_eq!((cf.name_data_len, cf.index_max_keys), (64, 32));
    assert_eq!((cf.toast_max_chunk_size, cf.loblksize), (1996, 2048));
    assert_eq!((cf.enable_int_times, cf.float4_by_val), (None, None));
    assert!(cf.float8_by_val);
    assert_eq!(cf.data_checksum_version, 1);
    assert_eq!(cf.default_char_signedness, None);
    let nonce: String = cf
        .mock_authentication_nonce
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        nonce,
        "efb49fa548b38986eef741e2558527bfee8f313d6be7d344233563773166ac48"
    );
    assert_eq!(cf.encode(), bytes);
}

#[test]
fn sentinel_edits_touch_only_their_fields() {
    let bytes = image(4, CATS[4]);
    let mut cf = ControlFile::decode(&bytes).unwrap();
    cf.checkpoint = Lsn(u64::MAX);
    cf.checkpoint_copy.redo = Lsn(0xFFFF_FFFF_0000_0000);
    cf.state = DbState::InArchiveRecovery;
    cf.min_recovery_point = Lsn(0x1_0000_0028);
    let out = cf.encode();
    let again = ControlFile::decode(&out).unwrap();
    assert_eq!(again.checkpoint, Lsn(u64::MAX));
    assert_eq!(again.checkpoint_copy.redo, Lsn(0xFFFF_FFFF_0000_0000));
    assert_eq!(again.state.to_string(), "in archive recovery");
    assert_eq!(again.min_recovery_point.to_string(), "1/28");
    let changed: Vec<usize> = (0..out.len()).filter(|&i| out[i] != bytes[i]).collect();
    let allowed = |i: usize| matches!(i, 16..20 | 32..48 | 136..144 | 288..292);
    assert!(
        changed.iter().all(|&i| allowed(i)),
        "changed bytes {changed:?}"
    );
}

#[test]
fn bytes_after_the_struct_and_odd_bools_survive_a_round_trip() {
    let mut b = image(6, CATS[6]);
    b[5000] = 0x5A; // outside the CRC: ignored by the server, preserved by us
    b[168] = 7; // backupEndRequired: non-canonical "true"
    b[21] = 0xEE; // padding after state
    set_crc(&mut b, 6);
    let cf = ControlFile::decode(&b).unwrap();
    assert!(cf.backup_end_required);
    assert_eq!(cf.encode(), b);
    // Accepts a file cut to sizeof(ControlFileData), like the server; pads it on encode.
    let short = ControlFile::decode(&b[..296]).unwrap();
    assert_eq!(short.encode()[..296], b[..296]);
    assert_eq!(short.encode().len(), PG_CONTROL_FILE_SIZE);
}

#[test]
fn truncated_files_are_rejected_with_sizes() {
    let b = image(4, CATS[4]);
    for (len, expected) in [(0, 264), (11, 264), (12, 296), (295, 296)] {
        let err = ControlFile::decode(&b[..len]).unwrap_err();
        assert!(
            matches!(err, ControlError::TooShort { len: l, expected: e } if l == len && e == expected)
        );
        assert!(err.to_string().starts_with(&format!(
            "pg_control is {len} bytes, expected at least {expected}"
        )));
    }
}

#[test]
fn a_flipped_byte_is_a_checksum_error() {
    let b = image(5, CATS[5]);
    for pos in [0, 17, 21, 100, 200, 287, 288, 291] {
        let mut bad = b.clone();
        bad[pos] ^= 0x10;
        let err = ControlFile::decode(&bad).unwrap_err();
        assert!(
            matches!(err, ControlError::BadCrc { .. }),
            "byte {pos}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("incorrect checksum in pg_control: stored 0x"),
            "{err}"
        );
    }
}

#[test]
fn unknown_and_byte_swapped_versions() {
    let mut b = image(4, CATS[4]);
    b[8..12].copy_from_slice(&1234u32.to_le_bytes());
    let err = ControlFile::decode(&b).unwrap_err();
    assert!(matches!(err, ControlError::UnknownVersion(1234)));
    assert!(
        err.to_string()
            .starts_with("pg_control version 1234 is not one pgsafe knows (9.6–18")
    );
    b[8..12].copy_from_slice(&1300u32.to_be_bytes());
    let err = ControlFile::decode(&b).unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::ByteOrder {
                found: 0x1405_0000,
                swapped: 1300
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("mismatched byte ordering"));
    assert!(matches!(
        ControlFile::decode(&[0; 8192]),
        Err(ControlError::UnknownVersion(0))
    ));
}

#[test]
fn float_format_and_segment_size_are_checked() {
    let mut b = image(3, CATS[3]);
    b[208..216].copy_from_slice(&1234567.5f64.to_le_bytes());
    set_crc(&mut b, 3);
    let err = ControlFile::decode(&b).unwrap_err();
    assert!(
        matches!(err, ControlError::FloatFormat(v) if v == 1234567.5),
        "{err}"
    );
    for bad in [0u32, 3 << 20, 512 << 10, 2 << 30] {
        let mut b = image(3, CATS[3]);
        b[228..232].copy_from_slice(&bad.to_le_bytes());
        set_crc(&mut b, 3);
        let err = ControlFile::decode(&b).unwrap_err();
        assert!(matches!(err, ControlError::SegSize(v) if v == bad), "{err}");
        assert!(err.to_string().contains("invalid WAL segment size"));
    }
}

#[test]
fn enums_use_pg_controldata_wording_and_keep_unknown_values() {
    let words: Vec<String> = (0..=7).map(|v| DbState::from_u32(v).to_string()).collect();
    assert_eq!(
        words,
        [
            "starting up",
            "shut down",
            "shut down in recovery",
            "shutting down",
            "in crash recovery",
            "in archive recovery",
            "in production",
            "unrecognized status code (7)",
        ]
    );
    for v in [0, 6, 7, u32::MAX] {
        assert_eq!(DbState::from_u32(v).to_u32(), v);
    }
    let levels: Vec<String> = (-1..=3)
        .map(|v| WalLevel::from_i32(v).to_string())
        .collect();
    assert_eq!(
        levels,
        [
            "unrecognized wal_level (-1)",
            "minimal",
            "replica",
            "logical",
            "unrecognized wal_level (3)",
        ]
    );
    assert_eq!(WalLevel::from_i32(-7).to_i32(), -7);
}

#[test]
fn serializes_for_json_without_raw_bytes() {
    let cf = ControlFile::decode(&image(5, CATS[5])).unwrap();
    let v = serde_json::to_value(&cf).unwrap();
    assert_eq!(v["state"], "in production");
    assert_eq!(v["wal_level"], "logical");
    assert_eq!(v["checkpoint_copy"]["wal_level"], "replica");
    assert_eq!(v["system_identifier"], cf.system_identifier.to_string());
    assert_eq!(v["checkpoint"], cf.checkpoint.to_string());
    assert_eq!(
        v["checkpoint_copy"]["next_xid"],
        cf.checkpoint_copy.next_xid.to_string()
    );
    assert_eq!(v["xlog_seg_size"], 64 << 20);
    assert_eq!(v["prev_checkpoint"], serde_json::Value::Null);
    assert_eq!(v["mock_authentication_nonce"].as_str().unwrap().len(), 64);
    assert!(v.get("raw").is_none() && v.get("layout").is_none());
}

#[test]
fn read_control_file_reads_and_reports_paths() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("pg_control");
    std::fs::write(&good, image(4, CATS[4])).unwrap();
    assert_eq!(read_control_file(&good).unwrap().pg_control_version, 1300);

    let missing = dir.path().join("nope");
    let err = read_control_file(&missing).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("read pg_control at {}: ", missing.display()))
    );

    let mut torn = image(4, CATS[4]);
    torn[40] ^= 1;
    std::fs::write(&good, torn).unwrap();
    let start = std::time::Instant::now();
    assert!(matches!(
        read_control_file(&good),
        Err(ControlError::BadCrc { .. })
    ));
    assert!(
        start.elapsed() >= READ_RETRY_DELAY * (READ_ATTEMPTS - 1),
        "retried"
    );
}

/// Valid field values for a layout: enums and segment size included, `Option`s matching it.
fn with_fields(mut cf: ControlFile, w: &[u64], seg_pow: u32) -> ControlFile {
    let l = cf.layout;
    let has = |f| l.offset(f).is_some();
    let u = |i: usize| w[i] as u32;
    let i = |i: usize| w[i] as i32;
    let b = |i: usize| w[i] & 1 == 1;
    cf.system_identifier = SystemId(w[0]);
    cf.catalog_version_no = u(1);
    cf.state = DbState::from_u32(u(2) % 9);
    cf.time = w[3] as i64;
    cf.checkpoint = Lsn(w[4]);
    cf.prev_checkpoint = has(ControlField::PrevCheckPoint).then_some(Lsn(w[5]));
    let c = &mut cf.checkpoint_copy;
    c.redo = Lsn(w[6]);
    c.this_timeline = TimelineId(u(7));
    c.prev_timeline = TimelineId(u(8));
    c.full_page_writes = b(9);
    c.wal_level = has(ControlField::CheckPointWalLevel).then_some(WalLevel::from_i32(i(10)));
    c.next_xid = FullTransactionId(w[11]);
    (c.next_oid, c.next_multi, c.next_multi_offset) = (u(12), u(13), u(14));
    (
        c.oldest_xid,
        c.oldest_xid_db,
        c.oldest_multi,
        c.oldest_multi_db,
    ) = (u(15), u(16), u(17), u(18));
    c.time = w[19] as i64;
    (
        c.oldest_commit_ts_xid,
        c.newest_commit_ts_xid,
        c.oldest_active_xid,
    ) = (u(20), u(21), u(22));
    cf.unlogged_lsn = Lsn(w[23]);
    cf.min_recovery_point = Lsn(w[24]);
    cf.min_recovery_point_tli = TimelineId(u(25));
    cf.backup_start_point = Lsn(w[26]);
    cf.backup_end_point = Lsn(w[27]);
    cf.backup_end_required = b(28);
    cf.wal_level = WalLevel::from_i32(i(29));
    cf.wal_log_hints = b(30);
    (cf.max_connections, cf.max_worker_processes) = (i(31), i(32));
    cf.max_wal_senders = has(ControlField::MaxWalSenders).then_some(i(33));
    (cf.max_prepared_xacts, cf.max_locks_per_xact) = (i(34), i(35));
    cf.track_commit_timestamp = b(36);
    (cf.max_align, cf.blcksz, cf.relseg_size, cf.xlog_blcksz) = (u(37), u(38), u(39), u(40));
    cf.xlog_seg_size = WalSegSize::new(1 << seg_pow).unwrap();
    (cf.name_data_len, cf.index_max_keys) = (u(41), u(42));
    (cf.toast_max_chunk_size, cf.loblksize) = (u(43), u(44));
    cf.enable_int_times = has(ControlField::EnableIntTimes).then_some(b(45));
    cf.float4_by_val = has(ControlField::Float4ByVal).then_some(b(46));
    cf.float8_by_val = b(47);
    cf.data_checksum_version = u(48);
    cf.default_char_signedness = has(ControlField::DefaultCharSignedness).then_some(b(49));
    if has(ControlField::MockAuthenticationNonce) {
        let mut n = [0u8; 32];
        for (k, chunk) in n.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&w[50 + k].to_le_bytes());
        }
        cf.mock_authentication_nonce = Some(n);
    }
    cf
}

proptest! {
    #[test]
    fn any_field_values_round_trip(
        col in 0usize..7,
        words in proptest::collection::vec(any::<u64>(), 54),
        seg_pow in 20u32..=30,
    ) {
        let base = ControlFile::decode(&image(col, CATS[col])).unwrap();
        let mut want = with_fields(base, &words, seg_pow);
        let bytes = want.encode();
        let got = ControlFile::decode(&bytes).unwrap();
        want.crc = got.crc;
        want.raw = bytes.clone();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(got.encode(), bytes);
    }

    #[test]
    fn decode_then_encode_is_identity(
        col in 0usize..7,
        mut bytes in proptest::collection::vec(any::<u8>(), PG_CONTROL_FILE_SIZE),
        seg_pow in 20u32..=30,
    ) {
        bytes[8..12].copy_from_slice(&COLUMNS[col].to_le_bytes());
        let put = |b: &mut [u8], name: &str, v: &[u8]| {
            let off = ref_offset(name, col).unwrap();
            b[off..off + v.len()].copy_from_slice(v);
        };
        put(&mut bytes, "FloatFormat", &1234567.0f64.to_le_bytes());
        put(&mut bytes, "XlogSegSize", &(1u32 << seg_pow).to_le_bytes());
        set_crc(&mut bytes, col);
        let cf = ControlFile::decode(&bytes).unwrap();
        prop_assert_eq!(cf.encode(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..700),
        patch in proptest::option::of(0usize..7),
    ) {
        if let Some(col) = patch {
            if bytes.len() >= 12 {
                bytes[8..12].copy_from_slice(&COLUMNS[col].to_le_bytes());
            }
            if bytes.len() >= SIZEOF[col] {
                set_crc(&mut bytes, col);
            }
        }
        if let Ok(cf) = ControlFile::decode(&bytes) {
            let _ = cf.encode();
            let _ = cf.major_version();
            let _ = serde_json::to_string(&cf);
        }
    }
}
