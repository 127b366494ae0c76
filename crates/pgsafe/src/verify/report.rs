//! What verify finds: the problems with a backup and the report of a run.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::info::{BackupInfo, WalMode};
use crate::layout::{COMPLETE_MARKER, HARD_LINK_WHY, INCOMPLETE_MARKER, MANIFEST_FILE};
use crate::types::{Lsn, SystemId};

/// One thing wrong with a backup. `Display` is the precise message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// No `pgsafe.json`.
    Incomplete {
        incomplete_marker: bool,
    },
    /// `pgsafe.incomplete` next to `pgsafe.json`.
    IncompleteMarker,
    /// `pgsafe.json` exists but cannot be read.
    BadInfo {
        error: String,
    },
    ManifestMissing,
    ManifestInvalid {
        error: String,
    },
    /// A file the manifest lists is not stored.
    Missing {
        path: String,
        stored_as: String,
    },
    /// A stored file has another size than the manifest says.
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    Checksum {
        path: String,
        algorithm: ChecksumAlgorithm,
        expected: String,
        found: String,
    },
    /// A compressed file does not decompress.
    Corrupt {
        path: String,
        error: String,
    },
    /// A stored file the manifest does not list.
    Extra {
        path: String,
    },
    /// Something that is neither a regular file nor a directory.
    NotAFile {
        path: String,
    },
    LabelMissing,
    LabelInvalid {
        error: String,
    },
    /// The label disagrees with the manifest or `pgsafe.json`.
    LabelMismatch {
        detail: String,
    },
    ControlInvalid {
        error: String,
    },
    /// pg_control, manifest and `pgsafe.json` disagree (system identifier, version, WAL size).
    ControlMismatch {
        detail: String,
    },
    /// `pgsafe.json` disagrees with the manifest.
    InfoMismatch {
        detail: String,
    },
    WalMissing {
        segment: String,
    },
    WalSize {
        segment: String,
        expected: u64,
        found: u64,
    },
    WalInvalid {
        segment: String,
        error: String,
    },
    /// A WAL record between the backup's start and stop is damaged (`lsn`: its start, or the
    /// page where reading failed).
    WalRecord {
        segment: String,
        lsn: Lsn,
        error: String,
    },
    /// A stored WAL file's CRC-32C is not the one `pgsafe.json` recorded when it was copied.
    WalChecksum {
        file: String,
        expected: String,
        found: String,
    },
    HistoryMissing {
        file: String,
    },
    /// A WAL file the backup needs is not in its repository's WAL archive (`archive`), where
    /// the backup's WAL is.
    ArchiveWalMissing {
        file: String,
        archive: String,
    },
    /// A WAL file of the backup in its repository's WAL archive is damaged or not what the
    /// backup needs.
    ArchiveWalInvalid {
        file: String,
        archive: String,
        error: String,
    },
    HistoryInvalid {
        file: String,
        error: String,
    },
    /// A symbolic link in the backup folder: pgsafe never stores one, so it was planted (or
    /// the folder was assembled by hand); it is never followed.
    Symlink {
        path: String,
        points_to: String,
    },
    /// A regular file with another name, maybe outside the backup: pgsafe never stores hard
    /// links, and its content may be a file its writer could not read (see [`HARD_LINK_WHY`]).
    HardLink {
        path: String,
    },
    /// A manifest entry without a checksum in a backup whose `pgsafe.json` names an algorithm:
    /// its content could be anything of the right size.
    ChecksumMissing {
        path: String,
        algorithm: ChecksumAlgorithm,
    },
    /// A compressed file decompresses to more than the manifest's size; reading stopped there.
    Inflates {
        path: String,
        limit: u64,
    },
    /// A file or directory of the backup could not be read (the other files were checked).
    Unreadable {
        path: String,
        error: String,
    },
    /// `tablespace_map` does not parse, or names a location that is not an absolute path
    /// without `..` (PostgreSQL only writes absolute locations).
    MapInvalid {
        error: String,
    },
    /// A stored data page fails its checksum, and the backup did not record it as changed
    /// during the copy or as corrupt on the source.
    PageChecksum {
        path: String,
        block: u32,
        error: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Incomplete { incomplete_marker } => write!(
                f,
                "incomplete backup: {COMPLETE_MARKER} is missing{} — pgsafe backup did not finish \
                 writing this folder; do not restore it",
                if *incomplete_marker {
                    format!(" and {INCOMPLETE_MARKER} is present")
                } else {
                    String::new()
                }
            ),
            Problem::IncompleteMarker => write!(
                f,
                "{INCOMPLETE_MARKER} is present next to {COMPLETE_MARKER}: the folder was \
                 written to after the backup completed"
            ),
            Problem::BadInfo { error } => write!(f, "{COMPLETE_MARKER} is unreadable: {error}"),
            Problem::ManifestMissing => write!(
                f,
                "{MANIFEST_FILE} is missing: the stored files cannot be checked"
            ),
            Problem::ManifestInvalid { error } => {
                write!(f, "{MANIFEST_FILE} is invalid: {error}")
            }
            Problem::Missing { path, stored_as } if path == stored_as => write!(
                f,
                "missing file: {path} is listed in {MANIFEST_FILE} but is not in the backup"
            ),
            Problem::Missing { path, stored_as } => write!(
                f,
                "missing file: {path} is listed in {MANIFEST_FILE} but {stored_as} is not in the \
                 backup"
            ),
            Problem::Size {
                path,
                expected,
                found,
            } => write!(
                f,
                "wrong size: {path} is {found} bytes, {MANIFEST_FILE} says {expected} ({})",
                if found < expected {
                    "truncated"
                } else {
                    "extended"
                }
            ),
            Problem::Checksum {
                path,
                algorithm,
                expected,
                found,
            } => write!(
                f,
                "checksum mismatch: {path} has {algorithm} {found}, {MANIFEST_FILE} says \
                 {expected} (its content changed)"
            ),
            Problem::Corrupt { path, error } => {
                write!(
                    f,
                    "corrupt compressed file: {path} does not decompress: {error}"
                )
            }
            Problem::Extra { path } => write!(
                f,
                "unexpected file: {path} is in the backup but not in {MANIFEST_FILE}"
            ),
            Problem::NotAFile { path } => write!(
                f,
                "unexpected entry: {path} is neither a regular file nor a directory"
            ),
            Problem::LabelMissing => write!(
                f,
                "backup_label is missing: the backup cannot be restored without it (recovery \
                 must start from the checkpoint it names)"
            ),
            Problem::LabelInvalid { error } => write!(f, "backup_label is invalid: {error}"),
            Problem::LabelMismatch { detail } => {
                write!(f, "backup_label does not match the backup: {detail}")
            }
            Problem::ControlInvalid { error } => {
                write!(f, "global/pg_control is invalid: {error}")
            }
            Problem::ControlMismatch { detail } => {
                write!(f, "global/pg_control does not match the backup: {detail}")
            }
            Problem::InfoMismatch { detail } => {
                write!(
                    f,
                    "{COMPLETE_MARKER} does not match {MANIFEST_FILE}: {detail}"
                )
            }
            Problem::WalMissing { segment } => write!(
                f,
                "missing WAL segment: pg_wal/{segment}, needed to recover the backup, is not in \
                 the backup"
            ),
            Problem::WalSize {
                segment,
                expected,
                found,
            } => write!(
                f,
                "wrong WAL segment size: pg_wal/{segment} is {found} bytes, expected {expected}"
            ),
            Problem::WalInvalid { segment, error } => {
                write!(f, "invalid WAL segment pg_wal/{segment}: {error}")
            }
            Problem::WalRecord {
                segment,
                lsn,
                error,
            } => write!(
                f,
                "damaged WAL in pg_wal/{segment} at {lsn}: {error} — recovery of this backup \
                 would stop there, before the backup is consistent, so it cannot be restored"
            ),
            Problem::WalChecksum {
                file,
                expected,
                found,
            } => write!(
                f,
                "WAL checksum mismatch: pg_wal/{file} has CRC-32C {found}, {COMPLETE_MARKER} \
                 says {expected} (it changed after the backup copied it)"
            ),
            Problem::HistoryMissing { file } => write!(
                f,
                "missing timeline history file: pg_wal/{file}, needed to follow the backup's \
                 timelines, is not in the backup"
            ),
            Problem::ArchiveWalMissing { file, archive } => write!(
                f,
                "missing archived WAL: {file}, needed to recover the backup, is not in the \
                 repository's WAL archive {archive}"
            ),
            Problem::ArchiveWalInvalid {
                file,
                archive,
                error,
            } => write!(
                f,
                "invalid archived WAL: {file} in the repository's WAL archive {archive}: {error}"
            ),
            Problem::HistoryInvalid { file, error } => {
                write!(f, "invalid timeline history file pg_wal/{file}: {error}")
            }
            Problem::HardLink { path } => write!(
                f,
                "hard link: {path} has more than one name ({HARD_LINK_WHY}); copy the backup \
                 folder without hard links (e.g. cp -a) if you made them"
            ),
            Problem::Symlink { path, points_to } => write!(
                f,
                "symbolic link: {path} -> {points_to} (pgsafe never stores links in a backup; \
                 it was put there by someone else and is not followed)"
            ),
            Problem::ChecksumMissing { path, algorithm } => write!(
                f,
                "missing checksum: {MANIFEST_FILE} lists {path} without a checksum, but this \
                 backup was taken with {algorithm} checksums (the entry was edited)"
            ),
            Problem::Inflates { path, limit } => write!(
                f,
                "oversized compressed file: {path} decompresses to more than the {limit} bytes \
                 {MANIFEST_FILE} gives (reading stopped there)"
            ),
            Problem::Unreadable { path, error } => {
                write!(f, "unreadable: {path}: {error}")
            }
            Problem::MapInvalid { error } => write!(f, "tablespace_map is invalid: {error}"),
            Problem::PageChecksum { path, block, error } => write!(
                f,
                "page checksum failure: {path} block {block}: {error} — the page passed its \
                 checksum when the backup stored it, so the backup was damaged since"
            ),
        }
    }
}

