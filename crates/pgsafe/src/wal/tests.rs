//! Tests of [`super`]: unit, golden and property tests.

use super::*;
use proptest::prelude::*;

/// `pg_wal/00000002.history` and `00000003.history` written by a real PostgreSQL 15.18
/// (two ends of archive recovery); note the blank line the server inserts.
const TLI2: &[u8] = b"1\t0/50000A0\tno recovery target specified\n";
const TLI3: &[u8] =
    b"1\t0/50000A0\tno recovery target specified\n\n2\t0/70000A0\tno recovery target specified\n";

/// First 40 bytes of `000000010000000000000004` from that 15.18 cluster
/// (system identifier 7710582311210454343, 16 MiB segments, 8 kB pages).
const PG15_SEG4: &str =
    "10d102000100000000000004000000000000000000000000470d1c77c27d016b0000000100200000";
/// Same for `000000030000000000000009` (xlp_info has XLP_BKP_REMOVABLE too).
const PG15_TLI3_SEG9: &str =
    "10d106000300000000000009000000000000000000000000470d1c77c27d016b0000000100200000";
const SYSID: SystemId = SystemId(7710582311210454343);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

fn seg(s: &str) -> WalSegment {
    s.parse().unwrap()
}

fn names(segs: &[WalSegment]) -> Vec<String> {
    segs.iter().map(ToString::to_string).collect()
}

fn tli3() -> TimelineHistory {
    TimelineHistory::parse(TimelineId(3), TLI3).unwrap()
}

#[test]
fn real_history_files_parse_and_reformat_byte_for_byte() {
    let h2 = TimelineHistory::parse(TimelineId(2), TLI2).unwrap();
    assert_eq!((h2.format(), h2.as_bytes()), (TLI2.to_vec(), TLI2));
    let h3 = tli3();
    assert_eq!(h3.format(), TLI3);
    assert_eq!(h3.entries().len(), 2);
    assert_eq!(h3.entries()[1].parent_tli, TimelineId(2));
    assert_eq!(h3.entries()[1].switchpoint, lsn("0/70000A0"));
    assert_eq!(h3.entries()[1].reason, b"no recovery target specified");
    let rebuilt = TimelineHistory::new(TimelineId(3), h3.entries().to_vec()).unwrap();
    assert_eq!(rebuilt.as_bytes(), TLI3);
    let spans = h3.spans();
    assert_eq!(
        spans[0],
        TimelineSpan {
            tli: TimelineId(1),
            begin: Lsn(0),
            end: Some(lsn("0/50000A0"))
        }
    );
    assert_eq!(
        spans[2],
        TimelineSpan {
            tli: TimelineId(3),
            begin: lsn("0/70000A0"),
            end: None
        }
    );
    assert_eq!(h3.switchpoint_of(TimelineId(2)), Some(lsn("0/70000A0")));
    assert_eq!(h3.switchpoint_of(TimelineId(3)), None);
    let json = serde_json::to_value(&h3).unwrap();
    assert_eq!(json["entries"][0]["switchpoint"], "0/50000A0");
    assert_eq!(json["entries"][0]["reason"], "no recovery target specified");
}

#[test]
fn timeline_of_follows_switchpoints() {
    let h = tli3();
    let at = |s| h.timeline_of(lsn(s)).0;
    assert_eq!(
        [
            at("0/1"),
            at("0/500009F"),
            at("0/50000A0"),
            at("0/700009F"),
            at("0/70000A0"),
            at("5/0")
        ],
        [1, 1, 2, 2, 3, 3]
    );
    let one = TimelineHistory::without_parents(TimelineId(1)).unwrap();
    assert_eq!(
        (one.timeline_of(lsn("9/0")), one.format()),
        (TimelineId(1), vec![])
    );
}

#[test]
fn server_tolerated_layouts_parse() {
    let text = b"# comment\n\n   \n  1 0/50000A0\n\t# another\n2\t0/70000A0\tat restore point \"x\"\twith tab\n";
    let h = TimelineHistory::parse(TimelineId(3), text).unwrap();
    assert_eq!(
        h.entries()[0].reason,
        b"",
        "a missing reason is fine: sscanf counts 3 fields"
    );
    assert_eq!(h.entries()[1].reason, b"at restore point \"x\"\twith tab");
    assert_eq!(h.as_bytes(), text);
    assert_eq!(
        TimelineHistory::parse(TimelineId(3), &h.format())
            .unwrap()
            .entries(),
        h.entries()
    );
    // trailing blank or comment text without newline is harmless
    assert!(TimelineHistory::parse(TimelineId(2), b"1\t0/5\tx\n# end").is_ok());
    assert!(
        TimelineHistory::parse(TimelineId(5), b"")
            .unwrap()
            .entries()
            .is_empty()
    );
}

