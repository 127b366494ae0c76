//! The progress contract (`pgsafe::progress`), checked at every event of a real backup, verify
//! and restore of a cluster with a tablespace: a phase counts from zero, reports files or bytes
//! only after naming its totals, and never goes past them; and one backup's file count is the
//! same number in the backup's, the verify's and the restore's counts.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Mutex;
use std::time::Duration;

use pgsafe::backup::{BackupOptions, WalMode, run_backup};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::copy::Compression;
use pgsafe::progress::{Counts, Phase, Progress};
use pgsafe::restore::{RestoreOptions, TablespaceMapping, TablespaceSelector, run_restore};
use pgsafe::verify::{VerifyOptions, verify_backup};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_user};

/// Checks the contract at each event and keeps every phase's last counts, in order.
#[derive(Default)]
struct Recorder {
    state: Mutex<(Option<Counts>, Vec<Counts>, Vec<String>)>,
}

impl Recorder {
    fn with(&self, f: impl FnOnce(&mut Counts, &mut Vec<String>)) {
        let mut g = self.state.lock().unwrap();
        let (cur, _, broken) = &mut *g;
        match cur {
            Some(c) => f(c, broken),
            None => broken.push("an event before the first phase".into()),
        }
    }

    /// The phases, each with its final counts.
    fn finish(&self) -> Vec<Counts> {
        let mut g = self.state.lock().unwrap();
        let (cur, done, broken) = &mut *g;
        assert!(broken.is_empty(), "the contract broken: {broken:#?}");
        done.extend(cur.take());
        std::mem::take(done)
    }
}

fn check(c: &Counts, broken: &mut Vec<String>, what: &str) {
    match (c.total_files, c.total_bytes) {
        (Some(tf), Some(tb)) if c.files <= tf && c.bytes <= tb => {}
        _ => broken.push(format!("{what}: {c:?}")),
    }
}

impl Progress for Recorder {
    fn phase(&self, phase: Phase) {
        let mut g = self.state.lock().unwrap();
        let (cur, done, _) = &mut *g;
        done.extend(cur.take());
        *cur = Some(Counts {
            phase: Some(phase),
            files: 0,
            bytes: 0,
            total_files: None,
            total_bytes: None,
        });
    }
    fn plan(&self, files: u64, bytes: u64) {
        self.with(|c, broken| {
            if c.total_files.is_some() {
                broken.push(format!("a second plan in one phase: {c:?}"));
            }
            c.total_files = Some(files);
            c.total_bytes = Some(bytes);
        });
    }
    fn file_done(&self, rel: &str, _bytes: u64) {
        self.with(|c, broken| {
            c.files += 1;
            check(c, broken, &format!("file_done({rel})"));
        });
    }
    fn bytes(&self, n: u64) {
        self.with(|c, broken| {
            c.bytes += n;
            check(c, broken, &format!("bytes({n})"));
        });
    }
}

fn settings(c: &Cluster) -> ConnSettings {
    let input = ConnInput {
        dbname: Some(c.conninfo()),
        host: None,
        port: None,
        user: None,
    };
    ConnSettings::resolve(&input, &|_| None).unwrap()
}

/// Files and bytes done per phase (a phase that runs twice is added up).
fn by_phase(phases: &[Counts]) -> BTreeMap<&'static str, (u64, u64)> {
    let mut m = BTreeMap::new();
    for c in phases {
        let e = m.entry(c.phase.unwrap().name()).or_insert((0, 0));
        e.0 += c.files;
        e.1 += c.bytes;
    }
    m
}

fn contract_and_counts(major: u32, compression: Compression) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major} {compression:?}");
    let c = Cluster::started(&install, ClusterOptions::new());
    let loc = c.base_dir().join("ts");
    fs::create_dir(&loc).unwrap();
    server_user().chown(&loc);
    c.execute(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        loc.display()
    ));
    c.execute(
        "CREATE TABLE big TABLESPACE ts AS SELECT g, repeat('x', 300) AS v \
         FROM generate_series(1, 50000) g",
    );
    c.execute("CREATE TABLE small AS SELECT g FROM generate_series(1, 1000) g");
    c.execute("CHECKPOINT");
    let ts_oid = c.query_one::<i64>("SELECT oid::int8 FROM pg_tablespace WHERE spcname = 'ts'");

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let opts = BackupOptions {
        pgdata: c.data_dir().to_path_buf(),
        target: target.clone(),
        conn: settings(&c),
        label: "progress contract".into(),
        fast: true,
        jobs: 3,
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
    };
    let rec = Recorder::default();
    let info = run_backup(&opts, &rec).unwrap();
    let backup = rec.finish();
    let b = by_phase(&backup);

    let rec = Recorder::default();
    let vopts = VerifyOptions {
        quick: false,
        jobs: 3,
        cancel: None,
    };
    let report = verify_backup(&target, &vopts, &rec).unwrap();
    assert!(report.ok, "{m}: {:?}", report.problems);
    let verify = rec.finish();

    let restored = dir.path().join("restored");
    let mut ropts = RestoreOptions::new(&target, &restored);
    ropts.tablespace_map = vec![TablespaceMapping {
        from: TablespaceSelector::Oid(ts_oid as u32),
        to: dir.path().join("ts restored"),
    }];
    ropts.sync = false;
    ropts.jobs = 3;
    // As root the restored files go to the server's user, as the backup recorded.
    ropts.owner = nix::unistd::Uid::effective()
        .is_root()
        .then(|| server_user().name.clone());
    let rec = Recorder::default();
    let restore = run_restore(&ropts, &rec).unwrap();
    let r = by_phase(&rec.finish());

    let msg = format!(
        "{m}\nbackup {backup:#?}\nverify {verify:#?}\nrestore {r:?}\n\
         info.files {} wal {:?}; verify files {} wal {}; restore files {} wal {}",
        info.files,
        info.wal.segments.len(),
        report.files_checked,
        report.wal_segments_checked,
        restore.files,
        restore.wal_files
    );
    eprintln!("{msg}");
    // Every phase that counted reached its totals (nothing vanished from a quiet cluster).
    for p in backup.iter().chain(&verify) {
        if let (Some(tf), Some(tb)) = (p.total_files, p.total_bytes) {
            assert_eq!((p.files, p.bytes), (tf, tb), "{msg}");
        }
    }
    let files = |m: &BTreeMap<&str, (u64, u64)>, p: &str| m.get(p).map_or(0, |x| x.0);
    // The backup's data files and pg_control: its summary's count.
    let data_files = files(&b, "copy") + files(&b, "pg_control");
    let wal = files(&b, "wal");
    assert!(data_files > 0 && wal > 0, "{msg}");
    assert_eq!(info.files, data_files, "{msg}");
    assert_eq!(info.wal.segments.len() as u64, wal, "{msg}");
}

#[test]
fn contract_and_counts_16() {
    contract_and_counts(16, Compression::None);
}
