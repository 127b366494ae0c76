//! `global/pg_control`: decode and re-encode the control file of PostgreSQL 9.6–18. Pure, except
//! for [`read_control_file`] at the bottom.
//!
//! Facts (reference §4, `src/include/catalog/pg_control.h` of each major):
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
//! the reference's §4.5 table, and a real PostgreSQL 15 file against `pg_controldata`.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize};

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

/// Every field of `ControlFileData` (and of its embedded `CheckPoint`, `checkPointCopy`) in any
/// supported version, named after the C members. Padding is not a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlField {
    SystemIdentifier,
    PgControlVersion,
    CatalogVersionNo,
    State,
    Time,
    CheckPoint,
    PrevCheckPoint,
    Redo,
    ThisTimeLineId,
    PrevTimeLineId,
    FullPageWrites,
    CheckPointWalLevel,
    NextXidEpoch,
    NextXid,
    NextOid,
    NextMulti,
    NextMultiOffset,
    OldestXid,
    OldestXidDb,
    OldestMulti,
    OldestMultiDb,
    CheckPointTime,
    OldestCommitTsXid,
    NewestCommitTsXid,
    OldestActiveXid,
    UnloggedLsn,
    MinRecoveryPoint,
    MinRecoveryPointTli,
    BackupStartPoint,
    BackupEndPoint,
    BackupEndRequired,
    WalLevel,
    WalLogHints,
    MaxConnections,
    MaxWorkerProcesses,
    MaxWalSenders,
    MaxPreparedXacts,
    MaxLocksPerXact,
    TrackCommitTimestamp,
    MaxAlign,
    FloatFormat,
    Blcksz,
    RelsegSize,
    XlogBlcksz,
    XlogSegSize,
    NameDataLen,
    IndexMaxKeys,
    ToastMaxChunkSize,
    Loblksize,
    EnableIntTimes,
    Float4ByVal,
    Float8ByVal,
    DataChecksumVersion,
    DefaultCharSignedness,
    MockAuthenticationNonce,
    Crc,
}

impl ControlField {
    pub const COUNT: usize = ControlField::Crc as usize + 1;
}

/// C type of a field: (size, alignment) on x86_64.
#[derive(Clone, Copy)]
enum Ty {
    Bool,
    U32,
    U64,
    F64,
    Nonce,
}

impl Ty {
    const fn size_align(self) -> (usize, usize) {
        match self {
            Ty::Bool => (1, 1),
            Ty::U32 => (4, 4),
            Ty::U64 | Ty::F64 => (8, 8),
            Ty::Nonce => (32, 1),
        }
    }
}

/// One member of the C struct: field, type, and the first/last `pg_control_version` having it;
/// or `Align8`, where the embedded `CheckPoint` struct starts and ends (its alignment and size
/// are multiples of 8 because it holds 64-bit members).
#[derive(Clone, Copy)]
enum Decl {
    Field(ControlField, Ty, u32, u32),
    Align8,
}

const ANY: u32 = u32::MAX;

