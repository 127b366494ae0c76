//! The config file on the command line: `--config FILE` (else `PGSAFE_CONFIG`, else
//! /etc/pgsafe/pgsafe.toml if present), read once, and merged under the flags: a flag always
//! wins, then the cluster's table, then the file's defaults, then the built-in default. The
//! parsing and the rules are the library's (`pgsafe::config`).
//!
//! The object storage flags (`--s3-*`) are global too, merged over the file's `[s3]` table
//! the same way, and over the `AWS_*` variables below both.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Args;
use pgsafe::config::{self, Config, Resolved};
use pgsafe::storage::s3::{CredentialSource, S3Config, S3Settings};

use crate::conn::ConnArgs;

/// `--config`, as main parsed it.
static FLAG: OnceLock<Option<PathBuf>> = OnceLock::new();
/// The file, read on first use (commands that take no setting from it never read it).
static LOADED: OnceLock<Option<Config>> = OnceLock::new();

/// Called once by main with the global `--config`.
pub fn set_flag(path: Option<PathBuf>) {
    let _ = FLAG.set(path);
}

/// The heading of the `--s3-*` flags in `--help`.
const S3_HEADING: &str = "Object storage (repositories at s3://BUCKET/PREFIX)";

/// How to reach a repository in object storage. Each flag beats the config file's `[s3]`
/// table, which beats the standard AWS_* variables (AWS_ENDPOINT_URL, AWS_REGION or
/// AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
///
/// There is no flag for the secret key on purpose: a command line shows in `ps` to every
/// user, and an archive_command or restore_command to every database user.
#[derive(Args, Debug, Clone, Default)]
pub struct S3Flags {
    /// The S3-compatible server, http(s)://HOST[:PORT] (default: AWS for the region).
    /// Plain http is accepted for this machine (localhost, 127.0.0.0/8, [::1]) only, unless
    /// --s3-allow-http.
    #[arg(long, global = true, value_name = "URL", help_heading = S3_HEADING)]
    pub s3_endpoint: Option<String>,
    /// The bucket's region (default: us-east-1; S3-compatible servers accept any).
    #[arg(long, global = true, value_name = "REGION", help_heading = S3_HEADING)]
    pub s3_region: Option<String>,
    /// Address the bucket as https://ENDPOINT/BUCKET/KEY rather than
    /// https://BUCKET.ENDPOINT/KEY (default: true with --s3-endpoint, false for AWS).
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", help_heading = S3_HEADING)]
    pub s3_path_style: Option<bool>,
    /// Allow plain HTTP to an endpoint that is not this machine (a warning says what it
    /// exposes: the content and replayable signed requests).
    #[arg(long, global = true, help_heading = S3_HEADING)]
    pub s3_allow_http: bool,
    /// Read the key from FILE, in the AWS credentials format ([default] with
    /// aws_access_key_id, aws_secret_access_key, optionally aws_session_token), owned by root
    /// or you and not readable by other users (e.g. root:postgres 0640, so the server's
    /// archive_command reads it too). No flag takes the key itself: a command line shows in
    /// `ps`, and an archive_command to every database user.
    #[arg(long, global = true, value_name = "FILE", help_heading = S3_HEADING)]
    pub s3_credentials_file: Option<PathBuf>,
    /// The profile to read from --s3-credentials-file (default: default).
    #[arg(long, global = true, value_name = "NAME", requires = "s3_credentials_file",
          help_heading = S3_HEADING)]
    pub s3_profile: Option<String>,
    /// Read the access key id from the environment variable NAME (with
    /// --s3-secret-access-key-env).
    #[arg(long, global = true, value_name = "NAME", requires = "s3_secret_access_key_env",
          help_heading = S3_HEADING)]
    pub s3_access_key_id_env: Option<String>,
    /// Read the secret key from the environment variable NAME.
    #[arg(long, global = true, value_name = "NAME", requires = "s3_access_key_id_env",
          help_heading = S3_HEADING)]
    pub s3_secret_access_key_env: Option<String>,
    /// Read a session token from the environment variable NAME.
    #[arg(long, global = true, value_name = "NAME", requires = "s3_access_key_id_env",
          help_heading = S3_HEADING)]
    pub s3_session_token_env: Option<String>,
    /// No key: use the machine's role (a web identity token as on EKS, the ECS container
    /// endpoint, else the EC2 instance metadata service, IMDSv2).
    #[arg(long, global = true, conflicts_with_all = ["s3_credentials_file", "s3_access_key_id_env"],
          help_heading = S3_HEADING)]
    pub s3_instance_credentials: bool,
    /// How long the retries of one request (after 5xx, SlowDown, resets, timeouts) may take in
    /// all before the command fails (default: 3m).
    #[arg(long, global = true, value_name = "DURATION", value_parser = config::parse_duration,
          help_heading = S3_HEADING)]
    pub s3_retry_budget: Option<std::time::Duration>,
}

