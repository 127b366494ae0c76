//! Red team of incremental backups (issue 14): someone who can write the repository edits the
//! plain `pgsafe.json` documents a chain is built from. The prior start (the parent's
//! `start_lsn`) decides which blocks an incremental stores; `parent` decides which backups a
//! restore combines. Edited, they must never give a restored copy stale blocks silently: the
//! restore refuses, or the copy holds exactly the rows the source had. Also hostile
//! incremental objects (consistent forgeries of a plain backup) and a visibility map whose bits
//! were cleared without a new page LSN.
//!
//! NOT YET RUN: written before `backup --type` and the restore of chains were on main; each
//! test is ignored until then (run them with `--run-ignored only`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::{command, json, ok, path_str as s, pgsafe, repo_init, text};

fn backup(c: &Cluster, repo: &Path, kind: &str) -> serde_json::Value {
    let conn = c.conninfo();
    json(&ok(
        pgsafe(&[
            "backup",
            "--repo",
            s(repo),
            "--cluster",
            "main",
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
            "--type",
            kind,
            "--progress",
            "none",
            "--json",
        ]),
        &format!("backup --type {kind}"),
    ))
}

fn id_of(v: &serde_json::Value) -> String {
    v["backup_id"].as_str().unwrap().to_owned()
}

fn doc_path(repo: &Path, id: &str) -> PathBuf {
    repo.join("main/backups").join(id).join("pgsafe.json")
}

fn edit(repo: &Path, id: &str, f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let p = doc_path(repo, id);
    let before = fs::read(&p).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&before).unwrap();
    f(&mut v);
    fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    before
}

fn restore(repo: &Path, id: &str, target: &Path) -> Output {
    pgsafe(&[
        "restore",
        "--repo",
        s(repo),
        "--cluster",
        "main",
        "--backup",
        id,
        "--pgdata",
        s(target),
        "--progress",
        "none",
    ])
}

