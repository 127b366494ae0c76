//! `pgsafe archive-push` (PostgreSQL's `archive_command`) and `pgsafe archive-get`
//! (`restore_command`). The work is the library's (`pgsafe::archive`); this parses, opens the
//! repository and maps the outcome to the exit codes PostgreSQL acts on.
//!
//! Both run once per WAL file, so they start fast: no connection, no listing, the config file
//! read only when a flag is missing.

mod ahead;

use std::path::{Path, PathBuf};

use clap::Args;
use pgsafe::archive::pusher::{PusherEnd, PusherOptions};
use pgsafe::archive::{self, ArchiveFile, PushOptions, failure, spool};
use pgsafe::codec::Compression;
use pgsafe::repo::{Registration, Repository};
use pgsafe::storage::Ident;

use crate::exit;
use crate::repo::RepoArgs;
use ahead::PushAheadArgs;

pub const PUSH_LONG_ABOUT: &str = "Stores one WAL file into the repository's archive of the \
    cluster, for archive_command. The file is checked first: a segment must be exactly the \
    registered segment size and its first page must carry the registered cluster's system \
    identifier, the page magic of its major version, and the address and timeline its name \
    says; history and backup history files must parse. Segments are compressed (zstd level 1 \
    by default) and stored write-once and durably: exit 0 only once the file is on stable \
    storage. A file already archived with the same content succeeds again; with different \
    content the push fails loudly (two servers archiving as one cluster). PATH is %p: relative \
    to the data directory, where PostgreSQL runs the command.";
pub const PUSH_AFTER_HELP: &str = "Example (postgresql.conf):\n  archive_mode = on\n  \
    archive_command = 'pgsafe archive-push --repo /var/lib/pgsafe --cluster main %p'";

pub const GET_LONG_ABOUT: &str = "Restores one WAL file from the repository's archive of the \
    cluster, for restore_command. FILE is %f, DEST is %p. Exit 0: restored, checked (the \
    registered cluster's segment, complete, decompressing with its checksum) and renamed into \
    place. Exit 1: the archive does not have the file (PostgreSQL asks for files that may not \
    exist; this is fast and quiet). Exit 200: any other failure — a stored file that fails the \
    checks, or an archive that cannot be read: PostgreSQL stops recovery instead of taking the \
    file for missing and ending recovery early.";
pub const GET_AFTER_HELP: &str = "Example (recovery settings):\n  \
    restore_command = 'pgsafe archive-get --repo /var/lib/pgsafe --cluster main %f %p'";

#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Compression of WAL segments: zstd (level 1), zstd:LEVEL, lz4 or none (history and
    /// backup history files are stored as they are). Default: `archive_compress` in the config
    /// file, else zstd.
    #[arg(long, value_name = "METHOD", value_parser = parse_compression)]
    pub compress: Option<Compression>,
    #[command(flatten)]
    pub ahead: PushAheadArgs,
    /// The WAL file to archive (%p in archive_command).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Segments fetched ahead into pg_wal/pgsafe_archive/prefetch, in parallel, and served
    /// from there after the same checks (0: none). Default: 8.
    #[arg(long, value_name = "N")]
    pub prefetch: Option<usize>,
    /// The WAL file PostgreSQL asks for (%f in restore_command).
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Where to write it (%p in restore_command).
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

/// The repository, the cluster and its registration.
fn open(args: &RepoArgs) -> anyhow::Result<(Repository, Ident, Registration)> {
    let (repo, cluster) = crate::repo::open(args)?;
    let reg = repo.registration(&cluster)?;
    Ok((repo, cluster, reg))
}

/// The archive file a path names (its last component).
fn file_of(path: &Path) -> anyhow::Result<ArchiveFile> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ArchiveFile::parse(&name)?)
}

pub fn push(args: PushArgs) -> anyhow::Result<u8> {
    if args.ahead.background {
        return background(&args);
    }
    let file = file_of(&args.path)?;
    let pushed = push_file(&args, &file);
    if let Err(e) = &pushed {
        record_failure(&args, &file, e);
    }
    pushed
}

fn push_file(args: &PushArgs, file: &ArchiveFile) -> anyhow::Result<u8> {
    let file = *file;
    let la = args.ahead.look_ahead(&args.repo)?;
    if ahead::drop_over_limit(&args.repo, &la, &file, &args.path)? {
        return Ok(exit::OK);
    }
    let (repo, cluster, reg) = open(&args.repo)?;
    let configured = match args.compress {
        Some(c) => Some(c),
        None => {
            crate::config::resolved(Some(cluster.as_str()))?
                .settings
                .archive_compress
        }
    };
    let opts = PushOptions {
        compression: configured.unwrap_or(PushOptions::default().compression),
    };
    let report = if args.ahead.background_pusher {
        let po = PusherOptions {
            parallel: la.parallel,
            queue_max: la.queue_max,
            ..PusherOptions::default()
        };
        let repo_path = spool::repo_identity(&repo.path());
        let mut start = |wal_dir: &Path| {
            start_pusher(&repo_path, &cluster, opts.compression, la.parallel, wal_dir)
        };
        archive::pusher::push_async(
            repo.backend(),
            &repo.path(),
            &cluster,
            &reg,
            &file,
            &args.path,
            &opts,
            &la,
            &po,
            &mut start,
        )?
    } else {
        archive::lookahead::push(
            repo.backend(),
            &repo.path(),
            &cluster,
            &reg,
            &file,
            &args.path,
            &opts,
            &la,
        )?
    };
    ahead::push_report(&file, &report);
    // Failures recorded only locally (the repository was unreachable) go into it now.
    if let Some(spool) = spool::Spool::beside(&args.path) {
        let repo_id = spool::repo_identity(&repo.path());
        failure::flush(&spool, repo.backend(), &repo_id, &cluster);
    }
    Ok(exit::OK)
}

