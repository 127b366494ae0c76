//! Pure tests of resolution: the environment, the file system probes and the password file are
//! all injected.

use std::collections::HashMap;

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::types::PgVersion;

/// A fake outside world.
#[derive(Default, Clone)]
struct World {
    env: HashMap<String, String>,
    sockets: Vec<PathBuf>,
    os_user: Option<(String, PathBuf)>,
    passfiles: HashMap<PathBuf, PassfileRead>,
    service_files: HashMap<PathBuf, Vec<u8>>,
}

impl World {
    fn new() -> World {
        World {
            os_user: Some(("alice".into(), "/home/alice".into())),
            ..World::default()
        }
    }

    fn env(mut self, k: &str, v: &str) -> World {
        self.env.insert(k.into(), v.into());
        self
    }

    fn socket(mut self, path: &str) -> World {
        self.sockets.push(path.into());
        self
    }

    fn passfile(mut self, path: &str, mode: u32, text: &str) -> World {
        let read = PassfileRead::Read {
            mode,
            bytes: text.as_bytes().to_vec(),
        };
        self.passfiles.insert(path.into(), read);
        self
    }

    fn service_file(mut self, path: &str, text: &str) -> World {
        self.service_files
            .insert(path.into(), text.as_bytes().to_vec());
        self
    }

    fn resolve(&self, input: &ConnInput) -> Result<ConnSettings, ConnInfoError> {
        let env = |k: &str| self.env.get(k).cloned();
        let socket_exists = |p: &Path| self.sockets.iter().any(|s| s == p);
        let os_user = || self.os_user.clone().ok_or(1234u32);
        let read_passfile = |p: &Path| {
            self.passfiles
                .get(p)
                .cloned()
                .unwrap_or(PassfileRead::Missing)
        };
        let read_service_file = |p: &Path| match self.service_files.get(p) {
            Some(b) => ServiceFileRead::Read(b.clone()),
            None => ServiceFileRead::Missing,
        };
        let sys = System {
            env: &env,
            socket_exists: &socket_exists,
            os_user: &os_user,
            read_passfile: &read_passfile,
            read_service_file: &read_service_file,
        };
        ConnSettings::resolve_with(input, &sys)
    }

    fn d(&self, dbname: &str) -> Result<ConnSettings, ConnInfoError> {
        self.resolve(&ConnInput {
            dbname: Some(dbname.into()),
            ..ConnInput::default()
        })
    }
}

fn input(d: Option<&str>, h: Option<&str>, p: Option<&str>, u: Option<&str>) -> ConnInput {
    let s = |v: Option<&str>| v.map(str::to_owned);
    ConnInput {
        dbname: s(d),
        host: s(h),
        port: s(p),
        user: s(u),
    }
}

fn hosts(s: &ConnSettings) -> Vec<(String, u16)> {
    s.targets
        .iter()
        .map(|t| (t.host.to_string(), t.port))
        .collect()
}

fn unix(dir: &str) -> Host {
    Host::Unix(dir.into())
}

#[test]
fn defaults_follow_libpq() {
    let s = World::new().resolve(&ConnInput::default()).unwrap();
    assert_eq!(s.targets.len(), 1);
    assert_eq!(s.targets[0].host, unix("/var/run/postgresql"));
    assert_eq!(s.targets[0].port, 5432);
    assert_eq!((s.user.as_str(), s.dbname.as_str()), ("alice", "alice"));
    assert_eq!(s.sslmode, SslMode::Prefer);
    assert_eq!(
        s.passfile.as_deref(),
        Some(Path::new("/home/alice/.pgpass"))
    );
    assert_eq!(s.application_name, None);
    assert_eq!(s.keepalives, Keepalives::default());
    // The socket directory is the first default one whose socket exists for that port.
    let w = World::new().socket("/tmp/.s.PGSQL.5433");
    let s = w.resolve(&input(None, None, Some("5433"), None)).unwrap();
    assert_eq!(s.targets[0].host, unix("/tmp"));
    let s = w.resolve(&ConnInput::default()).unwrap();
    assert_eq!(s.targets[0].host, unix("/var/run/postgresql"));
    // Without a passwd entry the user must be given.
    let mut w = World::new();
    w.os_user = None;
    assert_eq!(
        w.resolve(&ConnInput::default()),
        Err(ConnInfoError::NoOsUser(1234))
    );
    let s = w.resolve(&input(None, None, None, Some("bob"))).unwrap();
    assert_eq!(
        (s.user.as_str(), s.dbname.as_str(), s.passfile),
        ("bob", "bob", None)
    );
}

