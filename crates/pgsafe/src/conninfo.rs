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
//!   the `PG*` environment variables, which override the defaults. As in libpq, a key set to an
//!   empty value in a `key=value` string (`host=''`) still hides the environment variable and
//!   then means "the default".
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

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::connect::{ConnectAttempt, ConnectError, FailureKind, session_setup_sql};
pub(crate) use self::parse::is_secret_key;
pub use self::parse::{ConnOptions, is_connection_string, parse_conninfo, quote_value};
use self::parse::{KEYWORDS, Support};
pub use self::pgpass::{PassfileRead, PgpassKey};

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
    #[error(
        "{option} value \"{value}\" requires TLS, which is not supported by this build of \
         pgsafe; use sslmode=prefer or sslmode=disable (over a Unix socket, a trusted network \
         or a TLS tunnel)"
    )]
    TlsUnsupported { option: &'static str, value: String },
    #[error("connection option \"{option}\" is not supported by pgsafe: {why}")]
    Unsupported {
        option: &'static str,
        why: &'static str,
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

/// libpq's `sslmode`. Only `disable`, `allow` and `prefer` survive [`ConnSettings::resolve`]
/// (this build has no TLS, so all three connect without it).
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
    /// TLS files, kept for a future TLS build; unused now.
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
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

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// libpq's `parse_int_param`: an `int`, optionally surrounded by whitespace.
fn parse_int(s: &str) -> Option<i32> {
    s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}')
        .parse()
        .ok()
}

fn parse_port(s: &str) -> Result<u16, ConnInfoError> {
    match parse_int(s) {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(ConnInfoError::Port(s.to_owned())),
    }
}

/// Checks `value` is one of `allowed` (libpq: `invalid <option> value: "<value>"`).
fn check_choice(option: &'static str, value: &str, allowed: &[&str]) -> Result<(), ConnInfoError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ConnInfoError::InvalidValue {
            option,
            value: value.to_owned(),
        })
    }
}

fn why_unsupported(option: &str) -> &'static str {
    match option {
        "service" => {
            "connection service files are not read; give the settings in a connection string or with -h/-p/-U"
        }
        "replication" => "pgsafe opens the connections it needs itself",
        "require_auth" | "requirepeer" => {
            "pgsafe cannot enforce it, and will not connect without the check you asked for"
        }
        "min_protocol_version" | "max_protocol_version" => "the protocol version cannot be chosen",
        _ => "this authentication method is not available",
    }
}

impl ConnSettings {
    /// Resolves settings from the command line, the environment (through `env`, so tests need
    /// not touch the process environment; use [`process_env`] for the real one) and the
    /// defaults. Besides `env`, it reads the password file and checks which default socket
    /// directory exists.
    pub fn resolve(
        input: &ConnInput,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnSettings, ConnInfoError> {
        let sys = System {
            env,
            socket_exists: &|p: &Path| p.exists(),
            os_user: &os_user,
            read_passfile: &pgpass::read_passfile,
        };
        Self::resolve_with(input, &sys)
    }

    pub(crate) fn resolve_with(
        input: &ConnInput,
        sys: &System<'_>,
    ) -> Result<ConnSettings, ConnInfoError> {
        // 1. The connection string, or a plain database name.
        let mut opts = ConnOptions::default();
        if let Some(d) = nonempty(&input.dbname) {
            if is_connection_string(d) {
                opts = parse_conninfo(d)?;
            } else {
                opts.set("dbname", d)?;
            }
        }
        // 2. -h/-p/-U override it (libpq's keyword arrays ignore empty values).
        for (key, value) in [
            ("host", &input.host),
            ("port", &input.port),
            ("user", &input.user),
        ] {
            if let Some(v) = nonempty(value) {
                opts.set(key, v)?;
            }
        }
        // 3. Environment variables for what is still unset.
        let mut env_of: BTreeMap<&'static str, &'static str> = BTreeMap::new();
        for kw in KEYWORDS {
            let Some(var) = kw.env else { continue };
            if opts.get(kw.name).is_none() {
                if let Some(v) = (sys.env)(var) {
                    opts.set(kw.name, &v).map_err(|e| ConnInfoError::FromEnv {
                        var,
                        error: Box::new(e),
                    })?;
                    env_of.insert(kw.name, var);
                }
            }
        }
        if opts.get("sslmode").is_none()
            && (sys.env)("PGREQUIRESSL").is_some_and(|v| v.starts_with('1'))
        {
            opts.set("sslmode", "require")?;
            env_of.insert("sslmode", "PGREQUIRESSL");
        }
        Resolver {
            opts: &opts,
            env_of: &env_of,
            sys,
            warnings: Vec::new(),
        }
        .finish()
    }

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
            ("sslrootcert", self.sslrootcert.clone()),
            ("sslcert", self.sslcert.clone()),
            ("sslkey", self.sslkey.clone()),
        ];
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

/// Step 4 of resolution: turns the merged options into settings.
struct Resolver<'a> {
    opts: &'a ConnOptions,
    env_of: &'a BTreeMap<&'static str, &'static str>,
    sys: &'a System<'a>,
    warnings: Vec<String>,
}

