//! One backup, one file count: backup, verify and restore of the same backup report the same
//! `files` in their JSON summaries (the data directory's files, pg_control included; WAL and
//! pgsafe's own files apart), the count matches what is stored in the folder, and no progress
//! event of the three shows more done than planned.

mod common;

use std::path::Path;

use common::{ok, pgsafe};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, per_major, server_user};
use serde_json::Value;

/// Runs `args` with `--progress json --json`: the summary and the progress events.
fn run_json(args: &[&str], what: &str) -> (Value, Vec<Value>) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--progress", "json", "--json"]);
    let out = ok(pgsafe(&all), what);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not NDJSON {l:?}: {e}"))
        })
        .collect();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: summary is not JSON: {e}"));
    (summary, events)
}

/// Every progress event is within its phase's planned totals.
fn within_totals(what: &str, events: &[Value]) {
    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "{what}: no progress events");
    for e in progress {
        assert!(
            e["files"].as_u64() <= e["total_files"].as_u64(),
            "{what}: {e}"
        );
        assert!(
            e["bytes"].as_u64() <= e["total_bytes"].as_u64(),
            "{what}: {e}"
        );
    }
    let end = events.last().unwrap();
    assert_eq!(end["event"], "end", "{what}");
    for p in end["phases"].as_array().unwrap() {
        if !p["total_files"].is_null() {
            assert!(
                p["files"].as_u64() <= p["total_files"].as_u64(),
                "{what}: {p}"
            );
            assert!(
                p["bytes"].as_u64() <= p["total_bytes"].as_u64(),
                "{what}: {p}"
            );
        }
    }
}

/// Regular files stored in the backup folder that are the data directory's: not under
/// `pg_wal/`, not written by pgsafe itself.
fn stored_data_files(dir: &Path) -> u64 {
    let own = [
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "pgsafe.json",
    ];
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                if rel != Path::new("pg_wal") {
                    stack.push(e.path());
                }
            } else if t.is_file() && !own.iter().any(|o| rel == Path::new(o)) {
                n += 1;
            }
        }
    }
    n
}

fn one_count(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    c.execute(
        "CREATE TABLE t AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("b");
    let conn = c.conninfo();
    let pgdata = c.data_dir().to_str().unwrap().to_owned();
    let b = backup.to_str().unwrap();
    let (bs, be) = run_json(
        &["backup", "-d", &conn, "-D", &pgdata, "--target", b],
        "backup",
    );
    let (vs, ve) = run_json(&["verify", b], "verify");
    let restored = dir.path().join("restored");
    let ts = dir.path().join("ts-restored");
    let tablespace_oid = bs["tablespaces"]
        .as_array()
        .and_then(|t| t.first())
        .map(|t| t["oid"].to_string())
        .expect("the backup has the cluster's tablespace");
    let mapping = format!("{tablespace_oid}={}", ts.display());
    let (rs, re) = run_json(
        &[
            "restore",
            b,
            "--pgdata",
            restored.to_str().unwrap(),
            "--tablespace-map",
            &mapping,
            // The folders are root's (as root, the owner is the operator's to name).
            "--owner",
            &server_user().name,
        ],
        "restore",
    );
    let files = bs["files"].as_u64().expect("backup summary has files");
    let msg = format!("backup {bs}\nverify {vs}\nrestore {rs}");
    assert_eq!(files, stored_data_files(&backup), "{msg}");
    assert_eq!(vs["files"].as_u64(), Some(files), "{msg}");
    assert_eq!(rs["files"].as_u64(), Some(files), "{msg}");
    // verify's files_checked adds pgsafe's own files of the manifest: label, map, pgsafe.json.
    assert_eq!(vs["files_checked"].as_u64(), Some(files + 3), "{msg}");
    // Bytes agree too (uncompressed, pg_control included).
    assert_eq!(rs["bytes"], bs["bytes"], "{msg}");
    within_totals("backup", &be);
    within_totals("verify", &ve);
    within_totals("restore", &re);
}

per_major!(one_count: 12, 17);
