//! Snapshot mode (`pgsafe start` / `stop` / `status` / `abort` / `snapshot`) against real
//! servers, through the real binary, as a backup tool's pre/post hooks would call it.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe::label::{BackupLabel, MapEscaping, TablespaceMap};
use pgsafe::types::PgVersion;
use pgsafe_testkit::{
    Cluster, ClusterOptions, LoadGenerator, PgInstall, copy_tree, per_major, server_owned_tempdir,
    server_user,
};
use serde_json::Value;

use common::{bin, command, json, ok, run_dir};

/// `pgsafe args… --run-dir RUN`.
fn pgsafe(run: &Path, args: &[&str]) -> Output {
    let mut cmd = command(args);
    cmd.arg("--run-dir").arg(run);
    cmd.output().unwrap()
}

fn start(c: &Cluster, run: &Path, id: &str, extra: &[&str]) -> Value {
    let conn = c.conninfo();
    let mut args = vec!["start", "-d", &conn, "--id", id, "--json"];
    args.extend_from_slice(extra);
    json(&ok(pgsafe(run, &args), "pgsafe start"))
}

fn stop(run: &Path, id: &str, extra: &[&str]) -> Output {
    let mut args = vec!["stop", "--id", id, "--json"];
    args.extend_from_slice(extra);
    pgsafe(run, &args)
}

