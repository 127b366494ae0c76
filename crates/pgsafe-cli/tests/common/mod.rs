//! Helpers shared by the CLI test files: run the real `pgsafe` binary, check its exit status
//! and output, and make private run directories.
#![allow(dead_code)] // each test file uses a different subset

pub mod archive;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe_testkit::Cluster;
use serde_json::Value;

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("pgsafe")
}

/// A `pgsafe` command with the connection and data-directory variables of the test process
/// removed, so only the arguments given count.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env_remove("PGDATA")
        .env_remove("PGSAFE_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `pgsafe args…` to completion.
pub fn pgsafe(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// Asserts success, with both streams in the message otherwise.
pub fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// stdout as JSON.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts exit code 2 and that stderr contains every needle; returns stderr.
pub fn refused(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    err
}

/// A private run directory for snapshot-mode holders (mode 0700, short path under /tmp).
pub fn run_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("pgsafe-run")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// Starts a throttled backup (2 MB/s, so it is still copying when the test interrupts it) and
/// returns once the copy has begun writing into `target`.
pub fn spawn_slow_backup(conninfo: &str, pgdata: &Path, target: &Path) -> Child {
    let child = command(&["backup", "-d", conninfo, "-D", pgdata.to_str().unwrap()])
        .args([
            "--target",
            target.to_str().unwrap(),
            "--max-rate",
            "2M",
            "--progress",
            "none",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !target.join("base").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `pgsafe backup` of `c` into `target` (summary as JSON on stdout, no progress), plus `extra`.
pub fn backup(c: &Cluster, target: &Path, extra: &[&str]) -> Output {
    let conn = c.conninfo();
    let mut args = vec![
        "backup",
        "-d",
        &conn,
        "-D",
        c.data_dir().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--json",
        "--progress",
        "none",
    ];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

/// A `cp -a` copy of `backup` named `name` beside it (an attacker's working copy).
pub fn copy_of(backup: &Path, name: &str) -> PathBuf {
    copy_to(backup, &backup.parent().unwrap().join(name))
}

/// A `cp -a` copy of `backup` at `dst` (a private copy to damage).
pub fn copy_to(backup: &Path, dst: &Path) -> PathBuf {
    let st = Command::new("cp")
        .arg("-a")
        .arg(backup)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst.to_owned()
}

/// Every regular file below `dir` whose content contains `needle` (links not followed): where
/// a planted secret ended up.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if m.is_file() {
            let b = fs::read(&p).unwrap_or_default();
            if b.windows(needle.len()).any(|w| w == needle) {
                out.push(p);
            }
        }
    }
    out
}

/// Exit status and both streams of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `pgsafe restore BACKUP --pgdata TARGET --progress none`, plus `extra`.
pub fn restore(backup: &Path, target: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "restore",
        backup.to_str().unwrap(),
        "--pgdata",
        target.to_str().unwrap(),
        "--progress",
        "none",
    ];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

/// `pgsafe verify --json DIR`, plus `extra`: exit code, report (null when stdout is not JSON)
/// and the output.
pub fn verify(dir: &Path, extra: &[&str]) -> (Option<i32>, Value, Output) {
    let mut args = vec!["verify", "--json", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = pgsafe(&args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, out)
}

/// The uid, gid and permission bits of a path (not following links).
pub fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// A FIFO at `p` (replacing a file there): a reader that opens it blocking would hang.
pub fn mkfifo(p: &Path) {
    let _ = fs::remove_file(p);
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A snapshot-mode command, `pgsafe args… --run-dir RUN`.
pub fn with_run_dir(run: &Path, args: &[&str]) -> Command {
    let mut cmd = command(args);
    cmd.arg("--run-dir").arg(run);
    cmd
}

/// `pgsafe start` of a snapshot-mode backup of `c` with holder id `id`, plus `extra`: the JSON
/// it prints (asserts success).
pub fn start_holder(c: &Cluster, run: &Path, id: &str, extra: &[&str]) -> Value {
    let conn = c.conninfo();
    let mut args = vec!["start", "-d", &conn, "--id", id, "--json"];
    args.extend_from_slice(extra);
    json(&ok(
        with_run_dir(run, &args).output().unwrap(),
        "pgsafe start",
    ))
}

// Repository helpers (repo_cli, repo_red_cli, info_cli, expire_cli).

/// `pgsafe init --json` of `c` as `name` in the repository `repo`.
pub fn repo_init(c: &Cluster, repo: &Path, name: &str) -> Output {
    let conn = c.conninfo();
    pgsafe(&[
        "init",
        "--repo",
        path_str(repo),
        "--cluster",
        name,
        "-D",
        path_str(c.data_dir()),
        "-d",
        &conn,
        "--json",
    ])
}

/// The catalog of cluster `name` in `repo`, as the library derives it.
pub fn repo_catalog(
    repo: &Path,
    name: &str,
    timing: pgsafe::repo::LeaseTiming,
) -> pgsafe::repo::Catalog {
    pgsafe::repo::Repository::open(repo)
        .unwrap()
        .catalog(&pgsafe::storage::Ident::new(name).unwrap(), timing)
        .unwrap()
}

/// The state of backup `id` of `name` ("absent" when the catalog has no such entry).
pub fn repo_state(repo: &Path, name: &str, id: &str, timing: pgsafe::repo::LeaseTiming) -> String {
    repo_catalog(repo, name, timing)
        .get(id)
        .map_or_else(|| "absent".to_owned(), |b| b.state.name().to_owned())
}

/// The folder holding the backups of cluster `name` in `repo`.
pub fn backups_dir(repo: &Path, name: &str) -> PathBuf {
    repo.join(name).join("backups")
}

/// A path as the `&str` argument of a command line (the tests' paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// stderr of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `pgsafe backup --repo REPO --cluster NAME` of `c` with `extra` flags (JSON summary, no
/// progress), to completion: the output (check it with [`ok`] and [`json`]).
pub fn repo_backup(c: &Cluster, repo: &Path, name: &str, extra: &[&str]) -> Output {
    let conn = c.conninfo();
    let mut args = vec![
        "backup",
        "--repo",
        path_str(repo),
        "--cluster",
        name,
        "-D",
        path_str(c.data_dir()),
        "-d",
        &conn,
        "--json",
        "--progress",
        "none",
    ];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

/// [`repo_backup`] that must succeed: its JSON summary (`backup_id`, `backup_type`, `parent`…).
pub fn repo_backup_ok(c: &Cluster, repo: &Path, name: &str, extra: &[&str]) -> Value {
    json(&ok(
        repo_backup(c, repo, name, extra),
        "pgsafe backup --repo",
    ))
}