/// A tablespace of the backup and the location its `tablespace_map` names: where a restore
/// creates it unless told otherwise.
/// Whether a complete, valid record follows the record with which recovery of the backup
/// becomes consistent, found by the WAL walk of a full verification: a restore decides from it
/// how recovery ends (`restore/backup_end.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupEndScan {
    /// The consistency point walked to ([`crate::control::consistency_point`]).
    pub consistent_at: Lsn,
    /// A record ending at or after it was read.
    pub reached: bool,
    /// A complete, valid record follows that one.
    pub record_follows: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TablespaceLocation {
    pub oid: u32,
    pub location: PathBuf,
}

/// The locations of a `tablespace_map`; an error for one that does not parse or names a
/// location that is not absolute or has a `.`/`..` component (the server writes the
/// absolute path of each `pg_tblspc/<oid>` link, xlog.c `do_pg_backup_start`).
pub fn tablespace_locations(
    bytes: &[u8],
    version: crate::types::PgVersion,
) -> Result<Vec<TablespaceLocation>, String> {
    use crate::label::{MapEscaping, TablespaceMap};
    let map = TablespaceMap::parse(bytes, MapEscaping::for_version(version))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in map.entries() {
        let location = e.as_path().to_path_buf();
        if !crate::fsutil::is_plain_absolute(&location) {
            return Err(format!(
                "tablespace {} has the location {:?}: not an absolute path without \".\" and \
                 \"..\" components",
                e.oid,
                location.display()
            ));
        }
        out.push(TablespaceLocation {
            oid: e.oid,
            location,
        });
    }
    Ok(out)
}

