//! Copy tests over the fake data directory of the plan tests.

use super::*;
use crate::plan::tests::{Fake, content, fake_pgdata, v, write};
use crate::plan::{BackupPlan, PlanOptions};
use crate::progress::NoProgress;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const MIB: u64 = 1 << 20;

fn plan(fake: &Fake) -> BackupPlan {
    BackupPlan::build(&fake.pgdata, v("15"), &PlanOptions::default()).unwrap()
}

fn opts<'a>(jobs: usize, compression: Compression, checksum: ChecksumAlgorithm) -> CopyOptions<'a> {
    CopyOptions {
        jobs,
        compression,
        checksum,
        split_size: MIB,
        buffer_size: 64 * 1024,
        ..CopyOptions::default()
    }
}

/// The original content of a stored file.
fn stored_content(target: &Path, f: &CopiedFile, c: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    let file = File::open(target.join(f.stored_path.as_path())).unwrap();
    c.decoder(file).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[derive(Default)]
struct Counting {
    bytes: AtomicU64,
    files: AtomicU64,
    planned: AtomicU64,
}

impl Progress for Counting {
    /// Summed over the phases: the copy plans its files, then pg_control its own phase.
    fn plan(&self, _files: u64, bytes: u64) {
        self.planned.fetch_add(bytes, Ordering::Relaxed);
    }
    fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    fn file_done(&self, _rel: &str, _bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every stored file equals its source byte for byte and carries the source's checksum.
fn check_round_trip(
    fake: &Fake,
    plan: &BackupPlan,
    target: &Path,
    report: &CopyReport,
    o: &CopyOptions,
) {
    let c = o.compression;
    assert_eq!(report.files.len(), plan.files.len() + 1);
    assert_eq!(
        report.files.last().unwrap().rel_path.to_str(),
        Some("global/pg_control")
    );
    for f in &report.files {
        let planned = plan.file(f.rel_path.to_str().unwrap()).unwrap();
        let source = fs::read(&planned.source).unwrap();
        let stored = stored_content(target, f, c);
        assert!(stored == source, "{} with {c}", f.rel_path);
        assert_eq!(f.size, source.len() as u64, "{}", f.rel_path);
        assert_eq!(
            f.checksum,
            o.checksum.of(&source),
            "{} with {c}",
            f.rel_path
        );
        let on_disk = fs::metadata(target.join(f.stored_path.as_path())).unwrap();
        assert_eq!(f.stored_size, on_disk.len(), "{}", f.rel_path);
        assert_eq!(
            on_disk.mode() & 0o777,
            planned.mode | 0o600,
            "{}",
            f.rel_path
        );
        assert_eq!(f.stored_path, f.rel_path.with_suffix(c.suffix()));
        assert_eq!(f.mtime, planned.mtime);
    }
    assert_eq!(
        report.bytes,
        report.files.iter().map(|f| f.size).sum::<u64>()
    );
    assert!(report.vanished.is_empty() && report.resized.is_empty());
    for d in &plan.dirs {
        let m = fs::metadata(target.join(d.rel_path.as_path())).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o7777, d.mode, "{}", d.rel_path);
    }
    // Nothing else was written: excluded files, pg_wal contents.
    let mut count = 0;
    let mut stack = vec![target.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                count += 1;
            }
        }
    }
    assert_eq!(count, report.files.len());
    assert!(!target.join("base/5/16390").exists());
    assert!(target.join("pg_wal/archive_status").is_dir());
    assert_eq!(
        fs::read_dir(target.join("pg_wal/archive_status"))
            .unwrap()
            .count(),
        0
    );
    let _ = fake;
}

