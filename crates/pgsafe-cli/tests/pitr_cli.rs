//! Point-in-time restore from a repository, against real servers through the real binary: a
//! server archives into the repository with `pgsafe archive-push` (its repository path has a
//! space and a quote, so `archive_command` and the restore's `restore_command` must quote it
//! right), backups go into the repository, marks are committed around them (one row each, with
//! a time, LSN, xid and restore point that separate it from the next), and each restore is
//! started and counted: every mark committed before the target present, none after. Also: a
//! target before the only backup and a target across a gap are refused before anything is
//! written; with two backups the newer one that can reach the target is taken; recovery follows
//! a promotion onto the new timeline; and a restored copy, promoted and writing, never archives
//! into the repository it came from.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use pgsafe_testkit::{
    Cluster, ClusterOptions, Mark, Marks, PgInstall, archive_into_repo, check_marks,
    give_to_server_user, per_major, repo_wal_objects, server_owned_tempdir, wait_archived,
};
use serde_json::Value;

use common::{bin, command, json, ok, refused, repo_init};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A started server with `archive_mode = on` pushing into a fresh repository (`main`).
struct Archiving {
    c: Cluster,
    scratch: tempfile::TempDir,
    repo: PathBuf,
}

fn archiving(major: u32) -> Archiving {
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on"),
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo dir's");
    ok(repo_init(&c, &repo, "main"), "init");
    give_to_server_user(&repo);
    archive_into_repo(&c, &bin(), &repo, "main");
    Archiving { c, scratch, repo }
}

/// A backup of `c` into the repository; its ID.
fn backup(a: &Archiving, c: &Cluster) -> String {
    let conn = c.conninfo();
    let out = ok(
        command(&[
            "backup",
            "--repo",
            s(&a.repo),
            "--cluster",
            "main",
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
            "--json",
            "--progress",
            "none",
        ])
        .output()
        .unwrap(),
        "backup",
    );
    // The planner counts a backup as consistent only from the second after it finished.
    std::thread::sleep(Duration::from_millis(1100));
    json(&out)["backup_id"].as_str().unwrap().to_owned()
}

/// `pgsafe restore --repo … --cluster main --pgdata DIR --json` with `target` arguments.
fn restore(a: &Archiving, dir: &Path, target: &[&str]) -> Output {
    let mut cmd = command(&[
        "restore",
        "--repo",
        s(&a.repo),
        "--cluster",
        "main",
        "--pgdata",
        s(dir),
        "--progress",
        "none",
        "--json",
    ]);
    cmd.args(target);
    cmd.output().unwrap()
}

/// Restores to `target` with `promote`, starts the copy with its own archive settings (what
/// the restore wrote counts, not a command-line override), waits for the end of recovery and
/// checks that it holds exactly `expected` marks. Returns the restore's JSON and the copy.
fn restore_and_count(
    a: &Archiving,
    name: &str,
    target: &[&str],
    expected: &[i32],
) -> (Value, Cluster) {
    let m = format!("PostgreSQL {} {name}", a.c.major());
    let dir = a.scratch.path().join(name);
    let mut args = target.to_vec();
    args.extend(["--target-action", "promote"]);
    let out = restore(a, &dir, &args);
    let v = json(&ok(out, &m));
    let mut copy = Cluster::adopt(a.c.install(), &dir, ClusterOptions::new().fast_unsafe());
    copy.keep_own_archive_settings();
    copy.start();
    copy.wait_recovery_done();
    let mut client = copy.connect();
    if let Err(e) = check_marks(&mut client, "marks", expected) {
        panic!(
            "{m}: {e}; restore: {v:#}\nlog:\n{}",
            copy.server_log_tail(30)
        );
    }
    (v, copy)
}

/// The copy, promoted, writes and ends WAL segments; the repository's archive gains nothing.
fn never_archives_into_the_source(a: &Archiving, copy: &Cluster, m: &str) {
    let before = repo_wal_objects(&a.repo, "main");
    assert_eq!(copy.show("archive_mode"), "off", "{m}");
    copy.execute("CREATE TABLE copy_only AS SELECT g FROM generate_series(1, 1000) g");
    for _ in 0..2 {
        copy.execute("SELECT pg_switch_wal()");
        copy.execute("INSERT INTO copy_only VALUES (0)");
    }
    copy.execute("CHECKPOINT");
    std::thread::sleep(Duration::from_millis(500));
    let after = repo_wal_objects(&a.repo, "main");
    let new: Vec<&String> = after.iter().filter(|o| !before.contains(o)).collect();
    assert!(new.is_empty(), "{m}: the restored copy archived {new:?}");
}

