//! The harness against real servers of every supported major (10–18). A missing major fails
//! (PgInstall::major panics naming scripts/install-postgres); nothing is skipped.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use pgsafe_testkit::{
    Cluster, ClusterOptions, LoadGenerator, LoadOptions, PgInstall, client_bin_dir,
    server_owned_tempdir,
};

/// Runs `f` for every supported major, in parallel threads; reports every failing major.
fn for_each_major(f: impl Fn(PgInstall) + Sync) {
    for_majors(&PgInstall::supported_majors(), f)
}

fn for_majors(majors: &[u32], f: impl Fn(PgInstall) + Sync) {
    // Resolve every install first, so that a missing one fails loudly before anything starts.
    let installs: Vec<PgInstall> = majors.iter().map(|&m| PgInstall::major(m)).collect();
    let f = &f;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = installs
            .into_iter()
            .map(|i| {
                let major = i.major;
                let h = std::thread::Builder::new()
                    .name(format!("pg{major}"))
                    .spawn_scoped(s, move || f(i))
                    .expect("spawn");
                (major, h)
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|(major, h)| {
                h.join()
                    .err()
                    .map(|e| format!("PostgreSQL {major}: {}", panic_text(&*e)))
            })
            .collect()
    });
    if !failures.is_empty() {
        panic!(
            "{} of {} majors failed:\n{}",
            failures.len(),
            majors.len(),
            failures.join("\n\n")
        );
    }
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-text panic)".into())
}

fn count(c: &Cluster, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"))
}

#[test]
fn every_major_is_installed_and_the_client_tools_too() {
    let all = PgInstall::all();
    let majors: Vec<u32> = all.iter().map(|i| i.major).collect();
    assert_eq!(
        majors,
        PgInstall::supported_majors(),
        "run scripts/install-postgres"
    );
    for i in &all {
        assert_eq!(i.version.major(), i.major);
        assert!(i.bin("postgres").is_file() && i.bin("initdb").is_file());
    }
    let client = client_bin_dir();
    for tool in [
        "pg_basebackup",
        "pg_verifybackup",
        "pg_controldata",
        "pg_waldump",
        "pgbench",
    ] {
        let out = std::process::Command::new(client.join(tool))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool} --version");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("15."),
            "{tool} is not version 15"
        );
    }
}

#[test]
#[should_panic(expected = "scripts/install-postgres")]
fn an_unavailable_major_panics_with_the_install_hint() {
    PgInstall::major(9);
}

#[test]
fn every_major_starts_reports_its_version_and_stops() {
    for_each_major(|install| {
        let mut c = Cluster::started(&install, ClusterOptions::new());
        let num = c.server_version_num();
        assert_eq!(num / 10000, install.major);
        assert_eq!(
            num,
            install.version.num(),
            "server version vs. install stamp"
        );
        assert_eq!(c.show("data_checksums"), "on");
        assert_eq!(c.show("wal_level"), "replica");
        assert_eq!(c.show("listen_addresses"), "");
        assert_eq!(c.show("port"), c.port().to_string());
        assert_eq!(c.show("fsync"), "on");
        assert!(
            c.socket_dir().as_os_str().len() < 40,
            "socket dir {:?} is long",
            c.socket_dir()
        );
        // The conninfo string works with a libpq-style parser.
        let mut client = postgres::Client::connect(&c.conninfo(), postgres::NoTls).unwrap();
        let user: String = client
            .query_one("SELECT current_user::text", &[])
            .unwrap()
            .get(0);
        assert_eq!(user, "postgres");
        drop(client);
        // The server runs as the unprivileged server user, never as root.
        let pid = c.pid().unwrap();
        let uid = std::fs::metadata(format!("/proc/{pid}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        assert_eq!(uid.unwrap(), pgsafe_testkit::server_user().uid.as_raw());
        c.restart();
        c.stop();
        assert!(!c.is_running());
        assert!(
            c.server_log().contains("database system is shut down"),
            "{}",
            c.server_log()
        );
    });
}

#[test]
fn every_major_recovers_from_a_crash_and_an_immediate_stop() {
    for_each_major(|install| {
        let mut c = Cluster::started(&install, ClusterOptions::new());
        c.execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)",
        );
        c.crash();
        assert!(!c.is_running());
        c.start();
        assert_eq!(count(&c, "t"), 1000);
        assert!(
            c.server_log()
                .contains("not properly shut down; automatic recovery in progress"),
            "no crash recovery in the log:\n{}",
            c.server_log_tail(30)
        );
        c.execute("INSERT INTO t SELECT generate_series(1001, 2000)");
        c.immediate_stop();
        c.start();
        assert_eq!(count(&c, "t"), 2000);
    });
}

