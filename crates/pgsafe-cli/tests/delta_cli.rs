//! `pgsafe restore --delta` against real servers, through the real binary: a restored copy is
//! started and changed (pgbench, DROP TABLE, new relations, VACUUM FULL, junk and planted links
//! after it stopped), then a delta restore of the same backup ends with the same tree as a
//! restore into an empty directory (every path, type, mode and byte compared, relation files
//! included), writes into no file a planted link or hard link reaches, and the server starts
//! with the backup's rows (pgbench invariant, amcheck). Refused, changing nothing: a running
//! server, another system's data directory.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, PgbenchRun, amcheck, history_rows, per_major, pgbench_init,
    pgbench_invariant, server_owned_tempdir,
};

use common::{backup, json, ok, refused, restore};

/// Every entry below `root` (links not followed): relative path → (kind, mode, uid, bytes or
/// link target).
fn tree(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let (kind, content) = if m.file_type().is_symlink() {
                ('l', Vec::new())
            } else if m.is_dir() {
                stack.push(p.clone());
                ('d', Vec::new())
            } else if m.is_file() {
                ('f', fs::read(&p).unwrap())
            } else {
                ('?', Vec::new())
            };
            out.insert(
                rel,
                (kind, m.permissions().mode() & 0o7777, m.uid(), content),
            );
        }
    }
    out
}

/// Compares two trees; files whose content carries the restore's time are compared by kind
/// only.
fn assert_same_tree(m: &str, delta: &Path, fresh: &Path) {
    assert_same(m, &tree(delta), &tree(fresh));
}

type Tree = BTreeMap<String, (char, u32, u32, Vec<u8>)>;

fn assert_same(m: &str, d: &Tree, f: &Tree) {
    let dk: Vec<&String> = d.keys().collect();
    let fk: Vec<&String> = f.keys().collect();
    assert_eq!(dk, fk, "{m}: the same entries");
    // The restore's time, or (tablespace_map) the restored location.
    let timed = [
        "tablespace_map",
        "pgsafe_restore.json",
        "postgresql.auto.conf",
        "recovery.conf",
    ];
    let mut relation_files = 0;
    for (rel, a) in d {
        let b = &f[rel];
        assert_eq!(
            (a.0, a.1, a.2),
            (b.0, b.1, b.2),
            "{m}: {rel} kind/mode/owner"
        );
        if timed.contains(&rel.as_str()) {
            continue;
        }
        if a.3 != b.3 {
            panic!(
                "{m}: {rel} differs after the delta restore ({} vs {} bytes)",
                a.3.len(),
                b.3.len()
            );
        }
        if a.0 == 'f' && (rel.starts_with("base/") || rel.starts_with("PG_")) {
            relation_files += 1;
        }
    }
    assert!(relation_files > 3, "{m}: {relation_files} relation files");
}

