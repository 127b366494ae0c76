//! WAL record verification: checks every record that starts in `[start, stop)` as the
//! server's reader does (`XLogDecodeNextRecord`, `ValidXLogRecordHeader`, `ValidXLogRecord`
//! and `XLogReaderValidatePageHeader` in `src/backend/access/transam/xlogreader.c`). The page
//! walk (page headers, continuations, prev-links) is [`reader::WalReader`]'s, the one walker
//! that archive-push's summaries use too; [`RecordChecker`] adds the CRC, the stop, the mark
//! and the errors verify reports. Pure: the caller feeds pages.
//!
//! Facts used (`xlogrecord.h`, `xlog_internal.h`):
//! * a record starts with `XLogRecord` (24 bytes: `xl_tot_len` u32 @0, `xl_xid` u32 @4,
//!   `xl_prev` u64 @8, `xl_info` u8 @16, `xl_rmid` u8 @17, `xl_crc` u32 @20) and is
//!   `xl_tot_len` bytes long; the next record starts at the MAXALIGN (8) of its end;
//! * a record continues on the following pages (after their headers), and so may its header:
//!   a record starts wherever at least 8 bytes are left on a page. Each page it continues on
//!   has `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` = the bytes of the record still to come;
//! * the CRC-32C covers the bytes after the header, then the header up to `xl_crc`;
//! * `xl_prev` is the start of the previous record;
//! * after an `XLOG_SWITCH` record (`RM_XLOG_ID`, info `0x40`) the rest of the segment is
//!   unused: the next record starts at the next segment (the server zero-fills those pages
//!   from 11 on, and leaves bare page headers before);
//! * `XLP_FIRST_IS_OVERWRITE_CONTRECORD` on a page means the record that was continuing there
//!   was abandoned (crash), and a new record starts after the header.

use serde::Serialize;

use crate::types::{Lsn, TimelineId, WalSegSize};

pub mod decode;
pub mod reader;
#[cfg(test)]
pub(crate) mod testwal;

pub use decode::RECORD_HEADER_SIZE;
/// `RM_XLOG_ID` and `XLOG_SWITCH` (`pg_control.h`); `XLR_INFO_MASK` is the low nibble.
pub const RM_XLOG_ID: u8 = 0;
pub const XLOG_SWITCH: u8 = 0x40;
/// `RM_TBLSPC_ID` (`rmgrlist.h`) and `XLOG_TBLSPC_CREATE` (`commands/tablespace.h`).
const RM_TBLSPC_ID: u8 = 5;
const XLOG_TBLSPC_CREATE: u8 = 0x00;
/// A tablespace record is an OID and a path of at most `MAXPGPATH` (1024) bytes: a longer one
/// is not kept (it is still checked).
const MAX_TBLSPC_RECORD: u32 = 4096;

