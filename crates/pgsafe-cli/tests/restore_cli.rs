//! `pgsafe restore` against real servers, through the real binary: the recoverability matrix
//! (every major 10-18: backup under load, restore with a remapped tablespace, zero committed rows
//! lost, amcheck clean, writable; the pg_control sentinel stops a start without backup_label with
//! PostgreSQL's own error and damages nothing), PITR by time and LSN, refusals that write
//! nothing, and a snapshot-mode copy restored with --from-copy.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgsafe::control::read_control_file;
use pgsafe::doctor::{RESTORE_MARKER_FILE, RestoreMarker, SENTINEL_CHECKPOINT, has_sentinel};
use pgsafe_testkit::{
    Cluster, ClusterOptions, LoadGenerator, LoadOptions, PgInstall, copy_tree, per_major,
    server_owned_tempdir, server_user,
};
use serde_json::Value;

use common::{command, json, ok, owner_mode, pgsafe, refused, restore, run_dir};

/// Takes a backup with `pgsafe backup` while `load` writes; returns the load mark taken when the
/// backup announced its stop phase (every commit acknowledged before the stop call), and the
/// backup's JSON summary.
fn backup_marking_stop(c: &Cluster, target: &Path, load: &LoadGenerator, extra: &[&str]) -> u64 {
    let conn = c.conninfo();
    let mut args = vec![
        "backup",
        "-d",
        &conn,
        "-D",
        c.data_dir().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--progress",
        "json",
    ];
    args.extend_from_slice(extra);
    let mut child = command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut mark = None;
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if mark.is_none() {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["event"] == "phase" && v["phase"] == "stop" {
                mark = Some(load.mark());
            }
        }
        log.push_str(&line);
        log.push('\n');
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "pgsafe backup failed: {log}");
    mark.unwrap_or_else(|| panic!("no stop phase seen: {log}"))
}

/// `bt_index_check` on every btree index of the database: returns the failures.
fn amcheck(c: &Cluster) -> Vec<String> {
    c.execute("CREATE EXTENSION IF NOT EXISTS amcheck");
    let mut client = c.connect();
    let rows = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND i.indisvalid \
             AND i.indisready AND c.relpersistence <> 't'",
            &[],
        )
        .unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for r in rows {
        let name: String = r.get(0);
        match client.execute("SELECT bt_index_check($1::text::regclass)", &[&name]) {
            Ok(_) => checked += 1,
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(checked > 50, "only {checked} btree indexes checked");
    failures
}

/// Starts `c` expecting PostgreSQL to refuse; returns the new part of its log.
fn start_fails(c: &mut Cluster) -> String {
    let before = c.server_log().len();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.start()));
    assert!(
        r.is_err(),
        "the server started although backup_label was removed:\n{}",
        c.server_log_tail(30)
    );
    c.server_log()[before..].to_owned()
}

