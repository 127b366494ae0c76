//! The metadata of a backup (`pgsafe.json`, manifest, label, pg_control) read and compared,
//! and the plan of the file and WAL checks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{
    FileCheck, Problem, Verifier, VerifyError, VerifyOptions, VerifyReport, WalCheck,
    read_optional, read_stored, segments_for_ranges, tablespace_locations, wal_check,
};
use crate::checksum::ChecksumAlgorithm;
use crate::codec::{Compression, DEFAULT_ZSTD_LEVEL};
use crate::control::ControlFile;
use crate::info::{BackupInfo, WalMode};
use crate::label::BackupLabel;
use crate::layout::{
    COMPLETE_MARKER, CONTROL_FILE, INCOMPLETE_MARKER, LABEL_FILE, Listing, MANIFEST_FILE,
    MANIFEST_LIMIT, MAP_FILE, SMALL_FILE_LIMIT, StoredBackup, WAL_DIR, in_wal_dir, stored_path,
    wal_file_name,
};
use crate::manifest::Manifest;
use crate::plan::RelPath;
use crate::types::WalSegment;
use crate::wal::{self, WalRange};

impl<'a> Verifier<'a> {
    pub(super) fn new(backup: &'a StoredBackup, opts: &'a VerifyOptions<'a>) -> Self {
        Verifier {
            backup,
            archive: None,
            wal_archived: false,
            opts,
            info: None,
            manifest: None,
            label: None,
            compression: Compression::None,
            problems: Vec::new(),
            notes: Vec::new(),
            ranges: Vec::new(),
            seg_size: None,
            files_checked: 0,
            data_files: 0,
            bytes_checked: 0,
            wal_checked: 0,
            wal_records: 0,
            wal_tablespaces_created: Vec::new(),
            control: None,
            backup_end: None,
            tablespaces: Vec::new(),
        }
    }

    fn problem(&mut self, p: Problem) {
        self.problems.push(p);
    }

    /// pgsafe.json, the manifest, the label; decides the compression.
    pub(super) fn read_metadata(&mut self) -> Result<(), VerifyError> {
        let backup = self.backup;
        let incomplete = backup.exists(INCOMPLETE_MARKER);
        // An unreadable one is reported and counts as present (it is not "not a backup").
        let mut unreadable = Vec::new();
        let mut read = |rel: &str, limit: u64| match read_optional(backup, rel, limit) {
            Ok(b) => (b, false),
            Err(p) => {
                unreadable.push(p);
                (None, true)
            }
        };
        let (info_bytes, info_bad) = read(COMPLETE_MARKER, SMALL_FILE_LIMIT);
        let (manifest_bytes, manifest_bad) = read(MANIFEST_FILE, MANIFEST_LIMIT);
        let (label_bytes, label_bad) = read(LABEL_FILE, SMALL_FILE_LIMIT);
        let (map_bytes, _) = read(MAP_FILE, SMALL_FILE_LIMIT);
        if info_bytes.is_none()
            && manifest_bytes.is_none()
            && label_bytes.is_none()
            && unreadable.is_empty()
        {
            return Err(VerifyError::NotABackup(backup.shown().to_owned()));
        }
        self.problems.extend(unreadable);
        match &info_bytes {
            None if info_bad => {}
            None => self.problem(Problem::Incomplete {
                incomplete_marker: incomplete,
            }),
            Some(b) => {
                if incomplete {
                    self.problem(Problem::IncompleteMarker);
                }
                match BackupInfo::parse(b) {
                    Ok(i) => self.info = Some(i),
                    Err(e) => self.problem(Problem::BadInfo {
                        error: e.to_string(),
                    }),
                }
            }
        }
        match &manifest_bytes {
            None if manifest_bad => {}
            None => self.problem(Problem::ManifestMissing),
            Some(b) => match Manifest::parse(b) {
                Ok(m) => self.manifest = Some(m),
                Err(e) => self.problem(Problem::ManifestInvalid {
                    error: e.to_string(),
                }),
            },
        }
        match &label_bytes {
            None if label_bad => {}
            None => self.problem(Problem::LabelMissing),
            Some(b) => match BackupLabel::parse(b) {
                Ok(l) => self.label = Some(l),
                Err(e) => self.problem(Problem::LabelInvalid {
                    error: e.to_string(),
                }),
            },
        }
        self.compression = match &self.info {
            Some(i) => i.compression,
            // Without pgsafe.json: the suffix of the stored pg_control tells.
            None => [
                Compression::Zstd {
                    level: DEFAULT_ZSTD_LEVEL,
                },
                Compression::Lz4,
            ]
            .into_iter()
            .find(|c| {
                let stored = format!("{CONTROL_FILE}{}", c.suffix());
                backup.size(&stored).is_ok_and(|s| s.is_some())
            })
            .unwrap_or(Compression::None),
        };
        self.seg_size = self.info.as_ref().map(|i| i.wal_segment_size);
        self.ranges = match (&self.manifest, &self.info) {
            (Some(m), _) => m.wal_ranges.clone(),
            (None, Some(i)) if i.start_tli == i.stop_tli => vec![WalRange {
                tli: i.stop_tli,
                start_lsn: i.start_lsn,
                end_lsn: i.stop_lsn,
            }],
            _ => Vec::new(),
        };
        if let (Some(m), Some(i)) = (&self.manifest, &self.info) {
            let found = compare_info_manifest(m, i);
            self.problems.extend(found);
        }
        if let (Some(b), Some(i)) = (&map_bytes, &self.info) {
            match tablespace_locations(b, i.server_version) {
                Ok(t) => self.tablespaces = t,
                Err(error) => self.problem(Problem::MapInvalid { error }),
            }
        }
        Ok(())
    }

