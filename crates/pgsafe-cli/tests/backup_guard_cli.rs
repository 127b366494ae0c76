//! `pgsafe backup` from the unlucky DBA's side: a backup folder copied into place and started
//! (as DBAs do with pg_basebackup output), a target inside the data directory or a tablespace,
//! and the backup's session lost while the files are copied.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgsafe::manifest::Manifest;
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, client_bin_dir, copy_tree, server_owned_tempdir,
    server_user,
};
use serde_json::Value;

use common::{backup, command, ok, pgsafe, refused};

/// A pgsafe backup folder copied with `cp -a` into a new data directory and started (so it
/// carries pgsafe.json and backup_manifest; a pgsafe restore marker, a half-written backup's
/// marker and a label renamed by `doctor --fix` are added, as a restored and repaired cluster
/// has them). A backup of that server lists each file once and none of pgsafe's old files,
/// passes `pgsafe verify` and pg_verifybackup (≤ 16: the installed client reads v1 manifests),
/// and restores with every row.
fn backup_folder_copied_into_place(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    ok(backup(&c, &first, &[]), "first backup");
    let m = format!("PostgreSQL {major}");

    let scratch = server_owned_tempdir();
    let data = scratch.path().join("data");
    copy_tree(&first, &data, Some(server_user())).unwrap();
    for (name, body) in [
        ("pgsafe_restore.json", &b"{\"format\": 1}"[..]),
        ("pgsafe.incomplete", b"not a backup"),
        ("backup_label.pgsafe-removed", b"START WAL LOCATION: 0/0"),
    ] {
        fs::write(data.join(name), body).unwrap();
    }
    let old_json = fs::read(data.join("pgsafe.json")).unwrap();
    let old_manifest = fs::read(data.join("backup_manifest")).unwrap();
    let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new());
    copy.start();
    copy.wait_recovery_done();
    assert_eq!(copy.query_one::<i64>("SELECT count(*) FROM t"), 1000, "{m}");

    let second = dir.path().join("second");
    let out = ok(backup(&copy, &second, &[]), "backup of the started copy");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = Manifest::parse(&fs::read(second.join("backup_manifest")).unwrap())
        .unwrap_or_else(|e| panic!("{m}: the new backup's manifest: {e}"));
    let paths: Vec<String> = manifest
        .files
        .iter()
        .map(|f| f.path_lossy().into_owned())
        .collect();
    let unique: BTreeSet<&String> = paths.iter().collect();
    assert_eq!(unique.len(), paths.len(), "{m}: a path listed twice");
    for gone in [
        "pgsafe_restore.json",
        "pgsafe.incomplete",
        "backup_label.pgsafe-removed",
    ] {
        assert!(!second.join(gone).exists(), "{m}: {gone} copied");
        assert!(!paths.iter().any(|p| p == gone), "{m}: {gone} listed");
    }
    // The top-level files are the new backup's own, not the copied ones.
    assert_ne!(fs::read(second.join("pgsafe.json")).unwrap(), old_json);
    assert_ne!(
        fs::read(second.join("backup_manifest")).unwrap(),
        old_manifest
    );
    assert_ne!(info["start_lsn"], serde_json::json!(null));
    ok(
        pgsafe(&["verify", "--progress", "none", second.to_str().unwrap()]),
        "pgsafe verify of the new backup",
    );
    if major <= 16 {
        let out = Command::new(client_bin_dir().join("pg_verifybackup"))
            .arg("--no-parse-wal")
            .arg(&second)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{m}: pg_verifybackup: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let restored = scratch.path().join("restored");
    ok(
        pgsafe(&[
            "restore",
            second.to_str().unwrap(),
            "--pgdata",
            restored.to_str().unwrap(),
            "--progress",
            "none",
        ]),
        "restore of the new backup",
    );
    copy.stop();
    let mut r = Cluster::adopt(&install, &restored, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert_eq!(r.query_one::<i64>("SELECT count(*) FROM t"), 1000, "{m}");
    r.stop();
}

#[test]
fn backup_folder_copied_into_place_pg10() {
    backup_folder_copied_into_place(10);
}

#[test]
fn backup_folder_copied_into_place_pg12() {
    backup_folder_copied_into_place(12);
}

#[test]
fn backup_folder_copied_into_place_pg16() {
    backup_folder_copied_into_place(16);
}

#[test]
fn backup_folder_copied_into_place_pg18() {
    backup_folder_copied_into_place(18);
}

/// Every entry of `dir`, recursively (to see that nothing was written).
fn listing(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            out.insert(e.path().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A target inside PGDATA or a tablespace is refused before anything is written, however it
/// is spelled: directly, relative with `..`, through a symbolic link into PGDATA, PGDATA itself,
/// inside the tablespace location.
#[test]
fn target_inside_the_data_directory_or_a_tablespace_is_refused() {
    let c = Cluster::started(
        &PgInstall::major(15),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    let data = c.data_dir().to_path_buf();
    let ts = c.tablespace_dir().unwrap().to_path_buf();
    let outside = tempfile::tempdir().unwrap();
    symlink(&data, outside.path().join("link")).unwrap();
    let parent = data.parent().unwrap();
    let data_name = data.file_name().unwrap().to_str().unwrap();
    let rel = format!("sub/../{data_name}/base/../bk");
    fs::create_dir(parent.join("sub")).unwrap_or(());
    let cases: Vec<(String, &str)> = vec![
        (data.join("bk").display().to_string(), "the data directory"),
        (data.display().to_string(), "the data directory"),
        (
            data.join("pg_wal/new/bk").display().to_string(),
            "the data directory",
        ),
        (rel, "the data directory"),
        (
            outside.path().join("link/bk").display().to_string(),
            "the data directory",
        ),
        (ts.join("bk").display().to_string(), "tablespace"),
    ];
    let (before_data, before_ts) = (listing(&data), listing(&ts));
    let conn = c.conninfo();
    for (target, what) in &cases {
        let out = command(&[
            "backup",
            "-d",
            &conn,
            "-D",
            data.to_str().unwrap(),
            "--target",
            target,
            "--progress",
            "none",
        ])
        .current_dir(parent)
        .output()
        .unwrap();
        refused(&out, &["is inside", what]);
    }
    // Nothing written into PGDATA or the tablespace (the server may have rotated pg_stat files:
    // compare without pg_stat_tmp and pg_wal, which the server itself writes).
    let keep = |s: &BTreeSet<String>| -> BTreeSet<String> {
        s.iter()
            .filter(|p| {
                !p.contains("/pg_stat") && !p.contains("/pg_wal/") && !p.contains("/pg_logical/")
            })
            .cloned()
            .collect()
    };
    assert_eq!(keep(&listing(&data)), keep(&before_data));
    assert_eq!(listing(&ts), before_ts);
    assert!(!outside.path().join("link/bk").exists());
    // Beside PGDATA, not inside it: accepted.
    let beside = parent.join(format!("{data_name}-backup"));
    ok(backup(&c, &beside, &[]), "backup beside PGDATA");
    fs::remove_dir_all(&beside).unwrap();
}

/// How the session is lost during the copy.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// `pg_terminate_backend` on the backup's backend.
    Terminated,
    /// The server crashes (immediate shutdown) and comes back.
    ServerRestart,
}

/// The backup's session is lost while a throttled backup copies: the backup fails in the copy
/// phase (it never reaches "stop") with a message saying the session ended, having copied only
/// part of the data; the folder keeps pgsafe.incomplete and has no pgsafe.json.
fn lost_session_stops_the_copy(major: u32, loss: Loss) {
    let mut c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    c.execute("CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g");
    c.execute("CHECKPOINT");
    let m = format!("PostgreSQL {major}, {loss:?}");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let mut child = command(&[
        "backup",
        "-d",
        &c.conninfo(),
        "-D",
        c.data_dir().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--max-rate",
        "2M",
        "--progress",
        "json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let t = Instant::now();
    while !target.join("base").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{m}: the copy never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    match loss {
        Loss::Terminated => {
            let n: i64 = c.query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'pgsafe'",
            );
            assert_eq!(n, 1, "{m}: the backup's backend");
        }
        Loss::ServerRestart => {
            c.immediate_stop();
            c.start();
        }
    }
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let lines: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let log = lines.join("\n");
    assert_eq!(status.code(), Some(2), "{m}: {log}");
    assert!(
        log.contains("the backup's database session ended while the files were being copied"),
        "{m}: {log}"
    );
    let events: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !events.iter().any(|e| e["phase"] == "stop"),
        "{m}: the stop phase was reached: {log}"
    );
    let last = events
        .iter()
        .rev()
        .find(|e| e["event"] == "progress")
        .unwrap_or_else(|| panic!("{m}: no progress event: {log}"));
    assert!(
        last["bytes"].as_u64().unwrap() < last["total_bytes"].as_u64().unwrap(),
        "{m}: copied everything first: {last}"
    );
    assert!(target.join("pgsafe.incomplete").is_file(), "{m}");
    assert!(!target.join("pgsafe.json").exists(), "{m}");
    // The server is fine and has no backup running.
    assert_eq!(
        c.query_one::<i64>("SELECT count(*) FROM big"),
        300000,
        "{m}"
    );
}

fn lost_session_terminated(major: u32) {
    lost_session_stops_the_copy(major, Loss::Terminated);
}

#[test]
fn lost_session_terminated_pg10() {
    lost_session_terminated(10);
}

#[test]
fn lost_session_terminated_pg18() {
    lost_session_terminated(18);
}

#[test]
fn lost_session_server_restart_pg14() {
    lost_session_stops_the_copy(14, Loss::ServerRestart);
}

/// A server setting that is not UTF-8 (`stats_temp_directory`, ≤ 14, set from a SQL_ASCII
/// database to a directory inside PGDATA whose name has a 0xFF byte) is read as bytes: the backup
/// does not panic, and that directory is kept empty like pg_stat_tmp.
#[test]
fn non_utf8_stats_temp_directory_pg14() {
    use std::os::unix::ffi::OsStrExt;
    let mut c = Cluster::started(&PgInstall::major(14), ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE DATABASE ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let name = std::ffi::OsStr::from_bytes(b"stats\xffdir");
    let stats = c.data_dir().join(name);
    fs::create_dir(&stats).unwrap();
    fs::write(stats.join("leftover.stat"), b"x").unwrap();
    server_user().chown(&stats);
    server_user().chown(&stats.join("leftover.stat"));
    let out = Command::new(client_bin_dir().join("psql"))
        .arg(format!("{} dbname=ascii", c.conninfo()))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("ALTER SYSTEM SET stats_temp_directory = E'stats\\377dir'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.restart();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let out = backup(&c, &target, &[]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(out, "backup with a non-UTF-8 stats_temp_directory");
    assert!(target.join(name).is_dir(), "the directory is kept");
    assert!(
        !target.join(name).join("leftover.stat").exists(),
        "its contents are not"
    );
}
