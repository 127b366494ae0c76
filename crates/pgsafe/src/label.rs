//! `backup_label`, backup history files (`pg_wal/*.backup`) and `tablespace_map`: parse and
//! format them byte for byte as PostgreSQL 9.6–18 write them. Pure: no IO.
//!
//! Facts (reference §2; `do_pg_start_backup` 9.6–14, `do_pg_backup_start` 15,
//! `build_backup_content` 16–18, `read_backup_label`, `read_tablespace_map`, pg_rewind's
//! `createBackupLabel`):
//! * Every line is `KEY: value\n`, in a fixed order: `START WAL LOCATION: %X/%X (file %s)`,
//!   `CHECKPOINT LOCATION: %X/%X`, `BACKUP METHOD`, `BACKUP FROM`, `START TIME`, `LABEL`,
//!   `START TIMELINE` (11+), `INCREMENTAL FROM LSN` + `INCREMENTAL FROM TLI` (17+, incremental
//!   backups only). pg_rewind stops after `START TIME`.
//! * A backup history file has `STOP WAL LOCATION: %X/%X (file %s)` right after the first line
//!   and `STOP TIME`, `STOP TIMELINE` (11+) after `START TIMELINE` (before the 17+ incremental
//!   lines), so one ordered key list describes both files.
//! * The server reads the file with `fscanf`: the first two lines are mandatory, the timeline is
//!   the first 8 hex digits of the start file name, and a `START TIMELINE` different from it is
//!   FATAL. LSNs are `%X/%X`: uppercase hex, no zero padding.

use std::borrow::Cow;

use serde::{Serialize, Serializer};

use crate::types::{Lsn, PgVersion, TimelineId, WalSegSize, WalSegment};

/// How a file prints LSNs. PostgreSQL 9.6–18 write `%X/%X`; sources newer than 18 pad the low
/// half (`%X/%08X`). Parsers accept both and remember the style so formatting reproduces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LsnStyle {
    #[default]
    Plain,
    ZeroPadded,
}

impl LsnStyle {
    pub fn format(self, lsn: Lsn) -> String {
        let (hi, lo) = lsn.parts();
        match self {
            LsnStyle::Plain => format!("{hi:X}/{lo:X}"),
            LsnStyle::ZeroPadded => format!("{hi:X}/{lo:08X}"),
        }
    }
}

/// Collects the LSN style of a file: the first LSN that tells decides (an 8-digit low half
/// without a leading zero fits both styles).
#[derive(Default)]
pub(crate) struct StyleDetector(Option<LsnStyle>);

impl StyleDetector {
    pub(crate) fn see(&mut self, lsn_text: &str) {
        let lo = lsn_text.split_once('/').map_or("", |(_, lo)| lo);
        if self.0.is_none() && !lo.is_empty() {
            if lo.len() < 8 {
                self.0 = Some(LsnStyle::Plain);
            } else if lo.starts_with('0') {
                self.0 = Some(LsnStyle::ZeroPadded);
            }
        }
    }

    pub(crate) fn style(&self) -> LsnStyle {
        self.0.unwrap_or_default()
    }
}

/// Bytes quoted for an error message: lossy UTF-8, at most 100 characters.
pub(crate) fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// Serializes bytes that are text in the server's encoding (labels, paths) as a lossy string.
pub(crate) fn serialize_lossy<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

fn serialize_opt_lossy<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => s.serialize_some(&*String::from_utf8_lossy(b)),
        None => s.serialize_none(),
    }
}

/// An enum of the values PostgreSQL writes, plus `Other` for anything else; (de)coded as text.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }

            pub fn from_value(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// `BACKUP METHOD`: `streamed` (non-exclusive, all versions), `pg_start_backup` (exclusive,
    /// 9.6–14), `pg_rewind` (written by pg_rewind). The server only compares with `streamed`
    /// (then replay must reach the end-of-backup point before the cluster is consistent).
    BackupMethod { Streamed => "streamed", Exclusive => "pg_start_backup", PgRewind => "pg_rewind" }
);

text_enum!(
    /// `BACKUP FROM`: `standby` when started during recovery, else `master` (9.6–13) or
    /// `primary` (14+). The server only compares with `standby`.
    BackupFrom { Primary => "primary", Master => "master", Standby => "standby" }
);

/// A `%X/%X (file %s)` value: an LSN and the name of the WAL segment holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct WalLocation {
    pub lsn: Lsn,
    pub file: WalSegment,
}

/// `INCREMENTAL FROM LSN` / `INCREMENTAL FROM TLI` (17+): always written together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IncrementalFrom {
    pub lsn: Lsn,
    pub tli: TimelineId,
}

/// Every field a backup label or backup history file can carry; `None` = line absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelFields {
    /// `START WAL LOCATION`: the checkpoint's redo pointer, where replay starts.
    pub start: WalLocation,
    /// `STOP WAL LOCATION` (backup history files only).
    pub stop: Option<WalLocation>,
    /// `CHECKPOINT LOCATION`: the checkpoint record itself.
    pub checkpoint: Lsn,
    pub method: Option<BackupMethod>,
    pub from: Option<BackupFrom>,
    /// `START TIME`, as written (`%Y-%m-%d %H:%M:%S %Z` in the server's log_timezone).
    pub start_time: Option<String>,
    /// `LABEL`: the user's label, verbatim bytes in the server encoding (never a newline).
    #[serde(serialize_with = "serialize_opt_lossy")]
    pub label: Option<Vec<u8>>,
    /// `START TIMELINE` (11+).
    pub start_timeline: Option<TimelineId>,
    pub stop_time: Option<String>,
    /// `STOP TIMELINE` (11+, history files).
    pub stop_timeline: Option<TimelineId>,
    pub incremental: Option<IncrementalFrom>,
    #[serde(skip)]
    pub lsn_style: LsnStyle,
}

impl LabelFields {
    /// The two mandatory fields; the start file name is the segment containing `start_lsn`.
    pub fn new(start_lsn: Lsn, tli: TimelineId, seg_size: WalSegSize, checkpoint: Lsn) -> Self {
        let file = WalSegment::containing(start_lsn, tli, seg_size);
        LabelFields {
            start: WalLocation {
                lsn: start_lsn,
                file,
            },
            stop: None,
            checkpoint,
            method: None,
            from: None,
            start_time: None,
            label: None,
            start_timeline: None,
            stop_time: None,
            stop_timeline: None,
            incremental: None,
            lsn_style: LsnStyle::Plain,
        }
    }
}

/// The line keys, in the only order PostgreSQL writes them (derive(Ord) follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    StartWal,
    StopWal,
    Checkpoint,
    Method,
    From,
    StartTime,
    Label,
    StartTimeline,
    StopTime,
    StopTimeline,
    IncrLsn,
    IncrTli,
}

use Key::*;

const KEYS: [(Key, &str); 12] = [
    (StartWal, "START WAL LOCATION"),
    (StopWal, "STOP WAL LOCATION"),
    (Checkpoint, "CHECKPOINT LOCATION"),
    (Method, "BACKUP METHOD"),
    (From, "BACKUP FROM"),
    (StartTime, "START TIME"),
    (Label, "LABEL"),
    (StartTimeline, "START TIMELINE"),
    (StopTime, "STOP TIME"),
    (StopTimeline, "STOP TIMELINE"),
    (IncrLsn, "INCREMENTAL FROM LSN"),
    (IncrTli, "INCREMENTAL FROM TLI"),
];

