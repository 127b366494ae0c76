//! The records of snapshot mode's run directory, shared by the commands that write them
//! (`start`/`stop`, in `hold`) and those that only read them (`doctor`, which looks for a held
//! backup that explains a `backup_label`): where the run directory is by default, a backup's ID,
//! its state, and the record a holder keeps (`<run-dir>/<id>.json`).

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::session::ArchiveStatus;
use crate::textbytes::TextBytes;
use crate::types::{Lsn, SystemId, TimelineId, WalSegment};

/// The default run directory of `uid`: `.pgsafe/run` in its home directory as the password
/// database gives it (not `$HOME`, which su and sudo may keep from the caller), when that
/// directory exists and belongs to `uid`; else `/tmp/pgsafe-<uid>`. Nothing here comes from
/// the login session (`XDG_RUNTIME_DIR` exists for SSH logins, not under cron, su or a
/// backup agent), so every way of running as one user finds the same holders.
pub fn default_run_dir_for(uid: u32) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir)
        .filter(|d| d.is_absolute() && d != Path::new("/"))
        .filter(|d| fs::metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == uid));
    match home {
        Some(h) => h.join(".pgsafe").join("run"),
        None => PathBuf::from(format!("/tmp/pgsafe-{uid}")),
    }
}

/// What is known about the server whose backup label is to be written.
#[derive(Debug, Clone, Default)]
pub struct ServerIdentity {
    pub system_id: Option<SystemId>,
    /// The server's `data_directory` setting, when the session could read it.
    pub data_directory: Option<String>,
    /// The server's `port` setting.
    pub port: Option<u16>,
    /// Whether the server is a standby.
    pub in_recovery: Option<bool>,
}

/// A string that is not a valid [`BackupId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid backup ID {0:?}: use 1–64 letters, digits, '.', '_' or '-' (not starting with '.')"
)]
pub struct InvalidBackupId(pub String);

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
    type Err = InvalidBackupId;
    fn from_str(s: &str) -> Result<Self, InvalidBackupId> {
        let ok = (1..=64).contains(&s.len())
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(BackupId(s.to_owned()))
        } else {
            Err(InvalidBackupId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = InvalidBackupId;
    fn try_from(s: String) -> Result<Self, InvalidBackupId> {
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
