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
    // just archived after the backup, as if it had been dropped).
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
