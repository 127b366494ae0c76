use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::repo::doc::{Event, EventKind, REPO_FORMAT};
use crate::storage::{Backend, MemoryBackend, ObjectName, PutOptions};
use crate::types::Lsn;
use crate::wal::HistoryEntry;

const MB: u64 = 1024 * 1024;

fn size() -> WalSegSize {
    WalSegSize::new(MB).unwrap()
}

fn cluster() -> Ident {
    Ident::new("main").unwrap()
}

fn seg(tli: u32, segno: u64) -> WalSegment {
    WalSegment::from_segno(TimelineId(tli), segno, size())
}

/// The object name the archive keeps `file` under.
fn key(file: &str) -> String {
    let (f, c) = ArchiveFile::parse_stored(file).unwrap();
    f.object_name(&cluster(), c).unwrap().to_string()
}

fn listed(name: String, size: u64, modified: Option<i64>) -> Listed {
    Listed {
        name,
        size,
        modified,
    }
}

fn segments(tli: u32, segnos: impl IntoIterator<Item = u64>) -> Vec<Listed> {
    segnos
        .into_iter()
        .map(|s| listed(key(&seg(tli, s).to_string()), MB, Some(1000 + s as i64)))
        .collect()
}

fn history(tli: u32, entries: &[(u32, u64)]) -> TimelineHistory {
    let entries = entries
        .iter()
        .map(|&(parent, sw)| HistoryEntry {
            parent_tli: TimelineId(parent),
            switchpoint: Lsn(sw),
            reason: b"no recovery target specified".to_vec(),
        })
        .collect();
    TimelineHistory::new(TimelineId(tli), entries).unwrap()
}

type Histories = BTreeMap<(TimelineId, String), Result<Vec<u8>, String>>;

/// Contents from segment listings plus the given history files.
fn contents(mut list: Vec<Listed>, hist: &[TimelineHistory]) -> ArchiveContents {
    let mut histories: Histories = BTreeMap::new();
    for h in hist {
        let name = key(&h.tli().history_file_name());
        list.push(listed(name.clone(), h.as_bytes().len() as u64, None));
        histories.insert((h.tli(), name), Ok(h.as_bytes().to_vec()));
    }
    ArchiveContents::analyse(cluster(), size(), &list, &histories, Vec::new())
}

#[test]
fn runs_partials_histories_and_newest_time() {
    let mut list = segments(1, [1, 2, 3, 7, 8]);
    list.push(listed(
        key(&format!("{}.partial", seg(1, 9))),
        10,
        Some(5000),
    ));
    list.push(listed(
        key(&format!("{}.00000028.backup", seg(1, 2))),
        300,
        Some(900),
    ));
    // The same segment again, compressed: counted once.
    list.push(listed(key(&format!("{}.zst", seg(1, 3))), 4000, Some(1)));
    let h2 = history(2, &[(1, 9 * MB + 5)]);
    let mut all = list.clone();
    all.extend(segments(2, [9, 10]));
    let c = contents(all, std::slice::from_ref(&h2));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let t1 = &c.timelines[&TimelineId(1)];
    assert_eq!(
        t1.runs,
        vec![Run { first: 1, last: 3 }, Run { first: 7, last: 8 }]
    );
    assert_eq!(t1.partials, vec![seg(1, 9)]);
    assert_eq!(t1.backup_histories, vec![(seg(1, 2), 40)]);
    let t2 = &c.timelines[&TimelineId(2)];
    assert_eq!(t2.history, Some(HistoryState::Parsed { history: h2 }));
    assert_eq!(c.newest.as_ref().map(|n| n.0), Some(5000));
    assert_eq!(c.newest_timeline(), Some(TimelineId(2)));
}

