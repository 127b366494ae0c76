//! The parallel run of the file and WAL checks: workers take items from one list (largest
//! first), large plain files are checked as ranges, the first IO error stops them all.

use std::io::{self, Read};

use super::{
    Ctx, FileCheck, Problem, Verifier, VerifyError, WalCheck, WorkerOut, pages, read_error,
};
use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::fsutil::FsError;
use crate::pool::{self, Halt, Parts, Stopped};
use crate::progress::Progress;
use crate::storage::ErrorKind as StorageErrorKind;

pub(super) enum Item {
    File(usize),
    /// Every stored WAL segment, in LSN order (records cross segments): one item.
    WalStream,
    /// One range of a large plain file checked by several workers.
    Range {
        split: usize,
        index: usize,
    },
}

/// A large plain file with a CRC-32C checksum, checked as ranges by several workers; the
/// ranges' CRCs are combined in file order (`crc32c_combine`).
pub(super) struct Split {
    file: usize,
    /// (offset, length) of each range.
    ranges: Vec<(u64, u64)>,
    /// CRC and bytes read of each finished range.
    parts: Parts<(u32, u64)>,
}

/// Plain files larger than this are split into ranges of this size.
const SPLIT_SIZE: u64 = 32 << 20;

impl Verifier<'_> {
    /// Runs the file and WAL checks on parallel workers.
    pub(super) fn run_checks(
        &mut self,
        files: &[FileCheck],
        wal: &[WalCheck],
        progress: &dyn Progress,
    ) -> Result<(), VerifyError> {
        let mut items: Vec<(u64, Item)> = Vec::with_capacity(files.len() + wal.len());
        let mut splits = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let plain = f.stored.as_bytes() == f.entry.path.as_slice();
            let crc = matches!(f.entry.checksum, Some((ChecksumAlgorithm::Crc32c, _)));
            if plain && crc && f.disk_size == f.entry.size && f.entry.size > SPLIT_SIZE {
                let ranges = pool::ranges(f.entry.size, SPLIT_SIZE);
                for (index, r) in ranges.iter().enumerate() {
                    items.push((
                        r.1,
                        Item::Range {
                            split: splits.len(),
                            index,
                        },
                    ));
                }
                splits.push(Split {
                    file: i,
                    parts: Parts::new(ranges.len()),
                    ranges,
                });
            } else {
                items.push((f.entry.size, Item::File(i)));
            }
        }
        if !wal.is_empty() {
            items.push((wal.iter().map(|w| w.disk_size).sum(), Item::WalStream));
        }
        // Largest first; ranges of one file stay in order (stable sort).
        items.sort_by_key(|i| std::cmp::Reverse(i.0));
        let total: u64 = items.iter().map(|i| i.0).sum();
        progress.plan((files.len() + wal.len()) as u64, total);
        let sysid = self
            .info
            .as_ref()
            .map(|i| i.system_identifier)
            .or(self.manifest.as_ref().and_then(|m| m.system_id));
        let major = self.info.as_ref().map(|i| i.server_version.major());
        let stop = self.ranges.first().map(|r| r.end_lsn);
        let start = self.ranges.last().map(|r| r.start_lsn);
        let consistent_at = match (&self.control, &self.label) {
            (Some(c), Some(l)) => crate::control::consistency_point(
                c,
                l.is_from_standby(),
                self.info.as_ref().map(|i| i.stop_lsn),
            ),
            _ => None,
        };
        let wal_crcs = self.info.as_ref().map(|i| &i.wal.crc32c);
        let page_verify = if self.opts.quick {
            None
        } else {
            self.info.as_ref().and_then(pages::PageVerify::new)
        };
        let halt = Halt::new(self.opts.cancel);
        let ctx = Ctx {
            pages: page_verify.as_ref(),
            backup: self.backup,
            archive: self.archive.filter(|_| self.wal_archived),
            opts: self.opts,
            compression: self.compression,
            seg_size: self.seg_size,
            sysid,
            major,
            stop,
            start,
            consistent_at,
            wal_crcs,
            files,
            wal,
            splits: &splits,
            halt: &halt,
            progress,
        };
        let items: Vec<Item> = items.into_iter().map(|(_, i)| i).collect();
        let outs = pool::run(
            self.opts.jobs,
            &items,
            &halt,
            || (WorkerOut::default(), vec![0u8; BUFFER]),
            |(out, buf), item| ctx.check_item(item, out, buf),
        )
        .map_err(|e| match e {
            Stopped::Failed(e) => e,
            Stopped::Cancelled => VerifyError::Cancelled,
        })?;
        let mut found: Vec<(u8, String, Problem)> = Vec::new();
        // pgsafe's own files are checked (and counted, once each) like the others, but they are
        // not the backup's files.
        let own = files
            .iter()
            .filter(|f| crate::layout::is_own_file(&f.entry.path))
            .count() as u64;
        for (o, _) in outs {
            self.files_checked += o.files;
            self.data_files += o.files;
            self.bytes_checked += o.bytes;
            self.wal_checked += o.wal;
            self.wal_records += o.wal_records;
            self.wal_tablespaces_created
                .extend(o.wal_tablespaces_created);
            self.backup_end = self.backup_end.or(o.backup_end);
            found.extend(o.problems);
        }
        self.data_files = self.data_files.saturating_sub(own);
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        self.problems.extend(found.into_iter().map(|(_, _, p)| p));
        if let Some(pv) = page_verify {
            let (problems, notes) = pv.finish(self.opts.quick);
            self.problems.extend(problems);
            self.notes.extend(notes);
        } else if let Some(why) = self.info.as_ref().and_then(pages::PageVerify::not_checked) {
            self.notes.push(why);
        }
        Ok(())
    }
}

