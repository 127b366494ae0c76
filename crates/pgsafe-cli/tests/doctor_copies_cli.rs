//! `pgsafe doctor` from the unlucky DBA's side: file-level copies of a *running* server (cp,
//! rsync, a storage snapshot) put back at the original path. They carry `postmaster.pid`,
//! `postmaster.opts`, pg_control "in production" and a `pg_wal` of their own — exactly what the
//! crashed original leaves — and starting them the way a crash is started loses committed rows.
//! doctor must never call them "crashed, start it" or "renaming backup_label is safe".
//!
//! The copy is made the way a slow `cp -a` of a busy server ends up: the table files early,
//! pg_control and pg_wal after many more rows and a checkpoint. Outside oracles: PostgreSQL's own
//! start-up (rows counted after starting the copy as doctor used to advise, and after following
//! today's advice).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, ok, run_dir};
use pgsafe::label::BackupLabel;
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, copy_tree, server_owned_tempdir, server_user,
};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn doctor(dir: &Path, extra: &[&str]) -> Run {
    let out = Command::new(bin())
        .arg("doctor")
        .args(extra)
        .arg(dir)
        .env_remove("PGDATA")
        .env_remove("PGSAFE_RUN_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// doctor --json: the document and the exit code (the human form is printed for the log).
fn doctor_json(dir: &Path, extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let r = doctor(dir, &args);
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): exit {} {} {}", r.code, r.stdout, r.stderr));
    let human = doctor(dir, extra);
    eprintln!(
        "---- pgsafe doctor {} ----\n{}",
        extra.join(" "),
        human.stdout
    );
    assert_eq!(human.code, r.code);
    (v, r.code)
}

fn commands(v: &Value) -> Vec<String> {
    v["verdict"]["next_steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["command"].as_str().map(str::to_owned))
        .collect()
}

/// Not "safe": no exit 0, no fix, no step that moves the label, no "confidence high" for a
/// verdict that lets it start.
fn never_calls_it_safe(v: &Value, code: i32) {
    let verdict = &v["verdict"];
    assert_ne!(code, 0, "exit 0 for a copy: {verdict:#}");
    assert!(verdict["fix"].is_null(), "{verdict:#}");
    for c in commands(v) {
        assert!(
            !((c.starts_with("mv ") || c.starts_with("rm ")) && c.contains("backup_label ")),
            "advice removes backup_label: {c}"
        );
    }
    let state = verdict["state_number"].as_u64().unwrap();
    assert!(
        ![2, 3, 4, 7].contains(&state) || verdict["confidence"] != "high",
        "{verdict:#}"
    );
}

fn opts() -> ClusterOptions {
    ClusterOptions::new()
        .conf("max_wal_size = 32MB")
        .conf("min_wal_size = 32MB")
        .with_archive(true)
}

fn rows(c: &Cluster) -> i64 {
    c.query_one("SELECT count(*) FROM t")
}

/// The first half of a slow file copy: the table files (`base/`), copied now.
fn copy_base_early(c: &Cluster, stage: &Path) -> PathBuf {
    let early = stage.join("base-early");
    copy_tree(&c.data_dir().join("base"), &early, Some(server_user())).unwrap();
    early
}

/// The rest of the copy, now: everything (postmaster.pid, postmaster.opts, pg_control, pg_wal,
/// the label of an exclusive backup …), with `base/` replaced by the early copy.
fn finish_copy(c: &Cluster, early: &Path, stage: &Path) -> PathBuf {
    let copy = stage.join("copy");
    copy_tree(c.data_dir(), &copy, Some(server_user())).unwrap();
    fs::remove_dir_all(copy.join("base")).unwrap();
    fs::rename(early, copy.join("base")).unwrap();
    assert!(copy.join("postmaster.pid").exists() && copy.join("postmaster.opts").exists());
    copy
}

/// Stops the original and puts the copy in its place (same path).
fn put_back(c: &mut Cluster, copy: &Path, stage: &Path) {
    c.stop();
    fs::rename(c.data_dir(), stage.join("original")).unwrap();
    fs::rename(copy, c.data_dir()).unwrap();
}

/// Waits until the archive holds a file whose name ends with `suffix`.
fn wait_archived(c: &Cluster, suffix: &str) -> String {
    let dir = c.archive_dir().unwrap();
    let t = Instant::now();
    loop {
        if let Some(n) = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(suffix))
        {
            return n;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "nothing *{suffix} archived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts a throw-away duplicate of `dir` with `edit` applied and returns its row count: what a
/// DBA gets by following a given piece of advice.
fn rows_if_started(install: &PgInstall, dir: &Path, edit: impl Fn(&Path)) -> i64 {
    let scratch = server_owned_tempdir();
    let d = scratch.path().join("data");
    copy_tree(dir, &d, Some(server_user())).unwrap();
    // Keep the duplicate from archiving into the original's archive.
    fs::write(d.join("postgresql.auto.conf"), "archive_mode = off\n").unwrap();
    server_user().chown(&d.join("postgresql.auto.conf"));
    edit(&d);
    let mut dup = Cluster::adopt(install, &d, ClusterOptions::new());
    dup.start();
    dup.wait_recovery_done();
    let n = rows(&dup);
    dup.stop();
    n
}

/// Archive recovery from the original's WAL archive (what doctor's advice amounts to), on a
/// duplicate that does not archive itself.
fn recover_from_archive(d: &Path, archive: &Path, major: u32) {
    let rc = format!("restore_command = 'cp {}/%f %p'\n", archive.display());
    if major >= 12 {
        fs::write(
            d.join("postgresql.auto.conf"),
            format!("archive_mode = off\n{rc}"),
        )
        .unwrap();
        fs::write(d.join("recovery.signal"), "").unwrap();
        server_user().chown(&d.join("recovery.signal"));
    } else {
        fs::write(d.join("recovery.conf"), rc).unwrap();
        server_user().chown(&d.join("recovery.conf"));
    }
    server_user().chown(&d.join("postgresql.auto.conf"));
}

// ---- (a) a snapshot-mode copy put back without its backup_label --------------------------

/// `pgsafe start`, a slow file copy while 100,000 rows go in, `pgsafe stop` writing the label
/// elsewhere; the copy put back at the original path without the label. Old doctor: "crashed;
/// start it" (exit 0) — and the server comes up with 1,000 of 101,000 rows.
fn snapshot_copy_without_label(major: u32) {
    let install = PgInstall::major(major);
    let mut c = Cluster::started(&install, opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'before' FROM generate_series(1, 1000)");
    let run = run_dir();
    let run_s = run.path().to_str().unwrap().to_owned();
    let conn = c.conninfo();
    ok(
        common::pgsafe(&[
            "start",
            "-d",
            &conn,
            "--id",
            "snap",
            "--fast",
            "--run-dir",
            &run_s,
        ]),
        "pgsafe start",
    );
    let stage = server_owned_tempdir();
    let early = copy_base_early(&c, stage.path());
    c.execute("INSERT INTO t (v) SELECT 'during' FROM generate_series(1, 100000)");
    c.execute("CHECKPOINT");
    let copy = finish_copy(&c, &early, stage.path());
    let out_dir = stage.path().join("labels");
    fs::create_dir(&out_dir).unwrap();
    let out_s = out_dir.to_str().unwrap().to_owned();
    ok(
        common::pgsafe(&[
            "stop",
            "--id",
            "snap",
            "--run-dir",
            &run_s,
            "--output-dir",
            &out_s,
            "--no-wait-archive",
        ]),
        "pgsafe stop",
    );
    let label = BackupLabel::parse(&fs::read(out_dir.join("backup_label")).unwrap()).unwrap();
    let history = wait_archived(&c, ".backup");
    let committed = 101_000;
    c.execute("INSERT INTO t (v) SELECT 'after' FROM generate_series(1, 500)");
    put_back(&mut c, &copy, stage.path());
    let dir = c.data_dir().to_path_buf();

    // The holder record alone (no archive evidence looked at would still find it: the archive
    // is there too). Then the archive alone (holder records out of reach).
    for extra in [
        vec!["--run-dir", run_s.as_str()],
        vec!["--run-dir", "/nonexistent-run-dir"],
    ] {
        let (v, code) = doctor_json(&dir, &extra);
        never_calls_it_safe(&v, code);
        assert_eq!(v["verdict"]["state_number"], 6, "{:#}", v["verdict"]);
        assert_eq!(code, 5);
        let ev = v["verdict"]["evidence"].to_string();
        assert!(ev.contains("captured while"), "{ev}");
        if extra[1] == run_s {
            assert!(ev.contains("snap.json"), "{ev}");
        } else {
            assert!(
                ev.contains(&history) || ev.contains("newer than anything in pg_wal"),
                "{ev}"
            );
        }
    }
    // --fix does nothing.
    let r = doctor(&dir, &["--fix", "--run-dir", &run_s]);
    assert_eq!(r.code, 5, "{}", r.stderr);

    // The oracle: started the way the old verdict advised, the copy loses rows.
    let as_crash = rows_if_started(&install, &dir, |_| {});
    assert!(as_crash < committed, "started as a crash: {as_crash} rows");
    // Following the advice (the label back, WAL from the archive) keeps every one.
    let archive = c.archive_dir().unwrap().to_path_buf();
    let label_src = out_dir.join("backup_label");
    let restored = rows_if_started(&install, &dir, |d| {
        fs::copy(&label_src, d.join("backup_label")).unwrap();
        server_user().chown(&d.join("backup_label"));
        recover_from_archive(d, &archive, major);
    });
    assert!(restored >= committed, "with the label: {restored} rows");
    // The archived history file is that backup's.
    assert!(
        history.starts_with(&label.fields().start.file.to_string()),
        "{history}"
    );
}

#[test]
fn snapshot_copy_without_label_18() {
    snapshot_copy_without_label(18)
}

#[test]
fn snapshot_copy_without_label_15() {
    snapshot_copy_without_label(15)
}

#[test]
fn snapshot_copy_without_label_12() {
    snapshot_copy_without_label(12)
}

// ---- (b) a copy taken during an exclusive backup, put back after its WAL was recycled -----

fn label_start_file(dir: &Path) -> String {
    let b = fs::read(dir.join("backup_label")).unwrap();
    BackupLabel::parse(&b)
        .unwrap()
        .fields()
        .start
        .file
        .to_string()
}

/// Rounds of writes, WAL switches and checkpoints until `seg` is gone from pg_wal.
fn churn_until_gone(c: &Cluster, seg: &str) -> i64 {
    let mut added = 0;
    for _ in 0..60 {
        if !c.data_dir().join("pg_wal").join(seg).exists() {
            return added;
        }
        c.execute("INSERT INTO t (v) SELECT 'churn' FROM generate_series(1, 2000)");
        added += 2000;
        c.execute("SELECT pg_switch_wal()");
        c.execute("CHECKPOINT");
    }
    panic!("{seg} is still in pg_wal after 60 checkpoints");
}

/// PG 10–14: `pg_start_backup('x')` (exclusive), a slow copy; the backup is stopped later.
/// Old doctor: "renaming backup_label is safe, confidence high", and `--fix` renames it —
/// and the rows written during the copy vanish without an error.
fn exclusive_copy_put_back(major: u32) {
    let install = PgInstall::major(major);
    let mut c = Cluster::started(&install, opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'before' FROM generate_series(1, 1000)");
    c.execute("SELECT pg_start_backup('exclusive copy', true)");
    let seg = label_start_file(c.data_dir());
    let stage = server_owned_tempdir();
    let early = copy_base_early(&c, stage.path());
    let added = churn_until_gone(&c, &seg);
    let copy = finish_copy(&c, &early, stage.path());
    assert!(copy.join("backup_label").exists());
    c.execute("SELECT pg_stop_backup()");
    let history = wait_archived(&c, ".backup");
    c.execute("INSERT INTO t (v) SELECT 'after' FROM generate_series(1, 500)");
    let total = 1000 + added + 500;
    put_back(&mut c, &copy, stage.path());
    let dir = c.data_dir().to_path_buf();

    let (v, code) = doctor_json(&dir, &["--run-dir", "/nonexistent-run-dir"]);
    never_calls_it_safe(&v, code);
    assert_ne!(v["verdict"]["state_number"], 4, "{:#}", v["verdict"]);
    let ev = v["verdict"]["evidence"].to_string();
    assert!(
        ev.contains(&history),
        "names the archived history file: {ev}"
    );
    let r = doctor(&dir, &["--fix"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--fix refused"), "{}", r.stderr);
    assert!(
        dir.join("backup_label").exists(),
        "--fix must not touch the label"
    );

    // The oracle: the old --fix (rename the label, start) loses rows written during the copy.
    let renamed = rows_if_started(&install, &dir, |d| {
        fs::rename(d.join("backup_label"), d.join("backup_label.moved")).unwrap();
    });
    assert!(renamed < 1000 + added, "after the rename: {renamed} rows");
    // Recovering it as the backup it is (label kept, WAL from the archive) keeps them all.
    let archive = c.archive_dir().unwrap().to_path_buf();
    let recovered = rows_if_started(&install, &dir, |d| recover_from_archive(d, &archive, major));
    // Everything up to the last archived segment (the 500 rows after the stop may sit in the
    // segment the clean shutdown did not archive).
    assert!(
        recovered >= 1000 + added && recovered <= total,
        "label kept, archive WAL replayed: {recovered} rows"
    );
}

#[test]
fn exclusive_copy_put_back_12() {
    exclusive_copy_put_back(12)
}

#[test]
fn exclusive_copy_put_back_10() {
    exclusive_copy_put_back(10)
}

#[test]
fn exclusive_copy_put_back_14() {
    exclusive_copy_put_back(14)
}