fn restore_matrix(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let c = Cluster::started(&install, ClusterOptions::new().with_tablespace(true));
    assert_eq!(c.show("data_checksums"), "on");
    c.execute(
        "CREATE TABLE in_ts (id int PRIMARY KEY, v text) TABLESPACE ts1; \
         INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g; \
         CREATE INDEX in_ts_v ON in_ts (v) TABLESPACE ts1",
    );
    let load = LoadGenerator::start_with(
        &c,
        LoadOptions {
            clients: 3,
            tablespace: (major % 2 == 0).then(|| "ts1".to_owned()),
            ..LoadOptions::default()
        },
    );
    load.wait_for_transactions(50, Duration::from_secs(60));
    let compress = ["none", "zstd", "lz4"][(major % 3) as usize];
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    let mark = backup_marking_stop(&c, &b, &load, &["--compress", compress, "--jobs", "2"]);
    // More load after the stop: none of it may matter to the restore.
    load.wait_for_transactions(load.transactions() + 20, Duration::from_secs(60));
    let report = load.stop();
    let old_ts = c.tablespace_dir().unwrap().to_owned();
    let map = fs::read_to_string(b.join("tablespace_map")).unwrap();
    let oid = map.split_whitespace().next().unwrap().to_owned();

    // 1. Restore with the tablespace remapped (by its old path), owner taken from the backup.
    let data = scratch.path().join("data");
    let new_ts = scratch.path().join("ts restored");
    let mapping = format!("{}={}", old_ts.display(), new_ts.display());
    let out = ok(
        restore(&b, &data, &["--tablespace-map", &mapping, "--json"]),
        "pgsafe restore",
    );
    let r = json(&out);
    assert_eq!(r["sentinel"], true, "{m}: {r}");
    assert_eq!(r["verification"], "full");
    assert!(
        r["start_command"].as_str().unwrap().contains("pg_ctl -D"),
        "{r}"
    );
    // What was written, before any server touches it.
    let user = server_user();
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    assert_eq!(owner_mode(&data), (uid, gid, 0o700), "{m}: PGDATA");
    assert_eq!(owner_mode(&data.join("PG_VERSION")), (uid, gid, 0o600));
    assert_eq!(
        owner_mode(&data.join("global/pg_control")),
        (uid, gid, 0o600)
    );
    assert_eq!(owner_mode(&data.join("base")), (uid, gid, 0o700));
    assert_eq!(owner_mode(&new_ts), (uid, gid, 0o700), "{m}: tablespace");
    assert_eq!(
        fs::read_link(data.join("pg_tblspc").join(&oid)).unwrap(),
        new_ts,
        "{m}: link to the remapped location"
    );
    assert_eq!(
        fs::read_to_string(data.join("tablespace_map")).unwrap(),
        format!("{oid} {}\n", new_ts.display())
    );
    assert_eq!(
        fs::read(data.join("backup_label")).unwrap(),
        fs::read(b.join("backup_label")).unwrap(),
        "{m}: backup_label byte for byte"
    );
    let control = read_control_file(&data.join("global/pg_control")).unwrap();
    assert!(has_sentinel(&control), "{m}: sentinel in pg_control");
    assert_eq!(control.checkpoint, SENTINEL_CHECKPOINT);
    let marker = RestoreMarker::parse(&fs::read(data.join(RESTORE_MARKER_FILE)).unwrap()).unwrap();
    assert!(marker.sentinel);
    assert_eq!(
        marker.start_lsn.to_string(),
        r["start_lsn"].as_str().unwrap()
    );
    let seg_done = fs::read_dir(data.join("pg_wal/archive_status"))
        .unwrap()
        .count();
    assert!(seg_done >= 1, "{m}: restored WAL marked .done");
    for f in ["pgsafe.json", "backup_manifest", "standby.signal"] {
        assert!(!data.join(f).exists(), "{m}: {f} must not be restored");
    }
    // The restore's own recovery settings: an archive recovery ending on a new timeline.
    let own = if major >= 12 {
        "postgresql.auto.conf"
    } else {
        "recovery.conf"
    };
    let conf = fs::read_to_string(data.join(own)).unwrap();
    assert!(conf.contains("restore_command = 'false'"), "{m}: {conf}");
    assert_eq!(data.join("recovery.signal").exists(), major >= 12, "{m}");

    // pgsafe doctor recognises the restore (marker, sentinel, label, WAL).
    let d = json(&pgsafe(&["doctor", "--json", data.to_str().unwrap()]));
    assert_eq!(d["verdict"]["state"], "restored_ready", "{m}: {d}");
    let mut restored = Cluster::adopt(&install, &data, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    report
        .verify_at(&mut restored.connect(), mark)
        .unwrap_or_else(|e| panic!("{m}: {e}\n{}", restored.server_log_tail(30)));
    assert_eq!(
        restored.query_one::<i64>("SELECT count(*) FROM in_ts"),
        5000,
        "{m}"
    );
    let failures = amcheck(&restored);
    assert!(failures.is_empty(), "{m}: amcheck: {failures:?}");
    // Writable once recovery ended.
    restored.execute(
        "CREATE TABLE after_restore (x int) TABLESPACE ts1; INSERT INTO after_restore VALUES (1)",
    );
    assert!(!data.join("backup_label").exists(), "{m}: label consumed");
    restored.stop();
    let control = read_control_file(&data.join("global/pg_control")).unwrap();
    assert!(
        !has_sentinel(&control),
        "{m}: the server rewrote pg_control"
    );
    drop(restored);

    // 2. A second restore whose backup_label is removed: the server refuses to start, with
    // PostgreSQL's own error, and the directory is not damaged by the attempt.
    let data2 = scratch.path().join("data2");
    let ts2 = scratch.path().join("ts2");
    ok(
        restore(
            &b,
            &data2,
            &[
                "--tablespace-map",
                &format!("{oid}={}", ts2.display()),
                "--owner",
                &user.name,
                "--no-verify",
                "--jobs",
                "3",
            ],
        ),
        "second restore",
    );
    let control_before = fs::read(data2.join("global/pg_control")).unwrap();
    let aside = scratch.path().join("label aside");
    fs::rename(data2.join("backup_label"), &aside).unwrap();
    let d = json(&pgsafe(&["doctor", "--json", data2.to_str().unwrap()]));
    assert_eq!(d["verdict"]["state"], "restored_broken", "{m}: {d}");
    let mut broken = Cluster::adopt(&install, &data2, ClusterOptions::new());
    let log = start_fails(&mut broken);
    eprintln!("{m}: start without backup_label: {}", log.trim());
    assert!(
        log.contains("could not locate a valid checkpoint record"),
        "{m}: expected PostgreSQL's checkpoint error:\n{log}"
    );
    assert_eq!(
        fs::read(data2.join("global/pg_control")).unwrap(),
        control_before,
        "{m}: the failed start left pg_control as it was"
    );
    // Put the label back: the same directory starts and has every committed row.
    fs::rename(&aside, data2.join("backup_label")).unwrap();
    server_user().chown(&data2.join("backup_label"));
    broken.start();
    broken.wait_recovery_done();
    report
        .verify_at(&mut broken.connect(), mark)
        .unwrap_or_else(|e| panic!("{m} after putting the label back: {e}"));
    assert_eq!(broken.query_one::<i64>("SELECT count(*) FROM in_ts"), 5000);
    broken.stop();
}

per_major!(restore_matrix);

/// PITR from an archive: restore with --target-lsn and --target-time between two known
/// transactions; the first is there, the second is not.
fn pitr(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let c = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().with_archive(true),
    );
    c.execute(
        "CREATE TABLE marks (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
    );
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    ok(
        pgsafe(&[
            "backup",
            "-d",
            &c.conninfo(),
            "-D",
            c.data_dir().to_str().unwrap(),
            "--target",
            b.to_str().unwrap(),
            "--progress",
            "none",
        ]),
        "backup",
    );
    c.execute("INSERT INTO marks (name) VALUES ('first')");
    let lsn_between: String = c.query_one("SELECT pg_current_wal_lsn()::text");
    std::thread::sleep(Duration::from_millis(1100));
    let time_between: String = c.query_one("SELECT clock_timestamp()::text");
    std::thread::sleep(Duration::from_millis(1100));
    c.execute("INSERT INTO marks (name) VALUES ('second')");
    let last: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let t = Instant::now();
    loop {
        let archived: Option<String> =
            c.query_one("SELECT last_archived_wal FROM pg_stat_archiver");
        if archived.is_some_and(|a| a.as_str() >= last.as_str()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{m}: WAL {last} never archived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let restore_command = format!("cp '{}'/%f %p", c.archive_dir().unwrap().display());
    for (name, target) in [
        ("lsn", vec!["--target-lsn", lsn_between.as_str()]),
        ("time", vec!["--target-time", time_between.as_str()]),
    ] {
        let data = scratch.path().join(format!("data-{name}"));
        let mut args = vec![
            "--restore-command",
            restore_command.as_str(),
            "--target-action",
            "promote",
        ];
        args.extend(target);
        let out = ok(restore(&b, &data, &args), "PITR restore");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("start the server:"), "{text}");
        assert!(text.contains("recovery target"), "{text}");
        let conf = if major >= 12 {
            assert!(data.join("recovery.signal").exists(), "{m}");
            fs::read_to_string(data.join("postgresql.auto.conf")).unwrap()
        } else {
            fs::read_to_string(data.join("recovery.conf")).unwrap()
        };
        assert!(conf.contains("restore_command = 'cp ''"), "{m}: {conf}");
        let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
        r.start();
        r.wait_recovery_done();
        let names: Vec<String> = r.query_column("SELECT name FROM marks ORDER BY name");
        assert_eq!(
            names,
            ["first"],
            "{m} --target-{name}: the first transaction only\n{}",
            r.server_log_tail(20)
        );
        r.execute("INSERT INTO marks (name) VALUES ('writable')");
        r.stop();
    }
}

per_major!(pitr);

fn dir_entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Refusals write nothing: non-empty target, running server in the target, corrupt backup
/// (full verification; and with --no-verify, the checksum check while writing stops it),
/// incomplete backup, no backup_label, non-empty tablespace location, a --wal archive backup
/// without --restore-command, unknown tablespace mapping, bad recovery options.
#[test]
fn refusals_write_nothing() {
    let install = PgInstall::major(16);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .with_tablespace(true)
            .with_archive(true),
    );
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
    let rel: String = c.query_one("SELECT pg_relation_filepath('t')");
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    let conn = c.conninfo();
    let pgdata = c.data_dir().to_str().unwrap().to_owned();
    let backup = |target: &Path, extra: &[&str]| {
        let mut args = vec![
            "backup",
            "-d",
            &conn,
            "-D",
            &pgdata,
            "--target",
            target.to_str().unwrap(),
            "--progress",
            "none",
        ];
        args.extend_from_slice(extra);
        ok(pgsafe(&args), "backup");
    };
    backup(&b, &[]);
    let map = fs::read_to_string(b.join("tablespace_map")).unwrap();
    let oid = map.split_whitespace().next().unwrap().to_owned();
    let ts_to = |name: &str| format!("{oid}={}", scratch.path().join(name).display());

    // Non-empty target.
    let target = scratch.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"x").unwrap();
    let out = restore(&b, &target, &["--tablespace-map", &ts_to("ts-a")]);
    refused(
        &out,
        &["restore refused (nothing was written)", "is not empty"],
    );
    assert_eq!(dir_entries(&target), ["keep"]);
    assert!(!scratch.path().join("ts-a").exists());

    // A running server in the target.
    let out = restore(&b, c.data_dir(), &["--tablespace-map", &ts_to("ts-b")]);
    refused(&out, &["a server is running in", "postmaster.pid"]);

    // The original tablespace location is not empty (no --tablespace-map).
    let fresh = scratch.path().join("fresh");
    let out = restore(&b, &fresh, &[]);
    refused(&out, &["tablespace", "is not empty", "--tablespace-map"]);
    assert!(!fresh.exists());

    // A mapping for a tablespace the backup does not have.
    let out = restore(&b, &fresh, &["--tablespace-map", "99999=/tmp/x"]);
    refused(&out, &["no tablespace with OID 99999"]);
    assert!(!fresh.exists());

    // Recovery options that do not fit together.
    let out = restore(
        &b,
        &fresh,
        &[
            "--tablespace-map",
            &ts_to("ts-c"),
            "--target-lsn",
            "0/1000000",
        ],
    );
    refused(&out, &["--restore-command"]);
    let out = restore(
        &b,
        &fresh,
        &[
            "--tablespace-map",
            &ts_to("ts-c"),
            "--target-action",
            "promote",
        ],
    );
    refused(&out, &["needs a recovery target"]);
    assert!(!fresh.exists() && !scratch.path().join("ts-c").exists());

    // A corrupt backup: one flipped byte.
    let bad = scratch.path().join("corrupt");
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&b)
            .arg(&bad)
            .status()
            .unwrap()
            .success()
    );
    let f = bad.join(&rel);
    let mut bytes = fs::read(&f).unwrap();
    bytes[100] ^= 0xFF;
    fs::write(&f, bytes).unwrap();
    let out = restore(&bad, &fresh, &["--tablespace-map", &ts_to("ts-d")]);
    refused(
        &out,
        &[
            "failed verification",
            "checksum mismatch",
            &rel,
            "nothing was written",
        ],
    );
    assert!(!fresh.exists() && !scratch.path().join("ts-d").exists());
    // --no-verify: presence and sizes pass, the checksum check while writing stops it, and the
    // directory has no pg_control (nothing can start on it).
    let out = restore(
        &bad,
        &fresh,
        &["--tablespace-map", &ts_to("ts-d"), "--no-verify"],
    );
    refused(
        &out,
        &["INCOMPLETE restore", "does not match backup_manifest", &rel],
    );
    assert!(!fresh.join("global/pg_control").exists());
    fs::remove_dir_all(&fresh).unwrap();

    // An incomplete backup (no pgsafe.json) and a backup without backup_label.
    for (file, needle) in [
        ("pgsafe.json", "is an incomplete backup"),
        ("backup_label", "has no backup_label"),
    ] {
        let d = scratch.path().join(format!("no-{file}"));
        assert!(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(&b)
                .arg(&d)
                .status()
                .unwrap()
                .success()
        );
        fs::remove_file(d.join(file)).unwrap();
        let out = restore(&d, &fresh, &["--tablespace-map", &ts_to("ts-e")]);
        refused(&out, &[needle, "nothing was written"]);
        assert!(!fresh.exists());
    }

    // A --wal archive backup: its WAL is not in it.
    let arch = scratch.path().join("archive-mode");
    backup(&arch, &["--wal", "archive"]);
    let out = restore(&arch, &fresh, &["--tablespace-map", &ts_to("ts-f")]);
    refused(
        &out,
        &["the WAL this restore needs is not in", "--restore-command"],
    );
    assert!(!fresh.exists());
    // With a restore_command it restores and starts.
    let cmd = format!("cp '{}'/%f %p", c.archive_dir().unwrap().display());
    ok(
        restore(
            &arch,
            &fresh,
            &[
                "--tablespace-map",
                &ts_to("ts-f"),
                "--restore-command",
                &cmd,
            ],
        ),
        "restore of a --wal archive backup",
    );
    let mut r = Cluster::adopt(&install, &fresh, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert_eq!(r.query_one::<i64>("SELECT count(*) FROM t"), 20000);
    r.stop();
}