/// Starts the background pusher of `wal_dir` as a process of its own (its own process group,
/// so signals to the archiver's group do not stop it mid-push; not waited for). One that finds
/// another running exits at once.
fn start_pusher(
    repo: &str,
    cluster: &Ident,
    compression: Compression,
    parallel: usize,
    wal_dir: &Path,
) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let wal = std::fs::canonicalize(wal_dir).unwrap_or_else(|_| wal_dir.to_owned());
    let spawned = std::process::Command::new(exe)
        .arg("archive-push")
        .args(["--repo", repo, "--cluster", cluster.as_str()])
        .args(["--compress", &compression.to_string()])
        .args(["--parallel", &parallel.to_string()])
        .arg("--background")
        .arg(&wal)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    // Not waited for: it outlives this call (and is then its init's child).
    drop(spawned);
}

/// `archive-push --background PG_WAL`: the background pusher (library `archive::pusher`).
fn background(args: &PushArgs) -> anyhow::Result<u8> {
    let la = args.ahead.look_ahead(&args.repo)?;
    let (repo, cluster, reg) = open(&args.repo)?;
    let configured = match args.compress {
        Some(c) => Some(c),
        None => {
            crate::config::resolved(Some(cluster.as_str()))?
                .settings
                .archive_compress
        }
    };
    let opts = PushOptions {
        compression: configured.unwrap_or(PushOptions::default().compression),
    };
    let po = PusherOptions {
        parallel: la.parallel,
        queue_max: la.queue_max,
        ..PusherOptions::default()
    };
    match archive::pusher::run(
        repo.backend(),
        &repo.path(),
        &cluster,
        &reg,
        &args.path,
        &opts,
        &po,
    )? {
        PusherEnd::AlreadyRunning => eprintln!(
            "pgsafe: a background pusher already runs for {}",
            args.path.display()
        ),
        PusherEnd::Idle { stored, failed } => eprintln!(
            "pgsafe: background pusher for {}: {stored} files stored, {failed} failed; idle, \
             exiting",
            args.path.display()
        ),
    }
    Ok(exit::OK)
}

/// Leaves the durable trace of a failed push (library `archive::failure`): in the repository
/// when it can be opened, and in the spool beside `pg_wal`. Best effort: the push's own error
/// is what PostgreSQL gets either way.
fn record_failure(args: &PushArgs, file: &ArchiveFile, e: &anyhow::Error) {
    let Ok(cluster) = crate::repo::cluster_name(args.repo.cluster.as_deref()) else {
        return;
    };
    let Ok(cfg) = crate::config::resolved(Some(cluster.as_str())) else {
        return;
    };
    let Ok(path) = crate::repo::repo_path(args.repo.repo.as_deref(), &cfg) else {
        return;
    };
    let repo = crate::repo::open_at(&path).ok();
    let spool = spool::Spool::beside(&args.path);
    let kind = crate::failure::kind_of(e).as_str();
    let message = crate::error_chain(e);
    let at = failure::record(
        spool.as_ref(),
        repo.as_ref()
            .map(|r| r.backend() as &dyn pgsafe::storage::Backend),
        &spool::repo_identity(&path),
        &cluster,
        file,
        kind,
        &message,
    );
    // The backlog keeps growing while pushes fail: the status check and metrics read says so.
    if let Some(s) = &spool
        && let Ok(backlog) = spool::scan_backlog(s.wal_dir())
    {
        let la = args.ahead.look_ahead(&args.repo).unwrap_or_default();
        s.update_status(&backlog, la.batch(), la.queue_max);
    }
    let where_ = match at {
        failure::RecordedIn::Repository => "in the repository",
        failure::RecordedIn::Spool => {
            "in the server's pg_wal/pgsafe_archive/failed (the \
                                        repository cannot take it yet)"
        }
        failure::RecordedIn::Nowhere => return,
    };
    eprintln!("pgsafe: the failed push of {file} is recorded {where_}; pgsafe info shows it");
}

pub fn get(args: GetArgs) -> anyhow::Result<u8> {
    match get_inner(&args) {
        Ok(true) => Ok(exit::OK),
        Ok(false) => {
            eprintln!("pgsafe: {} is not in the archive", args.file.escape_debug());
            Ok(exit::PROBLEMS)
        }
        Err(e) => {
            crate::failure::report(&e, false);
            Ok(exit::STOP_RECOVERY)
        }
    }
}

fn get_inner(args: &GetArgs) -> anyhow::Result<bool> {
    let file = ArchiveFile::parse(&args.file)?;
    let (repo, cluster, reg) = open(&args.repo)?;
    ahead::get(&repo, &cluster, &reg, &file, &args.dest, args.prefetch)
}
