//! `check`: is the server's WAL archiving into this repository set up, and does it work?
//!
//! Settings say what should happen; only a WAL file arriving says that it does. So `check`
//! reads everything that decides archiving — the server is the registered cluster, `wal_level`,
//! `archive_mode` (a standby with `on` archives nothing: src/backend/postmaster/pgarch.c
//! `PgArchCanRestart`/`XLogArchivingAlways`), `archive_library` (15+), `archive_command` (does
//! it run `pgsafe archive-push` with this repository and cluster, and is its exit status
//! pgsafe's), the repository (there, writable by the server's user, room left) — and then
//! forces a WAL switch and waits until the completed file is in the repository, watching
//! `pg_stat_archiver` meanwhile: a failure counted there while waiting means the command fails,
//! and a file counted as archived that is not in the repository went somewhere else. Each
//! finding says what is wrong and what to do; the answer is "yes" only when the switched file
//! is in the repository.

mod command;
mod repository;
mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::RepoLocation;
use crate::conninfo::{ConnSettings, ConnectError};
use crate::error::{ErrorKind, HasKind};
use crate::repo::{RepoError, Repository};
use crate::session::{ServerInfo, Session, SessionError};
use crate::storage::Ident;
use crate::types::{Lsn, WalSegment};

pub use command::{Parsed, PushCall, conf_literal, expected_command};
pub use repository::RepoState;
pub use server::{ArchiveSettings, ArchiverStats, Backlog};

/// Why `check` could not run at all (its findings are in [`CheckReport`], not here).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("connect to the server: {0}")]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl HasKind for CheckError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            CheckError::Connect(e) => e.error_kind(),
            CheckError::Session(e) => e.error_kind(),
        }
    }
}

/// How to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How long to wait for the switched WAL file to reach the repository.
    pub timeout: Duration,
    /// The pgsafe program an `archive_command` should run (for the line `check` suggests).
    pub program: String,
}

/// Pause between two looks while waiting.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// After the archiver counts a failure, how long to keep looking before calling it failing:
/// the archiver retries a failed file three times, a second apart (`NUM_ARCHIVE_RETRIES`,
/// src/backend/postmaster/pgarch.c), so a one-off failure can still end in the file arriving.
const RETRY_GRACE: Duration = Duration::from_secs(5);

/// One thing `check` found: a stable `code` (for scripts), what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn finding(code: &'static str, message: String, fix: Option<String>) -> Finding {
    Finding { code, message, fix }
}

/// Who the server is.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFacts {
    pub version: String,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub in_recovery: bool,
    pub user: String,
    pub data_directory: Option<String>,
}

/// The `archive_command` as `check` read it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    /// It runs `pgsafe archive-push` into this repository as this cluster, and nothing else
    /// decides its exit status.
    pub archives_here: bool,
    /// The repository and cluster it names (after the config file it uses, if any).
    pub repository: Option<String>,
    pub cluster: Option<String>,
    /// The setting that archives here: `archive_command = '…'` as postgresql.conf takes it.
    pub expected: String,
}

/// The WAL switch and the wait for its file.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    /// The LSN `pg_switch_wal` returned, and the WAL file it completed.
    pub lsn: Lsn,
    pub segment: WalSegment,
    /// The file is in the repository (its object name).
    pub stored_as: Option<String>,
    pub waited_ms: u64,
}

/// How far archiving is behind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lag {
    /// The WAL file the server writes now.
    pub current_segment: Option<WalSegment>,
    /// Seconds since the archiver last archived a file (server clock).
    pub last_archived_age_secs: Option<i64>,
    /// Files between the last archived one and the current one (same timeline).
    pub segments_behind: Option<u64>,
    /// Files waiting in `pg_wal/archive_status` (None: not readable with this user's rights).
    pub backlog: Option<Backlog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog_unreadable: Option<String>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub repository: RepoState,
    pub cluster: String,
    pub server: ServerFacts,
    pub settings: ArchiveSettings,
    pub archive_command: CommandReport,
    pub archiver: Option<ArchiverStats>,
    pub lag: Lag,
    pub switch: Option<SwitchReport>,
    /// What is wrong (any one makes the answer "no").
    pub problems: Vec<Finding>,
    /// Worth knowing, not wrong.
    pub warnings: Vec<Finding>,
}

impl CheckReport {
    /// Archiving into the repository works: the switched file arrived and nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.switch.as_ref().is_some_and(|s| s.stored_as.is_some())
    }
}

