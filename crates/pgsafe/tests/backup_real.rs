//! `run_backup` with a test hook that changes the database while the copy runs: a table
//! dropped, a table truncated and a relation extended mid-copy. The backup succeeds, reports
//! what vanished or shrank, and restores to the state at the backup's end.

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgsafe::backup::{BackupOptions, WalMode, run_backup};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::copy::Compression;
use pgsafe::plan::RelPath;
use pgsafe::progress::NoProgress;
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, copy_tree, per_major, server_owned_tempdir, server_user,
};

fn settings(c: &Cluster) -> ConnSettings {
    let input = ConnInput {
        dbname: Some(c.conninfo()),
        host: None,
        port: None,
        user: None,
    };
    ConnSettings::resolve(&input, &|_| None).unwrap()
}

fn ddl_during_copy(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new());
    // Big enough to be several files/ranges; the hook fires on the first data file opened.
    c.execute(
        "CREATE TABLE dropme AS SELECT g, repeat('x', 500) AS v FROM generate_series(1, 20000) g",
    );
    c.execute(
        "CREATE TABLE trunc AS SELECT g, repeat('y', 500) AS v FROM generate_series(1, 20000) g",
    );
    c.execute("CREATE TABLE grow AS SELECT g FROM generate_series(1, 1000) g");
    c.execute("CHECKPOINT");
    let dropme: String = c.query_one("SELECT pg_relation_filepath('dropme')");

    let client = Mutex::new(Some(c.connect()));
    let hook = move |_p: &RelPath| {
        // Once, at the first file the copy opens: change the database under the copy.
        if let Some(mut cl) = client.lock().unwrap().take() {
            cl.batch_execute(
                "DROP TABLE dropme; TRUNCATE trunc; \
                 INSERT INTO grow SELECT g FROM generate_series(1001, 200000) g; CHECKPOINT",
            )
            .unwrap();
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let opts = BackupOptions {
        pgdata: c.data_dir().to_path_buf(),
        target: target.clone(),
        conn: settings(&c),
        label: "ddl during copy".into(),
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
    let m = format!("PostgreSQL {major}");
    // A dropped relation's file is truncated at commit and unlinked at a later checkpoint, so
    // the copy finds it gone or empty; either way nothing of it is stored.
    assert!(
        info.vanished_files + info.shrunk_files >= 1,
        "{m}: vanished {} shrunk {}",
        info.vanished_files,
        info.shrunk_files
    );
    let stored = fs::metadata(target.join(&dropme))
        .map(|md| md.len())
        .unwrap_or(0);
    assert_eq!(stored, 0, "{m}: nothing of the dropped table is stored");
    assert!(target.join("pgsafe.json").exists());

    // Restore by hand and check the end state.
    let scratch = server_owned_tempdir();
    let data = scratch.path().join("data");
    copy_tree(&target, &data, Some(server_user())).unwrap();
    for f in ["pgsafe.json", "backup_manifest"] {
        fs::remove_file(data.join(f)).unwrap();
    }
    let mut restored = Cluster::adopt(&install, &data, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    let gone: i64 = restored.query_one("SELECT count(*) FROM pg_class WHERE relname = 'dropme'");
    assert_eq!(gone, 0, "{m}");
    assert_eq!(
        restored.query_one::<i64>("SELECT count(*) FROM trunc"),
        0,
        "{m}"
    );
    assert_eq!(
        restored.query_one::<i64>("SELECT count(*) FROM grow"),
        200_000,
        "{m}"
    );
    assert_eq!(
        restored.query_one::<i64>("SELECT sum(g) FROM grow"),
        200_000 * 200_001 / 2,
        "{m}"
    );
    restored.stop();
}

per_major!(ddl_during_copy);
