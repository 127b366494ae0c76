//! The work on one file: copied whole, or as ranges (positioned writes into the object's local
//! file, or frames appended in order) completed by the worker finishing the last range.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

use super::work::{Ctx, RangeDone, Split};
use super::{CopiedFile, CopyError, Writer, pages, put_options};
use crate::checksum::{ChecksumAlgorithm, Checksummer};
use crate::fsutil::{FsError, IoContext};
use crate::plan::{PlanFile, RelPath};
use crate::pool::lock;
use crate::storage::{Durability, ErrorKind, ObjectName, StorageError};

/// What one item did.
pub(super) enum Outcome {
    /// A file is complete: what is stored, and its planned size.
    Stored(CopiedFile, u64),
    Vanished(RelPath),
    /// A range of a file whose other ranges are still being copied.
    Pending,
    /// A relation file of an incremental backup is stored (as an incremental object, or whole
    /// when every block changed), and how it shrank if it did.
    StoredIncremental(CopiedFile, Option<super::SizeChange>),
}

impl<'a> Ctx<'a> {
    /// The stored path of `file` (with the compression suffix) and its object name.
    fn stored_name(&self, file: &PlanFile) -> Result<(RelPath, ObjectName), CopyError> {
        let stored = file.rel_path.with_suffix(self.opts.compression.suffix());
        let name = ObjectName::from_rel_path(&stored)?;
        Ok((stored, name))
    }

