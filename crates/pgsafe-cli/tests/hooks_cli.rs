//! Snapshot-mode hooks as backup software calls them: the same argument string for every hook
//! (connection options included), from environments that differ (cron, su, ssh), with output
//! directories that go wrong. Real servers, the real binary.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgsafe::hold::RunDir;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

use common::{bin, command, json, ok, refused, run_dir};

fn with_run(run: &Path, args: &[&str]) -> Output {
    command(args).arg("--run-dir").arg(run).output().unwrap()
}

fn state(run: &Path, id: &str) -> String {
    let v = json(&ok(
        with_run(run, &["status", "--id", id, "--json"]),
        "status",
    ));
    v[0]["state"].as_str().unwrap().to_owned()
}

/// Every entry below `dir`.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

/// `start` with XDG_RUNTIME_DIR and HOME set (an SSH login), `status` and `stop` with neither
/// (cron, a backup agent) or with another HOME (su): without --run-dir and PGSAFE_RUN_DIR all
/// of them use the same run directory, the documented per-user default, and the stop succeeds.
#[test]
fn default_run_dir_ignores_the_login_session() {
    let c = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    let xdg = run_dir();
    let id = format!("env-{}", std::process::id());
    let conn = c.conninfo();
    let base = |args: &[&str]| {
        let mut cmd = command(args);
        cmd.env_remove("PGSAFE_RUN_DIR");
        cmd
    };
    let start = base(&["start", "-d", &conn, "--id", &id, "--json"])
        .env("XDG_RUNTIME_DIR", xdg.path())
        .env("HOME", xdg.path())
        .output()
        .unwrap();
    ok(start, "start in an SSH-like environment");
    let default = RunDir::default_path();
    assert!(
        default.join(format!("{id}.json")).is_file(),
        "the record is in the default {}",
        default.display()
    );
    assert!(
        entries(xdg.path()).is_empty(),
        "nothing under XDG_RUNTIME_DIR or HOME"
    );
    let st = base(&["status", "--id", &id, "--json"])
        .env("HOME", "/nonexistent")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert_eq!(json(&ok(st, "status as su"))[0]["state"], "in_progress");
    let out_dir = tempfile::tempdir().unwrap();
    let stop = base(&[
        "stop",
        "--id",
        &id,
        "--json",
        "--output-dir",
        out_dir.path().to_str().unwrap(),
    ])
    .env_remove("HOME")
    .env_remove("XDG_RUNTIME_DIR")
    .output()
    .unwrap();
    let r = json(&ok(stop, "stop in a cron-like environment"));
    assert_eq!(r["usable"], true, "{r}");
    assert!(out_dir.path().join("backup_label").is_file());
    for ext in ["json", "log", "lock", "sock"] {
        let _ = fs::remove_file(default.join(format!("{id}.{ext}")));
    }
}

