//! Connecting: `postgres::Config`s from [`ConnSettings`], trying targets in order with libpq's
//! TLS fallbacks, errors that say which server was tried, what it answered and what to check,
//! and the session setup.
//!
//! Per target (libpq fe-connect.c `PQconnectPoll`): over a Unix socket never TLS. Over TCP,
//! `disable` is plain; `allow` tries plain and, if the server refuses the session, TLS;
//! `prefer` tries TLS (plain if the server has none) and, if the handshake fails or the server
//! refuses the TLS session, plain; `require`, `verify-ca` and `verify-full` only TLS.
//! `sslcertmode=require` fails a session the server accepted without a client certificate.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    ChannelBinding, ConnSettings, DEFAULT_APPLICATION_NAME, DEFAULT_KEEPALIVES_IDLE_SECS, Host,
    PasswordSource, SslCertMode, SslMode, Target, TargetSessionAttrs, TlsError,
};
use crate::types::PgVersion;

impl ConnSettings {
    /// One `postgres::Config` per target, in order, with pgsafe's session defaults applied
    /// (as for the first attempt at each: TLS where the sslmode starts with it).
    pub fn to_postgres_configs(&self) -> Vec<postgres::Config> {
        self.targets
            .iter()
            .map(|t| self.config_for(t, self.first_wire(t)))
            .collect()
    }

    /// How the first attempt at `t` goes.
    fn first_wire(&self, t: &Target) -> Wire {
        if t.socket_path().is_some() {
            return Wire::Plain;
        }
        match self.sslmode {
            SslMode::Disable | SslMode::Allow => Wire::Plain,
            SslMode::Prefer => Wire::TlsIfOffered,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Tls,
        }
    }

    fn config_for(&self, t: &Target, wire: Wire) -> postgres::Config {
        use postgres::config::{
            ChannelBinding as PgCb, SslMode as PgSsl, SslNegotiation, TargetSessionAttrs as PgTsa,
        };
        let mut c = postgres::Config::new();
        c.user(&self.user)
            .dbname(&self.dbname)
            .port(t.port)
            .application_name(
                self.application_name
                    .as_deref()
                    .unwrap_or(DEFAULT_APPLICATION_NAME),
            )
            .ssl_mode(match wire {
                Wire::Plain => PgSsl::Disable,
                Wire::TlsIfOffered => PgSsl::Prefer,
                Wire::Tls => PgSsl::Require,
            })
            .channel_binding(match self.tls.channel_binding {
                ChannelBinding::Disable => PgCb::Disable,
                ChannelBinding::Prefer => PgCb::Prefer,
                ChannelBinding::Require => PgCb::Require,
            })
            .target_session_attrs(match self.target_session_attrs {
                TargetSessionAttrs::Any => PgTsa::Any,
                TargetSessionAttrs::ReadWrite => PgTsa::ReadWrite,
                TargetSessionAttrs::ReadOnly => PgTsa::ReadOnly,
            })
            .keepalives(self.keepalives.enabled);
        match &t.host {
            Host::Tcp(name) => c.host(name),
            Host::Unix(dir) => c.host_path(dir),
        };
        if let Some(addr) = t.hostaddr {
            c.hostaddr(addr);
        }
        if self.tls.direct && wire == Wire::Tls {
            c.ssl_negotiation(SslNegotiation::Direct);
        }
        if let Some(pw) = &t.password {
            c.password(pw.expose());
        }
        if let Some(o) = &self.options {
            c.options(o);
        }
        if let Some(s) = self.connect_timeout {
            c.connect_timeout(Duration::from_secs(s.into()));
        }
        if let Some(ms) = self.tcp_user_timeout_ms {
            c.tcp_user_timeout(Duration::from_millis(ms.into()));
        }
        // 0 = the system default: leave the crate's default (2 h, Linux's default too).
        match self.keepalives.idle_secs {
            None => {
                c.keepalives_idle(Duration::from_secs(DEFAULT_KEEPALIVES_IDLE_SECS.into()));
            }
            Some(0) => {}
            Some(s) => {
                c.keepalives_idle(Duration::from_secs(s.into()));
            }
        }
        if let Some(s) = self.keepalives.interval_secs.filter(|s| *s > 0) {
            c.keepalives_interval(Duration::from_secs(s.into()));
        }
        if let Some(n) = self.keepalives.count.filter(|n| *n > 0) {
            c.keepalives_retries(n);
        }
        c
    }

