//! `pgsafe restore`: turn a backup into a data directory that recovers correctly — and that
//! cannot be started by accident without its `backup_label`.
//!
//! Order:
//! 1. **Refuse, writing nothing**: a target that is not empty (or cannot be created), a target
//!    with a live postmaster, an incomplete backup (no `pgsafe.json`), no `backup_label`, a
//!    backup that fails verification (full unless `verify` is off, then presence and sizes),
//!    tablespace locations that are not empty, recovery settings that do not fit together, a
//!    backup whose WAL is not in it without a `restore_command` (or a primary) to get it from;
//!    and, because a backup folder is input from whoever could write into it
//!    (docs/threat-model.md, `restore/guard.rs`): a target overlapping the backup or a location
//!    overlapping the target (compared resolved), a target another restore holds (its `flock`
//!    is kept for the whole restore), a location only the backup's `tablespace_map` names when
//!    running as root and the operator did not confirm it, chown's "no change" owner, too
//!    little free space. The locations are announced ([`Progress::notice`]) before writing.
//! 2. Directories (mode 0700, or 0750 when PGDATA had group access), the tablespace locations
//!    (original or remapped; an existing empty one keeps its owner and mode: pgsafe changes
//!    only what it creates) with `pg_tblspc/<oid>` links to them, then every file written by
//!    parallel workers (decompressing; mode 0600/0640; owner set when run as root), each
//!    fsynced. Sources are read through the storage backend holding the backup
//!    ([`crate::layout::StoredBackup`]: below a backup folder without following links, kernel
//!    copies for its plain files) and up to the manifest's size only. Without full verification
//!    the checksums are checked while writing.
//! 3. `backup_label` byte for byte, `tablespace_map` with the restored locations, the recovery
//!    settings (`recovery.conf` on 10–11; `recovery.signal`/`standby.signal` and
//!    `postgresql.auto.conf` on 12+), the restore marker (`pgsafe_restore.json`, read by
//!    `pgsafe doctor`), `.done` status for the restored WAL, then every directory fsynced.
//! 4. **`global/pg_control` last**, with the safety sentinel ([`crate::control::apply_sentinel`]):
//!    its checkpoint location is replaced by an impossible one (CRC recomputed). With
//!    `backup_label`, recovery starts from the label's checkpoint and the server rewrites
//!    pg_control; without it, the server refuses to start instead of replaying from the wrong
//!    checkpoint and silently corrupting the database. Written to a temporary name, fsynced,
//!    renamed, directory fsynced: a restore that stops earlier leaves no pg_control, and a
//!    directory without one cannot be started at all.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nix::unistd::{Gid, Group, Uid, User};
use serde::Serialize;

use crate::control::{ControlError, SENTINEL_CHECKPOINT, has_sentinel};
use crate::fsutil::{self, FsError, IoContext};
use crate::layout::{self, CONTROL_FILE, StoredBackup};
use crate::progress::{Phase, Progress};
use crate::verify::{Problem, VerifyError};

mod archived_wal;
mod backup_end;
pub mod chain;
mod config;
mod delta;
mod guard;
mod includes;
mod isolation;
mod owner;
pub mod pitr;
mod plan;
mod reasons;
mod recovery;
mod report;
pub mod select;
mod source;
mod writer;

pub use crate::fsutil::is_plain_absolute;
pub use backup_end::BackupEnd;
pub use config::{ArchiveMode, DisabledSetting};
pub use delta::DeltaReport;
pub use isolation::{ConfigOutcome, archive_summary};
use owner::resolve_owner;
use plan::{check_target, map_tablespaces, open_backup, tablespace_map_bytes, tablespace_oid};
pub use reasons::{BadCopy, BadManifest, MappingError, OwnerError};
pub use recovery::{
    NEW_TIMELINE_RESTORE_COMMAND, RecoveryError, RecoveryFiles, RecoveryOptions, RecoveryTarget,
    TargetAction, TargetTimeline, quote_value, recovery_files,
};
pub use report::{RestoreReport, RestoredTablespace};
use report::{recovery_plan, start_command};
use source::{Source, SourceFile};

/// Which tablespace a `--tablespace-map` entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TablespaceSelector {
    Oid(u32),
    /// The original location.
    Path(PathBuf),
}

/// `--tablespace-map OLD=NEW`: restore a tablespace at `to` instead of its original location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TablespaceMapping {
    pub from: TablespaceSelector,
    pub to: PathBuf,
}

