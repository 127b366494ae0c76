//! `global/pg_control`: decode and re-encode the control file of PostgreSQL 9.6–18. Pure, except
//! for [`read_control_file`] at the bottom.
//!
//! Facts (`src/include/catalog/pg_control.h` of each major; `ReadControlFile` in
//! `src/backend/access/transam/xlog.c`):
//! * The file is 8192 bytes (`PG_CONTROL_FILE_SIZE`); `ControlFileData` sits at offset 0 and the
//!   rest is zero-filled. Integers are native-endian (little-endian on our only target, x86_64),
//!   `bool` is one byte, `double`/64-bit fields are 8-byte aligned.
//! * The layout is identified by `pg_control_version` at offset 8: 960 (9.6), 1002 (10),
//!   1100 (11), 1201 (12), 1300 (13, 14, 15 and 16, told apart by `catalog_version_no`),
//!   1700 (17), 1800 (18).
//! * `crc` is CRC-32C over the raw bytes `[0, offsetof(crc))`, padding included.
//! * The server's byte-order heuristic: a version that is a non-zero multiple of 65536 means the
//!   file was written with the other byte order.
//!
//! Offsets are not typed in by hand: [`ControlLayout`] computes them at compile time from one
//! declaration list that mirrors the C structs (field order, type, and the control versions that
//! have the field), with the C alignment rules. The tests check every computed offset against
//! a table of each major's offsets typed in by hand from its `pg_control.h`, and a real
//! PostgreSQL 15 file against `pg_controldata`.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize};

mod codec;
mod layout;
mod sentinel;

pub use layout::{ControlField, ControlLayout};
#[cfg(test)]
use layout::{DECLS, Decl};
pub use sentinel::{SENTINEL_CHECKPOINT, apply_sentinel, has_sentinel};

/// Physical size of `global/pg_control` (`PG_CONTROL_FILE_SIZE`).
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

/// `FLOATFORMAT_VALUE`: the `floatFormat` field must hold exactly this `double`.
pub const FLOAT_FORMAT_VALUE: f64 = 1234567.0;

/// Why pg_control could not be decoded or read.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "pg_control is {len} bytes, expected at least {expected} (the size of its ControlFileData \
         structure; a complete pg_control is 8192 bytes): the file is truncated or is not a \
         pg_control file"
    )]
    TooShort { len: usize, expected: usize },
    #[error(
        "pg_control version {0} is not one pgsafe knows (9.6–18: 960, 1002, 1100, 1201, 1300, \
         1700, 1800): the file is damaged or comes from an unsupported PostgreSQL version"
    )]
    UnknownVersion(u32),
    #[error(
        "pg_control version {found} ({found:#010x}) is a mismatched byte ordering (byte-swapped it \
         reads {swapped}): the file was written by a server with a different byte order than \
         this machine's; pgsafe reads little-endian pg_control files only"
    )]
    ByteOrder { found: u32, swapped: u32 },
    #[error(
        "incorrect checksum in pg_control: stored {stored:#010x}, computed {computed:#010x} — the \
         file is damaged or was read while being written"
    )]
    BadCrc { stored: u32, computed: u32 },
    #[error(
        "pg_control float format check failed: expected {FLOAT_FORMAT_VALUE:.1}, found {0}: the \
         file is damaged or comes from a platform with another floating-point format"
    )]
    FloatFormat(f64),
    #[error(
        "invalid WAL segment size in pg_control: {0} bytes (it must be a power of two from 1 MB \
         to 1 GB): the file is damaged"
    )]
    SegSize(u32),
    #[error("read pg_control at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `DBState` (same values 9.6–18); `Display` uses pg_controldata's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbState {
    StartingUp,
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
    /// A value no version defines, kept so that it re-encodes unchanged.
    Unknown(u32),
}

impl DbState {
    pub fn from_u32(v: u32) -> Self {
        use DbState::*;
        match v {
            0 => StartingUp,
            1 => ShutDown,
            2 => ShutDownInRecovery,
            3 => ShuttingDown,
            4 => InCrashRecovery,
            5 => InArchiveRecovery,
            6 => InProduction,
            other => Unknown(other),
        }
    }

    pub fn to_u32(self) -> u32 {
        use DbState::*;
        match self {
            StartingUp => 0,
            ShutDown => 1,
            ShutDownInRecovery => 2,
            ShuttingDown => 3,
            InCrashRecovery => 4,
            InArchiveRecovery => 5,
            InProduction => 6,
            Unknown(v) => v,
        }
    }
}

