//! Reading whole WAL records out of WAL pages, across page and segment boundaries, as the
//! server's reader does (`XLogDecodeNextRecord`, `XLogReaderValidatePageHeader`,
//! `ValidXLogRecordHeader` and `XLogFindNextRecord` in `src/backend/access/transam/xlogreader.c`).
//! Pure: the caller feeds pages in LSN order (whole segments with [`WalReader::feed_segment`]);
//! each complete record is handed out as bytes, ready for [`super::decode::decode_record`].
//!
//! Facts (`src/include/access/xlog_internal.h`, `xlogrecord.h`):
//! * every page starts with a header: 40 bytes on a segment's first page (`XLP_LONG_HEADER`),
//!   24 on the others; `xlp_pageaddr` is the page's own LSN; `xlp_rem_len` is how many bytes
//!   of a record continued from the previous page follow the header (`XLP_FIRST_IS_CONTRECORD`);
//! * a record starts at the MAXALIGN (8) boundary after the one before; its header may be
//!   split between two pages (`XLogDecodeNextRecord`); a record is `xl_tot_len` bytes (at
//!   least 24) and continues on as many pages as it needs;
//! * reading from a page that starts inside a record (the middle of the WAL, a segment's first
//!   page), the continuation is skipped (`XLogFindNextRecord`);
//! * after an `XLOG_SWITCH` record the rest of the segment is unused;
//! * `XLP_FIRST_IS_OVERWRITE_CONTRECORD` (15+, and 2021 minor releases of 10–14): the record
//!   that was continuing onto this page was abandoned at a crash; a new record starts after the
//!   header;
//! * `xl_prev` of each record is the start of the one before.

use serde::Serialize;

use super::decode::{RECORD_HEADER_SIZE, header_fields};
use crate::types::{Lsn, TimelineId, WalSegSize};
use crate::wal::{
    LONG_HEADER_SIZE, SHORT_HEADER_SIZE, WalPageHeader, XLP_ALL_FLAGS, XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
};

/// `MAXALIGN` on every platform PostgreSQL writes WAL on.
const MAXALIGN: u64 = 8;
/// Largest record accepted (`XLogRecordMaxSize` is 1020 MB in 16+; 1 GB allocations before).
const MAX_RECORD_SIZE: u32 = 1 << 30;
const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;

fn maxalign(n: u64) -> u64 {
    n.div_ceil(MAXALIGN).saturating_mul(MAXALIGN)
}

/// A whole record as read: `lsn` is where it starts, `end` where it ends (not aligned), `next`
/// where the next record starts (`EndRecPtr`: the MAXALIGNed end, or the segment's end after
/// a switch record), `bytes` its `xl_tot_len` bytes (header included, page headers removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub lsn: Lsn,
    pub end: Lsn,
    pub next: Lsn,
    pub bytes: &'a [u8],
}

/// What the reader does after handing out a record ([`WalReader::feed_page_flow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Read no further: the reader is done.
    Stop,
}

/// What went wrong reading, and where (`lsn`: the record's start, or the page's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("WAL at {lsn}: {what}")]
pub struct ReadError {
    pub lsn: Lsn,
    pub what: ReadErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReadErrorKind {
    #[error("page fed out of order or of the wrong size (expected the page at {expected})")]
    OutOfOrder { expected: Lsn },
    #[error(
        "zero-filled page where WAL should be: the end of the WAL written so far, or a segment not completely written"
    )]
    ZeroPage,
    #[error("page magic 0x{found:04X} differs from the WAL before it (0x{expected:04X})")]
    PageMagic { found: u16, expected: u16 },
    #[error("invalid page flags 0x{info:04X}")]
    PageInfo { info: u16 },
    #[error("the page says it is at {found}: a recycled segment (the end of the WAL), or damage")]
    PageAddress { found: Lsn },
    #[error(
        "page timeline {found} is not valid after timeline {prev} in a file of timeline {file}"
    )]
    PageTimeline {
        found: TimelineId,
        prev: TimelineId,
        file: TimelineId,
    },
    #[error(
        "the record at {record} continues on the page at {page}, but that page has no contrecord flag (xlp_info 0x{info:04X})"
    )]
    NoContrecord { record: Lsn, page: Lsn, info: u16 },
    #[error(
        "the page at {page} says {rem_len} bytes of a continued record follow, but the record at {record} has {expected} bytes left"
    )]
    ContrecordLength {
        record: Lsn,
        page: Lsn,
        rem_len: u32,
        expected: u32,
    },
    #[error("a record should start here, but the page says it continues an earlier record")]
    UnexpectedContrecord,
    #[error(
        "reading was to begin at a record here, but this is inside a record continued from an earlier page"
    )]
    StartInsideRecord,
    #[error("no record here (length 0): the end of the WAL written so far")]
    NoRecord,
    #[error("invalid record length {len}: at least 24 and at most 1 GB")]
    RecordLength { len: u32 },
    #[error("record with incorrect prev-link {found} (expected {expected})")]
    PrevLink { found: Lsn, expected: String },
}

