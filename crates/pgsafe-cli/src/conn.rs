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
    /// True when any connection option was given on the command line.
    pub fn given(&self) -> bool {
        [&self.dbname, &self.host, &self.port, &self.user]
            .iter()
            .any(|o| o.as_deref().is_some_and(|v| !v.is_empty()))
    }

    /// The connection as the user gave it, for display: the connection string (password
    /// removed) and `-h`/`-p`/`-U` as `host=`/`port=`/`user=`; for options that came from the
    /// environment only, the resolved host, port, user and database.
    pub fn shown(&self, settings: &ConnSettings) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(d) = self.dbname.as_deref().filter(|d| !d.is_empty()) {
            parts.push(without_password(d));
        }
        for (key, value) in [
            ("host", &self.host),
            ("port", &self.port),
            ("user", &self.user),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                parts.push(format!("{key}={v}"));
            }
        }
        if parts.is_empty() {
            let t = settings.targets.first();
            parts.push(format!(
                "host={} port={} user={} dbname={}",
                t.map(|t| t.host.to_string()).unwrap_or_default(),
                t.map(|t| t.port).unwrap_or(5432),
                settings.user,
                settings.dbname
            ));
        }
        parts.join(" ")
    }

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

/// A connection string with any password replaced by `********`: `password=…` (quoted or not)
/// in a `key=value` string or a URI's query, and `user:password@` in a URI.
fn without_password(conn: &str) -> String {
    let mut out = conn.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "********");
            }
        }
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password") {
        let (before, after) = rest.split_at(i + "password".len());
        result.push_str(before);
        let trimmed = after.trim_start();
        let at_word_start = i == 0
            || !before[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !at_word_start || !trimmed.starts_with('=') {
            rest = after;
            continue;
        }
        let value = trimmed[1..].trim_start();
        result.push_str("=********");
        rest = if let Some(q) = value.strip_prefix('\'') {
            // A quoted value ends at the first quote that is not escaped.
            let mut end = q.len();
            let mut escaped = false;
            for (j, c) in q.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = j + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            &q[end.min(q.len())..]
        } else {
            let end = value.find([' ', '\t', '&']).unwrap_or(value.len());
            &value[end..]
        };
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_are_removed() {
        assert_eq!(
            without_password("host=/tmp password=s3cret user=x"),
            "host=/tmp password=******** user=x"
        );
        assert_eq!(
            without_password("password = 'a \\' b' dbname=d"),
            "password=******** dbname=d"
        );
        assert_eq!(
            without_password("postgresql://u:pw@db:5432/x?password=p2&sslmode=disable"),
            "postgresql://u:********@db:5432/x?password=********&sslmode=disable"
        );
        assert_eq!(without_password("host=/tmp user=x"), "host=/tmp user=x");
        assert_eq!(without_password("passwordless=1"), "passwordless=1");
    }
}
