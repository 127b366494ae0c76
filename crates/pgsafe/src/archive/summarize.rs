//! pgsafe's own WAL summaries: while archive-push reads a segment, its records are decoded
//! into the blocks they change ([`crate::changed::apply_record`]), and the result is stored
//! once next to the archive ([`crate::layout::wal_summary_object`]). They give incremental
//! backups the changed blocks on every major, where the server's summaries (17+) are not.
//!
//! A record crossing into the next segment is in neither segment's summary by itself: a
//! segment's summary keeps the bytes of the record still incomplete at its end (`straddle`),
//! the next segment's the bytes continued at its start (`head`); whoever joins the summaries
//! of consecutive segments joins the two ([`join_straddle`]) and decodes the record (its CRC
//! says whether the halves belong together). Either side larger than [`KEEP_LIMIT`] is not kept,
//! and the join is then a doubt. So a summary never needs another segment to be read.
//!
//! Summarizing never fails a push: whatever cannot be read or decoded is a `doubt` in the
//! summary (every file is then copied whole), and a summary that cannot be stored is simply
//! absent (the backup falls back to a page scan).

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::changed::{ChangedBlocks, apply_record};
use crate::storage::{Backend, Ident, PutOptions};
use crate::types::{Lsn, WalSegSize, WalSegment};
use crate::wal::record::decode::{Fork, RecordFormat, RelFileLocator, decode_record};
use crate::wal::record::reader::WalReader;
use crate::wal::{LONG_HEADER_SIZE, SHORT_HEADER_SIZE, WalPageHeader, XLP_FIRST_IS_CONTRECORD};

/// Version of the summary document.
pub const SUMMARY_FORMAT: u32 = 1;
/// Largest part of a straddling record kept in a summary.
pub const KEEP_LIMIT: usize = 1 << 20;

/// One fork's changes, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFork {
    pub rel: RelFileLocator,
    pub fork: Fork,
    pub limit_block: Option<u32>,
    pub blocks: Vec<u32>,
}

/// The bytes of a record cut by the segment's end (or start); `bytes` is hex, absent when
/// longer than [`KEEP_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// Where the record starts (for a head: unknown here, so the segment's start).
    pub lsn: Lsn,
    pub len: u64,
    pub bytes: Option<String>,
}

/// The summary of one archived segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    pub format: u32,
    pub segment: String,
    pub major: u32,
    /// Why this segment's changes are not known (then every file must be copied whole).
    pub doubt: Option<String>,
    /// The record begun in this segment and continued in the next.
    pub straddle: Option<Cut>,
    /// The end of a record begun in the segment before.
    pub head: Option<Cut>,
    pub forks: Vec<StoredFork>,
}

