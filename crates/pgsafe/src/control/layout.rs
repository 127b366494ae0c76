//! Where each field of `ControlFileData` lies, per `pg_control_version`: computed at compile time
//! from one declaration list that mirrors the C structs of `src/include/catalog/pg_control.h`
//! (9.6–18 merged), with x86_64's C alignment rules, so no offset is typed in by hand.

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
pub(super) enum Ty {
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
pub(super) enum Decl {
    Field(ControlField, Ty, u32, u32),
    Align8,
}

const ANY: u32 = u32::MAX;

/// `ControlFileData` as declared in pg_control.h, 9.6–18 merged (signed `int`, `pg_time_t` and
/// the `DBState`/`WalLevel` enums share the size and alignment of their unsigned counterparts).
pub(super) const DECLS: &[Decl] = {
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
    /// `catalog_version_no` of its release: `CATALOG_VERSION_NO` in
    /// `src/include/catalog/catversion.h`).
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
    pub(super) fn split_next_xid(&self) -> bool {
        self.offset(ControlField::NextXidEpoch).is_some()
    }
}

pub(super) static LAYOUTS: [ControlLayout; 7] = [
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
