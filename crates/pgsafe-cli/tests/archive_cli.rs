//! `pgsafe archive-push` and `archive-get` against real servers, through the real binary:
//! PostgreSQL's own archiver running archive-push as its archive_command, archive-get giving
//! the segment back byte for byte, duplicate pushes (the same content succeeds, other content
//! fails loudly and changes nothing), segments that are not the registered cluster's (another
//! system identifier, another major, a renamed, zeroed, truncated or patched file), history,
//! backup history and partial files (written by PostgreSQL itself at a promotion), hostile
//! names, damaged and planted stored objects, a push killed part-way, a repository the server
//! cannot write to, and PostgreSQL recovering through archive-get (stopping on a damaged
//! archive instead of ending recovery early).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgsafe_testkit::{
    Cluster, ClusterOptions, FsKind, LoopFs, PgInstall, give_to_server_user, per_major,
    server_owned_tempdir, server_user,
};

use common::archive::{finish_segment, get_cmd, later, push_cmd, seg_object, wal_objects};
use common::{bin, command, ok, path_str as s, repo_init, stderr};

const CLUSTER: &str = "main";

fn push(repo: &Path, path: &Path, extra: &[&str]) -> Output {
    push_cmd(repo, CLUSTER, path, extra).output().unwrap()
}

fn get(repo: &Path, file: &str, dest: &Path) -> Output {
    get_cmd(repo, CLUSTER, file, dest, &[]).output().unwrap()
}

/// Every stored object (not temporary files) under the cluster's archive.
fn archive_objects(repo: &Path) -> Vec<PathBuf> {
    wal_objects(repo, CLUSTER)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".pgsafe-tmp"))
        .collect()
}