    /// Connects to the first target that accepts, trying them in order (libpq semantics).
    pub fn connect(&self) -> Result<postgres::Client, ConnectError> {
        self.connect_inner().map(|(client, _)| client)
    }

    fn connect_inner(&self) -> Result<(postgres::Client, &Target), ConnectError> {
        let mut attempts = Vec::new();
        for t in &self.targets {
            match self.connect_target(t) {
                Ok(client) => return Ok((client, t)),
                Err(a) => attempts.push(a),
            }
        }
        Err(ConnectError::Failed { attempts })
    }

    /// libpq's sslmode fallbacks for one target.
    fn connect_target(&self, t: &Target) -> Result<postgres::Client, ConnectAttempt> {
        let first = self.first_wire(t);
        let result = self.attempt(t, first);
        let second = match (&result, self.sslmode) {
            (Err(a), SslMode::Allow) if first == Wire::Plain && a.sqlstate.is_some() => Wire::Tls,
            (Err(a), SslMode::Prefer)
                if first == Wire::TlsIfOffered
                    && (a.kind == FailureKind::Tls || a.sqlstate.is_some()) =>
            {
                Wire::Plain
            }
            _ => return result,
        };
        let Err(before) = result else {
            return result;
        };
        self.attempt(t, second).map_err(|mut a| {
            // prefer against a hostssl-only server: the TLS attempt's failure is the one that
            // says what to fix; plain text being refused too is expected.
            if second == Wire::Plain && is_hostssl_refusal(&a) {
                let mut before = before.clone();
                before.message = format!(
                    "{} (plain text was refused too: {})",
                    before.message, a.message
                );
                return before;
            }
            let how = if second == Wire::Plain {
                "with TLS"
            } else {
                "without TLS"
            };
            a.message = format!(
                "{} (an attempt {how} failed first: {})",
                a.message, before.message
            );
            if a.hint.is_none() {
                a.hint = before.hint;
            }
            a
        })
    }

    fn attempt(&self, t: &Target, wire: Wire) -> Result<postgres::Client, ConnectAttempt> {
        let config = self.config_for(t, wire);
        let (result, cert_sent) = match wire {
            Wire::Plain => (config.connect(postgres::NoTls), None),
            Wire::Tls | Wire::TlsIfOffered => {
                let prepared = self
                    .tls
                    .prepare(self.sslmode)
                    .map_err(|e| ConnectAttempt::tls_setup(t, &e))?;
                let sent = prepared.cert_sent;
                (
                    config.connect(MakeRustlsConnect::new(prepared.config)),
                    sent,
                )
            }
        };
        let client = result.map_err(|e| ConnectAttempt::from_error(self, t, &e))?;
        let sent = cert_sent.is_some_and(|s| s.load(Ordering::SeqCst));
        if self.tls.certmode == SslCertMode::Require && !sent {
            return Err(ConnectAttempt {
                target: t.describe(),
                kind: FailureKind::Tls,
                message: "server accepted connection without a valid SSL certificate".into(),
                sqlstate: None,
                hint: Some(
                    "sslcertmode=require: the server must ask for and get a client certificate \
                     (pg_hba.conf method cert, or clientcert=verify-ca); give it with sslcert \
                     and sslkey"
                        .into(),
                ),
            });
        }
        Ok(client)
    }

    /// Connects, reads `server_version_num` and runs [`session_setup_sql`] for that version.
    pub fn connect_session(&self) -> Result<(postgres::Client, PgVersion), ConnectError> {
        let (mut client, t) = self.connect_inner()?;
        let setup = |step: &str, message: String| ConnectError::Setup {
            target: t.describe(),
            step: step.to_owned(),
            message,
        };
        let show = "SHOW server_version_num";
        let rows = client
            .simple_query(show)
            .map_err(|e| setup(show, error_text(&e)))?;
        let text = rows
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    r.try_get(0).ok().flatten().map(str::to_owned)
                }
                _ => None,
            })
            .ok_or_else(|| setup(show, "no row returned".into()))?;
        let version =
            PgVersion::from_server_version_num(&text).map_err(|e| setup(show, e.to_string()))?;
        for sql in session_setup_sql(version) {
            client
                .batch_execute(sql)
                .map_err(|e| setup(sql, error_text(&e)))?;
        }
        Ok((client, version))
    }
}