#[test]
fn odd_objects_are_reported_never_used() {
    let mut list = segments(1, [1]);
    // Wrong size, misplaced (timeline 2's segment in timeline 1's folder; wrong log folder),
    // unknown names, a name not valid for 1 MB segments (only 0x1000 per log).
    list.push(listed(key(&seg(1, 2).to_string()), MB - 1, None));
    list.push(listed(
        format!("main/wal/00000001/00000000/{}", seg(2, 3)),
        MB,
        None,
    ));
    list.push(listed(
        format!("main/wal/00000001/00000001/{}", seg(1, 4)),
        MB,
        None,
    ));
    list.push(listed("main/wal/00000001/notes.txt".into(), 3, None));
    list.push(listed(
        "main/wal/00000001/00000000/000000010000000000001000".into(),
        MB,
        None,
    ));
    list.push(listed(key("00000003.history"), 3, None));
    let mut histories: Histories = BTreeMap::new();
    histories.insert(
        (TimelineId(3), key("00000003.history")),
        Ok(b"1\tnot-an-lsn\tx\n".to_vec()),
    );
    let c = ArchiveContents::analyse(cluster(), size(), &list, &histories, Vec::new());
    let kinds: Vec<ProblemKind> = c.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ProblemKind::BrokenHistory,
            ProblemKind::WrongSize,
            ProblemKind::UnknownName,
            ProblemKind::UnknownName,
            ProblemKind::Misplaced,
            ProblemKind::Misplaced,
        ],
        "{:#?}",
        c.problems
    );
    let t1 = &c.timelines[&TimelineId(1)];
    assert_eq!(t1.runs, vec![Run { first: 1, last: 1 }]);
    assert!(!c.timelines.contains_key(&TimelineId(2)));
    assert_eq!(c.history_of(TimelineId(3)), None);
}

/// A promotion: timeline 1 ran to the middle of segment 5, timeline 2 from there.
fn promoted() -> (Vec<Listed>, TimelineHistory) {
    let sw = 5 * MB + 4096;
    let mut list = segments(1, 1..=5);
    list.extend(segments(2, 5..=8));
    (list, history(2, &[(1, sw)]))
}

#[test]
fn covers_follows_a_promotion() {
    let (list, h2) = promoted();
    let c = contents(list.clone(), std::slice::from_ref(&h2));
    let start = (TimelineId(1), Lsn(MB + 40));
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(8 * MB + 10)), &h2),
        Ok(())
    );
    // Past what was archived.
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(9 * MB)), &h2),
        Err(Missing::Segment { segment: seg(2, 9) })
    );
    // A backup that stopped on timeline 2, exactly at a segment boundary: segment 8 is the
    // last it needs.
    assert_eq!(
        c.covers(start, RecoveryEnd::Before(Lsn(9 * MB)), &h2),
        Ok(())
    );
    // Without timeline 2's copy of the switch segment: the child's copy is what recovery
    // reads past the switch, the parent's serves only before it.
    let without: Vec<Listed> = list
        .iter()
        .filter(|l| !l.name.ends_with(&seg(2, 5).to_string()))
        .cloned()
        .collect();
    let c = contents(without, std::slice::from_ref(&h2));
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(6 * MB)), &h2),
        Err(Missing::Segment { segment: seg(2, 5) })
    );
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(5 * MB + 4095)), &h2),
        Ok(())
    );
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(5 * MB + 4096)), &h2),
        Err(Missing::Segment { segment: seg(2, 5) })
    );
    // Timeline 1's segments after the switch never count for timeline 2.
    let mut other = segments(1, 1..=8);
    other.extend(segments(2, [5]));
    let c = contents(other, std::slice::from_ref(&h2));
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(7 * MB)), &h2),
        Err(Missing::Segment { segment: seg(2, 6) })
    );
}

