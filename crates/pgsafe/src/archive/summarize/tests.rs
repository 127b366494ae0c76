use super::*;
use crate::types::TimelineId;
use crate::wal::record::decode::BlockRef;
use crate::wal::record::testwal::{Spec, Writer};

const PAGE: u64 = 1024;
const SEG: u64 = 1 << 20;
const MAJOR: u32 = 16;

fn seg_size() -> WalSegSize {
    WalSegSize::new(SEG).expect("1 MiB segments")
}

fn rel(n: u32) -> RelFileLocator {
    RelFileLocator {
        spc_oid: 1663,
        db_oid: 5,
        rel_number: n,
    }
}

fn heap(blocks: &[(u32, u32)], main_len: usize) -> Spec {
    Spec {
        rmid: 10,
        info: 0,
        xid: 9,
        origin: None,
        toplevel_xid: None,
        blocks: blocks
            .iter()
            .enumerate()
            .map(|(i, &(r, b))| BlockRef {
                id: i as u8,
                rel: rel(r),
                fork: Fork::Main,
                block: b,
                image: None,
                data_len: 20,
                will_init: false,
            })
            .collect(),
        main: vec![0x5A; main_len],
    }
}

fn special(rmid: u8, info: u8, main: Vec<u8>) -> Spec {
    Spec {
        rmid,
        info,
        xid: 0,
        origin: None,
        toplevel_xid: None,
        blocks: vec![],
        main,
    }
}

