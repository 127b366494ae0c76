//! Red team of repositories on object storage (s3s-fs on loopback, the testkit's fault proxy in
//! front of it): an object rewritten by another writer while pgsafe reads it, across a read
//! that breaks off and resumes; a live data directory copied and started, archiving into the
//! same bucket as its source; pgbench's invariant and pg_amcheck on copies restored from an
//! encrypted bucket.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use pgsafe::storage::s3::S3Backend;
use pgsafe::storage::{Backend, ObjectName, PutOptions};
use pgsafe_testkit::s3::{Fault, FaultProxy, RequestKind, S3Kind, S3Server};
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, PgbenchRun, amcheck, archive_settings, copy_tree,
    give_to_server_user, history_rows, pgbench_init, pgbench_invariant, server_owned_tempdir,
    server_user, wait_archived,
};

use common::{bin, command, json, ok, path_str as s, text};

fn n(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

/// 4 MiB of bytes that differ from offset to offset.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect()
}

/// A read that breaks off half-way resumes with a ranged read. If the object was replaced in
/// the meantime (a WAL file stored plain has no checksum of its own: only its first page is
/// checked), the rest must not come from the new object: the read fails, or gives one object's
/// bytes whole. The rewrite happens while the proxy holds the first resume attempt.
#[test]
fn an_object_rewritten_mid_read_is_never_spliced() {
    let server = S3Server::start(S3Kind::S3sFs);
    let proxy = FaultProxy::start(server.port);
    let direct = S3Backend::open(&server.config("repo")).unwrap();
    let mut config = server.config("repo");
    config.endpoint = Some(proxy.endpoint());
    config.retry_budget = Duration::from_secs(30);
    let via_proxy = S3Backend::open(&config).unwrap();

    let name = n("main/wal/00000001/00000000/000000010000000000000003");
    let old = pattern(4 << 20);
    let mut new = old.clone();
    // Changed in both halves: a splice of the two is neither.
    new[1 << 20] ^= 0xff;
    new[3 << 20] ^= 0xff;
    direct.put(&name, &old, PutOptions::default()).unwrap();

    proxy.inject(RequestKind::Get, Fault::CutBody, 1);
    proxy.inject(RequestKind::Get, Fault::Stall(Duration::from_secs(4)), 1);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = match via_proxy.read(&name) {
            Ok(mut r) => r
                .read_to_end(&mut out)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        (r, out)
    });
    let t = Instant::now();
    while !proxy
        .seen()
        .iter()
        .any(|(_, f)| matches!(f, Some(Fault::Stall(_))))
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no resume was attempted: {:?}",
            proxy.seen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another writer replaces the object (pgsafe never does; the bucket's operator can).
    let name = n("main/wal/00000001/00000000/000000010000000000000003");
    assert!(direct.delete(&name).unwrap());
    direct.put(&name, &new, PutOptions::default()).unwrap();

    let (r, got) = reader.join().unwrap();
    assert!(proxy.injected() >= 2, "{:?}", proxy.seen());
    match r {
        Err(e) => eprintln!("the read failed, as it may: {e}"),
        Ok(()) => {
            let whole_old = got == old;
            let whole_new = got == new;
            assert!(
                whole_old || whole_new,
                "the read gave {} bytes spliced from two versions of the object (first \
                 difference from the old at {:?}, from the new at {:?})",
                got.len(),
                got.iter().zip(&old).position(|(a, b)| a != b),
                got.iter().zip(&new).position(|(a, b)| a != b),
            );
        }
    }
}

/// The environment that points pgsafe at `server` and gives it the passphrase file (`None`:
/// a plain repository).
fn env_of(server: &S3Server, passphrase: Option<&Path>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = server
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    if let Some(p) = passphrase {
        env.push(("PGSAFE_PASSPHRASE_FILE".into(), s(p).to_owned()));
    }
    env
}