#[test]
fn precedence_flags_over_conninfo_over_env_over_defaults() {
    let w = World::new()
        .env("PGHOST", "envhost")
        .env("PGPORT", "6000")
        .env("PGUSER", "envuser")
        .env("PGDATABASE", "envdb")
        .env("PGAPPNAME", "envapp");
    // Environment over defaults.
    let s = w.resolve(&ConnInput::default()).unwrap();
    assert_eq!(hosts(&s), [("envhost".into(), 6000)]);
    assert_eq!((s.user.as_str(), s.dbname.as_str()), ("envuser", "envdb"));
    assert_eq!(s.application_name.as_deref(), Some("envapp"));
    // Connection string over environment.
    let s = w
        .d("host=cshost port=7000 user=csuser dbname=csdb")
        .unwrap();
    assert_eq!(hosts(&s), [("cshost".into(), 7000)]);
    assert_eq!((s.user.as_str(), s.dbname.as_str()), ("csuser", "csdb"));
    // Flags over the connection string.
    let i = input(
        Some("postgresql://csuser@cshost:7000/csdb"),
        Some("flaghost"),
        Some("8000"),
        Some("flaguser"),
    );
    let s = w.resolve(&i).unwrap();
    assert_eq!(hosts(&s), [("flaghost".into(), 8000)]);
    assert_eq!((s.user.as_str(), s.dbname.as_str()), ("flaguser", "csdb"));
    // Empty flags are ignored.
    let s = w
        .resolve(&input(Some(""), Some(""), Some(""), Some("")))
        .unwrap();
    assert_eq!(hosts(&s), [("envhost".into(), 6000)]);
    // dbname defaults to the user however it was chosen.
    let s = World::new()
        .resolve(&input(None, None, None, Some("carol")))
        .unwrap();
    assert_eq!(s.dbname, "carol");
}

#[test]
fn empty_conninfo_value_hides_env_and_means_default() {
    let w = World::new().env("PGHOST", "envhost").env("PGPORT", "6000");
    let s = w.d("host='' port=").unwrap();
    assert_eq!(hosts(&s), [("/var/run/postgresql".into(), 5432)]);
    // A URI never stores empty parts, so the environment still applies.
    let s = w.d("postgresql:///db").unwrap();
    assert_eq!(hosts(&s), [("envhost".into(), 6000)]);
    assert_eq!(s.dbname, "db");
}

#[test]
fn expand_dbname_only_for_connection_strings() {
    let w = World::new();
    assert_eq!(w.d("mydb").unwrap().dbname, "mydb");
    assert_eq!(w.d("my db;x").unwrap().dbname, "my db;x");
    assert_eq!(w.d("dbname=inner").unwrap().dbname, "inner");
    assert_eq!(w.d("postgres://h/uridb").unwrap().dbname, "uridb");
    // The dbname inside a connection string is not expanded again.
    assert_eq!(w.d("dbname='a=b'").unwrap().dbname, "a=b");
    assert_eq!(
        w.d("x=1").unwrap_err(),
        ConnInfoError::InvalidOption("x".into())
    );
}

