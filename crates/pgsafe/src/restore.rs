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
//!    fsynced. Sources are opened below the backup folder without following links
//!    ([`crate::beneath`]) and read up to the manifest's size only. Without full verification
//!    the checksums are checked while writing.
//! 3. `backup_label` byte for byte, `tablespace_map` with the restored locations, the recovery
//!    settings (`recovery.conf` on 10–11; `recovery.signal`/`standby.signal` and
//!    `postgresql.auto.conf` on 12+), the restore marker (`pgsafe_restore.json`, read by
//!    `pgsafe doctor`), `.done` status for the restored WAL, then every directory fsynced.
//! 4. **`global/pg_control` last**, with the safety sentinel ([`crate::doctor::apply_sentinel`]):
//!    its checkpoint location is replaced by an impossible one (CRC recomputed). With
//!    `backup_label`, recovery starts from the label's checkpoint and the server rewrites
//!    pg_control; without it, the server refuses to start instead of replaying from the wrong
//!    checkpoint and silently corrupting the database. Written to a temporary name, fsynced,
//!    renamed, directory fsynced: a restore that stops earlier leaves no pg_control, and a
//!    directory without one cannot be started at all.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use nix::unistd::{Gid, Group, Uid, User};
use serde::Serialize;

use crate::backup::FileOwner;
use crate::beneath::Beneath;
use crate::control::{ControlError, ControlFile};
use crate::datadir::PostmasterPid;
use crate::doctor::{
    RESTORE_MARKER_FILE, RESTORE_MARKER_FORMAT, RestoreMarker, SENTINEL_CHECKPOINT, apply_sentinel,
    has_sentinel,
};
use crate::fsutil::{self, FsError, IoContext};
use crate::label::{MapEscaping, TablespaceEntry, TablespaceMap};
use crate::plan::RelPath;
use crate::progress::Progress;
use crate::types::{Lsn, PgVersion, TimelineId};
use crate::verify::{self, Problem, VerifyError, VerifyOptions};

mod backup_end;
mod config;
mod guard;
mod includes;
mod isolation;
mod recovery;
mod source;

pub use backup_end::BackupEnd;
pub use config::{ArchiveMode, DisabledSetting};
pub use guard::is_plain_absolute;
pub use isolation::{ConfigOutcome, archive_summary};
pub use recovery::{
    NEW_TIMELINE_RESTORE_COMMAND, RecoveryFiles, RecoveryOptions, RecoveryTarget, TargetAction,
    quote_value, recovery_files,
};
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
        "a server is running in {target} (postmaster.pid names process {pid}, which is alive): \
         stop it, and restore into a new or empty directory"
    )]
    TargetRunning { target: PathBuf, pid: i32 },
    #[error("cannot restore into {target}: {why}")]
    TargetUnusable { target: PathBuf, why: String },
    #[error(
        "tablespace {oid}: its restore location {path} is not empty: pass --tablespace-map \
         {oid}=NEW_EMPTY_DIR (or empty that directory)"
    )]
    TablespaceNotEmpty { oid: u32, path: PathBuf },
    #[error("--tablespace-map: {0}")]
    TablespaceMapping(String),
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
    BadInfo(String),
    #[error("backup_label of the backup is invalid: {0}")]
    BadLabel(String),
    #[error("tablespace_map of the backup is invalid: {0}")]
    BadMap(String),
    #[error("backup_manifest of the backup is invalid: {0}")]
    BadManifest(String),
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
    BadCopy(String),
    #[error(
        "the WAL this restore needs is not in {backup}: {wal_source}. Pass --restore-command \
         (e.g. 'cp /path/to/archive/%f %p') so recovery can fetch it, or --standby with \
         --primary-conninfo"
    )]
    NoWal { backup: PathBuf, wal_source: String },
    #[error("recovery settings: {0}")]
    Recovery(String),
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
    #[error("--owner: {0}")]
    Owner(String),
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

/// A restored tablespace.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredTablespace {
    pub oid: u32,
    pub original_location: PathBuf,
    pub location: PathBuf,
    /// `"backup"`: the backup's `tablespace_map` named it; `"mapping"`: the operator did.
    pub location_source: &'static str,
    /// The location existed (empty) before the restore: its owner and mode were kept.
    pub existed: bool,
}

/// What [`run_restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub target: PathBuf,
    pub source: PathBuf,
    pub from_copy: bool,
    pub server_major: String,
    /// `"full"` or `"quick"` (copies: `"none"`).
    pub verification: &'static str,
    pub files: u64,
    pub bytes: u64,
    pub wal_files: u64,
    pub tablespaces: Vec<RestoredTablespace>,
    /// `user:group` the files were given to (root only).
    pub owner: Option<String>,
    pub start_lsn: Lsn,
    pub checkpoint_lsn: Lsn,
    pub timeline: TimelineId,
    pub stop_lsn: Option<Lsn>,
    pub recovery: RecoveryOptions,
    /// Files written for the recovery settings (`recovery.conf`, `recovery.signal`, …).
    pub recovery_files: Vec<String>,
    /// Recovery ends on a new timeline (every restore that does not make a standby).
    pub new_timeline: bool,
    pub archive_mode: ArchiveMode,
    /// The copy's configuration: settings written, the source's settings commented out.
    pub config: ConfigOutcome,
    /// pg_control carries [`SENTINEL_CHECKPOINT`].
    pub sentinel: bool,
    pub sentinel_checkpoint: Lsn,
    /// How to start the server.
    pub start_command: String,
    /// What recovery will do, in words.
    pub recovery_plan: String,
    pub warnings: Vec<String>,
    pub elapsed_secs: f64,
}

