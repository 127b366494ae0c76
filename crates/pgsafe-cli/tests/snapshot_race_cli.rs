//! Snapshot mode under races (red team of snapshot mode in `docs/threat-model.md`): `stop` repeated
//! right after a `stop`, two `stop`s at once, `abort` racing `stop`. The README promises `stop` is
//! idempotent: every repeated or concurrent `stop` must return the same complete record, never an
//! error about the holder going away. Real servers, the real binary.

mod common;

use std::path::Path;
use std::process::Output;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

use common::{json, ok, run_dir, start_holder, with_run_dir};

fn run(run: &Path, args: &[&str]) -> Output {
    with_run_dir(run, args).output().unwrap()
}

fn stop_ok(out: &Output, what: &str) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(out);
    assert_eq!(v["state"], "complete", "{what}: {v}");
    v
}

/// `stop` twice back to back, many rounds: the second stop lands while the holder is exiting
/// (socket retired, process still alive, or process gone): it must return the first stop's
/// record, byte-identical label included.
fn second_stop_right_after_the_first(major: u32, archive: bool) {
    let mut c = Cluster::new(
        &PgInstall::major(major),
        ClusterOptions::new().with_archive(archive),
    );
    let wait = if archive {
        "--wait-archive"
    } else {
        "--no-wait-archive"
    };
    c.start();
    let r = run_dir();
    for round in 0..25 {
        let id = format!("twice{round}");
        start_holder(&c, r.path(), &id, &[]);
        let first = stop_ok(
            &run(r.path(), &["stop", "--id", &id, wait, "--json"]),
            &format!("PostgreSQL {major}, round {round}: first stop"),
        );
        let second = stop_ok(
            &run(r.path(), &["stop", "--id", &id, wait, "--json"]),
            &format!("PostgreSQL {major}, round {round}: second stop"),
        );
        assert_eq!(
            first["result"]["backup_label"], second["result"]["backup_label"],
            "round {round}"
        );
    }
}

#[test]
fn second_stop_right_after_the_first_pg10() {
    second_stop_right_after_the_first(10, false);
}

#[test]
fn second_stop_right_after_the_first_pg17() {
    second_stop_right_after_the_first(17, false);
}

#[test]
fn second_stop_right_after_the_first_archiving_pg15() {
    second_stop_right_after_the_first(15, true);
}

