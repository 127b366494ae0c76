//! WAL archiving and point-in-time recovery end to end, per major, through the real binary: the
//! server archives with `archive_command = 'pgsafe archive-push --repo R --cluster C %p'` (run by
//! PostgreSQL as the unprivileged server user), a base backup goes into the repository, pgbench
//! and the testkit's load generator write while commit marks record a recovery target of every
//! kind (`pgsafe_testkit::Marks`), and `pgsafe restore --repo --target-*` (restore_command =
//! pgsafe archive-get) must bring back exactly the marks committed before each target — none
//! after — with pgbench's balance invariant, every load commit before the target, amcheck clean,
//! and the promoted copy on a timeline of its own.
//!
//! - `targets` (10–18): one load, five restores: immediate, time, LSN, xid, restore point name.
//!   `time_target_right_after_the_backup` (17): a time target committed right after the backup
//!   returned is reached (the backup records the server's clock at its stop).
//! - `promoted_standby` (10, 12, 15, 18): a standby promoted mid-way archives timeline 2 into
//!   the same repository while the old primary goes on on timeline 1; the timeline-1 backup
//!   restored to targets on timeline 2 (`--target-timeline latest` and `2`) and on timeline 1
//!   past the switch point (`--target-timeline 1`).
//! - `sigkill_during_push` (10, 18): archive-push processes frozen (SIGSTOP, stepped with
//!   SIGCONT) once they have begun writing into the repository show archive-get no partial
//!   object, are killed (SIGKILL); PostgreSQL retries and succeeds, the archive is one unbroken
//!   run, and a restore across those segments recovers every mark.
//! - `copy_archiving_into_its_source` (11, 18): a copy of the data directory started as is (same
//!   system, same timeline) archives into its source's repository: its different segment is
//!   refused loudly (PostgreSQL keeps the segment and retries), the source's object is
//!   unchanged; the same bytes pushed again succeed.
//!
//! amcheck: pg_amcheck (Debian's 15 client) with heap checks on 14+; below 14 (no
//! verify_heapam) bt_index_check per index, with heapallindexed from 11 (`pgsafe_testkit::amcheck`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgsafe::TimelineId;
use pgsafe::archive::contents::ArchiveContents;
use pgsafe::repo::Repository;
use pgsafe::storage::Ident;
use pgsafe::storage::name::TEMP_MARKER;

use pgsafe_testkit::{
    Cluster, ClusterOptions, LoadGenerator, LoadOptions, LoadReport, Mark, Marks, PgInstall,
    PgbenchRun, amcheck, archive_settings, check_marks, copy_tree, give_to_server_user,
    history_rows, per_major, pgbench_init, pgbench_invariant, server_owned_tempdir, server_user,
    wait_archived, wait_segment_archived,
};
use tempfile::TempDir;

use common::{bin, json, ok, pgsafe, repo_init, text};

const CLUSTER: &str = "main";
const MARKS: &str = "pitr_marks";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A server archiving into a pgsafe repository, registered as [`CLUSTER`].
struct Rig {
    install: PgInstall,
    c: Cluster,
    scratch: TempDir,
    repo: PathBuf,
}

impl Rig {
    /// `opts` plus archiving into a new repository in a server-owned scratch folder; 1 MB WAL
    /// segments from 11 on (10 has only 16 MB), so the loads span many segments and little WAL.
    fn new(major: u32, opts: ClusterOptions) -> Rig {
        let install = PgInstall::major(major);
        let scratch = server_owned_tempdir();
        let repo = scratch.path().join("repo");
        let mut opts = opts.fast_unsafe();
        if major >= 11 && opts.wal_segsize_mb.is_none() {
            opts = opts.wal_segsize_mb(1);
        }
        for line in archive_settings(
            &bin(),
            &["archive-push", "--repo", s(&repo), "--cluster", CLUSTER],
        ) {
            opts = opts.conf(line);
        }
        let c = Cluster::started(&install, opts);
        ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
        // The server runs archive-push (and a restored copy archive-get) as its own user.
        give_to_server_user(&repo);
        Rig {
            install,
            c,
            scratch,
            repo,
        }
    }

    fn m(&self) -> String {
        format!("PostgreSQL {}", self.install.major)
    }