/// start → stop: the label written to --output-dir is byte-identical to what the server
/// returned (as carried in the JSON), parses, and agrees with the start LSN/timeline; the
/// tablespace map is present and names the tablespace; a second stop returns the same result;
/// status shows the backup complete.
fn start_stop_round_trip(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    let run = run_dir();
    let began = Instant::now();
    let s = start(&c, run.path(), "rt", &["--label", "round trip"]);
    let start_secs = began.elapsed().as_secs_f64();
    assert_eq!(s["state"], "in_progress", "{s}");
    c.execute("CREATE TABLE during (x int) TABLESPACE ts1; INSERT INTO during VALUES (1)");
    let out_dir = tempfile::tempdir().unwrap();
    let od = out_dir.path().to_str().unwrap();
    let first = ok(stop(run.path(), "rt", &["--output-dir", od]), "pgsafe stop");
    let total = began.elapsed().as_secs_f64();
    eprintln!("PostgreSQL {major}: start {start_secs:.2}s, start+stop {total:.2}s");
    let r = json(&first);
    assert_eq!(r["state"], "complete");
    assert_eq!(r["usable"], true);
    let label_text = r["result"]["backup_label"].as_str().unwrap();
    let on_disk = fs::read(out_dir.path().join("backup_label")).unwrap();
    assert_eq!(on_disk, label_text.as_bytes(), "backup_label byte for byte");
    assert!(
        label_text.ends_with('\n') && !label_text.ends_with("\n\n"),
        "no extra newline"
    );
    let label = BackupLabel::parse(&on_disk).unwrap();
    assert_eq!(
        label.start_lsn().to_string(),
        s["start_lsn"].as_str().unwrap()
    );
    assert_eq!(label.timeline().0 as u64, s["start_tli"].as_u64().unwrap());
    assert_eq!(
        label.fields().start.file.to_string(),
        s["start_wal"].as_str().unwrap()
    );
    assert_eq!(label.fields().label.as_deref(), Some(&b"round trip"[..]));
    assert_eq!(
        fs::metadata(out_dir.path().join("backup_label"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );

    let map_bytes = fs::read(out_dir.path().join("tablespace_map")).unwrap();
    assert_eq!(
        map_bytes,
        r["result"]["tablespace_map"].as_str().unwrap().as_bytes()
    );
    let v = PgVersion::from_num(c.server_version_num()).unwrap();
    let map = TablespaceMap::parse(&map_bytes, MapEscaping::for_version(v)).unwrap();
    assert_eq!(map.entries()[0].as_path(), c.tablespace_dir().unwrap());

    // Idempotent: same result, files untouched, exit 0.
    let second = ok(
        stop(run.path(), "rt", &["--output-dir", od]),
        "second pgsafe stop",
    );
    assert_eq!(json(&second)["result"], r["result"]);
    assert_eq!(
        fs::read(out_dir.path().join("backup_label")).unwrap(),
        on_disk
    );
    let st = json(&ok(pgsafe(run.path(), &["status", "--json"]), "status"));
    assert_eq!(st[0]["id"], "rt");
    assert_eq!(st[0]["state"], "complete");
    // No holder is left once the backup is final.
    assert!(!run.path().join("rt.sock").exists());
}

/// The holder dies (SIGKILL): stop fails loudly, the server aborted the backup, a new start
/// with the same ID works.
fn killed_holder_fails_loudly(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let run = run_dir();
    let s = start(&c, run.path(), "k", &[]);
    let pid = s["holder_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_gone(pid);
    let out = stop(run.path(), "k", &[]);
    assert_eq!(out.status.code(), Some(2), "stop must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT usable") && err.contains("holder process"),
        "{err}"
    );
    assert_eq!(json(&out)["state"], "failed");
    wait_for_log(&c, "aborting backup due to backend exiting before");
    // A repeated stop says the same; a new start with the same ID works.
    assert_eq!(stop(run.path(), "k", &[]).status.code(), Some(2));
    start(&c, run.path(), "k", &[]);
    ok(stop(run.path(), "k", &[]), "stop after restart");
}

/// The server crashes while a backup is held: it restarts by itself (no backup_label left in
/// PGDATA, unlike an exclusive backup), and stop fails loudly.
fn server_crash_during_backup(major: u32) {
    let mut c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let run = run_dir();
    start(&c, run.path(), "crash", &[]);
    c.immediate_stop();
    assert!(!c.data_dir().join("backup_label").exists());
    c.start();
    assert_eq!(c.query_one::<i32>("SELECT 1"), 1);
    let out = wait_stop_failure(run.path(), "crash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT usable"), "{err}");
}

/// Contrast on 12 and 14: an *exclusive* backup in the same situation leaves backup_label in
/// the live data directory (the trap pgsafe avoids).
fn exclusive_backup_leaves_label_behind(major: u32) {
    let mut c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    c.execute("SELECT pg_start_backup('exclusive', true)");
    c.crash();
    assert!(
        c.data_dir().join("backup_label").exists(),
        "the exclusive label stays in PGDATA"
    );
}

/// `--max-hold 2s`: the holder aborts the backup and stop reports it.
fn max_hold_aborts(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let run = run_dir();
    start(&c, run.path(), "mh", &["--max-hold", "2s"]);
    std::thread::sleep(Duration::from_secs(4));
    let out = stop(run.path(), "mh", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("maximum hold time"), "{err}");
    wait_for_log(&c, "aborting backup due to backend exiting before");
}

/// `snapshot --exec false` aborts and writes nothing; `snapshot --exec 'cp -a …'` produces a
/// copy with its backup_label.
fn snapshot_exec(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let conn = c.conninfo();
    let run = run_dir();
    let out_dir = tempfile::tempdir().unwrap();
    let od = out_dir.path().to_str().unwrap();
    let out = pgsafe(
        run.path(),
        &[
            "snapshot",
            "-d",
            &conn,
            "--exec",
            "false",
            "--output-dir",
            od,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(out_dir.path()).unwrap().count(),
        0,
        "nothing written"
    );

    let copy = out_dir.path().join("copy");
    let cmd = format!(
        "cp -a {} {} && test -n \"$PGSAFE_START_LSN\"",
        c.data_dir().display(),
        copy.display()
    );
    let out = pgsafe(
        run.path(),
        &[
            "snapshot",
            "-d",
            &conn,
            "--exec",
            &cmd,
            "--output-dir",
            copy.to_str().unwrap(),
            "--json",
        ],
    );
    let r = json(&ok(out, "snapshot --exec cp"));
    let label = fs::read(copy.join("backup_label")).unwrap();
    assert_eq!(
        label,
        r["result"]["backup_label"].as_str().unwrap().as_bytes()
    );
    BackupLabel::parse(&label).unwrap();
}

per_major!(start_stop_round_trip);
per_major!(killed_holder_fails_loudly);
per_major!(server_crash_during_backup);
per_major!(max_hold_aborts);
per_major!(snapshot_exec);

#[test]
fn exclusive_backup_leaves_label_behind_12() {
    exclusive_backup_leaves_label_behind(12);
}

#[test]
fn exclusive_backup_leaves_label_behind_14() {
    exclusive_backup_leaves_label_behind(14);
}

/// A caller capturing stdout and stderr through pipes (reading to EOF) returns as soon as
/// backup mode is confirmed: the holder inherits neither pipe.
#[test]
fn start_returns_with_captured_pipes() {
    let c = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    let run = run_dir();
    let mut child = Command::new(bin())
        .args(["start", "-d", &c.conninfo(), "--id", "pipes", "--run-dir"])
        .arg(run.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut o = String::new();
        let mut e = String::new();
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    // EOF on both pipes means every process holding them has exited or closed them.
    let (o, e) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("pgsafe start must not keep the caller's pipes open while the backup is held");
    assert!(child.wait().unwrap().success(), "{o}{e}");
    assert!(o.contains("in progress"), "{o}");
    let st = json(&ok(
        pgsafe(run.path(), &["status", "--id", "pipes", "--json"]),
        "status",
    ));
    assert_eq!(st[0]["state"], "in_progress");
    ok(stop(run.path(), "pipes", &[]), "stop");
}

/// Three concurrent backups with different IDs complete independently; a second start with a
/// live ID is refused.
#[test]
fn concurrent_backups() {
    for major in [10, 15, 18] {
        let c = Cluster::started(
            &PgInstall::major(major),
            ClusterOptions::new().fast_unsafe(),
        );
        let run = run_dir();
        for id in ["a", "b", "c"] {
            start(&c, run.path(), id, &[]);
        }
        let dup = pgsafe(run.path(), &["start", "-d", &c.conninfo(), "--id", "b"]);
        assert_eq!(dup.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&dup.stderr).contains("already in progress"));
        let st = json(&ok(pgsafe(run.path(), &["status", "--json"]), "status"));
        assert_eq!(st.as_array().unwrap().len(), 3);
        let mut starts = Vec::new();
        for id in ["b", "a", "c"] {
            let r = json(&ok(stop(run.path(), id, &[]), "stop"));
            starts.push(r["start_lsn"].as_str().unwrap().to_owned());
            BackupLabel::parse(r["result"]["backup_label"].as_str().unwrap().as_bytes()).unwrap();
        }
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 3, "PostgreSQL {major}: distinct start points");
    }
}

/// Backup from a streaming standby: no writes to the database, `BACKUP FROM: standby`;
/// `--wait-archive` is refused with an explanation (archive_mode is not `always`).
#[test]
fn backup_from_standby() {
    for major in [10, 14, 17] {
        let primary = Cluster::started(
            &PgInstall::major(major),
            ClusterOptions::new().fast_unsafe(),
        );
        primary.execute("CREATE TABLE t AS SELECT 1 AS x");
        let standby = Cluster::new_standby(&primary);
        let run = run_dir();
        start(&standby, run.path(), "sb", &[]);
        primary.execute("INSERT INTO t VALUES (2); SELECT pg_switch_wal()");
        let refused = stop(run.path(), "sb", &["--wait-archive"]);
        assert_eq!(refused.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("archive_mode = always"));
        let r = json(&ok(stop(run.path(), "sb", &[]), "stop on standby"));
        let label =
            BackupLabel::parse(r["result"]["backup_label"].as_str().unwrap().as_bytes()).unwrap();
        assert!(label.is_from_standby(), "PostgreSQL {major}: {r}");
        assert_eq!(r["from_standby"], true);
    }
}

/// The run directory is private and another uid cannot talk to the holder.
#[test]
fn socket_is_private() {
    let c = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    let run = run_dir();
    start(&c, run.path(), "priv", &[]);
    let sock = fs::metadata(run.path().join("priv.sock")).unwrap();
    assert_eq!(sock.mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(run.path()).unwrap().mode() & 0o777, 0o700);
    if nix::unistd::geteuid().is_root() {
        // Another (unprivileged) user: refused, and the backup is unaffected.
        let mut cmd = Command::new(bin());
        cmd.args(["status", "--id", "priv", "--run-dir"])
            .arg(run.path());
        server_user().apply(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "another uid must be refused");
    }
    // A run directory others can read is refused.
    let loose = tempfile::tempdir().unwrap();
    fs::set_permissions(loose.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = pgsafe(loose.path(), &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 700"));
    ok(stop(run.path(), "priv", &[]), "stop");
}

// End to end: start, `cp -a` the data directory while the load generator writes, stop into
// the copy, then start a server on the copy with WAL from the archive and prove that every row
// committed before stop returned is there.
per_major!(end_to_end);

fn end_to_end(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().with_archive(true));
    let load = LoadGenerator::start(&c, 3);
    load.wait_for_transactions(50, Duration::from_secs(60));
    let run = run_dir();
    start(&c, run.path(), "e2e", &[]);
    let scratch = server_owned_tempdir();
    let copy = scratch.path().join("data");
    copy_tree(c.data_dir(), &copy, Some(server_user())).unwrap();
    load.wait_for_transactions(load.transactions() + 50, Duration::from_secs(60));
    let r = json(&ok(
        stop(run.path(), "e2e", &["--output-dir", copy.to_str().unwrap()]),
        "stop",
    ));
    assert_eq!(r["result"]["archive"]["complete"], true, "{r}");
    let mark = load.mark();
    let report = load.stop();
    // Rows committed after the backup's stop LSN but before `stop` returned are in WAL that is
    // not archived yet: switch segments and wait until that WAL is archived too.
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
    let _ = fs::remove_file(copy.join("postmaster.pid"));
    let archive = c.archive_dir().unwrap().to_owned();
    let restore = format!("cp {}/%f %p", archive.display());
    if major >= 12 {
        fs::write(copy.join("recovery.signal"), "").unwrap();
        let mut auto = fs::read_to_string(copy.join("postgresql.auto.conf")).unwrap_or_default();
        auto.push_str(&format!("restore_command = '{restore}'\n"));
        fs::write(copy.join("postgresql.auto.conf"), auto).unwrap();
    } else {
        fs::write(
            copy.join("recovery.conf"),
            format!("restore_command = '{restore}'\n"),
        )
        .unwrap();
    }
    let mut restored = Cluster::adopt(&install, &copy, ClusterOptions::new());
    restored.start();
    // Read-only connections are accepted before archive recovery ends: wait for the end.
    restored.wait_recovery_done();
    let mut client = restored.connect();
    report.verify_at(&mut client, mark).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL {major}: committed rows lost: {e}\nstop: {r}\nrestored server log:\n{}",
            restored.server_log_tail(40)
        )
    });
    assert!(
        !copy.join("backup_label").exists(),
        "recovery consumed the label"
    );
    drop(client);
    restored.stop();
}

