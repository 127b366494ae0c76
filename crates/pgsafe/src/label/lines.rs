//! The lines of a `backup_label` or backup history file: the keys in the order the server
//! writes them (`build_backup_content` in `src/backend/access/transam/xlogbackup.c`, 16–18;
//! `do_pg_backup_start` 15 and `do_pg_start_backup` 9.6–14 in `xlog.c`), reading one line's value into
//! [`LabelFields`], the checks across fields, and writing the fields back as lines.

use super::{
    BackupFrom, BackupMethod, CHECKPOINT_LINE, IncrementalFrom, LabelError, LabelFields,
    START_LINE, StyleDetector, WalLocation, show,
};
use crate::types::{Lsn, TimelineId, WalSegment};

/// The line keys, in the only order PostgreSQL writes them (derive(Ord) follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
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

/// Identifies line `line_no` and checks it may follow `last`.
pub(super) fn next_key(
    last: Option<Key>,
    line: &[u8],
    line_no: usize,
) -> Result<(Key, &[u8]), LabelError> {
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

pub(super) fn set_field(
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
pub(super) fn validate(f: &LabelFields) -> Result<(), LabelError> {
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

pub(super) fn format_fields(f: &LabelFields) -> Vec<u8> {
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
