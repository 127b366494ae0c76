//! `pgsafe info` on a repository a real server archives into with `pgsafe archive-push`: the WAL
//! held per timeline, the last archived segment and the lag, the recoverability window from the
//! backup to the end of the continuous WAL; then, from the unlucky DBA's side, a segment lost
//! after the backup (a hole: the window ends there, PITR past it needs a new backup), one lost
//! before it (harmless, labelled so), a gap the archiver recorded, and a planted object —
//! each reported, the JSON as docs/info-json.md documents it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use pgsafe::repo::{EventKind, Repository};
use pgsafe::storage::Ident;
use pgsafe::types::{Lsn, TimelineId, WalSegSize, WalSegment};
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, archive_settings, give_to_server_user, per_major,
    server_owned_tempdir, wait_archived,
};
use serde_json::Value;
use tempfile::TempDir;

use common::{bin, json, ok, pgsafe, repo_init};

const CLUSTER: &str = "main";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn info(repo: &Path, json_out: bool) -> std::process::Output {
    let mut args = vec!["info", "--repo", s(repo), "--cluster", CLUSTER];
    if json_out {
        args.push("--json");
    }
    ok(pgsafe(&args), "info")
}

fn wal_of(repo: &Path) -> (Value, Value) {
    let doc = json(&info(repo, true));
    let c = doc["clusters"][0].clone();
    (c["wal"].clone(), c)
}

/// The stored object of segment `seg` (any compression suffix).
fn object_of(repo: &Path, seg: &str) -> PathBuf {
    let dir = repo
        .join(CLUSTER)
        .join("wal")
        .join(&seg[..8])
        .join(&seg[8..16]);
    fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(seg))
        .unwrap_or_else(|| panic!("{seg} is not in {}", dir.display()))
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

/// Every documented name is a field of `v`, and every field of `v` is documented.
fn assert_documented(table: &[String], v: &Value) {
    for name in table {
        assert!(
            v.get(name).is_some(),
            "{name} is documented but missing from {v:#}"
        );
    }
    for key in v.as_object().unwrap().keys() {
        assert!(table.contains(key), "{key} is not in docs/info-json.md");
    }
}

fn lsn(v: &Value) -> Lsn {
    v.as_str().unwrap().parse().unwrap()
}

/// A server archiving into a new repository (1 MB segments from 11 on), registered as main.
fn archiving(major: u32) -> (Cluster, TempDir, PathBuf) {
    let install = PgInstall::major(major);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let mut opts = ClusterOptions::new().fast_unsafe();
    if major >= 11 {
        opts = opts.wal_segsize_mb(1);
    }
    for line in archive_settings(
        &bin(),
        &["archive-push", "--repo", s(&repo), "--cluster", CLUSTER],
    ) {
        opts = opts.conf(line);
    }
    let c = Cluster::started(&install, opts);
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    (c, scratch, repo)
}

/// A backup into the repository: its ID and its `pgsafe.json`.
fn backup(c: &Cluster, repo: &Path) -> (String, Value) {
    let conn = c.conninfo();
    let out = ok(
        pgsafe(&[
            "backup",
            "--repo",
            s(repo),
            "--cluster",
            CLUSTER,
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
            "--json",
            "--progress",
            "none",
        ]),
        "backup",
    );
    let id = json(&out)["backup_id"].as_str().unwrap().to_owned();
    let meta: Value = serde_json::from_slice(
        &fs::read(
            repo.join(CLUSTER)
                .join("backups")
                .join(&id)
                .join("pgsafe.json"),
        )
        .unwrap(),
    )
    .unwrap();
    (id, meta)
}

/// The archived segments of timeline 1 (names, without compression suffixes), sorted.
fn archived_segments(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let tl = repo.join(CLUSTER).join("wal").join("00000001");
    for log in fs::read_dir(&tl)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        for f in fs::read_dir(log.path()).unwrap().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if n.len() >= 24 && !n.contains(".backup") && !n.contains(".partial") {
                out.push(n[..24].to_owned());
            }
        }
    }
    out.sort();
    out
}