impl SegmentSummary {
    /// The changed blocks of the records that start and end in this segment.
    pub fn changed(&self) -> ChangedBlocks {
        let mut c = ChangedBlocks::new();
        if let Some(d) = &self.doubt {
            c.set_doubt(d.clone());
        }
        for f in &self.forks {
            if let Some(l) = f.limit_block {
                c.set_limit(f.rel, f.fork, l);
            }
            for &b in &f.blocks {
                c.mark_block(f.rel, f.fork, b);
            }
        }
        c
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<SegmentSummary> {
        serde_json::from_slice(bytes)
            .ok()
            .filter(|s: &SegmentSummary| s.format == SUMMARY_FORMAT)
    }
}

/// Adds the record that `before`'s straddle and `after`'s head make (consecutive segments)
/// to `into`; a doubt when they are missing or do not make a valid record.
pub fn join_straddle(before: &SegmentSummary, after: &SegmentSummary, into: &mut ChangedBlocks) {
    let Some(s) = &before.straddle else {
        return;
    };
    let doubt = |into: &mut ChangedBlocks, why: &str| {
        into.set_doubt(format!(
            "the WAL record at {} crossing from segment {} into {}: {why}",
            s.lsn, before.segment, after.segment
        ))
    };
    let (Some(a), Some(b)) = (
        s.bytes.as_deref().and_then(|h| hex::decode(h).ok()),
        after
            .head
            .as_ref()
            .and_then(|h| h.bytes.as_deref())
            .and_then(|h| hex::decode(h).ok()),
    ) else {
        return doubt(into, "its bytes are not in the summaries");
    };
    let mut rec = a;
    rec.extend_from_slice(&b);
    let format = RecordFormat::new(before.major, 8192);
    match decode_record(s.lsn, &rec, format) {
        Ok(r) => apply_record(into, &r, before.major),
        Err(e) => doubt(into, &e.to_string()),
    }
}

/// Summarizes one segment from its bytes, fed in any chunks, in order.
pub struct SegmentSummarizer {
    seg: WalSegment,
    first: Lsn,
    seg_size: u64,
    seg_size_t: WalSegSize,
    major: u32,
    reader: Option<WalReader>,
    page_size: usize,
    page: Vec<u8>,
    fed: u64,
    set: ChangedBlocks,
    /// Continuation bytes of a record from the segment before: collected, still to come.
    head: Vec<u8>,
    head_left: u32,
    head_len: u64,
    read_error: bool,
}

impl SegmentSummarizer {
    pub fn new(seg: WalSegment, seg_size: WalSegSize, major: u32) -> Option<SegmentSummarizer> {
        let first = seg.start_lsn(seg_size).ok()?;
        Some(SegmentSummarizer {
            seg,
            first,
            seg_size: seg_size.bytes(),
            seg_size_t: seg_size,
            major,
            reader: None,
            page_size: 0,
            page: Vec::new(),
            fed: 0,
            set: ChangedBlocks::new(),
            head: Vec::new(),
            head_left: 0,
            head_len: 0,
            read_error: false,
        })
    }

    /// Feeds the next bytes of the segment.
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.page_size == 0 {
                // The long header says the page size.
                let want = LONG_HEADER_SIZE.saturating_sub(self.page.len());
                let take = want.min(buf.len());
                self.page.extend_from_slice(&buf[..take]);
                buf = &buf[take..];
                if self.page.len() < LONG_HEADER_SIZE {
                    return;
                }
                let size = WalPageHeader::decode(&self.page)
                    .ok()
                    .and_then(|h| h.long)
                    .map_or(0, |l| l.xlog_blcksz as usize);
                if size < 2 * LONG_HEADER_SIZE || self.seg_size % size as u64 != 0 {
                    self.set.set_doubt(format!(
                        "segment {} has no valid long page header",
                        self.seg
                    ));
                    self.read_error = true;
                    self.page_size = usize::MAX;
                } else {
                    self.page_size = size;
                    self.reader = Some(WalReader::new(self.first, self.seg_size_t, size as u32));
                }
                continue;
            }
            if self.read_error {
                return;
            }
            let want = self.page_size - self.page.len();
            let take = want.min(buf.len());
            if take == self.page_size {
                // A whole page in place: no copy.
                let (p, rest) = buf.split_at(take);
                self.page_done(p);
                buf = rest;
                continue;
            }
            self.page.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.page.len() == self.page_size {
                let p = std::mem::take(&mut self.page);
                self.page_done(&p);
                self.page = p;
                self.page.clear();
            }
        }
    }

    fn page_done(&mut self, page: &[u8]) {
        let page_lsn = Lsn(self.first.0 + self.fed);
        self.fed += page.len() as u64;
        let hsize = if self.fed as usize == page.len() {
            LONG_HEADER_SIZE
        } else {
            SHORT_HEADER_SIZE
        };
        // The continuation of a record begun in the segment before.
        if let Ok(h) = WalPageHeader::decode(page) {
            if self.fed as usize == page.len() && h.info & XLP_FIRST_IS_CONTRECORD != 0 {
                self.head_left = h.rem_len;
                self.head_len = u64::from(h.rem_len);
            }
            if self.head_left > 0 {
                let take = (self.head_left as usize).min(page.len() - hsize);
                if self.head_len as usize <= KEEP_LIMIT {
                    self.head.extend_from_slice(&page[hsize..hsize + take]);
                }
                self.head_left -= take as u32;
            }
        }
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let (set, major, seg) = (&mut self.set, self.major, self.seg);
        let format = RecordFormat::new(major, 8192);
        let r = reader.feed_page(page_lsn, page, seg.tli, &mut |raw| match decode_record(
            raw.lsn, raw.bytes, format,
        ) {
            Ok(rec) => apply_record(set, &rec, major),
            Err(e) => set.set_doubt(format!("segment {seg}: {e}")),
        });
        if let Err(e) = r {
            self.set
                .set_doubt(format!("segment {} could not be read: {e}", self.seg));
            self.read_error = true;
        }
    }

    /// The summary of what was fed.
    pub fn finish(self) -> SegmentSummary {
        let mut set = self.set;
        if self.fed != self.seg_size && !self.read_error {
            set.set_doubt(format!(
                "segment {} was read only in part ({} of {} bytes)",
                self.seg, self.fed, self.seg_size
            ));
        }
        let cut = |lsn, b: &[u8], len: u64| Cut {
            lsn,
            len,
            bytes: (b.len() <= KEEP_LIMIT && b.len() as u64 == len).then(|| hex::encode(b)),
        };
        let straddle = self
            .reader
            .as_ref()
            .and_then(|r| r.partial_record())
            .map(|(lsn, b)| cut(lsn, b, b.len() as u64));
        let head = (self.head_len > 0).then(|| cut(self.first, &self.head, self.head_len));
        let forks = set
            .forks()
            .map(|(&(rel, fork), c)| StoredFork {
                rel,
                fork,
                limit_block: c.limit_block,
                blocks: c.blocks.iter().copied().collect(),
            })
            .collect();
        SegmentSummary {
            format: SUMMARY_FORMAT,
            segment: self.seg.to_string(),
            major: self.major,
            doubt: set.doubt().map(str::to_string),
            straddle,
            head,
            forks,
        }
    }
}