/// `ControlFileData` as declared in pg_control.h, 9.6–18 merged (signed `int`, `pg_time_t` and
/// the `DBState`/`WalLevel` enums share the size and alignment of their unsigned counterparts).
const DECLS: &[Decl] = {
    use ControlField as F;
    use Decl::{Align8, Field};
    use Ty::*;
    &[
        Field(F::SystemIdentifier, U64, 0, ANY),
        Field(F::PgControlVersion, U32, 0, ANY),
        Field(F::CatalogVersionNo, U32, 0, ANY),
        Field(F::State, U32, 0, ANY),
        Field(F::Time, U64, 0, ANY),
        Field(F::CheckPoint, U64, 0, ANY),
        // Removed in 11 (only the latest checkpoint is kept).
        Field(F::PrevCheckPoint, U64, 0, 1002),
        Align8, // CheckPoint checkPointCopy {
        Field(F::Redo, U64, 0, ANY),
        Field(F::ThisTimeLineId, U32, 0, ANY),
        Field(F::PrevTimeLineId, U32, 0, ANY),
        Field(F::FullPageWrites, Bool, 0, ANY),
        // Added in 17, in former padding.
        Field(F::CheckPointWalLevel, U32, 1700, ANY),
        // ≤ 11: 32-bit epoch + 32-bit xid; 12+: one 64-bit FullTransactionId.
        Field(F::NextXidEpoch, U32, 0, 1100),
        Field(F::NextXid, U32, 0, 1100),
        Field(F::NextXid, U64, 1201, ANY),
        Field(F::NextOid, U32, 0, ANY),
        Field(F::NextMulti, U32, 0, ANY),
        Field(F::NextMultiOffset, U32, 0, ANY),
        Field(F::OldestXid, U32, 0, ANY),
        Field(F::OldestXidDb, U32, 0, ANY),
        Field(F::OldestMulti, U32, 0, ANY),
        Field(F::OldestMultiDb, U32, 0, ANY),
        Field(F::CheckPointTime, U64, 0, ANY),
        Field(F::OldestCommitTsXid, U32, 0, ANY),
        Field(F::NewestCommitTsXid, U32, 0, ANY),
        Field(F::OldestActiveXid, U32, 0, ANY),
        Align8, // }
        Field(F::UnloggedLsn, U64, 0, ANY),
        Field(F::MinRecoveryPoint, U64, 0, ANY),
        Field(F::MinRecoveryPointTli, U32, 0, ANY),
        Field(F::BackupStartPoint, U64, 0, ANY),
        Field(F::BackupEndPoint, U64, 0, ANY),
        Field(F::BackupEndRequired, Bool, 0, ANY),
        Field(F::WalLevel, U32, 0, ANY),
        Field(F::WalLogHints, Bool, 0, ANY),
        Field(F::MaxConnections, U32, 0, ANY),
        Field(F::MaxWorkerProcesses, U32, 0, ANY),
        Field(F::MaxWalSenders, U32, 1201, ANY),
        Field(F::MaxPreparedXacts, U32, 0, ANY),
        Field(F::MaxLocksPerXact, U32, 0, ANY),
        Field(F::TrackCommitTimestamp, Bool, 0, ANY),
        Field(F::MaxAlign, U32, 0, ANY),
        Field(F::FloatFormat, F64, 0, ANY),
        Field(F::Blcksz, U32, 0, ANY),
        Field(F::RelsegSize, U32, 0, ANY),
        Field(F::XlogBlcksz, U32, 0, ANY),
        Field(F::XlogSegSize, U32, 0, ANY),
        Field(F::NameDataLen, U32, 0, ANY),
        Field(F::IndexMaxKeys, U32, 0, ANY),
        Field(F::ToastMaxChunkSize, U32, 0, ANY),
        Field(F::Loblksize, U32, 0, ANY),
        Field(F::EnableIntTimes, Bool, 0, 960),
        Field(F::Float4ByVal, Bool, 0, 1201),
        Field(F::Float8ByVal, Bool, 0, ANY),
        Field(F::DataChecksumVersion, U32, 0, ANY),
        Field(F::DefaultCharSignedness, Bool, 1800, ANY),
        Field(F::MockAuthenticationNonce, Nonce, 1002, ANY),
        Field(F::Crc, U32, 0, ANY),
    ]
};

const ABSENT: u16 = u16::MAX;

/// Where every field lives in one `pg_control_version`'s `ControlFileData`.
#[derive(Debug, PartialEq, Eq)]
pub struct ControlLayout {
    pub pg_control_version: u32,
    /// The majors using this layout, oldest first, as (`server_version_num` of the major,
    /// `catalog_version_no` of its release) — reference §4.2.
    pub majors: &'static [(u32, u32)],
    /// `sizeof(ControlFileData)`: the least number of bytes the server reads.
    pub struct_size: usize,
    offsets: [u16; ControlField::COUNT],
}

const fn align_up(off: usize, align: usize) -> usize {
    off.div_ceil(align) * align
}

impl ControlLayout {
    /// Lays out [`DECLS`] for `version` like a C compiler for x86_64 does.
    const fn compute(version: u32, majors: &'static [(u32, u32)]) -> ControlLayout {
        let mut offsets = [ABSENT; ControlField::COUNT];
        let mut off = 0;
        let mut i = 0;
        while i < DECLS.len() {
            match DECLS[i] {
                Decl::Align8 => off = align_up(off, 8),
                Decl::Field(field, ty, first, last) => {
                    if first <= version && version <= last {
                        let (size, align) = ty.size_align();
                        off = align_up(off, align);
                        offsets[field as usize] = off as u16;
                        off += size;
                    }
                }
            }
            i += 1;
        }
        ControlLayout {
            pg_control_version: version,
            majors,
            struct_size: align_up(off, 8),
            offsets,
        }
    }