/// Snapshot mode: a `cp -a` copy of PGDATA taken between `pgsafe start` and `pgsafe stop
/// --output-dir` (which writes backup_label into the copy) is restored with `pgsafe restore
/// --from-copy` and WAL from the archive; every row committed before stop returned is there.
fn from_copy(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().with_archive(true));
    let load = LoadGenerator::start(&c, 3);
    load.wait_for_transactions(50, Duration::from_secs(60));
    let run = run_dir();
    let conn = c.conninfo();
    let runp = run.path().to_str().unwrap();
    ok(
        pgsafe(&[
            "start",
            "-d",
            &conn,
            "--id",
            "cp",
            "--run-dir",
            runp,
            "--json",
        ]),
        "pgsafe start",
    );
    let scratch = server_owned_tempdir();
    let copy = scratch.path().join("copy");
    copy_tree(c.data_dir(), &copy, Some(server_user())).unwrap();
    load.wait_for_transactions(load.transactions() + 50, Duration::from_secs(60));
    let out = ok(
        pgsafe(&[
            "stop",
            "--id",
            "cp",
            "--run-dir",
            runp,
            "--json",
            "--output-dir",
            copy.to_str().unwrap(),
        ]),
        "pgsafe stop",
    );
    let mark = load.mark();
    let report = load.stop();
    let r = json(&out);
    assert_eq!(r["usable"], true, "{r}");
    // Everything committed before stop returned must reach the archive.
    let last: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let t = Instant::now();
    loop {
        let archived: Option<String> =
            c.query_one("SELECT last_archived_wal FROM pg_stat_archiver");
        if archived.is_some_and(|a| a.as_str() >= last.as_str()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "WAL {last} never archived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let data = scratch.path().join("data");
    let cmd = format!("cp '{}'/%f %p", c.archive_dir().unwrap().display());
    // Without a restore_command a copy cannot be restored (its pg_wal is not used).
    let out = restore(&copy, &data, &["--from-copy"]);
    refused(&out, &["--restore-command"]);
    let out = ok(
        restore(
            &copy,
            &data,
            &["--from-copy", "--restore-command", &cmd, "--json"],
        ),
        "restore --from-copy",
    );
    let j = json(&out);
    assert_eq!(j["from_copy"], true);
    assert_eq!(j["sentinel"], true);
    assert!(!data.join("postmaster.pid").exists());
    let mut restored = Cluster::adopt(&install, &data, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    report
        .verify_at(&mut restored.connect(), mark)
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}\n{}", restored.server_log_tail(30)));
    restored.stop();
}

#[test]
fn from_copy_10() {
    from_copy(10);
}

#[test]
fn from_copy_13() {
    from_copy(13);
}

#[test]
fn from_copy_18() {
    from_copy(18);
}

/// A backup taken from a standby (`BACKUP FROM: standby`) restores as a standalone server with
/// the sentinel (the standby's own standby.signal / recovery.conf is not restored), and
/// `--standby --primary-conninfo` makes a restore of the primary's backup a streaming standby.
fn standby_cases(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let primary = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    primary.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g");
    let standby = Cluster::new_standby(&primary);
    standby.wait_for_replay(&primary);
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("from-standby");
    primary.execute("INSERT INTO t SELECT g FROM generate_series(5001, 6000) g");
    let take = |c: &Cluster, target: &Path| {
        ok(
            pgsafe(&[
                "backup",
                "-d",
                &c.conninfo(),
                "-D",
                c.data_dir().to_str().unwrap(),
                "--target",
                target.to_str().unwrap(),
                "--progress",
                "none",
            ]),
            "backup",
        )
    };
    take(&standby, &b);
    let data = scratch.path().join("data");
    let out = ok(restore(&b, &data, &[]), "restore of a standby's backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was not restored"), "{m}: {stderr}");
    assert!(!data.join("standby.signal").exists(), "{m}: standby.signal");
    if let Ok(conf) = fs::read_to_string(data.join("recovery.conf")) {
        // The restore's own (10-11), not the standby's.
        assert!(!conf.contains("standby_mode"), "{m}: {conf}");
    }
    assert!(has_sentinel(
        &read_control_file(&data.join("global/pg_control")).unwrap()
    ));
    // A copy archives nothing by default; a standby keeps its primary's archive settings (it
    // archives nothing while it replays, and must archive there once promoted).
    let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("\narchive_mode = 'off'\n"), "{m}: {auto}");
    let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert!(r.query_one::<i64>("SELECT count(*) FROM t") >= 5000, "{m}");
    r.execute("INSERT INTO t VALUES (-1)");
    r.stop();
    drop(r);
    drop(standby);

    let pb = scratch.path().join("from-primary");
    take(&primary, &pb);
    let sdata = scratch.path().join("standby-data");
    ok(
        restore(
            &pb,
            &sdata,
            &["--standby", "--primary-conninfo", &primary.conninfo()],
        ),
        "restore as a standby",
    );
    if major >= 12 {
        assert!(sdata.join("standby.signal").exists());
        let auto = fs::read_to_string(sdata.join("postgresql.auto.conf")).unwrap();
        assert!(auto.contains("primary_conninfo = 'host="), "{auto}");
    } else {
        let conf = fs::read_to_string(sdata.join("recovery.conf")).unwrap();
        assert!(conf.contains("standby_mode = 'on'"), "{conf}");
    }
    let auto = fs::read_to_string(sdata.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("archive_mode = 'off'"), "{m}: {auto}");
    let mut s = Cluster::adopt(&install, &sdata, ClusterOptions::new());
    s.start();
    assert!(s.query_one::<bool>("SELECT pg_is_in_recovery()"), "{m}");
    primary.execute("CREATE TABLE after_standby_restore AS SELECT 42 AS x");
    let t = Instant::now();
    while s
        .query_one::<i64>("SELECT count(*) FROM pg_class WHERE relname = 'after_standby_restore'")
        == 0
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{m}: the restored standby does not follow the primary:\n{}",
            s.server_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop();
}

