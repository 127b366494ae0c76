//! WAL formats: timeline history files, WAL page headers, and which segments and history files
//! a backup needs. Pure: no IO.
//!
//! Facts (reference §3.4, §6; `timeline.c`, `xlog_internal.h`, `basebackup.c`,
//! `XLogFileReadAnyTLI`):
//! * `NNNNNNNN.history` (none for timeline 1) lists the ancestry of timeline N, oldest first,
//!   one line `<parentTLI>\t<switchpoint %X/%X>\t<reason>\n` per switch: "timeline parentTLI
//!   ended at switchpoint". The server writes a new file as a verbatim copy of the parent's
//!   file followed by `"\n"` (if there was a parent file) and the new line, so files of
//!   timeline 3 and later have blank lines between entries.
//! * The server reads it with `fgets` + `sscanf("%u\t%X/%X")`: lines that are blank or start
//!   with `#` (after whitespace) are skipped; fewer than 3 conversions is FATAL; timeline IDs
//!   must increase and be less than N; the rest of a line is ignored.
//! * Each WAL page starts with a header; the first page of a segment has the long header.

use serde::Serialize;

use crate::label::{LsnStyle, StyleDetector, serialize_lossy, show};
use crate::types::{Lsn, SystemId, TimelineId, TypeError, WalSegSize, WalSegment};

/// One history line: timeline `parent_tli` ended at `switchpoint` (the first LSN of the child).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HistoryEntry {
    pub parent_tli: TimelineId,
    pub switchpoint: Lsn,
    /// Free text such as `no recovery target specified` (bytes; never a newline).
    #[serde(serialize_with = "serialize_lossy")]
    pub reason: Vec<u8>,
}

/// The WAL of one timeline in a history: `[begin, end)`; `begin` is 0 for the oldest timeline
/// and `end` is `None` for the newest (the history file's own timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TimelineSpan {
    pub tli: TimelineId,
    pub begin: Lsn,
    pub end: Option<Lsn>,
}

/// A stretch of WAL a backup needs on one timeline: `[start_lsn, end_lsn)`, like a manifest's
/// `WAL-Ranges` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct WalRange {
    pub tli: TimelineId,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
}

/// Why a timeline history cannot be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("timeline 0 does not exist: a history belongs to a timeline from 1 up")]
    ZeroTimeline,
    #[error("{at}: syntax error: expected a numeric timeline ID (1 to 4294967295), found {found}")]
    ExpectedTimeline { at: String, found: String },
    #[error(
        "{at}: syntax error: expected a write-ahead log switchpoint location X/Y after the timeline ID, found {found}"
    )]
    ExpectedSwitchpoint { at: String, found: String },
    #[error("{at}: timeline IDs must be in increasing sequence ({tli} follows {prev})")]
    NotIncreasing {
        at: String,
        tli: TimelineId,
        prev: TimelineId,
    },
    #[error("{at}: timeline {parent} is not less than the history's own timeline {tli}")]
    NotAncestor {
        at: String,
        parent: TimelineId,
        tli: TimelineId,
    },
    #[error("{at}: switchpoint {lsn} is before the previous switchpoint {prev}")]
    SwitchpointDecreasing { at: String, lsn: Lsn, prev: Lsn },
    #[error("{at}: the reason contains a newline")]
    ReasonNewline { at: String },
    #[error("{at} is not terminated by a newline (truncated file?): {found}")]
    Unterminated { at: String, found: String },
}

/// Why the WAL of a backup cannot be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalRangeError {
    #[error("backup stop LSN {stop} is before its start LSN {start}")]
    StopBeforeStart { start: Lsn, stop: Lsn },
    #[error(
        "the backup starts on timeline {start_tli} and stops on timeline {stop_tli}: the history file of timeline {stop_tli} is needed to know where the timelines switched"
    )]
    HistoryRequired {
        start_tli: TimelineId,
        stop_tli: TimelineId,
    },
    #[error(
        "the timeline history given is that of timeline {found}, but the backup stops on timeline {expected}"
    )]
    WrongHistory {
        found: TimelineId,
        expected: TimelineId,
    },
    #[error(
        "start timeline {start_tli} at {start} is not part of the history of timeline {stop_tli} (wrong timeline, or a history that does not match)"
    )]
    StartTimelineNotInHistory {
        start_tli: TimelineId,
        start: Lsn,
        stop_tli: TimelineId,
    },
    #[error("backup stop LSN {stop} is before timeline {tli} began at {begin}")]
    StopBeforeTimeline {
        stop: Lsn,
        tli: TimelineId,
        begin: Lsn,
    },
    #[error("the backup would need {count} WAL segments: implausible, are the LSNs right?")]
    TooManySegments { count: u64 },
}

