//! The `pgsafe` command: parses arguments, renders results and maps errors to exit codes.
//! All behaviour lives in the `pgsafe` library crate.

// Every module declared below writes through `output`: these shadow the standard macros, which
// panic (exit 101) when stdout is a closed pipe or a full disk. See output.rs.
macro_rules! println {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}
#[allow(unused_macros)] // none yet: here so that a future print! cannot panic either
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::text(format_args!($($arg)*)) };
}
macro_rules! eprintln {
    () => { $crate::output::err_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::err_line(format_args!($($arg)*)) };
}

mod advice;
mod archive;
mod backup;
mod check;
mod config;
mod conn;
mod doctor;
mod expire;
mod failure;
mod generate;
mod info;
mod inspect;
mod key;
mod metrics;
mod output;
mod progress;
mod render;
mod repo;
mod restore;
mod snapshot;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// The one exit-code table of every command (the same in `--help` and the README).
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The command ran, and its answer is "no": a check found problems, or (doctor) the data
    /// directory needs attention.
    pub const PROBLEMS: u8 = 1;
    /// Error: bad input, or a server or file-system failure (`--json`: an `error` object).
    pub const ERROR: u8 = 2;
    /// `snapshot --exec`: the command failed, so the backup was aborted.
    pub const EXEC_FAILED: u8 = 3;
    /// `backup`: the backup is complete, but pages of the SOURCE cluster failed their checksum.
    pub const SOURCE_CORRUPT: u8 = 4;
    /// `doctor`: dangerous — a restored backup or copy that would fail or be silently corrupted
    /// if started as it is.
    pub const DANGEROUS: u8 = 5;
    /// Interrupted: backup and restore stop cleanly on Ctrl-C or SIGTERM and exit 128 + SIGINT,
    /// as a shell reports a command ended by Ctrl-C.
    pub const INTERRUPTED: u8 = 130;
    /// `archive-get`: any failure but "the archive does not have the file" (1). PostgreSQL stops
    /// recovery when restore_command exits above 125 and takes any other failure for a missing
    /// file, which ends recovery (RestoreArchivedFile in
    /// src/backend/access/transam/xlogarchive.c): a damaged or foreign stored file, or an
    /// archive that cannot be read, must not end recovery early and silently.
    pub const STOP_RECOVERY: u8 = 200;
}

/// The table as `--help` shows it.
const EXIT_CODES_HELP: &str = "Exit codes (every command):\n  \
    0    success\n  \
    1    the command ran and its answer is \"no\": a check found problems (verify), the data \
         directory needs attention (doctor)\n  \
    2    error: bad input, server or file-system failure, a backup that is NOT usable; with \
         --json, stdout has {\"error\": {\"kind\", \"message\", \"exit_code\"}}\n  \
    3    the command given to `snapshot --exec` failed; the backup was aborted\n  \
    4    backup: complete, but pages of the SOURCE cluster failed their checksum (the source \
         is corrupt)\n  \
    5    doctor: dangerous — a restored backup or copy that would fail or be corrupted\n  \
    130  interrupted (backup and restore stop cleanly on Ctrl-C or SIGTERM)\n  \
    200  archive-get: the file could not be restored (damaged or foreign, or the archive \
         cannot be read): PostgreSQL stops recovery; 1 means the archive does not have it\n\
    Results go to stdout, messages to stderr.";