/// What is wrong, and where: `lsn` is the record's start for record errors, the page's for
/// page errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{what}")]
pub struct RecordError {
    pub lsn: Lsn,
    pub what: RecordErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordErrorKind {
    #[error(
        "the WAL page at {page} is zero-filled where WAL up to the backup's stop LSN {stop} must be (the segment was not completely written)"
    )]
    ZeroPage { page: Lsn, stop: Lsn },
    #[error("the WAL page at {page} has magic 0x{found:04X}, the WAL before it 0x{expected:04X}")]
    PageMagic {
        page: Lsn,
        found: u16,
        expected: u16,
    },
    #[error("the WAL page at {page} has invalid xlp_info bits 0x{info:04X}")]
    PageInfo { page: Lsn, info: u16 },
    #[error("the WAL page at {page} says it is at {found} (recycled or damaged page)")]
    PageAddress { page: Lsn, found: Lsn },
    #[error(
        "the WAL page at {page} has timeline {found}, not valid after timeline {prev} in a file of timeline {file}"
    )]
    PageTimeline {
        page: Lsn,
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
        expected: u64,
    },
    #[error("a record should start at {at}, but the page says it continues an earlier record")]
    UnexpectedContrecord { at: Lsn },
    #[error(
        "the backup's start LSN {start} is inside a record continued from an earlier page, not at the start of a record"
    )]
    StartInsideRecord { start: Lsn },
    #[error(
        "no record at {at} (length 0): the WAL ends before the backup's stop LSN {stop} (zeroed or overwritten bytes)"
    )]
    NoRecord { at: Lsn, stop: Lsn },
    #[error("invalid record length at {at}: expected at least 24, got {len}")]
    RecordTooShort { at: Lsn, len: u32 },
    #[error("invalid record length at {at}: {len} bytes is more than a record can have")]
    RecordTooLong { at: Lsn, len: u32 },
    #[error(
        "record with incorrect prev-link {found} at {at} (expected {expected}): the chain of records is broken"
    )]
    PrevLink {
        at: Lsn,
        found: Lsn,
        expected: String,
    },
    #[error(
        "incorrect resource manager data checksum in record at {at} ({len} bytes, up to {end}): stored CRC-32C {stored:08x}, computed {computed:08x}"
    )]
    Crc {
        at: Lsn,
        end: Lsn,
        len: u32,
        stored: u32,
        computed: u32,
    },
    #[error(
        "the record at {at} ({len} bytes) is not complete: the WAL stored ends at {end} (damaged length, or missing WAL)"
    )]
    Incomplete { at: Lsn, len: u32, end: Lsn },
    #[error("WAL stops at {end}, before the backup's stop LSN {stop}")]
    EndsBeforeStop { end: Lsn, stop: Lsn },
    #[error("WAL page at {page} fed out of order (expected {expected}): internal error")]
    OutOfOrder { page: Lsn, expected: Lsn },
}

/// A `CREATE TABLESPACE` record (`xl_tblspc_create_rec` in `commands/tablespace.h`): replaying
/// it creates the tablespace's directories at `location`, an absolute path on the host that
/// replays it, or inside `pg_tblspc` when it is empty (an in-place tablespace, 15+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TablespaceCreate {
    pub lsn: Lsn,
    pub oid: u32,
    /// The path as the record holds it (bytes; not necessarily UTF-8; shown lossily in JSON).
    #[serde(serialize_with = "lossy_text")]
    pub location: Vec<u8>,
}

fn lossy_text<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// The main data of a record without block references, after its header: the optional origin
/// (`XLR_BLOCK_ID_ORIGIN`, 253) and top-level xid (`XLR_BLOCK_ID_TOPLEVEL_XID`, 252) headers,
/// then `XLR_BLOCK_ID_DATA_SHORT` (255, one length byte) or `XLR_BLOCK_ID_DATA_LONG` (254, four)
/// (`XLogRecordAssemble` in `src/backend/access/transam/xloginsert.c`).
fn main_data(payload: &[u8]) -> Option<&[u8]> {
    let mut p = 0usize;
    loop {
        match *payload.get(p)? {
            253 => p += 3,
            252 => p += 5,
            255 => {
                let len = usize::from(*payload.get(p + 1)?);
                return payload.get(p + 2..p + 2 + len);
            }
            254 => {
                let b = payload.get(p + 1..p + 5)?;
                let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                return payload.get(p + 5..p.checked_add(5)?.checked_add(len)?);
            }
            _ => return None,
        }
    }
}

/// Decodes a `CREATE TABLESPACE` record's payload (everything after the record header).
pub fn tablespace_create(lsn: Lsn, payload: &[u8]) -> Option<TablespaceCreate> {
    let data = main_data(payload)?;
    let oid = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
    let path = data.get(4..)?;
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    Some(TablespaceCreate {
        lsn,
        oid,
        location: path[..end].to_vec(),
    })
}

/// Records checked so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecordStats {
    pub records: u64,
    pub switches: u64,
    /// Bytes of record data (headers and payloads) checked.
    pub bytes: u64,
}

