//! `pgsafe check` against real servers: archiving off, an archive_command that stores WAL
//! elsewhere or names another repository or cluster, a failing archive_command (the server's
//! own pg_stat_archiver is the oracle for what is quoted), the wrong server for the registered
//! name, a missing repository, missing privileges, and JSON on failure.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, per_major, server_owned_tempdir};
use serde_json::Value;

use common::{json, ok, pgsafe, repo_init, text};

/// `pgsafe check --json` of `c` into `repo` as `name`, plus `extra`.
fn check(c: &Cluster, repo: &Path, name: &str, extra: &[&str]) -> Output {
    let conn = c.conninfo();
    let mut args = vec![
        "check",
        "--repo",
        repo.to_str().unwrap(),
        "--cluster",
        name,
        "-d",
        &conn,
        "--json",
    ];
    args.extend_from_slice(extra);
    pgsafe(&args)
}

/// The report of a check that found problems (exit 1), with its problem codes.
fn problems(out: &Output) -> (Value, Vec<String>) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let v = json(out);
    assert_eq!(v["ok"], false, "{v:#}");
    assert_eq!(v["exit_code"], 1, "{v:#}");
    assert_eq!(v["schema_version"], 1, "{v:#}");
    let codes = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_owned())
        .collect();
    (v, codes)
}

fn problem<'a>(v: &'a Value, code: &str) -> &'a Value {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == code)
        .unwrap_or_else(|| panic!("no problem {code} in {v:#}"))
}

/// The `archive_command` line `check` asks for, built here from its parts.
fn expected_line(repo: &Path, name: &str) -> String {
    format!(
        "archive_command = '{} archive-push --repo {} --cluster {name} %p'",
        common::bin().display(),
        repo.display()
    )
}

/// Gives `path` and everything below it to the server's user (the archiver runs as that user).
fn chown_tree(path: &Path) {
    pgsafe_testkit::server_user().chown(path);
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

/// A repository at `<dir>/repo` with `c` registered as `main`, owned by the server's user.
fn repo_for(c: &Cluster, dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    ok(repo_init(c, &repo, "main"), "init");
    chown_tree(&repo);
    repo
}

/// Sets archive_command (a reload applies it) and waits until the server shows it.
fn set_archive_command(c: &Cluster, cmd: &str) {
    c.execute(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        cmd.replace('\'', "''")
    ));
    c.execute("SELECT pg_reload_conf()");
    let t = std::time::Instant::now();
    while c.query_one::<String>("SELECT reset_val FROM pg_settings WHERE name = 'archive_command'")
        != cmd
    {
        assert!(t.elapsed().as_secs() < 30, "the reload never applied");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn archiving_cluster(major: u32) -> Cluster {
    Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .fast_unsafe()
            .conf("archive_mode = on")
            .conf("archive_command = ''"),
    )
}

/// archive_mode off: the problem, with the exact line to set, in JSON and in text; no WAL
/// switch is forced (there is nothing to archive it).
fn archive_mode_off(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let before: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let (v, codes) = problems(&check(&c, &repo, "main", &[]));
    assert!(codes.contains(&"archive_mode_off".to_owned()), "{v:#}");
    let fix = problem(&v, "archive_mode_off")["fix"].as_str().unwrap();
    let line = expected_line(&repo, "main");
    let value = line.trim_start_matches("archive_command = ");
    assert!(fix.contains("archive_mode = on"), "{fix}");
    assert!(fix.contains(value), "{fix}\nexpected {value}");
    assert_eq!(v["archive_command"]["expected"], line, "{v:#}");
    assert!(v["switch"].is_null(), "{v:#}");
    assert_eq!(v["settings"]["archive_mode"], "off");
    let after: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert_eq!(before, after, "check switched WAL with archiving off");
    // The same in text: the problem, its fix and the verdict.
    let conn = c.conninfo();
    let out = pgsafe(&[
        "check",
        "--repo",
        repo.to_str().unwrap(),
        "--cluster",
        "main",
        "-d",
        &conn,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PROBLEM (archive_mode_off)"), "{stdout}");
    assert!(stdout.contains(value), "{stdout}");
    assert!(stdout.contains("NOT OK"), "{stdout}");
}
per_major!(archive_mode_off: 10, 13, 16, 18);

/// The testkit's archive_command copies WAL into a folder of its own: check names the command,
/// and — once the server counts the switched file as archived while the repository does not
/// have it — says it went elsewhere. The file is in that folder (the outside oracle).
fn archive_command_elsewhere(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe().with_archive(true),
    );
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "60s"]));
    assert!(
        codes.contains(&"archive_command_not_pgsafe".to_owned()),
        "{v:#}"
    );
    assert!(codes.contains(&"archived_elsewhere".to_owned()), "{v:#}");
    let seg = v["switch"]["segment"].as_str().unwrap();
    assert!(v["switch"]["stored_as"].is_null(), "{v:#}");
    assert!(
        c.archive_dir().unwrap().join(seg).is_file(),
        "{seg} not archived"
    );
    assert!(
        problem(&v, "archive_command_not_pgsafe")["fix"]
            .as_str()
            .unwrap()
            .contains(&expected_line(&repo, "main")),
        "{v:#}"
    );
}
per_major!(archive_command_elsewhere: 10, 13, 16, 18);

