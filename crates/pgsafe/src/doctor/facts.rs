//! Gathering: everything the doctor reads from the directory (and, with `--connect`, from the
//! server) into a [`Facts`] value. This is the only IO of the doctor; [`super::classify`] is a
//! pure function of the result, so every state can be unit-tested with hand-made facts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::conf::Settings;
use super::evidence::{ArchiveFacts, HistoryFile, HolderFacts};
use super::{RestoreMarker, has_sentinel};
use crate::control::{ControlFile, DbState};
use crate::datadir::LabelFile;
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize, WalSegment};

mod gather;
mod wal_state;

pub use gather::gather;
pub(crate) use wal_state::history_file_start;

/// Everything the doctor knows about a directory.
#[derive(Debug, Default, Serialize)]
pub struct Facts {
    /// The directory as given.
    pub path: PathBuf,
    /// Entries every data directory has that are missing here (`PG_VERSION`,
    /// `global/pg_control`), or a note that the directory is empty.
    pub missing: Vec<String>,
    /// Sub-folders that are data directories (the user may have passed a parent folder).
    pub nested_data_dirs: Vec<PathBuf>,
    /// From `PG_VERSION`.
    pub version: Option<PgVersion>,
    pub pg_version_error: Option<String>,
    pub control: Option<ControlFacts>,
    pub control_error: Option<String>,
    pub label: Option<LabelFile>,
    pub label_old: Option<LabelFile>,
    pub tablespace_map: Option<MapFacts>,
    pub files: Files,
    pub postmaster: PidFacts,
    pub wal: WalFacts,
    /// `restore_command` / `primary_conninfo` from the configuration files.
    pub settings: Settings,
    pub marker: Option<MarkerFacts>,
    /// Where the backup being restored ended, if anything says so.
    pub backup_end: Option<BackupEnd>,
    /// A backup history file in pg_wal for the label's start (`<seg>.<offset>.backup`): written
    /// when that backup was *stopped*.
    pub label_history_file: Option<String>,
    /// With `--connect`.
    pub server: Option<ServerFacts>,
    /// The backup history files in `pg_wal`, with their content.
    pub wal_history: Vec<HistoryFile>,
    /// The WAL archive the copied configuration names.
    pub archive: ArchiveFacts,
    /// pgsafe's snapshot-mode holder records.
    pub holders: HolderFacts,
    /// Entries of `pg_tblspc` named by an OID that are directories, not links: in-place
    /// tablespaces (`allow_in_place_tablespaces`, 15+).
    pub in_place_tablespaces: Vec<String>,
}

/// The pg_control fields the doctor uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlFacts {
    pub state: DbState,
    pub checkpoint: Lsn,
    /// 9.6/10 only.
    pub prev_checkpoint: Option<Lsn>,
    pub redo: Lsn,
    pub timeline: TimelineId,
    /// Time of the latest checkpoint (epoch seconds).
    pub checkpoint_time: i64,
    /// Last update of pg_control (epoch seconds).
    pub time: i64,
    pub min_recovery_point: Lsn,
    pub min_recovery_point_tli: TimelineId,
    pub backup_start_point: Lsn,
    pub backup_end_point: Lsn,
    pub backup_end_required: bool,
    pub system_identifier: SystemId,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    /// The major the catalog version belongs to.
    pub version: Option<PgVersion>,
    pub wal_seg_size: WalSegSize,
    /// pg_control carries [`super::SENTINEL_CHECKPOINT`].
    pub sentinel: bool,
}

impl From<&ControlFile> for ControlFacts {
    fn from(c: &ControlFile) -> ControlFacts {
        ControlFacts {
            state: c.state,
            checkpoint: c.checkpoint,
            prev_checkpoint: c.prev_checkpoint,
            redo: c.checkpoint_copy.redo,
            timeline: c.checkpoint_copy.this_timeline,
            checkpoint_time: c.checkpoint_copy.time,
            time: c.time,
            min_recovery_point: c.min_recovery_point,
            min_recovery_point_tli: c.min_recovery_point_tli,
            backup_start_point: c.backup_start_point,
            backup_end_point: c.backup_end_point,
            backup_end_required: c.backup_end_required,
            system_identifier: c.system_identifier,
            pg_control_version: c.pg_control_version,
            catalog_version_no: c.catalog_version_no,
            version: c.major_version(),
            wal_seg_size: c.xlog_seg_size,
            sentinel: has_sentinel(c),
        }
    }
}