impl Key {
    fn name(self) -> &'static str {
        KEYS[self as usize].1
    }

    /// The value's expected shape, for error messages.
    fn shape(self) -> &'static str {
        match self {
            StartWal | StopWal => "X/Y (file <24 uppercase hex digits, timeline >= 1>)",
            Checkpoint | IncrLsn => "an LSN X/Y (hex)",
            StartTimeline | StopTimeline | IncrTli => "a decimal timeline ID from 1 to 4294967295",
            Method => "a method such as streamed, pg_start_backup or pg_rewind",
            From => "primary, master or standby",
            StartTime | StopTime => "UTF-8 text",
            Label => "text",
        }
    }

    /// The line `KEY: value` split, if `KEY` is known.
    fn of_line(line: &[u8]) -> Option<(Key, &[u8])> {
        KEYS.into_iter().find_map(|(k, name)| {
            let rest = line.strip_prefix(name.as_bytes())?.strip_prefix(b": ")?;
            Some((k, rest))
        })
    }
}

const START_LINE: &str = "\"START WAL LOCATION: X/Y (file 000000010000000000000002)\"";
const CHECKPOINT_LINE: &str = "\"CHECKPOINT LOCATION: X/Y\"";

/// Why a backup label, backup history file or label field set is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("backup_label is empty: expected {START_LINE} and {CHECKPOINT_LINE} lines")]
    Empty,
    #[error("backup_label line {line}: expected {expected}, found {found}")]
    Expected {
        line: usize,
        expected: &'static str,
        found: String,
    },
    #[error("backup_label line {line}: invalid {field} value {found}: expected {expected}")]
    BadValue {
        line: usize,
        field: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("backup_label line {line}: unrecognized line {found}")]
    UnknownLine { line: usize, found: String },
    #[error(
        "backup_label line {line}: {field} {problem}; PostgreSQL writes each line once, in a fixed order"
    )]
    OutOfOrder {
        line: usize,
        field: &'static str,
        problem: String,
    },
    #[error("backup_label line {line} is not terminated by a newline (truncated file?): {found}")]
    Unterminated { line: usize, found: String },
    #[error(
        "backup_label line {line}: INCREMENTAL FROM LSN and INCREMENTAL FROM TLI must appear together, in that order"
    )]
    IncompleteIncremental { line: usize },
    #[error("backup_label: START TIMELINE is {start_timeline} but the START WAL LOCATION file {file} is on timeline {tli}; PostgreSQL refuses such a label (\"Timeline ID parsed is {start_timeline}, but expected {tli}\")", tli = .file.tli)]
    TimelineMismatch {
        start_timeline: TimelineId,
        file: WalSegment,
    },
    #[error("backup history file: STOP TIMELINE is {stop_timeline} but the STOP WAL LOCATION file {file} is on timeline {tli}", tli = .file.tli)]
    StopTimelineMismatch {
        stop_timeline: TimelineId,
        file: WalSegment,
    },
    #[error(
        "backup_label: {field} file {found} is not the segment containing {lsn} with {seg_size} WAL segments (expected {expected})"
    )]
    SegmentMismatch {
        field: &'static str,
        lsn: Lsn,
        seg_size: WalSegSize,
        found: WalSegment,
        expected: WalSegment,
    },
    #[error(
        "backup_label: CHECKPOINT LOCATION {checkpoint} is before START WAL LOCATION {start}, but a checkpoint record always follows its redo point"
    )]
    CheckpointBeforeStart { checkpoint: Lsn, start: Lsn },
    #[error("backup history file: STOP WAL LOCATION {stop} is before START WAL LOCATION {start}")]
    StopBeforeStart { start: Lsn, stop: Lsn },
    #[error("invalid backup label field {field}: {problem}")]
    InvalidField {
        field: &'static str,
        problem: &'static str,
    },
}

/// A parsed `backup_label` (or backup history file), with the exact bytes it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupLabel {
    #[serde(flatten)]
    fields: LabelFields,
    #[serde(skip)]
    raw: Vec<u8>,
}

impl BackupLabel {
    /// Parses `backup_label` or `pg_wal/*.backup` contents. Stricter than the server's `fscanf`
    /// reader: every line must be a known key in PostgreSQL's order and end with `\n`, so a
    /// truncated or hand-edited file is reported instead of half-read.
    pub fn parse(bytes: &[u8]) -> Result<Self, LabelError> {
        if bytes.is_empty() {
            return Err(LabelError::Empty);
        }
        // Placeholders until lines 1 and 2 are read; the key order guarantees both are.
        let mut f = LabelFields::new(Lsn(0), TimelineId(1), WalSegSize::DEFAULT, Lsn(0));
        let (mut last, mut style, mut incr_lsn) = (None, StyleDetector::default(), None);
        let mut line_no = 0;
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            line_no += 1;
            let Some(line) = chunk.strip_suffix(b"\n") else {
                return Err(LabelError::Unterminated {
                    line: line_no,
                    found: show(chunk),
                });
            };
            let (key, value) = next_key(last, line, line_no)?;
            set_field(&mut f, key, value, line_no, &mut style, &mut incr_lsn)?;
            last = Some(key);
        }
        if last == Some(IncrLsn) {
            return Err(LabelError::IncompleteIncremental { line: line_no + 1 });
        }
        if last < Some(Checkpoint) {
            let found = "end of file".to_owned();
            return Err(LabelError::Expected {
                line: line_no + 1,
                expected: CHECKPOINT_LINE,
                found,
            });
        }
        f.lsn_style = style.style();
        validate(&f)?;
        Ok(BackupLabel {
            fields: f,
            raw: bytes.to_vec(),
        })
    }

    /// Builds a label from fields, checking them as [`BackupLabel::parse`] would; its bytes are
    /// the formatted fields.
    pub fn from_fields(fields: LabelFields) -> Result<Self, LabelError> {
        validate(&fields)?;
        let raw = format_fields(&fields);
        Ok(BackupLabel { fields, raw })
    }

    pub fn fields(&self) -> &LabelFields {
        &self.fields
    }

    pub fn into_fields(self) -> LabelFields {
        self.fields
    }

    /// The exact bytes this label was parsed from (or formatted to, when built from fields).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Re-emits the file from the fields, as the server writes it; equal to
    /// [`BackupLabel::as_bytes`] for every file PostgreSQL 9.6–18 or pg_rewind produce.
    pub fn format(&self) -> Vec<u8> {
        format_fields(&self.fields)
    }

    /// Same as [`BackupLabel::format`].
    pub fn to_bytes(&self) -> Vec<u8> {
        self.format()
    }

    pub fn start_lsn(&self) -> Lsn {
        self.fields.start.lsn
    }

    pub fn checkpoint_lsn(&self) -> Lsn {
        self.fields.checkpoint
    }

    pub fn stop_lsn(&self) -> Option<Lsn> {
        self.fields.stop.map(|s| s.lsn)
    }

    /// The backup's start timeline: the first 8 hex digits of the START WAL LOCATION file name,
    /// which is what the server uses.
    pub fn timeline(&self) -> TimelineId {
        self.fields.start.file.tli
    }

    /// `BACKUP METHOD: pg_start_backup` (exclusive backup, 9.6–14).
    pub fn is_exclusive(&self) -> bool {
        self.fields.method == Some(BackupMethod::Exclusive)
    }

    /// `BACKUP FROM: standby`: the server then takes the backup end from pg_control's
    /// minRecoveryPoint instead of an end-of-backup record.
    pub fn is_from_standby(&self) -> bool {
        self.fields.from == Some(BackupFrom::Standby)
    }

    /// Has `INCREMENTAL FROM LSN` (17+): the server refuses to start from it (pg_combinebackup).
    pub fn is_incremental(&self) -> bool {
        self.fields.incremental.is_some()
    }

    /// Has `STOP WAL LOCATION`, i.e. is a backup history file rather than a `backup_label`.
    pub fn is_history_file(&self) -> bool {
        self.fields.stop.is_some()
    }

    /// The `LABEL` text, lossily decoded.
    pub fn label_text(&self) -> Option<Cow<'_, str>> {
        self.fields.label.as_deref().map(String::from_utf8_lossy)
    }

    /// Checks what the segment size makes checkable: the START (and STOP) file names are the
    /// segments containing their LSNs (`XLByteToSeg`), the checkpoint record is not before its
    /// redo point, and the stop is not before the start.
    pub fn check_against(&self, seg_size: WalSegSize) -> Result<(), LabelError> {
        let f = &self.fields;
        for (field, loc) in [
            ("START WAL LOCATION", Some(f.start)),
            ("STOP WAL LOCATION", f.stop),
        ] {
            let Some(WalLocation { lsn, file: found }) = loc else {
                continue;
            };
            let expected = WalSegment::containing(lsn, found.tli, seg_size);
            if expected != found {
                return Err(LabelError::SegmentMismatch {
                    field,
                    lsn,
                    seg_size,
                    found,
                    expected,
                });
            }
        }
        let start = f.start.lsn;
        if f.checkpoint < start {
            return Err(LabelError::CheckpointBeforeStart {
                checkpoint: f.checkpoint,
                start,
            });
        }
        match f.stop {
            Some(stop) if stop.lsn < start => Err(LabelError::StopBeforeStart {
                start,
                stop: stop.lsn,
            }),
            _ => Ok(()),
        }
    }

    /// For a backup history file: its name in `pg_wal`, `%08X%08X%08X.%08X.backup` = stop
    /// timeline, start segment number, offset of the start LSN in its segment (§2.5).
    pub fn history_file_name(&self, seg_size: WalSegSize) -> Option<String> {
        let (stop, start) = (self.fields.stop?, self.fields.start.lsn);
        let seg = WalSegment::containing(start, stop.file.tli, seg_size);
        Some(format!("{seg}.{:08X}.backup", start.0 % seg_size.bytes()))
    }
}