#[derive(Parser)]
#[command(
    name = "pgsafe",
    version,
    about = "Safe online physical backups of PostgreSQL 10–18",
    long_about = "pgsafe takes safe online physical backups of PostgreSQL 10–18 with the \
                  non-exclusive backup API, stores backup_label and tablespace_map with the \
                  backup byte for byte, and tells a crashed server from a restored backup.",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    /// The config file (repository, clusters, defaults; README "Config file"). Default:
    /// PGSAFE_CONFIG, else /etc/pgsafe/pgsafe.toml if it exists. Flags override its settings.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    s3: config::S3Flags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Take a complete, self-contained, verifiable backup of a running server, copied in
    /// parallel: data files, backup_label, tablespace_map, the WAL it needs, backup_manifest.
    #[command(
        disable_help_flag = true,
        long_about = "Takes a complete backup of a running PostgreSQL 10-18 server into a new \
                      folder, reading PGDATA directly (run it on the database host, or with \
                      PGDATA mounted) while the server is in non-exclusive backup mode: \
                      parallel copy with per-file checksums and optional compression, \
                      global/pg_control last, backup_label and tablespace_map exactly as the \
                      server returned them, the WAL from start to stop (reserved by a temporary \
                      replication slot) and a PostgreSQL-format backup_manifest. pgsafe.json is \
                      written last: a folder without it is an incomplete backup.",
        after_help = "Example:\n  pgsafe backup -D /var/lib/postgresql/16/main --target \
                      /backup/2026-11-21 -d \"host=/var/run/postgresql user=postgres\""
    )]
    Backup(backup::BackupArgs),
    /// Snapshot mode, pre-backup hook: start a non-exclusive backup held open by a detached
    /// holder process; returns as soon as the server is in backup mode.
    #[command(
        disable_help_flag = true,
        long_about = "Pre-backup hook for storage snapshots and backup software. Starts a \
                      non-exclusive backup (pg_backup_start on 15+, pg_start_backup(label, fast, \
                      false) on 10-14) in a detached holder process that keeps the session open \
                      until `pgsafe stop`. Exits 0 only after the server confirmed backup mode; \
                      never leaves a holder behind on failure. Returns at once even when its \
                      stdout/stderr are captured through pipes.",
        after_help = "Example hook configuration:\n  pre-backup:  pgsafe start --id nightly -d \"host=/var/run/postgresql user=postgres\"\n  \
                      (take the snapshot)\n  post-backup: pgsafe stop --id nightly --output-dir /mnt/snap/pgdata"
    )]
    Start(snapshot::StartArgs),
    /// Snapshot mode, post-backup hook: stop the backup, write backup_label/tablespace_map.
    #[command(
        disable_help_flag = true,
        long_about = "Asks the holder to stop the backup in the session that started it, \
                      receives backup_label, tablespace_map and the stop LSN, and writes them \
                      durably into --output-dir (typically the mounted snapshot). Waits for WAL \
                      archiving when the server archives. Idempotent: running it again returns \
                      the same result. Exits non-zero, saying the backup is NOT usable, if the \
                      holder died, the session was lost, or the backup was aborted."
    )]
    Stop(snapshot::StopArgs),
    /// Show the backups the holders know: ID, state, start LSN, age, server, holder pid.
    /// Read-only: creates no files.
    #[command(disable_help_flag = true)]
    Status(snapshot::IdArgs),
    /// End a held backup without a label (the server discards it).
    #[command(disable_help_flag = true)]
    Abort(snapshot::IdArgs),
    /// One shot: start, run a snapshot/copy command, stop, write the label files.
    #[command(disable_help_flag = true)]
    Snapshot(snapshot::SnapshotArgs),
    /// Internal: the detached holder process started by `pgsafe start`.
    #[command(name = "__holder", hide = true)]
    Holder {
        #[arg(long)]
        run_dir: PathBuf,
    },
    /// Tell a crashed server from a restored backup: verdict, evidence, exact next steps.
    #[command(long_about = doctor::LONG_ABOUT, after_help = doctor::AFTER_HELP)]
    Doctor(doctor::DoctorArgs),
    /// Check a stored backup: completeness, manifest, sizes and checksums, backup_label,
    /// pg_control, WAL; exit 1 with the list of problems.
    #[command(long_about = verify::LONG_ABOUT, after_help = verify::AFTER_HELP)]
    Verify(verify::VerifyArgs),
    /// Restore a backup into a new data directory, with the pg_control safety sentinel that
    /// keeps the server from starting without backup_label.
    #[command(long_about = restore::LONG_ABOUT, after_help = restore::AFTER_HELP)]
    Restore(restore::RestoreArgs),
    /// Show what a data directory's pg_control, backup_label, tablespace_map and signal files say
    /// (read-only; safe on a running server's directory).
    #[command(
        long_about = "Read-only. Decodes global/pg_control (state, checkpoint and redo LSN, \
                      timeline, minimum recovery point, backup start/end points, wal_level, \
                      data checksums, WAL segment size) and reports any backup_label, \
                      tablespace_map, postmaster.pid and recovery signal files found in PGDATA. \
                      Writes nothing.",
        after_help = "Examples:\n  pgsafe inspect /var/lib/postgresql/16/main\n  \
                      pgsafe inspect --json \"$PGDATA\" | jq .control.state"
    )]
    Inspect {
        /// The data directory (the folder initdb created; holds PG_VERSION and global/).
        #[arg(value_name = "PGDATA", env = "PGDATA")]
        pgdata: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create a backup repository (if needed) and register a cluster in it: system identifier,
    /// major version and WAL segment size, asked from the server.
    #[command(
        disable_help_flag = true,
        long_about = "Registers the server you connect to as --cluster NAME in the repository \
                      --repo REPO, creating the repository when REPO is missing or an empty \
                      folder (a non-empty folder that is not a repository is refused). PGDATA \
                      must be that server's data directory. Running it again for the same \
                      cluster changes nothing; another cluster (system identifier, major \
                      version, WAL segment size) under a taken name is refused.",
        after_help = "Example:\n  pgsafe init --repo /var/lib/pgsafe --cluster main -D \
                      /var/lib/postgresql/16/main -d \"host=/var/run/postgresql user=postgres\""
    )]
    Init(repo::InitArgs),
    /// The keys of an encrypted repository: list them, rotate them (rewrap for a new
    /// passphrase or recipients without re-encrypting data), write a key file for a host that
    /// holds only public keys. See docs/encryption.md.
    Key(key::KeyArgs),
    /// Pin a backup of a repository: expire keeps it whatever the retention says.
    Pin(repo::PinArgs),
    /// Unpin a backup of a repository: retention applies to it again.
    Unpin(repo::PinArgs),
    /// Monitoring figures of a repository (backup ages, sizes, states, verification,
    /// recoverability window, running operations) as Prometheus text or JSON.
    #[command(long_about = metrics::LONG_ABOUT, after_help = metrics::AFTER_HELP)]
    Metrics(metrics::MetricsArgs),
    /// Check that the server archives its WAL into the repository: settings, archive_command,
    /// the repository, then a forced WAL switch whose file must arrive there.
    #[command(disable_help_flag = true, long_about = check::LONG_ABOUT, after_help = check::AFTER_HELP)]
    Check(check::CheckArgs),
    /// Show what a repository holds: per cluster its status and problems, the recoverability
    /// window and every backup; or everything about one backup. Read-only.
    #[command(long_about = info::LONG_ABOUT, after_help = info::AFTER_HELP)]
    Info(info::InfoArgs),
    /// Apply retention to a cluster of a repository: plan which backups to keep and delete
    /// (with the reason for each), prove the plan safe, show it, then delete.
    #[command(
        long_about = "Applies retention to one cluster of a repository. Backups are ordered by \
                      lineage (timeline, then stop LSN), never by ID. --keep-full N keeps the N \
                      newest valid full backups (and every backup newer than the oldest of \
                      them), --keep-within DURATION every backup that finished \
                      within it (both: the union); only backups older in lineage than every \
                      kept one are deleted. Never deleted: the newest valid backup, pinned and \
                      running backups, backups of another cluster or with unreadable metadata, \
                      and the chain of a kept differential or incremental backup (its parents \
                      down to the full: expire never breaks a chain). \
                      Without a retention nothing complete is deleted. Incomplete leftovers \
                      (interrupted backups, no live lease) are always deleted. The plan is \
                      checked before anything is deleted and printed first; --dry-run stops \
                      there. One expire per cluster at a time (a lease; another is refused).",
        after_help = "Example:\n  pgsafe expire --repo /var/lib/pgsafe --cluster main \
                      --keep-full 7 --keep-within 14d --dry-run"
    )]
    Expire(expire::ExpireArgs),
    /// Store one WAL file into the repository's archive (archive_command): checked against the
    /// registered cluster, compressed, write-once and durable.
    #[command(long_about = archive::PUSH_LONG_ABOUT, after_help = archive::PUSH_AFTER_HELP)]
    ArchivePush(archive::PushArgs),
    /// Restore one WAL file from the repository's archive (restore_command): exit 1 when the
    /// archive does not have it, 200 when it cannot be restored (recovery stops).
    #[command(long_about = archive::GET_LONG_ABOUT, after_help = archive::GET_AFTER_HELP)]
    ArchiveGet(archive::GetArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(after_help = "Examples:\n  \
                      pgsafe completions bash > /etc/bash_completion.d/pgsafe\n  \
                      pgsafe completions zsh > \"${fpath[1]}/_pgsafe\"\n  \
                      pgsafe completions fish > ~/.config/fish/completions/pgsafe.fish")]
    Completions(generate::CompletionsArgs),
    /// Print the man page pgsafe(1) on stdout, or write it and one page per command into --dir.
    #[command(after_help = "Examples:\n  pgsafe man | man -l -\n  \
                      pgsafe man --dir /usr/local/share/man/man1")]
    Man(generate::ManArgs),
}