fn info_shows_the_archive_its_gaps_and_the_window(major: u32) {
    let (c, _scratch, repo) = archiving(major);
    let m = format!("PostgreSQL {major}");
    for _ in 0..3 {
        wait_archived(&c);
    }
    let (id, meta) = backup(&c, &repo);
    let size = WalSegSize::new(meta["wal_segment_size"].as_u64().unwrap()).unwrap();
    let start_wal: WalSegment = meta["start_wal"].as_str().unwrap().parse().unwrap();
    let stop_wal: WalSegment = meta["stop_wal"].as_str().unwrap().parse().unwrap();
    let mut last = String::new();
    for _ in 0..3 {
        last = wait_archived(&c);
    }

    // All there: no gap, the window from the backup's stop to at least the last switch.
    let (wal, cluster) = wal_of(&repo);
    assert_eq!(wal["problems"], serde_json::json!([]), "{m}: {wal:#}");
    assert_eq!(cluster["status"]["ok"], true, "{m}: {cluster:#}");
    assert_eq!(wal["gaps"], serde_json::json!([]), "{m}");
    let tl = &wal["timelines"][0];
    assert_eq!(tl["timeline"], 1, "{m}");
    assert_eq!(tl["history"], "none", "{m}");
    assert!(
        tl["wal_max"].as_str().unwrap() >= last.as_str(),
        "{m}: {tl:#}"
    );
    assert!(wal["last_archived"]["segment"].as_str().unwrap() >= last.as_str());
    assert!(wal["archive_lag_secs"].is_u64(), "{m}: {wal:#}");
    let w = &wal["window"];
    assert_eq!(w["backup"], id.as_str(), "{m}: {w:#}");
    assert_eq!(w["from"]["lsn"], meta["stop_lsn"], "{m}");
    let last_seg: WalSegment = last.parse().unwrap();
    let last_end = last_seg.start_lsn(size).unwrap().0 + size.bytes();
    assert!(lsn(&w["to"]["lsn"]).0 >= last_end, "{m}: {w:#}");
    assert_eq!(w["ends_at_hole"], false, "{m}");
    let tables = documented_fields();
    assert_eq!(tables.len(), 10, "{tables:?}");
    assert_documented(&tables[5], &wal);
    assert_documented(&tables[6], tl);
    assert_documented(&tables[8], w);

    // A segment lost after the backup: a hole where the window ends.
    let seg = |segno: u64| WalSegment::from_segno(TimelineId(1), segno, size);
    let after = seg(stop_wal.segno(size).unwrap() + 1);
    fs::remove_file(object_of(&repo, &after.to_string())).unwrap();
    let (wal, cluster) = wal_of(&repo);
    assert_eq!(cluster["status"]["ok"], false, "{m}");
    let gaps = wal["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{m}: {wal:#}");
    let g = &gaps[0];
    assert_documented(&tables[7], g);
    assert_eq!(g["source"], "hole");
    assert_eq!(g["first"], after.to_string());
    assert_eq!(g["last"], after.to_string());
    assert_eq!(g["before_oldest_backup"], false);
    assert_eq!(g["after_newest_backup"], true);
    let problems = wal["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{m}: {wal:#}");
    assert_eq!(problems[0]["kind"], "wal_gap");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("take a new full backup"),
        "{m}: {wal:#}"
    );
    assert_eq!(
        wal["window"]["to"]["lsn"],
        after.start_lsn(size).unwrap().to_string()
    );
    assert_eq!(wal["window"]["ends_at_hole"], true);

    // A segment lost before the backup's start, between others: harmless, not a problem.
    let before = seg(start_wal.segno(size).unwrap() - 1);
    fs::remove_file(object_of(&repo, &before.to_string())).unwrap();
    // A gap the archiver recorded, and an object that is not WAL.
    let r = Repository::open(&repo).unwrap();
    let far = seg(last_seg.segno(size).unwrap() + 100);
    r.record_event(
        &Ident::new(CLUSTER).unwrap(),
        EventKind::WalGap {
            timeline: TimelineId(1),
            first: far,
            last: far,
            reason: "the push queue was over its limit".into(),
            dropped_at: "2026-01-01T00:00:00.000000Z".into(),
            dropped_by: "db1".into(),
        },
    )
    .unwrap();
    fs::write(
        repo.join(CLUSTER)
            .join("wal")
            .join("00000001")
            .join("notes"),
        b"x",
    )
    .unwrap();
    let (wal, cluster) = wal_of(&repo);
    let gaps = wal["gaps"].as_array().unwrap();
    let sources: Vec<(&str, bool, &str)> = gaps
        .iter()
        .map(|g| {
            (
                g["first"].as_str().unwrap(),
                g["before_oldest_backup"].as_bool().unwrap(),
                g["source"].as_str().unwrap(),
            )
        })
        .collect();
    let (b, a, f) = (before.to_string(), after.to_string(), far.to_string());
    assert_eq!(
        sources,
        vec![
            (&*b, true, "hole"),
            (&*a, false, "hole"),
            (&*f, false, "recorded")
        ],
        "{m}: {wal:#}"
    );
    assert_eq!(gaps[2]["recorded_by"], "db1");
    assert_documented(&tables[7], &gaps[2]);
    let kinds: Vec<&str> = wal["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["unknown_name", "wal_gap", "wal_gap"],
        "{m}: {wal:#}"
    );
    assert_eq!(cluster["status"]["problems"], 3, "{m}: {cluster:#}");
    let text = String::from_utf8(info(&repo, false).stdout).unwrap();
    for needle in [
        "PITR",
        "take a new full backup",
        "(before the oldest backup: harmless)",
        "dropped by db1",
        &format!("timeline 1 {a} .. {a}: hole"),
    ] {
        assert!(text.contains(needle), "{m}: {needle:?} not in\n{text}");
    }
}

