//! Page checksums checked while the copy reads each relation file (one pass: the same buffer is
//! checked, checksummed, compressed and written).
//!
//! A page that fails [`crate::page::check_page`] is read again from the source, at once and once
//! more after [`RETRY_DELAY`]:
//! * if the bytes read back differ, the server was writing the page while it was read (a write
//!   of 8 KiB is not atomic for a concurrent reader). The newer bytes replace the old ones in the
//!   buffer, so what is stored is the later version; it is recorded as "changed during copy".
//!   Whatever is stored for such a page, recovery rewrites it: every write of a page after the
//!   backup's start checkpoint is preceded in the WAL by a full-page image of it (with data
//!   checksums even hint-bit-only changes are, `MarkBufferDirtyHint` in
//!   `src/backend/storage/buffer/bufmgr.c`), and the backup's WAL is replayed from that
//!   checkpoint;
//! * if they are identical, nothing is writing the page: it is corrupt on the source. Its bytes
//!   are stored as they are (the backup is a faithful copy) and the block is recorded.
//!
//! A read that ends inside a page (the file was truncated or is being extended) leaves that
//! trailing partial page unchecked: PostgreSQL itself counts only whole blocks (`mdnblocks` in
//! `src/backend/storage/smgr/md.c`) and writes a block whole when it extends a relation, so such
//! a tail is a write in progress, which WAL replay completes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::page::{self, BLCKSZ, FileBlocks, PageChecksumReport};
use crate::plan::RelPath;
use crate::types::PgVersion;

/// Pause before the second re-read of a failing page: far longer than any single write takes.
const RETRY_DELAY: Duration = Duration::from_millis(20);

/// Page checking of a copy: on when the cluster has data checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCheckOptions {
    pub version: PgVersion,
    /// `RELSEG_SIZE` from pg_control: blocks per segment file.
    pub relseg_size: u32,
}

/// How to check one file: its segment number.
#[derive(Debug, Clone, Copy)]
pub(super) struct FilePages {
    segno: u32,
    relseg_size: u32,
}

/// What the checks of one file (or one range of one) found.
#[derive(Debug, Default)]
pub(super) struct Findings {
    pub pages: u64,
    pub corrupt: Vec<u32>,
    pub changed: Vec<u32>,
}

impl FilePages {
    /// `None` when `rel` is not a relation file with checksummed pages.
    pub fn for_file(opts: Option<PageCheckOptions>, rel: &RelPath) -> Option<FilePages> {
        let o = opts?;
        let segno = page::checksummed_segment(rel.as_bytes(), o.version)?;
        Some(FilePages {
            segno,
            relseg_size: o.relseg_size,
        })
    }

    /// Checks the whole pages of `buf`, which was read from `src` at file offset `offset` (a
    /// multiple of [`BLCKSZ`]; anything else is left unchecked). A page that fails is read again
    /// and, if it changed, replaced in `buf` by the newer bytes.
    pub fn check(
        &self,
        buf: &mut [u8],
        offset: u64,
        src: &File,
        out: &mut Findings,
    ) -> io::Result<()> {
        if offset % BLCKSZ as u64 != 0 {
            return Ok(());
        }
        let first = offset / BLCKSZ as u64;
        for (i, p) in buf.chunks_exact_mut(BLCKSZ).enumerate() {
            let Ok(p) = <&mut [u8; BLCKSZ]>::try_from(p) else {
                continue;
            };
            let block = u32::try_from(first + i as u64).unwrap_or(u32::MAX);
            out.pages += 1;
            let blkno = page::relation_block(self.segno, self.relseg_size, block);
            if page::check_page(p, blkno).is_ok() {
                continue;
            }
            let at = offset + (i * BLCKSZ) as u64;
            match reread(src, p, at)? {
                Reread::Same => out.corrupt.push(block),
                Reread::Changed => out.changed.push(block),
            }
        }
        Ok(())
    }
}

enum Reread {
    Same,
    Changed,
}

/// Reads the page at `at` again (twice, [`RETRY_DELAY`] apart) and compares it with `page`;
/// a changed page's newer bytes replace `page` (a short read — the file was truncated — counts
/// as changed and keeps `page`).
fn reread(src: &File, page: &mut [u8; BLCKSZ], at: u64) -> io::Result<Reread> {
    let mut again = [0u8; BLCKSZ];
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(RETRY_DELAY);
        }
        let n = read_full_at(src, &mut again, at)?;
        if n < BLCKSZ {
            return Ok(Reread::Changed);
        }
        if again != *page {
            *page = again;
            return Ok(Reread::Changed);
        }
    }
    Ok(Reread::Same)
}

/// Reads until `buf` is full or the end of the file.
pub(super) fn read_full_at(src: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Findings of every file and range, merged into the report `pgsafe.json` keeps.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// (path, findings) per file or range.
    pub parts: Vec<(RelPath, Findings)>,
}

