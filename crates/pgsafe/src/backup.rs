//! `pgsafe backup`: a complete, self-contained, verifiable backup of a running cluster.
//!
//! Order (each step only after the previous one succeeded):
//! 1. preflight, writing nothing: server version, wal_level, privileges, PGDATA is this server's
//!    (system identifier in its pg_control = `pg_control_system()`, and `data_directory` when the
//!    server tells it), target not inside PGDATA, a tablespace or a linked `pg_wal`
//!    ([`location`]), target missing or empty, free space;
//! 2. a temporary physical replication slot reserving WAL, in the backup session;
//! 3. non-exclusive start in that session; 4. plan; 5. parallel copy, `global/pg_control` last,
//!    while a watcher checks the session every second and stops the copy when it is lost
//!    ([`liveness`]);
//! 6. stop; `backup_label` / `tablespace_map` written byte for byte, durably;
//! 7. WAL start..stop copied from `pg_wal` (each segment's header checked) or awaited in the
//!    archive; 8. `backup_manifest`; 9. `pgsafe.json` written last — its presence is what marks
//!    the backup complete. Until then `pgsafe.incomplete` says the folder is not a backup.
//!
//! Any failure drops the session, which makes the server abort the backup and drop the
//! temporary slot; the target keeps its `pgsafe.incomplete` marker.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checksum::ChecksumAlgorithm;
use crate::conninfo::ConnSettings;
use crate::copy::{self, Compression, CopyError, CopyOptions, CopyReport, PageCheckOptions};
use crate::datadir::{DataDir, DataDirError};
use crate::fsutil::{self, FsError, IoContext};
use crate::manifest::{ManifestError, ManifestVersion, ManifestWriter};
use crate::page::{BLCKSZ, PageChecksumReport};
use crate::plan::{BackupPlan, PlanError, PlanOptions, RelPath};
use crate::progress::Progress;
use crate::session::{BackupStopped, ServerInfo, Session, SessionError};
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize, WalSegment};
use crate::wal::{self, TimelineHistory};

pub mod liveness;
pub mod location;
mod tablespaces;
pub use tablespaces::{TablespaceChange, TablespaceChangeKind};

/// The completion marker: written last, atomically. No `pgsafe.json`, no backup.
pub const COMPLETE_MARKER: &str = "pgsafe.json";
/// Present while a backup is being written (and after it failed).
pub const INCOMPLETE_MARKER: &str = "pgsafe.incomplete";
pub const MANIFEST_FILE: &str = "backup_manifest";
/// Version of the `pgsafe.json` format.
pub const INFO_FORMAT: u32 = 1;

/// Where the WAL a backup needs comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalMode {
    /// Copied into the backup's `pg_wal/` (self-contained).
    #[default]
    Include,
    /// Left to the server's WAL archive; the backup waits until it is archived.
    Archive,
    /// Not handled: the user's own archive must provide it.
    None,
}

impl std::str::FromStr for WalMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "include" => Ok(WalMode::Include),
            "archive" => Ok(WalMode::Archive),
            "none" => Ok(WalMode::None),
            _ => Err(format!(
                "unknown WAL mode {s:?}: use include, archive or none"
            )),
        }
    }
}

/// A test hook called with each data file's path just before the copy opens it.
pub type CopyHook = Arc<dyn Fn(&RelPath) + Send + Sync>;

