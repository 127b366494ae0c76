//! Why the backup's WAL could not be taken: each failure with the file it concerns and, where
//! one exists, the error underneath kept as the source.

use std::path::PathBuf;

use crate::session::ServerError;
use crate::types::{Lsn, TypeError};
use crate::wal::{HistoryError, PageHeaderError, WalRangeError, record::RecordError};

#[derive(Debug, thiserror::Error)]
pub enum BackupWalError {
    /// The WAL range between the start and the stop cannot be computed from the timelines.
    #[error("{0}")]
    Range(#[from] WalRangeError),
    #[error("{}: {source}", path.display())]
    History {
        path: PathBuf,
        #[source]
        source: HistoryError,
    },
    /// WAL from the server's archive was asked for, and the server does not archive.
    #[error(
        "the WAL was to be taken from the server's archive, but this server does not archive \
         WAL (archive_mode = {archive_mode}{}): include the WAL in the backup instead",
        if *on_standby { " on a standby" } else { "" }
    )]
    NotArchiving {
        archive_mode: String,
        on_standby: bool,
    },
    /// The WAL the backup needs did not reach the archive: what the wait found, in words.
    #[error("{detail}")]
    NotArchived { detail: String },
    /// The archiving settings (to decide whether the server archives into the repository)
    /// could not be read.
    #[error("read the server's archiving settings: {0}")]
    ArchivingCheck(#[source] ServerError),
    /// The WAL did not reach the repository's archive in time.
    #[error(
        "WAL file {file}, needed by the backup, is not in the repository's WAL archive of \
         cluster {cluster} after {secs}s ({missing} file(s) of the backup's WAL range missing; \
         {archiver}). The server archives into the repository but has not stored this file: \
         check archive_command and the server log. The backup folder keeps its backup_label \
         and stays incomplete (it is not a usable backup); take a new backup once archiving \
         works, or include the WAL in the backup"
    )]
    NotInRepository {
        file: String,
        missing: usize,
        cluster: String,
        secs: u64,
        archiver: String,
    },
    /// A segment in the repository's archive could not be read back.
    #[error("WAL file {file} in the repository's WAL archive: {detail}")]
    ArchiveRead { file: String, detail: String },
    #[error("check received WAL: {0}")]
    ReceiveCheck(#[source] ServerError),
    #[error(
        "the standby has not received WAL up to the backup's stop position {stop} after {secs}s: \
         is it still connected to its primary?"
    )]
    NotReceived { stop: Lsn, secs: u64 },
    #[error(
        "WAL segment {name}, needed by the backup, is not in {} (it should have been kept by the \
         backup's replication slot; was it removed by hand?)",
        dir.display()
    )]
    SegmentMissing { name: String, dir: PathBuf },
    #[error("WAL segment {} is {len} bytes, expected {expected}", path.display())]
    SegmentSize {
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    #[error("{}: {source}", path.display())]
    SegmentHeader {
        path: PathBuf,
        #[source]
        source: PageHeaderError,
    },
    #[error("{}: {source}", path.display())]
    SegmentStart {
        path: PathBuf,
        #[source]
        source: TypeError,
    },
    #[error("{}: WAL block size {blcksz} differs from the first segment's", path.display())]
    BlockSize { path: PathBuf, blcksz: u32 },
    #[error(
        "{}: damaged WAL at {}: {source} — the server's own WAL is damaged, so this backup could \
         not be recovered; check the server's storage and take a new backup",
        path.display(), source.lsn
    )]
    Damaged {
        path: PathBuf,
        #[source]
        source: RecordError,
    },
    /// The records of the whole range, checked after the last segment.
    #[error("the WAL in {}: {source}", dir.display())]
    Incomplete {
        dir: PathBuf,
        #[source]
        source: RecordError,
    },
}