/// Counts of what was read, so tests can prove which cases they covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReaderStats {
    pub records: u64,
    /// Records continued onto a later page of the same segment.
    pub across_pages: u64,
    /// Records continued into the next segment.
    pub across_segments: u64,
    /// Records whose 24-byte header itself was split between two pages.
    pub split_headers: u64,
    /// `XLOG_SWITCH` records.
    pub switches: u64,
    /// Continuations skipped because reading began inside a record.
    pub skipped_continuations: u64,
    /// Records abandoned at a crash (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`).
    pub overwritten: u64,
}

#[derive(Debug, Clone)]
enum State {
    /// Before the first record: reading starts at `at`, skipping a continuation found there.
    Start { at: Lsn },
    /// The next record starts at `at` (maybe on a later page).
    Next { at: Lsn },
    /// Inside the record starting at `start`: `buf` holds what was read; `tot` once known.
    In { start: Lsn, tot: Option<u32> },
    /// The stop was reached.
    Done,
    /// An error was reported; later pages are ignored.
    Failed,
}

/// Reads the records starting in `[start, stop)` from pages fed in LSN order.
#[derive(Debug, Clone)]
pub struct WalReader {
    seg_size: u64,
    page_size: u64,
    stop: Option<Lsn>,
    magic: Option<u16>,
    tli: TimelineId,
    next_page: Option<Lsn>,
    prev: Option<Lsn>,
    state: State,
    buf: Vec<u8>,
    /// The current record's `xl_prev` was checked (its header is complete).
    header_checked: bool,
    /// The start is a record's start ([`WalReader::start_is_record`]), not a page boundary
    /// where a continuation may be skipped.
    strict_start: bool,
    stats: ReaderStats,
}

impl WalReader {
    /// A reader from `start`: the start of a record, or any page boundary (a segment's start):
    /// a record continued onto that page from before is skipped. `page_size` is the WAL page
    /// size (`xlp_xlog_blcksz`, 8192 by default).
    pub fn new(start: Lsn, seg_size: WalSegSize, page_size: u32) -> Self {
        WalReader {
            seg_size: seg_size.bytes(),
            page_size: u64::from(page_size.max(SHORT_HEADER_SIZE as u32 * 2)),
            stop: None,
            magic: None,
            tli: TimelineId(0),
            next_page: None,
            prev: None,
            state: State::Start { at: start },
            buf: Vec::new(),
            header_checked: false,
            strict_start: false,
            stats: ReaderStats::default(),
        }
    }

    /// The start is where a record begins (a redo point, a record's `EndRecPtr`): a
    /// continuation of an earlier record covering it is an error (`StartInsideRecord`), not
    /// skipped.
    pub fn start_is_record(mut self) -> Self {
        self.strict_start = true;
        self
    }

    /// Records starting at or after `stop` are not read (nor are the pages holding them
    /// checked): the reader is done once it gets there.
    pub fn with_stop(mut self, stop: Lsn) -> Self {
        self.stop = Some(stop);
        self
    }

    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// True once the stop was reached or an error reported: later pages need not be fed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    /// Where the next record would start, or the start of the record being read.
    pub fn position(&self) -> Option<Lsn> {
        match self.state {
            State::Start { at } | State::Next { at } => Some(at),
            State::In { start, .. } => Some(start),
            State::Done | State::Failed => None,
        }
    }