    /// `pgsafe backup --repo` of `c` (the rig's server or its promoted standby): the backup ID.
    fn backup_of(&self, c: &Cluster) -> String {
        let conn = c.conninfo();
        let out = ok(
            pgsafe(&[
                "backup",
                "--repo",
                s(&self.repo),
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
            &format!("{}: pgsafe backup --repo", self.m()),
        );
        json(&out)["backup_id"].as_str().unwrap().to_owned()
    }

    /// `pgsafe restore --repo --cluster main --pgdata <scratch>/<name>` plus `target` (and
    /// `--target-action promote` with a target); the output (not checked).
    fn restore_cmd(&self, name: &str, target: &[&str]) -> (PathBuf, Output) {
        let data = self.scratch.path().join(name);
        let mut args = vec![
            "restore",
            "--repo",
            s(&self.repo),
            "--cluster",
            CLUSTER,
            "--pgdata",
            s(&data),
            "--progress",
            "none",
            "--json",
        ];
        if !target.is_empty() {
            args.extend(["--target-action", "promote"]);
        }
        args.extend_from_slice(target);
        let out = pgsafe(&args);
        (data, out)
    }

    /// [`Rig::restore_cmd`] that must succeed; the restored copy, started, out of recovery.
    fn restore(&self, name: &str, target: &[&str]) -> Cluster {
        let (data, out) = self.restore_cmd(name, target);
        ok(out, &format!("{}: pgsafe restore {target:?}", self.m()));
        let mut r = Cluster::adopt(&self.install, &data, ClusterOptions::new().fast_unsafe());
        r.start();
        r.wait_recovery_done();
        r
    }

    /// `pgsafe archive-get --repo --cluster main NAME DEST` run by the test.
    fn archive_get(&self, name: &str, dest: &Path) -> Output {
        pgsafe(&[
            "archive-get",
            "--repo",
            s(&self.repo),
            "--cluster",
            CLUSTER,
            name,
            s(dest),
        ])
    }
}

/// What a copy restored to a target must hold.
struct Expect<'a> {
    /// Exactly these marks.
    marks: Vec<i32>,
    /// At least these pgbench transactions (history rows committed before the target); None:
    /// no pgbench in this test.
    history: Option<i64>,
    /// Every load commit before this [`LoadGenerator::mark`].
    load: Option<(&'a LoadReport, u64)>,
    /// The highest timeline in the archive: the promoted copy must take a newer one (PostgreSQL
    /// looks for history files through restore_command to choose it, `findNewestTimeLine` in
    /// src/backend/access/transam/timeline.c), or it would archive under names in use.
    newest_timeline: u32,
}

/// Checks a restored, promoted copy against `e`, then stops it and removes its data directory.
fn check_copy(mut r: Cluster, e: &Expect, what: &str) {
    let m = format!("PostgreSQL {} ({what})", r.major());
    let log = |r: &Cluster| r.server_log_tail(40);
    let mut client = r.connect();
    check_marks(&mut client, MARKS, &e.marks)
        .unwrap_or_else(|err| panic!("{m}: {err}; server log:\n{}", log(&r)));
    if let Some(history) = e.history {
        let rows = pgbench_invariant(&mut client).unwrap_or_else(|err| panic!("{m}: {err}"));
        assert!(
            rows >= history,
            "{m}: {rows} pgbench transactions, but {history} committed before the target"
        );
    }
    if let Some((report, mark)) = e.load {
        report
            .verify_at(&mut client, mark)
            .unwrap_or_else(|err| panic!("{m}: load commits before the target lost: {err}"));
    }
    amcheck(&r).unwrap_or_else(|err| panic!("{m}: {err}"));
    // Promoted: writable, on a timeline of its own.
    client
        .batch_execute(&format!("INSERT INTO {MARKS} VALUES (-1)"))
        .unwrap_or_else(|err| panic!("{m}: the copy is not writable: {err}"));
    let wal: String = r.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let tli = u32::from_str_radix(&wal[..8], 16).unwrap();
    assert!(
        tli > e.newest_timeline,
        "{m}: the copy is on timeline {tli}, the archive has {}",
        e.newest_timeline
    );
    drop(client);
    let data = r.data_dir().to_owned();
    r.stop();
    drop(r);
    let _ = fs::remove_dir_all(data);
}

/// pgbench history rows on `c` now.
fn history(c: &Cluster) -> i64 {
    history_rows(&mut c.connect())
}

/// One load, a backup, marks with pgbench and the load generator writing in between, and a
/// restore to each kind of target: the immediate end of the backup, a time, an LSN, an xid, a
/// restore point name. Each holds exactly the marks committed before its target.
fn targets(major: u32) {
    let rig = Rig::new(major, ClusterOptions::new());
    let c = &rig.c;
    pgbench_init(c, 1);
    let mut marks = Marks::create(c, MARKS, 0);
    marks.mark(c, None); // 0: before the backup
    let mut bench = PgbenchRun::start(c, 2);
    let load = LoadGenerator::start_with(
        c,
        LoadOptions {
            clients: 1,
            max_value_len: 100,
            ..LoadOptions::default()
        },
    );
    bench.wait_more(c, 20);
    let before_backup = (load.mark(), history(c));
    rig.backup_of(c);
    // Marks 1..=5 after the backup, each with pgbench and load commits before it (5 is after
    // every target).
    let mut at: Vec<(Mark, i64)> = Vec::new();
    for _ in 1..=5 {
        bench.wait_more(c, 20);
        let h = history(c);
        at.push((marks.mark(c, Some(&load)), h));
    }
    bench.wait_more(c, 10);
    bench.stop();
    let report = load.stop();
    wait_archived(c);

    let ids = |upto: i32| marks.ids_through(upto);
    let expect = |(mark, h): &(Mark, i64)| Expect {
        marks: ids(mark.id),
        history: Some(*h),
        load: Some((&report, mark.load_mark.unwrap())),
        newest_timeline: 1,
    };
    let r = rig.restore("immediate", &["--target-immediate"]);
    let e = Expect {
        marks: ids(0),
        history: Some(before_backup.1),
        load: Some((&report, before_backup.0)),
        newest_timeline: 1,
    };
    check_copy(r, &e, "--target-immediate");

    let (m1, m2, m3, m4) = (&at[0].0, &at[1].0, &at[2].0, &at[3].0);
    let lsn = m2.lsn.to_string();
    let cases: [(&str, Vec<&str>, usize); 4] = [
        ("time", vec!["--target-time", &m4.time], 3),
        ("lsn", vec!["--target-lsn", &lsn], 1),
        ("xid", vec!["--target-xid", &m3.xid], 2),
        ("name", vec!["--target-name", &m1.name], 0),
    ];
    for (name, args, i) in &cases {
        let r = rig.restore(name, args);
        check_copy(r, &expect(&at[*i]), &format!("{args:?}"));
    }
}
per_major!(targets);

/// A time target right after the backup (a mark committed once `pgsafe backup` has returned):
/// PostgreSQL reaches it, so the restore must not refuse it.
#[test]
fn time_target_right_after_the_backup() {
    let rig = Rig::new(17, ClusterOptions::new());
    let c = &rig.c;
    let mut marks = Marks::create(c, MARKS, 0);
    marks.mark(c, None);
    rig.backup_of(c);
    let first = marks.mark(c, None);
    marks.mark(c, None);
    wait_archived(c);
    let r = rig.restore("time", &["--target-time", &first.time]);
    let e = Expect {
        marks: vec![0, first.id],
        history: None,
        load: None,
        newest_timeline: 1,
    };
    check_copy(r, &e, "a time right after the backup");
}

/// A standby promoted mid-way: it archives timeline 2 (its history file, the old timeline's
/// last segment as `.partial`, its own segments) into the same repository, while the old
/// primary goes on writing on timeline 1 (a split brain, for a while). The timeline-1 backup
/// restored to targets on timeline 2 holds the marks before the promotion and timeline 2's up to
/// the target, none of timeline 1's after the switch; restored to a target on timeline 1 past
/// the switch point (`--target-timeline 1`), it holds timeline 1's and none of timeline 2's.
fn promoted_standby(major: u32) {
    let rig = Rig::new(major, ClusterOptions::new());
    let c = &rig.c;
    pgbench_init(c, 1);
    let mut before = Marks::create(c, MARKS, 0);
    before.mark(c, None);
    rig.backup_of(c);
    let mut bench = PgbenchRun::start(c, 2);
    for _ in 0..2 {
        bench.wait_more(c, 20);
        before.mark(c, None);
    }
    bench.stop();
    let history_at_split = history(c);
    let mut standby = Cluster::new_standby(c);
    standby.wait_for_replay(c);
    standby.promote();

    let mut tl2 = Marks::continuing(MARKS, 100);
    let mut tl1 = Marks::continuing(MARKS, 200);
    for _ in 0..3 {
        tl2.mark(&standby, None);
        tl1.mark(c, None);
    }
    let m = rig.m();
    assert!(tl2.all().iter().all(|k| k.timeline == 2), "{m}: {tl2:?}");
    assert!(tl1.all().iter().all(|k| k.timeline == 1), "{m}: {tl1:?}");
    wait_archived(&standby);
    wait_segment_archived(&standby, "00000002.history");
    wait_archived(c);
    // The archive holds timeline 2's history file as the standby wrote it.
    let got = rig.scratch.path().join("00000002.history");
    ok(
        rig.archive_get("00000002.history", &got),
        &format!("{m}: archive-get"),
    );
    assert_eq!(
        fs::read(&got).unwrap(),
        fs::read(standby.data_dir().join("pg_wal/00000002.history")).unwrap(),
        "{m}"
    );

    let with = |series: &Marks, upto: i32| -> Expect<'static> {
        let mut marks = before.ids();
        marks.extend(series.ids_through(upto));
        Expect {
            marks,
            history: Some(history_at_split),
            load: None,
            newest_timeline: 2,
        }
    };
    let (b1, b0) = (&tl2.all()[1], &tl2.all()[0]);
    let r = rig.restore(
        "tl2-latest",
        &["--target-name", &b1.name, "--target-timeline", "latest"],
    );
    check_copy(r, &with(&tl2, b1.id), "timeline 2 by name, latest");
    let r = rig.restore(
        "tl2-id",
        &["--target-time", &b0.time, "--target-timeline", "2"],
    );
    check_copy(r, &with(&tl2, b0.id), "timeline 2 by time, timeline 2");
    let (a0, a1) = (&tl1.all()[0], &tl1.all()[1]);
    let r = rig.restore(
        "tl1-name",
        &["--target-name", &a1.name, "--target-timeline", "1"],
    );
    check_copy(
        r,
        &with(&tl1, a1.id),
        "timeline 1 after the switch, by name",
    );
    let lsn = a0.lsn.to_string();
    let r = rig.restore("tl1-lsn", &["--target-lsn", &lsn, "--target-timeline", "1"]);
    check_copy(r, &with(&tl1, a0.id), "timeline 1 after the switch, by LSN");
    standby.stop();
}
per_major!(promoted_standby: 10, 12, 15, 18);

/// The process IDs of running `pgsafe archive-push` processes of `repo` pushing `file` (their
/// last argument ends with it), from /proc.
fn pushers(repo: &Path, file: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "archive-push")
            && args.iter().any(|a| a == s(repo))
            && args
                .iter()
                .rev()
                .find(|a| !a.is_empty())
                .is_some_and(|a| a.ends_with(file))
            && args.first().is_some_and(|a| a.ends_with("pgsafe"))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Files below `dir` (recursively) whose name contains `needle`.
fn files_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named(&p, needle));
        } else if e.file_name().to_string_lossy().contains(needle) {
            out.push(p);
        }
    }
    out
}