    /// Matches the listing against the manifest and the WAL range: missing and extra files are
    /// reported here; what is present becomes a check item.
    pub(super) fn plan_checks(&mut self, listing: &Listing) -> (Vec<FileCheck>, Vec<WalCheck>) {
        for s in &listing.special {
            self.problem(Problem::NotAFile {
                path: s.to_string(),
            });
        }
        for (path, to) in &listing.links {
            self.problem(Problem::Symlink {
                path: path.to_string(),
                points_to: to.display().to_string(),
            });
        }
        for path in &listing.hard_links {
            self.problem(Problem::HardLink {
                path: path.to_string(),
            });
        }
        for (path, error) in &listing.unreadable {
            self.problem(Problem::Unreadable {
                path: path.to_string(),
                error: error.clone(),
            });
        }
        // Stored paths already reported as something else than a regular file.
        let reported: BTreeSet<&RelPath> = listing
            .links
            .iter()
            .map(|(p, _)| p)
            .chain(&listing.special)
            .chain(listing.unreadable.iter().map(|(p, _)| p))
            .collect();
        let algorithm = self
            .info
            .as_ref()
            .map_or(ChecksumAlgorithm::None, |i| i.checksum);
        let mut unlisted: BTreeSet<&RelPath> = listing.files.keys().collect();
        let mut files = Vec::new();
        if let Some(m) = &self.manifest {
            let mut missing = Vec::new();
            for entry in &m.files {
                let stored = stored_path(&entry.path, self.compression);
                if entry.checksum.is_none() && algorithm != ChecksumAlgorithm::None {
                    missing.push(Problem::ChecksumMissing {
                        path: entry.path_lossy().into_owned(),
                        algorithm,
                    });
                }
                if covered(&reported, &stored) {
                    continue;
                }
                match listing.files.get(&stored) {
                    Some(&disk_size) => {
                        unlisted.remove(&stored);
                        files.push(FileCheck {
                            entry: entry.clone(),
                            stored,
                            disk_size,
                        });
                    }
                    None => {
                        // Reported once, by their own problem.
                        let own = entry.path == LABEL_FILE.as_bytes()
                            || entry.path == COMPLETE_MARKER.as_bytes();
                        if !own {
                            missing.push(Problem::Missing {
                                path: entry.path_lossy().into_owned(),
                                stored_as: stored.to_string(),
                            });
                        }
                    }
                }
            }
            self.problems.extend(missing);
        } else {
            unlisted.clear();
        }
        let wal = self.plan_wal(listing);
        let skip = [MANIFEST_FILE, INCOMPLETE_MARKER];
        let extra: Vec<Problem> = unlisted
            .into_iter()
            .filter(|p| {
                let b = p.as_bytes();
                !in_wal_dir(b) && !skip.iter().any(|s| s.as_bytes() == b)
            })
            .map(|p| Problem::Extra {
                path: p.to_string(),
            })
            .collect();
        self.problems.extend(extra);
        (files, wal)
    }