fn wait_for(path: &Path, c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared; server log:\n{}",
            path.display(),
            c.server_log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PostgreSQL's archiver runs archive-push: a switched segment lands in the repository,
/// compressed, and archive-get gives it back byte for byte; a file the archive does not have
/// is exit 1 and writes nothing.
fn archive_command_round_trip(major: u32) {
    let install = PgInstall::major(major);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let archive_command = format!(
        "{} archive-push --repo {} --cluster {CLUSTER} %p",
        s(&bin()),
        s(&repo)
    );
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf(format!("archive_command = '{archive_command}'")),
    );
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    let (seg, bytes) = finish_segment(&c);
    let stored = seg_object(&repo, CLUSTER, &seg, ".zst");
    wait_for(&stored, &c);
    assert!(
        fs::metadata(&stored).unwrap().len() < bytes.len() as u64,
        "stored compressed"
    );
    // 10-14 publish the archiver's statistics through the stats collector, a little after
    // the command returned: wait for them (never a timing assertion; the bound is generous).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let archived = loop {
        let a: String = c.query_one("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        if a.as_str() >= seg.as_str() || std::time::Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(archived.as_str() >= seg.as_str(), "{archived} < {seg}");

    let dest_dir = scratch.path().join("restore-pg_wal");
    fs::create_dir(&dest_dir).unwrap();
    let dest = dest_dir.join("RECOVERYXLOG");
    let out = ok(get(&repo, &seg, &dest), "archive-get");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    assert!(fs::read(&dest).unwrap() == bytes, "restored bytes differ");
    assert_eq!(fs::read_dir(&dest_dir).unwrap().count(), 1, "no leftovers");

    // Not in the archive: PostgreSQL's probes for a future timeline's history file and the
    // segment after the end of WAL.
    for missing in ["00000002.history".to_owned(), later(&seg, 50)] {
        let dest = dest_dir.join("RECOVERYHISTORY");
        let out = get(&repo, &missing, &dest);
        assert_eq!(out.status.code(), Some(1), "{missing}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not in the archive"),
            "{}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(!dest.exists());
    }
}

per_major!(archive_command_round_trip);

/// Pushes of files that are not what they claim, or not the registered cluster's, are refused
/// and store nothing; a segment pushed twice with the same bytes succeeds, with other bytes
/// fails loudly and leaves the stored copy as it was.
#[test]
fn pushes_are_checked_and_write_once() {
    let install = PgInstall::major(16);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let src = scratch.path().join("src");
    fs::create_dir(&src).unwrap();
    // Archiving on (failing, so nothing leaves pg_wal): otherwise the server deletes a backup
    // history file as soon as it wrote it (CleanupBackupHistory in xlog.c).
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf("archive_command = 'false'"),
    );
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let (seg, bytes) = finish_segment(&c);
    let (seg2, bytes2) = finish_segment(&c);
    let file = |name: &str, content: &[u8]| {
        let dir = src.join(format!("d{}", fs::read_dir(&src).unwrap().count()));
        fs::create_dir(&dir).unwrap();
        let p = dir.join(name);
        fs::write(&p, content).unwrap();
        p
    };

    // Stored once; again with the same bytes (any compression asked): success, said so.
    let p = file(&seg, &bytes);
    let out = ok(push(&repo, &p, &[]), "first push");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let stored = seg_object(&repo, CLUSTER, &seg, ".zst");
    let before = fs::read(&stored).unwrap();
    for extra in [&[][..], &["--compress", "lz4"], &["--compress", "none"]] {
        let out = ok(push(&repo, &p, extra), "identical push");
        assert!(
            stderr(&out).contains("already archived"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(archive_objects(&repo), vec![stored.clone()]);

    // Other bytes under the same name: loud, non-zero, nothing changed.
    let mut other = bytes.clone();
    other[1 << 20] ^= 0xFF;
    let out = push(&repo, &file(&seg, &other), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in ["DIFFERENT content", "split brain", &seg] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
    assert_eq!(fs::read(&stored).unwrap(), before);

    // Files that are not what their name says, or not this cluster's: refused, nothing stored.
    let mut patched_magic = bytes2.clone();
    patched_magic[0] ^= 0x01;
    let mut patched_segsize = bytes2.clone();
    patched_segsize[32..36].copy_from_slice(&(32u32 << 20).to_le_bytes());
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("renamed", later(&seg2, 1), bytes2.clone()),
        ("zero page", seg2.clone(), vec![0; bytes2.len()]),
        (
            "truncated",
            seg2.clone(),
            bytes2[..bytes2.len() / 2].to_vec(),
        ),
        (
            "too long",
            seg2.clone(),
            [&bytes2[..], &[0u8; 8192]].concat(),
        ),
        ("other magic", seg2.clone(), patched_magic),
        ("other segment size", seg2.clone(), patched_segsize),
        ("empty", seg2.clone(), Vec::new()),
    ];
    let expected = [
        "page address",
        "zero-filled",
        "truncated",
        "exactly",
        "page magic",
        "segment size",
        "exactly",
    ];
    for ((what, name, content), needle) in cases.into_iter().zip(expected) {
        let out = push(&repo, &file(&name, &content), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle:?} missing: {err}");
        assert!(err.contains("Nothing was stored"), "{what}: {err}");
        assert_eq!(archive_objects(&repo), vec![stored.clone()], "{what}");
    }

    // A segment of another cluster of the same major (its own initdb), and of another major.
    let foreign = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().fresh_initdb(true),
    );
    let (fseg, fbytes) = finish_segment(&foreign);
    drop(foreign);
    let other_major = Cluster::started(&PgInstall::major(17), ClusterOptions::new().fast_unsafe());
    let (mseg, mbytes) = finish_segment(&other_major);
    drop(other_major);
    for (what, name, content, needle) in [
        ("other system", &fseg, &fbytes, "belongs to database system"),
        ("other major", &mseg, &mbytes, "not that of PostgreSQL 16"),
    ] {
        let out = push(&repo, &file(name, content), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle:?} missing: {err}");
        assert_eq!(archive_objects(&repo), vec![stored.clone()], "{what}");
    }

    // The second segment under its own name, uncompressed; a partial segment (the same bytes
    // as the end of a timeline leaves them) beside it.
    ok(
        push(&repo, &file(&seg2, &bytes2), &["--compress", "none"]),
        "push seg2",
    );
    assert_eq!(
        fs::read(seg_object(&repo, CLUSTER, &seg2, "")).unwrap(),
        bytes2
    );
    let partial = format!("{seg2}.partial");
    ok(
        push(&repo, &file(&partial, &bytes2), &["--compress", "lz4"]),
        "push partial",
    );
    assert!(seg_object(&repo, CLUSTER, &partial, ".lz4").exists());

    // `archive_compress` of the config file when no flag is given.
    let (seg3, bytes3) = finish_segment(&c);
    let config = scratch.path().join("pgsafe.toml");
    fs::write(&config, "[cluster.main]\narchive_compress = \"lz4\"\n").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = push_cmd(&repo, CLUSTER, file(&seg3, &bytes3), &[]);
    cmd.env("PGSAFE_CONFIG", &config);
    ok(cmd.output().unwrap(), "push with the config file");
    assert!(seg_object(&repo, CLUSTER, &seg3, ".lz4").exists());

    // A history file: stored as it is, given back; one that does not parse is refused.
    let history = b"1\t0/3000000\tno recovery target specified\n";
    ok(
        push(&repo, &file("00000002.history", history), &[]),
        "push history",
    );
    let stored_history = repo.join(CLUSTER).join("wal/00000002/00000002.history");
    assert_eq!(fs::read(&stored_history).unwrap(), history);
    let out = push(
        &repo,
        &file("00000003.history", b"this is not a history\n"),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!repo.join(CLUSTER).join("wal/00000003").exists());

    // A real backup history file, from a non-exclusive backup.
    {
        let mut client = c.connect();
        client
            .query_one("SELECT pg_backup_start('archive_cli', true)", &[])
            .unwrap();
        client
            .query_one("SELECT pg_backup_stop(false)", &[])
            .unwrap();
    }
    let backup_file = fs::read_dir(c.data_dir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".backup"))
        .expect("a backup history file in pg_wal");
    let content = fs::read(c.data_dir().join("pg_wal").join(&backup_file)).unwrap();
    ok(
        push(&repo, &file(&backup_file, &content), &[]),
        "push backup history",
    );
    // The same content under another offset's name: refused.
    let wrong = format!("{}.00000000.backup", &backup_file[..24]);
    let out = push(&repo, &file(&wrong, &content), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not where its name says"),
        "{}",
        stderr(&out)
    );

    // Everything pushed comes back as it was pushed.
    let dest = scratch.path().join("RECOVERYXLOG");
    for (name, content) in [
        (seg.as_str(), &bytes),
        (seg2.as_str(), &bytes2),
        (partial.as_str(), &bytes2),
        ("00000002.history", &history.to_vec()),
        (backup_file.as_str(), &content),
    ] {
        ok(get(&repo, name, &dest), name);
        assert!(fs::read(&dest).unwrap() == *content, "{name} differs");
    }

    // Hostile names: refused before anything is looked up.
    let long = "A".repeat(300);
    for name in [
        "../x",
        "/etc/passwd",
        long.as_str(),
        "00000001000000000000000G",
    ] {
        let out = push(&repo, Path::new(name), &[]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not the name of a WAL archive file"),
            "{}",
            stderr(&out)
        );
        let out = get(&repo, name, &dest);
        assert_eq!(out.status.code(), Some(200), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not the name of a WAL archive file"),
            "{}",
            stderr(&out)
        );
    }
}

/// archive-get never hands out a stored object that fails its checks (damaged, truncated, or
/// another cluster's segment planted under this cluster's name): exit 200, which makes
/// PostgreSQL stop recovery, and the destination is not created.
#[test]
fn damaged_and_planted_objects_are_never_restored() {
    let install = PgInstall::major(13);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let src = scratch.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut segs = Vec::new();
    for compress in ["zstd", "lz4", "none"] {
        let (seg, bytes) = finish_segment(&c);
        let p = src.join(&seg);
        fs::write(&p, &bytes).unwrap();
        ok(push(&repo, &p, &["--compress", compress]), "push");
        segs.push((seg, bytes));
    }
    let dest_dir = scratch.path().join("pg_wal");
    fs::create_dir(&dest_dir).unwrap();
    let dest = dest_dir.join("RECOVERYXLOG");
    for ((seg, bytes), suffix) in segs.iter().zip([".zst", ".lz4", ""]) {
        ok(get(&repo, seg, &dest), "intact");
        assert!(fs::read(&dest).unwrap() == *bytes);
        fs::remove_file(&dest).unwrap();
        let object = seg_object(&repo, CLUSTER, seg, suffix);
        let good = fs::read(&object).unwrap();
        // A flipped byte in the middle, and a cut object.
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        let mut cases = vec![
            ("cut", good[..good.len() - 3].to_vec()),
            ("appended", [&good[..], b"x"].concat()),
        ];
        // Only compressed objects carry a content checksum: a byte changed inside a stored
        // uncompressed segment (past its first page) cannot be told (README "WAL archiving").
        if !suffix.is_empty() {
            cases.push(("flipped", flipped));
        }
        for (what, damaged) in cases {
            fs::write(&object, &damaged).unwrap();
            let out = get(&repo, seg, &dest);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(200), "{suffix} {what}: {err}");
            assert!(err.contains("cannot be used"), "{suffix} {what}: {err}");
            assert!(!dest.exists(), "{suffix} {what}: destination written");
            assert_eq!(fs::read_dir(&dest_dir).unwrap().count(), 0, "leftovers");
        }
        fs::write(&object, &good).unwrap();
    }

    // Another cluster's segment planted in this cluster's archive.
    let foreign = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().fresh_initdb(true),
    );
    let (fseg, fbytes) = finish_segment(&foreign);
    drop(foreign);
    // (In place of this cluster's segment of that name, if the archive has one.)
    for suffix in [".zst", ".lz4", ""] {
        let _ = fs::remove_file(seg_object(&repo, CLUSTER, &fseg, suffix));
    }
    let planted = seg_object(&repo, CLUSTER, &fseg, "");
    fs::create_dir_all(planted.parent().unwrap()).unwrap();
    fs::write(&planted, &fbytes).unwrap();
    let out = get(&repo, &fseg, &dest);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(200), "{err}");
    assert!(err.contains("belongs to database system"), "{err}");
    assert!(!dest.exists());

    // Bad arguments stop recovery too (never read as a missing file).
    let out = command(&["archive-get", "--repo", s(&repo)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(200), "{}", stderr(&out));
}