/// Stores `summary` of `seg` once; an existing summary is kept. Errors are returned for the
/// caller to ignore: a missing summary only means a page scan later.
pub fn store(
    backend: &dyn Backend,
    cluster: &Ident,
    seg: WalSegment,
    summary: &SegmentSummary,
) -> Result<(), crate::storage::StorageError> {
    let name = crate::layout::wal_summary_object(cluster, seg)?;
    let mut w = backend.writer(&name, PutOptions::default())?;
    let bytes = summary.encode();
    w.write_all(&bytes)
        .map_err(|e| crate::storage::StorageError::io("store", &name, e))?;
    w.finish().map(|_| ())
}

/// Reads the stored summary of `seg`, if there is one and it is readable.
pub fn load(backend: &dyn Backend, cluster: &Ident, seg: WalSegment) -> Option<SegmentSummary> {
    let name = crate::layout::wal_summary_object(cluster, seg).ok()?;
    let mut r = backend.read(&name).ok()?;
    let mut bytes = Vec::new();
    (&mut r).take(64 << 20).read_to_end(&mut bytes).ok()?;
    SegmentSummary::decode(&bytes)
}

#[cfg(test)]
mod tests;

/// The summary a push makes of the segment it stores (nothing for other files).
pub(crate) struct PushSummary(Option<SegmentSummarizer>);

impl PushSummary {
    pub(crate) fn start(
        file: &crate::layout::ArchiveFile,
        reg: &crate::repo::Registration,
    ) -> Self {
        let s = match file {
            crate::layout::ArchiveFile::Segment(seg) => {
                SegmentSummarizer::new(*seg, reg.wal_segment_size, reg.server_version.major())
            }
            _ => None,
        };
        PushSummary(s)
    }

    pub(crate) fn feed(&mut self, buf: &[u8]) {
        if let Some(s) = self.0.as_mut() {
            s.feed(buf);
        }
    }

    /// Stores the summary once the segment is stored; a failure leaves no summary (a page
    /// scan later), never a failed push.
    pub(crate) fn store(self, backend: &dyn Backend, cluster: &Ident) {
        if let Some(s) = self.0 {
            let seg = s.seg;
            let _ = store(backend, cluster, seg, &s.finish());
        }
    }
}
