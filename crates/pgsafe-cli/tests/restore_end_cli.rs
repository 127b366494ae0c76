//! A restore without recovery options ends recovery at the end of the backup, and the restored
//! server starts, also when the backup's WAL ends right where the backup becomes consistent.
//!
//! With `recovery_target = 'immediate'` PostgreSQL stops only when it reads a record after the
//! consistency point; when there is none, 13+ refuse to start ("recovery ended before
//! configured recovery target was reached", `PerformWalRecovery` in
//! `src/backend/access/transam/xlogrecovery.c`). A backup of a standby whose primary is down
//! (maintenance, failover in progress) is such a backup: the standby's WAL ends with the
//! primary's shutdown checkpoint, which is also the backup's redo point.

mod common;

use std::fs;
use std::path::Path;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::{ok, pgsafe};

fn backup(c: &Cluster, target: &Path) {
    ok(
        pgsafe(&[
            "backup",
            "-d",
            &c.conninfo(),
            "-D",
            c.data_dir().to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "--progress",
            "none",
        ]),
        "backup",
    );
}

fn restore(backup: &Path, target: &Path) {
    restore_with(backup, target, &[]);
}

fn restore_with(backup: &Path, target: &Path, extra: &[&str]) {
    let mut args = vec![
        "restore",
        backup.to_str().unwrap(),
        "--pgdata",
        target.to_str().unwrap(),
        "--progress",
        "none",
    ];
    args.extend_from_slice(extra);
    ok(pgsafe(&args), "restore");
}

/// The restore's decision made twice: from the full verification's WAL walk (the default) and,
/// without that verification, by reading the restored WAL. Both must agree; returns whether the
/// restore stops at `recovery_target = 'immediate'`.
fn stops_immediately(backup: &Path, scratch: &Path, m: &str) -> bool {
    let quick = scratch.join("quick");
    restore_with(backup, &quick, &["--no-verify"]);
    let quick_conf = recovery_settings(&quick);
    fs::remove_dir_all(&quick).unwrap();
    let conf = recovery_settings(&scratch.join("data"));
    let immediate = |c: &str| c.contains("\nrecovery_target = 'immediate'\n");
    assert_eq!(
        immediate(&conf),
        immediate(&quick_conf),
        "{m}: verified {conf}\nunverified {quick_conf}"
    );
    immediate(&conf)
}

/// The recovery settings the restore wrote (recovery.conf on 10–11).
fn recovery_settings(data: &Path) -> String {
    fs::read_to_string(data.join("recovery.conf"))
        .or_else(|_| fs::read_to_string(data.join("postgresql.auto.conf")))
        .unwrap()
}

fn standby_backup_with_primary_down(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut primary = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    primary.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 3000) g");
    let mut standby = Cluster::new_standby(&primary);
    standby.wait_for_replay(&primary);
    // The primary goes down cleanly: its last WAL is the shutdown checkpoint, which the
    // standby replays (a restartpoint there is the backup's redo point).
    primary.stop();

    let scratch = server_owned_tempdir();
    let b = scratch.path().join("b");
    backup(&standby, &b);
    let data = scratch.path().join("data");
    restore(&b, &data);
    let conf = recovery_settings(&data);
    assert!(conf.contains("restore_command = 'false'"), "{m}: {conf}");
    // The WAL ends at the consistency point: no target (the end of the WAL is the end).
    assert!(!stops_immediately(&b, scratch.path(), &m), "{m}: {conf}");

    let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert_eq!(r.query_one::<i64>("SELECT count(*) FROM t"), 3000, "{m}");
    // A new timeline: the copy is writable and writes WAL under names of its own.
    r.execute("INSERT INTO t VALUES (-1)");
    assert!(r.query_one::<i32>("SELECT timeline_id FROM pg_control_checkpoint()") >= 1);
    let tli: String = r.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert!(
        !tli.starts_with("00000001"),
        "{m}: still on timeline 1 ({tli})"
    );
    r.stop();
    standby.stop();
}

#[test]
fn standby_backup_with_primary_down_10() {
    standby_backup_with_primary_down(10);
}

#[test]
fn standby_backup_with_primary_down_13() {
    standby_backup_with_primary_down(13);
}

#[test]
fn standby_backup_with_primary_down_14() {
    standby_backup_with_primary_down(14);
}

#[test]
fn standby_backup_with_primary_down_16() {
    standby_backup_with_primary_down(16);
}

#[test]
fn standby_backup_with_primary_down_18() {
    standby_backup_with_primary_down(18);
}

/// A primary's backup always has a record after its end (the switch `pg_backup_stop` writes):
/// its restore keeps stopping at the end of the backup with `recovery_target = 'immediate'`, so
/// WAL written after the backup is never replayed.
fn primary_backup_keeps_immediate(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g");
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("b");
    backup(&c, &b);
    let data = scratch.path().join("data");
    restore(&b, &data);
    let conf = recovery_settings(&data);
    assert!(conf.contains("\nrecovery_target = 'immediate'\n"), "{conf}");
    assert!(stops_immediately(
        &b,
        scratch.path(),
        &format!("PostgreSQL {major}")
    ));
    let mut r = Cluster::adopt(&install, &data, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert_eq!(r.query_one::<i64>("SELECT count(*) FROM t"), 100);
    r.stop();
}

#[test]
fn primary_backup_keeps_immediate_11() {
    primary_backup_keeps_immediate(11);
}

#[test]
fn primary_backup_keeps_immediate_17() {
    primary_backup_keeps_immediate(17);
}
