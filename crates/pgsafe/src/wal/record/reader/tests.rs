use proptest::prelude::*;

use super::*;
use crate::wal::record::decode::{BlockRef, Fork, RecordFormat, RelFileLocator, decode_record};
use crate::wal::record::testwal::{Spec, Writer, encode};

const PAGE: u64 = 1024;
const SEG: u64 = 1 << 20;
const MAGIC: u16 = 0xD116;

fn seg_size() -> WalSegSize {
    WalSegSize::new(SEG).expect("1 MiB segments")
}

fn spec(n: usize, main_len: usize) -> Spec {
    let blocks = (0..n.min(30))
        .map(|i| BlockRef {
            id: i as u8,
            rel: RelFileLocator {
                spc_oid: 1663,
                db_oid: 5,
                rel_number: 16384 + (i as u32 % 3),
            },
            fork: Fork::Main,
            block: i as u32 * 7,
            image: None,
            data_len: (i as u16 % 5) * 40,
            will_init: false,
        })
        .collect();
    Spec {
        rmid: 10,
        info: 0,
        xid: 9,
        origin: None,
        toplevel_xid: None,
        blocks,
        main: vec![0xAB; main_len],
    }
}

fn switch() -> Spec {
    Spec {
        rmid: 0,
        info: 0x40,
        xid: 0,
        origin: None,
        toplevel_xid: None,
        blocks: vec![],
        main: vec![],
    }
}

type Records = Vec<(Lsn, Vec<u8>)>;

/// Reads `bytes` (pages from `first`) from `start`; returns (lsn, bytes) of each record.
fn read_all(
    start: Lsn,
    first: Lsn,
    bytes: &[u8],
    stop: Option<Lsn>,
) -> (Records, Result<(), ReadError>, ReaderStats) {
    let mut r = WalReader::new(start, seg_size(), PAGE as u32);
    if let Some(s) = stop {
        r = r.with_stop(s);
    }
    let mut out = Vec::new();
    let res = r.feed_segment(first, bytes, TimelineId(1), &mut |rec| {
        out.push((rec.lsn, rec.bytes.to_vec()))
    });
    (out, res, r.stats())
}

/// Writes records of the given main-data sizes from `first`; returns the writer and what it
/// wrote.
fn write(first: Lsn, sizes: &[(usize, usize)]) -> (Writer, Vec<(Lsn, Vec<u8>)>) {
    let mut w = Writer::new(first, PAGE, SEG, MAGIC);
    let mut written = Vec::new();
    for &(blocks, main) in sizes {
        let prev = w.prev;
        let lsn = w.append(&spec(blocks, main), 17);
        written.push((lsn, encode(&spec(blocks, main), prev, 17)));
    }
    (w, written)
}

#[test]
fn reads_records_across_pages_and_segments() {
    // Three pages before a segment boundary, records large and small.
    let first = Lsn(5 * SEG - 3 * PAGE);
    let sizes: Vec<(usize, usize)> = (0..40).map(|i| (i % 4, (i * 97) % 2500)).collect();
    let (w, written) = write(first, &sizes);
    let stop = Lsn(w.pos);
    let (read, res, stats) = read_all(first, first, &w.finish(), Some(stop));
    res.expect("reads");
    assert_eq!(read, written);
    assert!(
        stats.across_pages > 0 && stats.across_segments == 1,
        "{stats:?}"
    );
    for (lsn, bytes) in &read {
        decode_record(*lsn, bytes, RecordFormat::new(17, 8192)).expect("whole records");
    }
}

#[test]
fn a_start_inside_a_record_skips_its_continuation() {
    let first = Lsn(2 * SEG);
    let (w, written) = write(first, &[(1, 3000), (2, 10), (0, 2100), (1, 5)]);
    let stop = Lsn(w.pos);
    let bytes = w.finish();
    // Page 1 and 2 hold the 3000-byte record's continuation; page 3 starts inside it too.
    for page in 1..=2u64 {
        let start = Lsn(first.0 + page * PAGE);
        let (read, res, stats) =
            read_all(start, start, &bytes[(page * PAGE) as usize..], Some(stop));
        res.expect("reads");
        assert_eq!(read, written[1..].to_vec(), "from page {page}");
        assert_eq!(stats.skipped_continuations, 1);
    }
}

#[test]
fn after_a_switch_the_next_segment_is_read() {
    let first = Lsn(7 * SEG - 2 * PAGE);
    let mut w = Writer::new(first, PAGE, SEG, MAGIC);
    w.append(&spec(1, 100), 17);
    let sw = w.append(&switch(), 17);
    w.pad_to_segment_end();
    let next = w.append(&spec(2, 50), 17);
    assert_eq!(next, Lsn(7 * SEG + 40));
    let stop = Lsn(w.pos);
    let (read, res, stats) = read_all(first, first, &w.finish(), Some(stop));
    res.expect("reads");
    let lsns: Vec<Lsn> = read.iter().map(|r| r.0).collect();
    assert_eq!(lsns[1..], [sw, next]);
    assert_eq!(stats.switches, 1);
}