/// PostgreSQL itself recovering through archive-get: a restored backup replays every archived
/// segment and has every row; the same restore with one archived segment damaged stops
/// recovery with an error (exit 200 above 125) instead of ending it early and promoting with
/// rows missing.
fn recovery_replays_the_archive_and_stops_on_damage(major: u32) {
    let install = PgInstall::major(major);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let pgsafe = bin();
    let archive_command = format!(
        "{} archive-push --repo {} --cluster {CLUSTER} %p",
        s(&pgsafe),
        s(&repo)
    );
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf(format!("archive_command = '{archive_command}'")),
    );
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    c.execute("CREATE TABLE t (i int)");
    let backup = scratch.path().join("backup");
    ok(common::backup(&c, &backup, &[]), "pgsafe backup");
    let mut segs = Vec::new();
    for batch in 0..3 {
        c.execute(&format!(
            "INSERT INTO t SELECT generate_series({}, {})",
            batch * 1000 + 1,
            batch * 1000 + 1000
        ));
        let (seg, _) = finish_segment(&c);
        wait_for(&seg_object(&repo, CLUSTER, &seg, ".zst"), &c);
        segs.push(seg);
    }
    let committed: i64 = c.query_one("SELECT count(*) FROM t");
    let restore_command = format!(
        "{} archive-get --repo {} --cluster {CLUSTER} %f %p",
        s(&pgsafe),
        s(&repo)
    );
    let restore = |name: &str| {
        let target = scratch.path().join(name);
        ok(
            common::restore(&backup, &target, &["--restore-command", &restore_command]),
            "pgsafe restore",
        );
        target
    };

    // Connections only once recovery has ended (or the server exits).
    let no_hot_standby = || {
        ClusterOptions::new()
            .fast_unsafe()
            .conf("hot_standby = off")
    };
    let intact = restore("intact");
    let mut r = Cluster::adopt(&install, &intact, no_hot_standby());
    r.start();
    let rows: i64 = r.query_one("SELECT count(*) FROM t");
    assert_eq!(rows, committed, "{}", r.server_log_tail(40));
    let log = r.server_log();
    for seg in &segs {
        assert!(
            log.contains(&format!("restored log file \"{seg}\" from archive")),
            "{seg} not restored from the archive: {log}"
        );
    }
    drop(r);

    // The middle batch's segment damaged in the archive.
    let object = seg_object(&repo, CLUSTER, &segs[1], ".zst");
    let mut bytes = fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5A;
    fs::write(&object, &bytes).unwrap();
    let damaged = restore("damaged");
    let mut r = Cluster::adopt(&install, &damaged, no_hot_standby());
    let log = r
        .try_start()
        .expect_err("recovery went past a damaged archived segment");
    for needle in [
        format!("could not restore file \"{}\" from archive", segs[1]),
        "cannot be used".to_owned(),
    ] {
        assert!(log.contains(&needle), "{needle:?} missing: {log}");
    }
    assert!(
        !log.contains("database system is ready to accept connections"),
        "{log}"
    );
}