fn run(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `archive_mode = on` and an archive_command running archive-push into `url` with `env` (the
/// server's own environment has none of it).
fn archiving_into(url: &str, env: &[(String, String)]) -> Vec<String> {
    let mut args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    args.push(s(&bin()).to_owned());
    for a in ["archive-push", "--repo", url, "--cluster", "main"] {
        args.push(a.to_owned());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    archive_settings(Path::new("/usr/bin/env"), &refs)
}

fn init(c: &Cluster, url: &str, env: &[(String, String)], extra: &[&str]) {
    let conn = c.conninfo();
    let mut args = vec![
        "init",
        "--repo",
        url,
        "--cluster",
        "main",
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--json",
    ];
    args.extend_from_slice(extra);
    ok(run(&args, env), "init on S3");
}

fn objects(server: &S3Server) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(d: &Path, base: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().to_owned(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    let dir = server.bucket_dir().unwrap();
    walk(&dir.join("repo/main/wal"), &dir, &mut out);
    out
}

/// A data directory copied while its server runs (cp of a live PGDATA, as a careless clone or
/// a crash-consistent snapshot), then started as it is: the same system on the same timeline,
/// archiving into the same bucket. The source ends the segment both write first; the copy's
/// push of its own bytes under that name is refused, PostgreSQL keeps retrying it (nothing
/// later from the copy gets in), and the bucket holds the source's segment.
#[test]
fn a_live_copy_archiving_into_the_same_bucket_is_refused() {
    let install = PgInstall::major(15);
    let server = S3Server::start(S3Kind::S3sFs);
    let env = env_of(&server, None);
    let url = server.url("repo");
    let mut opts = ClusterOptions::new().fast_unsafe().wal_segsize_mb(1);
    for line in archiving_into(&url, &env) {
        opts = opts.conf(line);
    }
    let c = Cluster::started(&install, opts);
    init(&c, &url, &env, &[]);
    c.execute("CREATE TABLE t (who text, i int)");
    wait_archived(&c);

    let scratch = server_owned_tempdir();
    let copy_data = scratch.path().join("clone");
    copy_tree(c.data_dir(), &copy_data, Some(server_user())).unwrap();
    let _ = fs::remove_file(copy_data.join("postmaster.pid"));
    let mut copy = Cluster::adopt(&install, &copy_data, ClusterOptions::new().fast_unsafe());
    copy.keep_own_archive_settings();
    copy.start();
    copy.execute("INSERT INTO t SELECT 'copy', generate_series(1, 1000)");
    c.execute("INSERT INTO t SELECT 'source', generate_series(1, 1000)");
    let seg = wait_archived(&c);
    let stored = objects(&server);
    let copy_seg: String = copy.query_one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    assert_eq!(copy_seg, seg, "the copy writes another segment");
    copy.execute("SELECT pg_switch_wal()");
    let t = Instant::now();
    loop {
        let (failed, last): (i64, Option<String>) = {
            let row = copy
                .connect()
                .query_one(
                    "SELECT failed_count, last_failed_wal FROM pg_stat_archiver",
                    &[],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        if failed > 0 && last.as_deref() == Some(seg.as_str()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the copy's push of {seg} never failed ({failed} failures, last {last:?}); log:\n{}",
            copy.server_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The copy goes on writing; PostgreSQL retries its refused push (three tries a round,
    // src/backend/postmaster/pgarch.c): nothing of the copy may get in meanwhile, not even
    // segments pushed ahead of the refused one, whose names the source is about to use.
    copy.execute("INSERT INTO t SELECT 'copy', generate_series(1, 1000)");
    let next: String = copy.query_one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    copy.execute("SELECT pg_switch_wal()");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let scratch_get = scratch.path().join("probe");
    for name in [&seg, &next] {
        let out = run(
            &[
                "archive-get",
                "--repo",
                &url,
                "--cluster",
                "main",
                name,
                s(&scratch_get),
            ],
            &env,
        );
        if out.status.success() {
            let mine = fs::read(copy_data.join("pg_wal").join(name)).unwrap();
            assert!(
                fs::read(&scratch_get).unwrap() != mine,
                "the bucket holds the copy's {name} (its push of {seg} was refused); new \
                 objects: {:?}",
                objects(&server)
                    .keys()
                    .filter(|k| !stored.contains_key(*k))
                    .collect::<Vec<_>>()
            );
            let _ = fs::remove_file(&scratch_get);
        }
    }
    assert!(
        !copy_data
            .join("pg_wal/archive_status")
            .join(format!("{seg}.done"))
            .exists(),
        "the copy's {seg} is acknowledged"
    );
    // The source goes on archiving its own next segment.
    let seg2 = wait_archived(&c);
    assert_eq!(seg2, next);
    // What the bucket serves under that name is the source's segment.
    let got = scratch.path().join("got");
    ok(
        run(
            &[
                "archive-get",
                "--repo",
                &url,
                "--cluster",
                "main",
                &seg,
                s(&got),
            ],
            &env,
        ),
        "archive-get",
    );
    let mine = fs::read(copy_data.join("pg_wal").join(&seg)).unwrap();
    assert!(
        fs::read(&got).unwrap() != mine,
        "the bucket holds the copy's {seg}"
    );
    copy.stop();
}

/// pgbench writes while a backup is taken into an encrypted (passphrase) repository on S3 and
/// the server archives into it; the restored copies — the backup alone, and to the end of the
/// archive — keep pgbench's balance invariant, pass pg_amcheck, and the second has every
/// transaction the source committed.
#[test]
fn encrypted_s3_restores_keep_the_pgbench_invariant_and_pass_amcheck() {
    let install = PgInstall::major(17);
    let server = S3Server::start(S3Kind::S3sFs);
    let scratch = server_owned_tempdir();
    let pass = scratch.path().join("passphrase");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    give_to_server_user(&pass);
    let env = env_of(&server, Some(&pass));
    let url = server.url("repo");
    let mut opts = ClusterOptions::new().fast_unsafe();
    for line in archiving_into(&url, &env) {
        opts = opts.conf(line);
    }
    let c = Cluster::started(&install, opts);
    init(
        &c,
        &url,
        &env,
        &["--encrypt", "passphrase", "--passphrase-file", s(&pass)],
    );
    pgbench_init(&c, 2);
    wait_archived(&c);

    let mut bench = PgbenchRun::start(&c, 3);
    bench.wait_more(&c, 200);
    let conn = c.conninfo();
    let v = json(&ok(
        run(
            &[
                "backup",
                "--repo",
                &url,
                "--cluster",
                "main",
                "-D",
                s(c.data_dir()),
                "-d",
                &conn,
                "--progress",
                "none",
                "--json",
            ],
            &env,
        ),
        "backup to encrypted S3 under pgbench",
    ));
    assert!(v["backup_id"].is_string());
    bench.wait_more(&c, 300);
    bench.stop();
    let committed = history_rows(&mut c.connect());
    wait_archived(&c);
    // Ciphertext in the bucket.
    let dir = server.bucket_dir().unwrap();
    let id = v["backup_id"].as_str().unwrap();
    let stored = fs::read(dir.join("repo/main/backups").join(id).join("PG_VERSION")).unwrap();
    assert_eq!(&stored[..8], b"\x89PGSAFE\n");

    for (name, target) in [("backup", None), ("end", Some("--target-end"))] {
        let data = scratch.path().join(name);
        let mut args = vec![
            "restore",
            "--repo",
            &url,
            "--cluster",
            "main",
            "--pgdata",
            s(&data),
            "--progress",
            "none",
        ];
        if let Some(t) = target {
            args.push(t);
        }
        ok(run(&args, &env), &format!("restore {name}"));
        if target.is_some() {
            // The restored server's restore_command runs archive-get in the server's
            // environment, which has no S3 settings: give them, as the DBA's service file would.
            let auto = data.join("postgresql.auto.conf");
            let conf = fs::read_to_string(&auto).unwrap();
            let prefix: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
            let conf = conf.replace(
                "restore_command = '",
                &format!("restore_command = '/usr/bin/env {prefix}"),
            );
            assert!(conf.contains("/usr/bin/env"), "{conf}");
            fs::write(&auto, conf).unwrap();
        }
        let mut r = Cluster::adopt(&install, &data, ClusterOptions::new().fast_unsafe());
        r.start();
        r.wait_recovery_done();
        let rows = pgbench_invariant(&mut r.connect())
            .unwrap_or_else(|e| panic!("{name}: pgbench invariant: {e}"));
        amcheck(&r).unwrap_or_else(|e| panic!("{name}: pg_amcheck: {e}"));
        if target.is_some() {
            assert_eq!(rows, committed, "{name}: committed transactions lost");
        } else {
            assert!(rows >= 200, "{name}: {rows} history rows");
        }
        r.stop();
        eprintln!("{name}: {rows} pgbench transactions, invariant holds, amcheck clean");
    }
    let _ = text;
}