/// Identifies line `line_no` and checks it may follow `last`.
fn next_key(last: Option<Key>, line: &[u8], line_no: usize) -> Result<(Key, &[u8]), LabelError> {
    let expected = |expected| LabelError::Expected {
        line: line_no,
        expected,
        found: show(line),
    };
    let found = Key::of_line(line);
    let key = match (last, found.map(|(k, _)| k)) {
        (None, Some(StartWal)) => StartWal,
        (None, _) => return Err(expected(START_LINE)),
        (Some(IncrLsn), Some(IncrTli)) => IncrTli,
        (Some(IncrLsn), _) | (Some(_), Some(IncrTli)) => {
            return Err(LabelError::IncompleteIncremental { line: line_no });
        }
        (Some(StartWal), Some(k @ (StopWal | Checkpoint)))
        | (Some(StopWal), Some(k @ Checkpoint)) => k,
        (Some(StartWal | StopWal), _) => return Err(expected(CHECKPOINT_LINE)),
        (Some(prev), Some(k)) if k <= prev => {
            let problem = if k == prev {
                "appears twice".to_owned()
            } else {
                format!("is out of order (it must come before {})", prev.name())
            };
            return Err(LabelError::OutOfOrder {
                line: line_no,
                field: k.name(),
                problem,
            });
        }
        (Some(_), Some(k)) => k,
        (Some(_), None) => {
            return Err(LabelError::UnknownLine {
                line: line_no,
                found: show(line),
            });
        }
    };
    Ok((key, found.map_or(&[][..], |(_, v)| v)))
}

fn set_field(
    f: &mut LabelFields,
    key: Key,
    value: &[u8],
    line: usize,
    style: &mut StyleDetector,
    incr_lsn: &mut Option<Lsn>,
) -> Result<(), LabelError> {
    let bad = || LabelError::BadValue {
        line,
        field: key.name(),
        found: show(value),
        expected: key.shape(),
    };
    if key == Label {
        f.label = Some(value.to_vec());
        return Ok(());
    }
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let mut lsn = |t: &str| {
        style.see(t);
        t.parse::<Lsn>().map_err(|_| bad())
    };
    let tli = |t: &str| t.parse::<TimelineId>().map_err(|_| bad());
    match key {
        StartWal | StopWal => {
            let (lsn_text, rest) = text.split_once(" (file ").ok_or_else(bad)?;
            let name = rest.strip_suffix(')').ok_or_else(bad)?;
            let file: WalSegment = name.parse().map_err(|_| bad())?;
            if file.tli.0 == 0 {
                return Err(bad());
            }
            let loc = WalLocation {
                lsn: lsn(lsn_text)?,
                file,
            };
            *(if key == StartWal {
                &mut f.start
            } else {
                f.stop.insert(loc)
            }) = loc;
        }
        Checkpoint => f.checkpoint = lsn(text)?,
        IncrLsn => *incr_lsn = Some(lsn(text)?),
        IncrTli => {
            let lsn = incr_lsn.ok_or(LabelError::IncompleteIncremental { line })?;
            f.incremental = Some(IncrementalFrom {
                lsn,
                tli: tli(text)?,
            });
        }
        Method | From if text.is_empty() => return Err(bad()),
        Method => f.method = Some(BackupMethod::from_value(text)),
        From => f.from = Some(BackupFrom::from_value(text)),
        StartTime => f.start_time = Some(text.to_owned()),
        StopTime => f.stop_time = Some(text.to_owned()),
        StartTimeline => f.start_timeline = Some(tli(text)?),
        StopTimeline => f.stop_timeline = Some(tli(text)?),
        Label => {}
    }
    Ok(())
}

