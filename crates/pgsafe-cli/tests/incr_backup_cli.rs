//! Differential and incremental backups into a repository, through the real binary against
//! real servers: a full backup, pgbench writes, then an incremental that stores fewer bytes
//! and whose manifest lists every file (pgsafe verify and PostgreSQL's pg_verifybackup accept
//! it); `--type diff` takes the full backup as parent; and the parents that must be refused,
//! each making the backup full with the reason said: another system's backup, a backup whose
//! verification failed, an interrupted (killed) backup, which is never a parent.
//! Restoring chains is tested in incr_restore_cli.rs.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgsafe::repo::LeaseTiming;
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, client_bin_dir, per_major, pgbench_command, pgbench_init,
    wal_tool,
};
use serde_json::Value;

use common::{
    backups_dir, command, ok, path_str as s, pgsafe, repo_backup_ok, repo_catalog, repo_init,
};

fn cluster(major: u32) -> Cluster {
    Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    )
}

/// `n` pgbench transactions (one client).
fn pgbench(c: &Cluster, n: u32) {
    let out = pgbench_command(c)
        .args(["-n", "-c", "1", "-t", &n.to_string(), "postgres"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench: {out:?}");
}

/// The paths a backup's manifest lists, as the files they stand for (incremental objects
/// under their file's path), and how many are incremental objects.
fn manifest_files(folder: &Path) -> (BTreeSet<String>, usize) {
    let m =
        pgsafe::manifest::Manifest::parse(&std::fs::read(folder.join("backup_manifest")).unwrap())
            .unwrap();
    let mut incr = 0;
    let files = m
        .files
        .iter()
        .map(|f| {
            let p = f.path_lossy().into_owned();
            match p.strip_suffix(".pgsafe-incr") {
                Some(t) => {
                    incr += 1;
                    t.to_owned()
                }
                None => p,
            }
        })
        .collect();
    (files, incr)
}

fn folder(repo: &Path, id: &Value) -> std::path::PathBuf {
    backups_dir(repo, "main").join(id.as_str().unwrap())
}

fn verify_ok(repo: &Path, id: &Value) {
    ok(
        pgsafe(&[
            "verify",
            "--repo",
            s(repo),
            "--cluster",
            "main",
            "--backup",
            id.as_str().unwrap(),
            "--json",
        ]),
        "pgsafe verify of the incremental backup",
    );
}

fn incremental_stores_less_and_lists_every_file(major: u32) {
    let c = cluster(major);
    pgbench_init(&c, 2);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    // No earlier backup: full, saying so.
    let full = repo_backup_ok(&c, &repo, "main", &["--type", "incr"]);
    assert_eq!(full.get("backup_type"), None, "{full}");
    assert!(
        full["backup_type_reason"]
            .as_str()
            .unwrap()
            .contains("no earlier complete backup"),
        "{full}"
    );
    pgbench(&c, 200);
    c.execute("CREATE TABLE created_after AS SELECT g FROM generate_series(1, 5000) g");
    let incr = repo_backup_ok(&c, &repo, "main", &["--type", "incr"]);
    assert_eq!(incr["backup_type"], "incr", "{incr}");
    assert_eq!(incr["parent"], full["backup_id"], "{incr}");
    assert_eq!(incr["parent_start_lsn"], full["start_lsn"], "{incr}");
    assert_eq!(incr["format"], 2, "{incr}");
    assert_eq!(incr["changed_source"]["kind"], "page_scan", "{incr}");
    let stored = |v: &Value| v["stored_bytes"].as_u64().unwrap();
    assert!(
        stored(&incr) * 4 < stored(&full),
        "the incremental stored {} bytes, the full {}",
        stored(&incr),
        stored(&full)
    );
    // A page scan reads every byte: more than it stores.
    assert!(
        incr["bytes_read"].as_u64().unwrap() > stored(&incr),
        "{incr}"
    );

    // Every file of the full backup that still exists is listed, whole or incremental; the
    // new table is stored whole.
    let (full_files, _) = manifest_files(&folder(&repo, &full["backup_id"]));
    let (incr_files, n_incr) = manifest_files(&folder(&repo, &incr["backup_id"]));
    assert!(n_incr > 0);
    assert_eq!(incr["incremental_files"], n_incr as u64, "{incr}");
    for f in &full_files {
        let gone = !c.data_dir().join(f).exists()
            && !matches!(
                f.as_str(),
                "backup_label" | "tablespace_map" | "pgsafe.json"
            );
        assert!(
            gone || incr_files.contains(f),
            "{f} is not in the incremental's manifest"
        );
    }
    let table: String = c.query_one("SELECT pg_relation_filepath('created_after')");
    assert!(incr_files.contains(&table));
    assert!(
        folder(&repo, &incr["backup_id"]).join(&table).is_file(),
        "new file stored whole"
    );

    // Its own objects check out: pgsafe verify, and PostgreSQL's pg_verifybackup reads the
    // incremental objects as the manifest lists them.
    verify_ok(&repo, &incr["backup_id"]);
    // The tool of the backup's major where there is one (14+); before that, Debian's 15 with
    // its WAL check off (it reads only its own major's WAL).
    let mut cmd = if major >= 14 {
        Command::new(wal_tool(major, "pg_verifybackup"))
    } else {
        let mut c = Command::new(client_bin_dir().join("pg_verifybackup"));
        c.arg("--no-parse-wal");
        c
    };
    let out = cmd.arg(folder(&repo, &incr["backup_id"])).output().unwrap();
    assert!(out.status.success(), "pg_verifybackup: {out:?}");

    // diff: the changes since the full backup; then incr takes the newest, the diff.
    pgbench(&c, 50);
    let diff = repo_backup_ok(&c, &repo, "main", &["--type", "diff"]);
    assert_eq!(diff["backup_type"], "diff", "{diff}");
    assert_eq!(diff["parent"], full["backup_id"], "{diff}");
    let next = repo_backup_ok(&c, &repo, "main", &["--type", "incr"]);
    assert_eq!(next["parent"], diff["backup_id"], "{next}");
    let cat = repo_catalog(&repo, "main", LeaseTiming::default());
    let chain: Vec<String> = cat
        .chain(next["backup_id"].as_str().unwrap())
        .unwrap()
        .iter()
        .map(|b| b.id.to_string())
        .collect();
    assert_eq!(
        chain,
        [&next, &diff, &full].map(|v| v["backup_id"].as_str().unwrap().to_owned())
    );
    // info shows the chain: type, parent, bytes read and stored, the source and the reason.
    let id = next["backup_id"].as_str().unwrap();
    let out = ok(
        pgsafe(&[
            "info",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "--backup",
            id,
            "--json",
        ]),
        "info --json",
    );
    let b = &common::json(&out)["backup"];
    assert_eq!(b["type"], "incr", "{b}");
    assert_eq!(b["parent"], diff["backup_id"], "{b}");
    assert_eq!(b["bytes_read"], next["bytes_read"], "{b}");
    assert_eq!(b["stored_bytes"], next["stored_bytes"], "{b}");
    assert_eq!(b["changed_source"]["kind"], "page_scan", "{b}");
    assert!(
        b["type_reason"]
            .as_str()
            .unwrap()
            .contains(diff["backup_id"].as_str().unwrap())
    );
    assert_eq!(b["chain_problem"], Value::Null, "{b}");
    assert_eq!(b["usable"], true, "{b}");
    let text = common::text(&ok(
        pgsafe(&[
            "info",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "--backup",
            id,
        ]),
        "info",
    ));
    assert!(
        text.contains("parent") && text.contains(diff["backup_id"].as_str().unwrap()),
        "{text}"
    );
    // The diff's parent removed by hand: the chain is broken, and info says so.
    let full_dir = folder(&repo, &full["backup_id"]);
    let moved = dir.path().join("full-moved");
    std::fs::rename(&full_dir, &moved).unwrap();
    let out = ok(
        pgsafe(&[
            "info",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "--backup",
            id,
            "--json",
        ]),
        "info --json",
    );
    let b = &common::json(&out)["backup"];
    assert_eq!(b["usable"], false, "{b}");
    assert!(
        b["chain_problem"]
            .as_str()
            .unwrap()
            .contains(full["backup_id"].as_str().unwrap()),
        "{b}"
    );
    std::fs::rename(&moved, &full_dir).unwrap();

    // Asked for full: full.
    let f2 = repo_backup_ok(&c, &repo, "main", &["--type", "full"]);
    assert_eq!(f2.get("backup_type"), None, "{f2}");
    assert_eq!(f2.get("parent"), None, "{f2}");
}
per_major!(incremental_stores_less_and_lists_every_file: 10, 14, 17, 18);

/// The reason a backup was made full (the JSON summary).
fn full_because(v: &Value, needle: &str) {
    assert_eq!(v.get("backup_type"), None, "not full: {v}");
    let r = v["backup_type_reason"].as_str().unwrap_or_default();
    assert!(r.contains(needle), "reason {r:?} does not say {needle:?}");
}

fn refused_parents_make_a_full_backup(major: u32) {
    let c = cluster(major);
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    let first = repo_backup_ok(&c, &repo, "main", &[]);
    // Not asked for a type: full (see backup/parent.rs AUTO_INCREMENTAL).
    full_because(&first, "default");

    // A killed backup stays incomplete and is never the parent.
    let conn = c.conninfo();
    let mut child = command(&[
        "backup",
        "--repo",
        s(&repo),
        "--cluster",
        "main",
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--progress",
        "none",
        "--max-rate",
        "1M",
    ])
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
        let cat = repo_catalog(&repo, "main", short);
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
    while repo_catalog(&repo, "main", short)
        .get(&killed)
        .unwrap()
        .state
        .name()
        != "incomplete"
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the lease never lapsed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_kill = repo_backup_ok(&c, &repo, "main", &["--type", "incr"]);
    assert_eq!(after_kill["backup_type"], "incr", "{after_kill}");
    assert_eq!(after_kill["parent"], first["backup_id"], "{after_kill}");
    assert_eq!(
        repo_catalog(&repo, "main", short)
            .get(&killed)
            .unwrap()
            .state
            .name(),
        "incomplete"
    );

    // Verification failed (a stored file damaged): the next backup is full.
    let victim = folder(&repo, &after_kill["backup_id"]).join("PG_VERSION");
    std::fs::write(&victim, b"99\n").unwrap();
    let out = pgsafe(&[
        "verify",
        "--repo",
        s(&repo),
        "--cluster",
        "main",
        "--backup",
        after_kill["backup_id"].as_str().unwrap(),
        "--json",
    ]);
    assert!(!out.status.success(), "verify passed a damaged backup");
    let v = repo_backup_ok(&c, &repo, "main", &["--type", "incr"]);
    full_because(&v, "failed its latest verification");

    // Another system's backup, newest in the cluster's folder: full.
    // (A fresh initdb: the testkit otherwise copies one template, system identifier included.)
    let other = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().fresh_initdb(true),
    );
    let other_repo = dir.path().join("other");
    ok(repo_init(&other, &other_repo, "main"), "init other");
    let theirs = repo_backup_ok(&other, &other_repo, "main", &[]);
    let id = theirs["backup_id"].as_str().unwrap();
    let src = backups_dir(&other_repo, "main").join(id);
    let dst = backups_dir(&repo, "main").join(id);
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(cp.success());
    let v = repo_backup_ok(&c, &repo, "main", &["--type", "incr"]);
    full_because(&v, "another database system");
    // With it gone, the full backup just taken is the parent again.
    std::fs::remove_dir_all(&dst).unwrap();
    let next = repo_backup_ok(&c, &repo, "main", &["--type", "incr"]);
    assert_eq!(next["parent"], v["backup_id"], "{next}");
}
per_major!(refused_parents_make_a_full_backup: 10, 17);