impl S3Flags {
    /// The flags as settings (`None` where a flag is not given).
    pub fn settings(&self) -> anyhow::Result<S3Settings> {
        let credentials = if let Some(path) = &self.s3_credentials_file {
            if !path.is_absolute() {
                return Err(crate::failure::usage(format!(
                    "--s3-credentials-file {}: give an absolute path (commands pgsafe writes \
                     for the server run in its data directory)",
                    path.display()
                )));
            }
            Some(CredentialSource::File {
                path: path.clone(),
                profile: self.s3_profile.clone(),
            })
        } else if let (Some(k), Some(s)) =
            (&self.s3_access_key_id_env, &self.s3_secret_access_key_env)
        {
            Some(CredentialSource::Env {
                access_key_id: k.clone(),
                secret_access_key: s.clone(),
                session_token: self.s3_session_token_env.clone(),
            })
        } else if self.s3_instance_credentials {
            Some(CredentialSource::Instance)
        } else {
            None
        };
        let s = S3Settings {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            allow_http: self.s3_allow_http.then_some(true),
            credentials,
            retry_budget: self.s3_retry_budget,
            ..S3Settings::default()
        };
        s.check()
            .map_err(|why| crate::failure::usage(format!("the --s3-* flags: {why}")))?;
        Ok(s)
    }
}

/// The `--s3-*` flags, as main parsed them.
static S3_FLAGS: OnceLock<S3Flags> = OnceLock::new();

/// Called once by main with the global `--s3-*` flags.
pub fn set_s3_flags(flags: S3Flags) {
    let _ = S3_FLAGS.set(flags);
}

/// The object storage settings in force: the flags over the config file's `[s3]` table (the
/// `AWS_*` variables come under both when a location is resolved).
pub fn s3_settings() -> anyhow::Result<S3Settings> {
    let flags = S3_FLAGS.get().cloned().unwrap_or_default().settings()?;
    // The config file is read only when a setting may come from it.
    let file = file()?.map(|c| c.s3.clone()).unwrap_or_default();
    Ok(flags.or(&file))
}

