//! `pgsafe backup` against real servers, through the real binary.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgsafe::label::BackupLabel;
use pgsafe::manifest::Manifest;
use pgsafe_testkit::{
    Cluster, ClusterOptions, LoadGenerator, PgInstall, client_bin_dir, copy_tree, per_major,
    server_owned_tempdir, server_user,
};
use serde_json::Value;

use common::{backup, ok, pgsafe, refused, spawn_slow_backup};

/// Every file under `dir`, relative, '/'-separated.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn relfilepath(c: &Cluster, table: &str) -> String {
    c.query_one(&format!("SELECT pg_relation_filepath('{table}')"))
}

/// Backup under write load: complete, the file list follows the plan rules, the label parses,
/// the WAL covers start..stop, and the backup starts as a server that has every row committed
/// before the backup began (and is consistent).
fn backup_under_load(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().with_tablespace(true));
    c.execute("CREATE UNLOGGED TABLE unlogged_t AS SELECT g FROM generate_series(1, 1000) g");
    c.execute("CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g FROM generate_series(1, 1000) g");
    let unlogged = relfilepath(&c, "unlogged_t");
    let mut temp_session = c.connect();
    temp_session
        .batch_execute("CREATE TEMP TABLE tmp_t AS SELECT 1 AS x")
        .unwrap();
    let temp_path: String = temp_session
        .query_one("SELECT pg_relation_filepath('tmp_t')", &[])
        .unwrap()
        .get(0);
    let load = LoadGenerator::start(&c, 3);
    load.wait_for_transactions(30, Duration::from_secs(60));
    let mark = load.mark();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let out = ok(backup(&c, &target, &[]), "pgsafe backup");
    let report = load.stop();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = format!("PostgreSQL {major}");

    let files = files_under(&target);
    assert!(
        files.contains("pgsafe.json") && !files.contains("pgsafe.incomplete"),
        "{m}"
    );
    for excluded in ["postmaster.pid", "postmaster.opts"] {
        assert!(
            !files.contains(excluded),
            "{m}: {excluded} must not be in the backup"
        );
    }
    assert!(
        files.contains(&format!("{unlogged}_init")),
        "{m}: init fork kept"
    );
    assert!(
        !files.contains(&unlogged),
        "{m}: unlogged main fork left out"
    );
    assert!(
        !files.contains(&temp_path),
        "{m}: temporary relation {temp_path} left out"
    );
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("pg_replslot/") && !f.contains("pgsql_tmp"))
    );
    let ts_files = files.iter().filter(|f| f.starts_with("pg_tblspc/")).count();
    assert!(ts_files > 0, "{m}: tablespace files are inside the backup");
    let label = BackupLabel::parse(&fs::read(target.join("backup_label")).unwrap()).unwrap();
    assert_eq!(
        label.start_lsn().to_string(),
        info["start_lsn"].as_str().unwrap()
    );
    let map = fs::read_to_string(target.join("tablespace_map")).unwrap();
    assert!(
        map.contains(c.tablespace_dir().unwrap().to_str().unwrap()),
        "{m}: {map}"
    );
    // WAL covers start..stop: every segment of the range is in pg_wal/.
    let wal: Vec<&str> = files
        .iter()
        .filter_map(|f| f.strip_prefix("pg_wal/"))
        .collect();
    let segs = info["wal"]["segments"].as_array().unwrap();
    assert!(!segs.is_empty());
    for s in segs {
        assert!(
            wal.contains(&s.as_str().unwrap()),
            "{m}: {s} missing from pg_wal/"
        );
    }
    assert_eq!(segs[0], info["start_wal"]);
    assert_eq!(segs[segs.len() - 1], info["stop_wal"]);
    // The manifest lists exactly the stored files (not pg_wal, not itself / pgsafe.json).
    let manifest = Manifest::parse(&fs::read(target.join("backup_manifest")).unwrap()).unwrap();
    let listed: BTreeSet<String> = manifest
        .files
        .iter()
        .map(|f| f.path_lossy().into_owned())
        .collect();
    let stored: BTreeSet<String> = files
        .iter()
        .filter(|f| !f.starts_with("pg_wal/") && *f != "backup_manifest")
        .cloned()
        .collect();
    assert_eq!(listed, stored, "{m}");

    // It restores: a server started on a copy of the backup has every row committed before the
    // backup began.
    drop(temp_session);
    let scratch = server_owned_tempdir();
    let data = scratch.path().join("data");
    copy_tree(&target, &data, Some(server_user())).unwrap();
    // Tablespace: point the map at a fresh copy of the tablespace contents from the backup.
    let restored_ts = scratch.path().join("ts restored");
    let oid = map.split_whitespace().next().unwrap().to_owned();
    fs::rename(data.join("pg_tblspc").join(&oid), &restored_ts).unwrap();
    fs::write(
        data.join("tablespace_map"),
        format!("{oid} {}\n", restored_ts.display()),
    )
    .unwrap();
    server_user().chown(&data.join("tablespace_map"));
    for f in ["pgsafe.json", "backup_manifest"] {
        let _ = fs::remove_file(data.join(f));
    }
    let mut restored = Cluster::adopt(&install, &data, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    report
        .verify_at(&mut restored.connect(), mark)
        .unwrap_or_else(|e| panic!("{m}: {e}\n{}", restored.server_log_tail(30)));
    assert_eq!(
        restored.query_one::<i64>("SELECT count(*) FROM in_ts"),
        1000,
        "{m}"
    );
    assert_eq!(
        restored.query_one::<i64>("SELECT count(*) FROM unlogged_t"),
        0,
        "{m}: reset"
    );
    restored.stop();
}