#[test]
fn round_trip_every_compression_and_checksum() {
    let fake = fake_pgdata("15");
    let plan = plan(&fake);
    let cases = [
        (1, Compression::None, ChecksumAlgorithm::Crc32c),
        (3, Compression::None, ChecksumAlgorithm::Crc32c),
        (3, Compression::None, ChecksumAlgorithm::Sha256),
        (2, Compression::None, ChecksumAlgorithm::None),
        (1, Compression::Zstd { level: 1 }, ChecksumAlgorithm::Crc32c),
        (3, Compression::Zstd { level: 3 }, ChecksumAlgorithm::Sha256),
        (1, Compression::Lz4, ChecksumAlgorithm::Crc32c),
        (3, Compression::Lz4, ChecksumAlgorithm::Crc32c),
    ];
    for (i, (jobs, c, alg)) in cases.into_iter().enumerate() {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("backup");
        let sync = [SyncMode::Storage, SyncMode::None][i % 2];
        let o = CopyOptions {
            sync,
            ..opts(jobs, c, alg)
        };
        let progress = Counting::default();
        let report = copy_plan(&plan, &target, &o, &progress).unwrap();
        check_round_trip(&fake, &plan, &target, &report, &o);
        assert_eq!(progress.bytes.load(Ordering::Relaxed), report.bytes);
        assert_eq!(
            progress.files.load(Ordering::Relaxed),
            report.files.len() as u64
        );
        assert_eq!(progress.planned.load(Ordering::Relaxed), plan.total_bytes());
        assert_eq!(
            fs::metadata(&target).unwrap().mode() & 0o777,
            plan.root_mode,
            "created target takes PGDATA's mode"
        );
        if c.is_none() {
            assert_eq!(report.stored_bytes, report.bytes);
        }
    }
}

#[test]
fn split_files_are_identical_whatever_the_range_size() {
    let fake = fake_pgdata("15");
    // 9 MiB + a bit: many ranges, the last one partial.
    let big = content(9 * MIB as usize + 12345, 99);
    write(&fake.pgdata.join("base/5/20000"), &big);
    let plan = plan(&fake);
    for (split, buffer) in [
        (MIB, 64 * 1024),
        (MIB + 1, 4096),
        (3 * MIB, 1 << 20),
        (u64::MAX, 1 << 20),
    ] {
        let out = tempfile::tempdir().unwrap();
        let o = CopyOptions {
            split_size: split,
            buffer_size: buffer,
            ..opts(3, Compression::None, ChecksumAlgorithm::Crc32c)
        };
        let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
        let f = report
            .files
            .iter()
            .find(|f| f.rel_path.to_str() == Some("base/5/20000"))
            .unwrap();
        assert_eq!(
            f.checksum,
            ChecksumAlgorithm::Crc32c.of(&big),
            "split {split}"
        );
        assert!(fs::read(out.path().join("base/5/20000")).unwrap() == big);
        assert_eq!(f.size, big.len() as u64);
    }
}

#[test]
fn crc_combine_of_an_empty_prefix_is_the_crc() {
    let a = crc32c::crc32c(b"hello");
    assert_eq!(crc32c::crc32c_combine(0, a, 5), a);
    let ab = crc32c::crc32c(b"helloworld");
    assert_eq!(crc32c::crc32c_combine(a, crc32c::crc32c(b"world"), 5), ab);
    assert_eq!(crc32c::crc32c_combine(ab, 0, 0), ab);
}

fn find<'r>(report: &'r CopyReport, rel: &str) -> Option<&'r CopiedFile> {
    report
        .files
        .iter()
        .find(|f| f.rel_path.to_str() == Some(rel))
}

#[test]
fn files_that_vanish_shrink_or_grow_after_planning() {
    for c in [Compression::None, Compression::Zstd { level: 1 }] {
        let fake = fake_pgdata("15");
        let plan = plan(&fake);
        let p = |rel: &str| fake.pgdata.join(rel);
        // Vanish: a split file (2.5 MB, ranges of 1 MiB) and a small one.
        fs::remove_file(p("base/5/16384")).unwrap();
        fs::remove_file(p("base/5/16384_vm")).unwrap();
        // Shrink: the 300 kB segment to 100 kB; grow: 1259 (3 pages) by a page.
        let seg1 = fs::read(p("base/5/16384.1")).unwrap();
        fs::write(p("base/5/16384.1"), &seg1[..100_000]).unwrap();
        let mut rel = fs::read(p("base/1/1259")).unwrap();
        let planned_1259 = rel.len();
        rel.extend_from_slice(&content(8192, 77));
        fs::write(p("base/1/1259"), &rel).unwrap();

        let out = tempfile::tempdir().unwrap();
        let o = opts(2, c, ChecksumAlgorithm::Crc32c);
        let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
        let names: Vec<String> = report.vanished.iter().map(|r| r.to_string()).collect();
        assert_eq!(names, ["base/5/16384", "base/5/16384_vm"], "{c}");
        assert!(find(&report, "base/5/16384").is_none());
        assert!(
            !out.path()
                .join(format!("base/5/16384{}", c.suffix()))
                .exists()
        );

        let shrunk = find(&report, "base/5/16384.1").unwrap();
        assert_eq!(shrunk.size, 100_000);
        assert_eq!(
            shrunk.checksum,
            ChecksumAlgorithm::Crc32c.of(&seg1[..100_000])
        );
        assert!(stored_content(out.path(), shrunk, c) == seg1[..100_000]);

        let grown = find(&report, "base/1/1259").unwrap();
        assert_eq!(grown.size, planned_1259 as u64);
        assert_eq!(
            grown.checksum,
            ChecksumAlgorithm::Crc32c.of(&rel[..planned_1259])
        );
        assert!(stored_content(out.path(), grown, c) == rel[..planned_1259]);

        let resized: Vec<(String, u64, u64)> = report
            .resized
            .iter()
            .map(|r| (r.rel_path.to_string(), r.planned, r.stored))
            .collect();
        // A file that grew is stored with its planned size: not a size change.
        let want = [("base/5/16384.1".to_owned(), 300_000, 100_000)];
        assert_eq!(resized, want, "{c}");
    }
}

