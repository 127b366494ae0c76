//! `pgsafe verify --restore-test`: a backup is proven by restoring it into a scratch folder,
//! starting it with its major's real PostgreSQL binaries, and running amcheck — tested with
//! real servers through the real binary, from the unlucky DBA's side:
//! - a good backup (with a tablespace) is proven; the amcheck split at 14 (heap checks) and at
//!   11 (heapallindexed) shows in what ran; the source's files, tablespace and WAL archive are
//!   not touched; as root the server runs as the unprivileged owner the backup records (files
//!   the server itself created belong to that user);
//! - an index corrupted in the source before the backup: amcheck finds it (exit 1), with the
//!   source running on the same host all along;
//! - a backup whose restore cannot start (its configuration preloads a library that is not
//!   installed): reported as not started, with the server's own log lines;
//! - a backup with a WAL segment removed: the restore refuses it (exit 1), nothing is left;
//! - as root, a backup folder someone else owns cannot choose the account, and root is refused;
//! - a standby's backup taken with its primary down (WAL ending at the consistency point) and a
//!   zstd-compressed backup are proven too; without amcheck the verdict says "not checked".

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};
use serde_json::Value;

use common::{json, ok, pgsafe};

macro_rules! majors {
    ($f:ident: $($m:tt),*) => {
        mod $f {
            $(
                paste_major!($f, $m);
            )*
        }
    };
}

macro_rules! paste_major {
    ($f:ident, 10) => {
        #[test]
        fn pg10() {
            super::$f(10)
        }
    };
    ($f:ident, 12) => {
        #[test]
        fn pg12() {
            super::$f(12)
        }
    };
    ($f:ident, 13) => {
        #[test]
        fn pg13() {
            super::$f(13)
        }
    };
    ($f:ident, 14) => {
        #[test]
        fn pg14() {
            super::$f(14)
        }
    };
    ($f:ident, 17) => {
        #[test]
        fn pg17() {
            super::$f(17)
        }
    };
    ($f:ident, 18) => {
        #[test]
        fn pg18() {
            super::$f(18)
        }
    };
}