#[test]
fn standby_cases_11() {
    standby_cases(11);
}

#[test]
fn standby_cases_16() {
    standby_cases(16);
}

/// A cluster with group access (PGDATA 0750) restores with 0750 directories and 0640 files;
/// `--owner UID:GID` gives the files to that user.
#[test]
fn group_access_and_numeric_owner() {
    use std::os::unix::fs::PermissionsExt;
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    fs::set_permissions(c.data_dir(), fs::Permissions::from_mode(0o750)).unwrap();
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("b");
    ok(
        pgsafe(&[
            "backup",
            "-d",
            &c.conninfo(),
            "-D",
            c.data_dir().to_str().unwrap(),
            "--target",
            b.to_str().unwrap(),
            "--progress",
            "none",
        ]),
        "backup",
    );
    let info: Value = serde_json::from_slice(&fs::read(b.join("pgsafe.json")).unwrap()).unwrap();
    assert_eq!(info["pgdata_mode"], 0o750);
    assert_eq!(info["pgdata_owner"]["user"], server_user().name.as_str());
    let data = scratch.path().join("data");
    let user = server_user();
    let owner = format!("{}:{}", user.uid.as_raw(), user.gid.as_raw());
    ok(restore(&b, &data, &["--owner", &owner]), "restore");
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    assert_eq!(owner_mode(&data), (uid, gid, 0o750));
    assert_eq!(owner_mode(&data.join("base")), (uid, gid, 0o750));
    assert_eq!(owner_mode(&data.join("PG_VERSION")), (uid, gid, 0o640));
    assert_eq!(owner_mode(&data.join("backup_label")), (uid, gid, 0o640));
    // Cluster::adopt would chmod PGDATA to 0700: start it with 0750 through adopt anyway and
    // check the server accepts group access (11+).
    let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
    fs::set_permissions(&data, fs::Permissions::from_mode(0o750)).unwrap();
    r.start();
    r.wait_recovery_done();
    r.stop();
}

