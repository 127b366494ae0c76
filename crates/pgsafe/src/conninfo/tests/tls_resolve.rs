//! Resolution of the TLS options and connection services (pure: files and environment are
//! injected through [`World`]).

use super::*;

#[test]
fn sslmodes_and_their_defaults() {
    let w = World::new();
    assert_eq!(w.d("dbname=x").unwrap().sslmode, SslMode::Prefer);
    for mode in SslMode::ALL {
        let s = w.d(&format!("sslmode={}", mode.as_str())).unwrap();
        assert_eq!(s.sslmode, mode);
    }
    assert_eq!(
        w.d("sslmode=maybe").unwrap_err().to_string(),
        "invalid sslmode value: \"maybe\""
    );
    // JDBC's ssl=true, the old requiressl and PGREQUIRESSL all mean require.
    assert_eq!(
        w.d("postgresql://h/d?ssl=true").unwrap().sslmode,
        SslMode::Require
    );
    assert_eq!(w.d("requiressl=1").unwrap().sslmode, SslMode::Require);
    let env = World::new().env("PGREQUIRESSL", "1");
    assert_eq!(env.d("dbname=x").unwrap().sslmode, SslMode::Require);
    // PGSSLMODE wins over PGREQUIRESSL; the connection string over both.
    let env = env.env("PGSSLMODE", "verify-ca");
    assert_eq!(env.d("dbname=x").unwrap().sslmode, SslMode::VerifyCa);
    assert_eq!(env.d("sslmode=disable").unwrap().sslmode, SslMode::Disable);
}

#[test]
fn system_roots_demand_verify_full() {
    let w = World::new();
    let s = w.d("sslrootcert=system").unwrap();
    assert_eq!(s.sslmode, SslMode::VerifyFull);
    assert_eq!(s.tls.rootcert.as_deref(), Some("system"));
    for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
        assert_eq!(
            w.d(&format!("sslrootcert=system sslmode={weak}"))
                .unwrap_err()
                .to_string(),
            format!(
                "weak sslmode \"{weak}\" may not be used with sslrootcert=system (use \"verify-full\")"
            )
        );
    }
    // From the environment too, and the error says where the weak mode came from.
    let e = World::new()
        .env("PGSSLROOTCERT", "system")
        .env("PGSSLMODE", "require")
        .d("dbname=x")
        .unwrap_err();
    assert!(e.to_string().contains("PGSSLMODE"), "{e}");
    assert_eq!(
        World::new()
            .env("PGSSLROOTCERT", "system")
            .d("dbname=x")
            .unwrap()
            .sslmode,
        SslMode::VerifyFull
    );
}

#[test]
fn direct_negotiation_needs_a_mode_without_plain_text() {
    let w = World::new();
    for weak in ["disable", "allow", "prefer"] {
        let e = w
            .d(&format!("sslmode={weak} sslnegotiation=direct"))
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "weak sslmode \"{weak}\" may not be used with sslnegotiation=direct"
            )),
            "{e}"
        );
    }
    assert!(w.d("sslnegotiation=direct").is_err(), "default prefer");
    for strong in ["require", "verify-ca", "verify-full"] {
        let s = w
            .d(&format!("sslmode={strong} sslnegotiation=direct"))
            .unwrap();
        assert!(s.tls.direct);
    }
    assert!(
        w.d("sslnegotiation=sideways")
            .unwrap_err()
            .to_string()
            .contains("invalid sslnegotiation value")
    );
}

#[test]
fn tls_files_defaults_and_environment() {
    let w = World::new().env("HOME", "/home/h");
    let s = w.d("dbname=x").unwrap();
    assert_eq!(
        s.tls,
        TlsSettings {
            default_dir: Some("/home/h/.postgresql".into()),
            ..TlsSettings::default()
        }
    );
    // No HOME: the passwd entry's home.
    let s = World::new().d("dbname=x").unwrap();
    assert_eq!(
        s.tls.default_dir.as_deref(),
        Some(Path::new("/home/alice/.postgresql"))
    );
    let env = w
        .clone()
        .env("PGSSLROOTCERT", "/e/root.pem")
        .env("PGSSLCERT", "/e/c.pem")
        .env("PGSSLKEY", "/e/k.pem")
        .env("PGSSLCRL", "/e/l.pem")
        .env("PGSSLCRLDIR", "/e/crls")
        .env("PGSSLSNI", "0")
        .env("PGSSLCERTMODE", "disable");
    let s = env.d("dbname=x").unwrap();
    assert_eq!(s.tls.rootcert.as_deref(), Some("/e/root.pem"));
    assert_eq!(s.tls.cert.as_deref(), Some(Path::new("/e/c.pem")));
    assert_eq!(s.tls.key.as_deref(), Some(Path::new("/e/k.pem")));
    assert_eq!(s.tls.crl.as_deref(), Some(Path::new("/e/l.pem")));
    assert_eq!(s.tls.crldir.as_deref(), Some(Path::new("/e/crls")));
    assert!(!s.tls.sni);
    assert_eq!(s.tls.certmode, SslCertMode::Disable);
    // The connection string wins over the environment.
    let s = env.d("sslcert=/c/c.pem sslsni=1").unwrap();
    assert_eq!(s.tls.cert.as_deref(), Some(Path::new("/c/c.pem")));
    assert!(s.tls.sni);
    // Relative names are made absolute now: the snapshot-mode holder runs in "/".
    let s = w.d("sslkey=k.pem sslrootcert=ca/root.pem").unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(s.tls.key, Some(cwd.join("k.pem")));
    assert_eq!(
        s.tls.rootcert.as_deref(),
        Some(cwd.join("ca/root.pem").to_str().unwrap())
    );
    assert!(
        w.d("sslcertmode=always")
            .unwrap_err()
            .to_string()
            .contains("invalid sslcertmode value")
    );
}

