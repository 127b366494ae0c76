//! `pgsafe metrics` on a repository holding real backups: two complete backups of one cluster
//! (one verified), an interrupted (incomplete) one, a running one (live lease), and a backup of
//! another cluster of another major planted among them (foreign). The Prometheus text is parsed
//! line by line and its numbers checked against the catalog and the backups' own pgsafe.json.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgsafe::repo::{EventKind, LeaseTiming, Registration, Repository, VerifyResult};
use pgsafe::storage::Ident;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

use common::{json, ok, refused};

/// (name, labels) -> value of a Prometheus text exposition, checking the line format: HELP
/// then TYPE gauge before a family's samples, `pgsafe_` names, numeric values, no duplicates.
fn parse_prometheus(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    let mut helped = String::new();
    let mut typed = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(!help.trim().is_empty(), "{line}");
            helped = name.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert_eq!(name, helped, "TYPE after its HELP: {line}");
            assert_eq!(kind, "gauge", "{line}");
            typed = name.to_owned();
        } else {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').expect("labels end with }")),
                None => (series, ""),
            };
            assert!(name.starts_with("pgsafe_"), "{line}");
            assert_eq!(name, typed, "a sample inside its family: {line}");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            assert!(
                out.insert((name.to_owned(), labels.to_owned()), value)
                    .is_none(),
                "duplicate series: {line}"
            );
        }
    }
    out
}

fn backup(c: &Cluster, target: &Path) {
    ok(
        common::pgsafe(&[
            "backup",
            "-D",
            c.data_dir().to_str().unwrap(),
            "-d",
            &c.conninfo(),
            "--target",
            target.to_str().unwrap(),
            "--compress",
            "zstd",
            "--progress",
            "none",
        ]),
        "backup",
    );
}

fn pgsafe_json(folder: &Path) -> Value {
    serde_json::from_slice(&fs::read(folder.join("pgsafe.json")).unwrap()).unwrap()
}

