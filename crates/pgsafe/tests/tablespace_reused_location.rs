//! A tablespace created and dropped while a backup runs leaves no trace in the lists taken
//! before the start and after the stop (`backup/tablespaces.rs`), but its `CREATE TABLESPACE`
//! record is in the backup's WAL. Replaying it (`tblspc_redo` → `create_tablespace_directories`
//! in PostgreSQL's `src/backend/commands/tablespace.c`) removes the version directory
//! (`PG_<major>_<catversion>`) at the source's absolute location if one is there, and the drop's
//! replay removes it again. The unlucky DBA reused that location for a new tablespace after the
//! backup; a restore test of the backup on the source's host (the restored server running as
//! the source's own user) must leave the live tablespace alone. Before pgsafe read these
//! records, the restore test removed the live tablespace's empty version directory on 13 and
//! 17 (a later `CREATE TABLE` there failed) and reported the backup proven.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgsafe::backup::{BackupOptions, WalMode, run_backup};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::copy::Compression;
use pgsafe::plan::RelPath;
use pgsafe::progress::NoProgress;
use pgsafe::restore_test::{RestoreTestOptions, run_restore_test};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};

fn settings(c: &Cluster) -> ConnSettings {
    let input = ConnInput {
        dbname: Some(c.conninfo()),
        host: None,
        port: None,
        user: None,
    };
    ConnSettings::resolve(&input, &|_| None).unwrap()
}

/// Size and modification time of every entry below `dir` (links not followed).
fn tree_state(dir: &Path) -> BTreeMap<PathBuf, (u64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            out.insert(p.clone(), (m.len(), m.mtime()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn created_and_dropped_during_backup(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let c = Cluster::started(&install, ClusterOptions::new());
    let user = server_user();
    let loc: PathBuf = c.base_dir().join("reused location");
    fs::create_dir(&loc).unwrap();
    user.chown(&loc);
    c.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) x");
    c.execute("CHECKPOINT");

    let client = Mutex::new(Some(c.connect()));
    let hook_loc = loc.clone();
    let hook = move |_p: &RelPath| {
        if let Some(mut cl) = client.lock().unwrap().take() {
            cl.batch_execute(&format!(
                "CREATE TABLESPACE passing LOCATION '{}'",
                hook_loc.display()
            ))
            .unwrap();
            cl.batch_execute("DROP TABLESPACE passing").unwrap();
        }
    };
    let dir = server_owned_tempdir();
    let target = dir.path().join("b");
    let opts = BackupOptions {
        pgdata: c.data_dir().to_path_buf(),
        target: target.clone(),
        conn: settings(&c),
        label: "tablespace created and dropped during backup".into(),
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
        before_open: Some(Arc::new(hook)),
        check_pages: true,
        backup_type: None,
    };
    let info = run_backup(&opts, &NoProgress).unwrap();
    // Neither list saw it, but the backup's WAL has its CREATE TABLESPACE: recorded.
    assert!(
        info.tablespace_changes
            .iter()
            .any(|t| t.change == pgsafe::info::TablespaceChangeKind::Created
                && Path::new(&t.location) == loc),
        "{m}: {:?}",
        info.tablespace_changes
    );

    // Verify reads the record itself (restore refuses on it whatever pgsafe.json says).
    let vopts = pgsafe::verify::VerifyOptions {
        quick: false,
        jobs: 2,
        cancel: None,
    };
    let report = pgsafe::verify::verify_backup(&target, &vopts, &NoProgress).unwrap();
    assert!(
        report
            .wal_tablespaces_created
            .iter()
            .any(|t| Path::new(std::ffi::OsStr::from_bytes(&t.location)) == loc),
        "{m}: {:?}",
        report.wal_tablespaces_created
    );

    // After the backup, the DBA puts a new tablespace at the same location.
    c.execute(&format!(
        "CREATE TABLESPACE live LOCATION '{}'",
        loc.display()
    ));
    // Not used yet (or its tables moved away): its version directory is empty.
    let before = tree_state(&loc);
    assert_eq!(before.len(), 1, "{m}: {before:?}");

    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    user.chown(&scratch);
    let mut o = RestoreTestOptions::new(&target);
    o.bin_dir = Some(install.bin_dir.clone());
    o.scratch_parent = Some(scratch.clone());
    if nix::unistd::geteuid().is_root() {
        // The account of the source, as the recorded owner would be.
        o.run_as = Some(user.name.clone());
    }
    o.jobs = 2;
    o.keep = std::env::var_os("RED_KEEP").is_some();
    let r = run_restore_test(&o, &NoProgress);
    if o.keep {
        eprintln!("{}", dir.path().display());
        std::mem::forget(dir);
        eprintln!("{}", c.base_dir().display());
    }
    let after = tree_state(&loc);
    assert_eq!(
        before,
        after,
        "{m}: the restore test changed the source's live tablespace at {}; outcome {r:?}",
        loc.display()
    );
    c.execute("CREATE TABLE in_live TABLESPACE live AS SELECT generate_series(1, 1000) x");
    assert_eq!(
        c.query_one::<i64>("SELECT count(*) FROM in_live"),
        1000,
        "{m}"
    );
    // Refused (the backup replays a CREATE TABLESPACE at an absolute location), not proven.
    if let Ok(rep) = r {
        assert!(!rep.is_proven(), "{m}: {rep:?}");
    }
}

#[test]
fn created_and_dropped_during_backup_13() {
    created_and_dropped_during_backup(13);
}
#[test]
fn created_and_dropped_during_backup_17() {
    created_and_dropped_during_backup(17);
}
