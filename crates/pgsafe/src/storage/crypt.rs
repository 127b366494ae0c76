//! Client-side encryption as a storage decorator (docs/encryption.md): [`Encrypted`] wraps any
//! backend and stores every object its scoping says is data in the [`format`] (64 KiB
//! XChaCha20-Poly1305 chunks bound to the object's name), leaving catalog objects plain.
//!
//! Sizes and listings report plaintext sizes (they follow from stored sizes), a range read
//! reads and decrypts only the chunks that hold the range, and write-once identity is decided
//! by the identity tag in each object's trailer, so a host that cannot decrypt (one holding
//! only public keys) can still tell a retried put of the same bytes from a conflicting one.
//! `open_file` and `local_file` are never offered: callers take the streaming paths.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::error::{ErrorKind, Result, StorageError};
use super::name::ObjectName;
use super::{Backend, Entry, EntryKind, ObjectInfo, ObjectReader, ObjectWriter, PutOptions};
use super::{PutOutcome, read_full};

pub mod format;
pub mod keys;
pub mod open;

pub use format::{FormatError, Header, KeyId, SecretKey};

use format::{CHUNK, HEADER_LEN, ObjectCipher, SEALED_CHUNK, TAG_LEN, TRAILER_LEN, TagHasher};

/// Where data keys come from: created and wrapped for writing, unwrapped for reading. The
/// repository's keyring ([`keys::Keyring`]) is one; tests use fixed keys.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// The key identity tags are made with (derived from the repository's writer key).
    fn identity_key(&self) -> Result<SecretKey>;
    /// The data key new objects under `scope` are sealed with (created, wrapped and stored in
    /// `inner` before it is used, when there is none this host can use).
    fn write_key(&self, inner: &dyn Backend, scope: &ObjectName) -> Result<(KeyId, SecretKey)>;
    /// The data key `id` of `scope`, for reading. A host that holds no key able to unwrap it
    /// fails with [`KeyUnavailable`] as the source (see [`is_key_unavailable`]).
    fn read_key(&self, inner: &dyn Backend, scope: &ObjectName, id: &KeyId) -> Result<SecretKey>;
}

/// Which objects are encrypted, and under which scope's data key: `None` keeps an object plain.
pub type Scoping = fn(&ObjectName) -> Option<ObjectName>;

/// A repository's scoping (docs/encryption.md, "What is encrypted"): a backup's files under
/// one key per backup, except `pgsafe.json` (the catalog reads it); archived WAL under one
/// key per timeline and `<log>` folder (4 GiB of WAL); everything else plain.
pub fn repository_scope(name: &ObjectName) -> Option<ObjectName> {
    let comps: Vec<&[u8]> = name.components().collect();
    match comps.as_slice() {
        [c, b"backups", id, rest @ ..] if !rest.is_empty() => {
            // The catalog's documents: read by hosts without a key (info, expire, a
            // public-key-only host claiming a backup ID).
            if rest == [crate::layout::COMPLETE_MARKER.as_bytes()]
                || rest == [crate::layout::INCOMPLETE_MARKER.as_bytes()]
            {
                return None;
            }
            ObjectName::new([*c, b"backups", *id].join(&b'/')).ok()
        }
        [_, b"wal", _, _, ..] => name.parent(),
        _ => None,
    }
}

/// A host has no key that can open a data key (it holds only public keys, or the wrong
/// passphrase or identity): the source of the storage error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyUnavailable(pub String);

/// Whether `e` failed because this host holds no key that can read the object.
pub fn is_key_unavailable(e: &StorageError) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<KeyUnavailable>())
}

fn format_error(action: &'static str, name: &ObjectName, e: FormatError) -> StorageError {
    StorageError::new(ErrorKind::Other, action, name)
        .with_detail(format!(
            "the encrypted object cannot be used: {e}; it is not served"
        ))
        .with_source(e)
}

