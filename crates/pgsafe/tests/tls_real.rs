//! TLS and connection services against real servers with `ssl = on` and a CA made by the test
//! (`pgsafe_testkit::TestPki`): every sslmode against trusted and untrusted certificates and
//! matching and mismatching host names, `hostssl`/`hostnossl` rules, client-certificate
//! authentication (`cert`), key-file permissions, service files. Whether a session really uses
//! TLS is asked of the server (`pg_stat_ssl`), not taken from pgsafe.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgsafe::conninfo::{ConnInfoError, ConnInput, ConnSettings, ConnectError, FailureKind};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, TestPki, server_user};

/// A started TCP+TLS cluster whose server certificate is `server` ("server": signed by the
/// trusted CA; "rogue": by the other one) and whose pg_hba.conf has `hba` for TCP.
fn tls_cluster(major: u32, pki: &TestPki, server: &str, hba: &str) -> Cluster {
    let opts = TestPki::cluster_options(ClusterOptions::new().fast_unsafe());
    let mut c = Cluster::new(&PgInstall::major(major), opts);
    pki.install(&c, server, hba);
    c.start();
    c
}

/// The outside world of one resolution: environment variables, `HOME` an empty folder (so the
/// test user's own ~/.postgresql and ~/.pg_service.conf never count).
struct World {
    home: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl World {
    fn new() -> World {
        World {
            home: tempfile::tempdir().unwrap(),
            env: HashMap::new(),
        }
    }

    fn env(mut self, k: &str, v: &str) -> World {
        self.env.insert(k.into(), v.into());
        self
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn resolve(&self, conninfo: &str) -> Result<ConnSettings, ConnInfoError> {
        let input = ConnInput {
            dbname: Some(conninfo.into()),
            ..ConnInput::default()
        };
        let home = self.home().to_str().unwrap().to_owned();
        ConnSettings::resolve(&input, &|k| {
            if k == "HOME" {
                Some(home.clone())
            } else {
                self.env.get(k).cloned()
            }
        })
    }

    /// Connects (pgsafe's session set-up included) and asks the server whether the session
    /// uses TLS.
    fn connect(&self, conninfo: &str) -> Result<bool, ConnectError> {
        let s = self
            .resolve(conninfo)
            .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
        let (mut client, _version) = s.connect_session()?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap();
        Ok(row.get(0))
    }

    fn ok(&self, conninfo: &str) -> bool {
        self.connect(conninfo)
            .unwrap_or_else(|e| panic!("{conninfo}: {e}"))
    }

    /// The one failed attempt (kind, message, hint).
    fn fails(&self, conninfo: &str) -> (FailureKind, String, String) {
        match self.connect(conninfo) {
            Ok(ssl) => panic!("{conninfo}: connected (ssl {ssl})"),
            Err(ConnectError::Failed { attempts }) => {
                assert_eq!(attempts.len(), 1, "{attempts:?}");
                let a = &attempts[0];
                (
                    a.kind,
                    a.message.clone(),
                    a.hint.clone().unwrap_or_default(),
                )
            }
            Err(e) => panic!("{conninfo}: {e}"),
        }
    }
}

fn tcp(c: &Cluster, host: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=20",
        c.port()
    )
}

/// Each sslmode against a server whose certificate is trusted or not, for a host name it is
/// issued for or not.
fn sslmodes_against_certificates(major: u32) {
    let pki = TestPki::new();
    let c = tls_cluster(major, &pki, "server", "host all all 127.0.0.1/32 trust");
    let w = World::new();
    let ca = pki.path("ca.crt");
    let ca = ca.display();
    let other = pki.path("other-ca.crt");
    let other = other.display();
    let good = tcp(&c, "localhost");
    let ip = tcp(&c, "127.0.0.1");
    let wrong = tcp(&c, "wrong.example");

    assert!(!w.ok(&format!("{good} sslmode=disable")));
    // allow: plain first, and the server takes it.
    assert!(!w.ok(&format!("{good} sslmode=allow")));
    // The default is prefer: TLS, certificate unchecked without a root file.
    assert!(w.ok(&good));
    assert!(w.ok(&format!("{wrong} sslmode=require")));
    assert!(w.ok(&format!("{good} sslmode=require sslrootcert={ca}")));
    // verify-ca: the chain, not the name.
    assert!(w.ok(&format!("{good} sslmode=verify-ca sslrootcert={ca}")));
    assert!(w.ok(&format!("{wrong} sslmode=verify-ca sslrootcert={ca}")));
    // verify-full: chain and name (DNS or IP subjectAltName).
    assert!(w.ok(&format!("{good} sslmode=verify-full sslrootcert={ca}")));
    assert!(w.ok(&format!("{ip} sslmode=verify-full sslrootcert={ca}")));
    let (kind, msg, hint) = w.fails(&format!("{wrong} sslmode=verify-full sslrootcert={ca}"));
    assert_eq!(kind, FailureKind::Tls, "{msg}");
    assert!(
        hint.contains("not issued for \"wrong.example\""),
        "{msg} / {hint}"
    );
    // An untrusted CA: refused by verify-ca, verify-full, and require with a root file (which
    // libpq treats as verify-ca).
    for mode in ["verify-ca", "verify-full", "require"] {
        let (kind, msg, hint) = w.fails(&format!("{good} sslmode={mode} sslrootcert={other}"));
        assert_eq!(kind, FailureKind::Tls, "{mode}: {msg}");
        assert!(
            hint.contains("not signed by a certificate authority"),
            "{mode}: {hint}"
        );
    }
    // prefer with an untrusted root: the TLS attempt fails, plain text is the fallback.
    assert!(!w.ok(&format!("{good} sslmode=prefer sslrootcert={other}")));
    // Verifying without a root file is refused before connecting, naming the file looked for.
    let (kind, msg, _) = w.fails(&format!("{good} sslmode=verify-ca"));
    assert_eq!(kind, FailureKind::Tls);
    let default_root = w.home().join(".postgresql/root.crt");
    assert!(
        msg.contains(&format!("\"{}\" does not exist", default_root.display())),
        "{msg}"
    );
    // The default root file, and the PGSSL* variables.
    fs::create_dir(w.home().join(".postgresql")).unwrap();
    fs::copy(pki.path("ca.crt"), &default_root).unwrap();
    assert!(w.ok(&format!("{good} sslmode=verify-full")));
    fs::copy(pki.path("other-ca.crt"), &default_root).unwrap();
    assert_eq!(
        w.fails(&format!("{good} sslmode=require")).0,
        FailureKind::Tls
    );
    let env = World::new()
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &pki.path("ca.crt").display().to_string());
    assert!(env.ok(&good));
    assert_eq!(env.fails(&wrong).0, FailureKind::Tls);
    // sslsni=0 changes nothing for a server that does not look at it.
    assert!(env.ok(&format!("{good} sslsni=0")));
    // The system store does not hold the test CA.
    let (kind, _, _) = w.fails(&format!("{good} sslrootcert=system"));
    assert_eq!(kind, FailureKind::Tls);
    // TLS only over TCP: over the Unix socket, even verify-full connects without it (libpq).
    let unix = format!("{} sslmode=verify-full", c.conninfo());
    assert!(!w.ok(&unix));
    // sslcertmode=require: this server never asks for a client certificate.
    let (kind, msg, _) = w.fails(&format!(
        "{good} sslmode=require sslrootcert={ca} sslcertmode=require"
    ));
    assert_eq!(kind, FailureKind::Tls);
    assert!(msg.contains("without a valid SSL certificate"), "{msg}");
}