/// The checks shared by parsing and [`BackupLabel::from_fields`]: what the server refuses, plus
/// what could not be written back unambiguously.
fn validate(f: &LabelFields) -> Result<(), LabelError> {
    let invalid = |field, problem| Err(LabelError::InvalidField { field, problem });
    let tlis = [
        ("START WAL LOCATION", Some(f.start.file.tli)),
        ("STOP WAL LOCATION", f.stop.map(|s| s.file.tli)),
        ("START TIMELINE", f.start_timeline),
        ("STOP TIMELINE", f.stop_timeline),
        ("INCREMENTAL FROM TLI", f.incremental.map(|i| i.tli)),
    ];
    if let Some((field, _)) = tlis.iter().find(|(_, t)| *t == Some(TimelineId(0))) {
        return invalid(field, "timeline 0 does not exist (timelines start at 1)");
    }
    if let Some(t) = f.start_timeline.filter(|t| *t != f.start.file.tli) {
        return Err(LabelError::TimelineMismatch {
            start_timeline: t,
            file: f.start.file,
        });
    }
    if let (Some(t), Some(stop)) = (f.stop_timeline, f.stop) {
        if t != stop.file.tli {
            return Err(LabelError::StopTimelineMismatch {
                stop_timeline: t,
                file: stop.file,
            });
        }
    }
    let texts: [(&str, Option<&[u8]>); 5] = [
        (
            "BACKUP METHOD",
            f.method.as_ref().map(|m| m.as_str().as_bytes()),
        ),
        (
            "BACKUP FROM",
            f.from.as_ref().map(|m| m.as_str().as_bytes()),
        ),
        ("START TIME", f.start_time.as_ref().map(|t| t.as_bytes())),
        ("LABEL", f.label.as_deref()),
        ("STOP TIME", f.stop_time.as_ref().map(|t| t.as_bytes())),
    ];
    if let Some((field, _)) = texts
        .iter()
        .find(|(_, t)| t.is_some_and(|t| t.contains(&b'\n')))
    {
        return invalid(field, "contains a newline, which would end the line early");
    }
    let bad_method = matches!(&f.method, Some(BackupMethod::Other(s))
        if s.is_empty() || !matches!(BackupMethod::from_value(s), BackupMethod::Other(_)));
    let bad_from = matches!(&f.from, Some(BackupFrom::Other(s))
        if s.is_empty() || !matches!(BackupFrom::from_value(s), BackupFrom::Other(_)));
    match (bad_method, bad_from) {
        (true, _) => invalid(
            "BACKUP METHOD",
            "Other(..) must be non-empty and not a known value",
        ),
        (_, true) => invalid(
            "BACKUP FROM",
            "Other(..) must be non-empty and not a known value",
        ),
        _ => Ok(()),
    }
}

fn format_fields(f: &LabelFields) -> Vec<u8> {
    let style = f.lsn_style;
    let mut out = Vec::with_capacity(256);
    let mut line = |key: Key, value: &[u8]| {
        out.extend_from_slice(key.name().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.push(b'\n');
    };
    let loc = |l: WalLocation| format!("{} (file {})", style.format(l.lsn), l.file);
    line(StartWal, loc(f.start).as_bytes());
    if let Some(stop) = f.stop {
        line(StopWal, loc(stop).as_bytes());
    }
    line(Checkpoint, style.format(f.checkpoint).as_bytes());
    let texts = [
        (Method, f.method.as_ref().map(|m| m.as_str().as_bytes())),
        (From, f.from.as_ref().map(|m| m.as_str().as_bytes())),
        (StartTime, f.start_time.as_ref().map(|t| t.as_bytes())),
        (Label, f.label.as_deref()),
    ];
    for (key, value) in texts {
        if let Some(v) = value {
            line(key, v);
        }
    }
    if let Some(t) = f.start_timeline {
        line(StartTimeline, t.to_string().as_bytes());
    }
    if let Some(t) = &f.stop_time {
        line(StopTime, t.as_bytes());
    }
    if let Some(t) = f.stop_timeline {
        line(StopTimeline, t.to_string().as_bytes());
    }
    if let Some(i) = f.incremental {
        line(IncrLsn, style.format(i.lsn).as_bytes());
        line(IncrTli, i.tli.to_string().as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// tablespace_map
// ---------------------------------------------------------------------------------------------

/// Which `tablespace_map` escaping a server uses (reference §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MapEscaping {
    /// 9.6–13: the writer puts a backslash before `\n` and `\r` only. The reader ends a line at
    /// `\n`/`\r` unless the previous byte is a backslash (which it then drops), and splits the
    /// line with `sscanf("%s %n")`: leading whitespace and the whitespace after the OID vanish.
    Pre14,
    /// 14+: the writer puts a backslash before `\n`, `\r` and `\`; the reader lets any backslash
    /// escape the next byte, skips empty lines, and wants `<oid> <path>` split at the first
    /// space (the path may begin with spaces). An unterminated last line or a dangling backslash
    /// is FATAL.
    V14,
}

impl MapEscaping {
    pub fn for_version(version: PgVersion) -> Self {
        if version.at_least(14) {
            MapEscaping::V14
        } else {
            MapEscaping::Pre14
        }
    }
}

/// One `pg_tblspc/<oid>` symlink: OID and link target (bytes, as `readlink` returns them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TablespaceEntry {
    pub oid: u32,
    #[serde(serialize_with = "serialize_lossy")]
    pub path: Vec<u8>,
}

impl TablespaceEntry {
    /// The path as a file-system path (Unix paths are bytes).
    #[cfg(unix)]
    pub fn as_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }
}

/// Why a `tablespace_map` cannot be parsed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("tablespace_map line {line}: expected \"<oid> <path>\", found {found}")]
    Syntax { line: usize, found: String },
    #[error(
        "tablespace_map line {line}: invalid tablespace OID {found}: expected a decimal number from 1 to 4294967295 without leading zeros"
    )]
    BadOid { line: usize, found: String },
    #[error("tablespace_map line {line}: tablespace {oid} has an empty path")]
    EmptyPath { line: usize, oid: u32 },
    #[error("tablespace_map line {line} is empty; PostgreSQL 13 and older refuse such a file")]
    EmptyLine { line: usize },
    #[error("tablespace_map line {line} is not terminated by a newline (truncated file?): {found}")]
    Unterminated { line: usize, found: String },
    #[error(
        "tablespace_map line {line} ends with a dangling backslash; PostgreSQL 14+ refuses such a file"
    )]
    DanglingBackslash { line: usize },
    #[error("tablespace_map: tablespace OID {oid} is listed twice")]
    DuplicateOid { oid: u32 },
    #[error(
        "tablespace {oid}: path {path} cannot be written to the tablespace_map of PostgreSQL 13 or older: {why}"
    )]
    NotRepresentable {
        oid: u32,
        path: String,
        why: &'static str,
    },
    #[error("tablespace {oid}: invalid path {path}: {why}")]
    InvalidPath {
        oid: u32,
        path: String,
        why: &'static str,
    },
}

/// The contents of `tablespace_map`: entries in file order. Empty bytes = no tablespaces.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TablespaceMap {
    entries: Vec<TablespaceEntry>,
}

/// C `isspace` in the "C" locale.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn parse_oid(text: &[u8], line: usize) -> Result<u32, MapError> {
    let digits = text.first().is_some_and(|&b| b != b'0') && text.iter().all(u8::is_ascii_digit);
    let oid = std::str::from_utf8(text)
        .ok()
        .filter(|_| digits)
        .and_then(|t| t.parse().ok());
    oid.ok_or_else(|| MapError::BadOid {
        line,
        found: show(text),
    })
}

fn check_path(e: &TablespaceEntry) -> Result<(), MapError> {
    let why = match () {
        _ if e.path.is_empty() => "it is empty",
        _ if e.path.contains(&0) => "it contains a NUL byte",
        _ => return Ok(()),
    };
    Err(MapError::InvalidPath {
        oid: e.oid,
        path: show(&e.path),
        why,
    })
}

impl TablespaceMap {
    /// A map from entries; OIDs must be unique and paths non-empty without NUL bytes.
    pub fn new(entries: Vec<TablespaceEntry>) -> Result<Self, MapError> {
        for (i, e) in entries.iter().enumerate() {
            check_path(e)?;
            if entries[..i].iter().any(|o| o.oid == e.oid) {
                return Err(MapError::DuplicateOid { oid: e.oid });
            }
        }
        Ok(TablespaceMap { entries })
    }

