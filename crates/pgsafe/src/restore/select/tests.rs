use super::*;
use crate::wal::HistoryEntry;
use proptest::prelude::*;

const T1: TimelineId = TimelineId(1);
const T2: TimelineId = TimelineId(2);
const T3: TimelineId = TimelineId(3);

fn b(id: &str, tli: TimelineId, start: u64, stop: u64, finished_at: i64) -> Candidate {
    Candidate {
        id: id.into(),
        start_lsn: Lsn(start),
        start_tli: tli,
        stop_lsn: Lsn(stop),
        stop_tli: tli,
        finished_at,
        stop_time_us: None,
        failed_verification: false,
    }
}

fn hist(tli: TimelineId, entries: &[(u32, u64)]) -> TimelineHistory {
    let e = entries
        .iter()
        .map(|&(p, sw)| HistoryEntry {
            parent_tli: TimelineId(p),
            switchpoint: Lsn(sw),
            reason: b"no recovery target specified".to_vec(),
        })
        .collect();
    TimelineHistory::new(tli, e).unwrap()
}

fn at(s: &str) -> PitrTarget {
    PitrTarget::Time(parse_target_time(s).unwrap())
}

fn secs(s: &str) -> i64 {
    parse_target_time(s).unwrap().timestamp()
}

fn pick(c: &[Candidate], t: &PitrTarget, g: TargetTimeline, tl: &Timelines) -> Selection {
    select(c, None, t, g, tl, None).unwrap()
}

/// With the server's clock at the stop recorded, a target from that microsecond on is reached
/// (no transaction before the stop point ended later), one before it is not — whatever the
/// whole-second finish time says.
#[test]
fn a_time_target_is_reachable_from_the_servers_stop_time_on() {
    let stop = parse_target_time("2026-12-01 10:00:00.250000+00").unwrap();
    let c = [Candidate {
        stop_time_us: Some(stop.timestamp_micros()),
        ..b("A", T1, 0x100_0028, 0x100_0100, stop.timestamp())
    }];
    let tl = Timelines::default();
    for ok in [
        "2026-12-01 10:00:00.250000+00",
        "2026-12-01 10:00:00.250001+00",
    ] {
        assert_eq!(
            pick(&c, &at(ok), TargetTimeline::Latest, &tl).backup.id,
            "A",
            "{ok}"
        );
    }
    for early in ["2026-12-01 10:00:00.249999+00", "2026-12-01 09:59:59+00"] {
        match select(&c, None, &at(early), TargetTimeline::Latest, &tl, None) {
            Err(SelectError::Unreachable { skipped, .. }) => {
                assert!(skipped[0].why.contains("the server's clock"), "{skipped:?}")
            }
            other => panic!("{early}: {other:?}"),
        }
    }
}

#[test]
fn a_time_picks_the_newest_backup_consistent_before_it() {
    let c = [
        b(
            "A",
            T1,
            0x100_0028,
            0x100_0100,
            secs("2026-12-01 10:00:00Z"),
        ),
        b(
            "B",
            T1,
            0x300_0028,
            0x300_0100,
            secs("2026-12-02 10:00:00Z"),
        ),
    ];
    let tl = Timelines::default();
    let s = pick(
        &c,
        &at("2026-12-01 12:00:00+00"),
        TargetTimeline::Latest,
        &tl,
    );
    assert_eq!(s.backup.id, "A");
    assert_eq!(s.timeline, T1);
    assert_eq!(s.skipped.len(), 1);
    assert!(s.skipped[0].why.contains("not before the target"), "{s:?}");
    assert_eq!(
        pick(&c, &at("2026-12-03 00:00:00Z"), TargetTimeline::Latest, &tl)
            .backup
            .id,
        "B"
    );
    // The finish time is in whole seconds: a target in the same second is not safe.
    let same = at("2026-12-02 10:00:00.900+00");
    assert_eq!(pick(&c, &same, TargetTimeline::Latest, &tl).backup.id, "A");
    let next = at("2026-12-02 10:00:01+00");
    assert_eq!(pick(&c, &next, TargetTimeline::Latest, &tl).backup.id, "B");
    // Before every backup: refused, each backup saying why.
    let e = select(
        &c,
        None,
        &at("2026-11-30 00:00:00Z"),
        TargetTimeline::Latest,
        &tl,
        None,
    )
    .unwrap_err();
    let SelectError::Unreachable { skipped, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        skipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["B", "A"]
    );
    assert!(e.to_string().contains("no backup can reach"), "{e}");
}