/// A parsed `NNNNNNNN.history` file (or the implicit history of a timeline without one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineHistory {
    tli: TimelineId,
    entries: Vec<HistoryEntry>,
    #[serde(skip)]
    lsn_style: LsnStyle,
    #[serde(skip)]
    raw: Vec<u8>,
}

/// C `isspace` in the "C" locale.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl TimelineHistory {
    /// The history of a timeline that has no history file (timeline 1, or a lost file): the
    /// server then assumes the timeline has no parents.
    pub fn without_parents(tli: TimelineId) -> Result<Self, HistoryError> {
        Self::new(tli, Vec::new())
    }

    /// A history from entries (oldest first), checked as the server checks a file, plus: the
    /// switchpoints must not decrease and reasons must not contain a newline.
    pub fn new(tli: TimelineId, entries: Vec<HistoryEntry>) -> Result<Self, HistoryError> {
        for (i, e) in entries.iter().enumerate() {
            if e.reason.contains(&b'\n') {
                return Err(HistoryError::ReasonNewline {
                    at: format!("entry {}", i + 1),
                });
            }
        }
        let h = TimelineHistory {
            tli,
            entries,
            lsn_style: LsnStyle::Plain,
            raw: Vec::new(),
        };
        let lines: Vec<usize> = (1..=h.entries.len()).collect();
        h.check(&lines, "entry")?;
        Ok(TimelineHistory {
            raw: h.format(),
            ..h
        })
    }

    /// Parses the contents of the history file of timeline `tli`. Stricter than the server: the
    /// timeline ID and the switchpoint must be separated by whitespace, the switchpoint must be
    /// a whole `X/Y` token, switchpoints must not decrease, and an unterminated last entry line
    /// (a truncated file) is an error.
    pub fn parse(tli: TimelineId, bytes: &[u8]) -> Result<Self, HistoryError> {
        let name = tli.history_file_name();
        let (mut entries, mut lines, mut style) =
            (Vec::new(), Vec::new(), StyleDetector::default());
        for (i, chunk) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let at = || format!("{name} line {}", i + 1);
            let line = chunk.strip_suffix(b"\n");
            let text = line.unwrap_or(chunk);
            let Some(start) = text.iter().position(|&b| !c_isspace(b)) else {
                continue;
            };
            if text[start] == b'#' {
                continue;
            }
            if line.is_none() {
                return Err(HistoryError::Unterminated {
                    at: at(),
                    found: show(chunk),
                });
            }
            let rest = &text[start..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let parent = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|t| t.parse().ok());
            let Some(parent) = parent.filter(|&p| p != 0).map(TimelineId) else {
                return Err(HistoryError::ExpectedTimeline {
                    at: at(),
                    found: show(text),
                });
            };
            let after = &rest[digits..];
            let sep = after.iter().take_while(|&&b| c_isspace(b)).count();
            let token = &after[sep..];
            let token = &token[..token
                .iter()
                .position(|&b| c_isspace(b))
                .unwrap_or(token.len())];
            let lsn_text = std::str::from_utf8(token).ok().filter(|_| sep > 0);
            let Some(switchpoint) = lsn_text.and_then(|t| t.parse::<Lsn>().ok()) else {
                return Err(HistoryError::ExpectedSwitchpoint {
                    at: at(),
                    found: show(text),
                });
            };
            style.see(lsn_text.unwrap_or_default());
            // The server writes exactly one tab before the reason.
            let reason = after[sep + token.len()..]
                .get(1..)
                .unwrap_or_default()
                .to_vec();
            entries.push(HistoryEntry {
                parent_tli: parent,
                switchpoint,
                reason,
            });
            lines.push(i + 1);
        }
        let h = TimelineHistory {
            tli,
            entries,
            lsn_style: style.style(),
            raw: bytes.to_vec(),
        };
        h.check(&lines, &format!("{name} line"))?;
        Ok(h)
    }

    /// The server's checks (increasing IDs below the own timeline) plus non-decreasing
    /// switchpoints; `lines[i]` locates entry `i` in messages.
    fn check(&self, lines: &[usize], what: &str) -> Result<(), HistoryError> {
        if self.tli.0 == 0 {
            return Err(HistoryError::ZeroTimeline);
        }
        let mut prev: Option<&HistoryEntry> = None;
        for (e, line) in self.entries.iter().zip(lines) {
            let at = format!("{what} {line}");
            let (parent, tli) = (e.parent_tli, self.tli);
            if parent.0 == 0 {
                return Err(HistoryError::ExpectedTimeline {
                    at,
                    found: "0".into(),
                });
            }
            if let Some(p) = prev {
                if parent <= p.parent_tli {
                    return Err(HistoryError::NotIncreasing {
                        at,
                        tli: parent,
                        prev: p.parent_tli,
                    });
                }
                if e.switchpoint < p.switchpoint {
                    let (lsn, prev) = (e.switchpoint, p.switchpoint);
                    return Err(HistoryError::SwitchpointDecreasing { at, lsn, prev });
                }
            }
            if parent >= tli {
                return Err(HistoryError::NotAncestor { at, parent, tli });
            }
            prev = Some(e);
        }
        Ok(())
    }

    /// The timeline this history belongs to.
    pub fn tli(&self) -> TimelineId {
        self.tli
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[HistoryEntry] {
        &self.entries
    }

    /// The exact bytes parsed (or formatted, when built from entries).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The file as the server writes it: one `parent\tswitchpoint\treason\n` line per entry,
    /// with a blank line between entries (each later file copies its parent's and appends
    /// `"\n"` + its line). Equal to the parsed bytes for every file a server wrote.
    pub fn format(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            let lsn = self.lsn_style.format(e.switchpoint);
            out.extend_from_slice(format!("{sep}{}\t{lsn}\t", e.parent_tli).as_bytes());
            out.extend_from_slice(&e.reason);
            out.push(b'\n');
        }
        out
    }

    /// Every timeline of the history with its WAL span, oldest first; the last is [`Self::tli`].
    pub fn spans(&self) -> Vec<TimelineSpan> {
        let mut begin = Lsn(0);
        let mut spans = Vec::with_capacity(self.entries.len() + 1);
        for e in &self.entries {
            spans.push(TimelineSpan {
                tli: e.parent_tli,
                begin,
                end: Some(e.switchpoint),
            });
            begin = e.switchpoint;
        }
        spans.push(TimelineSpan {
            tli: self.tli,
            begin,
            end: None,
        });
        spans
    }

    /// The timeline that wrote `lsn` in this history (the server's `tliOfPointInHistory`).
    pub fn timeline_of(&self, lsn: Lsn) -> TimelineId {
        let e = self.entries.iter().find(|e| lsn < e.switchpoint);
        e.map_or(self.tli, |e| e.parent_tli)
    }

    /// Where timeline `tli` ended in this history (`None`: it is the newest, or not in it).
    pub fn switchpoint_of(&self, tli: TimelineId) -> Option<Lsn> {
        self.entries
            .iter()
            .find(|e| e.parent_tli == tli)
            .map(|e| e.switchpoint)
    }

    /// The WAL a backup from `start_lsn` on `start_tli` to `stop_lsn` on this history's
    /// timeline spans, newest timeline first, as the server builds a manifest's WAL-Ranges
    /// (`AddWALInfoToBackupManifest`): timelines that ended before `start_lsn` are skipped; the
    /// start timeline's range begins at `start_lsn`, newer ones where they began; the newest
    /// ends at `stop_lsn`, older ones at their switchpoint.
    pub fn wal_ranges(
        &self,
        start_lsn: Lsn,
        start_tli: TimelineId,
        stop_lsn: Lsn,
    ) -> Result<Vec<WalRange>, WalRangeError> {
        if stop_lsn < start_lsn {
            return Err(WalRangeError::StopBeforeStart {
                start: start_lsn,
                stop: stop_lsn,
            });
        }
        let (mut ranges, mut end_lsn) = (Vec::new(), stop_lsn);
        let not_found = WalRangeError::StartTimelineNotInHistory {
            start_tli,
            start: start_lsn,
            stop_tli: self.tli,
        };
        for span in self.spans().into_iter().rev() {
            if span.end.is_some_and(|end| end < start_lsn) {
                continue;
            }
            if span.tli == start_tli {
                ranges.push(WalRange {
                    tli: span.tli,
                    start_lsn,
                    end_lsn,
                });
                return Ok(ranges);
            }
            if span.begin == Lsn(0) {
                return Err(not_found);
            }
            if span.begin > end_lsn {
                let (tli, begin) = (span.tli, span.begin);
                return Err(WalRangeError::StopBeforeTimeline {
                    stop: end_lsn,
                    tli,
                    begin,
                });
            }
            ranges.push(WalRange {
                tli: span.tli,
                start_lsn: span.begin,
                end_lsn,
            });
            end_lsn = span.begin;
        }
        Err(not_found)
    }
}

