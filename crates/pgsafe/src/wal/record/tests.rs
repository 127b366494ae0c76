use proptest::prelude::*;

use super::*;
use crate::wal::{
    LONG_HEADER_SIZE, SHORT_HEADER_SIZE, XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
};

const SEG: u64 = 1 << 20;
const BLCKSZ: usize = 8192;
const MAGIC: u16 = 0xD110;

fn maxalign(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Lays out WAL as the server does: page headers (long at segment starts), records that
/// continue across pages with `XLP_FIRST_IS_CONTRECORD`/`xlp_rem_len`, MAXALIGNed starts,
/// switch records that end their segment. Tracks which bytes belong to records.
struct Writer {
    base: u64,
    data: Vec<u8>,
    pos: u64,
    prev: u64,
    tli: u32,
    /// Byte offsets (from `base`) of record bytes.
    record_bytes: Vec<usize>,
    records: Vec<u64>,
}

impl Writer {
    fn new(base: u64) -> Self {
        Writer {
            base,
            data: Vec::new(),
            pos: base,
            prev: base.saturating_sub(0x28),
            tli: 1,
            record_bytes: Vec::new(),
            records: Vec::new(),
        }
    }

    fn ensure(&mut self, lsn: u64) {
        let need = (lsn - self.base) as usize;
        if self.data.len() < need {
            let pages = need.div_ceil(BLCKSZ) * BLCKSZ;
            self.data.resize(pages, 0);
        }
    }

    fn page_header(&mut self, page: u64, rem_len: u32) -> u64 {
        self.ensure(page + BLCKSZ as u64);
        let long = page % SEG == 0;
        let mut info = if rem_len > 0 {
            XLP_FIRST_IS_CONTRECORD
        } else {
            0
        };
        if long {
            info |= XLP_LONG_HEADER;
        }
        let o = (page - self.base) as usize;
        let d = &mut self.data[o..o + 40];
        d[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        d[2..4].copy_from_slice(&info.to_le_bytes());
        d[4..8].copy_from_slice(&self.tli.to_le_bytes());
        d[8..16].copy_from_slice(&page.to_le_bytes());
        d[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if long {
            d[24..32].copy_from_slice(&42u64.to_le_bytes());
            d[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
            d[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
            page + LONG_HEADER_SIZE as u64
        } else {
            page + SHORT_HEADER_SIZE as u64
        }
    }

    /// Starts a page at `pos` if it is on a page boundary.
    fn at_boundary(&mut self) {
        if self.pos % BLCKSZ as u64 == 0 {
            self.pos = self.page_header(self.pos, 0);
        }
    }

    /// Writes a record with `payload` bytes of data; returns its LSN.
    fn record(&mut self, payload: usize, rmid: u8, info: u8) -> u64 {
        let bytes: Vec<u8> = (0..payload).map(|i| (i % 251) as u8 ^ 0x5A).collect();
        self.record_with(&bytes, rmid, info)
    }

    /// Writes a record with this payload (everything after the header); returns its LSN.
    fn record_with(&mut self, payload: &[u8], rmid: u8, info: u8) -> u64 {
        self.at_boundary();
        let start = self.pos;
        let tot = RECORD_HEADER_SIZE + payload.len();
        let mut rec = vec![0u8; tot];
        rec[0..4].copy_from_slice(&(tot as u32).to_le_bytes());
        rec[8..16].copy_from_slice(&self.prev.to_le_bytes());
        rec[16] = info;
        rec[17] = rmid;
        rec[RECORD_HEADER_SIZE..].copy_from_slice(payload);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[RECORD_HEADER_SIZE..]), &rec[..20]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        let mut done = 0;
        while done < tot {
            let page_end = (self.pos / BLCKSZ as u64 + 1) * BLCKSZ as u64;
            self.ensure(page_end);
            let n = ((page_end - self.pos) as usize).min(tot - done);
            let o = (self.pos - self.base) as usize;
            self.data[o..o + n].copy_from_slice(&rec[done..done + n]);
            self.record_bytes.extend(o..o + n);
            done += n;
            self.pos += n as u64;
            if done < tot {
                self.pos = self.page_header(page_end, (tot - done) as u32);
            }
        }
        self.prev = start;
        self.records.push(start);
        self.pos = maxalign(self.pos);
        if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
            self.pos = self.pos.div_ceil(SEG) * SEG;
            self.ensure(self.pos);
        }
        start
    }

    /// Pads up to `target` with records so that the next record starts exactly there.
    fn fill_to(&mut self, target: u64) {
        loop {
            self.at_boundary();
            let left = target - self.pos;
            if left == 0 {
                return;
            }
            // Space a record of n bytes takes, counting the headers of pages it crosses.
            let fits = |n: u64, pos: u64| {
                let mut p = pos;
                let mut rem = n;
                loop {
                    let page_end = (p / BLCKSZ as u64 + 1) * BLCKSZ as u64;
                    let here = (page_end - p).min(rem);
                    rem -= here;
                    p += here;
                    if rem == 0 {
                        return maxalign(p);
                    }
                    p = page_end
                        + if page_end % SEG == 0 {
                            LONG_HEADER_SIZE
                        } else {
                            SHORT_HEADER_SIZE
                        } as u64;
                }
            };
            if left >= 4096 {
                self.record(2000, 10, 0);
                continue;
            }
            let n = (24..=left)
                .rev()
                .find(|&n| fits(n, self.pos) == target)
                .expect("a record size that lands on the target");
            self.record(n as usize - RECORD_HEADER_SIZE, 10, 0);
        }
    }

    fn pages(&self) -> impl Iterator<Item = (Lsn, &[u8])> {
        self.data
            .chunks(BLCKSZ)
            .enumerate()
            .map(|(i, p)| (Lsn(self.base + (i * BLCKSZ) as u64), p))
    }
}

fn check(w: &Writer, start: u64, stop: u64) -> Result<RecordStats, RecordError> {
    let mut c = RecordChecker::new(
        Lsn(start),
        Lsn(stop),
        WalSegSize::new(SEG).unwrap(),
        BLCKSZ as u32,
    );
    for (lsn, page) in w.pages() {
        c.feed_page(lsn, page, TimelineId(w.tli))?;
    }
    c.finish(Lsn(w.base + w.data.len() as u64))
}

/// A stream from a segment start: records of all sizes, some crossing pages and a segment.
fn sample() -> (Writer, u64, u64) {
    let mut w = Writer::new(0x300_0000);
    w.record(80, 10, 0); // before the start
    let start = w.record(100, 0, 0);
    for n in [10usize, 8200, 30, 20_000, 5, 300_000, 64, 1_000_000, 17] {
        w.record(n, 10, 0);
    }
    w.record(80, 0, 0);
    let stop = w.pos;
    w.record(50, 10, 0); // after the stop
    (w, start, stop)
}

#[test]
fn a_valid_stream_passes() {
    let (w, start, stop) = sample();
    let s = check(&w, start, stop).unwrap();
    assert_eq!(s.records, 11);
    assert!(w.data.len() as u64 > SEG, "crosses a segment");
}

#[test]
fn a_switch_whose_header_crosses_a_page_passes() {
    // The false "damaged": the switch record starts 8 or 16 bytes before a page end,
    // its header continues on the next page, the rest of the segment is zeros.
    for before_end in [8u64, 16] {
        let mut w = Writer::new(0x300_0000);
        let start = w.record(100, 0, 0);
        w.fill_to(0x300_0000 + 3 * BLCKSZ as u64 - before_end);
        let sw = w.record(0, RM_XLOG_ID, XLOG_SWITCH);
        assert_eq!(sw, 0x300_0000 + 3 * BLCKSZ as u64 - before_end);
        assert_eq!(w.pos, 0x300_0000 + SEG);
        w.record(40, 10, 0);
        let stop = w.pos;
        let s = check(&w, start, stop).unwrap();
        assert_eq!((s.records, s.switches), (w.records.len() as u64, 1));
        // PostgreSQL 10 leaves bare page headers after the switch: still fine.
        let mut w10 = Writer::new(0x300_0000);
        w10.data = w.data.clone();
        for p in (4..(SEG as usize / BLCKSZ)).map(|i| 0x300_0000 + (i * BLCKSZ) as u64) {
            w10.page_header(p, 0);
        }
        check(&w10, start, stop).unwrap();
    }
}

#[test]
fn a_flipped_byte_in_a_record_names_the_record() {
    let (w, start, stop) = sample();
    let target = w.records[5]; // the 20 000-byte record, across pages
    let o = (target - w.base) as usize + 9000;
    let mut bad = Writer::new(w.base);
    bad.data = w.data.clone();
    bad.data[o] ^= 0x01;
    let e = check(&bad, start, stop).unwrap_err();
    assert_eq!(e.lsn, Lsn(target));
    assert!(matches!(e.what, RecordErrorKind::Crc { .. }), "{e}");
    assert!(e.to_string().contains("checksum in record at 0/3"), "{e}");
}

#[test]
fn header_damage_is_named() {
    let (w, start, stop) = sample();
    let damage = |at: usize, xor: u8| {
        let mut b = Writer::new(w.base);
        b.data = w.data.clone();
        b.data[at] ^= xor;
        check(&b, start, stop).unwrap_err()
    };
    let rec = (w.records[3] - w.base) as usize;
    // xl_prev
    let e = damage(rec + 9, 0x10);
    assert!(matches!(e.what, RecordErrorKind::PrevLink { .. }), "{e}");
    // xl_tot_len: shorter (CRC over other bytes) or huge (continuation length disagrees).
    let e = damage(rec, 0x08);
    assert!(
        matches!(
            e.what,
            RecordErrorKind::Crc { .. } | RecordErrorKind::ContrecordLength { .. }
        ),
        "{e}"
    );
    let e = damage(rec + 3, 0x40);
    assert!(
        matches!(e.what, RecordErrorKind::RecordTooLong { .. }),
        "{e}"
    );
    // The continuation page of the 8 200-byte record: flag, rem_len, address, magic.
    let cont = ((w.records[2] - w.base) as usize / BLCKSZ + 1) * BLCKSZ;
    let e = damage(cont + 2, XLP_FIRST_IS_CONTRECORD as u8);
    assert!(
        matches!(e.what, RecordErrorKind::NoContrecord { .. }),
        "{e}"
    );
    let e = damage(cont + 16, 0x01);
    assert!(
        matches!(e.what, RecordErrorKind::ContrecordLength { .. }),
        "{e}"
    );
    let e = damage(cont + 9, 0x01);
    assert!(matches!(e.what, RecordErrorKind::PageAddress { .. }), "{e}");
    let e = damage(cont, 0x01);
    assert!(matches!(e.what, RecordErrorKind::PageMagic { .. }), "{e}");
    let e = damage(cont + 4, 0x02);
    assert!(
        matches!(e.what, RecordErrorKind::PageTimeline { .. }),
        "{e}"
    );
}

#[test]
fn missing_or_zeroed_wal_before_the_stop_is_an_error() {
    let (w, start, stop) = sample();
    // A zeroed page in the middle.
    let mut z = Writer::new(w.base);
    z.data = w.data.clone();
    let p = ((w.records[6] - w.base) as usize / BLCKSZ + 2) * BLCKSZ;
    z.data[p..p + BLCKSZ].fill(0);
    let e = check(&z, start, stop).unwrap_err();
    assert!(matches!(e.what, RecordErrorKind::ZeroPage { .. }), "{e}");
    // Zeros where a record must start (same page).
    let mut z = Writer::new(w.base);
    z.data = w.data.clone();
    let r = (w.records[10] - w.base) as usize;
    z.data[r..r + 30].fill(0);
    let e = check(&z, start, stop).unwrap_err();
    assert!(matches!(e.what, RecordErrorKind::NoRecord { .. }), "{e}");
    // The stream cut short.
    let mut t = Writer::new(w.base);
    t.data = w.data[..(stop - w.base) as usize - 40].to_vec();
    t.data.truncate(t.data.len() / BLCKSZ * BLCKSZ);
    assert!(check(&t, start, stop).is_err());
}

#[test]
fn the_start_must_be_a_record_start() {
    let (w, _, stop) = sample();
    // Inside the continuation of the 300 000-byte record (a page with the contrecord flag).
    let inside = ((w.records[8] - w.base) / BLCKSZ as u64 + 3) * BLCKSZ as u64 + w.base + 24;
    let e = check(&w, inside, stop).unwrap_err();
    assert!(
        matches!(e.what, RecordErrorKind::StartInsideRecord { .. }),
        "{e}"
    );
    // An empty range checks nothing.
    assert_eq!(check(&w, stop, stop).unwrap().records, 0);
}

#[test]
fn an_overwritten_contrecord_restarts_the_read() {
    let mut w = Writer::new(0x300_0000);
    let start = w.record(100, 0, 0);
    w.record(10_000, 10, 0);
    let before = w.prev;
    // A record that the crash cut off: its continuation page is replaced by a page with
    // XLP_FIRST_IS_OVERWRITE_CONTRECORD and a new record linked to the one before.
    w.fill_to(0x300_0000 + 5 * BLCKSZ as u64 - 64);
    let cut = w.record(200, 10, 0);
    w.records.pop();
    let page = 0x300_0000 + 5 * BLCKSZ as u64;
    let o = (page - w.base) as usize;
    w.data[o..o + BLCKSZ].fill(0);
    w.page_header(page, 0);
    let info = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
    w.data[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
    w.pos = page + SHORT_HEADER_SIZE as u64;
    w.prev = w.records[w.records.len() - 1];
    assert_ne!(w.prev, cut);
    let _ = before;
    w.record(30, RM_XLOG_ID, 0x20);
    let stop = w.pos;
    check(&w, start, stop).unwrap();
}

#[test]
fn a_timeline_switch_inside_the_range_passes() {
    // A cascading standby's WAL: timeline 1, then timeline 2 from a later page on, in a file
    // named with timeline 2; the record chain continues across the switch.
    let mut w = Writer::new(0x300_0000);
    let start = w.record(100, 0, 0);
    w.record(9000, 10, 0);
    w.fill_to(0x300_0000 + 4 * BLCKSZ as u64 - 64);
    w.tli = 2;
    w.record(3000, 10, 0);
    w.record(20_000, 10, 0);
    let stop = w.pos;
    assert_eq!(
        check(&w, start, stop).unwrap().records as usize,
        w.records.len()
    );
    // Pages of timeline 2 in a file of timeline 1: not valid.
    let mut c = RecordChecker::new(
        Lsn(start),
        Lsn(stop),
        WalSegSize::new(SEG).unwrap(),
        BLCKSZ as u32,
    );
    let e = w
        .pages()
        .map(|(l, p)| c.feed_page(l, p, TimelineId(1)))
        .find_map(Result::err)
        .unwrap();
    assert!(
        matches!(e.what, RecordErrorKind::PageTimeline { .. }),
        "{e}"
    );
}

#[test]
fn pages_must_come_in_order() {
    let (w, start, stop) = sample();
    let mut c = RecordChecker::new(
        Lsn(start),
        Lsn(stop),
        WalSegSize::new(SEG).unwrap(),
        BLCKSZ as u32,
    );
    let mut pages = w.pages();
    let (l, p) = pages.next().unwrap();
    c.feed_page(l, p, TimelineId(1)).unwrap();
    pages.next();
    let (l, p) = pages.next().unwrap();
    assert!(c.feed_page(l, p, TimelineId(1)).is_err());
    // After an error, nothing more is reported.
    assert!(c.is_done());
    assert!(c.finish(Lsn(stop)).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any byte of any record in the range, changed, is caught.
    #[test]
    fn every_record_byte_is_covered(pick in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let (w, start, stop) = sample();
        let in_range: Vec<usize> = w
            .record_bytes
            .iter()
            .copied()
            .filter(|&o| (start - w.base) as usize <= o && o < (stop - w.base) as usize)
            .collect();
        let o = in_range[pick.index(in_range.len())];
        let mut b = Writer::new(w.base);
        b.data = w.data.clone();
        b.data[o] ^= xor;
        prop_assert!(check(&b, start, stop).is_err());
    }

    /// Arbitrary bytes never panic the checker.
    #[test]
    fn garbage_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..(4 * BLCKSZ)),
        start in 0u64..(5 * BLCKSZ as u64),
        len in 0u64..(5 * BLCKSZ as u64),
        seed in any::<u64>(),
    ) {
        let base = (seed % 4) * SEG;
        let mut pages = bytes.clone();
        pages.resize(bytes.len().div_ceil(BLCKSZ) * BLCKSZ, 0);
        let mut c = RecordChecker::new(
            Lsn(base + start),
            Lsn(base + start + len),
            WalSegSize::new(SEG).unwrap(),
            BLCKSZ as u32,
        );
        for (i, p) in pages.chunks(BLCKSZ).enumerate() {
            let _ = c.feed_page(Lsn(base + (i * BLCKSZ) as u64), p, TimelineId((seed >> 8) as u32 % 3));
        }
        let _ = c.finish(Lsn(base + pages.len() as u64));
    }

    /// Garbage after valid WAL headers (records with random lengths and contents).
    #[test]
    fn random_records_never_panic(body in prop::collection::vec(any::<u8>(), 3 * BLCKSZ), flips in prop::collection::vec(any::<u32>(), 0..8)) {
        let (w, start, stop) = sample();
        let mut data = w.data.clone();
        let s = (start - w.base) as usize;
        data[s..s + body.len()].copy_from_slice(&body);
        for f in flips {
            let i = f as usize % data.len();
            data[i] ^= (f >> 24) as u8 | 1;
        }
        let mut b = Writer::new(w.base);
        b.data = data;
        let _ = check(&b, start, stop);
    }
}

/// Feeds every page to a [`RecordChecker::scan_past`] scan; returns (mark reached, records past).
fn scan(w: &Writer, start: u64, mark: u64) -> (bool, u64) {
    let mut c = RecordChecker::scan_past(
        Lsn(start),
        Lsn(mark),
        WalSegSize::new(SEG).unwrap(),
        BLCKSZ as u32,
    );
    for (lsn, page) in w.pages() {
        if c.feed_page(lsn, page, TimelineId(w.tli)).is_err() || c.is_done() {
            break;
        }
    }
    (c.mark_reached(), c.records_past_mark())
}

/// The WAL of a standby's backup can end with the record at which recovery becomes consistent
/// (here a switch record: its end is the segment's end), with nothing after it.
#[test]
fn scan_past_tells_whether_a_record_follows_the_mark() {
    let mut w = Writer::new(0x300_0000);
    let start = w.record(100, 0, 0);
    w.record(5000, 10, 0);
    let switch = w.record(30, RM_XLOG_ID, XLOG_SWITCH);
    let seg_end = w.pos;
    assert_eq!(seg_end % SEG, 0);
    // The mark is the switch record's end (the segment's end): nothing follows.
    assert_eq!(scan(&w, start, seg_end), (true, 0));
    // A mark inside the switch record's span: the switch reaches it, nothing follows.
    assert_eq!(scan(&w, start, switch + 8), (true, 0));
    // A mark before the switch: the switch record follows the record that reaches it.
    assert_eq!(scan(&w, start, switch), (true, 1));
    // A mark past the end of the WAL is never reached.
    assert_eq!(scan(&w, start, seg_end + 1), (false, 0));

    // One more record after the switch, in the next segment: it follows.
    w.record(40, 10, 0);
    assert_eq!(scan(&w, start, seg_end), (true, 1));
    // A damaged record after the mark does not count.
    let last = (w.records[w.records.len() - 1] - w.base) as usize;
    w.data[last + 30] ^= 0xFF;
    assert_eq!(scan(&w, start, seg_end), (true, 0));
}

/// A range check with a mark: (result of finish, mark reached, record past the mark, stats).
fn check_marked(
    w: &Writer,
    start: u64,
    stop: u64,
    mark: u64,
) -> (Result<RecordStats, RecordError>, bool, u64) {
    let mut c = RecordChecker::new(
        Lsn(start),
        Lsn(stop),
        WalSegSize::new(SEG).unwrap(),
        BLCKSZ as u32,
    )
    .with_mark(Lsn(mark));
    for (lsn, page) in w.pages() {
        if let Err(e) = c.feed_page(lsn, page, TimelineId(w.tli)) {
            return (Err(e), c.mark_reached(), c.records_past_mark());
        }
    }
    let r = c.finish(Lsn(w.base + w.data.len() as u64));
    (r, c.mark_reached(), c.records_past_mark())
}

/// One pass both checks the backup's records and answers what the restore needs: whether a
/// record follows the one that makes recovery consistent, reading past the stop for it.
#[test]
fn a_range_check_with_a_mark_reads_on_to_the_next_record() {
    let (w, start, stop) = sample();
    let plain = check(&w, start, stop).unwrap();
    // The mark at the stop: the record after the stop follows; the range's stats unchanged.
    let (r, reached, past) = check_marked(&w, start, stop, stop);
    assert_eq!((r.unwrap(), reached, past), (plain, true, 1));

    // The WAL ends at the stop (zeros after it): no record follows, and that is no error.
    let mut z = Writer::new(w.base);
    z.data = w.data.clone();
    let cut = (stop - w.base) as usize;
    z.data[cut..].fill(0);
    let (r, reached, past) = check_marked(&z, start, stop, stop);
    assert_eq!((r.unwrap(), reached, past), (plain, true, 0));
    // Nor is a damaged record after the stop: it does not count.
    let mut d = Writer::new(w.base);
    d.data = w.data.clone();
    d.data[cut + 30] ^= 0xFF;
    let (r, reached, past) = check_marked(&d, start, stop, stop);
    assert_eq!((r.unwrap(), reached, past), (plain, true, 0));
    // Without a mark, the WAL after the stop is not read at all.
    assert_eq!(check(&d, start, stop).unwrap(), plain);

    // A mark inside the range: the check still reads every record to the stop (a damaged
    // record after the mark's next one is found).
    let mark = w.records[3];
    let (r, reached, past) = check_marked(&w, start, stop, mark);
    assert_eq!((r.unwrap(), reached, past), (plain, true, 1));
    let late = (w.records[w.records.len() - 2] - w.base) as usize;
    let mut d = Writer::new(w.base);
    d.data = w.data.clone();
    d.data[late + 30] ^= 0xFF;
    let (r, _, _) = check_marked(&d, start, stop, mark);
    assert!(r.is_err(), "a damaged record before the stop passed");

    // A mark past the WAL's end is never reached; the range still passes.
    let end = w.base + w.data.len() as u64;
    let (r, reached, past) = check_marked(&w, start, stop, end + 1);
    assert_eq!((r.unwrap(), reached, past), (plain, false, 0));
}

proptest! {
    /// Whatever the mark, the scan never panics and at most one record past it is counted.
    #[test]
    fn scan_past_never_panics(mark in 0x300_0000u64..0x320_0000, cut in 0usize..3_000_000) {
        let (mut w, start, _) = sample();
        let cut = cut.min(w.data.len());
        w.data[cut..].fill(0);
        let (_, past) = scan(&w, start, mark);
        prop_assert!(past <= 1);
    }
}

/// The payload of a `CREATE TABLESPACE` record as `XLogRecordAssemble` lays it out: optional
/// origin and top-level xid headers, then the main data (`xl_tblspc_create_rec`).
fn tblspc_payload(oid: u32, path: &[u8], long: bool, extra_headers: bool) -> Vec<u8> {
    let mut data = oid.to_le_bytes().to_vec();
    data.extend_from_slice(path);
    data.push(0);
    let mut p = Vec::new();
    if extra_headers {
        p.extend_from_slice(&[253, 1, 0]);
        p.extend_from_slice(&[252, 7, 0, 0, 0]);
    }
    if long {
        p.push(254);
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    } else {
        p.push(255);
        p.push(data.len() as u8);
    }
    p.extend_from_slice(&data);
    p
}

/// A tablespace created (and dropped) between a backup's start and stop is seen in its WAL,
/// with its location, also when the record crosses a page; one after the stop is not.
#[test]
fn tablespace_creations_in_the_range_are_collected() {
    let mut w = Writer::new(0x300_0000);
    let start = w.record(100, 0, 0);
    let long_path = vec![b'/'; 300];
    let a = w.record_with(
        &tblspc_payload(16390, b"/srv/ts one", false, false),
        5,
        0x00,
    );
    // XLOG_TBLSPC_DROP of it: not a creation.
    w.record_with(&16390u32.to_le_bytes(), 5, 0x10);
    // Place the next one across a page boundary.
    let page_end = (w.pos / BLCKSZ as u64 + 1) * BLCKSZ as u64;
    w.fill_to(page_end - 64);
    let b = w.record_with(&tblspc_payload(16391, &long_path, true, true), 5, 0x00);
    let c = w.record_with(&tblspc_payload(16392, b"", false, false), 5, 0x00);
    let stop = w.pos;
    w.record_with(&tblspc_payload(16393, b"/after", false, false), 5, 0x00);
    let mut k = RecordChecker::new(
        Lsn(start),
        Lsn(stop),
        WalSegSize::new(SEG).unwrap(),
        BLCKSZ as u32,
    );
    for (lsn, page) in w.pages() {
        k.feed_page(lsn, page, TimelineId(1)).unwrap();
    }
    let got: Vec<(u64, u32, Vec<u8>)> = k
        .tablespaces_created()
        .iter()
        .map(|t| (t.lsn.0, t.oid, t.location.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (a, 16390, b"/srv/ts one".to_vec()),
            (b, 16391, long_path),
            (c, 16392, Vec::new()),
        ]
    );
}

proptest! {
    /// Decoding a tablespace record's payload never panics.
    #[test]
    fn tablespace_create_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = tablespace_create(Lsn(0), &payload);
    }
}
