//! The S3 backend's object writer: one conditional PUT for small objects, a multipart upload
//! with growing parts for large ones, and no upload at all when the object is already there
//! (the bytes are compared instead). See the module documentation of `s3.rs`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutPayload};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::S3Backend;
use crate::storage::error::{ErrorKind, Result, StorageError};
use crate::storage::name::ObjectName;
use crate::storage::{ObjectWriter, PutOutcome, same_bytes};

/// Objects up to this size are one PUT (held in memory until `finish`); larger ones are
/// multipart uploads. A default 16 MiB WAL segment fits one PUT.
pub const SINGLE_PUT_MAX: usize = 16 * 1024 * 1024;
/// Smallest part (S3's minimum is 5 MiB for every part but the last).
const PART_MIN: u64 = 8 * 1024 * 1024;
/// Largest part S3 accepts.
const PART_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// A part is at least the uploaded size divided by this: the parts grow geometrically (by
/// 1/1500 each), so that a 1 TiB object needs about 8,200 of S3's 10,000 parts while objects
/// up to 11.7 GiB use the smallest parts (tests: `part_sizes_fit_a_terabyte`).
const PART_GROWTH_DIVISOR: u64 = 1500;
/// Parts uploading at once per writer (memory: this many parts plus the one being filled).
const PARTS_IN_FLIGHT: usize = 2;

/// The size of the next part when `uploaded` bytes were sent in earlier parts.
pub fn part_size(uploaded: u64) -> u64 {
    let grown = uploaded.div_ceil(PART_GROWTH_DIVISOR);
    // Whole MiB, so parts are equal-sized runs (some S3-compatible stores want that).
    let mib = 1024 * 1024;
    grown
        .div_ceil(mib)
        .saturating_mul(mib)
        .clamp(PART_MIN, PART_MAX)
}

/// A multipart upload in progress.
struct Multipart {
    id: String,
    /// Parts finished, in order.
    done: Vec<PartId>,
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    /// Bytes sent in parts so far.
    uploaded: u64,
}

enum Mode {
    /// The object was there when the writer started: hash what is written, compare at the end.
    Compare { size: u64 },
    /// Uploading.
    Upload { multipart: Option<Multipart> },
}

pub(super) struct S3Writer<'a> {
    backend: &'a S3Backend,
    name: ObjectName,
    path: Path,
    mode: Mode,
    buf: Vec<u8>,
    /// Of every byte written (a multipart upload cannot be read back to compare).
    hash: Sha256,
    len: u64,
    failed: bool,
}

