//! The names of WAL archive files, pure: the names PostgreSQL gives `archive_command` (`%f`, the
//! last component of `%p`) and asks `restore_command` for, and the names they are stored under
//! in a repository (a segment's compression suffix).
//!
//! PostgreSQL's names (`XLogFileName`, `StatusFilePath`, `TLHistoryFileName`,
//! `BackupHistoryFileName` and the `Is…FileName` tests in src/include/access/xlog_internal.h):
//!
//! * a segment: 24 uppercase hex digits, timeline, "log" and segment (`000000010000000A000000FF`);
//! * a partial segment: a segment name + `.partial` (the last, incomplete segment of an old
//!   timeline, written at the end of archive recovery or by pg_receivewal);
//! * a timeline history file: 8 hex digits + `.history`;
//! * a backup history file: the backup's start segment, `.`, the start's offset in it as 8 hex
//!   digits, `.backup`.
//!
//! They live in `layout` (not in [`crate::archive`], which writes and serves them) because
//! every reader of archived WAL looks objects up by these names: archive-push and archive-get,
//! and [`super::WalArchive`] (backup, verify and restore). One list of stored names, one owner.
//!
//! Anything else is refused: a name is parsed, never joined raw into a path or object name, so
//! `../x`, an absolute path or a name with a suffix of its own cannot reach the storage.
//! PostgreSQL writes the hex digits in upper case (`%08X`); lower case is refused as well, so
//! one file has exactly one name.

use std::fmt;

use super::{LZ4_SUFFIX, ZSTD_SUFFIX};
use crate::codec::Compression;
use crate::storage::{Ident, Key, ObjectName, StorageError};
use crate::types::{TimelineId, WalSegment};

const PARTIAL_SUFFIX: &str = ".partial";
const HISTORY_SUFFIX: &str = ".history";
const BACKUP_SUFFIX: &str = ".backup";
/// Longest name shown in full in an error message (a hostile name may be long).
const SHOWN_MAX: usize = 80;

/// One file of a WAL archive, as PostgreSQL names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchiveFile {
    /// A complete WAL segment.
    Segment(WalSegment),
    /// A partial segment (`<segment>.partial`).
    Partial(WalSegment),
    /// The history file of a timeline (`<TLI>.history`).
    History(TimelineId),
    /// A backup history file (`<start segment>.<offset>.backup`).
    BackupHistory { segment: WalSegment, offset: u32 },
}

/// A name that is not one of PostgreSQL's WAL archive file names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{shown} is not the name of a WAL archive file: PostgreSQL archives WAL segments (24 \
     uppercase hex digits), partial segments (<segment>.partial), timeline history files \
     (<8 hex digits>.history) and backup history files (<segment>.<8 hex digits>.backup); \
     give the file PostgreSQL names (%f, or %p for archive_command)"
)]
pub struct NameError {
    shown: String,
}