impl Resolver<'_> {
    /// A set, non-empty value (libpq treats an empty value as "use the default").
    fn get(&self, key: &str) -> Option<&str> {
        self.opts.get(key).filter(|v| !v.is_empty())
    }

    /// Adds "(from environment variable X)" to errors about values that came from there.
    fn ctx(&self, key: &str, error: ConnInfoError) -> ConnInfoError {
        match self.env_of.get(key) {
            Some(var) => ConnInfoError::FromEnv {
                var,
                error: Box::new(error),
            },
            None => error,
        }
    }

    fn int(&self, key: &'static str) -> Result<Option<i32>, ConnInfoError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_int(v).map(Some).ok_or_else(|| {
                self.ctx(
                    key,
                    ConnInfoError::Integer {
                        option: key,
                        value: v.to_owned(),
                    },
                )
            }),
        }
    }

    fn choice(&self, key: &'static str, allowed: &[&str]) -> Result<Option<&str>, ConnInfoError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => check_choice(key, v, allowed)
                .map(|()| Some(v))
                .map_err(|e| self.ctx(key, e)),
        }
    }

    fn tls_required(&self, key: &'static str, value: &str) -> ConnInfoError {
        self.ctx(
            key,
            ConnInfoError::TlsUnsupported {
                option: key,
                value: value.to_owned(),
            },
        )
    }

    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn finish(mut self) -> Result<ConnSettings, ConnInfoError> {
        for kw in KEYWORDS
            .iter()
            .filter(|k| k.support == Support::Unsupported)
        {
            if self.get(kw.name).is_some() {
                let why = why_unsupported(kw.name);
                return Err(self.ctx(
                    kw.name,
                    ConnInfoError::Unsupported {
                        option: kw.name,
                        why,
                    },
                ));
            }
        }
        let sslmode = self.sslmode()?;
        self.check_tls_and_gss()?;
        let target_session_attrs = match self.choice(
            "target_session_attrs",
            &[
                "any",
                "read-write",
                "read-only",
                "primary",
                "standby",
                "prefer-standby",
            ],
        )? {
            None | Some("any") => TargetSessionAttrs::Any,
            Some("read-write") => TargetSessionAttrs::ReadWrite,
            Some("read-only") => TargetSessionAttrs::ReadOnly,
            Some(_) => {
                return Err(self.ctx(
                    "target_session_attrs",
                    ConnInfoError::Unsupported {
                        option: "target_session_attrs",
                        why: "only any, read-write and read-only are available",
                    },
                ));
            }
        };
        if let Some(enc) = self.get("client_encoding") {
            if !["utf8", "utf-8", "unicode", "auto"].contains(&enc.to_ascii_lowercase().as_str()) {
                self.warn(format!(
                    "client_encoding \"{enc}\" is ignored: pgsafe always uses UTF8"
                ));
            }
        }

        let mut targets = self.targets()?;
        let os_user = std::cell::OnceCell::new();
        let os_user = || os_user.get_or_init(|| (self.sys.os_user)()).clone();
        let user = match self.get("user") {
            Some(u) => u.to_owned(),
            None => os_user().map_err(ConnInfoError::NoOsUser)?.0,
        };
        let dbname = self.get("dbname").unwrap_or(&user).to_owned();
        let passfile = match self.get("passfile") {
            Some(p) => Some(PathBuf::from(p)),
            None => (self.sys.env)("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .or_else(|| os_user().ok().map(|(_, home)| home))
                .map(|home| home.join(".pgpass")),
        };
        self.passwords(&mut targets, passfile.as_deref(), &dbname, &user);

        let keep = |key| -> Result<Option<u32>, ConnInfoError> {
            Ok(self.int(key)?.map(|v| v.max(0) as u32))
        };
        let keepalives = Keepalives {
            enabled: self.int("keepalives")?.is_none_or(|v| v != 0),
            idle_secs: keep("keepalives_idle")?,
            interval_secs: keep("keepalives_interval")?,
            count: keep("keepalives_count")?,
        };
        // libpq: a timeout of 0 or less waits forever; 1 s is rounded up to 2.
        let connect_timeout = self
            .int("connect_timeout")?
            .filter(|s| *s > 0)
            .map(|s| s.max(2) as u32);
        let tcp_user_timeout_ms = self
            .int("tcp_user_timeout")?
            .filter(|v| *v > 0)
            .map(|v| v as u32);
        let owned = |key| self.get(key).map(str::to_owned);
        Ok(ConnSettings {
            targets,
            user,
            dbname,
            application_name: owned("application_name")
                .or_else(|| owned("fallback_application_name")),
            options: owned("options"),
            connect_timeout,
            sslmode,
            keepalives,
            tcp_user_timeout_ms,
            target_session_attrs,
            passfile,
            sslrootcert: owned("sslrootcert"),
            sslcert: owned("sslcert"),
            sslkey: owned("sslkey"),
            warnings: self.warnings,
        })
    }

    fn sslmode(&self) -> Result<SslMode, ConnInfoError> {
        let Some(v) = self.get("sslmode") else {
            return Ok(SslMode::Prefer);
        };
        let Some(mode) = SslMode::ALL.into_iter().find(|m| m.as_str() == v) else {
            let e = ConnInfoError::InvalidValue {
                option: "sslmode",
                value: v.to_owned(),
            };
            return Err(self.ctx("sslmode", e));
        };
        if mode.requires_tls() {
            return Err(self.tls_required("sslmode", v));
        }
        Ok(mode)
    }

    /// Options that only matter with TLS or GSSAPI: accepted unless they demand it.
    fn check_tls_and_gss(&self) -> Result<(), ConnInfoError> {
        let demanding = [
            (
                "channel_binding",
                &["disable", "prefer", "require"][..],
                "require",
            ),
            ("sslnegotiation", &["postgres", "direct"][..], "direct"),
            (
                "sslcertmode",
                &["disable", "allow", "require"][..],
                "require",
            ),
        ];
        for (key, allowed, needs_tls) in demanding {
            if self.choice(key, allowed)? == Some(needs_tls) {
                return Err(self.tls_required(key, needs_tls));
            }
        }
        if self.get("sslrootcert") == Some("system") {
            return Err(self.tls_required("sslrootcert", "system"));
        }
        if self.choice("gssencmode", &["disable", "prefer", "require"])? == Some("require") {
            let why = "GSSAPI encryption is not available; use gssencmode=prefer or disable";
            return Err(self.ctx(
                "gssencmode",
                ConnInfoError::Unsupported {
                    option: "gssencmode",
                    why,
                },
            ));
        }
        if self.choice("load_balance_hosts", &["disable", "random"])? == Some("random") {
            let why = "hosts are tried in the order given; use load_balance_hosts=disable";
            return Err(self.ctx(
                "load_balance_hosts",
                ConnInfoError::Unsupported {
                    option: "load_balance_hosts",
                    why,
                },
            ));
        }
        Ok(())
    }

    /// libpq's `pqConnectOptions2`: one target per `hostaddr` (else `host`) list element.
    fn targets(&self) -> Result<Vec<Target>, ConnInfoError> {
        let hosts_s = self.get("host").unwrap_or("");
        let addrs_s = self.get("hostaddr").unwrap_or("");
        let ports_s = self.get("port").unwrap_or("");
        let split = |s: &'_ str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        let n = if !addrs_s.is_empty() {
            split(addrs_s).len()
        } else if !hosts_s.is_empty() {
            split(hosts_s).len()
        } else {
            1
        };
        let hosts = if hosts_s.is_empty() {
            vec![String::new(); n]
        } else {
            split(hosts_s)
        };
        if hosts.len() != n {
            let e = ConnInfoError::HostaddrCount {
                hosts: hosts.len(),
                hostaddrs: n,
            };
            return Err(self.ctx("host", e));
        }
        let addrs = if addrs_s.is_empty() {
            vec![String::new(); n]
        } else {
            split(addrs_s)
        };
        let ports = match split(ports_s) {
            p if p.len() == 1 => vec![p[0].clone(); n],
            p if p.len() == n => p,
            p => {
                return Err(self.ctx(
                    "port",
                    ConnInfoError::PortCount {
                        ports: p.len(),
                        hosts: n,
                    },
                ));
            }
        };
        let mut targets = Vec::with_capacity(n);
        for ((host, addr), port) in hosts.iter().zip(&addrs).zip(&ports) {
            let port = if port.is_empty() {
                DEFAULT_PORT
            } else {
                parse_port(port).map_err(|e| self.ctx("port", e))?
            };
            let hostaddr = match addr.as_str() {
                "" => None,
                a => Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| self.ctx("hostaddr", ConnInfoError::Hostaddr(a.to_owned())))?,
                ),
            };
            let host = if host.starts_with('/') {
                Host::Unix(PathBuf::from(host))
            } else if host.starts_with('@') {
                let why = "abstract Unix sockets (@name) are not supported";
                return Err(self.ctx(
                    "host",
                    ConnInfoError::Unsupported {
                        option: "host",
                        why,
                    },
                ));
            } else if !host.is_empty() {
                Host::Tcp(host.clone())
            } else if hostaddr.is_some() {
                Host::Tcp(addr.clone())
            } else {
                Host::Unix(self.default_socket_dir(port))
            };
            targets.push(Target {
                host,
                hostaddr,
                port,
                password: None,
                password_source: PasswordSource::None,
            });
        }
        Ok(targets)
    }

    fn default_socket_dir(&self, port: u16) -> PathBuf {
        let socket = format!(".s.PGSQL.{port}");
        DEFAULT_SOCKET_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| (self.sys.socket_exists)(&dir.join(&socket)))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIRS[0]))
    }

    /// An explicit password applies to every target; otherwise each looks in the password
    /// file, which is read at most once.
    fn passwords(
        &mut self,
        targets: &mut [Target],
        passfile: Option<&Path>,
        dbname: &str,
        user: &str,
    ) {
        if let Some(pw) = self.get("password") {
            let source = if self.env_of.contains_key("password") {
                PasswordSource::Env
            } else {
                PasswordSource::ConnString
            };
            for t in targets.iter_mut() {
                t.password = Some(Secret::new(pw));
                t.password_source = source.clone();
            }
            return;
        }
        let Some(path) = passfile else { return };
        let mut contents = None;
        for t in targets.iter_mut() {
            let read = contents.get_or_insert_with(|| (self.sys.read_passfile)(path));
            let (mode, bytes) = match read {
                PassfileRead::Missing => return,
                PassfileRead::Unreadable(why) => {
                    let w = format!("could not read password file \"{}\": {why}", path.display());
                    self.warn(w);
                    return;
                }
                PassfileRead::Read { mode, bytes } => (*mode, bytes),
            };
            let host = pgpass_host(t);
            let port = t.port.to_string();
            let key = PgpassKey {
                host: &host,
                port: &port,
                dbname,
                user,
            };
            let found = pgpass::lookup(path, mode, bytes, &key);
            if let Some(w) = found.warning {
                self.warn(w);
            }
            if let Some(pw) = found.password {
                t.password = Some(pw);
                t.password_source = PasswordSource::Passfile(path.to_owned());
            }
        }
    }
}

/// The host field a password-file line must match for `t`: `localhost` for a socket in a
/// default directory (libpq: only its compiled-in directory; pgsafe has two defaults, so both
/// count), the directory path for any other socket, else the host as given.
fn pgpass_host(t: &Target) -> String {
    match &t.host {
        Host::Unix(dir) if DEFAULT_SOCKET_DIRS.iter().any(|d| Path::new(d) == dir) => {
            "localhost".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
