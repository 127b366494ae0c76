//! Red team of `archive-push`: SIGKILL at every step of a push, then PostgreSQL's archiver
//! retrying. `strace` injects the kill into the process at the n-th call of each system call
//! a durable write goes through (creating the temporary object, writing it, syncing it, the
//! rename or link to the final name, syncing the folder, the look-ahead's acknowledgement
//! records in the spool), for every n until the push completes without reaching it. After
//! each kill: no object under a final name holds anything but the file's exact bytes
//! (archive-get serves them whole or answers "not there"), the retries PostgreSQL would make
//! (in its order, `.ready` renamed to `.done` after each exit 0) all succeed, and every file
//! acknowledged comes back byte for byte. A false acknowledgement (exit 0 for a file whose
//! object is missing or damaged) fails the last step.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, copy_tree, server_owned_tempdir};

use common::{bin, command, ok, repo_init};

const CLUSTER: &str = "main";
/// Calls of one system call a kill is injected at, at most (the first ones: the push's own
/// files come early; later `openat`/`write` calls are the look-ahead's and the spool's).
const KILL_POINTS: usize = 40;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn push_args(repo: &Path) -> Vec<String> {
    ["archive-push", "--repo", s(repo), "--cluster", CLUSTER]
        .iter()
        .map(|a| a.to_string())
        .collect()
}

fn get(repo: &Path, file: &str, dest: &Path) -> Output {
    command(&[
        "archive-get",
        "--repo",
        s(repo),
        "--cluster",
        CLUSTER,
        file,
        s(dest),
    ])
    .output()
    .unwrap()
}

fn finish_segment(c: &Cluster) -> (String, Vec<u8>) {
    c.execute(
        "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t SELECT generate_series(1, 5000)",
    );
    let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let bytes = fs::read(c.data_dir().join("pg_wal").join(&seg)).unwrap();
    (seg, bytes)
}

/// A fresh `pg_wal` as PostgreSQL's archiver leaves it: the files, each `.ready`.
fn fresh_pg_wal(dir: &Path, files: &[(String, Vec<u8>)]) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    let wal = dir.join("pg_wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    for (name, bytes) in files {
        fs::write(wal.join(name), bytes).unwrap();
        fs::write(
            wal.join("archive_status").join(format!("{name}.ready")),
            b"",
        )
        .unwrap();
    }
    wal
}

/// The archive's state is consistent with the source: each file is served whole and exact
/// or is not there (exit 1); never served damaged, never a "stop recovery" error.
fn archive_consistent(repo: &Path, files: &[(String, Vec<u8>)], dest: &Path, when: &str) {
    for (name, bytes) in files {
        let out = get(repo, name, dest);
        match out.status.code() {
            Some(0) => assert!(
                fs::read(dest).unwrap() == *bytes,
                "{when}: {name} served with other bytes"
            ),
            Some(1) => {}
            other => panic!("{when}: archive-get {name}: {other:?} {}", stderr(&out)),
        }
        let _ = fs::remove_file(dest);
    }
}

#[test]
fn sigkill_at_every_step_of_a_push_loses_nothing() {
    let install = PgInstall::major(15);
    let scratch = server_owned_tempdir();
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let files: Vec<(String, Vec<u8>)> = (0..3).map(|_| finish_segment(&c)).collect();
    let dest = scratch.path().join("RECOVERYXLOG");
    let work = scratch.path().join("w");
    let template = work.join("template");
    ok(repo_init(&c, &template, CLUSTER), "pgsafe init");
    let mut kills = 0;
    for syscall in [
        "openat",
        "write",
        "fsync",
        "fdatasync",
        "renameat2",
        "rename",
        "linkat",
        "unlinkat",
    ] {
        for n in 1..=KILL_POINTS {
            let when = format!("{syscall} #{n}");
            let repo = work.join("repo");
            let _ = fs::remove_dir_all(&repo);
            copy_tree(&template, &repo, None).unwrap();
            let wal = fresh_pg_wal(&work.join("data"), &files);
            let first = wal.join(&files[0].0);
            let out = Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("trace={syscall}"))
                .arg("-e")
                .arg(format!("inject={syscall}:signal=KILL:when={n}"))
                .arg(bin())
                .args(push_args(&repo))
                .arg(&first)
                .output()
                .unwrap();
            let killed = match out.status.signal() {
                Some(9) => true,
                _ => {
                    assert_eq!(out.status.code(), Some(0), "{when}: {}", stderr(&out));
                    false
                }
            };
            archive_consistent(&repo, &files, &dest, &when);
            // PostgreSQL's archiver: each file in turn, retried until it is acknowledged.
            for (name, _) in &files {
                let p = wal.join(name);
                let out = command(
                    &push_args(&repo)
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>(),
                )
                .arg(&p)
                .output()
                .unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{when}: retry {name}: {}",
                    stderr(&out)
                );
                fs::rename(
                    wal.join("archive_status").join(format!("{name}.ready")),
                    wal.join("archive_status").join(format!("{name}.done")),
                )
                .unwrap();
            }
            for (name, bytes) in &files {
                ok(get(&repo, name, &dest), &format!("{when}: get {name}"));
                assert!(
                    fs::read(&dest).unwrap() == *bytes,
                    "{when}: {name} acknowledged, archive serves other bytes"
                );
            }
            if !killed {
                eprintln!("{syscall}: the push completes past call {n}");
                break;
            }
            kills += 1;
        }
    }
    // The injection reached the process: a test that never killed anything proves nothing.
    assert!(kills > 10, "only {kills} kills happened");
}
