//! The repository on the command line: `init`, `pin`/`unpin`, and the `--repo`/`--cluster`/
//! `--backup` options that `backup`, `verify` and `restore` share. The work is the library's
//! (`pgsafe::repo`).

use std::path::{Path, PathBuf};

use clap::Args;
use pgsafe::config::{RepoLocation, Resolved};
use pgsafe::repo::register::init_cluster;
use pgsafe::repo::{BackupEntry, LeaseTiming, Repository};
use pgsafe::storage::{Ident, Location};
use serde::Serialize;

use crate::conn::ConnArgs;
use crate::exit;
use crate::render::field;

/// `--repo` and `--cluster` (both may come from the config file).
#[derive(Args, Debug, Clone, Default)]
pub struct RepoArgs {
    /// The backup repository: a folder, or s3://BUCKET/PREFIX in object storage (see the
    /// --s3-* flags); created by `pgsafe init`. Default: `repo` in the config file.
    #[arg(long, value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// The cluster's name in the repository (and its table in the config file).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

/// Which backup of a repository `verify` and `restore` work on.
#[derive(Args, Debug, Clone, Default)]
pub struct RepoBackupArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The backup in the repository: its ID, or `latest` (default: the newest complete backup
    /// of the cluster's lineage whose last verification did not fail).
    #[arg(long = "backup", value_name = "ID", requires = "cluster")]
    pub backup_id: Option<String>,
}

/// The lease timing (see `pgsafe::repo::lease`; tests shorten it through the environment).
pub fn timing() -> anyhow::Result<LeaseTiming> {
    LeaseTiming::from_env().map_err(crate::failure::usage)
}

/// The cluster name, checked.
pub fn cluster_name(flag: Option<&str>) -> anyhow::Result<Ident> {
    let name = flag.ok_or_else(|| {
        crate::failure::usage("name the cluster in the repository with --cluster NAME")
    })?;
    Ident::new(name).map_err(|e| crate::failure::usage(format!("--cluster: {e}")))
}

/// The repository: `--repo`, else `repo` in the config file. A folder, or an object store
/// location (`s3://…`) kept as written.
pub fn repo_path(flag: Option<&Path>, cfg: &Resolved) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    match configured(cfg)? {
        Some(p) => Ok(p),
        None => Err(crate::failure::usage(
            "no repository: give --repo REPO (or `repo` in the config file)",
        )),
    }
}

/// The config file's `repo`, if it names one (an object store location as written).
pub fn configured(cfg: &Resolved) -> anyhow::Result<Option<PathBuf>> {
    match (&cfg.repo, &cfg.path) {
        (Some(RepoLocation::Remote(url)), _) => Ok(Some(PathBuf::from(url))),
        (Some(loc), Some(origin)) => Ok(Some(loc.local(origin)?.to_owned())),
        _ => Ok(cfg.local_repo()?.map(Path::to_owned)),
    }
}

/// Where `path` (from [`repo_path`]) is: a folder, or an object store reached as the
/// `--s3-*` flags, the config file's `[s3]` table and the `AWS_*` variables say (warnings about
/// the object store's settings go to stderr once).
pub fn location(path: &Path) -> anyhow::Result<Location> {
    let loc = match path.to_str() {
        Some(s) if pgsafe::storage::location::is_url(s) => {
            let settings = crate::config::s3_settings()?;
            Location::parse_with(s, &settings, |k| std::env::var(k).ok())
        }
        _ => Location::parse_os(path.as_os_str()),
    }
    .map_err(|e| crate::failure::usage(e.to_string()))?;
    if let Location::S3(c) = &loc {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            for w in c.warnings() {
                eprintln!("pgsafe: warning: {w}");
            }
        });
    }
    Ok(loc)
}

/// Opens the repository at `path` (from [`repo_path`]).
pub fn open_at(path: &Path) -> anyhow::Result<Repository> {
    Ok(Repository::open(location(path)?)?)
}

/// Opens the repository and names the cluster, from flags and the config file.
pub fn open(args: &RepoArgs) -> anyhow::Result<(Repository, Ident)> {
    let cluster = cluster_name(args.cluster.as_deref())?;
    let cfg = crate::config::resolved(Some(cluster.as_str()))?;
    let path = repo_path(args.repo.as_deref(), &cfg)?;
    Ok((open_at(&path)?, cluster))
}