fn delta_restore(major: u32) {
    let install = PgInstall::major(major);
    let m = format!("PostgreSQL {major}");
    let c = Cluster::started(&install, ClusterOptions::new().with_tablespace(true));
    pgbench_init(&c, 1);
    c.execute(
        "CREATE TABLE in_ts (id int PRIMARY KEY, v text) TABLESPACE ts1; \
         INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g; \
         CREATE TABLE doomed AS SELECT g FROM generate_series(1, 3000) g",
    );
    let mut run = PgbenchRun::start(&c, 2);
    run.wait_more(&c, 200);
    run.stop();
    let rows = history_rows(&mut c.connect());
    let scratch = server_owned_tempdir();
    let b = scratch.path().join("backup");
    ok(backup(&c, &b, &["--compress", "lz4"]), "pgsafe backup");
    let oid: u32 = c.query_one("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");

    // The reference: a restore into an empty directory.
    let fresh = scratch.path().join("fresh");
    let fresh_ts = scratch.path().join("fresh-ts");
    let fresh_map = format!("{oid}={}", fresh_ts.display());
    ok(
        restore(&b, &fresh, &["--tablespace-map", &fresh_map]),
        "fresh restore",
    );

    // The copy to bring back: restored, started, changed, stopped.
    let data = scratch.path().join("data");
    let ts = scratch.path().join("data-ts");
    let map = format!("{oid}={}", ts.display());
    ok(restore(&b, &data, &["--tablespace-map", &map]), "restore");
    let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new());
    copy.start();
    copy.wait_recovery_done();
    let mut run = PgbenchRun::start(&copy, 2);
    run.wait_more(&copy, 300);
    run.stop();
    for sql in [
        "DROP TABLE doomed",
        "CREATE TABLE newer TABLESPACE ts1 AS SELECT g, md5(g::text) AS v \
         FROM generate_series(1, 20000) g",
        "INSERT INTO in_ts SELECT g, 'later' FROM generate_series(5001, 6000) g",
        "VACUUM FULL pgbench_tellers",
        "CREATE DATABASE later",
        "CHECKPOINT",
    ] {
        copy.execute(sql);
    }

    // A running server: refused, nothing changed.
    let out = restore(&b, &data, &["--delta", "--tablespace-map", &map]);
    refused(
        &out,
        &[
            "restore refused (nothing was written)",
            "a server is running",
        ],
    );
    assert!(data.join("global/pg_control").exists(), "{m}");
    copy.stop();
    drop(copy);

    // Another system's stopped data directory: refused, nothing changed.
    // Its own initdb: clusters copied from the testkit's template share a system identifier.
    let mut other = Cluster::started(&install, ClusterOptions::new().fresh_initdb(true));
    other.stop();
    let before = tree(other.data_dir());
    let other_map = format!("{oid}={}", scratch.path().join("other-ts").display());
    let out = restore(
        &b,
        other.data_dir(),
        &["--delta", "--tablespace-map", &other_map],
    );
    refused(
        &out,
        &[
            "restore refused (nothing was written)",
            "another database system",
        ],
    );
    assert!(
        tree(other.data_dir()) == before,
        "{m}: the other system changed"
    );
    drop(other);

    // Junk, and an attacker's links: to a file outside (as a file of the backup and as a
    // file it does not have), a hard link to a file outside as a file of the backup, a FIFO.
    let victim = scratch.path().join("victim");
    fs::write(&victim, b"not yours").unwrap();
    let hard_victim = scratch.path().join("hard-victim");
    fs::write(&hard_victim, b"not yours either").unwrap();
    fs::write(data.join("base/junk"), b"junk").unwrap();
    fs::remove_file(data.join("PG_VERSION")).unwrap();
    std::os::unix::fs::symlink(&victim, data.join("PG_VERSION")).unwrap();
    std::os::unix::fs::symlink(&victim, data.join("global/planted")).unwrap();
    std::os::unix::fs::symlink(scratch.path(), data.join("base/planted-dir")).unwrap();
    fs::remove_file(data.join("pg_hba.conf")).unwrap();
    fs::hard_link(&hard_victim, data.join("pg_hba.conf")).unwrap();
    nix::unistd::mkfifo(&data.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();

    let out = ok(
        restore(&b, &data, &["--delta", "--tablespace-map", &map, "--json"]),
        "delta restore",
    );
    let r = json(&out);
    let d = &r["delta"];
    eprintln!("{m}: delta {d}");
    let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("{m}: {k} in {d}"));
    assert!(n("blocks_written") > 0, "{m}: {d}");
    assert!(n("blocks_skipped") > n("blocks_written"), "{m}: {d}");
    assert!(n("files_unchanged") > 100, "{m}: {d}");
    assert!(n("entries_removed") >= 5, "{m}: {d}");
    assert_eq!(fs::read(&victim).unwrap(), b"not yours", "{m}");
    assert_eq!(fs::read(&hard_victim).unwrap(), b"not yours either", "{m}");
    assert_same_tree(&m, &data, &fresh);
    assert_same_tree(&m, &ts, &fresh_ts);
    assert_eq!(
        fs::read_link(data.join(format!("pg_tblspc/{oid}"))).unwrap(),
        ts
    );

    let mut copy = Cluster::adopt(&install, &data, ClusterOptions::new());
    copy.start();
    copy.wait_recovery_done();
    let mut client = copy.connect();
    assert_eq!(pgbench_invariant(&mut client), Ok(rows), "{m}");
    assert_eq!(copy.query_one::<i64>("SELECT count(*) FROM doomed"), 3000);
    assert_eq!(copy.query_one::<i64>("SELECT count(*) FROM in_ts"), 5000);
    let gone: i64 = copy.query_one("SELECT count(*) FROM pg_class WHERE relname = 'newer'");
    assert_eq!(gone, 0, "{m}");
    amcheck(&copy).unwrap_or_else(|e| panic!("{m}: amcheck: {e}"));
    copy.stop();

    // Over a restore nobody started: nothing to write but what each restore writes anew.
    let before = tree(&fresh);
    let out = ok(
        restore(
            &b,
            &fresh,
            &["--delta", "--tablespace-map", &fresh_map, "--json"],
        ),
        "delta over an unstarted restore",
    );
    let d = &json(&out)["delta"];
    // postgresql.auto.conf (the restore's settings appended) is the backup's again, then
    // appended to again; backup_label, the recovery files and .done markers are removed and
    // written again.
    assert!(d["files_written"].as_u64() <= Some(1), "{m}: {d}");
    assert!(d["blocks_written"].as_u64() <= Some(1), "{m}: {d}");
    assert_same(&m, &tree(&fresh), &before);
}

per_major!(delta_restore: 10, 15, 18);
