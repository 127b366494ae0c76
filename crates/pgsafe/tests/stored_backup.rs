//! verify and restore read a backup only through the storage interface: a real backup's
//! files copied into a `MemoryBackend` (under a repository-like prefix), with the folder moved
//! away, verify as the folder does, a byte changed in memory is found, and a restore from
//! memory writes the same data files, WAL and pg_control as a restore from the folder.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pgsafe::backup::{BackupOptions, WalMode, run_backup};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::copy::Compression;
use pgsafe::layout::{StoredBackup, list_backup};
use pgsafe::manifest::Manifest;
use pgsafe::progress::NoProgress;
use pgsafe::restore::{RestoreOptions, run_restore, run_restore_stored};
use pgsafe::storage::{Backend, MemoryBackend, ObjectName, PutOptions};
use pgsafe::verify::{VerifyOptions, verify_backup, verify_stored};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_user};

fn settings(c: &Cluster) -> ConnSettings {
    let input = ConnInput {
        dbname: Some(c.conninfo()),
        host: None,
        port: None,
        user: None,
    };
    ConnSettings::resolve(&input, &|_| None).unwrap()
}

fn full() -> VerifyOptions<'static> {
    VerifyOptions {
        quick: false,
        jobs: 2,
        cancel: None,
    }
}

fn restore_opts(source: &Path, target: &Path) -> RestoreOptions {
    let mut o = RestoreOptions::new(source, target);
    o.sync = false;
    o.jobs = 2;
    o.owner = nix::unistd::Uid::effective()
        .is_root()
        .then(|| server_user().name.clone());
    o
}

fn stored_in_memory(major: u32, compression: Compression) {
    let m = format!("PostgreSQL {major} {compression:?}");
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    // More than the verifier's 32 MiB split size: one file is checked as ranges.
    c.execute(
        "CREATE TABLE big AS SELECT g, md5(g::text) || repeat('x', 400) AS v \
         FROM generate_series(1, 90000) g",
    );
    let rel: String = c.query_one("SELECT pg_relation_filepath('big')");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("b");
    let opts = BackupOptions {
        pgdata: c.data_dir().to_path_buf(),
        target: folder.clone(),
        conn: settings(&c),
        label: "stored backup".into(),
        fast: true,
        jobs: 2,
        compression,
        checksum: ChecksumAlgorithm::Crc32c,
        max_rate: None,
        wal: Some(WalMode::Include),
        check_space: false,
        allow_data_directory_mismatch: false,
        archive_timeout: Duration::from_secs(60),
        cancel: None,
        before_open: None,
        check_pages: true,
        backup_type: None,
    };
    run_backup(&opts, &NoProgress).unwrap();
    let from_folder = verify_backup(&folder, &full(), &NoProgress).unwrap();
    assert!(from_folder.ok, "{m}: {:?}", from_folder.problems);

    // Every file of the folder as an object under a prefix.
    let mem = MemoryBackend::new();
    let prefix = ObjectName::new("main/backups/20260101T000000Z").unwrap();
    let listing = list_backup(&folder).unwrap();
    assert!(
        listing.links.is_empty() && listing.special.is_empty(),
        "{m}"
    );
    for rel in listing.files.keys() {
        let bytes = fs::read(folder.join(rel.as_path())).unwrap();
        let name = prefix.join(rel.as_bytes()).unwrap();
        mem.put(&name, &bytes, PutOptions::default()).unwrap();
    }
    let stored = StoredBackup::in_backend(Arc::new(mem.clone()), Some(prefix.clone()), "memory");

    // The folder is gone while the stored copy is read.
    let moved = dir.path().join("moved");
    fs::rename(&folder, &moved).unwrap();
    let report = verify_stored(&stored, &full(), &NoProgress).unwrap();
    assert!(report.ok, "{m}: {:?}", report.problems);
    assert_eq!(
        (
            report.files_checked,
            report.bytes_checked,
            report.wal_segments_checked,
            report.wal_records_checked
        ),
        (
            from_folder.files_checked,
            from_folder.bytes_checked,
            from_folder.wal_segments_checked,
            from_folder.wal_records_checked
        ),
        "{m}"
    );
    assert!(report.wal_records_checked > 0, "{m}");

    let from_memory = dir.path().join("from-memory");
    let r = run_restore_stored(&stored, &restore_opts(&folder, &from_memory), &NoProgress);
    let r = r.unwrap_or_else(|e| panic!("{m}: {e}"));
    assert_eq!(r.verification, "full", "{m}");
    fs::rename(&moved, &folder).unwrap();
    let from_disk = dir.path().join("from-folder");
    run_restore(&restore_opts(&folder, &from_disk), &NoProgress).unwrap();
    let manifest = Manifest::parse(&fs::read(folder.join("backup_manifest")).unwrap()).unwrap();
    let mut compared = 0;
    for f in &manifest.files {
        let p = String::from_utf8(f.path.clone()).unwrap();
        // Not restored as stored: the restore rewrites these (with its time in a header).
        if ["pgsafe.json", "tablespace_map", "postgresql.auto.conf"].contains(&p.as_str()) {
            continue;
        }
        let a = fs::read(from_memory.join(&p)).unwrap_or_else(|e| panic!("{m}: {p}: {e}"));
        let b = fs::read(from_disk.join(&p)).unwrap();
        assert!(a == b, "{m}: {p} differs between the two restores");
        compared += 1;
    }
    for seg in fs::read_dir(folder.join("pg_wal")).unwrap() {
        let seg = seg.unwrap().file_name();
        let p = Path::new("pg_wal").join(&seg);
        if folder.join(&p).is_file() {
            assert!(
                fs::read(from_memory.join(&p)).unwrap() == fs::read(from_disk.join(&p)).unwrap(),
                "{m}: {} differs",
                p.display()
            );
            compared += 1;
        }
    }
    assert!(compared > 100, "{m}: {compared} files compared");

    // A byte changed in memory (write-once: deleted and put again) is what verify reads.
    let stored_rel = match compression {
        Compression::None => rel.clone(),
        c => format!("{rel}{}", c.suffix()),
    };
    let name = prefix.join(stored_rel.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    mem.read(&name).unwrap().read_to_end(&mut bytes).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    assert!(mem.delete(&name).unwrap());
    mem.put(&name, &bytes, PutOptions::default()).unwrap();
    let report = verify_stored(&stored, &full(), &NoProgress).unwrap();
    assert!(!report.ok, "{m}: a changed {stored_rel} passed");
    let shown = format!("{:?}", report.problems);
    assert!(shown.contains(&rel), "{m}: {shown}");
    let t = dir.path().join("refused");
    let e = run_restore_stored(&stored, &restore_opts(&folder, &t), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("nothing was written"), "{m}: {e}");
    assert!(!t.exists(), "{m}");
}

#[test]
fn stored_in_memory_16_plain() {
    stored_in_memory(16, Compression::None);
}

#[test]
fn stored_in_memory_13_zstd() {
    stored_in_memory(13, Compression::Zstd { level: 1 });
}