impl NameError {
    fn new(name: &str) -> NameError {
        let mut shown: String = name.chars().take(SHOWN_MAX).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        NameError {
            shown: format!("{:?}", shown),
        }
    }
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// A segment name (24 uppercase hex digits) with a valid timeline (PostgreSQL's timelines
/// start at 1).
fn segment(s: &str) -> Option<WalSegment> {
    if s.len() != 24 || !is_upper_hex(s) {
        return None;
    }
    let seg: WalSegment = s.parse().ok()?;
    (seg.tli.0 != 0).then_some(seg)
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() != 8 || !is_upper_hex(s) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl ArchiveFile {
    /// Parses one of PostgreSQL's names (not a stored name: see [`ArchiveFile::parse_stored`]).
    pub fn parse(name: &str) -> Result<ArchiveFile, NameError> {
        let err = || NameError::new(name);
        if let Some(seg) = segment(name) {
            return Ok(ArchiveFile::Segment(seg));
        }
        if let Some(seg) = name.strip_suffix(PARTIAL_SUFFIX).and_then(segment) {
            return Ok(ArchiveFile::Partial(seg));
        }
        if let Some(tli) = name.strip_suffix(HISTORY_SUFFIX).and_then(hex8) {
            if tli == 0 {
                return Err(err());
            }
            return Ok(ArchiveFile::History(TimelineId(tli)));
        }
        if let Some(rest) = name.strip_suffix(BACKUP_SUFFIX) {
            let (seg, offset) = rest.split_once('.').ok_or_else(err)?;
            if let (Some(segment), Some(offset)) = (segment(seg), hex8(offset)) {
                return Ok(ArchiveFile::BackupHistory { segment, offset });
            }
        }
        Err(err())
    }

    /// Parses a stored object's last name component: PostgreSQL's name and the compression
    /// its suffix says (only segments and partial segments are compressed).
    pub fn parse_stored(stored: &str) -> Result<(ArchiveFile, Compression), NameError> {
        for (suffix, c) in [
            (ZSTD_SUFFIX, Compression::Zstd { level: 0 }),
            (LZ4_SUFFIX, Compression::Lz4),
        ] {
            if let Some(base) = stored.strip_suffix(suffix) {
                let f = ArchiveFile::parse(base).map_err(|_| NameError::new(stored))?;
                if !f.is_compressible() {
                    return Err(NameError::new(stored));
                }
                return Ok((f, c));
            }
        }
        Ok((ArchiveFile::parse(stored)?, Compression::None))
    }

    /// The timeline whose folder of the archive holds the file.
    pub fn timeline(&self) -> TimelineId {
        match self {
            ArchiveFile::Segment(s) | ArchiveFile::Partial(s) => s.tli,
            ArchiveFile::BackupHistory { segment, .. } => segment.tli,
            ArchiveFile::History(tli) => *tli,
        }
    }

    /// The segment the file names, if it names one.
    pub fn segment(&self) -> Option<WalSegment> {
        match self {
            ArchiveFile::Segment(s) | ArchiveFile::Partial(s) => Some(*s),
            ArchiveFile::BackupHistory { segment, .. } => Some(*segment),
            ArchiveFile::History(_) => None,
        }
    }

    /// Whether the file holds WAL (a segment or a partial segment: a full segment's size, its
    /// first page's long header checked), rather than text.
    pub fn is_wal(&self) -> bool {
        matches!(self, ArchiveFile::Segment(_) | ArchiveFile::Partial(_))
    }

    /// Whether the file is stored compressed when compression is asked for: WAL is; history
    /// and backup history files are small text, stored as they are (readable with `cat`).
    pub fn is_compressible(&self) -> bool {
        self.is_wal()
    }

    /// The compression the file is stored with when `asked` is configured.
    pub fn stored_compression(&self, asked: Compression) -> Compression {
        if self.is_compressible() {
            asked
        } else {
            Compression::None
        }
    }

    /// The last component of the object name for compression `c` (ignored for files that are
    /// never compressed).
    pub fn stored_name(&self, c: Compression) -> String {
        format!("{self}{}", self.stored_compression(c).suffix())
    }

    /// Every name the file may be stored under (one per compression, the configured one can
    /// have changed between pushes), with its compression: what a lookup tries, without a
    /// listing.
    pub fn stored_candidates(&self) -> Vec<(String, Compression)> {
        if !self.is_compressible() {
            return vec![(self.to_string(), Compression::None)];
        }
        [
            Compression::Zstd { level: 0 },
            Compression::Lz4,
            Compression::None,
        ]
        .into_iter()
        .map(|c| (self.stored_name(c), c))
        .collect()
    }

    /// The object name of the file stored with compression `c` in the archive of `cluster`
    /// (see [`crate::storage::key`]).
    pub fn object_name(&self, cluster: &Ident, c: Compression) -> Result<ObjectName, StorageError> {
        object_name(cluster, self.timeline(), &self.stored_name(c))
    }
}

/// The object name of the stored file `stored` (a name [`ArchiveFile::stored_name`] made).
pub(crate) fn object_name(
    cluster: &Ident,
    timeline: TimelineId,
    stored: &str,
) -> Result<ObjectName, StorageError> {
    let file = Ident::new(stored)?;
    Key::Wal {
        cluster,
        timeline,
        file: &file,
    }
    .name()
}

impl fmt::Display for ArchiveFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveFile::Segment(s) => write!(f, "{s}"),
            ArchiveFile::Partial(s) => write!(f, "{s}{PARTIAL_SUFFIX}"),
            ArchiveFile::History(tli) => write!(f, "{}{HISTORY_SUFFIX}", tli.hex()),
            ArchiveFile::BackupHistory { segment, offset } => {
                write!(f, "{segment}.{offset:08X}{BACKUP_SUFFIX}")
            }
        }
    }
}

#[cfg(test)]
mod tests;
