//! Resolution: the connection string, `-h`/`-p`/`-U`, the connection service, the `PG*`
//! environment variables and the defaults merged into [`ConnSettings`] (libpq's
//! `conninfo_array_parse`, `conninfo_add_defaults`, `pqConnectOptions2`). Precedence:
//! `-h`/`-p`/`-U` > connection string > service file > environment > defaults.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::parse::{KEYWORDS, Support};
use super::service::{self, ServiceWorld};
use super::tls::{self, ChannelBinding, SslCertMode, TlsSettings};
use super::{
    ConnInfoError, ConnInput, ConnOptions, ConnSettings, DEFAULT_PORT, DEFAULT_SOCKET_DIRS, Host,
    Keepalives, PassfileRead, PasswordSource, PgpassKey, Secret, SslMode, System, Target,
    TargetSessionAttrs, is_connection_string, os_user, parse_conninfo, pgpass,
};

/// Where a setting that was not in the connection string came from (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Env(&'static str),
    Service,
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
            read_service_file: &service::read_service_file,
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
        // 3. The connection service (`service`, else PGSERVICE) for what is still unset.
        let mut env_of: BTreeMap<&'static str, Origin> = BTreeMap::new();
        let home = home_dir(sys);
        let service_name = opts
            .get("service")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| (sys.env)("PGSERVICE").filter(|s| !s.is_empty()));
        let mut service = None;
        if let Some(name) = service_name {
            let world = ServiceWorld {
                env: sys.env,
                home: home.clone(),
                read: sys.read_service_file,
            };
            let (file, settings) = service::lookup_service(&name, &world)?;
            for (key, value) in settings {
                if opts.get(key).is_none() {
                    opts.set(key, &value)
                        .map_err(|e| ConnInfoError::FromService {
                            service: name.clone(),
                            error: Box::new(e),
                        })?;
                    env_of.insert(key, Origin::Service);
                }
            }
            service = Some((name, file));
        }
        // 4. Environment variables for what is still unset.
        for kw in KEYWORDS {
            let Some(var) = kw.env else { continue };
            if opts.get(kw.name).is_none() {
                if let Some(v) = (sys.env)(var) {
                    opts.set(kw.name, &v).map_err(|e| ConnInfoError::FromEnv {
                        var,
                        error: Box::new(e),
                    })?;
                    env_of.insert(kw.name, Origin::Env(var));
                }
            }
        }
        if opts.get("sslmode").is_none()
            && (sys.env)("PGREQUIRESSL").is_some_and(|v| v.starts_with('1'))
        {
            opts.set("sslmode", "require")?;
            env_of.insert("sslmode", Origin::Env("PGREQUIRESSL"));
        }
        let mut settings = Resolver {
            opts: &opts,
            env_of: &env_of,
            sys,
            home,
            service: service.as_ref().map(|(name, _)| name.clone()),
            warnings: Vec::new(),
        }
        .finish()?;
        settings.service = service;
        Ok(settings)
    }
}

/// The home directory: `HOME` if set and not empty, else the passwd entry's (libpq
/// `pqGetHomeDirectory`).
fn home_dir(sys: &System<'_>) -> Option<PathBuf> {
    (sys.env)("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| (sys.os_user)().ok().map(|(_, home)| home))
}

/// A file name as given, made absolute against the current directory (the snapshot-mode
/// holder runs in `/`, so a relative name must not be resolved later).
fn absolute(p: &str) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| PathBuf::from(p))
}

