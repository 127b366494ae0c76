//! archive-push's look-ahead and queue limit, archive-get's prefetch, against real servers
//! through the real binary: a backlog of `.ready` segments archived in fewer pushes, every
//! segment byte-identical in the repository; an acknowledgement whose local file changed (or
//! that was made for another repository) is not trusted; a push killed part-way; the queue
//! limit with a repository the server cannot write (WAL dropped, `pg_wal` bounded, the gap
//! recorded locally, then in the repository); prefetched segments served with their checks, a
//! damaged or foreign one never.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, give_to_server_user, per_major, server_owned_tempdir,
    server_user,
};

use common::archive::{get_cmd, push_cmd as push_cmd_in};
use common::{bin, ok, path_str as s, repo_init, stderr};

const CLUSTER: &str = "main";

/// Makes every folder under `path` (and itself) read-only (`false`) or writable again.
fn writable(path: &Path, on: bool) {
    if path.is_dir() {
        let mode = if on { 0o700 } else { 0o500 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        for e in fs::read_dir(path).unwrap() {
            writable(&e.unwrap().path(), on);
        }
    }
}

/// `pgsafe archive-push` of `pg_wal/<file>` as PostgreSQL runs it: from PGDATA, as the server
/// user.
fn push_cmd(c: &Cluster, repo: &Path, file: &str, extra: &[&str]) -> Command {
    let mut cmd = push_cmd_in(repo, CLUSTER, format!("pg_wal/{file}"), extra);
    cmd.current_dir(c.data_dir());
    server_user().apply(&mut cmd);
    cmd
}

/// `pgsafe archive-get FILE DEST` as the server user.
fn get(repo: &Path, file: &str, dest: &Path, extra: &[&str]) -> Output {
    let mut cmd = get_cmd(repo, CLUSTER, file, dest, extra);
    server_user().apply(&mut cmd);
    cmd.output().unwrap()
}

fn ready(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(c.data_dir().join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".ready").map(str::to_owned)
        })
        .collect();
    // PostgreSQL's archiver order: history files first, then by name.
    v.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    v
}

/// Writes `n` segments with some table data each and returns their names and bytes (read at
/// once: with archiving failing or off, nothing recycles them).
fn make_segments(c: &Cluster, n: usize) -> Vec<(String, Vec<u8>)> {
    c.execute("CREATE TABLE IF NOT EXISTS t (x text)");
    let mut out = Vec::new();
    for _ in 0..n {
        c.execute("INSERT INTO t SELECT md5(random()::text) FROM generate_series(1, 3000)");
        let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
        c.execute("SELECT pg_switch_wal()");
        out.push(seg);
    }
    // The archiver notices a .ready a moment after the switch.
    let last = out.last().cloned().unwrap();
    wait_until("the last segment is ready", c, || ready(c).contains(&last));
    out.into_iter()
        .map(|seg| {
            let bytes = fs::read(c.data_dir().join("pg_wal").join(&seg)).unwrap();
            (seg, bytes)
        })
        .collect()
}

fn wait_until(what: &str, c: &Cluster, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; server log:\n{}",
            c.server_log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PostgreSQL's archiver by hand: archive-push of the oldest `.ready` file until none is
/// left, `.ready` renamed `.done` on exit 0. Returns each call's output.
fn drain(c: &Cluster, repo: &Path, extra: &[&str]) -> Vec<(String, Output)> {
    let mut calls = Vec::new();
    let status = c.data_dir().join("pg_wal/archive_status");
    while let Some(f) = ready(c).first().cloned() {
        let out = push_cmd(c, repo, &f, extra).output().unwrap();
        let out = ok(out, &format!("archive-push {f}"));
        fs::rename(
            status.join(format!("{f}.ready")),
            status.join(format!("{f}.done")),
        )
        .unwrap();
        calls.push((f, out));
        assert!(calls.len() < 10_000);
    }
    calls
}

/// The cluster's archive holds exactly `segs`' bytes (read back with archive-get into a folder
/// that is not a pg_wal: no prefetch).
fn assert_archived(repo: &Path, segs: &[(String, Vec<u8>)], scratch: &Path) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch.join(format!("check-{n}"));
    fs::create_dir(&dir).unwrap();
    server_user().chown(&dir);
    for (seg, bytes) in segs {
        let dest = dir.join(seg);
        ok(get(repo, seg, &dest, &[]), &format!("archive-get {seg}"));
        assert!(
            fs::read(&dest).unwrap() == *bytes,
            "{seg}: archived bytes differ"
        );
    }
}

