//! `pgsafe doctor` against real servers, through the real binary: every state is built for
//! real (running, stopped, crashed, crashed during an exclusive backup, restored by hand with
//! and without its label/WAL/marker/sentinel, recovered, rewound) and the verdict, exit code
//! and advice are checked — including that following the advice works.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgsafe::control::ControlFile;
use pgsafe::doctor::{
    REMOVED_LABEL_FILE, RESTORE_MARKER_FILE, RESTORE_MARKER_FORMAT, RestoreMarker, apply_sentinel,
    has_sentinel,
};
use pgsafe::label::BackupLabel;
use pgsafe::types::{Lsn, TimelineId, WalSegSize};
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, client_bin_dir, copy_tree, per_major, server_owned_tempdir,
    server_user,
};
use serde_json::Value;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("pgsafe")
}

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
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn doctor_json(dir: &Path, extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let r = doctor(dir, &args);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): exit {} stdout {} stderr {}",
            r.code, r.stdout, r.stderr
        )
    });
    (v, r.code)
}

/// Runs doctor (JSON and human), checks state and exit code, prints the human form.
fn expect(dir: &Path, extra: &[&str], state: u64, code: i32) -> Value {
    let (v, c) = doctor_json(dir, extra);
    let pretty = serde_json::to_string_pretty(&v["verdict"]).unwrap();
    assert_eq!(v["verdict"]["state_number"], state, "{pretty}");
    assert_eq!(c, code, "exit code; {pretty}");
    let human = doctor(dir, extra);
    assert_eq!(human.code, code);
    eprintln!(
        "---- pgsafe doctor {} {} ----\n{}",
        extra.join(" "),
        dir.display(),
        human.stdout
    );
    assert!(human.stdout.starts_with("Verdict: "), "{}", human.stdout);
    v
}

