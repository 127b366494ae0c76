//! Red team of `restore --delta` (writing into an existing data directory): the target is a
//! server that is running, but its `postmaster.pid` names a process this host cannot see — the
//! server runs in another PID namespace (a container sharing the volume), so `kill(pid, 0)`
//! finds nothing. PostgreSQL itself does not trust the pid alone: before it takes over a data
//! directory it checks whether the shared memory segment the pid file names still has
//! processes attached (`PGSharedMemoryIsInUse`, src/backend/port/sysv_shmem.c). A delta
//! restore must refuse such a target and change nothing.

mod common;

use std::fs;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::{backup, ok, restore, text};

/// A pid no process has on this host now.
fn dead_pid() -> i32 {
    (3_000_000..4_000_000)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

#[test]
fn a_live_server_seen_from_another_pid_namespace_is_not_written_into() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT generate_series(1, 5000) AS i");
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("b");
    ok(backup(&c, &b, &[]), "backup");
    let data = scratch.path().join("standby");
    ok(restore(&b, &data, &[]), "restore");
    let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new().fast_unsafe());
    copy.start();
    copy.wait_recovery_done();
    copy.execute("INSERT INTO t SELECT generate_series(5001, 6000)");

    let pid_file = data.join("postmaster.pid");
    let original = fs::read_to_string(&pid_file).unwrap();
    let (_, rest) = original.split_once('\n').unwrap();
    fs::write(&pid_file, format!("{}\n{rest}", dead_pid())).unwrap();
    let control = fs::read(data.join("global/pg_control")).unwrap();
    let out = restore(&b, &data, &["--delta"]);
    // The pid file as the server wrote it, so that it can be stopped whatever happened.
    fs::write(&pid_file, &original).unwrap();
    let still = fs::read(data.join("global/pg_control")).ok();
    let n: Result<i64, _> = copy
        .try_connect()
        .and_then(|mut cl| cl.query_one("SELECT count(*) FROM t", &[]))
        .map(|r| r.get(0));
    copy.stop();
    assert!(
        !out.status.success(),
        "a delta restore wrote into a running server's data directory: {}",
        text(&out)
    );
    assert_eq!(still.as_deref(), Some(&control[..]), "pg_control changed");
    assert_eq!(n.ok(), Some(6000));
}