    /// Whether a record begun on a page fed is still incomplete.
    pub fn in_record(&self) -> bool {
        matches!(self.state, State::In { .. })
    }

    /// The record begun on a page fed and still incomplete: its start and its bytes read so
    /// far (page headers removed).
    pub fn partial_record(&self) -> Option<(Lsn, &[u8])> {
        match self.state {
            State::In { start, .. } => Some((start, &self.buf)),
            _ => None,
        }
    }

    /// The record begun on a page fed and still incomplete: its start, and its `xl_tot_len`
    /// once read.
    pub fn record_in_progress(&self) -> Option<(Lsn, Option<u32>)> {
        match self.state {
            State::In { start, tot } => Some((start, tot)),
            _ => None,
        }
    }

    /// Feeds a whole segment (or a run of whole pages) starting at `first_page`.
    pub fn feed_segment(
        &mut self,
        first_page: Lsn,
        bytes: &[u8],
        file_tli: TimelineId,
        on_record: &mut dyn FnMut(RawRecord<'_>),
    ) -> Result<(), ReadError> {
        let size = usize::try_from(self.page_size).unwrap_or(usize::MAX);
        let mut page_lsn = first_page;
        for page in bytes.chunks(size) {
            if self.is_done() {
                break;
            }
            self.feed_page(page_lsn, page, file_tli, on_record)?;
            page_lsn = Lsn(page_lsn.0.saturating_add(self.page_size));
        }
        Ok(())
    }

    /// Feeds the page at `page_lsn` from a file of timeline `file_tli`; every record completed
    /// on it is passed to `on_record`. The first error stops the reader.
    pub fn feed_page(
        &mut self,
        page_lsn: Lsn,
        page: &[u8],
        file_tli: TimelineId,
        on_record: &mut dyn FnMut(RawRecord<'_>),
    ) -> Result<(), ReadError> {
        self.feed_page_flow(page_lsn, page, file_tli, &mut |r| {
            on_record(r);
            Flow::Continue
        })
    }

    /// [`WalReader::feed_page`] where `on_record` says whether to read on.
    pub fn feed_page_flow(
        &mut self,
        page_lsn: Lsn,
        page: &[u8],
        file_tli: TimelineId,
        on_record: &mut dyn FnMut(RawRecord<'_>) -> Flow,
    ) -> Result<(), ReadError> {
        if self.is_done() {
            return Ok(());
        }
        let r = self.feed_inner(page_lsn, page, file_tli, on_record);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn feed_inner(
        &mut self,
        page_lsn: Lsn,
        page: &[u8],
        file_tli: TimelineId,
        on_record: &mut dyn FnMut(RawRecord<'_>) -> Flow,
    ) -> Result<(), ReadError> {
        let ps = self.page_size;
        let at_err = |lsn, what| Err(ReadError { lsn, what });
        // The first page fed must hold the start.
        let first = match self.state {
            State::Start { at } => at.0 - at.0 % ps,
            _ => page_lsn.0 - page_lsn.0 % ps,
        };
        let expected = self.next_page.unwrap_or(Lsn(first));
        if page_lsn != expected || page.len() as u64 != ps || page_lsn.0 % ps != 0 {
            return at_err(page_lsn, ReadErrorKind::OutOfOrder { expected });
        }
        let page_end = page_lsn.0.saturating_add(ps);
        self.next_page = Some(Lsn(page_end));
        match self.state {
            State::Start { at } | State::Next { at } if at.0 >= page_end => return Ok(()),
            State::Start { at } | State::Next { at } if self.stop.is_some_and(|s| at >= s) => {
                self.state = State::Done;
                return Ok(());
            }
            _ => {}
        }
        let (hsize, info, rem_len) = self.check_page_header(page_lsn, page, file_tli)?;
        let data_start = page_lsn.0 + hsize as u64;
        let overwrite = info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
        let cont = info & XLP_FIRST_IS_CONTRECORD != 0;
        let mut off = hsize;
        match self.state {
            State::Start { at } => {
                let at = at.0.max(data_start);
                let cont_end = data_start.saturating_add(maxalign(u64::from(rem_len)));
                if self.strict_start && cont && at < cont_end {
                    return at_err(Lsn(at), ReadErrorKind::StartInsideRecord);
                }
                if cont && !overwrite && at == data_start {
                    // Reading begins inside a record: skip its continuation.
                    let room = ps - hsize as u64;
                    if u64::from(rem_len) >= room {
                        self.state = State::Start { at: Lsn(page_end) };
                        return Ok(());
                    }
                    self.stats.skipped_continuations += 1;
                    off = (maxalign(data_start + u64::from(rem_len)) - page_lsn.0) as usize;
                } else {
                    off = (at - page_lsn.0) as usize;
                }
                self.state = State::Next {
                    at: Lsn(page_lsn.0 + off as u64),
                };
            }
            State::Next { at } => {
                if at.0 <= data_start && cont && !overwrite {
                    return at_err(Lsn(data_start), ReadErrorKind::UnexpectedContrecord);
                }
                let at = at.0.max(data_start);
                off = (at - page_lsn.0) as usize;
                self.state = State::Next { at: Lsn(at) };
            }
            State::In { start, tot } => {
                if overwrite {
                    // Abandoned at a crash; the record here follows the one before it.
                    self.stats.overwritten += 1;
                    self.state = State::Next {
                        at: Lsn(data_start),
                    };
                } else if !cont {
                    return at_err(
                        start,
                        ReadErrorKind::NoContrecord {
                            record: start,
                            page: page_lsn,
                            info,
                        },
                    );
                } else {
                    let got = self.buf.len() as u64;
                    // Before the length is known (a split header) only `rem_len` says it.
                    let expected = tot.map_or(u64::from(rem_len), |t| u64::from(t) - got);
                    if rem_len == 0 || u64::from(rem_len) != expected {
                        return at_err(
                            start,
                            ReadErrorKind::ContrecordLength {
                                record: start,
                                page: page_lsn,
                                rem_len,
                                expected: expected as u32,
                            },
                        );
                    }
                    if tot.is_none() {
                        self.state = State::In {
                            start,
                            tot: Some(rem_len.saturating_add(got as u32)),
                        };
                    }
                }
            }
            State::Done | State::Failed => return Ok(()),
        }
        let psz = ps as usize;
        loop {
            match self.state {
                State::Next { at } => {
                    if self.stop.is_some_and(|s| at >= s) {
                        self.state = State::Done;
                        return Ok(());
                    }
                    if at.0 >= page_end {
                        return Ok(());
                    }
                    off = (at.0 - page_lsn.0) as usize;
                    self.buf.clear();
                    self.header_checked = false;
                    // A record's header may be split across pages; its length needs 4 bytes.
                    let tot = page
                        .get(off..off + 4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    if let Some(tot) = tot {
                        check_length(at, tot)?;
                    }
                    self.state = State::In { start: at, tot };
                }
                State::In { start, tot } => {
                    let want = tot.map_or(RECORD_HEADER_SIZE as u64, u64::from);
                    let need = (want - self.buf.len() as u64) as usize;
                    let take = need.min(psz - off);
                    self.buf.extend_from_slice(&page[off..off + take]);
                    off += take;
                    if tot.is_none() && self.buf.len() >= 4 {
                        let b = &self.buf;
                        let t = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        check_length(start, t)?;
                        self.state = State::In {
                            start,
                            tot: Some(t),
                        };
                        continue;
                    }
                    if !self.header_checked && self.buf.len() >= RECORD_HEADER_SIZE {
                        self.header_checked = true;
                        self.check_prev(start)?;
                    }
                    if tot.is_none_or(|t| (self.buf.len() as u64) < u64::from(t)) {
                        // Continues on the next page.
                        return Ok(());
                    }
                    let end = page_lsn.0 + off as u64;
                    if self.finish_record(start, Lsn(end), on_record) == Flow::Stop {
                        self.state = State::Done;
                        return Ok(());
                    }
                }
                State::Start { .. } | State::Done | State::Failed => return Ok(()),
            }
        }
    }

    fn check_prev(&mut self, start: Lsn) -> Result<(), ReadError> {
        let Some((_, _, xl_prev, _, _, _)) = header_fields(&self.buf) else {
            return Ok(());
        };
        let ok = match self.prev {
            Some(p) => xl_prev == p,
            None => xl_prev < start,
        };
        if ok {
            return Ok(());
        }
        let expected = match self.prev {
            Some(p) => p.to_string(),
            None => format!("an LSN before {start}"),
        };
        Err(ReadError {
            lsn: start,
            what: ReadErrorKind::PrevLink {
                found: xl_prev,
                expected,
            },
        })
    }

    fn finish_record(
        &mut self,
        start: Lsn,
        end: Lsn,
        on_record: &mut dyn FnMut(RawRecord<'_>) -> Flow,
    ) -> Flow {
        let (ps, seg) = (self.page_size, self.seg_size);
        let last = end.0 - 1;
        self.stats.records += 1;
        if start.0 / seg != last / seg {
            self.stats.across_segments += 1;
        } else if start.0 / ps != last / ps {
            self.stats.across_pages += 1;
        }
        if start.0 / ps != last / ps && (start.0 % ps) + RECORD_HEADER_SIZE as u64 > ps {
            self.stats.split_headers += 1;
        }
        self.prev = Some(start);
        let switch = self.buf.get(17) == Some(&RM_XLOG_ID)
            && self.buf.get(16).is_some_and(|i| i & 0xF0 == XLOG_SWITCH);
        let next = if switch {
            self.stats.switches += 1;
            end.0.div_ceil(seg).saturating_mul(seg)
        } else {
            maxalign(end.0)
        };
        self.state = State::Next { at: Lsn(next) };
        on_record(RawRecord {
            lsn: start,
            end,
            next: Lsn(next),
            bytes: &self.buf,
        })
    }

    /// Checks a page header (`XLogReaderValidatePageHeader`; the long header's system id and
    /// sizes are checked per segment by [`crate::wal::check_segment_header`]); returns the
    /// header size, `xlp_info` and `xlp_rem_len`.
    fn check_page_header(
        &mut self,
        page_lsn: Lsn,
        page: &[u8],
        file_tli: TimelineId,
    ) -> Result<(usize, u16, u32), ReadError> {
        let err = |what| {
            Err(ReadError {
                lsn: page_lsn,
                what,
            })
        };
        let first_of_segment = page_lsn.0 % self.seg_size == 0;
        let hsize = if first_of_segment {
            LONG_HEADER_SIZE
        } else {
            SHORT_HEADER_SIZE
        };
        if page.len() < hsize || page[..SHORT_HEADER_SIZE].iter().all(|&b| b == 0) {
            return err(ReadErrorKind::ZeroPage);
        }
        let Ok(h) = WalPageHeader::decode(page) else {
            return err(ReadErrorKind::ZeroPage);
        };
        let expected = *self.magic.get_or_insert(h.magic);
        if h.magic != expected {
            return err(ReadErrorKind::PageMagic {
                found: h.magic,
                expected,
            });
        }
        let long = h.info & XLP_LONG_HEADER != 0;
        if h.info & !XLP_ALL_FLAGS != 0 || long != first_of_segment {
            return err(ReadErrorKind::PageInfo { info: h.info });
        }
        if h.pageaddr != page_lsn {
            return err(ReadErrorKind::PageAddress { found: h.pageaddr });
        }
        if h.tli.0 == 0 || h.tli > file_tli || h.tli < self.tli {
            return err(ReadErrorKind::PageTimeline {
                found: h.tli,
                prev: self.tli,
                file: file_tli,
            });
        }
        self.tli = h.tli;
        Ok((hsize, h.info, h.rem_len))
    }
}

fn check_length(at: Lsn, tot: u32) -> Result<(), ReadError> {
    let what = if tot == 0 {
        ReadErrorKind::NoRecord
    } else if (tot as usize) < RECORD_HEADER_SIZE || tot > MAX_RECORD_SIZE {
        ReadErrorKind::RecordLength { len: tot }
    } else {
        return Ok(());
    };
    Err(ReadError { lsn: at, what })
}

#[cfg(test)]
mod tests;