    /// Every layout pgsafe knows, oldest first.
    pub fn all() -> &'static [ControlLayout] {
        &LAYOUTS
    }

    /// The layout of a `pg_control_version`, if known.
    pub fn for_version(pg_control_version: u32) -> Option<&'static ControlLayout> {
        LAYOUTS
            .iter()
            .find(|l| l.pg_control_version == pg_control_version)
    }

    /// Byte offset of `field` from the start of the file, or `None` if this version lacks it.
    pub fn offset(&self, field: ControlField) -> Option<usize> {
        match self.offsets[field as usize] {
            ABSENT => None,
            off => Some(usize::from(off)),
        }
    }

    /// `offsetof(ControlFileData, crc)`: the CRC covers the bytes before it.
    pub fn crc_offset(&self) -> usize {
        self.offset(ControlField::Crc).unwrap_or(self.struct_size)
    }

    /// True when `nextXid` is the ≤ 11 pair of 32-bit epoch and xid.
    fn split_next_xid(&self) -> bool {
        self.offset(ControlField::NextXidEpoch).is_some()
    }
}

static LAYOUTS: [ControlLayout; 7] = [
    ControlLayout::compute(960, &[(90600, 201608131)]),
    ControlLayout::compute(1002, &[(100000, 201707211)]),
    ControlLayout::compute(1100, &[(110000, 201809051)]),
    ControlLayout::compute(1201, &[(120000, 201909212)]),
    ControlLayout::compute(
        1300,
        &[
            (130000, 202007201),
            (140000, 202107181),
            (150000, 202209061),
            (160000, 202307071),
        ],
    ),
    ControlLayout::compute(1700, &[(170000, 202406281)]),
    ControlLayout::compute(1800, &[(180000, 202506291)]),
];

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

/// `CheckPoint checkPointCopy`: the contents of the latest checkpoint record (reference §4.4).
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

/// `len` bytes at `off`, zeros if out of range (never the case for a decoded file: its buffer
/// holds 8192 bytes and every offset is below 300).
fn bytes_at<const N: usize>(raw: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = raw.get(off..off.saturating_add(N)) {
        a.copy_from_slice(s);
    }
    a
}

/// Reads fields of one layout from a byte buffer; absent fields read as `None` (or zero in the
/// non-`Option` forms, used only for fields every version has).
struct Reader<'a> {
    raw: &'a [u8],
    layout: &'static ControlLayout,
}

impl Reader<'_> {
    fn get<const N: usize>(&self, f: ControlField) -> Option<[u8; N]> {
        self.layout.offset(f).map(|off| bytes_at(self.raw, off))
    }
    fn opt_u32(&self, f: ControlField) -> Option<u32> {
        self.get(f).map(u32::from_le_bytes)
    }
    fn opt_i32(&self, f: ControlField) -> Option<i32> {
        self.get(f).map(i32::from_le_bytes)
    }
    fn opt_bool(&self, f: ControlField) -> Option<bool> {
        self.get::<1>(f).map(|[b]| b != 0)
    }
    fn opt_lsn(&self, f: ControlField) -> Option<Lsn> {
        self.get(f).map(|b| Lsn(u64::from_le_bytes(b)))
    }
    fn u32(&self, f: ControlField) -> u32 {
        self.opt_u32(f).unwrap_or(0)
    }
    fn i32(&self, f: ControlField) -> i32 {
        self.opt_i32(f).unwrap_or(0)
    }
    fn u64(&self, f: ControlField) -> u64 {
        self.get(f).map_or(0, u64::from_le_bytes)
    }
    fn i64(&self, f: ControlField) -> i64 {
        self.get(f).map_or(0, i64::from_le_bytes)
    }
    fn bool(&self, f: ControlField) -> bool {
        self.opt_bool(f).unwrap_or(false)
    }
    fn lsn(&self, f: ControlField) -> Lsn {
        Lsn(self.u64(f))
    }
    fn tli(&self, f: ControlField) -> TimelineId {
        TimelineId(self.u32(f))
    }
}

