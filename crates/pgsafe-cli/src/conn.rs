//! Connection options shared by every command that talks to a server (libpq-compatible).

use clap::Args;
use pgsafe::conninfo::{ConnInput, ConnSettings};

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection (libpq-compatible; PG* variables and ~/.pgpass apply)")]
pub struct ConnArgs {
    /// Database name, or a whole connection string: "host=/var/run/postgresql port=5432
    /// user=backup" or "postgresql://backup@db1:5432/postgres?sslmode=disable".
    #[arg(short = 'd', long = "dbname", value_name = "CONNSTR")]
    pub dbname: Option<String>,
    /// Server host name, IP address, or Unix socket directory (default: PGHOST, else the local
    /// Unix socket).
    #[arg(short = 'h', long = "host", value_name = "HOST")]
    pub host: Option<String>,
    /// Server port (default: PGPORT, else 5432).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<String>,
    /// User name (default: PGUSER, else the operating-system user).
    #[arg(short = 'U', long = "username", value_name = "USER")]
    pub user: Option<String>,
    /// Print help (use --help; -h is the host, as in psql).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

impl ConnArgs {
    /// Resolves the settings with libpq's precedence: flags, then the connection string, then
    /// PG* variables, then defaults. Warnings (e.g. an unsafe ~/.pgpass) go to stderr.
    pub fn resolve(&self) -> anyhow::Result<ConnSettings> {
        let input = ConnInput {
            dbname: self.dbname.clone(),
            host: self.host.clone(),
            port: self.port.clone(),
            user: self.user.clone(),
        };
        let settings = ConnSettings::resolve(&input, &|k| std::env::var(k).ok())?;
        for w in &settings.warnings {
            eprintln!("pgsafe: warning: {w}");
        }
        Ok(settings)
    }
}