/// Checks the records of `[start, stop)` as pages are fed in LSN order: the walking (page
/// headers, continuations, prev-links) is [`reader::WalReader`]'s; this adds each record's
/// CRC, the stop, the mark ([`RecordChecker::with_mark`]) and what verify and backup report.
#[derive(Debug, Clone)]
pub struct RecordChecker {
    reader: reader::WalReader,
    start: Lsn,
    blcksz: u64,
    /// The next page expected (pages must come in order without gaps; those before the
    /// start's page are skipped).
    next_page: Option<Lsn>,
    seen: Seen,
    /// The first error reported (later pages are ignored).
    failed: bool,
}

/// What the records read so far tell (kept apart from the reader so its callback may fill it).
#[derive(Debug, Clone)]
struct Seen {
    stop: Lsn,
    stats: RecordStats,
    /// [`RecordChecker::scan_past`]: the record ending at or after this LSN (`EndRecPtr`, the
    /// aligned end; a switch record's is its segment's end) was read when `mark_reached`.
    mark: Option<Lsn>,
    mark_reached: bool,
    /// Complete, valid records read after the marked one (0 or 1: reading stops at one).
    past_mark: u64,
    /// Reading past the stop for the record after the mark ([`RecordChecker::with_mark`]):
    /// there an unreadable record is the end of the WAL, not an error.
    beyond: bool,
    /// Every record wanted was read.
    done: bool,
    /// A record's CRC did not match (the reader is told to stop).
    crc_error: Option<RecordError>,
    tablespaces_created: Vec<TablespaceCreate>,
}

impl Seen {
    /// Looks at one whole record; says whether to read on.
    fn record(&mut self, r: reader::RawRecord<'_>) -> reader::Flow {
        use reader::Flow;
        let Some((tot, _, _, info, rmid, stored)) = decode::header_fields(r.bytes) else {
            return Flow::Stop;
        };
        let computed = decode::record_crc(r.bytes).unwrap_or(0);
        if computed != stored {
            if self.beyond {
                // The end of the WAL past the stop.
                self.done = true;
            } else {
                self.crc_error = Some(RecordError {
                    lsn: r.lsn,
                    what: RecordErrorKind::Crc {
                        at: r.lsn,
                        end: r.end,
                        len: tot,
                        stored,
                        computed,
                    },
                });
            }
            return Flow::Stop;
        }
        if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
            self.stats.switches += 1;
        }
        if !self.beyond {
            self.stats.records += 1;
            self.stats.bytes += u64::from(tot);
            if rmid == RM_TBLSPC_ID && info & 0xF0 == XLOG_TBLSPC_CREATE && tot <= MAX_TBLSPC_RECORD
            {
                let payload = r.bytes.get(RECORD_HEADER_SIZE..).unwrap_or_default();
                if let Some(t) = tablespace_create(r.lsn, payload) {
                    self.tablespaces_created.push(t);
                }
            }
        }
        if let Some(mark) = self.mark {
            if self.mark_reached {
                self.past_mark = 1;
                if self.beyond {
                    self.done = true;
                    return Flow::Stop;
                }
                // Within the range: on to the stop.
            } else {
                self.mark_reached = r.next >= mark;
            }
        }
        self.at_next(r.next)
    }

    /// The next record starts at `next`: at or past the stop, reading ends, unless the record
    /// after the mark is still wanted (see `with_mark`).
    fn at_next(&mut self, next: Lsn) -> reader::Flow {
        if next >= self.stop && !self.beyond {
            if self.mark.is_some() && self.past_mark == 0 {
                self.beyond = true;
            } else {
                self.done = true;
                return reader::Flow::Stop;
            }
        }
        reader::Flow::Continue
    }
}

