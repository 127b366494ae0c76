//! Tests of the walk over fake data directories and of [`RelPath`]. The fake layout is shared
//! with the copy tests.

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

pub(crate) fn v(s: &str) -> PgVersion {
    s.parse().unwrap()
}

#[test]
fn rel_path_helpers() {
    let r = RelPath::default().join(b"base").join(b"5");
    assert_eq!(r.to_str(), Some("base/5"));
    assert_eq!(r.file_name(), b"5");
    assert_eq!(r.with_suffix(".zst").to_string(), "base/5.zst");
    assert_eq!(r.as_path(), Path::new("base/5"));
    assert_eq!(RelPath::from("x").file_name(), b"x");
    assert!(RelPath::default().is_empty());
    assert_eq!(RelPath::from_bytes(&b"\xff"[..]).to_str(), None);
    assert_eq!(format!("{:?}", RelPath::from("a b")), "\"a b\"");
}

/// Bytes of a valid pg_control (PostgreSQL 15) for fake data directories.
pub(crate) const PG_CONTROL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/pg_control-15"
));

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A fake data directory and a tablespace outside it.
pub(crate) struct Fake {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) pgdata: PathBuf,
    pub(crate) ts: PathBuf,
}

/// Deterministic content of `n` bytes, varied by `seed`.
pub(crate) fn content(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
            }
            (x >> (i % 3 * 8)) as u8
        })
        .collect()
}

