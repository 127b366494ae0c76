//! The stable kind of every library error, in one place.
//!
//! Callers decide on an [`ErrorKind`] — the CLI maps it to an exit code and prints it in
//! `{"error": {"kind": …}}` — instead of parsing messages, which say what happened, why and what
//! to do and may be reworded at any time. The kinds are few on purpose and their names
//! ([`ErrorKind::as_str`]) never change; a new error variant takes one of them. The matches
//! below are exhaustive (no `_` arm) for the errors of the commands, so adding a variant forces
//! a decision here.
//!
//! `StorageError::kind` and `ConnectError::kind` already name finer kinds of their own (what the
//! retry decorator and the connection report act on), so the method here is
//! [`HasKind::error_kind`].

use std::io;

use serde::{Deserialize, Serialize};

use crate::backup::BackupError;
use crate::conninfo::ConnInfoError;
use crate::conninfo::ConnectError;
use crate::control::ControlError;
use crate::copy::CopyError;
use crate::datadir::DataDirError;
use crate::doctor::DoctorError;
use crate::fsutil::FsError;
use crate::hold::HoldError;
use crate::label::LabelError;
use crate::manifest::ManifestError;
use crate::plan::PlanError;
use crate::restore::RestoreError;
use crate::restore_test::RestoreTestError;
use crate::runrecord::InvalidBackupId;
use crate::session::{ServerError, SessionError};
use crate::storage::{self, StorageError};
use crate::types::TypeError;
use crate::verify::VerifyError;

/// What kind of failure an error is, in the terms a caller (a script, a hook, backup software)
/// decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is not valid as given: an option value, options that do not go together, a
    /// path that is not what the command takes (a file for a folder, a folder that is not a
    /// data directory or not a backup). Asking differently can succeed.
    Usage,
    /// What the request names does not exist: a path, a backup ID.
    NotFound,
    /// A safety check refused to act, and nothing was changed: a target that is not empty, a
    /// server that is not the one the data directory belongs to, too little space, a location
    /// a backup must not be written to.
    Refused,
    /// The file system failed: permissions, a full disk, an IO error.
    Io,
    /// The server could not be reached, refused the login, or the session was lost.
    Connection,
    /// The server answered with an error, or cannot be backed up as it is configured (version,
    /// wal_level, privileges, replication slots).
    Server,
    /// Stored data is damaged or invalid: a backup's files, label, manifest or pg_control.
    Corrupt,
    /// Another operation holds what is needed: a backup ID in progress, a locked target, an
    /// exclusive backup running.
    Conflict,
    /// Stopped on request (Ctrl-C, SIGTERM).
    Cancelled,
    /// Something pgsafe did not expect: an answer it does not understand, a bug.
    Internal,
}

impl ErrorKind {
    /// The stable name (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Refused => "refused",
            ErrorKind::Io => "io",
            ErrorKind::Connection => "connection",
            ErrorKind::Server => "server",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind of a plain IO error: a missing file is "not found", anything else "io".
    pub fn of_io(e: &io::Error) -> ErrorKind {
        match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable [`ErrorKind`].
pub trait HasKind {
    fn error_kind(&self) -> ErrorKind;
}

impl HasKind for io::Error {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::of_io(self)
    }
}

impl HasKind for FsError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::of_io(&self.source)
    }
}

impl HasKind for StorageError {
    fn error_kind(&self) -> ErrorKind {
        use storage::ErrorKind as S;
        match self.kind() {
            S::NotFound => ErrorKind::NotFound,
            S::Conflict => ErrorKind::Conflict,
            S::InvalidName => ErrorKind::Usage,
            S::NotAnObject => ErrorKind::Refused,
            S::Transient | S::PermissionDenied | S::NoSpace | S::Other => ErrorKind::Io,
        }
    }
}

impl HasKind for ControlError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ControlError::Io { source, .. } => ErrorKind::of_io(source),
            ControlError::TooShort { .. }
            | ControlError::UnknownVersion(_)
            | ControlError::ByteOrder { .. }
            | ControlError::BadCrc { .. }
            | ControlError::FloatFormat(_)
            | ControlError::SegSize(_) => ErrorKind::Corrupt,
        }
    }
}

/// Formats read from disk: whatever fails to parse is damaged or not what it claims to be.
impl HasKind for LabelError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Corrupt
    }
}

impl HasKind for ManifestError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Corrupt
    }
}

impl HasKind for TypeError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Corrupt
    }
}

/// Connection strings, service files and PG* variables are the user's input.
impl HasKind for ConnInfoError {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Usage
    }
}

