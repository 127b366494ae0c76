//! WAL formats: timeline history files, WAL page headers, and which segments and history files
//! a backup needs. Pure: no IO.
//!
//! Facts (`src/backend/access/transam/timeline.c`, `src/include/access/xlog_internal.h`,
//! `src/backend/backup/basebackup.c`, `XLogFileReadAnyTLI` in `xlogrecovery.c`, `xlog.c` before 15):
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

pub mod record;
pub mod summary;

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

/// The WAL segments a backup needs (as `perform_base_backup` in `basebackup.c` collects them):
/// from the segment containing `start_lsn` (`XLByteToSeg`) to the one holding the byte before
/// `stop_lsn` (`XLByteToPrevSeg`), at least the first. Each segment is named with the newest timeline of the backup's range that had
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
// WAL page headers (`XLogPageHeaderData` / `XLogLongPageHeaderData`, `xlog_internal.h`)
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
mod tests;