#[test]
fn bad_history_files_give_typed_errors() {
    let p = |tli, b: &[u8]| TimelineHistory::parse(TimelineId(tli), b).unwrap_err();
    let e = p(2, b"x\t0/1\treason\n");
    assert_eq!(
        e.to_string(),
        "00000002.history line 1: syntax error: expected a numeric timeline ID (1 to 4294967295), found \"x\\t0/1\\treason\""
    );
    assert!(matches!(
        p(2, b"1\n"),
        HistoryError::ExpectedSwitchpoint { .. }
    ));
    assert!(matches!(
        p(2, b"1\tfoo\tbar\n"),
        HistoryError::ExpectedSwitchpoint { .. }
    ));
    assert!(matches!(
        p(2, b"10/5000000\n"),
        HistoryError::ExpectedSwitchpoint { .. }
    ));
    assert!(matches!(
        p(2, b"0\t0/5\n"),
        HistoryError::ExpectedTimeline { .. }
    ));
    assert!(matches!(
        p(2, b"99999999999\t0/5\n"),
        HistoryError::ExpectedTimeline { .. }
    ));
    let e = p(4, b"2\t0/1\tx\n\n1\t0/2\tx\n");
    assert_eq!(
        e.to_string(),
        "00000004.history line 3: timeline IDs must be in increasing sequence (1 follows 2)"
    );
    assert!(matches!(
        p(3, b"1\t0/1\n3\t0/2\n"),
        HistoryError::NotAncestor { .. }
    ));
    assert!(matches!(
        p(4, b"1\t0/9\n2\t0/2\n"),
        HistoryError::SwitchpointDecreasing { .. }
    ));
    let cut = &TLI3[..TLI3.len() - 10];
    assert!(
        matches!(p(3, cut), HistoryError::Unterminated { .. }),
        "{}",
        p(3, cut)
    );
    assert_eq!(p(0, b""), HistoryError::ZeroTimeline);
    let bad = HistoryEntry {
        parent_tli: TimelineId(1),
        switchpoint: Lsn(5),
        reason: b"a\nb".to_vec(),
    };
    assert!(TimelineHistory::new(TimelineId(2), vec![bad]).is_err());
}