impl fmt::Display for DbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DbState::*;
        f.write_str(match self {
            StartingUp => "starting up",
            ShutDown => "shut down",
            ShutDownInRecovery => "shut down in recovery",
            ShuttingDown => "shutting down",
            InCrashRecovery => "in crash recovery",
            InArchiveRecovery => "in archive recovery",
            InProduction => "in production",
            Unknown(v) => return write!(f, "unrecognized status code ({v})"),
        })
    }
}

/// `wal_level` (0 minimal, 1 replica — 9.6's `archive`/`hot_standby` are stored as 1 — 2 logical);
/// `Display` uses pg_controldata's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalLevel {
    Minimal,
    Replica,
    Logical,
    /// A value no version defines, kept so that it re-encodes unchanged.
    Unknown(i32),
}

impl WalLevel {
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => WalLevel::Minimal,
            1 => WalLevel::Replica,
            2 => WalLevel::Logical,
            other => WalLevel::Unknown(other),
        }
    }

    pub fn to_i32(self) -> i32 {
        match self {
            WalLevel::Minimal => 0,
            WalLevel::Replica => 1,
            WalLevel::Logical => 2,
            WalLevel::Unknown(v) => v,
        }
    }
}

impl fmt::Display for WalLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalLevel::Minimal => f.write_str("minimal"),
            WalLevel::Replica => f.write_str("replica"),
            WalLevel::Logical => f.write_str("logical"),
            WalLevel::Unknown(v) => write!(f, "unrecognized wal_level ({v})"),
        }
    }
}

/// A 64-bit transaction ID: `(epoch << 32) | xid`. Printed `epoch:xid` like pg_controldata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FullTransactionId(pub u64);

impl FullTransactionId {
    pub fn from_epoch_xid(epoch: u32, xid: u32) -> Self {
        FullTransactionId((u64::from(epoch) << 32) | u64::from(xid))
    }

    pub fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn xid(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for FullTransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch(), self.xid())
    }
}

macro_rules! serialize_as_display {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_display!(DbState, WalLevel, FullTransactionId);

/// `CheckPoint checkPointCopy`: the contents of the latest checkpoint record
/// (`CheckPoint` in `src/include/catalog/pg_control.h`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckPoint {
    /// Where replay starts (`REDO location`).
    pub redo: Lsn,
    pub this_timeline: TimelineId,
    pub prev_timeline: TimelineId,
    pub full_page_writes: bool,
    /// 17+ only (`wal_level` of the checkpoint record).
    pub wal_level: Option<WalLevel>,
    /// Full 64-bit next xid on every version (built from `nextXidEpoch`/`nextXid` on ≤ 11).
    pub next_xid: FullTransactionId,
    pub next_oid: u32,
    pub next_multi: u32,
    pub next_multi_offset: u32,
    pub oldest_xid: u32,
    pub oldest_xid_db: u32,
    pub oldest_multi: u32,
    pub oldest_multi_db: u32,
    /// Seconds since the Unix epoch.
    pub time: i64,
    pub oldest_commit_ts_xid: u32,
    pub newest_commit_ts_xid: u32,
    pub oldest_active_xid: u32,
}