/// `pgsafe verify BACKUP --restore-test --pg-bindir <major's bin> --scratch-dir SCRATCH …`.
fn restore_test(major: u32, backup: &Path, scratch: &Path, extra: &[&str]) -> Output {
    let bin = PgInstall::major(major).bin_dir;
    let mut args = vec![
        "verify",
        backup.to_str().unwrap(),
        "--restore-test",
        "--pg-bindir",
        bin.to_str().unwrap(),
        "--scratch-dir",
        scratch.to_str().unwrap(),
        "--progress",
        "none",
    ];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

/// Size and modification time of every entry below `dir` (links not followed).
fn tree_state(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            out.insert(p.clone(), (m.len(), m.mtime(), m.mtime_nsec()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn proven(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut src = Cluster::started(
        &install,
        ClusterOptions::new()
            .with_archive(true)
            .with_tablespace(true),
    );
    src.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         CREATE INDEX t_v ON t (v); \
         INSERT INTO t SELECT g, repeat(md5(g::text), 1 + g % 200) FROM generate_series(1, 3000) g; \
         CREATE TABLE ts_t (x int) TABLESPACE ts1; CREATE INDEX ts_i ON ts_t (x) TABLESPACE ts1; \
         INSERT INTO ts_t SELECT generate_series(1, 1000)",
    );
    src.execute("CREATE DATABASE other");
    let dir = server_owned_tempdir();
    let backup = dir.path().join("backup");
    ok(common::backup(&src, &backup, &[]), "pgsafe backup");
    src.stop();
    let watched: Vec<PathBuf> = [
        src.data_dir(),
        src.tablespace_dir().unwrap(),
        src.archive_dir().unwrap(),
    ]
    .into_iter()
    .map(Path::to_owned)
    .collect();
    let before: Vec<_> = watched.iter().map(|d| tree_state(d)).collect();

    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let out = restore_test(major, &backup, &scratch, &["--json", "--keep"]);
    let r = json(&out);
    assert_eq!(out.status.code(), Some(0), "{m}: {}", text(&out));
    assert_eq!(r["verdict"], "proven", "{m}: {r}");
    assert_eq!(r["server_major"], major, "{m}: {r}");
    assert_eq!(r["run_as"], server_user().name.as_str(), "{m}: {r}");
    let a = &r["amcheck"];
    assert_eq!(a["available"], true, "{m}: {a}");
    assert_eq!(a["heap_checks"], major >= 14, "{m}: {a}");
    assert_eq!(a["heapallindexed"], major >= 11, "{m}: {a}");
    assert_eq!(a["problems"], 0, "{m}: {a}");
    let dbs: Vec<&str> = a["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        dbs.contains(&"other") && dbs.contains(&"postgres"),
        "{m}: {a}"
    );
    assert_eq!(
        a["skipped_databases"],
        serde_json::json!(["template0"]),
        "{m}"
    );
    // t's 2 indexes and ts_t's are among them, in each of the 4 databases' catalogs too.
    assert!(a["indexes_checked"].as_u64().unwrap() > 3, "{m}: {a}");
    let tables = a["tables_checked"].as_u64().unwrap();
    assert_eq!(tables > 0, major >= 14, "{m}: {a}");
    assert!(a["relations"].as_u64().unwrap() > 100, "{m}: {a}");
    assert!(
        r["recovery_secs"].is_number() && r["rto_secs"].is_number(),
        "{m}: {r}"
    );
    assert_eq!(r["restore"]["tablespaces"], 1, "{m}: {r}");

    // The kept copy: the server created the new timeline's history file, as the unprivileged
    // user the backup records (root case), and it is stopped.
    let kept = PathBuf::from(r["scratch"].as_str().unwrap());
    assert!(kept.starts_with(&scratch), "{m}: {r}");
    let history = kept.join("data/pg_wal/00000002.history");
    let hm = fs::metadata(&history).unwrap_or_else(|e| panic!("{m}: {history:?}: {e}"));
    assert_eq!(
        hm.uid(),
        server_user().uid.as_raw(),
        "{m}: history file owner"
    );
    assert!(
        !kept.join("data/postmaster.pid").exists(),
        "{m}: left running"
    );
    let cmd = r["start_command"].as_str().unwrap();
    assert!(cmd.contains("listen_addresses="), "{m}: {cmd}");
    // The restored tablespace is inside the scratch folder.
    let link = fs::read_link(
        fs::read_dir(kept.join("data/pg_tblspc"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(link.starts_with(&kept), "{m}: tablespace at {link:?}");

    // The source: not a byte, name or time changed.
    for (d, b) in watched.iter().zip(&before) {
        assert_eq!(&tree_state(d), b, "{m}: {} changed", d.display());
    }
    fs::remove_dir_all(&kept).unwrap();
}
majors!(proven: 10, 13, 14, 17, 18);

/// Swaps the first two line pointers of block `blk` of `file` (an index leaf): keys out of
/// order, the page otherwise intact (checksums are off in this cluster).
fn swap_first_items(file: &Path, blk: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut lp = [0u8; 8];
    // Line pointers follow the 24-byte page header (PageHeaderData, src/include/storage/bufpage.h).
    f.read_exact_at(&mut lp, blk * 8192 + 24).unwrap();
    let swapped = [&lp[4..8], &lp[0..4]].concat();
    f.write_all_at(&swapped, blk * 8192 + 24).unwrap();
    f.sync_all().unwrap();
}

fn index_corruption(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut src = Cluster::started(&install, ClusterOptions::new().checksums(false));
    src.execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 200); \
         CHECKPOINT",
    );
    let rel: String = src.query_one("SELECT pg_relation_filepath('t_pkey')");
    src.stop();
    // 200 keys fit the root leaf, block 1 (block 0 is the metapage), the rightmost page: no
    // high key, so line pointers 1 and 2 are the first two keys.
    swap_first_items(&src.data_dir().join(&rel), 1);
    src.start();
    let dir = server_owned_tempdir();
    let backup = dir.path().join("backup");
    ok(common::backup(&src, &backup, &[]), "pgsafe backup");
    let pid = src.pid();

    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let out = restore_test(major, &backup, &scratch, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{m}: {t}");
    assert!(t.contains("AMCHECK FOUND PROBLEMS"), "{m}: {t}");
    assert!(
        t.contains("index public.t_pkey in database postgres"),
        "{m}: {t}"
    );
    assert!(t.contains("item order invariant violated"), "{m}: {t}");
    assert!(
        entries(&scratch).is_empty(),
        "{m}: left behind: {:?}",
        entries(&scratch)
    );
    // The source ran on the same host all along and still does.
    assert_eq!(src.pid(), pid, "{m}");
    assert_eq!(src.query_one::<i64>("SELECT count(*) FROM t"), 200, "{m}");
}
majors!(index_corruption: 10, 14, 17);

fn does_not_start(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let src = Cluster::started(&install, ClusterOptions::new());
    // Staged for the next restart of the source; a restore of the backup starts with it.
    src.execute("ALTER SYSTEM SET shared_preload_libraries = 'pgsafe_no_such_library'");
    let dir = server_owned_tempdir();
    let backup = dir.path().join("backup");
    ok(common::backup(&src, &backup, &[]), "pgsafe backup");
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let out = restore_test(major, &backup, &scratch, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{m}: {}", text(&out));
    let r: Value = json(&out);
    assert_eq!(r["verdict"], "did_not_start", "{m}: {r}");
    let log = r["server_log"].as_str().unwrap();
    assert!(log.contains("pgsafe_no_such_library"), "{m}: {log}");
    assert!(r.get("amcheck").is_none(), "{m}: {r}");
    assert!(entries(&scratch).is_empty(), "{m}");
}
majors!(does_not_start: 13, 18);

fn wal_removed_and_owner(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let src = Cluster::started(&install, ClusterOptions::new());
    src.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) x");
    let dir = server_owned_tempdir();
    let backup = dir.path().join("backup");
    ok(common::backup(&src, &backup, &[]), "pgsafe backup");
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);

    if nix::unistd::geteuid().is_root() {
        // Root is never the server's user.
        let out = restore_test(major, &backup, &scratch, &["--run-as", "root"]);
        common::refused(&out, &["is root"]);
        // A backup folder another user owns does not choose the account.
        let theirs = common::copy_of(&backup, "theirs");
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let out = restore_test(major, &theirs, &scratch, &[]);
        common::refused(&out, &["belongs to uid 65534", "name the user"]);
        // Named explicitly, it runs.
        let out = restore_test(
            major,
            &theirs,
            &scratch,
            &["--run-as", &server_user().name, "--json"],
        );
        assert_eq!(json(&ok(out, "named user"))["verdict"], "proven", "{m}");
    }

    let wal = backup.join("pg_wal");
    let mut segs: Vec<String> = entries(&wal)
        .into_iter()
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    fs::remove_file(wal.join(&segs[0])).unwrap();
    let out = restore_test(major, &backup, &scratch, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{m}: {}", text(&out));
    let r = json(&out);
    assert_eq!(r["verdict"], "backup_invalid", "{m}: {r}");
    assert!(r["problems"].to_string().contains(&segs[0]), "{m}: {r}");
    assert!(entries(&scratch).is_empty(), "{m}");
}
majors!(wal_removed_and_owner: 17);

/// A copy of `install` without the amcheck extension's control file: `bin/postgres` copied
/// (PostgreSQL finds its `share` and `lib` folders relative to the resolved program path),
/// everything else linked.
fn install_without_amcheck(install: &PgInstall, root: &Path) -> PathBuf {
    use std::os::unix::fs::symlink;
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(install.bin("postgres"), bin.join("postgres")).unwrap();
    for e in fs::read_dir(&install.root).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if name != "bin" && name != "share" {
            symlink(&p, root.join(&name)).unwrap();
        }
    }
    let share = install.root.join("share/postgresql");
    let new_share = root.join("share/postgresql");
    fs::create_dir_all(new_share.join("extension")).unwrap();
    for e in fs::read_dir(&share).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if name != "extension" {
            symlink(&p, new_share.join(&name)).unwrap();
        }
    }
    for e in fs::read_dir(share.join("extension")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if !name.to_string_lossy().starts_with("amcheck") {
            symlink(&p, new_share.join("extension").join(&name)).unwrap();
        }
    }
    bin
}

fn not_checked_without_amcheck(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let src = Cluster::started(&install, ClusterOptions::new());
    src.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)");
    let dir = server_owned_tempdir();
    let backup = dir.path().join("backup");
    ok(common::backup(&src, &backup, &[]), "pgsafe backup");
    let bin = install_without_amcheck(&install, &dir.path().join("pg"));
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let out = pgsafe(&[
        "verify",
        backup.to_str().unwrap(),
        "--restore-test",
        "--pg-bindir",
        bin.to_str().unwrap(),
        "--scratch-dir",
        scratch.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{m}: {t}");
    assert!(t.contains("STARTED, NOT CHECKED"), "{m}: {t}");
    assert!(t.contains("amcheck extension is not installed"), "{m}: {t}");
    assert!(entries(&scratch).is_empty(), "{m}");
}
majors!(not_checked_without_amcheck: 17);

/// A standby's backup taken while its primary is down ends where it becomes consistent (no
/// record after it): the proof starts it all the same (restore's recovery settings for that
/// case) and checks it.
fn standby_backup_proven(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut primary = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    primary.execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 3000)",
    );
    let mut standby = Cluster::new_standby(&primary);
    standby.wait_for_replay(&primary);
    primary.stop();
    let dir = server_owned_tempdir();
    let backup = dir.path().join("backup");
    ok(
        common::backup(&standby, &backup, &[]),
        "pgsafe backup of the standby",
    );
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let out = restore_test(major, &backup, &scratch, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{m}: {}", text(&out));
    let r = json(&out);
    assert_eq!(r["verdict"], "proven", "{m}: {r}");
    assert!(
        r["amcheck"]["indexes_checked"].as_u64().unwrap() > 0,
        "{m}: {r}"
    );
    assert!(entries(&scratch).is_empty(), "{m}");
    standby.stop();
}
majors!(standby_backup_proven: 10, 14, 18);

/// A compressed backup is proven like a plain one (the restore decompresses).
fn compressed_backup_proven(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let src = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    src.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
    let dir = server_owned_tempdir();
    let backup = dir.path().join("backup");
    ok(
        common::backup(&src, &backup, &["--compress", "zstd"]),
        "pgsafe backup --compress zstd",
    );
    let scratch = dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let out = restore_test(major, &backup, &scratch, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{m}: {}", text(&out));
    assert_eq!(json(&out)["verdict"], "proven", "{m}");
}
majors!(compressed_backup_proven: 17);

/// On a file system that clones (XFS with reflink), a scratch folder beside the backup costs
/// little space: the restore's kernel copies share the backup's blocks.
fn clones_on_xfs(major: u32) {
    use pgsafe_testkit::{FsKind, LoopFs};
    let Some(xfs) = LoopFs::or_skip(FsKind::Xfs, 512, "clones_on_xfs") else {
        return;
    };
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let src = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    src.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g",
    );
    let backup = xfs.path().join("backup");
    ok(common::backup(&src, &backup, &[]), "pgsafe backup");
    let scratch = xfs.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    server_user().chown(&scratch);
    let out = restore_test(major, &backup, &scratch, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{m}: {}", text(&out));
    let r = json(&out);
    assert_eq!(r["verdict"], "proven", "{m}: {r}");
    let bytes = r["restore"]["bytes"].as_u64().unwrap();
    let used = r["restore"]["space_used"].as_u64().unwrap();
    assert!(bytes > 50 << 20, "{m}: only {bytes} bytes restored");
    assert!(
        used < bytes / 4,
        "{m}: the restore took {used} bytes of space for {bytes} bytes of files: not cloned"
    );
}
majors!(clones_on_xfs: 17);