impl Collected {
    pub fn into_report(mut self, relseg_size: u32) -> PageChecksumReport {
        self.parts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut report = PageChecksumReport {
            relseg_size,
            ..PageChecksumReport::default()
        };
        let mut last: Option<RelPath> = None;
        let push = |list: &mut Vec<FileBlocks>, path: &RelPath, blocks: &[u32]| {
            if blocks.is_empty() {
                return;
            }
            let name = path.to_string();
            match list.last_mut() {
                Some(f) if f.path == name => f.blocks.extend_from_slice(blocks),
                _ => list.push(FileBlocks {
                    path: name,
                    blocks: blocks.to_vec(),
                }),
            }
        };
        for (path, f) in &self.parts {
            if last.as_ref() != Some(path) {
                report.files_checked += 1;
                last = Some(path.clone());
            }
            report.pages_checked += f.pages;
            push(&mut report.corrupt, path, &f.corrupt);
            push(&mut report.changed_during_copy, path, &f.changed);
        }
        for f in report
            .corrupt
            .iter_mut()
            .chain(report.changed_during_copy.iter_mut())
        {
            f.blocks.sort_unstable();
            f.blocks.dedup();
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HEAP: &[u8] = include_bytes!("../../tests/data/heap-15-blocks-0-1");

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    fn checks() -> FilePages {
        FilePages::for_file(
            Some(PageCheckOptions {
                version: "15".parse().unwrap(),
                relseg_size: page::DEFAULT_RELSEG_SIZE,
            }),
            &RelPath::from("base/5/16384"),
        )
        .unwrap()
    }

    #[test]
    fn good_pages_pass_and_bad_ones_that_read_back_the_same_are_corrupt() {
        let mut bytes = HEAP.to_vec();
        bytes[BLCKSZ + 300] ^= 0x10;
        let (_t, f) = file_with(&bytes);
        let mut buf = bytes.clone();
        let mut out = Findings::default();
        checks().check(&mut buf, 0, &f, &mut out).unwrap();
        assert_eq!(out.pages, 2);
        assert_eq!(out.corrupt, vec![1]);
        assert!(out.changed.is_empty());
        assert_eq!(buf, bytes, "a corrupt page is stored as it is");
    }

    #[test]
    fn a_page_that_reads_back_different_was_being_written() {
        // The file now holds the good page; the buffer holds a torn read of it.
        let (_t, f) = file_with(HEAP);
        let mut torn = HEAP.to_vec();
        torn[BLCKSZ + 4096..2 * BLCKSZ].fill(0);
        let mut out = Findings::default();
        checks().check(&mut torn, 0, &f, &mut out).unwrap();
        assert_eq!(out.changed, vec![1]);
        assert!(out.corrupt.is_empty());
        assert_eq!(torn, HEAP, "the newer bytes are stored");
        // A page that is gone when read again (the file was truncated) counts as changed.
        let (_t, short) = file_with(&HEAP[..BLCKSZ]);
        let mut torn = HEAP.to_vec();
        torn[BLCKSZ + 10] ^= 1;
        let mut out = Findings::default();
        checks().check(&mut torn, 0, &short, &mut out).unwrap();
        assert_eq!(out.changed, vec![1]);
    }

    #[test]
    fn ranges_count_blocks_from_their_offset_and_only_relation_files_are_checked() {
        let mut bytes = HEAP.to_vec();
        bytes[BLCKSZ + 300] ^= 0x10;
        let (_t, f) = file_with(&bytes);
        let mut buf = bytes[BLCKSZ..].to_vec();
        let mut out = Findings::default();
        checks()
            .check(&mut buf, BLCKSZ as u64, &f, &mut out)
            .unwrap();
        assert_eq!((out.pages, out.corrupt.clone()), (1, vec![1]));
        let opts = Some(PageCheckOptions {
            version: "15".parse().unwrap(),
            relseg_size: page::DEFAULT_RELSEG_SIZE,
        });
        assert!(FilePages::for_file(opts, &RelPath::from("base/5/PG_VERSION")).is_none());
        assert!(FilePages::for_file(None, &RelPath::from("base/5/16384")).is_none());
    }

    #[test]
    fn findings_merge_per_file() {
        let mut c = Collected::default();
        let f = |corrupt: Vec<u32>, changed: Vec<u32>| Findings {
            pages: 10,
            corrupt,
            changed,
        };
        c.parts
            .push((RelPath::from("base/5/2"), f(vec![9], vec![])));
        c.parts
            .push((RelPath::from("base/5/1"), f(vec![3], vec![4])));
        c.parts
            .push((RelPath::from("base/5/2"), f(vec![1], vec![])));
        let r = c.into_report(131_072);
        assert_eq!((r.files_checked, r.pages_checked), (2, 30));
        assert_eq!(
            r.corrupt,
            vec![
                FileBlocks {
                    path: "base/5/1".into(),
                    blocks: vec![3]
                },
                FileBlocks {
                    path: "base/5/2".into(),
                    blocks: vec![1, 9]
                }
            ]
        );
        assert_eq!(r.changed_during_copy.len(), 1);
    }
}
