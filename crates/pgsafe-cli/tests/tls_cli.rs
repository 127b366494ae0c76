//! Snapshot mode over TLS, through the real binary: the holder (which runs in `/`) keeps a
//! verified TLS session with a client certificate named by relative paths, `stop` reaches the
//! server the same way, and neither key material nor passwords show up in arguments,
//! environment, output or run-directory files.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, TestPki};
use serde_json::Value;

use common::{command, json, ok, run_dir};

fn tls_cluster(major: u32, pki: &TestPki, hba: &str) -> Cluster {
    let opts = TestPki::cluster_options(ClusterOptions::new().fast_unsafe());
    let mut c = Cluster::new(&PgInstall::major(major), opts);
    pki.install(&c, "server", hba);
    c.start();
    c
}

/// `pgsafe args… --run-dir RUN`, run in `cwd` with `HOME` an empty folder there.
fn pgsafe_in(cwd: &Path, run: &Path, args: &[&str]) -> Output {
    let home = cwd.join("home");
    fs::create_dir_all(&home).unwrap();
    command(args)
        .arg("--run-dir")
        .arg(run)
        .current_dir(cwd)
        .env("HOME", &home)
        .output()
        .unwrap()
}

/// The server's view: how many sessions named `pgsafe` there are, and whether all use TLS.
fn pgsafe_sessions(c: &Cluster) -> (i64, bool) {
    let row = c
        .connect()
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'pgsafe'",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Every place a secret must not reach: the commands' output, the run directory's files, the
/// holder's arguments and environment.
fn assert_nowhere(secret: &str, outputs: &[&Output], run: &Path, holder_pid: Option<u64>) {
    for o in outputs {
        for stream in [&o.stdout, &o.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(secret),
                "secret in output"
            );
        }
    }
    for entry in fs::read_dir(run).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let bytes = fs::read(&p).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "secret in {}",
                p.display()
            );
        }
    }
    if let Some(pid) = holder_pid {
        for f in ["cmdline", "environ"] {
            let bytes = fs::read(format!("/proc/{pid}/{f}")).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "secret in the holder's {f}"
            );
        }
    }
}

/// `hostssl ... cert`: only a TLS session with the client certificate gets in. start (holder
/// in `/`, files named relative to the caller's directory) → the server sees pgsafe's session
/// over TLS → stop with the same options writes the label. A key with group access is refused
/// up front, naming the file.
fn holder_keeps_a_tls_session(major: u32) {
    let pki = TestPki::new();
    let c = tls_cluster(major, &pki, "hostssl all all 127.0.0.1/32 cert");
    let (crt, key) = pki.client("client", "postgres", "ca");
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    fs::copy(pki.path("ca.crt"), cwd.join("ca.crt")).unwrap();
    fs::copy(&crt, cwd.join("client.crt")).unwrap();
    fs::copy(&key, cwd.join("client.key")).unwrap();
    fs::set_permissions(cwd.join("client.key"), fs::Permissions::from_mode(0o600)).unwrap();
    let key_lines: Vec<String> = fs::read_to_string(&key)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
         sslmode=verify-full sslrootcert=ca.crt sslcert=client.crt sslkey=client.key",
        c.port()
    );
    let run = run_dir();
    let start = ok(
        pgsafe_in(
            cwd,
            run.path(),
            &["start", "-d", &conn, "--id", "tls", "--json"],
        ),
        "pgsafe start over TLS",
    );
    let rec: Value = json(&start);
    assert_eq!(rec["state"], "in_progress", "{rec}");
    let (n, all_tls) = pgsafe_sessions(&c);
    assert!(
        n >= 1 && all_tls,
        "PostgreSQL {major}: {n} pgsafe sessions, all TLS: {all_tls}"
    );
    let status = ok(
        pgsafe_in(
            cwd,
            run.path(),
            &["status", "-d", &conn, "--id", "tls", "--json"],
        ),
        "pgsafe status over TLS",
    );
    assert_eq!(json(&status)[0]["state"], "in_progress");
    let holder = rec["holder_pid"].as_u64();
    assert!(holder.is_some(), "{rec}");
    for line in &key_lines {
        assert_nowhere(line, &[&start, &status], run.path(), holder);
    }
    let out_dir = tempfile::tempdir().unwrap();
    let od = out_dir.path().to_str().unwrap();
    let stop = ok(
        pgsafe_in(
            cwd,
            run.path(),
            &[
                "stop",
                "-d",
                &conn,
                "--id",
                "tls",
                "--json",
                "--output-dir",
                od,
            ],
        ),
        "pgsafe stop over TLS",
    );
    assert_eq!(json(&stop)["usable"], true);
    assert!(out_dir.path().join("backup_label").is_file());
    for line in &key_lines {
        assert_nowhere(line, &[&stop], run.path(), None);
    }

    // The same key readable by others: refused before connecting, the file named.
    fs::set_permissions(cwd.join("client.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let bad = pgsafe_in(
        cwd,
        run.path(),
        &["start", "-d", &conn, "--id", "tls2", "--json"],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("has group or world access") && err.contains("client.key"),
        "{err}"
    );
    for line in &key_lines {
        assert_nowhere(line, &[&bad], run.path(), None);
    }
}

