//! `backup`'s checks each have their own switch: `--skip-space-check` for the free-space check,
//! `--allow-data-directory-mismatch` for the data_directory guard (which tells a standby's PGDATA
//! from its primary's), and the old `--force`, which turned both off at once, is refused with
//! the names of its replacements.

mod common;

use std::path::Path;
use std::process::Command;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};

use common::{json, ok, refused};

#[test]
fn force_is_refused_naming_the_replacements() {
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("b");
    let out = common::pgsafe(&[
        "backup",
        "-D",
        scratch.path().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--force",
    ]);
    refused(
        &out,
        &[
            "--force was removed",
            "--skip-space-check",
            "--allow-data-directory-mismatch",
        ],
    );
    assert!(!target.exists(), "nothing written");
}

/// Connected to a standby, given its primary's PGDATA (same system identifier): refused, and
/// `--skip-space-check` does not turn the guard off (the old `--force` did).
fn standby_guard(major: u32) {
    let primary = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let standby = Cluster::new_standby(&primary);
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("b");
    let conn = standby.conninfo();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "backup".to_owned(),
            "-d".into(),
            conn.clone(),
            "-D".into(),
            primary.data_dir().to_str().unwrap().into(),
            "--target".into(),
            target.to_str().unwrap().into(),
            "--progress".into(),
            "none".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    for extra in [&[][..], &["--skip-space-check"][..]] {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = common::pgsafe(&a);
        refused(
            &out,
            &[
                "is not the data directory of the server you connected to",
                "--allow-data-directory-mismatch",
            ],
        );
        assert!(
            !target.exists(),
            "PostgreSQL {major} {extra:?}: nothing written"
        );
    }
}

#[test]
fn standby_guard_pg11() {
    standby_guard(11);
}

#[test]
fn standby_guard_pg17() {
    standby_guard(17);
}

/// PGDATA reached through a bind mount is the server's data_directory (same device and inode):
/// the backup runs without any flag, and `pgsafe verify` accepts it. Needs root to mount.
#[test]
fn bind_mounted_pgdata_is_the_same_directory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bind_mounted_pgdata_is_the_same_directory needs root to bind-mount");
        return;
    }
    let c = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["--bind", c.data_dir().to_str().unwrap()])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "bind mount");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(mnt.path());
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("b");
    let conn = c.conninfo();
    let out = common::pgsafe(&[
        "backup",
        "-d",
        &conn,
        "-D",
        mnt.path().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--json",
        "--progress",
        "none",
    ]);
    let summary = json(&ok(out, "backup through a bind mount"));
    assert_eq!(summary["target"], target.to_str().unwrap());
    assert_eq!(summary["exit_code"], 0);
    let started = summary["started_at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(started).unwrap();
    ok(
        common::pgsafe(&["verify", target.to_str().unwrap()]),
        "verify",
    );
}
