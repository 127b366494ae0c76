//! `pgsafe archive-push` (PostgreSQL's `archive_command`) and `pgsafe archive-get`
//! (`restore_command`). The work is the library's (`pgsafe::archive`); this parses, opens the
//! repository and maps the outcome to the exit codes PostgreSQL acts on.
//!
//! Both run once per WAL file, so they start fast: no connection, no listing, the config file
//! read only when a flag is missing.

mod ahead;

use std::path::{Path, PathBuf};

use clap::Args;
use pgsafe::archive::{self, ArchiveFile, PushOptions};
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
    let file = file_of(&args.path)?;
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
    let report = archive::lookahead::push(
        repo.backend(),
        repo.root(),
        &cluster,
        &reg,
        &file,
        &args.path,
        &opts,
        &la,
    )?;
    ahead::push_report(&file, &report);
    Ok(exit::OK)
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
