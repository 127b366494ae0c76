use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::repo::testdata::{SYSID, ident, registration};
use crate::storage::MemoryBackend;

fn seg(tli: u32, n: u64) -> WalSegment {
    WalSegment::from_segno(TimelineId(tli), n, WalSegSize::DEFAULT)
}

fn gap(tli: u32, n: u64, sysid: u64) -> GapRecord {
    GapRecord::new(SystemId(sysid), seg(tli, n), format!("queue limit {n}"))
}

fn ranges(events: &[EventKind]) -> Vec<(u32, u64, u64)> {
    let n = |s: &WalSegment| s.segno(WalSegSize::DEFAULT).unwrap();
    events
        .iter()
        .map(|e| match e {
            EventKind::WalGap {
                timeline,
                first,
                last,
                ..
            } => (timeline.0, n(first), n(last)),
            other => panic!("not a gap: {other:?}"),
        })
        .collect()
}

#[test]
fn gaps_merge_into_runs_per_timeline() {
    let recs: Vec<GapRecord> = [(1, 5), (1, 3), (1, 4), (1, 9), (2, 10), (2, 11), (1, 4)]
        .into_iter()
        .map(|(t, n)| gap(t, n, SYSID))
        .collect();
    let ev = merge_gaps(&recs, WalSegSize::DEFAULT);
    assert_eq!(ranges(&ev), vec![(1, 3, 5), (1, 9, 9), (2, 10, 11)]);
    // Segment 0xFF of log 0 and 0 of log 1 are consecutive (16 MiB segments: 256 per log).
    let ev = merge_gaps(
        &[gap(1, 255, SYSID), gap(1, 256, SYSID)],
        WalSegSize::DEFAULT,
    );
    assert_eq!(ranges(&ev), vec![(1, 255, 256)]);
    assert!(merge_gaps(&[], WalSegSize::DEFAULT).is_empty());
}

proptest! {
    #[test]
    fn merged_gaps_cover_exactly_the_dropped_segments(
        segs in proptest::collection::vec((1u32..4, 0u64..600), 0..60)
    ) {
        let recs: Vec<GapRecord> = segs.iter().map(|&(t, n)| gap(t, n, SYSID)).collect();
        let ev = merge_gaps(&recs, WalSegSize::DEFAULT);
        let want: BTreeSet<(u32, u64)> = segs.iter().copied().collect();
        let mut got = BTreeSet::new();
        let rs = ranges(&ev);
        for w in rs.windows(2) {
            // Ranges are ordered and never touch (else they would have been merged).
            prop_assert!((w[0].0, w[0].2 + 1) < (w[1].0, w[1].1));
        }
        for (t, a, b) in rs {
            prop_assert!(a <= b);
            for n in a..=b {
                prop_assert!(got.insert((t, n)));
            }
        }
        prop_assert_eq!(got, want);
    }
}

fn wal_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let wal = d.path().join("pg_wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    (d, wal)
}