/// Files whose presence matters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Files {
    pub recovery_signal: bool,
    pub standby_signal: bool,
    /// 10–11: recovery configuration; 12+: makes the server refuse to start.
    pub recovery_conf: bool,
    pub recovery_done: bool,
    pub tablespace_map_old: bool,
    /// Written by the postmaster at every start and never removed by PostgreSQL; backup tools
    /// (pg_basebackup, pgsafe, the documented manual procedure) leave it out of backups.
    pub postmaster_opts: bool,
    /// pg_basebackup (13+) and pgsafe put one into the backup folder.
    pub backup_manifest: bool,
    /// pgsafe's completion marker of a backup folder.
    pub pgsafe_json: bool,
    /// [`super::REMOVED_LABEL_FILE`] exists (an earlier `doctor --fix`).
    pub removed_label: bool,
}

/// `tablespace_map`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MapFacts {
    pub error: Option<String>,
    pub entries: Vec<MapEntryFacts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapEntryFacts {
    pub oid: u32,
    pub path: String,
    /// The location exists (recovery creates the `pg_tblspc/<oid>` link to it).
    pub exists: bool,
}

/// The restore marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkerFacts {
    pub parsed: Option<RestoreMarker>,
    pub error: Option<String>,
}

/// The end of the backup being restored, and what said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupEnd {
    pub lsn: Lsn,
    pub timeline: Option<TimelineId>,
    pub source: String,
}

/// Is the `postmaster.pid` process alive?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// No `postmaster.pid`.
    #[default]
    Absent,
    /// The file exists but names no pid.
    Unreadable,
    /// The process is gone, a zombie, another program, or a PostgreSQL of another directory.
    Stale,
    /// A PostgreSQL process in this directory (or a process pgsafe could not look into).
    Live,
}

/// `postmaster.pid` and what its pid is now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidFacts {
    pub liveness: Liveness,
    pub pid: Option<i32>,
    /// Line 8 (10+): `starting`, `stopping`, `ready`, `standby`.
    pub status: Option<String>,
    pub start_time: Option<i64>,
    /// Line 2: the data directory of the server that wrote the file.
    pub data_directory: Option<String>,
    /// Line 4: the port.
    pub port: Option<u16>,
    /// Whether line 2 is this directory; `None` if it could not be compared.
    pub names_this_directory: Option<bool>,
    /// A process with that pid exists (whatever it is): PostgreSQL then refuses to start
    /// ("lock file postmaster.pid already exists") until the file is removed.
    pub pid_in_use: bool,
    /// One sentence about the pid.
    pub detail: String,
}

/// What the first page of a segment file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum SegState {
    /// A segment of this cluster, holding the WAL its name says.
    Valid,
    /// An old segment renamed for reuse (its header names an older position): holds no WAL of
    /// this name yet.
    Recycled,
    /// Pre-allocated, never written.
    Unwritten,
    /// Not `wal_segment_size` bytes.
    WrongSize(u64),
    /// Another cluster's WAL, another version's, or damaged.
    Invalid(String),
    /// Present but not checked (no pg_control, or too many files).
    Unchecked,
}

impl SegState {
    /// Counts as present for recovery (unchecked files get the benefit of the doubt).
    pub fn usable(&self) -> bool {
        matches!(self, SegState::Valid | SegState::Unchecked)
    }
}

/// `pg_wal`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalFacts {
    pub exists: bool,
    pub symlink_target: Option<PathBuf>,
    pub error: Option<String>,
    /// Segment size used to check and summarise the files (from pg_control).
    pub seg_size: Option<WalSegSize>,
    /// Every segment file and what its header says (summarised in `segment_ranges`).
    #[serde(skip)]
    pub segments: BTreeMap<WalSegment, SegState>,
    /// [`WalFacts::ranges`], filled by [`gather`].
    pub segment_ranges: Vec<String>,
    /// [`WalFacts::unusable`], filled by [`gather`].
    pub unusable_segments: Vec<String>,
    pub history_files: Vec<String>,
    pub backup_history_files: Vec<String>,
    pub partial_files: Vec<String>,
}