/// A hook that runs `f(call number)` when the copy opens `rel`.
fn on_open(rel: &'static str, f: impl Fn(usize) + Sync) -> impl Fn(&RelPath) + Sync {
    let calls = AtomicUsize::new(0);
    move |r: &RelPath| {
        if r.to_str() == Some(rel) {
            f(calls.fetch_add(1, Ordering::SeqCst));
        }
    }
}

#[test]
fn split_file_that_shrinks_then_grows_during_the_copy_ends_at_the_first_short_range() {
    for c in [
        Compression::None,
        Compression::Zstd { level: 1 },
        Compression::Lz4,
    ] {
        let fake = fake_pgdata("15");
        let path = fake.pgdata.join("base/5/16384");
        let original = fs::read(&path).unwrap(); // 2.5 MB: ranges 0..1M, 1M..2M, 2M..2.5M
        let plan = plan(&fake);
        let cut = 1_500_000;
        let hook = on_open("base/5/16384", |call| match call {
            1 => fs::write(&path, &original[..cut]).unwrap(),
            2 => fs::write(&path, content(original.len() + 5000, 5)).unwrap(),
            _ => {}
        });
        let out = tempfile::tempdir().unwrap();
        let o = CopyOptions {
            before_open: Some(&hook),
            ..opts(1, c, ChecksumAlgorithm::Crc32c)
        };
        let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
        let f = find(&report, "base/5/16384").unwrap();
        assert_eq!(f.size, cut as u64, "{c}");
        assert_eq!(f.checksum, ChecksumAlgorithm::Crc32c.of(&original[..cut]));
        assert!(stored_content(out.path(), f, c) == original[..cut], "{c}");
        let on_disk = fs::metadata(out.path().join(f.stored_path.as_path())).unwrap();
        assert_eq!(f.stored_size, on_disk.len(), "{c}");
        assert_eq!(report.resized.len(), 1);
    }
}

#[test]
fn split_file_deleted_during_the_copy() {
    for c in [Compression::None, Compression::Lz4] {
        let fake = fake_pgdata("15");
        let path = fake.pgdata.join("base/5/16384");
        let original = fs::read(&path).unwrap();
        let plan = plan(&fake);
        // Deleted after its first range was read: stored up to there (recovery replays the
        // DROP).
        let hook = on_open("base/5/16384", |call| {
            if call == 1 {
                fs::remove_file(&path).unwrap();
            }
        });
        let out = tempfile::tempdir().unwrap();
        let o = CopyOptions {
            before_open: Some(&hook),
            ..opts(1, c, ChecksumAlgorithm::Crc32c)
        };
        let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
        let f = find(&report, "base/5/16384").unwrap();
        assert_eq!(f.size, MIB, "{c}");
        let head = &original[..MIB as usize];
        assert_eq!(f.checksum, ChecksumAlgorithm::Crc32c.of(head));
        assert!(stored_content(out.path(), f, c) == head, "{c}");
        // Deleted before its first range: vanished, nothing left in the target.
        fs::write(&path, &original).unwrap();
        let hook = on_open("base/5/16384", |call| {
            if call == 0 {
                fs::remove_file(&path).unwrap();
            }
        });
        let out = tempfile::tempdir().unwrap();
        let o = CopyOptions {
            before_open: Some(&hook),
            ..opts(1, c, ChecksumAlgorithm::Crc32c)
        };
        let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
        assert_eq!(report.vanished, vec![RelPath::from("base/5/16384")], "{c}");
        let stored = format!("base/5/16384{}", c.suffix());
        assert!(!out.path().join(stored).exists(), "{c}");
    }
}