per_major!(backup_under_load);

/// PostgreSQL 15: the uncompressed backup passes pg_verifybackup including WAL parsing, and its
/// manifest has the same structure as pg_basebackup's for the same cluster.
#[test]
fn pg_verifybackup_accepts_the_backup() {
    let c = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    ok(backup(&c, &target, &[]), "pgsafe backup");
    for sums in [&[][..], &["--checksum", "sha256"][..]] {
        let t = dir.path().join(format!("b{}", sums.len()));
        let t = if sums.is_empty() {
            target.clone()
        } else {
            ok(backup(&c, &t, sums), "backup sha256");
            t
        };
        let out = Command::new(client_bin_dir().join("pg_verifybackup"))
            .arg(&t)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_verifybackup: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let base = dir.path().join("basebackup");
    let out = Command::new(client_bin_dir().join("pg_basebackup"))
        .args([
            "-d",
            &c.conninfo(),
            "-D",
            base.to_str().unwrap(),
            "-Fp",
            "-X",
            "fetch",
            "-c",
            "fast",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = Manifest::parse(&fs::read(target.join("backup_manifest")).unwrap()).unwrap();
    let theirs = Manifest::parse(&fs::read(base.join("backup_manifest")).unwrap()).unwrap();
    assert_eq!(ours.version, theirs.version);
    assert_eq!(ours.wal_ranges.len(), theirs.wal_ranges.len());
    let paths = |m: &Manifest| -> BTreeSet<String> {
        m.files
            .iter()
            .map(|f| f.path_lossy().into_owned())
            .collect()
    };
    // Same file set, except pgsafe.json (ours) and pg_wal/ entries pg_basebackup lists
    // (archive_status/*.done, which verifiers ignore). That the manifest checksum is what the
    // server computes for the same content is shown in crates/pgsafe/tests/manifest_compat.rs:
    // re-encoding pg_basebackup's manifest with pgsafe's writer is byte-identical.
    let (a, b) = (paths(&ours), paths(&theirs));
    let only_ours: Vec<_> = a.difference(&b).cloned().collect();
    let only_theirs: Vec<_> = b.difference(&a).cloned().collect();
    assert_eq!(only_ours, ["pgsafe.json"], "theirs only: {only_theirs:?}");
    assert!(
        only_theirs.iter().all(|p| p.starts_with("pg_wal/")),
        "{only_theirs:?}"
    );
}

/// Compressed layouts store every file compressed and round-trip byte-exact: decompressing
/// each stored file gives the size and checksum the manifest records.
#[test]
fn compressed_layouts_round_trip() {
    let c = Cluster::started(
        &PgInstall::major(16),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    c.execute(
        "CREATE TABLE t TABLESPACE ts1 AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
    );
    for (method, suffix) in [("zstd", ".zst"), ("zstd:5", ".zst"), ("lz4", ".lz4")] {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("b");
        let out = ok(
            backup(&c, &target, &["--compress", method, "--checksum", "sha256"]),
            method,
        );
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            info["stored_bytes"].as_u64() < info["bytes"].as_u64(),
            "{method}: {info}"
        );
        let manifest = Manifest::parse(&fs::read(target.join("backup_manifest")).unwrap()).unwrap();
        let compression: pgsafe::copy::Compression = method.parse().unwrap();
        for f in &manifest.files {
            let rel = f.path_lossy();
            let stored: PathBuf =
                if ["backup_label", "tablespace_map", "pgsafe.json"].contains(&&*rel) {
                    target.join(&*rel)
                } else {
                    target.join(format!("{rel}{suffix}"))
                };
            let file =
                fs::File::open(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display()));
            let mut content = Vec::new();
            if ["backup_label", "tablespace_map", "pgsafe.json"].contains(&&*rel) {
                std::io::Read::read_to_end(&mut { file }, &mut content).unwrap();
            } else {
                std::io::Read::read_to_end(&mut compression.decoder(file).unwrap(), &mut content)
                    .unwrap();
            }
            assert_eq!(content.len() as u64, f.size, "{method}: {rel}");
            let (alg, sum) = f.checksum.clone().unwrap();
            assert_eq!(alg.of(&content).unwrap(), sum, "{method}: {rel}");
        }
    }
}

/// Waits until the server has logged that a backup session ended without stopping (the server
/// aborted the non-exclusive backup) and no replication slot is left.
fn assert_server_clean(c: &Cluster) {
    let t = Instant::now();
    loop {
        let slots: i64 = c.query_one("SELECT count(*) FROM pg_replication_slots");
        let aborted = c
            .server_log()
            .contains("aborting backup due to backend exiting before");
        if slots == 0 && aborted {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "slots left: {slots}, backup aborted in log: {aborted}\n{}",
            c.server_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bad input is refused before anything is written: another cluster's PGDATA, a non-empty
/// target, wal_level = minimal, an unreachable server, a target that cannot be created.
#[test]
fn bad_input_writes_nothing() {
    let install = PgInstall::major(16);
    let c = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().fresh_initdb(true),
    );
    let other = Cluster::new(
        &install,
        ClusterOptions::new().fast_unsafe().fresh_initdb(true),
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let conn = c.conninfo();
    let t = target.to_str().unwrap();

    let out = pgsafe(&[
        "backup",
        "-d",
        &conn,
        "-D",
        other.data_dir().to_str().unwrap(),
        "--target",
        t,
    ]);
    refused(
        &out,
        &[
            "is not the data directory of the server",
            "system identifier",
        ],
    );
    assert!(!target.exists(), "nothing written");

    fs::create_dir(&target).unwrap();
    fs::write(target.join("old"), "x").unwrap();
    let out = backup(&c, &target, &[]);
    refused(&out, &["is not empty"]);
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        1,
        "target untouched"
    );
    fs::remove_dir_all(&target).unwrap();

    let out = pgsafe(&[
        "backup",
        "-d",
        "host=/nonexistent port=1",
        "-D",
        c.data_dir().to_str().unwrap(),
        "--target",
        t,
    ]);
    refused(&out, &["/nonexistent/.s.PGSQL.1"]);
    assert!(!target.exists());

    let out = backup(&c, &dir.path().join("no/such/parent"), &[]);
    refused(&out, &["parent folder does not exist"]);

    let minimal = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("wal_level = minimal")
            .conf("max_wal_senders = 0")
            .conf("archive_mode = off"),
    );
    let out = backup(&minimal, &target, &[]);
    refused(&out, &["wal_level"]);
    assert!(!target.exists());
    assert_eq!(
        c.query_one::<i64>("SELECT count(*) FROM pg_replication_slots"),
        0
    );
}

/// A target filesystem that fills up: without --skip-space-check the free-space check refuses
/// before writing; with it the copy fails on ENOSPC, the target is left visibly incomplete, and
/// the server's backup and slot are gone. Needs root to mount a small tmpfs (CI runs as root).
#[test]
fn full_filesystem_fails_cleanly() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "full_filesystem_fails_cleanly needs root to mount a tmpfs; run the suite as root"
        );
        return;
    }
    let c = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 20) AS v FROM generate_series(1, 40000) g");
    let mnt = tempfile::tempdir().unwrap();
    let ok_mount = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=8m",
            "tmpfs",
            mnt.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(ok_mount.success(), "mount a tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(mnt.path());
    let target = mnt.path().join("b");
    let out = backup(&c, &target, &[]);
    refused(&out, &["not enough free space"]);
    assert!(!target.exists(), "nothing written");

    let out = backup(&c, &target, &["--skip-space-check"]);
    let err = refused(&out, &["No space left on device", "INCOMPLETE"]);
    assert!(!target.join("pgsafe.json").exists(), "{err}");
    assert!(target.join("pgsafe.incomplete").exists());
    assert_server_clean(&c);
}