#[test]
fn sslmodes_against_certificates_10() {
    sslmodes_against_certificates(10)
}

#[test]
fn sslmodes_against_certificates_18() {
    sslmodes_against_certificates(18)
}

/// `hostssl` only: plain text is refused with a hint; allow retries with TLS. `hostnossl`
/// only: prefer falls back to plain text, require fails.
fn hba_ssl_rules(major: u32) {
    let pki = TestPki::new();
    let c = tls_cluster(major, &pki, "server", "hostssl all all 127.0.0.1/32 trust");
    let w = World::new();
    let good = tcp(&c, "localhost");
    let (kind, msg, hint) = w.fails(&format!("{good} sslmode=disable"));
    assert_eq!(kind, FailureKind::Rejected, "{msg}");
    assert!(hint.contains("only over TLS (hostssl)"), "{hint}");
    assert!(w.ok(&format!("{good} sslmode=allow")));
    assert!(w.ok(&format!("{good} sslmode=prefer")));
    assert!(w.ok(&format!("{good} sslmode=require")));

    let c = tls_cluster(
        major,
        &pki,
        "server",
        "hostnossl all all 127.0.0.1/32 trust",
    );
    let good = tcp(&c, "localhost");
    assert!(!w.ok(&format!("{good} sslmode=prefer")));
    let (kind, msg, _) = w.fails(&format!("{good} sslmode=require"));
    assert_eq!(kind, FailureKind::Rejected, "{msg}");
}

