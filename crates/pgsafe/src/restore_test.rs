//! A restore test: prove that a backup restores, starts, recovers and holds readable data, by
//! doing it — in a scratch folder, with the backup's own major's binaries, never near the
//! backed-up server.
//!
//! 1. The backup's `pgsafe.json` names its major; its server binaries are found
//!    ([`bindir::find_binaries`]) and the user the server will run as is decided
//!    ([`resolve_run_as`]): never root.
//! 2. A private scratch folder (mode 0700, owned by that user) receives the restore: the
//!    restore library verifies the backup completely, writes the data directory (plain files
//!    by `copy_file_range`, which clones on file systems that can, e.g. btrfs and XFS, and
//!    copies elsewhere), puts every tablespace inside the scratch folder, turns archiving off
//!    and sets recovery to stop at the end of the backup and promote (`restore/recovery.rs`).
//! 3. `postgres` starts as that user with command-line settings that keep it inside the
//!    scratch folder ([`server::Layout::settings`]): no TCP, a private socket folder, its own
//!    authentication files. The wait ends when recovery has ended (measured: the recovery time
//!    of this restore, its RTO with the restore's time), the postmaster exits, or the time
//!    limit passes.
//! 4. amcheck on every database ([`amcheck::check_all`]), a relation count, a fast shutdown,
//!    and the scratch folder removed unless it is to be kept.

use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use nix::unistd::{Uid, User};
use serde::Serialize;

use crate::fsutil::{FsError, IoContext};
use crate::info::{BackupInfo, FileOwner};
use crate::label::{MapEscaping, TablespaceMap};
use crate::layout::{COMPLETE_MARKER, MAP_FILE, SMALL_FILE_LIMIT, StoredBackup};
use crate::progress::{Phase, Progress};
use crate::restore::{RestoreError, RestoreOptions, TablespaceMapping, TablespaceSelector};

pub mod amcheck;
pub mod bindir;
mod reasons;
pub mod server;

pub use amcheck::{AmcheckReport, Finding};
pub use bindir::Binaries;
pub use reasons::{
    CheckError, RoleRefused, RolesRefused, RunAsError, ScratchError, UnreadableInfo,
};
use server::{Layout, Ready, RunAs, Server};

/// Lines of the server's log quoted when it did not start.
const LOG_LINES: usize = 25;

/// What a restore test needs.
#[derive(Debug, Clone)]
pub struct RestoreTestOptions {
    pub backup: PathBuf,
    /// The folder with the backup major's `postgres`; found when absent.
    pub bin_dir: Option<PathBuf>,
    /// Where the scratch folder is made (default: the system's temporary folder). On the
    /// backup's file system, plain files are cloned where the file system can.
    pub scratch_parent: Option<PathBuf>,
    /// The user the server runs as (root only): a name or UID.
    pub run_as: Option<String>,
    /// Leave the scratch folder (and its stopped server) in place.
    pub keep: bool,
    pub jobs: usize,
    /// How long start-up and recovery may take.
    pub timeout: Duration,
    pub cancel: Option<Arc<AtomicBool>>,
    /// The WAL archive of the backup's repository (see [`RestoreOptions::wal_archive`]).
    pub wal_archive: Option<crate::verify::WalArchive>,
    /// The backup's objects, for a backup of a repository in object storage (`backup` then
    /// only names it); `None`: the folder `backup`.
    pub stored: Option<StoredBackup>,
}

impl RestoreTestOptions {
    pub fn new(backup: impl Into<PathBuf>) -> RestoreTestOptions {
        RestoreTestOptions {
            backup: backup.into(),
            bin_dir: None,
            scratch_parent: None,
            run_as: None,
            keep: false,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            timeout: Duration::from_secs(3600),
            cancel: None,
            wal_archive: None,
            stored: None,
        }
    }
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Restored, started, recovered, and amcheck found nothing.
    Proven,
    /// Restored, started and recovered; amcheck is not available, so nothing was checked.
    StartedNotChecked,
    /// The backup failed the restore's verification: it was not restored.
    BackupInvalid,
    /// The restored server did not start or did not finish recovery.
    DidNotStart,
    /// amcheck reported problems.
    CorruptionFound,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Proven => "proven",
            Verdict::StartedNotChecked => "started, not checked",
            Verdict::BackupInvalid => "not restored: the backup failed verification",
            Verdict::DidNotStart => "did not start",
            Verdict::CorruptionFound => "started, amcheck found problems",
        })
    }
}

