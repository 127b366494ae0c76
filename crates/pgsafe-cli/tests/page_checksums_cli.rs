//! Page checksums against real servers with data checksums, through the real binary: corrupt
//! pages of the source are caught while copying (backup completes, exit 4, file and block named
//! and recorded in pgsafe.json) — also one with a garbage LSN that pg_basebackup's "LSN after the
//! backup start" rule lets through; a clean cluster under write load gives no false alarm; and
//! verify finds a page damaged in a stored backup. Oracles: PostgreSQL itself ("invalid page in
//! block N") and pg_basebackup's own check.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgsafe_testkit::{
    Cluster, ClusterOptions, LoadGenerator, PgInstall, client_bin_dir, per_major,
};
use serde_json::{Value, json};

use common::{text, verify};

const BLCKSZ: u64 = 8192;

/// Changes bytes of block `block` of a relation file in place, at `at` within the page.
fn poke(path: &Path, block: u64, at: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, block * BLCKSZ + at).unwrap();
    f.sync_all().unwrap();
}

fn flip(path: &Path, block: u64, at: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, block * BLCKSZ + at).unwrap();
    b[0] ^= 0x55;
    f.write_all_at(&b, block * BLCKSZ + at).unwrap();
    f.sync_all().unwrap();
}

/// What PostgreSQL says reading the whole table: the error, if any.
fn read_error(c: &Cluster, table: &str) -> Option<String> {
    let mut client = c.connect();
    client
        .simple_query(&format!("SELECT count(*) FROM {table}"))
        .err()
        .map(|e| {
            e.as_db_error()
                .map_or(e.to_string(), |d| d.message().to_owned())
        })
}

fn corrupt_source_pages(major: u32) {
    let install = PgInstall::major(major);
    let mut c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 3000) g");
    c.execute("CREATE TABLE u AS SELECT g FROM generate_series(1, 500) g");
    c.execute("CHECKPOINT");
    let t: String = c.query_one("SELECT pg_relation_filepath('t')");
    let u: String = c.query_one("SELECT pg_relation_filepath('u')");
    let m = format!("PostgreSQL {major}");
    c.stop();
    // t, block 1: one byte of row data flipped. u, block 0: only the LSN changed, to the
    // largest there is (later than any backup start).
    flip(&c.data_dir().join(&t), 1, 3000);
    poke(&c.data_dir().join(&u), 0, 0, &[0xFF; 8]);
    c.start();
    // Oracle: PostgreSQL itself refuses both pages.
    let e = read_error(&c, "t").unwrap_or_default();
    assert!(e.contains("invalid page in block 1"), "{m}: {e}");
    let e = read_error(&c, "u").unwrap_or_default();
    assert!(e.contains("invalid page in block 0"), "{m}: {e}");

    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("b");
    let out = common::backup(&c, &target, &["--jobs", "2"]);
    assert_eq!(out.status.code(), Some(4), "{m}: {}", text(&out));
    let v = common::json(&out);
    let mut expected = vec![
        json!({"path": t, "blocks": [1]}),
        json!({"path": u, "blocks": [0]}),
    ];
    expected.sort_by_key(|x| x["path"].as_str().unwrap().to_owned());
    assert_eq!(v["page_checksums"]["corrupt"], json!(expected), "{m}: {v}");
    assert_eq!(v["page_checksums"]["changed_during_copy"], json!([]), "{m}");
    assert!(v["page_checksums"]["pages_checked"].as_u64().unwrap() > 100);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{t}: block 1")), "{m}: {err}");
    assert!(err.contains(&format!("{u}: block 0")), "{m}: {err}");
    assert!(err.contains("SOURCE"), "{m}: {err}");
    // The backup is complete and records the blocks.
    let info: Value =
        serde_json::from_slice(&fs::read(target.join("pgsafe.json")).unwrap()).unwrap();
    assert_eq!(info["page_checksums"]["corrupt"], json!(expected), "{m}");
    // verify: the backup is intact (it holds what the source held) and says the source was not.
    let (code, vr, out) = verify(&target, &[]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));
    let notes = vr["notes"].to_string();
    assert!(
        notes.contains("SOURCE cluster had 2 corrupt page(s)"),
        "{m}: {notes}"
    );

    // Oracle: pg_basebackup's own check (server side, 11+; the client tools are 15's, which
    // refuse newer servers). It names t's block and — by its rule of skipping pages whose LSN
    // is after the backup start — misses u's.
    if (11..=15).contains(&major) {
        let base = scratch.path().join("basebackup");
        let out = Command::new(client_bin_dir().join("pg_basebackup"))
            .args(["-d", &c.conninfo(), "-D", base.to_str().unwrap()])
            .args(["-Fp", "-X", "none", "-c", "fast", "--no-manifest"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{m}: {err}");
        assert!(
            err.contains(&format!(
                "checksum verification failed in file \"./{t}\", block 1"
            )),
            "{m}: {err}"
        );
        assert!(!err.contains(&format!("\"./{u}\"")), "{m}: {err}");
    }

    // The compressed layout: the same blocks found while compressing, re-checked by verify
    // through decompression.
    let zstd = scratch.path().join("zstd");
    let out = common::backup(&c, &zstd, &["--compress", "zstd", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(4), "{m}: {}", text(&out));
    assert_eq!(
        common::json(&out)["page_checksums"]["corrupt"],
        json!(expected),
        "{m}"
    );
    let (code, vr, out) = verify(&zstd, &[]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));
    assert!(
        vr["notes"]
            .to_string()
            .contains("SOURCE cluster had 2 corrupt page(s)"),
        "{m}: {vr}"
    );

    // A page damaged in a stored backup: with --checksum none only the page check can see it.
    let plain = scratch.path().join("plain");
    let out = common::backup(&c, &plain, &["--checksum", "none"]);
    assert_eq!(out.status.code(), Some(4), "{m}: {}", text(&out));
    flip(&plain.join(&t), 3, 5000);
    let (code, vr, out) = verify(&plain, &[]);
    assert_eq!(code, Some(1), "{m}: {}", text(&out));
    let problems = vr["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{m}: {vr}");
    assert_eq!(problems[0]["problem"], "page_checksum");
    assert_eq!(problems[0]["path"], json!(t));
    assert_eq!(problems[0]["block"], 3);
    let msg = problems[0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("page checksum failure: {t} block 3: ")),
        "{msg}"
    );
}

