//! `pgsafe verify` tells the truth about a backup's WAL (`docs/threat-model.md`, verify), against
//! real servers:
//! * no false "damaged": an `XLOG_SWITCH` record whose header crosses a page boundary (placed
//!   with `pg_logical_emit_message` sized from `pg_current_wal_insert_lsn()`) is valid WAL —
//!   pg_verifybackup (15) agrees;
//! * no false "good": one changed byte inside a record (page headers intact) is found and named
//!   by its LSN — the same LSN pg_waldump (15) reports — and restore refuses the backup;
//! * the per-segment CRC-32C recorded in `pgsafe.json` catches a change where no record is.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, per_major};
use serde_json::Value;

use common::{copy_to, pgsafe, text, verify};

/// The Debian client tools (pg_verifybackup, pg_waldump) of PostgreSQL 15.
const CLIENT_15: &str = "/usr/lib/postgresql/15/bin";

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn info(backup: &Path) -> Value {
    serde_json::from_slice(&fs::read(backup.join("pgsafe.json")).unwrap()).unwrap()
}

/// Places the insert position so that the next record starts `before_end` bytes before the
/// end of a WAL page (a page that does not start a segment), then switches WAL: the switch
/// record's 24-byte header is split across the page boundary. Returns the switch record's LSN.
/// Retries when another backend wrote WAL in between (checked, not assumed).
fn switch_across_page(c: &Cluster, before_end: u64) -> u64 {
    const PAGE: u64 = 8192;
    let seg = 16u64 << 20;
    let mut client = c.connect();
    let mut two = |sql: &str| -> (u64, u64) {
        let r = client.query_one(sql, &[]).unwrap();
        (lsn(&r.get::<_, String>(0)), lsn(&r.get::<_, String>(1)))
    };
    // The message record's size beyond its payload: XLogRecord (24), the long main-data
    // header (5), xl_logical_message (24) and the prefix "x\0" (2); corrected from what the
    // server reports if a version differs.
    let mut overhead: i64 = 24 + 5 + 24 + 2;
    for _ in 0..30 {
        let (at, _) = two("SELECT pg_current_wal_insert_lsn()::text, ''::text || '0/0'");
        // The end of the next page, which must not start a segment: the message spans from
        // `at` across one short page header (24 bytes) to `target`.
        let target = (at / PAGE + 2) * PAGE - before_end;
        if (at / PAGE + 1) * PAGE % seg == 0 || target / seg != at / seg {
            two("SELECT pg_switch_wal()::text, ''::text || '0/0'");
            continue;
        }
        let n = (target - at - 24) as i64 - overhead;
        let (before, after) = two(&format!(
            "SELECT pg_current_wal_insert_lsn()::text, \
             (SELECT pg_current_wal_insert_lsn()::text FROM \
              (SELECT pg_logical_emit_message(false, 'x', repeat('y', {n}))) m)"
        ));
        if before != at {
            continue;
        }
        if after != target {
            overhead += after as i64 - target as i64;
            continue;
        }
        // Switch only if nothing else was written since (the function returns the end of the
        // switch record, not of the segment).
        let (here, end) = two("SELECT pg_current_wal_insert_lsn()::text, pg_switch_wal()::text");
        if here == target && end > target {
            return target;
        }
    }
    panic!("could not place a switch record {before_end} bytes before a page end");
}

/// `pg_logical_emit_message` of `text` repeated `times`: (insert LSN before, end LSN).
fn marker(c: &Cluster, text: &str, times: u64) -> (u64, u64) {
    let mut client = c.connect();
    let r = client
        .query_one(
            &format!(
                "SELECT pg_current_wal_insert_lsn()::text, \
                 pg_logical_emit_message(false, 'pgsafe', repeat('{text}', {times}))::text"
            ),
            &[],
        )
        .unwrap();
    (lsn(&r.get::<_, String>(0)), lsn(&r.get::<_, String>(1)))
}

