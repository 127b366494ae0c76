//! Red team of restore's promise in `docs/threat-model.md` (a copy never writes into its source):
//! the source's recovery settings hidden in files its `postgresql.conf` includes (`include`,
//! `include_if_exists`, `include_dir`), written with odd case, spacing, quotes and comments. The
//! copy reads those files too: a stale `recovery_end_command` runs in the copy at the end of its
//! recovery (here: writes a file into the source's WAL archive), a stale `recovery_target_time`
//! stops its recovery, a stale `primary_conninfo` points it at the source. PostgreSQL's own
//! start-up and the source's archive directory are the oracles.

mod common;

use std::fs;
use std::path::Path;

use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, copy_tree, server_owned_tempdir, server_user,
};

use common::{ok, pgsafe, restore, run_dir};

fn write_owned(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    server_user().chown(path);
}

fn recovery_settings_in_included_files(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let src = Cluster::started(&install, ClusterOptions::new().with_archive(true));
    let archive = src.archive_dir().unwrap().to_owned();
    src.execute("CREATE TABLE t (x int); INSERT INTO t SELECT g FROM generate_series(1, 3000) g");
    let d = src.data_dir().to_owned();
    let marker = archive.join("COPY_WROTE_HERE");
    // Not read by the running source until a restart: they are leftovers a copy inherits.
    let mut conf = fs::read_to_string(d.join("postgresql.conf")).unwrap();
    conf.push_str("\nInclude_If_Exists   'extra.conf'   # odd case\ninclude_dir='conf.d'\n");
    write_owned(&d.join("postgresql.conf"), &conf);
    write_owned(
        &d.join("extra.conf"),
        &format!(
            "Recovery_End_Command   =   'touch {}'  # c\n",
            marker.display()
        ),
    );
    fs::create_dir(d.join("conf.d")).unwrap();
    server_user().chown(&d.join("conf.d"));
    write_owned(
        &d.join("conf.d/10-recovery.conf"),
        "RECOVERY_TARGET_TIME='2000-01-01 00:00:00+00'\nprimary_conninfo 'host=/nonexistent password=hunter2'\n",
    );
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    ok(common::backup(&src, &b, &[]), "pgsafe backup");

    let data = scratch.path().join("copy");
    let out = ok(restore(&b, &data, &[]), "pgsafe restore");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"), "{m}: password shown: {text}");
    let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new());
    copy.keep_own_archive_settings();
    copy.start();
    copy.wait_recovery_done();
    assert_eq!(copy.query_one::<i64>("SELECT count(*) FROM t"), 3000, "{m}");
    assert!(
        !marker.exists(),
        "{m}: the copy ran the source's recovery_end_command and wrote into its archive"
    );
    assert_eq!(copy.show("recovery_end_command"), "", "{m}");
    assert_eq!(copy.show("recovery_target_time"), "", "{m}");
    assert_eq!(copy.show("primary_conninfo"), "", "{m}");
    // The included files themselves are the DBA's: left as they were.
    assert!(
        fs::read_to_string(data.join("extra.conf"))
            .unwrap()
            .contains("Recovery_End_Command"),
        "{m}"
    );
    copy.stop();
}

#[test]
fn recovery_settings_in_included_files_12() {
    recovery_settings_in_included_files(12);
}

#[test]
fn recovery_settings_in_included_files_18() {
    recovery_settings_in_included_files(18);
}