impl HasKind for ConnectError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            ConnectError::Failed { .. } => ErrorKind::Connection,
            ConnectError::Setup { .. } => ErrorKind::Server,
        }
    }
}

impl HasKind for DataDirError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            DataDirError::Missing { .. } => ErrorKind::NotFound,
            DataDirError::NotADirectory { .. } | DataDirError::NotADataDirectory { .. } => {
                ErrorKind::Usage
            }
            DataDirError::Io { source, .. } => ErrorKind::of_io(source),
            DataDirError::Version { .. } => ErrorKind::Corrupt,
            DataDirError::Control { source, .. } => source.error_kind(),
        }
    }
}

impl HasKind for PlanError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            PlanError::Io(e) => e.error_kind(),
            PlanError::NoControlFile { .. } => ErrorKind::Usage,
            PlanError::VersionDirLink { .. } => ErrorKind::Refused,
        }
    }
}

impl HasKind for CopyError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            CopyError::Io(e) => e.error_kind(),
            CopyError::Storage(e) => e.error_kind(),
            CopyError::Control { source, .. } => source.error_kind(),
            CopyError::Cancelled => ErrorKind::Cancelled,
        }
    }
}

impl HasKind for SessionError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            // An error the server sent is the server's; anything else (a closed socket, an IO
            // error) lost the session.
            SessionError::Sql { source, .. } => match source.as_db_error() {
                Some(_) => ErrorKind::Server,
                None => ErrorKind::Connection,
            },
            SessionError::UnsupportedVersion { .. }
            | SessionError::WalLevelMinimal
            | SessionError::Privilege { .. }
            | SessionError::Protocol { .. }
            | SessionError::Label(_)
            | SessionError::Value(_) => ErrorKind::Server,
            SessionError::ExclusiveBackupRunning => ErrorKind::Conflict,
            SessionError::BadLabel(_) => ErrorKind::Usage,
        }
    }
}

/// An error the server sent is the server's; anything else (a closed socket, an IO error) lost
/// the session.
impl HasKind for ServerError {
    fn error_kind(&self) -> ErrorKind {
        if self.is_server() {
            ErrorKind::Server
        } else {
            ErrorKind::Connection
        }
    }
}

impl HasKind for BackupError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            BackupError::Connect(_) | BackupError::SessionLost { .. } => ErrorKind::Connection,
            BackupError::Session(e) => e.error_kind(),
            BackupError::DataDir(e) => e.error_kind(),
            BackupError::Plan(e) => e.error_kind(),
            BackupError::Copy(e) => e.error_kind(),
            BackupError::Fs(e) => e.error_kind(),
            BackupError::Storage { source, .. } => source.error_kind(),
            BackupError::WrongPgdata { .. }
            | BackupError::TargetNotEmpty(_)
            | BackupError::NoSpace { .. }
            | BackupError::TargetInsideSource { .. } => ErrorKind::Refused,
            BackupError::NoSlots
            | BackupError::Slot { .. }
            | BackupError::Wal(_)
            | BackupError::Tablespaces(_) => ErrorKind::Server,
            // Writing the manifest and pgsafe.json pgsafe built itself.
            BackupError::Manifest(_) | BackupError::EncodeInfo(_) => ErrorKind::Internal,
            BackupError::Cancelled => ErrorKind::Cancelled,
        }
    }
}

impl HasKind for VerifyError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            VerifyError::Missing(_) => ErrorKind::NotFound,
            VerifyError::NotADirectory(_) | VerifyError::NotABackup(_) => ErrorKind::Usage,
            VerifyError::Io(e) => e.error_kind(),
            VerifyError::Cancelled => ErrorKind::Cancelled,
        }
    }
}