/// The timeline of a history file name (`00000002.history` → 2).
pub fn history_file_tli(name: &str) -> Option<TimelineId> {
    let hex = name.strip_suffix(".history")?;
    let ok = hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
    ok.then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
        .map(TimelineId)
}

/// The WAL ranges of a backup (see [`TimelineHistory::wal_ranges`]); without a history the start
/// and stop timelines must be equal.
pub fn backup_wal_ranges(
    start_lsn: Lsn,
    start_tli: TimelineId,
    stop_lsn: Lsn,
    stop_tli: TimelineId,
    history: Option<&TimelineHistory>,
) -> Result<Vec<WalRange>, WalRangeError> {
    match history {
        Some(h) if h.tli != stop_tli => Err(WalRangeError::WrongHistory {
            found: h.tli,
            expected: stop_tli,
        }),
        Some(h) => h.wal_ranges(start_lsn, start_tli, stop_lsn),
        None if start_tli != stop_tli => Err(WalRangeError::HistoryRequired {
            start_tli,
            stop_tli,
        }),
        None if stop_lsn < start_lsn => Err(WalRangeError::StopBeforeStart {
            start: start_lsn,
            stop: stop_lsn,
        }),
        None => Ok(vec![WalRange {
            tli: stop_tli,
            start_lsn,
            end_lsn: stop_lsn,
        }]),
    }
}