/// What `pgsafe backup` needs.
#[derive(Clone)]
pub struct BackupOptions {
    pub pgdata: PathBuf,
    pub target: PathBuf,
    pub conn: ConnSettings,
    pub label: String,
    pub fast: bool,
    pub jobs: usize,
    pub compression: Compression,
    pub checksum: ChecksumAlgorithm,
    pub max_rate: Option<u64>,
    pub wal: WalMode,
    /// Check that the target has room for the data before starting.
    pub check_space: bool,
    /// Accept a server `data_directory` that is another directory than PGDATA (PGDATA mounted
    /// from another host at a path that names something else here). The system identifier
    /// must match all the same.
    pub allow_data_directory_mismatch: bool,
    pub archive_timeout: Duration,
    /// Set to stop the backup (Ctrl-C).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Test hook: called before each data file is opened by the copy.
    pub before_open: Option<CopyHook>,
    /// Check every page's checksum while copying (when the cluster has data checksums).
    pub check_pages: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("connect to the server: {0}")]
    Connect(String),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("data directory: {0}")]
    DataDir(#[from] DataDirError),
    #[error(
        "{pgdata} is not the data directory of the server you connected to: {why}. Pass the \
         PGDATA of that server (SHOW data_directory tells it), or connect to the server that runs \
         on this PGDATA"
    )]
    WrongPgdata { pgdata: PathBuf, why: String },
    #[error(
        "target {0} is not empty: a backup goes into a new or empty folder (pgsafe never mixes \
         files into an existing one)"
    )]
    TargetNotEmpty(PathBuf),
    #[error(
        "not enough free space on the target: the data is about {need} MiB, {avail} MiB are \
         free in {path}; free space on the target, or skip this check to try anyway"
    )]
    NoSpace {
        path: PathBuf,
        need: u64,
        avail: u64,
    },
    #[error(
        "this server has max_replication_slots = 0, so pgsafe cannot reserve the WAL the backup \
         needs: set max_replication_slots (needs a restart), or use --wal archive (WAL from the \
         server's archive) or --wal none"
    )]
    NoSlots,
    #[error("create the temporary replication slot: {0}")]
    Slot(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("WAL: {0}")]
    Wal(String),
    #[error("write backup_manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the backup was cancelled")]
    Cancelled,
    #[error(
        "target {target} is inside {what} {inside}: a backup must not be written into a \
         directory it copies (it would copy itself, and leave its files in the server's own \
         directories). Choose a folder outside the data directory, its tablespaces and its WAL \
         directory"
    )]
    TargetInsideSource {
        target: PathBuf,
        what: String,
        inside: PathBuf,
    },
    #[error(
        "the backup's database session ended while the files were being copied: {detail}. The \
         server restarted or crashed, or the session's backend was terminated; the server has \
         ended the backup, so the files copied so far are not a backup (the target keeps its \
         pgsafe.incomplete marker). Check the server and take a new backup"
    )]
    SessionLost { detail: String },
    #[error("list the server's tablespaces: {0}")]
    Tablespaces(String),
}

/// `pgsafe.json`: everything about a complete backup. Its presence marks the backup complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupInfo {
    pub format: u32,
    pub pgsafe_version: String,
    pub label: String,
    pub system_identifier: SystemId,
    pub server_version: PgVersion,
    pub from_standby: bool,
    pub start_lsn: Lsn,
    pub start_tli: TimelineId,
    pub start_wal: WalSegment,
    pub checkpoint_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub stop_tli: TimelineId,
    pub stop_wal: WalSegment,
    pub wal_segment_size: WalSegSize,
    pub data_checksums: bool,
    pub compression: Compression,
    pub checksum: ChecksumAlgorithm,
    pub wal: WalInfo,
    /// Tablespaces: OID and where they were (their files are inside the backup).
    pub tablespaces: Vec<TablespaceInfo>,
    pub files: u64,
    /// Uncompressed bytes of the data files.
    pub bytes: u64,
    /// Bytes on disk of the data files.
    pub stored_bytes: u64,
    pub vanished_files: u64,
    pub shrunk_files: u64,
    pub started_at: i64,
    pub finished_at: i64,
    pub duration_secs: f64,
    pub copy_secs: f64,
    /// Uncompressed MiB per second over the copy phase.
    pub copy_mib_per_sec: f64,
    /// Owner of PGDATA when the backup was taken: a restore run as root gives the restored
    /// files to this owner (absent in backups of pgsafe before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgdata_owner: Option<FileOwner>,
    /// Permission bits of PGDATA (0700, or 0750 with group access): a restore keeps group read
    /// access when PGDATA had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgdata_mode: Option<u32>,
    /// Tablespaces created or dropped while the backup ran (compared in the backup's session
    /// before the start and after the stop): a restore refuses a backup with a created one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespace_changes: Vec<TablespaceChange>,
    /// Page checksums checked during the copy (absent: the cluster has no data checksums, the
    /// check was turned off, or pgsafe predates it). Non-empty `corrupt`: the SOURCE is corrupt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_checksums: Option<PageChecksumReport>,
    /// The backed-up PGDATA (absolute): a restore on the same host finds the live server's
    /// tablespaces there that the backup does not have (see `restore/isolation.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pgdata: Option<crate::textbytes::TextBytes>,
}