    /// Starts the object of `file`: deferred durability ([`Backend::sync_all`] follows the
    /// copy) unless syncing is off altogether, which needs none either.
    ///
    /// [`Backend::sync_all`]: crate::storage::Backend::sync_all
    fn create_object(&self, file: &PlanFile, name: &ObjectName) -> Result<Writer<'a>, CopyError> {
        Ok(self
            .store
            .writer(name, put_options(Durability::Deferred, file.mode))?)
    }

    /// Opens a source file; `None` if it vanished.
    pub(super) fn open_source(&self, file: &PlanFile) -> Result<Option<File>, CopyError> {
        if let Some(hook) = self.opts.before_open {
            hook(&file.rel_path);
        }
        match File::open(&file.source) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::new("open", &file.source, e).into()),
        }
    }

    /// Reads `len` bytes of `src` from `offset` (fewer if the file is shorter now), a buffer at
    /// a time: checks its pages, then hands each buffer to `sink`. Returns the bytes read.
    pub(super) fn read_range(
        &self,
        file: &PlanFile,
        src: &File,
        (offset, len): (u64, u64),
        buf: &mut [u8],
        mut sink: impl FnMut(&[u8], u64) -> Result<(), CopyError>,
    ) -> Result<u64, CopyError> {
        let checks = pages::FilePages::for_file(self.opts.pages, &file.rel_path);
        let mut found = pages::Findings::default();
        let mut done = 0u64;
        while done < len {
            let want = buf
                .len()
                .min(usize::try_from(len - done).unwrap_or(usize::MAX));
            let at = offset + done;
            let n = match pages::read_full_at(src, &mut buf[..want], at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(FsError::new("read", &file.source, e).into()),
            };
            if let Some(c) = &checks {
                c.check(&mut buf[..n], at, src, &mut found)
                    .ctx("read", &file.source)?;
            }
            sink(&buf[..n], at)?;
            done += n as u64;
            self.after_read(n)?;
        }
        if checks.is_some() {
            self.pages_found(&file.rel_path, found);
        }
        Ok(done)
    }

    /// Copies a file in one pass: read, checksum, compress, store.
    pub(super) fn copy_whole(&self, file: &PlanFile, buf: &mut [u8]) -> Result<Outcome, CopyError> {
        let Some(src) = self.open_source(file)? else {
            return Ok(Outcome::Vanished(file.rel_path.clone()));
        };
        let mtime = src.metadata().ctx("inspect", &file.source)?.mtime();
        let (stored_path, name) = self.stored_name(file)?;
        let store_err = |e: io::Error| StorageError::io("store", &name, e);
        let w = self.create_object(file, &name)?;
        let mut sink = self.opts.compression.sink(w).map_err(store_err)?;
        let mut hasher = self.opts.checksum.hasher();
        let done = self.read_range(file, &src, (0, file.size), buf, |b, _| {
            hasher.update(b);
            Ok(sink.write_all(b).map_err(store_err)?)
        })?;
        let (w, stored_size) = sink.finish().map_err(store_err)?.into_parts();
        w.finish()?;
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

    /// Copies one range of a split file with positioned writes into the object's file; the
    /// worker finishing the last range completes the file.
    pub(super) fn copy_range(
        &self,
        split: &Split<'a, 'a>,
        index: usize,
        buf: &mut [u8],
    ) -> Result<Outcome, CopyError> {
        let file = split.file;
        let Some(src) = self.open_source(file)? else {
            return self.range_done(split, index, RangeDone::VANISHED);
        };
        let mtime = src.metadata().ctx("inspect", &file.source)?.mtime();
        let (dst, name) = self.split_destination(split, mtime)?;
        let crc_on = self.opts.checksum == ChecksumAlgorithm::Crc32c;
        let mut crc = 0u32;
        let bytes = self.read_range(file, &src, split.ranges[index], buf, |b, at| {
            if crc_on {
                crc = crc32c::crc32c_append(crc, b);
            }
            Ok(dst
                .write_all_at(b, at)
                .map_err(|e| StorageError::io("store", &name, e))?)
        })?;
        let result = RangeDone {
            bytes,
            crc,
            vanished: false,
        };
        self.range_done(split, index, result)
    }

    /// The object file of a positioned split file (this range's own descriptor of it), created
    /// and preallocated by the first range.
    fn split_destination(
        &self,
        split: &Split<'a, 'a>,
        mtime: i64,
    ) -> Result<(File, ObjectName), CopyError> {
        let name = self.stored_name(split.file)?.1;
        let mut st = lock(&split.state);
        st.mtime.get_or_insert(mtime);
        let (w, created) = match st.writer.take() {
            Some(w) => (w, false),
            None => (self.create_object(split.file, &name)?, true),
        };
        let w = st.writer.insert(w);
        let Some(f) = w.local_file() else {
            return Err(StorageError::new(ErrorKind::Other, "store", &name)
                .with_detail("the storage gave no local file for positioned writes")
                .into());
        };
        let f = f?;
        if created {
            preallocate(f, split.file.size)
                .map_err(|e| StorageError::io("preallocate", &name, e))?;
        }
        let own = f
            .try_clone()
            .map_err(|e| StorageError::io("store", &name, e))?;
        Ok((own, name))
    }

    /// Records a finished range of a positioned split; completes the file after the last one.
    fn range_done(
        &self,
        split: &Split<'a, 'a>,
        index: usize,
        r: RangeDone,
    ) -> Result<Outcome, CopyError> {
        let Some(results) = split.parts.done(index, r) else {
            return Ok(Outcome::Pending);
        };
        let (w, mtime) = {
            let mut st = lock(&split.state);
            (st.writer.take(), st.mtime)
        };
        self.complete(split, &results, w, mtime, None)
    }

    /// Copies one range of a split file as a frame appended in order: reads (and compresses)
    /// it into memory, waits until the frames before it are stored, appends it. At most one
    /// frame per worker is held in memory, and ranges are taken from the work list in order, so
    /// the worker holding the range that is due is never waiting itself.
    pub(super) fn copy_frame(
        &self,
        split: &Split<'a, 'a>,
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
                let compress_err = |e: io::Error| FsError::new("compress", &file.source, e);
                let mut enc = self
                    .opts
                    .compression
                    .encoder(Vec::with_capacity(capacity))
                    .map_err(compress_err)?;
                let crc_on = self.opts.checksum == ChecksumAlgorithm::Crc32c;
                let mut crc = 0u32;
                let bytes = self.read_range(file, &src, (offset, len), buf, |b, _| {
                    if crc_on {
                        crc = crc32c::crc32c_append(crc, b);
                    }
                    Ok(enc.write_all(b).map_err(compress_err)?)
                })?;
                let frame = enc.finish().map_err(compress_err)?;
                let r = RangeDone {
                    bytes,
                    crc,
                    vanished: false,
                };
                (r, frame, Some(mtime))
            }
        };
        let name = self.stored_name(file)?.1;
        let mut st = lock(&split.state);
        while st.next_write != index {
            if self.halt.stopped() {
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
                if st.writer.is_none() {
                    st.writer = Some(self.create_object(file, &name)?);
                }
                if let Some(w) = st.writer.as_mut() {
                    w.write_all(&frame)
                        .map_err(|e| StorageError::io("store", &name, e))?;
                }
                st.stored += frame.len() as u64;
                st.ended = result.bytes < len;
            }
        }
        st.next_write += 1;
        split.turn.notify_all();
        let Some(results) = split.parts.done(index, result) else {
            return Ok(Outcome::Pending);
        };
        let (w, mtime, stored) = (st.writer.take(), st.mtime, st.stored);
        drop(st);
        self.complete(split, &results, w, mtime, Some(stored))
    }

    /// Completes a split file once every range is done: the stored content is every range up to
    /// and including the first short one. `stored`: bytes appended (ordered); `None` for a
    /// positioned file, which is cut to the content's size.
    fn complete(
        &self,
        split: &Split<'a, 'a>,
        results: &[RangeDone],
        w: Option<Writer<'a>>,
        mtime: Option<i64>,
        stored: Option<u64>,
    ) -> Result<Outcome, CopyError> {
        let file = split.file;
        let (stored_path, name) = self.stored_name(file)?;
        let first_read = results.first().is_some_and(|r| !r.vanished);
        let mut w = match w {
            Some(w) if first_read => w,
            // Gone before its first range was read (later ranges may have written): the
            // unfinished object is dropped, which leaves nothing.
            _ => return Ok(Outcome::Vanished(file.rel_path.clone())),
        };
        let mut size = 0u64;
        let mut crc = 0u32;
        for ((offset, len), r) in split.ranges.iter().zip(results) {
            crc = crc32c::crc32c_combine(crc, r.crc, r.bytes as usize);
            size = offset + r.bytes;
            if r.bytes < *len {
                break;
            }
        }
        if stored.is_none() && size < file.size {
            if let Some(f) = w.local_file() {
                f?.set_len(size)
                    .map_err(|e| StorageError::io("truncate", &name, e))?;
            }
        }
        w.finish()?;
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