impl FromStr for TablespaceMapping {
    type Err = String;
    /// `OID=NEW_PATH` or `OLD_PATH=NEW_PATH` (split at the first `=`); paths absolute.
    fn from_str(s: &str) -> Result<Self, String> {
        // Split at the first `=`, so an old location containing `=` cannot be named: say so.
        let hint = if s.matches('=').count() > 1 {
            " (a location that contains '=' cannot be given as OLD_PATH: give the tablespace's \
             OID instead, OID=NEW_PATH; the OIDs are the first column of the backup's \
             tablespace_map)"
        } else {
            ""
        };
        let Some((old, new)) = s.split_once('=') else {
            return Err(format!("{s:?}: expected OLD_PATH=NEW_PATH or OID=NEW_PATH"));
        };
        if old.is_empty() || new.is_empty() {
            return Err(format!(
                "{s:?}: expected OLD_PATH=NEW_PATH or OID=NEW_PATH (both sides non-empty)"
            ));
        }
        let to = PathBuf::from(new);
        if !to.is_absolute() {
            return Err(format!(
                "{s:?}: the new location {new} must be an absolute path{hint}"
            ));
        }
        let from = if old.bytes().all(|b| b.is_ascii_digit()) {
            TablespaceSelector::Oid(
                old.parse()
                    .map_err(|_| format!("{s:?}: {old} is not a tablespace OID"))?,
            )
        } else {
            let p = PathBuf::from(old);
            if !p.is_absolute() {
                return Err(format!(
                    "{s:?}: the old location {old} must be an absolute path (or an OID){hint}"
                ));
            }
            TablespaceSelector::Path(p)
        };
        Ok(TablespaceMapping { from, to })
    }
}

/// What `pgsafe restore` needs.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup folder; with `from_copy`, a file-system copy of PGDATA.
    pub source: PathBuf,
    pub from_copy: bool,
    /// The new data directory: absent or empty.
    pub target: PathBuf,
    pub tablespace_map: Vec<TablespaceMapping>,
    /// Parallel writers (0 counts as 1).
    pub jobs: usize,
    /// Verify the backup completely before writing (default). Off: presence and sizes before
    /// writing, checksums while writing.
    pub full_verify: bool,
    pub recovery: RecoveryOptions,
    /// The copy's WAL archiving: off by default, so it never archives into the source's archive.
    pub archive_mode: ArchiveMode,
    /// `USER[:GROUP]` or `UID[:GID]` to give the files to (root only). Default when root: the
    /// owner PGDATA had when the backup was taken.
    pub owner: Option<String>,
    pub cancel: Option<Arc<AtomicBool>>,
    /// fsync files and directories (off only for tests and benchmarks).
    pub sync: bool,
    /// Running as root, use tablespace locations taken from the backup's `tablespace_map`
    /// without a mapping for each (the operator confirmed them all).
    pub trust_backup_locations: bool,
    /// Check free space before writing.
    pub check_space: bool,
    /// Replay WAL beyond the backup although the backed-up server, on this host, has
    /// tablespaces the backup does not have (the operator confirmed the recovery stops before
    /// they were created, or accepts the risk).
    pub allow_live_tablespaces: bool,
    /// The WAL archive of the backup's repository: a backup whose WAL is there (it waited for
    /// it instead of copying it) is verified against it and gets its WAL fetched from it into
    /// the restored `pg_wal/` ([`archived_wal`]).
    pub wal_archive: Option<crate::verify::WalArchive>,
    /// The target is an existing, stopped data directory of the backup's system: write only
    /// the files and blocks that differ, remove what the backup does not have
    /// ([`delta`]). An empty target is restored as usual.
    pub delta: bool,
}