/// The backup process killed with SIGKILL mid-copy: the server's backup ends with the session,
/// the temporary slot is gone, the target stays marked incomplete, and the next backup works.
#[test]
fn killed_backup_leaves_nothing_on_the_server() {
    let c = Cluster::started(&PgInstall::major(17), ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 20) AS v FROM generate_series(1, 100000) g");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let mut child = spawn_slow_backup(&c.conninfo(), c.data_dir(), &target);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(target.join("pgsafe.incomplete").exists() && !target.join("pgsafe.json").exists());
    assert_server_clean(&c);
    let again = dir.path().join("again");
    ok(backup(&c, &again, &[]), "the next backup");
    assert!(again.join("pgsafe.json").exists());
}

/// Ctrl-C (SIGINT) mid-copy: the backup is cancelled cleanly — exit 130 (interrupted, as the
/// exit-code table says), "cancelled", the target marked incomplete, the server's backup aborted
/// and the slot gone.
#[test]
fn ctrl_c_cancels_cleanly() {
    let c = Cluster::started(&PgInstall::major(14), ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 20) AS v FROM generate_series(1, 100000) g");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let child = spawn_slow_backup(&c.conninfo(), c.data_dir(), &target);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    for needle in ["cancelled", "INCOMPLETE"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(
        target.join("pgsafe.incomplete").exists() && !target.join("pgsafe.json").exists(),
        "{err}"
    );
    assert_server_clean(&c);
}

