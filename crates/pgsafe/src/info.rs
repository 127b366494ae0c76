//! The metadata pgsafe writes about a backup, as pure formats (no IO): `pgsafe.json`
//! ([`BackupInfo`], the completion marker, see [`crate::layout`]) and the restore marker a
//! restore leaves in the restored PGDATA ([`RestoreMarker`], read by `pgsafe doctor`).
//!
//! Both carry a format number. A field added later has `#[serde(default)]` so that every older
//! document still reads; a document of a newer format than this pgsafe writes is refused (it may
//! promise something this version cannot check).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::page::PageChecksumReport;
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize, WalSegment};

#[cfg(test)]
mod tests;

/// Version of the `pgsafe.json` format of a differential or incremental backup, and the newest
/// this pgsafe reads. Such a backup is not restorable on its own: a pgsafe that does not know
/// chains (format 1 only) must refuse it rather than restore a data directory with holes.
pub const INFO_FORMAT: u32 = 2;
/// Version written for a full backup: older pgsafe versions still read it.
pub const INFO_FORMAT_FULL: u32 = 1;
/// Version of the restore marker format this pgsafe writes (and the newest it reads).
pub const RESTORE_MARKER_FORMAT: u32 = 1;

/// Why a `pgsafe.json` or restore marker cannot be read (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    // Not transparent: the JSON error stays the source.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "format {found} is newer than this pgsafe reads (up to {supported}): read it with the \
         pgsafe version that wrote it, or a newer one"
    )]
    NewerFormat { found: u32, supported: u32 },
}

/// `pgsafe.json`: everything about a complete backup. Its presence marks the backup complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupInfo {
    pub format: u32,
    pub pgsafe_version: String,
    pub label: String,
    pub system_identifier: SystemId,
    pub server_version: PgVersion,
    pub from_standby: bool,
    pub start_lsn: Lsn,
    pub start_tli: TimelineId,
    pub start_wal: WalSegment,
    pub checkpoint_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub stop_tli: TimelineId,
    pub stop_wal: WalSegment,
    pub wal_segment_size: WalSegSize,
    pub data_checksums: bool,
    pub compression: Compression,
    pub checksum: ChecksumAlgorithm,
    pub wal: WalInfo,
    /// Tablespaces: OID and where they were (their files are inside the backup).
    pub tablespaces: Vec<TablespaceInfo>,
    pub files: u64,
    /// Uncompressed bytes of the data files.
    pub bytes: u64,
    /// Bytes on disk of the data files.
    pub stored_bytes: u64,
    pub vanished_files: u64,
    pub shrunk_files: u64,
    pub started_at: i64,
    pub finished_at: i64,
    /// The server's clock right after the backup stopped (RFC 3339, microseconds; absent in
    /// backups of pgsafe before it was recorded): every transaction ended before the backup's
    /// stop point ended before this time, so recovery from this backup reaches any time target
    /// at or after it (restore/select.rs). `finished_at` is pgsafe's clock, in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_time: Option<String>,
    pub duration_secs: f64,
    pub copy_secs: f64,
    /// Uncompressed MiB per second over the copy phase.
    pub copy_mib_per_sec: f64,
    /// Owner of PGDATA when the backup was taken: a restore run as root gives the restored
    /// files to this owner (absent in backups of pgsafe before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgdata_owner: Option<FileOwner>,
    /// Permission bits of PGDATA (0700, or 0750 with group access): a restore keeps group read
    /// access when PGDATA had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgdata_mode: Option<u32>,
    /// Tablespaces created or dropped while the backup ran (compared in the backup's session
    /// before the start and after the stop): a restore refuses a backup with a created one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespace_changes: Vec<TablespaceChange>,
    /// Page checksums checked during the copy (absent: the cluster has no data checksums, the
    /// check was turned off, or pgsafe predates it). Non-empty `corrupt`: the SOURCE is corrupt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_checksums: Option<PageChecksumReport>,
    /// The backed-up PGDATA (absolute): a restore on the same host finds the live server's
    /// tablespaces there that the backup does not have (see `restore/isolation.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pgdata: Option<crate::textbytes::TextBytes>,
    /// Every directory of the backup (PGDATA-relative, `pg_tblspc/<oid>/…` for tablespaces,
    /// parents first), empty ones included (`pg_notify`, `pg_wal/archive_status`…): object
    /// storage has no folders, so a restore makes them from this list. Absent in backups of
    /// older pgsafe versions (always folders, whose listing has them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<crate::textbytes::TextBytes>,
    /// Full, differential or incremental (absent: full, as every backup of older pgsafe).
    #[serde(default, skip_serializing_if = "BackupType::is_full")]
    pub backup_type: BackupType,
    /// Why the backup has its type (e.g. why it is full though an incremental was asked for);
    /// absent in backups of older pgsafe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type_reason: Option<String>,
    /// The backup this one stores the changes since (its ID in the repository): only for
    /// differential and incremental backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The parent's start LSN (the *prior start*): blocks changed at or after it are stored
    /// here. A restore checks the parent it finds against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_start_lsn: Option<Lsn>,
    /// Where the list of changed blocks came from, and why that source (differential and
    /// incremental backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_source: Option<ChangedSource>,
    /// Bytes read from the data directory's files (absent in backups of older pgsafe). A full
    /// backup or a page scan reads every byte; WAL summaries let a backup read only changed
    /// blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    /// Files stored as incremental objects (`<path>.pgsafe-incr`, see
    /// [`crate::layout::incremental`]); every other file of the manifest is stored whole.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incremental_files: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a backup holds: every file (full), or the changes since a parent (see
