//! Red team of point-in-time restore from a repository: timelines the archive cannot follow
//! (a `--target-timeline` with no history file, a history file planted in the archive that
//! forks before the backup started) and a backup of another database system planted in the
//! cluster's folder. Each restore must either be refused before anything is written, or
//! restore exactly the marks the real history holds; never a copy on a timeline the backup is
//! not on, never another system's data.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use pgsafe_testkit::{
    Cluster, ClusterOptions, Marks, PgInstall, archive_into_repo, check_marks, copy_tree,
    give_to_server_user, per_major, server_owned_tempdir, wait_archived,
};
use serde_json::Value;

use common::{backups_dir, bin, command, json, ok, repo_init};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn backup(repo: &Path, c: &Cluster) -> String {
    let conn = c.conninfo();
    let out = ok(
        command(&[
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
        ])
        .output()
        .unwrap(),
        "backup",
    );
    // The planner counts a backup as consistent only from the second after it finished.
    std::thread::sleep(Duration::from_millis(1100));
    json(&out)["backup_id"].as_str().unwrap().to_owned()
}

fn restore(repo: &Path, dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = command(&[
        "restore",
        "--repo",
        s(repo),
        "--cluster",
        "main",
        "--pgdata",
        s(dir),
        "--progress",
        "none",
        "--json",
    ]);
    cmd.args(extra);
    cmd.output().unwrap()
}

/// Refused (non-zero) and nothing written at `dir`.
fn refused_nothing_written(out: &Output, dir: &Path, what: &str) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: restore succeeded: {err}");
    assert!(
        fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()),
        "{what}: the refused restore wrote into {}",
        dir.display()
    );
    err
}

/// Starts the restored copy and checks it holds exactly `expected` marks.
fn start_and_count(install: &PgInstall, dir: &Path, expected: &[i32], what: &str) -> Cluster {
    let mut copy = Cluster::adopt(install, dir, ClusterOptions::new().fast_unsafe());
    copy.keep_own_archive_settings();
    copy.start();
    copy.wait_recovery_done();
    let mut client = copy.connect();
    if let Err(e) = check_marks(&mut client, "marks", expected) {
        panic!("{what}: {e}\nlog:\n{}", copy.server_log_tail(30));
    }
    copy
}

fn restore_red(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on"),
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    give_to_server_user(&repo);
    archive_into_repo(&c, &bin(), &repo, "main");
    let mut marks = Marks::create(&c, "marks", 1);
    let id = backup(&repo, &c);
    let m1 = marks.mark(&c, None);
    wait_archived(&c);
    let lsn1 = m1.lsn.to_string();
    let dir = |name: &str| -> PathBuf { scratch.path().join(name) };

    // A timeline the archive has no history file of (and no WAL).
    for tli in ["2", "7"] {
        let d = dir(&format!("tli{tli}"));
        let out = restore(
            &repo,
            &d,
            &["--target-lsn", &lsn1, "--target-timeline", tli],
        );
        let err = refused_nothing_written(&out, &d, &format!("{m}: timeline {tli}"));
        assert!(err.contains(tli), "{m}: {err}");
    }

    // A history file planted for timeline 2: it forks from timeline 1 at 0/1000000, before the
    // backup started (no such promotion happened; nothing of timeline 2 is archived).
    let hist_dir = repo.join("main/wal/00000002");
    fs::create_dir_all(&hist_dir).unwrap();
    fs::write(
        hist_dir.join("00000002.history"),
        "1\t0/1000000\tno recovery target specified\n",
    )
    .unwrap();
    let d = dir("planted2");
    let out = restore(
        &repo,
        &d,
        &["--target-lsn", &lsn1, "--target-timeline", "2"],
    );
    refused_nothing_written(&out, &d, &format!("{m}: planted timeline 2"));
    // `latest` (the default): timeline 2 does not descend from the backup's position; either
    // refused, or the copy stays on timeline 1 and holds mark 1.
    let d = dir("latest");
    let out = restore(
        &repo,
        &d,
        &["--target-lsn", &lsn1, "--target-action", "promote"],
    );
    if out.status.success() {
        let v = json(&out);
        assert_eq!(v["pitr"]["timeline"], 1, "{m}: {v:#}");
        start_and_count(&install, &d, &[1], &format!("{m}: latest"));
    } else {
        refused_nothing_written(&out, &d, &format!("{m}: latest with a planted history"));
    }
    fs::remove_dir_all(&hist_dir).unwrap();

    // Another database system's backup (its own initdb), copied into this cluster's folder.
    let other = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().fresh_initdb(true),
    );
    other.execute("CREATE TABLE marks (id int); INSERT INTO marks VALUES (666)");
    let repo2 = scratch.path().join("repo2");
    ok(repo_init(&other, &repo2, "main"), "init other");
    let foreign = backup(&repo2, &other);
    drop(other);
    copy_tree(
        &backups_dir(&repo2, "main").join(&foreign),
        &backups_dir(&repo, "main").join(&foreign),
        None,
    )
    .unwrap();
    let d = dir("foreign-by-id");
    let out = restore(&repo, &d, &["--backup", &foreign]);
    refused_nothing_written(&out, &d, &format!("{m}: foreign backup by id"));
    // The newest backup in the folder is the foreign one: a restore to the end of the archive
    // takes this system's backup, and the copy has this system's rows.
    let d = dir("end");
    let out = ok(
        restore(&repo, &d, &["--target-end"]),
        &format!("{m}: --target-end beside a foreign backup"),
    );
    let v: Value = json(&out);
    assert_eq!(v["pitr"]["backup"], id.as_str(), "{m}: {v:#}");
    start_and_count(&install, &d, &[1], &format!("{m}: end"));
}

