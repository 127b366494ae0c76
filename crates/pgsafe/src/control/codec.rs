//! Decoding and encoding of the pg_control image: the checks the server makes when it reads the
//! file (`ReadControlFile` in `src/backend/access/transam/xlog.c`), in its order, and the writer
//! that puts every field back at its offset and recomputes the CRC.

use super::layout::{ControlField, ControlLayout, LAYOUTS};
use super::{
    CheckPoint, ControlError, ControlFile, DbState, FLOAT_FORMAT_VALUE, FullTransactionId,
    PG_CONTROL_FILE_SIZE, WalLevel,
};
use crate::types::{Lsn, SystemId, TimelineId, WalSegSize};

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
        // The CRC covers [0, offsetof(crc)), padding included, as `ReadControlFile` in
        // `src/backend/access/transam/xlog.c` computes it.
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
}