#[test]
fn an_lsn_picks_the_newest_backup_ending_at_or_before_it() {
    let c = [
        b("A", T1, 0x100_0028, 0x100_0100, 1),
        b("B", T1, 0x300_0028, 0x300_0100, 2),
    ];
    let tl = Timelines::default();
    let t = |l| PitrTarget::Lsn(Lsn(l));
    assert_eq!(
        pick(&c, &t(0x300_00ff), TargetTimeline::Latest, &tl)
            .backup
            .id,
        "A"
    );
    assert_eq!(
        pick(&c, &t(0x300_0100), TargetTimeline::Latest, &tl)
            .backup
            .id,
        "B"
    );
    assert!(matches!(
        select(&c, None, &t(0x100_00ff), TargetTimeline::Latest, &tl, None),
        Err(SelectError::Unreachable { .. })
    ));
}

#[test]
fn failed_verification_is_passed_over_unless_named() {
    let mut c = [
        b("A", T1, 0x100_0028, 0x100_0100, 1),
        b("B", T1, 0x300_0028, 0x300_0100, 2),
    ];
    c[1].failed_verification = true;
    let tl = Timelines::default();
    let s = pick(&c, &PitrTarget::Immediate, TargetTimeline::Latest, &tl);
    assert_eq!(s.backup.id, "A");
    assert_eq!(s.skipped[0].why, "failed its latest verification");
    let s = select(
        &c,
        Some("B"),
        &PitrTarget::Immediate,
        TargetTimeline::Latest,
        &tl,
        None,
    );
    assert_eq!(s.unwrap().backup.id, "B");
}

#[test]
fn a_named_backup_must_reach_the_target() {
    let c = [
        b("A", T1, 0x100_0028, 0x100_0100, 1),
        b("B", T1, 0x300_0028, 0x300_0100, 2),
    ];
    let tl = Timelines::default();
    let t = PitrTarget::Lsn(Lsn(0x200_0000));
    let e = select(&c, Some("B"), &t, TargetTimeline::Latest, &tl, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("B ends at 0/3000100, after the target"),
        "{e}"
    );
    let s = select(&c, Some("A"), &t, TargetTimeline::Latest, &tl, None).unwrap();
    assert_eq!(s.why, "backup A was named");
    assert_eq!(
        select(&c, Some("C"), &t, TargetTimeline::Latest, &tl, None),
        Err(SelectError::NoSuchBackup("C".into()))
    );
    assert_eq!(
        select(&[], None, &t, TargetTimeline::Latest, &tl, None),
        Err(SelectError::NoBackups)
    );
}

#[test]
fn recovery_follows_a_promotion_and_keeps_the_backup_on_the_parent() {
    // Timeline 2 began at 0/5000000; A on timeline 1 before it, B on timeline 2.
    let c = [
        b("A", T1, 0x100_0028, 0x300_0000, 1),
        b("B", T2, 0x600_0028, 0x600_0100, 2),
    ];
    let tl = Timelines::new([hist(T2, &[(1, 0x500_0000)])]);
    let s = pick(
        &c,
        &PitrTarget::Lsn(Lsn(0x580_0000)),
        TargetTimeline::Latest,
        &tl,
    );
    assert_eq!((s.backup.id.as_str(), s.timeline), ("A", T2));
    assert!(s.timeline_why.contains("latest"), "{}", s.timeline_why);
    // current: A's own timeline 1.
    let s = pick(
        &c,
        &PitrTarget::Lsn(Lsn(0x580_0000)),
        TargetTimeline::Current,
        &tl,
    );
    assert_eq!((s.backup.id.as_str(), s.timeline), ("A", T1));
    // Timeline 1 only: B (timeline 2) is not on it.
    let s = pick(&c, &PitrTarget::Immediate, TargetTimeline::Id(T1), &tl);
    assert_eq!(s.backup.id, "A");
    assert!(
        s.skipped[0]
            .why
            .contains("not part of timeline 1's history"),
        "{s:?}"
    );
    // A backup of timeline 1 that went on past the switch is not on timeline 2's past.
    let late = [b("L", T1, 0x100_0028, 0x500_0100, 1)];
    assert!(matches!(
        select(
            &late,
            None,
            &PitrTarget::Immediate,
            TargetTimeline::Id(T2),
            &tl,
            None
        ),
        Err(SelectError::Unreachable { .. })
    ));
    // A timeline the archive has no history of.
    assert_eq!(
        select(
            &c,
            None,
            &PitrTarget::Immediate,
            TargetTimeline::Id(T3),
            &tl,
            None
        ),
        Err(SelectError::NoSuchTimeline(T3))
    );
}