/// A decoded pg_control. Fields absent from the file's version are `None`. Every field is public
/// so that a copy can be modified and written back with [`ControlFile::encode`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlFile {
    pub system_identifier: SystemId,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    pub state: DbState,
    /// Last update of pg_control, seconds since the Unix epoch.
    pub time: i64,
    /// LSN of the latest checkpoint record.
    pub checkpoint: Lsn,
    /// ≤ 10 only: the checkpoint before it.
    pub prev_checkpoint: Option<Lsn>,
    pub checkpoint_copy: CheckPoint,
    pub unlogged_lsn: Lsn,
    pub min_recovery_point: Lsn,
    pub min_recovery_point_tli: TimelineId,
    pub backup_start_point: Lsn,
    pub backup_end_point: Lsn,
    pub backup_end_required: bool,
    pub wal_level: WalLevel,
    pub wal_log_hints: bool,
    pub max_connections: i32,
    pub max_worker_processes: i32,
    /// 12+ only.
    pub max_wal_senders: Option<i32>,
    pub max_prepared_xacts: i32,
    pub max_locks_per_xact: i32,
    pub track_commit_timestamp: bool,
    pub max_align: u32,
    /// Always [`FLOAT_FORMAT_VALUE`] once decoded.
    pub float_format: f64,
    pub blcksz: u32,
    /// Blocks per segment of a large relation.
    pub relseg_size: u32,
    pub xlog_blcksz: u32,
    pub xlog_seg_size: WalSegSize,
    pub name_data_len: u32,
    pub index_max_keys: u32,
    pub toast_max_chunk_size: u32,
    pub loblksize: u32,
    /// 9.6 only.
    pub enable_int_times: Option<bool>,
    /// ≤ 12 only.
    pub float4_by_val: Option<bool>,
    pub float8_by_val: bool,
    /// 0: data checksums off; 1: on.
    pub data_checksum_version: u32,
    /// 18+ only.
    pub default_char_signedness: Option<bool>,
    /// 10+ only.
    #[serde(serialize_with = "nonce_hex")]
    pub mock_authentication_nonce: Option<[u8; 32]>,
    /// The CRC as stored in the decoded bytes; [`ControlFile::encode`] recomputes it.
    pub crc: u32,
    #[serde(skip)]
    layout: &'static ControlLayout,
    /// The file as read (padded with zeros or cut to 8192 bytes): encode starts from it, so
    /// padding and the bytes after the struct are preserved exactly.
    #[serde(skip)]
    raw: Vec<u8>,
}

fn nonce_hex<S: Serializer>(nonce: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match nonce {
        Some(n) => s.collect_str(&n.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        None => s.serialize_none(),
    }
}

impl ControlFile {
    /// The layout this file was decoded with.
    pub fn layout(&self) -> &'static ControlLayout {
        self.layout
    }

    /// The major version (minor 0) from `catalog_version_no` (`CATALOG_VERSION_NO`,
    /// `src/include/catalog/catversion.h` of each release): the oldest major
    /// sharing this `pg_control_version` whose release catalog version is ≥ this one. Release
    /// numbers map exactly; a pre-release (beta) build maps to the major it became. `None` when
    /// the number is newer than every release of this layout (a development build of a later
    /// major that had not yet bumped `pg_control_version`).
    pub fn major_version(&self) -> Option<PgVersion> {
        let cat = self.catalog_version_no;
        let &(num, _) = self
            .layout
            .majors
            .iter()
            .find(|&&(_, release)| cat <= release)?;
        PgVersion::from_num(num).ok()
    }

    /// True if `catalog_version_no` is exactly that of a released major.
    pub fn catalog_version_is_release(&self) -> bool {
        self.layout
            .majors
            .iter()
            .any(|&(_, release)| release == self.catalog_version_no)
    }
}

/// Attempts [`read_control_file`] makes before reporting a checksum error.
pub const READ_ATTEMPTS: u32 = 5;
/// Pause between those attempts.
pub const READ_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Reads and decodes a pg_control file. A running server rewrites the file in place, so a read
/// can see a half-written image: on a CRC mismatch the file is read again (up to
/// [`READ_ATTEMPTS`] times, [`READ_RETRY_DELAY`] apart) before the CRC error is returned. Reads
/// at most 8192 bytes.
pub fn read_control_file(path: &Path) -> Result<ControlFile, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut attempt = 1;
    loop {
        let mut bytes = Vec::with_capacity(PG_CONTROL_FILE_SIZE);
        File::open(path)
            .and_then(|f| f.take(PG_CONTROL_FILE_SIZE as u64).read_to_end(&mut bytes))
            .map_err(io)?;
        match ControlFile::decode(&bytes) {
            Err(ControlError::BadCrc { .. }) if attempt < READ_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(READ_RETRY_DELAY);
            }
            result => return result,
        }
    }
}

/// The point recovery of a backup becomes consistent at: for a backup from a standby, the
/// `minRecoveryPoint` of its pg_control (PostgreSQL takes the backup end from there); for a
/// primary's, the end of its end-of-backup record, the stop LSN `pg_backup_stop` returned (and
/// `minRecoveryPoint` when pg_control has one). `None` when it is not known (a copy without a
/// recorded stop LSN).
pub fn consistency_point(
    control: &ControlFile,
    from_standby: bool,
    stop_lsn: Option<crate::types::Lsn>,
) -> Option<crate::types::Lsn> {
    let mrp = control.min_recovery_point;
    if from_standby {
        return (mrp.0 != 0).then_some(mrp);
    }
    stop_lsn.map(|s| s.max(mrp))
}

#[cfg(test)]
mod tests;