impl<'a> S3Writer<'a> {
    pub(super) fn new(
        backend: &'a S3Backend,
        name: ObjectName,
        path: Path,
        existing: Option<u64>,
    ) -> S3Writer<'a> {
        S3Writer {
            backend,
            name,
            path,
            mode: match existing {
                Some(size) => Mode::Compare { size },
                None => Mode::Upload { multipart: None },
            },
            buf: Vec::new(),
            hash: Sha256::new(),
            len: 0,
            failed: false,
        }
    }

    fn err(&self, e: object_store::Error) -> StorageError {
        self.backend.error(e, "store", &self.name)
    }

    /// Sends full parts from the buffer, starting the multipart upload when the buffer
    /// outgrows one PUT; keeps the last bytes back (they may be the final, short, part).
    fn send_parts(&mut self) -> Result<()> {
        let Mode::Upload { multipart } = &mut self.mode else {
            return Ok(());
        };
        if multipart.is_none() {
            if self.buf.len() <= SINGLE_PUT_MAX {
                return Ok(());
            }
            let store = self.backend.store.clone();
            let path = self.path.clone();
            let id = self
                .backend
                .block_on(async move { store.create_multipart(&path).await })
                .map_err(|e| self.backend.error(e, "store", &self.name))?;
            *multipart = Some(Multipart {
                id,
                done: Vec::new(),
                in_flight: VecDeque::new(),
                uploaded: 0,
            });
        }
        let Some(m) = multipart.as_mut() else {
            return Ok(());
        };
        loop {
            let size = usize::try_from(part_size(m.uploaded)).unwrap_or(usize::MAX);
            if self.buf.len() <= size {
                return Ok(());
            }
            let rest = self.buf.split_off(size);
            let part = std::mem::replace(&mut self.buf, rest);
            send_part(self.backend, &self.path, m, part)
                .map_err(|e| self.backend.error(e, "store", &self.name))?;
        }
    }

    /// Whether the stored object is the bytes written (by length and SHA-256).
    fn same_as_stored(&self, digest: &[u8]) -> Result<bool> {
        let stored = crate::storage::Backend::size(self.backend, &self.name)?;
        if stored != self.len {
            return Ok(false);
        }
        let mut r = crate::storage::Backend::read(self.backend, &self.name)?;
        let mut h = Sha256::new();
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let n = r
                .read(&mut chunk)
                .map_err(|e| StorageError::io("store", &self.name, e))?;
            if n == 0 {
                break;
            }
            h.update(&chunk[..n]);
        }
        Ok(h.finalize().as_slice() == digest)
    }

    fn conflict_or_present(&self, same: bool) -> Result<PutOutcome> {
        if same {
            Ok(PutOutcome::AlreadyPresent)
        } else {
            Err(StorageError::new(ErrorKind::Conflict, "store", &self.name))
        }
    }

    fn finish_single(&mut self) -> Result<PutOutcome> {
        let payload = PutPayload::from(std::mem::take(&mut self.buf));
        let store = self.backend.store.clone();
        let path = self.path.clone();
        let put = payload.clone();
        let r = self
            .backend
            .block_on(async move { store.put_opts(&path, put, PutMode::Create.into()).await });
        match r {
            Ok(_) => Ok(PutOutcome::Created),
            // Another writer created the name since the check (or a retried PUT finds its own
            // first attempt): compare.
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                let bytes: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
                let stored = crate::storage::Backend::read(self.backend, &self.name)?;
                let same = same_bytes(&bytes[..], stored)
                    .map_err(|e| StorageError::io("store", &self.name, e))?;
                self.conflict_or_present(same)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn finish_multipart(&mut self, digest: &[u8]) -> Result<PutOutcome> {
        let Mode::Upload { multipart: Some(m) } = &mut self.mode else {
            return Err(StorageError::new(ErrorKind::Other, "store", &self.name));
        };
        let last = std::mem::take(&mut self.buf);
        if !last.is_empty() {
            send_part(self.backend, &self.path, m, last)
                .map_err(|e| self.backend.error(e, "store", &self.name))?;
        }
        while let Some(h) = m.in_flight.pop_front() {
            let part =
                join(self.backend, h).map_err(|e| self.backend.error(e, "store", &self.name))?;
            m.done.push(part);
        }
        let parts = std::mem::take(&mut m.done);
        let id = m.id.clone();
        // The client completes uploads unconditionally: look for a winner first (a race
        // between this check and the completion remains; module documentation).
        if self
            .backend
            .head(&self.path, &self.name, "store")?
            .is_some()
        {
            self.abort();
            let same = self.same_as_stored(digest)?;
            return self.conflict_or_present(same);
        }
        let store = self.backend.store.clone();
        let path = self.path.clone();
        self.backend
            .block_on(async move { store.complete_multipart(&path, &id, parts).await })
            .map_err(|e| self.err(e))?;
        // Completed: nothing to abort when dropped.
        self.mode = Mode::Upload { multipart: None };
        Ok(PutOutcome::Created)
    }

    /// Aborts the multipart upload, if one is in progress (best effort: an upload left
    /// behind is invisible and removed by the bucket's lifecycle rule).
    fn abort(&mut self) {
        let Mode::Upload { multipart } = &mut self.mode else {
            return;
        };
        let Some(m) = multipart.take() else {
            return;
        };
        for h in &m.in_flight {
            h.abort();
        }
        let store = self.backend.store.clone();
        let path = self.path.clone();
        let _ = self.backend.block_on(async move {
            for h in m.in_flight {
                let _ = h.await;
            }
            store.abort_multipart(&path, &m.id).await
        });
    }
}

/// Starts uploading `part`, first waiting for the oldest part in flight when
/// [`PARTS_IN_FLIGHT`] are.
fn send_part(
    backend: &S3Backend,
    path: &Path,
    m: &mut Multipart,
    part: Vec<u8>,
) -> object_store::Result<()> {
    if m.in_flight.len() >= PARTS_IN_FLIGHT
        && let Some(h) = m.in_flight.pop_front()
    {
        m.done.push(join(backend, h)?);
    }
    let idx = m.done.len() + m.in_flight.len();
    m.uploaded = m.uploaded.saturating_add(part.len() as u64);
    let store = backend.store.clone();
    let path = path.clone();
    let id = m.id.clone();
    let h = backend.rt.spawn(async move {
        store
            .put_part(&path, &id, idx, PutPayload::from(part))
            .await
    });
    m.in_flight.push_back(h);
    Ok(())
}

fn join(
    backend: &S3Backend,
    h: JoinHandle<object_store::Result<PartId>>,
) -> object_store::Result<PartId> {
    backend
        .block_on(h)
        .map_err(|e| object_store::Error::JoinError { source: e })?
}

impl Write for S3Writer<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(StorageError::new(ErrorKind::Other, "store", &self.name)
                .with_detail("an earlier write to this object failed")
                .into_io());
        }
        self.hash.update(data);
        self.len = self.len.saturating_add(data.len() as u64);
        if let Mode::Compare { .. } = self.mode {
            return Ok(data.len());
        }
        self.buf.extend_from_slice(data);
        if let Err(e) = self.send_parts() {
            self.failed = true;
            self.abort();
            return Err(e.into_io());
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer<'_> {
    fn finish(mut self: Box<Self>) -> Result<PutOutcome> {
        if self.failed {
            return Err(StorageError::new(ErrorKind::Other, "store", &self.name)
                .with_detail("an earlier write to this object failed"));
        }
        let digest = self.hash.clone().finalize();
        let r = match &self.mode {
            Mode::Compare { size } => {
                if *size != self.len {
                    Err(StorageError::new(ErrorKind::Conflict, "store", &self.name))
                } else {
                    let same = self.same_as_stored(&digest)?;
                    self.conflict_or_present(same)
                }
            }
            Mode::Upload { multipart: None } => self.finish_single(),
            Mode::Upload { multipart: Some(_) } => self.finish_multipart(&digest),
        };
        if r.is_err() {
            self.abort();
        }
        r
    }
}

impl Drop for S3Writer<'_> {
    fn drop(&mut self) {
        // Dropped unfinished (or finishing failed): nothing becomes visible.
        self.abort();
    }
}
