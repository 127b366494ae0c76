//! The WAL archive of a repository: what `archive_command` pushes into it and `restore_command`
//! gets back out of it (README "WAL archiving").
//!
//! Layer "ops": uses [`crate::repo`] (a cluster's registration), [`crate::storage`] (write-once
//! objects, where [`crate::storage::Key::Wal`] puts them), [`crate::layout`] (the archive's file
//! names, [`ArchiveFile`], shared with the readers of archived WAL), [`crate::wal`] (page headers,
//! history files) and [`crate::codec`] (zstd and LZ4 frames); `repo` never uses it.
//!
//! Every file is checked against the cluster's registration on the way in and on the way out:
//! a segment of another cluster, of another major version, of another segment size, or whose
//! first page names another address or timeline than its file name is never stored, and a
//! stored object that fails the same checks (damaged, or planted) is never handed to
//! PostgreSQL.

use std::io;
use std::path::PathBuf;

use crate::error::{ErrorKind, HasKind};
use crate::storage::StorageError;

pub mod contents;
pub mod failure;
pub mod get;
pub mod lookahead;
pub mod prefetch;
pub mod push;
pub mod pusher;
pub mod report;
pub mod spool;
pub mod summarize;
pub mod wal_retention;

pub use crate::layout::{ArchiveFile, NameError};
pub use get::{fetch, get_to};
pub use push::{PushOptions, PushOutcome, push_file};

/// Why a WAL archive file could not be pushed or got.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Name(#[from] NameError),
    /// The file offered for archiving is not a file of the registered cluster (or not what its
    /// name says): nothing was stored.
    #[error(
        "{file} was not archived: {why}. Nothing was stored. Check that this server is the \
         cluster registered as {cluster} in the repository (its system identifier, major \
         version and WAL segment size), and that archive_command names the right cluster"
    )]
    Refused {
        file: String,
        cluster: String,
        why: String,
    },
    /// The archive already holds other content under this name.
    #[error(
        "{file} is already in the archive of {cluster} ({object}) with DIFFERENT content; the \
         stored file was left as it is and this one was not stored. Two servers are archiving \
         as one cluster: a split brain (an old primary still running after a failover), or a \
         restored copy or clone archiving into its source's archive. Stop archiving from the \
         server that should not (archive_mode, archive_command), check which one is the real \
         primary (its timeline, pg_wal/*.history); a restored copy must archive under another \
         cluster name"
    )]
    Conflict {
        file: String,
        cluster: String,
        object: String,
    },
    /// A stored object fails the checks: it is never handed out.
    #[error(
        "{object} in the archive of {cluster} cannot be used: {why}. It was not restored. The \
         stored file is damaged or was not written by this cluster's archive_command; replace it \
         from another copy of the archive (or remove it and take a new backup), then retry"
    )]
    Corrupt {
        object: String,
        cluster: String,
        why: String,
    },
    /// The file to archive could not be read.
    #[error("read {}: {source}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The restored file could not be written.
    #[error("write {}: {source}", path.display())]
    Dest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("WAL archive in the repository: {}{}", .0, storage_hint(.0))]
    Storage(#[from] StorageError),
}

/// What to do about a storage failure of archiving, where the kind says more than the error.
fn storage_hint(e: &StorageError) -> &'static str {
    match e.kind() {
        crate::storage::ErrorKind::PermissionDenied => {
            ". archive_command and restore_command run as the server's operating-system user: \
             it must be able to read the repository and write the cluster's wal folder in it \
             (and the repository must not be mounted read-only). PostgreSQL keeps the WAL and \
             retries"
        }
        crate::storage::ErrorKind::NoSpace => {
            ". Free space in the repository; PostgreSQL keeps the WAL in pg_wal (which grows) \
             and retries"
        }
        _ => "",
    }
}

impl ArchiveError {
    /// Whether this is the archive refusing a file that already exists with other content.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ArchiveError::Conflict { .. })
    }
}

impl HasKind for ArchiveError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ArchiveError::Name(_) => ErrorKind::Usage,
            ArchiveError::Refused { .. } => ErrorKind::Refused,
            ArchiveError::Conflict { .. } => ErrorKind::Conflict,
            ArchiveError::Corrupt { .. } => ErrorKind::Corrupt,
            ArchiveError::Source { source, .. } | ArchiveError::Dest { source, .. } => {
                ErrorKind::of_io(source)
            }
            ArchiveError::Storage(e) => e.error_kind(),
        }
    }
}

#[cfg(test)]
mod tests;