#[test]
fn latest_is_the_branch_that_descends_from_the_backup_never_the_higher_number() {
    // Timeline 2 (the live primary after a failover at 0/5000000) and timeline 3 (a copy
    // restored to 0/4000000 and promoted, which archived here), both children of 1.
    let tl = Timelines::new([hist(T2, &[(1, 0x500_0000)]), hist(T3, &[(1, 0x400_0000)])]);
    assert_eq!(tl.newest_by_number(T2), T3);
    let on2 = [b("B", T2, 0x600_0028, 0x600_0100, 2)];
    let s = pick(&on2, &PitrTarget::Immediate, TargetTimeline::Latest, &tl);
    assert_eq!(s.timeline, T2);
    assert!(
        s.timeline_why.contains("would have followed timeline 3"),
        "{}",
        s.timeline_why
    );
    // A backup of timeline 1 from before both forks: two branches, refused with both.
    let on1 = [b("A", T1, 0x100_0028, 0x200_0000, 1)];
    let e = select(
        &on1,
        None,
        &PitrTarget::Immediate,
        TargetTimeline::Latest,
        &tl,
        None,
    )
    .unwrap_err();
    let SelectError::DivergingTimelines { branches, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        branches.iter().map(|b| b.timeline).collect::<Vec<_>>(),
        [T2, T3]
    );
    let text = e.to_string();
    assert!(
        text.contains("timeline 3 (left timeline 1 at 0/4000000)"),
        "{text}"
    );
    // Naming the branch decides.
    let s = pick(&on1, &PitrTarget::Immediate, TargetTimeline::Id(T3), &tl);
    assert_eq!(s.timeline, T3);
    // Past timeline 3's fork, a timeline-1 backup belongs to timeline 2's branch only.
    let mid = [b("M", T1, 0x100_0028, 0x480_0000, 1)];
    assert_eq!(
        pick(&mid, &PitrTarget::Immediate, TargetTimeline::Latest, &tl).timeline,
        T2
    );
}

#[test]
fn a_timeline_that_went_on_past_its_fork_is_a_branch_too() {
    // Timeline 2 left timeline 1 at 0/5000028 (segment 5 of 16 MiB segments); the archive
    // holds timeline 1 up to segment 7: timeline 1 went on (the source of a copy restored,
    // promoted and archived here; or an old primary after a failover).
    let seg = 16 << 20;
    let h = [hist(T2, &[(1, 0x500_0028)])];
    let went_on =
        Timelines::new(h.clone()).with_ends(seg, [(T1, Lsn(8 * seg)), (T2, Lsn(6 * seg))]);
    let c = [b("A", T1, 0x100_0028, 0x200_0000, 1)];
    let e = select(
        &c,
        None,
        &PitrTarget::Immediate,
        TargetTimeline::Latest,
        &went_on,
        None,
    )
    .unwrap_err();
    let SelectError::DivergingTimelines { branches, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        branches.iter().map(|b| b.timeline).collect::<Vec<_>>(),
        [T1, T2]
    );
    assert!(
        e.to_string().contains("timeline 1 (went on past 0/5000028"),
        "{e}"
    );
    for t in [T1, T2] {
        assert_eq!(
            pick(&c, &PitrTarget::Immediate, TargetTimeline::Id(t), &went_on).timeline,
            t
        );
    }
    // Timeline 1 archived only up to the switch segment (a failover's usual picture: the
    // promoted standby archived the rest as .partial): one branch, timeline 2.
    let clean = Timelines::new(h).with_ends(seg, [(T1, Lsn(6 * seg)), (T2, Lsn(9 * seg))]);
    assert_eq!(
        pick(&c, &PitrTarget::Immediate, TargetTimeline::Latest, &clean).timeline,
        T2
    );
}

#[test]
fn a_chain_of_promotions_resolves_to_its_end() {
    let tl = Timelines::new([
        hist(T2, &[(1, 0x500_0000)]),
        hist(T3, &[(1, 0x500_0000), (2, 0x700_0000)]),
    ]);
    let c = [b("A", T1, 0x100_0028, 0x200_0000, 1)];
    let s = pick(&c, &PitrTarget::Immediate, TargetTimeline::Latest, &tl);
    assert_eq!(s.timeline, T3);
    assert!(!s.timeline_why.contains("would have"), "{}", s.timeline_why);
}