#[test]
fn an_acknowledgement_holds_only_for_the_same_bytes_and_binding() {
    let (_d, wal) = wal_dir();
    let spool = Spool::of_wal_dir(&wal);
    let file = ArchiveFile::Segment(seg(1, 7));
    let src = wal.join(file.to_string());
    fs::write(&src, vec![7u8; 4096]).unwrap();
    let b = Binding::new(Path::new("/repo"), &ident("main"), SystemId(SYSID));
    let sum = file_sum(&src).unwrap();
    assert_eq!(sum.size, 4096);

    spool.record_ack(&b, &file, "main/wal/x", sum).unwrap();
    assert!(spool.has_ack(&file));
    let acked = spool.take_ack(&b, &file, &src).unwrap();
    assert_eq!(acked.map(|a| a.object).as_deref(), Some("main/wal/x"));
    // Used once.
    assert!(!spool.has_ack(&file));
    assert_eq!(spool.take_ack(&b, &file, &src).unwrap(), None);

    // Same size, one byte changed: not trusted, and the record is gone.
    spool.record_ack(&b, &file, "main/wal/x", sum).unwrap();
    let mut bytes = vec![7u8; 4096];
    bytes[2000] = 8;
    fs::write(&src, &bytes).unwrap();
    assert_eq!(spool.take_ack(&b, &file, &src).unwrap(), None);
    assert!(!spool.has_ack(&file));

    // Another repository, cluster name or system identifier: not trusted.
    fs::write(&src, vec![7u8; 4096]).unwrap();
    for other in [
        Binding::new(Path::new("/other"), &ident("main"), SystemId(SYSID)),
        Binding::new(Path::new("/repo"), &ident("copy"), SystemId(SYSID)),
        Binding::new(Path::new("/repo"), &ident("main"), SystemId(SYSID + 1)),
    ] {
        spool.record_ack(&other, &file, "main/wal/x", sum).unwrap();
        assert_eq!(spool.take_ack(&b, &file, &src).unwrap(), None, "{other:?}");
    }
    // A record of another file renamed into place: not trusted.
    let other = ArchiveFile::Segment(seg(1, 8));
    spool.record_ack(&b, &other, "main/wal/y", sum).unwrap();
    fs::rename(
        spool.record_path(ACK_DIR, &other.to_string()),
        spool.record_path(ACK_DIR, &file.to_string()),
    )
    .unwrap();
    assert_eq!(spool.take_ack(&b, &file, &src).unwrap(), None);
    // Garbage: not trusted, no panic.
    spool.sub(ACK_DIR).unwrap();
    fs::write(
        spool.record_path(ACK_DIR, &file.to_string()),
        b"{\"format\":",
    )
    .unwrap();
    assert_eq!(spool.take_ack(&b, &file, &src).unwrap(), None);
}

/// An acknowledgement with the file's stamp does not read the file while the stamp is the
/// same (the look-ahead's point: no second pass over 16 MiB per acknowledgement); once the
/// stamp changed — rewritten, even with its modification time set back — the bytes decide.
#[test]
fn a_stamped_acknowledgement_reads_the_file_only_when_its_stamp_changed() {
    let (_d, wal) = wal_dir();
    let spool = Spool::of_wal_dir(&wal);
    let file = ArchiveFile::Segment(seg(1, 9));
    let src = wal.join(file.to_string());
    let bytes = vec![5u8; 8192];
    fs::write(&src, &bytes).unwrap();
    let b = Binding::new(Path::new("/repo"), &ident("main"), SystemId(SYSID));
    let sum = file_sum(&src).unwrap();
    let stamp = FileStamp::of(&src).unwrap();
    assert_eq!(stamp.size, 8192);

    // The record's CRC-32C is not the file's: only the stamp can accept it (no read).
    let wrong = FileSum {
        crc32c: sum.crc32c ^ 1,
        ..sum
    };
    spool
        .record_ack_stamped(&b, &file, "main/wal/x", wrong, Some(stamp))
        .unwrap();
    assert!(spool.take_ack(&b, &file, &src).unwrap().is_some());

    // Timestamps of a coarse-clock file system move once per tick (at most 10 ms): wait one,
    // so that the writes below change them.
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Rewritten with the same bytes: the stamp changed, the bytes are read and match.
    fs::write(&src, &bytes).unwrap();
    assert_ne!(FileStamp::of(&src).unwrap(), stamp);
    spool
        .record_ack_stamped(&b, &file, "main/wal/x", sum, Some(stamp))
        .unwrap();
    assert!(spool.take_ack(&b, &file, &src).unwrap().is_some());

    // One byte changed, same size, modification time set back to the recorded one: the
    // change time still differs, the bytes are read, and they do not match.
    let stamp = FileStamp::of(&src).unwrap();
    spool
        .record_ack_stamped(&b, &file, "main/wal/x", sum, Some(stamp))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut changed = bytes.clone();
    changed[4000] = 6;
    fs::write(&src, &changed).unwrap();
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(stamp.mtime as u64, stamp.mtime_nsec as u32);
    fs::File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let now = FileStamp::of(&src).unwrap();
    assert_eq!((now.mtime, now.mtime_nsec), (stamp.mtime, stamp.mtime_nsec));
    assert_eq!(spool.take_ack(&b, &file, &src).unwrap(), None);

    // Gone: nothing acknowledged.
    fs::write(&src, &bytes).unwrap();
    let stamp = FileStamp::of(&src).unwrap();
    spool
        .record_ack_stamped(&b, &file, "main/wal/x", sum, Some(stamp))
        .unwrap();
    fs::remove_file(&src).unwrap();
    assert_eq!(spool.take_ack(&b, &file, &src).unwrap(), None);
}

