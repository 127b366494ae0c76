//! Where an S3 repository is and how to reach it: `s3://BUCKET/PREFIX`, merged with settings
//! (the configuration file, flags) and the standard `AWS_*` environment variables. The
//! environment is passed in as a lookup function, so the merge is tested without touching the
//! process environment; the only IO is reading a credentials file the settings name
//! ([`super::credentials`]).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::credentials::{CredentialSource, ROLE_VARIABLES, is_variable_name, load_credentials};
use crate::storage::error::{ErrorKind, Result, StorageError};

/// Region used when none is configured (what AWS's own tools assume; S3-compatible servers
/// accept any).
pub const DEFAULT_REGION: &str = "us-east-1";

/// How long the retries of one request may take in all, unless set.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(3 * 60);

/// Access key, secret and optional session token. `Debug` never shows the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A repository in an S3 bucket, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix of the repository inside the bucket, without leading or trailing `/`; empty
    /// for the bucket's root.
    pub prefix: String,
    /// `http(s)://host[:port]` of an S3-compatible server; `None`: AWS for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// Plain HTTP to an endpoint that is not on loopback. Without it such an endpoint is
    /// refused: the requests carry signatures and the repository's content in the clear.
    pub allow_http: bool,
    /// `None`: refused at open (there is no anonymous access to a repository), unless
    /// `source` is [`CredentialSource::Instance`].
    pub credentials: Option<S3Credentials>,
    /// Where the credentials came from (for messages, and for commands that must find them
    /// again: `restore_command`, `archive_command`).
    pub source: CredentialSource,
    /// With [`CredentialSource::Instance`]: the role variables ([`ROLE_VARIABLES`]) that were
    /// set, handed to the client.
    pub role_env: Vec<(String, String)>,
    /// Longest any one request may take (a part upload included); a stalled connection fails
    /// then and is retried.
    pub request_timeout: Duration,
    /// Retries of one request stop when they have taken this long in all.
    pub retry_budget: Duration,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("credentials", &self.credentials)
            .field("source", &self.source)
            .field("request_timeout", &self.request_timeout)
            .field("retry_budget", &self.retry_budget)
            .finish()
    }
}

impl fmt::Display for S3Config {
    /// `s3://bucket/prefix`, with the endpoint where one is set: for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        if let Some(e) = &self.endpoint {
            write!(f, " at {e}")?;
        }
        Ok(())
    }
}

/// Settings that override what the URL and the environment say (from the configuration file
/// or flags); `None` leaves a value alone. `Debug` never shows the secret or the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub allow_http: Option<bool>,
    /// A key given in memory (tests, library callers); beats `credentials`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Where the key comes from when none is given in memory (`None`: the `AWS_*` variables).
    pub credentials: Option<CredentialSource>,
    /// How long the retries of one request may take in all (`None`:
    /// [`DEFAULT_RETRY_BUDGET`]).
    pub retry_budget: Option<Duration>,
}

impl S3Settings {
    /// Each setting from `self`, else from `fallback` (flags over the configuration file).
    /// The key given in memory and the credential source each count as one setting.
    pub fn or(&self, fallback: &S3Settings) -> S3Settings {
        let given = self.access_key_id.is_some() || self.secret_access_key.is_some();
        let key = if given { self } else { fallback };
        S3Settings {
            endpoint: self.endpoint.clone().or_else(|| fallback.endpoint.clone()),
            region: self.region.clone().or_else(|| fallback.region.clone()),
            path_style: self.path_style.or(fallback.path_style),
            allow_http: self.allow_http.or(fallback.allow_http),
            access_key_id: key.access_key_id.clone(),
            secret_access_key: key.secret_access_key.clone(),
            session_token: key.session_token.clone(),
            credentials: self
                .credentials
                .clone()
                .or_else(|| fallback.credentials.clone()),
            retry_budget: self.retry_budget.or(fallback.retry_budget),
        }
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == S3Settings::default()
    }

