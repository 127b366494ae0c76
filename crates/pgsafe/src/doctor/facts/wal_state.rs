//! The WAL a data directory holds: which segments are there and usable (size and page header),
//! and where the backup it was restored from ends (backup history file or `backup_manifest`).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::{BackupEnd, Facts, SegState, WalFacts};
use crate::control::ControlFile;
use crate::datadir::{LabelFile, read_bounded};
use crate::doctor::RESTORE_MARKER_FILE;
use crate::label::BackupLabel;
use crate::types::{Lsn, PgVersion, TimelineId, WalSegSize, WalSegment};
use crate::wal::{self, PageHeaderError};

/// Most segment headers read; beyond that, files count as present unchecked.
const MAX_HEADER_CHECKS: usize = 8192;

pub(super) fn wal_dir_name(version: Option<PgVersion>) -> &'static str {
    if version.is_some_and(|v| v.num() < 100000) {
        "pg_xlog"
    } else {
        "pg_wal"
    }
}

pub(super) fn wal_facts(
    path: &Path,
    version: Option<PgVersion>,
    control: Option<&ControlFile>,
) -> WalFacts {
    let name = wal_dir_name(version);
    let dir = path.join(name);
    let mut w = WalFacts {
        seg_size: control.map(|c| c.xlog_seg_size),
        ..WalFacts::default()
    };
    if let Ok(m) = fs::symlink_metadata(&dir)
        && m.file_type().is_symlink()
    {
        w.symlink_target = fs::read_link(&dir).ok();
    }
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            w.exists = fs::symlink_metadata(&dir).is_ok();
            w.error = Some(if e.kind() == io::ErrorKind::NotFound {
                match &w.symlink_target {
                    Some(t) => format!(
                        "{name} is a symbolic link to {}, which does not exist (a WAL disk not mounted?)",
                        t.display()
                    ),
                    None => format!("{name}/ does not exist"),
                }
            } else {
                format!("cannot read {name}/: {e}")
            });
            return w;
        }
    };
    w.exists = true;
    let mut checked = 0usize;
    let major = version.map(|v| v.major());
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Ok(seg) = n.parse::<WalSegment>() {
            let state = match control {
                Some(c) if checked < MAX_HEADER_CHECKS => {
                    checked += 1;
                    check_segment(&e.path(), seg, c, major)
                }
                _ => SegState::Unchecked,
            };
            w.segments.insert(seg, state);
        } else if wal::history_file_tli(&n).is_some() {
            w.history_files.push(n);
        } else if n.ends_with(".backup") {
            w.backup_history_files.push(n);
        } else if n.ends_with(".partial") {
            w.partial_files.push(n);
        }
    }
    w.segment_ranges = w.ranges();
    w.unusable_segments = w.unusable();
    w.history_files.sort();
    w.backup_history_files.sort();
    w.partial_files.sort();
    w
}

fn check_segment(path: &Path, seg: WalSegment, c: &ControlFile, major: Option<u32>) -> SegState {
    let size = c.xlog_seg_size;
    let mut head = Vec::with_capacity(wal::LONG_HEADER_SIZE);
    // A FIFO or device named like a segment must not block the doctor.
    let read = crate::datadir::open_regular(path, true).and_then(|f| {
        let len = f.metadata()?.len();
        f.take(wal::LONG_HEADER_SIZE as u64)
            .read_to_end(&mut head)?;
        Ok(len)
    });
    let len = match read {
        Ok(l) => l,
        Err(e) => return SegState::Invalid(format!("cannot read: {e}")),
    };
    if len != size.bytes() {
        return SegState::WrongSize(len);
    }
    match wal::check_segment_header(&head, seg, size, Some(c.system_identifier), major) {
        Ok(_) => SegState::Valid,
        Err(PageHeaderError::ZeroPage { .. }) => SegState::Unwritten,
        Err(PageHeaderError::PageAddr { .. }) => SegState::Recycled,
        Err(e) => SegState::Invalid(e.to_string()),
    }
}

/// Fills `backup_end` and `label_history_file` from the restore marker, a backup history file
/// in pg_wal matching the backup's start, or a `backup_manifest`.
pub(super) fn find_backup_end(f: &mut Facts, path: &Path) {
    let parsed = |l: &Option<LabelFile>| l.as_ref().and_then(|l| l.parsed.clone());
    let marker = f.marker.as_ref().and_then(|m| m.parsed.clone());
    let start = parsed(&f.label)
        .map(|l| l.start_lsn())
        .or(marker.as_ref().map(|m| m.start_lsn))
        .or(parsed(&f.label_old).map(|l| l.start_lsn()));
    let Some(start) = start else { return };
    if let Some(m) = &marker
        && m.start_lsn == start
        && let Some(stop) = m.stop_lsn
    {
        f.backup_end = Some(BackupEnd {
            lsn: stop,
            timeline: m.stop_timeline,
            source: format!("the restore marker {RESTORE_MARKER_FILE}"),
        });
    }
    if let Some(size) = f.wal.seg_size {
        let wal_dir = if f.version.is_some_and(|v| v.num() < 100000) {
            "pg_xlog"
        } else {
            "pg_wal"
        };
        for name in &f.wal.backup_history_files {
            let Some(hist_start) = history_file_start(name, size) else {
                continue;
            };
            if hist_start != start {
                continue;
            }
            f.label_history_file = Some(name.clone());
            if f.backup_end.is_none()
                && let Ok(b) = read_bounded(&path.join(wal_dir).join(name), 64 << 10, false)
                && let Ok(h) = BackupLabel::parse(&b)
                && let Some(stop) = h.fields().stop
            {
                f.backup_end = Some(BackupEnd {
                    lsn: stop.lsn,
                    timeline: Some(stop.file.tli),
                    source: format!("the backup history file {wal_dir}/{name}"),
                });
            }
        }
    }
    if f.backup_end.is_none()
        && f.files.backup_manifest
        && let Some(end) = manifest_end(&path.join("backup_manifest"), start)
    {
        f.backup_end = Some(end);
    }
}

/// The start LSN encoded in a backup history file name `%08X%08X%08X.%08X.backup`.
pub(crate) fn history_file_start(name: &str, size: WalSegSize) -> Option<Lsn> {
    let stem = name.strip_suffix(".backup")?;
    let (seg, off) = stem.split_once('.')?;
    let seg: WalSegment = seg.parse().ok()?;
    if off.len() != 8 {
        return None;
    }
    let off = u64::from_str_radix(off, 16).ok()?;
    seg.start_lsn(size).ok()?.checked_add(off)
}

/// The end of the WAL range of a `backup_manifest` whose range starts at `start`.
fn manifest_end(path: &Path, start: Lsn) -> Option<BackupEnd> {
    // A manifest of a million files is ~200 MB; beyond that the backup's end is not looked up.
    let bytes = read_bounded(path, 256 << 20, false).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let ranges = v.get("WAL-Ranges")?.as_array()?;
    let lsn = |r: &serde_json::Value, k: &str| r.get(k)?.as_str()?.parse::<Lsn>().ok();
    if !ranges.iter().any(|r| lsn(r, "Start-LSN") == Some(start)) {
        return None;
    }
    let last = ranges.iter().max_by_key(|r| lsn(r, "End-LSN"))?;
    Some(BackupEnd {
        lsn: lsn(last, "End-LSN")?,
        timeline: last
            .get("Timeline")
            .and_then(|t| t.as_u64())
            .and_then(|t| u32::try_from(t).ok())
            .map(TimelineId),
        source: "backup_manifest (WAL-Ranges)".into(),
    })
}