/// What the restore did, in short.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub verification: &'static str,
    pub files: u64,
    pub bytes: u64,
    pub wal_files: u64,
    pub tablespaces: usize,
    /// File-system space the restore took (free space before minus after, on the scratch
    /// folder's file system): far below `bytes` where files were cloned. Other writers on that
    /// file system make it approximate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space_used: Option<u64>,
    pub warnings: Vec<String>,
}

/// The result of [`run_restore_test`].
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestReport {
    pub backup: PathBuf,
    pub verdict: Verdict,
    pub server_major: u32,
    pub binaries: Binaries,
    /// The user the server ran as.
    pub run_as: String,
    pub scratch: PathBuf,
    pub kept: bool,
    /// What ran, in order.
    pub steps: Vec<String>,
    /// What is wrong (empty when proven).
    pub problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSummary>,
    pub restore_secs: f64,
    /// From starting the server to the end of recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_secs: Option<f64>,
    /// Restore plus recovery: the measured recovery time objective of this backup here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_secs: Option<f64>,
    /// The server's last log lines when it did not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amcheck: Option<AmcheckReport>,
    /// How the server was stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// How to start the kept copy again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    pub notes: Vec<String>,
    pub elapsed_secs: f64,
}

impl RestoreTestReport {
    /// True for [`Verdict::Proven`] only.
    pub fn is_proven(&self) -> bool {
        self.verdict == Verdict::Proven
    }
}

/// Why a restore test could not be carried out (as opposed to finding problems).
#[derive(Debug, thiserror::Error)]
pub enum RestoreTestError {
    #[error("{} is not a complete pgsafe backup (no readable pgsafe.json): {source}", backup.display())]
    NotABackup {
        backup: PathBuf,
        #[source]
        source: UnreadableInfo,
    },
    #[error(
        "no PostgreSQL {major} server binaries found (tried: {tried}); install that major's \
         server package or name its bin folder"
    )]
    NoBinaries { major: u32, tried: String },
    #[error("choosing the user the server runs as: {0}")]
    RunAs(#[source] RunAsError),
    #[error("scratch folder: {0}")]
    Scratch(#[source] ScratchError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the restore failed: {0}")]
    Restore(RestoreError),
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the restored server was still not open after {secs} s (recovery not finished); it \
         was stopped. Allow more time for large backups. Last lines of its log:\n{log}"
    )]
    Timeout { secs: u64, log: String },
    #[error(
        "the restored server started, but none of the roles tried could log in ({0}); name the \
         backed-up cluster's superuser"
    )]
    NoRole(RolesRefused),
    #[error("the checks could not run: {0}")]
    Check(#[source] CheckError),
    #[error("the restore test was cancelled; the restored server was stopped")]
    Cancelled,
}

/// Reads the backup's `pgsafe.json` (below the folder, no link followed).
fn read_info(opts: &RestoreTestOptions) -> Result<BackupInfo, RestoreTestError> {
    let bad = |source: UnreadableInfo| RestoreTestError::NotABackup {
        backup: opts.backup.clone(),
        source,
    };
    let b = match &opts.stored {
        Some(s) => s.clone(),
        None => StoredBackup::folder(&opts.backup).map_err(|e| bad(e.into()))?,
    };
    let bytes = b
        .get(COMPLETE_MARKER, SMALL_FILE_LIMIT)
        .map_err(|e| bad(e.into()))?
        .ok_or_else(|| bad(UnreadableInfo::Missing))?;
    BackupInfo::parse(&bytes).map_err(|e| bad(e.into()))
}

/// The tablespace OIDs of the backup's `tablespace_map` (none without one). Unreadable or
/// invalid: none here; the restore reports it.
fn tablespace_oids(opts: &RestoreTestOptions, info: &BackupInfo) -> Vec<u32> {
    let b = match &opts.stored {
        Some(s) => s.clone(),
        None => match StoredBackup::folder(&opts.backup) {
            Ok(b) => b,
            Err(_) => return Vec::new(),
        },
    };
    let Ok(Some(bytes)) = b.get(MAP_FILE, SMALL_FILE_LIMIT) else {
        return Vec::new();
    };
    TablespaceMap::parse(&bytes, MapEscaping::for_version(info.server_version))
        .map(|m| m.entries().iter().map(|e| e.oid).collect())
        .unwrap_or_default()
}