fn lsn_arg(mark: &Mark) -> String {
    mark.lsn.to_string()
}

/// Every kind of target, on the majors where recovery settings differ (10: recovery.conf; 12:
/// signal files; 16, 18): marks 1 (before the backup), 2, 3, 4 after it; a restore to each of
/// mark 3's targets holds marks 1–3; immediate holds mark 1 only. The written settings carry
/// the archive-get command with the repository's path quoted, and the explicit timeline; the
/// copies never archive. A target before the only backup is refused, writing nothing.
fn every_target_kind_restores_exactly_the_rows_before_it(major: u32) {
    let a = archiving(major);
    let m = format!("PostgreSQL {major}");
    let mut marks = Marks::create(&a.c, "marks", 1);
    let m1 = marks.mark(&a.c, None);
    std::thread::sleep(Duration::from_millis(1100));
    let id = backup(&a, &a.c);
    marks.mark(&a.c, None);
    let m3 = marks.mark(&a.c, None);
    marks.mark(&a.c, None);
    wait_archived(&a.c);
    let through3 = marks.ids_through(3);

    let lsn = lsn_arg(&m3);
    let cases: [(&str, Vec<&str>); 4] = [
        ("time", vec!["--target-time", &m3.time]),
        ("lsn", vec!["--target-lsn", &lsn]),
        ("xid", vec!["--target-xid", &m3.xid]),
        ("name", vec!["--target-name", &m3.name]),
    ];
    for (kind, args) in &cases {
        let (v, copy) = restore_and_count(&a, kind, args, &through3);
        let p = &v["pitr"];
        assert_eq!(p["backup"], id.as_str(), "{m} {kind}: {v:#}");
        assert_eq!(p["timeline"], 1, "{m} {kind}");
        assert_eq!(p["action"], "promote", "{m} {kind}");
        let rc = p["restore_command"].as_str().unwrap();
        assert!(
            rc.contains("archive-get --repo '") && rc.contains("repo dir'\\''s"),
            "{rc}"
        );
        if *kind == "time" {
            never_archives_into_the_source(&a, &copy, &format!("{m} {kind}"));
            // What the server read: the recovery settings as written.
            // 10-11 rename recovery.conf when recovery ends.
            let conf = if major >= 12 {
                "postgresql.auto.conf"
            } else {
                "recovery.done"
            };
            let text = std::fs::read_to_string(copy.data_dir().join(conf)).unwrap();
            assert!(
                text.contains("recovery_target_timeline = '1'"),
                "{m}: {text}"
            );
            assert!(text.contains("archive-get --repo ''"), "{m}: {text}");
        }
        drop(copy);
    }
    let (v, _copy) = restore_and_count(&a, "immediate", &["--target-immediate"], &[m1.id]);
    assert_eq!(v["pitr"]["wal"]["until"], "target", "{m}");

    // Before the only backup: refused, naming it; nothing written.
    let dir = a.scratch.path().join("too-early");
    let out = restore(&a, &dir, &["--target-time", &m1.time]);
    let err = refused(&out, &["no backup can reach", &id, "not before the target"]);
    assert!(!dir.exists(), "{m}: {err}");
    assert_eq!(json(&out)["error"]["kind"], "refused", "{m}");
    let early = lsn_arg(&m1);
    let out = restore(&a, &dir, &["--target-lsn", &early]);
    refused(&out, &["no backup can reach", "after the target"]);
    assert!(!dir.exists(), "{m}");
}

per_major!(every_target_kind_restores_exactly_the_rows_before_it: 10, 12, 16, 18);