/// Buffer per worker: 128 KiB, small enough that the data the kernel copies into it is still
/// in the CPU cache when the checksum reads it (measured twice as fast as 1 MiB here).
const BUFFER: usize = 128 << 10;

impl Ctx<'_> {
    /// Checks one work item; problems go to `out`. Only what stops the whole check (Ctrl-C) is
    /// an error.
    fn check_item(
        &self,
        item: &Item,
        out: &mut WorkerOut,
        buf: &mut [u8],
    ) -> Result<(), VerifyError> {
        let result = match item {
            Item::File(f) => {
                let f = &self.files[*f];
                out.files += 1;
                self.check_file(f, buf, &mut out.bytes).map(|p| {
                    self.progress.file_done(&f.entry.path_lossy(), f.entry.size);
                    p.map(|p| (0, f.entry.path_lossy().into_owned(), p))
                })
            }
            Item::WalStream => self.check_wal_stream(buf, out).map(|found| {
                out.problems.extend(found);
                None
            }),
            Item::Range { split, index } => {
                let sp = &self.splits[*split];
                let f = &self.files[sp.file];
                match self.check_range(sp, *index, buf, &mut out.bytes) {
                    Ok(Some(result)) => {
                        out.files += 1;
                        self.progress.file_done(&f.entry.path_lossy(), f.entry.size);
                        Ok(result.map(|p| (0, f.entry.path_lossy().into_owned(), p)))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(Some(p)) => out.problems.push(p),
            Ok(None) => {}
            // A file that cannot be read is one problem: the others are still checked
            // (as pg_verifybackup reports every problem).
            Err(VerifyError::Io(e)) => {
                let path = e
                    .path
                    .strip_prefix(self.backup.shown())
                    .unwrap_or(&e.path)
                    .display()
                    .to_string();
                let error = format!("{}: {}", e.action, e.source);
                out.problems
                    .push((2, path.clone(), Problem::Unreadable { path, error }));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    pub(super) fn after_read(&self, n: usize, bytes: &mut u64) -> Result<(), VerifyError> {
        *bytes += n as u64;
        self.progress.bytes(n as u64);
        if self.halt.stopped() {
            return Err(VerifyError::Cancelled);
        }
        Ok(())
    }

    /// Checks one range of a split file; the worker finishing the last range compares the
    /// combined size and CRC with the manifest: `Some(problem or none)` then, `None` before.
    fn check_range(
        &self,
        sp: &Split,
        index: usize,
        buf: &mut [u8],
        bytes: &mut u64,
    ) -> Result<Option<Option<Problem>>, VerifyError> {
        let f = &self.files[sp.file];
        let (offset, len) = sp.ranges[index];
        let path = self.backup.shown_path(&f.stored);
        let mut file = self
            .backup
            .read_range(&f.stored, offset, Some(len))
            .map_err(|e| read_error(self.backup, "open", &f.stored, e))?;
        let first_block = u32::try_from(offset / crate::page::BLCKSZ as u64).unwrap_or(u32::MAX);
        let mut scan = self
            .pages
            .and_then(|p| p.scanner(&f.entry.path, first_block));
        let mut crc = 0u32;
        let mut done = 0u64;
        while done < len {
            let want = buf.len().min((len - done) as usize);
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FsError::new("read", path, e).into()),
            };
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            if let Some(s) = &mut scan {
                s.update(&buf[..n]);
            }
            done += n as u64;
            self.after_read(n, bytes)?;
        }
        if let (Some(p), Some(s)) = (self.pages, scan) {
            p.done(&f.entry.path_lossy(), s.finish(), index == 0);
        }
        let Some(results) = sp.parts.done(index, (crc, done)) else {
            return Ok(None);
        };
        let mut crc = 0u32;
        let mut size = 0u64;
        for r in results {
            crc = crc32c::crc32c_combine(crc, r.0, r.1 as usize);
            size += r.1;
        }
        let path_str = f.entry.path_lossy().into_owned();
        if size != f.entry.size {
            return Ok(Some(Some(Problem::Size {
                path: path_str,
                expected: f.entry.size,
                found: size,
            })));
        }
        if let (Some((algorithm, expected)), Some(found)) = (
            &f.entry.checksum,
            crate::checksum::Checksummer::Crc32c(crc).finish_hex(),
        ) {
            if !found.eq_ignore_ascii_case(expected) {
                return Ok(Some(Some(Problem::Checksum {
                    path: path_str,
                    algorithm: *algorithm,
                    expected: expected.clone(),
                    found,
                })));
            }
        }
        Ok(Some(None))
    }

    fn check_file(
        &self,
        f: &FileCheck,
        buf: &mut [u8],
        bytes: &mut u64,
    ) -> Result<Option<Problem>, VerifyError> {
        let path_str = f.entry.path_lossy().into_owned();
        let compressed = f.stored.as_bytes() != f.entry.path.as_slice();
        if !compressed && f.disk_size != f.entry.size {
            return Ok(Some(Problem::Size {
                path: path_str,
                expected: f.entry.size,
                found: f.disk_size,
            }));
        }
        let mut scan = self.pages.and_then(|p| p.scanner(&f.entry.path, 0));
        // A plain file without a checksum (nor pages to check): its size (from the listing) is
        // all there is to check.
        if self.opts.quick || (!compressed && f.entry.checksum.is_none() && scan.is_none()) {
            return Ok(None);
        }
        let path = self.backup.shown_path(&f.stored);
        let file = match self.backup.read(&f.stored) {
            Ok(file) => file,
            Err(e) if e.kind() == StorageErrorKind::NotFound => {
                return Ok(Some(Problem::Missing {
                    path: path_str,
                    stored_as: f.stored.to_string(),
                }));
            }
            Err(e) => return Err(read_error(self.backup, "open", &f.stored, e).into()),
        };
        let compression = if compressed {
            self.compression
        } else {
            Compression::None
        };
        let corrupt = |e: io::Error| Problem::Corrupt {
            path: f.stored.to_string(),
            error: e.to_string(),
        };
        let reader = match compression.decoder(file) {
            Ok(r) => r,
            Err(e) => return Ok(Some(corrupt(e))),
        };
        // Never more than the manifest's size (+1 to notice more): a small compressed file
        // can claim to inflate to terabytes.
        let mut reader = reader.take(f.entry.size.saturating_add(1));
        let alg = f.entry.checksum.as_ref().map(|(a, _)| *a);
        let mut hasher = alg.unwrap_or(ChecksumAlgorithm::None).hasher();
        let mut size = 0u64;
        loop {
            let n = match reader.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if compressed => return Ok(Some(corrupt(e))),
                Err(e) => return Err(FsError::new("read", path, e).into()),
            };
            hasher.update(&buf[..n]);
            if let Some(s) = &mut scan {
                s.update(&buf[..n]);
            }
            size += n as u64;
            self.after_read(n, bytes)?;
        }
        if let (Some(p), Some(s)) = (self.pages, scan) {
            p.done(&path_str, s.finish(), true);
        }
        if size > f.entry.size && compressed {
            return Ok(Some(Problem::Inflates {
                path: f.stored.to_string(),
                limit: f.entry.size,
            }));
        }
        if size != f.entry.size {
            return Ok(Some(Problem::Size {
                path: path_str,
                expected: f.entry.size,
                found: size,
            }));
        }
        if let (Some((algorithm, expected)), Some(found)) = (&f.entry.checksum, hasher.finish_hex())
        {
            if !found.eq_ignore_ascii_case(expected) {
                return Ok(Some(Problem::Checksum {
                    path: path_str,
                    algorithm: *algorithm,
                    expected: expected.clone(),
                    found,
                }));
            }
        }
        Ok(None)
    }
}