per_major!(info_shows_the_archive_its_gaps_and_the_window: 16, 12);

/// Sets the mode of `path`.
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The `push-failed` events in the repository.
fn failure_events(repo: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(repo.join(CLUSTER).join("events")) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-push-failed-"))
        .collect()
}

/// Waits (a bounded loop on the server's own statistics, not a timing assertion) until the
/// archiver has counted `n` failures.
fn wait_failures(c: &Cluster, n: i64) {
    let t = std::time::Instant::now();
    loop {
        let failed: i64 = c.query_one("SELECT failed_count FROM pg_stat_archiver");
        if failed >= n {
            return;
        }
        assert!(
            t.elapsed().as_secs() < 120,
            "PostgreSQL {}: the archiver counted {failed} failures, not {n}",
            c.major()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// From the unlucky DBA's side: the repository's WAL folder stops taking files (its
/// permissions). The archiver retries the segment again and again; info shows, for the
/// cluster and its timeline, the last failed push (the segment, why, how often, not archived
/// since) from ONE event in the repository however many retries there were (the server's
/// pg_stat_archiver is the oracle that there were several), metrics counts it unresolved;
/// once the folder is fixed the segment arrives and info says it was archived since.
fn info_shows_the_last_failed_push(major: u32) {
    let (c, _scratch, repo) = archiving(major);
    let m = format!("PostgreSQL {major}");
    let ok_seg = wait_archived(&c);
    let (wal, _) = wal_of(&repo);
    assert!(wal["last_failed"].is_null(), "{m}: {wal:#}");
    assert!(wal["timelines"][0]["last_failed"].is_null(), "{m}: {wal:#}");
    // The folder the next segment goes to: no longer writable for the server's user.
    let log_dir = object_of(&repo, &ok_seg).parent().unwrap().to_owned();
    chmod(&log_dir, 0o555);
    c.execute("CREATE TABLE after_failure (i int)");
    let failing: String = c.query_one("SELECT pg_walfile_name(pg_switch_wal())");
    wait_failures(&c, 3);
    let retries: i64 = c.query_one("SELECT failed_count FROM pg_stat_archiver");
    let last_wal: Option<String> = c.query_one("SELECT last_failed_wal FROM pg_stat_archiver");
    assert_eq!(last_wal.as_deref(), Some(failing.as_str()), "{m}");
    assert_eq!(
        failure_events(&repo).len(),
        1,
        "{m}: one event however often the push failed ({retries} times)"
    );
    let (wal, _) = wal_of(&repo);
    let f = &wal["last_failed"];
    assert_eq!(f["file"], failing.as_str(), "{m}: {wal:#}");
    assert_eq!(f["timeline"], 1, "{m}: {f:#}");
    assert_eq!(f["archived_since"], false, "{m}: {f:#}");
    assert_eq!(f["recorded_in"], "repository", "{m}: {f:#}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("operating-system user"),
        "{m}: {f:#}"
    );
    // The data directory is on this host: the spool's count of retries is read too.
    assert!(f["failures"].as_u64().unwrap() >= 2, "{m}: {f:#}");
    assert_eq!(&wal["timelines"][0]["last_failed"], f, "{m}: {wal:#}");
    let tables = documented_fields();
    assert_documented(&tables[9], f);
    let text = String::from_utf8(info(&repo, false).stdout).unwrap();
    for needle in [
        format!("last failed push {failing}"),
        "NOT archived since".to_owned(),
    ] {
        assert!(text.contains(&needle), "{m}: {needle:?} not in\n{text}");
    }
    let prom =
        String::from_utf8(ok(pgsafe(&["metrics", "--repo", s(&repo)]), "metrics").stdout).unwrap();
    assert!(
        prom.contains("pgsafe_wal_archive_last_failed_push_unresolved{cluster=\"main\"} 1"),
        "{m}: {prom}"
    );

    // Fixed: the archiver's next retry stores it.
    chmod(&log_dir, 0o755);
    let next = wait_archived(&c);
    assert!(next > failing, "{m}");
    let (wal, _) = wal_of(&repo);
    let f = &wal["last_failed"];
    assert_eq!(f["file"], failing.as_str(), "{m}: {wal:#}");
    assert_eq!(f["archived_since"], true, "{m}: {f:#}");
    assert_eq!(wal["problems"], serde_json::json!([]), "{m}: {wal:#}");
    assert_eq!(failure_events(&repo).len(), 1, "{m}");
    let text = String::from_utf8(info(&repo, false).stdout).unwrap();
    assert!(text.contains("archived since"), "{m}: {text}");
    let prom =
        String::from_utf8(ok(pgsafe(&["metrics", "--repo", s(&repo)]), "metrics").stdout).unwrap();
    assert!(
        prom.contains("pgsafe_wal_archive_last_failed_push_unresolved{cluster=\"main\"} 0"),
        "{m}: {prom}"
    );
}

per_major!(info_shows_the_last_failed_push: 10, 14, 18);

/// `expire --keep-full 1` deletes the older backup and the archived WAL before the kept
/// backup's start, and nothing the kept backup needs: verify (which walks its archived WAL)
/// still passes, and info shows no gap and the window from the kept backup on.
fn expire_deletes_the_wal_no_kept_backup_needs(major: u32) {
    let (c, _scratch, repo) = archiving(major);
    let m = format!("PostgreSQL {major}");
    for _ in 0..2 {
        wait_archived(&c);
    }
    let (old, _) = backup(&c, &repo);
    for _ in 0..2 {
        wait_archived(&c);
    }
    let (kept, meta) = backup(&c, &repo);
    for _ in 0..2 {
        wait_archived(&c);
    }
    let start_wal = meta["start_wal"].as_str().unwrap().to_owned();
    let all = archived_segments(&repo);
    assert!(all.iter().any(|s| *s < start_wal), "{m}: {all:?}");
    let expire = |extra: &[&str]| {
        let mut args = vec![
            "expire",
            "--repo",
            s(&repo),
            "--cluster",
            CLUSTER,
            "--keep-full",
            "1",
        ];
        args.extend_from_slice(extra);
        ok(pgsafe(&args), "expire")
    };
    let dry = String::from_utf8(expire(&["--dry-run"]).stdout).unwrap();
    assert!(
        dry.contains("would delete timeline 1 segments"),
        "{m}: {dry}"
    );
    assert_eq!(archived_segments(&repo), all, "{m}: a dry run deleted WAL");
    let doc = json(&expire(&["--json"]));
    assert_eq!(doc["deleted"][0]["id"], old.as_str(), "{m}: {doc:#}");
    assert_eq!(doc["wal"]["kept_because"], Value::Null, "{m}: {doc:#}");
    let left = archived_segments(&repo);
    let want: Vec<String> = all.iter().filter(|s| **s >= start_wal).cloned().collect();
    assert_eq!(left, want, "{m}");
    assert_eq!(
        doc["wal_objects_deleted"].as_u64().unwrap() as usize,
        doc["wal"]["delete_objects"].as_array().unwrap().len(),
        "{m}"
    );
    let out = pgsafe(&[
        "verify",
        "--repo",
        s(&repo),
        "--cluster",
        CLUSTER,
        "--backup",
        &kept,
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{m}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (wal, cluster) = wal_of(&repo);
    assert_eq!(wal["gaps"], serde_json::json!([]), "{m}: {wal:#}");
    assert_eq!(wal["window"]["backup"], kept.as_str(), "{m}: {wal:#}");
    assert_eq!(cluster["status"]["ok"], true, "{m}: {cluster:#}");
    // Again: nothing more to delete.
    let doc = json(&expire(&["--json"]));
    assert_eq!(doc["wal_objects_deleted"], 0, "{m}: {doc:#}");
}

per_major!(expire_deletes_the_wal_no_kept_backup_needs: 15);