/// pgsafe archive-push, but into another repository, or as another cluster; and a config file
/// (its `--config`) that names this repository is followed.
fn archive_command_other_target(major: u32) {
    let c = archiving_cluster(major);
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let bin = common::bin();
    let bin = bin.to_str().unwrap();
    let elsewhere = dir.path().join("other-repo");
    set_archive_command(
        &c,
        &format!(
            "{bin} archive-push --repo {} --cluster main %p",
            elsewhere.display()
        ),
    );
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "30s"]));
    assert!(
        codes.contains(&"archive_command_other_repository".to_owned()),
        "{v:#}"
    );
    let msg = problem(&v, "archive_command_other_repository")["message"]
        .as_str()
        .unwrap();
    assert!(msg.contains(elsewhere.to_str().unwrap()), "{msg}");
    assert!(v["switch"]["stored_as"].is_null(), "{v:#}");

    set_archive_command(
        &c,
        &format!(
            "{bin} archive-push --repo {} --cluster other %p",
            repo.display()
        ),
    );
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "30s"]));
    assert!(
        codes.contains(&"archive_command_other_cluster".to_owned()),
        "{v:#}"
    );
    assert!(
        !codes.contains(&"archive_command_other_repository".to_owned()),
        "{v:#}"
    );

    // No --repo: the config file the command names gives it.
    let cfg = dir.path().join("pgsafe.toml");
    fs::write(&cfg, format!("repo = \"{}\"\n", repo.display())).unwrap();
    set_archive_command(
        &c,
        &format!(
            "{bin} --config {} archive-push --cluster main %p || true",
            cfg.display()
        ),
    );
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "30s"]));
    assert_eq!(
        v["archive_command"]["repository"],
        repo.to_str().unwrap(),
        "{v:#}"
    );
    for code in [
        "archive_command_other_repository",
        "archive_command_no_repository",
    ] {
        assert!(!codes.contains(&code.to_owned()), "{v:#}");
    }
    // `|| true` makes every push look successful to the server.
    assert!(
        codes.contains(&"archive_command_compound".to_owned()),
        "{v:#}"
    );
}
per_major!(archive_command_other_target: 13, 18);

/// The right pgsafe command, but the repository belongs to root with mode 0700 (as `pgsafe
/// init` run as root leaves it): the server's user cannot write it, every push fails, and
/// check quotes pg_stat_archiver's failure — the same WAL file the server itself names.
fn failing_archive_command(major: u32) {
    let c = archiving_cluster(major);
    let dir = server_owned_tempdir();
    let repo = dir.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    let bin = common::bin();
    set_archive_command(
        &c,
        &format!(
            "{} archive-push --repo {} --cluster main %p",
            bin.display(),
            repo.display()
        ),
    );
    let root = !pgsafe_testkit::server_user().is_current;
    if !root {
        // Not root: make the repository unwritable for everyone but keep it readable.
        for p in [&repo, &repo.join("main")] {
            fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        }
    }
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "60s"]));
    assert!(codes.contains(&"archive_command_fails".to_owned()), "{v:#}");
    if root {
        assert!(
            codes.contains(&"repository_not_writable".to_owned()),
            "{v:#}"
        );
    }
    let seg = v["switch"]["segment"].as_str().unwrap().to_owned();
    let failed: Option<String> = c.query_one("SELECT last_failed_wal FROM pg_stat_archiver");
    let failed = failed.expect("the server counted no failure");
    assert!(failed.as_str() <= seg.as_str(), "{failed} after {seg}");
    let msg = problem(&v, "archive_command_fails")["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains(&format!("last failed WAL file {failed}")),
        "{msg}"
    );
    let fix = problem(&v, "archive_command_fails")["fix"]
        .as_str()
        .unwrap();
    assert!(fix.contains("server log"), "{fix}");
    assert!(v["switch"]["stored_as"].is_null(), "{v:#}");
    assert!(!c.server_log().is_empty());
}
per_major!(failing_archive_command: 10, 13, 16, 18);