/// Who gets the restored files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: Uid,
    gid: Gid,
}

/// Runs a restore; see the module documentation.
pub fn run_restore(
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    progress.phase("preflight");
    // Absolute from here on: the overlap checks, the tablespace links and the start command
    // all need it.
    let target = &std::path::absolute(&opts.target).ctx("resolve", &opts.target)?;
    let target_exists = check_target(target)?;
    guard::check_target_vs_source(target, &opts.source)?;
    // Held for the whole restore (a target created below is locked right after creating it);
    // emptiness is checked again under the lock.
    let mut lock = if target_exists {
        let l = guard::TargetLock::acquire(target)?;
        check_target(target)?;
        Some(l)
    } else {
        None
    };
    opts.recovery.validate().map_err(RestoreError::Recovery)?;
    // Cheap checks first (a full verification can take long): the outline of the source.
    let copy = if opts.from_copy {
        Some(Source::copy(&opts.source)?)
    } else {
        None
    };
    let outline = match &copy {
        Some(s) => s.outline(),
        None => source::backup_outline(&opts.source)?,
    };
    if !outline.wal_included && !opts.recovery.has_wal_source() {
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
    let (mut source, verification) = match copy {
        Some(s) => (s, "none"),
        None => open_backup(opts, progress)?,
    };
    let dropped = isolation::check_tablespace_changes(&source)?;
    source.warnings.extend(dropped);
    source.warnings.extend(isolation::replay_warning(opts));
    isolation::check_live_tablespaces(&source, opts)?;
    if opts.check_space {
        let files = source
            .files
            .iter()
            .chain(std::iter::once(&source.control))
            .map(|f| (tablespace_oid(&f.rel), f.size));
        guard::check_space(&guard::space_needs(target, &tablespaces, files))?;
    }
    // A cancel before any write leaves nothing behind.
    if opts
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
    {
        return Err(RestoreError::Cancelled(target.clone()));
    }

    progress.phase("restore");
    let modes = Modes::new(source.group_access);
    let w = Writer {
        target,
        owner,
        modes,
        sync: opts.sync,
        tablespaces: &tablespaces,
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
    let beneath = source.beneath.as_ref();
    let copied = w.copy_files(&source.files, beneath, opts, skip_checksums, progress)?;

    progress.phase("label");
    let (files_written, config) = w.write_small_files(&source, opts, &map_bytes)?;

    progress.phase("sync");
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

    progress.phase("pg_control");
    let control = w.write_control(&source.control, beneath)?;
    // The copy's plan counted pg_control (written last, here) as its last file.
    progress.bytes(source.control.size);
    progress.file_done("global/pg_control", source.control.size);

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
        files: copied.files,
        bytes: copied.bytes,
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
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    drop(lock);
    Ok(report)
}

/// The tablespace OID of a `pg_tblspc/<oid>/…` path.
fn tablespace_oid(rel: &RelPath) -> Option<u32> {
    let b = rel.as_bytes().strip_prefix(b"pg_tblspc/")?;
    let end = b.iter().position(|&c| c == b'/').unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).ok()?.parse().ok()
}

/// Verifies and opens a backup folder.
fn open_backup(
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<(Source, &'static str), RestoreError> {
    let root = &opts.source;
    let cancel = opts.cancel.as_deref();
    let vopts = VerifyOptions {
        quick: !opts.full_verify,
        jobs: opts.jobs.max(1),
        cancel,
    };
    let report = match verify::verify_backup(root, &vopts, progress) {
        Err(VerifyError::Cancelled) => return Err(RestoreError::Cancelled(opts.target.clone())),
        r => r?,
    };
    if !report.is_ok() {
        return Err(RestoreError::BackupInvalid {
            backup: root.clone(),
            quick: report.quick,
            problems: report.problems,
        });
    }
    let source = Source::backup(root, report.info)?;
    Ok((source, if opts.full_verify { "full" } else { "quick" }))
}

/// The target must be absent (with a parent that exists or can be created) or an empty
/// directory, with no live postmaster. Returns whether it exists.
fn check_target(target: &Path) -> Result<bool, RestoreError> {
    let unusable = |why: String| RestoreError::TargetUnusable {
        target: target.to_owned(),
        why,
    };
    // Symbolic links are followed: a data directory may be a link to the real folder.
    match fs::metadata(target) {
        Ok(m) if m.is_dir() => {
            let pid_file = target.join("postmaster.pid");
            if let Ok(b) = fs::read(&pid_file) {
                let pid = PostmasterPid::parse(&b).with_liveness();
                if let (Some(p), Some(true)) = (pid.pid, pid.process_running) {
                    return Err(RestoreError::TargetRunning {
                        target: target.to_owned(),
                        pid: p,
                    });
                }
            }
            let mut rd = fs::read_dir(target).ctx("read directory", target)?;
            if rd.next().is_some() {
                return Err(RestoreError::TargetNotEmpty(target.to_owned()));
            }
            Ok(true)
        }
        Ok(_) => Err(unusable("it exists and is not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The nearest existing ancestor must be a directory we can create entries in.
            let mut probe = fsutil::parent_dir(target);
            loop {
                match fs::metadata(&probe) {
                    Ok(m) if m.is_dir() => break,
                    Ok(_) => {
                        return Err(unusable(format!("{} is not a directory", probe.display())));
                    }
                    Err(_) if probe.parent().is_some() => probe = fsutil::parent_dir(&probe),
                    Err(e) => return Err(FsError::new("inspect", probe, e).into()),
                }
            }
            nix::unistd::access(
                &probe,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .map_err(|e| {
                unusable(format!(
                    "it does not exist and cannot be created in {}: {e}",
                    probe.display()
                ))
            })?;
            Ok(false)
        }
        Err(e) => Err(FsError::new("inspect", target, e).into()),
    }
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

/// Applies `--tablespace-map` to the source's tablespaces and checks the locations.
fn map_tablespaces(
    source_tablespaces: &[(u32, PathBuf)],
    mappings: &[TablespaceMapping],
    target: &Path,
    backup: &Path,
) -> Result<Vec<TablespacePlan>, RestoreError> {
    let target_resolved = guard::resolved(target)?;
    let backup_resolved = guard::resolved(backup)?;
    let bad = RestoreError::TablespaceMapping;
    // Which mapping applies to which tablespace (each mapping must name one of them).
    let mut chosen: Vec<(u32, PathBuf, PathBuf, bool)> = Vec::new();
    let mut used = vec![false; mappings.len()];
    for (oid, original) in source_tablespaces {
        let mut location = None;
        for (i, m) in mappings.iter().enumerate() {
            let hit = match &m.from {
                TablespaceSelector::Oid(o) => o == oid,
                TablespaceSelector::Path(p) => source::same_path(p, original),
            };
            if hit {
                if location.is_some() {
                    return Err(bad(format!(
                        "tablespace {oid} ({}) is mapped twice",
                        original.display()
                    )));
                }
                used[i] = true;
                location = Some(m.to.clone());
            }
        }
        let from_backup = location.is_none();
        let location = location.unwrap_or_else(|| original.clone());
        chosen.push((*oid, original.clone(), location, from_backup));
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let known: Vec<String> = source_tablespaces
            .iter()
            .map(|(o, p)| format!("{o}={}", p.display()))
            .collect();
        let what = match &mappings[i].from {
            TablespaceSelector::Oid(o) => format!("OID {o}"),
            TablespaceSelector::Path(p) => format!("location {}", p.display()),
        };
        return Err(bad(format!(
            "the backup has no tablespace with {what} (it has: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let mut out: Vec<TablespacePlan> = Vec::new();
    let mut resolved_locations: Vec<PathBuf> = Vec::new();
    for (oid, original, location, from_backup) in chosen {
        if !is_plain_absolute(&location) {
            return Err(bad(format!(
                "tablespace {oid}: its location {:?} is not an absolute path without \".\" and \
                 \"..\" components: map it with --tablespace-map {oid}=/absolute/path",
                location.display()
            )));
        }
        // Compared resolved: a link or a relative path must not hide an overlap.
        let resolved = guard::resolved(&location)?;
        if guard::overlap(&resolved, &target_resolved) {
            return Err(bad(format!(
                "tablespace {oid}: location {} overlaps the target data directory {} \
                 (resolved: {} and {})",
                location.display(),
                target.display(),
                resolved.display(),
                target_resolved.display()
            )));
        }
        if guard::overlap(&resolved, &backup_resolved) {
            return Err(bad(format!(
                "tablespace {oid}: location {} overlaps the backup {} (resolved: {} and {})",
                location.display(),
                backup.display(),
                resolved.display(),
                backup_resolved.display()
            )));
        }
        if resolved_locations
            .iter()
            .any(|r| guard::overlap(r, &resolved))
        {
            return Err(bad(format!(
                "two tablespaces would be restored into {}",
                location.display()
            )));
        }
        let existed = match fs::read_dir(&location) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(RestoreError::TablespaceNotEmpty {
                        oid,
                        path: location,
                    });
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(FsError::new("inspect tablespace location", location, e).into()),
        };
        resolved_locations.push(resolved);
        out.push(TablespacePlan {
            oid,
            original,
            location,
            from_backup,
            existed,
        });
    }
    Ok(out)
}

/// The `tablespace_map` for the restored locations (empty without tablespaces).
fn tablespace_map_bytes(
    tablespaces: &[TablespacePlan],
    version: PgVersion,
) -> Result<Vec<u8>, RestoreError> {
    use std::os::unix::ffi::OsStrExt;
    let entries = tablespaces
        .iter()
        .map(|t| TablespaceEntry {
            oid: t.oid,
            path: t.location.as_os_str().as_bytes().to_vec(),
        })
        .collect();
    let map = TablespaceMap::new(entries)
        .and_then(|m| m.format(MapEscaping::for_version(version)))
        .map_err(|e| RestoreError::TablespaceMapping(e.to_string()))?;
    Ok(map)
}

/// Resolves who gets the files: as root, `--owner` or the backup's recorded owner; otherwise
/// the current user (and `--owner` may only name them).
///
/// The recorded owner comes from the backup folder, which is untrusted (docs/threat-model.md):
/// as root it is used only when the operator's own file system agrees — the target's nearest
/// existing parent belongs to that user. Otherwise whoever wrote the backup folder
/// would choose which account the restored server (and commands its configuration runs) runs
/// as.
fn resolve_owner(
    requested: Option<&str>,
    recorded: Option<&FileOwner>,
    target: &Path,
) -> Result<Option<Owner>, RestoreError> {
    let me = nix::unistd::geteuid();
    let owner = match requested {
        Some(spec) => Some(parse_owner(spec)?),
        None if me.is_root() => match recorded {
            Some(r) => Some(recorded_owner(r)),
            None => {
                return Err(RestoreError::Owner(
                    "running as root, and the backup does not record the owner of its data \
                     directory: pass --owner USER (the user the server runs as, e.g. postgres)"
                        .into(),
                ));
            }
        },
        None => None,
    };
    match owner {
        // (uid_t)-1 / (gid_t)-1 tell chown(2) to leave the owner unchanged: the files would
        // silently stay root's.
        Some(o) if o.uid.as_raw() == u32::MAX || o.gid.as_raw() == u32::MAX => {
            Err(RestoreError::Owner(format!(
                "{}:{} is not an owner: 4294967295 means \"leave unchanged\" to chown(2); name \
                 the user the server runs as (e.g. postgres)",
                o.uid, o.gid
            )))
        }
        Some(o) if o.uid.is_root() => Err(RestoreError::Owner(
            "the files would belong to root, but PostgreSQL refuses to run as root: pass \
             --owner USER (e.g. postgres)"
                .into(),
        )),
        Some(o) if !me.is_root() && o.uid != me => Err(RestoreError::Owner(format!(
            "only root can give the restored files to another user (uid {}); run as that user \
             or as root",
            o.uid
        ))),
        Some(o) if me.is_root() => {
            if requested.is_none()
                && let Some((dir, uid)) = nearest_existing_owner(target)
                && uid != o.uid.as_raw()
            {
                return Err(RestoreError::OwnerNotConfirmed {
                    recorded: recorded
                        .and_then(|r| r.user.clone())
                        .unwrap_or_else(|| "?".into()),
                    uid: o.uid.as_raw(),
                    dir,
                    found: uid,
                });
            }
            Ok(Some(o))
        }
        _ => Ok(None),
    }
}

/// The owner of the nearest existing parent of `path` (links followed: the operator named the
/// path). The target itself is left out: root often creates the empty target just before a
/// restore, where it sits among the server's other directories.
fn nearest_existing_owner(path: &Path) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors()
        .skip(1)
        .find_map(|p| fs::metadata(p).ok().map(|m| (p.to_path_buf(), m.uid())))
}

fn recorded_owner(r: &FileOwner) -> Owner {
    // By name where the name exists on this host (the restore may run on another machine).
    let user = r
        .user
        .as_deref()
        .and_then(|n| User::from_name(n).ok().flatten());
    let group = r
        .group
        .as_deref()
        .and_then(|n| Group::from_name(n).ok().flatten());
    Owner {
        uid: user.as_ref().map_or(Uid::from_raw(r.uid), |u| u.uid),
        gid: group.map_or(user.as_ref().map_or(Gid::from_raw(r.gid), |u| u.gid), |g| {
            g.gid
        }),
    }
}

/// `(uid_t)-1`: chown(2)'s "no change".
const NO_CHANGE_ID: &str = "4294967295";

/// `USER`, `USER:GROUP`, `UID`, `UID:GID`.
fn parse_owner(spec: &str) -> Result<Owner, RestoreError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if [Some(u), g]
        .into_iter()
        .flatten()
        .any(|x| x == NO_CHANGE_ID)
    {
        return Err(RestoreError::Owner(format!(
            "{spec}: 4294967295 is not an owner: it means \"leave unchanged\" to chown(2), so \
             the files would stay root's; name the user the server runs as (e.g. postgres)"
        )));
    }
    let user = if u.bytes().all(|b| b.is_ascii_digit()) && !u.is_empty() {
        let uid = Uid::from_raw(
            u.parse()
                .map_err(|_| RestoreError::Owner(format!("{u} is not a user ID")))?,
        );
        (uid, User::from_uid(uid).ok().flatten().map(|x| x.gid))
    } else {
        let x = User::from_name(u)
            .ok()
            .flatten()
            .ok_or_else(|| RestoreError::Owner(format!("no user named {u:?}")))?;
        (x.uid, Some(x.gid))
    };
    let gid = match g {
        Some(g) if g.bytes().all(|b| b.is_ascii_digit()) && !g.is_empty() => Gid::from_raw(
            g.parse()
                .map_err(|_| RestoreError::Owner(format!("{g} is not a group ID")))?,
        ),
        Some(g) => {
            Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| RestoreError::Owner(format!("no group named {g:?}")))?
                .gid
        }
        None => user.1.ok_or_else(|| {
            RestoreError::Owner(format!(
                "user ID {u} has no entry: give the group too (UID:GID)"
            ))
        })?,
    };
    Ok(Owner { uid: user.0, gid })
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

/// Writes into the target.
struct Writer<'a> {
    target: &'a Path,
    owner: Option<Owner>,
    modes: Modes,
    sync: bool,
    tablespaces: &'a [TablespacePlan],
}

impl Writer<'_> {
    /// Where a PGDATA-relative path goes: inside a tablespace's location for
    /// `pg_tblspc/<oid>/…`, else inside the target.
    fn dest_of(&self, rel: &RelPath) -> PathBuf {
        if let Some((t, rest)) = self.tablespace_part(rel) {
            return match rest {
                Some(rest) => t.location.join(rest.as_path()),
                None => t.location.clone(),
            };
        }
        self.target.join(rel.as_path())
    }

    /// For `pg_tblspc/<oid>[/rest]` of a mapped tablespace: the tablespace and the rest.
    fn tablespace_part(&self, rel: &RelPath) -> Option<(&TablespacePlan, Option<RelPath>)> {
        let b = rel.as_bytes().strip_prefix(b"pg_tblspc/")?;
        let (oid, rest) = match b.iter().position(|&c| c == b'/') {
            Some(i) => (&b[..i], Some(RelPath::from_bytes(&b[i + 1..]))),
            None => (b, None),
        };
        let oid: u32 = std::str::from_utf8(oid).ok()?.parse().ok()?;
        let t = self.tablespaces.iter().find(|t| t.oid == oid)?;
        Some((t, rest))
    }

    /// Gives `path` to the owner (following a symbolic link: the target may be one).
    fn chown(&self, path: &Path) -> Result<(), FsError> {
        if let Some(o) = self.owner {
            std::os::unix::fs::chown(path, Some(o.uid.as_raw()), Some(o.gid.as_raw()))
                .ctx("change owner of", path)?;
        }
        Ok(())
    }

    /// Gives a symbolic link itself to the owner.
    fn lchown(&self, path: &Path) -> Result<(), FsError> {
        if let Some(o) = self.owner {
            std::os::unix::fs::lchown(path, Some(o.uid.as_raw()), Some(o.gid.as_raw()))
                .ctx("change owner of", path)?;
        }
        Ok(())
    }

    fn set_dir_mode(&self, path: &Path) -> Result<(), FsError> {
        fs::set_permissions(path, fs::Permissions::from_mode(self.modes.dir))
            .ctx("set permissions of", path)?;
        self.chown(path)
    }

    /// Creates the target (or takes the empty one) with the data directory's mode and owner.
    /// Returns the directories whose entries changed (to fsync).
    fn make_root(&self, exists: bool) -> Result<Vec<PathBuf>, FsError> {
        let mut changed = Vec::new();
        if !exists {
            changed = create_ancestors(self.target)?;
            DirBuilder::new()
                .mode(0o700)
                .create(self.target)
                .ctx("create", self.target)?;
        }
        self.set_dir_mode(self.target)?;
        Ok(changed)
    }

    /// Creates one directory of the source; `None` for the `pg_tblspc/<oid>` entries of mapped
    /// tablespaces (those become links, see [`Writer::make_tablespace`]).
    fn make_dir(&self, rel: &RelPath) -> Result<Option<PathBuf>, FsError> {
        if let Some((_, None)) = self.tablespace_part(rel) {
            return Ok(None);
        }
        let path = self.dest_of(rel);
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(FsError::new("create directory", path, e)),
        }
        self.set_dir_mode(&path)?;
        Ok(Some(path))
    }

    /// Creates a tablespace location (and missing parents) and the `pg_tblspc/<oid>` link to
    /// it. Returns the directories whose entries changed (to fsync).
    fn make_tablespace(&self, t: &TablespacePlan) -> Result<Vec<PathBuf>, FsError> {
        let mut changed = Vec::new();
        let loc = &t.location;
        // A directory pgsafe did not create keeps its owner and mode: the location may be
        // an existing directory a hostile tablespace_map names (docs/threat-model.md).
        if !t.existed {
            changed = create_ancestors(loc)?;
            DirBuilder::new()
                .mode(0o700)
                .create(loc)
                .ctx("create", loc)?;
            self.set_dir_mode(loc)?;
        }
        let tblspc = self.target.join("pg_tblspc");
        if !tblspc.is_dir() {
            DirBuilder::new()
                .mode(0o700)
                .create(&tblspc)
                .ctx("create", &tblspc)?;
            self.set_dir_mode(&tblspc)?;
        }
        let link = tblspc.join(t.oid.to_string());
        std::os::unix::fs::symlink(loc, &link).ctx("create tablespace link", &link)?;
        self.lchown(&link)?;
        changed.push(tblspc);
        Ok(changed)
    }

    /// Creates a new file with the restored mode and owner.
    fn create_file(&self, path: &Path) -> Result<File, FsError> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.modes.file)
            .open(path)
            .ctx("create", path)?;
        f.set_permissions(fs::Permissions::from_mode(self.modes.file))
            .ctx("set permissions of", path)?;
        if let Some(o) = self.owner {
            nix::unistd::fchown(&f, Some(o.uid), Some(o.gid))
                .map_err(|e| FsError::new("change owner of", path, io::Error::from(e)))?;
        }
        Ok(f)
    }

    /// Writes a small file durably: temporary name, fsync, rename, fsync the directory.
    fn write_durable(&self, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
        let dir = fsutil::parent_dir(path);
        let mut tmp_name = OsString::from(".");
        tmp_name.push(path.file_name().unwrap_or_default());
        tmp_name.push(".pgsafe-tmp");
        let tmp = dir.join(tmp_name);
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = self.create_file(&tmp)?;
            f.write_all(bytes).ctx("write", &tmp)?;
            if self.sync {
                f.sync_all().ctx("fsync", &tmp)?;
            }
            fs::rename(&tmp, path).ctx("rename into place", path)?;
            if self.sync {
                fsutil::sync_dir(&dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The data files, by parallel workers.
    fn copy_files(
        &self,
        files: &[SourceFile],
        beneath: Option<&Beneath>,
        opts: &RestoreOptions,
        skip_checksums: bool,
        progress: &dyn Progress,
    ) -> Result<Copied, RestoreError> {
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
        progress.plan(
            files.len() as u64 + 1,
            files.iter().map(|f| f.size).sum::<u64>() + 8192,
        );
        let ctx = CopyCtx {
            w: self,
            files,
            beneath,
            order,
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            cancel: opts.cancel.as_deref(),
            check_sums: !skip_checksums,
            progress,
        };
        let jobs = opts.jobs.clamp(1, files.len().max(1));
        let outs: Vec<Copied> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..jobs).map(|_| s.spawn(|| ctx.worker())).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        if let Some(e) = lock(&ctx.error).take() {
            return Err(e);
        }
        if ctx.cancelled() {
            return Err(RestoreError::Cancelled(self.target.to_owned()));
        }
        if self.sync {
            progress.phase("sync");
            let paths: Vec<PathBuf> = files.iter().map(|f| self.dest_of(&f.rel)).collect();
            fsync_all(&paths, jobs, opts.cancel.as_deref()).map_err(|e| {
                e.unwrap_or_else(|| RestoreError::Cancelled(self.target.to_owned()))
            })?;
        }
        Ok(outs.iter().fold(Copied::default(), |a, o| Copied {
            files: a.files + o.files,
            bytes: a.bytes + o.bytes,
        }))
    }

    /// `backup_label`, `tablespace_map`, recovery settings, restore marker, WAL `.done` files.
    /// Returns the names of the recovery files written.
    fn write_small_files(
        &self,
        source: &Source,
        opts: &RestoreOptions,
        map_bytes: &[u8],
    ) -> Result<(Vec<String>, ConfigOutcome), RestoreError> {
        let t = self.target;
        // The status directory exists in every backup; create it for copies or old layouts.
        let status = t.join("pg_wal/archive_status");
        if !status.is_dir() {
            fs::create_dir_all(&status).ctx("create", &status)?;
            self.set_dir_mode(&t.join("pg_wal"))?;
            self.set_dir_mode(&status)?;
        }
        for name in &source.wal_names {
            let done = status.join(format!("{name}.done"));
            let f = self.create_file(&done)?;
            if self.sync {
                f.sync_all().ctx("fsync", &done)?;
            }
        }
        if self.sync {
            fsutil::sync_dir(&status)?;
        }
        self.write_durable(&t.join(verify::LABEL_FILE), source.label.as_bytes())?;
        if !map_bytes.is_empty() {
            self.write_durable(&t.join(verify::MAP_FILE), map_bytes)?;
        }
        let header = format!(
            "recovery settings written by pgsafe restore at {} (from {})",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            source.root.display()
        );
        let end = if opts.recovery.is_empty() {
            backup_end_of(t, source)
        } else {
            BackupEnd::Immediate
        };
        let rf = recovery_files(&opts.recovery, source.version, &header, end);
        let mut written = Vec::new();
        if let Some(conf) = &rf.recovery_conf {
            self.write_durable(&t.join("recovery.conf"), conf)?;
            written.push("recovery.conf".to_owned());
        }
        // postgresql.auto.conf: the source's recovery settings commented out, the copy's
        // settings and (12+) the recovery settings appended.
        let config = isolation::write_config(self, source, opts, rf.auto_conf_append.as_deref())?;
        if rf.auto_conf_append.is_some() {
            written.push("postgresql.auto.conf".to_owned());
        }
        if let Some(signal) = rf.signal {
            self.write_durable(&t.join(signal), b"")?;
            written.push(signal.to_owned());
        }
        let marker = restore_marker(source);
        self.write_durable(&t.join(RESTORE_MARKER_FILE), &marker.to_json())?;
        Ok((written, config))
    }

    /// `global/pg_control` with the sentinel, written last and durably.
    fn write_control(
        &self,
        f: &SourceFile,
        beneath: Option<&Beneath>,
    ) -> Result<ControlFile, RestoreError> {
        let file = f.open(beneath).ctx("open", &f.path)?;
        let mut bytes = Vec::with_capacity(8192);
        f.compression
            .decoder(file)
            .and_then(|d| d.take(1 << 16).read_to_end(&mut bytes))
            .ctx("read", &f.path)?;
        let mut control = ControlFile::decode(&bytes)?;
        apply_sentinel(&mut control);
        let out = control.encode();
        // Never write a pg_control the server would reject for its CRC or layout.
        let check = ControlFile::decode(&out)?;
        debug_assert!(has_sentinel(&check));
        let path = self.target.join(verify::CONTROL_FILE);
        self.write_durable(&path, &out)?;
        Ok(check)
    }
}

/// How a restore without recovery options ends: [`backup_end`] reads the WAL restored into
/// `target`'s `pg_wal`.
fn backup_end_of(target: &Path, source: &Source) -> BackupEnd {
    let control = backup_end::read_source_control(&source.control, source.beneath.as_ref());
    let Ok(Some(control)) = control else {
        return BackupEnd::Immediate;
    };
    let stop = source.info.as_ref().map(|i| i.stop_lsn);
    let Some(at) = backup_end::consistency_point(&control, source.label.is_from_standby(), stop)
    else {
        return BackupEnd::Immediate;
    };
    backup_end::decide(
        &target.join("pg_wal"),
        source.label.start_lsn(),
        at,
        control.xlog_seg_size,
        control.xlog_blcksz,
    )
}

/// fsyncs every file of `paths` on `jobs` threads. `Err(None)`: cancelled.
fn fsync_all(
    paths: &[PathBuf],
    jobs: usize,
    cancel: Option<&AtomicBool>,
) -> Result<(), Option<RestoreError>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<RestoreError>> = Mutex::new(None);
    let stop =
        || failed.load(Ordering::Relaxed) || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                while !stop() {
                    let Some(p) = paths.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let r = File::open(p).and_then(|f| f.sync_all()).ctx("fsync", p);
                    if let Err(e) = r {
                        lock(&error).get_or_insert(e.into());
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if let Some(e) = lock(&error).take() {
        return Err(Some(e));
    }
    if stop() {
        return Err(None);
    }
    Ok(())
}

/// Creates the missing ancestors of `path` (not `path` itself; mode 0755 less the umask, so
/// the server user can traverse them) and returns every directory whose entries change:
/// the parent of `path` and the parent of each ancestor created.
fn create_ancestors(path: &Path) -> Result<Vec<PathBuf>, FsError> {
    let mut missing = Vec::new();
    let mut p = fsutil::parent_dir(path);
    while !p.exists() {
        missing.push(p.clone());
        let up = fsutil::parent_dir(&p);
        if up == p {
            break;
        }
        p = up;
    }
    let mut changed = vec![fsutil::parent_dir(path)];
    for d in missing.iter().rev() {
        match DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(FsError::new("create", d, e)),
        }
        changed.push(fsutil::parent_dir(d));
    }
    Ok(changed)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared state of the parallel writers.
struct CopyCtx<'a> {
    w: &'a Writer<'a>,
    files: &'a [SourceFile],
    /// The backup folder (files are opened below it without following links).
    beneath: Option<&'a Beneath>,
    /// Indexes into `files`, largest first.
    order: Vec<usize>,
    next: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<RestoreError>>,
    cancel: Option<&'a AtomicBool>,
    /// Check sizes and checksums while writing (when the backup was not fully verified first).
    check_sums: bool,
    progress: &'a dyn Progress,
}

/// Bytes per read when the data passes through pgsafe (decompressing, checksumming): small
/// enough to stay in the CPU cache between the kernel's copy and ours.
const CHUNK: usize = 128 << 10;
/// Bytes per kernel copy (`copy_file_range`) call.
const KERNEL_CHUNK: u64 = 8 << 20;

impl CopyCtx<'_> {
    fn cancelled(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
            || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn worker(&self) -> Copied {
        let mut out = Copied::default();
        let mut buf = Vec::new();
        while !self.cancelled() {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&idx) = self.order.get(i) else {
                break;
            };
            let f = &self.files[idx];
            match self.restore_file(f, &mut buf) {
                Ok(n) => {
                    out.files += 1;
                    out.bytes += n;
                    self.progress.file_done(&f.rel.to_string(), n);
                }
                Err(e) => {
                    let mut slot = lock(&self.error);
                    if slot.is_none() && !matches!(e, RestoreError::Cancelled(_)) {
                        *slot = Some(e);
                    }
                    self.failed.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        out
    }

    fn damaged(&self, f: &SourceFile, detail: String) -> RestoreError {
        RestoreError::Damaged {
            path: f.rel.to_string(),
            detail,
            target: self.w.target.to_owned(),
        }
    }

    fn more_than_manifest(&self, f: &SourceFile) -> RestoreError {
        self.damaged(
            f,
            format!(
                "it holds more than the {} bytes the manifest says (writing stopped there)",
                f.size
            ),
        )
    }

    fn step(&self, n: usize) -> Result<(), RestoreError> {
        self.progress.bytes(n as u64);
        if self.cancelled() {
            return Err(RestoreError::Cancelled(self.w.target.to_owned()));
        }
        Ok(())
    }

    /// Restores one file; returns its size.
    fn restore_file(&self, f: &SourceFile, buf: &mut Vec<u8>) -> Result<u64, RestoreError> {
        let src = f.open(self.beneath).ctx("open", &f.path)?;
        // Never more than the manifest's size (+1 to notice more): a small compressed file can
        // inflate to terabytes, and a plain one can grow after the checks.
        let limit = f.size.saturating_add(1);
        let dest = self.w.dest_of(&f.rel);
        let mut out = self.w.create_file(&dest)?;
        let check = self.check_sums && f.checksum.is_some();
        let mut size = 0u64;
        if f.compression.is_none() && !check {
            // Plain file: let the kernel copy (copy_file_range), a chunk at a time for progress.
            loop {
                let chunk = KERNEL_CHUNK.min(limit - size);
                if chunk == 0 {
                    break;
                }
                let n = io::copy(&mut (&src).take(chunk), &mut out).ctx("copy into", &dest)?;
                if n == 0 {
                    break;
                }
                size += n;
                self.step(n as usize)?;
            }
        } else {
            if buf.is_empty() {
                buf.resize(CHUNK, 0);
            }
            let alg = f.checksum.as_ref().map(|(a, _)| *a).filter(|_| check);
            let mut hasher = alg
                .unwrap_or(crate::checksum::ChecksumAlgorithm::None)
                .hasher();
            let mut reader = f.compression.decoder(src).ctx("read", &f.path)?.take(limit);
            loop {
                let n = match reader.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if !f.compression.is_none() => {
                        return Err(self.damaged(f, format!("it does not decompress: {e}")));
                    }
                    Err(e) => return Err(FsError::new("read", &f.path, e).into()),
                };
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).ctx("write", &dest)?;
                size += n as u64;
                self.step(n)?;
            }
            if size > f.size {
                return Err(self.more_than_manifest(f));
            }
            if let (Some((_, expected)), Some(found)) = (&f.checksum, hasher.finish_hex()) {
                if !found.eq_ignore_ascii_case(expected) {
                    return Err(
                        self.damaged(f, format!("checksum {found}, the manifest says {expected}"))
                    );
                }
            }
        }
        if size > f.size {
            return Err(self.more_than_manifest(f));
        }
        if size != f.size {
            return Err(self.damaged(f, format!("{size} bytes, the manifest says {}", f.size)));
        }
        if self.w.sync {
            // Start writeback now; the fsync comes in one pass after every file is written
            // (far fewer journal commits than an fsync per file while writing).
            let _ = nix::fcntl::posix_fadvise(
                &out,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        Ok(size)
    }
}

/// The restore marker `pgsafe doctor` reads.
fn restore_marker(source: &Source) -> RestoreMarker {
    let label = &source.label;
    let fields = label.fields();
    let info = source.info.as_ref();
    RestoreMarker {
        format: RESTORE_MARKER_FORMAT,
        backup_id: source
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| source.root.display().to_string()),
        label: label.label_text().map(|l| l.into_owned()),
        start_lsn: label.start_lsn(),
        start_timeline: Some(label.timeline()),
        checkpoint_lsn: Some(label.checkpoint_lsn()),
        stop_lsn: info.map(|i| i.stop_lsn),
        stop_timeline: info.map(|i| i.stop_tli),
        backup_start_time: fields.start_time.clone(),
        restored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        source: Some(source.root.display().to_string()),
        system_identifier: info.map(|i| i.system_identifier),
        sentinel: true,
        pgsafe_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    }
}

/// How to start the restored server.
fn start_command(target: &Path, owner: Option<&str>) -> String {
    let pgctl = format!(
        "pg_ctl -D {} -l {} start",
        shell_quote(&target.display().to_string()),
        shell_quote(&format!(
            "{}/restore.log",
            fsutil::parent_dir(target).display()
        ))
    );
    match owner.and_then(|o| o.split(':').next()) {
        Some(user) => format!("sudo -u {} {pgctl}", shell_quote(user)),
        None => pgctl,
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What recovery will do, in words.
fn recovery_plan(source: &Source, r: &RecoveryOptions, stop: Option<Lsn>, target: &Path) -> String {
    let label = &source.label;
    let to = match stop {
        Some(s) => format!(" to the end of the backup at {s}"),
        None => " to the end of the backup".to_owned(),
    };
    let from = if source.wal_included {
        "from the backup's WAL in pg_wal/"
    } else if r.restore_command.is_some() {
        "with WAL fetched by restore_command"
    } else {
        "with WAL streamed from the primary"
    };
    let mut s = format!(
        "At startup PostgreSQL reads backup_label and replays WAL from {} (checkpoint {}, \
         timeline {}){to} {from}; ",
        label.start_lsn(),
        label.checkpoint_lsn(),
        label.timeline()
    );
    s.push_str(&match (&r.target, r.standby, &r.restore_command) {
        (_, true, _) => "then it keeps running as a standby (read-only) until promoted.".into(),
        (Some(t), false, _) => format!(
            "then it continues with restore_command up to the recovery target {t}, and then \
             {} (recovery_target_action).",
            match r.target_action {
                Some(TargetAction::Promote) => "opens for writes on a new timeline",
                Some(TargetAction::Shutdown) => "shuts down",
                // PostgreSQL's default.
                Some(TargetAction::Pause) | None => {
                    "pauses (read-only; SELECT pg_wal_replay_resume() to promote)"
                }
            }
        ),
        (None, false, Some(_)) => "then it continues with every WAL file restore_command \
            provides and opens for writes on a new timeline."
            .into(),
        (None, false, None) => "then it stops at the end of the backup and opens for reads and \
            writes on a new timeline (archive recovery with restore_command 'false', which fetches \
            nothing), so its WAL never takes the file names of the server it was copied from."
            .into(),
    });
    s.push_str(&format!(
        " Keep backup_label: the restored pg_control points at the impossible checkpoint {} on \
         purpose, so the server refuses to start without the label instead of silently \
         corrupting data (if it does not start, run pgsafe doctor {}).",
        SENTINEL_CHECKPOINT,
        shell_quote(&target.display().to_string())
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_mappings_parse() {
        let m: TablespaceMapping = "16385=/new/ts".parse().unwrap();
        assert_eq!(m.from, TablespaceSelector::Oid(16385));
        assert_eq!(m.to, PathBuf::from("/new/ts"));
        let m: TablespaceMapping = "/old/ts dir=/new/ts".parse().unwrap();
        assert_eq!(m.from, TablespaceSelector::Path("/old/ts dir".into()));
        for bad in ["x", "=/a", "1=", "1=rel", "rel=/abs", "99999999999=/a"] {
            assert!(bad.parse::<TablespaceMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/var/lib/pg"), "/var/lib/pg");
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn target_checks() {
        let d = tempfile::tempdir().unwrap();
        assert!(!check_target(&d.path().join("new")).unwrap());
        assert!(!check_target(&d.path().join("a/b/c")).unwrap());
        assert!(check_target(d.path()).unwrap());
        fs::write(d.path().join("x"), b"").unwrap();
        assert!(matches!(
            check_target(d.path()),
            Err(RestoreError::TargetNotEmpty(_))
        ));
        assert!(matches!(
            check_target(&d.path().join("x")),
            Err(RestoreError::TargetUnusable { .. })
        ));
        // A live postmaster (this process's pid).
        let t = d.path().join("live");
        fs::create_dir(&t).unwrap();
        fs::write(
            t.join("postmaster.pid"),
            format!("{}\n{}\n", std::process::id(), t.display()),
        )
        .unwrap();
        assert!(matches!(
            check_target(&t),
            Err(RestoreError::TargetRunning { .. })
        ));
        // A link to an empty directory is a usable target.
        let e = d.path().join("empty");
        fs::create_dir(&e).unwrap();
        std::os::unix::fs::symlink(&e, d.path().join("link")).unwrap();
        assert!(check_target(&d.path().join("link")).unwrap());
    }

    #[test]
    fn owner_specs() {
        let o = parse_owner("0:0").unwrap();
        assert!(o.uid.is_root());
        assert!(parse_owner("no-such-user-pgsafe").is_err());
        assert!(parse_owner("root:no-such-group-pgsafe").is_err());
        let r = parse_owner("root").unwrap();
        assert_eq!(r.gid, Gid::from_raw(0));
        // Root can never own a data directory.
        let e = resolve_owner(Some("root"), None, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("refuses to run as root"), "{e}");
        // chown(2)'s "no change" value would leave the files root's.
        for spec in ["4294967295", "4294967295:4294967295", "0:4294967295"] {
            let e = parse_owner(spec).unwrap_err();
            assert!(e.to_string().contains("leave unchanged"), "{spec}: {e}");
        }
        let recorded = FileOwner {
            uid: u32::MAX,
            gid: u32::MAX,
            user: None,
            group: None,
        };
        if nix::unistd::geteuid().is_root() {
            let e = resolve_owner(None, Some(&recorded), Path::new("/")).unwrap_err();
            assert!(e.to_string().contains("leave unchanged"), "{e}");
        }
    }
}