#[test]
fn gap_records_reach_the_repository_merged_and_leave_the_spool() {
    let (_d, wal) = wal_dir();
    let spool = Spool::of_wal_dir(&wal);
    let backend = MemoryBackend::new();
    let reg = registration();
    for n in [10, 11, 12, 20] {
        spool.record_gap(&gap(1, n, SYSID)).unwrap();
    }
    // A record of another cluster (a spool copied with a data folder) stays where it is.
    spool.record_gap(&gap(1, 30, SYSID + 1)).unwrap();
    assert_eq!(spool.pending_gaps().unwrap().len(), 5);

    let flushed = spool.flush_gaps(&backend, &ident("main"), &reg).unwrap();
    assert_eq!(ranges(&flushed.events), vec![(1, 10, 12), (1, 20, 20)]);
    assert_eq!(flushed.foreign.len(), 1, "{:?}", flushed.foreign);
    assert_eq!(spool.pending_gaps().unwrap().len(), 1);

    let mut stored = Vec::new();
    for o in backend.list(None).unwrap() {
        let bytes = backend.get(&o.name, 1 << 20).unwrap();
        stored.push(crate::repo::Event::parse(&bytes).unwrap().what);
    }
    stored.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(ranges(&stored), vec![(1, 10, 12), (1, 20, 20)]);

    // Nothing pending of ours: a second flush writes nothing.
    let again = spool.flush_gaps(&backend, &ident("main"), &reg).unwrap();
    assert!(again.events.is_empty());
}

#[test]
fn the_backlog_is_what_the_archiver_would_take_in_its_order() {
    let (_d, wal) = wal_dir();
    let st = wal.join("archive_status");
    for (name, ready) in [
        ("000000010000000000000003", true),
        ("000000010000000000000001", true),
        ("000000010000000000000002", false),
        ("00000002.history", true),
        ("000000010000000000000004", true),
    ] {
        if name != "000000010000000000000004" {
            fs::write(wal.join(name), vec![0u8; 100]).unwrap();
        }
        let status = if ready { "ready" } else { "done" };
        fs::write(st.join(format!("{name}.{status}")), b"").unwrap();
    }
    fs::write(st.join("junk.ready"), b"").unwrap();
    let b = scan_backlog(&wal).unwrap();
    let names: Vec<String> = b.ready.iter().map(|f| f.to_string()).collect();
    // The history file first; an orphan status (file 4 is gone) and junk left out.
    assert_eq!(
        names,
        [
            "00000002.history",
            "000000010000000000000001",
            "000000010000000000000003"
        ]
    );
    assert_eq!(b.bytes, 300);
    assert!(b.oldest_since.is_some());

    let spool = Spool::of_wal_dir(&wal);
    let s1 = spool.update_status(&b, 2, None);
    assert_eq!(s1.ready_files, 3);
    assert!(s1.behind_since.is_some(), "3 waiting, 2 per push: behind");
    let s2 = spool.update_status(&b, 4, Some(1 << 30));
    assert_eq!(s2.behind_since, None, "a push takes them all: keeping up");
    assert_eq!(read_status(&wal).unwrap(), Some(s2));
}
