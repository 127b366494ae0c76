//! Typed keys: what an object is (a backup's file, a WAL file, a catalog event, a lease, a
//! cluster's registration), turned into an object name here and nowhere else.
//!
//! A plain backup folder (`pgsafe backup --target DIR`) is a backend whose root is the backup:
//! its files are named exactly as in PGDATA so the folder stays what pg_verifybackup reads. In
//! a repository, the marker `pgsafe-repo.json` lies at the root and objects are grouped by
//! cluster: `<cluster>/cluster.json`,
//! `<cluster>/backups/<id>/…`, `<cluster>/wal/<timeline>/…`, `<cluster>/events/…`,
//! `<cluster>/leases/…`.

use std::fmt;

use super::error::{ErrorKind, Result, StorageError};
use super::name::ObjectName;
use crate::plan::RelPath;
use crate::types::TimelineId;

/// A single name component chosen by pgsafe or the operator (a cluster's name, a backup ID, a
/// lease's holder): ASCII letters, digits, `-`, `_`, `.`, not starting with `.`, at most 128
/// bytes. Narrower than an object name so it can never add a component or a hidden file.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

impl Ident {
    pub fn new(s: impl Into<String>) -> Result<Ident> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(
                StorageError::new(ErrorKind::InvalidName, "use name", s.escape_debug())
                    .with_detail(
                        "names of clusters, backups and leases are 1 to 128 ASCII letters, \
                         digits, '-', '_' or '.', not starting with '.'",
                    ),
            );
        }
        Ok(Ident(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// Where a backup's files lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupAt<'a> {
    /// At the backend's root: a plain backup folder.
    Root,
    /// In a repository: `<cluster>/backups/<backup>/`.
    Repo {
        cluster: &'a Ident,
        backup: &'a Ident,
    },
}

/// The kinds of objects, for listing all objects of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    BackupFile,
    Wal,
    Event,
    Lease,
    Cluster,
    Repository,
}

/// One object, typed.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// A file of a backup: a data file (its path relative to PGDATA, tablespaces under
    /// `pg_tblspc/<oid>/`), `backup_label`, `backup_manifest`, `pgsafe.json`…
    BackupFile { at: BackupAt<'a>, path: &'a RelPath },
    /// A file of the WAL archive on `timeline`: a segment (`<24 hex>` with an optional suffix
    /// such as `.partial` or `.zst`), a backup history file, or the timeline's history file.
    Wal {
        cluster: &'a Ident,
        timeline: TimelineId,
        file: &'a Ident,
    },
    /// An immutable catalog event (`<time>-<kind>`, stored as `.json`).
    Event { cluster: &'a Ident, name: &'a Ident },
    /// A lease (a lock with an expiry) of `kind` held by `holder`.
    Lease {
        cluster: &'a Ident,
        kind: &'a Ident,
        holder: &'a Ident,
    },
    /// A cluster's registration in a repository.
    Cluster { cluster: &'a Ident },
    /// The marker that makes a folder a repository (its format number).
    Repository,
}

impl Key<'_> {
    pub fn file_type(&self) -> FileType {
        match self {
            Key::BackupFile { .. } => FileType::BackupFile,
            Key::Wal { .. } => FileType::Wal,
            Key::Event { .. } => FileType::Event,
            Key::Lease { .. } => FileType::Lease,
            Key::Cluster { .. } => FileType::Cluster,
            Key::Repository => FileType::Repository,
        }
    }

    /// The object name.
    pub fn name(&self) -> Result<ObjectName> {
        match *self {
            Key::BackupFile {
                at: BackupAt::Root,
                path,
            } => ObjectName::from_rel_path(path),
            Key::BackupFile {
                at: BackupAt::Repo { cluster, backup },
                path,
            } => ObjectName::new(format!("{cluster}/backups/{backup}"))?.join(path.as_bytes()),
            Key::Wal {
                cluster,
                timeline,
                file,
            } => {
                let f = file.as_str();
                if !f.starts_with(&timeline.hex()) {
                    return Err(
                        StorageError::new(ErrorKind::InvalidName, "name WAL file", f).with_detail(
                            format!(
                                "a WAL file of timeline {timeline} starts with {}",
                                timeline.hex()
                            ),
                        ),
                    );
                }
                // Segments are spread over one folder per 4 GiB of WAL (the name's second 8
                // hex digits, PostgreSQL's "log" number; see XLogFileName in
                // src/include/access/xlog_internal.h) so no folder grows without bound.
                let dir = wal_dir(cluster, timeline);
                match f.get(8..16) {
                    Some(log)
                        if f.len() >= 24 && f[..24].bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        ObjectName::new(format!("{dir}/{log}/{f}"))
                    }
                    _ => ObjectName::new(format!("{dir}/{f}")),
                }
            }
            Key::Event { cluster, name } => {
                ObjectName::new(format!("{cluster}/events/{name}.json"))
            }
            Key::Lease {
                cluster,
                kind,
                holder,
            } => ObjectName::new(format!("{cluster}/leases/{kind}-{holder}.json")),
            Key::Cluster { cluster } => ObjectName::new(format!("{cluster}/cluster.json")),
            Key::Repository => ObjectName::new(REPOSITORY_MARKER),
        }
    }
}

/// The repository marker's name, at the root.
pub const REPOSITORY_MARKER: &str = "pgsafe-repo.json";

fn wal_dir(cluster: &Ident, timeline: TimelineId) -> String {
    format!("{cluster}/wal/{}", timeline.hex())
}

/// The prefix under which a cluster's objects of one kind lie in a repository (for
/// [`super::Backend::list`]); `None` for [`FileType::Cluster`] and [`FileType::Repository`],
/// single objects.
pub fn repo_prefix(cluster: &Ident, ty: FileType) -> Option<ObjectName> {
    let sub = match ty {
        FileType::BackupFile => "backups",
        FileType::Wal => "wal",
        FileType::Event => "events",
        FileType::Lease => "leases",
        FileType::Cluster | FileType::Repository => return None,
    };
    ObjectName::new(format!("{cluster}/{sub}")).ok()
}

/// The prefix of one backup's files in a repository.
pub fn backup_prefix(cluster: &Ident, backup: &Ident) -> Result<ObjectName> {
    ObjectName::new(format!("{cluster}/backups/{backup}"))
}

// In documents (a lease's holder, an event's backup) an ident is a string, checked when read.
impl serde::Serialize for Ident {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Ident {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ident::new(s).map_err(serde::de::Error::custom)
    }
}
