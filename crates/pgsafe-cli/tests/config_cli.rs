//! The config file from the outside: a backup driven by `--config` + `--cluster` alone, flags
//! over the file, `PGSAFE_CONFIG`, and a broken, unsafe or missing file refused with exit 2
//! naming what is wrong (and the JSON error object with `--json`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, per_major};
use serde_json::Value;

use common::{command, json, ok, refused};

/// Writes `text` as a config file (mode 0644) in `dir`.
fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// A `[cluster.NAME]` table for `c`: its data directory and how to reach it.
fn cluster_table(name: &str, c: &Cluster, extra: &str) -> String {
    format!(
        "[cluster.{name}]\npgdata = {:?}\nhost = {:?}\nport = {}\nuser = \"postgres\"\n\
         dbname = \"postgres\"\n{extra}\n",
        c.data_dir().to_str().unwrap(),
        c.socket_dir().to_str().unwrap(),
        c.port()
    )
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The backup's own record (pgsafe.json).
fn record(target: &Path) -> Value {
    serde_json::from_slice(&fs::read(target.join("pgsafe.json")).unwrap()).unwrap()
}

fn system_identifier(c: &Cluster) -> String {
    let info = json(&ok(
        common::pgsafe(&["inspect", "--json", c.data_dir().to_str().unwrap()]),
        "inspect",
    ));
    info["control"]["system_identifier"].to_string()
}

/// `--config FILE backup --cluster main --target DIR`: the data directory, the connection and
/// the settings all come from the file; a flag beats the file, the cluster's table beats the
/// defaults; PGDATA left in the environment does not beat the file's cluster.
fn backup_driven_by_the_file(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "pgsafe.toml",
        &format!(
            "compression = \"lz4\"\nchecksum = \"sha256\"\njobs = 2\n\n{}",
            cluster_table("main", &c, "compression = \"zstd:3\"")
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let t1 = dir.path().join("b1");
    // A PGDATA of another directory in the environment: the file's cluster wins over it.
    let out = run(
        &[
            "--config",
            cfg,
            "backup",
            "--cluster",
            "main",
            "--target",
            t1.to_str().unwrap(),
            "--progress",
            "none",
            "--json",
        ],
        &[("PGDATA", dir.path().to_str().unwrap())],
    );
    let summary = json(&ok(out, "backup from the config file"));
    assert_eq!(summary["exit_code"], 0, "{summary}");
    let r = record(&t1);
    assert_eq!(
        r["compression"], "zstd:3",
        "the cluster's table beats the default"
    );
    assert_eq!(r["checksum"], "sha256", "the file's default applies");
    assert_eq!(
        r["system_identifier"].to_string(),
        system_identifier(&c),
        "the file's cluster was backed up"
    );
    ok(
        common::pgsafe(&["verify", "--progress", "none", t1.to_str().unwrap()]),
        "verify",
    );

    // Flags over the file: compression and checksum from flags, the port and data directory
    // from flags too (the file's are wrong here), through PGSAFE_CONFIG.
    let wrong = write_config(
        dir.path(),
        "wrong.toml",
        "[cluster.main]\npgdata = \"/nonexistent/pgdata\"\nhost = \"/nonexistent\"\nport = 1\n\
         compression = \"zstd\"\n",
    );
    let t2 = dir.path().join("b2");
    let port = c.port().to_string();
    let out = run(
        &[
            "backup",
            "--cluster",
            "main",
            "-D",
            c.data_dir().to_str().unwrap(),
            "-h",
            c.socket_dir().to_str().unwrap(),
            "-p",
            &port,
            "-U",
            "postgres",
            "--compress",
            "none",
            "--checksum",
            "crc32c",
            "--target",
            t2.to_str().unwrap(),
            "--progress",
            "none",
        ],
        &[("PGSAFE_CONFIG", wrong.to_str().unwrap())],
    );
    ok(out, "backup with flags over the file");
    let r = record(&t2);
    assert_eq!(r["compression"], "none");
    assert_eq!(r["checksum"], "crc32c");
    // Uncompressed: PostgreSQL's own pg_verifybackup checks it (an outside oracle; the one
    // installed is 15's, which reads the manifests of 13-16).
    let verifybackup = Path::new("/usr/lib/postgresql/15/bin/pg_verifybackup");
    if (13..=16).contains(&major) {
        let out = std::process::Command::new(verifybackup)
            .args(["--no-parse-wal", t2.to_str().unwrap()])
            .output()
            .unwrap();
        ok(out, "pg_verifybackup");
    }

    // The file PGSAFE_CONFIG names is used when no --config is given: its wrong settings fail
    // the backup (so it was read), and --config beats it.
    let t3 = dir.path().join("b3");
    let out = run(
        &[
            "backup",
            "--cluster",
            "main",
            "--target",
            t3.to_str().unwrap(),
            "--progress",
            "none",
        ],
        &[("PGSAFE_CONFIG", wrong.to_str().unwrap())],
    );
    refused(&out, &["/nonexistent/.s.PGSQL.1"]);
    let out = run(
        &[
            "--config",
            cfg,
            "backup",
            "--cluster",
            "main",
            "--target",
            t3.to_str().unwrap(),
            "--progress",
            "none",
        ],
        &[("PGSAFE_CONFIG", wrong.to_str().unwrap())],
    );
    ok(out, "--config beats PGSAFE_CONFIG");
    assert_eq!(record(&t3)["compression"], "zstd:3");
}

per_major!(backup_driven_by_the_file: 10, 15, 18);

/// An unknown key: exit 2 before anything is done, the key, the file and the line named; with
/// --json the error object on stdout.
#[test]
fn an_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "pgsafe.toml",
        "repo = \"/var/lib/pgsafe\"\n\n[cluster.main]\npgdata = \"/srv/pg\"\nkeep_ful = 3\n",
    );
    let target = dir.path().join("b");
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "backup",
        "--cluster",
        "main",
        "--target",
        target.to_str().unwrap(),
    ];
    let out = common::pgsafe(&args);
    refused(&out, &["keep_ful", cfg.to_str().unwrap(), "line 5"]);
    assert!(!target.exists(), "nothing written");

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = common::pgsafe(&with_json);
    assert_eq!(out.status.code(), Some(2));
    let doc = json(&out);
    assert_eq!(doc["error"]["kind"], "usage", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown key `keep_ful`"), "{message}");
    assert_eq!(doc["error"]["exit_code"], 2);
}

