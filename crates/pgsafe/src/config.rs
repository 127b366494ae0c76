//! The config file (TOML): the repository, named clusters (data directory, connection) and
//! default settings, so that `--cluster NAME` alone is enough on the command line.
//!
//! Pure: [`parse`] turns text into a validated [`Config`], [`Config::to_toml`] writes it back,
//! [`Resolved::for_cluster`] merges a cluster's table over the global defaults. The only IO is
//! [`load`] (read one file and check who can change it) and [`find`] (the lookup order).
//!
//! ```toml
//! repo = "/var/lib/pgsafe"
//! jobs = 4
//! keep_full = 7
//!
//! [cluster.main]
//! pgdata = "/var/lib/postgresql/16/main"
//! host = "/var/run/postgresql"
//! user = "backup"
//! compression = "zstd:3"
//!
//! # A repository in object storage instead: repo = "s3://bucket/prefix", and how to reach it.
//! [s3]
//! endpoint = "https://minio.example.net:9000"
//! region = "eu-west-1"
//! credentials_file = "/etc/pgsafe/s3-credentials"
//! ```
//!
//! Rules:
//! - An unknown key is an error that names the key, the file and the line (a misspelt
//!   `keep_ful` silently ignored would keep fewer backups than the DBA wrote).
//! - No S3 key either: `[s3]` names a credentials file or the variables holding the key
//!   (`storage::s3::credentials`), never the key.
//! - No password: `password` (or a password inside `conninfo`) is refused. The file is read by
//!   every run and often world-readable; libpq's password file is the place for it.
//! - Paths (`repo`, `pgdata`) are absolute: a relative path would depend on the directory the
//!   command runs from (cron, systemd and a shell differ).
//! - Precedence, per setting: command-line flag, then the cluster's table, then the top-level
//!   default, then the built-in default. The cluster's connection settings form one connection
//!   string (`conninfo` first, then the separate keys over it), which beats the `PG*`
//!   environment variables as any connection string does (libpq's rules, see `conninfo`).

mod raw;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::conninfo::{ConnOptions, quote_value};
use crate::error::{ErrorKind, HasKind};

/// Where the config file is looked for when neither a path nor [`ENV_VAR`] names one.
pub const DEFAULT_PATH: &str = "/etc/pgsafe/pgsafe.toml";
/// The environment variable naming the config file (empty: no config file at all).
pub const ENV_VAR: &str = "PGSAFE_CONFIG";

/// Why a config file cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The text is not valid TOML or not a valid config: the key, the line and what is wrong.
    #[error("invalid config file {}{}: {message}", path.display(), location(*line, *column))]
    Invalid {
        path: PathBuf,
        /// 1-based line and column, when the parser knows them.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Others could change the file: it names where backups go and what is restored.
    #[error(
        "refusing the config file {}: {why}; whoever can change it decides where backups are \
         written and which server is backed up. {advice}",
        path.display()
    )]
    Unsafe {
        path: PathBuf,
        why: String,
        advice: String,
    },
    #[error(
        "the repository {url} (config file {}) is not a local path: only repositories in a \
         local (or mounted) directory are supported yet; give an absolute directory",
        path.display()
    )]
    RemoteRepo { url: String, path: PathBuf },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(", line {l}, column {c}"),
        (Some(l), None) => format!(", line {l}"),
        _ => String::new(),
    }
}

impl HasKind for ConfigError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ConfigError::Read { source, .. } => ErrorKind::of_io(source),
            ConfigError::Invalid { .. } | ConfigError::RemoteRepo { .. } => ErrorKind::Usage,
            ConfigError::Unsafe { .. } => ErrorKind::Refused,
        }
    }
}

/// Where the repository is: a local directory, or a URL (`s3://…`) kept as written for the
/// object-store backends to come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    Local(PathBuf),
    Remote(String),
}

impl RepoLocation {
    /// `scheme://…` is remote; anything else must be an absolute path.
    pub fn parse(s: &str) -> Result<RepoLocation, String> {
        if s.contains("://") {
            return Ok(RepoLocation::Remote(s.to_owned()));
        }
        absolute_path(s).map(RepoLocation::Local)
    }

    /// The local directory, or why this location cannot be used yet (`origin`: the config file
    /// that named it).
    pub fn local(&self, origin: &Path) -> Result<&Path, ConfigError> {
        match self {
            RepoLocation::Local(p) => Ok(p),
            RepoLocation::Remote(url) => Err(ConfigError::RemoteRepo {
                url: url.clone(),
                path: origin.to_owned(),
            }),
        }
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Local(p) => write!(f, "{}", p.display()),
            RepoLocation::Remote(u) => f.write_str(u),
        }
    }
}

fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the path is empty".into());
    }
    if s.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(format!(
            "{s:?} is a relative path: give an absolute one (a relative path would depend on \
             the directory the command runs in)"
        ));
    }
    Ok(p)
}