#[test]
fn split_file_vanishing_first_while_later_ranges_are_copied() {
    // Uncompressed ranges are written in place: with two workers, range 1 may be written before
    // range 0 finds the file gone. The partial file must not stay behind.
    let fake = fake_pgdata("15");
    let path = fake.pgdata.join("base/5/16384");
    let plan = plan(&fake);
    // The three ranges (2.5 MB in 1 MiB ranges, the first items of the work list) open at once
    // on three workers; the first to get past the gate removes the file.
    let gate = std::sync::Barrier::new(3);
    let removed = AtomicBool::new(false);
    let hook = |r: &RelPath| {
        if r.to_str() == Some("base/5/16384") {
            gate.wait();
            if !removed.swap(true, Ordering::SeqCst) {
                fs::remove_file(&path).unwrap();
            }
        }
    };
    let out = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        before_open: Some(&hook),
        ..opts(3, Compression::None, ChecksumAlgorithm::Crc32c)
    };
    let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
    // Whichever range removed it, the outcome is consistent: either vanished and absent, or a
    // prefix stored with matching size and checksum.
    assert_no_temporary_files(out.path());
    match find(&report, "base/5/16384") {
        None => {
            assert_eq!(report.vanished, vec![RelPath::from("base/5/16384")]);
            assert!(!out.path().join("base/5/16384").exists());
        }
        Some(f) => {
            let stored = fs::read(out.path().join("base/5/16384")).unwrap();
            assert_eq!(stored.len() as u64, f.size);
            assert_eq!(f.checksum, ChecksumAlgorithm::Crc32c.of(&stored));
        }
    }
}

#[test]
fn first_error_names_the_file_and_stops_the_other_workers() {
    let fake = fake_pgdata("15");
    for i in 0..200 {
        write(
            &fake.pgdata.join(format!("base/1/{}", 30000 + i)),
            &content(100, i),
        );
    }
    let plan = plan(&fake);
    // The largest file (first scheduled) becomes a directory: open succeeds, read fails.
    let broken = fake.pgdata.join("base/5/16384");
    fs::remove_file(&broken).unwrap();
    fs::create_dir(&broken).unwrap();
    let slow = |r: &RelPath| {
        if r.to_str() != Some("base/5/16384") {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for c in [Compression::None, Compression::Lz4] {
        let out = tempfile::tempdir().unwrap();
        let o = CopyOptions {
            before_open: Some(&slow),
            ..opts(2, c, ChecksumAlgorithm::Crc32c)
        };
        let err = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("read "), "{msg}");
        assert!(msg.contains("/data/base/5/16384"), "{msg}");
        let copied = fs::read_dir(out.path().join("base/1")).unwrap().count();
        assert!(copied < 20, "{copied} files copied after the failure");
        assert!(!out.path().join("global/pg_control").exists());
        assert_no_temporary_files(out.path());
    }
}

#[test]
fn cancel_flag_stops_the_copy() {
    let fake = fake_pgdata("15");
    let plan = plan(&fake);
    let cancel = AtomicBool::new(false);
    let hook = |_: &RelPath| cancel.store(true, Ordering::SeqCst);
    let out = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        cancel: Some(&cancel),
        before_open: Some(&hook),
        ..opts(2, Compression::None, ChecksumAlgorithm::Crc32c)
    };
    let err = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap_err();
    assert!(matches!(err, CopyError::Cancelled), "{err}");
}