/// Most segments [`backup_wal_segments`] lists (16 TiB of 1 MiB segments).
const MAX_BACKUP_SEGMENTS: u64 = 1 << 24;

/// The WAL segments a backup needs (reference §6.4): from the segment containing `start_lsn`
/// (`XLByteToSeg`) to the one holding the byte before `stop_lsn` (`XLByteToPrevSeg`), at least
/// the first. Each segment is named with the newest timeline of the backup's range that had
/// begun by that segment, the name recovery tries first (`XLogFileReadAnyTLI`): the segment
/// containing a switchpoint carries the new timeline (it starts with a copy of the old one's
/// WAL). pg_basebackup copies every timeline's version of these segments; any is enough.
pub fn backup_wal_segments(
    start_lsn: Lsn,
    start_tli: TimelineId,
    stop_lsn: Lsn,
    stop_tli: TimelineId,
    seg_size: WalSegSize,
    history: Option<&TimelineHistory>,
) -> Result<Vec<WalSegment>, WalRangeError> {
    let ranges = backup_wal_ranges(start_lsn, start_tli, stop_lsn, stop_tli, history)?;
    let size = seg_size.bytes();
    let first = start_lsn.0 / size;
    let last = (stop_lsn.0.saturating_sub(1) / size).max(first);
    if last - first >= MAX_BACKUP_SEGMENTS {
        return Err(WalRangeError::TooManySegments {
            count: last - first + 1,
        });
    }
    let segments = (first..=last).map(|segno| {
        let newest = ranges.iter().find(|r| r.start_lsn.0 / size <= segno);
        WalSegment::from_segno(newest.map_or(start_tli, |r| r.tli), segno, seg_size)
    });
    Ok(segments.collect())
}

