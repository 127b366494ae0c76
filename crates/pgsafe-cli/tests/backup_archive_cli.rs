//! Backups whose WAL is in the repository's own archive, against real servers through the real
//! binary: a server whose `archive_command` runs `pgsafe archive-push` into the repository's
//! cluster gets backups that wait for their WAL there instead of copying it (recorded as
//! `archive`, with the reason); a stalled archiver makes the backup time out with the label
//! kept and the backup incomplete; a server archiving elsewhere (or into another cluster) gets
//! its WAL included as before, and `--wal include` still forces a self-contained backup.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, per_major, server_owned_tempdir, server_user,
};
use serde_json::Value;

use common::{bin, command, json, ok, repo_init as init, text};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A started cluster with `archive_mode = on` (its `archive_command` set later with
/// [`set_archive_command`], which a command-line setting would hide) and a repository in which
/// it is registered as `main`, writable by the server's user (archive-push runs as the server).
fn archiving_cluster(major: u32) -> (Cluster, tempfile::TempDir, PathBuf) {
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on"),
    );
    c.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5000) g");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(init(&c, &repo, "main"), "init");
    let user = server_user();
    if !user.is_current {
        let st = Command::new("chown")
            .args(["-R", &format!("{}:", user.name), s(&repo)])
            .status()
            .unwrap();
        assert!(st.success());
    }
    (c, scratch, repo)
}

/// `archive_command` as `pgsafe archive-push` of the binary under test, with `prefix` before it
/// and `cluster` as its cluster.
fn push_command(prefix: &str, repo: &Path, cluster: &str) -> String {
    format!(
        "{prefix}{} archive-push --repo {} --cluster {cluster} %p",
        s(&bin()),
        s(repo)
    )
}

/// Sets `archive_command` with ALTER SYSTEM and waits until new sessions see it.
fn set_archive_command(c: &Cluster, cmd: &str) {
    c.execute(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        cmd.replace('\'', "''")
    ));
    c.execute("SELECT pg_reload_conf()");
    let t = Instant::now();
    while c.show("archive_command") != cmd {
        assert!(t.elapsed() < Duration::from_secs(30), "reload not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn backup_repo(c: &Cluster, repo: &Path, extra: &[&str]) -> Output {
    let conn = c.conninfo();
    let mut cmd = command(&[
        "backup",
        "--repo",
        s(repo),
        "--cluster",
        "main",
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--json",
        "--progress",
        "none",
    ]);
    cmd.args(extra);
    cmd.output().unwrap()
}

fn backup_folder(repo: &Path, id: &str) -> PathBuf {
    repo.join("main").join("backups").join(id)
}

/// WAL segments (24 hex digits) stored in the backup's pg_wal/.
fn stored_segments(folder: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(folder.join("pg_wal"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The only backup folder of `main` (a failed backup prints no ID).
fn only_backup(repo: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(repo.join("main").join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn wal_of(v: &Value) -> &Value {
    &v["wal"]
}

/// A stalled archiver (the command fails before it reaches pgsafe): the backup waits for its
/// WAL in the repository, times out with a message naming the missing file and the archiver's
/// failure, and leaves a folder that keeps its backup_label and stays incomplete. `--wal
/// include` against the same server still makes a self-contained backup without waiting.
fn stalled_archiving_times_out_and_keeps_the_label(major: u32) {
    let m = format!("PostgreSQL {major}");
    let (c, _scratch, repo) = archiving_cluster(major);
    set_archive_command(&c, &push_command("false && ", &repo, "main"));

    let out = backup_repo(&c, &repo, &["--archive-timeout", "3s"]);
    assert_eq!(out.status.code(), Some(2), "{m}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "is not in the repository's WAL archive of cluster main after 3s",
        "archiver last failed on",
        "keeps its backup_label and stays incomplete",
    ] {
        assert!(err.contains(needle), "{m}: {needle:?} not in {err}");
    }
    let folder = only_backup(&repo);
    let label = fs::read_to_string(folder.join("backup_label")).unwrap();
    assert!(label.starts_with("START WAL LOCATION"), "{m}: {label}");
    assert!(folder.join("pgsafe.incomplete").exists(), "{m}");
    assert!(!folder.join("pgsafe.json").exists(), "{m}");
    assert!(stored_segments(&folder).is_empty(), "{m}: WAL was copied");
    let listed = json(&ok(
        command(&["info", "--repo", s(&repo), "--cluster", "main", "--json"])
            .output()
            .unwrap(),
        "info",
    ));
    assert!(
        listed.to_string().contains("\"incomplete\""),
        "{m}: {listed}"
    );

    // --wal include: no waiting, WAL in the backup.
    let v = json(&ok(
        backup_repo(&c, &repo, &["--wal", "include", "--archive-timeout", "3s"]),
        "backup --wal include",
    ));
    assert_eq!(wal_of(&v)["mode"], "include", "{m}: {v}");
    assert_eq!(wal_of(&v)["reason"], "included (asked for)", "{m}: {v}");
    let folder = backup_folder(&repo, v["backup_id"].as_str().unwrap());
    assert!(!stored_segments(&folder).is_empty(), "{m}");
}

per_major!(stalled_archiving_times_out_and_keeps_the_label: 10, 17);

/// A server archiving elsewhere (cp into its own folder), then into another cluster of the
/// repository: the WAL is included as before, and the reason says why.
fn archiving_elsewhere_includes_the_wal(major: u32) {
    let m = format!("PostgreSQL {major}");
    let (c, scratch, repo) = archiving_cluster(major);
    let elsewhere = scratch.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    server_user().chown(&elsewhere);
    let cases = [
        (
            format!("cp %p {}/%f", s(&elsewhere)),
            "does not run pgsafe archive-push",
        ),
        (
            push_command("", &repo, "other"),
            "pushes into cluster other, not main",
        ),
    ];
    for (cmd, why) in cases {
        set_archive_command(&c, &cmd);
        let v = json(&ok(backup_repo(&c, &repo, &[]), "backup --repo"));
        let wal = wal_of(&v);
        assert_eq!(wal["mode"], "include", "{m}: {v}");
        let reason = wal["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{m}: {reason}");
        assert!(wal.get("repository").is_none(), "{m}: {v}");
        let folder = backup_folder(&repo, v["backup_id"].as_str().unwrap());
        assert_eq!(
            stored_segments(&folder).len(),
            wal["segments"].as_array().unwrap().len(),
            "{m}"
        );
    }
}

per_major!(archiving_elsewhere_includes_the_wal: 14);
