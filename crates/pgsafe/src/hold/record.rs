//! The records of snapshot mode's run directory: a backup's ID, its state, and the record a
//! holder keeps (`<run-dir>/<id>.json`) that `status`, `stop` and doctor read.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ArchiveStatus, HoldError, ServerIdentity, TextBytes};
use crate::types::{Lsn, SystemId, TimelineId, WalSegment};

/// A backup ID: names the holder, its socket and its files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BackupId {
    type Err = HoldError;
    fn from_str(s: &str) -> Result<Self, HoldError> {
        let ok = (1..=64).contains(&s.len())
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(BackupId(s.to_owned()))
        } else {
            Err(HoldError::BadId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = HoldError;
    fn try_from(s: String) -> Result<Self, HoldError> {
        s.parse()
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Life cycle of a held backup. `Complete`, `Failed` and `Aborted` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    Starting,
    InProgress,
    Stopping,
    Complete,
    Failed,
    Aborted,
}

impl BackupState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BackupState::Complete | BackupState::Failed | BackupState::Aborted
        )
    }
}

impl std::fmt::Display for BackupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupState::Starting => "starting",
            BackupState::InProgress => "in progress",
            BackupState::Stopping => "stopping",
            BackupState::Complete => "complete",
            BackupState::Failed => "failed",
            BackupState::Aborted => "aborted",
        })
    }
}

/// Everything known about one held backup; what `status` and `stop` print.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: BackupId,
    pub state: BackupState,
    pub holder_pid: u32,
    /// Connection target without password.
    pub server: String,
    pub server_version: Option<String>,
    pub from_standby: bool,
    pub label: String,
    pub fast: bool,
    pub start_lsn: Option<Lsn>,
    pub start_tli: Option<TimelineId>,
    pub start_wal: Option<WalSegment>,
    /// Unix seconds.
    pub started_at: i64,
    pub start_duration_ms: Option<u64>,
    pub max_hold_secs: u64,
    pub result: Option<StopResult>,
    /// Why the backup is not usable (failed or aborted).
    pub failure: Option<String>,
    /// The server's system identifier (checked against an output directory's pg_control).
    #[serde(default)]
    pub system_id: Option<SystemId>,
    /// The server's `data_directory`, when the session could read it.
    #[serde(default)]
    pub data_directory: Option<String>,
    /// The port the server listens on (its `port` setting).
    #[serde(default)]
    pub port: Option<u16>,
    /// The connection as the user gave it (options and connection string, password removed),
    /// for display; `server` is the full resolved target.
    #[serde(default)]
    pub connection: Option<String>,
}

/// What the server returned at stop, and whether the WAL it needs has been archived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopResult {
    /// `backup_label` exactly as returned by the server.
    pub backup_label: TextBytes,
    /// `tablespace_map` exactly as returned; empty when there are no tablespaces.
    pub tablespace_map: TextBytes,
    pub stop_lsn: Lsn,
    pub stop_tli: TimelineId,
    /// The last WAL segment the backup needs.
    pub stop_wal: WalSegment,
    pub stopped_at: i64,
    pub stop_duration_ms: u64,
    pub archive: ArchiveStatus,
    /// With `--record-table`: where the result was inserted, or why that failed.
    #[serde(default)]
    pub recorded: Option<String>,
    /// The WAL files whose archiving makes the backup usable (stop segment, backup history
    /// file), as `pg_backup_stop(wait => true)` would wait for them.
    #[serde(default)]
    pub archive_needs: Vec<String>,
}

impl BackupRecord {
    /// Usable: complete, and the WAL is archived when that was asked for.
    pub fn is_usable(&self) -> bool {
        self.state == BackupState::Complete
            && self.result.as_ref().is_some_and(|r| r.archive.complete)
    }

    /// What an output directory is checked against.
    pub fn server_identity(&self) -> ServerIdentity {
        ServerIdentity {
            system_id: self.system_id,
            data_directory: self.data_directory.clone(),
            port: self.port,
            in_recovery: Some(self.from_standby),
        }
    }

    /// How to show the server: the connection as given when known, else the resolved target.
    pub fn shown_server(&self) -> &str {
        self.connection.as_deref().unwrap_or(&self.server)
    }
}