/// Statements run right after connecting so that no server-side timeout can cut the backup
/// session: `statement_timeout`, `idle_in_transaction_session_timeout` (9.6+),
/// `idle_session_timeout` (14+) and `transaction_timeout` (17+) set to 0. `lock_timeout` is
/// left alone (the backup session takes no locks worth waiting on).
pub fn session_setup_sql(version: PgVersion) -> Vec<&'static str> {
    let mut v = vec![
        "SET statement_timeout = 0",
        "SET idle_in_transaction_session_timeout = 0",
    ];
    if version.at_least(14) {
        v.push("SET idle_session_timeout = 0");
    }
    if version.at_least(17) {
        v.push("SET transaction_timeout = 0");
    }
    v
}

/// The server refused a session without TLS because pg_hba.conf has only `hostssl` lines for
/// it (its message says "no encryption", "SSL off" before PostgreSQL 12).
fn is_hostssl_refusal(a: &ConnectAttempt) -> bool {
    a.sqlstate.as_deref() == Some("28000")
        && (a.message.contains("no encryption") || a.message.contains("SSL off"))
}

/// How one attempt talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Plain,
    /// TLS if the server offers it, plain if it answers that it has none.
    TlsIfOffered,
    Tls,
}

/// How one connection attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing listening, no such socket, host name not found, network unreachable.
    Unreachable,
    Timeout,
    /// The server wants a password and none was found.
    PasswordRequired,
    /// The server rejected the password (SQLSTATE 28P01).
    AuthenticationFailed,
    /// TLS could not be set up or the handshake failed: a certificate not trusted or not
    /// for this host, a key file refused, a server without TLS.
    Tls,
    /// The server refused the session: pg_hba.conf, no such database, too many connections,
    /// starting up, not the wanted read-write/read-only kind...
    Rejected,
    Other,
}

/// One failed attempt: which server, what happened, the server's or OS's message, a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAttempt {
    pub target: String,
    pub kind: FailureKind,
    pub message: String,
    pub sqlstate: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ConnectAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection to {} failed: {}", self.target, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Why [`ConnSettings::connect`] or [`ConnSettings::connect_session`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Every target failed; one entry per target, in order.
    #[error("{}", render_attempts(.attempts))]
    Failed { attempts: Vec<ConnectAttempt> },
    /// Connected, but preparing the session failed.
    #[error("connected to {target}, but \"{step}\" failed: {message}")]
    Setup {
        target: String,
        step: String,
        message: String,
    },
}

impl ConnectError {
    /// The kind of the last failed attempt, if any.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            ConnectError::Failed { attempts } => attempts.last().map(|a| a.kind),
            ConnectError::Setup { .. } => None,
        }
    }
}

