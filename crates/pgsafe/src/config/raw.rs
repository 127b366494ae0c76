//! The config file as TOML sees it (serde, unknown keys refused), and its conversion to and from
//! the validated [`Config`]. Values are checked while they are read, so an error carries the
//! value's position.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{
    ClusterConfig, Config, ConfigError, RepoLocation, Settings, absolute_path, format_duration,
    parse_duration, parse_rate,
};
use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::conninfo::{ConnOptions, parse_conninfo};
use crate::storage::s3::{CredentialSource, S3Settings};

/// Advice given wherever a password is found.
const PASSWORD_ADVICE: &str = "a password does not belong in the config file (every run reads \
    it, and it is often readable by others): put it in the password file, ~/.pgpass of the user \
    running pgsafe or the file PGPASSFILE (or `passfile`) names, mode 0600";

/// A string or an integer (TOML `port = 5432` and `port = "5432"` alike), kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(if v { "1" } else { "0" }.into()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// `password = …`: always an error, with the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Password {}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Password, D::Error> {
        Err(de::Error::custom(format!(
            "`password` is refused: {PASSWORD_ADVICE}"
        )))
    }
}

impl Serialize for Password {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        match *self {}
    }
}

/// A key or secret of object storage in the config file: always an error, with the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Secret {}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Secret, D::Error> {
        Err(de::Error::custom(
            "an S3 key is refused in the config file (every run reads it, it is often \
             readable by others, and the archiver's command shows which file it reads): put \
             the key in a credentials file (AWS format, mode 0600 or 0640) and name it with \
             `credentials_file`, or name the variables that hold it with `access_key_id_env` \
             and `secret_access_key_env`",
        ))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        match *self {}
    }
}

/// The `[s3]` table: how to reach a repository in object storage (`repo = "s3://…"`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_style: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allow_http: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials_file: Option<PathValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_key_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_budget: Option<DurationValue>,
    // Refused (last: serde lists the expected keys in this order, and the message leaves
    // these out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_key_id: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_token: Option<Secret>,
}

impl RawS3 {
    /// The settings, or why the table does not make sense (one source of credentials at most).
    fn settings(&self) -> Result<S3Settings, String> {
        let file = self
            .credentials_file
            .as_ref()
            .map(|p| CredentialSource::File {
                path: p.0.clone(),
                profile: self.profile.clone(),
            });
        if self.profile.is_some() && file.is_none() {
            return Err("`profile` names a profile of `credentials_file`, which is not set".into());
        }
        let env = match (
            &self.access_key_id_env,
            &self.secret_access_key_env,
            &self.session_token_env,
        ) {
            (None, None, None) => None,
            (Some(k), Some(s), t) => Some(CredentialSource::Env {
                access_key_id: k.clone(),
                secret_access_key: s.clone(),
                session_token: t.clone(),
            }),
            _ => {
                return Err(
                    "`access_key_id_env` and `secret_access_key_env` go together \
                            (`session_token_env` only with them)"
                        .into(),
                );
            }
        };
        let instance =
            (self.instance_credentials == Some(true)).then_some(CredentialSource::Instance);
        let sources: Vec<CredentialSource> = [file, env, instance].into_iter().flatten().collect();
        if sources.len() > 1 {
            return Err(
                "give one source of S3 credentials: `credentials_file`, the `*_env` \
                        variable names, or `instance_credentials = true`"
                    .into(),
            );
        }
        let s = S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            allow_http: self.allow_http,
            credentials: sources.into_iter().next(),
            retry_budget: self.retry_budget.as_ref().map(|d| d.0),
            ..S3Settings::default()
        };
        s.check()?;
        Ok(s)
    }

    fn from_settings(s: &S3Settings) -> RawS3 {
        let mut raw = RawS3 {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            path_style: s.path_style,
            allow_http: s.allow_http,
            retry_budget: s.retry_budget.map(DurationValue),
            ..RawS3::default()
        };
        match &s.credentials {
            Some(CredentialSource::File { path, profile }) => {
                raw.credentials_file = Some(PathValue(path.clone()));
                raw.profile = profile.clone();
            }
            Some(CredentialSource::Env {
                access_key_id,
                secret_access_key,
                session_token,
            }) => {
                raw.access_key_id_env = Some(access_key_id.clone());
                raw.secret_access_key_env = Some(secret_access_key.clone());
                raw.session_token_env = session_token.clone();
            }
            Some(CredentialSource::Instance) => raw.instance_credentials = Some(true),
            // The standard variables are what an empty table means; a key in memory is never
            // written.
            _ => {}
        }
        raw
    }

    fn is_empty(&self) -> bool {
        self.settings().is_ok_and(|s| s.is_empty())
    }
}