fn signal(pid: i32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid), sig).is_ok()
}

/// Runs the stopped process `pid` in slices of a millisecond (SIGCONT, sleep, SIGSTOP) until a
/// file that is not in `before` appears below `wal` (the push has begun writing its object: under
/// a temporary name, if it writes as it must) or it has exited; true when caught, still stopped.
fn step_until_writing(pid: i32, wal: &Path, before: &BTreeSet<PathBuf>) -> bool {
    loop {
        if files_named(wal, "").iter().any(|f| !before.contains(f)) {
            return true;
        }
        if !signal(pid, Signal::SIGCONT) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
        if !signal(pid, Signal::SIGSTOP) {
            return false;
        }
        // Let the stop take effect before looking (a stopped process shows state T).
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) {
            match fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(st)
                    if st
                        .rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('T')) =>
                {
                    break;
                }
                Ok(st)
                    if st
                        .rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return false;
                }
                Ok(_) => std::thread::sleep(Duration::from_micros(200)),
                Err(_) => return false,
            }
        }
    }
}

/// SIGKILL during archive-push: each push of a new 16 MB segment is frozen (SIGSTOP) as soon
/// as it is seen and stepped until a new file appears in the repository's archive; then
/// archive-get must not see the segment or see it whole (a partial object refused as damaged
/// fails the test too: it would stop a recovery), and the push is killed.
/// PostgreSQL's archiver fails, retries, and the next push stores the segment; archive-get then
/// gives exactly the server's segment, and a restore across the killed pushes recovers every
/// mark (the archive is continuous).
fn sigkill_during_push(major: u32) {
    let opts = if major >= 11 {
        ClusterOptions::new().wal_segsize_mb(16)
    } else {
        ClusterOptions::new()
    };
    let rig = Rig::new(major, opts);
    let c = &rig.c;
    let m = rig.m();
    let mut marks = Marks::create(c, MARKS, 0);
    marks.mark(c, None);
    rig.backup_of(c);
    c.execute("CREATE TABLE filler (v text)");
    let wal = rig.repo.join(CLUSTER).join("wal");
    let got = rig.scratch.path().join("got");
    fs::create_dir(&got).unwrap();
    // Kills: pushes killed after they began writing; hidden: of those, the ones killed while
    // archive-get did not see the segment yet (in the middle of writing it).
    let (mut kills, mut hidden, mut attempts) = (0, 0, 0);
    while kills < 2 || hidden == 0 {
        attempts += 1;
        assert!(
            attempts <= 10,
            "{m}: {kills} pushes killed after they began writing, {hidden} before the segment \
             was visible, in {attempts} tries"
        );
        wait_archived(c); // nothing else in flight
        marks.mark(c, None);
        // Incompressible-ish rows, so the segment is not mostly zeros.
        c.execute(
            "INSERT INTO filler SELECT md5(g::text) || md5((g * 7)::text) \
             FROM generate_series(1, 40000) g",
        );
        let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
        let before: BTreeSet<PathBuf> = files_named(&wal, "").into_iter().collect();
        let source = c.data_dir().join("pg_wal").join(&seg);
        c.execute("SELECT pg_switch_wal()");
        let t = Instant::now();
        let pid = loop {
            if let Some(&pid) = pushers(&rig.repo, &seg).first() {
                break Some(pid);
            }
            if t.elapsed() > Duration::from_secs(60)
                || c.data_dir()
                    .join("pg_wal/archive_status")
                    .join(format!("{seg}.done"))
                    .exists()
            {
                break None;
            }
            std::thread::sleep(Duration::from_micros(300));
        };
        let Some(pid) = pid else { continue };
        if !signal(pid, Signal::SIGSTOP) {
            continue;
        }
        if !step_until_writing(pid, &wal, &before) {
            signal(pid, Signal::SIGCONT);
            continue;
        }
        // Frozen while writing: the segment is not in the archive, or it is there whole.
        let bytes = fs::read(&source).unwrap();
        let dest = got.join(&seg);
        let out = rig.archive_get(&seg, &dest);
        match out.status.code() {
            Some(1) => {
                assert!(!dest.exists(), "{m}: {}", text(&out));
                hidden += 1;
            }
            Some(0) => assert!(
                fs::read(&dest).unwrap() == bytes,
                "{m}: partial {seg} served"
            ),
            _ => panic!("{m}: archive-get during a push: {}", text(&out)),
        }
        let _ = fs::remove_file(&dest);
        assert!(signal(pid, Signal::SIGKILL), "{m}: kill {pid}");
        kills += 1;
        // PostgreSQL's archiver sees the command die, retries, and the segment is stored.
        wait_segment_archived(c, &seg);
        ok(
            rig.archive_get(&seg, &dest),
            &format!("{m}: archive-get {seg}"),
        );
        assert!(
            fs::read(&dest).unwrap() == bytes,
            "{m}: {seg} differs from the server's"
        );
        fs::remove_file(&dest).unwrap();
    }
    let last = marks.mark(c, None);
    wait_archived(c);
    // The archive as the library sees it: one unbroken run of timeline 1 from before the backup
    // to the last mark, nothing odd (a killed push's temporary file is not an object).
    let repo = Repository::open(&rig.repo).unwrap();
    let ident = Ident::new(CLUSTER).unwrap();
    let reg = repo.registration(&ident).unwrap();
    let contents = ArchiveContents::load(repo.backend(), &ident, &reg).unwrap();
    assert!(contents.problems.is_empty(), "{m}: {:?}", contents.problems);
    let seg = |lsn: pgsafe::Lsn| lsn.0 / reg.wal_segment_size.bytes();
    let (from, to) = (seg(marks.all()[0].lsn), seg(last.lsn));
    let runs = &contents.timelines[&TimelineId(1)].runs;
    assert!(
        runs.len() == 1 && runs[0].first <= from && runs[0].last >= to,
        "{m}: timeline 1 runs {runs:?}, expected one from {from} to {to}"
    );
    let r = rig.restore("after-kills", &["--target-name", &last.name]);
    let e = Expect {
        marks: marks.ids(),
        history: None,
        load: None,
        newest_timeline: 1,
    };
    check_copy(r, &e, "across killed pushes");
}
per_major!(sigkill_during_push: 10, 18);