/// Whether the command line runs archive-get (global options such as `--config FILE` or
/// `--s3-endpoint URL` may come first, as in a hand-written restore_command).
fn runs_archive_get() -> bool {
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        if !a.starts_with("--") {
            return a == "archive-get";
        }
        // A global option with its value in the next word.
        if !a.contains('=') && GLOBAL_VALUE_OPTIONS.contains(&a.as_str()) {
            args.next();
        }
    }
    false
}

/// The global options that take a value.
const GLOBAL_VALUE_OPTIONS: [&str; 9] = [
    "--s3-retry-budget",
    "--config",
    "--s3-endpoint",
    "--s3-region",
    "--s3-credentials-file",
    "--s3-profile",
    "--s3-access-key-id-env",
    "--s3-secret-access-key-env",
    "--s3-session-token-env",
];

fn main() -> ExitCode {
    if runs_archive_get() {
        // A panic exits 101, which PostgreSQL takes for "file not in the archive" and may end
        // recovery early, short of its target (src/backend/access/transam/xlogarchive.c
        // RestoreArchivedFile: only a signal or an exit status above 125 stops recovery).
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::exit(i32::from(exit::STOP_RECOVERY));
        }));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version go to stdout: through `output` unless a terminal shows them (in
        // colour), so a closed pipe or a full disk is handled like any other result.
        Err(e) if !e.use_stderr() && !std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            output::write_bytes(e.render().to_string().as_bytes());
            return ExitCode::from(output::finish(exit::OK, exit::ERROR));
        }
        // A bad argument with --json among the arguments: clap's message on stderr as usual,
        // and the error object on stdout.
        Err(e) if e.use_stderr() && failure::json_requested(std::env::args_os()) => {
            let _ = e.print();
            // The message is clap's text up to its usage line and tips.
            let text = e.to_string();
            let message: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
            let message = message.join("\n");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            failure::print_json(pgsafe::error::ErrorKind::Usage, message, exit::ERROR);
            return ExitCode::from(output::finish(exit::ERROR, exit::ERROR));
        }
        // archive-get's arguments are restore_command's: a failure must stop recovery, not
        // read as a missing file (see exit::STOP_RECOVERY).
        Err(e) if e.use_stderr() && runs_archive_get() => {
            let _ = e.print();
            return ExitCode::from(exit::STOP_RECOVERY);
        }
        Err(e) => e.exit(),
    };
    config::set_flag(cli.config);
    config::set_s3_flags(cli.s3);
    let json = cli.command.json();
    let result = match cli.command {
        Command::Inspect { pgdata, json } => inspect::run(&pgdata, json),
        Command::Doctor(a) => doctor::run(a),
        Command::Backup(a) => backup::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Start(a) => snapshot::start(a),
        Command::Stop(a) => snapshot::stop(a),
        Command::Status(a) => snapshot::status(a),
        Command::Abort(a) => snapshot::abort(a),
        Command::Snapshot(a) => snapshot::snapshot(a),
        Command::Holder { run_dir } => snapshot::holder(run_dir),
        Command::Init(a) => repo::init(a),
        Command::Key(a) => key::run(a),
        Command::Pin(a) => repo::pin(a, true),
        Command::Unpin(a) => repo::pin(a, false),
        Command::Metrics(a) => metrics::run(a),
        Command::Info(a) => info::run(a),
        Command::Check(a) => check::run(a),
        Command::Expire(a) => expire::run(a),
        Command::ArchivePush(a) => archive::push(a),
        Command::ArchiveGet(a) => archive::get(a),
        Command::Completions(a) => generate::completions(Cli::command(), a),
        Command::Man(a) => generate::man(Cli::command(), a),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => failure::report(&e, json),
    };
    let code = output::finish(code, exit::ERROR);
    // The final progress line or event, after the error message: the last thing on stderr.
    progress::end(code);
    ExitCode::from(code)
}