/// The history files a backup should include: those of every timeline above 1 its WAL spans
/// (recovery reads the stop timeline's, which lists the whole ancestry), ascending.
pub fn backup_history_files(
    start_lsn: Lsn,
    start_tli: TimelineId,
    stop_lsn: Lsn,
    stop_tli: TimelineId,
    history: Option<&TimelineHistory>,
) -> Result<Vec<String>, WalRangeError> {
    let ranges = backup_wal_ranges(start_lsn, start_tli, stop_lsn, stop_tli, history)?;
    let mut tlis: Vec<TimelineId> = ranges.iter().map(|r| r.tli).filter(|t| t.0 > 1).collect();
    tlis.sort();
    tlis.dedup();
    Ok(tlis
        .into_iter()
        .map(TimelineId::history_file_name)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// WAL page headers (reference §6.3, `XLogPageHeaderData` / `XLogLongPageHeaderData`)
// ---------------------------------------------------------------------------------------------

/// `xlp_info` flags.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
pub const XLP_LONG_HEADER: u16 = 0x0002;
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// Added by 2021 minor releases; valid for every version.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
pub const XLP_ALL_FLAGS: u16 = 0x000F;
/// Header sizes (`SizeOfXLogShortPHD`, `SizeOfXLogLongPHD`, MAXALIGN 8).
pub const SHORT_HEADER_SIZE: usize = 24;
pub const LONG_HEADER_SIZE: usize = 40;

/// `XLOG_PAGE_MAGIC` per major (9.6 is major 96, as [`crate::PgVersion::major`] reports it).
const PAGE_MAGICS: [(u32, u16); 10] = [
    (96, 0xD093),
    (10, 0xD097),
    (11, 0xD098),
    (12, 0xD101),
    (13, 0xD106),
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
    (18, 0xD118),
];

/// The `XLOG_PAGE_MAGIC` of a major version (96 = 9.6).
pub fn xlog_page_magic(major: u32) -> Option<u16> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, magic)| *magic)
}

/// The major version (96 = 9.6) whose WAL has this page magic.
pub fn major_for_page_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(_, m)| *m == magic)
        .map(|(major, _)| *major)
}

fn major_name(major: u32) -> String {
    if major == 96 {
        "9.6".into()
    } else {
        major.to_string()
    }
}

/// The extra fields of the long header (first page of a segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LongPageHeader {
    pub sysid: SystemId,
    pub seg_size: u32,
    pub xlog_blcksz: u32,
}

/// A decoded WAL page header (little-endian: `xlp_magic` u16 @0, `xlp_info` u16 @2, `xlp_tli`
/// u32 @4, `xlp_pageaddr` u64 @8, `xlp_rem_len` u32 @16; long header: `xlp_sysid` u64 @24,
/// `xlp_seg_size` u32 @32, `xlp_xlog_blcksz` u32 @36).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct WalPageHeader {
    pub magic: u16,
    pub info: u16,
    pub tli: TimelineId,
    pub pageaddr: Lsn,
    pub rem_len: u32,
    pub long: Option<LongPageHeader>,
}