/// Runs `args` with a deadline: a hostile chain must not make a command loop.
fn bounded(args: &[&str]) -> Output {
    let mut child = command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("pgsafe {args:?} did not finish in 3 minutes (a loop?)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(rows 'u1', rows 'u2', rows 'old')` of table `x` in a restored copy, or why it could not
/// be read.
fn rows(install: &PgInstall, target: &Path) -> (i64, i64, i64) {
    let mut r = Cluster::adopt(install, target, ClusterOptions::new().fast_unsafe());
    r.start();
    r.wait_recovery_done();
    let q = |v: &str| -> i64 { r.query_one(&format!("SELECT count(*) FROM x WHERE v = '{v}'")) };
    let out = (q("u1"), q("u2"), q("old"));
    r.stop();
    out
}

/// The parent's `start_lsn` moved forward in its plain `pgsafe.json` before the incremental is
/// taken (so the incremental leaves out the blocks changed between the real and the forged
/// start), then put back (so the parent verifies again) — or left as edited. A restore of the
/// incremental must refuse, or give every row; never the parent's stale blocks.
#[test]
#[ignore = "not yet run: needs backup --type (s6-incr) and restore of incremental chains (chain) on main; written at 07:15 against their contracts"]
fn a_parent_start_moved_forward_never_restores_stale_blocks() {
    let install = PgInstall::major(16);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE x (id int PRIMARY KEY, v text) WITH (fillfactor = 50); \
         INSERT INTO x SELECT g, 'old' FROM generate_series(1, 20000) g",
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    let f = id_of(&backup(&c, &repo, "full"));
    c.execute("UPDATE x SET v = 'u1' WHERE id <= 10000");
    c.execute("CHECKPOINT");
    let forged: String = c.query_one("SELECT pg_current_wal_lsn()::text");
    let original = edit(&repo, &f, |v| v["start_lsn"] = forged.clone().into());
    c.execute("UPDATE x SET v = 'u2' WHERE id > 15000");
    let i = backup(&c, &repo, "incr");
    let iid = id_of(&i);
    eprintln!(
        "incremental {iid}: type {}, parent {}, parent_start_lsn in its pgsafe.json: {}",
        i["backup_type"],
        i["parent"],
        fs::read_to_string(doc_path(&repo, &iid))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["parent_start_lsn"].clone())
            .unwrap_or_default()
    );

    for (what, put_back) in [("left edited", false), ("put back", true)] {
        if put_back {
            fs::write(doc_path(&repo, &f), &original).unwrap();
        }
        let target = scratch.path().join(format!("restored-{put_back}"));
        let out = restore(&repo, &iid, &target);
        if !out.status.success() {
            eprintln!("{what}: restore refused: {}", text(&out));
            assert!(!target.join("global/pg_control").exists());
            continue;
        }
        assert_eq!(
            rows(&install, &target),
            (10000, 5000, 5000),
            "{what}: the restored copy lost rows (stale blocks of the parent): {}",
            text(&out)
        );
    }
}

/// Incrementals whose `parent` fields name each other (a loop), or whose parent is replaced by
/// another full backup of the same cluster under its ID: info, verify and restore finish, and
/// restore refuses the broken chain.
#[test]
#[ignore = "not yet run: needs backup --type (s6-incr) and restore of incremental chains (chain) on main; written at 07:15 against their contracts"]
fn a_parent_loop_or_a_swapped_parent_is_refused() {
    let install = PgInstall::major(14);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE x (id int, v text); INSERT INTO x SELECT g, 'old' FROM generate_series(1, 5000) g");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    let f1 = id_of(&backup(&c, &repo, "full"));
    c.execute("UPDATE x SET v = 'u1' WHERE id <= 2000");
    let i1 = id_of(&backup(&c, &repo, "incr"));
    c.execute("UPDATE x SET v = 'u2' WHERE id > 4000");
    let i2 = id_of(&backup(&c, &repo, "incr"));
    let r = s(&repo);

    // A loop: I1's parent is I2 (its start recorded to fit).
    let i2_start =
        serde_json::from_slice::<serde_json::Value>(&fs::read(doc_path(&repo, &i2)).unwrap())
            .unwrap()["start_lsn"]
            .clone();
    let saved = edit(&repo, &i1, |v| {
        v["parent"] = i2.clone().into();
        v["parent_start_lsn"] = i2_start.clone();
    });
    bounded(&["info", "--repo", r, "--cluster", "main", "--json"]);
    bounded(&["verify", "--repo", r, "--cluster", "main", "--backup", &i2]);
    let target = scratch.path().join("loop");
    let out = bounded(&[
        "restore",
        "--repo",
        r,
        "--cluster",
        "main",
        "--backup",
        &i2,
        "--pgdata",
        s(&target),
        "--progress",
        "none",
    ]);
    assert!(
        !out.status.success(),
        "restore of a chain with a loop: {}",
        text(&out)
    );
    assert!(!target.join("global/pg_control").exists());
    fs::write(doc_path(&repo, &i1), saved).unwrap();

    // I1's parent replaced by another full backup of the same cluster, under F1's ID.
    let f2 = id_of(&backup(&c, &repo, "full"));
    let backups = repo.join("main/backups");
    fs::rename(backups.join(&f1), scratch.path().join("f1-away")).unwrap();
    fs::rename(backups.join(&f2), backups.join(&f1)).unwrap();
    let target = scratch.path().join("swapped");
    let out = bounded(&[
        "restore",
        "--repo",
        r,
        "--cluster",
        "main",
        "--backup",
        &i2,
        "--pgdata",
        s(&target),
        "--progress",
        "none",
    ]);
    if out.status.success() {
        let mut rc = Cluster::adopt(&install, &target, ClusterOptions::new().fast_unsafe());
        rc.start();
        rc.wait_recovery_done();
        let n: i64 = rc.query_one("SELECT count(*) FROM x WHERE v = 'u1'");
        let m: i64 = rc.query_one("SELECT count(*) FROM x WHERE v = 'u2'");
        rc.stop();
        assert_eq!(
            (n, m),
            (2000, 1000),
            "restore over a swapped parent: {}",
            text(&out)
        );
    } else {
        eprintln!("swapped parent: restore refused: {}", text(&out));
        assert!(!target.join("global/pg_control").exists());
    }
}

/// A tmpfs mounted on a fresh folder; unmounted on drop (a restore that writes a hostile
/// object's length in zeros fills this, not the machine).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(options: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("pgsafe-incr-")
            .tempdir_in("/tmp")
            .unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "pgsafe-incr"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs (needs root)");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Every regular file below `dir` with its size (links not followed).
fn sizes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(sizes(&p));
        } else {
            out.push((p, m.len()));
        }
    }
    out
}