/// A backup of a repository, resolved for `verify`/`restore`.
pub struct Chosen {
    pub repo: Repository,
    pub cluster: Ident,
    pub entry: BackupEntry,
    /// How messages name the backup (its folder, or its location in object storage).
    pub folder: PathBuf,
    /// Its objects.
    pub stored: pgsafe::layout::StoredBackup,
}

/// The backup `verify`/`restore` name with `--repo`/`--cluster`/`--backup`.
pub fn choose(args: &RepoBackupArgs) -> anyhow::Result<Chosen> {
    let (repo, cluster) = open(&args.repo)?;
    let (entry, stored) = repo.resolve(&cluster, args.backup_id.as_deref(), timing()?)?;
    Ok(Chosen {
        repo,
        cluster,
        entry,
        folder: stored.shown().to_owned(),
        stored,
    })
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The data directory of the server you connect to (checked to be that server's). Default:
    /// the cluster's `pgdata` in the config file, else the PGDATA variable.
    #[arg(short = 'D', long = "pgdata", value_name = "PGDATA")]
    pub pgdata: Option<PathBuf>,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub encrypt: crate::key::EncryptArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct InitDoc<'a> {
    repository: &'a Path,
    cluster: &'a Ident,
    repository_created: bool,
    registered: bool,
    system_identifier: pgsafe::SystemId,
    server_version: pgsafe::PgVersion,
    wal_segment_size: u64,
    pgdata: &'a str,
    registered_at: &'a str,
}

pub fn init(args: InitArgs) -> anyhow::Result<u8> {
    let cluster = cluster_name(args.repo.cluster.as_deref())?;
    let cfg = crate::config::resolved(Some(cluster.as_str()))?;
    let path = repo_path(args.repo.repo.as_deref(), &cfg)?;
    let pgdata = crate::config::pgdata(args.pgdata, &cfg)?;
    let conn = crate::config::resolve_conn(&args.conn, &cfg)?;
    let encrypted = crate::key::init_encrypted(&path, &args.encrypt)?;
    let mut out = init_cluster(&location(&path)?, &cluster, &pgdata, &conn)?;
    out.repository_created |= encrypted;
    let reg = &out.registration;
    if args.json {
        crate::render::json(&InitDoc {
            repository: &path,
            cluster: &cluster,
            repository_created: out.repository_created,
            registered: out.registered,
            system_identifier: reg.system_identifier,
            server_version: reg.server_version,
            wal_segment_size: reg.wal_segment_size.bytes(),
            pgdata: &reg.pgdata,
            registered_at: &reg.registered_at,
        })?;
    } else {
        if out.repository_created {
            println!("created repository {}", path.display());
        }
        if out.registered {
            println!("registered cluster {cluster} in {}", path.display());
        } else {
            println!(
                "cluster {cluster} is already registered in {} (the same cluster)",
                path.display()
            );
        }
        field("system identifier", reg.system_identifier);
        field("server", format!("PostgreSQL {}", reg.server_version));
        field(
            "WAL segment size",
            format!("{} MiB", reg.wal_segment_size.bytes() >> 20),
        );
        field("data directory", &reg.pgdata);
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct PinArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The backup's ID.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct PinDoc<'a> {
    cluster: &'a Ident,
    backup: &'a Ident,
    pinned: bool,
    event: &'a str,
}

/// `pin` (`pin` true) or `unpin`: records the event; the catalog's latest pin/unpin wins.
pub fn pin(args: PinArgs, pin: bool) -> anyhow::Result<u8> {
    let (repo, cluster) = open(&args.repo)?;
    let (entry, event) = repo.set_pinned(&cluster, &args.id, pin, timing()?)?;
    if args.json {
        crate::render::json(&PinDoc {
            cluster: &cluster,
            backup: &entry.id,
            pinned: pin,
            event: &event,
        })?;
    } else {
        println!(
            "backup {} of cluster {cluster} {}",
            entry.id,
            if pin {
                "pinned: expire keeps it"
            } else {
                "unpinned: retention applies to it again"
            }
        );
    }
    Ok(exit::OK)
}