/// A PITR restore on the source's host that replays a `CREATE TABLESPACE` made after the
/// backup (the source's archive, no target): the copy's redo points its `pg_tblspc/<oid>` at the
/// recorded location — the source's live tablespace directory — and the copy's rows land in the
/// source's files (seen on the source once its transaction IDs reach the copy's). pgsafe must
/// refuse that restore (naming the tablespace) and, with a target before the creation and the
/// explicit confirmation, restore a copy that leaves the source's tablespace files alone.
/// With `from_copy`, the backup is a snapshot-mode copy (`pgsafe start`, a file copy of the
/// live PGDATA, `pgsafe stop --output-dir`) restored with `--from-copy`.
fn pitr_replays_later_create_tablespace(major: u32, from_copy: bool) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}, from copy: {from_copy}");
    let src = Cluster::started(&install, ClusterOptions::new().with_archive(true));
    let archive = src.archive_dir().unwrap().to_owned();
    src.execute("CREATE TABLE t (x int); INSERT INTO t SELECT g FROM generate_series(1, 100) g");
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    let run = run_dir();
    let runp = run.path().to_str().unwrap();
    if from_copy {
        let conn = src.conninfo();
        ok(
            pgsafe(&["start", "-d", &conn, "--id", "c", "--run-dir", runp]),
            "pgsafe start",
        );
        copy_tree(src.data_dir(), &b, Some(server_user())).unwrap();
        ok(
            pgsafe(&[
                "stop",
                "--id",
                "c",
                "--run-dir",
                runp,
                "--output-dir",
                b.to_str().unwrap(),
            ]),
            "pgsafe stop",
        );
    } else {
        ok(common::backup(&src, &b, &[]), "pgsafe backup");
    }
    let fc: &[&str] = if from_copy { &["--from-copy"] } else { &[] };
    src.execute("INSERT INTO t SELECT g FROM generate_series(1, 100) g");
    let before_ts: String = src.query_one("SELECT pg_current_wal_insert_lsn()::text");
    let loc = scratch.path().join("ts_live");
    fs::create_dir(&loc).unwrap();
    server_user().chown(&loc);
    src.execute(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        loc.display()
    ));
    src.execute(
        "CREATE TABLE u (x int) TABLESPACE ts; INSERT INTO u SELECT g FROM generate_series(1, 1000) g",
    );
    src.execute("CHECKPOINT");
    let seg: String = src.query_one("SELECT pg_walfile_name(pg_switch_wal())");
    let t = std::time::Instant::now();
    while !archive.join(&seg).exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "{seg} never archived"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let rel: String = src.query_one("SELECT pg_relation_filepath('u')");
    let rel_file = src.data_dir().join(&rel);
    let source_bytes = fs::read(&rel_file).unwrap();
    let rc = format!("cp '{}/%f' %p", archive.display());

    // 1. To the end of the archive: refused before anything is written.
    let data = scratch.path().join("pitr");
    let out = restore(&b, &data, &[&["--restore-command", &rc][..], fc].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{m}: {err}");
    assert!(
        err.contains("live tablespace directories") && err.contains(&loc.display().to_string()),
        "{m}: {err}"
    );
    assert!(
        fs::read_dir(&data).map_or(true, |mut d| d.next().is_none()),
        "{m}: a refused restore wrote into its target"
    );

    // 2. A target before the creation, confirmed: the copy starts without that tablespace and
    // the source's tablespace files are untouched by the copy's writes.
    let data2 = scratch.path().join("pitr2");
    ok(
        restore(
            &b,
            &data2,
            &[
                &[
                    "--restore-command",
                    &rc,
                    "--target-lsn",
                    &before_ts,
                    "--target-action",
                    "promote",
                    "--allow-live-tablespaces",
                ][..],
                fc,
            ]
            .concat(),
        ),
        "pgsafe restore to a target before the tablespace",
    );
    let mut copy = Cluster::adopt(&install, &data2, ClusterOptions::new());
    copy.start();
    copy.wait_recovery_done();
    if !from_copy {
        assert_eq!(copy.query_one::<i64>("SELECT count(*) FROM t"), 200, "{m}");
    }
    assert_eq!(
        copy.query_one::<i64>("SELECT count(*) FROM pg_tablespace WHERE spcname = 'ts'"),
        0,
        "{m}"
    );
    copy.execute("INSERT INTO t SELECT 0 FROM generate_series(1, 5000)");
    copy.execute("CHECKPOINT");
    copy.stop();
    assert_eq!(
        fs::read(&rel_file).unwrap(),
        source_bytes,
        "{m}: the source's tablespace file changed"
    );
    assert_eq!(src.query_one::<i64>("SELECT count(*) FROM u"), 1000, "{m}");
}

#[test]
fn pitr_replays_later_create_tablespace_12() {
    pitr_replays_later_create_tablespace(12, false);
}

#[test]
fn pitr_replays_later_create_tablespace_from_copy_10() {
    pitr_replays_later_create_tablespace(10, true);
}

#[test]
fn pitr_replays_later_create_tablespace_from_copy_16() {
    pitr_replays_later_create_tablespace(16, true);
}

#[test]
fn pitr_replays_later_create_tablespace_17() {
    pitr_replays_later_create_tablespace(17, false);
}