#[test]
fn sockets_tcp_ipv6_and_host_lists() {
    let w = World::new();
    // Brackets are URI syntax only: in key=value form they are part of the name.
    assert_eq!(
        w.d("host=[::1]").unwrap().targets[0].host,
        Host::Tcp("[::1]".into())
    );
    let s = w.d("postgresql://%2Ftmp,db1:5434,[::1]:5435/d").unwrap();
    assert_eq!(
        hosts(&s),
        [
            ("/tmp".into(), 5432),
            ("db1".into(), 5434),
            ("::1".into(), 5435)
        ]
    );
    assert_eq!(s.targets[0].host, unix("/tmp"));
    assert_eq!(s.targets[2].host, Host::Tcp("::1".into()));
    // One port for all hosts; an empty list element means the default.
    let s = w.d("host=/tmp,,db1 port=6543").unwrap();
    assert_eq!(
        hosts(&s),
        [
            ("/tmp".into(), 6543),
            ("/var/run/postgresql".into(), 6543),
            ("db1".into(), 6543)
        ]
    );
    let s = w.d("host=a,b port=1,").unwrap();
    assert_eq!(hosts(&s), [("a".into(), 1), ("b".into(), 5432)]);
    assert_eq!(
        w.d("host=a,b,c port=1,2").unwrap_err().to_string(),
        "could not match 2 port numbers to 3 hosts"
    );
    for bad in ["0", "65536", "x", "-1", "5432x"] {
        assert_eq!(
            w.d(&format!("port={bad}")).unwrap_err(),
            ConnInfoError::Port(bad.into())
        );
    }
    assert_eq!(w.d("port=' 5433 '").unwrap().targets[0].port, 5433);
    let e = w.d("host=@abstract").unwrap_err().to_string();
    assert!(e.contains("abstract"), "{e}");
    // A relative path is a host name, as in libpq.
    assert_eq!(
        w.d("host=tmp").unwrap().targets[0].host,
        Host::Tcp("tmp".into())
    );
}

#[test]
fn hostaddr_rules() {
    let w = World::new();
    let s = w.d("host=db.example.com hostaddr=10.0.0.5").unwrap();
    let t = &s.targets[0];
    assert_eq!(
        (t.host.clone(), t.hostaddr),
        (
            Host::Tcp("db.example.com".into()),
            Some("10.0.0.5".parse().unwrap())
        )
    );
    assert_eq!(
        t.describe(),
        "server at \"db.example.com\" (10.0.0.5), port 5432"
    );
    let s = w.d("hostaddr=::1").unwrap();
    assert_eq!(s.targets[0].host, Host::Tcp("::1".into()));
    assert_eq!(s.targets[0].describe(), "server at \"::1\", port 5432");
    let s = w.d("host=a,b hostaddr=,127.0.0.1").unwrap();
    assert_eq!(s.targets[0].hostaddr, None);
    assert_eq!(s.targets[1].hostaddr, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        w.d("host=a hostaddr=1.1.1.1,2.2.2.2")
            .unwrap_err()
            .to_string(),
        "could not match 1 host names to 2 hostaddr values"
    );
    assert_eq!(
        w.d("hostaddr=db").unwrap_err(),
        ConnInfoError::Hostaddr("db".into())
    );
    // PGHOSTADDR applies even with -h, as in libpq.
    let w = World::new().env("PGHOSTADDR", "127.0.0.2");
    let s = w.resolve(&input(None, Some("name"), None, None)).unwrap();
    assert_eq!(s.targets[0].hostaddr, Some("127.0.0.2".parse().unwrap()));
}

#[test]
fn env_errors_name_the_variable() {
    let w = World::new().env("PGPORT", "abc");
    let e = w.resolve(&ConnInput::default()).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid port number: \"abc\" (from environment variable PGPORT)"
    );
    let e = World::new()
        .env("PGSSLMODE", "verify-fuller")
        .resolve(&ConnInput::default())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid sslmode value: \"verify-fuller\" (from environment variable PGSSLMODE)"
    );
    let e = World::new()
        .env("PGCONNECT_TIMEOUT", "soon")
        .resolve(&ConnInput::default())
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "invalid integer value \"soon\" for connection option \"connect_timeout\""
        )
    );
    // -p overrides a bad PGPORT.
    assert!(w.resolve(&input(None, None, Some("5432"), None)).is_ok());
}