#[test]
fn hba_ssl_rules_12() {
    hba_ssl_rules(12)
}

#[test]
fn hba_ssl_rules_18() {
    hba_ssl_rules(18)
}

/// A server without TLS: prefer connects in plain text, require is refused with a hint.
#[test]
fn server_without_tls() {
    let c = Cluster::new(
        &PgInstall::major(16),
        ClusterOptions::new()
            .fast_unsafe()
            .listen_addresses("127.0.0.1"),
    );
    c.write_data_file(
        "pg_hba.conf",
        b"local all all trust\nhost all all 127.0.0.1/32 trust\n",
    );
    let mut c = c;
    c.start();
    let w = World::new();
    let good = tcp(&c, "localhost");
    assert!(!w.ok(&good));
    let (kind, msg, hint) = w.fails(&format!("{good} sslmode=require"));
    assert_eq!(kind, FailureKind::Tls, "{msg}");
    assert!(hint.contains("does not accept TLS"), "{hint}");
}

/// `cert` authentication: the client certificate from sslcert/sslkey or ~/.postgresql, the
/// key-file permission rule, a certificate for another user, sslcertmode.
fn client_certificates(major: u32) {
    let pki = TestPki::new();
    let c = tls_cluster(major, &pki, "server", "hostssl all all 127.0.0.1/32 cert");
    let w = World::new();
    let ca = pki.path("ca.crt");
    let base = format!(
        "{} sslmode=verify-full sslrootcert={}",
        tcp(&c, "localhost"),
        ca.display()
    );
    let (crt, key) = pki.client("client", "postgres", "ca");
    let key_text = fs::read_to_string(&key).unwrap();
    let with = |crt: &Path, key: &Path| {
        format!("{base} sslcert={} sslkey={}", crt.display(), key.display())
    };
    // No certificate: the server refuses, the hint says what to give.
    let (kind, msg, hint) = w.fails(&base);
    assert_eq!(kind, FailureKind::Rejected, "{msg}");
    assert!(hint.contains("sslcert and sslkey"), "{hint}");
    assert!(w.ok(&with(&crt, &key)));
    assert!(w.ok(&format!("{} sslcertmode=require", with(&crt, &key))));
    // sslcertmode=disable keeps it back.
    assert_eq!(
        w.fails(&format!("{} sslcertmode=disable", with(&crt, &key)))
            .0,
        FailureKind::Rejected
    );
    // The defaults in ~/.postgresql.
    let dot = w.home().join(".postgresql");
    fs::create_dir(&dot).unwrap();
    fs::copy(&crt, dot.join("postgresql.crt")).unwrap();
    fs::copy(&key, dot.join("postgresql.key")).unwrap();
    fs::set_permissions(
        dot.join("postgresql.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert!(w.ok(&base));
    // A certificate without its key.
    fs::remove_file(dot.join("postgresql.key")).unwrap();
    let (kind, msg, _) = w.fails(&base);
    assert_eq!(kind, FailureKind::Tls);
    assert!(
        msg.contains("certificate present, but not private key file"),
        "{msg}"
    );
    // Key-file permissions: group/world access refused before anything is sent.
    let mut messages = Vec::new();
    for mode in [0o644, 0o604, 0o660] {
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
        let (kind, msg, _) = w.fails(&with(&crt, &key));
        assert_eq!(kind, FailureKind::Tls, "{mode:o}");
        assert!(
            msg.contains("has group or world access") && msg.contains(key.to_str().unwrap()),
            "{mode:o}: {msg}"
        );
        messages.push(msg);
    }
    // prefer falls back to plain text when TLS cannot be set up; the server refuses that here,
    // and the error is the one about the key.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let prefer = format!(
        "{} sslmode=prefer sslcert={} sslkey={}",
        tcp(&c, "localhost"),
        crt.display(),
        key.display()
    );
    let (kind, msg, _) = w.fails(&prefer);
    assert_eq!(kind, FailureKind::Tls, "{msg}");
    assert!(
        msg.contains("has group or world access") && msg.contains("plain text was refused too"),
        "{msg}"
    );
    let i_am_root = nix::unistd::geteuid().is_root();
    if i_am_root {
        // libpq's exception: a root-owned key may be group-readable ...
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(w.ok(&with(&crt, &key)));
        // ... but not when someone else owns it.
        let u = server_user();
        std::os::unix::fs::chown(&key, Some(u.uid.as_raw()), None).unwrap();
        let (kind, msg, _) = w.fails(&with(&crt, &key));
        assert_eq!(kind, FailureKind::Tls);
        messages.push(msg);
        std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    // A certificate for another user, and one from the untrusted CA.
    let (crt2, key2) = pki.client("stranger", "stranger", "ca");
    let (kind, msg, hint) = w.fails(&with(&crt2, &key2));
    assert_eq!(kind, FailureKind::Rejected, "{msg}");
    assert!(hint.contains("Common Name is the user name"), "{hint}");
    messages.push(msg);
    let (crt3, key3) = pki.client("forged", "postgres", "other-ca");
    let (_, msg, _) = w.fails(&with(&crt3, &key3));
    messages.push(msg);
    // No message carries key material.
    for m in &messages {
        for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!m.contains(line), "key material in: {m}");
        }
    }
}

