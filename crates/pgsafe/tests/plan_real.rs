//! The backup plan and copy against real servers of every supported major (10–18): an unlogged
//! table (main fork left out, init fork kept), a temporary table of an open session (left out), a
//! table in a tablespace (stored under `pg_tblspc/<oid>/PG_<major>_<catversion>/…`), an empty
//! `pg_wal`, no `postmaster.pid`, pg_control set apart and copied last.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use pgsafe::PgVersion;
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::copy::{Compression, CopyOptions, copy_plan};
use pgsafe::plan::{BackupPlan, Exclusion, PlanOptions};
use pgsafe::progress::NoProgress;
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, TABLESPACE_NAME, client_bin_dir, per_major,
};

fn plan_matches_server(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    c.execute(
        "CREATE UNLOGGED TABLE u AS SELECT g FROM generate_series(1, 10000) g;
         CREATE TABLE logged AS SELECT g FROM generate_series(1, 10000) g;",
    );
    c.execute("VACUUM logged"); // fsm and vm forks
    c.execute(&format!(
        "CREATE TABLE in_ts TABLESPACE {TABLESPACE_NAME} AS SELECT g FROM generate_series(1, 1000) g"
    ));
    c.execute("CHECKPOINT");
    // A temporary table in a session that stays open while the plan is made.
    let mut session = c.connect();
    session
        .batch_execute("CREATE TEMP TABLE tmp AS SELECT g FROM generate_series(1, 1000) g")
        .unwrap();
    let temp_path: String = session
        .query_one("SELECT pg_relation_filepath('tmp')", &[])
        .unwrap()
        .get(0);
    let path_of =
        |rel: &str| -> String { c.query_one(&format!("SELECT pg_relation_filepath('{rel}')")) };
    let (unlogged, logged, in_ts) = (path_of("u"), path_of("logged"), path_of("in_ts"));
    let ts_oid: u32 = c
        .query_one::<String>(&format!(
            "SELECT oid::text FROM pg_tablespace WHERE spcname = '{TABLESPACE_NAME}'"
        ))
        .parse()
        .unwrap();
    let catversion: i32 = c.query_one("SELECT catalog_version_no FROM pg_control_system()");
    let version = PgVersion::from_num(c.server_version_num()).unwrap();
    let data = c.data_dir();
    let m = format!("PostgreSQL {major}");

    assert!(temp_path.contains("/t"), "{m}: {temp_path}");
    assert!(
        data.join(&temp_path).exists(),
        "{m}: {temp_path} not on disk"
    );
    assert!(data.join(format!("{unlogged}_init")).exists(), "{m}");
    assert!(data.join("postmaster.pid").exists(), "{m}");
    let vdir = format!("PG_{major}_{catversion}");
    assert!(
        in_ts.starts_with(&format!("pg_tblspc/{ts_oid}/{vdir}/")),
        "{m}: {in_ts}"
    );

    let opts = PlanOptions {
        catalog_version: Some(catversion as u32),
        ..PlanOptions::default()
    };
    let plan = BackupPlan::build(data, version, &opts).unwrap();
    let excluded = |rel: &str| {
        plan.excluded
            .iter()
            .find(|(p, _)| p.to_str() == Some(rel))
            .map(|e| e.1)
    };

    assert!(plan.file(&logged).is_some(), "{m}: logged table missing");
    assert!(
        plan.file(&unlogged).is_none(),
        "{m}: unlogged main fork copied"
    );
    assert_eq!(
        excluded(&unlogged),
        Some(Exclusion::UnloggedRelation),
        "{m}"
    );
    assert!(
        plan.file(&format!("{unlogged}_init")).is_some(),
        "{m}: init fork missing"
    );
    assert!(plan.file(&temp_path).is_none(), "{m}: temp relation copied");
    assert_eq!(excluded(&temp_path), Some(Exclusion::TempRelation), "{m}");
    assert_eq!(
        excluded("postmaster.pid"),
        Some(Exclusion::ServerRuntime),
        "{m}"
    );
    assert!(plan.file("postmaster.pid").is_none(), "{m}");

    // The tablespace: stored inside the backup, link target recorded.
    let ts_dir = c.tablespace_dir().unwrap();
    assert_eq!(plan.tablespaces.len(), 1, "{m}");
    assert_eq!(plan.tablespaces[0].0, ts_oid, "{m}");
    assert_eq!(
        fs::canonicalize(&plan.tablespaces[0].1).unwrap(),
        fs::canonicalize(ts_dir).unwrap(),
        "{m}"
    );
    let ts_file = plan
        .file(&in_ts)
        .unwrap_or_else(|| panic!("{m}: {in_ts} missing"));
    assert_eq!(
        ts_file.source,
        plan.tablespaces[0]
            .1
            .join(in_ts.split_once(&format!("{ts_oid}/")).unwrap().1),
        "{m}"
    );

    // pg_wal: empty directories only.
    assert!(
        !plan
            .files
            .iter()
            .any(|f| f.rel_path.as_bytes().starts_with(b"pg_wal/")),
        "{m}: WAL files planned"
    );
    let has_dir = |p: &str| plan.dirs.iter().any(|d| d.rel_path.to_str() == Some(p));
    assert!(has_dir("pg_wal") && has_dir("pg_wal/archive_status"), "{m}");
    assert_eq!(has_dir("pg_wal/summaries"), major >= 17, "{m}");
    for d in [
        "pg_stat_tmp",
        "pg_replslot",
        "pg_subtrans",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_dynshmem",
    ] {
        assert!(has_dir(d), "{m}: {d}");
        assert!(
            !plan.files.iter().any(|f| f
                .rel_path
                .as_bytes()
                .starts_with(format!("{d}/").as_bytes())),
            "{m}: contents of {d} planned"
        );
    }
    if major >= 11 {
        assert!(
            !plan
                .files
                .iter()
                .any(|f| f.rel_path.file_name().starts_with(b"pg_internal.init")),
            "{m}: relcache init file planned"
        );
    }

    // pg_control is set apart.
    assert_eq!(
        plan.control_file.rel_path.to_str(),
        Some("global/pg_control")
    );
    assert!(
        !plan
            .files
            .iter()
            .any(|f| f.rel_path.to_str() == Some("global/pg_control"))
    );
    assert!(plan.warnings.is_empty(), "{m}: {:?}", plan.warnings);

    // The copy stores exactly the plan, pg_control last, readable and matching.
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("backup");
    let copy_opts = CopyOptions {
        jobs: 2,
        compression: if major % 2 == 0 {
            Compression::None
        } else {
            Compression::Zstd { level: 1 }
        },
        split_size: 64 << 10,
        ..CopyOptions::default()
    };
    let report = copy_plan(&plan, &target, &copy_opts, &NoProgress).unwrap();
    drop(session);
    assert_eq!(
        report.files.last().unwrap().rel_path.to_str(),
        Some("global/pg_control"),
        "{m}"
    );
    assert_eq!(
        report.files.len() + report.vanished.len(),
        plan.files.len() + 1,
        "{m}"
    );
    let control = report.files.last().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut copy_opts
            .compression
            .decoder(fs::File::open(target.join(control.stored_path.as_path())).unwrap())
            .unwrap(),
        &mut bytes,
    )
    .unwrap();
    assert_eq!(
        control.checksum,
        ChecksumAlgorithm::Crc32c.of(&bytes),
        "{m}"
    );
    pgsafe::control::ControlFile::decode(&bytes).unwrap();
    let ts_copy = target.join(format!("{in_ts}{}", copy_opts.compression.suffix()));
    assert!(ts_copy.is_file(), "{m}: {} missing", ts_copy.display());
    assert!(
        !target
            .join(format!("{unlogged}{}", copy_opts.compression.suffix()))
            .exists(),
        "{m}"
    );
    assert!(target.join("pg_wal/archive_status").is_dir(), "{m}");
    assert_eq!(
        fs::read_dir(target.join("pg_wal/archive_status"))
            .unwrap()
            .count(),
        0,
        "{m}"
    );
}

