//! The backup folder's layout: the names of what pgsafe stores and marks, where a manifest path
//! is stored in a compressed layout, and the listing of a stored backup. Every other module
//! takes these names from here.
//!
//! A plain backup folder is a copy of PGDATA (files under their own names, tablespaces under
//! `pg_tblspc/<oid>/`) plus `backup_label`, `tablespace_map`, `backup_manifest` and the WAL in
//! `pg_wal/`: what pg_verifybackup reads (src/bin/pg_verifybackup/pg_verifybackup.c). pgsafe
//! adds `pgsafe.json` (written last, listed in the manifest so that pg_verifybackup checks it
//! like any file; its presence marks the backup complete, see [`crate::info`]) and, while a
//! backup is written, `pgsafe.incomplete` (removed once `pgsafe.json` is written).
//!
//! The compressed layouts store each data file as `<path>.zst` or `<path>.lz4`; the label
//! files, the markers, the manifest and the WAL are always stored as they are.
//!
//! In a differential or incremental backup, a relation file may be stored as the blocks that
//! changed since the parent backup: `<path>.pgsafe-incr` ([`incremental`]).
//!
//! The files of a repository's WAL archive are named by [`ArchiveFile`] (`wal_name.rs`): the
//! archive commands and the readers of archived WAL ([`WalArchive`]) share its one list of
//! stored names.

mod archived_wal;
pub mod incremental;
mod listing;
mod stored;
#[cfg(test)]
mod tests;
mod wal_name;
mod wal_summary_name;

pub use archived_wal::{ArchiveReadError, WalArchive};
pub use incremental::{
    INCR_SUFFIX, IncrError, IncrHeader, StoredBlock, decode_header, encode_header,
    incremental_path, incremental_target,
};
pub use listing::{HARD_LINK_WHY, Listing, list_backup};
pub use stored::StoredBackup;
pub(crate) use wal_name::object_name as wal_object_name;
pub use wal_name::{ArchiveFile, NameError};
pub use wal_summary_name::{WAL_SUMMARY_DIR, WAL_SUMMARY_SUFFIX, wal_summary_object};

use crate::codec::Compression;
use crate::plan::RelPath;

/// `backup_label` in the backup root (and in PGDATA).
pub const LABEL_FILE: &str = "backup_label";
/// `tablespace_map` in the backup root (and in PGDATA).
pub const MAP_FILE: &str = "tablespace_map";
/// The backup manifest, as `pg_basebackup` names it (src/backend/backup/backup_manifest.c).
pub const MANIFEST_FILE: &str = "backup_manifest";
/// The completion marker, `pgsafe.json` ([`crate::info::BackupInfo`]): written last,
/// atomically. No `pgsafe.json`, no backup.
pub const COMPLETE_MARKER: &str = "pgsafe.json";
/// Present while a backup is being written (and after it failed).
pub const INCOMPLETE_MARKER: &str = "pgsafe.incomplete";
/// What [`INCOMPLETE_MARKER`] says.
pub const INCOMPLETE_NOTE: &[u8] =
    b"This folder is NOT a usable backup: pgsafe backup did not finish writing it.\n\
      A complete backup has pgsafe.json. Remove this folder and take a new backup.\n";
/// The WAL folder, in the backup as in PGDATA (PostgreSQL 10+).
pub const WAL_DIR: &str = "pg_wal";
/// The stored control file (before any compression suffix).
pub const CONTROL_FILE: &str = "global/pg_control";

/// The file a pgsafe restore writes into the restored PGDATA (JSON, see
/// [`crate::info::RestoreMarker`]). PostgreSQL ignores unknown files in the data directory root.
pub const RESTORE_MARKER_FILE: &str = "pgsafe_restore.json";
/// What `pgsafe doctor`'s fix renames `backup_label` to (never deletes it).
pub const REMOVED_LABEL_FILE: &str = "backup_label.pgsafe-removed";

/// Suffix of a file stored zstd-compressed (what the `zstd` tool reads).
pub const ZSTD_SUFFIX: &str = ".zst";
/// Suffix of a file stored LZ4-compressed (what the `lz4` tool reads).
pub const LZ4_SUFFIX: &str = ".lz4";

/// Files stored as they are in every layout (never compressed).
const UNCOMPRESSED_FILES: [&str; 4] = [LABEL_FILE, MAP_FILE, COMPLETE_MARKER, MANIFEST_FILE];

/// Largest `backup_manifest` read (about 200 bytes per file: millions of files).
pub const MANIFEST_LIMIT: u64 = 1 << 30;
/// Largest `backup_label`, `tablespace_map`, `pgsafe.json` or history file read.
pub const SMALL_FILE_LIMIT: u64 = 16 << 20;

/// Where a manifest file (path as listed) is stored in a backup of `compression`.
pub fn stored_path(path: &[u8], compression: Compression) -> RelPath {
    let as_is = compression.is_none()
        || UNCOMPRESSED_FILES.iter().any(|f| f.as_bytes() == path)
        || in_wal_dir(path);
    let rel = RelPath::from_bytes(path);
    if as_is {
        rel
    } else {
        rel.with_suffix(compression.suffix())
    }
}

/// The name of a file in the backup's `pg_wal/`, or `None` for a path elsewhere.
pub fn wal_file_name(path: &[u8]) -> Option<&[u8]> {
    path.strip_prefix(WAL_DIR.as_bytes())?.strip_prefix(b"/")
}

/// `path` lies below `pg_wal/`.
pub fn in_wal_dir(path: &[u8]) -> bool {
    wal_file_name(path).is_some()
}

/// The files of a backup's manifest that pgsafe writes itself rather than copies from the data
/// directory. They are not among the backup's files as its summaries count them (see
/// [`crate::progress`]).
pub const OWN_FILES: [&str; 3] = [LABEL_FILE, MAP_FILE, COMPLETE_MARKER];

/// `path` (in a backup's manifest) is one of [`OWN_FILES`].
pub fn is_own_file(path: &[u8]) -> bool {
    OWN_FILES.iter().any(|f| f.as_bytes() == path)
}
