//! Backups whose WAL is in the repository's own archive, against real servers through the real
//! binary: a server whose `archive_command` runs `pgsafe archive-push` into the repository's
//! cluster gets backups that wait for their WAL there instead of copying it (recorded as
//! `archive`, with the reason); `verify --repo` walks the archived WAL, a copied folder says
//! where its WAL is; `restore --repo` fetches it and the copy recovers on its own (rows counted,
//! amcheck clean), and so does `--restore-test`; a segment deleted from (or damaged in) the
//! archive fails verify naming it and the restore refuses before writing; a stalled archiver
//! makes the backup time out with the label kept and the backup incomplete; a server archiving
//! elsewhere (or into another cluster) gets its WAL included as before, and `--wal include`
//! still forces a self-contained backup.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, SUPERUSER, client_bin_dir, give_to_server_user, per_major,
    push_command, server_owned_tempdir, server_user, set_archive_command,
};
use serde_json::Value;

use common::{bin, command, json, ok, path_str as s, pgsafe, repo_init as init, text};

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
    give_to_server_user(&repo);
    (c, scratch, repo)
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

/// A stalled archiver (pgsafe archive-push refuses its arguments): the backup waits for its
/// WAL in the repository, times out with a message naming the missing file and the archiver's
/// failure, and leaves a folder that keeps its backup_label and stays incomplete. `--wal
/// include` against the same server still makes a self-contained backup without waiting.
fn stalled_archiving_times_out_and_keeps_the_label(major: u32) {
    let m = format!("PostgreSQL {major}");
    let (c, _scratch, repo) = archiving_cluster(major);
    // A push among other shell commands is not relied on (its exit status may not be
    // pgsafe's): the backup includes its WAL and says why.
    set_archive_command(
        &c,
        &format!("false && {}", push_command(&bin(), &repo, "main")),
    );
    let v = json(&ok(backup_repo(&c, &repo, &[]), "backup, compound command"));
    assert_eq!(wal_of(&v)["mode"], "include", "{m}: {v}");
    assert!(v.to_string().contains("other shell commands"), "{m}: {v}");
    let first = repo
        .join("main")
        .join("backups")
        .join(v["backup_id"].as_str().unwrap());
    fs::remove_dir_all(&first).unwrap();
    set_archive_command(
        &c,
        &format!(
            "{} --compress no-such-method",
            push_command(&bin(), &repo, "main")
        ),
    );

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
            push_command(&bin(), &repo, "other"),
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

fn rows(c: &Cluster) -> i64 {
    c.query_one("SELECT count(*) FROM t")
}

/// `verify --repo … --backup ID --json` plus `extra`: exit code and report.
fn verify_repo(repo: &Path, id: &str, extra: &[&str]) -> (Option<i32>, Value, Output) {
    let mut args = vec![
        "verify",
        "--repo",
        s(repo),
        "--cluster",
        "main",
        "--backup",
        id,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = pgsafe(&args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, out)
}

fn restore_repo(repo: &Path, id: &str, target: &Path) -> Output {
    pgsafe(&[
        "restore",
        "--repo",
        s(repo),
        "--cluster",
        "main",
        "--backup",
        id,
        "--pgdata",
        s(target),
        "--progress",
        "none",
        "--json",
    ])
}

/// The archived object(s) of `file` (timeline from its name), plain or compressed.
fn archived_objects(repo: &Path, file: &str) -> Vec<PathBuf> {
    let dir = repo
        .join("main")
        .join("wal")
        .join(&file[..8])
        .join(&file[8..16]);
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n == file
                || n.strip_prefix(file)
                    .is_some_and(|r| r == ".zst" || r == ".lz4")
        })
        .collect()
}

/// A backup into a repository the server archives into: its WAL is awaited there and not
/// copied, recorded as archive with the reason; returns the summary.
fn archived_backup(c: &Cluster, repo: &Path, m: &str) -> Value {
    let v = json(&ok(backup_repo(c, repo, &[]), "backup --repo"));
    let wal = wal_of(&v);
    assert_eq!(wal["mode"], "archive", "{m}: {v}");
    assert_eq!(wal["repository"]["cluster"], "main", "{m}: {v}");
    assert_eq!(wal["bytes"], 0, "{m}: {v}");
    let reason = wal["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("archive (chosen)") && reason.contains("pgsafe archive-push"),
        "{m}: {reason}"
    );
    let folder = backup_folder(repo, v["backup_id"].as_str().unwrap());
    assert!(stored_segments(&folder).is_empty(), "{m}: WAL was copied");
    for seg in wal["segments"].as_array().unwrap() {
        let seg = seg.as_str().unwrap();
        assert!(
            !archived_objects(repo, seg).is_empty(),
            "{m}: {seg} not archived"
        );
    }
    v
}

