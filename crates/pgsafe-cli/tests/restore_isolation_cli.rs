//! A restored copy must never write into the server it was copied from (`docs/threat-model.md`),
//! tested from the unlucky DBA's side with real servers, through the real binary: the copy restored
//! on the source's host, next to the running source, started with the configuration files it was
//! restored with.
//! - its WAL never reaches the source's WAL archive (archiving off by default), and even with
//!   the source's archive settings kept (`--archive-mode preserve`) it archives under a new
//!   timeline's names: the source's archiver keeps working (`pg_stat_archiver.failed_count`);
//! - the source's stale recovery settings (`ALTER SYSTEM SET recovery_target_time …`) do not
//!   stop the copy from starting (PostgreSQL's own start-up is the oracle);
//! - in-place tablespaces (15+) restore and start (PostgreSQL PANICs without the setting).

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};

use common::{json, ok, pgsafe, refused, restore, run_dir};

/// The timeline of the WAL the server writes now (8 hex digits).
fn write_timeline(c: &Cluster) -> String {
    let name: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    name[..8].to_owned()
}

/// Writes a little, switches WAL, and returns the segment switched away from.
fn write_and_switch(c: &Cluster, table: &str) -> String {
    c.execute(&format!(
        "INSERT INTO {table} SELECT g FROM generate_series(1, 1000) g"
    ));
    c.query_one("SELECT pg_walfile_name(pg_switch_wal())")
}

/// Waits until `c` has archived `segment` (or later); returns `pg_stat_archiver.failed_count`.
fn wait_archived(c: &Cluster, segment: &str) -> i64 {
    let t = Instant::now();
    loop {
        let last: Option<String> = c.query_one("SELECT last_archived_wal FROM pg_stat_archiver");
        // Names of one timeline sort by position.
        if last
            .as_deref()
            .is_some_and(|l| l >= segment && l.len() == 24)
        {
            return c.query_one("SELECT failed_count FROM pg_stat_archiver");
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "PostgreSQL {}: {segment} was never archived (last: {last:?}; failed: {}):\n{}",
            c.major(),
            c.query_one::<i64>("SELECT failed_count FROM pg_stat_archiver"),
            c.server_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn archive_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn copy_never_archives_into_source(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let src = Cluster::started(&install, ClusterOptions::new().with_archive(true));
    let archive = src.archive_dir().unwrap().to_owned();
    src.execute("CREATE TABLE t (x int); INSERT INTO t SELECT g FROM generate_series(1, 5000) g");
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    ok(common::backup(&src, &b, &[]), "pgsafe backup");

    // 1. Default restore, on the source's host, started with its own configuration files.
    let data = scratch.path().join("copy");
    let r = json(&ok(restore(&b, &data, &["--json"]), "pgsafe restore"));
    assert_eq!(r["archive_mode"], "off", "{m}: {r}");
    assert_eq!(r["new_timeline"], true, "{m}: {r}");
    let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new());
    copy.keep_own_archive_settings();
    copy.start();
    copy.wait_recovery_done();
    assert_eq!(copy.query_one::<i64>("SELECT count(*) FROM t"), 5000, "{m}");
    assert_eq!(copy.show("archive_mode"), "off", "{m}: the copy archives");
    assert_eq!(write_timeline(&copy), "00000002", "{m}: copy's timeline");
    for _ in 0..3 {
        write_and_switch(&copy, "t");
    }
    copy.execute("CHECKPOINT");
    // The source keeps archiving its own WAL, without a single failure.
    let seg = write_and_switch(&src, "t");
    assert_eq!(
        wait_archived(&src, &seg),
        0,
        "{m}: source's archiver failed"
    );
    let names = archive_names(&archive);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("00000001") && n.len() >= 24),
        "{m}: files in the source's archive that the source did not write: {names:?}"
    );
    copy.stop();
    drop(copy);

    // 2. --archive-mode preserve: the copy archives with the source's archive_command into the
    // source's archive, but on its new timeline, so no name collides with the source's.
    let data2 = scratch.path().join("copy2");
    let out = ok(
        restore(&b, &data2, &["--archive-mode", "preserve"]),
        "pgsafe restore --archive-mode preserve",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("archive settings are kept"), "{m}: {text}");
    let mut copy2 = Cluster::adopt(&install, &data2, ClusterOptions::new());
    copy2.keep_own_archive_settings();
    copy2.start();
    copy2.wait_recovery_done();
    assert_eq!(copy2.show("archive_mode"), "on", "{m}");
    assert_eq!(write_timeline(&copy2), "00000002", "{m}");
    let mut last = String::new();
    for _ in 0..3 {
        last = write_and_switch(&copy2, "t");
    }
    assert!(last.starts_with("00000002"), "{m}: {last}");
    assert_eq!(
        wait_archived(&copy2, &last),
        0,
        "{m}: copy's archiver failed"
    );
    let seg = write_and_switch(&src, "t");
    assert_eq!(
        wait_archived(&src, &seg),
        0,
        "{m}: source's archiver failed"
    );
    for n in archive_names(&archive) {
        if n.starts_with("00000001") && n.len() == 24 {
            // Every timeline-1 segment in the archive is the source's own.
            let ours = fs::read(src.data_dir().join("pg_wal").join(&n));
            if let Ok(ours) = ours {
                assert_eq!(
                    fs::read(archive.join(&n)).unwrap(),
                    ours,
                    "{m}: {n} in the archive is not the source's"
                );
            }
        }
    }
    copy2.stop();
}

