//! Repositories in object storage (s3s-fs, a real S3 server on loopback that checks SigV4
//! signatures) through the real binary.
//!
//! - `settings_reach_the_bucket` (16): how to reach the bucket comes from the `--s3-*` flags,
//!   else the config file's `[s3]` table, else the `AWS_*` variables, per setting; the key from a
//!   credentials file (refused when every user can read it), from variables the settings name,
//!   or from `AWS_*`; a key in the config file is refused and never echoed; no key at all is an
//!   error that says where one can come from.
//! - `archive_backup_restore_expire` (10, 15, 18): the server archives with `archive_command =
//!   'pgsafe --config FILE archive-push --cluster main %p'` and no AWS_* variable in its
//!   environment, under pgbench; init, check, backup, info, verify, metrics through the config
//!   file; PITR restores to a time and an LSN target (restore_command = archive-get, as the
//!   restore wrote it) hold exactly the marks committed before the target, pgbench's balance
//!   invariant, every pgbench transaction committed before it, and pass amcheck; a second backup
//!   and `expire --keep-full 1` remove the first backup's objects from the bucket, and a restore
//!   to a target after the second backup still finds every WAL segment it needs.
//!
//! - `encrypted_repository_on_s3` (15): an age-encrypted repository in the bucket, created by a
//!   host holding only the public key: it backs up and its server archives (archive_command
//!   with `PGSAFE_KEY_FILE=` the writer key file in front) but cannot restore (a clear error,
//!   nothing written); `key rotate` to a new recipient, `key writer-key` for the database host,
//!   `key list`; the new identity restores to an LSN target (restore_command carries its key
//!   file) with exactly the marks before it, the old identity is refused; `expire` removes the
//!   first backup's objects and its keyring entries, and a restore past the second backup works.
//!
//! amcheck: pg_amcheck (Debian's 15 client) with heap checks on 14+, bt_index_check below
//! (`pgsafe_testkit::amcheck`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgsafe::storage::Backend;
use pgsafe::storage::s3::S3Backend;
use pgsafe_testkit::s3::{Fault, FaultProxy, RequestKind, S3Kind, S3Server};
use pgsafe_testkit::{
    Cluster, ClusterOptions, Mark, Marks, PgInstall, PgbenchRun, amcheck, archive_settings,
    check_marks, history_rows, per_major, pgbench_init, pgbench_invariant, server_owned_tempdir,
    server_user, wait_archived,
};
use tempfile::TempDir;

use common::{bin, json, ok, refused, text};