/// The settings that have a global default and a per-cluster override. `None`: not set here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Parallel workers of backup, verify and restore.
    pub jobs: Option<usize>,
    pub compression: Option<Compression>,
    pub checksum: Option<ChecksumAlgorithm>,
    /// Bytes per second.
    pub max_rate: Option<u64>,
    /// Retention: how many complete full backups to keep.
    pub keep_full: Option<u32>,
    /// Retention: keep every backup younger than this.
    pub keep_within: Option<Duration>,
    /// Compression of WAL segments `archive-push` stores.
    pub archive_compress: Option<Compression>,
    /// archive-push: threads pushing `.ready` files ahead (1: no look-ahead).
    pub archive_push_parallel: Option<usize>,
    /// archive-push: the queue limit in bytes (WAL waiting past it is dropped, the gap
    /// recorded).
    pub archive_push_queue_max: Option<u64>,
    /// archive-get: segments fetched ahead (0: none).
    pub archive_get_prefetch: Option<usize>,
}

impl Settings {
    /// Each setting from `self`, else from `fallback`.
    pub fn or(&self, fallback: &Settings) -> Settings {
        Settings {
            jobs: self.jobs.or(fallback.jobs),
            compression: self.compression.or(fallback.compression),
            checksum: self.checksum.or(fallback.checksum),
            max_rate: self.max_rate.or(fallback.max_rate),
            keep_full: self.keep_full.or(fallback.keep_full),
            keep_within: self.keep_within.or(fallback.keep_within),
            archive_compress: self.archive_compress.or(fallback.archive_compress),
            archive_push_parallel: self
                .archive_push_parallel
                .or(fallback.archive_push_parallel),
            archive_push_queue_max: self
                .archive_push_queue_max
                .or(fallback.archive_push_queue_max),
            archive_get_prefetch: self.archive_get_prefetch.or(fallback.archive_get_prefetch),
        }
    }
}

/// One `[cluster.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    pub pgdata: Option<PathBuf>,
    /// The connection settings given (libpq keywords; never a password).
    pub connection: ConnOptions,
    pub settings: Settings,
}

/// A parsed and validated config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub repo: Option<RepoLocation>,
    /// The `[s3]` table: how to reach a repository in object storage (no key: where it is).
    pub s3: crate::storage::s3::S3Settings,
    /// The top-level defaults.
    pub defaults: Settings,
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Things worth saying that do not stop the file from being used (e.g. group-writable).
    pub warnings: Vec<String>,
}

/// Parses and validates the text of a config file; `path` only names it in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    raw::parse(text, path)
}

impl Config {
    /// The file as TOML text that [`parse`] reads back into an equal `Config`.
    pub fn to_toml(&self) -> String {
        raw::to_toml(self)
    }

    /// The cluster names, for messages.
    pub fn cluster_names(&self) -> String {
        if self.clusters.is_empty() {
            "none".into()
        } else {
            self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// The settings that apply to one command: the cluster's table over the file's defaults. Flags
/// are merged over this by the caller (`flag.or(resolved.x)`), then built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The file the settings came from, if any.
    pub path: Option<PathBuf>,
    /// The cluster asked for.
    pub cluster: Option<String>,
    /// Whether the file has a table for that cluster.
    pub cluster_found: bool,
    pub repo: Option<RepoLocation>,
    /// The file's `[s3]` table (for every cluster: the repository is the file's).
    pub s3: crate::storage::s3::S3Settings,
    pub pgdata: Option<PathBuf>,
    pub connection: ConnOptions,
    pub settings: Settings,
}

impl Resolved {
    /// The settings for `cluster` (`None`: only the top-level ones) from `config` (`None`: no
    /// config file, nothing set).
    pub fn for_cluster(config: Option<&Config>, cluster: Option<&str>) -> Resolved {
        let Some(config) = config else {
            return Resolved {
                cluster: cluster.map(str::to_owned),
                ..Resolved::default()
            };
        };
        let table = cluster.and_then(|c| config.clusters.get(c));
        Resolved {
            path: Some(config.path.clone()),
            cluster: cluster.map(str::to_owned),
            cluster_found: table.is_some(),
            repo: config.repo.clone(),
            s3: config.s3.clone(),
            pgdata: table.and_then(|t| t.pgdata.clone()),
            connection: table.map(|t| t.connection.clone()).unwrap_or_default(),
            settings: table
                .map(|t| t.settings.or(&config.defaults))
                .unwrap_or_else(|| config.defaults.clone()),
        }
    }

    /// The local repository directory from the file, if it names one; an error if it names a
    /// repository that cannot be used yet.
    pub fn local_repo(&self) -> Result<Option<&Path>, ConfigError> {
        match (&self.repo, &self.path) {
            (Some(r), Some(origin)) => r.local(origin).map(Some),
            (Some(RepoLocation::Local(p)), None) => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    /// Why a setting the command needs is missing, in the file's terms: which file was read and
    /// whether it has the cluster. `what` names the setting ("the data directory").
    pub fn missing(&self, what: &str, key: &str, config: Option<&Config>) -> String {
        match (config, &self.cluster) {
            (None, _) => format!("{what} is not given (no config file is in use)"),
            (Some(c), Some(name)) if !self.cluster_found => format!(
                "{what} is not given, and the config file {} has no [cluster.{name}] table (its \
                 clusters: {})",
                c.path.display(),
                c.cluster_names()
            ),
            (Some(c), Some(name)) => format!(
                "{what} is not given, and [cluster.{name}] in the config file {} has no `{key}`",
                c.path.display()
            ),
            (Some(c), None) => format!(
                "{what} is not given (the config file {} applies to a cluster only when one is \
                 named)",
                c.path.display()
            ),
        }
    }

    /// The connection string the file's settings make, with `dbname_flag` (the command line's
    /// database name or connection string) over it: a connection string on the command line
    /// replaces the file's connection settings (it names a whole connection), a plain database
    /// name replaces only `dbname`. `None` when neither gives anything.
    pub fn connection_string(&self, dbname_flag: Option<&str>) -> Option<String> {
        let flag = dbname_flag.filter(|d| !d.is_empty());
        if let Some(d) = flag
            && (crate::conninfo::is_connection_string(d) || self.connection.is_empty())
        {
            return Some(d.to_owned());
        }
        if self.connection.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = self
            .connection
            .iter()
            .filter(|(k, _)| flag.is_none() || *k != "dbname")
            .map(|(k, v)| format!("{k}={}", quote_value(v)))
            .collect();
        if let Some(d) = flag {
            parts.push(format!("dbname={}", quote_value(d)));
        }
        Some(parts.join(" "))
    }
}

/// A number with an optional unit: `s`, `m`/`min`, `h`, `d`, `w` (`14d`, `36h`, `90m`; a bare
/// number is seconds). Above 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 14d, 36h, 90m"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use s, m, h, d or w (14d, 36h)"
            ));
        }
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("{s:?}: the duration must be above 0")),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("{s:?} is too long")),
    }
}

