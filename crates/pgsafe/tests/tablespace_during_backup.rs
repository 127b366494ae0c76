//! A tablespace created (or dropped) while `run_backup` copies, through the copy hook: the
//! backup records it in `pgsafe.json`, and `run_restore` refuses the backup before writing
//! anything — replaying its CREATE TABLESPACE would make the copy take over the source's live
//! tablespace directory (`tblspc_redo` in PostgreSQL's `src/backend/commands/tablespace.c`).
//! The unlucky DBA's side: the restore runs on the source's host, next to the running source.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgsafe::backup::{BackupOptions, TablespaceChangeKind, WalMode, run_backup};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::copy::Compression;
use pgsafe::plan::RelPath;
use pgsafe::progress::NoProgress;
use pgsafe::restore::{
    RestoreError, RestoreOptions, TablespaceMapping, TablespaceSelector, run_restore,
};
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

fn tablespace_created_during_backup(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let c = Cluster::started(&install, ClusterOptions::new());
    let user = server_user();
    let new_loc: PathBuf = c.base_dir().join("created during backup");
    let old_loc: PathBuf = c.base_dir().join("dropped during backup");
    for d in [&new_loc, &old_loc] {
        fs::create_dir(d).unwrap();
        user.chown(d);
    }
    c.execute(&format!(
        "CREATE TABLESPACE dropme LOCATION '{}'",
        old_loc.display()
    ));
    c.execute(
        "CREATE TABLE big AS SELECT g, repeat('x', 200) AS v FROM generate_series(1, 20000) g",
    );
    c.execute("CHECKPOINT");
    let dropme_oid: u32 =
        c.query_one::<i64>("SELECT oid::int8 FROM pg_tablespace WHERE spcname = 'dropme'") as u32;

    let client = Mutex::new(Some(c.connect()));
    let loc = new_loc.clone();
    let hook = move |_p: &RelPath| {
        // Once, at the first file the copy opens.
        if let Some(mut cl) = client.lock().unwrap().take() {
            cl.batch_execute(&format!(
                "CREATE TABLESPACE newts LOCATION '{}'",
                loc.display()
            ))
            .unwrap();
            cl.batch_execute(
                "CREATE TABLE in_new (x int) TABLESPACE newts; \
                 INSERT INTO in_new SELECT g FROM generate_series(1, 1000) g",
            )
            .unwrap();
            cl.batch_execute("DROP TABLESPACE dropme").unwrap();
        }
    };
    let dir = server_owned_tempdir();
    let target = dir.path().join("b");
    let opts = BackupOptions {
        pgdata: c.data_dir().to_path_buf(),
        target: target.clone(),
        conn: settings(&c),
        label: "tablespace during backup".into(),
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
    let newts_oid =
        c.query_one::<i64>("SELECT oid::int8 FROM pg_tablespace WHERE spcname = 'newts'") as u32;
    let created: Vec<_> = info
        .tablespace_changes
        .iter()
        .filter(|t| t.change == TablespaceChangeKind::Created)
        .collect();
    assert_eq!(created.len(), 1, "{m}: {:?}", info.tablespace_changes);
    assert_eq!(created[0].oid, newts_oid, "{m}");
    assert_eq!(PathBuf::from(&created[0].location), new_loc, "{m}");
    assert!(
        info.tablespace_changes
            .iter()
            .any(|t| t.oid == dropme_oid && t.change == TablespaceChangeKind::Dropped),
        "{m}: {:?}",
        info.tablespace_changes
    );
    // Recorded in pgsafe.json, as restore reads it.
    let json = fs::read_to_string(target.join("pgsafe.json")).unwrap();
    assert!(json.contains("\"tablespace_changes\""), "{m}: {json}");

    // The restore, on the same host: refused before writing anything.
    let restored = dir.path().join("restored");
    let mut ropts = RestoreOptions::new(&target, &restored);
    ropts.tablespace_map = vec![TablespaceMapping {
        from: TablespaceSelector::Oid(dropme_oid),
        to: dir.path().join("dropme restored"),
    }];
    ropts.sync = false;
    let before = fs::read_dir(&new_loc).unwrap().count();
    let err = run_restore(&ropts, &NoProgress).unwrap_err();
    assert!(
        matches!(err, RestoreError::TablespaceCreatedDuringBackup { .. }),
        "{m}: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("tablespace {newts_oid} at {}", new_loc.display())),
        "{m}: {text}"
    );
    assert!(text.contains("Take a new backup"), "{m}: {text}");
    assert!(
        !restored.exists(),
        "{m}: the refused restore wrote {}",
        restored.display()
    );
    assert_eq!(fs::read_dir(&new_loc).unwrap().count(), before, "{m}");
    assert_eq!(
        c.query_one::<i64>("SELECT count(*) FROM in_new"),
        1000,
        "{m}"
    );
}

#[test]
fn tablespace_created_during_backup_10() {
    tablespace_created_during_backup(10);
}
#[test]
fn tablespace_created_during_backup_14() {
    tablespace_created_during_backup(14);
}
#[test]
fn tablespace_created_during_backup_15() {
    tablespace_created_during_backup(15);
}
#[test]
fn tablespace_created_during_backup_18() {
    tablespace_created_during_backup(18);
}
