//! Snapshot mode from the unlucky DBA's side (`docs/threat-model.md`): a label aimed at a live data
//! directory, archive waits on an idle server, a `stop` killed while it waits, a holder whose
//! backend was terminated, and a tablespace path that is not UTF-8. Real servers, the real binary;
//! waits that could hang run with a generous limit that fails the test instead.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe::label::BackupLabel;
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, copy_tree, server_owned_tempdir, server_user,
};
use serde_json::Value;

use common::{command, json, ok, refused, run_dir, start_holder, with_run_dir};

fn run(run: &Path, args: &[&str]) -> Output {
    with_run_dir(run, args).output().unwrap()
}

fn status(run_path: &Path, id: &str) -> Value {
    let v = json(&ok(
        run(run_path, &["status", "--id", id, "--json"]),
        "pgsafe status",
    ));
    v[0].clone()
}

/// Runs the command to completion, failing the test (and killing the command) if it takes longer
/// than `limit`: a hang is a failure, not a wait.
fn finishes_within(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} did not answer within {limit:?}: it queued behind another request");
        }
    }
}

fn kill9(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Archive wait: decided per needed file, not from the order of pg_stat_archiver
// ---------------------------------------------------------------------------------------------

/// A started, archiving cluster whose pg_wal is a link to a folder on a real disk (fsync on);
/// the folder lives as long as the returned guard.
fn archiving_cluster_with_wal_on_disk(major: u32) -> (Cluster, tempfile::TempDir) {
    let mut c = Cluster::new(
        &PgInstall::major(major),
        ClusterOptions::new().with_archive(true),
    );
    let disk = tempfile::Builder::new()
        .prefix("pgsafe-wal")
        .tempdir_in("/var/tmp")
        .unwrap();
    server_user().chown(disk.path());
    let wal = disk.path().join("pg_wal");
    copy_tree(&c.data_dir().join("pg_wal"), &wal, Some(server_user())).unwrap();
    fs::remove_dir_all(c.data_dir().join("pg_wal")).unwrap();
    symlink(&wal, c.data_dir().join("pg_wal")).unwrap();
    c.start();
    (c, disk)
}

/// An idle archiving server, start/stop repeated, with a segment switch during the backup (so
/// the stop segment is later than the start segment whose name the backup history file
/// carries): every stop reports the backup usable, and the files it waited for (stop segment,
/// backup history file) really are in the archive when it says so (the archive directory is the
/// outside oracle). pg_wal lives on a real disk with fsync on (the test clusters are in
/// /dev/shm, where fsync costs nothing): fsyncing the history file then takes long enough for
/// the archiver, woken by the stop's segment switch, to archive the stop segment first — the
/// order that fooled the old "last_archived_wal ≥ stop segment" test.
fn idle_server_stops_are_usable(major: u32) {
    let (c, _disk) = archiving_cluster_with_wal_on_disk(major);
    let archive = c.archive_dir().unwrap().to_owned();
    let r = run_dir();
    for round in 0..6 {
        let id = format!("idle{round}");
        start_holder(&c, r.path(), &id, &[]);
        c.execute("SELECT pg_switch_wal()");
        let out = finishes_within(
            with_run_dir(
                r.path(),
                &["stop", "--id", &id, "--archive-timeout", "60s", "--json"],
            ),
            Duration::from_secs(180),
            "stop",
        );
        let v = json(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "PostgreSQL {major}, round {round}: a good backup must be usable: {v}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(v["usable"], true);
        let needs: Vec<String> = v["result"]["archive_needs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(needs.len(), 2, "stop segment and history file: {v}");
        assert!(needs[1].ends_with(".backup"), "{needs:?}");
        for n in &needs {
            assert!(
                archive.join(n).exists(),
                "PostgreSQL {major}: stop said usable but {n} is not in the archive"
            );
        }
    }
}

#[test]
fn idle_server_stops_are_usable_pg10() {
    idle_server_stops_are_usable(10);
}

#[test]
fn idle_server_stops_are_usable_pg15() {
    idle_server_stops_are_usable(15);
}

#[test]
fn idle_server_stops_are_usable_pg18() {
    idle_server_stops_are_usable(18);
}

/// `backup --wal archive` shares the wait: with a segment switch during the (throttled) copy,
/// so that the stop segment is later than the start segment, it succeeds, and the history file
/// it waited for is in the archive.
fn backup_wal_archive_waits_per_file(major: u32) {
    let (c, _disk) = archiving_cluster_with_wal_on_disk(major);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let mut cmd = command(&[
        "backup",
        "-d",
        &c.conninfo(),
        "-D",
        c.data_dir().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--wal",
        "archive",
        "--archive-timeout",
        "60s",
        "--max-rate",
        "8M",
        "--progress",
        "none",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let t = Instant::now();
    while !target.join("base").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.execute("SELECT pg_switch_wal()");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("backup --wal archive never finished")
        .unwrap();
    ok(out, &format!("PostgreSQL {major}: backup --wal archive"));
    let label = BackupLabel::parse(&fs::read(target.join("backup_label")).unwrap()).unwrap();
    let start = label.fields().start.file.to_string();
    let hist = fs::read_dir(c.archive_dir().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .any(|n| n.starts_with(&start) && n.ends_with(".backup"));
    assert!(hist, "the backup history file of {start} is archived");
}

#[test]
fn backup_wal_archive_waits_per_file_pg12() {
    backup_wal_archive_waits_per_file(12);
}

#[test]
fn backup_wal_archive_waits_per_file_pg17() {
    backup_wal_archive_waits_per_file(17);
}

/// Deterministic form of the above: the archiver keeps failing (archive_command = false) and
/// pg_stat_archiver never moves, but the two files PostgreSQL's own pg_backup_stop(wait => true)
/// waits for are marked archived in pg_wal/archive_status (as another archiving path would): a
/// waiting stop reports the backup usable, because it reads each needed file's archive state,
/// not pg_stat_archiver's "last archived" name.
fn archive_state_is_read_per_file(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf("archive_command = 'false'"),
    );
    let r = run_dir();
    let s = start_holder(&c, r.path(), "pf", &[]);
    c.execute("SELECT pg_switch_wal()");
    let waiting = with_run_dir(
        r.path(),
        &["stop", "--id", "pf", "--archive-timeout", "10m", "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let t = Instant::now();
    let stopped = loop {
        let st = status(r.path(), "pf");
        if st["state"] == "complete" {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "never stopped: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let start_lsn: pgsafe::types::Lsn = s["start_lsn"].as_str().unwrap().parse().unwrap();
    let stop_wal = stopped["result"]["stop_wal"].as_str().unwrap();
    let hist = format!(
        "{}.{:08X}.backup",
        s["start_wal"].as_str().unwrap(),
        start_lsn.0 % (16 * 1024 * 1024)
    );
    assert_ne!(
        stop_wal,
        s["start_wal"].as_str().unwrap(),
        "the switch moved the stop"
    );
    let status_dir = c.data_dir().join("pg_wal/archive_status");
    for name in [stop_wal, hist.as_str()] {
        let ready = status_dir.join(format!("{name}.ready"));
        assert!(
            ready.exists(),
            "{} is waiting to be archived",
            ready.display()
        );
        fs::rename(&ready, status_dir.join(format!("{name}.done"))).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiting.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("stop kept waiting although both needed files are archived")
        .unwrap();
    let v = json(&ok(out, "stop"));
    assert_eq!(v["usable"], true, "{v}");
}

#[test]
fn archive_state_is_read_per_file_pg10() {
    archive_state_is_read_per_file(10);
}

#[test]
fn archive_state_is_read_per_file_pg15() {
    archive_state_is_read_per_file(15);
}

/// A backup role without pg_monitor cannot list pg_wal/archive_status: the wait falls back to
/// pg_stat_archiver (conservatively) and says so, instead of failing.
#[test]
fn archive_wait_without_pg_monitor_falls_back() {
    let c = Cluster::started(
        &PgInstall::major(16),
        ClusterOptions::new().fast_unsafe().with_archive(true),
    );
    c.execute(
        "CREATE ROLE bk LOGIN; \
         GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO bk; \
         GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO bk",
    );
    let conn = c.conninfo().replace("user=postgres", "user=bk");
    let r = run_dir();
    json(&ok(
        run(r.path(), &["start", "-d", &conn, "--id", "np", "--json"]),
        "start as a role without pg_monitor",
    ));
    let out = finishes_within(
        with_run_dir(
            r.path(),
            &["stop", "--id", "np", "--archive-timeout", "60s", "--json"],
        ),
        Duration::from_secs(180),
        "stop",
    );
    let v = json(&out);
    let detail = v["result"]["archive"]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    if v["usable"] == true {
        assert!(detail.contains("pg_stat_archiver"), "{detail}");
    } else {
        // The conservative answer; it must say which privilege removes the doubt.
        assert!(detail.contains("pg_monitor"), "{detail}");
    }
}

// ---------------------------------------------------------------------------------------------
// The holder serves requests concurrently; --no-wait-archive is honoured
// ---------------------------------------------------------------------------------------------

/// archive_command always fails. A `stop` waiting for archiving is killed (SIGKILL): a second
/// `stop --no-wait-archive`, `status` and `abort` are answered at once. Then a `stop` that times
/// out, followed by `stop --no-wait-archive`: that one does not wait again.
fn killed_stop_does_not_block_the_holder(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf("archive_command = 'false'"),
    );
    let r = run_dir();
    let holder = start_holder(&c, r.path(), "kw", &[])["holder_pid"]
        .as_i64()
        .unwrap() as i32;
    let mut waiting = with_run_dir(
        r.path(),
        &["stop", "--id", "kw", "--archive-timeout", "30m", "--json"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Wait (bounded) until the holder has stopped the backup and is waiting for archiving.
    let t = Instant::now();
    loop {
        let s = status(r.path(), "kw");
        if s["state"] == "complete" {
            assert_eq!(s["result"]["archive"]["complete"], false, "{s}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "never stopped: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    kill9(&mut waiting);
    let limit = Duration::from_secs(60);
    let out = finishes_within(
        with_run_dir(
            r.path(),
            &["stop", "--id", "kw", "--no-wait-archive", "--json"],
        ),
        limit,
        "stop --no-wait-archive after a killed stop",
    );
    let v = json(&ok(out, "stop --no-wait-archive"));
    assert_eq!(v["usable"], true, "{v}");
    let detail = v["result"]["archive"]["detail"].as_str().unwrap();
    assert!(detail.contains("not waited for"), "{detail}");
    let st = finishes_within(
        with_run_dir(r.path(), &["status", "--id", "kw", "--json"]),
        limit,
        "status",
    );
    ok(st, "status");
    let ab = finishes_within(
        with_run_dir(r.path(), &["abort", "--id", "kw"]),
        limit,
        "abort",
    );
    refused(&ab, &["already stopped"]);

    // A stop that gives up after 1s, then --no-wait-archive: answered without a new wait.
    let out = finishes_within(
        with_run_dir(r.path(), &["stop", "--id", "kw", "--archive-timeout", "1s"]),
        limit,
        "stop --archive-timeout 1s",
    );
    refused(&out, &["NOT usable", "not archived after 1s"]);
    let out = finishes_within(
        with_run_dir(
            r.path(),
            &[
                "stop",
                "--id",
                "kw",
                "--no-wait-archive",
                "--archive-timeout",
                "20m",
            ],
        ),
        limit,
        "stop --no-wait-archive after a timed-out stop",
    );
    ok(out, "stop --no-wait-archive after a timeout");
    // The holder still re-checks for a stop that asks to wait.
    let out = finishes_within(
        with_run_dir(r.path(), &["stop", "--id", "kw", "--archive-timeout", "1s"]),
        limit,
        "stop re-check",
    );
    refused(&out, &["not archived after 1s"]);
    // The server goes away: the holder, with nothing left to re-check with, records that and
    // exits instead of lingering for the retention hour.
    drop(c);
    let t = Instant::now();
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder), None).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the holder {holder} outlived its server"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = status(r.path(), "kw");
    assert!(
        v["result"]["archive"]["detail"]
            .as_str()
            .unwrap()
            .contains("session was then lost"),
        "{v}"
    );
}

#[test]
fn killed_stop_does_not_block_the_holder_pg10() {
    killed_stop_does_not_block_the_holder(10);
}

#[test]
fn killed_stop_does_not_block_the_holder_pg15() {
    killed_stop_does_not_block_the_holder(15);
}

#[test]
fn killed_stop_does_not_block_the_holder_pg18() {
    killed_stop_does_not_block_the_holder(18);
}

// ---------------------------------------------------------------------------------------------
// status checks the session
// ---------------------------------------------------------------------------------------------

/// pg_terminate_backend on the holder's backend: the very next `status` says failed, not
/// "in progress", and a stop says NOT usable.
fn status_sees_a_terminated_backend(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let r = run_dir();
    start_holder(&c, r.path(), "term", &[]);
    let pid: i32 = c.query_one(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgsafe' \
         AND backend_type = 'client backend'",
    );
    let _: bool = c.query_one(&format!("SELECT pg_terminate_backend({pid})"));
    // Wait until the backend is gone (so the check below is not a race with its exit).
    let t = Instant::now();
    while c.query_one::<i64>(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
    )) > 0
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "backend {pid} never exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = status(r.path(), "term");
    assert_eq!(s["state"], "failed", "PostgreSQL {major}: {s}");
    assert!(
        s["failure"]
            .as_str()
            .unwrap()
            .contains("lost the database session"),
        "{s}"
    );
    refused(&run(r.path(), &["stop", "--id", "term"]), &["NOT usable"]);
}

#[test]
fn status_sees_a_terminated_backend_pg10() {
    status_sees_a_terminated_backend(10);
}

#[test]
fn status_sees_a_terminated_backend_pg14() {
    status_sees_a_terminated_backend(14);
}

#[test]
fn status_sees_a_terminated_backend_pg18() {
    status_sees_a_terminated_backend(18);
}

// ---------------------------------------------------------------------------------------------
// --output-dir must not be a live (or another cluster's) data directory
// ---------------------------------------------------------------------------------------------

fn assert_no_label(dir: &Path) {
    assert!(
        !dir.join("backup_label").exists(),
        "a backup_label was written into {}",
        dir.display()
    );
}

/// stop --output-dir: refused (before stopping; the backup stays in progress) for the server's
/// own live PGDATA and another running cluster's PGDATA; a stopped cluster with another system
/// identifier is refused too; a fresh `cp -a` copy of the live directory (carrying its
/// postmaster.pid with a live pid) still works. snapshot --output-dir: the same refusal, before
/// the backup is started.
fn output_dir_is_checked(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let other = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let r = run_dir();
    start_holder(&c, r.path(), "od", &[]);

    let live = c.data_dir().to_str().unwrap().to_owned();
    let out = run(r.path(), &["stop", "--id", "od", "--output-dir", &live]);
    refused(
        &out,
        &["refusing to write backup_label", "still in progress"],
    );
    assert_no_label(c.data_dir());
    assert_eq!(status(r.path(), "od")["state"], "in_progress");

    let out = run(
        r.path(),
        &[
            "stop",
            "--id",
            "od",
            "--output-dir",
            other.data_dir().to_str().unwrap(),
        ],
    );
    refused(&out, &["a running PostgreSQL server"]);
    assert_no_label(other.data_dir());

    let foreign = Cluster::new(&install, ClusterOptions::new().fresh_initdb(true));
    let out = run(
        r.path(),
        &[
            "stop",
            "--id",
            "od",
            "--output-dir",
            foreign.data_dir().to_str().unwrap(),
        ],
    );
    refused(&out, &["another cluster"]);
    assert_no_label(foreign.data_dir());

    let scratch = server_owned_tempdir();
    let copy = scratch.path().join("copy");
    copy_tree(c.data_dir(), &copy, Some(server_user())).unwrap();
    assert!(
        copy.join("postmaster.pid").exists(),
        "the copy carries the live pid file"
    );
    let v = json(&ok(
        run(
            r.path(),
            &[
                "stop",
                "--id",
                "od",
                "--json",
                "--output-dir",
                copy.to_str().unwrap(),
            ],
        ),
        "stop into a copy",
    ));
    assert_eq!(v["usable"], true);
    BackupLabel::parse(&fs::read(copy.join("backup_label")).unwrap()).unwrap();

    let out = run(
        r.path(),
        &[
            "snapshot",
            "-d",
            &c.conninfo(),
            "--exec",
            "true",
            "--output-dir",
            &live,
        ],
    );
    refused(
        &out,
        &[
            "refusing to write backup_label",
            "The backup was not started",
        ],
    );
    assert_no_label(c.data_dir());
    // The server is fine: it can be restarted (no label in its way).
    let mut c = c;
    c.restart();
    assert_eq!(c.query_one::<i32>("SELECT 1"), 1);
}

#[test]
fn output_dir_is_checked_pg10() {
    output_dir_is_checked(10);
}

#[test]
fn output_dir_is_checked_pg14() {
    output_dir_is_checked(14);
}

#[test]
fn output_dir_is_checked_pg18() {
    output_dir_is_checked(18);
}

// ---------------------------------------------------------------------------------------------
// A tablespace path that is not UTF-8
// ---------------------------------------------------------------------------------------------

/// Re-points tablespace ts1 at a directory whose name holds the byte 0xE9 (as a Latin-1 file
/// system name would), while the server runs. Returns the new location.
fn latin1_tablespace(c: &Cluster) -> PathBuf {
    let old = c.tablespace_dir().unwrap().to_owned();
    let mut name = b"ts-caf".to_vec();
    name.push(0xE9);
    let new = old
        .parent()
        .unwrap()
        .join(std::ffi::OsStr::from_bytes(&name));
    fs::rename(&old, &new).unwrap();
    let oid: u32 = c
        .query_one::<i64>("SELECT oid::bigint FROM pg_tablespace WHERE spcname = 'ts1'")
        .try_into()
        .unwrap();
    let link = c.data_dir().join("pg_tblspc").join(oid.to_string());
    fs::remove_file(&link).unwrap();
    symlink(&new, &link).unwrap();
    c.execute("CREATE TABLE caf (x int) TABLESPACE ts1; INSERT INTO caf VALUES (1)");
    new
}

fn expected_map(c: &Cluster, loc: &Path) -> Vec<u8> {
    let oid: i64 = c.query_one("SELECT oid::bigint FROM pg_tablespace WHERE spcname = 'ts1'");
    let mut m = format!("{oid} ").into_bytes();
    m.extend_from_slice(loc.as_os_str().as_bytes());
    m.push(b'\n');
    m
}

/// start/stop and snapshot with such a tablespace: no panic, the tablespace_map written is the
/// server's bytes exactly (and `backup` stores it byte for byte too).
fn non_utf8_tablespace_path(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    let loc = latin1_tablespace(&c);
    let want = expected_map(&c, &loc);
    let r = run_dir();
    start_holder(&c, r.path(), "l1", &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let od = out_dir.path().to_str().unwrap();
    let v = json(&ok(
        run(
            r.path(),
            &["stop", "--id", "l1", "--json", "--output-dir", od],
        ),
        "stop with a non-UTF-8 tablespace path",
    ));
    assert_eq!(v["usable"], true);
    assert_eq!(
        fs::read(out_dir.path().join("tablespace_map")).unwrap(),
        want
    );
    // The record keeps the bytes too (hex, since they are not UTF-8); a repeated stop
    // rewrites the same file.
    assert_eq!(
        hex::decode(v["result"]["tablespace_map"]["hex"].as_str().unwrap()).unwrap(),
        want
    );
    ok(
        run(r.path(), &["stop", "--id", "l1", "--output-dir", od]),
        "repeated stop",
    );

    let snap_dir = tempfile::tempdir().unwrap();
    ok(
        run(
            r.path(),
            &[
                "snapshot",
                "-d",
                &c.conninfo(),
                "--exec",
                "true",
                "--output-dir",
                snap_dir.path().to_str().unwrap(),
            ],
        ),
        "snapshot with a non-UTF-8 tablespace path",
    );
    assert_eq!(
        fs::read(snap_dir.path().join("tablespace_map")).unwrap(),
        want
    );

    let b = tempfile::tempdir().unwrap();
    let target = b.path().join("b");
    ok(
        command(&[
            "backup",
            "-d",
            &c.conninfo(),
            "-D",
            c.data_dir().to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "--progress",
            "none",
        ])
        .output()
        .unwrap(),
        "backup with a non-UTF-8 tablespace path",
    );
    assert_eq!(fs::read(target.join("tablespace_map")).unwrap(), want);
    // Outside oracle: the backup verifies, restores (tablespace remapped by OID) and the
    // restored server starts with the row stored in that tablespace.
    ok(
        command(&["verify", target.to_str().unwrap()])
            .output()
            .unwrap(),
        "verify",
    );
    let scratch = server_owned_tempdir();
    let data = scratch.path().join("data");
    let oid: i64 = c.query_one("SELECT oid::bigint FROM pg_tablespace WHERE spcname = 'ts1'");
    let new_ts = scratch.path().join("ts-restored");
    ok(
        command(&[
            "restore",
            target.to_str().unwrap(),
            "--pgdata",
            data.to_str().unwrap(),
            "--tablespace-map",
            &format!("{oid}={}", new_ts.display()),
        ])
        .output()
        .unwrap(),
        "restore",
    );
    let mut restored = Cluster::adopt(c.install(), &data, ClusterOptions::new().fast_unsafe());
    restored.start();
    restored.wait_recovery_done();
    assert_eq!(restored.query_one::<i64>("SELECT count(*) FROM caf"), 1);
    restored.stop();
}

#[test]
fn non_utf8_tablespace_path_pg10() {
    non_utf8_tablespace_path(10);
}

#[test]
fn non_utf8_tablespace_path_pg14() {
    non_utf8_tablespace_path(14);
}

#[test]
fn non_utf8_tablespace_path_pg18() {
    non_utf8_tablespace_path(18);
}