    /// WAL segments to check, and extra files in `pg_wal/`.
    fn plan_wal(&mut self, listing: &Listing) -> Vec<WalCheck> {
        let in_wal: BTreeMap<&[u8], u64> = listing
            .files
            .iter()
            .filter_map(|(p, s)| wal_file_name(p.as_bytes()).map(|n| (n, *s)))
            .collect();
        let mode = self.info.as_ref().map(|i| i.wal.mode);
        let mut expected: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut checks = Vec::new();
        let segments = match self.seg_size {
            Some(size) => segments_for_ranges(&self.ranges, size),
            None => Vec::new(),
        };
        if let Some(i) = &self.info {
            if !segments.is_empty() && segments != i.wal.segments {
                let show = |s: &[WalSegment]| match (s.first(), s.last()) {
                    (Some(a), Some(b)) => format!("{a}..{b} ({})", s.len()),
                    _ => "none".to_owned(),
                };
                self.problems.push(Problem::InfoMismatch {
                    detail: format!(
                        "it lists WAL segments {}, the WAL-Ranges need {}",
                        show(&i.wal.segments),
                        show(&segments)
                    ),
                });
            }
        }
        let included = match mode {
            Some(m) => m == WalMode::Include,
            // Without pgsafe.json: WAL is expected when some is there.
            None => !in_wal.is_empty(),
        };
        if included {
            for seg in &segments {
                let name = seg.to_string();
                expected.insert(name.clone().into_bytes());
                match in_wal.get(name.as_bytes()) {
                    Some(&disk_size) => checks.push(WalCheck {
                        seg: *seg,
                        disk_size,
                    }),
                    None => self.problems.push(Problem::WalMissing { segment: name }),
                }
            }
            let history: Vec<String> = match &self.info {
                Some(i) => i.wal.history_files.clone(),
                None => in_wal
                    .keys()
                    .filter_map(|n| std::str::from_utf8(n).ok())
                    .filter(|n| wal::history_file_tli(n).is_some())
                    .map(str::to_owned)
                    .collect(),
            };
            for h in history {
                expected.insert(h.clone().into_bytes());
                self.check_history(&h, in_wal.contains_key(h.as_bytes()));
            }
        } else if let (Some(archive), Some(size), Some(_), Some(first), Some(last)) = (
            self.archive,
            self.seg_size,
            self.info.as_ref().and_then(|i| i.wal.in_repository()),
            segments.first(),
            segments.last(),
        ) {
            // The WAL walk reads these from the archive (wal_check.rs); the size is checked
            // there, on the content.
            self.wal_archived = true;
            if self.opts.quick {
                // The walk reads nothing when quick: presence is checked here.
                for seg in &segments {
                    let name = seg.to_string();
                    match archive.contains(seg.tli, &name) {
                        Ok(true) => {}
                        Ok(false) => self.problems.push(Problem::ArchiveWalMissing {
                            file: name,
                            archive: archive.shown().display().to_string(),
                        }),
                        Err(e) => self.problems.push(Problem::ArchiveWalInvalid {
                            file: name,
                            archive: archive.shown().display().to_string(),
                            error: e.to_string(),
                        }),
                    }
                }
            }
            checks.extend(segments.iter().map(|seg| WalCheck {
                seg: *seg,
                disk_size: size.bytes(),
            }));
            let history = self
                .info
                .as_ref()
                .map(|i| i.wal.history_files.clone())
                .unwrap_or_default();
            for h in history {
                self.check_archived_history(archive, &h);
            }
            self.notes.push(format!(
                "the WAL this backup needs is in its repository's WAL archive {}: {} segment(s) \
                 {first} .. {last}, checked there",
                archive.shown().display(),
                segments.len()
            ));
        } else if let (Some(r), Some(first), Some(last)) = (
            self.info.as_ref().and_then(|i| i.wal.in_repository()),
            segments.first(),
            segments.last(),
        ) {
            self.notes.push(format!(
                "the WAL this backup needs is NOT in this folder, so it was not checked: {} \
                 segment(s) {first} .. {last} are in the WAL archive of cluster {} in the \
                 repository {} ({}/{}/wal/), where the backup waited for them. Verify and \
                 restore the backup from that repository, which reads them there",
                segments.len(),
                r.cluster,
                r.repo,
                r.repo,
                r.cluster
            ));
        } else if let (Some(i), Some(first), Some(last)) =
            (&self.info, segments.first(), segments.last())
        {
            self.notes.push(format!(
                "the WAL this backup needs is not in it (WAL mode {}): {} segment(s) {first} .. \
                 {last} must come from {}",
                match i.wal.mode {
                    WalMode::Archive => "archive",
                    _ => "none",
                },
                segments.len(),
                i.wal.source
            ));
        }
        for name in in_wal.keys() {
            let ok_name = expected.contains(*name);
            if !ok_name {
                self.problems.push(Problem::Extra {
                    path: format!("{WAL_DIR}/{}", String::from_utf8_lossy(name)),
                });
            }
        }
        checks
    }