#[test]
fn every_major_keeps_every_committed_row_when_stopped_immediately_under_load() {
    for_each_major(|install| {
        let mut c = Cluster::started(&install, ClusterOptions::new());
        let load = LoadGenerator::start(&c, 3);
        load.wait_for_transactions(50, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1500));
        c.immediate_stop(); // while the clients are writing
        let report = load.stop();
        assert!(report.transactions >= 50, "{report:?}");
        assert!(
            !report.errors.is_empty(),
            "the clients should have seen the server go away"
        );
        c.start();
        let mut client = c.connect();
        report
            .verify(&mut client)
            .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", c.server_log_tail(30)));
        assert!(report.live_ids().len() > 50);
        // A second generator on the same table uses other ids; both reports stay valid.
        let load = LoadGenerator::start(&c, 2);
        load.wait_for_transactions(20, Duration::from_secs(60));
        let second = load.stop();
        assert!(second.id_base > report.id_max || second.id_max <= report.id_base);
        second.verify(&mut client).unwrap();
        report.verify(&mut client).unwrap();
        drop(client);
        // And a crash (SIGKILL of the postmaster) under load keeps every committed row too.
        let load = LoadGenerator::start(&c, 3);
        load.wait_for_transactions(50, Duration::from_secs(60));
        c.crash();
        let third = load.stop();
        c.start();
        let mut client = c.connect();
        for r in [&report, &second, &third] {
            r.verify(&mut client)
                .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", c.server_log_tail(30)));
        }
    });
}

#[test]
fn every_major_runs_a_tablespace_whose_path_has_spaces() {
    for_each_major(|install| {
        let mut c = Cluster::started(&install, ClusterOptions::new().with_tablespace(true));
        let dir = c.tablespace_dir().expect("tablespace dir").to_path_buf();
        assert!(dir.to_string_lossy().contains(' '));
        assert!(!dir.starts_with(c.data_dir()));
        let loc: String = c.query_one(
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'",
        );
        assert_eq!(Path::new(&loc), dir);
        let oid: u32 = c.query_one("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
        let link =
            std::fs::read_link(c.data_dir().join("pg_tblspc").join(oid.to_string())).unwrap();
        assert_eq!(link, dir);
        c.execute("CREATE TABLE in_ts (id int) TABLESPACE ts1; INSERT INTO in_ts SELECT generate_series(1, 500)");
        let versioned: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(versioned.len(), 1, "one PG_<major>_<catversion> folder");
        assert!(
            versioned[0]
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("PG_{}_", install.major))
        );
        // A load generator can write into the tablespace too.
        let load = LoadGenerator::start_with(
            &c,
            LoadOptions {
                clients: 2,
                table: "load_ts".into(),
                tablespace: Some("ts1".into()),
                ..Default::default()
            },
        );
        load.wait_for_transactions(20, Duration::from_secs(60));
        let report = load.stop();
        c.crash();
        c.start();
        assert_eq!(count(&c, "in_ts"), 500);
        report.verify(&mut c.connect()).unwrap();
    });
}