/// A backup (plain layout, 2 MB/s so the test can act during it) during which the server
/// writes a large marker message, switches WAL with the switch record's header split across
/// a page, then writes a message that crosses into the next segment; returns (backup, switch
/// LSN, marker record's bounds, crossing record's bounds).
fn backup_with_edge_wal(
    c: &Cluster,
    scratch: &Path,
    before_end: u64,
) -> (PathBuf, u64, (u64, u64), (u64, u64)) {
    c.execute(
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS v FROM generate_series(1, 150000) g",
    );
    c.execute("CHECKPOINT");
    let b = scratch.join("backup");
    let child = common::spawn_slow_backup(&c.conninfo(), c.data_dir(), &b);
    let m = marker(c, "pgsafe-wal-marker", 3000);
    let switch = switch_across_page(c, before_end);
    // From just after the switch into the next segment, 4 KiB past its start.
    let seg = 16u64 << 20;
    let here = lsn(&c.query_one::<String>("SELECT pg_current_wal_insert_lsn()::text"));
    let cross = marker(c, "pgsafe-seg-marker", (seg - here % seg + 4096) / 17);
    assert_ne!(
        cross.0 / seg,
        cross.1 / seg,
        "the record crosses a segment boundary"
    );
    c.execute("INSERT INTO filler SELECT g, 'after' FROM generate_series(1, 1000) g");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "backup: {}", text(&out));
    let i = info(&b);
    let (start, stop) = (
        lsn(i["start_lsn"].as_str().unwrap()),
        lsn(i["stop_lsn"].as_str().unwrap()),
    );
    // The test is only meaningful if the backup's WAL holds them all (not a timing
    // assumption: checked).
    assert!(
        start <= m.0 && m.1 <= switch && switch < cross.0 && cross.1 < stop,
        "markers {m:X?} {cross:X?} and switch {switch:X} must lie in the backup's WAL \
         {start:X}..{stop:X}"
    );
    (b, switch, m, cross)
}

/// The stored segment holding `at`.
fn segment_path(backup: &Path, at: u64) -> PathBuf {
    let i = info(backup);
    let seg_size = i["wal_segment_size"].as_u64().unwrap();
    let per_id = 0x1_0000_0000 / seg_size;
    let name = i["wal"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .find(|s| {
            let hi = u64::from_str_radix(&s[8..16], 16).unwrap();
            let lo = u64::from_str_radix(&s[16..24], 16).unwrap();
            hi * per_id + lo == at / seg_size
        })
        .unwrap();
    backup.join("pg_wal").join(name)
}

/// A file offset inside a marker's payload (`pat` runs), away from page headers, from `from`
/// on. Returns (segment, offset, LSN).
fn marker_byte(backup: &Path, from: u64, pat: &[u8]) -> (PathBuf, usize, u64) {
    let seg_size = info(backup)["wal_segment_size"].as_u64().unwrap();
    let mid = from;
    let path = segment_path(backup, mid);
    let bytes = fs::read(&path).unwrap();
    let from = (mid % seg_size) as usize;
    let at = (from..bytes.len() - pat.len())
        .find(|&o| &bytes[o..o + pat.len()] == pat)
        .expect("the marker is in the segment");
    (path, at + 7, mid - mid % seg_size + (at + 7) as u64)
}

fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0x20;
    fs::write(path, b).unwrap();
}