impl HasKind for RestoreError {
    fn error_kind(&self) -> ErrorKind {
        use RestoreError as R;
        match self {
            R::TargetNotEmpty(_)
            | R::TargetRunning { .. }
            | R::TargetUnusable { .. }
            | R::DeltaOtherSystem { .. }
            | R::DeltaNotADataDirectory { .. }
            | R::TablespaceNotEmpty { .. }
            | R::TablespaceCreatedDuringBackup { .. }
            | R::LiveTablespacesOnThisHost { .. }
            | R::OwnerNotConfirmed { .. }
            | R::NoSpace { .. }
            | R::UnconfirmedLocations(_)
            | R::NeedsChain { .. } => ErrorKind::Refused,
            R::TablespaceMapping(_)
            | R::NotACopy(_)
            | R::NoWal { .. }
            | R::Recovery(_)
            | R::Owner(_) => ErrorKind::Usage,
            // Reading the copy failed (an IO error is not damage).
            R::BadCopy(crate::restore::BadCopy::Plan(e)) => e.error_kind(),
            R::Incomplete(_)
            | R::NoLabel(_)
            | R::BadInfo(_)
            | R::BadLabel(_)
            | R::BadMap(_)
            | R::BadManifest(_)
            | R::BackupInvalid { .. }
            | R::BadCopy(_)
            | R::Damaged { .. }
            | R::ArchivedWal { .. } => ErrorKind::Corrupt,
            R::Control(e) => match e {
                ControlError::Io { source, .. } => ErrorKind::of_io(source),
                _ => ErrorKind::Corrupt,
            },
            R::Verify(e) => e.error_kind(),
            R::Fs(e) => e.error_kind(),
            R::Cancelled(_) => ErrorKind::Cancelled,
            R::TargetBusy(_) => ErrorKind::Conflict,
        }
    }
}

impl HasKind for DoctorError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            DoctorError::Missing { .. } => ErrorKind::NotFound,
            DoctorError::NotADirectory { .. } => ErrorKind::Usage,
            DoctorError::Io { source, .. } => ErrorKind::of_io(source),
            DoctorError::FixRefused(_) => ErrorKind::Refused,
            DoctorError::Fs(e) => e.error_kind(),
        }
    }
}

impl HasKind for HoldError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            HoldError::Fs(e) => e.error_kind(),
            HoldError::BadId(_) | HoldError::SocketPathTooLong(_) => ErrorKind::Usage,
            HoldError::AlreadyRunning { .. } => ErrorKind::Conflict,
            HoldError::UnknownId { .. } => ErrorKind::NotFound,
            HoldError::Spawn { source, .. } | HoldError::Channel { source, .. } => {
                ErrorKind::of_io(source)
            }
            HoldError::StartFailed { kind, .. } => *kind,
            HoldError::Connect(e) => e.error_kind(),
            HoldError::Session(e) => e.error_kind(),
            HoldError::Identify(_) => ErrorKind::Connection,
            HoldError::Protocol { .. } | HoldError::BadAnswer { .. } | HoldError::Encode { .. } => {
                ErrorKind::Internal
            }
            HoldError::Refused(_)
            | HoldError::OtherServer { .. }
            | HoldError::UnsafeOutputDir { .. } => ErrorKind::Refused,
            HoldError::BadRecord { .. } => ErrorKind::Corrupt,
            HoldError::LabelNotWritten { source, .. } | HoldError::LabelOnlyHere { source, .. } => {
                source.error_kind()
            }
            HoldError::StopFailed(e) => e.error_kind(),
            HoldError::OutputDirNotWritable { .. } => ErrorKind::Io,
        }
    }
}

impl HasKind for InvalidBackupId {
    fn error_kind(&self) -> ErrorKind {
        ErrorKind::Usage
    }
}

impl HasKind for RestoreTestError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            RestoreTestError::NotABackup { .. } | RestoreTestError::RunAs(_) => ErrorKind::Usage,
            RestoreTestError::NoBinaries { .. } => ErrorKind::NotFound,
            RestoreTestError::Scratch(_) => ErrorKind::Io,
            RestoreTestError::Fs(e) => e.error_kind(),
            RestoreTestError::Restore(e) => e.error_kind(),
            RestoreTestError::Spawn { source, .. } => ErrorKind::of_io(source),
            RestoreTestError::Cancelled => ErrorKind::Cancelled,
            RestoreTestError::Timeout { .. }
            | RestoreTestError::NoRole(_)
            | RestoreTestError::Check(_) => ErrorKind::Server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_match_serde() {
        let all = [
            ErrorKind::Usage,
            ErrorKind::NotFound,
            ErrorKind::Refused,
            ErrorKind::Io,
            ErrorKind::Connection,
            ErrorKind::Server,
            ErrorKind::Corrupt,
            ErrorKind::Conflict,
            ErrorKind::Cancelled,
            ErrorKind::Internal,
        ];
        let names: Vec<&str> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "usage",
                "not_found",
                "refused",
                "io",
                "connection",
                "server",
                "corrupt",
                "conflict",
                "cancelled",
                "internal"
            ]
        );
        for k in all {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::from(k.as_str())
            );
        }
    }

    #[test]
    fn io_not_found_is_not_found() {
        let e = FsError::new("open", "/x", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.error_kind(), ErrorKind::NotFound);
        let e = FsError::new(
            "open",
            "/x",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.error_kind(), ErrorKind::Io);
    }
}

#[cfg(test)]
mod sources;