/// Encrypts what it stores in `inner` (see the module documentation).
#[derive(Clone)]
pub struct Encrypted {
    inner: Arc<dyn Backend>,
    keys: Arc<dyn KeySource>,
    scoping: Scoping,
}

impl fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted")
            .field("inner", &self.inner)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Encrypted {
    pub fn new(inner: Arc<dyn Backend>, keys: Arc<dyn KeySource>, scoping: Scoping) -> Encrypted {
        Encrypted {
            inner,
            keys,
            scoping,
        }
    }

    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    pub fn keys(&self) -> &Arc<dyn KeySource> {
        &self.keys
    }

    fn plain_size(&self, name: &ObjectName, stored: u64) -> Result<u64> {
        format::plain_size(stored).map_err(|e| format_error("inspect", name, e))
    }

    /// The size a listing reports: a stored size no encrypted object can have (truncated or
    /// planted) is listed as 0, so one damaged object is reported by whoever reads the listing
    /// (a size that does not match, a read that fails) instead of failing the whole listing
    /// (the WAL archive's reports and expire list every object of a cluster).
    fn listed_size(&self, stored: u64) -> u64 {
        format::plain_size(stored).unwrap_or(0)
    }

    /// The header of the stored object `name`, and the cipher that opens it.
    fn open_cipher(&self, name: &ObjectName, scope: &ObjectName) -> Result<ObjectCipher> {
        let head = self.inner.get_range(name, 0, HEADER_LEN as u64)?;
        let header = Header::decode(&head).map_err(|e| format_error("read", name, e))?;
        let key = self.keys.read_key(&*self.inner, scope, &header.key_id)?;
        Ok(ObjectCipher::new(&key, &header, name.as_bytes()))
    }

    /// Whether the stored object `name` has the identity tag `tag`, after a write-once put of
    /// it met an existing object. A host that can read the object checks all of it (and its
    /// tag recomputed from the plaintext); one that cannot compares the stored tag.
    fn same_as_stored(
        &self,
        name: &ObjectName,
        scope: &ObjectName,
        tag: &[u8; TRAILER_LEN],
    ) -> Result<bool> {
        let stored = self.inner.size(name)?;
        let plain = match format::plain_size(stored) {
            Ok(p) => p,
            // Not an object of ours (planted or damaged): different.
            Err(_) => return Ok(false),
        };
        match self.open_cipher(name, scope) {
            Ok(cipher) => {
                let mut r = ChunkReader::new(
                    self.inner.read_range(name, HEADER_LEN as u64, None)?,
                    cipher,
                    name.clone(),
                    plain,
                    0,
                    0,
                    plain,
                );
                let mut h = TagHasher::new(&self.keys.identity_key()?, name.as_bytes());
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match read_full(&mut r, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => h.update(&buf[..n]),
                        // Damaged or forged: not the same as what is being put.
                        Err(_) => return Ok(false),
                    }
                }
                Ok(h.finish() == *tag)
            }
            Err(e) if is_key_unavailable(&e) => {
                let t = self
                    .inner
                    .get_range(name, stored - TRAILER_LEN as u64, 32)?;
                Ok(t == tag)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(e),
            Err(_) => Ok(false),
        }
    }
}

