//! Decoding one whole WAL record: its header (`XLogRecord`), its block references and where its
//! main data is, as the server's `DecodeXLogRecord` (`src/backend/access/transam/xlogreader.c`)
//! does, with the same checks. Pure: no IO; never panics on any bytes.
//!
//! Layout (`src/include/access/xlogrecord.h`, unchanged in 10–18 but for the points below):
//! * `XLogRecord`, 24 bytes: `xl_tot_len` u32, `xl_xid` u32, `xl_prev` u64, `xl_info` u8,
//!   `xl_rmid` u8, 2 padding bytes, `xl_crc` u32. The CRC-32C covers the bytes after the header,
//!   then the header up to `xl_crc`.
//! * then fragment headers, each starting with an id byte, unaligned:
//!   * 0..=32 (`XLR_MAX_BLOCK_ID`), a block reference, ids strictly increasing:
//!     `fork_flags` u8 (fork in the low 4 bits; `BKPBLOCK_HAS_IMAGE` 0x10, `HAS_DATA` 0x20,
//!     `WILL_INIT` 0x40, `SAME_REL` 0x80), `data_length` u16; with an image
//!     `XLogRecordBlockImageHeader` (`length` u16, `hole_offset` u16, `bimg_info` u8) and, when
//!     the image has a hole and is compressed, `hole_length` u16; without `SAME_REL` the
//!     relation (12 bytes: tablespace, database, relfilenode — `RelFileNode` before 16,
//!     `RelFileLocator` from 16, the same bytes); then the block number u32;
//!   * 253 `XLR_BLOCK_ID_ORIGIN`: a replication origin u16;
//!   * 252 `XLR_BLOCK_ID_TOPLEVEL_XID` (14+): the top-level transaction id u32;
//!   * 255 `XLR_BLOCK_ID_DATA_SHORT` (u8 length) or 254 `XLR_BLOCK_ID_DATA_LONG` (u32 length):
//!     the main data header, always last;
//! * then the block images and block data in block order, then the main data; their lengths
//!   must add up to exactly what is left of the record.
//! * `bimg_info` (the only format change): 10–14 `BKPIMAGE_HAS_HOLE` 0x01,
//!   `BKPIMAGE_IS_COMPRESSED` 0x02 (pglz), `BKPIMAGE_APPLY` 0x04; 15+ `HAS_HOLE` 0x01,
//!   `APPLY` 0x02, `COMPRESS_PGLZ` 0x04, `COMPRESS_LZ4` 0x08, `COMPRESS_ZSTD` 0x10.

use serde::{Deserialize, Serialize};

use crate::types::Lsn;

/// Size of `XLogRecord`.
pub const RECORD_HEADER_SIZE: usize = 24;
/// Highest block reference id (`XLR_MAX_BLOCK_ID`).
pub const XLR_MAX_BLOCK_ID: u8 = 32;
const BLOCK_ID_DATA_SHORT: u8 = 255;
const BLOCK_ID_DATA_LONG: u8 = 254;
const BLOCK_ID_ORIGIN: u8 = 253;
const BLOCK_ID_TOPLEVEL_XID: u8 = 252;

const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_WILL_INIT: u8 = 0x40;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;

/// `XLR_SPECIAL_REL_UPDATE` in `xl_info`: the record changes relation files in ways its block
/// references do not say (the server sets it on smgr create/truncate and a few others).
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;
/// `XLR_RMGR_INFO_MASK`: the high nibble of `xl_info` is the resource manager's own.
pub const XLR_RMGR_INFO_MASK: u8 = 0xF0;
/// Highest built-in resource manager id (`RM_LOGICALMSG_ID`, the same in 10–18,
/// `src/include/access/rmgrlist.h`).
pub const RM_MAX_BUILTIN_ID: u8 = 21;
/// First custom resource manager id (`RM_MIN_CUSTOM_ID`, 15+).
pub const RM_MIN_CUSTOM_ID: u8 = 128;

/// The name `pg_waldump` prints for a built-in resource manager (`rmgrlist.h`).
pub fn rmgr_name(rmid: u8) -> Option<&'static str> {
    const NAMES: [&str; 22] = [
        "XLOG",
        "Transaction",
        "Storage",
        "CLOG",
        "Database",
        "Tablespace",
        "MultiXact",
        "RelMap",
        "Standby",
        "Heap2",
        "Heap",
        "Btree",
        "Hash",
        "Gin",
        "Gist",
        "Sequence",
        "SPGist",
        "BRIN",
        "CommitTs",
        "ReplicationOrigin",
        "Generic",
        "LogicalMessage",
    ];
    NAMES.get(usize::from(rmid)).copied()
}