    /// A timeline history file the backup needs, in the repository's archive.
    fn check_archived_history(&mut self, archive: &super::WalArchive, file: &str) {
        let invalid = |error: String| Problem::ArchiveWalInvalid {
            file: file.to_owned(),
            archive: archive.shown().display().to_string(),
            error,
        };
        let Some(tli) = wal::history_file_tli(file) else {
            self.problem(invalid("not a timeline history file name".into()));
            return;
        };
        match archive.get(tli, file, SMALL_FILE_LIMIT) {
            Ok(None) => self.problem(Problem::ArchiveWalMissing {
                file: file.to_owned(),
                archive: archive.shown().display().to_string(),
            }),
            Ok(Some(b)) => {
                if let Err(e) = wal::TimelineHistory::parse(tli, &b) {
                    self.problem(invalid(e.to_string()));
                }
            }
            Err(e) => self.problem(invalid(e.to_string())),
        }
    }

    fn check_history(&mut self, file: &str, present: bool) {
        if !present {
            self.problem(Problem::HistoryMissing {
                file: file.to_owned(),
            });
            return;
        }
        let Some(tli) = wal::history_file_tli(file) else {
            self.problem(Problem::HistoryInvalid {
                file: file.to_owned(),
                error: "not a timeline history file name".into(),
            });
            return;
        };
        match self
            .backup
            .get(&format!("{WAL_DIR}/{file}"), SMALL_FILE_LIMIT)
        {
            Ok(None) => self.problem(Problem::HistoryMissing {
                file: file.to_owned(),
            }),
            Ok(Some(b)) => {
                if let Err(e) = wal::TimelineHistory::parse(tli, &b) {
                    self.problem(Problem::HistoryInvalid {
                        file: file.to_owned(),
                        error: e.to_string(),
                    });
                } else if let Some(p) = wal_check::crc_problem(self.info.as_ref(), file, &b) {
                    self.problem(p);
                }
            }
            Err(e) => self.problem(Problem::HistoryInvalid {
                file: file.to_owned(),
                error: e.to_string(),
            }),
        }
    }
}