/// [`BackupInfo::parent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Every file whole.
    #[default]
    Full,
    /// The changes since the newest complete full backup.
    Diff,
    /// The changes since the newest complete backup of any type.
    Incr,
}

impl BackupType {
    pub fn is_full(&self) -> bool {
        *self == BackupType::Full
    }

    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

impl std::fmt::Display for BackupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackupType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(BackupType::Full),
            "diff" => Ok(BackupType::Diff),
            "incr" => Ok(BackupType::Incr),
            _ => Err(format!("unknown backup type {s:?}: use full, diff or incr")),
        }
    }
}

/// Where a differential or incremental backup's changed blocks came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedSourceKind {
    /// The server's WAL summaries (PostgreSQL 17+, `summarize_wal = on`).
    ServerSummaries,
    /// pgsafe's own summaries of the WAL archived into the repository.
    ArchiveSummaries,
    /// Every relation file read, pages newer than the prior start kept.
    PageScan,
}

impl ChangedSourceKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangedSourceKind::ServerSummaries => "server_summaries",
            ChangedSourceKind::ArchiveSummaries => "archive_summaries",
            ChangedSourceKind::PageScan => "page_scan",
        }
    }
}

/// [`ChangedSourceKind`] and why it was chosen (why a better one was not usable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedSource {
    pub kind: ChangedSourceKind,
    pub reason: String,
}

impl BackupInfo {
    /// Reads `pgsafe.json` of any format up to [`INFO_FORMAT`].
    pub fn parse(bytes: &[u8]) -> Result<BackupInfo, InfoError> {
        let info: BackupInfo = serde_json::from_slice(bytes)?;
        if info.format > INFO_FORMAT {
            return Err(InfoError::NewerFormat {
                found: info.format,
                supported: INFO_FORMAT,
            });
        }
        Ok(info)
    }

    /// Pretty JSON, as written into the backup.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

/// A file's owner: numeric IDs and, when known on the host, the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOwner {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalInfo {
    pub mode: WalMode,
    /// Segments stored in `pg_wal/` (Include), or needed from the archive (Archive, None).
    pub segments: Vec<WalSegment>,
    pub history_files: Vec<String>,
    pub bytes: u64,
    /// Where the WAL comes from, in words.
    pub source: String,
    /// CRC-32C (as a manifest writes it) of each file stored in `pg_wal/`, segments and
    /// history files, taken while copying and checked by verify (empty in backups of older
    /// pgsafe). CRC-32C, not SHA-256: it guards against damage after the copy, and anyone who
    /// can change the WAL can change this file too (see the threat model).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub crc32c: std::collections::BTreeMap<String, String>,
    /// Why the WAL is where it is: the mode asked for, or chosen by a backup into a repository
    /// from the server's archiving (absent in backups of older pgsafe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For [`WalMode::Archive`]: the repository whose WAL archive holds the WAL, when the
    /// backup waited for it there (absent: the server's own archive, opaque to pgsafe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepoWalRef>,
}

