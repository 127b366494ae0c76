//! As root, a restore test runs the backup's server as the owner `pgsafe.json` records only
//! when nobody else could have written that record (`docs/threat-model.md`, "What a restore
//! test may do"). A backup folder, or a `pgsafe.json`, that its owner left writable by its group
//! or by everyone lets another user rewrite the record (and the configuration the server runs):
//! the account is then not chosen from it. Real server, real backup, run as root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use pgsafe::backup::{BackupOptions, WalMode, run_backup};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::copy::Compression;
use pgsafe::progress::NoProgress;
use pgsafe::restore_test::{RestoreTestError, RestoreTestOptions, run_restore_test};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};

fn backup(c: &Cluster, target: &Path) {
    let input = ConnInput {
        dbname: Some(c.conninfo()),
        host: None,
        port: None,
        user: None,
    };
    let opts = BackupOptions {
        pgdata: c.data_dir().to_path_buf(),
        target: target.to_owned(),
        conn: ConnSettings::resolve(&input, &|_| None).unwrap(),
        label: "restore test trust".into(),
        fast: true,
        jobs: 2,
        compression: Compression::None,
        checksum: ChecksumAlgorithm::Crc32c,
        max_rate: None,
        wal: Some(WalMode::Include),
        check_space: true,
        allow_data_directory_mismatch: false,
        archive_timeout: Duration::from_secs(60),
        cancel: None,
        before_open: None,
        check_pages: true,
        backup_type: None,
    };
    run_backup(&opts, &NoProgress).unwrap();
}

fn writable_by_others_does_not_choose(major: u32) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new());
    let dir = server_owned_tempdir();
    let target = dir.path().join("b");
    backup(&c, &target);
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let run = || {
        let mut o = RestoreTestOptions::new(&target);
        o.bin_dir = Some(install.bin_dir.clone());
        o.scratch_parent = Some(scratch.clone());
        o.jobs = 2;
        run_restore_test(&o, &NoProgress)
    };
    let chmod = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode));
    let marker = target.join("pgsafe.json");
    let folder_mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    let marker_mode = fs::metadata(&marker).unwrap().permissions().mode() & 0o7777;
    for (what, path, mode, restore) in [
        ("folder writable by everyone", &target, 0o777, folder_mode),
        ("folder writable by its group", &target, 0o770, folder_mode),
        (
            "pgsafe.json writable by everyone",
            &marker,
            0o666,
            marker_mode,
        ),
    ] {
        chmod(path, mode).unwrap();
        let r = run();
        chmod(path, restore).unwrap();
        match r {
            Err(RestoreTestError::RunAs(e)) => {
                let e = e.to_string();
                assert!(e.contains("writable"), "{m}: {what}: {e}");
                assert!(e.contains("name the user"), "{m}: {what}: {e}");
            }
            other => panic!("{m}: {what}: the recorded owner was trusted: {other:?}"),
        }
    }
    assert!(
        fs::read_dir(&scratch).unwrap().next().is_none(),
        "{m}: a refused restore test left files"
    );
    // Its owner's modes restored: the recorded owner is used again.
    let r = run().unwrap();
    assert!(r.is_proven(), "{m}: {r:?}");
    assert_eq!(r.run_as, server_user().name, "{m}");
}

#[test]
fn writable_by_others_does_not_choose_16() {
    writable_by_others_does_not_choose(16);
}