const CLUSTER: &str = "main";
const MARKS: &str = "s3_marks";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `pgsafe` command with no `AWS_*`, `PG*` or `PGSAFE_CONFIG` variable of the test process:
/// only what the test gives counts.
fn command(args: &[&str]) -> Command {
    let mut cmd = common::command(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// Asserts a failure (not exit 1, which would say "not found") whose stderr has every needle.
fn failed(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {err}",
        out.status
    );
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    err
}

/// An S3 server, a scratch folder the server user owns, and in it a credentials file for the
/// server's key (root-owned, group the server user's, mode 0640: what the README advises) and
/// a config file naming the repository and how to reach it.
struct S3Rig {
    s3: S3Server,
    scratch: TempDir,
    creds: PathBuf,
    config: PathBuf,
}

impl S3Rig {
    fn new(kind: S3Kind, prefix: &str) -> S3Rig {
        let s3 = S3Server::start(kind);
        let scratch = server_owned_tempdir();
        let creds = scratch.path().join("s3-credentials");
        fs::write(
            &creds,
            format!(
                "# written by the test\n[other]\naws_access_key_id = nobody\n\
                 aws_secret_access_key = nothing\n\n[default]\naws_access_key_id = {}\n\
                 aws_secret_access_key = {}\n",
                s3.access_key, s3.secret_key
            ),
        )
        .unwrap();
        std::os::unix::fs::chown(&creds, None, Some(server_user().gid.as_raw())).unwrap();
        fs::set_permissions(&creds, fs::Permissions::from_mode(0o640)).unwrap();
        let config = scratch.path().join("pgsafe.toml");
        let rig = S3Rig {
            s3,
            scratch,
            creds,
            config,
        };
        rig.write_config(prefix, &rig.s3.endpoint(), "");
        rig
    }

    /// (Re)writes the config file: the repository under `prefix`, reached at `endpoint` (the
    /// server, or a proxy in front of it) with the credentials file; `extra` lines in `[s3]`.
    fn write_config(&self, prefix: &str, endpoint: &str, extra: &str) {
        fs::write(
            &self.config,
            format!(
                "repo = \"{}\"\n\n[s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
                 credentials_file = \"{}\"\n{extra}",
                self.s3.url(prefix),
                self.creds.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&self.config, fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn url(&self, prefix: &str) -> String {
        self.s3.url(prefix)
    }
}

fn init_args<'a>(c: &'a Cluster, conn: &'a str) -> Vec<&'a str> {
    vec![
        "init",
        "--cluster",
        CLUSTER,
        "-D",
        s(c.data_dir()),
        "-d",
        conn,
        "--json",
    ]
}

fn settings_reach_the_bucket(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let conn = c.conninfo();
    let rig = S3Rig::new(S3Kind::S3sFs, "flags");
    let cfg = s(&rig.config);
    let url = rig.url("flags");
    let endpoint = rig.s3.endpoint();

    // The config file alone: repository, endpoint and key (no AWS_* anywhere).
    let mut args = vec!["--config", cfg];
    args.extend(init_args(&c, &conn));
    let out = ok(run(&args), "init with the config file");
    assert_eq!(json(&out)["repository_created"], true, "{}", text(&out));

    // Flags alone, no config file: the same repository.
    let creds = s(&rig.creds);
    let flags = ["--s3-endpoint", &endpoint, "--s3-credentials-file", creds];
    let info = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = command(&["info", "--repo", &url, "--cluster", CLUSTER, "--json"]);
        cmd.args(extra).env("PGSAFE_CONFIG", "");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = ok(info(&flags, &[]), "info with flags");
    assert_eq!(
        json(&out)["clusters"][0]["cluster"],
        CLUSTER,
        "{}",
        text(&out)
    );

    // Precedence per setting. The AWS_* variables point elsewhere: the config file wins.
    let wrong_env = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "wrong"),
        ("AWS_SECRET_ACCESS_KEY", "wrong"),
    ];
    let mut cmd = command(&["--config", cfg, "info", "--cluster", CLUSTER, "--json"]);
    cmd.envs(wrong_env);
    ok(cmd.output().unwrap(), "config file over AWS_*");
    // The key from AWS_* when nothing else names one (endpoint from the flag).
    let key_env = [
        ("AWS_ACCESS_KEY_ID", rig.s3.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", rig.s3.secret_key.as_str()),
    ];
    ok(
        info(&["--s3-endpoint", &endpoint], &key_env),
        "key from AWS_*",
    );
    // Variables the flags name, over AWS_* with a wrong key.
    let named = [
        ("BACKUP_KEY", rig.s3.access_key.as_str()),
        ("BACKUP_SECRET", rig.s3.secret_key.as_str()),
        ("AWS_ACCESS_KEY_ID", "wrong"),
        ("AWS_SECRET_ACCESS_KEY", "wrong"),
    ];
    let named_flags = [
        "--s3-endpoint",
        &endpoint,
        "--s3-access-key-id-env",
        "BACKUP_KEY",
        "--s3-secret-access-key-env",
        "BACKUP_SECRET",
    ];
    ok(info(&named_flags, &named), "key from named variables");
    // A flag over the config file: another profile of the credentials file (a wrong key).
    let mut cmd = command(&[
        "--config",
        cfg,
        "info",
        "--cluster",
        CLUSTER,
        "--s3-profile",
        "other",
        "--s3-credentials-file",
        creds,
    ]);
    // The wrong key is the server's refusal (403), reported as such, never as "not found".
    failed(&cmd.output().unwrap(), &["s3://"]);

    // No key anywhere: an error that says where one comes from.
    let out = info(&["--s3-endpoint", &endpoint], &[]);
    failed(&out, &["no S3 credentials", "credentials file"]);
    // A credentials file every user can read: refused, with the fix.
    let open = rig.scratch.path().join("open-credentials");
    fs::copy(&rig.creds, &open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let out = info(
        &[
            "--s3-endpoint",
            &endpoint,
            "--s3-credentials-file",
            s(&open),
        ],
        &[],
    );
    let msg = refused(&out, &["every user can read", "chmod o-rwx"]);
    assert!(!msg.contains(&rig.s3.secret_key), "{msg}");
    // A relative credentials file: refused before anything is asked.
    let out = info(&["--s3-credentials-file", "creds"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Plain HTTP to a host that is not this machine is refused without --s3-allow-http.
    let out = info(
        &[
            "--s3-endpoint",
            "http://192.0.2.1:9000",
            "--s3-credentials-file",
            creds,
        ],
        &[],
    );
    refused(&out, &["plain HTTP"]);

    // A key in the config file is refused (exit 2) and never echoed.
    let bad = rig.scratch.path().join("bad.toml");
    fs::write(
        &bad,
        format!(
            "repo = \"{url}\"\n[s3]\nendpoint = \"{endpoint}\"\nsecret_access_key = \"{}\"\n",
            rig.s3.secret_key
        ),
    )
    .unwrap();
    let out = run(&["--config", s(&bad), "info", "--cluster", CLUSTER]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("secret_access_key") && msg.contains("credentials_file"),
        "{msg}"
    );
    assert!(!msg.contains(&rig.s3.secret_key), "{msg}");
    // And --help teaches where the key goes.
    let help = ok(run(&["info", "--help"]), "info --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for needle in [
        "--s3-endpoint",
        "--s3-credentials-file",
        "--s3-instance-credentials",
        "ps",
    ] {
        assert!(help.contains(needle), "{needle} not in:\n{help}");
    }
}
per_major!(settings_reach_the_bucket: 16);

impl S3Rig {
    /// `pgsafe --config FILE args…` (the rig's config file names the repository).
    fn pgsafe(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", s(&self.config)];
        all.extend_from_slice(args);
        run(&all)
    }

    /// The names of the objects under the repository's prefix.
    fn objects(&self, prefix: &str) -> Vec<String> {
        let b = S3Backend::open(&self.s3.config(prefix)).unwrap();
        b.list(None)
            .unwrap()
            .into_iter()
            .map(|o| o.name.to_string())
            .collect()
    }
}

/// A server archiving into the rig's repository through its config file alone (its
/// environment has no AWS_* variable: the test process has none), registered as [`CLUSTER`].
fn archiving_server(rig: &S3Rig, major: u32) -> Cluster {
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
    ] {
        assert!(
            std::env::var_os(k).is_none(),
            "the test process has {k} set"
        );
    }
    let mut opts = ClusterOptions::new().fast_unsafe();
    if major >= 11 {
        opts = opts.wal_segsize_mb(1);
    }
    let cfg = s(&rig.config);
    for line in archive_settings(
        &bin(),
        &["--config", cfg, "archive-push", "--cluster", CLUSTER],
    ) {
        opts = opts.conf(line);
    }
    Cluster::started(&PgInstall::major(major), opts)
}

/// `pgsafe backup --cluster main` of `c` into the config file's repository: the backup ID.
fn backup(rig: &S3Rig, c: &Cluster) -> String {
    let conn = c.conninfo();
    let out = ok(
        rig.pgsafe(&[
            "backup",
            "--cluster",
            CLUSTER,
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
            "--json",
            "--progress",
            "none",
        ]),
        &format!("PostgreSQL {}: backup into S3", c.major()),
    );
    json(&out)["backup_id"].as_str().unwrap().to_owned()
}

/// Restores to `target` (promoting there) into the rig's scratch folder, starts the copy and
/// checks it: exactly `marks`, pgbench's invariant with at least `history` transactions,
/// amcheck. The restore's recovery settings must name no key.
fn restore_and_check(
    rig: &S3Rig,
    c: &Cluster,
    name: &str,
    target: &[&str],
    marks: &[i32],
    history: i64,
) {
    let m = format!("PostgreSQL {} ({name} {target:?})", c.major());
    let data = rig.scratch.path().join(name);
    let mut args = vec![
        "restore",
        "--cluster",
        CLUSTER,
        "--pgdata",
        s(&data),
        "--progress",
        "none",
        "--target-action",
        "promote",
    ];
    args.extend_from_slice(target);
    let out = ok(rig.pgsafe(&args), &m);
    assert!(
        !text(&out).contains(&rig.s3.secret_key),
        "{m}: {}",
        text(&out)
    );
    let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
    let recovery = fs::read_to_string(data.join("recovery.conf")).unwrap_or_default();
    let settings = format!("{auto}{recovery}");
    assert!(settings.contains("archive-get"), "{m}: {settings}");
    assert!(
        settings.contains("--s3-credentials-file"),
        "{m}: {settings}"
    );
    assert!(!settings.contains(&rig.s3.secret_key), "{m}: {settings}");
    let mut r = Cluster::adopt(c.install(), &data, ClusterOptions::new().fast_unsafe());
    r.start();
    r.wait_recovery_done();
    let mut client = r.connect();
    check_marks(&mut client, MARKS, marks)
        .unwrap_or_else(|e| panic!("{m}: {e}; server log:\n{}", r.server_log_tail(40)));
    let rows = pgbench_invariant(&mut client).unwrap_or_else(|e| panic!("{m}: {e}"));
    assert!(
        rows >= history,
        "{m}: {rows} pgbench transactions, {history} committed before"
    );
    amcheck(&r).unwrap_or_else(|e| panic!("{m}: {e}"));
    drop(client);
    r.stop();
    drop(r);
    let _ = fs::remove_dir_all(data);
}

fn archive_backup_restore_expire(major: u32) {
    archive_backup_restore_expire_on(S3Kind::S3sFs, major);
}

fn archive_backup_restore_expire_on(kind: S3Kind, major: u32) {
    let prefix = "pg";
    let rig = S3Rig::new(kind, prefix);
    let c = archiving_server(&rig, major);
    let conn = c.conninfo();
    let m = format!("PostgreSQL {major}");
    ok(
        rig.pgsafe(&[
            "init",
            "--cluster",
            CLUSTER,
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
        ]),
        &format!("{m}: init"),
    );
    // check: the server's archive_command reaches the repository (it switches a WAL file and
    // waits for it in the bucket).
    let out = rig.pgsafe(&["check", "--cluster", CLUSTER, "-d", &conn, "--json"]);
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(0), "{m}: check: {doc}");
    // The object store stands in for the folder checks: writable, the clock agrees, deletes.
    let o = &doc["repository"]["object_store"];
    assert_eq!(o["writable"], true, "{m}: {doc}");
    assert_eq!(o["can_delete"], true, "{m}: {doc}");
    assert!(
        o["clock_skew_secs"].as_u64().is_some_and(|s| s < 300),
        "{m}: {doc}"
    );
    assert!(
        !rig.objects(prefix)
            .iter()
            .any(|o| o.starts_with("pgsafe-check/")),
        "{m}: the probe object was left"
    );

    pgbench_init(&c, 1);
    let mut marks = Marks::create(&c, MARKS, 0);
    marks.mark(&c, None); // 0: before the backup
    let mut bench = PgbenchRun::start(&c, 2);
    bench.wait_more(&c, 20);
    let first = backup(&rig, &c);
    let mut at: Vec<(Mark, i64)> = Vec::new();
    for _ in 1..=4 {
        bench.wait_more(&c, 20);
        let h = history_rows(&mut c.connect());
        at.push((marks.mark(&c, None), h));
    }
    bench.wait_more(&c, 10);
    bench.stop();
    wait_archived(&c);

    // info: the backup, the archive window, and no claim that no WAL is kept after it.
    let out = ok(
        rig.pgsafe(&["info", "--cluster", CLUSTER, "--json"]),
        "info",
    );
    let doc = json(&out);
    let cl = &doc["clusters"][0];
    assert_eq!(cl["totals"]["complete"], 1, "{m}: {doc}");
    assert!(
        cl["wal"]["window"].is_object(),
        "{m}: no PITR window: {doc}"
    );
    let out = ok(rig.pgsafe(&["info", "--cluster", CLUSTER]), "info");
    let human = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!human.contains("keeps no WAL"), "{m}: {human}");
    ok(
        rig.pgsafe(&["verify", "--cluster", CLUSTER, "--progress", "none"]),
        "verify",
    );
    let out = ok(rig.pgsafe(&["metrics"]), "metrics");
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        metrics.contains(&format!("cluster=\"{CLUSTER}\"")),
        "{m}: {metrics}"
    );

    let (m1, m3) = (&at[0], &at[2]);
    restore_and_check(
        &rig,
        &c,
        "time",
        &["--target-time", &m3.0.time],
        &marks.ids_through(3),
        m3.1,
    );
    let lsn = m1.0.lsn.to_string();
    restore_and_check(
        &rig,
        &c,
        "lsn",
        &["--target-lsn", &lsn],
        &marks.ids_through(1),
        m1.1,
    );

    // A second backup; expire keeps one full: the first one's objects leave the bucket.
    let second = backup(&rig, &c);
    let after = marks.mark(&c, None);
    let h = history_rows(&mut c.connect());
    wait_archived(&c);
    let held = |id: &str| {
        rig.objects(prefix)
            .into_iter()
            .filter(|o| o.contains(id))
            .count()
    };
    assert!(
        held(&first) > 0,
        "{m}: the first backup is not in the bucket"
    );
    let out = ok(
        rig.pgsafe(&["expire", "--cluster", CLUSTER, "--keep-full", "1", "--json"]),
        "expire",
    );
    assert_eq!(held(&first), 0, "{m}: after expire: {}", text(&out));
    assert!(held(&second) > 0, "{m}: expire removed the kept backup");
    let lsn = after.lsn.to_string();
    restore_and_check(
        &rig,
        &c,
        "after-expire",
        &["--target-lsn", &lsn],
        &marks.ids_through(after.id),
        h,
    );
}
per_major!(archive_backup_restore_expire: 10, 15, 18);

/// The same run on moto, a second, independent S3 implementation.
fn moto_archive_backup_restore_expire(major: u32) {
    archive_backup_restore_expire_on(S3Kind::Moto, major);
}
per_major!(moto_archive_backup_restore_expire: 17);

/// pgbench_accounts' row count and balance sum.
fn accounts(c: &Cluster) -> (i64, i64) {
    let row = c
        .connect()
        .query_one(
            "SELECT count(*), sum(abalance)::bigint FROM pgbench_accounts",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Every command's requests go through a fault-injecting proxy. Bounded faults of every kind
/// (503 SlowDown and 500 answers, connections reset before and after the server acted, a body
/// cut in half, a stalled answer) are retried: backup, archive-push, verify and restore
/// succeed, and the restored copy has the source's rows. A fault that does not pass (every
/// part upload answered SlowDown) fails the backup within the retry budget, and nothing of it
/// looks complete: no multipart upload is left open, `info` counts one complete backup, and
/// `latest` is still the first backup.
fn faults_are_retried_or_fail_cleanly(major: u32) {
    let prefix = "faults";
    let rig = S3Rig::new(S3Kind::S3sFs, prefix);
    let proxy = FaultProxy::start(rig.s3.port);
    rig.write_config(prefix, &proxy.endpoint(), "retry_budget = \"20s\"\n");
    let c = archiving_server(&rig, major);
    let conn = c.conninfo();
    let m = format!("PostgreSQL {major}");
    ok(
        rig.pgsafe(&[
            "init",
            "--cluster",
            CLUSTER,
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
        ]),
        &format!("{m}: init"),
    );
    // Scale 3: pgbench_accounts is about 40 MB, a multipart upload.
    pgbench_init(&c, 3);
    let source = accounts(&c);

    let transient = [
        (RequestKind::PutObject, Fault::SlowDown, 3),
        (RequestKind::CreateMultipart, Fault::InternalError, 1),
        (RequestKind::UploadPart, Fault::ResetAfter, 2),
        (RequestKind::UploadPart, Fault::ResetBefore, 1),
        (RequestKind::CompleteMultipart, Fault::SlowDown, 1),
        (RequestKind::Head, Fault::ResetBefore, 2),
        (
            RequestKind::List,
            Fault::Stall(std::time::Duration::from_secs(2)),
            1,
        ),
    ];
    for (kind, fault, n) in transient {
        proxy.inject(kind, fault, n);
    }
    let first = backup(&rig, &c);
    assert_eq!(proxy.injected(), 11, "{m}: faults left: {:?}", proxy.seen());
    proxy.inject(RequestKind::Get, Fault::Truncate, 3);
    proxy.inject(RequestKind::Get, Fault::ResetAfter, 1);
    ok(
        rig.pgsafe(&["verify", "--cluster", CLUSTER, "--progress", "none"]),
        &format!("{m}: verify through truncated and reset reads"),
    );
    assert_eq!(proxy.injected(), 15, "{m}: faults left: {:?}", proxy.seen());
    // archive-push driven by the server, through refused PUTs.
    proxy.inject(RequestKind::PutObject, Fault::SlowDown, 2);
    proxy.inject(RequestKind::Head, Fault::InternalError, 1);
    wait_archived(&c);
    assert_eq!(proxy.injected(), 18, "{m}: faults left: {:?}", proxy.seen());

    proxy.inject(RequestKind::Get, Fault::Truncate, 2);
    let data = rig.scratch.path().join("restored");
    ok(
        rig.pgsafe(&[
            "restore",
            "--cluster",
            CLUSTER,
            "--pgdata",
            s(&data),
            "--progress",
            "none",
        ]),
        &format!("{m}: restore through truncated reads"),
    );
    let mut r = Cluster::adopt(c.install(), &data, ClusterOptions::new().fast_unsafe());
    r.start();
    r.wait_recovery_done();
    assert_eq!(accounts(&r), source, "{m}: the restored copy's accounts");
    r.stop();
    drop(r);
    let _ = fs::remove_dir_all(&data);

    // Every part upload refused: the backup fails (not hangs), within the budget.
    proxy.clear();
    proxy.inject(RequestKind::UploadPart, Fault::SlowDown, 1_000_000);
    let out = rig.pgsafe(&[
        "backup",
        "--cluster",
        CLUSTER,
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--progress",
        "none",
    ]);
    proxy.clear();
    failed(&out, &["SlowDown"]);
    assert!(
        rig.s3.multipart_uploads().is_empty(),
        "{m}: uploads left open: {:?}",
        rig.s3.multipart_uploads()
    );
    let out = ok(
        rig.pgsafe(&["info", "--cluster", CLUSTER, "--json"]),
        "info",
    );
    let doc = json(&out);
    assert_eq!(doc["clusters"][0]["totals"]["complete"], 1, "{m}: {doc}");
    let latest: Vec<&serde_json::Value> = doc["clusters"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["latest"] == true)
        .collect();
    assert_eq!(latest.len(), 1, "{m}: {doc}");
    assert_eq!(latest[0]["id"], first.as_str(), "{m}: {doc}");
}
per_major!(faults_are_retried_or_fail_cleanly: 16);

/// [`S3Rig::pgsafe`] with `PGSAFE_KEY_FILE` set to `key_file`.
fn with_key(rig: &S3Rig, key_file: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--config", s(&rig.config)];
    all.extend_from_slice(args);
    let mut cmd = command(&all);
    cmd.env("PGSAFE_KEY_FILE", key_file);
    cmd.output().unwrap()
}

/// Makes `file` readable by the server's user (root-owned, its group, 0640).
fn server_readable(file: &Path) {
    std::os::unix::fs::chown(file, Some(0), Some(server_user().gid.as_raw())).unwrap();
    fs::set_permissions(file, fs::Permissions::from_mode(0o640)).unwrap();
}

/// An age identity written as a key file the server can read; its recipient.
fn identity_file(dir: &Path, name: &str) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let file = dir.join(name);
    fs::write(&file, format!("{}\n", id.to_string().expose_secret())).unwrap();
    server_readable(&file);
    (file, id.to_public().to_string())
}

fn encrypted_repository_on_s3(major: u32) {
    let prefix = "enc";
    let rig = S3Rig::new(S3Kind::S3sFs, prefix);
    let dir = rig.scratch.path();
    let (identity, recipient) = identity_file(dir, "identity.key");
    let (identity2, recipient2) = identity_file(dir, "identity2.key");
    let writer = dir.join("writer.key");
    let m = format!("PostgreSQL {major}");

    // The server archives with the writer key file (public keys only) in front of the command.
    let mut opts = ClusterOptions::new().fast_unsafe();
    if major >= 11 {
        opts = opts.wal_segsize_mb(1);
    }
    let cmd = format!(
        "PGSAFE_KEY_FILE={} {} --config {} archive-push --cluster {CLUSTER} %p",
        pgsafe_testkit::shell_quote(&writer),
        pgsafe_testkit::shell_quote(&bin()),
        pgsafe_testkit::shell_quote(&rig.config),
    );
    opts = opts
        .conf("archive_mode = on")
        .conf(format!("archive_command = '{}'", cmd.replace('\'', "''")));
    let c = Cluster::started(&PgInstall::major(major), opts);
    let conn = c.conninfo();
    ok(
        rig.pgsafe(&[
            "init",
            "--cluster",
            CLUSTER,
            "-D",
            s(c.data_dir()),
            "-d",
            &conn,
            "--encrypt",
            "age",
            "--recipient",
            &recipient,
            "--writer-key-out",
            s(&writer),
        ]),
        &format!("{m}: init --encrypt age"),
    );
    server_readable(&writer);

    pgbench_init(&c, 1);
    let mut marks = Marks::create(&c, MARKS, 0);
    marks.mark(&c, None);
    let backup_args = [
        "backup",
        "--cluster",
        CLUSTER,
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--json",
        "--progress",
        "none",
    ];
    let out = ok(
        with_key(&rig, &writer, &backup_args),
        &format!("{m}: backup, public key"),
    );
    let first = json(&out)["backup_id"].as_str().unwrap().to_owned();
    let m1 = marks.mark(&c, None);
    let m2 = marks.mark(&c, None);
    wait_archived(&c);

    // The public-key host cannot restore: a clear error, nothing written.
    let target = dir.join("refused");
    let lsn2 = m2.lsn.to_string();
    let restore = |key: &Path, data: &Path, lsn: &str| {
        with_key(
            &rig,
            key,
            &[
                "restore",
                "--cluster",
                CLUSTER,
                "--pgdata",
                s(data),
                "--progress",
                "none",
                "--target-action",
                "promote",
                "--target-lsn",
                lsn,
            ],
        )
    };
    let out = restore(&writer, &target, &lsn2);
    failed(&out, &["age identity file or the passphrase"]);
    assert!(
        !target.join("PG_VERSION").exists(),
        "{m}: a refused restore wrote files"
    );
    let _ = fs::remove_dir_all(&target);

    // Rotate to a new recipient; the database host gets a key file for it.
    ok(
        with_key(
            &rig,
            &identity,
            &["key", "rotate", "--recipient", &recipient2, "--json"],
        ),
        &format!("{m}: key rotate"),
    );
    let writer2 = dir.join("writer2.key");
    ok(
        with_key(
            &rig,
            &identity2,
            &[
                "key",
                "writer-key",
                "--recipient",
                &recipient2,
                "--out",
                s(&writer2),
            ],
        ),
        &format!("{m}: key writer-key"),
    );
    fs::copy(&writer2, &writer).unwrap();
    server_readable(&writer);
    let out = ok(
        rig.pgsafe(&["key", "list", "--json"]),
        &format!("{m}: key list"),
    );
    assert!(
        text(&out).contains(&recipient2) || text(&out).contains("age"),
        "{}",
        text(&out)
    );

    // The old identity opens nothing any more; the new one restores to the target.
    let out = restore(&identity, &dir.join("old-identity"), &lsn2);
    failed(&out, &[]);
    let _ = fs::remove_dir_all(dir.join("old-identity"));
    let data = dir.join("lsn");
    let out = ok(
        restore(&identity2, &data, &lsn2),
        &format!("{m}: restore, new identity"),
    );
    assert!(!text(&out).contains("AGE-SECRET-KEY"), "{}", text(&out));
    let auto = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default()
        + &fs::read_to_string(data.join("recovery.conf")).unwrap_or_default();
    assert!(
        auto.contains(&format!("PGSAFE_KEY_FILE={}", identity2.display())),
        "{m}: {auto}"
    );
    let check = |data: &Path, marks: &[i32]| {
        let mut r = Cluster::adopt(c.install(), data, ClusterOptions::new().fast_unsafe());
        r.start();
        r.wait_recovery_done();
        check_marks(&mut r.connect(), MARKS, marks)
            .unwrap_or_else(|e| panic!("{m}: {e}; server log:\n{}", r.server_log_tail(40)));
        pgbench_invariant(&mut r.connect()).unwrap_or_else(|e| panic!("{m}: {e}"));
        r.stop();
        drop(r);
        let _ = fs::remove_dir_all(data);
    };
    check(&data, &marks.ids_through(m2.id));
    let _ = m1;

    // A second backup (the new writer key file), expire keeps one: the first backup's objects
    // and its keyring entries leave the bucket.
    let out = ok(
        with_key(&rig, &writer, &backup_args),
        &format!("{m}: second backup"),
    );
    let second = json(&out)["backup_id"].as_str().unwrap().to_owned();
    let m3 = marks.mark(&c, None);
    wait_archived(&c);
    let keys_of = |id: &str| {
        let prefix = format!("pgsafe-keyring/data/{CLUSTER}/backups/{id}/");
        rig.objects("enc")
            .into_iter()
            .filter(|o| o.starts_with(&prefix))
            .count()
    };
    assert!(
        keys_of(&first) > 0 && keys_of(&second) > 0,
        "{m}: {:?}",
        rig.objects("enc")
    );
    ok(
        with_key(
            &rig,
            &identity2,
            &["expire", "--cluster", CLUSTER, "--keep-full", "1"],
        ),
        &format!("{m}: expire"),
    );
    let left: Vec<String> = rig
        .objects("enc")
        .into_iter()
        .filter(|o| o.contains(&first))
        .collect();
    assert!(left.is_empty(), "{m}: the expired backup left {left:?}");
    assert!(keys_of(&second) > 0, "{m}: the kept backup's key is gone");
    let data = dir.join("after-expire");
    let lsn3 = m3.lsn.to_string();
    ok(
        restore(&identity2, &data, &lsn3),
        &format!("{m}: restore after expire"),
    );
    check(&data, &marks.ids_through(m3.id));
}
per_major!(encrypted_repository_on_s3: 15);