#[test]
fn client_certificates_10() {
    client_certificates(10)
}

#[test]
fn client_certificates_18() {
    client_certificates(18)
}

/// sslnegotiation=direct: TLS from the first byte, which servers understand from 17 on.
fn direct_negotiation(major: u32) {
    let pki = TestPki::new();
    let c = tls_cluster(major, &pki, "server", "hostssl all all 127.0.0.1/32 trust");
    let w = World::new();
    let conn = format!(
        "{} sslmode=verify-full sslnegotiation=direct sslrootcert={}",
        tcp(&c, "localhost"),
        pki.path("ca.crt").display()
    );
    if major >= 17 {
        assert!(w.ok(&conn));
    } else {
        let (kind, msg, hint) = w.fails(&conn);
        assert_eq!(kind, FailureKind::Tls, "{msg}");
        assert!(hint.contains("PostgreSQL 17"), "{hint}");
    }
}

#[test]
fn direct_negotiation_16() {
    direct_negotiation(16)
}

#[test]
fn direct_negotiation_17() {
    direct_negotiation(17)
}

#[test]
fn direct_negotiation_18() {
    direct_negotiation(18)
}

/// channel_binding=require: SCRAM-SHA-256-PLUS over TLS (servers 11+); refused without TLS.
fn channel_binding(major: u32) {
    let pki = TestPki::new();
    let c = tls_cluster(
        major,
        &pki,
        "server",
        "host all all 127.0.0.1/32 scram-sha-256",
    );
    c.execute("SET password_encryption = 'scram-sha-256'; CREATE ROLE cb LOGIN SUPERUSER PASSWORD 'cb-secret'");
    let w = World::new();
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=cb dbname=postgres password=cb-secret",
        c.port()
    );
    assert!(w.ok(&format!("{conn} sslmode=require channel_binding=require")));
    let e = w
        .connect(&format!("{conn} sslmode=disable channel_binding=require"))
        .unwrap_err()
        .to_string();
    assert!(!e.contains("cb-secret"), "{e}");
}

#[test]
fn channel_binding_11() {
    channel_binding(11)
}

#[test]
fn channel_binding_18() {
    channel_binding(18)
}