fn render_attempts(attempts: &[ConnectAttempt]) -> String {
    if attempts.is_empty() {
        return "no server to connect to (empty host list)".into();
    }
    attempts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `postgres::Error` with its cause (its own `Display` omits it).
fn error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}:  {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (DETAIL: {d})"));
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// Like [`error_text`], but in libpq's words for connection failures: the OS error alone
/// ("Connection refused"), or `fe_sendauth: no password supplied`.
fn connect_error_text(e: &postgres::Error) -> String {
    let src = std::error::Error::source(e);
    if is_tls_error(e) {
        return match src {
            Some(src) => format!("TLS: {src}"),
            None => "TLS handshake failed".into(),
        };
    }
    if e.as_db_error().is_none() {
        if let Some(io) = src.and_then(|s| s.downcast_ref::<std::io::Error>()) {
            return io.to_string();
        }
        if src.is_some_and(|s| s.to_string() == "password missing") {
            return "fe_sendauth: no password supplied".into();
        }
    }
    error_text(e)
}

impl ConnectAttempt {
    /// TLS could not even be set up (files, permissions): nothing was sent to the server.
    fn tls_setup(t: &Target, e: &TlsError) -> ConnectAttempt {
        ConnectAttempt {
            target: t.describe(),
            kind: FailureKind::Tls,
            message: e.to_string(),
            sqlstate: None,
            hint: None,
        }
    }

    fn from_error(s: &ConnSettings, t: &Target, e: &postgres::Error) -> ConnectAttempt {
        let user = &s.user;
        let (kind, sqlstate, hint) = if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let (kind, hint) = match code {
                "28P01" => (
                    FailureKind::AuthenticationFailed,
                    Some(format!(
                        "password authentication failed for user \"{user}\": check PGPASSWORD, {} or \
                     the password in the connection string{}",
                        passfile_name(s),
                        match &t.password_source {
                            PasswordSource::Passfile(p) =>
                                format!(" (the password used came from {})", p.display()),
                            PasswordSource::Env =>
                                " (the password used came from PGPASSWORD)".into(),
                            PasswordSource::ConnString =>
                                " (the password used came from the connection string)".into(),
                            PasswordSource::Service =>
                                " (the password used came from the connection service file)".into(),
                            PasswordSource::None => String::new(),
                        }
                    )),
                ),
                "28000"
                    if db.message().contains("no encryption")
                        || db.message().contains("SSL off") =>
                {
                    (
                        FailureKind::Rejected,
                        Some(format!(
                            "pg_hba.conf on the server lets user \"{user}\" in only over TLS \
                         (hostssl): connect over TCP with sslmode=require or stronger \
                         (verify-full checks the server's certificate)"
                        )),
                    )
                }
                "28000" if db.message().contains("certificate") => (
                    FailureKind::Rejected,
                    Some(format!(
                        "the server wants a client certificate for user \"{user}\", signed by a \
                         CA in its ssl_ca_file and whose Common Name is the user name (or mapped \
                         in pg_ident.conf): give it with sslcert and sslkey (default \
                         ~/.postgresql/postgresql.crt and .key)"
                    )),
                ),
                "28000" => (
                    FailureKind::Rejected,
                    Some(format!(
                        "check that pg_hba.conf on the server lets user \"{user}\" connect to database \
                     \"{}\" from here, with a method pgsafe supports (trust, peer, password, md5, \
                     scram-sha-256, cert)",
                        s.dbname
                    )),
                ),
                "3D000" => (
                    FailureKind::Rejected,
                    Some(format!(
                        "database \"{}\" does not exist: name an existing one with -d (for example -d postgres)",
                        s.dbname
                    )),
                ),
                "57P03" => (
                    FailureKind::Rejected,
                    Some(
                        "the server is starting up, shutting down or \
                     not accepting connections yet; retry when it is ready"
                            .into(),
                    ),
                ),
                "53300" | "53400" => (
                    FailureKind::Rejected,
                    Some(
                        "the server has no free \
                     connection slot for this user; free one or raise max_connections"
                            .into(),
                    ),
                ),
                _ => (FailureKind::Rejected, None),
            };
            (kind, Some(code.to_owned()), hint)
        } else {
            let (kind, hint) = classify_client_error(s, t, e);
            (kind, None, hint)
        };
        ConnectAttempt {
            target: t.describe(),
            kind,
            message: connect_error_text(e),
            sqlstate,
            hint,
        }
    }
}

fn passfile_name(s: &ConnSettings) -> String {
    s.passfile
        .as_ref()
        .map_or("~/.pgpass".into(), |p| p.display().to_string())
}

/// tokio-postgres reports every TLS failure (a server without TLS included) as this kind,
/// whose text is fixed; the cause is the error's source.
fn is_tls_error(e: &postgres::Error) -> bool {
    e.as_db_error().is_none() && e.to_string() == "error performing TLS handshake"
}

