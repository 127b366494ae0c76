//! Red team of the archive's reports (`metrics`, `info`): what they say when the WAL archive
//! holds something archive-get refuses to read. No server needed: the repository's documents
//! are written as `pgsafe init` writes them, and the archive's objects only need their names
//! and sizes for the reports.

mod common;

use std::fs;
use std::path::Path;

use serde_json::Value;

use common::{command, mkfifo};

const CLUSTER: &str = "main";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn planted_repo(repo: &Path) {
    fs::create_dir_all(repo.join(CLUSTER).join("wal/00000001/00000000")).unwrap();
    fs::write(
        repo.join("pgsafe-repo.json"),
        r#"{"format":1,"created_at":"2026-12-03T22:00:00.000000Z","pgsafe_version":"0.1.0"}"#,
    )
    .unwrap();
    fs::write(
        repo.join(CLUSTER).join("cluster.json"),
        format!(
            r#"{{"format":1,"cluster":"{CLUSTER}","system_identifier":"7000000000000000001","server_version":"17.2","wal_segment_size":16777216,"pgdata":"/x","registered_at":"2026-12-03T22:00:00.000000Z","pgsafe_version":"0.1.0"}}"#
        ),
    )
    .unwrap();
    for i in 1..=3 {
        fs::write(
            repo.join(CLUSTER).join(format!(
                "wal/00000001/00000000/00000001000000000000000{i}.zst"
            )),
            b"compressed segment",
        )
        .unwrap();
    }
}

fn metrics(repo: &Path) -> Value {
    let out = command(&["metrics", "--repo", s(repo), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn problems(v: &Value) -> u64 {
    let c = &v["clusters"][0];
    c["repository_problems"].as_u64().unwrap_or(0) + c["archive"]["problems"].as_u64().unwrap_or(0)
}

/// A FIFO planted as the next segment's object, and a symbolic link planted as a log folder
/// of a timeline (to a folder that holds the segments): archive-get refuses both (exit 200,
/// recovery stops; archive_red_cli planted_links_in_the_archive_stop_recovery), so the reports
/// must count a problem. They counted none (the listing skips what is not an object: the FIFO
/// was not mentioned, and with the linked folder the archive read as "not set up", 0 segments,
/// 0 problems, although every segment is there behind the link); now each is a problem.
#[test]
fn links_and_special_files_in_the_archive_are_reported() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    planted_repo(&repo);
    assert_eq!(
        problems(&metrics(&repo)),
        0,
        "the clean archive has problems"
    );

    let log = repo.join(CLUSTER).join("wal/00000001/00000000");
    mkfifo(&log.join("000000010000000000000004.zst"));
    let v = metrics(&repo);
    assert!(
        problems(&v) >= 1,
        "a FIFO in the archive is not reported: {v:#}"
    );
    fs::remove_file(log.join("000000010000000000000004.zst")).unwrap();

    let elsewhere = scratch.path().join("elsewhere");
    fs::rename(&log, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &log).unwrap();
    let v = metrics(&repo);
    assert!(
        problems(&v) >= 1,
        "a linked folder in the archive is not reported: {v:#}"
    );
}