#[test]
fn protocol_versions() {
    let w = World::new();
    let s = w
        .d("ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=tlsv1.3")
        .unwrap();
    assert_eq!(s.tls.min_protocol.as_deref(), Some("TLSv1.3"));
    assert_eq!(
        w.d("ssl_min_protocol_version=SSLv3")
            .unwrap_err()
            .to_string(),
        "invalid ssl_min_protocol_version value: \"SSLv3\""
    );
    assert_eq!(
        w.d("ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2")
            .unwrap_err()
            .to_string(),
        "invalid SSL protocol version range"
    );
}

#[test]
fn configs_use_tls_only_over_tcp() {
    use postgres::config::SslMode as PgSsl;
    let w = World::new();
    let ssl = |conninfo: &str| -> Vec<PgSsl> {
        w.d(conninfo)
            .unwrap()
            .to_postgres_configs()
            .iter()
            .map(|c| c.get_ssl_mode())
            .collect()
    };
    // A Unix socket never gets TLS (as libpq), whatever the mode; TCP per the mode.
    assert_eq!(
        ssl("host=/tmp,db1 sslmode=verify-full"),
        [PgSsl::Disable, PgSsl::Require]
    );
    assert_eq!(ssl("host=/tmp,db1"), [PgSsl::Disable, PgSsl::Prefer]);
    assert_eq!(ssl("host=db1 sslmode=allow"), [PgSsl::Disable]);
    assert_eq!(ssl("host=db1 sslmode=disable"), [PgSsl::Disable]);
    let c = &w
        .d("host=db1 sslmode=require sslnegotiation=direct channel_binding=require")
        .unwrap()
        .to_postgres_configs()[0];
    assert_eq!(
        c.get_ssl_negotiation(),
        postgres::config::SslNegotiation::Direct
    );
    assert_eq!(
        c.get_channel_binding(),
        postgres::config::ChannelBinding::Require
    );
}

const SERVICES: &str = "\
[prod]
host=db.example.com
port=5433
user=svc
sslmode=verify-full
application_name=from-service
[bad]
port=notaport
[secret]
password=hunter2
";

#[test]
fn service_precedence_is_conninfo_service_environment_defaults() {
    let w = World::new()
        .env("HOME", "/home/h")
        .service_file("/home/h/.pg_service.conf", SERVICES)
        .env("PGUSER", "env-user")
        .env("PGDATABASE", "env-db")
        .env("PGPORT", "6000");
    let s = w.d("service=prod port=5999").unwrap();
    // conninfo beats the service (port), the service beats the environment (user), the
    // environment fills what neither gave (dbname).
    assert_eq!(hosts(&s), [("db.example.com".to_owned(), 5999)]);
    assert_eq!(s.user, "svc");
    assert_eq!(s.dbname, "env-db");
    assert_eq!(s.sslmode, SslMode::VerifyFull);
    assert_eq!(s.application_name.as_deref(), Some("from-service"));
    assert_eq!(
        s.service,
        Some(("prod".into(), "/home/h/.pg_service.conf".into()))
    );
    // -h beats everything; PGSERVICE names the service when the string does not.
    let s = w
        .clone()
        .env("PGSERVICE", "prod")
        .resolve(&input(None, Some("other"), None, None))
        .unwrap();
    assert_eq!(hosts(&s), [("other".to_owned(), 5433)]);
    // A service value's error says where it came from.
    let e = w.d("service=bad").unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid port number: \"notaport\" (from connection service \"bad\")"
    );
    // A password from the service is used and said to come from there, never shown.
    let s = w.d("service=secret host=h").unwrap();
    assert_eq!(s.targets[0].password_source, PasswordSource::Service);
    assert!(!format!("{s:?} {s}").contains("hunter2"));
    assert_eq!(
        w.d("service=nope").unwrap_err().to_string(),
        "definition of service \"nope\" not found"
    );
}

#[test]
fn service_files_from_pgservicefile_and_pgsysconfdir() {
    let w = World::new()
        .service_file("/srv/mine.conf", "[a]\nhost=from-servicefile\n")
        .service_file("/opt/pg/etc/pg_service.conf", "[b]\nhost=from-sysconfdir\n")
        .service_file(
            "/etc/postgresql-common/pg_service.conf",
            "[c]\nhost=debian\n",
        );
    let w = w
        .env("PGSERVICEFILE", "/srv/mine.conf")
        .env("PGSYSCONFDIR", "/opt/pg/etc");
    assert_eq!(hosts(&w.d("service=a").unwrap())[0].0, "from-servicefile");
    assert_eq!(hosts(&w.d("service=b").unwrap())[0].0, "from-sysconfdir");
    // PGSYSCONFDIR replaces the default directories.
    assert!(w.d("service=c").is_err());
    let debian = World::new().service_file(
        "/etc/postgresql-common/pg_service.conf",
        "[c]\nhost=debian\n",
    );
    assert_eq!(hosts(&debian.d("service=c").unwrap())[0].0, "debian");
    // An empty service name is no service.
    assert!(World::new().env("PGSERVICE", "").d("dbname=x").is_ok());
}