/// The user the restored server runs as.
///
/// Not root: the current user (naming another is refused). As root: `explicit` when given;
/// else the owner `pgsafe.json` records for the backed-up data directory — but only when that
/// user exists here under the recorded name, is not root, and the backup folder and its
/// `pgsafe.json` belong to root or to that user. Whoever can write into the backup folder can
/// edit the recorded owner, and the restored server runs the backup's configuration (its
/// preloaded libraries, its commands) as the user chosen: a folder writable by someone else
/// must not pick the account. Never root.
pub fn resolve_run_as(
    explicit: Option<&str>,
    recorded: Option<&FileOwner>,
    backup: &Path,
) -> Result<RunAs, RunAsError> {
    let euid = Uid::effective();
    if !euid.is_root() {
        let me = User::from_uid(euid).ok().flatten();
        let name = me
            .as_ref()
            .map_or_else(|| euid.to_string(), |u| u.name.clone());
        if let Some(x) = explicit {
            if x != name && x != euid.to_string() {
                return Err(RunAsError::OnlyRoot {
                    asked: x.to_owned(),
                    current: name,
                });
            }
        }
        return Ok(RunAs {
            name,
            uid: euid.as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            is_current: true,
        });
    }
    let user = match explicit {
        Some(x) => {
            let found = if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) {
                x.parse()
                    .ok()
                    .and_then(|u| User::from_uid(Uid::from_raw(u)).ok().flatten())
            } else {
                User::from_name(x).ok().flatten()
            };
            found.ok_or_else(|| RunAsError::NoUser(x.to_owned()))?
        }
        None => {
            let r = recorded.ok_or(RunAsError::NotRecorded)?;
            let u = User::from_uid(Uid::from_raw(r.uid))
                .ok()
                .flatten()
                .filter(|u| r.user.as_deref().is_none_or(|n| n == u.name))
                .ok_or_else(|| RunAsError::RecordedUserMissing {
                    user: r.user.clone().unwrap_or_else(|| "?".into()),
                    uid: r.uid,
                })?;
            if u.uid.is_root() {
                return Err(RunAsError::Root(u.name));
            }
            for p in [backup.to_owned(), backup.join(COMPLETE_MARKER)] {
                let m = fs::symlink_metadata(&p).map_err(|source| RunAsError::Inspect {
                    path: p.clone(),
                    source,
                })?;
                if m.uid() != 0 && m.uid() != r.uid {
                    return Err(RunAsError::OwnedByOther {
                        path: p,
                        uid: m.uid(),
                        user: u.name,
                    });
                }
                // Group or world write lets other users rewrite the record (or, for the
                // folder, replace `pgsafe.json` and any other file) just as well.
                if m.mode() & 0o022 != 0 {
                    return Err(RunAsError::WritableByOthers {
                        path: p,
                        mode: m.mode() & 0o7777,
                        user: u.name,
                    });
                }
            }
            u
        }
    };
    if user.uid.is_root() {
        return Err(RunAsError::Root(user.name));
    }
    Ok(RunAs {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        is_current: false,
    })
}

