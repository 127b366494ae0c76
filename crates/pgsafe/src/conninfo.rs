//! Connection settings for the backup session, resolved by libpq's rules.
//!
//! The `postgres` crate ignores the `PG*` environment variables and `~/.pgpass`, so pgsafe
//! applies libpq's rules itself (libpq docs "Connection Strings", "Environment Variables", "The
//! Password File"; fe-connect.c `conninfo_array_parse`, `conninfo_add_defaults`,
//! `pqConnectOptions2`):
//!
//! - `-d` is a database name, or, if it contains `=` or starts with `postgresql://` /
//!   `postgres://`, a connection string whose settings are all applied ("expand_dbname").
//! - Precedence: `-h`/`-p`/`-U` (when non-empty) override the connection string, which overrides
//!   the connection service (`service`/`PGSERVICE`, see [`service`]), which overrides the `PG*`
//!   environment variables, which override the defaults. As in libpq, a key set to an empty
//!   value in a `key=value` string (`host=''`) still hides the environment variable and then
//!   means "the default".
//! - TLS: `sslmode` and the `ssl*` options as libpq, see [`tls`]; never over a Unix socket.
//! - `host`, `hostaddr` and `port` may be comma-separated lists; hosts are tried in order. A host
//!   starting with `/` is a Unix-socket directory; an empty host means the default socket
//!   directory: the first of `/var/run/postgresql`, `/tmp` holding `.s.PGSQL.<port>` (else
//!   `/var/run/postgresql`). With `hostaddr`, the connection goes to that address and the host
//!   name only serves the password-file lookup. One port applies to every host; otherwise
//!   there must be one per host.
//! - Defaults: port 5432, user = the operating-system user (effective uid, as libpq's
//!   `pg_fe_getauthname`), database = the user name.
//! - A password from `password=`/the URI/`PGPASSWORD` applies to every host; otherwise each host
//!   looks in the password file (`passfile`, `PGPASSFILE`, else `$HOME/.pgpass`, `HOME` falling
//!   back to the passwd entry), see [`pgpass`].
//!
//! The session gets `application_name=pgsafe` unless the user chose one (`application_name`,
//! `PGAPPNAME` or `fallback_application_name`), TCP keepalives (idle 30 s unless set), and
//! after connecting the statements of [`session_setup_sql`].
//!
//! Passwords live in [`Secret`], whose `Debug` and `Display` print `********`; [`ConnSettings`]
//! shows itself as [`ConnSettings::redacted`]. The serde form *does* carry the password: it is
//! meant for handing settings to a child process over a pipe or socket (never via argv, never
//! into logs).

mod connect;
mod parse;
pub mod pgpass;
mod resolve;
pub mod service;
pub mod tls;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::connect::{ConnectAttempt, ConnectError, FailureKind, session_setup_sql};
pub(crate) use self::parse::is_secret_key;
pub use self::parse::{ConnOptions, is_connection_string, parse_conninfo, quote_value};
pub use self::pgpass::{PassfileRead, PgpassKey};
pub use self::service::ServiceFileRead;
pub use self::tls::{ChannelBinding, SslCertMode, TlsError, TlsSettings};

pub const DEFAULT_PORT: u16 = 5432;
/// Socket directories tried when no host is given, in order (Debian's libpq default first,
/// then upstream's).
pub const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];
pub const DEFAULT_APPLICATION_NAME: &str = "pgsafe";
pub const DEFAULT_KEEPALIVES_IDLE_SECS: u32 = 30;

/// Why connection settings are invalid. Messages follow libpq's where libpq has one; none
/// contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    #[error("invalid connection option \"{0}\"")]
    InvalidOption(String),
    #[error("missing \"=\" after \"{0}\" in connection info string")]
    MissingEquals(String),
    #[error("unterminated quoted string in connection info string")]
    UnterminatedQuote,
    #[error("connection settings must not contain a NUL byte")]
    NulByte,
    #[error("value of connection option \"{0}\" is not valid UTF-8")]
    NotUtf8(String),
    #[error("invalid URI query parameter: \"{0}\"")]
    InvalidUriParam(String),
    #[error("{0}")]
    Uri(String),
    #[error("invalid port number: \"{0}\"")]
    Port(String),
    #[error("invalid integer value \"{value}\" for connection option \"{option}\"")]
    Integer { option: &'static str, value: String },
    #[error("invalid {option} value: \"{value}\"")]
    InvalidValue { option: &'static str, value: String },
    #[error("could not parse network address \"{0}\"")]
    Hostaddr(String),
    #[error("could not match {hosts} host names to {hostaddrs} hostaddr values")]
    HostaddrCount { hosts: usize, hostaddrs: usize },
    #[error("could not match {ports} port numbers to {hosts} hosts")]
    PortCount { ports: usize, hosts: usize },
    #[error("weak sslmode \"{mode}\" may not be used with {with} (use {instead})")]
    WeakSslMode {
        mode: &'static str,
        with: &'static str,
        instead: &'static str,
    },
    #[error("invalid SSL protocol version range")]
    ProtocolRange,
    /// A connection service file problem (libpq's wording; never the file's text).
    #[error("{0}")]
    Service(String),
    #[error("connection option \"{option}\" is not supported by pgsafe: {why}")]
    Unsupported {
        option: &'static str,
        why: &'static str,
    },
    #[error("{error} (from connection service \"{service}\")")]
    FromService {
        service: String,
        error: Box<ConnInfoError>,
    },
    #[error("{error} (from environment variable {var})")]
    FromEnv {
        var: &'static str,
        error: Box<ConnInfoError>,
    },
    #[error(
        "could not look up the operating system user name for uid {0}; give a user name with \
         -U or PGUSER"
    )]
    NoOsUser(u32),
}