#[test]
fn diverging_backups_need_a_named_backup_or_timeline() {
    let c = [b("A", T1, 0x100_0028, 0x200_0000, 1)];
    let tl = Timelines::default();
    let pair = Some(("A".to_owned(), "X".to_owned()));
    let e = select(
        &c,
        None,
        &PitrTarget::Immediate,
        TargetTimeline::Latest,
        &tl,
        pair.clone(),
    );
    assert_eq!(
        e,
        Err(SelectError::DivergingBackups {
            first: "A".into(),
            second: "X".into()
        })
    );
    let ok = select(
        &c,
        Some("A"),
        &PitrTarget::Immediate,
        TargetTimeline::Latest,
        &tl,
        pair.clone(),
    );
    assert!(ok.is_ok());
    let ok = select(
        &c,
        None,
        &PitrTarget::Immediate,
        TargetTimeline::Id(T1),
        &tl,
        pair,
    );
    assert!(ok.is_ok());
}

#[test]
fn xid_and_name_take_the_newest_backup_and_say_so() {
    let c = [
        b("A", T1, 0x100_0028, 0x100_0100, 1),
        b("B", T1, 0x300_0028, 0x300_0100, 2),
    ];
    let tl = Timelines::default();
    for t in [
        PitrTarget::Xid("1234".into()),
        PitrTarget::Name("before-upgrade".into()),
    ] {
        let s = pick(&c, &t, TargetTimeline::Latest, &tl);
        assert_eq!(s.backup.id, "B");
        assert!(s.unknowable);
        assert!(
            s.why.contains("known only when recovery reaches it"),
            "{}",
            s.why
        );
    }
    assert!(!pick(&c, &PitrTarget::Immediate, TargetTimeline::Latest, &tl).unknowable);
}

#[test]
fn target_times_need_an_offset_and_are_written_in_utc() {
    let t = parse_target_time("2026-11-21 10:46:49+00").unwrap();
    assert_eq!(t.to_rfc3339(), "2026-11-21T10:46:49+00:00");
    for (s, utc) in [
        ("2026-11-21T10:46:49Z", "2026-11-21 10:46:49.000000+00"),
        ("2026-11-21 11:46:49.25+01", "2026-11-21 10:46:49.250000+00"),
        ("2026-11-21 11:16:49+00:30", "2026-11-21 10:46:49.000000+00"),
        ("2026-11-21 05:46:49-0500", "2026-11-21 10:46:49.000000+00"),
        (
            "2026-11-21 10:46:49.123456 UTC",
            "2026-11-21 10:46:49.123456+00",
        ),
        ("2026-11-21 10:46+00", "2026-11-21 10:46:00.000000+00"),
    ] {
        let p = PitrTarget::Time(parse_target_time(s).unwrap());
        assert_eq!(
            p.recovery_target(),
            Some(RecoveryTarget::Time(utc.into())),
            "{s}"
        );
    }
    for s in ["2026-11-21 10:46:49", "2026-11-21", "2026-11-21T10:46:49.5"] {
        let e = parse_target_time(s).unwrap_err();
        assert!(e.contains("offset from UTC"), "{s}: {e}");
    }
    for s in [
        "",
        "yesterday",
        "2026-13-01 00:00:00+00",
        "10:46:49+00",
        "2026-11-21 10:46:49+25",
    ] {
        assert!(parse_target_time(s).is_err(), "{s}");
    }
}

proptest! {
    /// On one timeline, the backup chosen for an LSN is the newest valid one ending at or before
    /// it, and there is none exactly when every valid backup ends after it.
    #[test]
    fn lsn_choice_is_the_newest_that_ends_before(
        stops in proptest::collection::vec((1u64..1000, any::<bool>()), 1..8),
        target in 0u64..1100,
    ) {
        let mut stops = stops;
        stops.sort_by_key(|s| s.0);
        let c: Vec<Candidate> = stops
            .iter()
            .enumerate()
            .map(|(i, &(s, failed))| Candidate {
                failed_verification: failed,
                ..b(&format!("b{i}"), T1, s * 0x100, s * 0x100 + 0x80, i as i64)
            })
            .collect();
        let t = PitrTarget::Lsn(Lsn(target * 0x100));
        let r = select(&c, None, &t, TargetTimeline::Latest, &Timelines::default(), None);
        let want = c
            .iter()
            .rev()
            .find(|x| !x.failed_verification && x.stop_lsn.0 <= target * 0x100);
        match (r, want) {
            (Ok(s), Some(w)) => prop_assert_eq!(s.backup.id.as_str(), w.id.as_str()),
            (Err(SelectError::Unreachable { skipped, .. }), None) => {
                prop_assert_eq!(skipped.len(), c.len())
            }
            (r, w) => prop_assert!(false, "{:?} vs {:?}", r, w),
        }
    }

    #[test]
    fn parsing_a_time_never_panics(s in ".{0,40}") {
        let _ = parse_target_time(&s);
    }
}