impl RecordChecker {
    /// A checker for the records from `start` (where a record begins: the backup's redo point)
    /// up to `stop` (the end of the backup's last record), with pages of `blcksz` bytes
    /// (`xlp_xlog_blcksz` of the long header) in segments of `seg_size`.
    pub fn new(start: Lsn, stop: Lsn, seg_size: WalSegSize, blcksz: u32) -> Self {
        RecordChecker {
            reader: reader::WalReader::new(start, seg_size, blcksz).start_is_record(),
            start,
            blcksz: u64::from(blcksz.max(1)),
            next_page: None,
            seen: Seen {
                stop,
                stats: RecordStats::default(),
                mark: None,
                mark_reached: false,
                past_mark: 0,
                beyond: false,
                done: start >= stop,
                crc_error: None,
                tablespaces_created: Vec::new(),
            },
            failed: false,
        }
    }

    /// A checker that reads records from `start` (where a record begins) with no stop, to find
    /// out whether a complete, valid record follows the first record whose end (`EndRecPtr`:
    /// `MAXALIGN`ed, the segment's end for a switch record) is at or after `mark`. It is done as
    /// soon as one does; the first unreadable record (the end of the WAL) is reported as an
    /// error like any other, and [`RecordChecker::records_past_mark`] says what was found.
    pub fn scan_past(start: Lsn, mark: Lsn, seg_size: WalSegSize, blcksz: u32) -> Self {
        // An empty range: everything read is past its stop.
        Self::new(start, start, seg_size, blcksz).with_mark(mark)
    }

    /// This checker, finding out too whether a complete, valid record follows the first
    /// record whose end reaches `mark` (as [`RecordChecker::scan_past`] does): one pass over
    /// the WAL both checks the range and answers that. When the answer lies past the stop,
    /// the checker reads on after it; there the first unreadable record is the end of the WAL
    /// (not an error: nothing past the stop is needed), and the records read are not counted
    /// in [`RecordChecker::stats`] nor looked at for `CREATE TABLESPACE`.
    pub fn with_mark(mut self, mark: Lsn) -> Self {
        self.seen.mark = Some(mark);
        if self.seen.done {
            // An empty range: reading is for the mark only.
            self.seen.done = false;
            self.seen.beyond = true;
        }
        self
    }

    /// The `CREATE TABLESPACE` records among the records checked: replaying the backup's WAL
    /// creates these tablespaces' directories at their locations.
    pub fn tablespaces_created(&self) -> &[TablespaceCreate] {
        &self.seen.tablespaces_created
    }

    /// Whether the record ending at or after the mark ([`RecordChecker::scan_past`],
    /// [`RecordChecker::with_mark`]) was read.
    pub fn mark_reached(&self) -> bool {
        self.seen.mark_reached
    }

    /// Complete, valid records read after the one that reached the mark (0 or 1: the scan is
    /// done after the first).
    pub fn records_past_mark(&self) -> u64 {
        self.seen.past_mark
    }

    /// True once every record starting before the stop LSN was checked, and with a mark once
    /// the record after it was read or the WAL past the stop ended (or an error was reported):
    /// later pages need not be fed.
    pub fn is_done(&self) -> bool {
        self.failed || self.seen.done
    }

    /// The page size this checker reads.
    pub fn blcksz(&self) -> u64 {
        self.blcksz
    }

    pub fn stats(&self) -> RecordStats {
        self.seen.stats
    }

    /// Feeds the page at `page_lsn` (pages in LSN order, each `blcksz` bytes) from a file of
    /// timeline `file_tli`. Pages before the start's page, after a switch record up to the next
    /// segment, and after the end are ignored. The first error stops the check.
    pub fn feed_page(
        &mut self,
        page_lsn: Lsn,
        page: &[u8],
        file_tli: TimelineId,
    ) -> Result<(), RecordError> {
        if self.is_done() {
            return Ok(());
        }
        let r = self.feed_inner(page_lsn, page, file_tli);
        if r.is_err() {
            if self.seen.beyond {
                // The end of the WAL past the stop.
                self.seen.done = true;
                return Ok(());
            }
            self.failed = true;
        }
        r
    }