fn wait_gone(pid: i32) {
    let t = Instant::now();
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "holder {pid} did not die"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_log(c: &Cluster, needle: &str) {
    let t = Instant::now();
    while !c.server_log().contains(needle) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "server log never said {needle:?}:\n{}",
            c.server_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The holder's session died with the server: stop must fail (the stop call on a dead session
/// fails, or the holder already recorded the loss).
fn wait_stop_failure(run: &Path, id: &str) -> Output {
    let out = stop(run, id, &[]);
    assert!(
        !out.status.success(),
        "stop succeeded after the server crashed"
    );
    out
}

/// `stop --record-table`: the result also lands in a table (created if missing) for backup
/// software that reads results from SQL; refused on a standby before stopping.
#[test]
fn record_table() {
    for major in [10, 15, 18] {
        let c = Cluster::started(
            &PgInstall::major(major),
            ClusterOptions::new().fast_unsafe(),
        );
        c.execute("CREATE SCHEMA ops");
        let run = run_dir();
        let s = start(&c, run.path(), "rec", &["--label", "recorded"]);
        let r = json(&ok(
            stop(run.path(), "rec", &["--record-table", "ops.backups"]),
            "stop",
        ));
        assert_eq!(
            r["result"]["recorded"], "recorded in \"ops\".\"backups\"",
            "{r}"
        );
        let mut client = c.connect();
        let row = client
            .query_one(
                "SELECT backup_id, label, start_lsn::text, stop_lsn::text, backup_label \
                 FROM ops.backups",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "rec");
        assert_eq!(row.get::<_, String>(1), "recorded");
        assert_eq!(row.get::<_, String>(2), s["start_lsn"].as_str().unwrap());
        assert_eq!(
            row.get::<_, String>(3),
            r["result"]["stop_lsn"].as_str().unwrap()
        );
        assert_eq!(
            row.get::<_, String>(4),
            r["result"]["backup_label"].as_str().unwrap()
        );
    }
    let primary = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    let standby = Cluster::new_standby(&primary);
    let run = run_dir();
    start(&standby, run.path(), "sb", &[]);
    let out = stop(run.path(), "sb", &["--record-table", "backups"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a primary"));
    ok(
        stop(run.path(), "sb", &[]),
        "stop without --record-table still works",
    );
}