#[test]
fn unsupported_options() {
    let w = World::new();
    for unsupported in [
        "require_auth=md5",
        "requirepeer=postgres",
        "replication=true",
        "gssencmode=require",
        "load_balance_hosts=random",
        "target_session_attrs=primary",
    ] {
        let e = w.d(unsupported).unwrap_err();
        assert!(
            matches!(e, ConnInfoError::Unsupported { .. }),
            "{unsupported}: {e}"
        );
        assert!(e.to_string().contains("not supported by pgsafe"));
    }
    assert_eq!(
        w.d("target_session_attrs=read-write")
            .unwrap()
            .target_session_attrs,
        TargetSessionAttrs::ReadWrite
    );
    assert!(
        w.d("target_session_attrs=bogus")
            .unwrap_err()
            .to_string()
            .contains("invalid target_session_attrs value")
    );
    let s = w.d("client_encoding=LATIN1").unwrap();
    assert!(s.warnings[0].contains("client_encoding"));
    assert!(w.d("client_encoding=UTF8").unwrap().warnings.is_empty());
}

#[test]
fn numeric_options() {
    let w = World::new();
    let timeout = |v: &str| {
        w.d(&format!("connect_timeout={v}"))
            .unwrap()
            .connect_timeout
    };
    assert_eq!(
        (
            timeout("10"),
            timeout("1"),
            timeout("0"),
            timeout("-5"),
            timeout(" 7 ")
        ),
        (Some(10), Some(2), None, None, Some(7))
    );
    let s = w.d("keepalives=0 keepalives_idle=5 keepalives_interval=-1 keepalives_count=3 tcp_user_timeout=1500").unwrap();
    assert_eq!(
        s.keepalives,
        Keepalives {
            enabled: false,
            idle_secs: Some(5),
            interval_secs: Some(0),
            count: Some(3)
        }
    );
    assert_eq!(s.tcp_user_timeout_ms, Some(1500));
    assert!(w.d("keepalives=yes").is_err());
    assert!(w.d("keepalives_idle=99999999999").is_err());
}

#[test]
fn passwords_explicit_env_and_passfile() {
    let file = "localhost:5432:*:alice:sockpw\n\
                /srv/sock:5432:*:alice:otherdirpw\n\
                db1:*:*:alice:db1pw\n\
                10.0.0.9:*:*:*:addrpw\n";
    let w = World::new().passfile("/home/alice/.pgpass", 0o100600, file);
    let pw = |s: &ConnSettings, i: usize| {
        s.targets[i]
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
    };
    // Default socket directory matches "localhost"; another directory matches its path.
    let s = w.resolve(&ConnInput::default()).unwrap();
    assert_eq!(pw(&s, 0).as_deref(), Some("sockpw"));
    assert_eq!(
        s.targets[0].password_source,
        PasswordSource::Passfile("/home/alice/.pgpass".into())
    );
    let s = w.d("host=/tmp,/srv/sock,db1,db2").unwrap();
    assert_eq!(
        (0..4).map(|i| pw(&s, i)).collect::<Vec<_>>(),
        [
            Some("sockpw".into()),
            Some("otherdirpw".into()),
            Some("db1pw".into()),
            None
        ]
    );
    // hostaddr is the key when no host is given.
    assert_eq!(
        pw(&w.d("hostaddr=10.0.0.9").unwrap(), 0).as_deref(),
        Some("addrpw")
    );
    // An explicit password wins and applies to every host.
    let s = w.d("host=db1,db2 password=given").unwrap();
    assert!(
        s.targets
            .iter()
            .all(|t| t.password.as_ref().map(Secret::expose) == Some("given"))
    );
    assert_eq!(s.targets[0].password_source, PasswordSource::ConnString);
    let s = World::new()
        .env("PGPASSWORD", "fromenv")
        .passfile("/home/alice/.pgpass", 0o100600, file)
        .resolve(&ConnInput::default())
        .unwrap();
    assert_eq!(
        (pw(&s, 0).as_deref(), &s.targets[0].password_source),
        (Some("fromenv"), &PasswordSource::Env)
    );
    // An empty password counts as none: the password file is used.
    assert_eq!(
        pw(&w.d("password=''").unwrap(), 0).as_deref(),
        Some("sockpw")
    );
    // URI password.
    assert_eq!(
        pw(&w.d("postgresql://u:p%40ss@h/d").unwrap(), 0).as_deref(),
        Some("p@ss")
    );
}