/// Archiving into the repository, then a backup: no WAL copied, recorded as archive; verify
/// --repo walks the archived segments and passes, the folder alone says where its WAL is;
/// restore --repo recovers on its own with every row and amcheck clean.
fn wal_in_the_repository_archive(major: u32) {
    let m = format!("PostgreSQL {major}");
    let (c, scratch, repo) = archiving_cluster(major);
    c.execute("CREATE INDEX ON t (id)");
    set_archive_command(&c, &push_command(&bin(), &repo, "main"));
    let v = archived_backup(&c, &repo, &m);
    let id = v["backup_id"].as_str().unwrap();
    let segments = wal_of(&v)["segments"].as_array().unwrap().len() as u64;
    let count = rows(&c);
    // Written after the backup: not in the restored copy.
    c.execute("INSERT INTO t SELECT g FROM generate_series(1, 10) g");

    let (code, report, out) = verify_repo(&repo, id, &[]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));
    assert_eq!(report["wal_segments_checked"], segments, "{m}: {report}");
    assert!(report["wal_records_checked"].as_u64().unwrap() > 0, "{m}");
    assert!(
        report["notes"].to_string().contains("checked there"),
        "{m}: {report}"
    );
    // The folder alone (copied elsewhere): the WAL is not in it, and the report says where.
    let (code, report, out) = common::verify(&backup_folder(&repo, id), &[]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("NOT in this folder") && notes.contains(s(&repo)),
        "{m}: {notes}"
    );
    assert_eq!(report["wal_segments_checked"], 0, "{m}: {report}");

    let target = scratch.path().join("restored");
    let r = json(&ok(restore_repo(&repo, id, &target), "restore --repo"));
    assert_eq!(r["wal_files"], segments, "{m}: {r}");
    let install = PgInstall::major(major);
    let mut restored = Cluster::adopt(&install, &target, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    assert_eq!(rows(&restored), count, "{m}");
    amcheck_clean(&restored, &m);
    restored.stop();
}

per_major!(wal_in_the_repository_archive: 10, 14, 17);

/// `verify --restore-test --repo` of a backup whose WAL is in the archive: restored with its
/// WAL fetched from there, started, recovered: proven.
#[test]
fn the_restore_test_proves_a_backup_whose_wal_is_archived() {
    let (c, scratch, repo) = archiving_cluster(18);
    set_archive_command(&c, &push_command(&bin(), &repo, "main"));
    let v = archived_backup(&c, &repo, "PostgreSQL 18");
    let id = v["backup_id"].as_str().unwrap();
    let bin = PgInstall::major(18).bin_dir;
    let tests = scratch.path().join("tests");
    fs::create_dir(&tests).unwrap();
    let (_, report, out) = verify_repo(
        &repo,
        id,
        &[
            "--restore-test",
            "--pg-bindir",
            s(&bin),
            "--scratch-dir",
            s(&tests),
            "--run-as",
            &server_user().name,
            "--progress",
            "none",
        ],
    );
    assert_eq!(report["verdict"], "proven", "{}", text(&out));
}

/// A segment the backup needs deleted from the archive: verify --repo fails naming it, and
/// restore --repo refuses before writing. A damaged one planted in its place (zeros, stored
/// plain): verify names it as invalid.
fn a_missing_archived_segment_is_found_before_restoring(major: u32) {
    let m = format!("PostgreSQL {major}");
    let (c, scratch, repo) = archiving_cluster(major);
    set_archive_command(&c, &push_command(&bin(), &repo, "main"));
    let v = archived_backup(&c, &repo, &m);
    let id = v["backup_id"].as_str().unwrap();
    let seg = wal_of(&v)["segments"][0].as_str().unwrap().to_owned();
    for o in archived_objects(&repo, &seg) {
        fs::remove_file(o).unwrap();
    }

    let (code, report, out) = verify_repo(&repo, id, &[]);
    assert_eq!(code, Some(1), "{m}: {}", text(&out));
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("\"archive_wal_missing\"") && problems.contains(&seg),
        "{m}: {problems}"
    );
    let target = scratch.path().join("restored");
    let out = restore_repo(&repo, id, &target);
    let err = common::refused(&out, &["nothing was written", &seg]);
    assert!(err.contains("missing archived WAL"), "{m}: {err}");
    assert!(
        fs::read_dir(&target).map_or(true, |mut d| d.next().is_none()),
        "{m}: the restore wrote into {}",
        target.display()
    );

    // Zeros where the segment was: not a segment of this cluster.
    let dir = repo.join("main/wal").join(&seg[..8]).join(&seg[8..16]);
    let size = c.query_one::<String>("SELECT current_setting('wal_segment_size')");
    let bytes = match size.trim_end_matches("MB").parse::<usize>() {
        Ok(mb) => mb << 20,
        Err(_) => 16 << 20,
    };
    fs::write(dir.join(&seg), vec![0u8; bytes]).unwrap();
    let (code, report, _) = verify_repo(&repo, id, &[]);
    assert_eq!(code, Some(1), "{m}");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("archive_wal_invalid") && problems.contains(&seg),
        "{m}: {problems}"
    );
}

per_major!(a_missing_archived_segment_is_found_before_restoring: 14);

/// pg_amcheck (PostgreSQL 15's client) on 14+; `bt_index_check` on every B-tree index before
/// (with heapallindexed from 11 on).
fn amcheck_clean(c: &Cluster, m: &str) {
    c.execute("CREATE EXTENSION IF NOT EXISTS amcheck");
    if c.major() >= 14 {
        let o = Command::new(client_bin_dir().join("pg_amcheck"))
            .arg("-h")
            .arg(c.socket_dir())
            .args(["-p", &c.port().to_string(), "-U", SUPERUSER])
            .args(["--heapallindexed", "-d", "postgres"])
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stdout.is_empty(),
            "{m}: pg_amcheck found problems ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        let idx: Vec<String> = c.query_column(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = \
             i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND \
             i.indisvalid AND c.relpersistence <> 't'",
        );
        assert!(idx.iter().any(|i| i.starts_with("t_id")), "{m}: {idx:?}");
        // heapallindexed (the second argument) is from 11 on.
        let all = if c.major() >= 11 { ", true" } else { "" };
        for i in &idx {
            c.execute(&format!("SELECT bt_index_check('{i}'::regclass{all})"));
        }
    }
}
