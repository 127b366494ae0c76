//! Keeps the benchmark (`bench/run`, README "Benchmarks") from rotting: runs `bench/run --quick` on
//! a tiny dataset with the contenders that are installed (pgBackRest only if it is; nothing is
//! installed by the test), one run each, no page-cache drop and no priority change (other tests run
//! at the same time), and checks that it produced a report with numbers for pgsafe, the
//! snapshot-mode latency and its raw JSON. The numbers themselves are not checked: a tiny dataset
//! on a busy CI machine says nothing about speed.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use pgsafe_testkit::{client_bin_dir, repo_root, server_owned_tempdir, server_user};
use serde_json::Value;

#[test]
fn bench_run_quick_on_a_tiny_dataset() {
    let pg_bin = client_bin_dir();
    assert!(
        pg_bin.join("postgres").is_file() && pg_bin.join("initdb").is_file(),
        "the benchmark needs Debian's postgresql-15 server in {} (scripts/install-postgres)",
        pg_bin.display()
    );
    let work = server_owned_tempdir();
    let report = work.path().join("report.md");
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(repo_root().join("bench/run"))
        .args([
            "--quick",
            "--size-gb",
            "0.02",
            "--small-relations",
            "20",
            "--latency-runs",
            "2",
            "--no-drop-caches",
            "--no-disk-probe",
            "--no-install",
            "--nice",
            "0",
        ])
        .arg("--pgsafe")
        .arg(env!("CARGO_BIN_EXE_pgsafe"))
        .arg("--pgsafe-rev")
        .arg("bench smoke test")
        .arg("--pg-bin")
        .arg(&pg_bin)
        .arg("--os-user")
        .arg(&server_user().name)
        .arg("--work")
        .arg(work.path().join("work"))
        .arg("--out")
        .arg(&report)
        .output()
        .expect("running python3 bench/run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench/run failed ({}):\n{stderr}",
        out.status
    );
    eprintln!(
        "bench/run --quick (tiny) took {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let md = std::fs::read_to_string(&report).unwrap();
    assert_eq!(
        md.trim(),
        String::from_utf8_lossy(&out.stdout).trim(),
        "the report on stdout and in the file differ"
    );
    for needle in [
        "## Machine",
        "## Versions",
        "## Dataset",
        "## Results: backup, verify, restore",
        "## Ratios",
        "pg_basebackup -Fp -X stream -c fast",
        "floor: cp -a + sync",
        "## Snapshot mode",
    ] {
        assert!(md.contains(needle), "no {needle:?} in the report:\n{md}");
    }
    assert!(
        !md.contains("FAILED"),
        "a contender failed:\n{md}\n{stderr}"
    );

    let raw: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&report).with_extension("json")).unwrap(),
    )
    .unwrap();
    for key in [
        "backup pgsafe none",
        "backup pgsafe zstd",
        "backup pgsafe lz4",
        "backup pg_basebackup none",
        "backup floor none",
    ] {
        let run = &raw["main"][key][0];
        assert_eq!(run["ok"], true, "{key}: {run}");
        assert!(run["wall"].as_f64().unwrap() > 0.0, "{key}: {run}");
        assert!(run["out_bytes"].as_u64().unwrap() > 0, "{key}: {run}");
    }
    let pgsafe = &raw["main"]["backup pgsafe none"][0];
    assert!(
        pgsafe["maxrss"].as_u64().unwrap() > 0 && pgsafe["phases"]["copy"].as_f64().is_some(),
        "{pgsafe}"
    );
    assert!(
        raw["latency"]["default"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true),
        "{}",
        raw["latency"]
    );
    assert!(raw["ratios"].as_array().is_some_and(|r| !r.is_empty()));
}

/// Keeps the WAL archive benchmark (`bench/archive`, README "Benchmarks") from rotting: its smoke
/// mode (1 MiB segments, a 16-segment backlog, 16 MiB of WAL to replay, one round) with every
/// contender that exists — pgsafe's archive-push/archive-get always (the binary under test), its
/// look-ahead and prefetch when the binary has them, pgBackRest when installed. The script checks
/// what each contender did (every backlog segment in its repository; after a replay: out of
/// recovery with the source's pgbench balances and history rows) and exits non-zero when one
/// failed; this test checks that, and the report's shape. Durations are never checked.
#[test]
fn bench_archive_smoke() {
    let pg_bin = client_bin_dir();
    let work = server_owned_tempdir();
    let report = work.path().join("archive.md");
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(repo_root().join("bench/archive"))
        .args(["--smoke", "--no-drop-caches", "--no-install", "--nice", "0"])
        .arg("--pgsafe")
        .arg(env!("CARGO_BIN_EXE_pgsafe"))
        .arg("--pgsafe-rev")
        .arg("bench smoke test")
        .arg("--pg-bin")
        .arg(&pg_bin)
        .arg("--os-user")
        .arg(&server_user().name)
        .arg("--work")
        .arg(work.path().join("work"))
        .arg("--out")
        .arg(&report)
        .output()
        .expect("running python3 bench/archive");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "bench/archive --smoke took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "bench/archive failed ({}):\n{stderr}",
        out.status
    );
    let md = std::fs::read_to_string(&report).unwrap();
    for needle in [
        "## archive-push: a backlog of",
        "Driven by PostgreSQL's archiver",
        "Direct loop",
        "## Replay: recovery of a base backup",
    ] {
        assert!(md.contains(needle), "no {needle:?} in the report:\n{md}");
    }
    assert!(
        !md.contains("FAILED"),
        "a contender failed:\n{md}\n{stderr}"
    );

    let raw: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&report).with_extension("json")).unwrap(),
    )
    .unwrap();
    let segments = raw["push"]["dataset"]["segments"].as_u64().unwrap();
    assert!(segments >= 16, "{}", raw["push"]["dataset"]);
    let pgbackrest = Command::new("pgbackrest")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut required = vec![
        ("push", "archiver pgsafe sync"),
        ("push", "loop pgsafe sync"),
        ("replay", "pgsafe sync"),
    ];
    if pgbackrest {
        required.extend([
            ("push", "archiver pgbackrest sync"),
            ("push", "archiver pgbackrest async"),
            ("push", "loop pgbackrest sync"),
            ("push", "loop pgbackrest async"),
            ("replay", "pgbackrest sync"),
            ("replay", "pgbackrest async"),
        ]);
    }
    for (section, key) in &required {
        let runs = raw[section]["runs"][key]
            .as_array()
            .unwrap_or_else(|| panic!("no {section} {key} in the JSON: {}", raw[section]["runs"]));
        assert!(!runs.is_empty(), "{section} {key}");
        for r in runs {
            assert_eq!(r["ok"], true, "{section} {key}: {r}");
            assert!(r["wall"].as_f64().unwrap() > 0.0, "{section} {key}: {r}");
            if *section == "push" {
                assert_eq!(r["segments"].as_u64(), Some(segments), "{key}: {r}");
                assert!(r["stored_bytes"].as_u64().unwrap() > 0, "{key}: {r}");
            }
        }
    }
    // look-ahead and prefetch: n/a only while the binary lacks them, never failed
    for (section, runs) in [
        ("push", &raw["push"]["runs"]),
        ("replay", &raw["replay"]["runs"]),
    ] {
        for (key, rs) in runs.as_object().unwrap() {
            for r in rs.as_array().unwrap() {
                assert!(
                    r["ok"] == true || r["na"].is_string(),
                    "{section} {key}: {r}"
                );
            }
        }
    }
}
