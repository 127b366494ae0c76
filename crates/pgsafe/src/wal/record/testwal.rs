//! Test support: builds WAL records and lays them out on WAL pages as the server writes them
//! (`XLogRecordAssemble` in `xloginsert.c`, `CopyXLogRecordToWAL` in `xlog.c`), so the
//! decoder and the reader can be checked against bytes with known contents.

use crate::types::{Lsn, TimelineId};
use crate::wal::{LONG_HEADER_SIZE, SHORT_HEADER_SIZE, XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER};

use super::decode::{BlockRef, ImageCompression, RECORD_HEADER_SIZE};

/// A record to build: the block references (with their images and data lengths; bytes are
/// filled with a pattern), the main data, and the header fields.
#[derive(Debug, Clone)]
pub struct Spec {
    pub rmid: u8,
    pub info: u8,
    pub xid: u32,
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
    pub blocks: Vec<BlockRef>,
    pub main: Vec<u8>,
}

/// `bimg_info` bits for an image in `major`'s format.
fn bimg_info(major: u32, b: &BlockRef) -> u8 {
    let Some(img) = b.image else { return 0 };
    let mut info = u8::from(img.hole_length != 0 || img.hole_offset != 0);
    if major >= 15 {
        info |= if img.apply { 0x02 } else { 0 };
        info |= match img.compression {
            ImageCompression::None => 0,
            ImageCompression::Pglz => 0x04,
            ImageCompression::Lz4 => 0x08,
            ImageCompression::Zstd => 0x10,
        };
    } else {
        info |= if img.apply { 0x04 } else { 0 };
        info |= if img.compression == ImageCompression::None {
            0
        } else {
            0x02
        };
    }
    info
}