/// A backup taken from a streaming standby (`BACKUP FROM: standby`, WAL from the standby's
/// pg_wal after it received the stop position) restores with every row the primary had
/// committed before the backup started.
#[test]
fn backup_from_standby_restores() {
    for major in [10, 13, 16, 18] {
        let install = PgInstall::major(major);
        let primary = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
        primary.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g");
        let standby = Cluster::new_standby(&primary);
        standby.wait_for_replay(&primary);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("b");
        let conn = standby.conninfo();
        let args = [
            "backup",
            "-d",
            &conn,
            "-D",
            standby.data_dir().to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "--json",
            "--progress",
            "none",
        ];
        // Keep the primary writing so the standby has WAL to replay during the backup.
        primary.execute("INSERT INTO t SELECT g FROM generate_series(5001, 6000) g");
        let out = ok(pgsafe(&args), "backup from standby");
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["from_standby"], true);
        let label = BackupLabel::parse(&fs::read(target.join("backup_label")).unwrap()).unwrap();
        assert!(label.is_from_standby(), "PostgreSQL {major}");
        let scratch = server_owned_tempdir();
        let data = scratch.path().join("data");
        copy_tree(&target, &data, Some(server_user())).unwrap();
        // A backup of a standby carries its standby.signal/recovery.conf settings: start it as
        // a plain server (recovery from the backup's own pg_wal).
        for f in [
            "standby.signal",
            "recovery.conf",
            "pgsafe.json",
            "backup_manifest",
        ] {
            let _ = fs::remove_file(data.join(f));
        }
        let mut restored = Cluster::adopt(&install, &data, ClusterOptions::new());
        restored.start();
        restored.wait_recovery_done();
        assert!(
            restored.query_one::<i64>("SELECT count(*) FROM t") >= 5000,
            "PostgreSQL {major}"
        );
        restored.stop();
    }
}

/// `--wal archive` waits for the server's archive and records where WAL comes from; `--wal
/// none` says so in pgsafe.json; neither stores WAL.
#[test]
fn wal_modes_archive_and_none() {
    let c = Cluster::started(
        &PgInstall::major(15),
        ClusterOptions::new().fast_unsafe().with_archive(true),
    );
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let out = ok(backup(&c, &a, &["--wal", "archive"]), "--wal archive");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["wal"]["mode"], "archive");
    let stop_wal = info["stop_wal"].as_str().unwrap();
    assert!(
        c.archive_dir().unwrap().join(stop_wal).exists(),
        "the stop segment is archived"
    );
    assert!(
        files_under(&a).iter().all(|f| !f.starts_with("pg_wal/0")),
        "no WAL stored"
    );
    let n = dir.path().join("n");
    let out = ok(backup(&c, &n, &["--wal", "none"]), "--wal none");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["wal"]["mode"], "none");
    assert!(
        info["wal"]["source"]
            .as_str()
            .unwrap()
            .contains("your own WAL archive")
    );
    // --wal archive on a server that does not archive is refused with an explanation.
    let plain = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    let out = backup(&plain, &dir.path().join("x"), &["--wal", "archive"]);
    refused(&out, &["does not archive"]);
}