#[test]
fn covers_needs_the_target_history_and_a_start_on_it() {
    let (list, h2) = promoted();
    let c = contents(list.clone(), &[]);
    let start = (TimelineId(1), Lsn(MB + 40));
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(7 * MB)), &h2),
        Err(Missing::History {
            timeline: TimelineId(2)
        })
    );
    let c = contents(list, std::slice::from_ref(&h2));
    // Timeline 1 past where it ended in timeline 2's history: another branch.
    assert_eq!(
        c.covers(
            (TimelineId(1), Lsn(6 * MB)),
            RecoveryEnd::Through(Lsn(7 * MB)),
            &h2
        ),
        Err(Missing::NotInHistory {
            timeline: TimelineId(1),
            lsn: Lsn(6 * MB),
            history: TimelineId(2)
        })
    );
    assert_eq!(
        c.covers(start, RecoveryEnd::Through(Lsn(MB)), &h2),
        Err(Missing::EndBeforeStart {
            start: Lsn(MB + 40),
            end: Lsn(MB)
        })
    );
    // A start on timeline 2 needs no history from the archive beyond its own.
    assert_eq!(
        c.covers(
            (TimelineId(2), Lsn(6 * MB)),
            RecoveryEnd::Before(Lsn(6 * MB + 1)),
            &h2
        ),
        Ok(())
    );
}

#[test]
fn reach_window_and_gaps() {
    let (mut list, h2) = promoted();
    // A hole on timeline 2 (segment 9 missing, 10 present).
    list.extend(segments(2, [10]));
    let c = contents(list, std::slice::from_ref(&h2));
    let r = c.reach((TimelineId(1), Lsn(2 * MB)), &h2).unwrap();
    assert_eq!(r.end, Lsn(9 * MB));
    assert_eq!(r.last, Some(seg(2, 8)));
    assert_eq!(r.last_time, Some(1008));
    assert_eq!(r.missing, seg(2, 9));
    assert!(r.hole);
    assert_eq!(
        c.gaps(),
        vec![Gap {
            timeline: TimelineId(2),
            first: seg(2, 9),
            last: seg(2, 9),
            source: GapSource::Hole
        }]
    );
    let backup = |id: &str, start: u64, stop: u64| WindowBackup {
        id: id.into(),
        start_tli: TimelineId(1),
        start_lsn: Lsn(start),
        stop_tli: TimelineId(1),
        stop_lsn: Lsn(stop),
        finished_at: Some(stop as i64),
        wal_in_backup: false,
    };
    // "a" starts before the archive's first segment (and has no WAL of its own): not in the
    // window; "b" is the oldest that is.
    let backups = [
        backup("a", 10, 20),
        backup("c", 3 * MB, 3 * MB + 9),
        backup("b", MB + 1, 2 * MB),
    ];
    let w = c.window(&backups, &h2).unwrap();
    assert_eq!(w.backup, "b");
    assert_eq!(w.from.lsn, Lsn(2 * MB));
    assert_eq!(w.to.lsn, Lsn(9 * MB));
    assert_eq!(w.to.timeline, TimelineId(2));
    assert_eq!(w.to.time, Some(1008));
    assert!(w.ends_at_hole);
    // With its WAL in the backup, "a" only needs the archive from its stop on: segment 0 is
    // not there either.
    let mut a = backup("a", 10, 20);
    a.wal_in_backup = true;
    assert_eq!(c.window(&[a.clone()], &h2).map(|w| w.to.lsn), Some(Lsn(20)));
    a.stop_lsn = Lsn(MB + 5);
    assert_eq!(c.window(&[a], &h2).map(|w| w.to.lsn), Some(Lsn(9 * MB)));
}