/// Every stored object below `dir` (temporary files left by killed writers excluded): name and
/// bytes.
fn objects(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for p in files_named(dir, "") {
        if !p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains(TEMP_MARKER)
        {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

/// A copy of the data directory (a clone, a storage snapshot) started as it is: the same system
/// on the same timeline, archiving into its source's repository. Both write into the same
/// segment; the source archives first; the copy's push of its different segment fails loudly,
/// PostgreSQL keeps the copy's segment and retries, and nothing stored changes. The same bytes
/// pushed again (PostgreSQL retrying after a crash between storing and recording it) succeed.
fn copy_archiving_into_its_source(major: u32) {
    let mut rig = Rig::new(major, ClusterOptions::new());
    let m = rig.m();
    let mut marks = Marks::create(&rig.c, MARKS, 0);
    marks.mark(&rig.c, None);
    let first = wait_archived(&rig.c);
    let wal = rig.repo.join(CLUSTER).join("wal");

    // Identical: the stored segment pushed again, by hand.
    let again = rig.scratch.path().join("again");
    fs::create_dir(&again).unwrap();
    let copy_of_first = again.join(&first);
    ok(rig.archive_get(&first, &copy_of_first), "archive-get");
    let before = objects(&wal);
    let out = ok(
        pgsafe(&[
            "archive-push",
            "--repo",
            s(&rig.repo),
            "--cluster",
            CLUSTER,
            s(&copy_of_first),
        ]),
        &format!("{m}: archive-push of {first} again"),
    );
    assert_eq!(objects(&wal), before, "{m}: {}", text(&out));

    // The clone: a copy of the stopped source, then both run.
    rig.c.stop();
    let copy_data = rig.scratch.path().join("clone");
    copy_tree(rig.c.data_dir(), &copy_data, Some(server_user())).unwrap();
    rig.c.start();
    let mut copy = Cluster::adopt(
        &rig.install,
        &copy_data,
        ClusterOptions::new().fast_unsafe(),
    );
    copy.keep_own_archive_settings();
    copy.start();
    marks.mark(&rig.c, None);
    Marks::continuing(MARKS, 500).mark(&copy, None);
    let seg = wait_archived(&rig.c);
    let stored = objects(&wal);
    let copy_seg: String = copy.query_one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    assert_eq!(copy_seg, seg, "{m}: the copy writes another segment");
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
            t.elapsed() < Duration::from_secs(60),
            "{m}: the copy's push of {seg} never failed ({failed} failures, last {last:?}); \
             log:\n{}",
            copy.server_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = copy.server_log();
    assert!(
        log.contains(&seg) && log.to_lowercase().contains("different content"),
        "{m}: no loud refusal in the copy's log:\n{}",
        copy.server_log_tail(20)
    );
    // Nothing stored changed; the copy keeps its segment for another try.
    assert_eq!(objects(&wal), stored, "{m}: the archive changed");
    let mine = fs::read(copy_data.join("pg_wal").join(&seg)).unwrap();
    let theirs = again.join("theirs");
    ok(rig.archive_get(&seg, &theirs), "archive-get");
    assert!(
        fs::read(&theirs).unwrap() != mine,
        "{m}: the archive holds the copy's {seg}"
    );
    assert!(
        copy_data
            .join("pg_wal/archive_status")
            .join(format!("{seg}.ready"))
            .exists(),
        "{m}: the copy gave up its segment"
    );
    copy.stop();
}
per_major!(copy_archiving_into_its_source: 11, 18);