/// `--progress json` writes NDJSON events to stderr (phases, progress); `--progress log` plain
/// lines; stdout carries only the result.
#[test]
fn progress_modes() {
    let c = Cluster::started(&PgInstall::major(18), ClusterOptions::new().fast_unsafe());
    let dir = tempfile::tempdir().unwrap();
    let conn = c.conninfo();
    let pgdata = c.data_dir().to_str().unwrap().to_owned();
    let t = dir.path().join("j");
    let out = ok(
        pgsafe(&[
            "backup",
            "-d",
            &conn,
            "-D",
            &pgdata,
            "--target",
            t.to_str().unwrap(),
            "--progress",
            "json",
            "--json",
        ]),
        "json progress",
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON: {l:?}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "phase" && e["phase"] == "copy")
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "progress" && e["total_bytes"].as_u64() > Some(0))
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["bytes"].as_u64() > Some(0));
    // Every progress event is within its phase's totals; the last event is `end`, with the
    // outcome, the exit code and each phase's counts: the data files (pg_control its own phase)
    // add up to the summary's file count, the WAL phase to its segments.
    for e in events.iter().filter(|e| e["event"] == "progress") {
        assert!(e["files"].as_u64() <= e["total_files"].as_u64(), "{e}");
        assert!(e["bytes"].as_u64() <= e["total_bytes"].as_u64(), "{e}");
        assert!(e["time"].as_str().is_some_and(rfc3339), "{e}");
    }
    let end = events.last().unwrap();
    assert_eq!(end["event"], "end", "{events:#?}");
    assert_eq!(
        (&end["outcome"], &end["exit_code"]),
        (&"ok".into(), &0.into())
    );
    let phase_files = |name: &str| -> u64 {
        end["phases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["phase"] == name)
            .map(|p| {
                assert_eq!(p["files"], p["total_files"], "{p}");
                assert_eq!(p["bytes"], p["total_bytes"], "{p}");
                p["files"].as_u64().unwrap()
            })
            .sum()
    };
    assert_eq!(
        phase_files("copy") + phase_files("pg_control"),
        summary["files"].as_u64().unwrap(),
        "{end}"
    );
    assert_eq!(
        phase_files("wal"),
        summary["wal"]["segments"]
            .as_array()
            .map_or(0, |s| s.len() as u64),
        "{end}: {summary}"
    );
    // A failed run ends with an `end` event too: error, exit code 2.
    let out = pgsafe(&[
        "backup",
        "-d",
        &conn,
        "-D",
        &pgdata,
        "--target",
        t.to_str().unwrap(),
        "--progress",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["event"], &last["outcome"]),
        (&"end".into(), &"error".into())
    );
    assert_eq!(last["exit_code"], 2, "{stderr}");
    let t = dir.path().join("l");
    let out = ok(
        pgsafe(&[
            "backup",
            "-d",
            &conn,
            "-D",
            &pgdata,
            "--target",
            t.to_str().unwrap(),
            "--progress",
            "log",
        ]),
        "log progress",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pgsafe: copy") && err.contains("MiB"), "{err}");
    // Each line starts with its time; the last says how the run ended.
    for l in err.lines() {
        let (time, rest) = l.split_once(' ').unwrap();
        assert!(rfc3339(time) && rest.starts_with("pgsafe: "), "{l:?}");
    }
    let last = err.lines().last().unwrap();
    assert!(last.contains("pgsafe: end: ok (exit code 0)"), "{err}");
    assert!(
        last.contains("; copy ") && last.contains(", wal "),
        "{last}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backup complete") && text.contains("start / stop LSN"),
        "{text}"
    );
    // A bar off a terminal draws nothing (indicatif hides it) and adds no final line.
    let t = dir.path().join("b");
    let out = ok(
        pgsafe(&[
            "backup",
            "-d",
            &conn,
            "-D",
            &pgdata,
            "--target",
            t.to_str().unwrap(),
            "--progress",
            "bar",
        ]),
        "bar progress",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("MiB") && !err.contains("end:"), "{err}");
}

fn rfc3339(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}