#[test]
fn gaps_around_a_switch_and_recorded_gaps() {
    // Timeline 1 stops at 3 although it ran to the middle of 5; timeline 2's first present
    // segment is 7.
    let mut list = segments(1, 1..=3);
    list.extend(segments(2, 7..=8));
    let h2 = history(2, &[(1, 5 * MB + 4096)]);
    let mut histories: Histories = BTreeMap::new();
    let hname = key("00000002.history");
    list.push(listed(hname.clone(), 9, None));
    histories.insert((TimelineId(2), hname), Ok(h2.as_bytes().to_vec()));
    let ev = Event {
        format: REPO_FORMAT,
        time: "2026-01-01T00:00:00.000000Z".into(),
        host: "db1".into(),
        pgsafe_version: "0".into(),
        what: EventKind::WalGap {
            timeline: TimelineId(2),
            first: seg(2, 9),
            last: seg(2, 12),
            reason: "push queue over its limit".into(),
            dropped_at: "2026-01-01T00:00:00.000000Z".into(),
            dropped_by: "db1".into(),
        },
    };
    let events = vec![
        ("main/events/x-wal-gap-1.json".to_owned(), Ok(ev)),
        ("main/events/x-wal-gap-2.json".to_owned(), Err("bad".into())),
    ];
    let c = ArchiveContents::analyse(cluster(), size(), &list, &histories, events);
    let gaps: Vec<(WalSegment, WalSegment, &str)> = c
        .gaps()
        .iter()
        .map(|g| {
            let s = match g.source {
                GapSource::Hole => "hole",
                GapSource::Switch { .. } => "switch",
                GapSource::Recorded { .. } => "recorded",
            };
            (g.first, g.last, s)
        })
        .collect();
    assert_eq!(
        gaps,
        vec![
            (seg(1, 4), seg(1, 4), "switch"),
            (seg(2, 5), seg(2, 6), "switch"),
            (seg(2, 9), seg(2, 12), "recorded"),
        ]
    );
    assert_eq!(c.problems.len(), 1);
    assert_eq!(c.problems[0].kind, ProblemKind::UnreadableEvent);
}