/// `status` is read-only: for an unknown ID it leaves no lock file, and a run directory that
/// does not exist is not created (neither by `status` nor by `stop`/`abort` of an unknown ID).
#[test]
fn read_only_commands_create_no_files() {
    let run = run_dir();
    let out = with_run(run.path(), &["status", "--id", "x"]);
    refused(&out, &["no backup with ID x"]);
    assert!(entries(run.path()).is_empty(), "{:?}", entries(run.path()));
    ok(
        with_run(run.path(), &["status"]),
        "status of an empty run directory",
    );
    assert!(entries(run.path()).is_empty());

    let missing = run.path().join("never-created");
    let out = ok(
        with_run(&missing, &["status"]),
        "status of a missing run directory",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no backups known"));
    for args in [
        &["status", "--id", "x"][..],
        &["stop", "--id", "x"],
        &["abort", "--id", "x"],
    ] {
        let out = with_run(&missing, args);
        refused(&out, &["no backup with ID x", "does not exist"]);
    }
    assert!(!missing.exists(), "no command created the run directory");
}

/// One argument string for every hook: `stop`, `status` and `abort` take `start`'s connection
/// options and act only on a backup of that server. Pointed at the standby of the primary the
/// backup runs on (same system identifier, another port and data directory) they refuse, and
/// the backup stays in progress; with the primary's options they work. `status` lines up its
/// columns and shows the connection as given.
fn hooks_check_the_server(major: u32) {
    let primary = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let standby = Cluster::new_standby(&primary);
    let run = run_dir();
    let p = primary.conninfo();
    let s = standby.conninfo();
    ok(
        with_run(run.path(), &["start", "-d", &p, "--id", "h", "--json"]),
        "start",
    );
    ok(
        with_run(
            run.path(),
            &["start", "-d", &p, "--id", "a-longer-backup-id"],
        ),
        "second start",
    );
    let out_dir = tempfile::tempdir().unwrap();
    let od = out_dir.path().to_str().unwrap();
    for args in [
        &["status", "-d", &s, "--id", "h"][..],
        &["stop", "-d", &s, "--id", "h", "--output-dir", od],
        &["abort", "-d", &s, "--id", "h"],
    ] {
        let out = with_run(run.path(), args);
        let err = refused(&out, &["not a backup of the server you connected to"]);
        assert!(
            err.contains("port") || err.contains("data_directory"),
            "PostgreSQL {major}: {err}"
        );
        assert_eq!(
            state(run.path(), "h"),
            "in_progress",
            "{args:?}: nothing done"
        );
    }
    assert!(!out_dir.path().join("backup_label").exists());

    // status without --id, pointed at the standby: the primary's backups are not listed.
    let out = ok(
        with_run(run.path(), &["status", "-d", &s]),
        "status -d standby",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no backups known"), "{text}");
    assert!(
        text.contains("2 backup(s) of other servers not shown"),
        "{text}"
    );

    // Pointed at the primary: all listed, columns aligned, the connection as given.
    let out = ok(
        with_run(run.path(), &["status", "-d", &p]),
        "status -d primary",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for col in ["STATE", "START LSN", "HOLDER", "SERVER"] {
        let at = lines[0].find(col).unwrap();
        for l in &lines[1..] {
            assert_ne!(l.as_bytes()[at], b' ', "column {col} misaligned:\n{text}");
            assert_eq!(&l[at - 2..at], "  ", "column {col} starts at {at}:\n{text}");
        }
    }
    for l in &lines[1..] {
        assert!(l.ends_with(p.as_str()), "server as given ({p}):\n{text}");
        assert!(!l.contains("sslmode") && !l.contains("passfile"), "{text}");
    }

    let r = json(&ok(
        with_run(
            run.path(),
            &["stop", "-d", &p, "--id", "h", "--json", "--output-dir", od],
        ),
        "stop with start's options",
    ));
    assert_eq!(r["usable"], true);
    assert!(out_dir.path().join("backup_label").is_file());
    // The JSON conventions: one schema version, RFC 3339 times, target and exit code.
    assert_eq!(r["schema_version"], 1, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["target"], od, "{r}");
    for t in [&r["started_at"], &r["result"]["stopped_at"]] {
        let t = t.as_str().unwrap_or_else(|| panic!("not a string: {r}"));
        chrono::DateTime::parse_from_rfc3339(t).unwrap();
    }
    ok(
        with_run(
            run.path(),
            &["abort", "-d", &p, "--id", "a-longer-backup-id"],
        ),
        "abort with start's options",
    );
}

#[test]
fn hooks_check_the_server_pg12() {
    hooks_check_the_server(12);
}

#[test]
fn hooks_check_the_server_pg17() {
    hooks_check_the_server(17);
}

/// A mount that ends when the test does.
struct Mount(PathBuf);

impl Mount {
    fn new(args: &[&str], at: &Path) -> Mount {
        let status = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(status.success(), "mount {args:?}");
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A read-only bind mount of `dir` on itself (unwritable even for root).
fn read_only(dir: &Path) -> Mount {
    let m = Mount::new(&["--bind", dir.to_str().unwrap()], dir);
    let status = Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "remount read-only");
    m
}

/// `snapshot` checks --output-dir before it starts the backup: inside the server's PGDATA (not
/// created yet), read-only, or under a file: refused, the command never runs, no backup is in
/// progress on the server. With --run-dir its record is kept there: `status` shows it and a
/// repeated `stop` returns it.
#[test]
fn snapshot_checks_the_output_dir_first() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("snapshot_checks_the_output_dir_first needs root to mount");
        return;
    }
    let c = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    let conn = c.conninfo();
    let run = run_dir();
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("ran");
    let exec = format!("touch {}", marker.display());
    let ro = scratch.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let _ro = read_only(&ro);
    let file = scratch.path().join("file");
    fs::write(&file, "x").unwrap();
    let cases: [(PathBuf, &str); 3] = [
        (
            c.data_dir().join("labels"),
            "lies inside the data directory",
        ),
        (ro.clone(), "not writable"),
        (
            file.join("sub"),
            "is not a directory it could be created in",
        ),
    ];
    for (dir, why) in &cases {
        let out = with_run(
            run.path(),
            &[
                "snapshot",
                "-d",
                &conn,
                "--exec",
                &exec,
                "--output-dir",
                dir.to_str().unwrap(),
            ],
        );
        refused(&out, &[why, "The backup was not started"]);
        assert!(!marker.exists(), "{why}: the command did not run");
        // A server process ends a moment after its client disconnects: wait (bounded) for
        // any session pgsafe opened to be gone; one still there after that is a leak.
        let mut running: i64 = 1;
        for _ in 0..100 {
            running = c.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsafe'",
            );
            if running == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(running, 0, "{why}: no backup session left");
    }
    assert!(!c.data_dir().join("labels").exists());

    let good = scratch.path().join("staging");
    let out = with_run(
        run.path(),
        &[
            "snapshot",
            "-d",
            &conn,
            "--exec",
            &format!("mkdir {}", good.display()),
            "--output-dir",
            good.to_str().unwrap(),
            "--json",
        ],
    );
    let r = json(&ok(out, "snapshot into a folder the command creates"));
    assert_eq!(r["usable"], true);
    assert_eq!(state(run.path(), "snapshot"), "complete");
    let again = json(&ok(
        with_run(run.path(), &["stop", "--id", "snapshot", "--json"]),
        "stop after snapshot",
    ));
    assert_eq!(
        again["result"]["backup_label"], r["result"]["backup_label"],
        "the same label"
    );
}

/// --output-dir becomes unusable between `start` and `stop`. Read-only: `stop` refuses before
/// stopping, the backup stays in progress. Full (ENOSPC, found only when writing, after the
/// server stopped the backup): `stop` exits 2 saying the backup IS stopped, where the label is
/// kept and the exact command that finishes the job; that command, run once there is room,
/// writes the label byte for byte.
#[test]
fn stop_with_an_unusable_output_dir() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("stop_with_an_unusable_output_dir needs root to mount");
        return;
    }
    let c = Cluster::started(&PgInstall::major(14), ClusterOptions::new().fast_unsafe());
    let conn = c.conninfo();
    let run = run_dir();
    ok(
        with_run(run.path(), &["start", "-d", &conn, "--id", "full"]),
        "start",
    );
    let scratch = tempfile::tempdir().unwrap();
    let ro = scratch.path().join("ro");
    fs::create_dir(&ro).unwrap();
    {
        let _ro = read_only(&ro);
        let out = with_run(
            run.path(),
            &["stop", "--id", "full", "--output-dir", ro.to_str().unwrap()],
        );
        refused(&out, &["not writable", "still in progress"]);
        assert_eq!(state(run.path(), "full"), "in_progress");
    }

    let full = scratch.path().join("full");
    fs::create_dir(&full).unwrap();
    let _tmpfs = Mount::new(&["-t", "tmpfs", "-o", "size=64k", "tmpfs"], &full);
    let filler = full.join("filler");
    let _ = fs::write(&filler, vec![0u8; 1 << 20]);
    let out = with_run(
        run.path(),
        &[
            "stop",
            "--id",
            "full",
            "--output-dir",
            full.to_str().unwrap(),
        ],
    );
    let err = refused(
        &out,
        &["IS stopped and complete", "No space left on device"],
    );
    let record = run.path().join("full.json");
    assert!(
        err.contains(record.to_str().unwrap()),
        "names the record: {err}"
    );
    let finish = err
        .lines()
        .skip_while(|l| !l.starts_with("Finish the job with:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no command in: {err}"))
        .trim()
        .to_owned();
    assert!(finish.starts_with("pgsafe stop --id full"), "{finish}");
    assert_eq!(state(run.path(), "full"), "complete");
    let rec: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    let label = rec["result"]["backup_label"].as_str().unwrap().to_owned();

    fs::remove_file(&filler).unwrap();
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-c", &finish])
        .env("PATH", path)
        .env_remove("PGSAFE_RUN_DIR")
        .output()
        .unwrap();
    ok(out, &finish);
    assert_eq!(
        fs::read(full.join("backup_label")).unwrap(),
        label.as_bytes()
    );
}

/// Four `start`s with one ID at once (a hook fired twice): exactly one holds the backup; the
/// others refuse, naming the ID as given — never Rust's debug form (`BackupId("race")`).
#[test]
fn racing_starts_name_the_id_plainly() {
    let c = Cluster::started(&PgInstall::major(13), ClusterOptions::new().fast_unsafe());
    let run = run_dir();
    let conn = c.conninfo();
    let children: Vec<_> = (0..4)
        .map(|_| {
            command(&["start", "-d", &conn, "--id", "race", "--run-dir"])
                .arg(run.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(outs.iter().filter(|o| o.status.success()).count(), 1);
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = refused(o, &["already in progress", "ID race"]);
        assert!(
            !err.contains("BackupId") && !err.contains("\"race\""),
            "{err}"
        );
    }
    ok(with_run(run.path(), &["abort", "--id", "race"]), "abort");
}