/// A file's owner: numeric IDs and, when known on the host, the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOwner {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl FileOwner {
    /// The owner of `path` (`None` if it cannot be inspected).
    pub fn of(path: &Path) -> Option<FileOwner> {
        use nix::unistd::{Gid, Group, Uid, User};
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(FileOwner {
            uid: m.uid(),
            gid: m.gid(),
            user: User::from_uid(Uid::from_raw(m.uid()))
                .ok()
                .flatten()
                .map(|u| u.name),
            group: Group::from_gid(Gid::from_raw(m.gid()))
                .ok()
                .flatten()
                .map(|g| g.name),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalInfo {
    pub mode: WalMode,
    /// Segments stored in `pg_wal/` (Include), or needed from the archive (Archive, None).
    pub segments: Vec<WalSegment>,
    pub history_files: Vec<String>,
    pub bytes: u64,
    /// Where the WAL comes from, in words.
    pub source: String,
    /// CRC-32C (as a manifest writes it) of each file stored in `pg_wal/`, segments and
    /// history files, taken while copying and checked by verify (empty in backups of older
    /// pgsafe). CRC-32C, not SHA-256: it guards against damage after the copy, and anyone who
    /// can change the WAL can change this file too (see the threat model).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub crc32c: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TablespaceInfo {
    pub oid: u32,
    /// File-system bytes, not necessarily UTF-8 (stored as hex then; see textbytes.rs).
    #[serde(with = "crate::textbytes::path_text")]
    pub original_path: PathBuf,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs a whole backup; see the module documentation.
pub fn run_backup(
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupInfo, BackupError> {
    let began = Instant::now();
    let started_at = now();
    progress.phase("preflight");
    let client = opts
        .conn
        .connect()
        .map_err(|e| BackupError::Connect(e.to_string()))?;
    let mut session = Session::new(client)?;
    session.preflight()?;
    let info = session.info().clone();
    let datadir = DataDir::open(&opts.pgdata)?;
    check_pgdata(&datadir, &info, opts.allow_data_directory_mismatch)?;
    check_target_location(&opts.pgdata, &opts.target)?;
    check_target(&opts.target)?;
    let plan_opts = plan_options(&mut session, &datadir)?;
    let pages = page_check_options(opts, &datadir, info.version, progress)?;
    let estimate = BackupPlan::build(&opts.pgdata, info.version, &plan_opts)?;
    if opts.check_space {
        check_space(&opts.target, estimate.total_bytes())?;
    }
    let slot = match opts.wal {
        WalMode::Include => Some(create_slot(&mut session)?),
        WalMode::Archive | WalMode::None => None,
    };

    check_cancel(opts)?;
    // From here on the target exists and is marked incomplete until pgsafe.json is written.
    create_target(&opts.target)?;
    // Before the start checkpoint: see backup/tablespaces.rs.
    let encoding = session.info().server_encoding.clone();
    let tablespaces_before =
        tablespaces::list(session.client(), &encoding).map_err(BackupError::Tablespaces)?;
    let mut started = session.start_backup(&opts.label, opts.fast)?;
    // The copy stops on this flag: set on Ctrl-C (opts.cancel) or when the session is lost.
    let stop_copy = AtomicBool::new(false);
    let (result, lost) =
        liveness::watch_session(&mut started, opts.cancel.as_deref(), &stop_copy, || {
            progress.phase("plan");
            let plan = BackupPlan::build(&opts.pgdata, info.version, &plan_opts)?;
            for w in &plan.warnings {
                progress.warn(w);
            }
            let report = copy_data(opts, &plan, pages, progress, &stop_copy)?;
            Ok::<_, BackupError>((plan, report))
        });
    let result = match lost {
        Some(l) => Err(BackupError::SessionLost { detail: l.detail }),
        None => result,
    };
    let (plan, report) = match result {
        Ok(x) => x,
        Err(e) => {
            started.abort();
            return Err(e);
        }
    };
    if let Err(e) = check_cancel(opts) {
        started.abort();
        return Err(e);
    }
    progress.phase("stop");
    let stopped = started.stop(false)?;
    finish(
        opts,
        progress,
        &info,
        &plan,
        report,
        stopped,
        slot,
        began,
        started_at,
        &tablespaces_before,
    )
}

/// Everything after the stop: label files, WAL, manifest, completion marker.
#[allow(clippy::too_many_arguments)]
fn finish(
    opts: &BackupOptions,
    progress: &dyn Progress,
    info: &ServerInfo,
    plan: &BackupPlan,
    report: CopyReport,
    stopped: BackupStopped,
    slot: Option<String>,
    began: Instant,
    started_at: i64,
    tablespaces_before: &[tablespaces::ServerTablespace],
) -> Result<BackupInfo, BackupError> {
    let target = &opts.target;
    let label_bytes = stopped.label.as_bytes().to_vec();
    fsutil::write_durable(&target.join("backup_label"), &label_bytes, 0o600)?;
    if !stopped.tablespace_map.is_empty() {
        fsutil::write_durable(
            &target.join("tablespace_map"),
            &stopped.tablespace_map,
            0o600,
        )?;
    }
    let (start_lsn, start_tli) = (stopped.start_lsn, stopped.start_tli);
    let (stop_lsn, stop_tli) = (stopped.stop_lsn, stopped.stop_tli);
    let seg_size = info.wal_segment_size;
    let history = read_history(&opts.pgdata, stop_tli)?;
    let segments = wal::backup_wal_segments(
        start_lsn,
        start_tli,
        stop_lsn,
        stop_tli,
        seg_size,
        history.as_ref(),
    )
    .map_err(|e| BackupError::Wal(e.to_string()))?;
    let history_files =
        wal::backup_history_files(start_lsn, start_tli, stop_lsn, stop_tli, history.as_ref())
            .map_err(|e| BackupError::Wal(e.to_string()))?;
    let map_bytes = stopped.tablespace_map.clone();
    let mut session = stopped.into_session();
    let encoding = session.info().server_encoding.clone();
    let tablespace_changes = tablespaces::changes(
        tablespaces_before,
        &tablespaces::list(session.client(), &encoding).map_err(BackupError::Tablespaces)?,
    );
    for c in &tablespace_changes {
        progress.warn(&match c.change {
            TablespaceChangeKind::Created => format!(
                "{c}: its CREATE TABLESPACE is in the backup's WAL and would be replayed with the \
                 original location, so pgsafe restore refuses this backup; take a new backup now \
                 that the tablespace exists"
            ),
            TablespaceChangeKind::Dropped => format!("{c}"),
        });
    }
    check_cancel(opts)?;
    progress.phase("wal");
    let wal_info = match opts.wal {
        WalMode::Include => {
            if info.in_recovery {
                wait_received(&mut session, stop_lsn, Duration::from_secs(300))?;
            }
            let range = (start_lsn, stop_lsn);
            let (bytes, crc32c) = copy_wal(opts, info, &segments, &history_files, range, progress)?;
            WalInfo {
                mode: WalMode::Include,
                segments: segments.clone(),
                history_files,
                bytes,
                source: "included in pg_wal/ of the backup".into(),
                crc32c,
            }
        }
        WalMode::Archive => {
            if !info.archiving_applies() {
                return Err(BackupError::Wal(format!(
                    "--wal archive, but this server does not archive WAL (archive_mode = {}{}): \
                     use --wal include",
                    info.archive_mode,
                    if info.in_recovery {
                        " on a standby"
                    } else {
                        ""
                    }
                )));
            }
            // The stop segment and the backup history file, each checked as the server's own
            // pg_backup_stop(wait => true) does (session/archive.rs).
            let needs = crate::session::archive_needs(
                start_lsn,
                stop_lsn,
                stop_tli,
                seg_size,
                info.in_recovery,
            );
            let st = session.wait_for_archive(needs, opts.archive_timeout.as_secs());
            if !st.complete {
                return Err(BackupError::Wal(st.detail));
            }
            WalInfo {
                mode: WalMode::Archive,
                segments: segments.clone(),
                history_files,
                bytes: 0,
                source: format!(
                    "the server's WAL archive (archive_command); restore with a restore_command \
                     that reads it. {}",
                    st.detail
                ),
                crc32c: Default::default(),
            }
        }
        WalMode::None => WalInfo {
            mode: WalMode::None,
            segments: segments.clone(),
            history_files,
            bytes: 0,
            source: "not handled by pgsafe (--wal none): the listed segments must come from your \
                     own WAL archive at restore time"
                .into(),
            crc32c: Default::default(),
        },
    };
    if let Some(slot) = &slot {
        // Temporary slots vanish with the session anyway; drop it now to release the WAL.
        let _ = session
            .client()
            .execute("SELECT pg_drop_replication_slot($1)", &[slot]);
    }

    let label = crate::label::BackupLabel::parse(&label_bytes).map_err(SessionError::from)?;
    let copy_secs = report.elapsed.as_secs_f64();
    let backup_info = BackupInfo {
        format: INFO_FORMAT,
        pgsafe_version: env!("CARGO_PKG_VERSION").into(),
        label: opts.label.clone(),
        system_identifier: info.system_id,
        server_version: info.version,
        from_standby: info.in_recovery,
        start_lsn,
        start_tli,
        start_wal: WalSegment::containing(start_lsn, start_tli, seg_size),
        checkpoint_lsn: label.checkpoint_lsn(),
        stop_lsn,
        stop_tli,
        stop_wal: stopped_wal(stop_lsn, stop_tli, seg_size),
        wal_segment_size: seg_size,
        data_checksums: DataDir::open(&opts.pgdata)?
            .control()?
            .data_checksum_version
            != 0,
        compression: opts.compression,
        checksum: opts.checksum,
        wal: wal_info,
        tablespaces: plan
            .tablespaces
            .iter()
            .map(|(oid, p)| TablespaceInfo {
                oid: *oid,
                original_path: p.clone(),
            })
            .collect(),
        files: report.files.len() as u64,
        bytes: report.bytes,
        stored_bytes: report.stored_bytes,
        vanished_files: report.vanished.len() as u64,
        shrunk_files: report.resized.len() as u64,
        started_at,
        finished_at: now(),
        duration_secs: began.elapsed().as_secs_f64(),
        copy_secs,
        copy_mib_per_sec: if copy_secs > 0.0 {
            report.bytes as f64 / (1024.0 * 1024.0) / copy_secs
        } else {
            0.0
        },
        pgdata_owner: FileOwner::of(&opts.pgdata),
        pgdata_mode: Some(plan.root_mode),
        tablespace_changes,
        page_checksums: report.pages.clone(),
        source_pgdata: fs::canonicalize(&opts.pgdata).ok().map(|p| {
            use std::os::unix::ffi::OsStrExt;
            crate::textbytes::TextBytes::from(p.as_os_str().as_bytes())
        }),
    };
    let json = serde_json::to_vec_pretty(&backup_info)
        .map_err(|e| BackupError::Wal(format!("encode {COMPLETE_MARKER}: {e}")))?;
    // The manifest lists pgsafe.json too (so pg_verifybackup accepts the complete backup), but
    // pgsafe.json itself is written after the manifest: until it exists the backup is
    // incomplete, and a verifier sees a file missing.
    progress.phase("manifest");
    let mut small: Vec<(&[u8], &[u8])> = vec![(b"backup_label", &label_bytes)];
    if !map_bytes.is_empty() {
        small.push((b"tablespace_map", &map_bytes));
    }
    small.push((COMPLETE_MARKER.as_bytes(), &json));
    let manifest = build_manifest(
        info,
        &report,
        &small,
        (start_lsn, start_tli),
        (stop_lsn, stop_tli),
        history.as_ref(),
        opts.checksum,
    )?;
    fsutil::write_durable(&target.join(MANIFEST_FILE), &manifest, 0o600)?;
    fsutil::write_durable(&target.join(COMPLETE_MARKER), &json, 0o600)?;
    fs::remove_file(target.join(INCOMPLETE_MARKER))
        .ctx("remove", &target.join(INCOMPLETE_MARKER))?;
    fsutil::sync_dir(target)?;
    drop(session);
    Ok(backup_info)
}

fn check_cancel(opts: &BackupOptions) -> Result<(), BackupError> {
    match &opts.cancel {
        Some(c) if c.load(std::sync::atomic::Ordering::Relaxed) => Err(BackupError::Cancelled),
        _ => Ok(()),
    }
}

fn stopped_wal(stop_lsn: Lsn, tli: TimelineId, seg: WalSegSize) -> WalSegment {
    WalSegment::containing_end(stop_lsn, tli, seg)
}

/// System identifier and (when readable) `data_directory` must match the connected server.
fn check_pgdata(
    datadir: &DataDir,
    info: &ServerInfo,
    allow_mismatch: bool,
) -> Result<(), BackupError> {
    let pgdata = datadir.path().to_path_buf();
    let control = datadir.control()?;
    if control.system_identifier != info.system_id {
        return Err(BackupError::WrongPgdata {
            pgdata,
            why: format!(
                "its pg_control has system identifier {}, the server's is {}",
                control.system_identifier, info.system_id
            ),
        });
    }
    let version = datadir.pg_version()?;
    if version.major() != info.version.major() {
        return Err(BackupError::WrongPgdata {
            pgdata,
            why: format!(
                "its PG_VERSION says {}, the server is {}",
                version.major_name(),
                info.version
            ),
        });
    }
    // A standby has its primary's system identifier: data_directory tells them apart. Compared
    // as device and inode, so the same directory reached through a bind mount or a symbolic
    // link is the same directory; a data_directory that does not exist here (PGDATA mounted
    // from another host) is no evidence either way.
    if let Some(dd) = &info.data_directory {
        use std::os::unix::fs::MetadataExt;
        let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let theirs = id(Path::new(dd));
        if theirs.is_some() && theirs != id(&pgdata) && !allow_mismatch {
            return Err(BackupError::WrongPgdata {
                pgdata,
                why: format!(
                    "the server's data_directory is {dd}, another directory on this host (a \
                     standby and its primary share a system identifier)"
                ),
            });
        }
    }
    Ok(())
}

/// The target must not lie inside PGDATA, a tablespace or a linked WAL directory (resolved
/// paths; see [`location`]).
fn check_target_location(pgdata: &Path, target: &Path) -> Result<(), BackupError> {
    let resolved = location::resolve(target).ctx("resolve target", target)?;
    let sources = location::source_dirs(pgdata).ctx("resolve data directory", pgdata)?;
    match location::target_inside(&resolved, &sources) {
        Some(s) => Err(BackupError::TargetInsideSource {
            target: target.to_path_buf(),
            what: s.what.clone(),
            inside: s.path.clone(),
        }),
        None => Ok(()),
    }
}

fn check_target(target: &Path) -> Result<(), BackupError> {
    match fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(BackupError::TargetNotEmpty(target.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The parent must exist and be writable; checked by creating it later, but say now
            // if the parent is missing.
            let parent = fsutil::parent_dir(target);
            if !parent.is_dir() {
                return Err(FsError::new(
                    "use target",
                    target,
                    io::Error::new(io::ErrorKind::NotFound, "its parent folder does not exist"),
                )
                .into());
            }
            Ok(())
        }
        Err(e) => Err(FsError::new("use target", target, e).into()),
    }
}

fn check_space(target: &Path, bytes: u64) -> Result<(), BackupError> {
    let mut probe = target.to_path_buf();
    while !probe.exists() {
        probe = fsutil::parent_dir(&probe);
    }
    let st = nix::sys::statvfs::statvfs(&probe)
        .map_err(|e| FsError::new("check free space of", &probe, io::Error::from(e)))?;
    let avail = st.blocks_available() as u64 * st.fragment_size() as u64;
    // WAL and metadata on top of the data: keep a margin of 64 MiB.
    if avail < bytes + (64 << 20) {
        return Err(BackupError::NoSpace {
            path: probe,
            need: bytes >> 20,
            avail: avail >> 20,
        });
    }
    Ok(())
}

fn create_target(target: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !target.exists() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(target)
            .ctx("create target", target)?;
        fs::set_permissions(target, fs::Permissions::from_mode(0o700))
            .ctx("set permissions of", target)?;
    }
    fsutil::write_durable(
        &target.join(INCOMPLETE_MARKER),
        b"This folder is NOT a usable backup: pgsafe backup did not finish writing it.\n\
          A complete backup has pgsafe.json. Remove this folder and take a new backup.\n",
        0o600,
    )?;
    Ok(())
}

/// Settings that change what the walk leaves out.
fn plan_options(session: &mut Session, datadir: &DataDir) -> Result<PlanOptions, BackupError> {
    let stats_temp_directory = if session.info().version.at_least(15) {
        None
    } else {
        // As bytes (session::raw_text_sql): the setting is a path, which need not be UTF-8
        // (set from a SQL_ASCII database); reading it as a Rust String would panic. Unreadable:
        // the directory's contents are copied, which costs space but loses nothing.
        let sql = format!(
            "SELECT {}",
            crate::session::raw_text_sql(
                &session.info().server_encoding,
                "current_setting('stats_temp_directory')"
            )
        );
        session
            .client()
            .query_one(&sql, &[])
            .ok()
            .and_then(|r| r.try_get::<_, Vec<u8>>(0).ok())
            .map(|b| {
                PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(b))
            })
    };
    Ok(PlanOptions {
        stats_temp_directory,
        catalog_version: Some(datadir.control()?.catalog_version_no),
    })
}

/// A temporary physical slot with immediately reserved WAL (10+): the server keeps every
/// segment from now on until the session ends or the slot is dropped.
fn create_slot(session: &mut Session) -> Result<String, BackupError> {
    let slots: String = session
        .client()
        .query_one("SELECT current_setting('max_replication_slots')", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| BackupError::Slot(e.to_string()))?;
    if slots.trim() == "0" {
        return Err(BackupError::NoSlots);
    }
    let name = format!("pgsafe_{}_{}", std::process::id(), now());
    session
        .client()
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true, true)",
            &[&name],
        )
        .map_err(|e| {
            let hint = match e.as_db_error().map(|d| d.code().code()) {
                Some("42501") => {
                    " (the user needs the REPLICATION attribute: ALTER ROLE … REPLICATION; or use \
                     --wal archive)"
                }
                Some("53400") => {
                    " (all replication slots are in use: raise max_replication_slots, or use --wal \
                     archive)"
                }
                _ => "",
            };
            BackupError::Slot(format!("{}{hint}", crate::session::db_message(&e)))
        })?;
    Ok(name)
}

/// Page checks for the copy: on when pg_control says the cluster has data checksums (and has
/// PostgreSQL's standard 8 KiB block, the only size the check knows), unless turned off.
fn page_check_options(
    opts: &BackupOptions,
    datadir: &DataDir,
    version: PgVersion,
    progress: &dyn Progress,
) -> Result<Option<PageCheckOptions>, BackupError> {
    let control = datadir.control()?;
    if !opts.check_pages || control.data_checksum_version == 0 {
        return Ok(None);
    }
    if control.blcksz as usize != BLCKSZ || control.relseg_size == 0 {
        progress.warn(&format!(
            "page checksums not checked: this cluster was built with a block size of {} bytes \
             ({} blocks per segment); pgsafe checks pages of the standard {BLCKSZ}-byte size only",
            control.blcksz, control.relseg_size
        ));
        return Ok(None);
    }
    Ok(Some(PageCheckOptions {
        version,
        relseg_size: control.relseg_size,
    }))
}

fn copy_data(
    opts: &BackupOptions,
    plan: &BackupPlan,
    pages: Option<PageCheckOptions>,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<CopyReport, BackupError> {
    let hook = opts.before_open.clone();
    let hook_fn = move |p: &RelPath| {
        if let Some(h) = &hook {
            h(p)
        }
    };
    let copy_opts = CopyOptions {
        jobs: opts.jobs.max(1),
        compression: opts.compression,
        checksum: opts.checksum,
        max_rate: opts.max_rate,
        cancel: Some(stop),
        before_open: Some(&hook_fn),
        pages,
        ..CopyOptions::default()
    };
    match copy::copy_plan(plan, &opts.target, &copy_opts, progress) {
        Err(CopyError::Cancelled) => Err(BackupError::Cancelled),
        other => Ok(other?),
    }
}

fn read_history(pgdata: &Path, tli: TimelineId) -> Result<Option<TimelineHistory>, BackupError> {
    if tli.0 <= 1 {
        return Ok(None);
    }
    let path = pgdata.join("pg_wal").join(tli.history_file_name());
    let bytes = fs::read(&path).ctx("read timeline history", &path)?;
    TimelineHistory::parse(tli, &bytes)
        .map(Some)
        .map_err(|e| BackupError::Wal(format!("{}: {e}", path.display())))
}

/// On a standby the last segment may still be arriving: wait until the stop LSN is received.
fn wait_received(session: &mut Session, stop: Lsn, limit: Duration) -> Result<(), BackupError> {
    let t = Instant::now();
    loop {
        let got = session
            .client()
            .query_one(
                "SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
                &[],
            )
            .and_then(|r| r.try_get::<_, Option<String>>(0))
            .map_err(|e| BackupError::Wal(format!("check received WAL: {e}")))?;
        if let Some(l) = got.and_then(|s| s.parse::<Lsn>().ok()) {
            if l >= stop {
                return Ok(());
            }
        }
        if t.elapsed() > limit {
            return Err(BackupError::Wal(format!(
                "the standby has not received WAL up to the backup's stop position {stop} after \
                 {}s: is it still connected to its primary?",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copies the backup's WAL segments (and history files) from PGDATA/pg_wal into the backup,
/// checking each segment's size and first page header, so a recycled or foreign file is never
/// taken, and every record from `range.0` to `range.1` as verify does (a backup whose WAL
/// cannot be replayed is not reported as a success). Stored uncompressed, so the restored
/// `pg_wal/` is usable as it is.
fn copy_wal(
    opts: &BackupOptions,
    info: &ServerInfo,
    segments: &[WalSegment],
    history_files: &[String],
    range: (Lsn, Lsn),
    progress: &dyn Progress,
) -> Result<(u64, std::collections::BTreeMap<String, String>), BackupError> {
    let mut records: Option<wal::record::RecordChecker> = None;
    let src = opts.pgdata.join("pg_wal");
    let mut crcs = std::collections::BTreeMap::new();
    let dst = opts.target.join("pg_wal");
    fs::create_dir_all(&dst).ctx("create", &dst)?;
    let seg_size = info.wal_segment_size;
    let mut total = 0;
    for seg in segments {
        let name = seg.to_string();
        let path = src.join(&name);
        let mut bytes = Vec::with_capacity(seg_size.bytes() as usize);
        match File::open(&path) {
            Ok(f) => f
                .take(seg_size.bytes() + 1)
                .read_to_end(&mut bytes)
                .ctx("read", &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BackupError::Wal(format!(
                    "WAL segment {name}, needed by the backup, is not in {} (it should have been \
                     kept by the backup's replication slot; was it removed by hand?)",
                    src.display()
                )));
            }
            Err(e) => return Err(FsError::new("open", path, e).into()),
        };
        if bytes.len() as u64 != seg_size.bytes() {
            return Err(BackupError::Wal(format!(
                "WAL segment {} is {} bytes, expected {}",
                path.display(),
                bytes.len(),
                seg_size.bytes()
            )));
        }
        wal::check_segment_header(
            &bytes,
            *seg,
            seg_size,
            Some(info.system_id),
            Some(info.version.major()),
        )
        .map_err(|e| BackupError::Wal(format!("{}: {e}", path.display())))?;
        check_records(&mut records, &bytes, *seg, range, seg_size)
            .map_err(|e| BackupError::Wal(format!("{}: {e}", path.display())))?;
        write_synced(&dst.join(&name), &bytes)?;
        crcs.insert(name, crc32c_hex(&bytes));
        progress.bytes(bytes.len() as u64);
        total += bytes.len() as u64;
    }
    if let Some(c) = records.as_mut() {
        let end = segments
            .last()
            .and_then(|s| s.start_lsn(seg_size).ok())
            .map_or(range.1, |l| Lsn(l.0.saturating_add(seg_size.bytes())));
        c.finish(end)
            .map_err(|e| BackupError::Wal(format!("the WAL in {}: {e}", src.display())))?;
    }
    for h in history_files {
        let path = src.join(h);
        let bytes = fs::read(&path).ctx("read timeline history", &path)?;
        write_synced(&dst.join(h), &bytes)?;
        crcs.insert(h.clone(), crc32c_hex(&bytes));
        total += bytes.len() as u64;
    }
    let status = dst.join("archive_status");
    fs::create_dir_all(&status).ctx("create", &status)?;
    fsutil::sync_dir(&status)?;
    fsutil::sync_dir(&dst)?;
    Ok((total, crcs))
}

/// Feeds one segment (its first header already checked) to the record check of the backup's
/// WAL range, creating the checker from the first segment's block size.
fn check_records(
    checker: &mut Option<wal::record::RecordChecker>,
    bytes: &[u8],
    seg: WalSegment,
    (start, stop): (Lsn, Lsn),
    seg_size: WalSegSize,
) -> Result<(), String> {
    let header = wal::WalPageHeader::decode(bytes).map_err(|e| e.to_string())?;
    let blcksz = header.long.map_or(0, |l| l.xlog_blcksz);
    let c = checker
        .get_or_insert_with(|| wal::record::RecordChecker::new(start, stop, seg_size, blcksz));
    let first = seg.start_lsn(seg_size).map_err(|e| e.to_string())?;
    if c.blcksz() != u64::from(blcksz) || blcksz == 0 {
        return Err(format!(
            "WAL block size {blcksz} differs from the first segment's"
        ));
    }
    for (k, page) in bytes.chunks(blcksz as usize).enumerate() {
        if c.is_done() {
            break;
        }
        let lsn = Lsn(first.0 + k as u64 * u64::from(blcksz));
        c.feed_page(lsn, page, seg.tli).map_err(|e| {
            format!(
                "damaged WAL at {}: {e} — the server's own WAL is damaged, so this backup could \
                 not be recovered; check the server's storage and take a new backup",
                e.lsn
            )
        })?;
    }
    Ok(())
}

/// CRC-32C of a stored WAL file, as [`WalInfo::crc32c`] records it.
pub fn crc32c_hex(bytes: &[u8]) -> String {
    hex::encode(crc32c::crc32c(bytes).to_le_bytes())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .ctx("create", path)?;
    f.write_all(bytes).ctx("write", path)?;
    f.sync_all().ctx("fsync", path)?;
    Ok(())
}

/// The manifest: every stored data file and the small files written by pgsafe itself
/// (`backup_label`, `tablespace_map`, `pgsafe.json`), with WAL-Ranges
/// from the label's start to the stop LSN.
fn build_manifest(
    info: &ServerInfo,
    report: &CopyReport,
    small_files: &[(&[u8], &[u8])],
    (start_lsn, start_tli): (Lsn, TimelineId),
    (stop_lsn, stop_tli): (Lsn, TimelineId),
    history: Option<&TimelineHistory>,
    alg: ChecksumAlgorithm,
) -> Result<Vec<u8>, BackupError> {
    let version = ManifestVersion::for_server(info.version);
    let mut w = ManifestWriter::new(version, Some(info.system_id))?;
    let sum = |bytes: &[u8]| alg.of(bytes).map(|h| (alg, h));
    let t = now();
    for (path, content) in small_files {
        w.add_file(path, content.len() as u64, t, sum(content))?;
    }
    for f in &report.files {
        let checksum = f.checksum.clone().map(|h| (alg, h));
        w.add_file(f.rel_path.as_bytes(), f.size, f.mtime, checksum)?;
    }
    let ranges = wal::backup_wal_ranges(start_lsn, start_tli, stop_lsn, stop_tli, history)
        .map_err(|e| BackupError::Wal(e.to_string()))?;
    Ok(w.finish(&ranges))
}