/// A password. `Debug` and `Display` print `********`; [`Secret::expose`] gives the value.
/// Serializes as the plain value (for the pipe to a child process only). Wiped on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// Where to connect: a TCP host name or address, or a Unix-socket directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Host {
    Tcp(String),
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(name) => f.write_str(name),
            Host::Unix(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// Where a target's password came from (for hints when authentication fails).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordSource {
    None,
    ConnString,
    Env,
    /// A connection service file.
    Service,
    Passfile(PathBuf),
}

/// One server to try: libpq's per-host entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The host as given (for `hostaddr`-only entries, the address text).
    pub host: Host,
    /// If set, the address actually connected to (libpq `hostaddr`).
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
    pub password: Option<Secret>,
    pub password_source: PasswordSource,
}

impl Target {
    /// The socket file for a Unix-socket target.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) if self.hostaddr.is_none() => {
                Some(dir.join(format!(".s.PGSQL.{}", self.port)))
            }
            _ => None,
        }
    }

    /// libpq's wording: `server on socket "/tmp/.s.PGSQL.5432"` or
    /// `server at "db1" (10.0.0.5), port 5432`.
    pub fn describe(&self) -> String {
        match (self.socket_path(), self.hostaddr) {
            (Some(path), _) => format!("server on socket \"{}\"", path.display()),
            (None, Some(addr)) if self.host.to_string() != addr.to_string() => {
                format!("server at \"{}\" ({addr}), port {}", self.host, self.port)
            }
            (None, _) => format!("server at \"{}\", port {}", self.host, self.port),
        }
    }
}

/// libpq's `sslmode`. TLS is never used over a Unix socket, whatever the mode (libpq does the
/// same: the server refuses it there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// libpq's `target_session_attrs`, as far as the `postgres` crate implements it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSessionAttrs {
    #[default]
    Any,
    ReadWrite,
    ReadOnly,
}

impl TargetSessionAttrs {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
        }
    }
}

/// TCP keepalive settings. `None` = not set by the user; `Some(0)` = the system default, as
/// in libpq. Unix sockets ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keepalives {
    pub enabled: bool,
    pub idle_secs: Option<u32>,
    pub interval_secs: Option<u32>,
    pub count: Option<u32>,
}

impl Default for Keepalives {
    fn default() -> Self {
        Keepalives {
            enabled: true,
            idle_secs: None,
            interval_secs: None,
            count: None,
        }
    }
}

/// What the command line gave: `-d/--dbname`, `-h/--host`, `-p/--port`, `-U/--username`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInput {
    pub dbname: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub user: Option<String>,
}

/// Fully resolved connection settings. `Debug`/`Display` never show a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSettings {
    /// Servers to try, in order (at least one).
    pub targets: Vec<Target>,
    pub user: String,
    pub dbname: String,
    /// Chosen by the user; `None` means [`DEFAULT_APPLICATION_NAME`].
    pub application_name: Option<String>,
    /// Command-line options for the server (libpq `options`, e.g. `-c work_mem=4MB`).
    pub options: Option<String>,
    /// Seconds to wait for each host's connection (libpq: at least 2); `None` = no limit.
    pub connect_timeout: Option<u32>,
    pub sslmode: SslMode,
    pub keepalives: Keepalives,
    pub tcp_user_timeout_ms: Option<u32>,
    pub target_session_attrs: TargetSessionAttrs,
    /// The password file consulted (or that would be, had no password been given).
    pub passfile: Option<PathBuf>,
    pub tls: TlsSettings,
    /// The connection service the settings were completed from, and its file.
    pub service: Option<(String, PathBuf)>,
    /// Problems worth telling the user about (e.g. an insecure password file). The library
    /// never prints; the caller should.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The reads resolution needs from the outside world, injectable for tests.
