//! The backup repository attacked through the real binary, against real servers: what an
//! attacker with write access to the repository, a careless second DBA, a crash or a racing
//! second process does to it (issue 12's red team). Each test is a defect found (and fixed) or
//! a property that an attack tried and that held.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgsafe::repo::{LeaseTiming, Repository};
use pgsafe::storage::Ident;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::{command, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `pgsafe init --json` of `c` as `name` in `repo`.
fn init(c: &Cluster, repo: &Path, name: &str) -> Output {
    let conn = c.conninfo();
    command(&[
        "init",
        "--repo",
        s(repo),
        "--cluster",
        name,
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--json",
    ])
    .output()
    .unwrap()
}

/// `pgsafe backup --repo` of `c` as `name` (JSON summary, no progress), plus `extra`.
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

fn catalog(repo: &Path, name: &str, timing: LeaseTiming) -> pgsafe::repo::Catalog {
    Repository::open(repo)
        .unwrap()
        .catalog(&Ident::new(name).unwrap(), timing)
        .unwrap()
}

fn state(repo: &Path, name: &str, id: &str, timing: LeaseTiming) -> String {
    catalog(repo, name, timing)
        .get(id)
        .map_or_else(|| "absent".to_owned(), |b| b.state.name().to_owned())
}

fn backups_dir(repo: &Path, name: &str) -> PathBuf {
    repo.join(name).join("backups")
}

/// Waits (up to a generous minute: never a timing assertion) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A backup process stopped (SIGSTOP: a paused VM, a swap storm) longer than its lease lives
/// is, for every other process, an interrupted backup that expire may delete. Once it resumes
/// it must not go on and mark itself complete: it stops, says its lease was lost, and leaves
/// the folder incomplete. (It used to renew the lapsed lease and finish as if nothing had
/// happened: a backup that expire had already judged abandoned became "complete".)
#[test]
fn a_backup_stopped_past_its_lease_never_completes() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g",
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(init(&c, &repo, "main"), "init");
    let short = LeaseTiming {
        ttl: Duration::from_secs(1),
        clock_skew: Duration::ZERO,
    };
    let child = backup_cmd(&c, &repo, "main", &["--max-rate", "4M"])
        .env("PGSAFE_LEASE_TTL_SECS", "1")
        .env("PGSAFE_LEASE_SKEW_SECS", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let mut id = String::new();
    wait_until("the copy started", || {
        let cat = catalog(&repo, "main", short);
        match cat.in_progress().next() {
            Some(b)
                if backups_dir(&repo, "main")
                    .join(b.id.as_str())
                    .join("base")
                    .exists() =>
            {
                id = b.id.to_string();
                true
            }
            _ => false,
        }
    });
    kill(pid, Signal::SIGSTOP).unwrap();
    // Every other process now takes it for interrupted: what expire deletes.
    wait_until("the stopped backup's lease lapsed", || {
        state(&repo, "main", &id, short) == "incomplete"
    });
    kill(pid, Signal::SIGCONT).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a backup whose lease lapsed completed: {err} {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("lease"), "{err}");
    assert!(
        !backups_dir(&repo, "main")
            .join(&id)
            .join("pgsafe.json")
            .exists()
    );
    assert_eq!(state(&repo, "main", &id, short), "incomplete");
    assert!(catalog(&repo, "main", short).latest().is_none());
}
