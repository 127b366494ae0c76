//! `pgsafe doctor` and `pgsafe inspect` against what an unlucky DBA or an attacker leaves in a
//! data directory: a restore marker that outlived its restore, a standby without its signal
//! file, a password in primary_conninfo, and FIFOs, links and huge files where doctor reads.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, mkfifo, ok, pgsafe};
use pgsafe::label::BackupLabel;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `pgsafe args…`; a run that has not ended after `limit` is killed and reported as a
/// hang (code -2) — a guard so a regression fails instead of blocking the suite.
fn run_guarded(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("PGDATA")
        .env_remove("PGSAFE_RUN_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    loop {
        if let Some(_st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Run {
                code: -2,
                stdout: String::new(),
                stderr: format!("still running after {limit:?}: hung"),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn doctor(dir: &Path, extra: &[&str]) -> Run {
    let d = dir.to_str().unwrap();
    let mut args = vec!["doctor"];
    args.extend_from_slice(extra);
    args.push(d);
    run_guarded(&args, Duration::from_secs(60))
}

fn doctor_json(dir: &Path) -> (Value, i32) {
    let r = doctor(dir, &["--json"]);
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {} {}", r.code, r.stdout, r.stderr));
    eprintln!("---- doctor ----\n{}", doctor(dir, &[]).stdout);
    (v, r.code)
}

fn opts() -> ClusterOptions {
    ClusterOptions::new()
        .conf("max_wal_size = 32MB")
        .conf("min_wal_size = 32MB")
}

// ---- a restore marker outlives its restore ---------------------------------------------------

/// PG 14: pgsafe restored a backup, the copy recovered and ran on its own (its own archive),
/// later crashed during an exclusive backup. Old doctor: "restored backup, confidence high",
/// advice to copy WAL from the old backup (which lacks it). Now: state 4, and since its archive
/// is checked, the rename is offered and keeps every row.
#[test]
fn stale_restore_marker_14() {
    let install = PgInstall::major(14);
    let c = Cluster::started(&install, opts());
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    c.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 1000)");
    let tmp = server_owned_tempdir();
    let b = tmp.path().join("backup");
    ok(common::backup(&c, &b, &["--fast"]), "pgsafe backup");
    drop(c);
    let data = tmp.path().join("data");
    ok(
        pgsafe(&[
            "restore",
            b.to_str().unwrap(),
            "--pgdata",
            data.to_str().unwrap(),
            "--progress",
            "none",
        ]),
        "pgsafe restore",
    );
    assert!(data.join(pgsafe::doctor::RESTORE_MARKER_FILE).exists());
    let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    let archive = tmp.path().join("archive");
    fs::create_dir(&archive).unwrap();
    server_user().chown(&archive);
    r.execute("ALTER SYSTEM SET max_wal_size = '32MB'");
    r.execute("ALTER SYSTEM SET min_wal_size = '32MB'");
    r.execute("ALTER SYSTEM SET archive_mode = on");
    r.execute(&format!(
        "ALTER SYSTEM SET archive_command = 'test ! -f {0}/%f && cp %p {0}/%f'",
        archive.display()
    ));
    r.restart();
    r.execute("SELECT pg_start_backup('later', true)");
    let label = BackupLabel::parse(&fs::read(data.join("backup_label")).unwrap()).unwrap();
    let seg = label.fields().start.file.to_string();
    let mut added = 0;
    for _ in 0..60 {
        if !data.join("pg_wal").join(&seg).exists() {
            break;
        }
        r.execute("INSERT INTO t (v) SELECT 'churn' FROM generate_series(1, 2000)");
        added += 2000;
        r.execute("SELECT pg_switch_wal()");
        r.execute("CHECKPOINT");
    }
    assert!(!data.join("pg_wal").join(&seg).exists());
    r.crash();
    let (v, code) = doctor_json(&data);
    let verdict = &v["verdict"];
    assert_eq!(verdict["state_number"], 4, "{verdict:#}");
    assert_eq!(code, 1);
    assert!(
        verdict["evidence"].to_string().contains("restore is over"),
        "{verdict:#}"
    );
    assert!(
        !verdict["next_steps"]
            .to_string()
            .contains(b.to_str().unwrap()),
        "no advice to take WAL from the old backup: {verdict:#}"
    );
    assert_eq!(verdict["confidence"], "high", "{verdict:#}");
    let f = doctor(&data, &["--fix"]);
    assert_eq!(f.code, 0, "{} {}", f.stdout, f.stderr);
    r.start();
    assert_eq!(r.query_one::<i64>("SELECT count(*) FROM t"), 1000 + added);
}

// ---- a standby without its signal file; a password in primary_conninfo ------------------------

/// A crashed standby whose standby.signal (10–11: recovery.conf) is gone starts as a primary:
/// never exit 0. Its primary_conninfo password never reaches the output.
fn standby_without_signal(major: u32) {
    let p = Cluster::started(&PgInstall::major(major), opts());
    p.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    let mut s = Cluster::new_standby(&p);
    let dir = s.data_dir().to_path_buf();
    s.crash();
    let secret = "S3cr3t-pw";
    let conf = if major >= 12 {
        "postgresql.auto.conf"
    } else {
        "recovery.conf"
    };
    let mut text = fs::read_to_string(dir.join(conf)).unwrap_or_default();
    text.push_str(&format!(
        "primary_conninfo = 'host=primary.example user=rep password={secret}'\n"
    ));
    fs::write(dir.join(conf), text).unwrap();
    server_user().chown(&dir.join(conf));
    // With its signal: it resumes recovery (exit 1 only because, without an archive to look
    // in, a crashed standby and a file copy of it look the same), and no password anywhere.
    let (v, code) = doctor_json(&dir);
    assert_eq!(code, 1, "{:#}", v["verdict"]);
    assert_eq!(v["verdict"]["state"], "crashed", "{:#}", v["verdict"]);
    let human = doctor(&dir, &[]);
    for out in [v.to_string(), human.stdout.clone(), human.stderr.clone()] {
        assert!(!out.contains(secret), "password printed: {out}");
    }
    assert!(
        v["facts"]["settings"]
            .to_string()
            .contains("password=********"),
        "{}",
        v["facts"]["settings"]
    );
    // Without it.
    let signal = if major >= 12 {
        "standby.signal"
    } else {
        "recovery.conf"
    };
    fs::rename(dir.join(signal), dir.join("signal.aside")).unwrap();
    let (v, code) = doctor_json(&dir);
    let verdict = &v["verdict"];
    assert_ne!(code, 0, "{verdict:#}");
    assert!(
        verdict["summary"].as_str().unwrap().contains("PRIMARY"),
        "{verdict:#}"
    );
    assert!(
        verdict["must_confirm"]
            .to_string()
            .contains("Should this server become a primary?"),
        "{verdict:#}"
    );
    assert!(!v.to_string().contains(secret));
    // PostgreSQL's own behaviour: started as it is, it ends recovery and becomes a primary.
    if major >= 12 {
        s.start();
        let in_recovery: bool = s.query_one("SELECT pg_is_in_recovery()");
        assert!(!in_recovery, "it came up as a primary, as doctor warned");
    }
}

#[test]
fn standby_without_signal_10() {
    standby_without_signal(10)
}

#[test]
fn standby_without_signal_15() {
    standby_without_signal(15)
}

#[test]
fn standby_without_signal_18() {
    standby_without_signal(18)
}

// ---- FIFOs, links, huge files ---------------------------------------------------------------------

/// A FIFO at backup_label (and at every other file doctor or inspect reads) makes them answer,
/// not hang; a symbolic link there is reported, not followed; a huge file is not read whole.
#[test]
fn special_files_where_doctor_reads() {
    let mut c = Cluster::started(&PgInstall::major(15), opts());
    c.stop();
    let dir = c.data_dir().to_path_buf();
    let d = dir.to_str().unwrap();
    for name in [
        "backup_label",
        "tablespace_map",
        "postmaster.pid",
        "pgsafe_restore.json",
        "backup_label.old",
        "postgresql.auto.conf",
        "pg_wal/000000010000000000000099",
        "pg_wal/000000010000000000000001.00000028.backup",
    ] {
        let p = dir.join(name);
        let saved = fs::read(&p).ok();
        mkfifo(&p);
        let r = doctor(&dir, &["--json"]);
        assert_ne!(r.code, -2, "doctor hung on a FIFO at {name}");
        assert!(r.code >= 0, "{name}: {}", r.stderr);
        let v: Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{name}: {e} {}", r.stderr));
        if name == "backup_label" {
            assert_eq!(v["verdict"]["state_number"], 9, "{}", v["verdict"]);
            assert!(
                v["facts"]["label"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("FIFO"),
                "{}",
                v["facts"]["label"]
            );
            let i = run_guarded(&["inspect", d], Duration::from_secs(60));
            assert_ne!(i.code, -2, "inspect hung on a FIFO at backup_label");
        }
        fs::remove_file(&p).unwrap();
        if let Some(b) = saved {
            fs::write(&p, b).unwrap();
            server_user().chown(&p);
        }
    }
    // A link to a file only root may read is not followed.
    let secret = server_owned_tempdir();
    let target = secret.path().join("secret");
    fs::write(&target, "START WAL LOCATION: 0/TOPSECRET\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("backup_label")).unwrap();
    let r = doctor(&dir, &["--json"]);
    assert!(
        !r.stdout.contains("TOPSECRET"),
        "followed the link: {}",
        r.stdout
    );
    assert!(r.stdout.contains("symbolic link"), "{}", r.stdout);
    fs::remove_file(dir.join("backup_label")).unwrap();
    // A huge (sparse) backup_label is refused, not read.
    let f = fs::File::create(dir.join("backup_label")).unwrap();
    f.set_len(8 << 30).unwrap();
    let r = doctor(&dir, &["--json"]);
    assert_ne!(r.code, -2);
    assert!(r.stdout.contains("larger than"), "{}", r.stdout);
    fs::remove_file(dir.join("backup_label")).unwrap();
    c.start();
}

// ---- PostgreSQL's 050 scenario: redo in one segment, the checkpoint record in a later one ----

/// Makes pg_control's latest checkpoint one whose redo point and record lie in different
/// segments: a spread (non-immediate) checkpoint, requested by a backup start, is still
/// writing buffers when another session switches WAL. Retries until it happened.
fn split_checkpoint(c: &Cluster) -> (String, String) {
    let major = c.major();
    for _ in 0..10 {
        c.execute("INSERT INTO t (v) SELECT 'dirty' FROM generate_series(1, 5000)");
        let mut s = c.connect();
        let starter = std::thread::spawn(move || {
            let (start, stop) = if major >= 15 {
                (
                    "SELECT pg_backup_start('split', false)",
                    "SELECT pg_backup_stop(false)",
                )
            } else {
                (
                    "SELECT pg_start_backup('split', false, false)",
                    "SELECT pg_stop_backup(false, false)",
                )
            };
            s.simple_query(start).unwrap();
            s.simple_query(stop).unwrap();
        });
        // Switch segments while the checkpoint is still writing buffers (a no-op switch
        // needs WAL since the last one: hence the insert).
        while !starter.is_finished() {
            c.execute("INSERT INTO t (v) VALUES ('between')");
            c.execute("SELECT pg_switch_wal()");
            std::thread::sleep(Duration::from_millis(100));
        }
        starter.join().unwrap();
        let redo: String =
            c.query_one("SELECT pg_walfile_name(redo_lsn) FROM pg_control_checkpoint()");
        let ckpt: String =
            c.query_one("SELECT pg_walfile_name(checkpoint_lsn) FROM pg_control_checkpoint()");
        if redo != ckpt {
            return (redo, ckpt);
        }
    }
    panic!("no checkpoint spanning a segment boundary after 10 attempts");
}

/// doctor names the redo segment (not the checkpoint's) and the message PostgreSQL prints,
/// which the server's own failed start confirms.
fn redo_segment_missing(major: u32) {
    let mut c = Cluster::started(
        &PgInstall::major(major),
        opts()
            .conf("checkpoint_completion_target = 0.9")
            .conf("max_wal_size = 1GB"),
    );
    c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)");
    split_checkpoint(&c);
    c.crash();
    let dir = c.data_dir().to_path_buf();
    // The segments as the crashed pg_control names them.
    let ctl = pgsafe::control::read_control_file(&dir.join("global/pg_control")).unwrap();
    let seg = |lsn| {
        pgsafe::types::WalSegment::containing(
            lsn,
            ctl.checkpoint_copy.this_timeline,
            ctl.xlog_seg_size,
        )
        .to_string()
    };
    let (redo_seg, ckpt_seg) = (seg(ctl.checkpoint_copy.redo), seg(ctl.checkpoint));
    assert_ne!(redo_seg, ckpt_seg);
    fs::remove_file(dir.join("pg_wal").join(&redo_seg)).unwrap();
    assert!(dir.join("pg_wal").join(&ckpt_seg).exists());
    let (v, code) = doctor_json(&dir);
    let verdict = &v["verdict"];
    assert_eq!(code, 2, "{verdict:#}");
    let summary = verdict["summary"].as_str().unwrap();
    assert!(summary.contains(&redo_seg), "{summary}");
    assert!(summary.contains("redo"), "{summary}");
    let evidence = verdict["evidence"].to_string();
    let before = c.server_log().len();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.start()));
    let log = c.server_log()[before..].to_owned();
    if major <= 13 {
        // These versions do not check: they start, and the WAL between the redo point and the
        // checkpoint record is never replayed. doctor says so instead of quoting an error.
        assert!(r.is_ok(), "PostgreSQL {major} refused after all:\n{log}");
        assert!(evidence.contains("starts anyway"), "{evidence}\n{log}");
        return;
    }
    assert!(
        r.is_err(),
        "the server started without its redo segment:\n{log}"
    );
    let quoted = verdict["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| {
            e.split_once("PostgreSQL stops with \"")
                .map(|(_, q)| q.split('"').next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no quoted message: {verdict:#}"));
    assert!(
        log.contains(&quoted),
        "doctor quoted {quoted:?}; PostgreSQL said:\n{log}"
    );
}

#[test]
fn redo_segment_missing_12() {
    redo_segment_missing(12)
}

#[test]
fn redo_segment_missing_18() {
    redo_segment_missing(18)
}

#[test]
fn redo_segment_missing_10() {
    redo_segment_missing(10)
}

#[test]
fn redo_segment_missing_13() {
    redo_segment_missing(13)
}

#[test]
fn redo_segment_missing_14() {
    redo_segment_missing(14)
}
