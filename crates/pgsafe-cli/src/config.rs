//! The config file on the command line: `--config FILE` (else `PGSAFE_CONFIG`, else
//! /etc/pgsafe/pgsafe.toml if present), read once, and merged under the flags: a flag always
//! wins, then the cluster's table, then the file's defaults, then the built-in default. The
//! parsing and the rules are the library's (`pgsafe::config`).

use std::path::PathBuf;
use std::sync::OnceLock;

use pgsafe::config::{self, Config, Resolved};

use crate::conn::ConnArgs;

/// `--config`, as main parsed it.
static FLAG: OnceLock<Option<PathBuf>> = OnceLock::new();
/// The file, read on first use (commands that take no setting from it never read it).
static LOADED: OnceLock<Option<Config>> = OnceLock::new();

/// Called once by main with the global `--config`.
pub fn set_flag(path: Option<PathBuf>) {
    let _ = FLAG.set(path);
}

/// The config file in use, if any; its warnings go to stderr once.
pub fn file() -> anyhow::Result<Option<&'static Config>> {
    if let Some(c) = LOADED.get() {
        return Ok(c.as_ref());
    }
    let flag = FLAG.get().and_then(|f| f.as_deref());
    let env = std::env::var_os(config::ENV_VAR);
    let loaded = config::find(flag, env.as_deref()).map_err(|e| {
        let hint = match (&e, flag, &env) {
            (config::ConfigError::Read { .. }, Some(_), _) => " (named by --config)",
            (config::ConfigError::Read { .. }, None, Some(_)) => " (named by PGSAFE_CONFIG)",
            _ => "",
        };
        let message = format!("{e}{hint}");
        crate::failure::advised(e, message)
    })?;
    if let Some(c) = &loaded {
        for w in &c.warnings {
            eprintln!("pgsafe: warning: {w}");
        }
    }
    Ok(LOADED.get_or_init(|| loaded).as_ref())
}

/// The settings for `cluster` (`None`: the file's defaults only).
pub fn resolved(cluster: Option<&str>) -> anyhow::Result<Resolved> {
    Ok(Resolved::for_cluster(file()?, cluster))
}

/// The data directory: `-D`, else the cluster's `pgdata`, else `PGDATA` (the file names the
/// cluster on purpose; a PGDATA left in the shell must not silently back up another one).
pub fn pgdata(flag: Option<PathBuf>, resolved: &Resolved) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p);
    }
    if let Some(p) = &resolved.pgdata {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("PGDATA").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let why = resolved.missing("the data directory", "pgdata", file()?);
    Err(crate::failure::usage(format!(
        "{why}: give -D PGDATA (or set PGDATA, or `pgdata` in the cluster's table of the \
         config file)"
    )))
}

/// The connection options with the file's connection settings under them: `-d` as a
/// connection string replaces the file's, `-d NAME`, `-h`, `-p`, `-U` replace one setting each.
pub fn conn(flags: &ConnArgs, resolved: &Resolved) -> ConnArgs {
    let mut merged = flags.clone();
    merged.dbname = resolved.connection_string(flags.dbname.as_deref());
    merged
}

/// `conn`, resolved, naming the config file when its settings are wrong.
pub fn resolve_conn(
    flags: &ConnArgs,
    resolved: &Resolved,
) -> anyhow::Result<pgsafe::conninfo::ConnSettings> {
    let merged = conn(flags, resolved);
    let from_file = !resolved.connection.is_empty();
    merged
        .resolve()
        .map_err(|e| match (&resolved.path, &resolved.cluster) {
            (Some(path), Some(name)) if from_file => e.context(format!(
                "the connection settings (with those of [cluster.{name}] in the config file {}) \
             are not valid",
                path.display()
            )),
            _ => e,
        })
}