/// Last step of resolution: turns the merged options into settings.
struct Resolver<'a> {
    opts: &'a ConnOptions,
    env_of: &'a BTreeMap<&'static str, Origin>,
    home: Option<PathBuf>,
    /// The service name, when one was used.
    service: Option<String>,
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
            Some(Origin::Env(var)) => ConnInfoError::FromEnv {
                var,
                error: Box::new(error),
            },
            Some(Origin::Service) => ConnInfoError::FromService {
                service: self.service.clone().unwrap_or_default(),
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
        let (sslmode, tls) = self.tls()?;
        self.check_gss_and_balancing()?;
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
            None => self.home.as_ref().map(|home| home.join(".pgpass")),
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
            tls,
            service: None,
            warnings: self.warnings,
        })
    }

    /// `sslmode` and the TLS options (libpq `conninfo_add_defaults`, `pqConnectOptions2`).
    fn tls(&self) -> Result<(SslMode, TlsSettings), ConnInfoError> {
        let rootcert = self.get("sslrootcert");
        let system = rootcert == Some("system");
        let sslmode = match self.get("sslmode") {
            // libpq: sslrootcert=system strengthens the default to verify-full.
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
            Some(v) => SslMode::ALL
                .into_iter()
                .find(|m| m.as_str() == v)
                .ok_or_else(|| {
                    let e = ConnInfoError::InvalidValue {
                        option: "sslmode",
                        value: v.to_owned(),
                    };
                    self.ctx("sslmode", e)
                })?,
        };
        if system && sslmode != SslMode::VerifyFull {
            let e = ConnInfoError::WeakSslMode {
                mode: sslmode.as_str(),
                with: "sslrootcert=system",
                instead: "\"verify-full\"",
            };
            return Err(self.ctx("sslmode", e));
        }
        let direct = self.choice("sslnegotiation", &["postgres", "direct"])? == Some("direct");
        if direct && !sslmode.requires_tls() {
            let e = ConnInfoError::WeakSslMode {
                mode: sslmode.as_str(),
                with: "sslnegotiation=direct",
                instead: "\"require\", \"verify-ca\", or \"verify-full\"",
            };
            return Err(self.ctx("sslmode", e));
        }
        let certmode = match self.choice("sslcertmode", &["disable", "allow", "require"])? {
            Some("disable") => SslCertMode::Disable,
            Some("require") => SslCertMode::Require,
            _ => SslCertMode::Allow,
        };
        let channel_binding =
            match self.choice("channel_binding", &["disable", "prefer", "require"])? {
                Some("disable") => ChannelBinding::Disable,
                Some("require") => ChannelBinding::Require,
                _ => ChannelBinding::Prefer,
            };
        let mut versions = [None, None];
        for (slot, key) in versions
            .iter_mut()
            .zip(["ssl_min_protocol_version", "ssl_max_protocol_version"])
        {
            if let Some(v) = self.get(key) {
                let n = tls::protocol_version(v).ok_or_else(|| {
                    let e = ConnInfoError::InvalidValue {
                        option: key,
                        value: v.to_owned(),
                    };
                    self.ctx(key, e)
                })?;
                *slot = Some((n, v.to_owned()));
            }
        }
        if let [Some((min, _)), Some((max, _))] = &versions {
            if min > max {
                return Err(ConnInfoError::ProtocolRange);
            }
        }
        let [min_protocol, max_protocol] = versions.map(|v| v.map(|(_, name)| name));
        let file = |key| self.get(key).map(absolute);
        let tls = TlsSettings {
            rootcert: rootcert.map(|r| {
                if r == "system" {
                    r.to_owned()
                } else {
                    absolute(r).display().to_string()
                }
            }),
            crl: file("sslcrl"),
            crldir: file("sslcrldir"),
            cert: file("sslcert"),
            key: file("sslkey"),
            default_dir: self.home.as_ref().map(|h| h.join(".postgresql")),
            // libpq: on when the value starts with '1' (the default).
            sni: self.get("sslsni").is_none_or(|v| v.starts_with('1')),
            certmode,
            direct,
            channel_binding,
            min_protocol,
            max_protocol,
        };
        Ok((sslmode, tls))
    }

    /// GSSAPI encryption and load balancing: accepted unless they demand what pgsafe lacks.
    fn check_gss_and_balancing(&self) -> Result<(), ConnInfoError> {
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
            let source = match self.env_of.get("password") {
                Some(Origin::Env(_)) => PasswordSource::Env,
                Some(Origin::Service) => PasswordSource::Service,
                None => PasswordSource::ConnString,
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