    /// Checks what can be checked without the bucket: the endpoint's form and the variable
    /// names. The message names no setting (the caller knows whether it was a flag or a key).
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(e) = &self.endpoint {
            endpoint_authority(e)?;
        }
        if let Some(r) = &self.region
            && (r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(format!(
                "{r:?} is not a region (letters, digits and '-', like eu-west-1)"
            ));
        }
        if let Some(CredentialSource::Env {
            access_key_id,
            secret_access_key,
            session_token,
        }) = &self.credentials
        {
            for n in [
                Some(access_key_id),
                Some(secret_access_key),
                session_token.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                if !is_variable_name(n) {
                    return Err(format!("{n:?} is not the name of an environment variable"));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hide(&self.secret_access_key))
            .field("session_token", &hide(&self.session_token))
            .field("credentials", &self.credentials)
            .field("retry_budget", &self.retry_budget)
            .finish()
    }
}

fn invalid(what: impl fmt::Display, why: impl Into<String>) -> StorageError {
    StorageError::new(ErrorKind::InvalidName, "use S3 location", what).with_detail(why)
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX]`; everything else has its default (the region
    /// [`DEFAULT_REGION`], AWS's endpoint, virtual-hosted style, no credentials).
    pub fn from_url(url: &str) -> Result<S3Config> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid(url, "an S3 location starts with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(|why| invalid(url, why))?;
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            for c in prefix.split('/') {
                if c.is_empty() || c == "." || c == ".." || c.chars().any(|ch| ch.is_control()) {
                    return Err(invalid(
                        url,
                        format!(
                            "the prefix {prefix:?} has an empty, '.' or '..' component or a \
                             control character"
                        ),
                    ));
                }
            }
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: DEFAULT_REGION.to_string(),
            path_style: false,
            allow_http: false,
            credentials: None,
            source: CredentialSource::AwsEnv,
            role_env: Vec::new(),
            request_timeout: Duration::from_secs(15 * 60),
            retry_budget: DEFAULT_RETRY_BUDGET,
        })
    }

    /// The configuration of `url`: the environment (`AWS_ENDPOINT_URL`, `AWS_REGION` or else
    /// `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`; `env` looks a variable up) overridden by `settings`. With an
    /// endpoint and no explicit style, path style (what S3-compatible servers expect).
    pub fn resolve(
        url: &str,
        settings: &S3Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<S3Config> {
        let mut c = S3Config::from_url(url)?;
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let pick = |s: &Option<String>, keys: &[&str]| {
            s.clone().or_else(|| keys.iter().find_map(|k| env(k)))
        };
        c.endpoint = pick(&settings.endpoint, &["AWS_ENDPOINT_URL"]);
        if let Some(r) = pick(&settings.region, &["AWS_REGION", "AWS_DEFAULT_REGION"]) {
            c.region = r;
        }
        c.path_style = settings.path_style.unwrap_or(c.endpoint.is_some());
        c.allow_http = settings.allow_http.unwrap_or(false);
        c.retry_budget = settings.retry_budget.unwrap_or(DEFAULT_RETRY_BUDGET);
        // The key, secret and token come as a set: a key from the settings is never paired
        // with a secret from the environment.
        let given = settings.access_key_id.is_some() || settings.secret_access_key.is_some();
        c.source = if given {
            CredentialSource::Given
        } else {
            settings.credentials.clone().unwrap_or_default()
        };
        let (key, secret, token) = match &c.source {
            CredentialSource::Given => (
                settings.access_key_id.clone(),
                settings.secret_access_key.clone(),
                settings.session_token.clone(),
            ),
            CredentialSource::AwsEnv => (
                env("AWS_ACCESS_KEY_ID"),
                env("AWS_SECRET_ACCESS_KEY"),
                env("AWS_SESSION_TOKEN"),
            ),
            CredentialSource::Env {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let need = |n: &str| {
                    env(n).ok_or_else(|| {
                        invalid(
                            &c,
                            format!(
                                "the variable {n}, named to hold the S3 credentials, is not set"
                            ),
                        )
                    })
                };
                (
                    Some(need(access_key_id)?),
                    Some(need(secret_access_key)?),
                    session_token.as_deref().map(need).transpose()?,
                )
            }
            CredentialSource::File { path, profile } => {
                let cr = load_credentials(path, profile.as_deref()).map_err(|why| {
                    StorageError::new(ErrorKind::PermissionDenied, "use S3 location", &c)
                        .with_detail(why)
                })?;
                (
                    Some(cr.access_key_id),
                    Some(cr.secret_access_key),
                    cr.session_token,
                )
            }
            CredentialSource::Instance => {
                c.role_env = ROLE_VARIABLES
                    .iter()
                    .filter_map(|k| Some((k.to_string(), env(k)?)))
                    .collect();
                (None, None, None)
            }
        };
        c.credentials = match (key, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token: token,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    &c,
                    format!(
                        "an access key id is set without its secret key (from {})",
                        c.source
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &c,
                    format!(
                        "a secret key is set without its access key id (from {})",
                        c.source
                    ),
                ));
            }
        };
        c.check_endpoint()?;
        Ok(c)
    }

    /// Refuses an endpoint that is not `http(s)://host[:port]`, and plain HTTP to a host not
    /// on loopback unless [`S3Config::allow_http`].
    pub fn check_endpoint(&self) -> Result<()> {
        let Some(e) = &self.endpoint else {
            return Ok(());
        };
        let (scheme, authority) = endpoint_authority(e).map_err(|why| invalid(e, why))?;
        match scheme {
            "http" if !self.allow_http && !is_loopback(authority) => Err(invalid(
                e,
                "plain HTTP would send the repository's content and request signatures in the \
                 clear; use https, or allow HTTP explicitly for this endpoint",
            )),
            _ => Ok(()),
        }
    }

    /// Things worth saying that do not stop the configuration from being used: plain HTTP
    /// allowed to a host that is not this machine.
    pub fn warnings(&self) -> Vec<String> {
        match self.endpoint.as_deref().map(endpoint_authority) {
            Some(Ok(("http", authority))) if !is_loopback(authority) => vec![format!(
                "the S3 endpoint http://{authority} is reached over plain HTTP: anyone on the \
                 network path can read the repository's content (unless it is encrypted) and \
                 replay the signed requests; use https"
            )],
            _ => Vec::new(),
        }
    }
}

/// The scheme (`http` or `https`) and `host[:port]` of an endpoint, or why it is not one.
fn endpoint_authority(e: &str) -> std::result::Result<(&str, &str), String> {
    let (scheme, rest) = e
        .split_once("://")
        .ok_or("an endpoint is http://HOST[:PORT] or https://HOST[:PORT]")?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err("an endpoint is a scheme, a host and a port, nothing else".into());
    }
    match scheme {
        "http" | "https" => Ok((scheme, authority)),
        _ => Err("the endpoint's scheme must be http or https".into()),
    }
}

/// Whether `host[:port]` names this machine (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_loopback(authority: &str) -> bool {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// S3's bucket naming rules (3–63 lowercase letters, digits, dots and hyphens, starting and
/// ending with a letter or digit).
fn check_bucket(b: &str) -> std::result::Result<(), String> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    let ends = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if (3..=63).contains(&b.len())
        && ok_chars
        && ends(b.bytes().next())
        && ends(b.bytes().last())
        && !b.contains("..")
    {
        Ok(())
    } else {
        Err(format!(
            "{b:?} is not a bucket name (3 to 63 lowercase letters, digits, '.' and '-', \
             starting and ending with a letter or digit)"
        ))
    }
}