/// The repository WAL archive a backup's WAL is in: `<repo>/<cluster>/wal/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoWalRef {
    /// The repository as the backup named it (for messages: a copied folder says where its
    /// WAL is).
    pub repo: String,
    /// The cluster's name in it.
    pub cluster: String,
}

impl WalInfo {
    /// Whether the WAL is in a repository's archive (and which).
    pub fn in_repository(&self) -> Option<&RepoWalRef> {
        self.repository
            .as_ref()
            .filter(|_| self.mode == WalMode::Archive)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TablespaceInfo {
    pub oid: u32,
    /// File-system bytes, not necessarily UTF-8 (stored as hex then; see textbytes.rs).
    #[serde(with = "crate::textbytes::path_text")]
    pub original_path: PathBuf,
}

/// Where the WAL a backup needs comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalMode {
    /// Copied into the backup's `pg_wal/` (self-contained).
    #[default]
    Include,
    /// Left to the server's WAL archive; the backup waits until it is archived.
    Archive,
    /// Not handled: the user's own archive must provide it.
    None,
}

impl std::str::FromStr for WalMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "include" => Ok(WalMode::Include),
            "archive" => Ok(WalMode::Archive),
            "none" => Ok(WalMode::None),
            _ => Err(format!(
                "unknown WAL mode {s:?}: use include, archive or none"
            )),
        }
    }
}

/// What happened to a tablespace during the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TablespaceChangeKind {
    Created,
    Dropped,
}

/// A tablespace created or dropped while the backup ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceChange {
    pub oid: u32,
    pub change: TablespaceChangeKind,
    /// Its location as the server reported it (not UTF-8 bytes replaced; for messages only).
    pub location: String,
}

impl std::fmt::Display for TablespaceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.change {
            TablespaceChangeKind::Created => "created",
            TablespaceChangeKind::Dropped => "dropped",
        };
        let at = if self.location.is_empty() {
            "in place (inside pg_tblspc)".to_owned()
        } else {
            format!("at {}", self.location)
        };
        write!(
            f,
            "tablespace {} {at} was {what} during the backup",
            self.oid
        )
    }
}

/// CRC-32C of a stored WAL file, as [`WalInfo::crc32c`] records it.
pub fn crc32c_hex(bytes: &[u8]) -> String {
    hex::encode(crc32c::crc32c(bytes).to_le_bytes())
}

/// Content of [`crate::layout::RESTORE_MARKER_FILE`]: which backup this directory was restored from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMarker {
    /// [`RESTORE_MARKER_FORMAT`].
    pub format: u32,
    /// The backup's identifier (e.g. its folder name).
    pub backup_id: String,
    /// The `LABEL` of the backup, if any.
    #[serde(default)]
    pub label: Option<String>,
    /// `START WAL LOCATION` of the backup's `backup_label`.
    pub start_lsn: Lsn,
    #[serde(default)]
    pub start_timeline: Option<TimelineId>,
    #[serde(default)]
    pub checkpoint_lsn: Option<Lsn>,
    /// Where the backup ended (the stop LSN): recovery needs WAL at least up to here.
    #[serde(default)]
    pub stop_lsn: Option<Lsn>,
    #[serde(default)]
    pub stop_timeline: Option<TimelineId>,
    /// `START TIME` of the label.
    #[serde(default)]
    pub backup_start_time: Option<String>,
    /// When the restore ran (RFC 3339, UTC).
    pub restored_at: String,
    /// Where the backup was restored from (a path or URL), so the label can be found again.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub system_identifier: Option<SystemId>,
    /// Whether pg_control got [`SENTINEL_CHECKPOINT`].
    #[serde(default)]
    pub sentinel: bool,
    #[serde(default)]
    pub pgsafe_version: Option<String>,
}

impl RestoreMarker {
    /// Reads a restore marker of any format up to [`RESTORE_MARKER_FORMAT`].
    pub fn parse(bytes: &[u8]) -> Result<RestoreMarker, InfoError> {
        let m: RestoreMarker = serde_json::from_slice(bytes)?;
        if m.format > RESTORE_MARKER_FORMAT {
            return Err(InfoError::NewerFormat {
                found: m.format,
                supported: RESTORE_MARKER_FORMAT,
            });
        }
        Ok(m)
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