/// True when `run_as` may enter `dir` by its mode bits (primary group only).
fn can_enter(m: &fs::Metadata, run_as: &RunAs) -> bool {
    let mode = m.mode();
    if m.uid() == run_as.uid {
        mode & 0o100 != 0
    } else if m.gid() == run_as.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Makes the scratch folder below `parent` (new, 0700, owned by `run_as`), its socket folder
/// and the server's authentication files.
fn make_scratch(parent: &Path, run_as: &RunAs) -> Result<Layout, RestoreTestError> {
    let parent = std::path::absolute(parent).ctx("resolve", parent)?;
    if !run_as.is_current {
        for dir in parent.ancestors() {
            let m = fs::metadata(dir).ctx("inspect", dir)?;
            if !can_enter(&m, run_as) {
                return Err(RestoreTestError::Scratch(ScratchError::Unreachable {
                    user: run_as.name.clone(),
                    dir: dir.to_owned(),
                    mode: m.mode() & 0o7777,
                }));
            }
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let scratch = parent.join(format!(
        "pgsafe-restore-test-{}-{nanos:09}",
        std::process::id()
    ));
    let layout = Layout::new(&scratch);
    // unix(7): sun_path holds 108 bytes with the terminating NUL.
    let socket_file = layout.socket.join(format!(".s.PGSQL.{}", server::PORT));
    if socket_file.as_os_str().len() > 107 {
        return Err(RestoreTestError::Scratch(ScratchError::SocketPathTooLong {
            socket: socket_file,
        }));
    }
    let mut b = DirBuilder::new();
    b.mode(0o700);
    b.create(&scratch).ctx("create", &scratch)?;
    let chown = |p: &Path| -> Result<(), FsError> {
        if run_as.is_current {
            return Ok(());
        }
        std::os::unix::fs::lchown(p, Some(run_as.uid), Some(run_as.gid)).ctx("chown", p)
    };
    chown(&scratch)?;
    b.create(&layout.socket).ctx("create", &layout.socket)?;
    chown(&layout.socket)?;
    let files: [(&Path, &str); 2] = [
        (
            &layout.hba,
            "# pgsafe restore test: connections over the private socket folder only (no TCP)\n\
             local all all trust\n",
        ),
        (&layout.ident, ""),
    ];
    for (p, text) in files {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
            .ctx("create", p)?;
        io::Write::write_all(&mut f, text.as_bytes()).ctx("write", p)?;
        chown(p)?;
    }
    Ok(layout)
}

/// Free bytes of the file system of `path` (for unprivileged users).
fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    s.blocks_available().checked_mul(s.fragment_size())
}

/// Removes the scratch folder when dropped, unless disarmed.
struct ScratchGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        if !self.keep {
            // Links (pg_tblspc/<oid>) are removed, not followed.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs a restore test; see the module documentation. `Err` only when the test could not be
/// carried out; problems of the backup are the report's verdict.
pub fn run_restore_test(
    opts: &RestoreTestOptions,
    progress: &dyn Progress,
) -> Result<RestoreTestReport, RestoreTestError> {
    let started = Instant::now();
    let info = read_info(opts)?;
    let major = info.server_version.major();
    let binaries = bindir::find_binaries(opts.bin_dir.as_deref(), major).map_err(|nf| {
        RestoreTestError::NoBinaries {
            major,
            tried: nf
                .tried
                .iter()
                .map(|(d, why)| format!("{}: {why}", d.display()))
                .collect::<Vec<_>>()
                .join("; "),
        }
    })?;
    // The recorded owner is trusted only from a folder whose owner vouches for it (see
    // resolve_run_as); object storage has no such owner, so the user must be named there.
    let local = opts
        .stored
        .as_ref()
        .is_none_or(|s| s.local_folder().is_some());
    let run_as = resolve_run_as(
        opts.run_as.as_deref(),
        info.pgdata_owner.as_ref().filter(|_| local),
        &opts.backup,
    )
    .map_err(RestoreTestError::RunAs)?;
    let parent = opts
        .scratch_parent
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let layout = make_scratch(&parent, &run_as)?;
    let mut guard = ScratchGuard {
        path: layout.scratch.clone(),
        keep: opts.keep,
    };
    let mut report = RestoreTestReport {
        backup: opts.backup.clone(),
        verdict: Verdict::DidNotStart,
        server_major: major,
        binaries: binaries.clone(),
        run_as: run_as.name.clone(),
        scratch: layout.scratch.clone(),
        kept: opts.keep,
        steps: Vec::new(),
        problems: Vec::new(),
        restore: None,
        restore_secs: 0.0,
        recovery_secs: None,
        rto_secs: None,
        server_log: None,
        amcheck: None,
        stopped: None,
        start_command: opts
            .keep
            .then(|| server::start_command(&binaries.bin_dir, &layout, major, &run_as)),
        notes: Vec::new(),
        elapsed_secs: 0.0,
    };
    let finish = |mut r: RestoreTestReport| {
        r.elapsed_secs = started.elapsed().as_secs_f64();
        r
    };

    // 2. Restore, every tablespace inside the scratch folder.
    let mut ropts = RestoreOptions::new(&opts.backup, &layout.data);
    ropts.tablespace_map = tablespace_oids(opts, &info)
        .into_iter()
        .map(|oid| TablespaceMapping {
            from: TablespaceSelector::Oid(oid),
            to: layout.scratch.join("tablespaces").join(oid.to_string()),
        })
        .collect();
    ropts.jobs = opts.jobs.max(1);
    ropts.cancel = opts.cancel.clone();
    ropts.wal_archive = opts.wal_archive.clone();
    // Synced like any restore: unsynced, PostgreSQL would flush it all when it starts
    // (`SyncDataDirectory` in `src/backend/storage/file/fd.c`), and that time would count as
    // recovery.
    ropts.sync = true;
    if !run_as.is_current {
        ropts.owner = Some(format!("{}:{}", run_as.uid, run_as.gid));
    }
    let free_before = free_bytes(&layout.scratch);
    let result = match &opts.stored {
        Some(s) => crate::restore::run_restore_stored(s, &ropts, progress),
        None => crate::restore::run_restore(&ropts, progress),
    };
    let restored = match result {
        Ok(r) => r,
        Err(RestoreError::BackupInvalid { problems, .. }) => {
            report
                .steps
                .push("restore: the backup failed verification, nothing was restored".to_owned());
            report.problems = problems.iter().map(|p| p.to_string()).collect();
            report.verdict = Verdict::BackupInvalid;
            return Ok(finish(report));
        }
        Err(e @ RestoreError::Damaged { .. }) => {
            report.problems.push(e.to_string());
            report.verdict = Verdict::BackupInvalid;
            return Ok(finish(report));
        }
        Err(RestoreError::Cancelled(_)) => return Err(RestoreTestError::Cancelled),
        Err(e) => return Err(RestoreTestError::Restore(e)),
    };
    report.restore_secs = restored.elapsed_secs;
    report.steps.push(format!(
        "restore with {} verification into {} ({} files, recovery to the end of the backup, \
         archiving off{})",
        restored.verification,
        layout.data.display(),
        restored.files,
        if restored.tablespaces.is_empty() {
            String::new()
        } else {
            format!(
                ", {} tablespace(s) inside the scratch folder",
                restored.tablespaces.len()
            )
        }
    ));
    report.restore = Some(RestoreSummary {
        verification: restored.verification,
        files: restored.files,
        bytes: restored.bytes,
        wal_files: restored.wal_files,
        tablespaces: restored.tablespaces.len(),
        space_used: free_before
            .zip(free_bytes(&layout.scratch))
            .map(|(a, b)| a.saturating_sub(b)),
        warnings: restored.warnings.clone(),
    });

    // 3. Start and wait for the end of recovery.
    progress.phase(Phase::Start);
    let postgres = binaries.bin_dir.join("postgres");
    let mut server = Server::spawn(&binaries.bin_dir, &layout, major, &run_as).map_err(|e| {
        RestoreTestError::Spawn {
            path: postgres.clone(),
            source: e,
        }
    })?;
    report.steps.push(format!(
        "start PostgreSQL {} ({}) as {} (socket folder {}, no TCP)",
        binaries.version,
        postgres.display(),
        run_as.name,
        layout.socket.display()
    ));
    let mut roles = vec![run_as.name.clone(), "postgres".to_owned()];
    roles.dedup();
    let cancel = opts.cancel.as_deref();
    let (mut client, user) = match server.wait_open(&roles, opts.timeout, cancel) {
        Ready::Open { client, user } => (client, user),
        Ready::Exited(status) => {
            report.problems.push(format!(
                "the restored server exited during start-up or recovery ({status})"
            ));
            report.server_log = Some(server.log_tail(LOG_LINES));
            report.verdict = Verdict::DidNotStart;
            return Ok(finish(report));
        }
        Ready::TimedOut => {
            let log = server.log_tail(LOG_LINES);
            drop(server);
            return Err(RestoreTestError::Timeout {
                secs: opts.timeout.as_secs(),
                log,
            });
        }
        Ready::NoRole(errors) => return Err(RestoreTestError::NoRole(RolesRefused(errors))),
        Ready::Cancelled => return Err(RestoreTestError::Cancelled),
    };
    let recovery = server.started.elapsed().as_secs_f64();
    report.recovery_secs = Some(recovery);
    report.rto_secs = Some(report.restore_secs + recovery);
    report
        .steps
        .push(format!("recovery ended; connected as {user}"));

    // The bootstrap superuser (OID 10, `BOOTSTRAP_SUPERUSERID` in `src/include/catalog/
    // pg_authid.dat`) may have another name than the role that got in.
    let boot: Option<String> = client
        .query_opt("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
        .ok()
        .flatten()
        .and_then(|r| r.try_get(0).ok());
    let user = boot.unwrap_or(user);

    // 4. Checks.
    progress.phase(Phase::Amcheck);
    let checks = amcheck::check_all(&server, &mut client, &user, major, cancel);
    drop(client);
    let (status, how) = server.stop(Duration::from_secs(120));
    report.stopped = Some(match status {
        Some(s) => format!("{how} ({s})"),
        None => how.to_owned(),
    });
    let checks = match checks {
        Err(_) if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) => {
            return Err(RestoreTestError::Cancelled);
        }
        r => r.map_err(RestoreTestError::Check)?,
    };
    report.steps.push(format!(
        "amcheck{} in {} database(s): {} table(s), {} index(es)",
        checks
            .version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default(),
        checks.databases.len(),
        checks.tables_checked,
        checks.indexes_checked
    ));
    report.steps.push(format!("stop: {}", how));
    report.verdict = if checks.problems > 0 {
        report
            .problems
            .extend(checks.findings.iter().map(|f| f.to_string()));
        if checks.problems as usize > checks.findings.len() {
            report.problems.push(format!(
                "… {} more problem(s) not listed",
                checks.problems as usize - checks.findings.len()
            ));
        }
        Verdict::CorruptionFound
    } else if !checks.available {
        Verdict::StartedNotChecked
    } else {
        Verdict::Proven
    };
    if checks.available && !checks.heap_checks {
        report.notes.push(format!(
            "tables were not checked (verify_heapam exists from PostgreSQL 14 on){}",
            if checks.heapallindexed {
                "; every index was cross-checked against its table (heapallindexed)"
            } else {
                ""
            }
        ));
    }
    report.notes.extend(checks.notes.iter().cloned());
    report.amcheck = Some(checks);
    drop(server);
    if !opts.keep {
        report.steps.push("scratch folder removed".to_owned());
    }
    guard.keep = opts.keep;
    Ok(finish(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_words() {
        assert_eq!(Verdict::Proven.to_string(), "proven");
        assert_eq!(
            serde_json::to_string(&Verdict::StartedNotChecked).unwrap(),
            "\"started_not_checked\""
        );
    }

    #[test]
    fn root_needs_a_user_it_can_trust() {
        if !Uid::effective().is_root() {
            // Not root: always the current user, and another one is refused.
            let me = resolve_run_as(None, None, Path::new("/")).unwrap();
            assert!(me.is_current);
            assert!(resolve_run_as(Some("no-such-user-pgsafe"), None, Path::new("/")).is_err());
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let e = resolve_run_as(None, None, d.path()).unwrap_err();
        assert!(matches!(e, RunAsError::NotRecorded), "{e}");
        let e = resolve_run_as(Some("root"), None, d.path()).unwrap_err();
        assert!(matches!(e, RunAsError::Root(_)), "{e}");
        let e = resolve_run_as(Some("0"), None, d.path()).unwrap_err();
        assert!(matches!(e, RunAsError::Root(_)), "{e}");
        let rootish = FileOwner {
            uid: 0,
            gid: 0,
            user: Some("root".into()),
            group: None,
        };
        let e = resolve_run_as(None, Some(&rootish), d.path()).unwrap_err();
        assert!(matches!(e, RunAsError::Root(_)), "{e}");
        let renamed = FileOwner {
            uid: 0,
            gid: 0,
            user: Some("postgres-elsewhere".into()),
            group: None,
        };
        let e = resolve_run_as(None, Some(&renamed), d.path()).unwrap_err();
        assert!(
            matches!(e, RunAsError::RecordedUserMissing { uid: 0, .. }),
            "{e}"
        );
    }
}