per_major!(recovery_replays_the_archive_and_stops_on_damage: 10, 14, 18);

/// A standby promoted: PostgreSQL itself archives the new timeline's history file and the old
/// timeline's last segment as `.partial` through archive-push (both pass the checks as the
/// server writes them), and archive-get gives the history file back byte for byte.
fn promotion_archives_history_and_partial(major: u32) {
    let install = PgInstall::major(major);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let archive_command = format!(
        "{} archive-push --repo {} --cluster {CLUSTER} %p",
        s(&bin()),
        s(&repo)
    );
    let primary = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf(format!("archive_command = '{archive_command}'")),
    );
    ok(repo_init(&primary, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    finish_segment(&primary);
    let mut standby = Cluster::new_standby(&primary);
    primary.execute("INSERT INTO t SELECT generate_series(1, 500)");
    standby.wait_for_replay(&primary);
    standby.promote();
    let (seg, _) = finish_segment(&standby);
    assert!(seg.starts_with("00000002"), "{seg}");
    let wal = repo.join(CLUSTER).join("wal");
    let history = wal.join("00000002").join("00000002.history");
    wait_for(&history, &standby);
    wait_for(&seg_object(&repo, CLUSTER, &seg, ".zst"), &standby);
    let partial = fs::read_dir(standby.data_dir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".partial"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let stored_partial = loop {
        let found = archive_objects(&repo)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".partial.zst"));
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no .partial archived: {partial:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(stored_partial.to_string_lossy().contains("/00000001/"));
    let failed: i64 = standby.query_one("SELECT failed_count FROM pg_stat_archiver");
    assert_eq!(failed, 0, "{}", standby.server_log_tail(40));

    let dest = scratch.path().join("RECOVERYHISTORY");
    ok(get(&repo, "00000002.history", &dest), "get history");
    let original = fs::read(standby.data_dir().join("pg_wal/00000002.history")).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), original);
    let name = stored_partial
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".zst", "");
    ok(get(&repo, &name, &dest), "get partial");
}