/// Writes fields of one layout into a byte buffer; fields the layout lacks are skipped.
struct Writer {
    raw: Vec<u8>,
    layout: &'static ControlLayout,
}

impl Writer {
    /// Writes `bytes` where the layout has `f`; `None` writes nothing.
    fn put<const N: usize>(&mut self, f: ControlField, bytes: impl Into<Option<[u8; N]>>) {
        let (Some(off), Some(bytes)) = (self.layout.offset(f), bytes.into()) else {
            return;
        };
        if let Some(dst) = self.raw.get_mut(off..off.saturating_add(N)) {
            dst.copy_from_slice(&bytes);
        }
    }
    fn u32(&mut self, f: ControlField, v: u32) {
        self.put(f, v.to_le_bytes());
    }
    fn i32(&mut self, f: ControlField, v: i32) {
        self.put(f, v.to_le_bytes());
    }
    fn u64(&mut self, f: ControlField, v: u64) {
        self.put(f, v.to_le_bytes());
    }
    /// A `bool` byte is rewritten only if its truth value changes, so that a non-canonical
    /// byte (neither 0 nor 1) survives a decode/encode round trip. `None` writes nothing.
    fn bool(&mut self, f: ControlField, v: impl Into<Option<bool>>) {
        let (Some(off), Some(v)) = (self.layout.offset(f), v.into()) else {
            return;
        };
        if let Some(b) = self.raw.get_mut(off) {
            if (*b != 0) != v {
                *b = u8::from(v);
            }
        }
    }
}