/// The record's bytes with `xl_prev` = `prev` and its CRC.
pub fn encode(spec: &Spec, prev: Lsn, major: u32) -> Vec<u8> {
    let mut headers = Vec::new();
    let mut payload = Vec::new();
    let mut last_rel = None;
    for b in &spec.blocks {
        let same = last_rel == Some(b.rel);
        let mut flags = b.fork as u8;
        flags |= if b.image.is_some() { 0x10 } else { 0 };
        flags |= if b.data_len > 0 { 0x20 } else { 0 };
        flags |= if b.will_init { 0x40 } else { 0 };
        flags |= if same { 0x80 } else { 0 };
        headers.push(b.id);
        headers.push(flags);
        headers.extend_from_slice(&b.data_len.to_le_bytes());
        if let Some(img) = b.image {
            headers.extend_from_slice(&img.length.to_le_bytes());
            headers.extend_from_slice(&img.hole_offset.to_le_bytes());
            let info = bimg_info(major, b);
            headers.push(info);
            if info & 0x01 != 0 && img.compression != ImageCompression::None {
                headers.extend_from_slice(&img.hole_length.to_le_bytes());
            }
            payload.extend((0..img.length).map(|i| (i % 251) as u8));
        }
        if !same {
            headers.extend_from_slice(&b.rel.spc_oid.to_le_bytes());
            headers.extend_from_slice(&b.rel.db_oid.to_le_bytes());
            headers.extend_from_slice(&b.rel.rel_number.to_le_bytes());
        }
        headers.extend_from_slice(&b.block.to_le_bytes());
        payload.extend((0..b.data_len).map(|i| (i % 13) as u8));
        last_rel = Some(b.rel);
    }
    if let Some(o) = spec.origin {
        headers.push(253);
        headers.extend_from_slice(&o.to_le_bytes());
    }
    if let Some(x) = spec.toplevel_xid {
        headers.push(252);
        headers.extend_from_slice(&x.to_le_bytes());
    }
    if !spec.main.is_empty() {
        if spec.main.len() < 256 {
            headers.push(255);
            headers.push(spec.main.len() as u8);
        } else {
            headers.push(254);
            headers.extend_from_slice(&(spec.main.len() as u32).to_le_bytes());
        }
    }
    let tot = RECORD_HEADER_SIZE + headers.len() + payload.len() + spec.main.len();
    let mut rec = Vec::with_capacity(tot);
    rec.extend_from_slice(&(tot as u32).to_le_bytes());
    rec.extend_from_slice(&spec.xid.to_le_bytes());
    rec.extend_from_slice(&prev.0.to_le_bytes());
    rec.push(spec.info);
    rec.push(spec.rmid);
    rec.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    rec.extend_from_slice(&headers);
    rec.extend_from_slice(&payload);
    rec.extend_from_slice(&spec.main);
    let crc = super::decode::record_crc(&rec).expect("header present");
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// WAL pages being written from `first_page` on.
pub struct Writer {
    pub first_page: Lsn,
    pub page_size: u64,
    pub seg_size: u64,
    pub magic: u16,
    pub tli: TimelineId,
    pub bytes: Vec<u8>,
    /// Where the next record goes.
    pub pos: u64,
    pub prev: Lsn,
}

impl Writer {
    /// Pages from `first_page`; the first record goes at the page's data start.
    pub fn new(first_page: Lsn, page_size: u64, seg_size: u64, magic: u16) -> Writer {
        let mut w = Writer {
            first_page,
            page_size,
            seg_size,
            magic,
            tli: TimelineId(1),
            bytes: Vec::new(),
            pos: first_page.0,
            prev: Lsn(first_page.0.saturating_sub(8)),
        };
        w.new_page(0);
        w.pos = first_page.0 + w.header_size(first_page.0) as u64;
        w
    }

    fn header_size(&self, page: u64) -> usize {
        if page % self.seg_size == 0 {
            LONG_HEADER_SIZE
        } else {
            SHORT_HEADER_SIZE
        }
    }

    fn new_page(&mut self, rem_len: u32) {
        let page = self.first_page.0 + self.bytes.len() as u64;
        let long = page % self.seg_size == 0;
        let mut info = if long { XLP_LONG_HEADER } else { 0 };
        if rem_len > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        let mut h = vec![0u8; self.page_size as usize];
        h[0..2].copy_from_slice(&self.magic.to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&self.tli.0.to_le_bytes());
        h[8..16].copy_from_slice(&page.to_le_bytes());
        h[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if long {
            h[24..32].copy_from_slice(&7u64.to_le_bytes());
            h[32..36].copy_from_slice(&(self.seg_size as u32).to_le_bytes());
            h[36..40].copy_from_slice(&(self.page_size as u32).to_le_bytes());
        }
        self.bytes.extend_from_slice(&h);
    }

    /// Appends a record built from `spec`; returns its start LSN.
    pub fn append(&mut self, spec: &Spec, major: u32) -> Lsn {
        let rec = encode(spec, self.prev, major);
        self.append_raw(&rec)
    }

    /// Appends record bytes as they are (their `xl_prev` and CRC as given).
    pub fn append_raw(&mut self, rec: &[u8]) -> Lsn {
        let page_end = self.first_page.0 + self.bytes.len() as u64;
        if self.pos == page_end {
            // The record starts on a new page, after its header.
            self.new_page(0);
            self.pos += self.header_size(page_end) as u64;
        }
        let start = self.pos;
        let mut written = 0usize;
        while written < rec.len() {
            let page_end = self.first_page.0 + self.bytes.len() as u64;
            if self.pos == page_end {
                self.new_page((rec.len() - written) as u32);
                self.pos += self.header_size(page_end) as u64;
                continue;
            }
            let room = (page_end - self.pos) as usize;
            let n = room.min(rec.len() - written);
            let at = (self.pos - self.first_page.0) as usize;
            self.bytes[at..at + n].copy_from_slice(&rec[written..written + n]);
            written += n;
            self.pos += n as u64;
        }
        self.prev = Lsn(start);
        self.pos = self.pos.div_ceil(8) * 8;
        let page_end = self.first_page.0 + self.bytes.len() as u64;
        if self.pos >= page_end {
            self.pos = page_end;
        }
        Lsn(start)
    }

    /// Pads to the end of the current page (zeros after the last record).
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

impl Writer {
    /// What the server does after an `XLOG_SWITCH` record: the rest of the segment stays
    /// unused (zeros here, as 11+ writes it), and the next record starts the next segment.
    pub fn pad_to_segment_end(&mut self) {
        let end = self.pos.div_ceil(self.seg_size) * self.seg_size;
        let len = (end - self.first_page.0) as usize;
        self.bytes.resize(len.max(self.bytes.len()), 0);
        self.pos = end;
    }
}