#[test]
fn passfile_location_and_permissions() {
    let w = World::new()
        .env("HOME", "/env/home")
        .passfile("/env/home/.pgpass", 0o100600, "*:*:*:*:homepw\n")
        .passfile("/custom", 0o100600, "*:*:*:*:custompw\n")
        .passfile("/loose", 0o100644, "*:*:*:*:loosepw\n");
    let pw = |s: &ConnSettings| {
        s.targets[0]
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
    };
    assert_eq!(
        pw(&w.resolve(&ConnInput::default()).unwrap()).as_deref(),
        Some("homepw")
    );
    let w = w.env("PGPASSFILE", "/custom");
    assert_eq!(
        pw(&w.resolve(&ConnInput::default()).unwrap()).as_deref(),
        Some("custompw")
    );
    let s = w.d("passfile=/loose host=a,b").unwrap();
    assert_eq!(pw(&s), None);
    assert_eq!(
        s.warnings.len(),
        1,
        "one warning, not one per host: {:?}",
        s.warnings
    );
    assert!(s.warnings[0].contains("group or world access"));
    let w = World::new()
        .passfile("/bad", 0o100600, "")
        .env("PGPASSFILE", "/bad");
    let mut w = w;
    w.passfiles.insert(
        "/bad".into(),
        PassfileRead::Unreadable("Permission denied".into()),
    );
    let s = w.resolve(&ConnInput::default()).unwrap();
    assert!(s.warnings[0].contains("could not read password file \"/bad\""));
}