fn smgr_create(r: u32) -> Spec {
    let mut m = Vec::new();
    for v in [1663u32, 5, r, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    special(2, 0x10 | 0x01, m)
}

fn smgr_truncate(r: u32, to: u32) -> Spec {
    let mut m = Vec::new();
    for v in [to, 1663, 5, r, 7] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    special(2, 0x20 | 0x01, m)
}

/// Two whole segments of WAL (from segment 3): records with block references, a relation
/// created and one truncated, a record crossing into the second segment, and a switch that
/// ends the second. Returns the bytes and the set a reading of all records gives.
fn two_segments() -> (Vec<u8>, ChangedBlocks) {
    let first = Lsn(3 * SEG);
    let mut w = Writer::new(first, PAGE, SEG, 0xD113);
    let mut expected = ChangedBlocks::new();
    let mut i = 0u32;
    let mut crossed = false;
    while w.pos < SEG * 4 + 5000 {
        i += 1;
        let blocks = [(16384 + i % 5, i * 3), (16390, i)];
        // Large records near the boundary so one crosses it.
        let len = if w.pos > 4 * SEG - 3000 && !crossed {
            crossed = true;
            4000
        } else {
            (i as usize * 37) % 700
        };
        let at = w.append(&heap(&blocks, len), MAJOR);
        if at.0 < 4 * SEG && w.pos > 4 * SEG {
            assert!(len == 4000 || w.pos > 4 * SEG, "a record crosses");
        }
        for (r, b) in blocks {
            expected.mark_block(rel(r), Fork::Main, b);
        }
        if i == 50 {
            w.append(&smgr_create(20000), MAJOR);
            expected.set_limit(rel(20000), Fork::Main, 0);
        }
        if i == 80 {
            w.append(&smgr_truncate(16385, 2), MAJOR);
            expected.set_limit(rel(16385), Fork::Main, 2);
            expected.set_limit(rel(16385), Fork::Vm, 0);
            expected.set_limit(rel(16385), Fork::Fsm, 0);
        }
    }
    w.append(&special(0, 0x40, vec![]), MAJOR);
    w.pad_to_segment_end();
    let bytes = w.finish();
    assert_eq!(bytes.len() as u64, 2 * SEG);
    (bytes, expected)
}

fn summarize(seg: u32, bytes: &[u8], chunk: usize) -> SegmentSummary {
    let seg: WalSegment = format!("0000000100000000{seg:08X}").parse().expect("name");
    let mut s = SegmentSummarizer::new(seg, seg_size(), MAJOR).expect("summarizer");
    for c in bytes.chunks(chunk) {
        s.feed(c);
    }
    s.finish()
}

#[test]
fn two_summaries_and_their_straddle_give_every_record() {
    let (bytes, expected) = two_segments();
    for chunk in [SEG as usize, 1000, 4096] {
        let a = summarize(3, &bytes[..SEG as usize], chunk);
        let b = summarize(4, &bytes[SEG as usize..], chunk);
        assert_eq!(a.doubt, None);
        assert_eq!(b.doubt, None);
        assert!(a.straddle.is_some() && b.head.is_some(), "a record crosses");
        // Stored and read back.
        let a = SegmentSummary::decode(&a.encode()).expect("round trip");
        let mut got = a.changed();
        join_straddle(&a, &b, &mut got);
        got.append(&b.changed());
        assert_eq!(got.doubt(), None);
        let norm = |c: &ChangedBlocks| c.forks().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
        assert_eq!(norm(&got), norm(&expected), "chunk {chunk}");
    }
}

#[test]
fn damage_and_missing_halves_are_doubts_never_fewer_blocks() {
    let (bytes, _) = two_segments();
    // A flipped byte in a record: the CRC fails.
    let mut b = bytes[..SEG as usize].to_vec();
    b[5000] ^= 0x40;
    let s = summarize(3, &b, 8192);
    assert!(s.doubt.is_some(), "{s:?}");
    // A truncated segment.
    let s = summarize(3, &bytes[..SEG as usize - PAGE as usize], 8192);
    assert!(
        s.doubt.as_deref().is_some_and(|d| d.contains("in part")),
        "{:?}",
        s.doubt
    );
    // A straddle whose other half is missing or from another segment.
    let a = summarize(3, &bytes[..SEG as usize], 8192);
    let mut other = summarize(4, &bytes[SEG as usize..], 8192);
    other.head = None;
    let mut c = ChangedBlocks::new();
    join_straddle(&a, &other, &mut c);
    assert!(c.doubt().is_some());
    let mut wrong = summarize(4, &bytes[SEG as usize..], 8192);
    if let Some(h) = wrong.head.as_mut() {
        h.bytes = h
            .bytes
            .as_ref()
            .map(|x| x.replacen('a', "b", 1).replacen('0', "1", 1));
    }
    let mut c = ChangedBlocks::new();
    join_straddle(&a, &wrong, &mut c);
    assert!(c.doubt().is_some());
}

#[test]
fn a_lowered_wal_level_and_an_unknown_special_record_are_doubts() {
    for (major, at) in [(11u32, 16usize), (12, 20), (18, 20)] {
        let mut main = vec![1u8; 32];
        main[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        let rec =
            crate::wal::record::testwal::encode(&special(0, 0x60, main.clone()), Lsn(0), major);
        let d = decode_record(Lsn(100), &rec, RecordFormat::new(major, 8192)).expect("decodes");
        let mut c = ChangedBlocks::new();
        apply_record(&mut c, &d, major);
        assert!(c.doubt().is_some_and(|d| d.contains("minimal")), "{major}");
        // wal_level replica: no doubt.
        main[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
        let rec = crate::wal::record::testwal::encode(&special(0, 0x60, main), Lsn(0), major);
        let d = decode_record(Lsn(100), &rec, RecordFormat::new(major, 8192)).expect("decodes");
        let mut c = ChangedBlocks::new();
        apply_record(&mut c, &d, major);
        assert_eq!(c.doubt(), None);
    }
    let rec = crate::wal::record::testwal::encode(&special(140, 0x01, vec![1, 2, 3]), Lsn(0), 16);
    let d = decode_record(Lsn(100), &rec, RecordFormat::new(16, 8192)).expect("decodes");
    let mut c = ChangedBlocks::new();
    apply_record(&mut c, &d, 16);
    assert!(c.doubt().is_some());
}

#[test]
fn never_panics_on_any_bytes() {
    use proptest::prelude::*;
    proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..600)| {
        let mut s = SegmentSummarizer::new("000000010000000000000003".parse().unwrap(), seg_size(), 15).unwrap();
        for c in bytes.chunks(chunk) { s.feed(c); }
        let sum = s.finish();
        prop_assert!(sum.doubt.is_some());
        let _ = SegmentSummary::decode(&bytes);
    });
    let _ = TimelineId(1);
}