pub(crate) struct System<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub socket_exists: &'a dyn Fn(&Path) -> bool,
    /// The effective user's name and home directory, or the uid if it has no passwd entry.
    pub os_user: &'a dyn Fn() -> Result<(String, PathBuf), u32>,
    pub read_passfile: &'a dyn Fn(&Path) -> PassfileRead,
    pub read_service_file: &'a dyn Fn(&Path) -> ServiceFileRead,
}

/// The process environment, for [`ConnSettings::resolve`]; a non-UTF-8 value counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn os_user() -> Result<(String, PathBuf), u32> {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Ok((u.name, u.dir)),
        _ => Err(uid.as_raw()),
    }
}

impl ConnSettings {
    /// The settings as a libpq `key=value` string, without any password. Feeding it back
    /// through [`ConnSettings::resolve`] as `-d` gives the same settings (except passwords,
    /// which come from the password file again).
    pub fn to_conninfo(&self) -> String {
        let join = |f: &dyn Fn(&Target) -> String| {
            self.targets.iter().map(f).collect::<Vec<_>>().join(",")
        };
        let mut parts: Vec<(&str, String)> = vec![("host", join(&|t| t.host.to_string()))];
        if self.targets.iter().any(|t| t.hostaddr.is_some()) {
            parts.push((
                "hostaddr",
                join(&|t| t.hostaddr.map(|a| a.to_string()).unwrap_or_default()),
            ));
        }
        parts.push(("port", join(&|t| t.port.to_string())));
        parts.push(("user", self.user.clone()));
        parts.push(("dbname", self.dbname.clone()));
        let optional = [
            ("application_name", self.application_name.clone()),
            ("options", self.options.clone()),
            (
                "connect_timeout",
                self.connect_timeout.map(|s| s.to_string()),
            ),
            ("sslmode", Some(self.sslmode.as_str().to_owned())),
            (
                "keepalives",
                (!self.keepalives.enabled).then(|| "0".to_owned()),
            ),
            (
                "keepalives_idle",
                self.keepalives.idle_secs.map(|s| s.to_string()),
            ),
            (
                "keepalives_interval",
                self.keepalives.interval_secs.map(|s| s.to_string()),
            ),
            (
                "keepalives_count",
                self.keepalives.count.map(|s| s.to_string()),
            ),
            (
                "tcp_user_timeout",
                self.tcp_user_timeout_ms.map(|s| s.to_string()),
            ),
            (
                "target_session_attrs",
                (self.target_session_attrs != TargetSessionAttrs::Any)
                    .then(|| self.target_session_attrs.as_str().to_owned()),
            ),
            (
                "passfile",
                self.passfile.as_ref().map(|p| p.display().to_string()),
            ),
        ];
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let tls = &self.tls;
        let tls_parts = [
            ("sslrootcert", tls.rootcert.clone()),
            ("sslcrl", path(&tls.crl)),
            ("sslcrldir", path(&tls.crldir)),
            ("sslcert", path(&tls.cert)),
            ("sslkey", path(&tls.key)),
            ("sslsni", (!tls.sni).then(|| "0".to_owned())),
            (
                "sslcertmode",
                match tls.certmode {
                    SslCertMode::Allow => None,
                    SslCertMode::Disable => Some("disable".to_owned()),
                    SslCertMode::Require => Some("require".to_owned()),
                },
            ),
            ("sslnegotiation", tls.direct.then(|| "direct".to_owned())),
            (
                "channel_binding",
                match tls.channel_binding {
                    ChannelBinding::Prefer => None,
                    ChannelBinding::Disable => Some("disable".to_owned()),
                    ChannelBinding::Require => Some("require".to_owned()),
                },
            ),
            ("ssl_min_protocol_version", tls.min_protocol.clone()),
            ("ssl_max_protocol_version", tls.max_protocol.clone()),
        ];
        let optional = optional.into_iter().chain(tls_parts);
        parts.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        parts
            .iter()
            .map(|(k, v)| format!("{k}={}", quote_value(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A form for logs and messages: [`ConnSettings::to_conninfo`], plus `password=********`
    /// when some target has a password.
    pub fn redacted(&self) -> String {
        let mut s = self.to_conninfo();
        if self.targets.iter().any(|t| t.password.is_some()) {
            s.push_str(" password=********");
        }
        s
    }
}

impl fmt::Display for ConnSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests;