impl Verifier<'_> {
    /// The label against the manifest's WAL range and pgsafe.json.
    pub(super) fn check_label(&mut self) {
        let Some(label) = self.label.clone() else {
            return;
        };
        let mut mismatch = Vec::new();
        if label.is_incremental() {
            mismatch.push(
                "it is the label of an incremental backup (INCREMENTAL FROM LSN): PostgreSQL \
                 refuses to start from it"
                    .to_owned(),
            );
        }
        if label.is_history_file() {
            mismatch.push(
                "it has a STOP WAL LOCATION line: it is a backup history file, not a backup_label"
                    .to_owned(),
            );
        }
        if let Some(size) = self.seg_size {
            if let Err(e) = label.check_against(size) {
                self.problem(Problem::LabelInvalid {
                    error: e.to_string(),
                });
            }
        }
        if let Some(oldest) = self.ranges.last() {
            if oldest.start_lsn != label.start_lsn() || oldest.tli != label.timeline() {
                mismatch.push(format!(
                    "START WAL LOCATION {} on timeline {}, but the manifest's WAL range starts at \
                     {} on timeline {}",
                    label.start_lsn(),
                    label.timeline(),
                    oldest.start_lsn,
                    oldest.tli
                ));
            }
        }
        if let Some(i) = &self.info {
            if i.start_lsn != label.start_lsn() || i.start_tli != label.timeline() {
                mismatch.push(format!(
                    "START WAL LOCATION {} on timeline {}, {COMPLETE_MARKER} says {} on timeline \
                     {}",
                    label.start_lsn(),
                    label.timeline(),
                    i.start_lsn,
                    i.start_tli
                ));
            }
            if i.checkpoint_lsn != label.checkpoint_lsn() {
                mismatch.push(format!(
                    "CHECKPOINT LOCATION {}, {COMPLETE_MARKER} says {}",
                    label.checkpoint_lsn(),
                    i.checkpoint_lsn
                ));
            }
            if i.from_standby != label.is_from_standby() {
                mismatch.push(format!(
                    "BACKUP FROM says {}a standby, {COMPLETE_MARKER} says {}a standby",
                    if label.is_from_standby() { "" } else { "not " },
                    if i.from_standby { "" } else { "not " }
                ));
            }
        }
        for detail in mismatch {
            self.problem(Problem::LabelMismatch { detail });
        }
    }

    /// The stored pg_control decodes and agrees with the manifest and pgsafe.json.
    pub(super) fn check_control(&mut self) {
        let read = read_stored(self.backup, CONTROL_FILE, self.compression);
        let bytes = match read {
            Err(e) => {
                self.problem(Problem::Unreadable {
                    path: CONTROL_FILE.into(),
                    error: e.to_string(),
                });
                return;
            }
            Ok(r) => r,
        };
        let bytes = match bytes {
            // Reported as a missing file when the manifest lists it.
            None => {
                if self.manifest.is_none() {
                    self.problem(Problem::Missing {
                        path: CONTROL_FILE.into(),
                        stored_as: stored_path(CONTROL_FILE.as_bytes(), self.compression)
                            .to_string(),
                    });
                }
                return;
            }
            // Reported by the file check.
            Some(Err(_)) => return,
            Some(Ok(b)) => b,
        };
        let control = match ControlFile::decode(&bytes) {
            Ok(c) => c,
            Err(e) => {
                self.problem(Problem::ControlInvalid {
                    error: e.to_string(),
                });
                return;
            }
        };
        let mut mismatch = Vec::new();
        if let Some(sysid) = self.manifest.as_ref().and_then(|m| m.system_id) {
            if sysid != control.system_identifier {
                mismatch.push(format!(
                    "system identifier {}, {MANIFEST_FILE} says {sysid}",
                    control.system_identifier
                ));
            }
        }
        if let Some(i) = &self.info {
            if i.system_identifier != control.system_identifier {
                mismatch.push(format!(
                    "system identifier {}, {COMPLETE_MARKER} says {}",
                    control.system_identifier, i.system_identifier
                ));
            }
            match control.major_version() {
                Some(v) if v.major() == i.server_version.major() => {}
                other => mismatch.push(format!(
                    "it is the pg_control of PostgreSQL {}, {COMPLETE_MARKER} says {}",
                    other.map_or("(unknown)".to_owned(), |v| v.major_name()),
                    i.server_version
                )),
            }
            if control.xlog_seg_size != i.wal_segment_size {
                mismatch.push(format!(
                    "WAL segment size {} bytes, {COMPLETE_MARKER} says {}",
                    control.xlog_seg_size.bytes(),
                    i.wal_segment_size.bytes()
                ));
            }
        } else if self.seg_size.is_none() {
            self.seg_size = Some(control.xlog_seg_size);
        }
        for detail in mismatch {
            self.problem(Problem::ControlMismatch { detail });
        }
        self.control = Some(control);
    }

    pub(super) fn report(self, started: Instant) -> VerifyReport {
        let mut notes = self.notes;
        if self.opts.quick {
            notes.push(if self.compression.is_none() {
                "quick check: presence and sizes only (no checksums, no WAL records)".into()
            } else {
                "quick check: presence only for compressed files, sizes of the others (no \
                 checksums, no WAL records)"
                    .into()
            });
        }
        let i = self.info.as_ref();
        VerifyReport {
            backup: self.backup.shown().to_owned(),
            quick: self.opts.quick,
            ok: self.problems.is_empty(),
            problems: self.problems,
            notes,
            label: i.map(|i| i.label.clone()),
            server_version: i.map(|i| i.server_version.to_string()),
            system_identifier: i.map(|i| i.system_identifier),
            start_lsn: i.map(|i| i.start_lsn),
            stop_lsn: i.map(|i| i.stop_lsn),
            compression: self.compression,
            wal_mode: i.map(|i| i.wal.mode),
            files: self.data_files,
            files_checked: self.files_checked,
            bytes_checked: self.bytes_checked,
            wal_segments_checked: self.wal_checked,
            wal_records_checked: self.wal_records,
            wal_tablespaces_created: self.wal_tablespaces_created,
            backup_end: self.backup_end,
            elapsed_secs: started.elapsed().as_secs_f64(),
            tablespaces: self.tablespaces,
            info: self.info,
        }
    }
}