/// Two backups: a target between them takes the first (the second is passed over, saying
/// why), a target after both the second. A segment removed from the archive after the second
/// backup: a time target is refused naming the missing segment, nothing written, while an LSN
/// before the gap still restores.
fn the_newer_backup_that_reaches_the_target_is_taken(major: u32) {
    let a = archiving(major);
    let m = format!("PostgreSQL {major}");
    let mut marks = Marks::create(&a.c, "marks", 1);
    let id1 = backup(&a, &a.c);
    let m1 = marks.mark(&a.c, None);
    wait_archived(&a.c);
    std::thread::sleep(Duration::from_millis(1100));
    let id2 = backup(&a, &a.c);
    let m2 = marks.mark(&a.c, None);
    let seg_after = wait_archived(&a.c);
    let m3 = marks.mark(&a.c, None);
    wait_archived(&a.c);

    let (v, _c1) = restore_and_count(&a, "between", &["--target-time", &m1.time], &[1]);
    assert_eq!(v["pitr"]["backup"], id1.as_str(), "{m}: {v:#}");
    assert_eq!(v["pitr"]["skipped"][0]["id"], id2.as_str(), "{m}: {v:#}");
    let (v, _c2) = restore_and_count(&a, "after", &["--target-name", &m2.name], &[1, 2]);
    assert_eq!(v["pitr"]["backup"], id2.as_str(), "{m}: {v:#}");

    // A gap: the segment that holds mark 2 disappears from the archive.
    let objects = repo_wal_objects(&a.repo, "main");
    let lost = objects
        .iter()
        .find(|o| o.contains(&seg_after) && !o.ends_with(".backup"))
        .unwrap_or_else(|| panic!("{m}: {seg_after} not in {objects:?}"));
    std::fs::remove_file(a.repo.join("main").join("wal").join(lost)).unwrap();
    let dir = a.scratch.path().join("gap");
    let out = restore(&a, &dir, &["--target-time", &m3.time]);
    refused(&out, &[&seg_after, "Nothing was written"]);
    assert!(!dir.exists(), "{m}");
    let lsn3 = lsn_arg(&m3);
    let out = restore(&a, &dir, &["--target-lsn", &lsn3]);
    refused(&out, &[&seg_after, "is not in the archive"]);
    assert!(!dir.exists(), "{m}");
    // Before the gap: fine (the first backup to mark 1 needs none of it).
    let lsn1 = lsn_arg(&m1);
    restore_and_count(&a, "before-gap", &["--target-lsn", &lsn1], &[1]);
}

per_major!(the_newer_backup_that_reaches_the_target_is_taken: 12, 17);

/// A standby promoted onto timeline 2 archives into the same repository; a restore of the
/// timeline-1 backup to a mark written on timeline 2 follows the history file: it holds the
/// marks of timeline 1 before the promotion and those of timeline 2 up to the target.
fn recovery_follows_a_promotion(major: u32) {
    let a = archiving(major);
    let m = format!("PostgreSQL {major}");
    let mut marks = Marks::create(&a.c, "marks", 1);
    let id = backup(&a, &a.c);
    marks.mark(&a.c, None);
    let mut standby = Cluster::new_standby(&a.c);
    standby.wait_for_replay(&a.c);
    let mut primary = a.c;
    primary.stop();
    standby.promote();
    let mut on2 = Marks::continuing("marks", 10);
    on2.mark(&standby, None);
    let t = on2.mark(&standby, None);
    on2.mark(&standby, None);
    wait_archived(&standby);
    assert_eq!(t.timeline, 2, "{m}");
    let a = Archiving {
        c: standby,
        scratch: a.scratch,
        repo: a.repo,
    };
    for (kind, args) in [
        ("name2", vec!["--target-name", t.name.as_str()]),
        ("xid2", vec!["--target-xid", t.xid.as_str()]),
    ] {
        let (v, _copy) = restore_and_count(&a, kind, &args, &[1, 10, 11]);
        assert_eq!(v["pitr"]["backup"], id.as_str(), "{m} {kind}: {v:#}");
        assert_eq!(v["pitr"]["timeline"], 2, "{m} {kind}: {v:#}");
    }
    let lsn = lsn_arg(&t);
    let (v, _copy) = restore_and_count(
        &a,
        "lsn2",
        &["--target-lsn", &lsn, "--target-timeline", "2"],
        &[1, 10, 11],
    );
    assert_eq!(v["pitr"]["timeline"], 2, "{m}: {v:#}");
    // Timeline 1 cannot reach an LSN on timeline 2 past the switch: the archive holds no
    // timeline-1 WAL there.
    let dir = a.scratch.path().join("current");
    let out = restore(
        &a,
        &dir,
        &["--target-lsn", &lsn, "--target-timeline", "current"],
    );
    let e = refused(&out, &["is not in the archive"]);
    assert!(!dir.exists(), "{m}: {e}");
}

per_major!(recovery_follows_a_promotion: 10, 16);