#[test]
fn load_reads_the_archive_of_a_backend() {
    let b = MemoryBackend::new();
    let put = |name: &str, bytes: &[u8]| {
        b.put(
            &ObjectName::new(name).unwrap(),
            bytes,
            PutOptions::default(),
        )
        .unwrap();
    };
    for s in 1..=3 {
        put(&key(&format!("{}.zst", seg(1, s))), b"compressed");
    }
    put(&key(&seg(2, 4).to_string()), &vec![0u8; MB as usize]);
    let h2 = history(2, &[(1, 4 * MB)]);
    put(&key("00000002.history"), h2.as_bytes());
    put("main/wal/00000002/junk", b"x");
    let reg = Registration {
        format: REPO_FORMAT,
        cluster: cluster(),
        system_identifier: crate::types::SystemId(7),
        server_version: crate::types::PgVersion::from_num(170000).unwrap(),
        wal_segment_size: size(),
        pgdata: "/x".into(),
        registered_at: "2026-01-01T00:00:00Z".into(),
        pgsafe_version: "0".into(),
    };
    crate::repo::record_event(
        &b,
        &cluster(),
        EventKind::WalGap {
            timeline: TimelineId(2),
            first: seg(2, 6),
            last: seg(2, 6),
            reason: "test".into(),
            dropped_at: "2026-01-01T00:00:00.000000Z".into(),
            dropped_by: "db1".into(),
        },
    )
    .unwrap();
    crate::repo::record_event(
        &b,
        &cluster(),
        EventKind::Pin {
            backup: Ident::new("A").unwrap(),
        },
    )
    .unwrap();
    let c = ArchiveContents::load(&b, &cluster(), &reg).unwrap();
    assert_eq!(
        c.timelines[&TimelineId(1)].runs,
        vec![Run { first: 1, last: 3 }]
    );
    assert_eq!(c.history_of(TimelineId(2)), Some(h2.clone()));
    assert_eq!(c.recorded_gaps.len(), 1);
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert_eq!(
        c.covers(
            (TimelineId(1), Lsn(MB)),
            RecoveryEnd::Before(Lsn(5 * MB)),
            &h2
        ),
        Ok(())
    );
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// The segments recovery reads, one by one, as `XLogFileReadAnyTLI` tries them: for segment
/// `s`, the timelines of the history that began at or before `s`, newest first; a file serves
/// when it is there and its timeline wrote every byte needed from it (the newest candidate
/// always did). Returns the first segment no candidate serves, named with the newest
/// candidate's timeline.
fn oracle(
    present: &BTreeSet<(u32, u64)>,
    history: &TimelineHistory,
    from: u64,
    last_byte: u64,
) -> Option<WalSegment> {
    let spans = history.spans();
    for s in from / MB..=last_byte / MB {
        let hi = last_byte.min(s * MB + MB - 1);
        let mut candidates = spans.iter().rev().filter(|sp| sp.begin.0 / MB <= s);
        let newest = candidates.clone().next().unwrap();
        let served = candidates
            .any(|sp| present.contains(&(sp.tli.0, s)) && sp.end.is_none_or(|e| hi < e.0));
        if !served {
            return Some(seg(newest.tli.0, s));
        }
    }
    None
}

fn scenario() -> impl Strategy<Value = (BTreeSet<(u32, u64)>, Vec<u64>, u64, u64)> {
    (
        proptest::collection::btree_set((1u32..=3, 0u64..12), 0..30),
        proptest::collection::vec(0u64..12 * MB, 2),
        0u64..12 * MB,
        0u64..12 * MB,
    )
}

proptest! {
    #[test]
    fn covers_agrees_with_reading_segment_by_segment((present, mut switches, a, b) in scenario()) {
        switches.sort();
        let h3 = history(3, &[(1, switches[0]), (2, switches[1])]);
        let h2 = history(2, &[(1, switches[0])]);
        let list: Vec<Listed> = present
            .iter()
            .map(|&(t, s)| listed(key(&seg(t, s).to_string()), MB, None))
            .collect();
        let c = contents(list, &[h2, h3.clone()]);
        let (from, to) = (a.min(b), a.max(b));
        let tli = h3.timeline_of(Lsn(from));
        let got = c.covers((tli, Lsn(from)), RecoveryEnd::Through(Lsn(to)), &h3);
        let want = oracle(&present, &h3, from, to);
        prop_assert_eq!(got, want.map_or(Ok(()), |segment| Err(Missing::Segment { segment })));
        // reach ends exactly where covering stops.
        let r = c.reach((tli, Lsn(from)), &h3).unwrap();
        let through = r.end.0.checked_sub(1).filter(|&e| e >= from);
        if let Some(e) = through {
            prop_assert_eq!(oracle(&present, &h3, from, e), None);
        }
        prop_assert!(oracle(&present, &h3, from, r.end.0).is_some());
    }

    #[test]
    fn analysis_never_panics_and_accounts_for_every_object(
        names in proptest::collection::vec(
            ("[0-9A-Fa-z./_]{0,40}", 0u64..3 * MB, proptest::option::of(any::<i64>())), 0..40),
        history_bytes in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut list: Vec<Listed> = names
            .into_iter()
            .map(|(n, size, t)| listed(format!("main/wal/{n}"), size, t))
            .collect();
        list.extend(segments(1, [0, 1, 2]));
        let hname = key("00000002.history");
        list.push(listed(hname.clone(), 1, None));
        let mut histories: Histories = BTreeMap::new();
        histories.insert((TimelineId(2), hname), Ok(history_bytes));
        let c = ArchiveContents::analyse(cluster(), size(), &list, &histories, Vec::new());
        let used: u64 = c.timelines.values().map(|t| t.objects).sum();
        // Each object is used or reported (a broken history file both: it is the timeline's).
        let reported = c.problems.iter().filter(|p| p.kind != ProblemKind::BrokenHistory).count();
        prop_assert_eq!(used + reported as u64, list.len() as u64);
        let _ = c.gaps();
        if let Some(t) = c.newest_timeline()
            && let Some(h) = c.history_of(t)
        {
            let _ = c.reach((TimelineId(1), Lsn(0)), &h);
            let _ = c.covers((TimelineId(1), Lsn(0)), RecoveryEnd::Through(Lsn(u64::MAX)), &h);
        }
    }
}

/// A recorded gap whose segments arrived later (a dropped segment pushed again after all) is
/// closed where they are: only the segments still missing are a gap, so info, check, metrics
/// and expire never report WAL that is in the archive as dropped.
#[test]
fn a_recorded_gap_is_closed_where_its_segments_arrived() {
    let gap_event = |first: u64, last: u64| Event {
        format: REPO_FORMAT,
        time: "2026-01-01T00:00:00.000000Z".into(),
        host: "db1".into(),
        pgsafe_version: "0".into(),
        what: EventKind::WalGap {
            timeline: TimelineId(1),
            first: seg(1, first),
            last: seg(1, last),
            reason: "queue limit".into(),
            dropped_at: "2026-01-01T00:00:00.000000Z".into(),
            dropped_by: "db1".into(),
        },
    };
    let recorded = |present: &[u64], first: u64, last: u64| -> Vec<(u64, u64)> {
        let mut list = Vec::new();
        for &s in present {
            list.extend(segments(1, s..=s));
        }
        let c = ArchiveContents::analyse(
            cluster(),
            size(),
            &list,
            &BTreeMap::new(),
            vec![("e".to_owned(), Ok(gap_event(first, last)))],
        );
        c.gaps()
            .into_iter()
            .filter(|g| matches!(g.source, GapSource::Recorded { .. }))
            .map(|g| {
                (
                    g.first.segno(size()).unwrap(),
                    g.last.segno(size()).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(recorded(&[1, 2], 9, 12), vec![(9, 12)]);
    assert_eq!(recorded(&[8, 10, 12, 13], 9, 12), vec![(9, 9), (11, 11)]);
    assert_eq!(recorded(&[9, 10, 11, 12], 9, 12), Vec::<(u64, u64)>::new());
    assert_eq!(recorded(&[9], 9, 9), Vec::<(u64, u64)>::new());
    assert_eq!(recorded(&[9], 9, 10), vec![(10, 10)]);
}

proptest::proptest! {
    /// Whatever arrived, the recorded gaps reported are exactly the recorded segments not in
    /// the archive.
    #[test]
    fn recorded_gaps_are_the_recorded_segments_still_missing(
        present in proptest::collection::btree_set(0u64..40, 0..30),
        first in 0u64..40,
        len in 0u64..20,
    ) {
        let last = first + len;
        let mut list = Vec::new();
        for &s in &present {
            list.extend(segments(1, s..=s));
        }
        let ev = Event {
            format: REPO_FORMAT,
            time: "2026-01-01T00:00:00.000000Z".into(),
            host: "h".into(),
            pgsafe_version: "0".into(),
            what: EventKind::WalGap {
                timeline: TimelineId(1),
                first: seg(1, first),
                last: seg(1, last),
                reason: "r".into(),
                dropped_at: "2026-01-01T00:00:00.000000Z".into(),
                dropped_by: "h".into(),
            },
        };
        let c = ArchiveContents::analyse(cluster(), size(), &list, &BTreeMap::new(), vec![("e".into(), Ok(ev))]);
        let mut got = std::collections::BTreeSet::new();
        for g in c.gaps().into_iter().filter(|g| matches!(g.source, GapSource::Recorded { .. })) {
            for s in g.first.segno(size()).unwrap()..=g.last.segno(size()).unwrap() {
                proptest::prop_assert!(got.insert(s), "{} twice", s);
            }
        }
        let want: std::collections::BTreeSet<u64> =
            (first..=last).filter(|s| !present.contains(s)).collect();
        proptest::prop_assert_eq!(got, want);
    }
}
