//! Why a restore test could not run: the user the server would run as, the scratch folder, the
//! login, the checks. Each reason in words, the error underneath kept as the source.

use std::io;
use std::path::PathBuf;

use crate::info::InfoError;
use crate::session::ServerError;

/// Why the backup's `pgsafe.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableInfo {
    #[error("{0}")]
    Open(#[from] crate::fsutil::FsError),
    #[error("{0}")]
    Read(#[from] crate::storage::StorageError),
    #[error("pgsafe.json is missing")]
    Missing,
    #[error("{0}")]
    Parse(#[from] InfoError),
}

/// Why the user the restored server would run as cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error(
        "only root can run the server as another user ({asked}); the server runs as the current \
         user {current}"
    )]
    OnlyRoot { asked: String, current: String },
    #[error("there is no user {0:?} on this host")]
    NoUser(String),
    #[error(
        "the backup does not record who owned the data directory; name the user the server runs \
         as (running as root, PostgreSQL refuses to start as root)"
    )]
    NotRecorded,
    #[error(
        "the data directory belonged to {user} (uid {uid}), who does not exist here under that \
         name; name the user the server runs as"
    )]
    RecordedUserMissing { user: String, uid: u32 },
    #[error(
        "{0} is root: PostgreSQL does not run as root, and neither does a restore test; name an \
         unprivileged user"
    )]
    Root(String),
    #[error("{}: {source}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} belongs to uid {uid}, who could have changed the owner the backup records ({user}); \
         name the user the server runs as",
        path.display()
    )]
    OwnedByOther {
        path: PathBuf,
        uid: u32,
        user: String,
    },
    #[error(
        "{} is writable by other users (mode {mode:o}), who could have changed the owner the \
         backup records ({user}); name the user the server runs as",
        path.display()
    )]
    WritableByOthers {
        path: PathBuf,
        mode: u32,
        user: String,
    },
}

/// Why the scratch folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error(
        "the server runs as {user}, who cannot enter {} (mode {mode:o}): choose a scratch folder \
         that user can reach",
        dir.display()
    )]
    Unreachable {
        user: String,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "the socket path {} would be longer than a Unix socket path can be (107 bytes): choose \
         a scratch folder with a shorter path",
        socket.display()
    )]
    SocketPathTooLong { socket: PathBuf },
}

/// A role the restored server refused to log in.
#[derive(Debug, thiserror::Error)]
#[error("{role}: {source}")]
pub struct RoleRefused {
    pub role: String,
    #[source]
    pub source: ServerError,
}

/// The roles tried, each with the server's refusal.
#[derive(Debug)]
pub struct RolesRefused(pub Vec<RoleRefused>);

impl std::fmt::Display for RolesRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Why the checks of the restored server could not run (not a finding of them).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: ServerError,
    },
    #[error("amcheck is not installed in database {db}")]
    NotInstalled { db: String },
    #[error("cancelled")]
    Cancelled,
}