impl Backend for Encrypted {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        let mut out = self.inner.list(prefix)?;
        for o in &mut out {
            if (self.scoping)(&o.name).is_some() {
                o.size = self.listed_size(o.size);
            }
        }
        Ok(out)
    }

    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<Entry>> {
        let mut out = self.inner.list_entries(prefix)?;
        for e in &mut out {
            if let EntryKind::Object { size } = e.kind {
                let Ok(name) = prefix.join(&e.name) else {
                    continue;
                };
                if (self.scoping)(&name).is_some() {
                    e.kind = EntryKind::Object {
                        size: self.listed_size(size),
                    };
                }
            }
        }
        Ok(out)
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        let stored = self.inner.size(name)?;
        match (self.scoping)(name) {
            Some(_) => self.plain_size(name, stored),
            None => Ok(stored),
        }
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        let Some(scope) = (self.scoping)(name) else {
            return self.inner.read_range(name, offset, len);
        };
        let plain = self.plain_size(name, self.inner.size(name)?)?;
        let cipher = self.open_cipher(name, &scope)?;
        let Some((first, last)) = format::chunks_for_range(plain, offset, len.unwrap_or(u64::MAX))
        else {
            return Ok(Box::new(io::empty()));
        };
        let from = format::chunk_offset(first).unwrap_or(u64::MAX);
        // The last chunk's trailer is part of its associated data: read it too.
        let to = if last + 1 == format::chunk_count(plain) {
            None
        } else {
            format::chunk_offset(last + 1).map(|end| end - from)
        };
        let inner = self.inner.read_range(name, from, to)?;
        let skip = offset - first * CHUNK as u64;
        let want = len.unwrap_or(u64::MAX).min(plain - offset);
        Ok(Box::new(ChunkReader::new(
            inner,
            cipher,
            name.clone(),
            plain,
            first,
            skip,
            want,
        )))
    }

    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        let Some(scope) = (self.scoping)(name) else {
            return self.inner.writer(name, opts);
        };
        let identity = self.keys.identity_key()?;
        let (key_id, key) = self.keys.write_key(&*self.inner, &scope)?;
        let mut nonce_prefix = [0u8; 16];
        getrandom::fill(&mut nonce_prefix).map_err(|e| {
            StorageError::new(ErrorKind::Other, "store", name)
                .with_detail(format!("no random numbers from the operating system: {e}"))
        })?;
        let header = Header {
            key_id,
            nonce_prefix,
        };
        let cipher = ObjectCipher::new(&key, &header, name.as_bytes());
        let mut inner = self.inner.writer(name, opts)?;
        inner
            .write_all(cipher.header_bytes())
            .map_err(|e| StorageError::io("store", name, e))?;
        Ok(Box::new(EncryptWriter {
            backend: self,
            inner,
            cipher,
            tag: Some(TagHasher::new(&identity, name.as_bytes())),
            name: name.clone(),
            scope,
            buf: Vec::with_capacity(CHUNK),
            sealed: Vec::with_capacity(SEALED_CHUNK),
            index: 0,
        }))
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        self.inner.delete(name)
    }

    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        let deleted = self.inner.delete_prefix(prefix)?;
        // A whole scope removed (a backup, a WAL epoch): its data keys go with it, after the
        // data, so that an interruption leaves a key without objects, never objects without
        // their key. Only for a scope's own prefix: deeper prefixes share the scope's key with
        // objects that stay.
        let scope_root = prefix
            .join("x")
            .ok()
            .and_then(|child| (self.scoping)(&child))
            .is_some_and(|scope| scope == *prefix);
        if scope_root {
            let keys =
                ObjectName::new(format!("{}/data", keys::KEYRING))?.join(prefix.as_bytes())?;
            self.inner.delete_prefix(&keys)?;
        }
        Ok(deleted)
    }

    fn sync_all(&self) -> Result<()> {
        self.inner.sync_all()
    }

    fn create_folder(&self, name: &ObjectName, mode: u32) -> Result<()> {
        self.inner.create_folder(name, mode)
    }
}

/// Seals what is written in chunks. A full chunk is sealed only when more bytes follow, so the
/// last chunk (sealed at `finish`, with the trailer) is never empty unless the object is.
struct EncryptWriter<'a> {
    backend: &'a Encrypted,
    inner: Box<dyn ObjectWriter + 'a>,
    cipher: ObjectCipher,
    tag: Option<TagHasher>,
    name: ObjectName,
    scope: ObjectName,
    buf: Vec<u8>,
    sealed: Vec<u8>,
    index: u64,
}

