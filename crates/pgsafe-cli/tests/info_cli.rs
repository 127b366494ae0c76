//! `pgsafe info` on a real repository: two clusters of different majors, complete, interrupted
//! (SIGKILL), pinned and verified backups, a planted foreign `pgsafe.json` and a garbage one.
//! Every figure `info --json` gives is checked against the backup's own `pgsafe.json` (the
//! oracle: what the backup wrote), and the human output's key lines are checked. A repository
//! of 1,000 synthetic backups measures `info`'s time (printed, not asserted).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

use common::{command, json, ok, pgsafe, text};

/// The first backup of cluster `new`, renamed to sort after the others.
const FIRST: &str = "20991231T000000Z";
/// A damaged copy of the second backup.
const DAMAGED: &str = "20000101T000000Z";
/// In cluster `old`: a foreign `pgsafe.json`, and a garbage one.
const FOREIGN: &str = "20000102T000000Z";
const GARBAGE: &str = "20000103T000000Z";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `pgsafe init` of `c` as `name` in `repo`.
fn init(c: &Cluster, repo: &Path, name: &str) {
    ok(common::repo_init(c, repo, name), "init");
}

/// `pgsafe backup --repo` of `c` as `name`, plus `extra`.
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
        "--progress",
        "none",
    ]);
    cmd.args(extra);
    cmd
}

/// A repository backup that must succeed: its ID and its `pgsafe.json`.
fn backup(c: &Cluster, repo: &Path, name: &str) -> (String, Value) {
    let out = ok(
        backup_cmd(c, repo, name, &[]).output().unwrap(),
        "backup --repo",
    );
    let id = json(&out)["backup_id"].as_str().unwrap().to_owned();
    (id.clone(), pgsafe_json(repo, name, &id))
}

fn folder(repo: &Path, cluster: &str, id: &str) -> PathBuf {
    repo.join(cluster).join("backups").join(id)
}

fn pgsafe_json(repo: &Path, cluster: &str, id: &str) -> Value {
    serde_json::from_slice(&fs::read(folder(repo, cluster, id).join("pgsafe.json")).unwrap())
        .unwrap()
}

/// `pgsafe verify --repo` of backup `id` (recorded in the repository): its exit code.
fn verify(repo: &Path, cluster: &str, id: &str) -> Option<i32> {
    let out = pgsafe(&[
        "verify",
        "--repo",
        s(repo),
        "--cluster",
        cluster,
        "--backup",
        id,
        "--json",
    ]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    out.status.code()
}

/// `pgsafe info --repo`, plus `extra`, counting a lease as live until its expiry exactly.
fn info(repo: &Path, extra: &[&str]) -> Output {
    info_skew(repo, extra, 0)
}

/// `info` with a lease counted as live until `skew` seconds after its expiry.
fn info_skew(repo: &Path, extra: &[&str], skew: u32) -> Output {
    command(&["info", "--repo", s(repo)])
        .args(extra)
        .env("PGSAFE_LEASE_SKEW_SECS", skew.to_string())
        .output()
        .unwrap()
}

fn cluster_doc<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == name)
        .unwrap_or_else(|| panic!("cluster {name} missing: {doc:#}"))
}

