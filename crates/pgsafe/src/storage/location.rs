//! Where a repository is: a local folder or a prefix in an object store (`s3://bucket/prefix`),
//! as the operator writes it in the configuration or on the command line, and the storage
//! backend that reaches it.
//!
//! A location is shown in messages without secrets (credentials never are part of it: they
//! come from the settings or the environment).

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ErrorKind, Result, StorageError};
use super::s3::{S3Backend, S3Config, S3Settings};
use super::{Backend, LocalBackend};

/// The scheme of an S3-compatible object store location.
pub const S3_SCHEME: &str = "s3://";

/// Where a repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A folder on this host.
    Local(PathBuf),
    /// A prefix of an S3-compatible bucket (`s3://bucket/prefix`), with how to reach it.
    S3(Box<S3Config>),
    /// Storage the caller opened itself (an in-memory backend in tests), named for messages;
    /// never parsed from a setting, and [`Location::open`] cannot reopen it.
    Opened(String),
}

/// Why a location cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("{location} is not a valid location: {why}")]
    Invalid { location: String, why: String },
}

impl crate::error::HasKind for LocationError {
    fn error_kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Usage
    }
}

/// Whether `s` names object storage (`s3://…`, the scheme in any case) rather than a local
/// path: such a name is never made absolute or joined to a folder.
pub fn is_url(s: &str) -> bool {
    s.get(..S3_SCHEME.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(S3_SCHEME))
}

impl Location {
    /// `s3://…` is an object store (reached as the `AWS_*` environment variables say);
    /// anything else a local path.
    pub fn parse(s: &str) -> std::result::Result<Location, LocationError> {
        Location::parse_with(s, &S3Settings::default(), |k| std::env::var(k).ok())
    }

    /// As [`Location::parse`], an object store reached as `settings` (the configuration file,
    /// flags) say over the environment `env` looks up ([`S3Config::resolve`]).
    pub fn parse_with(
        s: &str,
        settings: &S3Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Location, LocationError> {
        if is_url(s) {
            let url = format!("{S3_SCHEME}{}", &s[S3_SCHEME.len()..]);
            return S3Config::resolve(&url, settings, env)
                .map(|c| Location::S3(Box::new(c)))
                .map_err(|e| LocationError::Invalid {
                    location: s.to_owned(),
                    why: e.to_string(),
                });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return Err(LocationError::Invalid {
                    location: s.to_owned(),
                    why: format!(
                        "{scheme}:// storage is not supported; a repository is a folder or an                          S3-compatible bucket ({S3_SCHEME}bucket/prefix)"
                    ),
                });
            }
        }
        if s.is_empty() {
            return Err(LocationError::Invalid {
                location: String::new(),
                why: "it is empty".into(),
            });
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// As [`Location::parse`], for a command-line argument or a setting read as a path (a
    /// local path need not be UTF-8; an object store location must be).
    pub fn parse_os(s: &OsStr) -> std::result::Result<Location, LocationError> {
        match s.to_str() {
            Some(s) => Location::parse(s),
            None if s.is_empty() => Location::parse(""),
            None => Ok(Location::Local(PathBuf::from(s))),
        }
    }

    /// The folder, for a local location.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Opened(_) | Location::S3(_) => None,
        }
    }

    /// Whether objects are local files (kernel copies, folders, links to refuse).
    pub fn is_local(&self) -> bool {
        self.local_path().is_some()
    }

    /// The backend of an existing location (a missing folder: [`ErrorKind::NotFound`]).
    pub fn open(&self) -> Result<Arc<dyn Backend>> {
        match self {
            Location::Local(p) => Ok(Arc::new(LocalBackend::open(p)?)),
            Location::S3(c) => Ok(Arc::new(S3Backend::open(c)?)),
            Location::Opened(name) => Err(not_reopened(name)),
        }
    }

    /// The backend of the location, creating a missing folder (object stores: as
    /// [`Location::open`]; the bucket must exist).
    pub fn create(&self) -> Result<Arc<dyn Backend>> {
        match self {
            Location::Local(p) => Ok(Arc::new(LocalBackend::create(p)?)),
            // The bucket must exist: pgsafe never creates one.
            Location::S3(c) => Ok(Arc::new(S3Backend::open(c)?)),
            Location::Opened(name) => Err(not_reopened(name)),
        }
    }

    /// `rel` (a `/`-separated name below the location; empty: the location) for messages.
    pub fn show(&self, rel: &str) -> String {
        self.shown_path(rel).display().to_string()
    }

    /// `rel` below the location (empty: the location) as a path, for messages and reports
    /// that take paths (an object store location as its URL).
    pub fn shown_path(&self, rel: &str) -> PathBuf {
        match self {
            Location::Local(p) if rel.is_empty() => p.clone(),
            Location::Local(p) => p.join(rel),
            Location::S3(c) => {
                let mut url = format!("{S3_SCHEME}{}", c.bucket);
                for part in [c.prefix.as_str(), rel] {
                    if !part.is_empty() {
                        url.push('/');
                        url.push_str(part);
                    }
                }
                PathBuf::from(url)
            }
            Location::Opened(name) if rel.is_empty() => PathBuf::from(name),
            Location::Opened(name) => PathBuf::from(format!("{name}/{rel}")),
        }
    }

    /// Whether the location is a local folder that does not exist or is empty (where a new
    /// repository may be created). Object stores: `None` (the caller lists the objects).
    pub fn local_is_empty(&self) -> Option<std::io::Result<bool>> {
        let p = self.local_path()?;
        Some(match std::fs::read_dir(p) {
            Ok(mut rd) => Ok(rd.next().is_none()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        })
    }
}

fn not_reopened(name: &str) -> StorageError {
    StorageError::new(ErrorKind::Other, "open", name)
        .with_detail("storage opened by its caller cannot be opened again by name")
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::Local(p.to_owned())
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::Local(p.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::Local(p)
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Location {
        l.clone()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(_) => write!(f, "{}", self.shown_path("").display()),
            Location::Opened(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_are_local_and_s3_urls_are_buckets() {
        assert_eq!(
            Location::parse("/srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            Location::parse("relative/repo").unwrap().to_string(),
            "relative/repo"
        );
        let env = |k: &str| (k == "AWS_REGION").then(|| "eu-west-1".to_owned());
        let s3 = Location::parse_with("S3://bucket/p/q/", &S3Settings::default(), env).unwrap();
        assert!(!s3.is_local());
        assert_eq!(s3.to_string(), "s3://bucket/p/q");
        assert_eq!(s3.show("main/wal"), "s3://bucket/p/q/main/wal");
        match &s3 {
            Location::S3(c) => assert_eq!(
                (c.bucket.as_str(), c.region.as_str()),
                ("bucket", "eu-west-1")
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Location::parse_with("s3://Bad_Bucket", &S3Settings::default(), |_| None),
            Err(LocationError::Invalid { .. })
        ));
        assert!(matches!(
            Location::parse("gs://bucket"),
            Err(LocationError::Invalid { .. })
        ));
        assert!(matches!(
            Location::parse(""),
            Err(LocationError::Invalid { .. })
        ));
        use std::os::unix::ffi::OsStrExt;
        let odd = OsStr::from_bytes(b"/srv/\xff");
        assert_eq!(
            Location::parse_os(odd).unwrap().local_path().unwrap(),
            Path::new(odd)
        );
    }
}