    fn feed_inner(
        &mut self,
        page_lsn: Lsn,
        page: &[u8],
        file_tli: TimelineId,
    ) -> Result<(), RecordError> {
        let blcksz = self.blcksz;
        let out_of_order = |expected| RecordError {
            lsn: page_lsn,
            what: RecordErrorKind::OutOfOrder {
                page: page_lsn,
                expected,
            },
        };
        if let Some(expected) = self.next_page {
            if page_lsn != expected {
                return Err(out_of_order(expected));
            }
        }
        if page.len() as u64 != blcksz || page_lsn.0 % blcksz != 0 {
            return Err(out_of_order(Lsn(page_lsn.0 - page_lsn.0 % blcksz)));
        }
        let page_end = page_lsn.0.saturating_add(blcksz);
        self.next_page = Some(Lsn(page_end));
        if page_end <= self.start.0 {
            // Before the start's page: no record of the range is on it.
            return Ok(());
        }
        let seen = &mut self.seen;
        let r = self
            .reader
            .feed_page_flow(page_lsn, page, file_tli, &mut |rec| seen.record(rec));
        if let Some(e) = self.seen.crc_error.take() {
            return Err(e);
        }
        r.map_err(|e| self.record_error(e))
    }

    /// The reader's error in the terms verify reports.
    fn record_error(&self, e: reader::ReadError) -> RecordError {
        use reader::ReadErrorKind as R;
        let (lsn, stop) = (e.lsn, self.seen.stop);
        let what = match e.what {
            R::OutOfOrder { expected } => RecordErrorKind::OutOfOrder {
                page: lsn,
                expected,
            },
            R::ZeroPage => RecordErrorKind::ZeroPage { page: lsn, stop },
            R::PageMagic { found, expected } => RecordErrorKind::PageMagic {
                page: lsn,
                found,
                expected,
            },
            R::PageInfo { info } => RecordErrorKind::PageInfo { page: lsn, info },
            R::PageAddress { found } => RecordErrorKind::PageAddress { page: lsn, found },
            R::PageTimeline { found, prev, file } => RecordErrorKind::PageTimeline {
                page: lsn,
                found,
                prev,
                file,
            },
            R::NoContrecord { record, page, info } => {
                RecordErrorKind::NoContrecord { record, page, info }
            }
            R::ContrecordLength {
                record,
                page,
                rem_len,
                expected,
            } => RecordErrorKind::ContrecordLength {
                record,
                page,
                rem_len,
                expected: u64::from(expected),
            },
            R::UnexpectedContrecord => RecordErrorKind::UnexpectedContrecord { at: lsn },
            R::StartInsideRecord => {
                return RecordError {
                    lsn: self.start,
                    what: RecordErrorKind::StartInsideRecord { start: self.start },
                };
            }
            R::NoRecord => RecordErrorKind::NoRecord { at: lsn, stop },
            R::RecordLength { len } if (len as usize) < RECORD_HEADER_SIZE => {
                RecordErrorKind::RecordTooShort { at: lsn, len }
            }
            R::RecordLength { len } => RecordErrorKind::RecordTooLong { at: lsn, len },
            R::PrevLink { found, expected } => RecordErrorKind::PrevLink {
                at: lsn,
                found,
                expected,
            },
        };
        RecordError { lsn, what }
    }

    /// Call after the last page: an error if a record, or WAL up to the stop, is missing.
    pub fn finish(&mut self, end: Lsn) -> Result<RecordStats, RecordError> {
        if self.is_done() || self.seen.beyond {
            // Past the stop the WAL may end anywhere.
            self.seen.done |= !self.failed;
            return Ok(self.seen.stats);
        }
        self.failed = true;
        if let Some((start, tot)) = self.reader.record_in_progress() {
            return Err(RecordError {
                lsn: start,
                what: RecordErrorKind::Incomplete {
                    at: start,
                    len: tot.unwrap_or(0),
                    end,
                },
            });
        }
        let at = self.reader.position().unwrap_or(self.start);
        Err(RecordError {
            lsn: at,
            what: RecordErrorKind::EndsBeforeStop {
                end,
                stop: self.seen.stop,
            },
        })
    }
}

#[cfg(test)]
mod tests;
