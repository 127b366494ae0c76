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

mod gaps;
pub mod object_store;
mod repository;
mod server;
mod settings;
mod spool;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::conninfo::{ConnSettings, ConnectError};
use crate::error::{ErrorKind, HasKind};
use crate::repo::{Registration, RepoError, Repository};
use crate::session::archive_command as command;
use crate::session::{ServerInfo, Session, SessionError};
use crate::storage::Ident;
use crate::types::{Lsn, WalSegment};

pub use command::{Parsed, PushCall, conf_literal, expected_command};
pub use gaps::GapReport;
pub use repository::RepoState;
pub use server::{ArchiveSettings, ArchiverStats, Backlog};
pub use spool::SpoolReport;

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
    /// How to reach a repository in object storage (over the `AWS_*` variables).
    pub s3: crate::storage::s3::S3Settings,
    /// Arguments the suggested `archive_command` adds after the cluster (how to reach an
    /// object store without the server's environment).
    pub extra_args: Vec<String>,
}

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
    /// WAL missing from the repository's archive of the cluster.
    pub gaps: Vec<GapReport>,
    /// What `archive-push` left in the server's local spool (backlog, falling behind, gaps and
    /// failures not in the repository yet).
    pub spool: SpoolReport,
    /// The last failed push (the repository's record and the spool's), if any.
    pub last_failed_push: Option<crate::archive::failure::FailedPush>,
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

    // A URL (object storage) is kept as written: making it absolute would turn it into a
    // folder under the current one.
    let repo_abs = match repo.to_str() {
        Some(u) if crate::storage::location::is_url(u) => repo.to_owned(),
        _ => std::path::absolute(repo).unwrap_or_else(|_| repo.to_owned()),
    };
    let (opened, mut state) = open_repository(&repo_abs, cluster, &info, &opts.s3, &mut problems);
    let expected = command::expected_command_with(
        &opts.program,
        &repo_abs.to_string_lossy(),
        cluster.as_str(),
        &opts.extra_args,
    );
    settings::settings_findings(&info, &settings, &expected, &mut problems, &mut warnings);
    let command = settings::command_findings(
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
    } else if let Some((repo, reg)) = &opened
        && archiving_on
    {
        let missing = server::missing_privileges(client, info.version)?;
        if missing.is_empty() {
            let baseline = archiver.clone();
            let (segment, lsn) = server::switch_wal(client)?;
            let (sw, found) = wait::wait_for_segment(
                client,
                repo,
                reg,
                cluster,
                segment,
                lsn,
                baseline,
                opts.timeout,
            );
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
    let mut gap_list = Vec::new();
    if let Some((repo, reg)) = &opened {
        let settled = lag
            .backlog
            .as_ref()
            .and_then(|b| b.oldest_ready.as_deref())
            .and_then(|n| n.parse::<WalSegment>().ok())
            .or(current);
        match gaps::gaps(repo, reg, cluster, settled) {
            Ok(g) => gap_list = g,
            Err(e) => warnings.push(finding(
                "gaps_unknown",
                format!("the archive's gaps could not be read: {e}"),
                None,
            )),
        }
        gaps::findings(
            &gap_list,
            &repo_abs.to_string_lossy(),
            cluster,
            &mut problems,
            &mut warnings,
        );
    }
    let (spool_report, records) = spool::read(
        info.data_directory.as_deref(),
        info.system_id,
        &repo_abs,
        cluster,
    );
    let mut last_failed_push = None;
    if let Some((repo, reg)) = &opened {
        match spool::last_failed(repo, reg, cluster, &records) {
            Ok(f) => last_failed_push = f,
            Err(e) => warnings.push(finding(
                "failed_pushes_unknown",
                format!("the failed pushes recorded in the repository could not be read: {e}"),
                None,
            )),
        }
    } else {
        last_failed_push = records
            .iter()
            .filter_map(crate::archive::failure::from_record)
            .max_by_key(|f| f.last_us());
    }
    spool::findings(
        &spool_report,
        last_failed_push.as_ref(),
        &mut problems,
        &mut warnings,
    );
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
        gaps: gap_list,
        spool: spool_report,
        last_failed_push,
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
    s3: &crate::storage::s3::S3Settings,
    problems: &mut Vec<Finding>,
) -> (Option<(Repository, Registration)>, RepoState) {
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
    let location = match repo.to_str() {
        Some(u) if crate::storage::location::is_url(u) => {
            crate::storage::Location::parse_with(u, s3, |k| std::env::var(k).ok())
        }
        _ => crate::storage::Location::parse_os(repo.as_os_str()),
    };
    let location = match location {
        Ok(l) => l,
        Err(e) => {
            problems.push(finding("repository_unreadable", e.to_string(), None));
            return (None, state);
        }
    };
    if !location.is_local() {
        // Object storage has no folder to find missing.
        state.exists = true;
    }
    let opened = match Repository::open(location) {
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
    let reg = match opened.registration(cluster) {
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
            reg
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
    };
    if !opened.location().is_local() {
        object_store_findings(&opened, &mut state, problems);
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
    (Some((opened, reg)), state)
}

/// A repository in object storage: what stands for the folder checks (a probe object created,
/// its time compared with ours, deleted). Not being able to delete is not a problem here
/// (a create-only key is a deliberate choice for an archiving host): the state says so.
fn object_store_findings(repo: &Repository, state: &mut RepoState, problems: &mut Vec<Finding>) {
    let st = object_store::probe(repo);
    if let Some(e) = &st.write_error {
        problems.push(finding(
            "repository_not_writable",
            format!(
                "no object can be created in the repository {}: {e}. archive-push cannot \
                 store WAL there",
                repo.location()
            ),
            Some(
                "give this key the right to create objects under the repository's prefix \
                 (s3:PutObject; s3:GetObject and s3:ListBucket to read back)"
                    .into(),
            ),
        ));
    }
    if let Some(secs) = st.clock_skew_secs
        && secs > object_store::SKEW_LIMIT.as_secs()
    {
        problems.push(finding(
            "clock_skew",
            format!(
                "this host's clock and the object store's differ by {secs} s: S3 refuses \
                 signed requests more than 15 minutes off, and backup and WAL times in the \
                 catalog are this host's"
            ),
            Some("synchronise the clock (NTP, chrony or systemd-timesyncd)".into()),
        ));
    }
    state.object_store = Some(st);
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