/// Runs the check of archiving from the server `conn` reaches into `repo` as `cluster`.
pub fn check(
    repo: &Path,
    cluster: &Ident,
    conn: &ConnSettings,
    opts: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let mut session = Session::new(conn.connect()?)?;
    let info = session.info().clone();
    let client = session.client();
    let settings = server::settings(client, info.version)?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    let repo_abs = std::path::absolute(repo).unwrap_or_else(|_| repo.to_owned());
    let (opened, mut state) = open_repository(&repo_abs, cluster, &info, &mut problems);
    let expected = expected_command(&opts.program, &repo_abs.to_string_lossy(), cluster.as_str());
    settings_findings(&info, &settings, &expected, &mut problems, &mut warnings);
    let command = command_findings(
        &settings,
        &info,
        &repo_abs,
        cluster,
        &expected,
        &mut problems,
    );

    // With neither a command nor a library the archiver archives nothing: no file would come.
    let archiving_on = settings.archive_mode != "off"
        && !(settings.archive_command.trim().is_empty()
            && settings
                .archive_library
                .as_deref()
                .is_none_or(|l| l.is_empty()));
    let current = if info.in_recovery {
        None
    } else {
        server::current_segment(client).ok()
    };
    if let Some(seg) = &current
        && opened.is_some()
    {
        server_access(&repo_abs, cluster, seg, &info, &mut state, &mut problems);
    }
    let archiver = server::archiver(client).ok();
    let lag = lag(client, &info, archiver.as_ref(), current);

    let mut switch = None;
    if info.in_recovery {
        problems.push(finding(
            "standby",
            format!(
                "the server is a standby (in recovery): pg_switch_wal cannot run there, so \
                 check cannot prove archiving; with archive_mode = {} {}",
                settings.archive_mode,
                if settings.archive_mode == "always" {
                    "it archives the WAL it receives"
                } else {
                    "it archives nothing until it is promoted"
                }
            ),
            Some("run check against the primary".into()),
        ));
    } else if let Some(repo) = &opened
        && archiving_on
    {
        let missing = server::missing_privileges(client, info.version)?;
        if missing.is_empty() {
            let baseline = archiver.clone();
            let (segment, lsn) = server::switch_wal(client)?;
            let (sw, found) =
                wait_for_segment(client, repo, cluster, segment, lsn, baseline, opts.timeout);
            problems.extend(found.problems);
            warnings.extend(found.warnings);
            switch = Some(sw);
        } else {
            problems.push(finding(
                "privileges",
                format!(
                    "user {:?} may not run {}: check forces a WAL switch to prove archiving",
                    info.user,
                    missing.join(" and ")
                ),
                Some(format!(
                    "connect as a superuser, or run {}",
                    missing
                        .iter()
                        .map(|f| format!(
                            "GRANT EXECUTE ON FUNCTION {f} TO {};",
                            quote_ident(&info.user)
                        ))
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
            ));
        }
    }
    Ok(CheckReport {
        repository: state,
        cluster: cluster.to_string(),
        server: ServerFacts {
            version: info.version.to_string(),
            system_identifier: info.system_id.to_string(),
            wal_segment_size: info.wal_segment_size.bytes(),
            in_recovery: info.in_recovery,
            user: info.user.clone(),
            data_directory: info.data_directory.clone(),
        },
        settings,
        archive_command: command,
        archiver,
        lag,
        switch,
        problems,
        warnings,
    })
}

/// A role name as an SQL identifier.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Opens the repository and checks the registration against the server; the repository's
/// state, and the repository when archiving into it can work.
fn open_repository(
    repo: &Path,
    cluster: &Ident,
    info: &ServerInfo,
    problems: &mut Vec<Finding>,
) -> (Option<Repository>, RepoState) {
    let mut state = RepoState {
        path: repo.display().to_string(),
        exists: repo.is_dir(),
        ..RepoState::default()
    };
    if let Some((read_only, free)) = repository::file_system(repo) {
        state.read_only = read_only;
        state.free_bytes = Some(free);
    }
    let init = format!(
        "pgsafe init --repo {} --cluster {cluster} -D PGDATA (with the server's data directory \
         and connection)",
        command::shell_word(&repo.to_string_lossy())
    );
    let opened = match Repository::open(repo) {
        Ok(r) => r,
        Err(e) => {
            let (code, why) = match &e {
                RepoError::NotARepository { .. } if !state.exists => {
                    ("repository_missing", "it does not exist".to_owned())
                }
                RepoError::NotARepository { .. } => (
                    "not_a_repository",
                    "it is not a pgsafe repository (no pgsafe-repo.json)".to_owned(),
                ),
                other => ("repository_unreadable", other.to_string()),
            };
            problems.push(finding(
                code,
                format!("the repository {}: {why}", repo.display()),
                Some(format!("create it and register the cluster: {init}")),
            ));
            return (None, state);
        }
    };
    state.is_repository = true;
    match opened.registration(cluster) {
        Ok(reg) => {
            if !reg.same_cluster(info.system_id, info.version, info.wal_segment_size) {
                problems.push(finding(
                    "other_cluster",
                    format!(
                        "the server is not the cluster registered as {cluster}: registered \
                         system identifier {}, PostgreSQL {}, WAL segments of {} bytes; the \
                         server has {}, PostgreSQL {}, {} bytes. archive-push refuses its WAL",
                        reg.system_identifier,
                        reg.server_version.major_name(),
                        reg.wal_segment_size.bytes(),
                        info.system_id,
                        info.version.major_name(),
                        info.wal_segment_size.bytes()
                    ),
                    Some(
                        "connect to the registered server, or register this one under a name \
                         of its own (pgsafe init) and archive under that name"
                            .into(),
                    ),
                ));
                return (None, state);
            }
        }
        Err(RepoError::NotRegistered { .. }) => {
            problems.push(finding(
                "not_registered",
                format!("cluster {cluster} is not registered in the repository"),
                Some(format!("register it: {init}")),
            ));
            return (None, state);
        }
        Err(e) => {
            problems.push(finding(
                "repository_unreadable",
                format!("the registration of {cluster} cannot be read: {e}"),
                None,
            ));
            return (None, state);
        }
    }
    if state.read_only {
        problems.push(finding(
            "repository_read_only",
            format!(
                "the repository {} is on a file system mounted read-only: archive-push cannot \
                 store WAL there",
                repo.display()
            ),
            Some("mount it read-write".into()),
        ));
    }
    let segment_bytes = info.wal_segment_size.bytes();
    if let Some(free) = state.free_bytes
        && free < segment_bytes.saturating_mul(2)
    {
        problems.push(finding(
            "repository_full",
            format!(
                "the repository's file system has {free} bytes free, less than two WAL \
                 segments ({segment_bytes} bytes each): archive-push fails, and WAL piles up in \
                 the server's pg_wal"
            ),
            Some(
                "free space there (pgsafe expire removes backups and WAL retention allows), or \
                 move the repository"
                    .into(),
            ),
        ));
    }
    (Some(opened), state)
}

/// When the data directory is on this host: can its owner (the user `archive_command` runs
/// as) write where `archive-push` of `segment` writes?
fn server_access(
    repo: &Path,
    cluster: &Ident,
    segment: &WalSegment,
    info: &ServerInfo,
    state: &mut RepoState,
    problems: &mut Vec<Finding>,
) {
    let Some(dir) = info.data_directory.as_deref().map(PathBuf::from) else {
        return;
    };
    // The same server only if its pg_control says so (a path can exist on two hosts).
    let local = crate::datadir::DataDir::open(&dir)
        .and_then(|d| d.control())
        .is_ok_and(|c| c.system_identifier == info.system_id);
    let who = if local {
        repository::Who::owner_of(&dir)
    } else {
        None
    };
    let Some(who) = who else { return };
    state.server_user = Some(who.name.clone());
    if let Some(why) = repository::server_cannot_write(repo, cluster, segment, &who) {
        problems.push(finding(
            "repository_not_writable",
            format!(
                "the server runs archive_command as {} (the owner of its data directory), who \
                 cannot use {why}",
                who.name
            ),
            Some(format!(
                "give {} the access named (e.g. chown -R {} {}, or a group both users share)",
                who.name,
                command::shell_word(&who.name),
                command::shell_word(&repo.to_string_lossy())
            )),
        ));
        state.server_cannot_write = Some(why);
    }
}

/// `wal_level`, `archive_mode`, `archive_library`.
fn settings_findings(
    info: &ServerInfo,
    s: &ArchiveSettings,
    expected: &str,
    problems: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) {
    if s.wal_level == "minimal" {
        problems.push(finding(
            "wal_level_minimal",
            "wal_level is minimal: the server cannot archive WAL (archive_mode needs replica or \
             logical)"
                .into(),
            Some("set wal_level = replica in postgresql.conf and restart the server".into()),
        ));
    }
    let restart = if s.archive_mode_pending_restart {
        " (a changed archive_mode is waiting for a restart: restart the server)"
    } else {
        ""
    };
    if s.archive_mode == "off" {
        problems.push(finding(
            "archive_mode_off",
            format!("archive_mode is off: the server archives nothing{restart}"),
            Some(format!(
                "in postgresql.conf set archive_mode = on and archive_command = {}, then \
                 restart the server (archive_mode needs a restart)",
                conf_literal(expected)
            )),
        ));
    } else if s.archive_mode_pending_restart {
        warnings.push(finding(
            "archive_mode_pending_restart",
            format!(
                "archive_mode is {} now, but the configuration changed it: the change takes \
                 effect at the next restart",
                s.archive_mode
            ),
            None,
        ));
    }
    if info.in_recovery && s.archive_mode == "on" {
        warnings.push(finding(
            "standby_archives_nothing",
            "this standby has archive_mode = on: it archives nothing until it is promoted \
             (always would archive what it receives)"
                .into(),
            None,
        ));
    }
    if let Some(lib) = s.archive_library.as_deref().filter(|l| !l.is_empty()) {
        problems.push(finding(
            "archive_library_set",
            format!(
                "archive_library is {lib:?}: the server archives through that module, not \
                 through archive_command (or, with both set, not at all)"
            ),
            Some("set archive_library = '' and reload the server".into()),
        ));
    }
}

/// What `archive_command` does, judged against this repository and cluster.
fn command_findings(
    s: &ArchiveSettings,
    info: &ServerInfo,
    repo: &Path,
    cluster: &Ident,
    expected: &str,
    problems: &mut Vec<Finding>,
) -> CommandReport {
    let line = format!("archive_command = {}", conf_literal(expected));
    let fix = || {
        Some(format!(
            "set in postgresql.conf: {line}, then reload the server (SELECT pg_reload_conf()); \
             or run ALTER SYSTEM SET archive_command = {}; SELECT pg_reload_conf();",
            conf_literal(expected)
        ))
    };
    let mut report = CommandReport {
        archives_here: false,
        repository: None,
        cluster: None,
        expected: line.clone(),
    };
    let shown = format!("archive_command is {}", conf_literal(&s.archive_command));
    let mut wrong = |code: &'static str, why: String| {
        problems.push(finding(code, format!("{shown}: {why}"), fix()));
    };
    let (call, compound) = match command::parse(&s.archive_command) {
        Parsed::Empty => {
            wrong(
                "archive_command_empty",
                "nothing archives WAL (the archiver waits, and WAL piles up in pg_wal)".into(),
            );
            return report;
        }
        Parsed::Unparsable => {
            wrong(
                "archive_command_unparsable",
                "the shell cannot parse it (unbalanced quotes)".into(),
            );
            return report;
        }
        Parsed::NotPgsafe { program } => {
            wrong(
                "archive_command_not_pgsafe",
                format!("it runs {program:?}, not pgsafe archive-push"),
            );
            return report;
        }
        Parsed::OtherSubcommand {
            program,
            subcommand,
        } => {
            wrong(
                "archive_command_not_push",
                format!("it runs {program} {subcommand}, not archive-push"),
            );
            return report;
        }
        Parsed::Push { call, compound } => (call, compound),
    };
    let data_dir = info.data_directory.as_deref().map(Path::new);
    let (named_repo, how) = command_repository(&call, data_dir);
    report.repository = named_repo.as_ref().map(|p| p.display().to_string());
    report.cluster = call.cluster.clone();
    let mut ok = true;
    match &named_repo {
        Some(p) if same_place(p, repo) => {}
        Some(p) => {
            ok = false;
            wrong(
                "archive_command_other_repository",
                format!(
                    "it archives into {}{how}, not into {}",
                    p.display(),
                    repo.display()
                ),
            );
        }
        None => {
            ok = false;
            wrong("archive_command_no_repository", how);
        }
    }
    match call.cluster.as_deref() {
        Some(c) if c == cluster.as_str() => {}
        Some(c) => {
            ok = false;
            wrong(
                "archive_command_other_cluster",
                format!("it archives as cluster {c:?}, not as {cluster}"),
            );
        }
        None => {
            ok = false;
            wrong(
                "archive_command_no_cluster",
                "it names no cluster (--cluster)".into(),
            );
        }
    }
    if !call.has_path {
        ok = false;
        wrong(
            "archive_command_no_path",
            "it does not pass %p (the path of the file to archive)".into(),
        );
    }
    if compound {
        ok = false;
        wrong(
            "archive_command_compound",
            "it is more than the pgsafe command (shell operators, redirections or \
             substitutions): its exit status may not be pgsafe's, and PostgreSQL removes WAL \
             it believes archived"
                .into(),
        );
    }
    let program = Path::new(&call.program);
    if program.is_absolute() && !is_executable(program) {
        ok = false;
        wrong(
            "archive_command_program_missing",
            format!("{} is not an executable file on this host", call.program),
        );
    }
    report.archives_here = ok;
    report
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Two paths name the same folder: the same file after resolving links, or (when either
/// cannot be resolved) the same text.
fn same_place(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The repository an `archive-push` call uses: `--repo`, else `repo` of the config file it
/// reads (`--config`, `PGSAFE_CONFIG=` in front of it, else the default file). Relative paths
/// are relative to the data directory, where the archiver runs the command. With `None`, the
/// reason; with a path, how it was found (for messages).
fn command_repository(call: &PushCall, data_dir: Option<&Path>) -> (Option<PathBuf>, String) {
    let resolve = |p: &str| match data_dir {
        Some(d) => d.join(p),
        None => PathBuf::from(p),
    };
    if let Some(r) = &call.repo {
        return (Some(resolve(r)), String::new());
    }
    let (file, whence) = match (&call.config, &call.config_env) {
        (Some(c), _) => (resolve(c), "named by its --config"),
        (None, Some(c)) => (resolve(c), "named by PGSAFE_CONFIG in it"),
        (None, None) => (
            PathBuf::from(crate::config::DEFAULT_PATH),
            "the default, unless the server's environment sets PGSAFE_CONFIG",
        ),
    };
    match crate::config::load(&file) {
        Ok(cfg) => match cfg.repo {
            Some(RepoLocation::Local(p)) => (
                Some(p),
                format!(" (repo of the config file {}, {whence})", file.display()),
            ),
            Some(RepoLocation::Remote(u)) => (
                None,
                format!(
                    "it names no --repo, and the config file {} ({whence}) names {u}, which is \
                     not a local repository",
                    file.display()
                ),
            ),
            None => (
                None,
                format!(
                    "it names no --repo, and the config file {} ({whence}) has no repo",
                    file.display()
                ),
            ),
        },
        Err(e) => (
            None,
            format!("it names no --repo, and its config file ({whence}) cannot be used: {e}"),
        ),
    }
}

/// Archive lag figures; none of them decides the answer.
fn lag(
    client: &mut postgres::Client,
    info: &ServerInfo,
    archiver: Option<&ArchiverStats>,
    current: Option<WalSegment>,
) -> Lag {
    let mut lag = Lag {
        current_segment: current,
        ..Lag::default()
    };
    if let Some(a) = archiver {
        lag.last_archived_age_secs = a
            .last_archived_time
            .zip(a.server_time)
            .map(|(t, now)| now.saturating_sub(t).max(0));
        let last = a
            .last_archived_wal
            .as_deref()
            .and_then(|n| n.parse::<WalSegment>().ok());
        if let (Some(last), Some(cur)) = (last, current)
            && last.tli == cur.tli
        {
            let size = info.wal_segment_size;
            if let (Ok(l), Ok(c)) = (last.segno(size), cur.segno(size)) {
                lag.segments_behind = Some(c.saturating_sub(l).saturating_sub(1));
            }
        }
    }
    match server::backlog(client, info.version) {
        Ok(b) => lag.backlog = Some(b),
        Err(e) => lag.backlog_unreadable = Some(e),
    }
    lag
}

/// What the wait found besides the switch report.
#[derive(Default)]
struct WaitFindings {
    problems: Vec<Finding>,
    warnings: Vec<Finding>,
}

/// Waits until `segment` is in the repository, the archiver reports a failure (and its
/// retries did not bring the file), the archiver reports the file archived while it is not in
/// the repository, or `timeout` passes.
fn wait_for_segment(
    client: &mut postgres::Client,
    repo: &Repository,
    cluster: &Ident,
    segment: WalSegment,
    lsn: Lsn,
    baseline: Option<ArchiverStats>,
    timeout: Duration,
) -> (SwitchReport, WaitFindings) {
    let began = Instant::now();
    let mut found = WaitFindings::default();
    let mut failed_seen: Option<(Instant, ArchiverStats)> = None;
    let name = segment.to_string();
    let report = |stored_as: Option<String>| SwitchReport {
        lsn,
        segment,
        stored_as,
        waited_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    loop {
        match repository::stored_segment(repo.backend(), cluster, &segment) {
            Ok(Some(object)) => {
                if let Some((_, stats)) = failed_seen {
                    found.warnings.push(finding(
                        "archive_failed_then_succeeded",
                        format!(
                            "the archiver failed once ({}) and then archived {name}: look at \
                             the server log for the failure",
                            failure_words(&stats)
                        ),
                        None,
                    ));
                }
                return (report(Some(object)), found);
            }
            Ok(None) => {}
            Err(e) => {
                found.problems.push(finding(
                    "repository_unreadable",
                    format!("the repository cannot be read while waiting for {name}: {e}"),
                    None,
                ));
                return (report(None), found);
            }
        }
        let now = server::archiver(client).ok();
        if let (Some(now), Some(base)) = (&now, &baseline) {
            if failed_seen.is_none() && now.failed_count > base.failed_count {
                failed_seen = Some((Instant::now(), now.clone()));
            }
            if now.archived_count > base.archived_count
                && now
                    .last_archived_wal
                    .as_deref()
                    .is_some_and(|l| l.len() == name.len() && l >= name.as_str())
            {
                // The archiver counts a file once its command exited 0; archive-push exits 0
                // only after storing it. One more look, then it went elsewhere.
                if let Ok(Some(object)) =
                    repository::stored_segment(repo.backend(), cluster, &segment)
                {
                    return (report(Some(object)), found);
                }
                found.problems.push(finding(
                    "archived_elsewhere",
                    format!(
                        "the server reports {name} archived (pg_stat_archiver: last archived \
                         {}), but it is not in the repository: archive_command stores WAL \
                         somewhere else",
                        now.last_archived_wal.as_deref().unwrap_or_default()
                    ),
                    Some("set archive_command as shown above".into()),
                ));
                return (report(None), found);
            }
        }
        if let Some((at, stats)) = &failed_seen
            && (at.elapsed() >= RETRY_GRACE || began.elapsed() >= timeout)
        {
            let latest = now.unwrap_or_else(|| stats.clone());
            // The archiver takes files in order and retries the oldest until it succeeds
            // (`pgarch_readyXlog`, src/backend/postmaster/pgarch.c): an older file failing
            // keeps every later one, the switched one included, out of the archive.
            let order = match latest.last_failed_wal.as_deref() {
                Some(f) if f.len() == name.len() && f < name.as_str() => {
                    format!(" (an older file: the archiver retries it before it reaches {name})")
                }
                _ => String::new(),
            };
            found.problems.push(finding(
                "archive_command_fails",
                format!(
                    "archive_command fails: while check waited for {name}, pg_stat_archiver \
                     counted {} failed attempt(s); {}{order}",
                    latest
                        .failed_count
                        .saturating_sub(baseline.as_ref().map_or(0, |b| b.failed_count)),
                    failure_words(&latest)
                ),
                Some(
                    "the server log has the command's own error message (look for \"archive \
                     command failed\"); fix it and run check again"
                        .into(),
                ),
            ));
            return (report(None), found);
        }
        if began.elapsed() >= timeout {
            let last = now
                .as_ref()
                .and_then(|a| a.last_archived_wal.clone())
                .unwrap_or_else(|| "none".into());
            found.problems.push(finding(
                "not_archived_in_time",
                format!(
                    "{name} did not reach the repository within {} s (pg_stat_archiver: last \
                     archived {last}, no new failure): the archiver is behind or stuck",
                    timeout.as_secs()
                ),
                Some(
                    "look at the backlog (pg_wal/archive_status/*.ready) and the server log, or \
                     wait longer (--timeout)"
                        .into(),
                ),
            ));
            return (report(None), found);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// "last failed on X at T" from the archiver's statistics.
fn failure_words(a: &ArchiverStats) -> String {
    let at = a
        .last_failed_time
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "an unknown time".into());
    format!(
        "last failed WAL file {} at {at}",
        a.last_failed_wal.as_deref().unwrap_or("(none)")
    )
}