#[test]
fn passwords_never_shown() {
    let w = World::new();
    let s = w.d("postgresql://u:hunter2@h/d").unwrap();
    for shown in [
        format!("{s:?}"),
        s.to_string(),
        s.redacted(),
        s.to_conninfo(),
        format!("{:?}", s.targets[0]),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    assert!(s.redacted().ends_with("password=********"));
    assert_eq!(Secret::new("x").to_string(), "********");
    // Errors about a password never echo it either.
    let e = w
        .d("postgresql://u:hun%zzter2@h/d")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hun"), "{e}");
    // The serde form carries it (for the pipe to a child process) and round-trips.
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("hunter2"));
    let back: ConnSettings = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn conninfo_round_trip() {
    let w = World::new();
    let cases = [
        "",
        "host=/tmp,db1,[::1] port=1,2,3",
        "postgresql://bob@%2Fsrv%2Fpg%20sock:5439/my%20db?application_name=it%27s&options=-c%20work_mem%3D4MB",
        "host=a,b hostaddr=,127.0.0.1 connect_timeout=1 keepalives=0 keepalives_idle=0 keepalives_interval=4 keepalives_count=2 tcp_user_timeout=9 target_session_attrs=read-only sslmode=disable passfile='/p q' sslrootcert=/r sslcert=/c sslkey=/k",
        "sslmode=verify-ca sslrootcert='/r s' sslcrl=/l sslcrldir=/d sslsni=0 sslcertmode=require channel_binding=require ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=tlsv1.3",
        "sslmode=require sslnegotiation=direct sslcertmode=disable channel_binding=disable",
        "sslrootcert=system",
        "fallback_application_name=fb user=\"q\\\\ dbname='x y'",
    ];
    for case in cases {
        let s = w.d(case).unwrap();
        let text = s.to_conninfo();
        let again = w.d(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(again, s, "{case} -> {text}");
    }
}

#[test]
fn postgres_configs_carry_settings_and_session_defaults() {
    let s = World::new()
        .d("host=/tmp,db1 hostaddr=,10.1.2.3 port=5433 user=u dbname=d password=pw connect_timeout=7 options='-c x=1'")
        .unwrap();
    let c = s.to_postgres_configs();
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[0].get_hosts(),
        [postgres::config::Host::Unix("/tmp".into())]
    );
    assert_eq!(
        c[1].get_hosts(),
        [postgres::config::Host::Tcp("db1".into())]
    );
    assert_eq!(
        c[1].get_hostaddrs(),
        ["10.1.2.3".parse::<IpAddr>().unwrap()]
    );
    for cfg in &c {
        assert_eq!(cfg.get_ports(), [5433]);
        assert_eq!((cfg.get_user(), cfg.get_dbname()), (Some("u"), Some("d")));
        assert_eq!(cfg.get_password(), Some(&b"pw"[..]));
        assert_eq!(cfg.get_application_name(), Some("pgsafe"));
        assert_eq!(cfg.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(cfg.get_options(), Some("-c x=1"));
        assert!(cfg.get_keepalives());
        assert_eq!(cfg.get_keepalives_idle(), Duration::from_secs(30));
        // The crate's own Debug does not show the password either.
        assert!(!format!("{cfg:?}").contains("\"pw\""));
    }
    let s = World::new()
        .d("application_name=mine keepalives_idle=12 keepalives=0")
        .unwrap();
    let c = &s.to_postgres_configs()[0];
    assert_eq!(c.get_application_name(), Some("mine"));
    assert_eq!(c.get_keepalives_idle(), Duration::from_secs(12));
    assert!(!c.get_keepalives());
    let s = World::new().d("fallback_application_name=fb").unwrap();
    assert_eq!(
        s.to_postgres_configs()[0].get_application_name(),
        Some("fb")
    );
}

#[test]
fn session_setup_depends_on_version() {
    let v = |s: &str| s.parse::<PgVersion>().unwrap();
    let base = [
        "SET statement_timeout = 0",
        "SET idle_in_transaction_session_timeout = 0",
    ];
    assert_eq!(session_setup_sql(v("10")), base);
    assert_eq!(session_setup_sql(v("13.9")), base);
    assert_eq!(
        session_setup_sql(v("14")).last(),
        Some(&"SET idle_session_timeout = 0")
    );
    assert_eq!(session_setup_sql(v("16")).len(), 3);
    assert_eq!(
        session_setup_sql(v("17")).last(),
        Some(&"SET transaction_timeout = 0")
    );
    assert_eq!(session_setup_sql(v("18")).len(), 4);
}

#[test]
fn connect_failure_names_socket_and_hints() {
    // No server: a socket path in an empty directory (quick and local, no server needed).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let s = World::new()
        .d(&format!("host='{d}' port=5499 user=u password=x"))
        .unwrap();
    let Err(err) = s.connect() else {
        panic!("connected to nothing?")
    };
    assert_eq!(err.kind(), Some(FailureKind::Unreachable));
    let text = err.to_string();
    let sock = format!("{d}/.s.PGSQL.5499");
    assert!(
        text.starts_with(&format!(
            "connection to server on socket \"{sock}\" failed: "
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("accepting connections on Unix socket \"{sock}\"")),
        "{text}"
    );
    assert!(!text.contains("x\""));
    let ConnectError::Failed { attempts } = err else {
        panic!()
    };
    assert_eq!(attempts.len(), 1);
}

proptest! {
    #[test]
    fn resolve_never_panics(
        d in proptest::option::of("\\PC{0,30}"),
        h in proptest::option::of("[a-z/@,\\[\\]:0-9 ]{0,12}"),
        p in proptest::option::of("[-0-9, ]{0,8}"),
        port_env in proptest::option::of("\\PC{0,6}"),
        host_env in proptest::option::of("\\PC{0,6}"),
    ) {
        let mut w = World::new();
        if let Some(v) = port_env { w = w.env("PGPORT", &v); }
        if let Some(v) = host_env { w = w.env("PGHOSTADDR", &v); }
        let i = ConnInput { dbname: d, host: h, port: p, user: None };
        let _ = w.resolve(&i);
    }

    #[test]
    fn resolved_settings_round_trip(
        user in "[a-z][a-z0-9 '\\\\=]{0,8}",
        db in "\\PC{1,10}",
        hosts in proptest::collection::vec("(/[a-z]{1,5}|[a-z]{1,5})", 1..4),
        port in 1u16..,
    ) {
        let conninfo = format!(
            "user={} dbname={} host={} port={port}",
            quote_value(&user), quote_value(&db), quote_value(&hosts.join(","))
        );
        let w = World::new();
        let s = w.d(&conninfo).unwrap();
        prop_assert_eq!(&s.user, &user);
        prop_assert_eq!(&s.dbname, &db);
        let again = w.d(&s.to_conninfo()).unwrap();
        prop_assert_eq!(again, s);
    }
}

mod tls_resolve;
