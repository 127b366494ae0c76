//! Snapshot mode with real storage snapshots, as a DBA runs it: PGDATA and a tablespace on two
//! btrfs subvolumes (two snapshots, so the copy is not atomic across volumes) or on XFS with
//! reflink copies, real loop-device file systems (root only; skipped visibly elsewhere, see
//! `pgsafe_testkit::LoopFs`), pgbench and the harness's load generator writing throughout,
//! `pgsafe start` → snapshots → `pgsafe stop` (or `pgsafe snapshot --exec` running the snapshot
//! command), then `pgsafe restore --from-copy` from the snapshots and PostgreSQL's own start-up.
//! The oracles are outside pgsafe: every row the load generator saw committed before `stop`
//! returned, pgbench's balance invariant (every transaction changes an account, a teller, a branch
//! and adds a history row by the same delta), the pgbench_history rows counted when `stop`
//! returned, and pg_amcheck (B-tree indexes with heapallindexed, heap checks on 14+) — with
//! pgbench's indexes on the tablespace's volume and its tables on PGDATA's, a snapshot pair
//! that did not recover consistently shows up as index/heap disagreement.
//!
//! Layout decisions the README's recipes follow: a read-only snapshot cannot take the label, so
//! `stop --output-dir` writes it into a sidecar folder `labels/<snapshot name>` and the backup's
//! `--label` is that name (so the label names its snapshot, and the snapshot its label folder).
//! A restore makes a writable clone of the PGDATA snapshot (instant on btrfs), puts the sidecar's
//! label files into it and points its `pg_tblspc/<oid>` at the tablespace's snapshot.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsafe::label::BackupLabel;
use pgsafe_testkit::{
    Cluster, ClusterOptions, FsKind, LoadGenerator, LoadOptions, LoopFs, PgInstall, SUPERUSER,
    client_bin_dir, copy_tree, server_owned_tempdir, server_user, shell_quote,
};

use common::{json, ok, pgsafe, refused, run_dir};

/// Size of each loop file system (sparse: only what the test writes takes memory).
const FS_MB: u64 = 2048;

/// A running cluster whose PGDATA (`<pg volume>/data`) and tablespace `ts2`
/// (`<ts volume>/ts`) are on a loop file system. Field order: the server stops before the file
/// system is unmounted.
struct Rig {
    c: Cluster,
    lfs: LoopFs,
    install: PgInstall,
    pg_vol: PathBuf,
    ts_vol: PathBuf,
    ts_oid: u32,
}

impl Rig {
    /// `None` when loop file systems cannot be made here (the skip is printed).
    fn new(kind: FsKind, major: u32, test: &str) -> Option<Rig> {
        let lfs = LoopFs::or_skip(kind, FS_MB, test)?;
        let (pg_vol, ts_vol) = match kind {
            FsKind::Btrfs => (lfs.subvolume("pgdata"), lfs.subvolume("tblspc")),
            FsKind::Xfs => {
                let (a, b) = (lfs.path().join("pgdata"), lfs.path().join("tblspc"));
                fs::create_dir(&a).unwrap();
                fs::create_dir(&b).unwrap();
                (a, b)
            }
        };
        let install = PgInstall::major(major);
        // A cluster from the harness's template, moved onto the loop file system.
        let template = Cluster::new(&install, ClusterOptions::new());
        let data = pg_vol.join("data");
        copy_tree(template.data_dir(), &data, Some(server_user())).unwrap();
        drop(template);
        let ts = ts_vol.join("ts");
        fs::create_dir(&ts).unwrap();
        server_user().chown(&ts);
        let mut c = Cluster::adopt(
            &install,
            &data,
            ClusterOptions::new()
                .with_archive(true)
                .conf("max_wal_size = 64MB"),
        );
        c.start();
        c.execute(&format!(
            "CREATE TABLESPACE ts2 LOCATION '{}'",
            ts.display()
        ));
        let ts_oid = c.query_one::<u32>("SELECT oid FROM pg_tablespace WHERE spcname = 'ts2'");
        Some(Rig {
            c,
            lfs,
            install,
            pg_vol,
            ts_vol,
            ts_oid,
        })
    }

    fn data(&self) -> PathBuf {
        self.pg_vol.join("data")
    }