    pub fn entries(&self) -> &[TablespaceEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The path of tablespace `oid`.
    pub fn get(&self, oid: u32) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.oid == oid)
            .map(|e| e.path.as_slice())
    }

    /// Parses the file as the given versions' reader does. Stricter than the server: OIDs
    /// must be plain decimal without leading zeros, an OID may appear once, an empty path is an
    /// error (the server fails later, creating the symlink), and an unterminated last line is an
    /// error also for ≤13 (whose reader silently drops it).
    pub fn parse(bytes: &[u8], escaping: MapEscaping) -> Result<Self, MapError> {
        let lines = match escaping {
            MapEscaping::Pre14 => split_pre14(bytes)?,
            MapEscaping::V14 => split_v14(bytes)?,
        };
        let mut entries: Vec<TablespaceEntry> = Vec::with_capacity(lines.len());
        for (line, text) in lines {
            let (oid_text, path) = match escaping {
                MapEscaping::Pre14 => {
                    let start = text.iter().position(|&b| !c_isspace(b));
                    let rest = &text[start.ok_or(MapError::EmptyLine { line })?..];
                    let end = rest
                        .iter()
                        .position(|&b| c_isspace(b))
                        .unwrap_or(rest.len());
                    let skip = rest[end..].iter().take_while(|&&b| c_isspace(b)).count();
                    (&rest[..end], &rest[end + skip..])
                }
                MapEscaping::V14 => match text.iter().position(|&b| b == b' ') {
                    Some(n) if n > 0 => (&text[..n], &text[n + 1..]),
                    _ => {
                        return Err(MapError::Syntax {
                            line,
                            found: show(&text),
                        });
                    }
                },
            };
            let oid = parse_oid(oid_text, line)?;
            if path.is_empty() {
                return Err(MapError::EmptyPath { line, oid });
            }
            if entries.iter().any(|e| e.oid == oid) {
                return Err(MapError::DuplicateOid { oid });
            }
            entries.push(TablespaceEntry {
                oid,
                path: path.to_vec(),
            });
        }
        Ok(TablespaceMap { entries })
    }

    /// Writes the file as the given versions' writer does (`<oid> <escaped path>\n` per entry).
    /// For ≤13 it refuses paths the old reader cannot read back exactly: containing `\n`, `\r`
    /// or `\` (reference §2.6 practical rule) or starting with whitespace.
    pub fn format(&self, escaping: MapEscaping) -> Result<Vec<u8>, MapError> {
        let mut out = Vec::new();
        for e in &self.entries {
            check_path(e)?;
            out.extend_from_slice(format!("{} ", e.oid).as_bytes());
            let special = |b: &u8| matches!(b, b'\n' | b'\r' | b'\\');
            if escaping == MapEscaping::Pre14 {
                let why = match () {
                    _ if e.path.iter().any(special) => {
                        "it contains a newline, carriage return or backslash"
                    }
                    _ if c_isspace(e.path[0]) => {
                        "it starts with whitespace, which the old reader strips"
                    }
                    _ => "",
                };
                if !why.is_empty() {
                    return Err(MapError::NotRepresentable {
                        oid: e.oid,
                        path: show(&e.path),
                        why,
                    });
                }
            }
            for b in &e.path {
                if special(b) {
                    out.push(b'\\');
                }
                out.push(*b);
            }
            out.push(b'\n');
        }
        Ok(out)
    }
}