/// What is wrong with a WAL segment's first page header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageHeaderError {
    #[error("WAL page header truncated: {len} bytes, {needed} needed")]
    Truncated { len: usize, needed: usize },
    #[error("WAL segment {file} starts with a zero-filled page (pre-allocated but never written?)")]
    ZeroPage { file: WalSegment },
    #[error("WAL segment {file}: page magic 0x{found:04X} is not that of PostgreSQL {} (0x{expected:04X})", major_name(*.major))]
    WrongMagic {
        file: WalSegment,
        found: u16,
        expected: u16,
        major: u32,
    },
    #[error("WAL segment {file}: unknown page magic 0x{found:04X} (not WAL of PostgreSQL 9.6–18)")]
    UnknownMagic { file: WalSegment, found: u16 },
    #[error(
        "no XLOG_PAGE_MAGIC is known for PostgreSQL major {major} (supported: 9.6 = 96, 10–18)"
    )]
    UnknownMajor { major: u32 },
    #[error("WAL segment {file}: invalid xlp_info bits 0x{info:04X}")]
    InvalidInfo { file: WalSegment, info: u16 },
    #[error("WAL segment {file}: first page lacks the long header (xlp_info 0x{info:04X})")]
    NotLongHeader { file: WalSegment, info: u16 },
    #[error(
        "WAL segment {file}: page address {found} but the segment starts at {expected} (recycled or misnamed file?)"
    )]
    PageAddr {
        file: WalSegment,
        found: Lsn,
        expected: Lsn,
    },
    #[error("WAL segment {file}: page timeline {found} is not valid for a file of timeline {}", .file.tli)]
    Timeline { file: WalSegment, found: TimelineId },
    #[error("WAL segment {file}: header segment size {found} bytes, expected {expected}")]
    SegSize {
        file: WalSegment,
        found: u32,
        expected: WalSegSize,
    },
    #[error(
        "WAL segment {file}: header WAL block size {found} is not a power of two from 1 kB to 64 kB dividing the segment size"
    )]
    BlockSize { file: WalSegment, found: u32 },
    #[error("WAL segment {file} belongs to database system {found}, expected {expected}")]
    SystemId {
        file: WalSegment,
        found: SystemId,
        expected: SystemId,
    },
    #[error("WAL segment name {file} is not valid for this segment size: {source}")]
    Name { file: WalSegment, source: TypeError },
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | (u64::from(le_u32(b, at + 4)) << 32)
}

impl WalPageHeader {
    /// Decodes the header at the start of `bytes` (24 bytes, or 40 if it is a long header).
    pub fn decode(bytes: &[u8]) -> Result<Self, PageHeaderError> {
        let len = bytes.len();
        if len < SHORT_HEADER_SIZE {
            return Err(PageHeaderError::Truncated {
                len,
                needed: SHORT_HEADER_SIZE,
            });
        }
        let info = le_u16(bytes, 2);
        let long = if info & XLP_LONG_HEADER == 0 {
            None
        } else if len < LONG_HEADER_SIZE {
            return Err(PageHeaderError::Truncated {
                len,
                needed: LONG_HEADER_SIZE,
            });
        } else {
            let sysid = SystemId(le_u64(bytes, 24));
            Some(LongPageHeader {
                sysid,
                seg_size: le_u32(bytes, 32),
                xlog_blcksz: le_u32(bytes, 36),
            })
        };
        Ok(WalPageHeader {
            magic: le_u16(bytes, 0),
            info,
            tli: TimelineId(le_u32(bytes, 4)),
            pageaddr: Lsn(le_u64(bytes, 8)),
            rem_len: le_u32(bytes, 16),
            long,
        })
    }

    /// The major version whose page magic this is (96 = 9.6).
    pub fn major(&self) -> Option<u32> {
        major_for_page_magic(self.magic)
    }
}