impl ControlFile {
    /// Decodes a pg_control image, checking it in the server's order: layout version (with the
    /// byte-order heuristic), size, CRC, float format, WAL segment size. Accepts any length from
    /// `sizeof(ControlFileData)` on, like the server and pg_controldata, which read only that much.
    pub fn decode(bytes: &[u8]) -> Result<ControlFile, ControlError> {
        use ControlField as F;
        let min_size = LAYOUTS.iter().map(|l| l.struct_size).min().unwrap_or(0);
        let too_short = |expected| ControlError::TooShort {
            len: bytes.len(),
            expected,
        };
        if bytes.len() < 12 {
            return Err(too_short(min_size));
        }
        let version = u32::from_le_bytes(bytes_at(bytes, 8));
        let Some(layout) = ControlLayout::for_version(version) else {
            if version % 65536 == 0 && version / 65536 != 0 {
                return Err(ControlError::ByteOrder {
                    found: version,
                    swapped: version.swap_bytes(),
                });
            }
            return Err(ControlError::UnknownVersion(version));
        };
        if bytes.len() < layout.struct_size {
            return Err(too_short(layout.struct_size));
        }
        // The CRC covers [0, offsetof(crc)), padding included (reference §4.1).
        let computed = crc32c::crc32c(bytes.get(..layout.crc_offset()).unwrap_or_default());
        let stored = u32::from_le_bytes(bytes_at(bytes, layout.crc_offset()));
        if stored != computed {
            return Err(ControlError::BadCrc { stored, computed });
        }

        let mut raw = bytes.get(..PG_CONTROL_FILE_SIZE).unwrap_or(bytes).to_vec();
        raw.resize(PG_CONTROL_FILE_SIZE, 0);
        let r = Reader { raw: &raw, layout };

        let float_format = f64::from_le_bytes(r.get(F::FloatFormat).unwrap_or_default());
        if float_format != FLOAT_FORMAT_VALUE {
            return Err(ControlError::FloatFormat(float_format));
        }
        let seg = r.u32(F::XlogSegSize);
        let xlog_seg_size =
            WalSegSize::new(u64::from(seg)).map_err(|_| ControlError::SegSize(seg))?;

        let next_xid = if layout.split_next_xid() {
            FullTransactionId::from_epoch_xid(r.u32(F::NextXidEpoch), r.u32(F::NextXid))
        } else {
            FullTransactionId(r.u64(F::NextXid))
        };
        let checkpoint_copy = CheckPoint {
            redo: r.lsn(F::Redo),
            this_timeline: r.tli(F::ThisTimeLineId),
            prev_timeline: r.tli(F::PrevTimeLineId),
            full_page_writes: r.bool(F::FullPageWrites),
            wal_level: r.opt_i32(F::CheckPointWalLevel).map(WalLevel::from_i32),
            next_xid,
            next_oid: r.u32(F::NextOid),
            next_multi: r.u32(F::NextMulti),
            next_multi_offset: r.u32(F::NextMultiOffset),
            oldest_xid: r.u32(F::OldestXid),
            oldest_xid_db: r.u32(F::OldestXidDb),
            oldest_multi: r.u32(F::OldestMulti),
            oldest_multi_db: r.u32(F::OldestMultiDb),
            time: r.i64(F::CheckPointTime),
            oldest_commit_ts_xid: r.u32(F::OldestCommitTsXid),
            newest_commit_ts_xid: r.u32(F::NewestCommitTsXid),
            oldest_active_xid: r.u32(F::OldestActiveXid),
        };
        Ok(ControlFile {
            system_identifier: SystemId(r.u64(F::SystemIdentifier)),
            pg_control_version: version,
            catalog_version_no: r.u32(F::CatalogVersionNo),
            state: DbState::from_u32(r.u32(F::State)),
            time: r.i64(F::Time),
            checkpoint: r.lsn(F::CheckPoint),
            prev_checkpoint: r.opt_lsn(F::PrevCheckPoint),
            checkpoint_copy,
            unlogged_lsn: r.lsn(F::UnloggedLsn),
            min_recovery_point: r.lsn(F::MinRecoveryPoint),
            min_recovery_point_tli: r.tli(F::MinRecoveryPointTli),
            backup_start_point: r.lsn(F::BackupStartPoint),
            backup_end_point: r.lsn(F::BackupEndPoint),
            backup_end_required: r.bool(F::BackupEndRequired),
            wal_level: WalLevel::from_i32(r.i32(F::WalLevel)),
            wal_log_hints: r.bool(F::WalLogHints),
            max_connections: r.i32(F::MaxConnections),
            max_worker_processes: r.i32(F::MaxWorkerProcesses),
            max_wal_senders: r.opt_i32(F::MaxWalSenders),
            max_prepared_xacts: r.i32(F::MaxPreparedXacts),
            max_locks_per_xact: r.i32(F::MaxLocksPerXact),
            track_commit_timestamp: r.bool(F::TrackCommitTimestamp),
            max_align: r.u32(F::MaxAlign),
            float_format,
            blcksz: r.u32(F::Blcksz),
            relseg_size: r.u32(F::RelsegSize),
            xlog_blcksz: r.u32(F::XlogBlcksz),
            xlog_seg_size,
            name_data_len: r.u32(F::NameDataLen),
            index_max_keys: r.u32(F::IndexMaxKeys),
            toast_max_chunk_size: r.u32(F::ToastMaxChunkSize),
            loblksize: r.u32(F::Loblksize),
            enable_int_times: r.opt_bool(F::EnableIntTimes),
            float4_by_val: r.opt_bool(F::Float4ByVal),
            float8_by_val: r.bool(F::Float8ByVal),
            data_checksum_version: r.u32(F::DataChecksumVersion),
            default_char_signedness: r.opt_bool(F::DefaultCharSignedness),
            mock_authentication_nonce: r.get(F::MockAuthenticationNonce),
            crc: stored,
            layout,
            raw,
        })
    }

