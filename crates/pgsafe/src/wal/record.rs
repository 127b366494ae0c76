//! WAL record verification: reads a stretch of WAL page by page, as the server's reader does
//! (`XLogDecodeNextRecord`, `ValidXLogRecordHeader`, `ValidXLogRecord` and
//! `XLogReaderValidatePageHeader` in `src/backend/access/transam/xlogreader.c`), and checks
//! every record that starts in `[start, stop)`. Pure: the caller feeds pages.
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

use super::{
    LONG_HEADER_SIZE, SHORT_HEADER_SIZE, WalPageHeader, XLP_ALL_FLAGS, XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
};
use crate::types::{Lsn, TimelineId, WalSegSize};

pub mod decode;
pub mod reader;
#[cfg(test)]
mod testwal;

/// Size of `XLogRecord`, the record header.
pub const RECORD_HEADER_SIZE: usize = 24;
/// `MAXALIGN` on every platform PostgreSQL writes WAL on.
const MAXALIGN: u64 = 8;
/// `RM_XLOG_ID` and `XLOG_SWITCH` (`pg_control.h`); `XLR_INFO_MASK` is the low nibble.
pub const RM_XLOG_ID: u8 = 0;
pub const XLOG_SWITCH: u8 = 0x40;
/// `RM_TBLSPC_ID` (`rmgrlist.h`) and `XLOG_TBLSPC_CREATE` (`commands/tablespace.h`).
const RM_TBLSPC_ID: u8 = 5;
const XLOG_TBLSPC_CREATE: u8 = 0x00;
/// A tablespace record is an OID and a path of at most `MAXPGPATH` (1024) bytes: a longer one
/// is not kept (it is still checked).
const MAX_TBLSPC_RECORD: u32 = 4096;
/// Largest record the server writes (`XLogRecordMaxSize`, 1020 MB in 16+; allocation-bounded
/// to 1 GB before): a larger `xl_tot_len` is damage.
const MAX_RECORD_SIZE: u32 = 1 << 30;

fn maxalign(n: u64) -> u64 {
    n.div_ceil(MAXALIGN) * MAXALIGN
}

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

#[derive(Debug, Clone)]
enum State {
    /// The next record starts at `at` (maybe on a later page).
    Next { at: Lsn },
    /// Inside the record starting at `start`, `got` of `tot` bytes read.
    In {
        start: Lsn,
        tot: u32,
        got: u32,
        header: [u8; RECORD_HEADER_SIZE],
        crc: u32,
    },
    /// Every record starting before the stop LSN was read.
    Done,
    /// An error was reported; later pages are ignored.
    Failed,
}

/// Checks the records of `[start, stop)` as pages are fed in LSN order.
#[derive(Debug, Clone)]
pub struct RecordChecker {
    start: Lsn,
    stop: Lsn,
    seg_size: u64,
    blcksz: u64,
    magic: Option<u16>,
    /// Timeline of the last page read.
    tli: TimelineId,
    /// Start of the last record read (`None` before the first: only `xl_prev < start` can be
    /// checked, as the server's reader does for a random-access read).
    prev: Option<Lsn>,
    /// The next page expected (pages must come in order without gaps).
    next_page: Option<Lsn>,
    /// The start record has not been reached yet.
    before_start: bool,
    state: State,
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
    /// The payload of the current record while it is a `CREATE TABLESPACE` one.
    capture: Vec<u8>,
    tablespaces_created: Vec<TablespaceCreate>,
}

