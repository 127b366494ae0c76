//! Red team of the repository's plain documents (docs/encryption.md: the marker, `pgsafe.json`
//! and events stay plain, so hosts without keys can read the catalog): someone who can write
//! the storage edits them. What may `info` and `restore` then believe?
//! - an older backup's `pgsafe.json` edited to end after the newest one: `info` believes it,
//!   but `restore` of `latest` never restores it (its manifest's WAL range disagrees);
//! - the marker of an encrypted repository rewritten as a plain one: a host holding keys
//!   refuses it, so nothing is stored unencrypted.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use age::secrecy::ExposeSecret;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::archive::{finish_segment, wal_objects};
use common::{command, json, ok, path_str as s, pgsafe, repo_init, text};

fn backup(c: &Cluster, repo: &Path) -> serde_json::Value {
    let conn = c.conninfo();
    json(&ok(
        pgsafe(&[
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
        ]),
        "backup",
    ))
}

/// Backup A, more rows, backup B; then A's `pgsafe.json` says it stopped after B (as an attacker
/// who wants `latest` to roll the database back would write it). `restore` of `latest` gives
/// B's rows or refuses; it never opens A's.
#[test]
fn an_older_backup_edited_to_look_newest_is_never_restored_as_latest() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    c.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i");
    let a = backup(&c, &repo)["backup_id"].as_str().unwrap().to_owned();
    c.execute("INSERT INTO t SELECT generate_series(1001, 2000)");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = backup(&c, &repo)["backup_id"].as_str().unwrap().to_owned();

    let doc_of = |id: &str| repo.join("main/backups").join(id).join("pgsafe.json");
    let db: serde_json::Value = serde_json::from_slice(&fs::read(doc_of(&b)).unwrap()).unwrap();
    let mut da: serde_json::Value = serde_json::from_slice(&fs::read(doc_of(&a)).unwrap()).unwrap();
    for k in ["stop_wal", "stop_time", "finished_at"] {
        da[k] = db[k].clone();
    }
    // Past B's stop (same segment): A sorts after B in lineage order.
    let (hi, lo) = db["stop_lsn"].as_str().unwrap().split_once('/').unwrap();
    let lo = u64::from_str_radix(lo, 16).unwrap() + 0x10;
    da["stop_lsn"] = format!("{hi}/{lo:X}").into();
    fs::write(doc_of(&a), serde_json::to_vec_pretty(&da).unwrap()).unwrap();

    let info = json(&ok(
        pgsafe(&["info", "--repo", s(&repo), "--cluster", "main", "--json"]),
        "info",
    ));
    eprintln!(
        "info after the edit: {}",
        info["clusters"][0]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{} {} latest={}", x["id"], x["state"], x["latest"]))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let target = scratch.path().join("restored");
    let out = pgsafe(&[
        "restore",
        "--repo",
        s(&repo),
        "--cluster",
        "main",
        "--pgdata",
        s(&target),
        "--progress",
        "none",
    ]);
    if !out.status.success() {
        eprintln!("restore of latest refused: {}", text(&out));
        assert!(
            text(&out).contains(&a),
            "refused, but without naming the edited backup: {}",
            text(&out)
        );
        assert!(!target.join("global/pg_control").exists());
        return;
    }
    let mut r = Cluster::adopt(&install, &target, ClusterOptions::new().fast_unsafe());
    r.start();
    r.wait_recovery_done();
    let n: i64 = r.query_one("SELECT count(*) FROM t");
    assert_eq!(
        n,
        2000,
        "restore of latest gave the older backup {a}'s rows: {}",
        text(&out)
    );
    eprintln!("restore of latest restored {b}'s rows");
    r.stop();
}

/// The marker of an encrypted repository rewritten as a plain repository's: every host that
/// holds a key (the database server pushing WAL, a backup) refuses it, and nothing is stored.
#[test]
fn a_marker_rewritten_as_plain_is_refused_by_hosts_with_keys() {
    let c = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let id = age::x25519::Identity::generate();
    let key = scratch.path().join("identity.key");
    fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let conn = c.conninfo();
    let run =
        |args: &[&str]| -> Output { command(args).env("PGSAFE_KEY_FILE", &key).output().unwrap() };
    ok(
        run(&[
            "init",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
            "--encrypt",
            "age",
            "--recipient",
            &id.to_public().to_string(),
            "--writer-key-out",
            s(&scratch.path().join("writer.key")),
        ]),
        "init --encrypt age",
    );
    let marker = repo.join("pgsafe-repo.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("encryption");
    m["format"] = 1.into();
    fs::write(&marker, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let (seg, _) = finish_segment(&c);
    let out = run(&[
        "archive-push",
        "--repo",
        s(&repo),
        "--cluster",
        "main",
        s(&c.data_dir().join("pg_wal").join(&seg)),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not encrypted"), "{}", text(&out));
    assert!(wal_objects(&repo, "main").is_empty());
    let out = run(&[
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
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let backups: Vec<_> = fs::read_dir(repo.join("main/backups"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(backups.is_empty(), "{backups:?}");
}