impl WalFacts {
    /// The best state among segments numbered `segno` on timelines up to `max_tli` (recovery
    /// reads a segment from the newest timeline of the history that has it).
    pub fn state_of(&self, segno: u64, max_tli: TimelineId) -> Option<&SegState> {
        let size = self.seg_size?;
        let mut best: Option<&SegState> = None;
        for (seg, st) in &self.segments {
            if seg.tli > max_tli || seg.segno(size).ok() != Some(segno) {
                continue;
            }
            if st.usable() || best.is_none() {
                best = Some(st);
            }
        }
        best
    }

    /// The segments from the one containing `from` to the one containing `to` (inclusive) that
    /// are not usable, named on timeline `tli`; at most `limit` of them, plus the total count.
    pub fn missing_between(
        &self,
        from: Lsn,
        to: Lsn,
        tli: TimelineId,
        limit: usize,
    ) -> (Vec<WalSegment>, u64) {
        let Some(size) = self.seg_size else {
            return (Vec::new(), 0);
        };
        let first = from.0 / size.bytes();
        let last = (to.0 / size.bytes()).max(first);
        let mut out = Vec::new();
        let mut count = 0;
        // Bounded: a backup needing more than a million segments is not checked segment by
        // segment.
        for segno in first..=last.min(first + 1_000_000) {
            if !self.state_of(segno, tli).is_some_and(SegState::usable) {
                count += 1;
                if out.len() < limit {
                    out.push(WalSegment::from_segno(tli, segno, size));
                }
            }
        }
        (out, count)
    }

    /// Contiguous runs of usable segments, as `first..last (n)` strings.
    pub fn ranges(&self) -> Vec<String> {
        let usable = self
            .segments
            .iter()
            .filter(|(_, st)| st.usable())
            .map(|(s, _)| *s);
        let Some(size) = self.seg_size else {
            return usable.map(|s| s.to_string()).collect();
        };
        let mut out = Vec::new();
        let mut run: Option<(WalSegment, WalSegment, u64)> = None;
        let flush = |(a, b, n): (WalSegment, WalSegment, u64), out: &mut Vec<String>| {
            out.push(if n == 1 {
                a.to_string()
            } else {
                format!("{a}..{b} ({n})")
            });
        };
        for seg in usable {
            match run.as_mut() {
                Some((_, last, n))
                    if last.tli == seg.tli
                        && last.segno(size).ok().map(|x| x + 1) == seg.segno(size).ok() =>
                {
                    *last = seg;
                    *n += 1;
                }
                _ => {
                    if let Some(r) = run.take() {
                        flush(r, &mut out);
                    }
                    run = Some((seg, seg, 1));
                }
            }
        }
        if let Some(r) = run {
            flush(r, &mut out);
        }
        out
    }

    /// Segment files that hold no usable WAL, with what they are (at most 100).
    pub fn unusable(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter(|(_, st)| !st.usable())
            .take(100)
            .map(|(seg, st)| match st {
                SegState::Recycled => format!("{seg}: recycled (old WAL renamed for reuse)"),
                SegState::Unwritten => format!("{seg}: pre-allocated, never written"),
                SegState::WrongSize(n) => format!("{seg}: {n} bytes, not a full segment"),
                SegState::Invalid(e) => format!("{seg}: {e}"),
                SegState::Valid | SegState::Unchecked => seg.to_string(),
            })
            .collect()
    }

    /// The newest valid segment.
    pub fn newest_valid(&self) -> Option<WalSegment> {
        self.segments
            .iter()
            .filter(|(_, s)| **s == SegState::Valid)
            .map(|(seg, _)| *seg)
            .max_by_key(|s| self.seg_size.and_then(|z| s.segno(z).ok()))
    }
}

/// What the server said (`--connect`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerFacts {
    /// The connection target (password redacted).
    pub target: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub version: Option<PgVersion>,
    pub in_recovery: Option<bool>,
    pub system_identifier: Option<SystemId>,
    pub data_directory: Option<String>,
    /// The server's data_directory is this directory (`None`: not visible to this user).
    pub same_directory: Option<bool>,
    /// `pg_is_in_backup()` (10–14: an exclusive backup is running).
    pub in_exclusive_backup: Option<bool>,
    pub backup_start_time: Option<String>,
    pub archive_mode: Option<String>,
    pub archive_command: Option<String>,
    pub restore_command: Option<String>,
}

#[cfg(test)]
mod tests;