/// The arguments that make a command pgsafe writes for the server (restore_command,
/// archive_command) reach `config` as this run does, without the server's environment: every
/// setting but the key, which stays where it is (a file, or variables the server must have).
/// With the key in variables, also what to tell the DBA.
pub fn s3_command_args(config: &S3Config) -> (Vec<String>, Option<String>) {
    let mut args = Vec::new();
    if let Some(e) = &config.endpoint {
        args.extend(["--s3-endpoint".to_owned(), e.clone()]);
    }
    args.extend(["--s3-region".to_owned(), config.region.clone()]);
    args.push(format!("--s3-path-style={}", config.path_style));
    if config.allow_http {
        args.push("--s3-allow-http".to_owned());
    }
    if config.retry_budget != pgsafe::storage::s3::DEFAULT_RETRY_BUDGET {
        args.extend([
            "--s3-retry-budget".to_owned(),
            config::format_duration(config.retry_budget),
        ]);
    }
    let mut advice = None;
    match &config.source {
        CredentialSource::File { path, profile } => {
            args.extend([
                "--s3-credentials-file".to_owned(),
                path.display().to_string(),
            ]);
            if let Some(p) = profile {
                args.extend(["--s3-profile".to_owned(), p.clone()]);
            }
        }
        CredentialSource::Instance => args.push("--s3-instance-credentials".to_owned()),
        CredentialSource::Env {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            args.extend([
                "--s3-access-key-id-env".to_owned(),
                access_key_id.clone(),
                "--s3-secret-access-key-env".to_owned(),
                secret_access_key.clone(),
            ]);
            if let Some(t) = session_token {
                args.extend(["--s3-session-token-env".to_owned(), t.clone()]);
            }
            advice = Some(format!("{access_key_id} and {secret_access_key}"));
        }
        _ => advice = Some("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_owned()),
    }
    let advice = advice.map(|vars| {
        format!(
            "the S3 key comes from the variables {vars}, which the server's environment must \
             then hold for the command to work; name a credentials file instead \
             (--s3-credentials-file, or credentials_file in the config file's [s3] table)"
        )
    });
    (args, advice)
}

/// The config file in use, if any; its warnings go to stderr once.
pub fn file() -> anyhow::Result<Option<&'static Config>> {
    if let Some(c) = LOADED.get() {
        return Ok(c.as_ref());
    }
    let flag = FLAG.get().and_then(|f| f.as_deref());
    let env = std::env::var_os(config::ENV_VAR);
    let loaded = config::find(flag, env.as_deref()).map_err(|e| {
        let hint = match (&e, flag, &env) {
            (config::ConfigError::Read { .. }, Some(_), _) => " (named by --config)",
            (config::ConfigError::Read { .. }, None, Some(_)) => " (named by PGSAFE_CONFIG)",
            _ => "",
        };
        let message = format!("{e}{hint}");
        crate::failure::advised(e, message)
    })?;
    if let Some(c) = &loaded {
        for w in &c.warnings {
            eprintln!("pgsafe: warning: {w}");
        }
    }
    Ok(LOADED.get_or_init(|| loaded).as_ref())
}

/// The settings for `cluster` (`None`: the file's defaults only).
pub fn resolved(cluster: Option<&str>) -> anyhow::Result<Resolved> {
    Ok(Resolved::for_cluster(file()?, cluster))
}

/// The data directory: `-D`, else the cluster's `pgdata`, else `PGDATA` (the file names the
/// cluster on purpose; a PGDATA left in the shell must not silently back up another one).
pub fn pgdata(flag: Option<PathBuf>, resolved: &Resolved) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p);
    }
    if let Some(p) = &resolved.pgdata {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("PGDATA").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let why = resolved.missing("the data directory", "pgdata", file()?);
    Err(crate::failure::usage(format!(
        "{why}: give -D PGDATA (or set PGDATA, or `pgdata` in the cluster's table of the \
         config file)"
    )))
}

/// The connection options with the file's connection settings under them: `-d` as a
/// connection string replaces the file's, `-d NAME`, `-h`, `-p`, `-U` replace one setting each.
pub fn conn(flags: &ConnArgs, resolved: &Resolved) -> ConnArgs {
    let mut merged = flags.clone();
    merged.dbname = resolved.connection_string(flags.dbname.as_deref());
    merged
}

/// `conn`, resolved, naming the config file when its settings are wrong.
pub fn resolve_conn(
    flags: &ConnArgs,
    resolved: &Resolved,
) -> anyhow::Result<pgsafe::conninfo::ConnSettings> {
    let merged = conn(flags, resolved);
    let from_file = !resolved.connection.is_empty();
    merged
        .resolve()
        .map_err(|e| match (&resolved.path, &resolved.cluster) {
            (Some(path), Some(name)) if from_file => e.context(format!(
                "the connection settings (with those of [cluster.{name}] in the config file {}) \
             are not valid",
                path.display()
            )),
            _ => e,
        })
}