/// `path` or one of its parent directories is in `reported`.
fn covered(reported: &BTreeSet<&RelPath>, path: &RelPath) -> bool {
    let b = path.as_bytes();
    reported.contains(path)
        || b.iter()
            .enumerate()
            .filter(|(_, c)| **c == b'/')
            .any(|(i, _)| reported.contains(&RelPath::from_bytes(&b[..i])))
}

/// `pgsafe.json` against the manifest: system identifier and WAL range.
fn compare_info_manifest(m: &Manifest, i: &BackupInfo) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(sysid) = m.system_id {
        if sysid != i.system_identifier {
            out.push(Problem::InfoMismatch {
                detail: format!(
                    "system identifier {} in {COMPLETE_MARKER}, {sysid} in {MANIFEST_FILE}",
                    i.system_identifier
                ),
            });
        }
    }
    match (m.wal_ranges.first(), m.wal_ranges.last()) {
        (Some(newest), Some(oldest)) => {
            if newest.end_lsn != i.stop_lsn || newest.tli != i.stop_tli {
                out.push(Problem::InfoMismatch {
                    detail: format!(
                        "the backup stops at {} on timeline {} per {COMPLETE_MARKER}, at {} on \
                             timeline {} per the WAL-Ranges",
                        i.stop_lsn, i.stop_tli, newest.end_lsn, newest.tli
                    ),
                });
            }
            if oldest.start_lsn != i.start_lsn || oldest.tli != i.start_tli {
                out.push(Problem::InfoMismatch {
                    detail: format!(
                        "the backup starts at {} on timeline {} per {COMPLETE_MARKER}, at {} \
                             on timeline {} per the WAL-Ranges",
                        i.start_lsn, i.start_tli, oldest.start_lsn, oldest.tli
                    ),
                });
            }
        }
        _ => out.push(Problem::InfoMismatch {
            detail: format!("{MANIFEST_FILE} has no WAL-Ranges"),
        }),
    }
    out
}