/// Service files: PGSERVICEFILE and PGSYSCONFDIR, the settings' precedence, a TLS service.
#[test]
fn service_files() {
    let pki = TestPki::new();
    let c = tls_cluster(15, &pki, "server", "hostssl all all 127.0.0.1/32 trust");
    let files = tempfile::tempdir().unwrap();
    let socket_service = format!(
        "# test services\n[local]\nhost={}\nport={}\nuser=postgres\ndbname=postgres\napplication_name=from-service\n",
        c.socket_dir().display(),
        c.port()
    );
    let mine = files.path().join("mine.conf");
    fs::write(&mine, socket_service).unwrap();
    let tls_service = format!(
        "[secure]\nhost=localhost\nhostaddr=127.0.0.1\nport={}\nuser=postgres\ndbname=postgres\nsslmode=verify-full\nsslrootcert={}\n",
        c.port(),
        pki.path("ca.crt").display()
    );
    let sysconf = files.path().join("etc");
    fs::create_dir(&sysconf).unwrap();
    fs::write(sysconf.join("pg_service.conf"), tls_service).unwrap();
    let w = World::new()
        .env("PGSERVICEFILE", mine.to_str().unwrap())
        .env("PGSYSCONFDIR", sysconf.to_str().unwrap());
    // The server says which application_name the session got: the service's.
    let s = w.resolve("service=local").unwrap();
    let (mut client, _) = s.connect_session().unwrap();
    let name: String = client
        .query_one("SHOW application_name", &[])
        .unwrap()
        .get(0);
    assert_eq!(name, "from-service");
    // The connection string beats the service.
    let s = w.resolve("service=local application_name=mine").unwrap();
    let (mut client, _) = s.connect_session().unwrap();
    let name: String = client
        .query_one("SHOW application_name", &[])
        .unwrap()
        .get(0);
    assert_eq!(name, "mine");
    // Not in PGSERVICEFILE: PGSYSCONFDIR's file, here a verified TLS service; PGSERVICE names it.
    assert!(w.ok("service=secure"));
    let by_env = World::new()
        .env("PGSERVICE", "secure")
        .env("PGSYSCONFDIR", sysconf.to_str().unwrap());
    assert!(by_env.ok("dbname=postgres"));
    // The service's sslmode is overridden by the connection string's (hostssl: refused).
    assert_eq!(
        w.fails("service=secure sslmode=disable").0,
        FailureKind::Rejected
    );
    assert_eq!(
        w.resolve("service=nope").unwrap_err().to_string(),
        "definition of service \"nope\" not found"
    );
    // ~/.pg_service.conf when PGSERVICEFILE is not set.
    let home = World::new();
    fs::copy(&mine, home.home().join(".pg_service.conf")).unwrap();
    assert!(!home.ok("service=local"));
}

/// Revocation lists: sslcrl, sslcrldir and ~/.postgresql/root.crl; a list that does not list
/// the server's certificate lets it through, one that does refuses it; a missing list file is
/// ignored (libpq).
#[test]
fn certificate_revocation() {
    let pki = TestPki::new();
    let c = tls_cluster(14, &pki, "server", "host all all 127.0.0.1/32 trust");
    let w = World::new();
    let good = format!(
        "{} sslmode=verify-full sslrootcert={}",
        tcp(&c, "localhost"),
        pki.path("ca.crt").display()
    );
    let clean = pki.crl("clean.crl", &[]);
    assert!(w.ok(&format!("{good} sslcrl={}", clean.display())));
    let revoked = pki.crl("revoked.crl", &["server"]);
    let (kind, msg, hint) = w.fails(&format!("{good} sslcrl={}", revoked.display()));
    assert_eq!(kind, FailureKind::Tls, "{msg}");
    assert!(hint.contains("revoked"), "{msg} / {hint}");
    // verify-ca checks revocation too.
    let ca_only = good.replace("verify-full", "verify-ca");
    assert_eq!(
        w.fails(&format!("{ca_only} sslcrl={}", revoked.display()))
            .0,
        FailureKind::Tls
    );
    let dir = tempfile::tempdir().unwrap();
    fs::copy(&revoked, dir.path().join("1a2b3c4d.r0")).unwrap();
    assert_eq!(
        w.fails(&format!("{good} sslcrldir={}", dir.path().display()))
            .0,
        FailureKind::Tls
    );
    let dot = w.home().join(".postgresql");
    fs::create_dir(&dot).unwrap();
    fs::copy(&revoked, dot.join("root.crl")).unwrap();
    assert_eq!(w.fails(&good).0, FailureKind::Tls);
    // An explicit sslcrl replaces the default list.
    assert!(w.ok(&format!("{good} sslcrl={}", clean.display())));
    fs::remove_file(dot.join("root.crl")).unwrap();
    assert!(w.ok(&good));
    assert!(w.ok(&format!("{good} sslcrl=/nonexistent/list.crl")));
}