// The majors: where the page layout, the checksum code path or pg_basebackup's behaviour differ
// (10: no server-side check in pg_basebackup; 12; 15; 18).
per_major!(corrupt_source_pages: 10, 12, 15, 18);

/// Writes all over a table while the backup copies it, with few shared buffers, so pages are
/// written to disk during the copy: no page may be called corrupt, and verify must accept what
/// was stored (pages changed during the copy included).
fn clean_cluster_under_write_load(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("shared_buffers = 2MB")
            .conf("bgwriter_delay = 10ms")
            .conf("bgwriter_lru_maxpages = 1000"),
    );
    c.execute(
        "CREATE TABLE big WITH (fillfactor = 50) AS \
         SELECT g, md5(g::text) AS v FROM generate_series(1, 100000) g",
    );
    c.execute("CHECKPOINT");
    let m = format!("PostgreSQL {major}");
    let load = LoadGenerator::start(&c, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let stop = Arc::clone(&stop);
        let mut client = c.connect();
        std::thread::spawn(move || {
            let mut k = 0;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute(&format!("UPDATE big SET v = md5(v) WHERE g % 97 = {k}"))
                    .unwrap();
                k = (k + 1) % 97;
                n += 1;
            }
            n
        })
    };
    load.wait_for_transactions(50, Duration::from_secs(60));
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("b");
    let out = common::backup(&c, &target, &["--jobs", "2", "--max-rate", "15M"]);
    stop.store(true, Ordering::Relaxed);
    let updates = updater.join().unwrap();
    load.stop();
    assert_eq!(out.status.code(), Some(0), "{m}: {}", text(&out));
    let v = common::json(&out);
    let p = &v["page_checksums"];
    assert_eq!(p["corrupt"], json!([]), "{m}: {p}");
    assert!(p["pages_checked"].as_u64().unwrap() > 1500, "{m}: {p}");
    assert!(updates > 2, "{m}: the updater ran {updates} times");
    eprintln!(
        "{m}: {updates} update rounds during the backup; changed during copy: {}",
        p["changed_during_copy"]
    );
    let (code, _, out) = verify(&target, &[]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));
}

per_major!(clean_cluster_under_write_load: 10, 12, 15, 18);