per_major!(promotion_archives_history_and_partial: 10, 16, 18);

/// A push killed at any point leaves no visible partial object, and the next push of the same
/// file succeeds and stores it whole.
#[test]
fn push_killed_part_way_leaves_nothing_partial() {
    let install = PgInstall::major(14);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let (seg, bytes) = finish_segment(&c);
    let p = scratch.path().join(&seg);
    fs::write(&p, &bytes).unwrap();
    let object = seg_object(&repo, CLUSTER, &seg, ".zst");
    let dest = scratch.path().join("RECOVERYXLOG");
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80] {
        let _ = fs::remove_file(&object);
        let mut child = push_cmd(&repo, CLUSTER, &p, &[]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Either nothing, or the whole object.
        match archive_objects(&repo).as_slice() {
            [] => {}
            [o] if *o == object => {
                ok(get(&repo, &seg, &dest), "get after kill");
                assert!(fs::read(&dest).unwrap() == bytes);
            }
            other => panic!("after a kill at {delay_ms} ms: {other:?}"),
        }
        ok(push(&repo, &p, &[]), "push after kill");
        ok(get(&repo, &seg, &dest), "get after the next push");
        assert!(fs::read(&dest).unwrap() == bytes);
    }
}

/// A repository the server user cannot write to: the push fails, says why, and stores
/// nothing; PostgreSQL keeps the segment and retries.
#[test]
fn unwritable_repository_fails_cleanly() {
    let install = PgInstall::major(16);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    give_to_server_user(&repo);
    let (seg, bytes) = finish_segment(&c);
    let p = scratch.path().join(&seg);
    fs::write(&p, &bytes).unwrap();
    give_to_server_user(&p);
    fs::set_permissions(repo.join(CLUSTER), fs::Permissions::from_mode(0o500)).unwrap();
    let mut cmd = push_cmd(&repo, CLUSTER, &p, &[]);
    server_user().apply(&mut cmd);
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        err.contains("must be able to read the repository and write"),
        "{err}"
    );
    assert!(archive_objects(&repo).is_empty());
    fs::set_permissions(repo.join(CLUSTER), fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = push_cmd(&repo, CLUSTER, &p, &[]);
    server_user().apply(&mut cmd);
    ok(cmd.output().unwrap(), "push once writable");
    assert_eq!(
        archive_objects(&repo),
        vec![seg_object(&repo, CLUSTER, &seg, ".zst")]
    );
}

