//! `pgsafe expire` against real servers and real repository backups (plus cheap synthetic
//! entries: a real `pgsafe.json` with its lineage edited, in a folder of small files): dry run
//! lists exactly what is then deleted; pins, the newest valid backup and failed verification;
//! a backup running in a second process survives and verifies; SIGKILL at random points and
//! the next expire repairs; a promoted standby's timeline ordered by lineage; a backup of
//! another system identifier (pg_upgrade, re-initdb) never deleted.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe::repo::LeaseTiming;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};
use serde_json::Value;

use common::{backups_dir, command, json, ok, pgsafe};

const DAY: i64 = 86_400;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn init(c: &Cluster, repo: &Path, name: &str) {
    ok(common::repo_init(c, repo, name), "init");
}

fn backup_args(c: &Cluster, repo: &Path, name: &str) -> Vec<String> {
    [
        "backup",
        "--repo",
        s(repo),
        "--cluster",
        name,
        "-D",
        s(c.data_dir()),
        "-d",
        &c.conninfo(),
        "--json",
        "--progress",
        "none",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// A repository backup that must succeed: its ID.
fn backup(c: &Cluster, repo: &Path, name: &str) -> String {
    let args = backup_args(c, repo, name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = json(&ok(pgsafe(&args), "backup --repo"));
    v["backup_id"].as_str().unwrap().to_owned()
}

fn expire(repo: &Path, name: &str, extra: &[&str]) -> Output {
    let mut args = vec!["expire", "--repo", s(repo), "--cluster", name];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

/// `expire … --json` that must succeed.
fn expire_json(repo: &Path, name: &str, extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.push("--json");
    json(&ok(expire(repo, name, &args), "expire"))
}

/// IDs the plan deletes, in order.
fn planned(v: &Value) -> Vec<String> {
    v["plan"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["decision"]["action"] == "delete")
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

fn deleted(v: &Value) -> Vec<String> {
    v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The reason the plan gives for `id`.
fn reason(v: &Value, id: &str) -> String {
    let b = v["plan"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the plan: {v}"));
    format!(
        "{}:{}",
        b["decision"]["action"].as_str().unwrap(),
        b["decision"]["reason"].as_str().unwrap()
    )
}

/// The backup folders of `name`, sorted.
fn folders(repo: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(backups_dir(repo, name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn catalog(repo: &Path, name: &str) -> pgsafe::repo::Catalog {
    common::repo_catalog(repo, name, LeaseTiming::default())
}

/// A synthetic backup `id` of `name`: the `pgsafe.json` of the real backup `from` with its
/// lineage set (stop LSN `stop` on timeline `tli`, finished at `at`; no pgsafe.json for
/// `at` = None: an interrupted backup), and `files` small files.
fn synthetic(repo: &Path, from: &str, id: &str, lineage: Option<(u32, u64, i64)>, files: usize) {
    let name = "main";
    let dir = backups_dir(repo, name).join(id);
    fs::create_dir_all(&dir).unwrap();
    // pgsafe.json first, the data files after: a folder listing that returns the newest entries
    // first (tmpfs) then meets the data files before pgsafe.json, so an expire that did not
    // delete pgsafe.json first would leave a "complete" backup without its files.
    if let Some((tli, stop, at)) = lineage {
        let src = backups_dir(repo, name).join(from).join("pgsafe.json");
        let mut v: Value = serde_json::from_slice(&fs::read(src).unwrap()).unwrap();
        let lsn = |x: u64| format!("{:X}/{:X}", x >> 32, x & 0xffff_ffff);
        v["start_lsn"] = lsn(stop - 0x1000).into();
        v["stop_lsn"] = lsn(stop).into();
        v["start_tli"] = tli.into();
        v["stop_tli"] = tli.into();
        v["started_at"] = (at - 60).into();
        v["finished_at"] = at.into();
        fs::write(dir.join("pgsafe.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    }
    fs::create_dir_all(dir.join("base/1")).unwrap();
    for i in 0..files {
        fs::write(dir.join(format!("base/1/{i}")), b"synthetic").unwrap();
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn verify_ok(repo: &Path, name: &str, id: Option<&str>) {
    let mut args = vec!["verify", "--repo", s(repo), "--cluster", name, "--json"];
    if let Some(id) = id {
        args.extend(["--backup", id]);
    }
    let v = json(&ok(pgsafe(&args), "verify --repo"));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn keep_full_and_keep_within_dry_run_lists_exactly_what_is_deleted() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    init(&c, &repo, "main");
    let r1 = backup(&c, &repo, "main");
    c.execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
    let r2 = backup(&c, &repo, "main");
    let r3 = backup(&c, &repo, "main");
    // Older in lineage than the real ones, with IDs that sort after them.
    synthetic(
        &repo,
        &r1,
        "zz-month-old",
        Some((1, 0x100_0000, now() - 30 * DAY)),
        20,
    );
    synthetic(
        &repo,
        &r1,
        "zz-days-old",
        Some((1, 0x110_0000, now() - 3 * DAY)),
        20,
    );
    let all = folders(&repo, "main");
    assert_eq!(all.len(), 5);

    // No retention configured: nothing complete is deleted.
    let v = expire_json(&repo, "main", &["--dry-run"]);
    assert!(planned(&v).is_empty(), "{v}");
    assert_eq!(reason(&v, &r1), "keep:no_retention");

    let dry = expire_json(&repo, "main", &["--keep-within", "7d", "--dry-run"]);
    assert_eq!(planned(&dry), ["zz-month-old"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(folders(&repo, "main"), all, "a dry run deletes nothing");
    // The human plan shows the decision and reason per backup before the deletion.
    let out = ok(
        expire(&repo, "main", &["--keep-within", "7d"]),
        "expire --keep-within",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("zz-month-old")).unwrap();
    assert!(
        line.contains("DELETE") && line.contains("beyond retention"),
        "{text}"
    );
    let line = text.lines().find(|l| l.contains("zz-days-old")).unwrap();
    assert!(line.contains("finished within the last 7d"), "{text}");
    assert!(text.contains("deleted 1 backup(s)"), "{text}");
    assert!(!backups_dir(&repo, "main").join("zz-month-old").exists());

    // keep-full 2 from the config file; the flag wins over it.
    let cfg = scratch.path().join("pgsafe.toml");
    fs::write(&cfg, "[cluster.main]\nkeep_full = 2\n").unwrap();
    let from_file = expire_json(&repo, "main", &["--config", s(&cfg), "--dry-run"]);
    assert_eq!(planned(&from_file), ["zz-days-old", r1.as_str()]);
    let flag = expire_json(
        &repo,
        "main",
        &["--config", s(&cfg), "--keep-full", "3", "--dry-run"],
    );
    assert_eq!(planned(&flag), ["zz-days-old"]);
    let done = expire_json(&repo, "main", &["--config", s(&cfg)]);
    assert_eq!(deleted(&done), planned(&from_file));
    assert_eq!(folders(&repo, "main"), sorted(vec![r2.clone(), r3.clone()]));
    assert_eq!(catalog(&repo, "main").latest().unwrap().id.as_str(), r3);
    verify_ok(&repo, "main", None);
    verify_ok(&repo, "main", Some(&r2));
}

#[test]
fn pinned_and_newest_valid_are_kept_failed_verification_does_not_count() {
    let install = PgInstall::major(13);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    init(&c, &repo, "main");
    let b1 = backup(&c, &repo, "main");
    let b2 = backup(&c, &repo, "main");
    let b3 = backup(&c, &repo, "main");
    synthetic(
        &repo,
        &b1,
        "old",
        Some((1, 0x100_0000, now() - 90 * DAY)),
        5,
    );
    ok(
        pgsafe(&["pin", "--repo", s(&repo), "--cluster", "main", &b1]),
        "pin",
    );
    // Damage the newest backup and let verify find it (and record it).
    let table: String = c.query_one("SELECT pg_relation_filepath('t')");
    let f = backups_dir(&repo, "main").join(&b3).join(&table);
    let mut bytes = fs::read(&f).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&f, bytes).unwrap();
    let out = pgsafe(&[
        "verify",
        "--repo",
        s(&repo),
        "--cluster",
        "main",
        "--backup",
        &b3,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let v = expire_json(&repo, "main", &["--keep-full", "1"]);
    assert_eq!(deleted(&v), ["old"]);
    assert_eq!(reason(&v, &b1), "keep:pinned");
    assert_eq!(reason(&v, &b2), "keep:newest_valid");
    assert_eq!(reason(&v, &b3), "keep:newer_than_kept");
    // Unpinned, b1 goes; the newest valid one stays whatever the retention.
    ok(
        pgsafe(&["unpin", "--repo", s(&repo), "--cluster", "main", &b1]),
        "unpin",
    );
    // (No --keep-within here: b1 finished seconds ago and would be within any duration.)
    let v = expire_json(&repo, "main", &["--keep-full", "1"]);
    assert_eq!(deleted(&v), [b1.as_str()]);
    assert_eq!(folders(&repo, "main"), sorted(vec![b2.clone(), b3.clone()]));
    assert_eq!(catalog(&repo, "main").latest().unwrap().id.as_str(), b2);
    verify_ok(&repo, "main", None);
    // Bad retention values are refused before anything.
    let out = expire(&repo, "main", &["--keep-full", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    assert_eq!(folders(&repo, "main").len(), 2);
}

/// expire in one process while a backup runs in another: the running backup is kept (its live
/// lease), the interrupted leftover is deleted; the backup completes and verifies.
#[test]
fn expire_racing_a_running_backup_keeps_it() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g",
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    init(&c, &repo, "main");
    let first = backup(&c, &repo, "main");
    synthetic(&repo, &first, "crashed", None, 10);
    let mut args = backup_args(&c, &repo, "main");
    args.extend(["--max-rate".into(), "4M".into()]);
    let child = command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let running = loop {
        let cat = catalog(&repo, "main");
        if let Some(b) = cat.in_progress().next() {
            break b.id.as_str().to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the backup never showed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let v = expire_json(&repo, "main", &["--keep-full", "1"]);
    assert_eq!(deleted(&v), ["crashed"]);
    assert_eq!(reason(&v, &running), "keep:running");
    assert_eq!(reason(&v, &first), "keep:newest_valid");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = json(&out)["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(id, running);
    verify_ok(&repo, "main", Some(&id));
    // Now complete and newest: keep-full 1 keeps it and deletes the first.
    let v = expire_json(&repo, "main", &["--keep-full", "1"]);
    assert_eq!(deleted(&v), [first.as_str()]);
    assert_eq!(folders(&repo, "main"), [id]);
}

/// expire SIGKILLed at random points: every backup is then complete and untouched or
/// incomplete (never half-complete), latest never changes, and the next expire finishes the job.
#[test]
fn sigkill_of_expire_then_expire_repairs() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    init(&c, &repo, "main");
    let r1 = backup(&c, &repo, "main");
    let r2 = backup(&c, &repo, "main");
    let env = [
        ("PGSAFE_LEASE_TTL_SECS", "1"),
        ("PGSAFE_LEASE_SKEW_SECS", "0"),
    ];
    let mut killed_midway = 0;
    for round in 0..4u64 {
        for i in 0..12u64 {
            let id = format!("old-{round}-{i:02}");
            let at = now() - 10 * DAY + (i as i64) * 60;
            synthetic(&repo, &r1, &id, Some((1, 0x100_0000 + i * 0x1000, at)), 400);
        }
        let mut cmd = command(&[
            "expire",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "--keep-full",
            "2",
        ]);
        cmd.envs(env).stdout(Stdio::null()).stderr(Stdio::null());
        let events = |repo: &Path| {
            fs::read_dir(repo.join("main/events"))
                .map(|d| {
                    d.filter(|e| {
                        e.as_ref().is_ok_and(|e| {
                            e.file_name().to_string_lossy().contains("expire-started")
                        })
                    })
                    .count()
                })
                .unwrap_or(0)
        };
        let before = events(&repo);
        let mut child = cmd.spawn().unwrap();
        // A random point (sub-second clock bits as the random source): in even rounds 0 to 250
        // ms after the start; in odd rounds 0 to 20 ms after the first deletion began (its
        // event written), so that the kill lands among the deletions.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        if round % 2 == 1 {
            let t = Instant::now();
            while events(&repo) == before && t.elapsed() < Duration::from_secs(20) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            std::thread::sleep(Duration::from_millis(u64::from(nanos % 20)));
        } else {
            std::thread::sleep(Duration::from_millis(u64::from(nanos % 250)));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        let cat = catalog(&repo, "main");
        for b in &cat.backups {
            let st = b.state.name();
            assert!(st == "complete" || st == "incomplete", "{}: {st}", b.id);
            if st == "complete" {
                // Never half-deleted while still complete: its files are all there.
                let n = fs::read_dir(
                    backups_dir(&repo, "main")
                        .join(b.id.as_str())
                        .join("base/1"),
                )
                .map(|d| d.count())
                .unwrap_or(0);
                assert!(
                    b.id.as_str().starts_with('2') || n == 400,
                    "{}: {n} files",
                    b.id
                );
            }
        }
        assert_eq!(cat.latest().unwrap().id.as_str(), r2);
        let left = folders(&repo, "main").len();
        if status.code().is_none() && left > 2 && left < 14 {
            killed_midway += 1;
        }
        // The killed expire's lease (1 s) must die before another expire may run.
        let t = Instant::now();
        let v = loop {
            let mut cmd = command(&[
                "expire",
                "--repo",
                s(&repo),
                "--cluster",
                "main",
                "--keep-full",
                "2",
                "--json",
            ]);
            cmd.envs(env);
            let out = cmd.output().unwrap();
            if out.status.success() {
                break json(&out);
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("another expire"), "{err}");
            assert!(t.elapsed() < Duration::from_secs(30), "{err}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(
            v["plan"]["backups"].as_array().unwrap().len(),
            folders(&repo, "main").len() + deleted(&v).len()
        );
        assert_eq!(
            folders(&repo, "main"),
            sorted(vec![r1.clone(), r2.clone()]),
            "round {round}"
        );
        let cat = catalog(&repo, "main");
        assert!(cat.backups.iter().all(|b| b.is_complete()));
        assert!(cat.leases.is_empty(), "{:?}", cat.leases);
    }
    eprintln!("expire killed mid-way in {killed_midway} of 4 rounds");
    verify_ok(&repo, "main", None);
    verify_ok(&repo, "main", Some(&r1));
}

/// A promoted standby's backup (timeline 2) and the old primary's, which went on to higher
/// LSNs on timeline 1 (split brain), lie on diverging branches: which one the DBA goes on with
/// cannot be told from the repository, so expire deletes nothing complete and says why. Once
/// the DBA has removed the abandoned branch's backup, keep-full 1 keeps the promoted one.
#[test]
fn promoted_standby_backups_are_ordered_by_lineage() {
    let install = PgInstall::major(16);
    let p = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    p.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    p.execute("INSERT INTO t (v) SELECT 'before' FROM generate_series(1, 100)");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    init(&p, &repo, "main");
    let first = backup(&p, &repo, "main");
    let mut s2 = Cluster::new_standby(&p);
    s2.wait_for_replay(&p);
    s2.promote();
    s2.execute("INSERT INTO t (v) SELECT 'new primary' FROM generate_series(1, 10)");
    let promoted = backup(&s2, &repo, "main");
    p.execute("INSERT INTO t (v) SELECT 'diverged' FROM generate_series(1, 50000)");
    p.execute("SELECT pg_switch_wal()");
    let old_branch = backup(&p, &repo, "main");

    let dry = expire_json(&repo, "main", &["--keep-full", "1", "--dry-run"]);
    assert!(planned(&dry).is_empty(), "{:?}", planned(&dry));
    for id in [&first, &promoted, &old_branch] {
        assert_eq!(reason(&dry, id), "keep:branched", "{id}");
    }
    let done = expire_json(&repo, "main", &["--keep-full", "1"]);
    assert!(deleted(&done).is_empty());
    assert_eq!(folders(&repo, "main").len(), 3);
    // The DBA decides the old primary's branch is abandoned and removes its backup.
    std::fs::remove_dir_all(repo.join("main/backups").join(&old_branch)).unwrap();
    let dry = expire_json(&repo, "main", &["--keep-full", "1", "--dry-run"]);
    assert_eq!(planned(&dry), [first.as_str()]);
    assert_eq!(reason(&dry, &promoted), "keep:newest_valid");
    let done = expire_json(&repo, "main", &["--keep-full", "1"]);
    assert_eq!(deleted(&done), planned(&dry));
    assert_eq!(folders(&repo, "main"), std::slice::from_ref(&promoted));
    verify_ok(&repo, "main", None);
}

/// After a pg_upgrade or re-initdb the system identifier changes and LSNs and timelines start
/// over. A backup of the other system in the cluster's folder (newest ID, lowest LSN) is never
/// deleted nor counted; the registered system's retention goes on by its own lineage.
#[test]
fn another_system_identifier_is_never_deleted() {
    let install = PgInstall::major(16);
    let old = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    old.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 100000) g");
    old.execute("SELECT pg_switch_wal()");
    // A fresh initdb: a system identifier of its own (the testkit otherwise copies a template).
    let new = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().fresh_initdb(true),
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    init(&old, &repo, "main");
    init(&new, &repo, "upgraded");
    let a1 = backup(&old, &repo, "main");
    let a2 = backup(&old, &repo, "main");
    let n1 = backup(&new, &repo, "upgraded");
    // The new system's backup copied in under main with an ID that sorts last.
    let planted = "zzzz-after-upgrade";
    let src = backups_dir(&repo, "upgraded").join(&n1);
    let st = std::process::Command::new("cp")
        .args(["-a", s(&src), s(&backups_dir(&repo, "main").join(planted))])
        .status()
        .unwrap();
    assert!(st.success());
    let sys = |name: &str| catalog(&repo, name).registration.system_identifier;
    assert_ne!(sys("main"), sys("upgraded"));
    let v = expire_json(&repo, "main", &["--keep-full", "1"]);
    assert_eq!(reason(&v, planted), "keep:foreign");
    assert_eq!(deleted(&v), [a1.as_str()]);
    assert_eq!(reason(&v, &a2), "keep:newest_valid");
    assert_eq!(
        folders(&repo, "main"),
        sorted(vec![a2.clone(), planted.to_owned()])
    );
    // The upgraded cluster's own retention does not see main's backups.
    let v = expire_json(&repo, "upgraded", &["--keep-full", "1"]);
    assert!(deleted(&v).is_empty());
    assert_eq!(catalog(&repo, "main").latest().unwrap().id.as_str(), a2);
    verify_ok(&repo, "main", None);
}
