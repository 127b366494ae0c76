//! Why a restore's request or its source was refused: one enum per question, each reason in
//! words with the facts it names, and the error underneath kept as the source where there is
//! one. They name settings in words, never options of the command line (the CLI adds those).

use std::num::ParseIntError;
use std::path::PathBuf;

use crate::control::ControlError;
use crate::label::MapError;
use crate::manifest::ManifestError;
use crate::plan::PlanError;
use crate::types::TypeError;

/// Why a copy of a data directory (with the `backup_label` written for it) cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum BadCopy {
    #[error("PG_VERSION: {0}")]
    Version(#[source] TypeError),
    #[error("global/pg_control: {0}")]
    Control(#[source] ControlError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("PG_VERSION says {version} but global/pg_control is that of {control}")]
    VersionMismatch { version: String, control: String },
    #[error(
        "pg_tblspc/{oid} in the copy is a link to the tablespace's live location {}: its \
         contents were not copied with the backup. Copy them into the copy's pg_tblspc/{oid} \
         (e.g. cp -aL) while the backup runs",
        location.display()
    )]
    LiveTablespaceLink { oid: u32, location: PathBuf },
    #[error(
        "its global/pg_control names checkpoint {control}, older than the checkpoint {label} its \
         backup_label starts from: these files were copied before the backup started (a \
         snapshot taken before the backup's start, or the backup_label of a later backup). \
         Recovering from this label would skip the WAL in between and silently corrupt the \
         data. Use the backup_label written for this copy, or take the copy again while a \
         backup is in progress"
    )]
    OlderThanLabel {
        control: crate::types::Lsn,
        label: crate::types::Lsn,
    },
}

/// Why a backup's `backup_manifest` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BadManifest {
    #[error("{0}")]
    Parse(#[from] ManifestError),
    #[error("it does not list global/pg_control")]
    NoControlFile,
}

/// Why the tablespace locations asked for (or taken from the backup) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("tablespace {oid} ({}) is mapped twice", original.display())]
    MappedTwice { oid: u32, original: PathBuf },
    /// A mapping names a tablespace the backup does not have; `known` lists the backup's as
    /// `OID=LOCATION`.
    #[error(
        "the backup has no tablespace with {selector} (it has: {})",
        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
    )]
    NoSuchTablespace {
        selector: String,
        known: Vec<String>,
    },
    #[error(
        "tablespace {oid}: its location {:?} is not an absolute path without \".\" and \"..\" \
         components: map it to an absolute path",
        location.display()
    )]
    NotAbsolute { oid: u32, location: PathBuf },
    #[error(
        "tablespace {oid}: location {} overlaps the {what} {} (resolved: {} and {})",
        location.display(), other.display(), resolved.display(), other_resolved.display()
    )]
    Overlaps {
        oid: u32,
        location: PathBuf,
        /// "target data directory" or "backup".
        what: &'static str,
        other: PathBuf,
        resolved: PathBuf,
        other_resolved: PathBuf,
    },
    #[error("two tablespaces would be restored into {}", location.display())]
    SameLocation { location: PathBuf },
    /// The restored `tablespace_map` cannot be written for these locations.
    #[error("{0}")]
    Map(#[from] MapError),
}

/// Why the owner the restored files are to get cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "running as root, and the backup does not record the owner of its data directory: name \
         the user the server runs as (e.g. postgres)"
    )]
    NotRecorded,
    #[error(
        "{uid}:{gid} is not an owner: 4294967295 means \"leave unchanged\" to chown(2); name the \
         user the server runs as (e.g. postgres)"
    )]
    NoChangeIds { uid: u32, gid: u32 },
    #[error(
        "{spec}: 4294967295 is not an owner: it means \"leave unchanged\" to chown(2), so the \
         files would stay root's; name the user the server runs as (e.g. postgres)"
    )]
    NoChangeSpec { spec: String },
    #[error(
        "the files would belong to root, but PostgreSQL refuses to run as root: name the user \
         the server runs as (e.g. postgres)"
    )]
    Root,
    #[error(
        "only root can give the restored files to another user (uid {uid}); run as that user or \
         as root"
    )]
    OtherUser { uid: u32 },
    #[error("{id} is not a user ID: {source}")]
    BadUid {
        id: String,
        #[source]
        source: ParseIntError,
    },
    #[error("{id} is not a group ID: {source}")]
    BadGid {
        id: String,
        #[source]
        source: ParseIntError,
    },
    #[error("no user named {0:?}")]
    NoUser(String),
    #[error("no group named {0:?}")]
    NoGroup(String),
    #[error("user ID {0} has no entry: give the group too (UID:GID)")]
    NoGroupForUid(String),
}