#[test]
fn wal_ranges_follow_the_manifest_rule() {
    let h = tli3();
    let r = |s: &str, t: u32, e: &str| h.wal_ranges(lsn(s), TimelineId(t), lsn(e));
    let ranges = r("0/4000028", 1, "0/8000100").unwrap();
    let want = [
        (3, "0/70000A0", "0/8000100"),
        (2, "0/50000A0", "0/70000A0"),
        (1, "0/4000028", "0/50000A0"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|&(t, s, e)| WalRange {
            tli: TimelineId(t),
            start_lsn: lsn(s),
            end_lsn: lsn(e),
        })
        .collect();
    assert_eq!(ranges, want);
    assert_eq!(
        r("0/6000028", 2, "0/8000100").unwrap(),
        want[..1]
            .iter()
            .copied()
            .chain([WalRange {
                tli: TimelineId(2),
                start_lsn: lsn("0/6000028"),
                end_lsn: lsn("0/70000A0")
            }])
            .collect::<Vec<_>>()
    );
    assert_eq!(r("0/7100028", 3, "0/8000100").unwrap().len(), 1);
    // timeline 1 had ended before 0/6000000
    assert!(matches!(
        r("0/6000000", 1, "0/8000100"),
        Err(WalRangeError::StartTimelineNotInHistory { .. })
    ));
    assert!(matches!(
        r("0/4000000", 1, "0/6000000"),
        Err(WalRangeError::StopBeforeTimeline { .. })
    ));
    assert!(matches!(
        r("0/9000000", 3, "0/8000000"),
        Err(WalRangeError::StopBeforeStart { .. })
    ));
}

#[test]
fn backup_segments_on_one_timeline() {
    let s16 = WalSegSize::DEFAULT;
    let t1 = TimelineId(1);
    let segs = backup_wal_segments(lsn("0/2000028"), t1, lsn("0/4000000"), t1, s16, None).unwrap();
    assert_eq!(
        names(&segs),
        ["000000010000000000000002", "000000010000000000000003"]
    );
    let one = backup_wal_segments(lsn("0/2000028"), t1, lsn("0/2000028"), t1, s16, None).unwrap();
    assert_eq!(names(&one), ["000000010000000000000002"]);
    assert_eq!(
        backup_history_files(lsn("0/2000028"), t1, lsn("0/4000000"), t1, None).unwrap(),
        Vec::<String>::new()
    );
    let t2 = TimelineId(2);
    let e = backup_wal_segments(lsn("0/2000028"), t1, lsn("0/4000000"), t2, s16, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("history file of timeline 2 is needed"),
        "{e}"
    );
    let h = tli3();
    let e =
        backup_wal_segments(lsn("0/2000028"), t1, lsn("0/4000000"), t2, s16, Some(&h)).unwrap_err();
    assert_eq!(
        e,
        WalRangeError::WrongHistory {
            found: TimelineId(3),
            expected: t2
        }
    );
    let e = backup_wal_segments(Lsn(0), t1, Lsn(u64::MAX), t1, s16, None).unwrap_err();
    assert!(matches!(e, WalRangeError::TooManySegments { .. }));
}

#[test]
fn backup_segments_across_timeline_switches() {
    let h = tli3();
    let (t1, t3) = (TimelineId(1), TimelineId(3));
    let segs = backup_wal_segments(
        lsn("0/4000028"),
        t1,
        lsn("0/8000100"),
        t3,
        WalSegSize::DEFAULT,
        Some(&h),
    )
    .unwrap();
    let want = [
        "000000010000000000000004",
        "000000020000000000000005",
        "000000020000000000000006",
        "000000030000000000000007",
        "000000030000000000000008",
    ];
    assert_eq!(names(&segs), want);
    let files = backup_history_files(lsn("0/4000028"), t1, lsn("0/8000100"), t3, Some(&h)).unwrap();
    assert_eq!(files, ["00000002.history", "00000003.history"]);
    let files = backup_history_files(lsn("0/7100000"), t3, lsn("0/8000100"), t3, Some(&h)).unwrap();
    assert_eq!(files, ["00000003.history"]);
    assert_eq!(history_file_tli("0000000A.history"), Some(TimelineId(10)));
    assert_eq!(history_file_tli("0000000a.history"), None);
    assert_eq!(history_file_tli("000000010000000000000001"), None);
}

#[test]
fn real_page_headers_decode_and_check() {
    let b = hex(PG15_SEG4);
    let h = WalPageHeader::decode(&b).unwrap();
    assert_eq!(
        (h.magic, h.info, h.tli, h.pageaddr, h.rem_len),
        (0xD110, XLP_LONG_HEADER, TimelineId(1), lsn("0/4000000"), 0)
    );
    assert_eq!(
        h.long,
        Some(LongPageHeader {
            sysid: SYSID,
            seg_size: 16 << 20,
            xlog_blcksz: 8192
        })
    );
    assert_eq!(h.major(), Some(15));
    let s16 = WalSegSize::DEFAULT;
    let file = seg("000000010000000000000004");
    assert_eq!(
        check_segment_header(&b, file, s16, Some(SYSID), Some(15)),
        Ok(h)
    );
    assert_eq!(check_segment_header(&b, file, s16, None, None), Ok(h));
    let b9 = hex(PG15_TLI3_SEG9);
    let h9 = check_segment_header(
        &b9,
        seg("000000030000000000000009"),
        s16,
        Some(SYSID),
        Some(15),
    )
    .unwrap();
    assert_eq!(h9.info, XLP_LONG_HEADER | XLP_BKP_REMOVABLE);
    // a timeline-4 file may begin with timeline-3 pages, a timeline-2 file may not
    assert!(check_segment_header(&b9, seg("000000040000000000000009"), s16, None, None).is_ok());
    let e =
        check_segment_header(&b9, seg("000000020000000000000009"), s16, None, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "WAL segment 000000020000000000000009: page timeline 3 is not valid for a file of timeline 2"
    );
}

#[test]
fn page_header_mismatches_are_reported_exactly() {
    let b = hex(PG15_SEG4);
    let s16 = WalSegSize::DEFAULT;
    let file = seg("000000010000000000000004");
    let check = |bytes: &[u8], file, sysid, major| {
        check_segment_header(bytes, file, s16, sysid, major)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        check(&b, file, None, Some(14)),
        "WAL segment 000000010000000000000004: page magic 0xD110 is not that of PostgreSQL 14 (0xD10D)"
    );
    assert!(check(&b, file, None, Some(96)).contains("PostgreSQL 9.6 (0xD093)"));
    assert!(
        check(&b, file, None, Some(9))
            .contains("no XLOG_PAGE_MAGIC is known for PostgreSQL major 9")
    );
    assert_eq!(
        check(&b, file, Some(SystemId(42)), None),
        "WAL segment 000000010000000000000004 belongs to database system 7710582311210454343, expected 42"
    );
    assert_eq!(
        check(&b, seg("000000010000000000000005"), None, None),
        "WAL segment 000000010000000000000005: page address 0/4000000 but the segment starts at 0/5000000 (recycled or misnamed file?)"
    );
    let with = |at: usize, bytes: &[u8]| {
        let mut c = b.clone();
        c[at..at + bytes.len()].copy_from_slice(bytes);
        c
    };
    assert!(check(&with(0, &[0x34, 0x12]), file, None, None).contains("unknown page magic 0x1234"));
    assert!(check(&with(2, &[0x00, 0x00]), file, None, None).contains("lacks the long header"));
    assert!(
        check(&with(2, &[0x12, 0x00]), file, None, None).contains("invalid xlp_info bits 0x0012")
    );
    assert!(
        check(&with(32, &(64u32 << 20).to_le_bytes()), file, None, None)
            .contains("segment size 67108864 bytes, expected 16MB")
    );
    assert!(check(&with(36, &3000u32.to_le_bytes()), file, None, None).contains("block size 3000"));
    assert!(check(&[0; 40], file, None, None).contains("zero-filled page"));
    assert_eq!(
        check(&b[..30], file, None, None),
        "WAL page header truncated: 30 bytes, 40 needed"
    );
    assert_eq!(
        WalPageHeader::decode(&b[..10]),
        Err(PageHeaderError::Truncated {
            len: 10,
            needed: 24
        })
    );
    let e = check_segment_header(&b, seg("000000010000000000000100"), s16, None, None).unwrap_err();
    assert!(matches!(e, PageHeaderError::Name { .. }));
    for major in [96, 10, 11, 12, 13, 14, 15, 16, 17, 18] {
        assert_eq!(
            xlog_page_magic(major).and_then(major_for_page_magic),
            Some(major)
        );
    }
}

// ---- property tests ----

fn any_history() -> impl Strategy<Value = TimelineHistory> {
    let entry = (1u32..4, 0u64..1 << 20, "[ -~]{0,30}");
    (
        proptest::collection::vec(entry, 0..6),
        0u32..3,
        any::<bool>(),
    )
        .prop_map(|(steps, extra, padded)| {
            let (mut tli, mut at, mut entries) = (0u32, 0u64, vec![]);
            for (dt, dl, reason) in steps {
                tli += dt;
                at += dl;
                entries.push(HistoryEntry {
                    parent_tli: TimelineId(tli),
                    switchpoint: Lsn(at),
                    reason: reason.into_bytes(),
                });
            }
            let mut h = TimelineHistory::new(TimelineId(tli + 1 + extra), entries).unwrap();
            h.lsn_style = if padded {
                LsnStyle::ZeroPadded
            } else {
                LsnStyle::Plain
            };
            TimelineHistory {
                raw: h.format(),
                ..h
            }
        })
}

fn encode(h: &WalPageHeader) -> Vec<u8> {
    let mut b = vec![
        0u8;
        if h.long.is_some() {
            LONG_HEADER_SIZE
        } else {
            SHORT_HEADER_SIZE
        }
    ];
    b[0..2].copy_from_slice(&h.magic.to_le_bytes());
    b[2..4].copy_from_slice(&h.info.to_le_bytes());
    b[4..8].copy_from_slice(&h.tli.0.to_le_bytes());
    b[8..16].copy_from_slice(&h.pageaddr.0.to_le_bytes());
    b[16..20].copy_from_slice(&h.rem_len.to_le_bytes());
    if let Some(l) = h.long {
        b[24..32].copy_from_slice(&l.sysid.0.to_le_bytes());
        b[32..36].copy_from_slice(&l.seg_size.to_le_bytes());
        b[36..40].copy_from_slice(&l.xlog_blcksz.to_le_bytes());
    }
    b
}

proptest! {
    #[test]
    fn history_round_trips(h in any_history()) {
        let parsed = TimelineHistory::parse(h.tli(), h.as_bytes()).unwrap();
        prop_assert_eq!(parsed.entries(), h.entries());
        prop_assert_eq!(parsed.format(), h.as_bytes());
        // comments and blank lines change nothing
        let noisy: Vec<u8> = h.as_bytes().split_inclusive(|&b| b == b'\n')
            .flat_map(|l| [&b"# note\n  \n"[..], l].concat()).collect();
        prop_assert_eq!(TimelineHistory::parse(h.tli(), &noisy).unwrap().entries().to_vec(), h.entries().to_vec());
    }

    #[test]
    fn history_parse_never_panics(tli: u32, bytes in proptest::collection::vec(prop_oneof![Just(b'\t'), Just(b'\n'), Just(b'/'), Just(b'1'), Just(b'A'), any::<u8>()], 0..120)) {
        if let Ok(h) = TimelineHistory::parse(TimelineId(tli), &bytes) {
            prop_assert_eq!(TimelineHistory::parse(TimelineId(tli), &h.format()).unwrap().entries().to_vec(), h.entries().to_vec());
            let _ = h.timeline_of(Lsn(u64::from(tli)));
        }
    }

    #[test]
    fn damaged_real_history_never_panics(cut in 0usize..100, pos in 0usize..100, byte: u8) {
        let mut b = TLI3[..cut.min(TLI3.len())].to_vec();
        if !b.is_empty() {
            let i = pos % b.len();
            b[i] = byte;
        }
        let _ = TimelineHistory::parse(TimelineId(3), &b);
    }

    #[test]
    fn page_header_decode_and_check_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), segno in 0u64..1000, major in 0u32..100) {
        let _ = WalPageHeader::decode(&bytes);
        let file = WalSegment::from_segno(TimelineId(1), segno, WalSegSize::DEFAULT);
        let _ = check_segment_header(&bytes, file, WalSegSize::DEFAULT, Some(SYSID), Some(major));
        let _ = check_segment_header(&bytes, file, WalSegSize::DEFAULT, None, None);
    }

    #[test]
    fn valid_long_headers_pass(tli in 1u32.., segno in 0u64..1 << 30, pow in 20u32..=30, major_i in 0usize..10, sysid: u64, removable: bool) {
        let size = WalSegSize::new(1 << pow).unwrap();
        let file = WalSegment::from_segno(TimelineId(tli), segno, size);
        let (major, magic) = PAGE_MAGICS[major_i];
        let info = XLP_LONG_HEADER | if removable { XLP_BKP_REMOVABLE } else { 0 };
        let long = Some(LongPageHeader { sysid: SystemId(sysid), seg_size: 1 << pow, xlog_blcksz: 8192 });
        let h = WalPageHeader { magic, info, tli: TimelineId(tli), pageaddr: file.start_lsn(size).unwrap(), rem_len: 0, long };
        let bytes = encode(&h);
        prop_assert_eq!(WalPageHeader::decode(&bytes).unwrap(), h);
        prop_assert_eq!(check_segment_header(&bytes, file, size, Some(SystemId(sysid)), Some(major)), Ok(h));
    }

    #[test]
    fn backup_segments_are_contiguous_and_follow_the_history(h in any_history(), a: u32, b: u32, pow in 20u32..=24) {
        let size = WalSegSize::new(1 << pow).unwrap();
        let (start, stop) = (Lsn(u64::from(a.min(b)) >> 4), Lsn(u64::from(a.max(b)) >> 4));
        let start_tli = h.timeline_of(start);
        let Ok(segs) = backup_wal_segments(start, start_tli, stop, h.tli(), size, Some(&h)) else {
            // only possible when the stop LSN precedes the stop timeline's beginning
            prop_assert!(stop < h.spans().last().unwrap().begin);
            return Ok(());
        };
        let segnos: Vec<u64> = segs.iter().map(|s| s.segno(size).unwrap()).collect();
        prop_assert_eq!(segnos[0], start.0 / size.bytes());
        prop_assert!(segnos.windows(2).all(|w| w[1] == w[0] + 1));
        prop_assert!(segs.windows(2).all(|w| w[0].tli <= w[1].tli));
        prop_assert_eq!(segs[0].tli >= start_tli, true);
        if h.entries().is_empty() && stop > start {
            let simple: Vec<_> = WalSegment::range(start, stop, h.tli(), size).collect();
            prop_assert_eq!(segs, simple);
        }
    }
}