/// A relation's physical identity (`RelFileNode` in 10–15, `RelFileLocator` in 16+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelFileLocator {
    /// Tablespace OID (1663 `pg_default`, 1664 `pg_global`).
    pub spc_oid: u32,
    /// Database OID (0 for shared relations).
    pub db_oid: u32,
    /// The relation's file number (`relfilenode`).
    pub rel_number: u32,
}

impl std::fmt::Display for RelFileLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.spc_oid, self.db_oid, self.rel_number)
    }
}

/// A relation fork (`ForkNumber`, `src/include/common/relpath.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fork {
    Main = 0,
    Fsm = 1,
    Vm = 2,
    Init = 3,
}

impl Fork {
    pub fn from_number(n: u32) -> Option<Fork> {
        match n {
            0 => Some(Fork::Main),
            1 => Some(Fork::Fsm),
            2 => Some(Fork::Vm),
            3 => Some(Fork::Init),
            _ => None,
        }
    }

    /// `forkNames[]`: `main`, `fsm`, `vm`, `init` (also the file name suffixes but main's).
    pub fn name(self) -> &'static str {
        match self {
            Fork::Main => "main",
            Fork::Fsm => "fsm",
            Fork::Vm => "vm",
            Fork::Init => "init",
        }
    }

    pub fn from_name(name: &str) -> Option<Fork> {
        [Fork::Main, Fork::Fsm, Fork::Vm, Fork::Init]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// How a full-page image is compressed (`wal_compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageCompression {
    None,
    Pglz,
    Lz4,
    Zstd,
}

/// A full-page image in a block reference (its bytes are skipped, never decompressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BlockImage {
    /// Bytes of the image stored in the record.
    pub length: u16,
    pub hole_offset: u16,
    pub hole_length: u16,
    /// Replay restores the image (`BKPIMAGE_APPLY`; otherwise it is only for consistency checks).
    pub apply: bool,
    pub compression: ImageCompression,
}

/// One block reference of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BlockRef {
    pub id: u8,
    pub rel: RelFileLocator,
    pub fork: Fork,
    pub block: u32,
    pub image: Option<BlockImage>,
    /// Bytes of rmgr data for this block.
    pub data_len: u16,
    /// Replay initialises the page from nothing (`BKPBLOCK_WILL_INIT`).
    pub will_init: bool,
}

/// A decoded record: its header fields, block references and main data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodedRecord<'a> {
    pub lsn: Lsn,
    pub tot_len: u32,
    pub xid: u32,
    pub prev: Lsn,
    /// `xl_info`: the high nibble is the resource manager's record type, the low nibble flags.
    pub info: u8,
    pub rmid: u8,
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
    pub blocks: Vec<BlockRef>,
    #[serde(skip)]
    pub main_data: &'a [u8],
}

impl DecodedRecord<'_> {
    /// The resource manager's record type (`xl_info & XLR_RMGR_INFO_MASK`).
    pub fn rmgr_info(&self) -> u8 {
        self.info & XLR_RMGR_INFO_MASK
    }
}

/// The record format details that vary: the major version (96 = 9.6) and the data block size
/// (`BLCKSZ` of the cluster, pg_control's `blcksz`; 8192 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordFormat {
    pub major: u32,
    pub blcksz: u32,
}

impl RecordFormat {
    pub fn new(major: u32, blcksz: u32) -> Self {
        RecordFormat { major, blcksz }
    }

    /// `bimg_info` → (apply, compression), or `None` for bits this major never sets.
    fn image_flags(self, bimg_info: u8) -> Option<(bool, ImageCompression)> {
        if self.major >= 15 {
            if bimg_info & !0x1F != 0 {
                return None;
            }
            let compression = match bimg_info & 0x1C {
                0 => ImageCompression::None,
                0x04 => ImageCompression::Pglz,
                0x08 => ImageCompression::Lz4,
                0x10 => ImageCompression::Zstd,
                _ => return None,
            };
            Some((bimg_info & 0x02 != 0, compression))
        } else {
            if bimg_info & !0x07 != 0 {
                return None;
            }
            let compression = if bimg_info & 0x02 != 0 {
                ImageCompression::Pglz
            } else {
                ImageCompression::None
            };
            Some((bimg_info & 0x04 != 0, compression))
        }
    }
}