#[test]
fn metrics_of_a_repository_with_real_backups() {
    let main = Cluster::started(&PgInstall::major(18), ClusterOptions::new().fast_unsafe());
    let other = Cluster::started(&PgInstall::major(10), ClusterOptions::new().fast_unsafe());
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("repo");
    let repo = Repository::create(&root).unwrap();
    let cluster = Ident::new("main").unwrap();
    let backups = root.join("main/backups");
    fs::create_dir_all(&backups).unwrap();

    // Two complete backups of `main`, in the folders a repository backup uses.
    let (b1, b2) = ("20261203T100000Z", "20261203T110000Z");
    backup(&main, &backups.join(b1));
    main.execute("CREATE TABLE t AS SELECT generate_series(1, 10000) AS i");
    backup(&main, &backups.join(b2));
    let info1 = pgsafe_json(&backups.join(b1));
    let info2 = pgsafe_json(&backups.join(b2));
    let reg = Registration {
        format: pgsafe::repo::REPO_FORMAT,
        cluster: cluster.clone(),
        system_identifier: serde_json::from_value(info1["system_identifier"].clone()).unwrap(),
        server_version: serde_json::from_value(info1["server_version"].clone()).unwrap(),
        wal_segment_size: serde_json::from_value(info1["wal_segment_size"].clone()).unwrap(),
        pgdata: main.data_dir().to_string_lossy().into_owned(),
        registered_at: "2026-12-03T09:00:00Z".into(),
        pgsafe_version: "test".into(),
    };
    assert!(repo.register(&reg).unwrap());
    // A backup of another cluster (PostgreSQL 10) planted among them: foreign.
    backup(&other, &backups.join("20261203T120000Z"));
    // An interrupted backup: a folder without pgsafe.json and without a lease.
    fs::create_dir(backups.join("20261203T130000Z")).unwrap();
    fs::write(backups.join("20261203T130000Z/PG_VERSION"), "18\n").unwrap();
    // A running one: no pgsafe.json, and a live lease holding its ID.
    let running = Ident::new("20261203T140000Z").unwrap();
    fs::create_dir(backups.join(running.as_str())).unwrap();
    let lease = pgsafe::repo::Lease::acquire(
        repo.backend(),
        &cluster,
        &Ident::new("backup").unwrap(),
        &running,
        Some(&running),
        LeaseTiming::default(),
    )
    .unwrap()
    .expect("the lease is taken");
    // b2 was verified and passed.
    repo.record_event(
        &cluster,
        EventKind::Verified {
            backup: Ident::new(b2).unwrap(),
            result: VerifyResult::Passed,
            problems: 0,
            restore_test: false,
        },
    )
    .unwrap();

    let out = ok(
        common::pgsafe(&["metrics", "--repo", root.to_str().unwrap()]),
        "metrics",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let s = parse_prometheus(&text);
    let get = |name: &str, labels: &str| {
        *s.get(&(name.to_owned(), labels.to_owned()))
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing in\n{text}"))
    };
    let m = "cluster=\"main\"";
    for (state, n) in [
        ("complete", 2.0),
        ("running", 1.0),
        ("incomplete", 1.0),
        ("foreign", 1.0),
        ("corrupt", 0.0),
    ] {
        assert_eq!(
            get("pgsafe_backups", &format!("{m},state=\"{state}\"")),
            n,
            "{state}"
        );
    }
    // The numbers are the catalog's and the backups' own.
    let catalog = repo.catalog(&cluster, LeaseTiming::default()).unwrap();
    assert_eq!(catalog.latest().unwrap().id.as_str(), b2);
    let finished = |i: &Value| i["finished_at"].as_i64().unwrap() as f64;
    assert_eq!(
        get("pgsafe_last_good_backup_timestamp_seconds", m),
        finished(&info2)
    );
    assert_eq!(
        get("pgsafe_last_good_backup_size_bytes", m),
        info2["bytes"].as_u64().unwrap() as f64
    );
    assert_eq!(
        get("pgsafe_last_good_backup_stored_bytes", m),
        info2["stored_bytes"].as_u64().unwrap() as f64
    );
    assert!(
        get("pgsafe_last_good_backup_stored_bytes", m)
            < get("pgsafe_last_good_backup_size_bytes", m),
        "zstd stores less"
    );
    assert!(get("pgsafe_last_good_backup_age_seconds", m) >= 0.0);
    assert_eq!(
        get("pgsafe_last_verified_backup_timestamp_seconds", m),
        finished(&info2)
    );
    assert_eq!(get("pgsafe_last_verification_success", m), 1.0);
    assert_eq!(
        get("pgsafe_recovery_window_start_timestamp_seconds", m),
        finished(&info1)
    );
    assert_eq!(
        get("pgsafe_recovery_window_end_timestamp_seconds", m),
        finished(&info2)
    );
    let lsn = |s: &str| {
        let (hi, lo) = s.split_once('/').unwrap();
        ((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) as f64
    };
    assert_eq!(
        get("pgsafe_recovery_window_end_lsn_bytes", m),
        lsn(info2["stop_lsn"].as_str().unwrap())
    );
    assert!(
        get("pgsafe_recovery_window_start_lsn_bytes", m)
            < get("pgsafe_recovery_window_end_lsn_bytes", m)
    );
    assert_eq!(
        get("pgsafe_running_operations", &format!("{m},kind=\"backup\"")),
        1.0
    );
    assert_eq!(
        get(
            "pgsafe_cluster_info",
            &format!(
                "{m},system_identifier=\"{}\",major=\"18\"",
                reg.system_identifier
            )
        ),
        1.0
    );

    // JSON: the same figures.
    let doc = json(&ok(
        common::pgsafe(&["metrics", "--repo", root.to_str().unwrap(), "--json"]),
        "metrics --json",
    ));
    assert_eq!(doc["schema_version"], 1);
    let c = &doc["clusters"][0];
    assert_eq!(c["cluster"], "main");
    assert_eq!(c["backups"]["foreign"], 1);
    assert_eq!(c["last_good"]["id"], b2);
    assert_eq!(c["window"]["earliest"]["id"], b1);
    assert_eq!(c["last_verification"]["passed"], true);

    // The running backup ends: no live lease, so it counts as incomplete now.
    lease.release(repo.backend()).unwrap();
    // --output: written atomically, readable by node-exporter, nothing else left in the folder;
    // the repository from the config file.
    let textfiles = scratch.path().join("textfiles");
    fs::create_dir(&textfiles).unwrap();
    let cfg = scratch.path().join("pgsafe.toml");
    fs::write(&cfg, format!("repo = {:?}\n", root.to_str().unwrap())).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o600)).unwrap();
    let prom = textfiles.join("pgsafe.prom");
    let out = ok(
        common::pgsafe(&[
            "--config",
            cfg.to_str().unwrap(),
            "metrics",
            "--prometheus",
            "--output",
            prom.to_str().unwrap(),
        ]),
        "metrics --output",
    );
    assert!(out.stdout.is_empty());
    let names: Vec<_> = fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("pgsafe.prom")]);
    assert_eq!(
        fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let s = parse_prometheus(&fs::read_to_string(&prom).unwrap());
    let key = |state: &str| {
        (
            "pgsafe_backups".to_owned(),
            format!("{m},state=\"{state}\""),
        )
    };
    assert_eq!(s[&key("running")], 0.0);
    assert_eq!(s[&key("incomplete")], 2.0);
    assert!(
        !s.keys().any(|(n, _)| n == "pgsafe_running_operations"),
        "no live lease"
    );

    // A cluster that is not registered, and a folder that is not a repository: exit 2.
    let out = common::pgsafe(&[
        "metrics",
        "--repo",
        root.to_str().unwrap(),
        "--cluster",
        "nope",
    ]);
    refused(&out, &["nope", "not registered"]);
    let out = common::pgsafe(&["metrics", "--repo", scratch.path().to_str().unwrap()]);
    refused(&out, &["not a pgsafe repository"]);
}

/// Without --repo and without a config file naming one: exit 2, saying what to give.
#[test]
fn the_repository_must_be_named() {
    let out = common::command(&["metrics", "--json"])
        .env("PGSAFE_CONFIG", "")
        .output()
        .unwrap();
    refused(&out, &["the repository is not given", "--repo"]);
    assert_eq!(json(&out)["error"]["kind"], "usage");
}
