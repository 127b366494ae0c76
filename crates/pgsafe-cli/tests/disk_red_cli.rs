//! Red team: a full disk under every path pgsafe writes (the unlucky DBA's case). A local
//! repository on a small tmpfs receives a backup and WAL pushes; a restore target runs out of
//! inodes part-way. Whatever fails must fail visibly: no backup counted complete, no WAL file
//! acknowledged that is not stored, no restored copy that PostgreSQL could start.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};

use common::archive::{finish_segment, get_cmd, push_cmd, seg_object};
use common::{json, ok, path_str as s, pgsafe, repo_init, text};

/// A tmpfs mounted on a fresh folder (`options`: `size=…`, `nr_inodes=…`); unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(options: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("pgsafe-full-")
            .tempdir_in("/tmp")
            .unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "pgsafe-full"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs (needs root)");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A cluster holding about 60 MB of rows.
fn big_cluster(major: u32) -> Cluster {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    c.execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 800000) g",
    );
    c.execute("CHECKPOINT");
    c
}

fn repo_backup(c: &Cluster, repo: &Path, extra: &[&str]) -> std::process::Output {
    let conn = c.conninfo();
    let mut args = vec![
        "backup",
        "--repo",
        s(repo),
        "--cluster",
        "main",
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--progress",
        "none",
        "--json",
    ];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

fn repo_restore(repo: &Path, target: &Path) -> std::process::Output {
    pgsafe(&[
        "restore",
        "--repo",
        s(repo),
        "--cluster",
        "main",
        "--pgdata",
        s(target),
        "--progress",
        "none",
    ])
}

/// A backup into a repository whose file system fills up part-way (the free-space check
/// skipped, as the DBA may): it fails, names the cause, is not counted complete by info, and
/// restore of `latest` finds no backup. With space made, the next backup works and restores.
#[test]
fn a_backup_into_a_full_repository_is_visibly_incomplete() {
    let c = big_cluster(16);
    let fs_ = Tmpfs::new("size=24m");
    let repo = fs_.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    let out = repo_backup(&c, &repo, &["--skip-space-check"]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out).to_lowercase();
    assert!(
        t.contains("space") || t.contains("full"),
        "the cause is not named: {t}"
    );
    let info = json(&ok(
        pgsafe(&["info", "--repo", s(&repo), "--cluster", "main", "--json"]),
        "info",
    ));
    let backups = info["clusters"][0]["backups"].as_array().unwrap();
    assert!(
        backups.iter().all(|b| b["state"] != "complete"),
        "info counts a backup complete after the disk filled: {info:#}"
    );
    let scratch = server_owned_tempdir();
    let target = scratch.path().join("restored");
    let out = repo_restore(&repo, &target);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!target.join("global/pg_control").exists());

    fs_.remount("size=400m");
    let v = json(&ok(repo_backup(&c, &repo, &[]), "backup with space"));
    assert!(v["backup_id"].is_string());
    let _ = fs::remove_dir_all(&target);
    ok(repo_restore(&repo, &target), "restore of the second backup");
    let mut r = Cluster::adopt(&PgInstall::major(16), &target, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    let n: i64 = r.query_one("SELECT count(*) FROM t");
    assert_eq!(n, 800_000);
    r.stop();
}

/// archive-push into a repository with too little space left: it fails, stores nothing under
/// the segment's name (archive-get says "not there"), and with space made the same push
/// stores the segment whole.
#[test]
fn archive_push_into_a_full_repository_acknowledges_nothing() {
    let c = Cluster::started(&PgInstall::major(14), ClusterOptions::new().fast_unsafe());
    let fs_ = Tmpfs::new("size=40m");
    let repo = fs_.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    let (seg, bytes) = finish_segment(&c);
    let kept = tempfile::tempdir().unwrap();
    let file = kept.path().join(&seg);
    fs::write(&file, &bytes).unwrap();
    // Leave about 6 MB: less than a segment stored uncompressed.
    let filler = fs_.path().join("filler");
    fs::write(&filler, vec![1u8; 34 << 20]).unwrap();

    let out = push_cmd(&repo, "main", &file, &["--compress", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !seg_object(&repo, "main", &seg, "").exists(),
        "a segment that did not fit is stored under its name"
    );
    let dest = kept.path().join("got");
    let out = get_cmd(&repo, "main", &seg, &dest, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!dest.exists());

    fs::remove_file(&filler).unwrap();
    ok(
        push_cmd(&repo, "main", &file, &["--compress", "none"])
            .output()
            .unwrap(),
        "push with space",
    );
    ok(
        get_cmd(&repo, "main", &seg, &dest, &[]).output().unwrap(),
        "get",
    );
    assert!(fs::read(&dest).unwrap() == bytes);
}

/// A restore whose target runs out of inodes part-way (the free-space check counts bytes):
/// it fails and leaves no `global/pg_control`, so nothing can start the half-written copy.
#[test]
fn a_restore_target_that_fills_up_is_never_startable() {
    let c = big_cluster(13);
    let scratch = server_owned_tempdir();
    let backup: PathBuf = scratch.path().join("b");
    ok(common::backup(&c, &backup, &[]), "backup");
    for options in ["size=20m", "size=400m,nr_inodes=300"] {
        let fs_ = Tmpfs::new(options);
        let target = fs_.path().join("restored");
        let owner = server_user().name.clone();
        let out = common::restore(&backup, &target, &["--owner", &owner]);
        assert!(!out.status.success(), "{options}: {}", text(&out));
        let t = text(&out).to_lowercase();
        assert!(
            t.contains("space"),
            "{options}: the cause is not named: {t}"
        );
        assert!(
            !target.join("global/pg_control").exists(),
            "{options}: a half-restored target has a pg_control"
        );
    }
}