#[test]
fn copy_never_archives_into_source_10() {
    copy_never_archives_into_source(10);
}
#[test]
fn copy_never_archives_into_source_12() {
    copy_never_archives_into_source(12);
}
#[test]
fn copy_never_archives_into_source_15() {
    copy_never_archives_into_source(15);
}
#[test]
fn copy_never_archives_into_source_18() {
    copy_never_archives_into_source(18);
}

/// The source set recovery settings with ALTER SYSTEM (a leftover of its own past as a
/// restored or standby server): they must not be in force in a restored copy.
fn stale_recovery_settings(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let src = Cluster::started(&install, ClusterOptions::new().with_archive(true));
    let archive = src.archive_dir().unwrap().to_owned();
    src.execute("CREATE TABLE t (x int); INSERT INTO t SELECT g FROM generate_series(1, 3000) g");
    src.execute("ALTER SYSTEM SET recovery_target_time = '2000-01-01 00:00:00+00'");
    src.execute("ALTER SYSTEM SET primary_conninfo = 'host=/nonexistent password=hunter2'");
    src.execute("ALTER SYSTEM SET recovery_min_apply_delay = '1h'");
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    ok(common::backup(&src, &b, &[]), "pgsafe backup");
    let restore_command = format!("cp '{}/%f' %p", archive.display());
    for (name, extra) in [
        (
            "with restore_command",
            vec!["--restore-command", &restore_command],
        ),
        ("default", vec![]),
    ] {
        let data = scratch.path().join(name.replace(' ', "_"));
        let out = ok(restore(&b, &data, &extra), "pgsafe restore");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("setting disabled")
                && text.contains("recovery_target_time (line")
                && text.contains("primary_conninfo (line"),
            "{m} {name}: {text}"
        );
        assert!(
            !text.contains("hunter2"),
            "{m} {name}: password shown: {text}"
        );
        let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("# disabled by pgsafe restore (setting of the backed-up server): recovery_target_time"),
            "{m} {name}: {auto}"
        );
        let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new());
        copy.start();
        copy.wait_recovery_done();
        assert_eq!(
            copy.query_one::<i64>("SELECT count(*) FROM t"),
            3000,
            "{m} {name}"
        );
        assert_eq!(copy.show("recovery_target_time"), "", "{m} {name}");
        assert_eq!(copy.show("primary_conninfo"), "", "{m} {name}");
        copy.execute("INSERT INTO t VALUES (0)");
        copy.stop();
    }
}

#[test]
fn stale_recovery_settings_12() {
    stale_recovery_settings(12);
}
#[test]
fn stale_recovery_settings_15() {
    stale_recovery_settings(15);
}
#[test]
fn stale_recovery_settings_18() {
    stale_recovery_settings(18);
}

