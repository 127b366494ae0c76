//! The encrypted object format (docs/encryption.md, "Object format"): pure, no IO.
//!
//! ```text
//! header   48 bytes: magic | version | cipher | 6 zero bytes | data key id (16) | nonce prefix (16)
//! chunks   64 KiB plaintext chunks, each XChaCha20-Poly1305 ciphertext + 16-byte tag
//! trailer  32 bytes: the identity tag (HMAC-SHA-256 of the name and the plaintext)
//! ```
//!
//! Every chunk is sealed with associated data binding the header, its index, whether it is the
//! last, the object's full name and (last chunk) the trailer, so chunks and objects cannot be
//! swapped, reordered, renamed, truncated or extended unnoticed. Every chunk but the last is
//! full and only an empty object has an empty last chunk: the plaintext size follows from the
//! stored size, and a plaintext range maps to whole chunks.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// First bytes of every encrypted object (a non-ASCII first byte and a newline, as PNG does,
/// so text-mode mangling and plain files are told apart).
pub const MAGIC: [u8; 8] = *b"\x89PGSAFE\n";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// XChaCha20-Poly1305 (192-bit nonces: random prefixes never collide in practice).
pub const CIPHER_XCHACHA20POLY1305: u8 = 1;
pub const HEADER_LEN: usize = 48;
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
pub const TAG_LEN: usize = 16;
pub const SEALED_CHUNK: usize = CHUNK + TAG_LEN;
pub const TRAILER_LEN: usize = 32;
const FIXED: u64 = (HEADER_LEN + TRAILER_LEN) as u64;

/// Why stored bytes are not a valid encrypted object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("it is not an encrypted pgsafe object (no encryption header)")]
    NotEncrypted,
    #[error("it is encrypted in format version {0}, which this pgsafe does not read (upgrade)")]
    UnsupportedVersion(u8),
    #[error("it names cipher {0}, which this pgsafe does not know")]
    UnsupportedCipher(u8),
    #[error("its header's reserved bytes are not zero: damaged or forged")]
    BadHeader,
    #[error(
        "its size ({0} bytes) is not one an encrypted object can have: truncated, extended or \
         damaged"
    )]
    BadSize(u64),
    #[error(
        "chunk {chunk} does not authenticate: the object was changed, truncated, extended, moved \
         from another name, or its key is not the one it was written with"
    )]
    Authentication { chunk: u64 },
}

/// A data key's identifier (random, in every object's header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<KeyId> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(KeyId(out))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// 32 secret bytes (a data key, the writer key), wiped when dropped.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key derived from this one for `purpose` (HKDF-SHA-256), so one secret never keys two
    /// different constructions.
    pub fn derive(&self, purpose: &str) -> SecretKey {
        let mut out = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, &self.0[..])
            .expand(purpose.as_bytes(), &mut out)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA-256 output length"));
        SecretKey::from_bytes(out)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// An object's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_id: KeyId,
    pub nonce_prefix: [u8; 16],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8] = VERSION;
        out[9] = CIPHER_XCHACHA20POLY1305;
        out[16..32].copy_from_slice(&self.key_id.0);
        out[32..48].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Reads a header from the first bytes of a stored object.
    pub fn decode(bytes: &[u8]) -> Result<Header, FormatError> {
        let h = bytes.get(..HEADER_LEN).ok_or(FormatError::NotEncrypted)?;
        if h[..8] != MAGIC {
            return Err(FormatError::NotEncrypted);
        }
        if h[8] != VERSION {
            return Err(FormatError::UnsupportedVersion(h[8]));
        }
        if h[9] != CIPHER_XCHACHA20POLY1305 {
            return Err(FormatError::UnsupportedCipher(h[9]));
        }
        if h[10..16].iter().any(|b| *b != 0) {
            return Err(FormatError::BadHeader);
        }
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(&h[16..32]);
        let mut nonce_prefix = [0u8; 16];
        nonce_prefix.copy_from_slice(&h[32..48]);
        Ok(Header {
            key_id: KeyId(key_id),
            nonce_prefix,
        })
    }
}

