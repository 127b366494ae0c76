//! Gathering: everything the doctor reads from the directory (and, with `--connect`, from the
//! server) into a [`Facts`] value. This is the only IO of the doctor; [`super::classify`] is a
//! pure function of the result, so every state can be unit-tested with hand-made facts.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::conf::{Settings, read_settings};
use super::evidence::{self, ArchiveFacts, HistoryFile, HolderFacts};
use super::{DoctorError, DoctorOptions, RESTORE_MARKER_FILE, RestoreMarker, has_sentinel};
use crate::control::{self, ControlError, ControlFile, DbState};
use crate::datadir::{LabelFile, MAX_SMALL_FILE, PostmasterPid, is_refusal, read_bounded};
use crate::label::{BackupLabel, MapEscaping, TablespaceMap};
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize, WalSegment};
use crate::wal::{self, PageHeaderError};

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

/// Most segment headers read; beyond that, files count as present unchecked.
const MAX_HEADER_CHECKS: usize = 8192;

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

fn io_err(what: &str, path: &Path, source: io::Error) -> DoctorError {
    DoctorError::Io {
        what: what.to_owned(),
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `rel` in `dir`: `Ok(None)` if missing, `Ok(Some(Err(why)))` for a file pgsafe will
/// not read (a FIFO, device, directory or symbolic link where a file should be, or one far
/// too large: never a hang, never unbounded memory); other errors are errors.
fn read_opt(dir: &Path, rel: &str) -> Result<Option<Result<Vec<u8>, String>>, DoctorError> {
    match read_bounded(&dir.join(rel), MAX_SMALL_FILE, false) {
        Ok(b) => Ok(Some(Ok(b))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if is_refusal(&e) => Ok(Some(Err(e.to_string()))),
        Err(e) => Err(io_err(rel, dir, e)),
    }
}

fn label_file(r: Result<Vec<u8>, String>) -> LabelFile {
    match r {
        Ok(b) => LabelFile::of(&b),
        Err(e) => LabelFile::unreadable(e),
    }
}

fn exists(dir: &Path, rel: &str) -> bool {
    fs::symlink_metadata(dir.join(rel)).is_ok()
}

/// Gathers the facts (see [`Facts`]). Errors only when the directory itself cannot be read
/// (missing, not a directory, permission denied); everything wrong *inside* it is a fact.
pub fn gather(path: &Path, opts: &DoctorOptions) -> Result<Facts, DoctorError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DoctorError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err("the directory", path, e)),
    };
    if !meta.is_dir() {
        return Err(DoctorError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut f = Facts {
        path: path.to_path_buf(),
        ..Facts::default()
    };
    let entries: Vec<String> = fs::read_dir(path)
        .map_err(|e| io_err("the directory listing", path, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if entries.is_empty() {
        f.missing.push("everything: the directory is empty".into());
    }
    for required in ["PG_VERSION", "global/pg_control"] {
        if !path.join(required).is_file() {
            f.missing.push(required.to_owned());
        }
    }
    if !f.missing.is_empty() {
        f.nested_data_dirs = nested_data_dirs(path);
    }

    if let Some(b) = read_opt(path, "PG_VERSION")? {
        match b
            .map_err(|e| e.to_string())
            .and_then(|b| PgVersion::from_pg_version_file(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => f.version = Some(v),
            Err(e) => f.pg_version_error = Some(e),
        }
    }
    let mut control_file = None;
    if path.join("global/pg_control").is_file() {
        match control::read_control_file(&path.join("global/pg_control")) {
            Ok(c) => {
                f.control = Some(ControlFacts::from(&c));
                control_file = Some(c);
            }
            Err(ControlError::Io { source, .. }) => {
                return Err(io_err("global/pg_control", path, source));
            }
            Err(e) => f.control_error = Some(e.to_string()),
        }
    }
    let version = f.version.or(f.control.as_ref().and_then(|c| c.version));

    f.label = read_opt(path, "backup_label")?.map(label_file);
    f.label_old = read_opt(path, "backup_label.old")?.map(label_file);
    if let Some(bytes) = read_opt(path, "tablespace_map")? {
        let escaping = version.map_or(MapEscaping::V14, MapEscaping::for_version);
        f.tablespace_map = Some(match bytes {
            Ok(b) => map_facts(&b, escaping, path),
            Err(e) => MapFacts {
                error: Some(e),
                entries: Vec::new(),
            },
        });
    }
    f.files = Files {
        recovery_signal: exists(path, "recovery.signal"),
        standby_signal: exists(path, "standby.signal"),
        recovery_conf: exists(path, "recovery.conf"),
        recovery_done: exists(path, "recovery.done"),
        tablespace_map_old: exists(path, "tablespace_map.old"),
        postmaster_opts: exists(path, "postmaster.opts"),
        backup_manifest: exists(path, "backup_manifest"),
        pgsafe_json: exists(path, "pgsafe.json"),
        removed_label: exists(path, super::REMOVED_LABEL_FILE),
    };
    f.postmaster = match read_opt(path, "postmaster.pid")? {
        None => PidFacts::default(),
        Some(b) => pid_facts(
            &PostmasterPid::parse(&b.unwrap_or_default()).with_liveness(),
            &canon,
        ),
    };
    f.wal = wal_facts(path, version, control_file.as_ref());
    f.settings = read_settings(path, version, &opts.config_files);
    f.marker = read_opt(path, RESTORE_MARKER_FILE)?.map(|b| {
        match b.and_then(|b| RestoreMarker::parse(&b).map_err(|e| e.to_string())) {
            Ok(m) => MarkerFacts {
                parsed: Some(m),
                error: None,
            },
            Err(e) => MarkerFacts {
                parsed: None,
                error: Some(e),
            },
        }
    });
    find_backup_end(&mut f, path);
    let size = f.wal.seg_size.unwrap_or(WalSegSize::DEFAULT);
    f.wal_history = evidence::pg_wal_history(
        &path.join(wal_dir_name(version)),
        &f.wal.backup_history_files,
        size,
    );
    let newest = control_file.as_ref().and_then(|c| {
        let tli = c.checkpoint_copy.this_timeline;
        f.wal
            .segments
            .iter()
            .filter(|(s, st)| s.tli == tli && **st == SegState::Valid)
            .map(|(s, _)| *s)
            .max_by_key(|s| s.segno(size).unwrap_or(0))
    });
    f.archive = evidence::gather_archive(
        &f.settings,
        control_file.as_ref(),
        newest,
        version.map(|v| v.major()),
    );
    f.holders = evidence::gather_holders(
        &opts.run_dirs,
        f.postmaster.port,
        control_file.as_ref().map(|c| c.system_identifier),
    );
    if let Ok(rd) = fs::read_dir(path.join("pg_tblspc")) {
        for e in rd.flatten().take(10_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            let oid_named = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
            if oid_named && e.file_type().is_ok_and(|t| t.is_dir()) {
                f.in_place_tablespaces.push(name);
            }
        }
        f.in_place_tablespaces.sort();
    }
    if let Some(conn) = &opts.conn {
        f.server = Some(ask_server(conn, &canon));
    }
    Ok(f)
}

/// Folders up to two levels below `path` holding `PG_VERSION` and `global/pg_control`.
fn nested_data_dirs(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut level = vec![path.to_path_buf()];
    for _ in 0..2 {
        let mut next = Vec::new();
        for dir in level {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                if p.join("PG_VERSION").is_file() && p.join("global/pg_control").is_file() {
                    out.push(p);
                } else {
                    next.push(p);
                }
                if out.len() >= 10 {
                    return out;
                }
            }
        }
        level = next;
        if level.len() > 1000 {
            break;
        }
    }
    out.sort();
    out
}

fn map_facts(bytes: &[u8], escaping: MapEscaping, path: &Path) -> MapFacts {
    match TablespaceMap::parse(bytes, escaping) {
        Ok(m) => MapFacts {
            error: None,
            entries: m
                .entries()
                .iter()
                .map(|e| {
                    let p = e.as_path();
                    let p = if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        path.join("pg_tblspc").join(p)
                    };
                    MapEntryFacts {
                        oid: e.oid,
                        path: String::from_utf8_lossy(&e.path).into_owned(),
                        exists: p.is_dir(),
                    }
                })
                .collect(),
        },
        Err(e) => MapFacts {
            error: Some(e.to_string()),
            entries: Vec::new(),
        },
    }
}

fn pid_facts(p: &PostmasterPid, canon: &Path) -> PidFacts {
    let names_this_directory = p
        .data_directory
        .as_ref()
        .map(|d| fs::canonicalize(d).is_ok_and(|c| c == canon) || Path::new(d) == canon);
    let base = PidFacts {
        pid: p.pid,
        status: p.status.clone(),
        start_time: p.start_time,
        data_directory: p.data_directory.clone(),
        port: p.port,
        names_this_directory,
        ..PidFacts::default()
    };
    let Some(pid) = p.pid else {
        return PidFacts {
            liveness: Liveness::Unreadable,
            detail: "postmaster.pid exists but holds no process ID (empty or damaged)".into(),
            ..base
        };
    };
    if p.process_running != Some(true) {
        return PidFacts {
            liveness: Liveness::Stale,
            detail: format!("no process has pid {pid}: the server that wrote the file is gone"),
            ..base
        };
    }
    let (liveness, detail) = probe_process(pid, canon);
    PidFacts {
        liveness,
        pid_in_use: true,
        detail,
        ..base
    }
}

/// What the running process `pid` is, from /proc.
fn probe_process(pid: i32, canon: &Path) -> (Liveness, String) {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        if state.is_some_and(|s| s.starts_with('Z')) {
            return (
                Liveness::Stale,
                format!(
                    "process {pid} has exited but its parent has not reaped it yet (a zombie): \
                     no server is running"
                ),
            );
        }
    }
    let comm = fs::read_to_string(proc_dir.join("comm"))
        .ok()
        .map(|c| c.trim().to_owned());
    match comm {
        None => (
            Liveness::Live,
            format!("a process with pid {pid} is running (pgsafe could not check what it is)"),
        ),
        Some(c) if c != "postgres" && c != "postmaster" => (
            Liveness::Stale,
            format!("pid {pid} now belongs to another program ({c}), not to PostgreSQL"),
        ),
        Some(_) => match fs::read_link(proc_dir.join("cwd")) {
            Ok(cwd) if cwd == canon || fs::canonicalize(&cwd).is_ok_and(|c| c == canon) => (
                Liveness::Live,
                format!("process {pid} is a PostgreSQL server running in this directory"),
            ),
            Ok(cwd) => (
                Liveness::Stale,
                format!(
                    "pid {pid} is a PostgreSQL process working in {}, not in this directory",
                    cwd.display()
                ),
            ),
            Err(_) => (
                Liveness::Live,
                format!(
                    "process {pid} is a PostgreSQL process (which directory it serves could not \
                     be checked without more privileges)"
                ),
            ),
        },
    }
}

fn wal_dir_name(version: Option<PgVersion>) -> &'static str {
    if version.is_some_and(|v| v.num() < 100000) {
        "pg_xlog"
    } else {
        "pg_wal"
    }
}

fn wal_facts(path: &Path, version: Option<PgVersion>, control: Option<&ControlFile>) -> WalFacts {
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
fn find_backup_end(f: &mut Facts, path: &Path) {
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

/// `--connect`: what the server says. Never fails; a failure is a fact.
fn ask_server(conn: &crate::conninfo::ConnSettings, canon: &Path) -> ServerFacts {
    let mut s = ServerFacts {
        target: conn.redacted(),
        ..ServerFacts::default()
    };
    let mut client = match conn.connect() {
        Ok(c) => c,
        Err(e) => {
            s.error = Some(e.to_string());
            return s;
        }
    };
    s.reachable = true;
    let mut first = |sql: &str| -> Option<Vec<Option<String>>> {
        let msgs = client.simple_query(sql).ok()?;
        msgs.into_iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                // try_get: a value that is not UTF-8 reads as absent instead of panicking.
                Some(
                    (0..r.len())
                        .map(|i| r.try_get(i).ok().flatten().map(str::to_owned))
                        .collect(),
                )
            }
            _ => None,
        })
    };
    let col =
        |row: Option<Vec<Option<String>>>, i: usize| row.and_then(|r| r.get(i).cloned().flatten());
    s.version = col(first("SHOW server_version_num"), 0)
        .and_then(|v| PgVersion::from_server_version_num(&v).ok());
    s.in_recovery = col(first("SELECT pg_is_in_recovery()"), 0).map(|v| v == "t");
    s.system_identifier = col(
        first("SELECT system_identifier::text FROM pg_control_system()"),
        0,
    )
    .and_then(|v| v.parse().ok());
    s.data_directory = col(
        first("SELECT setting FROM pg_settings WHERE name = 'data_directory'"),
        0,
    );
    s.same_directory = s
        .data_directory
        .as_ref()
        .map(|d| fs::canonicalize(d).is_ok_and(|c| c == canon) || Path::new(d) == canon);
    let setting = |first: &mut dyn FnMut(&str) -> Option<Vec<Option<String>>>, name: &str| {
        col(
            first(&format!(
                "SELECT setting FROM pg_settings WHERE name = '{name}'"
            )),
            0,
        )
    };
    s.archive_mode = setting(&mut first, "archive_mode");
    s.archive_command = setting(&mut first, "archive_command");
    s.restore_command = setting(&mut first, "restore_command");
    if s.version.is_some_and(|v| v.num() < 150000) {
        let row = first("SELECT pg_is_in_backup(), pg_backup_start_time()::text");
        s.in_exclusive_backup = col(row.clone(), 0).map(|v| v == "t");
        s.backup_start_time = col(row, 1);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_file_names_decode() {
        let size = WalSegSize::DEFAULT;
        assert_eq!(
            history_file_start("000000010000000000000004.00000028.backup", size),
            Some(Lsn(0x0400_0028))
        );
        assert_eq!(
            history_file_start("00000001000000000000000.backup", size),
            None
        );
        assert_eq!(history_file_start("x.backup", size), None);
    }

    #[test]
    fn gathers_a_synthetic_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::write(p.join("PG_VERSION"), "15\n").unwrap();
        fs::create_dir_all(p.join("global")).unwrap();
        fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pg_control-15"),
            p.join("global/pg_control"),
        )
        .unwrap();
        fs::create_dir_all(p.join("pg_wal")).unwrap();
        let full = usize::try_from(WalSegSize::DEFAULT.bytes()).unwrap();
        fs::write(p.join("pg_wal/000000010000000000000007"), vec![0u8; full]).unwrap();
        fs::write(p.join("pg_wal/000000010000000000000008"), b"short").unwrap();
        fs::write(
            p.join("pg_wal/00000002.history"),
            b"1\t0/3000000\tno reason\n",
        )
        .unwrap();
        fs::write(p.join("postmaster.pid"), b"999999999\n/elsewhere\n").unwrap();
        fs::write(p.join("backup_label"), b"garbage").unwrap();
        fs::write(p.join(RESTORE_MARKER_FILE), b"{not json").unwrap();
        let f = gather(p, &DoctorOptions::default()).unwrap();
        assert!(f.missing.is_empty(), "{:?}", f.missing);
        assert_eq!(f.version.map(|v| v.major()), Some(15));
        assert!(f.control.is_some());
        let segs: Vec<_> = f.wal.segments.values().cloned().collect();
        assert_eq!(segs, vec![SegState::Unwritten, SegState::WrongSize(5)]);
        assert!(f.wal.segment_ranges.is_empty());
        assert_eq!(f.wal.unusable_segments.len(), 2);
        assert_eq!(f.wal.history_files, vec!["00000002.history".to_owned()]);
        assert_eq!(f.postmaster.liveness, Liveness::Stale);
        assert_eq!(f.postmaster.names_this_directory, Some(false));
        assert!(f.label.as_ref().is_some_and(|l| l.parsed.is_none()));
        assert!(f.marker.as_ref().is_some_and(|m| m.error.is_some()));
        // The whole thing serialises.
        serde_json::to_string(&f).unwrap();
    }

    #[test]
    fn own_process_is_probed() {
        let me = std::process::id() as i32;
        let (l, detail) = probe_process(me, Path::new("/nonexistent"));
        // The test binary is not called postgres.
        assert_eq!(l, Liveness::Stale, "{detail}");
        assert!(detail.contains("another program"), "{detail}");
    }
}