/// An incremental object's header as bytes, whatever it says (the format's own encoder
/// refuses a hostile one): layout/incremental.rs.
fn raw_header(block_size: u32, file_blocks: u32, entries: &[(u32, u32)]) -> Vec<u8> {
    let mut out = b"PGSAFEIB".to_vec();
    for v in [1u32, block_size, file_blocks, entries.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (b, crc) in entries {
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32c_of(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    pgsafe::layout::incremental::block_crc(bytes)
}

/// Replaces the object at `rel` (relative to the backup folder `dir`) with `bytes` and makes
/// the backup's manifest agree (size, checksum, its own checksum): a consistent forgery of a
/// plain backup, as whoever can write the repository can make one.
fn forge(dir: &Path, rel: &str, bytes: &[u8]) {
    fs::write(dir.join(rel), bytes).unwrap();
    let mpath = dir.join("backup_manifest");
    let mut m = pgsafe::manifest::Manifest::parse(&fs::read(&mpath).unwrap()).unwrap();
    let f = m
        .files
        .iter_mut()
        .find(|f| f.path == rel.as_bytes())
        .unwrap_or_else(|| panic!("{rel} is not in the manifest"));
    f.size = bytes.len() as u64;
    if let Some((alg, _)) = f.checksum.clone() {
        f.checksum = Some((alg, alg.of(bytes).unwrap()));
    }
    fs::write(&mpath, m.encode().unwrap()).unwrap();
}

/// Hostile incremental objects in a plain repository (compression none), each a consistent
/// forgery (header CRC and manifest recomputed): a length of 2^31 blocks (a "bomb": 16 TiB
/// of a relation file whose segments are 1 GiB), a block number past the length, a block
/// listed twice, two blocks' bytes swapped (each with its CRC: only the page checksum, which
/// covers the block number, tells). A restore of the incremental refuses each, writes no file
/// beyond a segment's size, and leaves no pg_control.
#[test]
#[ignore = "not yet run: needs backup --type (s6-incr) and restore of incremental chains (chain) on main; written at 07:15 against their contracts"]
fn hostile_incremental_objects_are_refused() {
    let install = PgInstall::major(16);
    let c = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().checksums(true),
    );
    c.execute(
        "CREATE TABLE x (id int, v text); \
         INSERT INTO x SELECT g, repeat('o', 100) FROM generate_series(1, 40000) g",
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    backup(&c, &repo, "full");
    c.execute("UPDATE x SET v = repeat('n', 100) WHERE id % 7 = 0");
    c.execute("CHECKPOINT");
    let i = id_of(&backup(&c, &repo, "incr"));
    let dir = repo.join("main/backups").join(&i);

    // The object with the most stored blocks.
    let mut objects: Vec<(String, pgsafe::layout::incremental::IncrHeader, usize)> = sizes(&dir)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with(".pgsafe-incr"))
        .filter_map(|(p, _)| {
            let b = fs::read(&p).ok()?;
            let (h, hl) = pgsafe::layout::incremental::decode_header(&b).ok()?;
            let rel = p.strip_prefix(&dir).unwrap().to_str().unwrap().to_owned();
            Some((rel, h, hl))
        })
        .collect();
    objects.sort_by_key(|(_, h, _)| h.blocks.len());
    let (rel, h, hl) = objects.pop().expect("an incremental object");
    assert!(h.blocks.len() >= 2, "{rel}: {h:?}");
    let original = fs::read(dir.join(&rel)).unwrap();
    let manifest = fs::read(dir.join("backup_manifest")).unwrap();
    let bs = h.block_size as usize;
    let data = &original[hl..];
    let entries: Vec<(u32, u32)> = h.blocks.iter().map(|b| (b.block, b.crc32c)).collect();

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut bomb = raw_header(h.block_size, 0x8000_0000, &entries);
    bomb.extend_from_slice(data);
    cases.push(("length of 2^31 blocks", bomb));
    let mut past = entries.clone();
    let last = past.len() - 1;
    past[last].0 = h.file_blocks + 5;
    let mut o = raw_header(h.block_size, h.file_blocks, &past);
    o.extend_from_slice(data);
    cases.push(("block past the length", o));
    let mut dup = entries.clone();
    dup[1].0 = dup[0].0;
    let mut o = raw_header(h.block_size, h.file_blocks, &dup);
    o.extend_from_slice(data);
    cases.push(("block listed twice", o));
    let mut swapped = entries.clone();
    swapped.swap(0, 1);
    swapped[0].0 = entries[0].0;
    swapped[1].0 = entries[1].0;
    let mut o = raw_header(h.block_size, h.file_blocks, &swapped);
    o.extend_from_slice(&data[bs..2 * bs]);
    o.extend_from_slice(&data[..bs]);
    o.extend_from_slice(&data[2 * bs..]);
    cases.push(("two blocks' bytes swapped", o));

    let owner = pgsafe_testkit::server_user().name.clone();
    for (what, bytes) in cases {
        forge(&dir, &rel, &bytes);
        let fs_ = Tmpfs::new("size=3g");
        let target = fs_.dir.path().join("restored");
        let out = pgsafe(&[
            "restore",
            "--repo",
            s(&repo),
            "--cluster",
            "main",
            "--backup",
            &i,
            "--pgdata",
            s(&target),
            "--progress",
            "none",
            "--owner",
            &owner,
        ]);
        let big: Vec<_> = sizes(&target)
            .into_iter()
            .filter(|(_, n)| *n > 1 << 30)
            .collect();
        assert!(
            big.is_empty(),
            "{what}: files past a segment's size: {big:?}"
        );
        assert!(
            !out.status.success(),
            "{what}: the restore took the forged {rel}: {}",
            text(&out)
        );
        assert!(!target.join("global/pg_control").exists(), "{what}");
        eprintln!(
            "{what}: refused: {}",
            text(&out).lines().last().unwrap_or_default()
        );
        fs::write(dir.join(&rel), &original).unwrap();
        fs::write(dir.join("backup_manifest"), &manifest).unwrap();
    }
}

/// Visibility map bits are cleared by DELETE without WAL of their own and without a new page
/// LSN on the map page (src/backend/access/heap/visibilitymap.c), so neither a page scan nor a
/// WAL summary (src/backend/postmaster/walsummarizer.c marks only registered block
/// references) sees the map page change. An incremental taken after rows were deleted from
/// all-visible pages must not restore the parent's map: an index-only scan of the copy would
/// count the deleted rows without visiting the heap.
fn a_stale_visibility_map_is_never_restored(major: u32) {
    let install = PgInstall::major(major);
    let mut opts = ClusterOptions::new().fast_unsafe();
    if major >= 17 {
        opts = opts.conf("summarize_wal = on");
    }
    let c = Cluster::started(&install, opts);
    c.execute(
        "CREATE TABLE x (id int PRIMARY KEY, v text); \
         INSERT INTO x SELECT g, 'row' FROM generate_series(1, 50000) g",
    );
    c.execute("VACUUM x");
    c.execute("CHECKPOINT");
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    backup(&c, &repo, "full");
    c.execute("DELETE FROM x WHERE id % 2 = 0");
    c.execute("CHECKPOINT");
    let i = backup(&c, &repo, "incr");
    let iid = id_of(&i);
    eprintln!(
        "PostgreSQL {major}: {} {}",
        i["backup_type"], i["changed_source"]
    );
    let target = scratch.path().join("restored");
    ok(restore(&repo, &iid, &target), "restore of the incremental");
    let mut r = Cluster::adopt(&install, &target, ClusterOptions::new().fast_unsafe());
    r.start();
    r.wait_recovery_done();
    let mut cl = r.connect();
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let plan: Vec<String> = cl
        .query("EXPLAIN SELECT count(*) FROM x WHERE id > 0", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("Index Only Scan")),
        "PostgreSQL {major}: {plan:?}"
    );
    let ios: i64 = cl
        .query_one("SELECT count(*) FROM x WHERE id > 0", &[])
        .unwrap()
        .get(0);
    cl.batch_execute(
        "RESET enable_seqscan; SET enable_indexscan = off; SET enable_indexonlyscan = off",
    )
    .unwrap();
    let seq: i64 = cl
        .query_one("SELECT count(*) FROM x WHERE id > 0", &[])
        .unwrap()
        .get(0);
    drop(cl);
    r.stop();
    assert_eq!(
        (seq, ios),
        (25000, 25000),
        "PostgreSQL {major}: an index-only scan of the restored copy counts deleted rows (a \
         stale visibility map)"
    );
}

#[test]
#[ignore = "not yet run: needs backup --type (s6-incr) and restore of incremental chains (chain) on main; written at 07:15 against their contracts"]
fn a_stale_visibility_map_is_never_restored_pg14() {
    a_stale_visibility_map_is_never_restored(14);
}

#[test]
#[ignore = "not yet run: needs backup --type (s6-incr) and restore of incremental chains (chain) on main; written at 07:15 against their contracts"]
fn a_stale_visibility_map_is_never_restored_pg17() {
    a_stale_visibility_map_is_never_restored(17);
}