#[test]
fn existing_files_in_the_target_are_not_overwritten() {
    let fake = fake_pgdata("15");
    let plan = plan(&fake);
    let out = tempfile::tempdir().unwrap();
    write(&out.path().join("PG_VERSION"), b"mine");
    let err = copy_plan(
        &plan,
        out.path(),
        &opts(1, Compression::None, ChecksumAlgorithm::Crc32c),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CopyError::Storage(e) if e.kind() == crate::storage::ErrorKind::Conflict),
        "{err}"
    );
    assert!(err.to_string().starts_with("store PG_VERSION: "), "{err}");
    assert_eq!(fs::read(out.path().join("PG_VERSION")).unwrap(), b"mine");
    assert_no_temporary_files(out.path());
    // A target that is a file.
    let file = out.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = copy_plan(&plan, &file, &CopyOptions::default(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

/// No object being written was left behind (the storage's temporary names).
fn assert_no_temporary_files(target: &Path) {
    let mut stack = vec![target.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".pgsafe-tmp"), "{}", e.path().display());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn torn_or_damaged_pg_control_is_an_error() {
    let fake = fake_pgdata("15");
    let plan = plan(&fake);
    let mut bad = crate::plan::tests::PG_CONTROL.to_vec();
    bad[100] ^= 0xff;
    fs::write(fake.pgdata.join("global/pg_control"), &bad).unwrap();
    let out = tempfile::tempdir().unwrap();
    let store = LocalBackend::open(out.path()).unwrap();
    let err = copy_control_file(&plan, &store, &CopyOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            CopyError::Control {
                source: ControlError::BadCrc { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("global/pg_control"), "{err}");
    // Restored: copied, compressed like every file.
    fs::write(
        fake.pgdata.join("global/pg_control"),
        crate::plan::tests::PG_CONTROL,
    )
    .unwrap();
    let o = CopyOptions {
        compression: Compression::Zstd { level: 1 },
        ..CopyOptions::default()
    };
    let f = copy_control_file(&plan, &store, &o).unwrap();
    assert_eq!(f.stored_path.to_str(), Some("global/pg_control.zst"));
    assert_eq!(f.size, 8192);
    assert_eq!(
        stored_content(out.path(), &f, o.compression),
        crate::plan::tests::PG_CONTROL
    );
}

#[test]
fn max_rate_copies_everything() {
    // The real thing completes (its pace is not asserted: no timing in tests).
    let fake = fake_pgdata("15");
    let plan = plan(&fake);
    let out = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        max_rate: Some(1 << 30),
        ..opts(2, Compression::None, ChecksumAlgorithm::Crc32c)
    };
    let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
    assert_eq!(report.files.len(), plan.files.len() + 1);
}

#[test]
fn modes_are_kept_for_files_and_directories() {
    let fake = fake_pgdata("15");
    fs::set_permissions(
        fake.pgdata.join("pg_xact"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let plan = plan(&fake);
    let out = tempfile::tempdir().unwrap();
    copy_plan(
        &plan,
        out.path(),
        &opts(2, Compression::None, ChecksumAlgorithm::None),
        &NoProgress,
    )
    .unwrap();
    let mode = |p: &str| fs::metadata(out.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("pg_xact"), 0o750);
    assert_eq!(mode("base"), 0o750);
    assert_eq!(mode("global/1262"), 0o640);
    let source_mode = fs::metadata(fake.pgdata.join("global/pg_control"))
        .unwrap()
        .mode();
    assert_eq!(mode("global/pg_control"), 0o600 | (source_mode & 0o777));
}

#[test]
fn a_panicking_worker_is_passed_on_not_waited_for() {
    // Range 0 of a compressed split file panics while another worker holds range 1's frame and
    // waits for its turn: the copy must end with the panic, not hang.
    let fake = fake_pgdata("15");
    let plan = plan(&fake);
    let hook = on_open("base/5/16384", |call| {
        if call == 0 {
            std::thread::sleep(Duration::from_millis(100));
            panic!("injected");
        }
    });
    let out = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        before_open: Some(&hook),
        ..opts(2, Compression::Lz4, ChecksumAlgorithm::Crc32c)
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        copy_plan(&plan, out.path(), &o, &NoProgress)
    }));
    assert!(result.is_err());
}

/// A relation file of `blocks` valid pages (a real heap page stamped with each block's
/// checksum), with the blocks in `bad` damaged.
fn relation(blocks: u32, bad: &[u32]) -> Vec<u8> {
    use crate::page::{BLCKSZ, checksum_page};
    let heap = include_bytes!("../../tests/data/heap-15-blocks-0-1");
    let mut out = Vec::with_capacity(blocks as usize * BLCKSZ);
    for b in 0..blocks {
        let mut p: [u8; BLCKSZ] = heap[..BLCKSZ].try_into().unwrap();
        p[100] = b as u8; // pages differ
        let c = checksum_page(&p, b);
        p[8..10].copy_from_slice(&c.to_ne_bytes());
        if bad.contains(&b) {
            p[5000] ^= 0x20;
        }
        out.extend_from_slice(&p);
    }
    out
}

#[test]
fn page_checksums_are_checked_in_every_copy_path() {
    let fake = fake_pgdata("15");
    // 300 blocks (2.3 MiB): split into ranges below; blocks 17 and 250 are corrupt.
    write(
        &fake.pgdata.join("base/1/16384"),
        &relation(300, &[17, 250]),
    );
    // A second segment: block numbers continue at RELSEG_SIZE (a copy to segment 1 would fail).
    let mut seg1 = Vec::new();
    for b in 0..2u32 {
        let mut p = relation(b + 1, &[])[b as usize * 8192..].to_vec();
        let c = crate::page::checksum_page(p.as_slice().try_into().unwrap(), 131_072 + b);
        p[8..10].copy_from_slice(&c.to_ne_bytes());
        seg1.extend_from_slice(&p);
    }
    write(&fake.pgdata.join("base/1/16384.1"), &seg1);
    let plan = plan(&fake);
    let pages = Some(PageCheckOptions {
        version: v("15"),
        relseg_size: crate::page::DEFAULT_RELSEG_SIZE,
    });
    for (compression, checksum, split) in [
        (Compression::None, ChecksumAlgorithm::Crc32c, MIB),
        (Compression::None, ChecksumAlgorithm::Sha256, MIB),
        (Compression::Lz4, ChecksumAlgorithm::Crc32c, MIB),
        (Compression::None, ChecksumAlgorithm::Crc32c, 100_000),
    ] {
        let target = tempfile::tempdir().unwrap();
        let o = CopyOptions {
            split_size: split,
            buffer_size: 10_000, // rounded up to whole pages
            pages,
            ..opts(3, compression, checksum)
        };
        let r = copy_plan(&plan, &target.path().join("b"), &o, &NoProgress).unwrap();
        let p = r.pages.expect("pages checked");
        let m = format!("{compression:?} {checksum:?} split {split}");
        let ours = p.corrupt.iter().find(|f| f.path == "base/1/16384");
        assert_eq!(ours.map(|f| f.blocks.clone()), Some(vec![17, 250]), "{m}");
        assert!(
            !p.corrupt.iter().any(|f| f.path == "base/1/16384.1"),
            "{m}: {p:?}"
        );
        // The fake's other relation files hold random bytes: caught; non-relation files are not
        // checked.
        assert!(p.corrupt.iter().any(|f| f.path == "global/1262"), "{m}");
        assert!(
            !p.corrupt
                .iter()
                .any(|f| f.path.ends_with("pg_filenode.map") || f.path.ends_with("PG_VERSION")),
            "{m}"
        );
        assert!(p.changed_during_copy.is_empty(), "{m}");
        assert!(p.pages_checked >= 302, "{m}");
        // The stored bytes are the source's.
        let f = r
            .files
            .iter()
            .find(|f| f.rel_path.as_bytes() == b"base/1/16384")
            .unwrap();
        assert_eq!(
            stored_content(&target.path().join("b"), f, compression),
            relation(300, &[17, 250])
        );
    }
    // Off: nothing checked.
    let target = tempfile::tempdir().unwrap();
    let r = copy_plan(
        &plan,
        &target.path().join("b"),
        &opts(2, Compression::None, ChecksumAlgorithm::Crc32c),
        &NoProgress,
    )
    .unwrap();
    assert!(r.pages.is_none());
}

#[test]
fn into_a_backend_without_local_files_ranges_are_appended_in_order() {
    use crate::storage::MemoryBackend;
    let fake = fake_pgdata("15");
    // 9 MiB + a bit: ranges of FRAME_SIZE appended in order (no positioned writes).
    let big = content(9 * MIB as usize + 12345, 42);
    write(&fake.pgdata.join("base/5/20000"), &big);
    let plan = plan(&fake);
    for c in [Compression::None, Compression::Lz4] {
        let store = MemoryBackend::new();
        let o = CopyOptions {
            split_size: 2 * MIB,
            ..opts(3, c, ChecksumAlgorithm::Crc32c)
        };
        let report = copy_plan_to(&plan, &store, &o, &NoProgress).unwrap();
        assert_eq!(report.files.len(), plan.files.len() + 1, "{c}");
        for f in &report.files {
            let name = ObjectName::from_rel_path(&f.stored_path).unwrap();
            let stored = store.get(&name, u64::MAX).unwrap();
            assert_eq!(f.stored_size, stored.len() as u64, "{}", f.rel_path);
            let mut back = Vec::new();
            c.decoder(&stored[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            let source =
                fs::read(&plan.file(f.rel_path.to_str().unwrap()).unwrap().source).unwrap();
            assert!(back == source, "{} with {c}", f.rel_path);
            assert_eq!(
                f.checksum,
                ChecksumAlgorithm::Crc32c.of(&source),
                "{}",
                f.rel_path
            );
        }
        // Only the files: folders are not objects.
        assert_eq!(store.list(None).unwrap().len(), report.files.len(), "{c}");
    }
}
