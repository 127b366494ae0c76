//! Bad input gets a clear error (exit 2) and changes nothing: snapshot-mode preflight failures,
//! unreachable servers, unknown IDs, and `inspect` on something that is not a data directory.
//! Also `inspect` on real data directories of every major.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, per_major};
use serde_json::Value;

use common::{pgsafe, run_dir};

/// Exit 2, the message contains every `needles`, and the run directory holds no backup.
fn refused(out: &Output, run: &Path, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    let leftovers: Vec<_> = fs::read_dir(run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") || n.ends_with(".sock"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

fn start_args<'a>(conn: &'a str, run: &'a Path) -> Vec<&'a str> {
    vec!["start", "-d", conn, "--run-dir", run.to_str().unwrap()]
}

#[test]
fn wal_level_minimal_is_refused() {
    for major in [10, 18] {
        let c = Cluster::started(
            &PgInstall::major(major),
            ClusterOptions::new()
                .fast_unsafe()
                .conf("wal_level = minimal")
                .conf("max_wal_senders = 0")
                .conf("archive_mode = off"),
        );
        let run = run_dir();
        let conn = c.conninfo();
        let out = pgsafe(&start_args(&conn, run.path()));
        refused(&out, run.path(), &["wal_level", "replica"]);
    }
}

#[test]
fn missing_privilege_names_the_grant() {
    for major in [10, 14, 15, 18] {
        let c = Cluster::started(
            &PgInstall::major(major),
            ClusterOptions::new().fast_unsafe(),
        );
        c.execute("CREATE ROLE nopriv LOGIN");
        let run = run_dir();
        let conn = format!("{} user=nopriv", c.conninfo());
        let out = pgsafe(&start_args(&conn, run.path()));
        let func = if major >= 15 {
            "pg_backup_start"
        } else {
            "pg_start_backup"
        };
        refused(
            &out,
            run.path(),
            &["GRANT EXECUTE ON FUNCTION", func, "nopriv"],
        );
        // With the grants the message names, the same user can run a backup.
        let (start, stop) = if major >= 15 {
            ("pg_backup_start(text, boolean)", "pg_backup_stop(boolean)")
        } else {
            (
                "pg_start_backup(text, boolean, boolean)",
                "pg_stop_backup(boolean, boolean)",
            )
        };
        c.execute(&format!(
            "GRANT EXECUTE ON FUNCTION {start} TO nopriv; GRANT EXECUTE ON FUNCTION {stop} TO nopriv; \
             GRANT pg_monitor TO nopriv"
        ));
        let out = pgsafe(&start_args(&conn, run.path()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = pgsafe(&["stop", "--run-dir", run.path().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn exclusive_backup_in_progress_is_refused() {
    for major in [10, 14] {
        let c = Cluster::started(
            &PgInstall::major(major),
            ClusterOptions::new().fast_unsafe(),
        );
        c.execute("SELECT pg_start_backup('someone else', true)");
        let run = run_dir();
        let conn = c.conninfo();
        refused(
            &pgsafe(&start_args(&conn, run.path())),
            run.path(),
            &["exclusive backup"],
        );
        c.execute("SELECT pg_stop_backup()");
    }
}

#[test]
fn bad_labels_are_refused_before_connecting() {
    let run = run_dir();
    let long = "x".repeat(1024);
    for label in ["two\nlines", long.as_str()] {
        let out = pgsafe(&[
            "start",
            "-d",
            "host=/nonexistent port=1",
            "--label",
            label,
            "--run-dir",
            run.path().to_str().unwrap(),
        ]);
        refused(&out, run.path(), &["invalid backup label"]);
    }
}

#[test]
fn unreachable_server_says_where_it_tried() {
    let run = run_dir();
    let out = pgsafe(&start_args(
        "host=/nonexistent-socket-dir port=5999",
        run.path(),
    ));
    refused(&out, run.path(), &["/nonexistent-socket-dir/.s.PGSQL.5999"]);
    let out = pgsafe(&start_args("not a conninfo", run.path()));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_id_is_an_error() {
    let run = run_dir();
    let out = pgsafe(&[
        "stop",
        "--id",
        "nope",
        "--run-dir",
        run.path().to_str().unwrap(),
    ]);
    refused(&out, run.path(), &["no backup with ID nope"]);
    let out = pgsafe(&[
        "stop",
        "--id",
        "../x",
        "--run-dir",
        run.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "invalid IDs are refused by argument parsing"
    );
}

#[test]
fn inspect_refuses_what_is_not_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = pgsafe(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a PostgreSQL data directory"));
    fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
    fs::create_dir(dir.path().join("global")).unwrap();
    fs::write(dir.path().join("global/pg_control"), vec![0u8; 100]).unwrap();
    let out = pgsafe(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_control"), "{err}");
    assert!(out.stdout.is_empty(), "no partial report on stdout");
}

/// `inspect` on a running server's directory and after a clean stop, human and JSON.
fn inspect_real(major: u32) {
    let mut c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let sysid: String = c.query_one("SELECT system_identifier::text FROM pg_control_system()");
    let dir = c.data_dir().to_str().unwrap().to_owned();
    let out = pgsafe(&["inspect", &dir]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&sysid), "{text}");
    assert!(text.contains("in production"), "{text}");
    assert!(
        text.contains("a process with this pid is running"),
        "{text}"
    );
    c.stop();
    let out = pgsafe(&["inspect", "--json", &dir]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["control"]["system_identifier"], sysid.as_str());
    assert_eq!(v["control"]["state"], "shut down");
    assert_eq!(v["pg_major"], major.to_string());
    assert!(v["postmaster_pid"].is_null());
}

per_major!(inspect_real);
