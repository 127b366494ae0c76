//! A repository on storage that is not a folder: a real server backed up into a repository
//! held by a `MemoryBackend` (standing for object storage: no folders, no local files), then
//! resolved, verified and restored from it, and the restored server started. The backup's
//! claim is an object, its empty directories come back from its recorded directory list, and
//! the restored rows are the server's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgsafe::backup::repo::run_repo_backup;
use pgsafe::backup::{BackupOptions, WalMode};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::copy::Compression;
use pgsafe::progress::NoProgress;
use pgsafe::repo::register::server_info;
use pgsafe::repo::{LeaseTiming, REPO_FORMAT, Registration, Repository, doc};
use pgsafe::restore::{RestoreOptions, run_restore_stored};
use pgsafe::storage::{Backend, Ident, Location, MemoryBackend, ObjectName};
use pgsafe::verify::{VerifyOptions, verify_stored_with};
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, per_major, server_owned_tempdir, server_user,
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

fn backup_options(c: &Cluster, compression: Compression) -> BackupOptions {
    BackupOptions {
        pgdata: c.data_dir().to_path_buf(),
        // Ignored for a repository: the backup's place is claimed there.
        target: PathBuf::new(),
        conn: settings(c),
        label: "memory repository".into(),
        fast: true,
        jobs: 2,
        compression,
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
    }
}

fn memory_repository(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 50000) g; \
         CREATE INDEX ON t (v)",
    );
    let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::create_over(Arc::clone(&mem), Location::Opened("memory://repo".into()))
        .unwrap();
    assert!(repo.local_root().is_none());
    let cluster = Ident::new("main").unwrap();
    let conn = settings(&c);
    let info = server_info(&conn).unwrap();
    repo.register(&Registration {
        format: REPO_FORMAT,
        cluster: cluster.clone(),
        system_identifier: info.system_id,
        server_version: info.version,
        wal_segment_size: info.wal_segment_size,
        pgdata: c.data_dir().display().to_string(),
        registered_at: doc::format_time(doc::now_us()),
        pgsafe_version: "test".into(),
    })
    .unwrap();

    let compression = if major >= 15 {
        Compression::Zstd { level: 1 }
    } else {
        Compression::None
    };
    let timing = LeaseTiming::default();
    let done = run_repo_backup(
        &repo,
        &cluster,
        &backup_options(&c, compression),
        timing,
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("{m}: {e}"));
    assert_eq!(
        done.folder,
        PathBuf::from(format!("memory://repo/main/backups/{}", done.id)),
        "{m}"
    );
    // Complete: pgsafe.json there, the claim (pgsafe.incomplete) gone, the lease released.
    let prefix = format!("main/backups/{}", done.id);
    let obj = |rel: &str| ObjectName::new(format!("{prefix}/{rel}")).unwrap();
    assert!(mem.size(&obj("pgsafe.json")).is_ok(), "{m}");
    assert!(mem.size(&obj("pgsafe.incomplete")).is_err(), "{m}");
    assert!(
        mem.list(Some(&ObjectName::new("main/leases").unwrap()))
            .unwrap()
            .is_empty(),
        "{m}"
    );
    // The empty directories are recorded, since object storage cannot hold them.
    let dirs: Vec<String> = done
        .info
        .directories
        .iter()
        .map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned())
        .collect();
    for d in [
        "pg_notify",
        "pg_wal",
        "pg_wal/archive_status",
        "pg_snapshots",
        "base",
    ] {
        assert!(dirs.iter().any(|x| x == d), "{m}: {d} not in {dirs:?}");
    }

    // Rows written after the backup are not in the restore.
    c.execute("INSERT INTO t SELECT g, 'after' FROM generate_series(50001, 50100) g");

    let (entry, stored) = repo.resolve(&cluster, None, timing).unwrap();
    assert_eq!(entry.id, done.id, "{m}");
    let archive = repo.wal_archive(&cluster);
    let report = verify_stored_with(
        &stored,
        Some(&archive),
        &VerifyOptions {
            quick: false,
            jobs: 2,
            cancel: None,
        },
        &NoProgress,
    )
    .unwrap();
    assert!(report.ok, "{m}: {:?}", report.problems);
    assert!(report.wal_records_checked > 0, "{m}");

    let scratch = server_owned_tempdir();
    let data = scratch.path().join("data");
    let mut o = RestoreOptions::new(stored.shown(), &data);
    o.sync = false;
    o.jobs = 2;
    o.owner = nix::unistd::Uid::effective()
        .is_root()
        .then(|| server_user().name.clone());
    o.wal_archive = Some(archive);
    let r = run_restore_stored(&stored, &o, &NoProgress).unwrap_or_else(|e| panic!("{m}: {e}"));
    assert_eq!(r.verification, "full", "{m}");
    for d in [
        "pg_notify",
        "pg_wal/archive_status",
        "pg_snapshots",
        "pg_replslot",
    ] {
        assert!(data.join(d).is_dir(), "{m}: {d} was not restored");
    }
    let mut restored = Cluster::adopt(&install, &data, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    let (n, sum): (i64, i64) = (
        restored.query_one("SELECT count(*) FROM t"),
        restored.query_one("SELECT sum(g)::bigint FROM t"),
    );
    assert_eq!((n, sum), (50_000, 50_000 * 50_001 / 2), "{m}");
    let same: bool =
        restored.query_one("SELECT bool_and(v = md5(g::text)) FROM t WHERE g % 97 = 0");
    assert!(same, "{m}");
    restored.stop();
}

per_major!(memory_repository: 10, 13, 18);
