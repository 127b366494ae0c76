//! What the settings say: `wal_level`, `archive_mode`, `archive_library`, and what
//! `archive_command` runs, judged against the repository and cluster being checked.

use std::path::{Path, PathBuf};

use super::{ArchiveSettings, CommandReport, Finding, finding};
use crate::config::RepoLocation;
use crate::session::ServerInfo;
use crate::session::archive_command::{self as command, Parsed, PushCall, conf_literal};
use crate::storage::Ident;

/// `wal_level`, `archive_mode`, `archive_library`.
pub(super) fn settings_findings(
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
pub(super) fn command_findings(
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
        Some(d) if !crate::storage::location::is_url(p) => d.join(p),
        _ => PathBuf::from(p),
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
            // An object store location, compared as written.
            Some(RepoLocation::Remote(u)) => (
                Some(PathBuf::from(u)),
                format!(" (repo of the config file {}, {whence})", file.display()),
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
