//! Every subcommand with a standard output nobody reads (a pipe whose reader is gone, as with
//! `pgsafe verify … | head -1`) or that cannot be written (`> /dev/full`): never a panic (exit
//! 101). A vanished reader ends output quietly and the command keeps the exit status it has
//! with a working stdout; any other write error is the command's error code (2) with
//! the error on stderr.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};

use common::{backup, command, ok, run_dir};

#[derive(Debug, Clone, Copy)]
enum Sink {
    /// A pipe whose read end is closed before the command starts.
    ReaderGone,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

fn run(args: &[&str], sink: Sink) -> Output {
    let stdout = match sink {
        Sink::ReaderGone => {
            let (reader, writer) = nix::unistd::pipe().unwrap();
            drop(reader);
            Stdio::from(writer)
        }
        Sink::Full => Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        ),
    };
    command(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Runs `args` with `sink` as stdout and checks the outcome against `normal`, the exit status the
/// command has with a working stdout.
fn check(args: &[&str], sink: Sink, normal: i32) {
    let out = run(args, sink);
    let err = String::from_utf8_lossy(&out.stderr);
    let what = format!("{args:?} with {sink:?}: stderr {err}");
    assert!(!err.contains("panicked"), "{what}");
    match sink {
        Sink::ReaderGone => {
            assert_eq!(out.status.code(), Some(normal), "{what}");
            assert!(!err.contains("standard output"), "quiet: {what}");
        }
        Sink::Full => {
            // The error code of every command, doctor's too.
            assert_eq!(out.status.code(), Some(2), "{what}");
            assert!(
                err.contains("could not write the results to standard output")
                    && err.contains("No space left on device"),
                "{what}"
            );
        }
    }
}

/// The exit status of `args` with stdout discarded normally.
fn normal_code(args: &[&str]) -> i32 {
    command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_subcommand_survives_a_closed_or_full_stdout() {
    let c = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let conn = c.conninfo();
    let data = s(c.data_dir()).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    ok(backup(&c, &good, &[]), "pgsafe backup");
    let good = s(&good).to_owned();
    let owner = pgsafe_testkit::server_user().name.clone();
    let run = run_dir();
    let run = s(run.path()).to_owned();

    for (n, sink) in [Sink::ReaderGone, Sink::Full].into_iter().enumerate() {
        // Read-only commands: the status they have normally (doctor and verify answer 0 or 1).
        let read_only: Vec<Vec<&str>> = vec![
            vec!["--help"],
            vec!["verify", "--help"],
            vec!["--version"],
            vec!["inspect", &data],
            vec!["inspect", "--json", &data],
            vec!["doctor", &data],
            vec!["doctor", "--json", &data],
            vec!["verify", "--progress", "none", &good],
            vec!["verify", "--json", "--progress", "none", &good],
            vec!["verify", "--quick", "--progress", "none", &good],
            vec!["status", "--run-dir", &run],
        ];
        for args in &read_only {
            check(args, sink, normal_code(args));
        }

        // Commands that act: each does its work (exit 0 with a working stdout).
        for (i, json) in [false, true].into_iter().enumerate() {
            let target = dir.path().join(format!("b{n}{i}"));
            let mut args = vec![
                "backup",
                "-d",
                &conn,
                "-D",
                &data,
                "--target",
                s(&target),
                "--progress",
                "none",
            ];
            if json {
                args.push("--json");
            }
            check(&args, sink, 0);
            assert!(
                target.join("pgsafe.json").is_file(),
                "{sink:?}: the backup itself completed"
            );

            let restored = dir.path().join(format!("r{n}{i}"));
            let mut args = vec![
                "restore",
                &good,
                "--pgdata",
                s(&restored),
                "--progress",
                "none",
            ];
            // As root into a root-owned folder, the owner is the operator's to name.
            if nix::unistd::geteuid().is_root() {
                args.extend(["--owner", owner.as_str()]);
            }
            if json {
                args.push("--json");
            }
            check(&args, sink, 0);
            assert!(restored.join("global/pg_control").is_file(), "{sink:?}");

            let id = format!("o{n}{i}");
            let mut start = vec![
                "start",
                "-d",
                &conn,
                "--run-dir",
                &run,
                "--id",
                &id,
                "--fast",
            ];
            let mut status = vec!["status", "--run-dir", &run];
            let mut stop = vec!["stop", "--run-dir", &run, "--id", &id];
            if json {
                for a in [&mut start, &mut status, &mut stop] {
                    a.push("--json");
                }
            }
            check(&start, sink, 0);
            check(&status, sink, 0);
            check(&stop, sink, 0);
            // The stop happened although its output was lost.
            let st = command(&["status", "--run-dir", &run, "--id", &id, "--json"])
                .output()
                .unwrap();
            let st = String::from_utf8_lossy(&st.stdout);
            assert!(st.contains("\"complete\""), "{sink:?}: {st}");

            let id = format!("a{n}{i}");
            check(
                &[
                    "start",
                    "-d",
                    &conn,
                    "--run-dir",
                    &run,
                    "--id",
                    &id,
                    "--fast",
                ],
                Sink::ReaderGone,
                0,
            );
            check(&["abort", "--run-dir", &run, "--id", &id], sink, 0);

            let snap_dir = dir.path().join(format!("s{n}{i}"));
            std::fs::create_dir(&snap_dir).unwrap();
            let mut args = vec![
                "snapshot",
                "-d",
                &conn,
                "--run-dir",
                &run,
                "--exec",
                "true",
                "--output-dir",
                s(&snap_dir),
            ];
            if json {
                args.push("--json");
            }
            check(&args, sink, 0);
            assert!(snap_dir.join("backup_label").is_file(), "{sink:?}");
        }
    }
}