/// The shortest exact form [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs > 0 && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Bytes per second: a number with an optional suffix `k`, `M`, `G` (powers of 1024), above 0.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 100M"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: the rate must be above 0")),
        Some(v) => Ok(v),
    }
}

/// Reads and parses one config file, after checking that only its owner (root or the user
/// running pgsafe) can change it.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut warnings = check_owner(path, &meta)?;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let mut config = parse(&text, path)?;
    config.warnings.append(&mut warnings);
    Ok(config)
}

/// Refuses a file others can change (written by others, owned by someone else, or in a
/// directory others can write without the sticky bit, where they could replace it); warns for a
/// group-writable one. As ssh does with its config: redirecting backups is worth an error.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<Vec<String>, ConfigError> {
    let euid = nix::unistd::geteuid().as_raw();
    let unsafe_ = |why: String, advice: String| ConfigError::Unsafe {
        path: path.to_owned(),
        why,
        advice,
    };
    let mode = meta.permissions().mode();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(unsafe_(
            format!("it belongs to uid {}, not to root or to you", meta.uid()),
            format!(
                "Make root (or uid {euid}) its owner: chown root {}",
                path.display()
            ),
        ));
    }
    if mode & 0o002 != 0 {
        return Err(unsafe_(
            format!("every user can write it (mode {:o})", mode & 0o7777),
            format!("Remove that permission: chmod o-w {}", path.display()),
        ));
    }
    let mut warnings = Vec::new();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dmeta) = std::fs::metadata(dir) {
        let dmode = dmeta.permissions().mode();
        if dmode & 0o002 != 0 && dmode & 0o1000 == 0 {
            return Err(unsafe_(
                format!(
                    "every user can replace it: its directory {} is writable by all without \
                     the sticky bit",
                    dir.display()
                ),
                "Keep it in a directory only root or you can write (e.g. /etc/pgsafe)".into(),
            ));
        }
    }
    if mode & 0o020 != 0 {
        warnings.push(format!(
            "the config file {} is writable by its group (gid {}): members of that group decide \
             where backups go",
            path.display(),
            meta.gid()
        ));
    }
    Ok(warnings)
}

/// Which file applies: `flag` (the command line's), else `env` ([`ENV_VAR`]'s value), else
/// [`DEFAULT_PATH`] if it exists. An empty value means "no config file". A file named by the
/// flag or the variable must exist; the default one may be absent.
pub fn find(
    flag: Option<&Path>,
    env: Option<&std::ffi::OsStr>,
) -> Result<Option<Config>, ConfigError> {
    let explicit = flag.map(Path::to_owned).or_else(|| env.map(PathBuf::from));
    match explicit {
        Some(p) if p.as_os_str().is_empty() => Ok(None),
        Some(p) => load(&p).map(Some),
        None => {
            let p = Path::new(DEFAULT_PATH);
            match std::fs::symlink_metadata(p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                _ => load(p).map(Some),
            }
        }
    }
}
