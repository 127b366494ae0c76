//! Repositories in object storage (s3s-fs, a real S3 server on loopback that checks SigV4
//! signatures) through the real binary.
//!
//! - `settings_reach_the_bucket` (16): how to reach the bucket comes from the `--s3-*` flags,
//!   else the config file's `[s3]` table, else the `AWS_*` variables, per setting; the key from a
//!   credentials file (refused when every user can read it), from variables the settings name,
//!   or from `AWS_*`; a key in the config file is refused and never echoed; no key at all is an
//!   error that says where one can come from.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgsafe_testkit::s3::{S3Kind, S3Server};
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, per_major, server_owned_tempdir, server_user,
};
use tempfile::TempDir;

use common::{json, ok, refused, text};

const CLUSTER: &str = "main";

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
        fs::write(
            &config,
            format!(
                "repo = \"{}\"\n\n[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
                 credentials_file = \"{}\"\n",
                s3.url(prefix),
                s3.endpoint(),
                creds.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        S3Rig {
            s3,
            scratch,
            creds,
            config,
        }
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
