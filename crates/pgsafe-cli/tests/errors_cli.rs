//! The one CLI contract for failures: every command given `--json` prints one JSON object on
//! stdout when it fails — `{"error": {"kind", "message", "exit_code"}}` with a kind from the
//! fixed set — and exits with the exit-code table's code; the message never shows Rust Debug
//! formatting. Inputs: bad paths, bad flag values, an unreachable server (a socket folder no
//! server listens in, and a real server that was stopped), and refusals of a real server.

mod common;

use std::fs;
use std::process::Output;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

use common::{pgsafe, run_dir};

const KINDS: [&str; 10] = [
    "usage",
    "not_found",
    "refused",
    "io",
    "connection",
    "server",
    "corrupt",
    "conflict",
    "cancelled",
    "internal",
];

/// Asserts that `out` is a failure of `kind` with exit code `code`, shown as the error object on
/// stdout and as a message on stderr; returns the message.
fn failed(out: &Output, kind: &str, code: i32, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("{what}: stdout is not one JSON document ({e}): {stdout:?} {stderr}")
    });
    let obj = v.as_object().unwrap();
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["error", "schema_version"],
        "{what}: {v:#}"
    );
    assert_eq!(v["schema_version"], 1, "{what}");
    let e = &v["error"];
    let k = e["kind"].as_str().unwrap_or_default();
    assert!(
        KINDS.contains(&k),
        "{what}: kind {k:?} not in the set: {v:#}"
    );
    assert_eq!(k, kind, "{what}: {v:#}");
    assert_eq!(e["exit_code"], code, "{what}: {v:#}");
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    let message = e["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.trim().is_empty(), "{what}: {v:#}");
    // Debug formatting: `Name("value")`, `Name { field: … }`, `Some(…)`, escaped quotes.
    for debug in ["(\"", "\\\"", " { ", "Some("] {
        assert!(
            !message.contains(debug),
            "{what}: Debug formatting in {message:?}"
        );
    }
    assert!(stderr.contains("error"), "{what}: stderr {stderr}");
    message
}

/// Without a server: bad paths and bad flag values for every command that takes `--json`, and
/// a server that is not there.
#[test]
fn every_json_command_fails_with_an_error_object() {
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name).to_str().unwrap().to_owned();
    let (missing, empty, file, target) = (p("missing"), p("empty"), p("file"), p("target"));
    fs::create_dir(&empty).unwrap();
    fs::write(&file, "not a folder").unwrap();
    // A socket folder with no server in it: libpq's "No such file" for the socket.
    let nosrv = p("nosrv");
    fs::create_dir(&nosrv).unwrap();
    let run = run_dir();
    let run_s = run.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["inspect", "--json", &missing], "not_found"),
        (vec!["inspect", "--json", &empty], "usage"),
        (vec!["doctor", "--json", &missing], "not_found"),
        (vec!["doctor", "--json", &file], "usage"),
        (
            vec![
                "doctor",
                "--json",
                "--connect",
                "host='unterminated",
                &empty,
            ],
            "usage",
        ),
        (vec!["verify", "--json", &missing], "not_found"),
        (vec!["verify", "--json", &file], "usage"),
        (vec!["verify", "--json", "--jobs", "many", &empty], "usage"),
        (
            vec!["restore", "--json", "--pgdata", &target, &missing],
            "not_found",
        ),
        (
            vec![
                "backup", "--json", "-D", &empty, "--target", &target, "-h", &nosrv,
            ],
            "connection",
        ),
        (
            vec![
                "backup", "--json", "--force", "-D", &empty, "--target", &target,
            ],
            "usage",
        ),
        (vec!["start", "--json", "--max-hold", "forever"], "usage"),
        // The holder process reports the kind of its error to `start`.
        (
            vec!["start", "--json", "-h", &nosrv, "--run-dir", run_s],
            "connection",
        ),
        (
            vec![
                "snapshot",
                "--json",
                "--exec",
                "true",
                "-h",
                &nosrv,
                "--run-dir",
                run_s,
            ],
            "connection",
        ),
        (
            vec!["stop", "--json", "--id", "x", "--run-dir", &missing],
            "not_found",
        ),
        (
            vec!["status", "--json", "--id", "x", "--run-dir", run_s],
            "not_found",
        ),
        (
            vec!["abort", "--json", "--id", "x", "--run-dir", run_s],
            "not_found",
        ),
        (vec!["abort", "--json", "--id", "no spaces"], "usage"),
        (vec!["snapshot", "--json", "--run-dir", run_s], "usage"),
    ];
    for (args, kind) in &cases {
        let out = pgsafe(args);
        failed(&out, kind, 2, &format!("{args:?}"));
    }
    // Nothing was written for any of them (a failed start leaves no record, socket or lock
    // file of a backup).
    assert!(!d.path().join("target").exists());
    let left: Vec<_> = fs::read_dir(run.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") || n.ends_with(".sock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The same failures without --json print nothing on stdout.
    let out = pgsafe(&["verify", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A real server: a backup refused (target not empty, wrong PGDATA), a second holder for a held
/// ID (conflict), and the same server stopped (unreachable).
#[test]
fn json_failures_against_a_real_server() {
    let mut c = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    let conn = c.conninfo();
    let pgdata = c.data_dir().to_str().unwrap().to_owned();
    let d = tempfile::tempdir().unwrap();
    let full = d.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), "x").unwrap();
    let full_s = full.to_str().unwrap();
    let out = pgsafe(&[
        "backup", "--json", "-d", &conn, "-D", &pgdata, "--target", full_s,
    ]);
    let m = failed(&out, "refused", 2, "backup into a non-empty target");
    assert!(m.contains("not empty"), "{m}");
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);

    // Another cluster's data directory with this server's connection.
    let other = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    let target = d.path().join("b");
    let out = pgsafe(&[
        "backup",
        "--json",
        "-d",
        &conn,
        "-D",
        other.data_dir().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    failed(
        &out,
        "refused",
        2,
        "backup of another directory than the server's",
    );
    assert!(!target.exists() || fs::read_dir(&target).unwrap().count() == 0);

    let run = run_dir();
    let run_s = run.path().to_str().unwrap();
    let start = |json: bool| {
        let mut a = vec!["start", "-d", &conn, "--run-dir", run_s, "--id", "held"];
        if json {
            a.push("--json");
        }
        pgsafe(&a)
    };
    let first = start(false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let m = failed(&start(true), "conflict", 2, "a second start of a held ID");
    assert!(m.contains("already in progress"), "{m}");
    let out = pgsafe(&["abort", "--id", "held", "--run-dir", run_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    c.stop();
    let out = pgsafe(&[
        "backup",
        "--json",
        "-d",
        &conn,
        "-D",
        &pgdata,
        "--target",
        target.to_str().unwrap(),
    ]);
    failed(&out, "connection", 2, "backup of a stopped server");
}
