//! Red team of `archive-push` / `archive-get`: hostile `%p` files (a FIFO, a directory, a huge
//! sparse file, a symlink), run through the real binary against a repository registered from a
//! real server. Each case must end (never hang the archiver), fail with exit 2 and store nothing.

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::archive::{get_cmd, push_cmd, wal_objects};
use common::{command, mkfifo, ok, path_str as s, repo_init};

const CLUSTER: &str = "main";

/// Runs `cmd`; a command still running after a generous while is a hang (PostgreSQL's archiver
/// would wait on it forever): killed and reported, never a pass.
fn run_or_hang(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: archive-push never returned (it blocks on the file)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// `%p` that is not a regular file holding WAL: a FIFO (opening it for reading blocks until a
/// writer comes — none will), a directory, a 10 GiB sparse file, a symlink to a file that is
/// not WAL. Named as a segment and as a history file. Each is refused with exit 2, promptly,
/// and nothing is stored.
#[test]
fn hostile_source_files_are_refused_without_hanging() {
    let install = PgInstall::major(16);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let src = scratch.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut n = 0;
    let mut fresh = |name: &str| {
        n += 1;
        let d = src.join(format!("d{n}"));
        fs::create_dir(&d).unwrap();
        d.join(name)
    };
    for name in [seg.as_str(), "00000002.history"] {
        let fifo = fresh(name);
        mkfifo(&fifo);
        let dir = fresh(name);
        fs::create_dir(&dir).unwrap();
        let sparse = fresh(name);
        fs::File::create(&sparse)
            .unwrap()
            .set_len(10 << 30)
            .unwrap();
        let link = fresh(name);
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        for (what, p) in [
            ("fifo", fifo),
            ("directory", dir),
            ("sparse", sparse),
            ("symlink", link),
        ] {
            let out = run_or_hang(push_cmd(&repo, CLUSTER, &p, &[]), what);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {what}: {err}");
            assert!(
                wal_objects(&repo, CLUSTER).is_empty(),
                "{name} {what}: {:?}",
                wal_objects(&repo, CLUSTER)
            );
            // Nothing of the file read leaks into the message (it ends in the server log).
            assert!(!err.contains("root:"), "{name} {what}: {err}");
        }
    }
}

/// archive-get is restore_command: a bad command line must stop recovery (exit 200), never
/// exit 1–125, which PostgreSQL reads as "not in the archive" and may end recovery early at
/// a "successful" point short of its target (xlogarchive.c RestoreArchivedFile). The global
/// `--config FILE` written before the subcommand, as a hand-written restore_command may, used
/// to turn a typo into exit 2.
#[test]
fn a_bad_archive_get_command_line_stops_recovery() {
    let scratch = tempfile::tempdir().unwrap();
    let cfg = scratch.path().join("pgsafe.toml");
    fs::write(&cfg, "").unwrap();
    let dest = scratch.path().join("RECOVERYXLOG");
    let seg = "000000010000000000000001";
    let cfgs = s(&cfg);
    let config_eq = format!("--config={cfgs}");
    for args in [
        vec!["archive-get", "--no-such-flag", seg, s(&dest)],
        vec![
            "--config",
            cfgs,
            "archive-get",
            "--no-such-flag",
            seg,
            s(&dest),
        ],
        vec![config_eq.as_str(), "archive-get", "--repo"],
        vec!["--config", cfgs, "archive-get"],
    ] {
        let out = command(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(200),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!dest.exists(), "{args:?}");
    }
    // Other commands keep the usage exit code.
    let out = command(&["--config", cfgs, "info", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A repository whose `wal/` folders hold planted symbolic links (dangling, or to a folder
/// outside the repository that has the file): archive-get never follows them, and says so with
/// exit 200, which stops recovery, never 1 ("not in the archive"), which would let PostgreSQL end
/// recovery early, short of its target. No server needed: the repository's documents are
/// written as `pgsafe init` writes them.
#[test]
fn planted_links_in_the_archive_stop_recovery() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let wal = repo.join(CLUSTER).join("wal");
    fs::create_dir_all(&wal).unwrap();
    fs::write(
        repo.join("pgsafe-repo.json"),
        r#"{"format":1,"created_at":"2026-12-03T22:00:00.000000Z","pgsafe_version":"0.1.0"}"#,
    )
    .unwrap();
    fs::write(
        repo.join(CLUSTER).join("cluster.json"),
        format!(
            r#"{{"format":1,"cluster":"{CLUSTER}","system_identifier":"7000000000000000001","server_version":"17.2","wal_segment_size":16777216,"pgdata":"/x","registered_at":"2026-12-03T22:00:00.000000Z","pgsafe_version":"0.1.0"}}"#
        ),
    )
    .unwrap();
    let dest = scratch.path().join("RECOVERYXLOG");
    let get = |file: &str| get_cmd(&repo, CLUSTER, file, &dest, &[]).output().unwrap();
    // Without a link, a missing file is "not in the archive": exit 1.
    assert_eq!(get("000000010000000000000003").status.code(), Some(1));
    let outside = scratch.path().join("outside");
    fs::create_dir_all(outside.join("00000000")).unwrap();
    fs::write(outside.join("00000001.history"), "").unwrap();
    for target in [scratch.path().join("nonexistent"), outside] {
        let link = wal.join("00000001");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for file in ["000000010000000000000003", "00000001.history"] {
            let out = get(file);
            assert_eq!(
                out.status.code(),
                Some(200),
                "{file} through a link to {target:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!dest.exists());
        }
    }
}