/// Logical lines of a ≤13 map, with the line number each starts on (escaped newlines count).
fn split_pre14(bytes: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, MapError> {
    let (mut lines, mut cur, mut prev, mut line_no, mut start) = (vec![], vec![], 0u8, 1, 1);
    for &ch in bytes {
        let newline = ch == b'\n' || ch == b'\r';
        line_no += usize::from(ch == b'\n');
        if newline && prev != b'\\' {
            // The server leaves its "previous byte" alone here; as it is not a backslash (else
            // this newline would be escaped), that is the same as forgetting it.
            lines.push((start, std::mem::take(&mut cur)));
            start = line_no;
            continue;
        }
        match cur.last_mut() {
            Some(last) if newline => *last = ch,
            _ => cur.push(ch),
        }
        prev = ch;
    }
    if !cur.is_empty() {
        return Err(MapError::Unterminated {
            line: start,
            found: show(&cur),
        });
    }
    Ok(lines)
}

/// Logical (de-escaped, non-empty) lines of a 14+ map, with their starting line numbers.
fn split_v14(bytes: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, MapError> {
    let (mut lines, mut cur, mut escaped, mut line_no, mut start) = (vec![], vec![], false, 1, 1);
    for &ch in bytes {
        if cur.is_empty() && !escaped {
            start = line_no;
        }
        line_no += usize::from(ch == b'\n');
        if !escaped && (ch == b'\n' || ch == b'\r') {
            if !cur.is_empty() {
                lines.push((start, std::mem::take(&mut cur)));
            }
        } else if !escaped && ch == b'\\' {
            escaped = true;
        } else {
            cur.push(ch);
            escaped = false;
        }
    }
    if escaped {
        return Err(MapError::DanglingBackslash { line: start });
    }
    if !cur.is_empty() {
        return Err(MapError::Unterminated {
            line: start,
            found: show(&cur),
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Written by a real PostgreSQL 15.18 (`pg_backup_stop()` labelfile).
    const PG15_LABEL: &[u8] = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-21 11:17:26 UTC\nLABEL: x\nSTART TIMELINE: 1\n";

    /// `pg_wal/000000010000000000000004.00000028.backup` from the same PostgreSQL 15.18.
    const PG15_HISTORY: &[u8] = b"START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\n\
STOP WAL LOCATION: 0/4000100 (file 000000010000000000000004)\nCHECKPOINT LOCATION: 0/4000060\n\
BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-21 11:17:31 UTC\n\
LABEL: nightly backup: a label with spaces\nSTART TIMELINE: 1\n\
STOP TIME: 2026-11-21 11:17:31 UTC\nSTOP TIMELINE: 1\n";

    /// Written by a real pg_rewind 15.18 into the rewound data directory.
    const PG15_REWIND: &[u8] = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: pg_rewind\nBACKUP FROM: standby\n\
START TIME: 2026-11-21 11:17:53 UTC\n";

    /// 9.6 exclusive backup (format of `do_pg_start_backup` 9.6: no START TIMELINE, "master").
    const PG96_EXCLUSIVE: &[u8] =
        b"START WAL LOCATION: 1/A3000028 (file 0000000300000001000000A3)\n\
CHECKPOINT LOCATION: 1/A3000060\nBACKUP METHOD: pg_start_backup\nBACKUP FROM: master\n\
START TIME: 2016-11-21 10:46:42 CET\nLABEL: nightly\n";

    /// 10 backup from a standby (no START TIMELINE).
    const PG10_STANDBY: &[u8] = b"START WAL LOCATION: 0/9000028 (file 000000020000000000000009)\n\
CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\n\
START TIME: 2019-01-02 03:04:05 UTC\nLABEL: pg_basebackup base backup\n";

    /// 13: START TIMELINE present, still "master".
    const PG13_LABEL: &[u8] = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: master\n\
START TIME: 2021-01-02 03:04:05 UTC\nLABEL: x\nSTART TIMELINE: 1\n";

    /// 17 incremental backup (`build_backup_content` with istartpoint set).
    const PG17_INCREMENTAL: &[u8] =
        b"START WAL LOCATION: 0/8000028 (file 000000010000000000000008)\n\
CHECKPOINT LOCATION: 0/8000080\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2025-01-02 03:04:05 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n\
INCREMENTAL FROM LSN: 0/4000028\nINCREMENTAL FROM TLI: 1\n";

    fn seg16() -> WalSegSize {
        WalSegSize::DEFAULT
    }

    #[test]
    fn real_and_per_version_labels_parse_and_reformat_byte_for_byte() {
        for bytes in [
            PG15_LABEL,
            PG15_HISTORY,
            PG15_REWIND,
            PG96_EXCLUSIVE,
            PG10_STANDBY,
            PG13_LABEL,
            PG17_INCREMENTAL,
        ] {
            let l = BackupLabel::parse(bytes).unwrap();
            assert_eq!(l.as_bytes(), bytes);
            assert_eq!(l.format(), bytes, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(l.to_bytes(), bytes);
            l.check_against(seg16()).unwrap();
            assert_eq!(BackupLabel::from_fields(l.fields().clone()).unwrap(), l);
        }
    }

    #[test]
    fn pg15_label_fields() {
        let l = BackupLabel::parse(PG15_LABEL).unwrap();
        let f = l.fields();
        assert_eq!(l.start_lsn(), Lsn(0x200_0028));
        assert_eq!(f.start.file.to_string(), "000000010000000000000002");
        assert_eq!(l.checkpoint_lsn(), Lsn(0x200_0060));
        assert_eq!(f.method, Some(BackupMethod::Streamed));
        assert_eq!(f.from, Some(BackupFrom::Primary));
        assert_eq!(f.start_time.as_deref(), Some("2026-11-21 11:17:26 UTC"));
        assert_eq!(l.label_text().as_deref(), Some("x"));
        assert_eq!(
            (f.start_timeline, l.timeline()),
            (Some(TimelineId(1)), TimelineId(1))
        );
        assert!(
            !l.is_exclusive()
                && !l.is_from_standby()
                && !l.is_incremental()
                && !l.is_history_file()
        );
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["start"]["lsn"], "0/2000028");
        assert_eq!(json["method"], "streamed");
        assert_eq!(json["label"], "x");
    }

    #[test]
    fn version_differences() {
        let l96 = BackupLabel::parse(PG96_EXCLUSIVE).unwrap();
        assert!(l96.is_exclusive());
        assert_eq!(l96.fields().from, Some(BackupFrom::Master));
        assert_eq!(l96.fields().start_timeline, None);
        assert_eq!(
            l96.timeline(),
            TimelineId(3),
            "timeline comes from the file name"
        );
        let l10 = BackupLabel::parse(PG10_STANDBY).unwrap();
        assert!(l10.is_from_standby() && l10.fields().start_timeline.is_none());
        assert_eq!(
            BackupLabel::parse(PG13_LABEL).unwrap().fields().from,
            Some(BackupFrom::Master)
        );
        let rw = BackupLabel::parse(PG15_REWIND).unwrap();
        assert_eq!(rw.fields().method, Some(BackupMethod::PgRewind));
        assert!(rw.is_from_standby() && rw.fields().label.is_none());
        let inc = BackupLabel::parse(PG17_INCREMENTAL).unwrap();
        assert!(inc.is_incremental());
        assert_eq!(
            inc.fields().incremental,
            Some(IncrementalFrom {
                lsn: Lsn(0x400_0028),
                tli: TimelineId(1)
            })
        );
    }

    #[test]
    fn history_file_fields_and_name() {
        let h = BackupLabel::parse(PG15_HISTORY).unwrap();
        assert!(h.is_history_file());
        assert_eq!(h.stop_lsn(), Some(Lsn(0x400_0100)));
        assert_eq!(h.fields().stop_timeline, Some(TimelineId(1)));
        assert_eq!(
            h.fields().stop_time.as_deref(),
            Some("2026-11-21 11:17:31 UTC")
        );
        assert_eq!(
            h.history_file_name(seg16()).unwrap(),
            "000000010000000000000004.00000028.backup"
        );
        assert_eq!(
            BackupLabel::parse(PG15_LABEL)
                .unwrap()
                .history_file_name(seg16()),
            None
        );
    }

    #[test]
    fn constructor_builds_what_the_server_writes() {
        let mut f = LabelFields::new(Lsn(0x200_0028), TimelineId(1), seg16(), Lsn(0x200_0060));
        f.method = Some(BackupMethod::Streamed);
        f.from = Some(BackupFrom::Primary);
        f.start_time = Some("2026-11-21 11:17:26 UTC".into());
        f.label = Some(b"x".to_vec());
        f.start_timeline = Some(TimelineId(1));
        let l = BackupLabel::from_fields(f).unwrap();
        assert_eq!(l.as_bytes(), PG15_LABEL);
        let mut bad = l.fields().clone();
        bad.label = Some(b"two\nlines".to_vec());
        assert!(matches!(
            BackupLabel::from_fields(bad),
            Err(LabelError::InvalidField { field: "LABEL", .. })
        ));
        let mut bad = l.fields().clone();
        bad.method = Some(BackupMethod::Other("streamed".into()));
        assert!(BackupLabel::from_fields(bad).is_err());
    }

    #[test]
    fn zero_padded_lsns_round_trip() {
        let text = b"START WAL LOCATION: 0/02000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/02000060\n";
        let l = BackupLabel::parse(text).unwrap();
        assert_eq!(l.fields().lsn_style, LsnStyle::ZeroPadded);
        assert_eq!(l.format(), text);
    }

    /// The first `n` lines of `bytes`.
    fn head(bytes: &[u8], n: usize) -> Vec<u8> {
        bytes
            .split_inclusive(|&b| b == b'\n')
            .take(n)
            .flatten()
            .copied()
            .collect()
    }

    #[test]
    fn bad_input_gives_clear_typed_errors() {
        let two = head(PG15_LABEL, 2);
        let with = |prefix: &[u8], tail: &[u8]| [prefix, tail].concat();
        let start = &b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"[..];
        let cases: [(Vec<u8>, &str); 14] = [
            (
                vec![],
                "backup_label is empty: expected \"START WAL LOCATION",
            ),
            (
                with(start, b"BACKUP METHOD: streamed\n"),
                "backup_label line 2: expected \"CHECKPOINT LOCATION: X/Y\", found \"BACKUP METHOD: streamed\"",
            ),
            (
                start.to_vec(),
                "backup_label line 2: expected \"CHECKPOINT LOCATION: X/Y\", found end of file",
            ),
            (
                b"garbage\n".to_vec(),
                "backup_label line 1: expected \"START WAL LOCATION: X/Y (file 000000010000000000000002)\", found \"garbage\"",
            ),
            (
                b"START WAL LOCATION: 0/2000028 (file 00000001000000000000002)\n".to_vec(),
                "backup_label line 1: invalid START WAL LOCATION value \"0/2000028 (file 00000001000000000000002)\": expected X/Y (file <24",
            ),
            (
                b"START WAL LOCATION: 0/2000028 (file 000000000000000000000002)\n".to_vec(),
                "line 1: invalid START WAL LOCATION value",
            ),
            (
                with(start, b"CHECKPOINT LOCATION: 0/20000G0\n"),
                "line 2: invalid CHECKPOINT LOCATION value \"0/20000G0\": expected an LSN",
            ),
            (
                PG15_LABEL[..PG15_LABEL.len() - 5].to_vec(),
                "backup_label line 7 is not terminated by a newline (truncated file?): \"START TIMELIN\"",
            ),
            (
                with(&PG15_LABEL[..PG15_LABEL.len() - 2], b"2\n"),
                "START TIMELINE is 2 but the START WAL LOCATION file 000000010000000000000002 is on timeline 1; PostgreSQL refuses such a label (\"Timeline ID parsed is 2, but expected 1\")",
            ),
            (
                with(&two, b"BACKUP FROM: primary\nBACKUP METHOD: streamed\n"),
                "line 4: BACKUP METHOD is out of order (it must come before BACKUP FROM)",
            ),
            (
                with(PG15_LABEL, b"START TIMELINE: 1\n"),
                "line 8: START TIMELINE appears twice",
            ),
            (
                with(PG15_LABEL, b"FOO: bar\n"),
                "line 8: unrecognized line \"FOO: bar\"",
            ),
            (
                with(PG15_LABEL, b"INCREMENTAL FROM LSN: 0/1\n"),
                "line 9: INCREMENTAL FROM LSN and INCREMENTAL FROM TLI must appear together",
            ),
            (
                with(&two, b"BACKUP METHOD: \n"),
                "line 3: invalid BACKUP METHOD value \"\"",
            ),
        ];
        for (bytes, want) in cases {
            let e = BackupLabel::parse(&bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e}\n  wanted {want}");
        }
        let crlf = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\r\n";
        assert!(matches!(
            BackupLabel::parse(crlf),
            Err(LabelError::BadValue { line: 1, .. })
        ));
        let incr_tli = with(PG15_LABEL, b"INCREMENTAL FROM TLI: 1\n");
        assert_eq!(
            BackupLabel::parse(&incr_tli),
            Err(LabelError::IncompleteIncremental { line: 8 })
        );
    }

    #[test]
    fn check_against_segment_size() {
        let l = BackupLabel::parse(PG15_LABEL).unwrap();
        l.check_against(seg16()).unwrap();
        // with 64 MiB segments, 0/2000028 is in segment 0
        let e = l
            .check_against(WalSegSize::new(64 << 20).unwrap())
            .unwrap_err();
        assert!(
            e.to_string().contains("expected 000000010000000000000000"),
            "{e}"
        );
        let mut f = l.fields().clone();
        f.checkpoint = Lsn(0x200_0000);
        let e = BackupLabel::from_fields(f)
            .unwrap()
            .check_against(seg16())
            .unwrap_err();
        assert!(matches!(e, LabelError::CheckpointBeforeStart { .. }));
    }

    // ---- tablespace_map ----

    /// Written by a real PostgreSQL 15.18: a path with a space, and one with a backslash.
    const PG15_MAP: &[u8] = b"16384 /tmp/lblfx/ts space\n16385 /tmp/lblfx/ts\\\\back\n";

    #[test]
    fn pg15_map_with_escaped_backslash() {
        let m = TablespaceMap::parse(PG15_MAP, MapEscaping::V14).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(16384), Some(&b"/tmp/lblfx/ts space"[..]));
        assert_eq!(m.get(16385), Some(&b"/tmp/lblfx/ts\\back"[..]));
        assert_eq!(m.get(1), None);
        assert_eq!(m.format(MapEscaping::V14).unwrap(), PG15_MAP);
        let e = m.format(MapEscaping::Pre14).unwrap_err();
        assert!(
            matches!(e, MapError::NotRepresentable { oid: 16385, .. }),
            "{e}"
        );
        // the old reader keeps both backslashes
        let old = TablespaceMap::parse(PG15_MAP, MapEscaping::Pre14).unwrap();
        assert_eq!(old.get(16385), Some(&b"/tmp/lblfx/ts\\\\back"[..]));
        assert_eq!(
            serde_json::to_value(&m).unwrap()["entries"][1]["path"],
            "/tmp/lblfx/ts\\back"
        );
    }

    #[test]
    fn map_escaping_per_version() {
        let v = |s: &str| MapEscaping::for_version(s.parse().unwrap());
        assert_eq!(
            (v("9.6"), v("13.1"), v("14"), v("18.3")),
            (
                MapEscaping::Pre14,
                MapEscaping::Pre14,
                MapEscaping::V14,
                MapEscaping::V14
            )
        );
        for esc in [MapEscaping::Pre14, MapEscaping::V14] {
            let empty = TablespaceMap::parse(b"", esc).unwrap();
            assert!(empty.is_empty());
            assert_eq!(empty.format(esc).unwrap(), b"");
        }
        // newlines in paths: escaped by both writers, read back by both readers
        let m = TablespaceMap::new(vec![TablespaceEntry {
            oid: 16400,
            path: b"/a\nb\rc".to_vec(),
        }])
        .unwrap();
        let v14 = m.format(MapEscaping::V14).unwrap();
        assert_eq!(v14, b"16400 /a\\\nb\\\rc\n");
        assert_eq!(TablespaceMap::parse(&v14, MapEscaping::Pre14).unwrap(), m);
        assert_eq!(TablespaceMap::parse(&v14, MapEscaping::V14).unwrap(), m);
        // 14+: a path may start with spaces; the old reader would strip them
        let m = TablespaceMap::parse(b"16400   /x y\n", MapEscaping::V14).unwrap();
        assert_eq!(m.get(16400), Some(&b"  /x y"[..]));
        assert!(m.format(MapEscaping::Pre14).is_err());
        let old = TablespaceMap::parse(b"16400   /x y\n", MapEscaping::Pre14).unwrap();
        assert_eq!(old.get(16400), Some(&b"/x y"[..]));
        // 14+ skips empty lines and accepts CRLF
        let m = TablespaceMap::parse(b"\n16400 /x\r\n\n16401 /y\n", MapEscaping::V14).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            TablespaceMap::parse(b"16400 /x\r\n", MapEscaping::Pre14),
            Err(MapError::EmptyLine { line: 1 })
        );
    }

    #[test]
    fn bad_maps_give_typed_errors() {
        use MapEscaping::*;
        let cases: [(&[u8], MapEscaping, MapError); 11] = [
            (
                b"16384 /x",
                V14,
                MapError::Unterminated {
                    line: 1,
                    found: "\"16384 /x\"".into(),
                },
            ),
            (
                b"16384 /x",
                Pre14,
                MapError::Unterminated {
                    line: 1,
                    found: "\"16384 /x\"".into(),
                },
            ),
            (b"16384 /x\\", V14, MapError::DanglingBackslash { line: 1 }),
            (
                b"16384\n",
                V14,
                MapError::Syntax {
                    line: 1,
                    found: "\"16384\"".into(),
                },
            ),
            (
                b"16384 \n",
                V14,
                MapError::EmptyPath {
                    line: 1,
                    oid: 16384,
                },
            ),
            (
                b"16384\n",
                Pre14,
                MapError::EmptyPath {
                    line: 1,
                    oid: 16384,
                },
            ),
            (
                b" 16384 /x\n",
                V14,
                MapError::Syntax {
                    line: 1,
                    found: "\" 16384 /x\"".into(),
                },
            ),
            (
                b"abc /x\n",
                V14,
                MapError::BadOid {
                    line: 1,
                    found: "\"abc\"".into(),
                },
            ),
            (
                b"1 /a\n016384 /x\n",
                Pre14,
                MapError::BadOid {
                    line: 2,
                    found: "\"016384\"".into(),
                },
            ),
            (
                b"99999999999 /x\n",
                V14,
                MapError::BadOid {
                    line: 1,
                    found: "\"99999999999\"".into(),
                },
            ),
            (b"1 /a\n1 /b\n", V14, MapError::DuplicateOid { oid: 1 }),
        ];
        for (bytes, esc, want) in cases {
            assert_eq!(
                TablespaceMap::parse(bytes, esc),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let e = TablespaceMap::parse(b"x\n", V14).unwrap_err().to_string();
        assert_eq!(
            e,
            "tablespace_map line 1: expected \"<oid> <path>\", found \"x\""
        );
        assert!(
            TablespaceMap::new(vec![TablespaceEntry {
                oid: 1,
                path: vec![]
            }])
            .is_err()
        );
        assert!(
            TablespaceMap::new(vec![TablespaceEntry {
                oid: 1,
                path: b"/a\0".to_vec()
            }])
            .is_err()
        );
    }

    // ---- property tests ----

    fn any_text() -> impl Strategy<Value = String> {
        "[ -~]{0,40}"
    }

    fn any_fields() -> impl Strategy<Value = LabelFields> {
        let locs = (
            any::<u64>(),
            1u32..5,
            20u32..=30,
            0u64..1 << 30,
            any::<bool>(),
        );
        let methods = prop_oneof![
            Just(BackupMethod::Streamed),
            Just(BackupMethod::Exclusive),
            Just(BackupMethod::PgRewind),
            "[a-z_]{1,12}".prop_map(|s| BackupMethod::from_value(&s)),
        ];
        let froms = prop_oneof![
            Just(BackupFrom::Primary),
            Just(BackupFrom::Master),
            Just(BackupFrom::Standby),
            "[a-z]{1,9}".prop_map(|s| BackupFrom::from_value(&s)),
        ];
        let texts = (
            proptest::option::of(methods),
            proptest::option::of(froms),
            proptest::option::of(any_text()),
            proptest::option::of(proptest::collection::vec(
                any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
                0..40,
            )),
            proptest::option::of(any_text()),
        );
        let extra = (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of((any::<u64>(), 1u32..)),
            any::<bool>(),
        );
        (locs, texts, extra).prop_map(
            |((start, tli, pow, len, padded), (m, fr, st, lb, sp), (stl, stop, inc, ptl))| {
                let size = WalSegSize::new(1 << pow).unwrap();
                let mut f = LabelFields::new(
                    Lsn(start),
                    TimelineId(tli),
                    size,
                    Lsn(start.saturating_add(len)),
                );
                (f.method, f.from, f.start_time, f.label) = (m, fr, st, lb);
                f.lsn_style = if padded {
                    LsnStyle::ZeroPadded
                } else {
                    LsnStyle::Plain
                };
                f.start_timeline = stl.then_some(TimelineId(tli));
                if let Some(sp) = sp {
                    let stop = Lsn(start.saturating_add(2 * len));
                    f.stop = Some(WalLocation {
                        lsn: stop,
                        file: WalSegment::containing(stop, TimelineId(tli), size),
                    });
                    f.stop_time = Some(sp);
                    f.stop_timeline = ptl.then_some(TimelineId(tli));
                } else if stop {
                    f.stop_time = Some("2026-01-01 00:00:00 UTC".into());
                }
                f.incremental = inc.map(|(lsn, tli)| IncrementalFrom {
                    lsn: Lsn(lsn),
                    tli: TimelineId(tli),
                });
                f
            },
        )
    }

    fn any_map() -> impl Strategy<Value = TablespaceMap> {
        let path = proptest::collection::vec(1u8..=255, 1..30);
        proptest::collection::btree_map(1u32.., path, 0..5).prop_map(|m| {
            TablespaceMap::new(
                m.into_iter()
                    .map(|(oid, path)| TablespaceEntry { oid, path })
                    .collect(),
            )
            .unwrap()
        })
    }

    proptest! {
        #[test]
        fn label_fields_round_trip(f in any_fields()) {
            let l = BackupLabel::from_fields(f.clone()).unwrap();
            let parsed = BackupLabel::parse(l.as_bytes()).unwrap();
            prop_assert_eq!(parsed.format(), l.as_bytes());
            // the style is undecidable when every low half has 8 digits and no leading zero
            let mut g = parsed.fields().clone();
            g.lsn_style = f.lsn_style;
            prop_assert_eq!(g, f.clone());
            if f.stop.is_none() || f.stop.is_some_and(|s| s.lsn >= f.start.lsn) {
                let size_ok = (20..=30).any(|p| parsed.check_against(WalSegSize::new(1 << p).unwrap()).is_ok());
                prop_assert!(size_ok);
            }
        }

        #[test]
        fn label_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(l) = BackupLabel::parse(&bytes) {
                prop_assert_eq!(BackupLabel::parse(&l.format()).unwrap().into_fields(), l.into_fields());
            }
        }

        #[test]
        fn damaged_real_labels_never_panic(cut in 0usize..400, pos in 0usize..400, byte: u8) {
            for real in [PG15_LABEL, PG15_HISTORY, PG17_INCREMENTAL] {
                let mut b = real[..cut.min(real.len())].to_vec();
                if !b.is_empty() {
                    let i = pos % b.len();
                    b[i] = byte;
                }
                if let Ok(l) = BackupLabel::parse(&b) {
                    prop_assert_eq!(BackupLabel::parse(&l.format()).unwrap().into_fields(), l.into_fields());
                }
                let truncated = &real[..cut.min(real.len())];
                if !truncated.is_empty() && !truncated.ends_with(b"\n") {
                    let is_unterminated = matches!(BackupLabel::parse(truncated), Err(LabelError::Unterminated { .. }));
                    prop_assert!(is_unterminated);
                }
            }
        }

        #[test]
        fn map_round_trips_v14(m in any_map()) {
            let bytes = m.format(MapEscaping::V14).unwrap();
            let parsed = TablespaceMap::parse(&bytes, MapEscaping::V14).unwrap();
            prop_assert_eq!(&parsed, &m);
            prop_assert_eq!(parsed.format(MapEscaping::V14).unwrap(), bytes);
        }

        #[test]
        fn map_round_trips_pre14_for_representable_paths(m in any_map()) {
            if let Ok(bytes) = m.format(MapEscaping::Pre14) {
                let parsed = TablespaceMap::parse(&bytes, MapEscaping::Pre14).unwrap();
                prop_assert_eq!(&parsed, &m);
                prop_assert_eq!(parsed.format(MapEscaping::Pre14).unwrap(), bytes.clone());
                // the practical rule: such a file reads the same under both readers
                prop_assert_eq!(TablespaceMap::parse(&bytes, MapEscaping::V14).unwrap(), m);
            }
        }

        #[test]
        fn map_parse_never_panics(bytes in proptest::collection::vec(prop_oneof![Just(b'\\'), Just(b'\n'), Just(b'\r'), Just(b' '), Just(b'1'), any::<u8>()], 0..80)) {
            for esc in [MapEscaping::Pre14, MapEscaping::V14] {
                if let Ok(m) = TablespaceMap::parse(&bytes, esc) {
                    let again = TablespaceMap::parse(&m.format(MapEscaping::V14).unwrap(), MapEscaping::V14).unwrap();
                    prop_assert_eq!(again, m);
                }
            }
        }
    }
}