impl RestoreOptions {
    pub fn new(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> RestoreOptions {
        RestoreOptions {
            source: source.into(),
            from_copy: false,
            target: target.into(),
            tablespace_map: Vec::new(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            full_verify: true,
            recovery: RecoveryOptions::default(),
            archive_mode: ArchiveMode::default(),
            owner: None,
            cancel: None,
            sync: true,
            trust_backup_locations: false,
            check_space: true,
            allow_live_tablespaces: false,
            wal_archive: None,
            delta: false,
        }
    }
}

/// The verification problems, one per line (for [`RestoreError::BackupInvalid`]).
pub struct ProblemList<'a>(pub &'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Why a restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "target {0} is not empty: pgsafe restores only into a new or empty directory (it never \
         mixes a backup into existing files)"
    )]
    TargetNotEmpty(PathBuf),
    #[error(
        "a server is running in {target} (postmaster.pid names process {pid}, which is alive, \
         or the shared memory it names still has processes attached: a server seen from \
         another PID namespace): stop it, and restore into a new or empty directory"
    )]
    TargetRunning { target: PathBuf, pid: i32 },
    #[error("cannot restore into {target}: {why}")]
    TargetUnusable { target: PathBuf, why: String },
    #[error(
        "{target} is a data directory of another database system (system identifier {found}; \
         the backup's is {backup}): a delta restore only brings a copy of the same system up to \
         date; nothing was changed. Restore into a new or empty directory instead"
    )]
    DeltaOtherSystem {
        target: PathBuf,
        found: crate::types::SystemId,
        backup: crate::types::SystemId,
    },
    #[error(
        "{target} cannot be brought up to date by a delta restore: {why}; nothing was changed. \
         Restore into a new or empty directory instead"
    )]
    DeltaNotADataDirectory { target: PathBuf, why: String },
    #[error(
        "tablespace {oid}: its restore location {} is not empty: map it to a new empty \
         directory (or empty that directory)",
        path.display()
    )]
    TablespaceNotEmpty { oid: u32, path: PathBuf },
    #[error("tablespace locations: {0}")]
    TablespaceMapping(#[from] MappingError),
    #[error(
        "{0} is an incomplete backup (no pgsafe.json: pgsafe backup did not finish writing it); \
         it cannot be restored"
    )]
    Incomplete(PathBuf),
    #[error(
        "{0} has no backup_label: without it the restored cluster would recover from the wrong \
         checkpoint, so pgsafe refuses to restore it"
    )]
    NoLabel(PathBuf),
    #[error("pgsafe.json of the backup is unreadable: {0}")]
    BadInfo(#[source] crate::info::InfoError),
    #[error(
        "{path} is a{} {backup_type} backup: it holds only the changes since backup {parent}, \
         and this pgsafe restores full backups only. Restore a full backup, or use a pgsafe \
         that restores chains",
        if *backup_type == crate::info::BackupType::Incr { "n" } else { "" }
    )]
    NeedsChain {
        path: PathBuf,
        backup_type: crate::info::BackupType,
        parent: String,
    },
    #[error("backup_label of the backup is invalid: {0}")]
    BadLabel(#[source] crate::label::LabelError),
    #[error("tablespace_map of the backup is invalid: {0}")]
    BadMap(#[source] crate::label::MapError),
    #[error("backup_manifest of the backup is invalid: {0}")]
    BadManifest(#[from] BadManifest),
    #[error(
        "backup {backup} failed verification{}, nothing was written:{}",
        if *.quick { " (quick: presence and sizes)" } else { "" },
        ProblemList(.problems)
    )]
    BackupInvalid {
        backup: PathBuf,
        quick: bool,
        problems: Vec<Problem>,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("{0} is not a copy of a data directory (no PG_VERSION)")]
    NotACopy(PathBuf),
    #[error("the copy cannot be restored: {0}")]
    BadCopy(#[from] BadCopy),
    #[error(
        "the WAL this restore needs is not in {}: {wal_source}. Set a restore_command (e.g. \
         'cp /path/to/archive/%f %p') so recovery can fetch it, or restore as a standby of a \
         primary (primary_conninfo)",
        backup.display()
    )]
    NoWal { backup: PathBuf, wal_source: String },
    #[error(
        "the backup's WAL file {file} could not be fetched from the repository's WAL archive \
         {}: {detail}; {} is an incomplete restore (it has no global/pg_control): remove it, \
         and verify the backup from the repository",
        archive.display(), target.display()
    )]
    ArchivedWal {
        file: String,
        archive: PathBuf,
        detail: String,
        target: PathBuf,
    },
    #[error("recovery settings: {0}")]
    Recovery(#[from] RecoveryError),
    #[error(
        "{backup} cannot be restored safely: {changes}. The CREATE TABLESPACE is in the backup's \
         WAL, and recovery replays it with the original absolute location and points \
         pg_tblspc/<oid> there whatever the restore sets up: restored on the same host, the copy \
         would write into the original server's live tablespace; elsewhere, outside its target. \
         Take a new backup: the tablespace is then in its tablespace_map and restores (or \
         remaps) like any other"
    )]
    TablespaceCreatedDuringBackup { backup: PathBuf, changes: String },
    #[error(
        "the server this backup was taken from runs on this host ({pgdata}) and has tablespaces \
         the backup does not have (created after it): {tablespaces}. Recovery beyond the backup \
         replays their CREATE TABLESPACE with those locations, so the restored server would \
         write into that server's live tablespace directories (its rows would appear in the \
         live server's files). Recover to a target before they were created and confirm it \
         explicitly, or restore on another host"
    )]
    LiveTablespacesOnThisHost {
        pgdata: PathBuf,
        tablespaces: String,
    },
    #[error("the owner of the restored files: {0}")]
    Owner(#[from] OwnerError),
    #[error(
        "the backup records that its data directory belonged to {recorded} (uid {uid}), but {} \
         belongs to uid {found}: running as root, pgsafe does not let a backup folder choose who \
         owns the restored files",
        dir.display()
    )]
    OwnerNotConfirmed {
        recorded: String,
        uid: u32,
        dir: PathBuf,
        found: u32,
    },
    #[error("the stored pg_control is invalid: {0}")]
    Control(#[from] ControlError),
    #[error(
        "{path} in the backup does not match backup_manifest ({detail}): the backup changed or is \
         damaged; {target} is an incomplete restore (it has no global/pg_control): remove it"
    )]
    Damaged {
        path: String,
        detail: String,
        target: PathBuf,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the restore was cancelled; {0} is an incomplete restore (no global/pg_control)")]
    Cancelled(PathBuf),
    #[error(
        "another restore is writing into {0} (it holds the target's lock); this one wrote \
         nothing there"
    )]
    TargetBusy(PathBuf),
    #[error(
        "not enough free space: {need} bytes are needed on the file system of {path}, {available} \
         are available; free space or restore elsewhere",
        path = .path.display()
    )]
    NoSpace {
        path: PathBuf,
        need: u64,
        available: u64,
    },
    #[error(
        "running as root, this restore would create tablespace directories at locations taken \
         only from the backup's tablespace_map, which whoever can write into the backup folder \
         chooses: {}. Confirm each location by mapping it (to itself or elsewhere), or confirm \
         all of the backup's locations",
        .0.iter().map(|(o, p)| format!("{o} at {}", p.display())).collect::<Vec<_>>().join(", ")
    )]
    UnconfirmedLocations(Vec<(u32, PathBuf)>),
}

