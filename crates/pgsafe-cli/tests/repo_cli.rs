//! The backup repository against real servers, through the real binary: `init` (two clusters of
//! different majors in one repository; a foreign cluster under a taken name refused),
//! `backup --repo` (two at once; SIGKILLed: running while its lease lives, incomplete after),
//! `verify`/`restore --repo` of `latest` and of a chosen ID with zero committed rows lost, pins,
//! and the hostile side: a planted `pgsafe.json` of another cluster, odd names and a symbolic
//! link under `backups/`.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe::repo::LeaseTiming;
use pgsafe_testkit::{
    Cluster, ClusterOptions, LoadGenerator, LoadOptions, PgInstall, per_major, server_owned_tempdir,
};
use serde_json::Value;

use common::{
    backups_dir, command, json, ok, pgsafe, refused, repo_catalog as catalog, repo_init as init,
    repo_state as state, text,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `pgsafe backup --repo` of `c` as `name` (JSON summary, no progress), plus `extra`.
fn backup_cmd(c: &Cluster, repo: &Path, name: &str, extra: &[&str]) -> Command {
    let conn = c.conninfo();
    let mut cmd = command(&[
        "backup",
        "--repo",
        s(repo),
        "--cluster",
        name,
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--json",
    ]);
    cmd.args(extra);
    cmd
}

/// A repository backup that must succeed: its ID.
fn backup(c: &Cluster, repo: &Path, name: &str) -> String {
    let out = ok(
        backup_cmd(c, repo, name, &["--progress", "none"])
            .output()
            .unwrap(),
        "pgsafe backup --repo",
    );
    let v = json(&out);
    assert_eq!(v["cluster"], name, "{v}");
    v["backup_id"].as_str().unwrap().to_owned()
}

/// A repository backup while `load` writes: its ID and the load mark taken when the backup
/// announced its stop phase (every commit acknowledged before it is in the backup).
fn backup_marking_stop(
    c: &Cluster,
    repo: &Path,
    name: &str,
    load: &LoadGenerator,
) -> (String, u64) {
    let mut child = backup_cmd(c, repo, name, &["--progress", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut mark = None;
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if mark.is_none() {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["event"] == "phase" && v["phase"] == "stop" {
                mark = Some(load.mark());
            }
        }
        log.push_str(&line);
        log.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "backup failed: {log}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["backup_id"].as_str().unwrap().to_owned(),
        mark.unwrap_or_else(|| panic!("no stop phase: {log}")),
    )
}

fn restore_repo(repo: &Path, name: &str, which: Option<&str>, target: &Path) -> Output {
    restore_repo_env(repo, name, which, target, &[])
}

fn restore_repo_env(
    repo: &Path,
    name: &str,
    which: Option<&str>,
    target: &Path,
    env: &[(&str, &str)],
) -> Output {
    let mut args = vec![
        "restore",
        "--repo",
        s(repo),
        "--cluster",
        name,
        "--pgdata",
        s(target),
        "--progress",
        "none",
        "--json",
    ];
    if let Some(w) = which {
        args.extend(["--backup", w]);
    }
    let mut cmd = command(&args);
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn two_clusters_of_different_majors_in_one_repository() {
    let i13 = PgInstall::major(13);
    let i17 = PgInstall::major(17);
    let a = Cluster::started(&i13, ClusterOptions::new().fast_unsafe());
    let b = Cluster::started(&i17, ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");

    // A folder that is not empty and not a repository is refused, and left alone.
    let other = scratch.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("keep"), b"x").unwrap();
    refused(
        &init(&a, &other, "a"),
        &["not empty", "not a pgsafe repository"],
    );
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1);

    let v = json(&ok(init(&a, &repo, "a"), "init a"));
    assert_eq!(v["registered"], true);
    assert_eq!(v["repository_created"], true);
    assert_eq!(
        v["server_version"].as_str().unwrap().split('.').next(),
        Some("13")
    );
    let v = json(&ok(init(&b, &repo, "b"), "init b"));
    assert_eq!(v["repository_created"], false);
    // Idempotent for the same cluster; another cluster under a taken name is refused.
    let v = json(&ok(init(&a, &repo, "a"), "init a again"));
    assert_eq!(v["registered"], false);
    let out = init(&b, &repo, "a");
    refused(
        &out,
        &["registered for another cluster", "system identifier"],
    );
    let e = json(&out);
    assert_eq!(e["error"]["kind"], "refused", "{e}");
    // A cluster name that could leave the repository is refused.
    refused(&init(&a, &repo, "../x"), &["--cluster"]);
    assert!(!scratch.path().join("x").exists());

    let id_a = backup(&a, &repo, "a");
    let id_b = backup(&b, &repo, "b");
    assert!(
        backups_dir(&repo, "a")
            .join(&id_a)
            .join("pgsafe.json")
            .is_file()
    );
    assert!(
        backups_dir(&repo, "b")
            .join(&id_b)
            .join("pgsafe.json")
            .is_file()
    );
    // A backup of b under a's name is refused before anything is written.
    let out = backup_cmd(&b, &repo, "a", &["--progress", "none"])
        .output()
        .unwrap();
    refused(&out, &["not the cluster registered as a"]);
    assert_eq!(fs::read_dir(backups_dir(&repo, "a")).unwrap().count(), 1);
    // Unregistered name, missing repository: clear errors.
    refused(
        &backup_cmd(&a, &repo, "c", &["--progress", "none"])
            .output()
            .unwrap(),
        &["not registered"],
    );
    refused(
        &backup_cmd(&a, &scratch.path().join("nope"), "a", &[])
            .output()
            .unwrap(),
        &["not a pgsafe repository"],
    );

    // verify --repo (latest by default) records its result; pin and unpin.
    let out = ok(
        pgsafe(&["verify", "--repo", s(&repo), "--cluster", "a", "--json"]),
        "verify --repo",
    );
    assert_eq!(json(&out)["problems"].as_array().map(Vec::len), Some(0));
    let c = catalog(&repo, "a", LeaseTiming::default());
    let v = c
        .get(&id_a)
        .unwrap()
        .verification
        .clone()
        .expect("recorded");
    assert_eq!(v.result, pgsafe::repo::VerifyResult::Passed);
    ok(
        pgsafe(&["pin", "--repo", s(&repo), "--cluster", "a", &id_a]),
        "pin",
    );
    assert!(
        catalog(&repo, "a", LeaseTiming::default())
            .get(&id_a)
            .unwrap()
            .pinned
    );
    ok(
        pgsafe(&["unpin", "--repo", s(&repo), "--cluster", "a", &id_a]),
        "unpin",
    );
    assert!(
        !catalog(&repo, "a", LeaseTiming::default())
            .get(&id_a)
            .unwrap()
            .pinned
    );
    // An ID cluster a does not have (not id_b: IDs are unique per cluster, and a's and b's
    // backups taken in the same second share one).
    refused(
        &pgsafe(&[
            "pin",
            "--repo",
            s(&repo),
            "--cluster",
            "a",
            "20000101T000000Z",
        ]),
        &["no backup"],
    );

    // pg_verifybackup (PostgreSQL's own tool, 15: manifest version 1, as 13 writes it) accepts
    // a repository's backup folder as is.
    let st = Command::new("/usr/lib/postgresql/15/bin/pg_verifybackup")
        .args(["--no-parse-wal", s(&backups_dir(&repo, "a").join(&id_a))])
        .output()
        .unwrap();
    assert!(st.status.success(), "pg_verifybackup: {}", text(&st));

    // Restore latest of each cluster; each starts as its own major.
    for (c, name) in [(&a, "a"), (&b, "b")] {
        let target = scratch.path().join(format!("restored-{name}"));
        ok(restore_repo(&repo, name, None, &target), "restore --repo");
        let major = fs::read_to_string(target.join("PG_VERSION")).unwrap();
        assert_eq!(major.trim(), c.major().to_string());
    }
}

/// Two backups of one cluster at once, each with its own ID and lease; a SIGKILLed backup is
/// running while its lease lives and incomplete once it expired; latest is never either.
#[test]
fn concurrent_and_killed_backups() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g",
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(init(&c, &repo, "main"), "init");
    let first = backup(&c, &repo, "main");

    // Two at once (slowed so that they overlap).
    let spawn = || {
        backup_cmd(
            &c,
            &repo,
            "main",
            &["--progress", "none", "--max-rate", "8M"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (p1, p2) = (spawn(), spawn());
    // While they run, both are "running" in the catalog (live leases), never latest.
    let t = Instant::now();
    loop {
        let cat = catalog(&repo, "main", LeaseTiming::default());
        if cat.in_progress().count() == 2 {
            assert_eq!(cat.latest().unwrap().id.as_str(), first);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "never saw both running: {cat:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o1 = ok(p1.wait_with_output().unwrap(), "backup 1");
    let o2 = ok(p2.wait_with_output().unwrap(), "backup 2");
    let (id1, id2) = (
        json(&o1)["backup_id"].clone(),
        json(&o2)["backup_id"].clone(),
    );
    assert_ne!(id1, id2);
    let cat = catalog(&repo, "main", LeaseTiming::default());
    assert_eq!(cat.complete().count(), 3);
    assert!(cat.leases.is_empty(), "leases left: {:?}", cat.leases);

    // SIGKILL mid-copy, with a 2-second lease and no skew margin.
    let mut child = backup_cmd(
        &c,
        &repo,
        "main",
        &["--progress", "none", "--max-rate", "2M"],
    )
    .env("PGSAFE_LEASE_TTL_SECS", "2")
    .env("PGSAFE_LEASE_SKEW_SECS", "0")
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let short = LeaseTiming {
        ttl: Duration::from_secs(2),
        clock_skew: Duration::ZERO,
    };
    let t = Instant::now();
    let killed = loop {
        let cat = catalog(&repo, "main", short);
        if let Some(b) = cat.in_progress().next() {
            if backups_dir(&repo, "main")
                .join(b.id.as_str())
                .join("base")
                .exists()
            {
                break b.id.to_string();
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while state(&repo, "main", &killed, short) != "incomplete" {
        assert_eq!(state(&repo, "main", &killed, short), "running");
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the lease never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Neither restore nor verify takes it; latest is still a complete backup.
    let target = scratch.path().join("r");
    let short_env = [
        ("PGSAFE_LEASE_TTL_SECS", "2"),
        ("PGSAFE_LEASE_SKEW_SECS", "0"),
    ];
    refused(
        &restore_repo_env(&repo, "main", Some(&killed), &target, &short_env),
        &["incomplete"],
    );
    assert!(!target.exists());
    let latest = catalog(&repo, "main", short)
        .latest()
        .unwrap()
        .id
        .to_string();
    assert_ne!(latest, killed);
}

/// Restore of `latest` and of a chosen (older) ID: every commit acknowledged before each
/// backup's stop is there (load running during the backups).
fn restore_latest_and_chosen(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(init(&c, &repo, "main"), "init");
    let load = LoadGenerator::start_with(
        &c,
        LoadOptions {
            clients: 2,
            ..LoadOptions::default()
        },
    );
    load.wait_for_transactions(30, Duration::from_secs(60));
    let (old, old_mark) = backup_marking_stop(&c, &repo, "main", &load);
    load.wait_for_transactions(load.transactions() + 30, Duration::from_secs(60));
    let (new, new_mark) = backup_marking_stop(&c, &repo, "main", &load);
    load.wait_for_transactions(load.transactions() + 10, Duration::from_secs(60));
    let report = load.stop();
    assert_ne!(old, new);

    for (which, id, mark) in [(None, &new, new_mark), (Some(old.as_str()), &old, old_mark)] {
        let target = scratch.path().join(format!("data-{id}"));
        let out = ok(
            restore_repo(&repo, "main", which, &target),
            "restore --repo",
        );
        let r = json(&out);
        assert_eq!(
            r["backup"]
                .as_str()
                .or(r["source"].as_str())
                .map(|p| p.ends_with(id.as_str())),
            Some(true),
            "{m}: restored the wrong backup: {r}"
        );
        let mut restored = Cluster::adopt(&install, &target, ClusterOptions::new());
        restored.start();
        restored.wait_recovery_done();
        report
            .verify_at(&mut restored.connect(), mark)
            .unwrap_or_else(|e| panic!("{m} ({id}): {e}"));
        restored.stop();
    }
}

per_major!(restore_latest_and_chosen: 10, 13, 16, 18);

/// Hostile repository content: a planted pgsafe.json of another cluster (with the newest
/// lineage) is foreign and never latest; odd names, a file and a symbolic link to a real
/// backup under backups/ are reported and never followed or restored.
#[test]
fn hostile_entries_are_reported_never_used() {
    let install = PgInstall::major(15);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(init(&c, &repo, "main"), "init");
    let real = backup(&c, &repo, "main");
    let dir = backups_dir(&repo, "main");

    // A copy of the real backup with another system identifier and a later stop LSN.
    let planted = dir.join("29991231T235959Z");
    common::copy_to(&dir.join(&real), &planted);
    let info = fs::read_to_string(planted.join("pgsafe.json")).unwrap();
    let mut v: Value = serde_json::from_str(&info).unwrap();
    v["system_identifier"] = Value::String("1234567890123456789".into());
    v["stop_lsn"] = Value::String("FF/0".into());
    v["stop_tli"] = Value::from(99);
    fs::write(planted.join("pgsafe.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    // A link to the real backup, a folder with a terminal escape in its name, a file.
    symlink(dir.join(&real), dir.join("30000101T000000Z")).unwrap();
    fs::create_dir(dir.join("x\u{1b}[2Jy")).unwrap();
    fs::write(dir.join("stray"), b"x").unwrap();

    let cat = catalog(&repo, "main", LeaseTiming::default());
    assert_eq!(cat.get("29991231T235959Z").unwrap().state.name(), "foreign");
    assert_eq!(cat.latest().unwrap().id.as_str(), real);
    assert_eq!(cat.odd_entries.len(), 3, "{:?}", cat.odd_entries);
    assert!(cat.get("30000101T000000Z").is_none());

    let t1 = scratch.path().join("t1");
    refused(
        &restore_repo(&repo, "main", Some("29991231T235959Z"), &t1),
        &["foreign", "system identifier"],
    );
    refused(
        &restore_repo(&repo, "main", Some("30000101T000000Z"), &t1),
        &["no backup"],
    );
    refused(&restore_repo(&repo, "main", Some("../../etc"), &t1), &[]);
    refused(
        &pgsafe(&[
            "verify",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "--backup",
            "29991231T235959Z",
        ]),
        &["foreign"],
    );
    assert!(!t1.exists(), "a refused restore wrote nothing");
    // latest restores the real backup, not the planted one.
    let out = ok(
        restore_repo(&repo, "main", Some("latest"), &t1),
        "restore latest",
    );
    let control = pgsafe::control::read_control_file(&t1.join("global/pg_control")).unwrap();
    assert_ne!(
        control.system_identifier.0,
        1234567890123456789,
        "{}",
        text(&out)
    );
    // A newer backup damaged after it was taken: verify (of latest) finds it, records the
    // failure, and latest falls back to the older good backup.
    let newer = backup(&c, &repo, "main");
    assert_eq!(
        catalog(&repo, "main", LeaseTiming::default())
            .latest()
            .unwrap()
            .id
            .as_str(),
        newer
    );
    fs::write(dir.join(&newer).join("PG_VERSION"), b"99\n").unwrap();
    let out = pgsafe(&["verify", "--repo", s(&repo), "--cluster", "main", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let cat = catalog(&repo, "main", LeaseTiming::default());
    assert!(cat.get(&newer).unwrap().failed_verification());
    assert_eq!(cat.latest().unwrap().id.as_str(), real);
    // A restore test of latest (the good one) is recorded as such.
    let scratch2 = scratch.path().join("scratch2");
    fs::create_dir(&scratch2).unwrap();
    pgsafe_testkit::server_user().chown(&scratch2);
    let bin = install.bin_dir.clone();
    ok(
        pgsafe(&[
            "verify",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "--restore-test",
            "--pg-bindir",
            s(&bin),
            "--scratch-dir",
            s(&scratch2),
            "--progress",
            "none",
        ]),
        "restore test of latest",
    );
    let cat = catalog(&repo, "main", LeaseTiming::default());
    let v = cat.get(&real).unwrap().verification.clone().unwrap();
    assert!(v.restore_test && v.problems == 0, "{v:?}");
}

/// A promoted standby continues the cluster's lineage on a new timeline: its backups are the
/// registered cluster's (same system identifier). When the old primary, still running after
/// the failover (split brain), wrote more WAL on the old timeline and was backed up afterwards,
/// the two branches diverge and nothing in the repository says which one is live: `latest` is
/// refused with both IDs named (ordering by timeline would pick one, by LSN the other), and a
/// restore of the backup the DBA names works.
#[test]
fn promoted_standby_continues_the_lineage() {
    let install = PgInstall::major(16);
    let p = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    p.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    p.execute("INSERT INTO t (v) SELECT 'before' FROM generate_series(1, 100)");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(init(&p, &repo, "main"), "init");
    let first = backup(&p, &repo, "main");
    let mut s = Cluster::new_standby(&p);
    s.wait_for_replay(&p);
    let from_standby = backup(&s, &repo, "main");
    s.promote();
    s.execute("INSERT INTO t (v) SELECT 'new primary' FROM generate_series(1, 10)");
    let promoted = backup(&s, &repo, "main");
    // The old primary goes on: more WAL on timeline 1 than the promoted one has.
    p.execute("INSERT INTO t (v) SELECT 'diverged' FROM generate_series(1, 50000)");
    p.execute("SELECT pg_switch_wal()");
    p.execute("INSERT INTO t (v) SELECT 'diverged' FROM generate_series(1, 1000)");
    let old_branch = backup(&p, &repo, "main");

    let cat = catalog(&repo, "main", LeaseTiming::default());
    for id in [&first, &from_standby, &promoted, &old_branch] {
        assert_eq!(cat.get(id).unwrap().state.name(), "complete", "{id}");
    }
    let info = |id: &str| cat.get(id).unwrap().info.clone().unwrap();
    assert!(info(&from_standby).from_standby);
    assert_eq!(info(&promoted).stop_tli.0, 2);
    assert!(
        info(&old_branch).stop_lsn > info(&promoted).stop_lsn,
        "the old branch should have the higher LSN"
    );
    let (a, b) = cat.diverging().expect("the branches diverge");
    assert!(
        [&a, &b].contains(&&promoted) && [&a, &b].contains(&&old_branch),
        "{a} {b}"
    );

    let target = scratch.path().join("restored");
    let out = restore_repo(&repo, "main", None, &target);
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "refused", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&promoted) && msg.contains(&old_branch),
        "{msg}"
    );
    assert!(
        !target.join("PG_VERSION").exists(),
        "a refused restore writes nothing"
    );
    ok(
        restore_repo(&repo, "main", Some(&promoted), &target),
        "restore of the named backup",
    );
    let mut r = Cluster::adopt(&install, &target, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert_eq!(
        r.query_one::<i64>("SELECT count(*) FROM t WHERE v = 'new primary'"),
        10
    );
    assert_eq!(
        r.query_one::<i64>("SELECT count(*) FROM t WHERE v = 'diverged'"),
        0
    );
    r.stop();
}