/// Checks the first page of a WAL segment file named `expected`: page magic (of `major`, or of
/// any known version), valid flags with the long header, page address = the segment's first
/// LSN, timeline, segment size, WAL block size (power of two, 1–64 kB) and, if given, the
/// system identifier. The page timeline may be older than the file's: the first segment of a
/// timeline that began mid-segment starts with a copy of its parent's WAL.
pub fn check_segment_header(
    bytes: &[u8],
    expected: WalSegment,
    seg_size: WalSegSize,
    expected_sysid: Option<SystemId>,
    major: Option<u32>,
) -> Result<WalPageHeader, PageHeaderError> {
    let file = expected;
    let start = file
        .start_lsn(seg_size)
        .map_err(|source| PageHeaderError::Name { file, source })?;
    let want_magic = match major {
        Some(m) => Some(xlog_page_magic(m).ok_or(PageHeaderError::UnknownMajor { major: m })?),
        None => None,
    };
    let head = &bytes[..bytes.len().min(LONG_HEADER_SIZE)];
    if head.len() == LONG_HEADER_SIZE && head.iter().all(|&b| b == 0) {
        return Err(PageHeaderError::ZeroPage { file });
    }
    let h = WalPageHeader::decode(bytes)?;
    match (want_magic, major) {
        (Some(expected), Some(major)) if h.magic != expected => {
            return Err(PageHeaderError::WrongMagic {
                file,
                found: h.magic,
                expected,
                major,
            });
        }
        _ if h.major().is_none() => {
            return Err(PageHeaderError::UnknownMagic {
                file,
                found: h.magic,
            });
        }
        _ => {}
    }
    if h.info & !XLP_ALL_FLAGS != 0 {
        return Err(PageHeaderError::InvalidInfo { file, info: h.info });
    }
    let Some(long) = h.long else {
        return Err(PageHeaderError::NotLongHeader { file, info: h.info });
    };
    if h.pageaddr != start {
        return Err(PageHeaderError::PageAddr {
            file,
            found: h.pageaddr,
            expected: start,
        });
    }
    if h.tli.0 == 0 || h.tli > file.tli {
        return Err(PageHeaderError::Timeline { file, found: h.tli });
    }
    if u64::from(long.seg_size) != seg_size.bytes() {
        return Err(PageHeaderError::SegSize {
            file,
            found: long.seg_size,
            expected: seg_size,
        });
    }
    let b = long.xlog_blcksz;
    if !b.is_power_of_two() || !(1024..=65536).contains(&b) || seg_size.bytes() % u64::from(b) != 0
    {
        return Err(PageHeaderError::BlockSize { file, found: b });
    }
    match expected_sysid {
        Some(want) if want != long.sysid => Err(PageHeaderError::SystemId {
            file,
            found: long.sysid,
            expected: want,
        }),
        _ => Ok(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `pg_wal/00000002.history` and `00000003.history` written by a real PostgreSQL 15.18
    /// (two ends of archive recovery); note the blank line the server inserts.
    const TLI2: &[u8] = b"1\t0/50000A0\tno recovery target specified\n";
    const TLI3: &[u8] = b"1\t0/50000A0\tno recovery target specified\n\n2\t0/70000A0\tno recovery target specified\n";

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
        let segs =
            backup_wal_segments(lsn("0/2000028"), t1, lsn("0/4000000"), t1, s16, None).unwrap();
        assert_eq!(
            names(&segs),
            ["000000010000000000000002", "000000010000000000000003"]
        );
        let one =
            backup_wal_segments(lsn("0/2000028"), t1, lsn("0/2000028"), t1, s16, None).unwrap();
        assert_eq!(names(&one), ["000000010000000000000002"]);
        assert_eq!(
            backup_history_files(lsn("0/2000028"), t1, lsn("0/4000000"), t1, None).unwrap(),
            Vec::<String>::new()
        );
        let t2 = TimelineId(2);
        let e =
            backup_wal_segments(lsn("0/2000028"), t1, lsn("0/4000000"), t2, s16, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("history file of timeline 2 is needed"),
            "{e}"
        );
        let h = tli3();
        let e = backup_wal_segments(lsn("0/2000028"), t1, lsn("0/4000000"), t2, s16, Some(&h))
            .unwrap_err();
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
        let files =
            backup_history_files(lsn("0/4000028"), t1, lsn("0/8000100"), t3, Some(&h)).unwrap();
        assert_eq!(files, ["00000002.history", "00000003.history"]);
        let files =
            backup_history_files(lsn("0/7100000"), t3, lsn("0/8000100"), t3, Some(&h)).unwrap();
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
        assert!(
            check_segment_header(&b9, seg("000000040000000000000009"), s16, None, None).is_ok()
        );
        let e = check_segment_header(&b9, seg("000000020000000000000009"), s16, None, None)
            .unwrap_err();
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
        assert!(
            check(&with(0, &[0x34, 0x12]), file, None, None).contains("unknown page magic 0x1234")
        );
        assert!(check(&with(2, &[0x00, 0x00]), file, None, None).contains("lacks the long header"));
        assert!(
            check(&with(2, &[0x12, 0x00]), file, None, None)
                .contains("invalid xlp_info bits 0x0012")
        );
        assert!(
            check(&with(32, &(64u32 << 20).to_le_bytes()), file, None, None)
                .contains("segment size 67108864 bytes, expected 16MB")
        );
        assert!(
            check(&with(36, &3000u32.to_le_bytes()), file, None, None).contains("block size 3000")
        );
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
        let e =
            check_segment_header(&b, seg("000000010000000000000100"), s16, None, None).unwrap_err();
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
}