per_major!(plan_matches_server);

/// Every file and directory under `root` (relative, `/`-separated), following the symbolic links
/// directly in `pg_tblspc/` as the tablespaces they are.
fn tree(root: &std::path::Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::metadata(e.path()).unwrap();
            if meta.is_dir() {
                dirs.insert(child.clone());
                stack.push((e.path(), child));
            } else {
                files.insert(child);
            }
        }
    }
    (files, dirs)
}

/// Parity with pg_basebackup: the files and directories of a plain pg_basebackup (15, the client
/// installed; it backs up servers up to 15) of the same cluster are exactly the plan's, except
/// that on 10 pgsafe also leaves out unlogged and temporary relations (pg_basebackup does from 11).
fn plan_equals_pg_basebackup(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    c.execute(&format!(
        "CREATE UNLOGGED TABLE u AS SELECT g FROM generate_series(1, 10000) g;
         CREATE TABLE in_ts TABLESPACE {TABLESPACE_NAME} AS SELECT g FROM generate_series(1, 1000) g;"
    ));
    c.execute("VACUUM u");
    c.execute("CHECKPOINT");
    let mut session = c.connect();
    session
        .batch_execute("CREATE TEMP TABLE tmp AS SELECT g FROM generate_series(1, 1000) g")
        .unwrap();
    let temp_path: String = session
        .query_one("SELECT pg_relation_filepath('tmp')", &[])
        .unwrap()
        .get(0);
    let unlogged: String = c.query_one("SELECT pg_relation_filepath('u')");
    let version = PgVersion::from_num(c.server_version_num()).unwrap();
    let catversion: i32 = c.query_one("SELECT catalog_version_no FROM pg_control_system()");
    let ts_dir = c.tablespace_dir().unwrap().to_path_buf();

    let out = tempfile::tempdir().unwrap();
    let (bb, bb_ts) = (out.path().join("bb"), out.path().join("bb ts"));
    let run = Command::new(client_bin_dir().join("pg_basebackup"))
        .arg("-d")
        .arg(c.conninfo())
        .arg("-D")
        .arg(&bb)
        .args(["-Fp", "-X", "none", "-c", "fast", "--no-sync"])
        .arg(format!("-T{}={}", ts_dir.display(), bb_ts.display()))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "pg_basebackup of PostgreSQL {major} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let opts = PlanOptions {
        catalog_version: Some(catversion as u32),
        ..PlanOptions::default()
    };
    let plan = BackupPlan::build(c.data_dir(), version, &opts).unwrap();

    let (mut bb_files, bb_dirs) = tree(&bb);
    for injected in ["backup_label", "backup_manifest", "tablespace_map"] {
        bb_files.remove(injected);
    }
    let ours_files: BTreeSet<String> = plan
        .files
        .iter()
        .chain(std::iter::once(&plan.control_file))
        .map(|f| f.rel_path.to_string())
        .collect();
    let ours_dirs: BTreeSet<String> = plan.dirs.iter().map(|d| d.rel_path.to_string()).collect();
    let mut only_bb: BTreeSet<String> = bb_files.difference(&ours_files).cloned().collect();
    let only_ours: BTreeSet<String> = ours_files.difference(&bb_files).cloned().collect();
    if major == 10 {
        // pgsafe's choice on 10: unlogged forks (main, fsm, vm) and temporary relations out.
        let expected: BTreeSet<String> = [
            unlogged.clone(),
            format!("{unlogged}_fsm"),
            format!("{unlogged}_vm"),
            temp_path.clone(),
        ]
        .into_iter()
        .filter(|p| c.data_dir().join(p).exists())
        .collect();
        assert!(expected.contains(&unlogged) && expected.contains(&temp_path));
        only_bb.retain(|p| !expected.contains(p));
    }
    let m = format!("PostgreSQL {major}");
    assert!(
        only_bb.is_empty(),
        "{m}: only pg_basebackup has {only_bb:?}"
    );
    assert!(only_ours.is_empty(), "{m}: only pgsafe has {only_ours:?}");
    assert_eq!(bb_dirs, ours_dirs, "{m}: directories differ");
    drop(session);
}