    /// The file bytes (8192) with every field written back at its offset into a copy of the
    /// decoded bytes, and a freshly computed CRC. Padding and unused bytes are kept as they were,
    /// so `encode(decode(b)) == b` for any valid 8192-byte `b`.
    ///
    /// The layout is the one the file was decoded with: changing `pg_control_version` writes the
    /// new number but does not move any field. `Option` fields are written only where the
    /// layout has them; `None` leaves the old bytes. `crc` is ignored (recomputed).
    pub fn encode(&self) -> Vec<u8> {
        use ControlField as F;
        let mut w = Writer {
            raw: self.raw.clone(),
            layout: self.layout,
        };
        w.u64(F::SystemIdentifier, self.system_identifier.0);
        w.u32(F::PgControlVersion, self.pg_control_version);
        w.u32(F::CatalogVersionNo, self.catalog_version_no);
        w.u32(F::State, self.state.to_u32());
        w.put(F::Time, self.time.to_le_bytes());
        w.u64(F::CheckPoint, self.checkpoint.0);
        w.put(
            F::PrevCheckPoint,
            self.prev_checkpoint.map(|l| l.0.to_le_bytes()),
        );
        let c = &self.checkpoint_copy;
        w.u64(F::Redo, c.redo.0);
        w.u32(F::ThisTimeLineId, c.this_timeline.0);
        w.u32(F::PrevTimeLineId, c.prev_timeline.0);
        w.bool(F::FullPageWrites, c.full_page_writes);
        w.put(
            F::CheckPointWalLevel,
            c.wal_level.map(|l| l.to_i32().to_le_bytes()),
        );
        if self.layout.split_next_xid() {
            w.u32(F::NextXidEpoch, c.next_xid.epoch());
            w.u32(F::NextXid, c.next_xid.xid());
        } else {
            w.u64(F::NextXid, c.next_xid.0);
        }
        w.u32(F::NextOid, c.next_oid);
        w.u32(F::NextMulti, c.next_multi);
        w.u32(F::NextMultiOffset, c.next_multi_offset);
        w.u32(F::OldestXid, c.oldest_xid);
        w.u32(F::OldestXidDb, c.oldest_xid_db);
        w.u32(F::OldestMulti, c.oldest_multi);
        w.u32(F::OldestMultiDb, c.oldest_multi_db);
        w.put(F::CheckPointTime, c.time.to_le_bytes());
        w.u32(F::OldestCommitTsXid, c.oldest_commit_ts_xid);
        w.u32(F::NewestCommitTsXid, c.newest_commit_ts_xid);
        w.u32(F::OldestActiveXid, c.oldest_active_xid);
        w.u64(F::UnloggedLsn, self.unlogged_lsn.0);
        w.u64(F::MinRecoveryPoint, self.min_recovery_point.0);
        w.u32(F::MinRecoveryPointTli, self.min_recovery_point_tli.0);
        w.u64(F::BackupStartPoint, self.backup_start_point.0);
        w.u64(F::BackupEndPoint, self.backup_end_point.0);
        w.bool(F::BackupEndRequired, self.backup_end_required);
        w.i32(F::WalLevel, self.wal_level.to_i32());
        w.bool(F::WalLogHints, self.wal_log_hints);
        w.i32(F::MaxConnections, self.max_connections);
        w.i32(F::MaxWorkerProcesses, self.max_worker_processes);
        w.put(F::MaxWalSenders, self.max_wal_senders.map(i32::to_le_bytes));
        w.i32(F::MaxPreparedXacts, self.max_prepared_xacts);
        w.i32(F::MaxLocksPerXact, self.max_locks_per_xact);
        w.bool(F::TrackCommitTimestamp, self.track_commit_timestamp);
        w.u32(F::MaxAlign, self.max_align);
        w.put(F::FloatFormat, self.float_format.to_le_bytes());
        w.u32(F::Blcksz, self.blcksz);
        w.u32(F::RelsegSize, self.relseg_size);
        w.u32(F::XlogBlcksz, self.xlog_blcksz);
        w.u32(F::XlogSegSize, self.xlog_seg_size.bytes() as u32);
        w.u32(F::NameDataLen, self.name_data_len);
        w.u32(F::IndexMaxKeys, self.index_max_keys);
        w.u32(F::ToastMaxChunkSize, self.toast_max_chunk_size);
        w.u32(F::Loblksize, self.loblksize);
        w.bool(F::EnableIntTimes, self.enable_int_times);
        w.bool(F::Float4ByVal, self.float4_by_val);
        w.bool(F::Float8ByVal, self.float8_by_val);
        w.u32(F::DataChecksumVersion, self.data_checksum_version);
        w.bool(F::DefaultCharSignedness, self.default_char_signedness);
        w.put(F::MockAuthenticationNonce, self.mock_authentication_nonce);
        let crc = crc32c::crc32c(w.raw.get(..self.layout.crc_offset()).unwrap_or_default());
        w.u32(F::Crc, crc);
        w.raw
    }

    /// The layout this file was decoded with.
    pub fn layout(&self) -> &'static ControlLayout {
        self.layout
    }

    /// The major version (minor 0) from `catalog_version_no` (reference §4.2): the oldest major
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

#[cfg(test)]
mod tests;