/// An in-place tablespace (`allow_in_place_tablespaces`, a developer option PostgreSQL's own
/// tests use): its directory is inside pg_tblspc; the copy must start with it.
fn in_place_tablespace(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let src = Cluster::started(&install, ClusterOptions::new());
    let mut client = src.connect();
    client
        .batch_execute("SET allow_in_place_tablespaces = on")
        .unwrap();
    client
        .batch_execute("CREATE TABLESPACE inplace LOCATION ''")
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE tip (x int) TABLESPACE inplace; \
             INSERT INTO tip SELECT g FROM generate_series(1, 2000) g",
        )
        .unwrap();
    drop(client);
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    ok(common::backup(&src, &b, &[]), "pgsafe backup");
    let data = scratch.path().join("copy");
    let r = json(&ok(restore(&b, &data, &["--json"]), "pgsafe restore"));
    assert_eq!(
        r["config"]["in_place_tablespaces"].as_array().map(Vec::len),
        Some(1),
        "{m}: {r}"
    );
    let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new());
    copy.start();
    copy.wait_recovery_done();
    assert_eq!(
        copy.query_one::<i64>("SELECT count(*) FROM tip"),
        2000,
        "{m}"
    );
    copy.execute("INSERT INTO tip VALUES (0)");
    copy.stop();
    drop(copy);

    // The same restore with allow_in_place_tablespaces taken out of its configuration (a DBA
    // who "cleans up" postgresql.auto.conf): doctor names the in-place tablespace and the fix
    // before the server PANICs on it, and the fix works.
    let data2 = scratch.path().join("copy2");
    ok(restore(&b, &data2, &[]), "pgsafe restore (2)");
    let auto = data2.join("postgresql.auto.conf");
    let text = fs::read_to_string(&auto).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !l.contains("allow_in_place_tablespaces"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&auto, stripped).unwrap();
    let d = pgsafe(&["doctor", "--json", data2.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    let verdict = v["verdict"].to_string();
    assert_eq!(d.status.code(), Some(5), "{m}: {verdict}");
    assert!(verdict.contains("pg_tblspc/"), "{m}: {verdict}");
    assert!(
        verdict.contains("echo \\\"allow_in_place_tablespaces = on\\\" >>"),
        "{m}: {verdict}"
    );
    let mut copy2 = Cluster::adopt(&install, &data2, ClusterOptions::new());
    let before = copy2.server_log().len();
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| copy2.start())).is_ok();
    let log = copy2.server_log()[before..].to_owned();
    assert!(!started, "{m}: started despite the in-place tablespace");
    assert!(log.contains("unexpected directory entry"), "{m}: {log}");
    let mut f = fs::OpenOptions::new().append(true).open(&auto).unwrap();
    std::io::Write::write_all(&mut f, b"allow_in_place_tablespaces = on\n").unwrap();
    copy2.start();
    copy2.wait_recovery_done();
    assert_eq!(
        copy2.query_one::<i64>("SELECT count(*) FROM tip"),
        2000,
        "{m}"
    );
    copy2.stop();
}

#[test]
fn in_place_tablespace_15() {
    in_place_tablespace(15);
}
#[test]
fn in_place_tablespace_18() {
    in_place_tablespace(18);
}

/// Snapshot mode: a tablespace created between `pgsafe start` and the copy is in the copy's
/// pg_tblspc (a link, copied by `cp -a` as a link to the live location) but not in the
/// tablespace_map the server wrote at the start. Restoring it would read the live tablespace
/// and replay CREATE TABLESPACE with the original location: refused, nothing written.
fn copy_with_tablespace_created_during_backup(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let c = Cluster::started(&install, ClusterOptions::new().with_archive(true));
    let run = run_dir();
    let runp = run.path().to_str().unwrap();
    let conn = c.conninfo();
    ok(
        pgsafe(&[
            "start",
            "-d",
            &conn,
            "--id",
            "cp",
            "--run-dir",
            runp,
            "--fast",
        ]),
        "pgsafe start",
    );
    let loc = c.base_dir().join("created during backup");
    fs::create_dir(&loc).unwrap();
    server_user().chown(&loc);
    c.execute(&format!(
        "CREATE TABLESPACE newts LOCATION '{}'",
        loc.display()
    ));
    c.execute("CREATE TABLE in_new (x int) TABLESPACE newts; INSERT INTO in_new VALUES (1)");
    let scratch = server_owned_tempdir();
    let copy = scratch.path().join("copy");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(c.data_dir())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let out = ok(
        pgsafe(&[
            "stop",
            "--id",
            "cp",
            "--run-dir",
            runp,
            "--output-dir",
            copy.to_str().unwrap(),
        ]),
        "pgsafe stop",
    );
    drop(out);
    let data = scratch.path().join("restored");
    let cmd = format!("cp '{}'/%f %p", c.archive_dir().unwrap().display());
    let out = restore(
        &copy,
        &data,
        &["--from-copy", "--restore-command", &cmd, "--no-verify"],
    );
    let err = refused(&out, &["created during the backup", "Take a new backup"]);
    assert!(err.contains(&loc.display().to_string()), "{m}: {err}");
    assert!(
        !data.exists(),
        "{m}: the refused restore wrote {}",
        data.display()
    );
}

#[test]
fn copy_with_tablespace_created_during_backup_10() {
    copy_with_tablespace_created_during_backup(10);
}
#[test]
fn copy_with_tablespace_created_during_backup_18() {
    copy_with_tablespace_created_during_backup(18);
}