/// Names pg_basebackup's exclusion lists decide about (`excludeFiles`, the `.DS_Store` and
/// `pgsql_tmp` rules of `src/backend/backup/basebackup.c`), plus pgsafe's own files and look-alikes that are data.
const CANDIDATES: &[&str] = &[
    // Only undotted names under base/ and global/: with data checksums, servers before 15
    // fail the whole backup on a dotted name there ("invalid segment number 0 in file").
    ".DS_Store",
    "pg_logical/.DS_Store",
    "._x",
    "Thumbs.db",
    "backup_manifest",
    "base/backup_manifest",
    "pgsql_tmp_x",
    "base/pgsql_tmp_y",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "current_logfiles",
    "global/pg_internal.init_4242",
    "base/postmaster.opts",
    "backup_label.old",
    "tablespace_map.old",
    "pgsafe.json",
    "pgsafe.incomplete",
    "pgsafe_restore.json",
    "backup_label.pgsafe-removed",
    "pg_logical/pgsafe.json",
    "pg_logical/pgsafe_restore.json",
];

/// pgsafe's own choices beyond the server's lists: its files at the top level (every version)
/// and a top-level backup_manifest before 13 (pgsafe writes its own there).
fn pgsafe_also_excludes(rel: &str, major: u32) -> bool {
    pgsafe::plan::PGSAFE_FILES.contains(&rel) || (rel == "backup_manifest" && major < 13)
}