/// How many chunks an object of `plain` bytes has (an empty object has one, empty).
pub fn chunk_count(plain: u64) -> u64 {
    plain.div_ceil(CHUNK as u64).max(1)
}

/// The stored size of an object of `plain` bytes; `None` past `u64`.
pub fn stored_size(plain: u64) -> Option<u64> {
    chunk_count(plain)
        .checked_mul(TAG_LEN as u64)?
        .checked_add(plain)?
        .checked_add(FIXED)
}

/// The plaintext size of a stored object of `stored` bytes, or why no object has that size.
pub fn plain_size(stored: u64) -> Result<u64, FormatError> {
    let bad = || FormatError::BadSize(stored);
    let body = stored.checked_sub(FIXED).ok_or_else(bad)?;
    let sealed = SEALED_CHUNK as u64;
    let (full, rest) = (body / sealed, body % sealed);
    let plain = match (full, rest) {
        // Only the empty object has an empty (tag-only) chunk, and it is its only one.
        (0, r) if r == TAG_LEN as u64 => 0,
        (f, 0) if f > 0 => f * CHUNK as u64,
        (f, r) if r > TAG_LEN as u64 => f * CHUNK as u64 + (r - TAG_LEN as u64),
        _ => return Err(bad()),
    };
    Ok(plain)
}

/// Where chunk `index` starts in the stored object.
pub fn chunk_offset(index: u64) -> Option<u64> {
    index
        .checked_mul(SEALED_CHUNK as u64)?
        .checked_add(HEADER_LEN as u64)
}

/// The plaintext length of chunk `index` of an object of `plain` bytes (0 past the end).
pub fn chunk_plain_len(plain: u64, index: u64) -> usize {
    let start = index.saturating_mul(CHUNK as u64);
    if index == 0 && plain == 0 {
        return 0;
    }
    plain.saturating_sub(start).min(CHUNK as u64) as usize
}

/// The chunks holding plaintext bytes `offset..offset+len` (cut at the end) of an object of
/// `plain` bytes, as `first..=last`; `None` when the range holds no byte.
pub fn chunks_for_range(plain: u64, offset: u64, len: u64) -> Option<(u64, u64)> {
    let end = offset.saturating_add(len).min(plain);
    if offset >= end {
        return None;
    }
    Some((offset / CHUNK as u64, (end - 1) / CHUNK as u64))
}

/// Seals and opens the chunks of one object: its data key, header and full name.
pub struct ObjectCipher {
    aead: XChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    nonce_prefix: [u8; 16],
    name: Vec<u8>,
}

impl ObjectCipher {
    pub fn new(key: &SecretKey, header: &Header, name: &[u8]) -> ObjectCipher {
        ObjectCipher {
            aead: XChaCha20Poly1305::new(key.as_bytes().into()),
            header: header.encode(),
            nonce_prefix: header.nonce_prefix,
            name: name.to_vec(),
        }
    }

    pub fn header_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    fn nonce(&self, index: u64) -> XNonce {
        let mut n = [0u8; 24];
        n[..16].copy_from_slice(&self.nonce_prefix);
        n[16..].copy_from_slice(&index.to_be_bytes());
        n.into()
    }

    fn associated(&self, index: u64, trailer: Option<&[u8; TRAILER_LEN]>) -> Vec<u8> {
        let mut ad = Vec::with_capacity(HEADER_LEN + 8 + 1 + TRAILER_LEN + 8 + self.name.len());
        ad.extend_from_slice(&self.header);
        ad.extend_from_slice(&index.to_be_bytes());
        match trailer {
            Some(t) => {
                ad.push(1);
                ad.extend_from_slice(t);
            }
            None => ad.push(0),
        }
        ad.extend_from_slice(&(self.name.len() as u64).to_be_bytes());
        ad.extend_from_slice(&self.name);
        ad
    }