    fn snaps(&self) -> PathBuf {
        self.lfs.path().join("snaps")
    }

    /// The sidecar folder for the label files of snapshot `name` (created).
    fn label_dir(&self, name: &str) -> PathBuf {
        let d = self.snaps().join("labels").join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }
}

/// pgbench (pgbench's tables on PGDATA, their indexes on the tablespace) and the harness's load
/// generator (its table on the tablespace), both writing until [`Workload::stop`].
struct Workload {
    load: LoadGenerator,
    pgbench: Pgbench,
}

/// The pgbench run, killed when dropped (also when a test fails).
struct Pgbench(Child);

impl Drop for Pgbench {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pgbench_cmd(c: &Cluster) -> Command {
    let mut cmd = Command::new(client_bin_dir().join("pgbench"));
    cmd.arg("-h")
        .arg(c.socket_dir())
        .args(["-p", &c.port().to_string(), "-U", SUPERUSER])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGDATABASE")
        .stdin(Stdio::null());
    cmd
}

impl Workload {
    fn start(c: &Cluster) -> Workload {
        let init = pgbench_cmd(c)
            .args(["-i", "-q", "-s", "2", "--index-tablespace=ts2", "postgres"])
            .output()
            .unwrap();
        ok(init, "pgbench -i");
        let load = LoadGenerator::start_with(
            c,
            LoadOptions {
                clients: 2,
                tablespace: Some("ts2".into()),
                ..LoadOptions::default()
            },
        );
        // -n: no vacuum before the run. Killed by the test; the invariant holds at every commit.
        let pgbench = pgbench_cmd(c)
            .args(["-n", "-c", "2", "-T", "600", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let w = Workload {
            load,
            pgbench: Pgbench(pgbench),
        };
        w.load.wait_for_transactions(50, Duration::from_secs(60));
        w.wait_history(c, 50);
        w
    }

    /// Until pgbench has committed `n` more transactions than now (history rows).
    fn wait_history(&self, c: &Cluster, n: i64) {
        let target = history_rows(c) + n;
        let t = Instant::now();
        while history_rows(c) < target {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "pgbench made no progress"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Both writing a little more (between two snapshots, say).
    fn more(&self, c: &Cluster) {
        self.load
            .wait_for_transactions(self.load.transactions() + 30, Duration::from_secs(60));
        self.wait_history(c, 30);
    }
}

fn history_rows(c: &Cluster) -> i64 {
    c.query_one::<i64>("SELECT count(*) FROM pgbench_history")
}

/// What must be in the restored copy: the load generator's rows up to `mark`, and at least
/// `history` pgbench_history rows (counted when `stop` returned).
struct Expected {
    report: pgsafe_testkit::LoadReport,
    mark: u64,
    history: i64,
}

/// Call right after `stop` returned: stops the writers, and makes sure everything committed so
/// far is in the archive (the restore reads WAL only from there).
fn finish(rig: &Rig, w: Workload) -> Expected {
    let mark = w.load.mark();
    let history = history_rows(&rig.c);
    let Workload { load, pgbench } = w;
    drop(pgbench);
    let report = load.stop();
    wait_archived(&rig.c);
    Expected {
        report,
        mark,
        history,
    }
}

fn wait_archived(c: &Cluster) {
    let last: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let t = Instant::now();
    loop {
        let archived: Option<String> =
            c.query_one("SELECT last_archived_wal FROM pg_stat_archiver");
        if archived.is_some_and(|a| a.as_str() >= last.as_str()) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "WAL {last} never archived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sh(cmd: &str) -> Output {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    ok(out, cmd)
}

/// `cp -a` of the sidecar's label files into `dir`.
fn put_label_files(sidecar: &Path, dir: &Path) {
    for f in ["backup_label", "tablespace_map"] {
        if sidecar.join(f).exists() {
            sh(&format!(
                "cp -a {} {}",
                shell_quote(&sidecar.join(f)),
                shell_quote(&dir.join(f))
            ));
        }
    }
}

/// Points the copy's `pg_tblspc/<oid>` at the tablespace's own copy, with the README's command.
fn point_tablespace(copy_data: &Path, oid: u32, ts_copy: &Path) {
    let link = copy_data.join("pg_tblspc").join(oid.to_string());
    sh(&format!(
        "ln -sfn {} {}",
        shell_quote(ts_copy),
        shell_quote(&link)
    ));
    assert_eq!(fs::read_link(&link).unwrap(), ts_copy);
}

/// `pgsafe restore COPY --from-copy` into a fresh folder (tablespace moved beside it), starts
/// the result and checks it against `exp`.
fn restore_and_check(rig: &Rig, copy_data: &Path, exp: &Expected, what: &str) {
    let m = format!("PostgreSQL {} ({what})", rig.install.major);
    let scratch = server_owned_tempdir();
    let target = scratch.path().join("data");
    let ts_target = scratch.path().join("ts");
    let archive = rig.c.archive_dir().unwrap();
    let cmd = format!("cp {}/%f %p", shell_quote(archive));
    let map = format!("{}={}", rig.ts_oid, ts_target.display());
    let out = ok(
        pgsafe(&[
            "restore",
            copy_data.to_str().unwrap(),
            "--from-copy",
            "--pgdata",
            target.to_str().unwrap(),
            "--tablespace-map",
            &map,
            "--restore-command",
            &cmd,
            "--progress",
            "none",
            "--json",
        ]),
        &format!("{m}: restore --from-copy"),
    );
    let r = json(&out);
    assert_eq!(r["from_copy"], true, "{m}: {r}");
    let mut restored = Cluster::adopt(&rig.install, &target, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    let log = |r: &Cluster| r.server_log_tail(40);
    exp.report
        .verify_at(&mut restored.connect(), exp.mark)
        .unwrap_or_else(|e| panic!("{m}: committed rows lost: {e}\n{}", log(&restored)));
    let (a, t, b, h): (i64, i64, i64, i64) = {
        let mut client = restored.connect();
        let row = client
            .query_one(
                "SELECT (SELECT coalesce(sum(abalance), 0)::bigint FROM pgbench_accounts), \
                        (SELECT coalesce(sum(tbalance), 0)::bigint FROM pgbench_tellers), \
                        (SELECT coalesce(sum(bbalance), 0)::bigint FROM pgbench_branches), \
                        (SELECT coalesce(sum(delta), 0)::bigint FROM pgbench_history)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    };
    assert!(
        a == t && t == b && b == h,
        "{m}: pgbench balance invariant broken: accounts {a}, tellers {t}, branches {b}, \
         history {h}"
    );
    let rows = history_rows(&restored);
    assert!(
        rows >= exp.history,
        "{m}: {rows} pgbench_history rows, but {} were committed when stop returned",
        exp.history
    );
    amcheck_clean(&restored, &m);
    restored.stop();
}

/// pg_amcheck (PostgreSQL 15's client) on 14+: every B-tree index with heapallindexed and
/// every heap. On 13, whose amcheck has no heap checks (verify_heapam is from 14) and which
/// pg_amcheck does not support, `bt_index_check(index, true)` on every B-tree index.
fn amcheck_clean(c: &Cluster, m: &str) {
    c.execute("CREATE EXTENSION IF NOT EXISTS amcheck");
    if c.major() >= 14 {
        // Without filters: every table of the database and every B-tree index on them.
        let o = Command::new(client_bin_dir().join("pg_amcheck"))
            .arg("-h")
            .arg(c.socket_dir())
            .args(["-p", &c.port().to_string(), "-U", SUPERUSER])
            .args(["--heapallindexed", "-d", "postgres"])
            .output()
            .unwrap();
        {
            assert!(
                o.status.success() && o.stdout.is_empty(),
                "{m}: pg_amcheck found problems ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    } else {
        let mut client = c.connect();
        let idx: Vec<String> = client
            .query(
                "SELECT c.oid::regclass::text FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
                 WHERE a.amname = 'btree' AND i.indisvalid AND c.relpersistence <> 't'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            idx.iter().any(|i| i.starts_with("pgbench_accounts")),
            "{idx:?}"
        );
        for i in &idx {
            client
                .execute(
                    &format!("SELECT bt_index_check('{i}'::regclass, true)"),
                    &[],
                )
                .unwrap_or_else(|e| panic!("{m}: bt_index_check({i}): {e}"));
        }
    }
}

/// `pgsafe start` → `btrfs subvolume snapshot -r` of PGDATA's and the tablespace's subvolumes
/// (load running between the two) → `pgsafe stop --output-dir labels/<name>` → restore from a
/// writable clone of the snapshots. Also what an unlucky DBA meets on the way: the clone without
/// the label, and the clone whose tablespace link still points at the live tablespace, are
/// refused.
fn btrfs_start_stop(major: u32) {
    let test = format!("btrfs_start_stop_{major}");
    let Some(rig) = Rig::new(FsKind::Btrfs, major, &test) else {
        return;
    };
    let w = Workload::start(&rig.c);
    let run = run_dir();
    let runp = run.path().to_str().unwrap();
    let name = "pgdata@nightly-1";
    let conn = rig.c.conninfo();
    ok(
        pgsafe(&[
            "start",
            "-d",
            &conn,
            "--id",
            "snap",
            "--label",
            name,
            "--run-dir",
            runp,
        ]),
        "pgsafe start",
    );
    fs::create_dir(rig.snaps()).unwrap();
    let snap_pg = rig.snaps().join(format!("{name}-pgdata"));
    let snap_ts = rig.snaps().join(format!("{name}-tblspc"));
    w.more(&rig.c);
    sh(&LoopFs::snapshot_command(&rig.pg_vol, &snap_pg));
    w.more(&rig.c);
    sh(&LoopFs::snapshot_command(&rig.ts_vol, &snap_ts));
    w.more(&rig.c);
    // A read-only snapshot cannot take the label.
    assert!(
        fs::write(snap_pg.join("data").join("probe"), b"x").is_err(),
        "the snapshot is read-only"
    );
    // The unlucky DBA names the read-only snapshot: refused before the backup is stopped, so a
    // stop into the sidecar folder still gets the label.
    let into_snapshot = pgsafe(&[
        "stop",
        "--id",
        "snap",
        "--run-dir",
        runp,
        "--output-dir",
        snap_pg.join("data").to_str().unwrap(),
    ]);
    refused(
        &into_snapshot,
        &[
            "Read-only file system",
            "still in progress",
            "a folder kept with it",
        ],
    );
    let sidecar = rig.label_dir(name);
    let r = json(&ok(
        pgsafe(&[
            "stop",
            "--id",
            "snap",
            "--run-dir",
            runp,
            "--output-dir",
            sidecar.to_str().unwrap(),
            "--json",
        ]),
        "pgsafe stop",
    ));
    assert_eq!(r["usable"], true, "{r}");
    let exp = finish(&rig, w);
    // The label names its snapshot.
    let label = BackupLabel::parse(&fs::read(sidecar.join("backup_label")).unwrap()).unwrap();
    assert_eq!(label.fields().label.as_deref(), Some(name.as_bytes()));
    assert!(sidecar.join("tablespace_map").is_file());

    let clone = rig.snaps().join(format!("{name}-restore"));
    sh(&format!(
        "btrfs subvolume snapshot {} {}",
        shell_quote(&snap_pg),
        shell_quote(&clone)
    ));
    let clone_data = clone.join("data");
    let scratch = server_owned_tempdir();
    let try_restore = |label: &str| {
        pgsafe(&[
            "restore",
            clone_data.to_str().unwrap(),
            "--from-copy",
            "--pgdata",
            scratch.path().join(label).to_str().unwrap(),
            "--restore-command",
            "false",
            "--progress",
            "none",
        ])
    };
    refused(&try_restore("no-label"), &["backup_label"]);
    put_label_files(&sidecar, &clone_data);
    refused(&try_restore("live-ts"), &["live location"]);
    point_tablespace(&clone_data, rig.ts_oid, &snap_ts.join("ts"));
    restore_and_check(&rig, &clone_data, &exp, "btrfs start/stop");
}

/// The unlucky hook: PGDATA's volume was snapshotted *before* `pgsafe start` (a misordered
/// pre-backup hook, or the sidecar label of a later backup put next to an older snapshot).
/// Recovering from that label would start at a checkpoint later than the files and skip the WAL
/// in between: the restore refuses before writing anything, naming both checkpoints.
fn btrfs_snapshot_before_start(major: u32) {
    let test = format!("btrfs_snapshot_before_start_{major}");
    let Some(rig) = Rig::new(FsKind::Btrfs, major, &test) else {
        return;
    };
    let w = Workload::start(&rig.c);
    let name = "pgdata@too-early";
    fs::create_dir(rig.snaps()).unwrap();
    let snap_pg = rig.snaps().join(format!("{name}-pgdata"));
    let snap_ts = rig.snaps().join(format!("{name}-tblspc"));
    sh(&LoopFs::snapshot_command(&rig.pg_vol, &snap_pg));
    w.more(&rig.c);
    let run = run_dir();
    let runp = run.path().to_str().unwrap();
    let conn = rig.c.conninfo();
    ok(
        pgsafe(&[
            "start",
            "-d",
            &conn,
            "--id",
            "early",
            "--label",
            name,
            "--run-dir",
            runp,
        ]),
        "pgsafe start",
    );
    w.more(&rig.c);
    sh(&LoopFs::snapshot_command(&rig.ts_vol, &snap_ts));
    let sidecar = rig.label_dir(name);
    ok(
        pgsafe(&[
            "stop",
            "--id",
            "early",
            "--run-dir",
            runp,
            "--output-dir",
            sidecar.to_str().unwrap(),
        ]),
        "pgsafe stop",
    );
    let _exp = finish(&rig, w);
    let clone = rig.snaps().join(format!("{name}-restore"));
    sh(&format!(
        "btrfs subvolume snapshot {} {}",
        shell_quote(&snap_pg),
        shell_quote(&clone)
    ));
    let clone_data = clone.join("data");
    put_label_files(&sidecar, &clone_data);
    point_tablespace(&clone_data, rig.ts_oid, &snap_ts.join("ts"));
    let scratch = server_owned_tempdir();
    let target = scratch.path().join("data");
    let cmd = format!("cp {}/%f %p", shell_quote(rig.c.archive_dir().unwrap()));
    let map = format!("{}={}", rig.ts_oid, scratch.path().join("ts").display());
    let out = pgsafe(&[
        "restore",
        clone_data.to_str().unwrap(),
        "--from-copy",
        "--pgdata",
        target.to_str().unwrap(),
        "--tablespace-map",
        &map,
        "--restore-command",
        &cmd,
        "--progress",
        "none",
    ]);
    refused(
        &out,
        &[
            "copied before the backup started",
            "older than the checkpoint",
        ],
    );
    assert!(!target.exists(), "nothing written");
}

/// `pgsafe snapshot --exec` running both btrfs snapshot commands, label into the sidecar.
fn btrfs_snapshot_exec(major: u32) {
    let test = format!("btrfs_snapshot_exec_{major}");
    let Some(rig) = Rig::new(FsKind::Btrfs, major, &test) else {
        return;
    };
    let w = Workload::start(&rig.c);
    let name = "pgdata@hourly-7";
    fs::create_dir(rig.snaps()).unwrap();
    let snap_pg = rig.snaps().join(format!("{name}-pgdata"));
    let snap_ts = rig.snaps().join(format!("{name}-tblspc"));
    let sidecar = rig.label_dir(name);
    // The load keeps writing while the two snapshots are taken one after the other.
    let exec = format!(
        "{} && sleep 1 && {}",
        LoopFs::snapshot_command(&rig.pg_vol, &snap_pg),
        LoopFs::snapshot_command(&rig.ts_vol, &snap_ts)
    );
    let conn = rig.c.conninfo();
    // Its own run directory: the tests of each major run at once, and a snapshot's ID is held
    // in the run directory while it runs.
    let run = run_dir();
    let r = json(&ok(
        pgsafe(&[
            "snapshot",
            "-d",
            &conn,
            "--run-dir",
            run.path().to_str().unwrap(),
            "--label",
            name,
            "--exec",
            &exec,
            "--output-dir",
            sidecar.to_str().unwrap(),
            "--json",
        ]),
        "pgsafe snapshot --exec",
    ));
    assert_eq!(r["usable"], true, "{r}");
    let exp = finish(&rig, w);
    let clone = rig.snaps().join(format!("{name}-restore"));
    sh(&format!(
        "btrfs subvolume snapshot {} {}",
        shell_quote(&snap_pg),
        shell_quote(&clone)
    ));
    let clone_data = clone.join("data");
    put_label_files(&sidecar, &clone_data);
    point_tablespace(&clone_data, rig.ts_oid, &snap_ts.join("ts"));
    restore_and_check(&rig, &clone_data, &exp, "btrfs snapshot --exec");
}

/// XFS reflink copies (`cp --reflink=always -a`) of PGDATA and of the tablespace as the
/// "snapshot": a writable copy, so `stop --output-dir` writes the label into the copy itself.
fn xfs_reflink(major: u32) {
    let test = format!("xfs_reflink_{major}");
    let Some(rig) = Rig::new(FsKind::Xfs, major, &test) else {
        return;
    };
    let w = Workload::start(&rig.c);
    let run = run_dir();
    let runp = run.path().to_str().unwrap();
    let conn = rig.c.conninfo();
    ok(
        pgsafe(&["start", "-d", &conn, "--id", "xfs", "--run-dir", runp]),
        "pgsafe start",
    );
    let snaps = rig.snaps();
    fs::create_dir(&snaps).unwrap();
    let copy_data = snaps.join("data");
    let copy_ts = snaps.join("ts");
    sh(&format!(
        "cp --reflink=always -a {} {}",
        shell_quote(&rig.data()),
        shell_quote(&copy_data)
    ));
    w.more(&rig.c);
    sh(&format!(
        "cp --reflink=always -a {} {}",
        shell_quote(&rig.ts_vol.join("ts")),
        shell_quote(&copy_ts)
    ));
    let r = json(&ok(
        pgsafe(&[
            "stop",
            "--id",
            "xfs",
            "--run-dir",
            runp,
            "--output-dir",
            copy_data.to_str().unwrap(),
            "--json",
        ]),
        "pgsafe stop",
    ));
    assert_eq!(r["usable"], true, "{r}");
    let exp = finish(&rig, w);
    point_tablespace(&copy_data, rig.ts_oid, &copy_ts);
    restore_and_check(&rig, &copy_data, &exp, "XFS reflink");
}

#[test]
fn btrfs_start_stop_13() {
    btrfs_start_stop(13);
}

#[test]
fn btrfs_start_stop_16() {
    btrfs_start_stop(16);
}

#[test]
fn btrfs_start_stop_18() {
    btrfs_start_stop(18);
}

#[test]
fn btrfs_snapshot_before_start_13() {
    btrfs_snapshot_before_start(13);
}

#[test]
fn btrfs_snapshot_before_start_18() {
    btrfs_snapshot_before_start(18);
}

#[test]
fn btrfs_snapshot_exec_13() {
    btrfs_snapshot_exec(13);
}

#[test]
fn btrfs_snapshot_exec_16() {
    btrfs_snapshot_exec(16);
}

#[test]
fn btrfs_snapshot_exec_18() {
    btrfs_snapshot_exec(18);
}

#[test]
fn xfs_reflink_13() {
    xfs_reflink(13);
}

#[test]
fn xfs_reflink_16() {
    xfs_reflink(16);
}

#[test]
fn xfs_reflink_18() {
    xfs_reflink(18);
}

/// The harness's promise that a failing test leaves no mounted file system or attached loop
/// device behind: a panic while a btrfs file system is mounted and a subvolume is in use.
#[test]
fn loop_fs_cleaned_up_after_panic() {
    if LoopFs::unavailable(FsKind::Btrfs).is_some() {
        // Prints the skip (or fails with PGSAFE_REQUIRE_LOOP=1).
        assert!(LoopFs::or_skip(FsKind::Btrfs, 256, "loop_fs_cleaned_up_after_panic").is_none());
        return;
    }
    let seen = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lfs = LoopFs::new(FsKind::Btrfs, 256).unwrap();
        let sub = lfs.subvolume("vol");
        fs::write(sub.join("f"), b"x").unwrap();
        *seen.lock().unwrap() = Some((lfs.path().to_owned(), lfs.device().to_owned()));
        panic!("a failing test");
    }));
    assert!(r.is_err());
    let (mount, device) = seen.lock().unwrap().take().unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(mount.to_str().unwrap()),
        "{} still mounted",
        mount.display()
    );
    // A detached loop device has no backing file.
    let name = device.trim_start_matches("/dev/");
    let backing = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"));
    assert!(backing.is_err(), "{device} still attached to {backing:?}");
    assert!(!mount.parent().unwrap().exists(), "its folder is removed");
}
