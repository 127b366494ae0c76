//! `pgsafe restore --tablespace-map` for a tablespace whose location contains `=`: the
//! OLD_PATH=NEW_PATH form cannot name it (split at the first `=`), is refused with a message
//! pointing at the OID form, and OID=NEW_PATH restores it.

mod common;

use std::fs;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};

use common::{backup, ok, pgsafe, refused};

#[test]
fn tablespace_location_with_equals_sign_is_remapped_by_oid() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let location = scratch.path().join("ts=a=b");
    fs::create_dir(&location).unwrap();
    server_user().chown(&location);
    c.execute(&format!(
        "CREATE TABLESPACE eq LOCATION '{}'",
        location.display()
    ));
    c.execute("CREATE TABLE t TABLESPACE eq AS SELECT g FROM generate_series(1, 1000) g");
    let oid: String = c.query_one("SELECT oid::text FROM pg_tablespace WHERE spcname = 'eq'");
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    ok(backup(&c, &b, &[]), "backup");

    let target = scratch.path().join("restored");
    let new_location = scratch.path().join("ts new");
    let restore = |map: &str| {
        pgsafe(&[
            "restore",
            b.to_str().unwrap(),
            "--pgdata",
            target.to_str().unwrap(),
            "--tablespace-map",
            map,
            "--progress",
            "none",
        ])
    };
    // The path form cannot express it: refused before anything is written, naming the fix.
    let by_path = format!("{}={}", location.display(), new_location.display());
    refused(&restore(&by_path), &["OID=NEW_PATH", "tablespace_map"]);
    assert!(!target.exists() && !new_location.exists());

    ok(
        restore(&format!("{oid}={}", new_location.display())),
        "restore with OID=NEW_PATH",
    );
    let link = fs::read_link(target.join("pg_tblspc").join(&oid)).unwrap();
    assert_eq!(link, new_location);
    let mut r = Cluster::adopt(&install, &target, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert_eq!(r.query_one::<i64>("SELECT count(*) FROM t"), 1000);
    r.execute("INSERT INTO t VALUES (0)");
    r.stop();
    // The source's tablespace was not touched by the copy.
    assert_eq!(c.query_one::<i64>("SELECT count(*) FROM t"), 1000);
}