per_major!(restore_red: 11, 17);

/// The archiver's queue limit dropped the WAL right after the newest archived segment (the
/// gap record is in the repository; nothing was archived after it): a restore to the end of
/// the archive, or to a time after it, ends where the WAL was dropped. The restore must say so
/// (naming the recorded gap), not present the end of the archive as the end of what the server
/// wrote.
fn a_recorded_gap_at_the_end_of_the_archive_is_named(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on"),
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    give_to_server_user(&repo);
    archive_into_repo(&c, &bin(), &repo, "main");
    let mut marks = Marks::create(&c, "marks", 1);
    backup(&repo, &c);
    marks.mark(&c, None);
    let last: pgsafe::WalSegment = wait_archived(&c).parse().unwrap();
    // Archiving stops (the server keeps its WAL); the record archive-push writes when its
    // queue limit drops the next two segments.
    c.execute("ALTER SYSTEM SET archive_command = 'false'");
    c.execute("SELECT pg_reload_conf()");
    let size = pgsafe::WalSegSize::new(16 << 20).unwrap();
    let next =
        |n: u64| pgsafe::WalSegment::from_segno(last.tli, last.segno(size).unwrap() + n, size);
    let (first, end) = (next(1), next(2));
    let r = pgsafe::repo::Repository::open(&repo).unwrap();
    r.record_event(
        &pgsafe::storage::Ident::new("main").unwrap(),
        pgsafe::repo::EventKind::WalGap {
            timeline: first.tli,
            first,
            last: end,
            reason: "archive queue limit".into(),
            dropped_at: "2026-12-04T01:00:00Z".into(),
            dropped_by: "db1".into(),
        },
    )
    .unwrap();
    let later = marks.mark(&c, None);
    for (what, target) in [
        ("end", vec!["--target-end"]),
        ("time", vec!["--target-time", later.time.as_str()]),
    ] {
        let d = scratch.path().join(what);
        let out = restore(&repo, &d, &target);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        // Refused, or restored with a warning naming the dropped WAL.
        if out.status.success() {
            assert!(
                all.contains(&first.to_string()) && all.contains("archive queue limit"),
                "{m} {what}: the restore does not name the WAL dropped after the end of the \
                 archive ({first}): {all}"
            );
        } else {
            refused_nothing_written(&out, &d, &format!("{m} {what}"));
            assert!(all.contains(&first.to_string()), "{m} {what}: {all}");
        }
    }
}

per_major!(a_recorded_gap_at_the_end_of_the_archive_is_named: 16);
