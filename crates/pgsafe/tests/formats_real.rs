//! The format core against real servers of every supported major (10–18): pg_control as the
//! server reports it, WAL file names as `pg_walfile_name()` computes them, and `backup_label` /
//! `tablespace_map` exactly as a real non-exclusive backup returns them.

use std::collections::BTreeMap;
use std::process::Command;

use pgsafe::control::{DbState, read_control_file};
use pgsafe::label::{BackupLabel, MapEscaping, TablespaceMap};
use pgsafe::session::Session;
use pgsafe::{Lsn, TimelineId, WalSegSize, WalSegment};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, client_bin_dir, per_major};

fn lsn(text: String) -> Lsn {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// pg_control decoded by pgsafe equals what the server's own SQL functions report, while
/// running, after a clean stop (state "shut down") and after a crash ("in production").
fn control_matches_server(major: u32) {
    let mut c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    c.execute("CHECKPOINT");
    let mut client = c.connect();
    let sys = client
        .query_one(
            "SELECT system_identifier::text, pg_control_version, catalog_version_no \
             FROM pg_control_system()",
            &[],
        )
        .unwrap();
    let cp = client
        .query_one(
            "SELECT checkpoint_lsn::text, redo_lsn::text, timeline_id::bigint, \
                    prev_timeline_id::bigint, full_page_writes, next_oid::text::bigint, \
                    oldest_xid::text::bigint \
             FROM pg_control_checkpoint()",
            &[],
        )
        .unwrap();
    let rec = client
        .query_one(
            "SELECT min_recovery_end_lsn::text, min_recovery_end_timeline::bigint, \
                    backup_start_lsn::text, backup_end_lsn::text, end_of_backup_record_required \
             FROM pg_control_recovery()",
            &[],
        )
        .unwrap();
    let init = client
        .query_one(
            "SELECT bytes_per_wal_segment::bigint, blocks_per_segment::bigint, \
                    wal_block_size::bigint, data_page_checksum_version::bigint, \
                    max_data_alignment::bigint, database_block_size::bigint \
             FROM pg_control_init()",
            &[],
        )
        .unwrap();
    let f = read_control_file(&c.data_dir().join("global/pg_control")).unwrap();
    let m = format!("PostgreSQL {major}");
    assert_eq!(
        f.system_identifier.to_string(),
        sys.get::<_, String>(0),
        "{m}"
    );
    assert_eq!(
        i64::from(f.pg_control_version),
        i64::from(sys.get::<_, i32>(1)),
        "{m}"
    );
    assert_eq!(
        i64::from(f.catalog_version_no),
        i64::from(sys.get::<_, i32>(2)),
        "{m}"
    );
    assert_eq!(
        f.major_version().map(|v| v.major()),
        Some(major),
        "{m}: major from catalog"
    );
    assert_eq!(f.checkpoint, lsn(cp.get(0)), "{m}: checkpoint");
    assert_eq!(f.checkpoint_copy.redo, lsn(cp.get(1)), "{m}: redo");
    assert_eq!(
        i64::from(f.checkpoint_copy.this_timeline.0),
        cp.get::<_, i64>(2),
        "{m}"
    );
    assert_eq!(
        i64::from(f.checkpoint_copy.prev_timeline.0),
        cp.get::<_, i64>(3),
        "{m}"
    );
    assert_eq!(
        f.checkpoint_copy.full_page_writes,
        cp.get::<_, bool>(4),
        "{m}"
    );
    assert_eq!(
        i64::from(f.checkpoint_copy.next_oid),
        cp.get::<_, i64>(5),
        "{m}: next_oid"
    );
    assert_eq!(
        i64::from(f.checkpoint_copy.oldest_xid),
        cp.get::<_, i64>(6),
        "{m}: oldest_xid"
    );
    assert_eq!(f.min_recovery_point, lsn(rec.get(0)), "{m}");
    assert_eq!(
        i64::from(f.min_recovery_point_tli.0),
        rec.get::<_, i64>(1),
        "{m}"
    );
    assert_eq!(f.backup_start_point, lsn(rec.get(2)), "{m}");
    assert_eq!(f.backup_end_point, lsn(rec.get(3)), "{m}");
    assert_eq!(f.backup_end_required, rec.get::<_, bool>(4), "{m}");
    assert_eq!(f.xlog_seg_size.bytes() as i64, init.get::<_, i64>(0), "{m}");
    assert_eq!(i64::from(f.relseg_size), init.get::<_, i64>(1), "{m}");
    assert_eq!(i64::from(f.xlog_blcksz), init.get::<_, i64>(2), "{m}");
    assert_eq!(
        i64::from(f.data_checksum_version),
        init.get::<_, i64>(3),
        "{m}"
    );
    assert_eq!(i64::from(f.max_align), init.get::<_, i64>(4), "{m}");
    assert_eq!(i64::from(f.blcksz), init.get::<_, i64>(5), "{m}");
    assert_eq!(f.state, DbState::InProduction, "{m}: a running primary");
    drop(client);

    c.stop();
    let f = read_control_file(&c.data_dir().join("global/pg_control")).unwrap();
    assert_eq!(f.state, DbState::ShutDown, "{m}: after a clean stop");
    assert_eq!(
        f.checkpoint, f.checkpoint_copy.redo,
        "{m}: shutdown checkpoint has redo = itself"
    );

    c.start();
    c.execute("INSERT INTO t SELECT g FROM generate_series(1, 100) g");
    c.crash();
    let f = read_control_file(&c.data_dir().join("global/pg_control")).unwrap();
    assert_eq!(f.state, DbState::InProduction, "{m}: after a crash");
    c.start();
    assert_eq!(
        c.query_one::<i64>("SELECT count(*) FROM t"),
        1100,
        "{m}: crash recovery"
    );
}

/// WAL file names computed by pgsafe equal `pg_walfile_name()` for many LSNs, including segment
/// boundaries, for the default segment size and (11+) a 1 MB and a 64 MB one.
///
/// Measured: on 10–16 `pg_walfile_name()` uses the *previous-segment* rule (`XLByteToPrevSeg`:
/// an LSN exactly on a segment boundary names the segment before it), so it equals
/// [`WalSegment::containing_end`]; 17+ use `XLByteToSeg`, i.e. [`WalSegment::containing`].
/// (`pg_walfile_name` in `src/backend/access/transam/xlogfuncs.c` changed rule in 17; assuming
/// `XLByteToSeg` for every version would be wrong on 10–16.) Off boundaries both rules agree.
fn wal_names_match_server(major: u32) {
    let install = PgInstall::major(major);
    let mut sizes = vec![None];
    if major >= 11 {
        sizes.extend([Some(1), Some(64)]);
    }
    for mb in sizes {
        let mut opts = ClusterOptions::new().fast_unsafe();
        if let Some(mb) = mb {
            opts = opts.wal_segsize_mb(mb);
        }
        let c = Cluster::started(&install, opts);
        let seg = WalSegSize::new(u64::from(mb.unwrap_or(16)) << 20).unwrap();
        let f = read_control_file(&c.data_dir().join("global/pg_control")).unwrap();
        assert_eq!(
            f.xlog_seg_size, seg,
            "PostgreSQL {major}: pg_control segment size"
        );
        let tli = TimelineId(1);
        let s = seg.bytes();
        let mut probes = vec![
            c.current_wal_lsn(),
            Lsn(1),
            Lsn(s - 1),
            Lsn(s),
            Lsn(s + 1),
            Lsn(0x1_A300_0000),
            Lsn(0xFF_FFFF_FFFF),
            Lsn(0x1234_5678_9ABC),
            Lsn(0xFFFF_FFFF_0000_0000),
        ];
        probes.extend((1..40).map(|i| Lsn(i * 0x0123_4567_89ab % (1 << 44))));
        let mut client = c.connect();
        for p in probes {
            let server: String = client
                .query_one(
                    "SELECT pg_walfile_name($1::text::pg_lsn)",
                    &[&p.to_string()],
                )
                .unwrap()
                .get(0);
            let ours = if major >= 17 {
                WalSegment::containing(p, tli, seg)
            } else {
                WalSegment::containing_end(p, tli, seg)
            };
            assert_eq!(
                ours.to_string(),
                server,
                "PostgreSQL {major}, {seg} segments, LSN {p}"
            );
            let parsed: WalSegment = server.parse().unwrap();
            let segno = if major >= 17 { p.0 / s } else { (p.0 - 1) / s };
            assert_eq!(parsed.segno(seg).unwrap(), segno);
            if p.0 % s != 0 {
                assert_eq!(
                    WalSegment::containing(p, tli, seg),
                    parsed,
                    "off a boundary"
                );
            }
        }
    }
}

/// A real non-exclusive start/stop through pgsafe's session: the label parses, is consistent
/// with the session's start LSN and timeline, and formats back to the identical bytes; the
/// tablespace map (path with spaces) round-trips under that version's escaping.
fn label_and_map_round_trip(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    c.execute("CREATE TABLE in_ts (x int) TABLESPACE ts1");
    let mut session = Session::new(c.connect()).unwrap();
    session.preflight().unwrap();
    let seg = session.info().wal_segment_size;
    let started = session
        .start_backup("pgsafe label test: spaces and ünïcode", true)
        .unwrap();
    let (start_lsn, start_tli) = (started.start_lsn, started.start_tli);
    c.execute("INSERT INTO in_ts SELECT generate_series(1, 100)");
    let stopped = started.stop(false).unwrap();
    let m = format!("PostgreSQL {major}");

    let raw = stopped.label.as_bytes().to_vec();
    let label = BackupLabel::parse(&raw).unwrap();
    assert_eq!(label.format(), raw, "{m}: label formats back byte for byte");
    assert_eq!(label.start_lsn(), start_lsn, "{m}");
    assert_eq!(label.timeline(), start_tli, "{m}");
    assert_eq!(
        label.fields().start.file,
        WalSegment::containing(start_lsn, start_tli, seg)
    );
    label.check_against(seg).unwrap();
    assert!(!label.is_exclusive() && !label.is_from_standby(), "{m}");
    assert_eq!(
        label.fields().label.as_deref(),
        Some("pgsafe label test: spaces and ünïcode".as_bytes()),
        "{m}"
    );
    assert_eq!(
        label.fields().start_timeline.is_some(),
        major >= 11,
        "{m}: START TIMELINE"
    );
    let from = label.fields().from.as_ref().map(|f| f.as_str().to_owned());
    let expected_from = if major >= 14 { "primary" } else { "master" };
    assert_eq!(from.as_deref(), Some(expected_from), "{m}");
    assert!(stopped.stop_lsn > start_lsn, "{m}");

    let map_bytes = stopped.tablespace_map.clone();
    let escaping = MapEscaping::for_version(stopped.info().version);
    let map = TablespaceMap::parse(&map_bytes, escaping).unwrap();
    assert_eq!(map.len(), 1, "{m}: one tablespace in {map_bytes:?}");
    let entry = &map.entries()[0];
    let ts_dir = c.tablespace_dir().expect("tablespace dir");
    assert_eq!(entry.as_path(), ts_dir, "{m}");
    assert!(
        ts_dir.to_string_lossy().contains(' '),
        "the test path must contain a space"
    );
    let oid: String = c.query_one("SELECT oid::text FROM pg_tablespace WHERE spcname = 'ts1'");
    assert_eq!(entry.oid.to_string(), oid, "{m}");
    assert_eq!(
        map.format(escaping).unwrap(),
        map_bytes,
        "{m}: map formats back byte for byte"
    );
}

per_major!(control_matches_server);
per_major!(wal_names_match_server);
per_major!(label_and_map_round_trip);

/// PostgreSQL 15: every field pgsafe decodes equals `pg_controldata`'s output.
#[test]
fn control_matches_pg_controldata_15() {
    let mut c = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    c.execute("CHECKPOINT");
    c.stop();
    let out = Command::new(client_bin_dir().join("pg_controldata"))
        .arg(c.data_dir())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let kv: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let f = read_control_file(&c.data_dir().join("global/pg_control")).unwrap();
    let cp = &f.checkpoint_copy;
    let want: Vec<(&str, String)> = vec![
        (
            "pg_control version number",
            f.pg_control_version.to_string(),
        ),
        ("Catalog version number", f.catalog_version_no.to_string()),
        (
            "Database system identifier",
            f.system_identifier.to_string(),
        ),
        ("Database cluster state", f.state.to_string()),
        ("Latest checkpoint location", f.checkpoint.to_string()),
        ("Latest checkpoint's REDO location", cp.redo.to_string()),
        (
            "Latest checkpoint's TimeLineID",
            cp.this_timeline.to_string(),
        ),
        (
            "Latest checkpoint's PrevTimeLineID",
            cp.prev_timeline.to_string(),
        ),
        (
            "Latest checkpoint's full_page_writes",
            if cp.full_page_writes { "on" } else { "off" }.into(),
        ),
        ("Latest checkpoint's NextXID", cp.next_xid.to_string()),
        ("Latest checkpoint's NextOID", cp.next_oid.to_string()),
        (
            "Latest checkpoint's NextMultiXactId",
            cp.next_multi.to_string(),
        ),
        (
            "Latest checkpoint's NextMultiOffset",
            cp.next_multi_offset.to_string(),
        ),
        ("Latest checkpoint's oldestXID", cp.oldest_xid.to_string()),
        (
            "Latest checkpoint's oldestXID's DB",
            cp.oldest_xid_db.to_string(),
        ),
        (
            "Latest checkpoint's oldestActiveXID",
            cp.oldest_active_xid.to_string(),
        ),
        (
            "Latest checkpoint's oldestMultiXid",
            cp.oldest_multi.to_string(),
        ),
        (
            "Latest checkpoint's oldestMulti's DB",
            cp.oldest_multi_db.to_string(),
        ),
        (
            "Latest checkpoint's oldestCommitTsXid",
            cp.oldest_commit_ts_xid.to_string(),
        ),
        (
            "Latest checkpoint's newestCommitTsXid",
            cp.newest_commit_ts_xid.to_string(),
        ),
        (
            "Fake LSN counter for unlogged rels",
            f.unlogged_lsn.to_string(),
        ),
        (
            "Minimum recovery ending location",
            f.min_recovery_point.to_string(),
        ),
        (
            "Min recovery ending loc's timeline",
            f.min_recovery_point_tli.to_string(),
        ),
        ("Backup start location", f.backup_start_point.to_string()),
        ("Backup end location", f.backup_end_point.to_string()),
        (
            "End-of-backup record required",
            if f.backup_end_required { "yes" } else { "no" }.into(),
        ),
        ("wal_level setting", f.wal_level.to_string()),
        (
            "wal_log_hints setting",
            if f.wal_log_hints { "on" } else { "off" }.into(),
        ),
        ("max_connections setting", f.max_connections.to_string()),
        (
            "max_worker_processes setting",
            f.max_worker_processes.to_string(),
        ),
        (
            "max_wal_senders setting",
            f.max_wal_senders.unwrap_or(-1).to_string(),
        ),
        (
            "max_prepared_xacts setting",
            f.max_prepared_xacts.to_string(),
        ),
        (
            "max_locks_per_xact setting",
            f.max_locks_per_xact.to_string(),
        ),
        (
            "track_commit_timestamp setting",
            if f.track_commit_timestamp {
                "on"
            } else {
                "off"
            }
            .into(),
        ),
        ("Maximum data alignment", f.max_align.to_string()),
        ("Database block size", f.blcksz.to_string()),
        (
            "Blocks per segment of large relation",
            f.relseg_size.to_string(),
        ),
        ("WAL block size", f.xlog_blcksz.to_string()),
        ("Bytes per WAL segment", f.xlog_seg_size.bytes().to_string()),
        ("Maximum length of identifiers", f.name_data_len.to_string()),
        ("Maximum columns in an index", f.index_max_keys.to_string()),
        (
            "Maximum size of a TOAST chunk",
            f.toast_max_chunk_size.to_string(),
        ),
        ("Size of a large-object chunk", f.loblksize.to_string()),
        (
            "Data page checksum version",
            f.data_checksum_version.to_string(),
        ),
    ];
    for (key, ours) in want {
        let theirs = kv
            .get(key)
            .unwrap_or_else(|| panic!("pg_controldata has no {key:?}:\n{text}"));
        assert_eq!(&ours, theirs, "field {key:?}");
    }
    let nonce = f.mock_authentication_nonce.expect("15 has a nonce");
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(kv["Mock authentication nonce"], hex);
}