/// A data directory of major `major` with a bit of everything the rules treat.
pub(crate) fn fake_pgdata(major: &str) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = dir.path().join("data");
    let ts = dir.path().join("tablespace with spaces");
    let cat = match major {
        "10" => "201707211",
        "17" => "202406281",
        _ => "202209061",
    };
    let vdir = format!("PG_{major}_{cat}");
    let f = |rel: &str, bytes: &[u8]| write(&pgdata.join(rel), bytes);
    f("PG_VERSION", format!("{major}\n").as_bytes());
    f("postgresql.conf", b"# conf\n");
    f("postgresql.auto.conf", b"# auto\n");
    f("postgresql.auto.conf.tmp", b"half");
    f("current_logfiles.tmp", b"half");
    f("postmaster.pid", b"4242\n");
    f("postmaster.opts", b"postgres\n");
    f("backup_label", b"START WAL LOCATION: 0/2000028\n");
    f("backup_label.old", b"old\n");
    f("tablespace_map", b"");
    f("backup_manifest", b"{}");
    f(".DS_Store", b"mac");
    f("global/pg_control", PG_CONTROL);
    f("global/1262", &content(8192, 1));
    f("global/pg_filenode.map", &content(512, 2));
    f("global/pg_internal.init", &content(1000, 3));
    f("base/1/1259", &content(3 * 8192, 4));
    f("base/1/1259_fsm", &content(8192, 5));
    f("base/1/PG_VERSION", b"15\n");
    f("base/1/pg_internal.init.777", b"x");
    // A large logged relation in two segments.
    f("base/5/16384", &content(2_500_000, 6));
    f("base/5/16384.1", &content(300_000, 7));
    f("base/5/16384_vm", &content(8192, 8));
    // Unlogged relation: main fork (two segments), fsm and init fork.
    f("base/5/16390", &content(40_000, 9));
    f("base/5/16390.1", &content(8192, 10));
    f("base/5/16390_fsm", &content(8192, 11));
    f("base/5/16390_init", b"");
    // Temporary relation.
    f("base/5/t3_16400", &content(8192, 12));
    f("base/5/t3_16400_fsm", &content(8192, 13));
    f("base/pgsql_tmp/pgsql_tmp4242.0", &content(100, 14));
    f("pg_wal/000000010000000000000001", &content(16384, 15));
    f("pg_wal/archive_status/000000010000000000000001.ready", b"");
    f("pg_stat_tmp/global.stat", b"s");
    f("pg_stat/pgstat.stat", b"permanent");
    f("pg_replslot/slot1/state", b"s");
    for d in [
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
    ] {
        f(&format!("{d}/0000"), b"z");
    }
    f("pg_xact/0000", &content(8192, 16));
    fs::create_dir_all(pgdata.join("pg_commit_ts")).unwrap();
    // Tablespace 16385 outside PGDATA: the server's version directory, another version's, a
    // stray file.
    let t = |rel: &str, bytes: &[u8]| write(&ts.join(rel), bytes);
    t(&format!("{vdir}/5/16386"), &content(20_000, 17));
    t(&format!("{vdir}/5/16387"), &content(8192, 18));
    t(&format!("{vdir}/5/16387_init"), b"");
    t(&format!("{vdir}/5/t4_16388"), &content(8192, 19));
    t("PG_9.6_201608131/5/1", b"old version");
    t("stray", b"not copied");
    fs::create_dir_all(pgdata.join("pg_tblspc")).unwrap();
    symlink(&ts, pgdata.join("pg_tblspc/16385")).unwrap();
    // An in-place tablespace (a real directory).
    f(
        &format!("pg_tblspc/16399/{vdir}/5/16400"),
        &content(8192, 20),
    );
    // Special files: a symbolic link outside pg_tblspc, a FIFO.
    symlink("/etc/hostname", pgdata.join("base/5/link")).unwrap();
    nix::unistd::mkfifo(
        &pgdata.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(pgdata.join("base"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(
        pgdata.join("global/1262"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    Fake {
        _dir: dir,
        pgdata,
        ts,
    }
}

fn names(list: impl IntoIterator<Item = impl ToString>) -> Vec<String> {
    let mut v: Vec<String> = list.into_iter().map(|x| x.to_string()).collect();
    v.sort();
    v
}

fn plan_of(fake: &Fake, major: &str) -> BackupPlan {
    BackupPlan::build(&fake.pgdata, v(major), &PlanOptions::default()).unwrap()
}

#[test]
fn plan_of_a_fake_data_directory() {
    let fake = fake_pgdata("15");
    let plan = plan_of(&fake, "15");
    let vdir = "PG_15_202209061";
    let files = names(plan.files.iter().map(|f| &f.rel_path));
    let want = names([
        "PG_VERSION".to_owned(),
        "backup_label.old".into(),
        "base/1/1259".into(),
        "base/1/1259_fsm".into(),
        "base/1/PG_VERSION".into(),
        "base/5/16384".into(),
        "base/5/16384.1".into(),
        "base/5/16384_vm".into(),
        "base/5/16390_init".into(),
        "global/1262".into(),
        "global/pg_filenode.map".into(),
        "pg_stat/pgstat.stat".into(),
        "pg_xact/0000".into(),
        "postgresql.auto.conf".into(),
        "postgresql.conf".into(),
        format!("pg_tblspc/16385/{vdir}/5/16386"),
        format!("pg_tblspc/16385/{vdir}/5/16387_init"),
        format!("pg_tblspc/16399/{vdir}/5/16400"),
    ]);
    assert_eq!(files, want);
    let dirs = names(plan.dirs.iter().map(|d| &d.rel_path));
    let want_dirs = names([
        "base",
        "base/1",
        "base/5",
        "global",
        "pg_commit_ts",
        "pg_dynshmem",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat",
        "pg_stat_tmp",
        "pg_subtrans",
        "pg_tblspc",
        "pg_tblspc/16385",
        "pg_tblspc/16385/PG_15_202209061",
        "pg_tblspc/16385/PG_15_202209061/5",
        "pg_tblspc/16399",
        "pg_tblspc/16399/PG_15_202209061",
        "pg_tblspc/16399/PG_15_202209061/5",
        "pg_wal",
        "pg_wal/archive_status",
        "pg_xact",
    ]);
    assert_eq!(dirs, want_dirs);
    // Parents come before their children.
    for (i, d) in plan.dirs.iter().enumerate() {
        let p = d.rel_path.to_str().unwrap();
        if let Some((parent, _)) = p.rsplit_once('/') {
            let pi = plan
                .dirs
                .iter()
                .position(|x| x.rel_path.to_str() == Some(parent))
                .unwrap();
            assert!(pi < i, "{parent} after {p}");
        }
    }
    let excluded: Vec<String> = {
        let mut v: Vec<String> = plan
            .excluded
            .iter()
            .map(|(p, why)| format!("{p}: {why:?}"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        excluded,
        [
            ".DS_Store: DsStore",
            "backup_label: BackupFile",
            "backup_manifest: BackupFile",
            "base/1/pg_internal.init.777: RelcacheInit",
            "base/5/16390.1: UnloggedRelation",
            "base/5/16390: UnloggedRelation",
            "base/5/16390_fsm: UnloggedRelation",
            "base/5/t3_16400: TempRelation",
            "base/5/t3_16400_fsm: TempRelation",
            "base/pgsql_tmp: TempFile",
            "current_logfiles.tmp: TransientFile",
            "global/pg_internal.init: RelcacheInit",
            "pg_tblspc/16385/PG_15_202209061/5/16387: UnloggedRelation",
            "pg_tblspc/16385/PG_15_202209061/5/t4_16388: TempRelation",
            "postgresql.auto.conf.tmp: TransientFile",
            "postmaster.opts: ServerRuntime",
            "postmaster.pid: ServerRuntime",
            "tablespace_map: BackupFile",
        ]
    );
    assert_eq!(plan.tablespaces, vec![(16385, fake.ts.clone())]);
    assert_eq!(
        plan.control_file.rel_path.to_str(),
        Some("global/pg_control")
    );
    assert_eq!(plan.control_file.size, 8192);
    assert_eq!(
        plan.control_file.source,
        fake.pgdata.join("global/pg_control")
    );
    assert!(plan.file("global/pg_control").is_some());
    let mut warnings = plan.warnings.clone();
    warnings.sort();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("skipping special file") && warnings[0].contains("/base/5/link")
    );
    assert!(warnings[1].starts_with("skipping special file") && warnings[1].contains("/fifo"));
    // Largest first; sizes, modes and sources from lstat.
    assert_eq!(plan.files[0].rel_path.to_str(), Some("base/5/16384"));
    assert!(plan.files.windows(2).all(|w| w[0].size >= w[1].size));
    let big = &plan.files[0];
    assert_eq!(big.size, 2_500_000);
    assert_eq!(big.source, fake.pgdata.join("base/5/16384"));
    assert!(big.mtime > 1_600_000_000);
    assert_eq!(plan.file("global/1262").unwrap().mode, 0o640);
    assert_eq!(plan.root_mode, 0o750);
    let mode_of = |p: &str| {
        plan.dirs
            .iter()
            .find(|d| d.rel_path.to_str() == Some(p))
            .unwrap()
            .mode
    };
    assert_eq!(mode_of("base"), 0o750);
    let ts_file = plan
        .file("pg_tblspc/16385/PG_15_202209061/5/16386")
        .unwrap();
    assert_eq!(ts_file.source, fake.ts.join("PG_15_202209061/5/16386"));
    let data_bytes: u64 = plan.files.iter().map(|f| f.size).sum();
    assert_eq!(plan.total_bytes(), data_bytes + 8192);
    assert_eq!(plan.total_files(), plan.files.len() as u64 + 1);
}

#[test]
fn plan_differences_between_versions() {
    // 17: pg_wal/summaries created.
    let fake = fake_pgdata("17");
    let plan = plan_of(&fake, "17");
    assert!(plan.file(".DS_Store").is_none());
    assert!(
        plan.dirs
            .iter()
            .any(|d| d.rel_path.to_str() == Some("pg_wal/summaries"))
    );
    assert!(
        plan.file("pg_tblspc/16385/PG_17_202406281/5/16386")
            .is_some()
    );
    // 10: unlogged and temporary relations left out too (pgsafe's choice); pg_internal.init kept
    // (parity: pg_basebackup 10 copies it).
    let fake = fake_pgdata("10");
    let plan = plan_of(&fake, "10");
    assert!(plan.file("base/5/16390").is_none());
    assert!(plan.file("base/5/16390_init").is_some());
    assert!(plan.file("base/5/t3_16400").is_none());
    assert!(plan.file("global/pg_internal.init").is_some());
    // 10 (pg_basebackup copies both): .DS_Store kept; a top-level backup_manifest is an earlier
    // backup's (pgsafe writes its own), left out.
    assert!(plan.file(".DS_Store").is_some());
    assert!(plan.file("backup_manifest").is_none());
    assert!(
        !plan
            .dirs
            .iter()
            .any(|d| d.rel_path.to_str() == Some("pg_wal/summaries"))
    );
    // A plan for another major than the tablespace's takes nothing from the tablespace.
    let plan = plan_of(&fake, "11");
    assert!(
        plan.dirs
            .iter()
            .any(|d| d.rel_path.to_str() == Some("pg_tblspc/16385"))
    );
    assert!(
        !plan
            .files
            .iter()
            .any(|f| f.rel_path.as_bytes().starts_with(b"pg_tblspc/16385/"))
    );
}

#[test]
fn catalog_version_selects_the_tablespace_directory() {
    let fake = fake_pgdata("15");
    write(&fake.ts.join("PG_15_202207291/5/1"), b"beta catalog");
    let all = plan_of(&fake, "15");
    assert!(all.file("pg_tblspc/16385/PG_15_202207291/5/1").is_some());
    let opts = PlanOptions {
        catalog_version: Some(202209061),
        ..PlanOptions::default()
    };
    let plan = BackupPlan::build(&fake.pgdata, v("15"), &opts).unwrap();
    assert!(plan.file("pg_tblspc/16385/PG_15_202207291/5/1").is_none());
    assert!(
        plan.file("pg_tblspc/16385/PG_15_202209061/5/16386")
            .is_some()
    );
}

#[test]
fn stats_temp_directory_inside_pgdata_is_kept_empty_until_15() {
    for (major, path_kind) in [("14", "rel"), ("14", "abs"), ("15", "rel")] {
        let fake = fake_pgdata(major);
        write(&fake.pgdata.join("stats/tmp/db_1.stat"), b"s");
        let dir = match path_kind {
            "rel" => PathBuf::from("stats/tmp"),
            _ => fake.pgdata.join("stats/tmp"),
        };
        let opts = PlanOptions {
            stats_temp_directory: Some(dir),
            ..PlanOptions::default()
        };
        let plan = BackupPlan::build(&fake.pgdata, v(major), &opts).unwrap();
        let copied = plan.file("stats/tmp/db_1.stat").is_some();
        assert_eq!(copied, major == "15", "{major} {path_kind}");
        assert!(
            plan.dirs
                .iter()
                .any(|d| d.rel_path.to_str() == Some("stats/tmp"))
        );
    }
    // Outside PGDATA: nothing to do.
    let fake = fake_pgdata("14");
    let opts = PlanOptions {
        stats_temp_directory: Some("/run/pg_stats".into()),
        ..PlanOptions::default()
    };
    assert!(BackupPlan::build(&fake.pgdata, v("14"), &opts).is_ok());
}

#[test]
fn symlinked_wal_and_stat_directories_become_directories() {
    let fake = fake_pgdata("15");
    let elsewhere = fake.ts.parent().unwrap().join("wal elsewhere");
    fs::create_dir_all(elsewhere.join("archive_status")).unwrap();
    fs::write(elsewhere.join("000000010000000000000002"), b"w").unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o750)).unwrap();
    fs::remove_dir_all(fake.pgdata.join("pg_wal")).unwrap();
    symlink(&elsewhere, fake.pgdata.join("pg_wal")).unwrap();
    fs::remove_dir_all(fake.pgdata.join("pg_stat_tmp")).unwrap();
    symlink("/nonexistent/stats", fake.pgdata.join("pg_stat_tmp")).unwrap();
    let plan = plan_of(&fake, "15");
    let mode_of = |p: &str| {
        plan.dirs
            .iter()
            .find(|d| d.rel_path.to_str() == Some(p))
            .map(|d| d.mode)
    };
    assert_eq!(mode_of("pg_wal"), Some(0o750));
    assert_eq!(mode_of("pg_wal/archive_status"), Some(0o750));
    assert_eq!(mode_of("pg_stat_tmp"), Some(0o700));
    assert!(
        !plan
            .files
            .iter()
            .any(|f| f.rel_path.as_bytes().starts_with(b"pg_wal"))
    );
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
}

#[test]
fn tablespace_inside_pgdata_is_stored_once() {
    let fake = fake_pgdata("15");
    let inside = fake.pgdata.join("my_ts");
    write(&inside.join("PG_15_202209061/5/20000"), &content(100, 1));
    symlink(&inside, fake.pgdata.join("pg_tblspc/20001")).unwrap();
    let plan = plan_of(&fake, "15");
    assert!(
        plan.file("pg_tblspc/20001/PG_15_202209061/5/20000")
            .is_some()
    );
    assert!(plan.file("my_ts/PG_15_202209061/5/20000").is_none());
    assert!(
        plan.dirs
            .iter()
            .any(|d| d.rel_path.to_str() == Some("my_ts"))
    );
    assert_eq!(plan.tablespaces.len(), 2);
}

#[test]
fn odd_entries_in_pg_tblspc() {
    let fake = fake_pgdata("15");
    // A link that is not named like an OID, and a tablespace whose location is gone.
    symlink(&fake.ts, fake.pgdata.join("pg_tblspc/not_an_oid")).unwrap();
    symlink("/nonexistent/ts", fake.pgdata.join("pg_tblspc/30000")).unwrap();
    let plan = plan_of(&fake, "15");
    assert!(
        plan.tablespaces
            .contains(&(30000, PathBuf::from("/nonexistent/ts")))
    );
    assert!(
        plan.dirs
            .iter()
            .any(|d| d.rel_path.to_str() == Some("pg_tblspc/30000"))
    );
    assert!(
        !plan
            .dirs
            .iter()
            .any(|d| d.rel_path.as_bytes().starts_with(b"pg_tblspc/not_an_oid"))
    );
    let w = plan.warnings.join("\n");
    assert!(w.contains("not_an_oid"), "{w}");
    assert!(w.contains("tablespace 30000"), "{w}");
}

#[test]
fn missing_control_file_or_directory_is_an_error() {
    let fake = fake_pgdata("15");
    fs::remove_file(fake.pgdata.join("global/pg_control")).unwrap();
    let err = BackupPlan::build(&fake.pgdata, v("15"), &PlanOptions::default()).unwrap_err();
    assert!(matches!(err, PlanError::NoControlFile { .. }), "{err}");
    let err =
        BackupPlan::build(&fake.pgdata.join("nope"), v("15"), &PlanOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/data/nope"), "{err}");
    assert!(list_dir(&fake.pgdata.join("nope")).unwrap().is_none());
}

#[test]
fn unreadable_directory_is_an_error_naming_it() {
    if nix::unistd::geteuid().is_root() {
        // root reads everything; the error path is the same as for any IO error.
        return;
    }
    let fake = fake_pgdata("15");
    let d = fake.pgdata.join("base/1");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o000)).unwrap();
    let err = BackupPlan::build(&fake.pgdata, v("15"), &PlanOptions::default()).unwrap_err();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(err.to_string().starts_with("read directory"), "{err}");
    assert!(err.to_string().contains("base/1"), "{err}");
}