/// Restore verifies, then writes: each phase announces its own plan, and what is done is counted
/// from zero for each (before, the write phase started at the verify phase's count and the
/// progress said e.g. "972/971 files"). The write phase ends with every planned file done,
/// pg_control included.
#[test]
fn restore_progress_counts_each_plan_from_zero() {
    let c = Cluster::started(&PgInstall::major(16), ClusterOptions::new());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    ok(common::backup(&c, &b, &[]), "backup");
    let data = scratch.path().join("data");
    let out = ok(
        pgsafe(&[
            "restore",
            b.to_str().unwrap(),
            "--pgdata",
            data.to_str().unwrap(),
            "--progress",
            "json",
        ]),
        "restore",
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut phase = String::new();
    let mut first_in_phase = true;
    let mut plans = 0;
    for e in &events {
        match e["event"].as_str() {
            Some("phase") => {
                phase = e["phase"].as_str().unwrap_or_default().to_owned();
                first_in_phase = true;
            }
            Some("progress") => {
                let (files, total) = (
                    e["files"].as_u64().unwrap(),
                    e["total_files"].as_u64().unwrap(),
                );
                assert!(files <= total, "{phase}: {e}");
                assert!(
                    e["bytes"].as_u64().unwrap() <= e["total_bytes"].as_u64().unwrap(),
                    "{phase}: {e}"
                );
                if first_in_phase && (phase == "verify" || phase == "restore") {
                    // The report a new plan forces: nothing of it is done yet.
                    assert_eq!(files, 0, "{phase}: {e}");
                    plans += 1;
                }
                first_in_phase = false;
            }
            _ => {}
        }
    }
    assert_eq!(plans, 2, "a verify plan and a restore plan: {events:#?}");
    let end = events.last().unwrap();
    assert_eq!(
        (&end["event"], &end["exit_code"]),
        (&"end".into(), &0.into())
    );
    // The restore phase wrote every file but pg_control, which has its own phase.
    let phases = end["phases"].as_array().unwrap();
    let done = |name: &str| phases.iter().find(|p| p["phase"] == name).unwrap().clone();
    let (written, control) = (done("restore"), done("pg_control"));
    assert_eq!(written["files"], written["total_files"], "{end}");
    assert_eq!(written["bytes"], written["total_bytes"], "{end}");
    assert_eq!(
        (&control["files"], &control["total_files"]),
        (&1.into(), &1.into())
    );
}