#[test]
fn every_major_streams_to_a_standby() {
    for_each_major(|install| {
        let primary = Cluster::started(
            &install,
            ClusterOptions::new().with_tablespace(true).fast_unsafe(),
        );
        primary.execute(
            "CREATE TABLE r (id int) TABLESPACE ts1; INSERT INTO r SELECT generate_series(1, 100)",
        );
        // Light load while the standby is made (2 cores run nine of these at once).
        let opts = LoadOptions {
            clients: 1,
            pause: Duration::from_millis(5),
            ..Default::default()
        };
        let load = LoadGenerator::start_with(&primary, opts);
        load.wait_for_transactions(5, Duration::from_secs(60));
        let standby = Cluster::new_standby(&primary);
        assert!(standby.query_one::<bool>("SELECT pg_is_in_recovery()"));
        assert_ne!(standby.tablespace_dir(), primary.tablespace_dir());
        assert!(
            standby
                .tablespace_dir()
                .unwrap()
                .to_string_lossy()
                .contains(' ')
        );
        load.wait_for_transactions(20, Duration::from_secs(60));
        let report = load.stop();
        primary.execute("INSERT INTO r SELECT generate_series(101, 200)");
        standby.wait_for_replay(&primary);
        assert_eq!(count(&standby, "r"), 200);
        report.verify(&mut standby.connect()).unwrap();
        let slot = standby.standby_slot().unwrap().to_owned();
        let active: bool = primary.query_one(&format!(
            "SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ));
        assert!(active);
        drop(standby);
        let left: i64 = primary.query_one("SELECT count(*) FROM pg_replication_slots");
        assert_eq!(left, 0, "the standby's slot should be dropped with it");
    });
}

#[test]
fn a_promoted_standby_accepts_writes() {
    for_majors(&[10, 18], |install| {
        let primary = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
        primary.execute("CREATE TABLE p (id int); INSERT INTO p VALUES (1)");
        let mut standby = Cluster::new_standby(&primary);
        standby.wait_for_replay(&primary);
        standby.promote();
        standby.execute("INSERT INTO p VALUES (2)");
        assert_eq!(count(&standby, "p"), 2);
        assert_eq!(count(&primary, "p"), 1);
    });
}

#[test]
fn wal_segment_size_and_checksums_are_options() {
    for_majors(&[11, 14, 18], |install| {
        let c = Cluster::started(
            &install,
            ClusterOptions::new().wal_segsize_mb(1).checksums(false),
        );
        assert_eq!(c.show("wal_segment_size"), "1MB");
        assert_eq!(c.show("data_checksums"), "off");
        let seg = std::fs::read_dir(c.data_dir().join("pg_wal"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().len() == 24)
            .expect("a WAL segment");
        assert_eq!(seg.metadata().unwrap().len(), 1 << 20);
    });
}

#[test]
#[should_panic(expected = "cannot change the WAL segment size")]
fn wal_segment_size_panics_on_10() {
    Cluster::new(
        &PgInstall::major(10),
        ClusterOptions::new().wal_segsize_mb(1),
    );
}

#[test]
fn archiving_copies_wal_into_the_archive_dir_and_conf_lines_apply() {
    for_majors(&[10, 15, 18], |install| {
        let opts = ClusterOptions::new()
            .with_archive(true)
            .conf("max_wal_size = 64MB")
            .conf("work_mem = '5MB'");
        let c = Cluster::started(&install, opts);
        assert_eq!(c.show("max_wal_size"), "64MB");
        assert_eq!(c.show("work_mem"), "5MB");
        assert_eq!(c.show("archive_mode"), "on");
        c.execute("CREATE TABLE a AS SELECT generate_series(1, 1000) AS x");
        let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
        c.execute("SELECT pg_switch_wal()");
        let archived = c.archive_dir().unwrap().join(&seg);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !archived.is_file() {
            assert!(
                std::time::Instant::now() < deadline,
                "{seg} not archived:\n{}",
                c.server_log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

#[test]
fn many_clusters_run_at_once_without_clashing() {
    let installs = [PgInstall::major(16), PgInstall::major(12)];
    let clusters: Vec<Cluster> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let install = &installs[i % 2];
                s.spawn(move || {
                    let c = Cluster::started(install, ClusterOptions::new().fast_unsafe());
                    c.execute(&format!(
                        "CREATE TABLE who (n int); INSERT INTO who VALUES ({i})"
                    ));
                    c
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ports: BTreeSet<u16> = clusters.iter().map(|c| c.port()).collect();
    let sockets: BTreeSet<_> = clusters
        .iter()
        .map(|c| c.socket_dir().to_path_buf())
        .collect();
    assert_eq!((ports.len(), sockets.len()), (8, 8));
    for (i, c) in clusters.iter().enumerate() {
        assert_eq!(
            c.query_one::<i32>("SELECT n FROM who"),
            i as i32,
            "each cluster has its own data"
        );
    }
    // Every template-cloned cluster of one major shares the system identifier; fresh_initdb not.
    let sysid =
        |c: &Cluster| c.query_one::<i64>("SELECT system_identifier FROM pg_control_system()");
    assert_eq!(sysid(&clusters[0]), sysid(&clusters[2]));
    let fresh = Cluster::started(
        &installs[0],
        ClusterOptions::new().fresh_initdb(true).fast_unsafe(),
    );
    assert_ne!(sysid(&fresh), sysid(&clusters[0]));
    let dirs: Vec<_> = clusters
        .iter()
        .map(|c| c.base_dir().to_path_buf())
        .collect();
    drop(clusters);
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "temp dirs are removed on drop"
    );
}

#[test]
fn an_adopted_copy_of_a_data_directory_starts() {
    for_majors(&[13, 17], |install| {
        let mut c = Cluster::started(
            &install,
            ClusterOptions::new()
                .with_tablespace(true)
                .with_archive(true),
        );
        c.execute(
            "CREATE TABLE k (id int) TABLESPACE ts1; INSERT INTO k SELECT generate_series(1, 42)",
        );
        c.stop();
        let target = server_owned_tempdir();
        let data = target.path().join("restored");
        pgsafe_testkit::copy_tree(c.data_dir(), &data, None).unwrap();
        // Point the copy's tablespace link at a copy of the tablespace.
        let oid_link = std::fs::read_dir(data.join("pg_tblspc"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let ts_copy = target.path().join("ts copy");
        pgsafe_testkit::copy_tree(c.tablespace_dir().unwrap(), &ts_copy, None).unwrap();
        std::fs::remove_file(&oid_link).unwrap();
        std::os::unix::fs::symlink(&ts_copy, &oid_link).unwrap();
        let mut restored = Cluster::adopt(&install, &data, ClusterOptions::new());
        restored.start();
        assert_eq!(count(&restored, "k"), 42);
        assert_eq!(
            restored.show("archive_mode"),
            "off",
            "an adopted copy must not archive into the original's dir"
        );
        assert_eq!(restored.tablespace_dir(), Some(ts_copy.as_path()));
        restored.stop();
        drop(restored);
        assert!(
            data.join("PG_VERSION").is_file(),
            "an adopted data dir is the caller's"
        );
    });
}