impl Command {
    /// Whether the command was asked for JSON (then a failure prints an error object too).
    fn json(&self) -> bool {
        match self {
            Command::Inspect { json, .. } => *json,
            Command::Doctor(a) => a.json,
            Command::Backup(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Restore(a) => a.json,
            Command::Start(a) => a.json,
            Command::Stop(a) => a.json,
            Command::Status(a) | Command::Abort(a) => a.json,
            Command::Snapshot(a) => a.json,
            Command::Init(a) => a.json,
            Command::Key(a) => a.json(),
            Command::Pin(a) | Command::Unpin(a) => a.json,
            Command::Metrics(a) => a.json,
            Command::Info(a) => a.json,
            Command::Check(a) => a.json,
            Command::Expire(a) => a.json,
            Command::Holder { .. }
            | Command::Completions(_)
            | Command::Man(_)
            | Command::ArchivePush(_)
            | Command::ArchiveGet(_) => false,
        }
    }
}

/// The error and its causes joined with ": ", skipping a cause whose text the message already
/// contains (library errors often include their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
        // It shows the server's message, detail and hint; the postgres errors under it say the
        // same in another form.
        if cause.is::<pgsafe::session::ServerError>() {
            break;
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag and argument of every command says what it does in `--help` (and so in the
    /// man page): lists each one without help text.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.is_hide_set() {
                    continue;
                }
                let text = arg
                    .get_help()
                    .or(arg.get_long_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if text.trim().is_empty() {
                    let name = arg
                        .get_long()
                        .map(|l| format!("--{l}"))
                        .unwrap_or_else(|| arg.get_id().to_string());
                    missing.push(format!("{path} {name}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command itself)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "pgsafe", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without help text:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The generated man pages name every visible command and flag of it.
    #[test]
    fn man_pages_are_generated() {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut out)
            .unwrap();
        let page = String::from_utf8(out).unwrap();
        for sub in [
            "backup", "verify", "restore", "doctor", "start", "stop", "snapshot",
        ] {
            assert!(page.contains(sub), "{sub} missing from pgsafe.1");
        }
    }
}