/// What a restore reads.
enum Input {
    /// A file-system copy of PGDATA (`from_copy`).
    Copy(Box<Source>),
    /// A stored backup, verified before its files are read.
    Stored(StoredBackup),
}

/// Who gets the restored files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: Uid,
    gid: Gid,
}

/// Writes into the target.
struct Writer<'a> {
    target: &'a Path,
    owner: Option<Owner>,
    modes: Modes,
    sync: bool,
    tablespaces: &'a [TablespacePlan],
}

/// A tablespace's restore location.
#[derive(Debug, Clone)]
struct TablespacePlan {
    oid: u32,
    original: PathBuf,
    location: PathBuf,
    /// No mapping named it: the location is the backup's `tablespace_map`'s.
    from_backup: bool,
    /// It exists (empty): pgsafe did not create it, so it keeps its owner and mode.
    existed: bool,
}

/// Modes of restored directories and files.
#[derive(Debug, Clone, Copy)]
struct Modes {
    dir: u32,
    file: u32,
}

impl Modes {
    fn new(group_access: bool) -> Modes {
        if group_access {
            Modes {
                dir: 0o750,
                file: 0o640,
            }
        } else {
            Modes {
                dir: 0o700,
                file: 0o600,
            }
        }
    }
}

/// Counts of what the workers wrote.
#[derive(Debug, Default, Clone, Copy)]
struct Copied {
    files: u64,
    bytes: u64,
}

/// Runs a restore; see the module documentation.
pub fn run_restore(
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    restore(opts, None, progress)
}

/// Runs a restore of the stored backup `backup`, in a folder or any other storage backend;
/// `opts.source` names it (the restore compares that path with the target and the tablespace
/// locations, and reports it). Not for copies (`from_copy`), which are local folders.
pub fn run_restore_stored(
    backup: &StoredBackup,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    restore(opts, Some(backup), progress)
}