    /// Appends chunk `index` sealed to `out`; `trailer` is the object's trailer when this is its
    /// last chunk.
    pub fn seal(
        &self,
        index: u64,
        trailer: Option<&[u8; TRAILER_LEN]>,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        out.extend_from_slice(plain);
        let ad = self.associated(index, trailer);
        let tag = self
            .aead
            .encrypt_in_place_detached(&self.nonce(index), &ad, &mut out[start..])
            .unwrap_or_else(|_| unreachable!("a 64 KiB chunk is within XChaCha20's limits"));
        out.extend_from_slice(&tag);
    }

    /// Opens sealed chunk `index`, appending its plaintext to `out`; nothing is appended when it
    /// does not authenticate.
    pub fn open(
        &self,
        index: u64,
        trailer: Option<&[u8; TRAILER_LEN]>,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let fail = FormatError::Authentication { chunk: index };
        let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(fail.clone())?;
        if body_len > CHUNK {
            return Err(fail);
        }
        let tag = Tag::clone_from_slice(&sealed[body_len..]);
        let start = out.len();
        out.extend_from_slice(&sealed[..body_len]);
        let ad = self.associated(index, trailer);
        if self
            .aead
            .decrypt_in_place_detached(&self.nonce(index), &ad, &mut out[start..], &tag)
            .is_err()
        {
            out.truncate(start);
            return Err(fail);
        }
        Ok(())
    }
}

/// Computes an object's identity tag: HMAC-SHA-256 keyed by the repository's identity key of
/// the object's name (length-prefixed) and its plaintext.
pub struct TagHasher(Hmac<Sha256>);

impl TagHasher {
    pub fn new(identity_key: &SecretKey, name: &[u8]) -> TagHasher {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(identity_key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name);
        TagHasher(mac)
    }

    pub fn update(&mut self, plain: &[u8]) {
        self.0.update(plain);
    }

    pub fn finish(self) -> [u8; TRAILER_LEN] {
        self.0.finalize().into_bytes().into()
    }
}

/// A whole object sealed in memory (for small objects and tests; the decorator streams).
pub fn seal_object(
    key: &SecretKey,
    header: &Header,
    name: &[u8],
    trailer: &[u8; TRAILER_LEN],
    plain: &[u8],
) -> Vec<u8> {
    let size = stored_size(plain.len() as u64).unwrap_or(0) as usize;
    let mut out = Vec::with_capacity(size);
    let c = ObjectCipher::new(key, header, name);
    out.extend_from_slice(c.header_bytes());
    let n = chunk_count(plain.len() as u64);
    for i in 0..n {
        let start = (i as usize) * CHUNK;
        let end = (start + CHUNK).min(plain.len());
        let last = i + 1 == n;
        c.seal(i, last.then_some(trailer), &plain[start..end], &mut out);
    }
    out.extend_from_slice(trailer);
    out
}

/// A whole stored object opened in memory, with its key found by `key_for` from the header.
pub fn open_object<E: From<FormatError>>(
    stored: &[u8],
    name: &[u8],
    key_for: impl FnOnce(&Header) -> Result<SecretKey, E>,
) -> Result<Vec<u8>, E> {
    let header = Header::decode(stored)?;
    let plain = plain_size(stored.len() as u64)?;
    let key = key_for(&header)?;
    let c = ObjectCipher::new(&key, &header, name);
    let trailer = trailer_of(stored)?;
    let n = chunk_count(plain);
    let mut out = Vec::with_capacity(plain as usize);
    for i in 0..n {
        let start = HEADER_LEN + (i as usize) * SEALED_CHUNK;
        let len = chunk_plain_len(plain, i) + TAG_LEN;
        let sealed = stored
            .get(start..start + len)
            .ok_or(FormatError::BadSize(stored.len() as u64))?;
        let last = i + 1 == n;
        c.open(i, last.then_some(&trailer), sealed, &mut out)?;
    }
    Ok(out)
}

/// The trailer (identity tag) of a whole stored object.
pub fn trailer_of(stored: &[u8]) -> Result<[u8; TRAILER_LEN], FormatError> {
    let start = stored
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(FormatError::BadSize(stored.len() as u64))?;
    let mut t = [0u8; TRAILER_LEN];
    t.copy_from_slice(&stored[start..]);
    Ok(t)
}

#[cfg(test)]
mod tests;
