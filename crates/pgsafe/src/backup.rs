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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::conninfo::{ConnSettings, ConnectError};
use crate::copy::{self, CopyError, CopyOptions, CopyReport, PageCheckOptions};
use crate::datadir::{DataDir, DataDirError};
use crate::fsutil::{self, FsError, IoContext};
use crate::manifest::ManifestError;
use crate::page::BLCKSZ;
use crate::plan::{BackupPlan, PlanError, PlanOptions, RelPath};
use crate::progress::{Phase, Progress};
use crate::session::{ServerError, ServerInfo, Session, SessionError};
use crate::storage::{Backend, LocalBackend, ObjectName, PutOptions, StorageError};
use crate::types::{Lsn, PgVersion, TimelineId, WalSegSize, WalSegment};

mod finish;
pub mod liveness;
pub mod location;
mod parent;
pub mod repo;
mod repo_wal;
mod tablespaces;
mod wal_error;

pub use tablespaces::TablespaceListError;
pub use wal_error::BackupWalError;

// pgsafe.json's schema and the folder's names have their owners in `info` and `layout`;
// re-exported under their old paths.
pub use crate::info::{
    BackupInfo, FileOwner, INFO_FORMAT, TablespaceChange, TablespaceChangeKind, TablespaceInfo,
    WalInfo, WalMode, crc32c_hex,
};
pub use crate::layout::{COMPLETE_MARKER, INCOMPLETE_MARKER, MANIFEST_FILE};

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
    /// Where the WAL goes; `None`: included in a backup folder, and in a repository awaited in
    /// its archive when the server archives there, else included ([`repo_wal`]).
    pub wal: Option<WalMode>,
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
    /// Full, differential or incremental; `None`: incremental when an earlier backup can be
    /// its parent, else full (see `backup/parent.rs`). Backups outside a repository are
    /// always full.
    pub backup_type: Option<crate::info::BackupType>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("connect to the server: {0}")]
    Connect(#[source] ConnectError),
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
         needs: set max_replication_slots (needs a restart), or take the WAL from the server's \
         archive instead, or leave it to your own WAL archive"
    )]
    NoSlots,
    #[error("create the temporary replication slot: {source}{}", slot_hint(source))]
    Slot {
        #[source]
        source: ServerError,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("write the backup into {target}: {source}")]
    Storage {
        target: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("WAL: {0}")]
    Wal(#[from] BackupWalError),
    #[error("encode {COMPLETE_MARKER}: {0}")]
    EncodeInfo(#[source] serde_json::Error),
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
    Tablespaces(#[from] TablespaceListError),
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
    let target = Target::Folder(opts.target.clone());
    run_with(
        opts,
        &target,
        repo_wal::WalRequest::Folder(opts.wal),
        None,
        progress,
    )
}

/// Where a backup is written: a folder on this host (`opts.target`, checked to be missing or
/// empty, outside what the backup copies, with room), or the objects under a backup's prefix
/// in a repository's storage, claimed before ([`crate::repo::Repository::claim_backup`]).
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Folder(PathBuf),
    Store {
        store: crate::storage::Prefixed,
        shown: PathBuf,
        /// The claim wrote `pgsafe.incomplete` already.
        marker_written: bool,
    },
}

impl Target {
    fn folder(&self) -> Option<&Path> {
        match self {
            Target::Folder(p) => Some(p),
            Target::Store { .. } => None,
        }
    }

    fn shown(&self) -> &Path {
        match self {
            Target::Folder(p) => p,
            Target::Store { shown, .. } => shown,
        }
    }
}

/// [`run_backup`] into `target` with the WAL request of a folder or of a repository.
fn run_with(
    opts: &BackupOptions,
    target: &Target,
    wal_request: repo_wal::WalRequest<'_>,
    type_request: Option<parent::TypeRequest<'_>>,
    progress: &dyn Progress,
) -> Result<BackupInfo, BackupError> {
    let began = Instant::now();
    let started_at = now();
    progress.phase(Phase::Preflight);
    let client = opts.conn.connect().map_err(BackupError::Connect)?;
    let mut session = Session::new(client)?;
    session.preflight()?;
    let info = session.info().clone();
    let datadir = DataDir::open(&opts.pgdata)?;
    check_pgdata(&datadir, &info, opts.allow_data_directory_mismatch)?;
    if let Some(folder) = target.folder() {
        check_target_location(&opts.pgdata, folder)?;
        check_target(folder)?;
    }
    let plan_opts = plan_options(&mut session, &datadir)?;
    let pages = page_check_options(opts, &datadir, info.version, progress)?;
    let estimate = BackupPlan::build(&opts.pgdata, info.version, &plan_opts)?;
    if let Some(folder) = target.folder().filter(|_| opts.check_space) {
        check_space(folder, estimate.total_bytes())?;
    }
    let wal = repo_wal::decide(wal_request, session.client(), &info)?;
    progress.notice(&format!("WAL: {}", wal.reason));
    let slot = match wal.mode {
        WalMode::Include => Some(create_slot(&mut session)?),
        WalMode::Archive | WalMode::None => None,
    };

    check_cancel(opts)?;
    // From here on the target exists and is marked incomplete until pgsafe.json is written.
    create_target(target)?;
    // Before the start checkpoint: see backup/tablespaces.rs.
    let encoding = session.info().server_encoding.clone();
    let tablespaces_before = tablespaces::list(session.client(), &encoding)?;
    let mut started = session.start_backup(&opts.label, opts.fast)?;
    // After the start: the parent is checked against this backup's start point.
    let control = datadir.control()?;
    let mut decision = parent::decide(
        type_request,
        &parent::Current {
            start_lsn: started.start_lsn,
            start_tli: started.start_tli,
            pgdata: &opts.pgdata,
            data_checksums: control.data_checksum_version != 0,
            blcksz: control.blcksz,
            relseg_size: control.relseg_size,
        },
    );
    // The copy stops on this flag: set on Ctrl-C (opts.cancel) or when the session is lost.
    let stop_copy = AtomicBool::new(false);
    let (result, lost) =
        liveness::watch_session(&mut started, opts.cancel.as_deref(), &stop_copy, || {
            progress.phase(Phase::Plan);
            let plan = BackupPlan::build(&opts.pgdata, info.version, &plan_opts)?;
            for w in &plan.warnings {
                progress.warn(w);
            }
            let incremental = match &decision.parent {
                Some(p) => match p.for_plan(&plan, control.relseg_size) {
                    Ok(c) => Some(c),
                    Err(reason) => {
                        decision = parent::Decision {
                            backup_type: crate::info::BackupType::Full,
                            reason,
                            parent: None,
                        };
                        None
                    }
                },
                None => None,
            };
            progress.notice(&format!("backup type: {}", decision.reason));
            let report = copy_data(
                opts,
                target,
                &plan,
                pages,
                incremental.as_ref(),
                progress,
                &stop_copy,
            )?;
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
    progress.phase(Phase::Stop);
    let stopped = started.stop(false)?;
    finish::finish(
        opts,
        target,
        progress,
        &info,
        &plan,
        report,
        stopped,
        slot,
        &wal,
        began,
        started_at,
        &tablespaces_before,
        &decision,
    )
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

fn create_target(target: &Target) -> Result<(), BackupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match target {
        Target::Folder(folder) if !folder.exists() => {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(folder)
                .ctx("create target", folder)?;
            fs::set_permissions(folder, fs::Permissions::from_mode(0o700))
                .ctx("set permissions of", folder)?;
        }
        Target::Store {
            marker_written: true,
            ..
        } => return Ok(()),
        _ => {}
    }
    let store = open_store(target)?;
    put_file(&store, INCOMPLETE_MARKER, crate::layout::INCOMPLETE_NOTE)?;
    Ok(())
}

/// Where the backup is written, as a storage backend (see [`crate::storage`]): pgsafe's own
/// files are written through it once, atomically and durably (a folder: temporary file,
/// fsync, rename that never replaces, fsync of the folder).
fn open_store(target: &Target) -> Result<Store, BackupError> {
    let backend: Arc<dyn Backend> = match target {
        Target::Folder(folder) => {
            Arc::new(
                LocalBackend::open(folder).map_err(|source| BackupError::Storage {
                    target: folder.to_owned(),
                    source,
                })?,
            )
        }
        Target::Store { store, .. } => Arc::new(store.clone()),
    };
    Ok(Store {
        backend,
        shown: target.shown().to_owned(),
    })
}

/// The backend a backup is written through, and how messages name it.
struct Store {
    backend: Arc<dyn Backend>,
    shown: PathBuf,
}

/// Writes one of pgsafe's own files (mode 0600) into the backup folder.
fn put_file(store: &Store, name: &str, bytes: &[u8]) -> Result<(), BackupError> {
    let name = ObjectName::new(name).map_err(|e| storage_error(store, e))?;
    store
        .backend
        .put(&name, bytes, PutOptions::default())
        .map_err(|e| storage_error(store, e))?;
    Ok(())
}

fn storage_error(store: &Store, source: StorageError) -> BackupError {
    BackupError::Storage {
        target: store.shown.clone(),
        source,
    }
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
        .map_err(|e| BackupError::Slot { source: e.into() })?;
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
        .map_err(|e| BackupError::Slot { source: e.into() })?;
    Ok(name)
}

/// What to do about a refused slot, by the SQLSTATE the server sent (src/backend/replication/
/// slot.c: ERRCODE_INSUFFICIENT_PRIVILEGE without REPLICATION, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED
/// when every slot is in use).
fn slot_hint(e: &ServerError) -> &'static str {
    match e.code() {
        Some("42501") => {
            " (the user needs the REPLICATION attribute: ALTER ROLE … REPLICATION; or take the \
             WAL from the server's archive instead of a slot)"
        }
        Some("53400") => {
            " (all replication slots are in use: raise max_replication_slots, or take the WAL \
             from the server's archive instead of a slot)"
        }
        _ => "",
    }
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
    target: &Target,
    plan: &BackupPlan,
    pages: Option<PageCheckOptions>,
    incremental: Option<&copy::IncrementalCopy>,
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
        incremental,
        ..CopyOptions::default()
    };
    // The data files go through the storage interface like pgsafe's own files (write-once
    // objects, made durable together before pg_control).
    let store = open_store(target)?;
    match copy::copy_plan_to(plan, &*store.backend, &copy_opts, progress) {
        Err(CopyError::Cancelled) => Err(BackupError::Cancelled),
        Err(CopyError::Storage(e)) => Err(storage_error(&store, e)),
        other => Ok(other?),
    }
}