/// Deserializes through `FromStr`-like `parse`, so that a bad value is reported at its position.
macro_rules! parsed {
    ($name:ident, $ty:ty, $parse:expr, $show:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq)]
        struct $name($ty);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let t = Text::deserialize(d)?;
                let parse: fn(&str) -> Result<$ty, String> = $parse;
                parse(&t.0).map($name).map_err(de::Error::custom)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let show: fn(&$ty) -> String = $show;
                s.serialize_str(&show(&self.0))
            }
        }
    };
}

parsed!(CompressionValue, Compression, |s| s.parse(), |c| c
    .to_string());
parsed!(ChecksumValue, ChecksumAlgorithm, |s| s.parse(), |c| c
    .to_string());
parsed!(RateValue, u64, parse_rate, |r| r.to_string());
parsed!(DurationValue, std::time::Duration, parse_duration, |d| {
    format_duration(*d)
});
parsed!(PathValue, PathBuf, absolute_path, |p| p
    .to_string_lossy()
    .into_owned());
parsed!(RepoValue, RepoLocation, RepoLocation::parse, |r| r
    .to_string());
parsed!(
    ConninfoValue,
    ConnOptions,
    |s| {
        let opts = parse_conninfo(s).map_err(|e| e.to_string())?;
        if opts.get("password").is_some() {
            return Err(format!(
                "`conninfo` holds a password, which is refused: {PASSWORD_ADVICE}"
            ));
        }
        Ok(opts)
    },
    |o| o
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::conninfo::quote_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
);

/// At least 1.
fn positive<'de, D: Deserializer<'de>, T: Deserialize<'de> + PartialEq + From<u8>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let v = T::deserialize(d)?;
    if v == T::from(0) {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(Some(v))
}

/// The top-level defaults and the per-cluster overrides: one list, written out twice because
/// serde cannot flatten a struct that refuses unknown keys.
macro_rules! with_settings {
    ($(#[$m:meta])* struct $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$m])*
        struct $name {
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "positive")]
            jobs: Option<usize>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            compression: Option<CompressionValue>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            checksum: Option<ChecksumValue>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            max_rate: Option<RateValue>,
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "positive")]
            keep_full: Option<u32>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            keep_within: Option<DurationValue>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            archive_compress: Option<CompressionValue>,
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "positive")]
            archive_push_parallel: Option<usize>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            archive_push_queue_max: Option<RateValue>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            archive_get_prefetch: Option<usize>,
            // After the settings: TOML writes tables (`cluster`) after plain values.
            $($(#[$fm])* $field: $ty,)*
        }
        impl $name {
            fn settings(&self) -> Settings {
                Settings {
                    jobs: self.jobs,
                    compression: self.compression.as_ref().map(|v| v.0),
                    checksum: self.checksum.as_ref().map(|v| v.0),
                    max_rate: self.max_rate.as_ref().map(|v| v.0),
                    keep_full: self.keep_full,
                    keep_within: self.keep_within.as_ref().map(|v| v.0),
                    archive_compress: self.archive_compress.as_ref().map(|v| v.0),
                    archive_push_parallel: self.archive_push_parallel,
                    archive_push_queue_max: self.archive_push_queue_max.as_ref().map(|v| v.0),
                    archive_get_prefetch: self.archive_get_prefetch,
                }
            }
            fn set_settings(&mut self, s: &Settings) {
                self.jobs = s.jobs;
                self.compression = s.compression.map(CompressionValue);
                self.checksum = s.checksum.map(ChecksumValue);
                self.max_rate = s.max_rate.map(RateValue);
                self.keep_full = s.keep_full;
                self.keep_within = s.keep_within.map(DurationValue);
                self.archive_compress = s.archive_compress.map(CompressionValue);
                self.archive_push_parallel = s.archive_push_parallel;
                self.archive_push_queue_max = s.archive_push_queue_max.map(RateValue);
                self.archive_get_prefetch = s.archive_get_prefetch;
            }
        }
    };
}

with_settings! {
    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct RawFile {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repo: Option<RepoValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<Password>,
        #[serde(default, skip_serializing_if = "RawS3::is_empty")]
        s3: RawS3,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        cluster: BTreeMap<String, RawCluster>,
    }
}