/// A server that is not the one registered under the name (another major and system
/// identifier): refused by name, both identities shown; no WAL switch.
#[test]
fn wrong_cluster_registered() {
    let registered = Cluster::started(&PgInstall::major(16), ClusterOptions::new().fast_unsafe());
    let other = archiving_cluster(13);
    let dir = server_owned_tempdir();
    let repo = repo_for(&registered, dir.path());
    let (v, codes) = problems(&check(&other, &repo, "main", &[]));
    assert!(codes.contains(&"other_cluster".to_owned()), "{v:#}");
    let msg = problem(&v, "other_cluster")["message"].as_str().unwrap();
    let sysid = |c: &Cluster| -> String {
        c.query_one("SELECT system_identifier::text FROM pg_control_system()")
    };
    assert!(msg.contains(&sysid(&registered)), "{msg}");
    assert!(msg.contains(&sysid(&other)), "{msg}");
    assert!(v["switch"].is_null(), "{v:#}");
}

/// A repository path that does not exist: reported (with `pgsafe init` to run), nothing is
/// created there, and the rest of the report is still there (JSON on failure).
#[test]
fn missing_repository_is_reported_not_created() {
    let c = Cluster::started(&PgInstall::major(18), ClusterOptions::new().fast_unsafe());
    let dir = server_owned_tempdir();
    let repo = dir.path().join("no-such-repo");
    let (v, codes) = problems(&check(&c, &repo, "main", &[]));
    assert!(codes.contains(&"repository_missing".to_owned()), "{v:#}");
    assert!(codes.contains(&"archive_mode_off".to_owned()), "{v:#}");
    assert!(
        problem(&v, "repository_missing")["fix"]
            .as_str()
            .unwrap()
            .contains("pgsafe init"),
        "{v:#}"
    );
    assert_eq!(v["repository"]["exists"], false);
    assert!(!repo.exists(), "check created the repository");
}

/// A user without the right to switch WAL is told which GRANTs it needs; after them, the
/// privilege problem is gone.
#[test]
fn missing_privileges_are_named() {
    let c = archiving_cluster(16);
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    set_archive_command(&c, "/bin/false");
    c.execute("CREATE ROLE checker LOGIN");
    let conn = format!("{} user=checker", c.conninfo());
    let run = || {
        pgsafe(&[
            "check",
            "--repo",
            repo.to_str().unwrap(),
            "--cluster",
            "main",
            "-d",
            &conn,
            "--json",
        ])
    };
    let (v, codes) = problems(&run());
    assert!(codes.contains(&"privileges".to_owned()), "{v:#}");
    let fix = problem(&v, "privileges")["fix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        fix.contains("GRANT EXECUTE ON FUNCTION pg_switch_wal()"),
        "{fix}"
    );
    for grant in fix.split("run ").nth(1).unwrap().split(';') {
        if !grant.trim().is_empty() {
            c.execute(grant);
        }
    }
    let (v, codes) = problems(&run());
    assert!(!codes.contains(&"privileges".to_owned()), "{v:#}");
    assert!(!v["switch"].is_null(), "{v:#}");
    assert!(codes.contains(&"archive_command_fails".to_owned()), "{v:#}");
}