/// Two `stop`s at the same time, and `abort` racing `stop`: exactly one outcome wins, and every
/// stop reports it (complete, the same label), or, when the abort wins, every stop says aborted.
fn concurrent_stops_and_abort(major: u32) {
    let mut c = Cluster::new(&PgInstall::major(major), ClusterOptions::new());
    c.start();
    let r = run_dir();
    for round in 0..20 {
        let id = format!("conc{round}");
        start_holder(&c, r.path(), &id, &[]);
        // Several at once, so some connect while the first one's answer retires the holder.
        let stops: Vec<_> = (0..6)
            .map(|_| {
                with_run_dir(
                    r.path(),
                    &["stop", "--id", &id, "--no-wait-archive", "--json"],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        let labels: Vec<Value> = stops
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let out = s.wait_with_output().unwrap();
                stop_ok(
                    &out,
                    &format!("PostgreSQL {major}, round {round}: stop {i}"),
                )["result"]["backup_label"]
                    .clone()
            })
            .collect();
        assert!(labels.windows(2).all(|w| w[0] == w[1]), "{labels:?}");

        let id = format!("race{round}");
        start_holder(&c, r.path(), &id, &[]);
        let s = with_run_dir(
            r.path(),
            &["stop", "--id", &id, "--no-wait-archive", "--json"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let ab = run(r.path(), &["abort", "--id", &id, "--json"]);
        let s = s.wait_with_output().unwrap();
        let after = json(&ok(
            run(r.path(), &["status", "--id", &id, "--json"]),
            "status",
        ))[0]
            .clone();
        let state = after["state"].as_str().unwrap().to_owned();
        match state.as_str() {
            "complete" => {
                stop_ok(&s, &format!("round {round}: stop that won"));
                assert_ne!(
                    ab.status.code(),
                    Some(0),
                    "round {round}: an abort after a complete stop must not report success: {}",
                    String::from_utf8_lossy(&ab.stdout)
                );
            }
            "aborted" => {
                assert_eq!(ab.status.code(), Some(0), "round {round}: abort won");
                assert_ne!(
                    s.status.code(),
                    Some(0),
                    "round {round}: stop lost to abort"
                );
            }
            other => panic!("round {round}: unexpected state {other}: {after}"),
        }
    }
}

#[test]
fn concurrent_stops_and_abort_pg15() {
    concurrent_stops_and_abort(15);
}

/// The archiver fails while `stop` waits (archive_command = false): the stop gives up and says
/// NOT usable; the DBA repairs archive_command; a later `stop` re-checks and says usable, and the
/// files it waited for really are in the archive (the outside oracle).
fn archive_failing_then_repaired(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().with_archive(true),
    );
    let archive = c.archive_dir().unwrap().to_owned();
    c.execute("ALTER SYSTEM SET archive_command = 'false'");
    c.execute("SELECT pg_reload_conf()");
    let r = run_dir();
    start_holder(&c, r.path(), "fix", &[]);
    c.execute("SELECT pg_switch_wal()");
    let out = run(
        r.path(),
        &["stop", "--id", "fix", "--archive-timeout", "2s", "--json"],
    );
    assert_eq!(out.status.code(), Some(2), "PostgreSQL {major}: {out:?}");
    let v = json(&out);
    assert_eq!(v["usable"], false, "{v}");
    c.execute("ALTER SYSTEM RESET archive_command");
    c.execute("SELECT pg_reload_conf()");
    let v = stop_ok(
        &run(
            r.path(),
            &["stop", "--id", "fix", "--archive-timeout", "5m", "--json"],
        ),
        &format!("PostgreSQL {major}: stop after the repair"),
    );
    assert_eq!(v["usable"], true, "{v}");
    for n in v["result"]["archive_needs"].as_array().unwrap() {
        let n = n.as_str().unwrap();
        assert!(
            archive.join(n).exists(),
            "PostgreSQL {major}: {n} not archived"
        );
    }
    // And once more: the answer stays the same (the holder may have exited by now).
    let again = stop_ok(
        &run(r.path(), &["stop", "--id", "fix", "--json"]),
        "stop again",
    );
    assert_eq!(again["usable"], true, "{again}");
}

#[test]
fn archive_failing_then_repaired_pg10() {
    archive_failing_then_repaired(10);
}

#[test]
fn archive_failing_then_repaired_pg16() {
    archive_failing_then_repaired(16);
}

/// The holder is killed (SIGKILL) while a `stop` waits for WAL archiving (archive_command
/// fails): the waiting `stop` answers from the record instead of a protocol error, and every
/// later `stop` says NOT usable and names the WAL files the backup still needs in the archive
/// (the backup was stopped and its label saved; nobody re-checks any more).
fn holder_killed_while_archive_pending(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf("archive_command = 'false'"),
    );
    let r = run_dir();
    let holder = start_holder(&c, r.path(), "hk", &[])["holder_pid"]
        .as_i64()
        .unwrap() as i32;
    let waiting = with_run_dir(
        r.path(),
        &["stop", "--id", "hk", "--archive-timeout", "30m", "--json"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let t = std::time::Instant::now();
    loop {
        let s = json(&ok(
            run(r.path(), &["status", "--id", "hk", "--json"]),
            "status",
        ))[0]
            .clone();
        if s["state"] == "complete" {
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "{s}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = waiting.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("does not understand"),
        "PostgreSQL {major}: the waiting stop failed with a protocol error: {err}"
    );
    let v = json(&out);
    assert_eq!(v["state"], "complete", "{v}");
    assert_eq!(v["usable"], false, "{v}");
    for _ in 0..2 {
        let out = run(r.path(), &["stop", "--id", "hk", "--json"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let v = json(&out);
        assert_eq!(v["usable"], false, "{v}");
        let detail = v["result"]["archive"]["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        let needs = v["result"]["archive_needs"].as_array().unwrap().clone();
        assert!(!needs.is_empty(), "{v}");
        for n in needs {
            assert!(
                detail.contains(n.as_str().unwrap()),
                "PostgreSQL {major}: {detail}"
            );
        }
        assert!(detail.contains("holder"), "PostgreSQL {major}: {detail}");
    }
}

#[test]
fn holder_killed_while_archive_pending_pg11() {
    holder_killed_while_archive_pending(11);
}

#[test]
fn holder_killed_while_archive_pending_pg18() {
    holder_killed_while_archive_pending(18);
}