/// The files of the server's own base backup of `c` (relative paths): pg_basebackup (the
/// installed 15 client, plain format) up to 14; from 15 on the server writes it itself
/// (`BASE_BACKUP (TARGET 'server')`, sent with psql over a replication connection), so every
/// major is compared with its own server code, minor release included.
fn server_backup_files(c: &Cluster, out: &std::path::Path) -> BTreeSet<String> {
    if c.major() <= 14 {
        let bb = out.join("bb");
        let run = Command::new(client_bin_dir().join("pg_basebackup"))
            .arg("-d")
            .arg(c.conninfo())
            .arg("-D")
            .arg(&bb)
            .args([
                "-Fp",
                "-X",
                "none",
                "-c",
                "fast",
                "--no-sync",
                "--no-manifest",
            ])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        return tree(&bb).0;
    }
    let dest = out.join("server");
    let sql = format!(
        "BASE_BACKUP (TARGET 'server', TARGET_DETAIL '{}', CHECKPOINT 'fast', MANIFEST 'no', \
         VERIFY_CHECKSUMS false)",
        dest.display()
    );
    let run = Command::new(client_bin_dir().join("psql"))
        .arg(format!("{} replication=database", c.conninfo()))
        .args(["-X", "-q", "-c", &sql])
        .output()
        .unwrap();
    // psql does not know the result of a server-side target and may exit non-zero after the
    // server finished: the archive on disk is what counts.
    assert!(
        dest.join("base.tar").is_file(),
        "BASE_BACKUP TARGET server ({}): {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let list = Command::new("tar")
        .arg("tf")
        .arg(dest.join("base.tar"))
        .output()
        .unwrap();
    assert!(list.status.success());
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect()
}

/// Parity of the exclusion lists with the server's own, per major: each candidate file planted
/// in PGDATA is in pgsafe's plan exactly when the server's base backup has it (except pgsafe's
/// own files, which pgsafe leaves out and the server copies).
fn exclusion_lists_match_the_server(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let data = c.data_dir();
    for rel in CANDIDATES {
        let path = data.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"").unwrap();
        pgsafe_testkit::server_user().chown(&path);
    }
    let version = PgVersion::from_num(c.server_version_num()).unwrap();
    let plan = BackupPlan::build(data, version, &PlanOptions::default()).unwrap();
    let out = pgsafe_testkit::server_owned_tempdir();
    let server = server_backup_files(&c, out.path());
    let m = format!("PostgreSQL {version}");
    let mut differences = Vec::new();
    for rel in CANDIDATES {
        let ours = plan.file(rel).is_some();
        let theirs = server.contains(*rel);
        let expected = theirs && !pgsafe_also_excludes(rel, major);
        if ours != expected {
            differences.push(format!(
                "{rel}: server {}, pgsafe {}",
                if theirs { "copies" } else { "leaves out" },
                if ours { "copies" } else { "leaves out" }
            ));
        }
    }
    assert!(differences.is_empty(), "{m}: {differences:#?}");
    // The server's lists do change between versions: the test sees both sides of .DS_Store.
    assert_eq!(server.contains(".DS_Store"), major < 15, "{m}");
}

per_major!(exclusion_lists_match_the_server);

macro_rules! up_to_15 {
    ($f:ident: $($name:ident = $major:literal),*) => {
        mod $f {
            $(#[test]
            fn $name() {
                super::$f($major)
            })*
        }
    };
}

up_to_15!(plan_equals_pg_basebackup: pg10 = 10, pg11 = 11, pg12 = 12, pg13 = 13, pg14 = 14, pg15 = 15);