/// The libpq keywords a cluster table takes as keys of their own (every other one goes in
/// `conninfo`): the connection keys a DBA sets, `password` excepted.
macro_rules! connection_keys {
    ($($key:ident),* $(,)?) => {
        with_settings! {
            #[derive(Debug, Default, Deserialize, Serialize)]
            #[serde(deny_unknown_fields)]
            struct RawCluster {
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pgdata: Option<PathValue>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                conninfo: Option<ConninfoValue>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                password: Option<Password>,
                $(
                    #[serde(default, skip_serializing_if = "Option::is_none")]
                    $key: Option<Text>,
                )*
            }
        }
        impl RawCluster {
            /// The separate keys, set ones only.
            fn keys(&self) -> Vec<(&'static str, &str)> {
                let mut v = Vec::new();
                $(if let Some(t) = &self.$key { v.push((stringify!($key), t.0.as_str())); })*
                v
            }
            /// Sets the separate key `key` if it is one (else: it stays in `conninfo`).
            fn set_key(&mut self, key: &str, value: &str) -> bool {
                match key {
                    $(stringify!($key) => { self.$key = Some(Text(value.to_owned())); true })*
                    _ => false,
                }
            }
        }
    };
}

connection_keys!(
    service,
    host,
    hostaddr,
    port,
    user,
    dbname,
    passfile,
    sslmode,
    sslrootcert,
    sslcert,
    sslkey,
    sslcrl,
    sslcrldir,
    sslnegotiation,
    sslsni,
    channel_binding,
    connect_timeout,
    application_name,
    options,
    target_session_attrs,
);

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The key a `key = value` line sets, if line `line` (1-based) is one.
fn key_of_line(text: &str, line: usize) -> Option<&str> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
    bare.then_some(key)
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |offset: Option<usize>, mut message: String| {
        let (line, column) = offset.map(|o| line_column(text, o)).unzip();
        // Name the key of the line (never its value: it could be a password).
        if let Some(key) = line.and_then(|l| key_of_line(text, l))
            && !message.contains(&format!("`{key}`"))
        {
            message = format!("`{key}`: {message}");
        }
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        // serde's words for TOML's: a key, not a field; `password` is refused, not expected.
        let message = e
            .message()
            .trim()
            .replace("unknown field", "unknown key")
            .replace(", `password`", "")
            .replace(
                ", `access_key_id`, `secret_access_key`, `session_token`",
                "",
            );
        invalid(e.span().map(|s| s.start), message)
    })?;
    let mut clusters = BTreeMap::new();
    for (name, table) in &raw.cluster {
        // The name becomes the cluster's folder in a repository: the repository's rule.
        if crate::storage::Ident::new(name.as_str()).is_err() {
            return Err(invalid(
                None,
                format!(
                    "[cluster.{}]: a cluster name is 1 to 128 ASCII letters, digits, '-', '_' or \
                     '.', not starting with '.'",
                    name.escape_debug()
                ),
            ));
        }
        let mut connection = table
            .conninfo
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        for (key, value) in table.keys() {
            connection
                .set(key, value)
                .map_err(|e| invalid(None, format!("[cluster.{name}] `{key}`: {e}")))?;
        }
        clusters.insert(
            name.clone(),
            ClusterConfig {
                pgdata: table.pgdata.as_ref().map(|p| p.0.clone()),
                connection,
                settings: table.settings(),
            },
        );
    }
    let s3 = raw
        .s3
        .settings()
        .map_err(|why| invalid(None, format!("[s3]: {why}")))?;
    Ok(Config {
        path: path.to_owned(),
        s3,
        defaults: raw.settings(),
        repo: raw.repo.map(|r| r.0),
        clusters,
        warnings: Vec::new(),
    })
}

pub(super) fn to_toml(config: &Config) -> String {
    let mut raw = RawFile {
        repo: config.repo.clone().map(RepoValue),
        s3: RawS3::from_settings(&config.s3),
        ..RawFile::default()
    };
    raw.set_settings(&config.defaults);
    for (name, c) in &config.clusters {
        let mut table = RawCluster {
            pgdata: c.pgdata.clone().map(PathValue),
            ..RawCluster::default()
        };
        table.set_settings(&c.settings);
        let mut rest = ConnOptions::default();
        for (k, v) in c.connection.iter() {
            if !table.set_key(k, v) {
                // Every key ConnOptions holds is a libpq keyword, so this cannot fail.
                let _ = rest.set(k, v);
            }
        }
        if !rest.is_empty() {
            table.conninfo = Some(ConninfoValue(rest));
        }
        raw.cluster.insert(name.clone(), table);
    }
    // Serializing strings, integers and tables of them cannot fail.
    toml::to_string(&raw).unwrap_or_default()
}