fn wal_edges(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let scratch = tempfile::tempdir().unwrap();
    let (good, switch, m, cross) = backup_with_edge_wal(&c, scratch.path(), 8);
    let ctx = format!("PostgreSQL {major}, switch record at {switch:X}");

    // 1. Valid WAL is valid (it was "damaged" before: 11–18).
    let (code, v, out) = verify(&good, &[]);
    assert_eq!(code, Some(0), "{ctx}: {}", text(&out));
    assert!(v["wal_records_checked"].as_u64().unwrap() > 10, "{v}");
    let crcs = &info(&good)["wal"]["crc32c"];
    assert!(
        crcs.as_object().is_some_and(|o| !o.is_empty()),
        "pgsafe.json records the segments' CRC-32C: {crcs}"
    );
    if major == 15 {
        let out = Command::new(format!("{CLIENT_15}/pg_verifybackup"))
            .arg(&good)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_verifybackup: {}", text(&out));
    }

    // 2. One byte inside the marker record (page headers intact): found, named by the
    // record's LSN; restore refuses.
    let bad = copy_to(&good, &scratch.path().join("bad"));
    let (seg, at, byte_lsn) = marker_byte(&bad, m.0 + (m.1 - m.0) / 2, b"pgsafe-wal-marker");
    flip(&seg, at);
    let (code, v, out) = verify(&bad, &[]);
    assert_eq!(code, Some(1), "{ctx}: {}", text(&out));
    let problems = v["problems"].as_array().unwrap();
    let rec = problems
        .iter()
        .find(|p| p["problem"] == "wal_record")
        .unwrap_or_else(|| panic!("{ctx}: no WAL record problem: {v}"));
    let reported = lsn(rec["lsn"].as_str().unwrap());
    assert!(
        m.0 <= reported && reported < m.1 && reported <= byte_lsn,
        "{ctx}: the damaged record is the marker ({:X}..{:X}), reported {reported:X}",
        m.0,
        m.1
    );
    let msg = rec["message"].as_str().unwrap();
    assert!(
        msg.contains("checksum") && msg.contains(rec["lsn"].as_str().unwrap()),
        "{msg}"
    );
    // The segment's own CRC-32C disagrees too.
    assert!(
        problems.iter().any(|p| p["problem"] == "wal_checksum"),
        "{ctx}: {v}"
    );
    if major == 15 {
        // The outside oracle names the same record.
        let i = info(&bad);
        let out = Command::new(format!("{CLIENT_15}/pg_waldump"))
            .arg("--quiet")
            .arg(format!("--path={}", bad.join("pg_wal").display()))
            .arg(format!("--start={}", i["start_lsn"].as_str().unwrap()))
            .arg(format!("--end={}", i["stop_lsn"].as_str().unwrap()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "pg_waldump accepted it: {}",
            text(&out)
        );
        assert!(
            err.contains(&format!(
                "incorrect resource manager data checksum in record at {}",
                rec["lsn"].as_str().unwrap()
            )),
            "pg_waldump names another record: {err}"
        );
        let out = Command::new(format!("{CLIENT_15}/pg_verifybackup"))
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "pg_verifybackup: {}", text(&out));
    }
    let target = scratch.path().join("restored");
    // The owner is named so that the refusal is the WAL's (a root-owned scratch folder does not
    // confirm the owner the backup records).
    let user = pgsafe_testkit::server_user().name.clone();
    let out = pgsafe(&[
        "restore",
        bad.to_str().unwrap(),
        "--pgdata",
        target.to_str().unwrap(),
        "--progress",
        "none",
        "--owner",
        &user,
    ]);
    assert_eq!(out.status.code(), Some(2), "{ctx}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(rec["lsn"].as_str().unwrap()), "{err}");
    assert!(
        !target.join("global").exists(),
        "a refused restore writes nothing"
    );

    // 3. One byte of the crossing record's continuation in the next segment: the record
    // (which starts in the segment before) is named.
    let next = copy_to(&good, &scratch.path().join("next"));
    let seg_size = 16u64 << 20;
    let later = cross.1 - cross.1 % seg_size;
    let (seg, at, _) = marker_byte(&next, later, b"pgsafe-seg-marker");
    flip(&seg, at);
    let (code, v, out) = verify(&next, &[]);
    assert_eq!(code, Some(1), "{ctx}: {}", text(&out));
    let problems = v["problems"].as_array().unwrap();
    let rec = problems
        .iter()
        .find(|p| p["problem"] == "wal_record")
        .unwrap_or_else(|| panic!("{ctx}: no WAL record problem: {v}"));
    let reported = lsn(rec["lsn"].as_str().unwrap());
    assert!(
        cross.0 <= reported && reported < later,
        "{ctx}: the crossing record ({:X}..{:X}), reported {reported:X}",
        cross.0,
        cross.1
    );
    let first_seg = segment_path(&next, reported);
    assert_eq!(
        rec["segment"].as_str(),
        first_seg.file_name().unwrap().to_str(),
        "{v}"
    );
    assert!(
        problems.iter().any(|p| p["problem"] == "wal_checksum"
            && p["file"].as_str() == seg.file_name().unwrap().to_str()),
        "{ctx}: the later segment's checksum: {v}"
    );

    // 4. A change where no record is (after the stop LSN, in the last segment): only the
    // per-segment CRC-32C sees it.
    let tail = copy_to(&good, &scratch.path().join("tail"));
    let last = info(&tail)["wal"]["segments"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let path = tail.join("pg_wal").join(&last);
    let len = fs::metadata(&path).unwrap().len() as usize;
    flip(&path, len - 1);
    let (code, v, out) = verify(&tail, &[]);
    assert_eq!(code, Some(1), "{ctx}: {}", text(&out));
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["problem"], "wal_checksum", "{v}");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "WAL checksum mismatch: pg_wal/{last} has CRC-32C "
            )),
        "{v}"
    );
}

