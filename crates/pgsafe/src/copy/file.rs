//! The work on one file: copied whole, or as ranges (positioned writes, or compressed frames
//! appended in order) completed by the worker finishing the last range.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{CopiedFile, CopyError, Ctx, Outcome, RangeDone, Split, create_file, lock, pages};
use crate::checksum::{ChecksumAlgorithm, Checksummer};
use crate::fsutil::{FsError, IoContext};
use crate::plan::{PlanFile, RelPath};

impl Ctx<'_> {
    fn stored_path(&self, file: &PlanFile) -> (RelPath, PathBuf) {
        let stored = file.rel_path.with_suffix(self.opts.compression.suffix());
        let path = self.target.join(stored.as_path());
        (stored, path)
    }

    /// Opens a source file; `None` if it vanished.
    fn open_source(&self, file: &PlanFile) -> Result<Option<File>, CopyError> {
        if let Some(hook) = self.opts.before_open {
            hook(&file.rel_path);
        }
        match File::open(&file.source) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::new("open", &file.source, e).into()),
        }
    }

    /// Copies a file in one pass: read, checksum, compress, write, fsync.
    pub(super) fn copy_whole(&self, file: &PlanFile, buf: &mut [u8]) -> Result<Outcome, CopyError> {
        let Some(src) = self.open_source(file)? else {
            return Ok(Outcome::Vanished(file.rel_path.clone()));
        };
        let mtime = src.metadata().ctx("inspect", &file.source)?.mtime();
        let (stored_path, dst_path) = self.stored_path(file);
        let dst = create_file(&dst_path, file.mode)?;
        let mut sink = self.opts.compression.sink(dst).ctx("write", &dst_path)?;
        let mut hasher = self.opts.checksum.hasher();
        let checks = pages::FilePages::for_file(self.opts.pages, &file.rel_path);
        let mut found = pages::Findings::default();
        let mut done = 0u64;
        while done < file.size {
            let want = buf
                .len()
                .min(usize::try_from(file.size - done).unwrap_or(usize::MAX));
            let n = match pages::read_full_at(&src, &mut buf[..want], done) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(FsError::new("read", &file.source, e).into()),
            };
            if let Some(c) = &checks {
                c.check(&mut buf[..n], done, &src, &mut found)
                    .ctx("read", &file.source)?;
            }
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n]).ctx("write", &dst_path)?;
            done += n as u64;
            self.after_read(n)?;
        }
        let (dst, stored_size) = sink.finish().ctx("write", &dst_path)?.into_parts();
        self.sync_later(Arc::new(dst), dst_path)?;
        if checks.is_some() {
            self.pages_found(&file.rel_path, found);
        }
        Ok(Outcome::Stored(
            CopiedFile {
                rel_path: file.rel_path.clone(),
                size: done,
                stored_size,
                checksum: hasher.finish_hex(),
                mtime,
                stored_path,
            },
            file.size,
        ))
    }

    /// Copies one range of a split file; the worker finishing the last range completes the file.
    pub(super) fn copy_range(
        &self,
        split: &Split<'_>,
        index: usize,
        buf: &mut [u8],
    ) -> Result<Outcome, CopyError> {
        let file = split.file;
        let (offset, len) = split.ranges[index];
        let Some(src) = self.open_source(file)? else {
            return self.range_done(split, index, RangeDone::VANISHED);
        };
        let mtime = src.metadata().ctx("inspect", &file.source)?.mtime();
        let dst = self.split_destination(split, mtime)?;
        let dst_path = self.stored_path(file).1;
        let crc_on = self.opts.checksum == ChecksumAlgorithm::Crc32c;
        let checks = pages::FilePages::for_file(self.opts.pages, &file.rel_path);
        let mut found = pages::Findings::default();
        let mut crc = 0u32;
        let mut done = 0u64;
        while done < len {
            let want = buf
                .len()
                .min(usize::try_from(len - done).unwrap_or(usize::MAX));
            let n = match pages::read_full_at(&src, &mut buf[..want], offset + done) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(FsError::new("read", &file.source, e).into()),
            };
            if let Some(c) = &checks {
                c.check(&mut buf[..n], offset + done, &src, &mut found)
                    .ctx("read", &file.source)?;
            }
            if crc_on {
                crc = crc32c::crc32c_append(crc, &buf[..n]);
            }
            dst.write_all_at(&buf[..n], offset + done)
                .ctx("write", &dst_path)?;
            done += n as u64;
            self.after_read(n)?;
        }
        if checks.is_some() {
            self.pages_found(&file.rel_path, found);
        }
        let result = RangeDone {
            bytes: done,
            crc,
            vanished: false,
        };
        self.range_done(split, index, result)
    }

    /// The shared destination of a split file, created (and preallocated) by the first range.
    fn split_destination(&self, split: &Split<'_>, mtime: i64) -> Result<Arc<File>, CopyError> {
        let mut st = lock(&split.state);
        if st.mtime.is_none() {
            st.mtime = Some(mtime);
        }
        if let Some(d) = &st.dst {
            return Ok(Arc::clone(d));
        }
        let path = self.stored_path(split.file).1;
        let f = create_file(&path, split.file.mode)?;
        preallocate(&f, split.file.size).ctx("preallocate", &path)?;
        let f = Arc::new(f);
        st.dst = Some(Arc::clone(&f));
        Ok(f)
    }

    /// Records a finished range of a positioned split; completes the file after the last one.
    fn range_done(
        &self,
        split: &Split<'_>,
        index: usize,
        r: RangeDone,
    ) -> Result<Outcome, CopyError> {
        let (results, dst, mtime) = {
            let mut st = lock(&split.state);
            st.results[index] = Some(r);
            st.done += 1;
            if st.done < split.ranges.len() {
                return Ok(Outcome::Pending);
            }
            (std::mem::take(&mut st.results), st.dst.take(), st.mtime)
        };
        self.complete(split, &results, dst, mtime, None)
    }

    /// Copies one range of a compressed split file: reads and compresses it into one frame in
    /// memory, waits until the frames before it are stored, appends it. At most one frame per
    /// worker is held in memory, and ranges are taken from the work list in order, so the worker
    /// holding the range that is due is never waiting itself.
    pub(super) fn copy_frame(
        &self,
        split: &Split<'_>,
        index: usize,
        buf: &mut [u8],
    ) -> Result<Outcome, CopyError> {
        let file = split.file;
        let (offset, len) = split.ranges[index];
        let (result, frame, mtime) = match self.open_source(file)? {
            None => (RangeDone::VANISHED, Vec::new(), None),
            Some(src) => {
                let mtime = src.metadata().ctx("inspect", &file.source)?.mtime();
                // Room for an incompressible range (both formats' worst case is below this), so
                // the buffer never doubles; untouched capacity costs no memory.
                let capacity = usize::try_from(len + len / 64 + (64 << 10)).unwrap_or(0);
                let mut enc = self
                    .opts
                    .compression
                    .encoder(Vec::with_capacity(capacity))
                    .ctx("compress", &file.source)?;
                let checks = pages::FilePages::for_file(self.opts.pages, &file.rel_path);
                let mut found = pages::Findings::default();
                let mut crc = 0u32;
                let mut done = 0u64;
                while done < len {
                    let want = buf
                        .len()
                        .min(usize::try_from(len - done).unwrap_or(usize::MAX));
                    let n = match pages::read_full_at(&src, &mut buf[..want], offset + done) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => return Err(FsError::new("read", &file.source, e).into()),
                    };
                    if let Some(c) = &checks {
                        c.check(&mut buf[..n], offset + done, &src, &mut found)
                            .ctx("read", &file.source)?;
                    }
                    if self.opts.checksum == ChecksumAlgorithm::Crc32c {
                        crc = crc32c::crc32c_append(crc, &buf[..n]);
                    }
                    enc.write_all(&buf[..n]).ctx("compress", &file.source)?;
                    done += n as u64;
                    self.after_read(n)?;
                }
                let frame = enc.finish().ctx("compress", &file.source)?;
                if checks.is_some() {
                    self.pages_found(&file.rel_path, found);
                }
                let r = RangeDone {
                    bytes: done,
                    crc,
                    vanished: false,
                };
                (r, frame, Some(mtime))
            }
        };
        let dst_path = self.stored_path(file).1;
        let mut st = lock(&split.state);
        while st.next_write != index {
            if self.cancelled() {
                return Err(CopyError::Cancelled);
            }
            st = split
                .turn
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if index == 0 {
            st.mtime = mtime;
        }
        if !st.ended {
            if result.vanished {
                st.ended = true;
            } else {
                let dst = match &st.dst {
                    Some(d) => Arc::clone(d),
                    None => {
                        let d = Arc::new(create_file(&dst_path, file.mode)?);
                        st.dst = Some(Arc::clone(&d));
                        d
                    }
                };
                (&*dst).write_all(&frame).ctx("write", &dst_path)?;
                st.stored += frame.len() as u64;
                st.ended = result.bytes < len;
            }
        }
        st.results[index] = Some(result);
        st.done += 1;
        st.next_write += 1;
        split.turn.notify_all();
        if st.done < split.ranges.len() {
            return Ok(Outcome::Pending);
        }
        let results = std::mem::take(&mut st.results);
        let (dst, mtime, stored) = (st.dst.take(), st.mtime, st.stored);
        drop(st);
        self.complete(split, &results, dst, mtime, Some(stored))
    }

    /// Completes a split file once every range is done: the stored content is every range up to
    /// and including the first short one. `stored`: bytes appended (ordered mode); `None` for a
    /// positioned file, which is cut to the content's size.
    fn complete(
        &self,
        split: &Split<'_>,
        results: &[Option<RangeDone>],
        dst: Option<Arc<File>>,
        mtime: Option<i64>,
        stored: Option<u64>,
    ) -> Result<Outcome, CopyError> {
        let file = split.file;
        let (stored_path, dst_path) = self.stored_path(file);
        let first_read = results
            .first()
            .copied()
            .flatten()
            .is_some_and(|r| !r.vanished);
        let dst = match dst {
            Some(d) if first_read => d,
            Some(d) => {
                // Gone before its first range was read (later ranges may have written).
                drop(d);
                fs::remove_file(&dst_path).ctx("remove", &dst_path)?;
                return Ok(Outcome::Vanished(file.rel_path.clone()));
            }
            None => return Ok(Outcome::Vanished(file.rel_path.clone())),
        };
        let mut size = 0u64;
        let mut crc = 0u32;
        for ((offset, len), r) in split.ranges.iter().zip(results) {
            let r = r.unwrap_or(RangeDone::VANISHED);
            crc = crc32c::crc32c_combine(crc, r.crc, r.bytes as usize);
            size = offset + r.bytes;
            if r.bytes < *len {
                break;
            }
        }
        if stored.is_none() && size < file.size {
            dst.set_len(size).ctx("truncate", &dst_path)?;
        }
        self.sync_later(dst, dst_path)?;
        let checksum = match self.opts.checksum {
            ChecksumAlgorithm::Crc32c => Checksummer::Crc32c(crc).finish_hex(),
            _ => None,
        };
        Ok(Outcome::Stored(
            CopiedFile {
                rel_path: file.rel_path.clone(),
                size,
                stored_size: stored.unwrap_or(size),
                checksum,
                mtime: mtime.unwrap_or(file.mtime),
                stored_path,
            },
            file.size,
        ))
    }
}

/// Reserves `len` bytes for a file written out of order (`fallocate`; `ftruncate` where the file
/// system does not support it).
fn preallocate(f: &File, len: u64) -> io::Result<()> {
    let Ok(l) = i64::try_from(len) else {
        return f.set_len(len);
    };
    match nix::fcntl::fallocate(f, nix::fcntl::FallocateFlags::empty(), 0, l) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::ENOSYS) => f.set_len(len),
        Err(e) => Err(io::Error::from(e)),
    }
}
