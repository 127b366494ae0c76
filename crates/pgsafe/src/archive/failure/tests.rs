use std::collections::BTreeMap;

use super::*;
use crate::archive::contents::Listed;
use crate::repo::testdata::ident;
use crate::storage::MemoryBackend;
use crate::types::{WalSegSize, WalSegment};

fn seg(n: u64) -> ArchiveFile {
    ArchiveFile::Segment(WalSegment::from_segno(
        TimelineId(1),
        n,
        WalSegSize::DEFAULT,
    ))
}

fn events(b: &MemoryBackend, cluster: &Ident) -> Vec<FailedPush> {
    recorded(b, cluster).unwrap()
}

#[test]
fn a_failing_archiver_writes_one_event_per_file_and_kind_however_often_it_retries() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::of_wal_dir(dir.path());
    let b = MemoryBackend::new();
    let c = ident("main");
    for i in 0..5 {
        let at = record(
            Some(&spool),
            Some(&b),
            "/r",
            &c,
            &seg(3),
            "io",
            &format!("try {i}"),
        );
        assert_eq!(at, RecordedIn::Repository);
    }
    record(
        Some(&spool),
        Some(&b),
        "/r",
        &c,
        &seg(3),
        "conflict",
        "other",
    );
    let ev = events(&b, &c);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let recs = spool_records(&spool, "/r", &c);
    assert_eq!(recs.len(), 2);
    let io = recs.iter().find(|(_, r)| r.error == "io").unwrap();
    assert_eq!(io.1.failures, 5);
    assert_eq!(io.1.message, "try 4");
    assert!(io.1.in_repository);
    // Another repository's or cluster's records are not these.
    assert!(spool_records(&spool, "/other", &c).is_empty());
    assert!(spool_records(&spool, "/r", &ident("other")).is_empty());
}

#[test]
fn a_failure_the_repository_cannot_take_waits_in_the_spool_for_the_next_push() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::of_wal_dir(dir.path());
    let b = MemoryBackend::new();
    let c = ident("main");
    for _ in 0..3 {
        assert_eq!(
            record(Some(&spool), None, "/r", &c, &seg(7), "io", "unreachable"),
            RecordedIn::Spool
        );
    }
    assert!(events(&b, &c).is_empty());
    assert_eq!(flush(&spool, &b, "/r", &c), 1);
    let ev = events(&b, &c);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].failures, 3);
    assert_eq!(ev[0].file, seg(7).to_string());
    assert!(
        spool_records(&spool, "/r", &c).is_empty(),
        "flushed records are removed"
    );
    assert_eq!(flush(&spool, &b, "/r", &c), 0);
    // Without a spool and a repository, nowhere (and no panic).
    assert_eq!(
        record(None, None, "/r", &c, &seg(8), "io", "x"),
        RecordedIn::Nowhere
    );
}

#[test]
fn merged_failures_take_the_spools_count_and_know_what_was_archived_since() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::of_wal_dir(dir.path());
    let b = MemoryBackend::new();
    let c = ident("main");
    for _ in 0..4 {
        record(
            Some(&spool),
            Some(&b),
            "/r",
            &c,
            &seg(2),
            "refused",
            "not ours",
        );
    }
    record(Some(&spool), None, "/r", &c, &seg(5), "io", "down");
    let repo = events(&b, &c);
    assert_eq!(repo.len(), 1);
    assert_eq!(repo[0].failures, 1);
    let local: Vec<FailureRecord> = spool_records(&spool, "/r", &c)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let name = |n: u64| {
        let s = seg(n).to_string();
        format!("main/wal/00000001/{}/{s}.zst", &s[8..16])
    };
    let listed = vec![Listed {
        name: name(2),
        size: 100,
        modified: Some(1),
    }];
    let contents = ArchiveContents::analyse(
        c.clone(),
        WalSegSize::DEFAULT,
        &listed,
        &BTreeMap::new(),
        Vec::new(),
    );
    let all = merge(repo, &local, &contents);
    assert_eq!(all.len(), 2, "{all:?}");
    let two = all.iter().find(|f| f.file == seg(2).to_string()).unwrap();
    assert_eq!(two.failures, 4, "the spool's count");
    assert_eq!(two.recorded_in, RecordedIn::Repository);
    assert!(two.archived_since);
    let five = all.iter().find(|f| f.file == seg(5).to_string()).unwrap();
    assert_eq!(five.recorded_in, RecordedIn::Spool);
    assert!(!five.archived_since);
    // Newest last.
    assert_eq!(all.last().unwrap().file, seg(5).to_string());
}

#[test]
fn a_push_failed_event_reads_back_and_a_bad_one_is_left_out() {
    let b = MemoryBackend::new();
    let c = ident("main");
    record(
        None,
        Some(&b),
        "/r",
        &c,
        &ArchiveFile::History(TimelineId(3)),
        "conflict",
        "m",
    );
    let ev = events(&b, &c);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].timeline, TimelineId(3));
    assert_eq!(ev[0].file, "00000003.history");
    // A timeline that is not the file's, or a name that is not a WAL file's: not used.
    for (file, tli) in [("00000003.history", 2), ("not-a-wal-file", 1)] {
        let e = Event {
            format: crate::repo::doc::REPO_FORMAT,
            time: format_time(1),
            host: "h".into(),
            pgsafe_version: "0".into(),
            what: EventKind::PushFailed {
                file: file.into(),
                timeline: TimelineId(tli),
                error: "io".into(),
                message: "m".into(),
                failed_at: format_time(1),
                failed_by: "h".into(),
                failures: 1,
            },
        };
        let back = Event::parse(&e.to_json()).unwrap();
        assert_eq!(back, e);
        assert!(from_event(&back).is_none(), "{file} {tli}");
    }
}

#[test]
fn a_long_message_is_cut_on_a_character_boundary() {
    let m = "é".repeat(MESSAGE_MAX);
    let c = cut(&m);
    assert!(c.len() <= MESSAGE_MAX + "…".len());
    assert!(c.ends_with('…'));
    assert_eq!(cut("short"), "short");
}