per_major!(wal_edges);

/// A byte of the backup's checkpoint record (its `xl_xid`, covered by the CRC): the record
/// recovery starts from. No concurrency needed; every major.
fn checkpoint_record_damage(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let scratch = tempfile::tempdir().unwrap();
    let good = scratch.path().join("good");
    let out = common::backup(&c, &good, &[]);
    assert!(out.status.success(), "backup: {}", text(&out));
    let i = info(&good);
    let seg_size = i["wal_segment_size"].as_u64().unwrap();
    let ckpt = i["checkpoint_lsn"].as_str().unwrap().to_owned();
    let bad = copy_to(&good, &scratch.path().join("bad"));
    let seg = segment_path(&bad, lsn(&ckpt));
    flip(&seg, (lsn(&ckpt) % seg_size) as usize + 4);
    let (code, v, out) = verify(&bad, &[]);
    assert_eq!(code, Some(1), "PostgreSQL {major}: {}", text(&out));
    let rec = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["problem"] == "wal_record")
        .unwrap_or_else(|| panic!("no WAL record problem: {v}"))
        .clone();
    assert_eq!(rec["lsn"], ckpt.as_str(), "{v}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .contains("incorrect resource manager data checksum in record at"),
        "{rec}"
    );
}

per_major!(checkpoint_record_damage);

/// The server's own WAL is damaged inside the backup's range (a byte of a finished segment
/// changed on disk during the backup): `backup` fails naming the record instead of reporting
/// success for a backup that cannot be recovered, and writes no `pgsafe.json`.
fn damaged_source_wal_fails_the_backup(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS v FROM generate_series(1, 150000) g",
    );
    c.execute("CHECKPOINT");
    let scratch = tempfile::tempdir().unwrap();
    let b = scratch.path().join("backup");
    let child = common::spawn_slow_backup(&c.conninfo(), c.data_dir(), &b);
    let m = marker(&c, "pgsafe-src-marker", 3000);
    // Finish the segment so the server never writes it again, then damage it on disk.
    c.execute("SELECT pg_switch_wal()");
    let seg_size = 16u64 << 20;
    let mid = m.0 + (m.1 - m.0) / 2;
    let segno = mid / seg_size;
    let name = format!("00000001{:08X}{:08X}", segno / 256, segno % 256);
    let path = c.data_dir().join("pg_wal").join(&name);
    let bytes = fs::read(&path).unwrap();
    let pat = b"pgsafe-src-marker";
    let at = ((mid % seg_size) as usize..bytes.len() - pat.len())
        .find(|&o| &bytes[o..o + pat.len()] == pat)
        .expect("the marker is in the segment");
    flip(&path, at + 5);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "PostgreSQL {major}: {}",
        text(&out)
    );
    assert!(
        err.contains("damaged WAL at ") && err.contains(&name),
        "PostgreSQL {major}: {err}"
    );
    let named = err
        .split("damaged WAL at ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .map(lsn)
        .unwrap();
    assert!(
        m.0 <= named && named < m.1,
        "PostgreSQL {major}: the marker record ({:X}..{:X}) is named, not {named:X}",
        m.0,
        m.1
    );
    assert!(!b.join("pgsafe.json").exists(), "no completion marker");
}

per_major!(damaged_source_wal_fails_the_backup);
