//! `backup_label`, backup history files (`pg_wal/*.backup`) and `tablespace_map`: parse and
//! format them byte for byte as PostgreSQL 9.6–18 write them. Pure: no IO.
//!
//! Facts (`do_pg_start_backup` 9.6–14 and `do_pg_backup_start` 15 in
//! `src/backend/access/transam/xlog.c`, `build_backup_content` 16–18 in `xlogbackup.c`,
//! `read_backup_label` and `read_tablespace_map` in `xlogrecovery.c` (`xlog.c` before 15),
//! pg_rewind's `createBackupLabel` in `src/bin/pg_rewind/pg_rewind.c`):
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

use crate::types::{Lsn, TimelineId, WalSegSize, WalSegment};

mod lines;
mod map;

use lines::Key::{Checkpoint, IncrLsn};
use lines::{format_fields, next_key, set_field, validate};
pub use map::{MapError, MapEscaping, TablespaceEntry, TablespaceMap};

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
    /// timeline, start segment number, offset of the start LSN in its segment (`BackupHistoryFileName`
    /// in `src/include/access/xlog_internal.h`).
    pub fn history_file_name(&self, seg_size: WalSegSize) -> Option<String> {
        let (stop, start) = (self.fields.stop?, self.fields.start.lsn);
        let seg = WalSegment::containing(start, stop.file.tli, seg_size);
        Some(format!("{seg}.{:08X}.backup", start.0 % seg_size.bytes()))
    }
}

#[cfg(test)]
mod tests;
