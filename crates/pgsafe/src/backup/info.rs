//! `pgsafe.json`: the schema of what a complete backup records about itself.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{TablespaceChange, WalMode};
use crate::checksum::ChecksumAlgorithm;
use crate::copy::Compression;
use crate::page::PageChecksumReport;
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize, WalSegment};

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

impl FileOwner {
    /// The owner of `path` (`None` if it cannot be inspected).
    pub fn of(path: &Path) -> Option<FileOwner> {
        use nix::unistd::{Gid, Group, Uid, User};
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(FileOwner {
            uid: m.uid(),
            gid: m.gid(),
            user: User::from_uid(Uid::from_raw(m.uid()))
                .ok()
                .flatten()
                .map(|u| u.name),
            group: Group::from_gid(Gid::from_raw(m.gid()))
                .ok()
                .flatten()
                .map(|g| g.name),
        })
    }
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TablespaceInfo {
    pub oid: u32,
    /// File-system bytes, not necessarily UTF-8 (stored as hex then; see textbytes.rs).
    #[serde(with = "crate::textbytes::path_text")]
    pub original_path: PathBuf,
}