/// A copy restored with `--archive-mode preserve` and promoted archives its new timeline into
/// the repository it came from (same system identifier: archive-push accepts it), while the
/// source goes on archiving timeline 1 past the fork. `latest` is then refused, naming both
/// branches (PostgreSQL's own `latest` would follow the copy's timeline 2, and so would a
/// planner that only looked at history files); naming timeline 1 restores the source's rows.
fn a_copy_archiving_into_its_source_makes_latest_ambiguous(major: u32) {
    let a = archiving(major);
    let m = format!("PostgreSQL {major}");
    let mut marks = Marks::create(&a.c, "marks", 1);
    backup(&a, &a.c);
    let m1 = marks.mark(&a.c, None);
    wait_archived(&a.c);
    let dir = a.scratch.path().join("preserve");
    let out = restore(
        &a,
        &dir,
        &[
            "--target-name",
            &m1.name,
            "--target-action",
            "promote",
            "--archive-mode",
            "preserve",
        ],
    );
    ok(out, &m);
    let mut copy = Cluster::adopt(a.c.install(), &dir, ClusterOptions::new().fast_unsafe());
    copy.keep_own_archive_settings();
    copy.start();
    copy.wait_recovery_done();
    copy.execute("CREATE TABLE copy_only AS SELECT 1 AS x");
    let seg = wait_archived(&copy);
    assert!(seg.starts_with("00000002"), "{m}: {seg}");
    let objects = repo_wal_objects(&a.repo, "main");
    assert!(
        objects.iter().any(|o| o.ends_with("00000002.history")),
        "{m}: {objects:?}"
    );
    drop(copy);
    marks.mark(&a.c, None);
    wait_archived(&a.c);
    let m3 = marks.mark(&a.c, None);
    wait_archived(&a.c);

    let refused_dir = a.scratch.path().join("latest");
    let out = restore(&a, &refused_dir, &["--target-name", &m3.name]);
    refused(
        &out,
        &[
            "diverging branches",
            "timeline 1 (went on past",
            "timeline 2 (left timeline 1",
        ],
    );
    assert!(!refused_dir.exists(), "{m}");
    restore_and_count(
        &a,
        "timeline1",
        &["--target-name", &m3.name, "--target-timeline", "1"],
        &[1, 2, 3],
    );
}

per_major!(a_copy_archiving_into_its_source_makes_latest_ambiguous: 16);

/// `--target-end`, the restore after losing the server: no recovery target is written, the copy
/// replays every archived segment from the backup on and opens at the end of the archive with
/// every mark committed before the last archived segment. A target action with it, and a backup
/// folder with it, are refused with nothing written.
fn the_end_of_the_archive_restores_every_archived_row(major: u32) {
    let a = archiving(major);
    let m = format!("PostgreSQL {major}");
    let mut marks = Marks::create(&a.c, "marks", 1);
    marks.mark(&a.c, None);
    let id = backup(&a, &a.c);
    marks.mark(&a.c, None);
    marks.mark(&a.c, None);
    wait_archived(&a.c);
    let all = marks.ids_through(3);

    let dir = a.scratch.path().join("end");
    let v = json(&ok(restore(&a, &dir, &["--target-end"]), &m));
    let p = &v["pitr"];
    assert_eq!(p["backup"], id.as_str(), "{m}: {v:#}");
    assert_eq!(p["target"]["kind"], "end", "{m}: {v:#}");
    assert_eq!(p["wal"]["until"], "end_of_archive", "{m}: {v:#}");
    assert_eq!(p["action"], "promote", "{m}: {v:#}");
    let conf = if major >= 12 {
        "postgresql.auto.conf"
    } else {
        "recovery.conf"
    };
    let text = std::fs::read_to_string(dir.join(conf)).unwrap();
    assert!(
        text.lines()
            .all(|l| !l.starts_with("recovery_target") || l.starts_with("recovery_target_timeline")),
        "{m}: {text}"
    );
    assert!(
        text.contains("recovery_target_timeline = '1'"),
        "{m}: {text}"
    );
    let mut copy = Cluster::adopt(a.c.install(), &dir, ClusterOptions::new().fast_unsafe());
    copy.keep_own_archive_settings();
    copy.start();
    copy.wait_recovery_done();
    let mut client = copy.connect();
    if let Err(e) = check_marks(&mut client, "marks", &all) {
        panic!("{m}: {e}\nlog:\n{}", copy.server_log_tail(30));
    }
    never_archives_into_the_source(&a, &copy, &m);
    drop(copy);

    let dir = a.scratch.path().join("end-action");
    let out = restore(&a, &dir, &["--target-end", "--target-action", "pause"]);
    assert!(!out.status.success(), "{m}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no target action")
            || String::from_utf8_lossy(&out.stderr).contains("no target action"),
        "{m}: {out:?}"
    );
    assert!(!dir.exists(), "{m}");
    // A backup folder has no archive pgsafe knows of: refused, not a plain restore.
    let folder = a.repo.join("main").join("backups").join(&id);
    let out = command(&["restore", s(&folder), "--pgdata", s(&dir), "--target-end"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{m}: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--target-end replays a repository"),
        "{m}: {out:?}"
    );
    assert!(!dir.exists(), "{m}");
}

per_major!(the_end_of_the_archive_restores_every_archived_row: 10, 17);