/// The check cannot run at all (no server there): exit 2 and the error object on stdout.
#[test]
fn an_unreachable_server_is_an_error_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = pgsafe(&[
        "check",
        "--repo",
        dir.path().to_str().unwrap(),
        "--cluster",
        "main",
        "-d",
        "host=/nonexistent-socket-dir port=1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "connection", "{v:#}");
    assert_eq!(v["error"]["exit_code"], 2);
}

/// The DBA follows check's advice: the line it prints, set as it says, makes archiving work —
/// check then exits 0, and the switched file is in the repository: archive-get (a separate
/// command, with its own checks) hands it back whole.
fn following_the_advice_works(major: u32) {
    let c = archiving_cluster(major);
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let (v, codes) = problems(&check(&c, &repo, "main", &[]));
    assert!(codes.contains(&"archive_command_empty".to_owned()), "{v:#}");
    let line = v["archive_command"]["expected"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(line, expected_line(&repo, "main"));
    let value = line
        .strip_prefix("archive_command = '")
        .and_then(|l| l.strip_suffix('\''))
        .unwrap()
        .replace("''", "'");
    set_archive_command(&c, &value);
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v:#}");
    assert_eq!(v["archive_command"]["archives_here"], true, "{v:#}");
    let seg = v["switch"]["segment"].as_str().unwrap().to_owned();
    let stored = v["switch"]["stored_as"].as_str().unwrap();
    assert!(repo.join(stored).is_file(), "{stored}");
    assert!(stored.contains(&seg), "{stored}");
    // The server agrees it archived it (on 10-14 the statistics collector publishes the
    // archiver's count a moment after the command returned: wait for it).
    let t = std::time::Instant::now();
    while c.query_one::<i64>("SELECT archived_count FROM pg_stat_archiver") < 1 {
        assert!(
            t.elapsed().as_secs() < 60,
            "the server never counted an archived file"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let got = dir.path().join("got");
    ok(
        pgsafe(&[
            "archive-get",
            "--repo",
            repo.to_str().unwrap(),
            "--cluster",
            "main",
            &seg,
            got.to_str().unwrap(),
        ]),
        "archive-get",
    );
    let size: i64 =
        c.query_one("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'");
    let unit: String =
        c.query_one("SELECT coalesce(unit, '') FROM pg_settings WHERE name = 'wal_segment_size'");
    let bytes = if unit == "8kB" { size * 8192 } else { size };
    assert_eq!(fs::metadata(&got).unwrap().len(), bytes as u64);
    // In text: the verdict.
    let conn = c.conninfo();
    let out = pgsafe(&[
        "check",
        "--repo",
        repo.to_str().unwrap(),
        "--cluster",
        "main",
        "-d",
        &conn,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK: WAL archiving of cluster main"));
}
per_major!(following_the_advice_works: 10, 13, 16, 18);

/// Removes the stored object of WAL file `name` (any compression) from `main`'s archive.
fn remove_object(repo: &Path, name: &str) {
    let dir = repo
        .join("main")
        .join("wal")
        .join(&name[..8])
        .join(&name[8..16]);
    let mut removed = 0;
    for e in fs::read_dir(&dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(name) {
            fs::remove_file(e.path()).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "{name} in {}", dir.display());
}

/// `pgsafe metrics --json` of `repo`: the archive figures of cluster `main`.
fn archive_metrics(repo: &Path) -> Value {
    let out = ok(
        pgsafe(&["metrics", "--repo", repo.to_str().unwrap(), "--json"]),
        "metrics",
    );
    json(&out)["clusters"][0]["archive"].clone()
}

fn backup_into(c: &Cluster, repo: &Path) {
    ok(
        pgsafe(&[
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--cluster",
            "main",
            "-D",
            c.data_dir().to_str().unwrap(),
            "-d",
            &c.conninfo(),
            "--progress",
            "none",
        ]),
        "backup",
    );
}

/// A gap the archiver recorded (the queue limit dropped WAL: the event archive-push writes)
/// after the newest backup is a problem for check — no restore gets past it — and counted by
/// metrics; once a new full backup starts after it, check only warns and metrics no longer
/// counts it as after the newest backup.
fn a_recorded_gap_is_reported(major: u32) {
    let c = archiving_cluster(major);
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let bin = common::bin();
    set_archive_command(
        &c,
        &format!(
            "{} archive-push --repo {} --cluster main %p",
            bin.display(),
            repo.display()
        ),
    );
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m = archive_metrics(&repo);
    assert_eq!(m["set_up"], true, "{m:#}");
    assert!(m["segments"].as_u64().unwrap() >= 1, "{m:#}");
    assert_eq!(m["gaps"]["recorded"], 0, "{m:#}");
    let prom = String::from_utf8(
        ok(
            pgsafe(&["metrics", "--repo", repo.to_str().unwrap()]),
            "metrics",
        )
        .stdout,
    )
    .unwrap();
    assert!(
        prom.contains("pgsafe_wal_archive_configured{cluster=\"main\"} 1"),
        "{prom}"
    );

    backup_into(&c, &repo);
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seg: pgsafe::WalSegment = json(&out)["switch"]["segment"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The record archive-push writes when its queue limit drops a segment (here: the one
    // just archived after the backup, as if it had been dropped: its object is removed, since
    // a recorded segment that is in the archive after all closes its gap).
    remove_object(&repo, &seg.to_string());
    let r = pgsafe::repo::Repository::open(&repo).unwrap();
    r.record_event(
        &pgsafe::storage::Ident::new("main").unwrap(),
        pgsafe::repo::EventKind::WalGap {
            timeline: seg.tli,
            first: seg,
            last: seg,
            reason: "archive queue limit".into(),
            dropped_at: "2026-12-03T21:00:00Z".into(),
            dropped_by: "db1".into(),
        },
    )
    .unwrap();
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "120s"]));
    assert_eq!(codes, ["wal_gap"], "{v:#}");
    let gap = &v["gaps"][0];
    assert_eq!(gap["source"], "recorded", "{v:#}");
    assert_eq!(gap["first"], seg.to_string());
    assert_eq!(gap["needs_new_backup"], true);
    let p = problem(&v, "wal_gap");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("archive queue limit"),
        "{p}"
    );
    assert!(p["fix"].as_str().unwrap().contains("pgsafe backup"), "{p}");
    assert!(
        !v["switch"]["stored_as"].is_null(),
        "the switch itself worked: {v:#}"
    );
    let m = archive_metrics(&repo);
    assert_eq!(m["gaps"]["recorded"], 1, "{m:#}");
    assert_eq!(m["gaps_after_newest_backup"], 1, "{m:#}");

    // A new full backup starts after the gap.
    backup_into(&c, &repo);
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["gaps"][0]["needs_new_backup"], false, "{v:#}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "wal_gap_before_backup"),
        "{v:#}"
    );
    let m = archive_metrics(&repo);
    assert_eq!(m["gaps"]["recorded"], 1, "{m:#}");
    assert_eq!(m["gaps_after_newest_backup"], 0, "{m:#}");
}
per_major!(a_recorded_gap_is_reported: 10, 16);

/// Waits (a bounded loop on the server's own statistics, not a timing assertion) until the
/// archiver has counted `n` failures.
fn wait_failures(c: &Cluster, n: i64) {
    let t = std::time::Instant::now();
    loop {
        let failed: i64 = c.query_one("SELECT failed_count FROM pg_stat_archiver");
        if failed >= n {
            return;
        }
        assert!(
            t.elapsed().as_secs() < 120,
            "PostgreSQL {}: the archiver counted {failed} failures, not {n}",
            c.major()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn codes_of(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_owned())
        .collect()
}

/// The `push-failed` events in `main`'s part of the repository.
fn failure_events(repo: &Path) -> usize {
    fs::read_dir(repo.join("main").join("events"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("-push-failed-"))
                .count()
        })
        .unwrap_or(0)
}

/// From the unlucky DBA's side: the repository goes away (unmounted, moved) while the server
/// writes WAL. archive-push cannot open it, so each failure is recorded in the server's spool
/// (pg_wal/pgsafe_archive) and the backlog it sees grows. check reads the spool (the data
/// directory is on this host): the last failed push, recorded only there; the backlog; that
/// archiving falls behind. When the repository is back, the next push writes the failure into
/// it (one event), and check shows the file archived since and nothing pending.
fn a_failing_push_is_recorded_in_the_spool_while_the_repository_is_away(major: u32) {
    let c = archiving_cluster(major);
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let bin = common::bin();
    set_archive_command(
        &c,
        &format!(
            "{} archive-push --parallel 1 --repo {} --cluster main %p",
            bin.display(),
            repo.display()
        ),
    );
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    assert!(v["last_failed_push"].is_null(), "{v:#}");
    assert_eq!(v["spool"]["pending_failures"], 0, "{v:#}");
    assert!(v["spool"]["status"]["behind_since"].is_null(), "{v:#}");

    let away = dir.path().join("repo.away");
    fs::rename(&repo, &away).unwrap();
    let mut failing = String::new();
    for i in 0..3 {
        c.execute(&format!("CREATE TABLE away_{i} (i int)"));
        let s: String = c.query_one("SELECT pg_walfile_name(pg_switch_wal())");
        if i == 0 {
            failing = s;
        }
    }
    wait_failures(&c, 3);
    // One more file wakes the archiver for another round of retries, with the backlog grown.
    c.execute("CREATE TABLE away_3 (i int)");
    c.execute("SELECT pg_switch_wal()");
    wait_failures(&c, 6);
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "5s"]));
    assert!(codes.contains(&"repository_missing".to_owned()), "{v:#}");
    let f = &v["last_failed_push"];
    assert_eq!(f["file"], failing.as_str(), "{v:#}");
    assert_eq!(f["recorded_in"], "spool", "{f:#}");
    assert_eq!(f["archived_since"], false, "{f:#}");
    assert!(f["failures"].as_u64().unwrap() >= 6, "{f:#}");
    let sp = &v["spool"];
    assert!(sp["pending_failures"].as_u64().unwrap() >= 1, "{sp:#}");
    assert!(sp["status"]["ready_files"].as_u64().unwrap() >= 4, "{sp:#}");
    assert_eq!(sp["status"]["oldest_ready"], failing.as_str(), "{sp:#}");
    assert!(sp["status"]["behind_since"].is_string(), "{sp:#}");
    let warnings = codes_of(&v, "warnings");
    for code in ["archiving_behind", "push_failed"] {
        assert!(warnings.contains(&code.to_owned()), "{code}: {v:#}");
    }
    // The same for people.
    let conn = c.conninfo();
    let out = pgsafe(&[
        "check",
        "--repo",
        repo.to_str().unwrap(),
        "--cluster",
        "main",
        "-d",
        &conn,
        "--timeout",
        "5s",
    ]);
    let t = text(&out);
    for needle in ["FALLING BEHIND", "NOT archived yet", &failing] {
        assert!(t.contains(needle), "{needle:?} not in {t}");
    }
    assert_eq!(
        failure_events(&away),
        0,
        "nothing was written into the repository"
    );

    fs::rename(&away, &repo).unwrap();
    pgsafe_testkit::wait_archived(&c);
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    let f = &v["last_failed_push"];
    assert_eq!(f["file"], failing.as_str(), "{v:#}");
    assert_eq!(f["recorded_in"], "repository", "{f:#}");
    assert_eq!(f["archived_since"], true, "{f:#}");
    assert_eq!(v["spool"]["pending_failures"], 0, "{v:#}");
    assert!(v["spool"]["status"]["behind_since"].is_null(), "{v:#}");
    assert_eq!(failure_events(&repo), 1, "one event for all the retries");
}
per_major!(a_failing_push_is_recorded_in_the_spool_while_the_repository_is_away: 10, 16);

/// WAL dropped by the queue limit (an absurdly small one, so every segment is dropped): until a
/// push reaches the repository, only the server's spool knows. check says so (a problem with
/// what to do), metrics counts the pending gaps (it reads the registered data directory's
/// spool); once archiving stores files again, the gap is in the repository (a recorded gap
/// after the newest backup) and nothing is pending.
fn dropped_wal_is_pending_in_the_spool_until_a_push_reaches_the_repository(major: u32) {
    let c = archiving_cluster(major);
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let bin = common::bin();
    let push = format!(
        "{} archive-push --repo {} --cluster main",
        bin.display(),
        repo.display()
    );
    set_archive_command(&c, &format!("{push} --archive-push-queue-max 1K %p"));
    let dropped = pgsafe_testkit::wait_archived(&c);
    let (v, codes) = problems(&check(&c, &repo, "main", &["--timeout", "5s"]));
    assert!(
        codes.contains(&"wal_dropped_unrecorded".to_owned()),
        "{v:#}"
    );
    assert!(v["spool"]["pending_gaps"].as_u64().unwrap() >= 1, "{v:#}");
    let p = problem(&v, "wal_dropped_unrecorded");
    assert!(
        p["fix"].as_str().unwrap().contains("new full backup"),
        "{p}"
    );
    let m = ok(
        pgsafe(&["metrics", "--repo", repo.to_str().unwrap(), "--json"]),
        "metrics",
    );
    let sp = &json(&m)["clusters"][0]["spool"];
    assert!(sp["pending_gaps"].as_u64().unwrap() >= 1, "{sp:#}");
    let prom = String::from_utf8(
        ok(
            pgsafe(&["metrics", "--repo", repo.to_str().unwrap()]),
            "metrics",
        )
        .stdout,
    )
    .unwrap();
    let line = prom
        .lines()
        .find(|l| l.starts_with("pgsafe_wal_archive_pending_gaps{cluster=\"main\"}"))
        .unwrap_or_else(|| panic!("{prom}"));
    assert_ne!(line.rsplit(' ').next(), Some("0"), "{line}");

    set_archive_command(&c, &format!("{push} %p"));
    pgsafe_testkit::wait_archived(&c);
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    let v = json(&out);
    assert_eq!(v["spool"]["pending_gaps"], 0, "{v:#}");
    assert!(
        !codes_of(&v, "problems").contains(&"wal_dropped_unrecorded".to_owned()),
        "{v:#}"
    );
    let recorded: Vec<&Value> = v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["source"] == "recorded")
        .collect();
    assert!(
        recorded
            .iter()
            .any(|g| g["first"].as_str().unwrap() <= dropped.as_str()
                && dropped.as_str() <= g["last"].as_str().unwrap()),
        "{dropped} in {v:#}"
    );
    let prom = String::from_utf8(
        ok(
            pgsafe(&["metrics", "--repo", repo.to_str().unwrap()]),
            "metrics",
        )
        .stdout,
    )
    .unwrap();
    assert!(
        prom.contains("pgsafe_wal_archive_pending_gaps{cluster=\"main\"} 0"),
        "{prom}"
    );
}
per_major!(dropped_wal_is_pending_in_the_spool_until_a_push_reaches_the_repository: 10, 16);

/// A segment the queue limit dropped, whose push PostgreSQL then retries after all (a crash
/// between archive-push writing its gap record and the archiver marking the file done leaves
/// the file `.ready`: simulated by giving the status file back its `.ready` name): the retried
/// push writes the gap record into the repository and then stores the segment. The gap is
/// closed — check, info and metrics all agree there is none — instead of a false gap asking
/// for a new backup.
fn a_dropped_segment_pushed_after_all_leaves_no_gap(major: u32) {
    let c = archiving_cluster(major);
    let dir = server_owned_tempdir();
    let repo = repo_for(&c, dir.path());
    let bin = common::bin();
    let push = format!(
        "{} archive-push --repo {} --cluster main",
        bin.display(),
        repo.display()
    );
    set_archive_command(&c, &format!("{push} %p"));
    pgsafe_testkit::wait_archived(&c);
    set_archive_command(&c, &format!("{push} --archive-push-queue-max 1K %p"));
    let dropped = pgsafe_testkit::wait_archived(&c);
    let status = c.data_dir().join("pg_wal").join("archive_status");
    assert!(
        c.data_dir().join("pg_wal").join(&dropped).exists(),
        "{dropped} was recycled"
    );
    set_archive_command(&c, &format!("{push} %p"));
    fs::rename(
        status.join(format!("{dropped}.done")),
        status.join(format!("{dropped}.ready")),
    )
    .unwrap();
    pgsafe_testkit::wait_archived(&c);
    let info = ok(
        pgsafe(&[
            "info",
            "--repo",
            repo.to_str().unwrap(),
            "--cluster",
            "main",
            "--json",
        ]),
        "info",
    );
    let wal = &json(&info)["clusters"][0]["wal"];
    assert_eq!(wal["gaps"], serde_json::json!([]), "{wal:#}");
    assert_eq!(wal["problems"], serde_json::json!([]), "{wal:#}");
    // The gap record did reach the repository: it is closed by the segment, not lost.
    let events = fs::read_dir(repo.join("main").join("events"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-wal-gap-"))
        .count();
    assert_eq!(events, 1, "the dropped segment's gap record");
    let out = check(&c, &repo, "main", &["--timeout", "120s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["gaps"], serde_json::json!([]), "{v:#}");
    let m = archive_metrics(&repo);
    assert_eq!(m["gaps"]["recorded"], 0, "{m:#}");
    assert_eq!(m["gaps_after_newest_backup"], 0, "{m:#}");
}
per_major!(a_dropped_segment_pushed_after_all_leaves_no_gap: 10, 16);