/// What to check after a failed TLS handshake.
fn tls_hint(s: &ConnSettings, t: &Target, e: &postgres::Error) -> String {
    use rustls::CertificateError as C;
    let src = std::error::Error::source(e);
    let rustls_error = src
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(|io| io.get_ref())
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    let roots = match s.tls.rootcert.as_deref() {
        Some("system") => "the system's trusted roots".to_owned(),
        Some(f) => format!("\"{f}\""),
        None => "~/.postgresql/root.crt".to_owned(),
    };
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::UnknownIssuer | C::BadSignature => format!(
                "the server's certificate is not signed by a certificate authority in {roots}: \
                 give the CA that signed it with sslrootcert"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's certificate is not issued for \"{}\" (its subjectAltName \
                 lists the names it is for): connect by one of those names, or fix the \
                 certificate; sslmode=verify-ca checks the issuer only",
                t.host
            ),
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => {
                "the server's certificate is outside its validity period (check the clocks, \
                 or renew the certificate)"
                    .into()
            }
            C::Revoked => "the server's certificate is revoked (sslcrl / sslcrldir)".into(),
            C::UnknownRevocationStatus => "revocation lists were given (sslcrl, sslcrldir or \
                 ~/.postgresql/root.crl) but none covers a certificate of the server's chain; \
                 add its issuer's list"
                .into(),
            _ => format!("the server's certificate was refused; check it against {roots}"),
        },
        Some(rustls::Error::AlertReceived(_)) => "the server refused the handshake: check the \
             client certificate (sslcert, sslkey) and the server's ssl settings and log"
            .into(),
        _ if src.is_some_and(|s| s.to_string() == "server does not support TLS") => format!(
            "the server at {} does not accept TLS (ssl = off): turn ssl on in its \
             postgresql.conf, or connect with sslmode=prefer or disable over a trusted network",
            t.host
        ),
        _ if s.tls.direct => "sslnegotiation=direct needs a server of PostgreSQL 17 or later; \
             use sslnegotiation=postgres for older ones"
            .into(),
        _ => "check sslmode, sslrootcert and the server's ssl settings".into(),
    }
}

fn classify_client_error(
    s: &ConnSettings,
    t: &Target,
    e: &postgres::Error,
) -> (FailureKind, Option<String>) {
    use std::io::ErrorKind as K;
    if is_tls_error(e) {
        return (FailureKind::Tls, Some(tls_hint(s, t, e)));
    }
    let src = std::error::Error::source(e);
    let src_text = src.map(ToString::to_string).unwrap_or_default();
    let unreachable = || match t.socket_path() {
        Some(p) => format!(
            "is the server running locally and accepting connections on Unix socket \"{}\"? \
             (give the socket directory with -h, the port with -p)",
            p.display()
        ),
        None => format!(
            "is the server running on host \"{}\" and accepting TCP/IP connections on port {}?",
            t.host, t.port
        ),
    };
    if let Some(io) = src.and_then(|s| s.downcast_ref::<std::io::Error>()) {
        return match io.kind() {
            K::TimedOut => (
                FailureKind::Timeout,
                Some(format!(
                    "no answer within connect_timeout={} s; check the host, port and firewalls",
                    s.connect_timeout.unwrap_or(0)
                )),
            ),
            K::PermissionDenied
                if src_text.contains("does not allow writes")
                    || src_text.contains("not read only") =>
            {
                (
                    FailureKind::Rejected,
                    Some(format!(
                        "target_session_attrs={} excluded this server",
                        s.target_session_attrs.as_str()
                    )),
                )
            }
            K::PermissionDenied => (
                FailureKind::Unreachable,
                Some(format!(
                    "{} (check the permissions of the socket and its directory)",
                    unreachable()
                )),
            ),
            _ if src_text.contains("lookup address") => (
                FailureKind::Unreachable,
                Some(format!(
                    "could not translate host name \"{}\" to an address; check the host name",
                    t.host
                )),
            ),
            K::ConnectionRefused
            | K::NotFound
            | K::AddrNotAvailable
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::UnexpectedEof => (FailureKind::Unreachable, Some(unreachable())),
            _ => (FailureKind::Other, None),
        };
    }
    if src_text == "password missing" {
        return (
            FailureKind::PasswordRequired,
            Some(format!(
                "the server asks for a password for user \"{}\" and none was found: set PGPASSWORD, \
             add a line to {} (mode 0600), or put the password in the connection string",
                s.user,
                passfile_name(s)
            )),
        );
    }
    if src_text.contains("unsupported authentication method") {
        return (
            FailureKind::Rejected,
            Some(
                "pgsafe can use trust, peer, password, md5, scram-sha-256 and cert authentication"
                    .into(),
            ),
        );
    }
    if e.to_string().contains("timeout") {
        return (FailureKind::Timeout, None);
    }
    (FailureKind::Other, None)
}
