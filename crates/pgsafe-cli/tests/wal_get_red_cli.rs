//! Red team of `archive-get` (restore_command) served hostile objects the earlier suites do not
//! plant: a zstd bomb (a few hundred KiB that decompress to 16 GiB, behind a valid first
//! page), a huge history file, an intact object of this cluster copied under another
//! segment's or timeline's name (its frame checksum is valid: only the page header can tell),
//! a `.partial` where the segment is missing, and a symbolic link or FIFO in place of an
//! object. Each must either be "not in the archive" (exit 1, for a file that truly is not
//! there) or stop recovery (exit 200), never be handed to PostgreSQL, never hang and never
//! write the destination.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::{command, mkfifo, ok, repo_init};

const CLUSTER: &str = "main";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn push(repo: &Path, path: &Path) -> Output {
    let mut cmd = command(&["archive-push", "--repo", s(repo), "--cluster", CLUSTER]);
    cmd.arg(path);
    cmd.output().unwrap()
}

/// Runs archive-get; one still running after a generous while hangs recovery: killed and
/// reported, never a pass.
fn get(repo: &Path, file: &str, dest: &Path) -> Output {
    let mut child = command(&[
        "archive-get",
        "--repo",
        s(repo),
        "--cluster",
        CLUSTER,
        file,
        s(dest),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("archive-get {file} never returned");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Where the archive keeps a segment (`suffix`: `.zst`, `.lz4` or ``).
fn seg_object(repo: &Path, seg: &str, suffix: &str) -> PathBuf {
    repo.join(CLUSTER)
        .join("wal")
        .join(&seg[..8])
        .join(&seg[8..16])
        .join(format!("{seg}{suffix}"))
}

fn finish_segment(c: &Cluster) -> (String, Vec<u8>) {
    c.execute(
        "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let bytes = fs::read(c.data_dir().join("pg_wal").join(&seg)).unwrap();
    (seg, bytes)
}

/// A segment name `n` segments after `seg` (same timeline and log), or with timeline `tli`.
fn later(seg: &str, n: u32) -> String {
    let low = u32::from_str_radix(&seg[16..], 16).unwrap() + n;
    format!("{}{low:08X}", &seg[..16])
}

fn on_timeline(seg: &str, tli: u32) -> String {
    format!("{tli:08X}{}", &seg[8..])
}

/// A zstd frame (RFC 8878) holding `first` as a raw block, then `rle_blocks` run-length
/// blocks of 128 KiB zeros each: 4 bytes per 128 KiB, so a bomb costs nothing to build. No
/// content size, no checksum (both optional in the format).
fn zstd_bomb(first: &[u8], rle_blocks: u64) -> Vec<u8> {
    const BLOCK: u32 = 128 * 1024;
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD];
    // Frame header descriptor: no content size, no single segment, no checksum, no dictionary;
    // window descriptor: 2^(10+7) = 128 KiB.
    out.extend([0x00, 7 << 3]);
    let header = |last: bool, ty: u32, size: u32| {
        let v = u32::from(last) | (ty << 1) | (size << 3);
        v.to_le_bytes()[..3].to_vec()
    };
    out.extend(header(rle_blocks == 0, 0, first.len() as u32));
    out.extend(first);
    for i in 0..rle_blocks {
        out.extend(header(i + 1 == rle_blocks, 1, BLOCK));
        out.push(0);
    }
    out
}

#[test]
fn hostile_objects_are_never_served() {
    let install = PgInstall::major(17);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let src = scratch.path().join("src");
    fs::create_dir(&src).unwrap();
    let (seg, bytes) = finish_segment(&c);
    fs::write(src.join(&seg), &bytes).unwrap();
    ok(push(&repo, &src.join(&seg)), "push");
    let stored = seg_object(&repo, &seg, ".zst");
    let good = fs::read(&stored).unwrap();
    let pg_wal = scratch.path().join("pg_wal");
    fs::create_dir(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    ok(get(&repo, &seg, &dest), "intact");
    assert!(fs::read(&dest).unwrap() == bytes);
    fs::remove_file(&dest).unwrap();

    let stops = |file: &str, what: &str, needle: &str| {
        let out = get(&repo, file, &dest);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(200), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle:?} missing: {err}");
        assert_eq!(
            fs::read_dir(&pg_wal).unwrap().count(),
            0,
            "{what}: something was written beside the destination"
        );
    };

    // A zstd bomb behind this segment's real first page: 16 GiB of zeros in 512 KiB.
    let bomb_seg = later(&seg, 10);
    let bomb = zstd_bomb(&bytes[..8192], 16 << 13);
    assert!(bomb.len() < 1 << 20);
    let bomb_obj = seg_object(&repo, &bomb_seg, ".zst");
    fs::write(&bomb_obj, &bomb).unwrap();
    stops(
        &bomb_seg,
        "zstd bomb (first page names another segment)",
        "cannot be used",
    );
    // With its first page rewritten to name the bomb's own segment: the header passes, the
    // length does not.
    let mut page = bytes[..8192].to_vec();
    let own_addr = u64::from_le_bytes(page[8..16].try_into().unwrap()) + 10 * (16 << 20);
    page[8..16].copy_from_slice(&own_addr.to_le_bytes());
    fs::write(&bomb_obj, zstd_bomb(&page, 16 << 13)).unwrap();
    stops(&bomb_seg, "zstd bomb", "longer than a WAL segment");
    fs::remove_file(&bomb_obj).unwrap();

    // An intact object of this cluster (frame checksum valid) under another segment's name,
    // also of another timeline. (Under the same segment number of a later timeline it cannot
    // be told by its header: a timeline's first segment begins with its parent's pages, with
    // the parent's timeline in their headers, src/backend/access/transam/xlog.c
    // XLogInitNewTimeline.)
    for (what, name) in [
        ("another address", later(&seg, 3)),
        (
            "another address of another timeline",
            on_timeline(&later(&seg, 3), 2),
        ),
    ] {
        let obj = seg_object(&repo, &name, ".zst");
        fs::create_dir_all(obj.parent().unwrap()).unwrap();
        fs::write(&obj, &good).unwrap();
        stops(&name, what, "cannot be used");
        fs::remove_file(&obj).unwrap();
    }

    // A history file of 4 GiB (sparse): refused after the most such a file can be, not read
    // into memory.
    let hist_dir = repo.join(CLUSTER).join("wal/00000002");
    fs::create_dir_all(&hist_dir).unwrap();
    let hist = hist_dir.join("00000002.history");
    fs::File::create(&hist).unwrap().set_len(4 << 30).unwrap();
    stops("00000002.history", "huge history", "larger than");
    fs::remove_file(&hist).unwrap();

    // A `.partial` where the segment is missing: the segment is not in the archive (exit 1,
    // as PostgreSQL's own archive would answer), and the partial's bytes are not served.
    let part_seg = later(&seg, 20);
    let part = seg_object(&repo, &format!("{part_seg}.partial"), ".zst");
    fs::write(&part, &good).unwrap();
    let out = get(&repo, &part_seg, &dest);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!dest.exists());
    fs::remove_file(&part).unwrap();

    // A symbolic link to the intact object, and a FIFO, in place of a segment's object: never
    // followed or waited on, and not "missing" either (that would end recovery early).
    let link_seg = later(&seg, 30);
    let link = seg_object(&repo, &link_seg, ".zst");
    std::os::unix::fs::symlink(&stored, &link).unwrap();
    stops(&link_seg, "symlink object", "");
    fs::remove_file(&link).unwrap();
    mkfifo(&link);
    stops(&link_seg, "FIFO object", "");
    fs::remove_file(&link).unwrap();

    // The real object is still served after all this.
    ok(get(&repo, &seg, &dest), "intact again");
    assert!(fs::read(&dest).unwrap() == bytes);
}