fn commands(v: &Value) -> Vec<String> {
    v["verdict"]["next_steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["command"].as_str().map(str::to_owned))
        .collect()
}

/// No step moves or deletes backup_label, and no fix is offered.
fn never_removes_label(v: &Value) {
    for c in commands(v) {
        let moves = (c.starts_with("mv ") || c.starts_with("rm ")) && c.contains("backup_label ");
        assert!(!moves, "advice removes backup_label: {c}");
    }
    assert!(v["verdict"]["fix"].is_null(), "{}", v["verdict"]);
}

/// Runs an advised shell command (as root; the files it creates go to the server user).
fn run_advice(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn opts() -> ClusterOptions {
    ClusterOptions::new()
        .conf("max_wal_size = 32MB")
        .conf("min_wal_size = 32MB")
}

fn rows(c: &Cluster) -> i64 {
    c.query_one("SELECT count(*) FROM t")
}

/// Tries to start; returns the server log of the failed attempt (panics if it started).
fn start_fails(c: &mut Cluster) -> String {
    let before = c.server_log().len();
    let r = catch_unwind(AssertUnwindSafe(|| c.start()));
    assert!(r.is_err(), "the server started, but it must not");
    c.server_log()[before..].to_owned()
}

fn label_start_file(dir: &Path) -> String {
    let b = fs::read(dir.join("backup_label")).unwrap();
    BackupLabel::parse(&b)
        .unwrap()
        .fields()
        .start
        .file
        .to_string()
}

/// Rounds of writes, WAL switches and checkpoints until `seg` is gone from pg_wal (recycled).
fn churn_until_gone(c: &Cluster, seg: &str) -> i64 {
    let mut added = 0;
    for _ in 0..60 {
        if !c.data_dir().join("pg_wal").join(seg).exists() {
            return added;
        }
        c.execute("INSERT INTO t (v) SELECT 'churn' FROM generate_series(1, 500)");
        added += 500;
        c.execute("SELECT pg_switch_wal()");
        c.execute("CHECKPOINT");
    }
    panic!("{seg} is still in pg_wal after 60 checkpoints");
}

// ---- 1, 2, 3 --------------------------------------------------------------------------------

fn running_stopped_crashed(major: u32) {
    // With a WAL archive doctor can check that no backup was running and that the server wrote
    // no WAL past this pg_wal: only then is a crash verdict "high" (see crash_without_archive).
    let mut c = Cluster::started(&PgInstall::major(major), opts().with_archive(true));
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 1000)");
    let dir = c.data_dir().to_path_buf();
    expect(&dir, &[], 1, 0);
    let conn = c.conninfo();
    let v = expect(&dir, &["--connect", &conn], 1, 0);
    let server = &v["facts"]["server"];
    assert_eq!(server["reachable"], true, "{server}");
    assert_eq!(server["same_directory"], true, "{server}");
    assert_eq!(server["in_recovery"], false, "{server}");
    if major <= 14 {
        assert_eq!(server["in_exclusive_backup"], false, "{server}");
    }

    c.stop();
    let v = expect(&dir, &[], 2, 0);
    assert_eq!(v["facts"]["postmaster"]["liveness"], "absent");
    // --connect to a stopped server is a fact, not an error.
    let v = expect(&dir, &["--connect", &conn], 2, 0);
    assert_eq!(v["facts"]["server"]["reachable"], false);

    c.start();
    c.execute("INSERT INTO t (v) SELECT 'y' FROM generate_series(1, 1000)");
    c.crash();
    let v = expect(&dir, &[], 3, 0);
    assert_eq!(v["facts"]["postmaster"]["liveness"], "stale");
    assert_eq!(v["verdict"]["confidence"], "high");
    // --fix has nothing to do here.
    let r = doctor(&dir, &["--fix"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("--fix: nothing done"), "{}", r.stdout);
    c.start();
    assert_eq!(rows(&c), 2000);
}

per_major!(running_stopped_crashed: 10, 12, 14, 15, 17, 18);

/// Without an archive to look into, a crash still gets its verdict and exit 0, but not "high":
/// postmaster.pid and postmaster.opts prove nothing (a file copy has them), and doctor says what
/// it could not check.
fn crash_without_archive(major: u32) {
    let mut c = Cluster::started(&PgInstall::major(major), opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'y' FROM generate_series(1, 1000)");
    c.crash();
    let dir = c.data_dir().to_path_buf();
    // Nothing outside the directory could be checked: a crashed server and a file copy of it
    // put back without its label look the same, so no exit 0 and a point to confirm.
    let v = expect(&dir, &[], 3, 1);
    assert_eq!(v["verdict"]["confidence"], "medium", "{}", v["verdict"]);
    let caveats = v["verdict"]["caveats"].to_string();
    assert!(
        caveats.contains("no WAL archive is configured"),
        "{caveats}"
    );
    let confirm = v["verdict"]["must_confirm"].to_string();
    assert!(confirm.contains("not a file copy"), "{confirm}");
    assert!(v["verdict"]["fix"].is_null(), "{}", v["verdict"]);
    c.start();
    assert_eq!(rows(&c), 1000);
}

per_major!(crash_without_archive: 12, 18);

/// A streaming standby: running (in recovery), cleanly stopped (in recovery), crashed.
fn standby(major: u32) {
    let p = Cluster::started(&PgInstall::major(major), opts());
    p.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    let mut s = Cluster::new_standby(&p);
    let dir = s.data_dir().to_path_buf();
    let conn = s.conninfo();
    let v = expect(&dir, &["--connect", &conn], 1, 0);
    assert_eq!(v["facts"]["server"]["in_recovery"], true);
    assert!(v["verdict"]["evidence"].to_string().contains("in recovery"));
    s.stop();
    let v = expect(&dir, &[], 2, 0);
    assert!(summary(&v).contains("standby"), "{}", summary(&v));
    assert!(v["verdict"]["caveats"].as_array().unwrap().is_empty());
    s.start();
    s.crash();
    // No archive to look in (a streaming standby): a crashed standby and a file copy of it put
    // back without its backup_label look the same, so the DBA confirms (exit 1), no --fix.
    let v = expect(&dir, &[], 3, 1);
    assert!(summary(&v).contains("recovery"), "{}", summary(&v));
    assert!(
        v["verdict"]["must_confirm"]
            .to_string()
            .contains("not a file copy"),
        "{}",
        v["verdict"]
    );
    s.start();
}

per_major!(standby: 10, 15, 18);

// ---- 4 --------------------------------------------------------------------------------------

/// The oldest trap: SIGKILL during an exclusive backup once the label's WAL is recycled.
fn crashed_during_exclusive_backup(major: u32) {
    // The archive lets doctor rule out a copy: no history file for this label (the backup was
    // never stopped), no WAL past this pg_wal.
    let mut c = Cluster::started(&PgInstall::major(major), opts().with_archive(true));
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'before' FROM generate_series(1, 1000)");
    c.execute("SELECT pg_start_backup('doctor exclusive', true)");
    let dir = c.data_dir().to_path_buf();
    let seg = label_start_file(&dir);
    let added = churn_until_gone(&c, &seg);
    let committed = 1000 + added;
    c.crash();

    // Right after the crash: stale postmaster.pid.
    let v = expect(&dir, &[], 4, 1);
    assert_eq!(v["verdict"]["confidence"], "high", "{}", v["verdict"]);
    assert!(v["verdict"]["fix"].is_object());

    // PostgreSQL's own verdict: it refuses to start.
    let log = start_fails(&mut c);
    assert!(
        log.contains("could not locate required checkpoint record")
            || log.contains("could not find redo location referenced by checkpoint record"),
        "{log}"
    );
    assert!(log.contains("backup_label"), "{log}");

    // After the failed start postmaster.pid is gone; still state 4, still fixable.
    let v = expect(&dir, &[], 4, 1);
    assert_eq!(v["facts"]["postmaster"]["liveness"], "absent");
    let fix = &v["verdict"]["fix"];
    assert_eq!(fix["to"], dir.join(REMOVED_LABEL_FILE).to_str().unwrap());
    let cmds = commands(&v);
    assert!(
        cmds.contains(&format!("pgsafe doctor --fix {}", dir.display())),
        "{cmds:?}"
    );
    let human = doctor(&dir, &[]).stdout;
    assert!(human.contains("renaming backup_label is safe"), "{human}");
    assert!(human.contains("What would make renaming unsafe"), "{human}");

    let label_before = fs::read(dir.join("backup_label")).unwrap();
    let r = doctor(&dir, &["--fix"]);
    eprintln!("---- pgsafe doctor --fix ----\n{}", r.stdout);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Fixed: renamed"), "{}", r.stdout);
    assert!(!dir.join("backup_label").exists());
    assert_eq!(
        fs::read(dir.join(REMOVED_LABEL_FILE)).unwrap(),
        label_before
    );
    let v = expect(&dir, &[], 3, 0);
    assert!(
        v["verdict"]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains(REMOVED_LABEL_FILE))
    );

    c.start();
    assert_eq!(rows(&c), committed, "every committed row survives");
    // The interrupted exclusive backup is over for the server.
    let in_backup: bool = c.query_one("SELECT pg_is_in_backup()");
    assert!(!in_backup);
}

per_major!(crashed_during_exclusive_backup: 10, 11, 12, 13, 14);

/// The same crash without a WAL archive: a copy taken during that backup would look the same,
/// so doctor no longer calls the rename safe (it did, "confidence high", before); it lists what
/// to confirm, exits 1 and --fix refuses. The DBA who confirmed renames by hand.
fn exclusive_crash_without_archive(major: u32) {
    let mut c = Cluster::started(&PgInstall::major(major), opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'before' FROM generate_series(1, 1000)");
    c.execute("SELECT pg_start_backup('doctor exclusive', true)");
    let dir = c.data_dir().to_path_buf();
    let seg = label_start_file(&dir);
    let added = churn_until_gone(&c, &seg);
    c.crash();
    let v = expect(&dir, &[], 4, 1);
    assert_ne!(v["verdict"]["confidence"], "high", "{}", v["verdict"]);
    assert!(v["verdict"]["fix"].is_null());
    let confirm = v["verdict"]["must_confirm"].to_string();
    assert!(confirm.contains("No file-level copy"), "{confirm}");
    let r = doctor(&dir, &["--fix"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("ambiguous"), "{}", r.stderr);
    assert!(dir.join("backup_label").exists());
    fs::rename(dir.join("backup_label"), dir.join(REMOVED_LABEL_FILE)).unwrap();
    c.start();
    assert_eq!(rows(&c), 1000 + added);
}

per_major!(exclusive_crash_without_archive: 10, 12, 14);

/// Crash right after pg_start_backup: the label's WAL is still there, the server starts as
/// it is, and --fix declines (renaming is not needed).
fn exclusive_backup_wal_still_present(major: u32) {
    let mut c = Cluster::started(&PgInstall::major(major), opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("SELECT pg_start_backup('doctor exclusive', true)");
    c.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 100)");
    let dir = c.data_dir().to_path_buf();
    let conn = c.conninfo();
    let v = expect(&dir, &["--connect", &conn], 1, 0);
    assert!(
        v["verdict"]["summary"]
            .as_str()
            .unwrap()
            .contains("exclusive backup in progress"),
        "{}",
        v["verdict"]
    );
    c.crash();
    let v = expect(&dir, &[], 4, 1);
    assert!(v["verdict"]["fix"].is_null());
    assert!(
        v["verdict"]["summary"]
            .as_str()
            .unwrap()
            .contains("start it"),
        "{}",
        v["verdict"]
    );
    let r = doctor(&dir, &["--fix"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("nothing needs fixing"), "{}", r.stderr);
    assert!(dir.join("backup_label").exists());
    c.start();
    assert_eq!(rows(&c), 100);
    assert!(dir.join("backup_label.old").exists());
}

per_major!(exclusive_backup_wal_still_present: 10, 12, 14);

// ---- 5, 6, 7: a restore made by hand --------------------------------------------------------

/// A non-exclusive backup of `c` taken by hand: the data directory copied during backup mode
/// into `<tmp>/data` (without postmaster.pid/.opts and pg_wal contents, as backup tools do),
/// and a "backup folder" `<tmp>/backup` with backup_label and the WAL from start to stop.
struct HandBackup {
    tmp: tempfile::TempDir,
    label: Vec<u8>,
    start: Lsn,
    stop: Lsn,
    first_seg: String,
    committed: i64,
}

impl HandBackup {
    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    fn backup(&self) -> PathBuf {
        self.tmp.path().join("backup")
    }
}

fn give(path: &Path) {
    server_user().chown(path);
}

fn hand_backup(c: &Cluster) -> HandBackup {
    let major = c.major();
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'before' FROM generate_series(1, 1000)");
    let mut s = c.connect();
    let start_sql = if major >= 15 {
        "SELECT pg_backup_start('doctor restore', true)::text"
    } else {
        "SELECT pg_start_backup('doctor restore', true, false)::text"
    };
    s.query_one(start_sql, &[]).unwrap();
    c.execute("INSERT INTO t (v) SELECT 'during' FROM generate_series(1, 1000)");
    // A checkpoint during the copy: the copied pg_control is newer than the label's.
    c.execute("CHECKPOINT");
    let tmp = server_owned_tempdir();
    let data = tmp.path().join("data");
    copy_tree(c.data_dir(), &data, Some(server_user())).unwrap();
    c.execute("INSERT INTO t (v) SELECT 'during2' FROM generate_series(1, 1000)");
    let stop_sql = if major >= 15 {
        "SELECT lsn::text, labelfile FROM pg_backup_stop(false)"
    } else {
        "SELECT lsn::text, labelfile FROM pg_stop_backup(false, false)"
    };
    let row = s.query_one(stop_sql, &[]).unwrap();
    let stop: Lsn = row.get::<_, String>(0).parse().unwrap();
    let label: String = row.get(1);
    drop(s);
    let parsed = BackupLabel::parse(label.as_bytes()).unwrap();
    let start = parsed.start_lsn();
    let tli = parsed.timeline();

    // What a backup tool leaves out.
    for f in ["postmaster.pid", "postmaster.opts"] {
        let _ = fs::remove_file(data.join(f));
    }
    for e in fs::read_dir(data.join("pg_wal")).unwrap().flatten() {
        if e.path().is_file() {
            fs::remove_file(e.path()).unwrap();
        }
    }
    // The backup folder: its label and its WAL.
    let backup = tmp.path().join("backup");
    fs::create_dir_all(backup.join("pg_wal")).unwrap();
    fs::write(backup.join("backup_label"), label.as_bytes()).unwrap();
    let segs =
        pgsafe::wal::backup_wal_segments(start, tli, stop, tli, WalSegSize::DEFAULT, None).unwrap();
    for seg in &segs {
        let name = seg.to_string();
        fs::copy(
            c.data_dir().join("pg_wal").join(&name),
            backup.join("pg_wal").join(&name),
        )
        .unwrap();
        fs::copy(
            backup.join("pg_wal").join(&name),
            data.join("pg_wal").join(&name),
        )
        .unwrap();
        give(&data.join("pg_wal").join(&name));
    }
    fs::write(data.join("backup_label"), label.as_bytes()).unwrap();
    give(&data.join("backup_label"));
    HandBackup {
        tmp,
        label: label.into_bytes(),
        start,
        stop,
        first_seg: segs[0].to_string(),
        committed: 3000,
    }
}

fn write_marker(b: &HandBackup) {
    let m = RestoreMarker {
        format: RESTORE_MARKER_FORMAT,
        backup_id: "hand-made".into(),
        label: Some("doctor restore".into()),
        start_lsn: b.start,
        start_timeline: Some(TimelineId(1)),
        checkpoint_lsn: None,
        stop_lsn: Some(b.stop),
        stop_timeline: Some(TimelineId(1)),
        backup_start_time: None,
        restored_at: "2025-11-22T08:00:00Z".into(),
        source: Some(b.backup().display().to_string()),
        system_identifier: None,
        sentinel: true,
        pgsafe_version: None,
    };
    let p = b.data().join(RESTORE_MARKER_FILE);
    fs::write(&p, m.to_json()).unwrap();
    give(&p);
}

fn write_sentinel(data: &Path) {
    let p = data.join("global/pg_control");
    let mut c = ControlFile::decode(&fs::read(&p).unwrap()).unwrap();
    apply_sentinel(&mut c);
    fs::write(&p, c.encode()).unwrap();
    assert!(has_sentinel(
        &ControlFile::decode(&fs::read(&p).unwrap()).unwrap()
    ));
}

fn summary(v: &Value) -> &str {
    v["verdict"]["summary"].as_str().unwrap()
}

fn restored_backup(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, opts());
    let b = hand_backup(&c);
    drop(c);
    let data = b.data();
    let aside = b.tmp.path().join("aside");
    fs::create_dir(&aside).unwrap();

    // 5: label + WAL, nothing records the backup's end.
    let v = expect(&data, &[], 5, 0);
    never_removes_label(&v);

    // 6: the first WAL segment missing, nowhere to get it from.
    let seg_path = data.join("pg_wal").join(&b.first_seg);
    fs::rename(&seg_path, aside.join(&b.first_seg)).unwrap();
    let v = expect(&data, &[], 6, 5);
    assert!(summary(&v).contains(&b.first_seg), "{}", summary(&v));
    never_removes_label(&v);
    // With a WAL archive: restore_command (in a config file outside PGDATA on 12+, in
    // recovery.conf on 10-11) plus a recovery signal makes it recoverable.
    let rc = format!(
        "restore_command = 'cp {}/pg_wal/%f %p'\n",
        b.backup().display()
    );
    let extra = b.tmp.path().join("extra.conf");
    let signal = if major >= 12 {
        fs::write(&extra, &rc).unwrap();
        fs::write(data.join("recovery.signal"), "").unwrap();
        data.join("recovery.signal")
    } else {
        fs::write(data.join("recovery.conf"), &rc).unwrap();
        data.join("recovery.conf")
    };
    let cf = extra.display().to_string();
    let v = expect(&data, &["--config-file", &cf], 5, 0);
    assert_eq!(v["verdict"]["confidence"], "medium");
    assert!(
        v["verdict"]["evidence"]
            .to_string()
            .contains("restore_command"),
        "{}",
        v["verdict"]
    );
    fs::remove_file(&signal).unwrap();
    fs::rename(aside.join(&b.first_seg), &seg_path).unwrap();

    // 6: backup_label deleted, no marker — the backup-copy pattern gives it away.
    fs::remove_file(data.join("backup_label")).unwrap();
    let v = expect(&data, &[], 6, 5);
    assert_eq!(v["verdict"]["confidence"], "medium");
    never_removes_label(&v);

    // A pgsafe restore: marker + sentinel; the label still missing → 6, high confidence.
    write_marker(&b);
    write_sentinel(&data);
    let v = expect(&data, &[], 6, 5);
    assert_eq!(v["verdict"]["confidence"], "high");
    never_removes_label(&v);
    assert_eq!(v["facts"]["control"]["sentinel"], true);

    // The sentinel keeps the server from starting without the label.
    let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
    let log = start_fails(&mut r);
    assert!(
        log.contains("could not locate a valid checkpoint record"),
        "{log}"
    );

    // Follow the advice: copy the label back from the backup.
    let cp = commands(&v)
        .into_iter()
        .find(|c| c.starts_with("cp "))
        .unwrap();
    assert!(cp.contains(&b.backup().display().to_string()), "{cp}");
    run_advice(&cp);
    give(&data.join("backup_label"));
    assert_eq!(fs::read(data.join("backup_label")).unwrap(), b.label);
    let v = expect(&data, &[], 5, 0);
    assert_eq!(v["verdict"]["confidence"], "high");

    // 6 again: the first segment missing; the advice copies it from the backup.
    fs::remove_file(&seg_path).unwrap();
    let v = expect(&data, &[], 6, 5);
    let cp = commands(&v)
        .into_iter()
        .find(|c| c.starts_with("cp "))
        .unwrap();
    assert_eq!(
        cp,
        format!(
            "cp {}/pg_wal/{} {}/pg_wal/",
            b.backup().display(),
            b.first_seg,
            data.display()
        )
    );
    run_advice(&cp);
    give(&seg_path);
    expect(&data, &[], 5, 0);

    // Start it: recovery from the label (with the sentinel in pg_control) works.
    r.start();
    assert_eq!(rows(&r), b.committed);
    assert!(data.join("backup_label.old").exists());
    let conn = r.conninfo();
    expect(&data, &["--connect", &conn], 1, 0);
    r.stop();
    let v = expect(&data, &[], 7, 0);
    assert!(summary(&v).contains("recovery finished"), "{}", summary(&v));
    assert_eq!(v["facts"]["control"]["sentinel"], false);
}

per_major!(restored_backup: 10, 12, 14, 15, 17, 18);

/// The output of a real `pgsafe backup`, started as it is (the plain layout is a data
/// directory): 5 with the backup's end known from backup_manifest; 6 without its label.
fn pgsafe_backup_output(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 5000)");
    let tmp = server_owned_tempdir();
    let target = tmp.path().join("backup");
    let conn = c.conninfo();
    let out = Command::new(bin())
        .args(["backup", "-d", &conn, "-D"])
        .arg(c.data_dir())
        .arg("--target")
        .arg(&target)
        .args(["--progress", "none", "--fast"])
        .env_remove("PGDATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgsafe backup: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(c);
    let data = tmp.path().join("data");
    copy_tree(&target, &data, Some(server_user())).unwrap();
    let v = expect(&data, &[], 5, 0);
    assert_eq!(v["verdict"]["confidence"], "high", "{}", v["verdict"]);
    assert!(
        v["facts"]["backup_end"]["source"]
            .as_str()
            .unwrap_or_default()
            .contains("backup_manifest"),
        "{}",
        v["facts"]["backup_end"]
    );
    let label = data.join("backup_label");
    let aside = tmp.path().join("label.aside");
    fs::rename(&label, &aside).unwrap();
    let v = expect(&data, &[], 6, 5);
    assert_eq!(v["verdict"]["confidence"], "high", "two independent signs");
    never_removes_label(&v);
    fs::rename(&aside, &label).unwrap();
    let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
    r.start();
    assert_eq!(rows(&r), 5000);
    r.stop();
    expect(&data, &[], 7, 0);
}

per_major!(pgsafe_backup_output: 12, 17);

// ---- 15+: a streamed label in the live directory ----------------------------------------------

/// The 15+ trap: a script writes pg_backup_stop()'s label into the *live* PGDATA. Running: a
/// stray-label warning. After a crash (label's WAL recycled) the server will not start, exactly
/// as in state 4 — but a snapshot restore looks identical, so doctor never offers removal;
/// it lists what the user must confirm. Once the user has confirmed, the manual rename works.
fn streamed_label_in_live_directory(major: u32) {
    let mut c = Cluster::started(&PgInstall::major(major), opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 1000)");
    let mut s = c.connect();
    let (start, stop) = if major >= 15 {
        (
            "SELECT pg_backup_start('oops', true)::text",
            "SELECT labelfile FROM pg_backup_stop(false)",
        )
    } else {
        (
            "SELECT pg_start_backup('oops', true, false)::text",
            "SELECT labelfile FROM pg_stop_backup(false, false)",
        )
    };
    s.query_one(start, &[]).unwrap();
    let label: String = s.query_one(stop, &[]).unwrap().get(0);
    drop(s);
    let dir = c.data_dir().to_path_buf();
    fs::write(dir.join("backup_label"), &label).unwrap();
    give(&dir.join("backup_label"));

    let v = expect(&dir, &[], 1, 0);
    assert!(
        summary(&v).contains("stray backup_label"),
        "{}",
        summary(&v)
    );

    let seg = label_start_file(&dir);
    let added = churn_until_gone(&c, &seg);
    c.crash();
    let v = expect(&dir, &[], 6, 5);
    never_removes_label(&v);
    let confirm = v["verdict"]["must_confirm"].to_string();
    assert!(confirm.contains("cannot tell"), "{confirm}");
    let r = doctor(&dir, &["--fix"]);
    assert_eq!(r.code, 5, "still the dangerous state");
    assert!(r.stderr.contains("--fix refused"), "{}", r.stderr);
    assert!(dir.join("backup_label").exists());

    let log = start_fails(&mut c);
    assert!(
        log.contains("could not locate required checkpoint record")
            || log.contains("could not find redo location"),
        "{log}"
    );
    // The user confirms it is the original directory and renames by hand.
    fs::rename(dir.join("backup_label"), dir.join(REMOVED_LABEL_FILE)).unwrap();
    // Still no archive to look in: the DBA has to confirm, doctor does not exit 0.
    expect(&dir, &[], 3, 1);
    c.start();
    assert_eq!(rows(&c), 1000 + added);
}

per_major!(streamed_label_in_live_directory: 14, 15, 18);

// ---- 8 ----------------------------------------------------------------------------------------

/// A label written by hand the way pg_rewind writes it.
#[test]
fn hand_written_pg_rewind_label() {
    let mut c = Cluster::started(&PgInstall::major(17), opts());
    let redo: String = c.query_one("SELECT redo_lsn::text FROM pg_control_checkpoint()");
    let ckpt: String = c.query_one("SELECT checkpoint_lsn::text FROM pg_control_checkpoint()");
    c.stop();
    let redo: Lsn = redo.parse().unwrap();
    let seg = pgsafe::types::WalSegment::containing(redo, TimelineId(1), WalSegSize::DEFAULT);
    let text = format!(
        "START WAL LOCATION: {redo} (file {seg})\nCHECKPOINT LOCATION: {ckpt}\nBACKUP METHOD: \
         pg_rewind\nBACKUP FROM: standby\nSTART TIME: 2025-11-21 10:46:49 UTC\n"
    );
    let dir = c.data_dir().to_path_buf();
    fs::write(dir.join("backup_label"), text).unwrap();
    give(&dir.join("backup_label"));
    let v = expect(&dir, &[], 8, 1);
    never_removes_label(&v);
}

/// The real thing: pg_rewind (Debian's 15) rewinds an old primary after its standby was
/// promoted.
#[test]
fn real_pg_rewind_15() {
    let install = PgInstall::major(15);
    let mut p = Cluster::started(&install, opts());
    p.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    p.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 100)");
    let mut s = Cluster::new_standby(&p);
    s.wait_for_replay(&p);
    s.promote();
    s.execute("INSERT INTO t (v) SELECT 'new primary' FROM generate_series(1, 10)");
    p.execute("INSERT INTO t (v) SELECT 'diverged' FROM generate_series(1, 10)");
    p.stop();
    let mut cmd = Command::new(client_bin_dir().join("pg_rewind"));
    cmd.arg("--target-pgdata")
        .arg(p.data_dir())
        .arg("--source-server")
        .arg(s.conninfo())
        .current_dir("/tmp")
        .env_remove("PGHOST")
        .env_remove("PGPORT");
    server_user().apply(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "pg_rewind: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = expect(p.data_dir(), &[], 8, 1);
    never_removes_label(&v);
    let label = v["facts"]["label"]["text"].as_str().unwrap();
    assert!(label.contains("BACKUP METHOD: pg_rewind"), "{label}");
    // Following the advice (standby.signal + primary_conninfo) makes it a standby.
    assert!(
        commands(&v)
            .iter()
            .any(|c| c.starts_with("touch ") && c.ends_with("standby.signal"))
    );
}

// ---- 9 and errors -------------------------------------------------------------------------------

#[test]
fn not_data_directories() {
    let d = tempfile::tempdir().unwrap();
    let v = expect(d.path(), &[], 9, 2);
    assert!(summary(&v).contains("not a PostgreSQL data directory"));

    fs::write(d.path().join("notes.txt"), "hello").unwrap();
    fs::create_dir(d.path().join("main")).unwrap();
    expect(d.path(), &[], 9, 2);

    // A parent folder of a data directory: doctor points at it.
    let main = d.path().join("main");
    fs::write(main.join("PG_VERSION"), "15\n").unwrap();
    fs::create_dir(main.join("global")).unwrap();
    fs::write(main.join("global/pg_control"), vec![0xABu8; 8192]).unwrap();
    let v = expect(d.path(), &[], 9, 2);
    assert!(
        commands(&v).contains(&format!("pgsafe doctor {}", main.display())),
        "{}",
        v["verdict"]
    );
    // Garbage pg_control.
    let v = expect(&main, &[], 9, 2);
    assert!(
        v["verdict"]["evidence"][0]
            .as_str()
            .unwrap()
            .contains("pg_control"),
        "{}",
        v["verdict"]
    );
    // Garbage PG_VERSION.
    fs::write(main.join("PG_VERSION"), "banana\n").unwrap();
    expect(&main, &[], 9, 2);
    // A truncated pg_control.
    fs::write(main.join("PG_VERSION"), "15\n").unwrap();
    fs::write(main.join("global/pg_control"), b"short").unwrap();
    expect(&main, &[], 9, 2);
}

#[test]
fn errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let r = doctor(&d.path().join("nope"), &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    let f = d.path().join("file");
    fs::write(&f, "x").unwrap();
    let r = doctor(&f, &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a directory"), "{}", r.stderr);
    let r = doctor(d.path(), &["--connect", "host='unterminated"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// A directory the caller may not read (needs root to switch to the unprivileged user).
#[test]
fn unreadable_directory_exits_3_with_a_hint() {
    let user = server_user();
    if user.is_current {
        eprintln!("skipped: not root, cannot test as another user");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let data = d.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("doctor").arg(&data).current_dir("/tmp");
    user.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("data directory's owner"), "{err}");
}