/// What [`verify_backup`] found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup: PathBuf,
    pub quick: bool,
    /// True when nothing is wrong.
    pub ok: bool,
    /// Each problem as its fields plus `message` (the `Display` text).
    #[serde(serialize_with = "problems_with_messages")]
    pub problems: Vec<Problem>,
    /// Facts worth knowing that are not problems (where WAL must come from, what quick skipped).
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<SystemId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<Lsn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_lsn: Option<Lsn>,
    pub compression: Compression,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_mode: Option<WalMode>,
    /// The backup's files checked: the data directory's files, `pg_control` included; the
    /// count `backup` and `restore` report for the same backup (see [`crate::progress`]).
    pub files: u64,
    /// Every file of the manifest checked: `files` and pgsafe's own files (`backup_label`,
    /// `tablespace_map`, `pgsafe.json`).
    pub files_checked: u64,
    /// Bytes read (uncompressed) to check files and WAL.
    pub bytes_checked: u64,
    pub wal_segments_checked: u64,
    /// WAL records checked (CRC, length, prev-link) from the start to the stop LSN.
    pub wal_records_checked: u64,
    /// `CREATE TABLESPACE` records in the backup's WAL: replaying them creates directories at
    /// their locations (a full verification reads the records; a quick one none).
    pub wal_tablespaces_created: Vec<crate::wal::record::TablespaceCreate>,
    /// What the WAL walk found after the point where recovery becomes consistent (a full
    /// verification whose WAL records were all read).
    #[serde(skip)]
    pub backup_end: Option<BackupEndScan>,
    pub elapsed_secs: f64,
    /// The tablespace locations `tablespace_map` names (a restore's defaults).
    pub tablespaces: Vec<TablespaceLocation>,
    /// `pgsafe.json`, when readable (for restore).
    #[serde(skip)]
    pub info: Option<BackupInfo>,
}

fn problems_with_messages<S: serde::Serializer>(
    problems: &[Problem],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct WithMessage<'a> {
        message: String,
        #[serde(flatten)]
        problem: &'a Problem,
    }
    s.collect_seq(problems.iter().map(|p| WithMessage {
        message: p.to_string(),
        problem: p,
    }))
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}