fn spool(c: &Cluster, sub: &str) -> Vec<String> {
    match fs::read_dir(c.data_dir().join("pg_wal/pgsafe_archive").join(sub)) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

/// A server whose archiver cannot archive (`archive_command = false`): `.ready` files pile up.
fn stalled_server(major: u32) -> Cluster {
    Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf("archive_command = 'false'")
            .conf("max_wal_size = 1GB"),
    )
}

fn new_repo(c: &Cluster, scratch: &Path, name: &str) -> PathBuf {
    let repo = scratch.join(name);
    ok(repo_init(c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    repo
}

/// A backlog of `.ready` segments is archived in far fewer pushes than files (the rest are
/// acknowledged from the spool), and the archive holds every segment byte for byte.
fn backlog_is_pushed_ahead(major: u32) {
    let scratch = server_owned_tempdir();
    let c = stalled_server(major);
    let repo = new_repo(&c, scratch.path(), "repo");
    let segs = make_segments(&c, 20);
    assert!(ready(&c).len() >= 20);

    let calls = drain(&c, &repo, &["--parallel", "4"]);
    let pushes: Vec<&String> = calls
        .iter()
        .filter(|(_, o)| stderr(o).contains("more files ahead"))
        .map(|(f, _)| f)
        .collect();
    let quiet = calls.iter().filter(|(_, o)| o.stderr.is_empty()).count();
    assert!(calls.len() >= 20);
    // 4 threads take 16 files a call: the rest are acknowledged from the spool, silently.
    assert!(
        pushes.len() * 4 <= calls.len(),
        "{} pushes ahead for {} calls: {pushes:?}",
        pushes.len(),
        calls.len()
    );
    assert!(quiet + pushes.len() >= calls.len() - 1, "{calls:?}");
    assert!(spool(&c, "ack").is_empty(), "{:?}", spool(&c, "ack"));
    assert_archived(&repo, &segs, scratch.path());

    // Without look-ahead every file is a push of its own, and nothing is spooled.
    let more = make_segments(&c, 3);
    let calls = drain(&c, &repo, &["--parallel", "1"]);
    assert!(calls.iter().all(|(_, o)| !stderr(o).contains("ahead")));
    assert!(spool(&c, "ack").is_empty());
    assert_archived(&repo, &more, scratch.path());
}

per_major!(backlog_is_pushed_ahead: 10, 17);

/// An acknowledgement is trusted only for the bytes that were stored and for the repository
/// they were stored in.
#[test]
fn an_acknowledgement_whose_file_changed_is_not_trusted() {
    let scratch = server_owned_tempdir();
    let c = stalled_server(15);
    let repo = new_repo(&c, scratch.path(), "repo");
    let segs = make_segments(&c, 3);
    let [(a, _), (b, b_bytes), (cc, _)] = [segs[0].clone(), segs[1].clone(), segs[2].clone()];
    let out = ok(push_cmd(&c, &repo, &a, &[]).output().unwrap(), "push a");
    assert!(
        stderr(&out).contains("2 more files ahead"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        spool(&c, "ack"),
        [format!("{b}.json"), format!("{cc}.json")]
    );

    // b's local bytes change after it was pushed ahead (past its header: the page header
    // checks still pass): its acknowledgement is not used; the push compares with what is
    // stored and refuses loudly.
    let local = c.data_dir().join("pg_wal").join(&b);
    let mut bytes = b_bytes.clone();
    bytes[100_000] ^= 0xFF;
    fs::write(&local, &bytes).unwrap();
    let out = push_cmd(&c, &repo, &b, &[]).output().unwrap();
    assert!(!out.status.success(), "a changed file was acknowledged");
    assert!(stderr(&out).contains("DIFFERENT"), "{}", stderr(&out));
    assert_archived(&repo, &[(b.clone(), b_bytes.clone())], scratch.path());
    fs::write(&local, &b_bytes).unwrap();
    ok(
        push_cmd(&c, &repo, &b, &[]).output().unwrap(),
        "push b again",
    );

    // c's acknowledgement was made for `repo`: a push into another repository stores it there.
    let repo2 = new_repo(&c, scratch.path(), "repo2");
    let out = ok(
        push_cmd(&c, &repo2, &cc, &["--parallel", "1"])
            .output()
            .unwrap(),
        "push c",
    );
    assert!(!stderr(&out).contains("already"), "{}", stderr(&out));
    assert_archived(&repo2, &[segs[2].clone()], scratch.path());
    // The record was consumed (never trusted twice).
    assert!(
        !spool(&c, "ack").contains(&format!("{cc}.json")),
        "{:?}",
        spool(&c, "ack")
    );
}

/// A push killed while it pushes ahead leaves nothing that is taken for archived: the
/// archiver's retries store every segment, byte for byte.
#[test]
fn a_push_killed_while_pushing_ahead() {
    let scratch = server_owned_tempdir();
    let c = stalled_server(17);
    let repo = new_repo(&c, scratch.path(), "repo");
    let segs = make_segments(&c, 16);
    let first = ready(&c)[0].clone();
    for delay in [0, 30, 120] {
        let mut child = push_cmd(&c, &repo, &first, &["--parallel", "4"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let calls = drain(&c, &repo, &["--parallel", "4"]);
    assert!(!calls.is_empty());
    assert_archived(&repo, &segs, scratch.path());
    // No temporary file of the killed pushes is left in the spool.
    assert!(spool(&c, "ack").iter().all(|n| !n.starts_with('.')));
}

fn gap_events(repo: &Path) -> Vec<serde_json::Value> {
    let Ok(rd) = fs::read_dir(repo.join(CLUSTER).join("events")) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let p = e.unwrap().path();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).ok()?).ok()?;
        (v["kind"] == "wal-gap").then_some(v)
    })
    .collect()
}

/// With the repository unwritable and the queue limit set, the server's own archiver drops
/// WAL past the limit: `pg_wal` stays bounded, the server log says so, the gaps are recorded
/// in the spool, and in the repository by the first push once it is writable again.
fn queue_limit_drops_and_records_gaps(major: u32) {
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let command = format!(
        "{} archive-push --repo {} --cluster {CLUSTER} --archive-push-queue-max 48M %p",
        s(&bin()),
        s(&repo)
    );
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf(format!("archive_command = '{command}'"))
            .conf("max_wal_size = 1GB"),
    );
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    let first = make_segments(&c, 1);
    wait_until("the first segment is archived", &c, || ready(&c).is_empty());
    assert_archived(&repo, &first, scratch.path());

    // The repository becomes unwritable for the server: pushes fail, the backlog grows until
    // it passes 48 MiB (3 segments), then WAL is dropped.
    writable(&repo, false);
    let mut made = Vec::new();
    for _ in 0..14 {
        made.extend(make_segments(&c, 1).into_iter().map(|(s, _)| s));
    }
    wait_until("WAL is dropped down to the limit", &c, || {
        ready(&c).len() <= 4 && !spool(&c, "gap").is_empty()
    });
    // Bounded: with the repository still unwritable, the backlog came back down to the
    // limit's 3 segments (plus the one in hand). How high it rose before depends on how fast
    // the archiver works through its retries against the WAL written meanwhile (14 files under
    // a loaded machine): not asserted, it would be a timing assertion.
    let log = c.server_log();
    assert!(
        log.contains("was NOT archived"),
        "{}",
        c.server_log_tail(30)
    );
    let dropped: BTreeSet<String> = spool(&c, "gap")
        .iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    assert!(dropped.len() >= 8, "{dropped:?}");
    assert!(dropped.iter().all(|d| made.contains(d)));
    assert!(
        gap_events(&repo).is_empty(),
        "the repository was not writable"
    );

    // Writable again: the next push writes the gaps into the repository before anything else.
    writable(&repo, true);
    give_to_server_user(&repo);
    let after = make_segments(&c, 1);
    wait_until("the gaps reach the repository", &c, || {
        spool(&c, "gap").is_empty() && ready(&c).is_empty()
    });
    assert_archived(&repo, &after, scratch.path());
    let events = gap_events(&repo);
    let mut covered = BTreeSet::new();
    for e in &events {
        let (a, b) = (e["first"].as_str().unwrap(), e["last"].as_str().unwrap());
        for d in &dropped {
            if a <= d.as_str() && d.as_str() <= b {
                covered.insert(d.clone());
            }
        }
        assert!(e["reason"].as_str().unwrap().contains("queue limit"), "{e}");
    }
    assert_eq!(covered, dropped, "{events:?}");
    // A dropped segment is not in the archive.
    let d = dropped.iter().next().unwrap();
    let dest = scratch.path().join("dropped");
    let out = get(&repo, d, &dest, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

per_major!(queue_limit_drops_and_records_gaps: 10, 17);

/// archive-get into a pg_wal folder fetches the next segments into its queue and serves them
/// from there with their checks; a damaged queued file or one fetched from another repository
/// is never served.
#[test]
fn prefetch_serves_checked_segments_only() {
    let scratch = server_owned_tempdir();
    let c = stalled_server(15);
    let repo = new_repo(&c, scratch.path(), "repo");
    let segs = make_segments(&c, 12);
    drain(&c, &repo, &[]);

    let wal = scratch.path().join("rec/pg_wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    give_to_server_user(&scratch.path().join("rec"));
    let queue = wal.join("pgsafe_archive/prefetch");
    let dest = wal.join("RECOVERYXLOG");
    let served = |i: usize, repo: &Path, extra: &[&str]| {
        let _ = fs::remove_file(&dest);
        let out = ok(get(repo, &segs[i].0, &dest, extra), "archive-get");
        assert!(
            fs::read(&dest).unwrap() == segs[i].1,
            "{}: wrong bytes",
            segs[i].0
        );
        out
    };
    let out = served(0, &repo, &["--prefetch", "4"]);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    for (seg, _) in &segs[1..=4] {
        assert!(queue.join(seg).exists(), "{seg} not prefetched");
    }
    assert!(!queue.join(&segs[5].0).exists());

    // Served from the queue: the queued file is what lands in place.
    served(1, &repo, &["--prefetch", "4"]);
    assert!(!queue.join(&segs[1].0).exists());

    // A queued file damaged after it was fetched: fetched again, never served.
    let q3 = queue.join(&segs[3].0);
    let mut bytes = fs::read(&q3).unwrap();
    bytes[200_000] ^= 1;
    fs::write(&q3, &bytes).unwrap();
    served(2, &repo, &["--prefetch", "4"]);
    let out = served(3, &repo, &["--prefetch", "4"]);
    assert!(
        stderr(&out).contains("changed since it was fetched"),
        "{}",
        stderr(&out)
    );

    // A queue filled from another repository (a copy of it elsewhere) is not served.
    let copy = scratch.path().join("copy");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&repo)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let out = served(4, &copy, &["--prefetch", "4"]);
    assert!(stderr(&out).contains("another archive"), "{}", stderr(&out));

    // Bounded: at most the count ahead (data and record each).
    let n = fs::read_dir(&queue).unwrap().count();
    assert!(n <= 8, "{n} files queued");
    // The end of the archive: exit 1, nothing written.
    let _ = fs::remove_file(&dest);
    let last = &segs[11].0;
    let next = format!(
        "{}{:08X}",
        &last[..16],
        u32::from_str_radix(&last[16..], 16).unwrap() + 1
    );
    let out = get(&repo, &next, &dest, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!dest.exists());
}

/// Numbers for the report (not a test of speed): a backlog of 200 segments archived by hand
/// as PostgreSQL's archiver does, without and with look-ahead. `MEASURE_REPO_DIR`: where the
/// repository goes (a disk, so that fsync costs what it costs; default the scratch tmpfs);
/// `MEASURE_COMPRESS`: archive-push's `--compress`.
#[test]
#[ignore = "measurement: run by hand"]
fn measure_backlog_200() {
    let compress = std::env::var("MEASURE_COMPRESS").unwrap_or_else(|_| "zstd".into());
    for parallel in ["1", "4"] {
        let scratch = server_owned_tempdir();
        let c = stalled_server(17);
        let base =
            std::env::var("MEASURE_REPO_DIR").map_or(scratch.path().to_owned(), PathBuf::from);
        let repo = new_repo(
            &c,
            &base,
            &format!("repo-{parallel}-{}", std::process::id()),
        );
        make_segments(&c, 200);
        let n = ready(&c).len();
        let t = Instant::now();
        drain(
            &c,
            &repo,
            &["--parallel", parallel, "--compress", &compress],
        );
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "parallel {parallel}, {compress}: {n} files in {secs:.1} s = {:.1} segments/s",
            n as f64 / secs
        );
        if base != scratch.path() {
            fs::remove_dir_all(&repo).unwrap();
        }
    }
}

/// PostgreSQL recovering through archive-get with the prefetch queue: a queue filled before
/// recovery starts, with one queued file damaged and one made for another repository, still
/// gives a recovery with every row — the damaged and the foreign file are fetched again, never
/// replayed — and the queue is emptied as recovery passes it.
fn recovery_through_the_queue(major: u32) {
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let archive_command = format!(
        "{} archive-push --repo {} --cluster {CLUSTER} %p",
        s(&bin()),
        s(&repo)
    );
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf(format!("archive_command = '{archive_command}'")),
    );
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    c.execute("CREATE TABLE t (x text)");
    let backup = scratch.path().join("backup");
    ok(common::backup(&c, &backup, &[]), "pgsafe backup");
    let segs = make_segments(&c, 10);
    wait_until("everything is archived", &c, || ready(&c).is_empty());
    let committed: i64 = c.query_one("SELECT count(*) FROM t");

    let restore_command = format!(
        "{} archive-get --repo {} --cluster {CLUSTER} --prefetch 6 %f %p",
        s(&bin()),
        s(&repo)
    );
    let target = scratch.path().join("restored");
    ok(
        common::restore(&backup, &target, &["--restore-command", &restore_command]),
        "pgsafe restore",
    );
    // Fill the queue as a first call of recovery would, then damage it.
    let wal = target.join("pg_wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    give_to_server_user(&wal);
    let dest = wal.join("RECOVERYXLOG");
    ok(
        get(&repo, &segs[0].0, &dest, &["--prefetch", "6"]),
        "archive-get",
    );
    fs::remove_file(&dest).unwrap();
    let queue = wal.join("pgsafe_archive/prefetch");
    let damaged = queue.join(&segs[2].0);
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[300_000] ^= 0x20;
    fs::write(&damaged, &bytes).unwrap();
    let foreign = queue.join(format!("{}.json", segs[4].0));
    let record = fs::read_to_string(&foreign).unwrap();
    fs::write(&foreign, record.replace(s(&repo), "/elsewhere/repo")).unwrap();

    let mut r = Cluster::adopt(
        &install,
        &target,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("hot_standby = off"),
    );
    r.start();
    let rows: i64 = r.query_one("SELECT count(*) FROM t");
    assert_eq!(rows, committed, "{}", r.server_log_tail(40));
    let log = r.server_log();
    for (seg, _) in &segs {
        assert!(
            log.contains(&format!("restored log file \"{seg}\" from archive")),
            "{seg} not restored: {log}"
        );
    }
    assert!(log.contains("changed since it was fetched"), "{log}");
    assert!(log.contains("another archive"), "{log}");
    let left: Vec<_> = fs::read_dir(&queue)
        .map(|rd| rd.count())
        .into_iter()
        .collect();
    assert!(left.iter().all(|n| *n <= 12), "{left:?}");
}

per_major!(recovery_through_the_queue: 10, 17);

// ---- the background pusher (`archive-push --async`) ------------------------------------------

/// `pgsafe archive-push --background PG_WAL`: the background pusher a `--async` call starts,
/// started by hand as the server user.
fn pusher_cmd(c: &Cluster, repo: &Path) -> Command {
    let wal = c.data_dir().join("pg_wal");
    let mut cmd = push_cmd_in(repo, CLUSTER, &wal, &["--background"]);
    cmd.current_dir(c.data_dir());
    server_user().apply(&mut cmd);
    cmd
}

/// Whether no background pusher holds the lock of `c`'s pg_wal.
fn no_pusher(c: &Cluster) -> bool {
    let lock = c.data_dir().join("pg_wal/pgsafe_archive/async/pusher.lock");
    match fs::OpenOptions::new().write(true).open(&lock) {
        Ok(f) => nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok(),
        Err(_) => true,
    }
}

/// Every acknowledgement in the spool names an object that is in the repository: nothing is
/// recorded as stored before it is.
fn acks_hold(c: &Cluster, repo: &Path) {
    for name in spool(c, "ack") {
        if name.starts_with('.') {
            continue;
        }
        let path = c.data_dir().join("pg_wal/pgsafe_archive/ack").join(&name);
        let Ok(text) = fs::read_to_string(&path) else {
            continue; // consumed meanwhile
        };
        let rec: serde_json::Value = serde_json::from_str(&text).unwrap();
        let object = rec["object"].as_str().unwrap();
        assert!(
            repo.join(object).is_file(),
            "{name} acknowledges {object}, which is not in the repository"
        );
    }
}

/// With `--async` the calls are answered from the background pusher's acknowledgements (no
/// call pushes ahead itself), the archive holds every segment byte for byte, and the pusher
/// exits by itself once nothing waits.
fn background_pusher_archives_a_backlog(major: u32) {
    let scratch = server_owned_tempdir();
    let c = stalled_server(major);
    let repo = new_repo(&c, scratch.path(), "repo");
    let segs = make_segments(&c, 20);

    let calls = drain(&c, &repo, &["--async"]);
    assert!(calls.len() >= 20);
    assert!(
        calls.iter().all(|(_, o)| !stderr(o).contains("ahead")),
        "{calls:?}"
    );
    assert_archived(&repo, &segs, scratch.path());
    assert!(
        spool(&c, "async/error").is_empty(),
        "{:?}",
        spool(&c, "async/error")
    );
    wait_until("the background pusher exits when idle", &c, || {
        no_pusher(&c)
    });
}

per_major!(background_pusher_archives_a_backlog: 10, 17);

/// A background pusher killed (SIGKILL) while it pushes leaves no acknowledgement without its
/// object, and the archiver's calls afterwards archive every segment byte for byte.
#[test]
fn a_background_pusher_killed_mid_batch() {
    let scratch = server_owned_tempdir();
    let c = stalled_server(17);
    let repo = new_repo(&c, scratch.path(), "repo");
    let segs = make_segments(&c, 24);
    for round in 1..=3 {
        let mut p = pusher_cmd(&c, &repo).spawn().unwrap();
        wait_until("the pusher stores a file", &c, || {
            spool(&c, "ack").len() >= round || p.try_wait().unwrap().is_some()
        });
        let _ = p.kill();
        let _ = p.wait();
        acks_hold(&c, &repo);
    }
    drain(&c, &repo, &["--async"]);
    assert_archived(&repo, &segs, scratch.path());
}

/// Two background pushers started at once: one works, the other sees the lock and does
/// nothing; the calls are then all answered from acknowledgements.
#[test]
fn two_background_pushers_started_at_once() {
    let scratch = server_owned_tempdir();
    let c = stalled_server(15);
    let repo = new_repo(&c, scratch.path(), "repo");
    let segs = make_segments(&c, 16);
    let spawn = || {
        pusher_cmd(&c, &repo)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let idle = outs
        .iter()
        .filter(|o| stderr(o).contains("already runs"))
        .count();
    assert_eq!(idle, 1, "{outs:?}");
    assert!(outs.iter().all(|o| o.status.success()), "{outs:?}");
    acks_hold(&c, &repo);
    let calls = drain(&c, &repo, &["--async"]);
    assert!(calls.iter().all(|(_, o)| o.stderr.is_empty()), "{calls:?}");
    assert_archived(&repo, &segs, scratch.path());
}

/// PostgreSQL's archiver with `--async` while the repository is unwritable: every call fails
/// (nothing is reported archived that is not stored), and once it is writable again the
/// archiver catches up with every segment byte for byte.
#[test]
fn background_pusher_with_the_repository_unwritable_then_back() {
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let command = format!(
        "{} archive-push --repo {} --cluster {CLUSTER} --async %p",
        s(&bin()),
        s(&repo)
    );
    let c = Cluster::started(
        &PgInstall::major(16),
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf(format!("archive_command = '{command}'"))
            .conf("max_wal_size = 1GB"),
    );
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    let first = make_segments(&c, 1);
    wait_until("the first segment is archived", &c, || ready(&c).is_empty());
    assert_archived(&repo, &first, scratch.path());

    writable(&repo, false);
    let stuck = make_segments(&c, 4);
    wait_until("a push fails", &c, || {
        c.query_one::<i64>("SELECT failed_count FROM pg_stat_archiver") > 0
    });
    let waiting = ready(&c);
    for (seg, _) in &stuck {
        assert!(
            waiting.contains(seg),
            "{seg} was reported archived: {waiting:?}"
        );
    }
    acks_hold(&c, &repo);

    writable(&repo, true);
    let more = make_segments(&c, 1); // wakes the archiver up
    wait_until("the backlog is archived", &c, || ready(&c).is_empty());
    assert_archived(&repo, &stuck, scratch.path());
    assert_archived(&repo, &more, scratch.path());
}
