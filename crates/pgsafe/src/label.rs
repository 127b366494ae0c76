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
mod tests;