/// What is wrong with a record (the server's `DecodeXLogRecord` messages, where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("WAL record at {lsn}: {what}")]
pub struct DecodeError {
    pub lsn: Lsn,
    pub what: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecodeErrorKind {
    #[error("{len} bytes given, but the header says the record has {tot_len}")]
    Length { len: usize, tot_len: u32 },
    #[error("record length {len} is shorter than the 24-byte record header")]
    TooShort { len: usize },
    #[error(
        "incorrect resource manager data checksum: stored CRC-32C {stored:08x}, computed {computed:08x}"
    )]
    Crc { stored: u32, computed: u32 },
    #[error("invalid resource manager ID {rmid}")]
    Rmgr { rmid: u8 },
    #[error("record with invalid length (its fragment headers or data do not fit in it)")]
    ShortData,
    #[error("out-of-order block_id {id}")]
    BlockOrder { id: u8 },
    #[error("invalid block_id {id}")]
    BlockId { id: u8 },
    #[error("block reference {id}: fork number {fork} does not exist")]
    Fork { id: u8, fork: u8 },
    #[error("block reference {id}: BKPBLOCK_HAS_DATA set, but no data included")]
    NoData { id: u8 },
    #[error("block reference {id}: BKPBLOCK_HAS_DATA not set, but data length is {len}")]
    UnexpectedData { id: u8, len: u16 },
    #[error("block reference {id}: invalid image flags 0x{bimg_info:02X} for PostgreSQL {major}")]
    ImageFlags { id: u8, bimg_info: u8, major: u32 },
    #[error(
        "block reference {id}: image of {length} bytes with hole at {hole_offset} of {hole_length} bytes is not a valid page image"
    )]
    Image {
        id: u8,
        length: u16,
        hole_offset: u16,
        hole_length: u16,
    },
    #[error("block reference {id}: BKPBLOCK_SAME_REL set but no previous rel")]
    SameRel { id: u8 },
}

/// Reads fragment headers, counting what is left as the server's `COPY_HEADER_FIELD` does.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }
}

/// The header fields of a record (the first 24 bytes; `None` if fewer).
pub fn header_fields(bytes: &[u8]) -> Option<(u32, u32, Lsn, u8, u8, u32)> {
    let h = bytes.get(..RECORD_HEADER_SIZE)?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let prev = u64::from(u32_at(8)) | (u64::from(u32_at(12)) << 32);
    Some((u32_at(0), u32_at(4), Lsn(prev), h[16], h[17], u32_at(20)))
}

/// The CRC-32C the server stores in `xl_crc` for a whole record: the bytes after the header,
/// then the header up to `xl_crc`.
pub fn record_crc(bytes: &[u8]) -> Option<u32> {
    let body = bytes.get(RECORD_HEADER_SIZE..)?;
    let crc = crc32c::crc32c(body);
    Some(crc32c::crc32c_append(crc, bytes.get(..20)?))
}