fn backup_doc<'a>(cluster: &'a Value, id: &str) -> &'a Value {
    cluster["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("backup {id} missing: {cluster:#}"))
}

/// Unix seconds as `info --json` writes times.
fn rfc3339(v: &Value) -> Value {
    let t = chrono::DateTime::from_timestamp(v.as_i64().unwrap(), 0).unwrap();
    Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The figures of a complete backup in `info --json` are those of its `pgsafe.json`.
fn assert_matches_pgsafe_json(b: &Value, pj: &Value) {
    for (ours, theirs) in [
        ("start_lsn", "start_lsn"),
        ("start_timeline", "start_tli"),
        ("stop_lsn", "stop_lsn"),
        ("stop_timeline", "stop_tli"),
        ("wal_first", "start_wal"),
        ("wal_last", "stop_wal"),
        ("original_bytes", "bytes"),
        ("stored_bytes", "stored_bytes"),
        ("duration_secs", "duration_secs"),
        ("label", "label"),
    ] {
        assert_eq!(b[ours], pj[theirs], "{ours} vs pgsafe.json {theirs}: {b:#}");
    }
    assert_eq!(b["wal_bytes"], pj["wal"]["bytes"]);
    assert_eq!(b["started_at"], rfc3339(&pj["started_at"]));
    assert_eq!(b["finished_at"], rfc3339(&pj["finished_at"]));
    assert_eq!(b["type"], "full");
    let page_errors = pj["page_checksums"]["corrupt"].as_array().map(|c| {
        c.iter()
            .map(|f| f["blocks"].as_array().unwrap().len())
            .sum::<usize>()
    });
    assert_eq!(
        b["page_checksum_errors"].as_u64(),
        page_errors.map(|n| n as u64)
    );
}

/// The names in the first column of each `| field |` table of docs/info-json.md.
fn documented_fields() -> Vec<Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/info-json.md");
    let text = fs::read_to_string(path).unwrap();
    let mut tables = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for line in text.lines() {
        if line.starts_with("| field |") {
            cur = Some(Vec::new());
        } else if line.starts_with("|---") {
        } else if let (Some(t), true) = (&mut cur, line.starts_with('|')) {
            let first = line.split('|').nth(1).unwrap();
            t.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
        } else if let Some(t) = cur.take() {
            tables.push(t);
        }
    }
    tables.extend(cur);
    tables
}

/// Every documented name (`a.b` a path) is in `v`, and every field of `v` is documented.
fn assert_documented(table: &[String], v: &Value) {
    for name in table {
        let found = name.split('.').try_fold(v, |v, k| v.get(k)).is_some();
        assert!(found, "{name} is documented but missing from {v:#}");
    }
    for key in v.as_object().unwrap().keys() {
        let documented = table
            .iter()
            .any(|n| n == key || n.starts_with(&format!("{key}.")));
        assert!(documented, "{key} is not in docs/info-json.md");
    }
}

#[test]
fn two_clusters_with_complete_interrupted_pinned_verified_foreign_and_garbage_backups() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let new = Cluster::started(&PgInstall::major(17), ClusterOptions::new().fast_unsafe());
    let old = Cluster::started(&PgInstall::major(13), ClusterOptions::new().fast_unsafe());
    new.execute(
        "CREATE TABLE t AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
    );
    init(&new, &repo, "new");
    init(&old, &repo, "old");

    let (id, b_first) = backup(&new, &repo, "new");
    // Renamed by an operator to a name that sorts last: info keeps the lineage order.
    fs::rename(folder(&repo, "new", &id), folder(&repo, "new", FIRST)).unwrap();
    new.execute("INSERT INTO t SELECT g, 'y' FROM generate_series(1, 1000) g");
    let (second_id, b_second) = backup(&new, &repo, "new");
    let second_id = second_id.as_str();
    let (old_id, old_b) = backup(&old, &repo, "old");
    let old_id = old_id.as_str();
    ok(
        pgsafe(&["pin", "--repo", s(&repo), "--cluster", "new", FIRST]),
        "pin",
    );
    assert_eq!(verify(&repo, "new", second_id), Some(0));
    // A copy of the second backup with a changed file: verify fails, and says so in the
    // repository.
    common::copy_to(
        &folder(&repo, "new", second_id),
        &folder(&repo, "new", DAMAGED),
    );
    fs::write(folder(&repo, "new", DAMAGED).join("PG_VERSION"), "99\n").unwrap();
    assert_eq!(verify(&repo, "new", DAMAGED), Some(1));

    // A backup killed while it copies, with a 2-second lease: running while its lease lives,
    // then incomplete.
    let mut child = backup_cmd(&new, &repo, "new", &["--max-rate", "2M"])
        .env("PGSAFE_LEASE_TTL_SECS", "2")
        .env("PGSAFE_LEASE_SKEW_SECS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let killed = loop {
        let found = fs::read_dir(repo.join("new/backups"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("base").exists() && !p.join("pgsafe.json").exists());
        if let Some(p) = found {
            break p.file_name().unwrap().to_str().unwrap().to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = killed.as_str();
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    // With an hour of clock-skew margin its lease still counts: running, with its writer.
    let doc = json(&ok(
        info_skew(&repo, &["--cluster", "new", "--json"], 3600),
        "info",
    ));
    let k = backup_doc(cluster_doc(&doc, "new"), killed);
    assert_eq!(k["state"], "running", "{k:#}");
    assert_eq!(k["writer"]["pid"], pid);
    assert!(
        cluster_doc(&doc, "new")["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["backup"] != killed),
        "a running backup is not a problem"
    );
    let t = Instant::now();
    loop {
        let doc = json(&ok(info(&repo, &["--cluster", "new", "--json"]), "info"));
        if backup_doc(cluster_doc(&doc, "new"), killed)["state"] == "incomplete" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the lease never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // In the old cluster's folder: the new cluster's pgsafe.json (foreign), and garbage.
    let planted = folder(&repo, "old", FOREIGN);
    fs::create_dir(&planted).unwrap();
    fs::copy(
        folder(&repo, "new", FIRST).join("pgsafe.json"),
        planted.join("pgsafe.json"),
    )
    .unwrap();
    let garbage = folder(&repo, "old", GARBAGE);
    fs::create_dir(&garbage).unwrap();
    fs::write(garbage.join("pgsafe.json"), b"{\"format\": 1, \"label\": ").unwrap();

    let out = ok(info(&repo, &["--json"]), "info --json");
    let doc = json(&out);
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["ok"], false);
    assert!(doc["generated_at"].is_string());
    assert_eq!(doc["problems"], Value::Array(Vec::new()));

    // The new cluster: registration, order, states, figures, pin, verification, problems.
    let n = cluster_doc(&doc, "new");
    assert_eq!(n["registration"]["major"], "17");
    assert_eq!(
        n["registration"]["system_identifier"],
        b_first["system_identifier"]
    );
    assert_eq!(
        n["registration"]["wal_segment_size"],
        b_first["wal_segment_size"]
    );
    let ids: Vec<&str> = n["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [FIRST, DAMAGED, second_id, killed],
        "lineage order (the copy ties with its original: by ID), then the backup without \
         pgsafe.json"
    );
    let first = backup_doc(n, FIRST);
    let second = backup_doc(n, second_id);
    let damaged = backup_doc(n, DAMAGED);
    assert_matches_pgsafe_json(first, &b_first);
    assert_matches_pgsafe_json(second, &b_second);
    assert_matches_pgsafe_json(damaged, &b_second);
    assert_eq!(first["state"], "complete");
    assert_eq!(
        (first["pinned"].as_bool(), second["pinned"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(first["verification"], Value::Null);
    assert_eq!(second["verification"]["result"], "passed");
    assert_eq!(second["verification"]["problems"], 0);
    assert_eq!(damaged["verification"]["result"], "failed");
    assert!(damaged["verification"]["problems"].as_u64().unwrap() > 0);
    assert_eq!(
        (damaged["usable"].as_bool(), damaged["latest"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        (second["latest"].as_bool(), first["latest"].as_bool()),
        (Some(true), Some(false))
    );
    let k = backup_doc(n, killed);
    assert_eq!(k["state"], "incomplete");
    assert_eq!(k["stop_lsn"], Value::Null);
    assert_eq!(k["writer"], Value::Null);
    assert_eq!(n["status"]["ok"], false);
    assert_eq!(n["status"]["problems"], 2);
    assert_eq!(n["status"]["last_good_backup"], second_id);
    assert!(n["status"]["last_good_backup_age_secs"].as_u64().is_some());
    assert_eq!(n["status"]["last_verified_backup"], DAMAGED);
    let kinds: Vec<(&str, &str)> = n["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap(),
                p["backup"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("failed_verification", DAMAGED), ("incomplete", killed)]
    );
    let w = &n["recoverability"];
    assert_eq!(w["restore_points"], 2, "the damaged copy is not a point");
    assert_eq!(w["continuous"], false);
    assert_eq!(w["earliest"]["backup"], FIRST);
    assert_eq!(w["earliest"]["lsn"], b_first["stop_lsn"]);
    assert_eq!(w["latest"]["backup"], second_id);
    assert_eq!(w["latest"]["lsn"], b_second["stop_lsn"]);
    assert_eq!(w["latest"]["timeline"], b_second["stop_tli"]);
    assert_eq!(w["latest"]["time"], rfc3339(&b_second["finished_at"]));
    let t = &n["totals"];
    let count = |k: &str| t[k].as_u64().unwrap();
    assert_eq!(
        [
            count("complete"),
            count("incomplete"),
            count("pinned"),
            count("failed_verification")
        ],
        [3, 1, 1, 1]
    );
    assert_eq!(
        count("original_bytes"),
        b_first["bytes"].as_u64().unwrap() + 2 * b_second["bytes"].as_u64().unwrap()
    );

    // The old cluster: its own major, and the planted documents as problems, never used.
    let o = cluster_doc(&doc, "old");
    assert_eq!(o["registration"]["major"], "13");
    assert_eq!(
        o["registration"]["system_identifier"],
        old_b["system_identifier"]
    );
    assert_matches_pgsafe_json(backup_doc(o, old_id), &old_b);
    let foreign = backup_doc(o, FOREIGN);
    assert_eq!(foreign["state"], "foreign");
    assert_eq!(foreign["usable"], false);
    assert!(
        foreign["reason"]
            .as_str()
            .unwrap()
            .contains("system identifier")
    );
    let bad = backup_doc(o, GARBAGE);
    assert_eq!(bad["state"], "corrupt");
    assert_eq!(bad["usable"], false);
    let kinds: Vec<(&str, &str)> = o["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap(),
                p["backup"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds, [("corrupt", GARBAGE), ("foreign", FOREIGN)]);
    assert_eq!(o["recoverability"]["restore_points"], 1);
    assert_eq!(o["recoverability"]["latest"]["backup"], old_id);
    assert_eq!(backup_doc(o, old_id)["latest"], true);

    // The human output: problems first, then the window, then the table.
    let out = ok(info(&repo, &[]), "info");
    let human = String::from_utf8(out.stdout).unwrap();
    eprintln!("{human}");
    let pos = |needle: &str| {
        human
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{human}"))
    };
    pos("cluster new: PostgreSQL 17");
    pos("cluster old: PostgreSQL 13");
    let status = pos(&format!(
        "status    PROBLEMS (2): last good backup {second_id} finished"
    ));
    let failed = pos(&format!("PROBLEM   backup {DAMAGED} failed verification"));
    let incomplete = pos(&format!("PROBLEM   backup {killed} is incomplete"));
    let window = pos("restore   2 points");
    let header = pos("ID  ");
    assert!(status < failed && failed < incomplete && incomplete < window && window < header);
    pos(&format!("PROBLEM   backup {GARBAGE} is corrupt"));
    pos(&format!("PROBLEM   backup {FOREIGN} is of another cluster"));
    pos("the repository keeps no WAL between backups");
    let row = |id: &str| {
        human
            .lines()
            .find(|l| l.trim_start().starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{human}"))
            .to_owned()
    };
    let r1 = row(FIRST);
    assert!(r1.contains("complete") && r1.ends_with("pinned"), "{r1}");
    assert!(r1.contains(b_first["stop_lsn"].as_str().unwrap()), "{r1}");
    assert!(r1.contains(b_first["start_wal"].as_str().unwrap()), "{r1}");
    let r2 = row(second_id);
    assert!(
        r2.contains("complete (latest)") && r2.contains("passed "),
        "{r2}"
    );
    assert!(row(DAMAGED).contains("FAILED ("));
    assert!(row(killed).contains("incomplete"));
    // Columns are aligned: the STATE column starts at the same place on every row.
    let header = human
        .lines()
        .find(|l| l.trim_start().starts_with("ID "))
        .unwrap();
    let col = header.find("STATE").unwrap();
    assert_eq!(r1.find("complete"), Some(col), "{header}\n{r1}");

    // One cluster only, and one backup in detail.
    let one = json(&ok(
        info(&repo, &["--cluster", "old", "--json"]),
        "info --cluster",
    ));
    assert_eq!(one["clusters"].as_array().unwrap().len(), 1);
    let d = json(&ok(
        info(&repo, &["--cluster", "new", "--backup", "latest", "--json"]),
        "info --backup latest",
    ));
    assert_eq!(d["cluster"], "new");
    let b = &d["backup"];
    assert_eq!(b["id"], second_id);
    assert_matches_pgsafe_json(b, &b_second);
    for (ours, theirs) in [
        ("checkpoint_lsn", "checkpoint_lsn"),
        ("pgsafe_version", "pgsafe_version"),
        ("files", "files"),
        ("vanished_files", "vanished_files"),
        ("shrunk_files", "shrunk_files"),
        ("data_checksums", "data_checksums"),
        ("tablespaces", "tablespaces"),
        ("server_version", "server_version"),
        ("compression", "compression"),
        ("checksum_algorithm", "checksum"),
    ] {
        assert_eq!(b[ours], b_second[theirs], "{ours}");
    }
    assert_eq!(b["wal_mode"], b_second["wal"]["mode"]);
    // docs/info-json.md documents every field, and nothing that is not there.
    let tables = documented_fields();
    // The WAL archive's tables (after these five) are checked by info_wal_cli.
    assert_eq!(tables.len(), 10, "{tables:?}");
    for (table, v) in tables
        .iter()
        .zip([&doc, n, &n["recoverability"], second, &d])
    {
        assert_documented(table, v);
    }

    let detail = ok(info(&repo, &["--backup", FOREIGN]), "info --backup");
    let detail = String::from_utf8(detail.stdout).unwrap();
    assert!(detail.contains("foreign: system identifier"), "{detail}");
    let detail = ok(
        info(&repo, &["--cluster", "new", "--backup", "latest"]),
        "info --backup",
    );
    eprintln!("{}", String::from_utf8_lossy(&detail.stdout));

    // Errors: as text on stderr, and as the JSON error object with --json.
    let out = info(&repo, &["--cluster", "nope", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = json(&out);
    assert_eq!(e["schema_version"], 1);
    assert_eq!(e["error"]["kind"], "not_found", "{e:#}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("nope"),
        "{e:#}"
    );
    let out = info(
        &repo,
        &["--cluster", "new", "--backup", "20991231T999999Z", "--json"],
    );
    assert_eq!(json(&out)["error"]["kind"], "not_found", "{}", text(&out));
    let out = info(&dir.path().join("not-a-repo"), &["--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = json(&out);
    assert_eq!(e["error"]["kind"], "usage", "{e:#}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a pgsafe repository")
    );

    // At the top of the repository: a link to a cluster's folder, a file, a folder without
    // registration, a cluster whose registration is garbage. Reported; the link is never
    // followed (no third cluster), the other clusters are still shown.
    std::os::unix::fs::symlink(repo.join("new"), repo.join("evil")).unwrap();
    fs::write(repo.join("notes.txt"), "x").unwrap();
    fs::create_dir(repo.join("stray")).unwrap();
    fs::create_dir(repo.join("broken")).unwrap();
    fs::write(repo.join("broken/cluster.json"), "{garbage").unwrap();
    let doc = json(&ok(info(&repo, &["--json"]), "info"));
    let names: Vec<&str> = doc["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new", "old"]);
    let problems: Vec<(&str, &str)> = doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["kind"].as_str().unwrap(), p["object"].as_str().unwrap()))
        .collect();
    assert_eq!(
        problems,
        [
            ("odd_entry", "evil"),
            ("odd_entry", "notes.txt"),
            ("odd_entry", "stray"),
            ("unreadable_cluster", "broken"),
        ]
    );
    let human = String::from_utf8(ok(info(&repo, &[]), "info").stdout).unwrap();
    let link = human.find("PROBLEM  evil: a symbolic link").expect(&human);
    assert!(link < human.find("cluster new:").unwrap(), "{human}");
    let out = info(&repo, &["--cluster", "broken", "--json"]);
    assert_eq!(json(&out)["error"]["kind"], "corrupt", "{}", text(&out));
}

/// Measures `info` on a repository of 1,000 well-formed synthetic backups (copies of a real
/// backup's `pgsafe.json` with consecutive stop points), and checks that all are there, in
/// lineage order. The times are printed, not asserted.
#[test]
fn info_on_a_thousand_backups() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let c = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    init(&c, &repo, "main");
    let (id, real) = backup(&c, &repo, "main");
    fs::remove_dir_all(folder(&repo, "main", &id)).unwrap();
    let base_lsn = 0x1_0000_0000u64;
    let seg = real["wal_segment_size"].as_u64().unwrap();
    let lsn = |v: u64| format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff);
    let wal = |v: u64| {
        let n = v / seg;
        let per = 0x1_0000_0000 / seg;
        format!("00000001{:08X}{:08X}", n / per, n % per)
    };
    let count = 1000u64;
    for i in 0..count {
        let start = base_lsn + i * 0x100_0000;
        let stop = start + 0x8000;
        let mut v = real.clone();
        v["start_lsn"] = lsn(start).into();
        v["checkpoint_lsn"] = lsn(start).into();
        v["stop_lsn"] = lsn(stop).into();
        v["start_tli"] = 1.into();
        v["stop_tli"] = 1.into();
        v["start_wal"] = wal(start).into();
        v["stop_wal"] = wal(stop).into();
        v["started_at"] = (1_700_000_000 + i as i64 * 3600).into();
        v["finished_at"] = (1_700_000_060 + i as i64 * 3600).into();
        let t = chrono::DateTime::from_timestamp(1_700_000_000 + i as i64 * 3600, 0).unwrap();
        let id = t.format("%Y%m%dT%H%M%SZ").to_string();
        let d = repo.join("main/backups").join(&id);
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("pgsafe.json"),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
    }
    let t = Instant::now();
    let out = ok(info(&repo, &[]), "info");
    let human_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out_json = ok(info(&repo, &["--json"]), "info --json");
    let json_secs = t.elapsed().as_secs_f64();
    let doc = json(&out_json);
    let m = cluster_doc(&doc, "main");
    assert_eq!(m["totals"]["complete"], count);
    assert_eq!(m["recoverability"]["restore_points"], count);
    let stops: Vec<&str> = m["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["stop_lsn"].as_str().unwrap())
        .collect();
    assert_eq!(
        stops.first().copied(),
        Some(lsn(base_lsn + 0x8000).as_str())
    );
    assert_eq!(
        stops.last().copied(),
        Some(lsn(base_lsn + (count - 1) * 0x100_0000 + 0x8000).as_str())
    );
    let lines = String::from_utf8(out.stdout).unwrap().lines().count();
    assert!(lines > count as usize);
    eprintln!(
        "info on {count} backups: {human_secs:.3}s (text), {json_secs:.3}s (--json, {} bytes)",
        out_json.stdout.len()
    );
}