#[test]
fn holder_keeps_a_tls_session_12() {
    holder_keeps_a_tls_session(12)
}

#[test]
fn holder_keeps_a_tls_session_18() {
    holder_keeps_a_tls_session(18)
}

/// A password given in the connection string, over TLS with channel binding: the holder gets
/// it, and it shows up nowhere — not in output, run-directory files, or the holder's arguments
/// and environment.
#[test]
fn password_over_tls_is_never_shown() {
    let pki = TestPki::new();
    let c = tls_cluster(16, &pki, "hostssl all all 127.0.0.1/32 scram-sha-256");
    let secret = "Tls-S3cret-Pw";
    c.execute(&format!(
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE bk LOGIN SUPERUSER PASSWORD '{secret}'"
    ));
    let work = tempfile::tempdir().unwrap();
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=bk dbname=postgres password={secret} \
         sslmode=verify-full sslrootcert={} channel_binding=require",
        c.port(),
        pki.path("ca.crt").display()
    );
    let run = run_dir();
    let start = ok(
        pgsafe_in(
            work.path(),
            run.path(),
            &["start", "-d", &conn, "--id", "pw", "--json"],
        ),
        "pgsafe start",
    );
    let holder = json(&start)["holder_pid"].as_u64();
    assert!(holder.is_some());
    let (n, all_tls) = pgsafe_sessions(&c);
    assert!(n >= 1 && all_tls);
    let status = ok(
        pgsafe_in(work.path(), run.path(), &["status", "-d", &conn]),
        "pgsafe status",
    );
    assert_nowhere(secret, &[&start, &status], run.path(), holder);
    let stop = ok(
        pgsafe_in(
            work.path(),
            run.path(),
            &["stop", "-d", &conn, "--id", "pw", "--json"],
        ),
        "pgsafe stop",
    );
    assert_eq!(json(&stop)["usable"], true);
    assert_nowhere(secret, &[&stop], run.path(), None);
}

/// `pgsafe backup` and `verify` of a server that lets pgsafe in only over TLS with a client
/// certificate, the settings coming from a service file (PGSERVICEFILE).
#[test]
fn backup_over_tls_from_a_service_file() {
    let pki = TestPki::new();
    let c = tls_cluster(17, &pki, "hostssl all all 127.0.0.1/32 cert");
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let (crt, key) = pki.client("client", "postgres", "ca");
    let work = tempfile::tempdir().unwrap();
    let services = work.path().join("services.conf");
    fs::write(
        &services,
        format!(
            "[prod]\nhost=localhost\nhostaddr=127.0.0.1\nport={}\nuser=postgres\n\
             dbname=postgres\nsslmode=verify-full\nsslrootcert={}\nsslcert={}\nsslkey={}\n",
            c.port(),
            pki.path("ca.crt").display(),
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    let target = work.path().join("b1");
    let out = command(&[
        "backup",
        "-d",
        "service=prod",
        "-D",
        c.data_dir().to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--json",
        "--progress",
        "none",
    ])
    .env("PGSERVICEFILE", &services)
    .env("HOME", work.path())
    .output()
    .unwrap();
    ok(out, "pgsafe backup -d service=prod");
    ok(
        command(&["verify", target.to_str().unwrap()])
            .output()
            .unwrap(),
        "pgsafe verify",
    );
}

/// `sslrootcert=system` (which makes verify-full the default): the operating system's store,
/// here replaced through `SSL_CERT_FILE` by the test CA (as OpenSSL's libpq honours it too);
/// with the real store, which does not hold the test CA, the server is refused.
#[test]
fn system_store() {
    let pki = TestPki::new();
    let c = tls_cluster(18, &pki, "hostssl all all 127.0.0.1/32 trust");
    let work = tempfile::tempdir().unwrap();
    let run = run_dir();
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslrootcert=system",
        c.port()
    );
    let with_store = |args: &[&str], ca: Option<&Path>| {
        let mut cmd = command(args);
        cmd.arg("--run-dir")
            .arg(run.path())
            .env("HOME", work.path())
            .env_remove("SSL_CERT_DIR");
        match ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        cmd.output().unwrap()
    };
    let ca = pki.path("ca.crt");
    ok(
        with_store(&["start", "-d", &conn, "--id", "sys", "--json"], Some(&ca)),
        "start with the test CA as the system store",
    );
    let (n, all_tls) = pgsafe_sessions(&c);
    assert!(n >= 1 && all_tls);
    ok(
        with_store(&["stop", "-d", &conn, "--id", "sys", "--json"], Some(&ca)),
        "stop",
    );
    let refused = with_store(&["start", "-d", &conn, "--id", "sys2", "--json"], None);
    assert!(!refused.status.success());
    // A weaker sslmode with the system store is refused before connecting (libpq's rule).
    let weak = with_store(
        &[
            "start",
            "-d",
            &format!("{conn} sslmode=require"),
            "--id",
            "sys3",
        ],
        Some(&ca),
    );
    assert!(!weak.status.success());
    let err = String::from_utf8_lossy(&weak.stderr);
    assert!(
        err.contains("weak sslmode \"require\" may not be used with sslrootcert=system"),
        "{err}"
    );
}