#[test]
fn the_end_of_the_wal_and_damage_are_reported() {
    let first = Lsn(3 * SEG);
    let (w, written) = write(first, &[(1, 100), (2, 1500), (1, 10)]);
    let bytes = w.finish();
    // No stop: the zeros after the last record end the WAL.
    let (read, res, _) = read_all(first, first, &bytes, None);
    assert_eq!(read, written);
    assert_eq!(res.unwrap_err().what, ReadErrorKind::NoRecord);
    // A wrong prev-link.
    let mut b = bytes.clone();
    let second = (written[1].0.0 - first.0) as usize;
    b[second + 8] ^= 1;
    let (read, res, _) = read_all(first, first, &b, None);
    assert_eq!(read.len(), 1);
    assert!(matches!(
        res.unwrap_err().what,
        ReadErrorKind::PrevLink { .. }
    ));
    // A page that claims to be elsewhere (a recycled segment).
    let mut b = bytes.clone();
    b[PAGE as usize + 9] ^= 1;
    let (_, res, _) = read_all(first, first, &b, None);
    assert!(matches!(
        res.unwrap_err().what,
        ReadErrorKind::PageAddress { .. }
    ));
    // A continuation page without its flag.
    let mut b = bytes.clone();
    b[PAGE as usize + 2] = 0;
    let (_, res, _) = read_all(first, first, &b, None);
    assert!(matches!(
        res.unwrap_err().what,
        ReadErrorKind::NoContrecord { .. }
    ));
    // Pages out of order.
    let mut r = WalReader::new(first, seg_size(), PAGE as u32);
    let e = r
        .feed_page(
            Lsn(first.0 + PAGE),
            &bytes[..PAGE as usize],
            TimelineId(1),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(e.what, ReadErrorKind::OutOfOrder { .. }));
}

#[test]
fn an_overwritten_contrecord_abandons_the_record() {
    let first = Lsn(4 * SEG);
    let mut w = Writer::new(first, PAGE, SEG, MAGIC);
    let a = w.append(&spec(1, 100), 17);
    // A record that would continue onto page 1, but the server crashed: page 1 starts with
    // the overwrite flag and a new record linked to `a`.
    let broken = encode(&spec(0, 2000), Lsn(a.0), 17);
    let at = (w.pos - first.0) as usize;
    let room = PAGE as usize - at;
    w.bytes[at..at + room].copy_from_slice(&broken[..room]);
    w.bytes.resize(2 * PAGE as usize, 0);
    let page1 = &mut w.bytes[PAGE as usize..];
    page1[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    page1[2..4].copy_from_slice(&crate::wal::XLP_FIRST_IS_OVERWRITE_CONTRECORD.to_le_bytes());
    page1[4..8].copy_from_slice(&1u32.to_le_bytes());
    page1[8..16].copy_from_slice(&(first.0 + PAGE).to_le_bytes());
    w.pos = first.0 + PAGE + 24;
    w.prev = a;
    let c = w.append(&spec(1, 30), 17);
    let stop = Lsn(w.pos);
    let (read, res, stats) = read_all(first, first, &w.finish(), Some(stop));
    res.expect("reads");
    assert_eq!(read.iter().map(|r| r.0).collect::<Vec<_>>(), [a, c]);
    assert_eq!(stats.overwritten, 1);
}

proptest! {
    #[test]
    fn written_records_read_back(
        sizes in proptest::collection::vec((0usize..8, 0usize..3000), 1..30),
        pages_before_boundary in 1u64..6,
        skip in 0u64..4,
    ) {
        let first = Lsn(9 * SEG - pages_before_boundary * PAGE);
        let (w, written) = write(first, &sizes);
        let stop = Lsn(w.pos);
        let bytes = w.finish();
        let (read, res, _) = read_all(first, first, &bytes, Some(stop));
        prop_assert!(res.is_ok(), "{res:?}");
        prop_assert!(read == written, "{} records read, {} written", read.len(), written.len());
        // From a later page: the records starting from there on.
        let start = Lsn(first.0 + skip * PAGE);
        if (start.0 - first.0) < bytes.len() as u64 {
            let (read, res, _) =
                read_all(start, start, &bytes[(skip * PAGE) as usize..], Some(stop));
            prop_assert!(res.is_ok(), "{res:?}");
            let tail: Vec<_> = written.iter().filter(|r| r.0 >= start).cloned().collect();
            prop_assert!(read == tail, "{} records read, {} expected", read.len(), tail.len());
        }
    }

    #[test]
    fn never_panics_on_any_pages(
        pages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), PAGE as usize), 1..4),
        start_off in 0u64..1024,
        seg_start in any::<bool>(),
    ) {
        let first = Lsn(if seg_start { SEG } else { SEG + PAGE });
        let mut bytes: Vec<u8> = pages.concat();
        // A plausible header on the first page so reading gets past it now and then.
        bytes[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[8..16].copy_from_slice(&first.0.to_le_bytes());
        let _ = read_all(Lsn(first.0 + start_off), first, &bytes, None);
    }
}