/// The repository on a real file system that is full, then mounted read-only: the push fails
/// with the reason and what to do, stores nothing, and succeeds once the file system is usable
/// again.
#[test]
fn full_or_read_only_file_system_fails_cleanly() {
    let Some(lfs) = LoopFs::or_skip(
        FsKind::Xfs,
        320,
        "full_or_read_only_file_system_fails_cleanly",
    ) else {
        return;
    };
    let install = PgInstall::major(17);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let repo = lfs.path().join("repo");
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let scratch = server_owned_tempdir();
    let (seg, bytes) = finish_segment(&c);
    let p = scratch.path().join(&seg);
    fs::write(&p, &bytes).unwrap();

    // Full: fill the file system (incompressible bytes, so nothing is left).
    let filler = lfs.path().join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let chunk: Vec<u8> = (0..8 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    }
    let out = push(&repo, &p, &["--compress", "none"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Free space in the repository"), "{err}");
    assert!(
        archive_objects(&repo).is_empty(),
        "{:?}",
        archive_objects(&repo)
    );
    fs::remove_file(&filler).unwrap();

    // Read-only.
    let remount = |mode: &str| {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(lfs.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -o remount,{mode}");
    };
    remount("ro");
    let out = push(&repo, &p, &[]);
    let err = stderr(&out);
    remount("rw");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("must not be mounted read-only"), "{err}");
    assert!(archive_objects(&repo).is_empty());

    ok(push(&repo, &p, &[]), "push once usable");
    let dest = scratch.path().join("RECOVERYXLOG");
    ok(get(&repo, &seg, &dest), "get");
    assert!(fs::read(&dest).unwrap() == bytes);
}