fn restore(
    opts: &RestoreOptions,
    stored: Option<&StoredBackup>,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    progress.phase(Phase::Preflight);
    // Absolute from here on: the overlap checks, the tablespace links and the start command
    // all need it.
    let target = &std::path::absolute(&opts.target).ctx("resolve", &opts.target)?;
    // A delta restore into a directory with entries compares and brings them up to date;
    // into an empty one it is an ordinary restore.
    let delta_target = opts.delta && delta::check_target(target)?;
    let target_exists = delta_target || check_target(target)?;
    guard::check_target_vs_source(target, &opts.source)?;
    // Held for the whole restore (a target created below is locked right after creating it);
    // emptiness (no live server, for a delta) is checked again under the lock.
    let mut lock = if target_exists {
        let l = guard::TargetLock::acquire(target)?;
        if delta_target {
            delta::check_target(target)?;
        } else {
            check_target(target)?;
        }
        Some(l)
    } else {
        None
    };
    opts.recovery.validate()?;
    // Cheap checks first (a full verification can take long): the outline of the source.
    let input = if opts.from_copy {
        Input::Copy(Box::new(Source::copy(&opts.source)?))
    } else {
        Input::Stored(match stored {
            Some(b) => b.clone(),
            None => source::open_folder(&opts.source)?,
        })
    };
    let outline = match &input {
        Input::Copy(s) => s.outline(),
        Input::Stored(b) => source::backup_outline(b)?,
    };
    let wal_from_archive = outline.wal_in_repository && opts.wal_archive.is_some();
    if !outline.wal_included && !wal_from_archive && !opts.recovery.has_wal_source() {
        return Err(RestoreError::NoWal {
            backup: opts.source.clone(),
            wal_source: outline.wal_source.clone(),
        });
    }
    let tablespaces = map_tablespaces(
        &outline.tablespaces,
        &opts.tablespace_map,
        target,
        &opts.source,
        delta_target,
    )?;
    let unconfirmed: Vec<(u32, PathBuf)> = tablespaces
        .iter()
        .filter(|t| t.from_backup)
        .map(|t| (t.oid, t.location.clone()))
        .collect();
    if nix::unistd::geteuid().is_root() && !opts.trust_backup_locations && !unconfirmed.is_empty() {
        return Err(RestoreError::UnconfirmedLocations(unconfirmed));
    }
    for t in &tablespaces {
        progress.notice(&format!(
            "tablespace {} will be restored at {} ({}{})",
            t.oid,
            t.location.display(),
            if t.from_backup {
                "the location in the backup's tablespace_map".to_owned()
            } else {
                format!("mapped; originally {}", t.original.display())
            },
            if t.existed {
                "; it exists and keeps its owner and mode"
            } else {
                ""
            }
        ));
    }
    let map_bytes = tablespace_map_bytes(&tablespaces, outline.version)?;
    let owner = resolve_owner(opts.owner.as_deref(), outline.owner.as_ref(), target)?;
    let (mut source, verification) = match input {
        Input::Copy(s) => (*s, "none"),
        Input::Stored(b) => open_backup(&b, opts, progress)?,
    };
    let dropped = isolation::check_tablespace_changes(&source)?;
    source.warnings.extend(dropped);
    source.warnings.extend(isolation::replay_warning(opts));
    isolation::check_live_tablespaces(&source, opts)?;
    let modes = Modes::new(source.group_access);
    let w = Writer {
        target,
        owner,
        modes,
        sync: opts.sync,
        tablespaces: &tablespaces,
    };
    let store = source.store.as_ref();
    // A delta restore scans the target (changing nothing) and checks its system.
    let delta_plan = match delta_target {
        true => {
            let control = w.read_control(&source.control, store)?;
            Some(delta::plan(
                &w,
                &source,
                &tablespaces,
                control.system_identifier,
            )?)
        }
        false => None,
    };
    if opts.check_space {
        match &delta_plan {
            // What the target's files of the backup do not already take.
            Some(p) => guard::check_space(&[(target.clone(), p.extra_bytes)])?,
            None => {
                let files = source
                    .files
                    .iter()
                    .chain(std::iter::once(&source.control))
                    .map(|f| (tablespace_oid(&f.rel), f.size));
                guard::check_space(&guard::space_needs(target, &tablespaces, files))?;
            }
        }
    }
    // A cancel before any write leaves nothing behind.
    if opts
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
    {
        return Err(RestoreError::Cancelled(target.clone()));
    }

    progress.phase(Phase::Restore);
    let delta_counts = delta_target.then(delta::DeltaCounts::default);
    let entries_removed = match &delta_plan {
        Some(p) => delta::prepare(&w, p, &report::restore_marker(&source))?,
        None => 0,
    };
    let mut created: Vec<PathBuf> = Vec::new();
    let mut parents_to_sync = match w.make_root(target_exists) {
        // Created by another restore since the check.
        Err(e) if !target_exists && e.source.kind() == io::ErrorKind::AlreadyExists => {
            return Err(RestoreError::TargetBusy(target.clone()));
        }
        r => r?,
    };
    if lock.is_none() {
        lock = Some(guard::TargetLock::acquire(target)?);
    }
    // Tablespace locations first: the source's directories inside them go there.
    for t in &tablespaces {
        parents_to_sync.extend(w.make_tablespace(t)?);
        created.push(t.location.clone());
    }
    for d in &source.dirs {
        if let Some(dir) = w.make_dir(d)? {
            created.push(dir);
        }
    }
    let skip_checksums = verification == "full";
    let copied = w.copy_files(
        &source.files,
        store,
        opts,
        skip_checksums,
        delta_counts.as_ref(),
        progress,
    )?;
    if let Some(archive) = opts
        .wal_archive
        .as_ref()
        .filter(|_| archived_wal::applies(source.info.as_ref(), opts.wal_archive.as_ref()))
    {
        let names = w.fetch_archived_wal(&source, archive, progress)?;
        source.wal_names.extend(names);
        source.wal_included = true;
    }

    progress.phase(Phase::Label);
    let source_control = w.read_control(&source.control, store)?;
    let (files_written, config) =
        w.write_small_files(&source, opts, &map_bytes, &source_control)?;

    progress.phase(Phase::Sync);
    if opts.sync {
        // Deepest first, so each directory's entries are durable before its parent's.
        let mut dirs = created.clone();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            fsutil::sync_dir(d)?;
        }
        fsutil::sync_dir(target)?;
        for p in &parents_to_sync {
            fsutil::sync_dir(p)?;
        }
    }

    progress.phase(Phase::PgControl);
    let control = w.write_control(source_control)?;
    progress.plan(1, source.control.size);
    progress.bytes(source.control.size);
    progress.file_done(CONTROL_FILE, source.control.size);

    // The backup's file count (crate::progress): the WAL the restore wrote with the data files
    // is counted apart (wal_files), pg_control (its own phase) is one of the files.
    let (wal_count, wal_bytes) = source
        .files
        .iter()
        .filter(|f| layout::in_wal_dir(f.rel.as_bytes()))
        .fold((0u64, 0u64), |(n, b), f| (n + 1, b.saturating_add(f.size)));
    let data_files = copied.files.saturating_sub(wal_count) + 1;
    let data_bytes = copied
        .bytes
        .saturating_sub(wal_bytes)
        .saturating_add(source.control.size);

    let label = &source.label;
    let stop_lsn = source.info.as_ref().map(|i| i.stop_lsn);
    let owner_name = owner.map(|o| {
        let user = User::from_uid(o.uid).ok().flatten().map(|u| u.name);
        let group = Group::from_gid(o.gid).ok().flatten().map(|g| g.name);
        format!(
            "{}:{}",
            user.unwrap_or_else(|| o.uid.to_string()),
            group.unwrap_or_else(|| o.gid.to_string())
        )
    });
    let warnings = source.warnings.clone();
    let report = RestoreReport {
        target: target.clone(),
        source: source.root.clone(),
        from_copy: source.from_copy,
        server_major: source.version.major_name(),
        verification,
        files: data_files,
        bytes: data_bytes,
        wal_files: source.wal_names.len() as u64,
        tablespaces: tablespaces
            .iter()
            .map(|t| RestoredTablespace {
                oid: t.oid,
                original_location: t.original.clone(),
                location: t.location.clone(),
                location_source: if t.from_backup { "backup" } else { "mapping" },
                existed: t.existed,
            })
            .collect(),
        owner: owner_name.clone(),
        start_lsn: label.start_lsn(),
        checkpoint_lsn: label.checkpoint_lsn(),
        timeline: label.timeline(),
        stop_lsn,
        recovery: opts.recovery.clone(),
        recovery_files: files_written,
        new_timeline: !opts.recovery.standby,
        archive_mode: opts.archive_mode,
        config,
        sentinel: has_sentinel(&control),
        sentinel_checkpoint: SENTINEL_CHECKPOINT,
        start_command: start_command(target, owner_name.as_deref()),
        recovery_plan: recovery_plan(&source, &opts.recovery, stop_lsn, target),
        warnings,
        delta: delta_counts.map(|c| c.report(entries_removed)),
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    drop(lock);
    Ok(report)
}

#[cfg(test)]
mod tests;
