//! Red team of issue 10 §3: the source's recovery settings hidden in files its
//! `postgresql.conf` includes (`include`, `include_if_exists`, `include_dir`), written with odd
//! case, spacing, quotes and comments. The copy reads those files too: a stale
//! `recovery_end_command` runs in the copy at the end of its recovery (here: writes a file into
//! the source's WAL archive), a stale `recovery_target_time` stops its recovery, a stale
//! `primary_conninfo` points it at the source. PostgreSQL's own start-up and the source's archive
//! directory are the oracles.

mod common;

use std::fs;
use std::path::Path;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};

use common::{ok, pgsafe};

fn restore(backup: &Path, target: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "restore",
        backup.to_str().unwrap(),
        "--pgdata",
        target.to_str().unwrap(),
        "--progress",
        "none",
    ];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

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