impl RecordChecker {
    /// A checker for the records from `start` (where a record begins: the backup's redo point)
    /// up to `stop` (the end of the backup's last record), with pages of `blcksz` bytes
    /// (`xlp_xlog_blcksz` of the long header) in segments of `seg_size`.
    pub fn new(start: Lsn, stop: Lsn, seg_size: WalSegSize, blcksz: u32) -> Self {
        let state = if start >= stop {
            State::Done
        } else {
            State::Next { at: start }
        };
        RecordChecker {
            start,
            stop,
            seg_size: seg_size.bytes(),
            blcksz: u64::from(blcksz.max(1)),
            magic: None,
            tli: TimelineId(0),
            prev: None,
            next_page: None,
            before_start: true,
            state,
            stats: RecordStats::default(),
            mark: None,
            mark_reached: false,
            past_mark: 0,
            beyond: false,
            capture: Vec::new(),
            tablespaces_created: Vec::new(),
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
        self.mark = Some(mark);
        if matches!(self.state, State::Done) {
            // An empty range: reading is for the mark only.
            self.state = State::Next { at: self.start };
        }
        self
    }

    /// The `CREATE TABLESPACE` records among the records checked: replaying the backup's WAL
    /// creates these tablespaces' directories at their locations.
    pub fn tablespaces_created(&self) -> &[TablespaceCreate] {
        &self.tablespaces_created
    }

    /// Whether the record ending at or after the mark ([`RecordChecker::scan_past`],
    /// [`RecordChecker::with_mark`]) was read.
    pub fn mark_reached(&self) -> bool {
        self.mark_reached
    }

    /// Complete, valid records read after the one that reached the mark (0 or 1: the scan is
    /// done after the first).
    pub fn records_past_mark(&self) -> u64 {
        self.past_mark
    }

    /// True once every record starting before the stop LSN was checked, and with a mark once
    /// the record after it was read or the WAL past the stop ended (or an error was reported):
    /// later pages need not be fed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    /// The page size this checker reads.
    pub fn blcksz(&self) -> u64 {
        self.blcksz
    }

    pub fn stats(&self) -> RecordStats {
        self.stats
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
            if self.beyond {
                // The end of the WAL past the stop.
                self.state = State::Done;
                return Ok(());
            }
            self.state = State::Failed;
        }
        r
    }