impl EncryptWriter<'_> {
    fn seal_buffered(&mut self, trailer: Option<&[u8; TRAILER_LEN]>) -> io::Result<()> {
        self.sealed.clear();
        self.cipher
            .seal(self.index, trailer, &self.buf, &mut self.sealed);
        self.inner.write_all(&self.sealed)?;
        self.buf.clear();
        self.index = self.index.checked_add(1).ok_or_else(|| {
            io::Error::other("an object of more than 2^64 chunks cannot be encrypted")
        })?;
        Ok(())
    }
}

impl Write for EncryptWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() == CHUNK {
            self.seal_buffered(None)?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if let Some(t) = &mut self.tag {
            t.update(&data[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A partial chunk stays buffered: it may not be the last.
        self.inner.flush()
    }
}

impl ObjectWriter for EncryptWriter<'_> {
    fn finish(self: Box<Self>) -> Result<PutOutcome> {
        let mut me = *self;
        let name = me.name.clone();
        let Some(hasher) = me.tag.take() else {
            unreachable!("the tag is taken only here, once")
        };
        let tag = hasher.finish();
        me.seal_buffered(Some(&tag))
            .and_then(|()| me.inner.write_all(&tag))
            .map_err(|e| StorageError::io("store", &name, e))?;
        let backend = me.backend;
        let scope = me.scope.clone();
        match me.inner.finish() {
            Err(e) if e.kind() == ErrorKind::Conflict => {
                if backend.same_as_stored(&name, &scope, &tag)? {
                    Ok(PutOutcome::AlreadyPresent)
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }
}

/// Opens sealed chunks from `inner` (which starts at chunk `index`) and gives the plaintext,
/// skipping `skip` bytes of the first chunk and ending after `want` bytes.
struct ChunkReader<'a> {
    inner: ObjectReader<'a>,
    cipher: ObjectCipher,
    name: ObjectName,
    chunks: u64,
    plain: u64,
    index: u64,
    skip: usize,
    want: u64,
    sealed: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
}

impl<'a> ChunkReader<'a> {
    fn new(
        inner: ObjectReader<'a>,
        cipher: ObjectCipher,
        name: ObjectName,
        plain: u64,
        index: u64,
        skip: u64,
        want: u64,
    ) -> ChunkReader<'a> {
        ChunkReader {
            inner,
            cipher,
            name,
            chunks: format::chunk_count(plain),
            plain,
            index,
            skip: skip as usize,
            want,
            sealed: vec![0u8; SEALED_CHUNK],
            out: Vec::with_capacity(CHUNK),
            pos: 0,
        }
    }

    fn fail(&self, e: FormatError) -> io::Error {
        format_error("read", &self.name, e).into_io()
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let len = format::chunk_plain_len(self.plain, self.index) + TAG_LEN;
        let got = read_full(&mut self.inner, &mut self.sealed[..len])?;
        if got != len {
            // Shorter than its size said: changed while read.
            return Err(self.fail(FormatError::Authentication { chunk: self.index }));
        }
        let last = self.index + 1 == self.chunks;
        let mut trailer = [0u8; TRAILER_LEN];
        if last && read_full(&mut self.inner, &mut trailer)? != TRAILER_LEN {
            return Err(self.fail(FormatError::Authentication { chunk: self.index }));
        }
        self.out.clear();
        self.pos = 0;
        let r = self.cipher.open(
            self.index,
            last.then_some(&trailer),
            &self.sealed[..len],
            &mut self.out,
        );
        if let Err(e) = r {
            return Err(self.fail(e));
        }
        self.index += 1;
        self.pos = self.skip.min(self.out.len());
        self.skip = 0;
        Ok(())
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.want == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.out.len() {
            if self.index >= self.chunks {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let avail = (self.out.len() - self.pos).min(buf.len());
        let n = avail.min(usize::try_from(self.want).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        self.want -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