/// Decodes the whole record `bytes` (exactly `xl_tot_len` bytes) that starts at `lsn`: checks
/// its CRC, resource manager id and fragment headers, and returns its block references.
pub fn decode_record(
    lsn: Lsn,
    bytes: &[u8],
    format: RecordFormat,
) -> Result<DecodedRecord<'_>, DecodeError> {
    let err = |what| Err(DecodeError { lsn, what });
    let Some((tot_len, xid, prev, info, rmid, stored)) = header_fields(bytes) else {
        return err(DecodeErrorKind::TooShort { len: bytes.len() });
    };
    if usize::try_from(tot_len).ok() != Some(bytes.len()) {
        return err(DecodeErrorKind::Length {
            len: bytes.len(),
            tot_len,
        });
    }
    let computed = record_crc(bytes).unwrap_or(0);
    if computed != stored {
        return err(DecodeErrorKind::Crc { stored, computed });
    }
    let custom = format.major >= 15 && rmid >= RM_MIN_CUSTOM_ID;
    if rmid > RM_MAX_BUILTIN_ID && !custom {
        return err(DecodeErrorKind::Rmgr { rmid });
    }
    let mut c = Cursor {
        bytes: &bytes[RECORD_HEADER_SIZE..],
        at: 0,
    };
    let short = || DecodeError {
        lsn,
        what: DecodeErrorKind::ShortData,
    };
    let (mut origin, mut toplevel_xid) = (None, None);
    let mut blocks: Vec<BlockRef> = Vec::new();
    let mut last_rel: Option<RelFileLocator> = None;
    let mut datatotal: u64 = 0;
    let mut main_len: u64 = 0;
    while (c.left() as u64) > datatotal {
        let id = c.u8().ok_or_else(short)?;
        match id {
            BLOCK_ID_DATA_SHORT => {
                main_len = u64::from(c.u8().ok_or_else(short)?);
                datatotal += main_len;
                break;
            }
            BLOCK_ID_DATA_LONG => {
                main_len = u64::from(c.u32().ok_or_else(short)?);
                datatotal += main_len;
                break;
            }
            BLOCK_ID_ORIGIN => origin = Some(c.u16().ok_or_else(short)?),
            BLOCK_ID_TOPLEVEL_XID if format.major >= 14 => {
                toplevel_xid = Some(c.u32().ok_or_else(short)?)
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if blocks.last().is_some_and(|b| id <= b.id) {
                    return err(DecodeErrorKind::BlockOrder { id });
                }
                let fork_flags = c.u8().ok_or_else(short)?;
                let data_len = c.u16().ok_or_else(short)?;
                let fork_no = fork_flags & BKPBLOCK_FORK_MASK;
                let Some(fork) = Fork::from_number(u32::from(fork_no)) else {
                    return err(DecodeErrorKind::Fork { id, fork: fork_no });
                };
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data && data_len == 0 {
                    return err(DecodeErrorKind::NoData { id });
                }
                if !has_data && data_len != 0 {
                    return err(DecodeErrorKind::UnexpectedData { id, len: data_len });
                }
                datatotal += u64::from(data_len);
                let image = if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let length = c.u16().ok_or_else(short)?;
                    let hole_offset = c.u16().ok_or_else(short)?;
                    let bimg_info = c.u8().ok_or_else(short)?;
                    let Some((apply, compression)) = format.image_flags(bimg_info) else {
                        let major = format.major;
                        return err(DecodeErrorKind::ImageFlags {
                            id,
                            bimg_info,
                            major,
                        });
                    };
                    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
                    let compressed = compression != ImageCompression::None;
                    let hole_length = if compressed {
                        if has_hole {
                            c.u16().ok_or_else(short)?
                        } else {
                            0
                        }
                    } else {
                        u16::try_from(format.blcksz.saturating_sub(u32::from(length)))
                            .unwrap_or(u16::MAX)
                    };
                    datatotal += u64::from(length);
                    let full = u32::from(length) == format.blcksz;
                    let bad = if has_hole {
                        hole_offset == 0 || hole_length == 0 || full
                    } else {
                        hole_offset != 0 || hole_length != 0 || (!compressed && !full)
                    } || (compressed && full);
                    if bad {
                        return err(DecodeErrorKind::Image {
                            id,
                            length,
                            hole_offset,
                            hole_length,
                        });
                    }
                    Some(BlockImage {
                        length,
                        hole_offset,
                        hole_length,
                        apply,
                        compression,
                    })
                } else {
                    None
                };
                let rel = if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let spc_oid = c.u32().ok_or_else(short)?;
                    let db_oid = c.u32().ok_or_else(short)?;
                    let rel_number = c.u32().ok_or_else(short)?;
                    RelFileLocator {
                        spc_oid,
                        db_oid,
                        rel_number,
                    }
                } else {
                    match last_rel {
                        Some(r) => r,
                        None => return err(DecodeErrorKind::SameRel { id }),
                    }
                };
                last_rel = Some(rel);
                let block = c.u32().ok_or_else(short)?;
                blocks.push(BlockRef {
                    id,
                    rel,
                    fork,
                    block,
                    image,
                    data_len,
                    will_init: fork_flags & BKPBLOCK_WILL_INIT != 0,
                });
            }
            id => return err(DecodeErrorKind::BlockId { id }),
        }
    }
    if c.left() as u64 != datatotal {
        return Err(short());
    }
    // The main data is last.
    let main_start = bytes.len() - main_len as usize;
    Ok(DecodedRecord {
        lsn,
        tot_len,
        xid,
        prev,
        info,
        rmid,
        origin,
        toplevel_xid,
        blocks,
        main_data: &bytes[main_start..],
    })
}

#[cfg(test)]
mod tests;