/// A password in the file is refused (and not echoed); a file others can write is refused; an
/// explicit file that does not exist is an error, and PGSAFE_CONFIG="" means no file at all.
#[test]
fn unsafe_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b");
    let backup = |cfg: &Path| {
        common::pgsafe(&[
            "--config",
            cfg.to_str().unwrap(),
            "backup",
            "--cluster",
            "main",
            "--target",
            target.to_str().unwrap(),
            "--json",
        ])
    };
    let pw = write_config(
        dir.path(),
        "pw.toml",
        "[cluster.main]\npgdata = \"/srv/pg\"\npassword = \"hunter2\"\n",
    );
    let out = backup(&pw);
    let err = refused(&out, &["password", ".pgpass"]);
    assert!(!err.contains("hunter2"), "the password is shown: {err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    let open = write_config(dir.path(), "open.toml", "repo = \"/r\"\n");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o646)).unwrap();
    let out = backup(&open);
    refused(&out, &["every user can write it", "chmod o-w"]);
    assert_eq!(json(&out)["error"]["kind"], "refused");

    let missing = dir.path().join("missing.toml");
    let out = backup(&missing);
    refused(&out, &["missing.toml", "--config"]);
    assert_eq!(json(&out)["error"]["kind"], "not_found");
    let out = run(
        &[
            "backup",
            "--cluster",
            "main",
            "--target",
            target.to_str().unwrap(),
        ],
        &[("PGSAFE_CONFIG", missing.to_str().unwrap())],
    );
    refused(&out, &["missing.toml", "PGSAFE_CONFIG"]);
    assert!(!target.exists(), "nothing written");

    // No file: the cluster name alone is not enough, and the message says why.
    let out = run(
        &[
            "backup",
            "--cluster",
            "main",
            "--target",
            target.to_str().unwrap(),
        ],
        &[("PGSAFE_CONFIG", "")],
    );
    refused(&out, &["the data directory is not given", "-D PGDATA"]);
    // A file without that cluster lists the ones it has.
    let other = write_config(
        dir.path(),
        "other.toml",
        "[cluster.reports]\npgdata = \"/srv/reports\"\n",
    );
    let out = backup(&other);
    refused(&out, &["no [cluster.main]", "reports"]);
}

/// A file naming a remote repository does not stop a command that uses no repository.
#[test]
fn a_config_without_clusters_changes_nothing_for_other_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "pgsafe.toml",
        "repo = \"s3://bucket/pg\"\njobs = 1\n",
    );
    // inspect reads no config; verify does (jobs) and still answers about the folder.
    let out = common::pgsafe(&[
        "--config",
        cfg.to_str().unwrap(),
        "verify",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("config"), "{err}");
}

/// The repository workflow with the config file naming everything: `init --cluster main`,
/// `backup --cluster main` (no --target, no --repo, no -D, no connection flags), `verify
/// --cluster main` (latest) and `metrics`; `--repo` on the command line beats the file's.
fn repository_driven_by_the_file(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new().fast_unsafe(),
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let cfg = write_config(
        dir.path(),
        "pgsafe.toml",
        &format!(
            "repo = {:?}\nchecksum = \"sha256\"\n\n{}",
            repo.to_str().unwrap(),
            cluster_table("main", &c, "compression = \"lz4\"")
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let with_cfg = |args: &[&str]| {
        let mut a = vec!["--config", cfg];
        a.extend_from_slice(args);
        common::pgsafe(&a)
    };
    ok(
        with_cfg(&["init", "--cluster", "main"]),
        "init from the file",
    );
    let summary = json(&ok(
        with_cfg(&[
            "backup",
            "--cluster",
            "main",
            "--progress",
            "none",
            "--json",
        ]),
        "backup from the file into its repository",
    ));
    let id = summary["backup_id"]
        .as_str()
        .expect("a backup ID")
        .to_owned();
    let r = record(&repo.join("main/backups").join(&id));
    assert_eq!(r["compression"], "lz4", "the cluster's table");
    assert_eq!(r["checksum"], "sha256", "the file's default");
    assert_eq!(r["system_identifier"].to_string(), system_identifier(&c));
    let v = json(&ok(
        with_cfg(&[
            "verify",
            "--cluster",
            "main",
            "--progress",
            "none",
            "--json",
        ]),
        "verify latest from the file",
    ));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    let m = json(&ok(
        with_cfg(&["metrics", "--json"]),
        "metrics from the file",
    ));
    assert_eq!(m["clusters"][0]["last_good"]["id"], id.as_str());

    // --repo beats the file's repository.
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let out = with_cfg(&[
        "backup",
        "--cluster",
        "main",
        "--repo",
        elsewhere.to_str().unwrap(),
        "--progress",
        "none",
    ]);
    refused(&out, &["elsewhere", "not a pgsafe repository"]);
}

per_major!(repository_driven_by_the_file: 12, 17);