    /// Call after the last page: an error if a record, or WAL up to the stop, is missing.
    pub fn finish(&mut self, end: Lsn) -> Result<RecordStats, RecordError> {
        let r = match self.state {
            State::Done | State::Failed => Ok(self.stats),
            // Past the stop the WAL may end anywhere.
            State::Next { .. } | State::In { .. } if self.beyond => {
                self.state = State::Done;
                Ok(self.stats)
            }
            State::Next { at } => Err(RecordError {
                lsn: at,
                what: RecordErrorKind::EndsBeforeStop {
                    end,
                    stop: self.stop,
                },
            }),
            State::In { start, tot, .. } => Err(RecordError {
                lsn: start,
                what: RecordErrorKind::Incomplete {
                    at: start,
                    len: tot,
                    end,
                },
            }),
        };
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
    ) -> Result<(), RecordError> {
        let blcksz = self.blcksz;
        let page_err = |what| {
            Err(RecordError {
                lsn: page_lsn,
                what,
            })
        };
        if let Some(expected) = self.next_page {
            if page_lsn != expected {
                return page_err(RecordErrorKind::OutOfOrder {
                    page: page_lsn,
                    expected,
                });
            }
        }
        if page.len() as u64 != blcksz || page_lsn.0 % blcksz != 0 {
            return page_err(RecordErrorKind::OutOfOrder {
                page: page_lsn,
                expected: Lsn(page_lsn.0 - page_lsn.0 % blcksz),
            });
        }
        let page_end = page_lsn.0.saturating_add(blcksz);
        self.next_page = Some(Lsn(page_end));
        // Pages no record of the range touches: before the start, or after a switch.
        if let State::Next { at } = self.state {
            if at.0 >= page_end {
                return Ok(());
            }
        }
        let (hsize, info, rem_len) = self.check_page_header(page_lsn, page, file_tli)?;
        let data_start = page_lsn.0 + hsize as u64;
        match self.state {
            State::In {
                start, tot, got, ..
            } => {
                if info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // The record was abandoned at a crash; the server wrote a new one here,
                    // linked to the record before the abandoned one.
                    self.state = State::Next {
                        at: Lsn(data_start),
                    };
                } else if info & XLP_FIRST_IS_CONTRECORD == 0 {
                    return Err(RecordError {
                        lsn: start,
                        what: RecordErrorKind::NoContrecord {
                            record: start,
                            page: page_lsn,
                            info,
                        },
                    });
                } else if rem_len == 0 || u64::from(rem_len) != u64::from(tot - got) {
                    return Err(RecordError {
                        lsn: start,
                        what: RecordErrorKind::ContrecordLength {
                            record: start,
                            page: page_lsn,
                            rem_len,
                            expected: u64::from(tot - got),
                        },
                    });
                }
            }
            State::Next { at } => {
                let at = if at.0 < data_start {
                    Lsn(data_start)
                } else {
                    at
                };
                if info & XLP_FIRST_IS_CONTRECORD != 0 {
                    let cont_end = data_start.saturating_add(maxalign(u64::from(rem_len)));
                    if self.before_start && at.0 < cont_end {
                        return Err(RecordError {
                            lsn: self.start,
                            what: RecordErrorKind::StartInsideRecord { start: self.start },
                        });
                    }
                    if !self.before_start && at.0 == data_start {
                        return Err(RecordError {
                            lsn: at,
                            what: RecordErrorKind::UnexpectedContrecord { at },
                        });
                    }
                }
                self.state = State::Next { at };
            }
            State::Done | State::Failed => return Ok(()),
        }
        let mut off = match self.state {
            State::Next { at } => (at.0 - page_lsn.0) as usize,
            _ => hsize,
        };
        let blcksz = blcksz as usize;
        loop {
            match &mut self.state {
                State::Done | State::Failed => return Ok(()),
                State::Next { at } => {
                    let at = *at;
                    if at >= self.stop && !self.beyond {
                        // The record after the mark may still be wanted (see `with_mark`).
                        let wanted = self.mark.is_some() && self.past_mark == 0;
                        if !wanted {
                            self.state = State::Done;
                            return Ok(());
                        }
                        self.beyond = true;
                    }
                    off = (at.0 - page_lsn.0) as usize;
                    if off >= blcksz {
                        return Ok(());
                    }
                    let Some(len_bytes) = page.get(off..off + 4) else {
                        return Err(RecordError {
                            lsn: at,
                            what: RecordErrorKind::Incomplete {
                                at,
                                len: 0,
                                end: Lsn(page_end),
                            },
                        });
                    };
                    let tot = u32::from_le_bytes([
                        len_bytes[0],
                        len_bytes[1],
                        len_bytes[2],
                        len_bytes[3],
                    ]);
                    let err = |what| Err(RecordError { lsn: at, what });
                    if tot == 0 {
                        return err(RecordErrorKind::NoRecord {
                            at,
                            stop: self.stop,
                        });
                    }
                    if (tot as usize) < RECORD_HEADER_SIZE {
                        return err(RecordErrorKind::RecordTooShort { at, len: tot });
                    }
                    if tot > MAX_RECORD_SIZE {
                        return err(RecordErrorKind::RecordTooLong { at, len: tot });
                    }
                    self.before_start = false;
                    self.capture.clear();
                    self.state = State::In {
                        start: at,
                        tot,
                        got: 0,
                        header: [0; RECORD_HEADER_SIZE],
                        crc: 0,
                    };
                }
                State::In {
                    start,
                    tot,
                    got,
                    header,
                    crc,
                } => {
                    let take = ((*tot - *got) as usize).min(blcksz - off);
                    let bytes = &page[off..off + take];
                    let h = (RECORD_HEADER_SIZE.saturating_sub(*got as usize)).min(take);
                    let had_header = *got as usize >= RECORD_HEADER_SIZE;
                    if h > 0 {
                        let g = *got as usize;
                        header[g..g + h].copy_from_slice(&bytes[..h]);
                    }
                    *crc = crc32c::crc32c_append(*crc, &bytes[h..]);
                    *got += take as u32;
                    off += take;
                    let start = *start;
                    if !had_header && *got as usize >= RECORD_HEADER_SIZE {
                        let xl_prev = Lsn(u64::from_le_bytes([
                            header[8], header[9], header[10], header[11], header[12], header[13],
                            header[14], header[15],
                        ]));
                        let ok = match self.prev {
                            Some(p) => xl_prev == p,
                            None => xl_prev < start,
                        };
                        if !ok {
                            let expected = match self.prev {
                                Some(p) => p.to_string(),
                                None => format!("an LSN before {start}"),
                            };
                            return Err(RecordError {
                                lsn: start,
                                what: RecordErrorKind::PrevLink {
                                    at: start,
                                    found: xl_prev,
                                    expected,
                                },
                            });
                        }
                    }
                    if *got as usize >= RECORD_HEADER_SIZE
                        && header[17] == RM_TBLSPC_ID
                        && header[16] & 0xF0 == XLOG_TBLSPC_CREATE
                        && *tot <= MAX_TBLSPC_RECORD
                    {
                        self.capture.extend_from_slice(&bytes[h..]);
                    }
                    if *got < *tot {
                        // Continues on the next page.
                        return Ok(());
                    }
                    let (tot, header) = (*tot, *header);
                    let computed = crc32c::crc32c_append(*crc, &header[..20]);
                    let stored =
                        u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
                    let end = page_lsn.0 + off as u64;
                    if computed != stored {
                        return Err(RecordError {
                            lsn: start,
                            what: RecordErrorKind::Crc {
                                at: start,
                                end: Lsn(end),
                                len: tot,
                                stored,
                                computed,
                            },
                        });
                    }
                    if !self.beyond {
                        self.stats.records += 1;
                        self.stats.bytes += u64::from(tot);
                    }
                    self.prev = Some(start);
                    let (info, rmid) = (header[16], header[17]);
                    if !self.beyond
                        && rmid == RM_TBLSPC_ID
                        && info & 0xF0 == XLOG_TBLSPC_CREATE
                        && tot <= MAX_TBLSPC_RECORD
                    {
                        if let Some(t) = tablespace_create(start, &self.capture) {
                            self.tablespaces_created.push(t);
                        }
                    }
                    let next = if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
                        self.stats.switches += 1;
                        // The rest of the segment is unused (`XLogDecodeNextRecord`).
                        end.div_ceil(self.seg_size).saturating_mul(self.seg_size)
                    } else {
                        maxalign(end)
                    };
                    self.state = State::Next { at: Lsn(next) };
                    if let Some(mark) = self.mark {
                        if self.mark_reached {
                            self.past_mark = 1;
                            if self.beyond {
                                self.state = State::Done;
                                return Ok(());
                            }
                            // Within the range: on to the stop (the loop ends there).
                        } else {
                            self.mark_reached = next >= mark.0;
                        }
                    }
                }
            }
        }
    }

    /// Checks a page header as `XLogReaderValidatePageHeader` does (the long header's system
    /// identifier and sizes are checked per segment by [`super::check_segment_header`]);
    /// returns the header size, `xlp_info` and `xlp_rem_len`.
    fn check_page_header(
        &mut self,
        page_lsn: Lsn,
        page: &[u8],
        file_tli: TimelineId,
    ) -> Result<(usize, u16, u32), RecordError> {
        let err = |what| {
            Err(RecordError {
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
            return err(RecordErrorKind::ZeroPage {
                page: page_lsn,
                stop: self.stop,
            });
        }
        let Ok(h) = WalPageHeader::decode(page) else {
            return err(RecordErrorKind::ZeroPage {
                page: page_lsn,
                stop: self.stop,
            });
        };
        let expected = *self.magic.get_or_insert(h.magic);
        if h.magic != expected {
            return err(RecordErrorKind::PageMagic {
                page: page_lsn,
                found: h.magic,
                expected,
            });
        }
        let long = h.info & XLP_LONG_HEADER != 0;
        if h.info & !XLP_ALL_FLAGS != 0 || long != first_of_segment {
            return err(RecordErrorKind::PageInfo {
                page: page_lsn,
                info: h.info,
            });
        }
        if h.pageaddr != page_lsn {
            return err(RecordErrorKind::PageAddress {
                page: page_lsn,
                found: h.pageaddr,
            });
        }
        if h.tli.0 == 0 || h.tli > file_tli || h.tli < self.tli {
            return err(RecordErrorKind::PageTimeline {
                page: page_lsn,
                found: h.tli,
                prev: self.tli,
                file: file_tli,
            });
        }
        self.tli = h.tli;
        Ok((hsize, h.info, h.rem_len))
    }
}

#[cfg(test)]
mod tests;
