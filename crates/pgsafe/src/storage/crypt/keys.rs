//! The repository's keyring (docs/encryption.md, "Keys"): random data keys per scope (a
//! backup, a WAL epoch) and the repository's writer key, each stored only wrapped — with a key
//! derived by Argon2id from a passphrase and/or as an age file to X25519 recipients — in
//! write-once objects:
//!
//! ```text
//! pgsafe-keyring/passphrase/<kdf id>.json                     Argon2id parameters, salt, check value
//! pgsafe-keyring/writer/<key id>/<wrapping id>.json           the writer key, wrapped
//! pgsafe-keyring/data/<scope>/<key id>/<wrapping id>.json     a data key, wrapped
//! ```
//!
//! What a host holds is its [`KeyMaterial`]: a passphrase, age identities, age recipients, the
//! writer key. [`Keyring::open`] checks it against the repository before anything is written.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::format::{KeyId, SecretKey};
use super::{KeySource, KeyUnavailable};
use crate::storage::error::{ErrorKind, Result, StorageError};
use crate::storage::name::ObjectName;
use crate::storage::{Backend, PutOptions};

/// The keyring's folder at the top of the repository.
pub const KEYRING: &str = "pgsafe-keyring";
const KEYRING_DOC_LIMIT: u64 = 64 * 1024;
const WRAP_MAGIC: &[u8] = b"pgsafe key wrapping v1";
const WRITER_SCOPE: &str = "writer";
const IDENTITY_PURPOSE: &str = "pgsafe identity tag v1";
const FINGERPRINT_PURPOSE: &str = "pgsafe writer key fingerprint v1";
const CHECK_PURPOSE: &str = "pgsafe passphrase check v1";
const BINDING_PURPOSE: &str = "pgsafe key binding v1";
/// The line prefix of the writer key in a key file.
pub const WRITER_KEY_PREFIX: &str = "PGSAFE-WRITER-KEY-1";

/// What the repository marker records of an encrypted repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionInfo {
    /// The object format (`storage/crypt/format.rs`).
    pub format: String,
    /// The writer key's id and fingerprint (HMAC of a constant under it): a host's writer key
    /// is checked against it.
    pub writer_key_id: String,
    pub writer_key_fingerprint: String,
}

/// Argon2id's cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option (64 MiB, 3 passes), one lane.
    fn default() -> KdfParams {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

/// What went wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the passphrase does not open this repository's keyring: wrong passphrase (check the \
         passphrase variable or file)"
    )]
    WrongPassphrase,
    #[error(
        "none of the age identities given opens this repository's writer key: wrong identity \
         file, or the key was rotated to other recipients"
    )]
    WrongIdentity,
    #[error(
        "the writer key given is not this repository's (its fingerprint differs): use the key \
         file made for this repository"
    )]
    WrongWriterKey,
    #[error(
        "the repository is encrypted and this host holds no key for it: give the passphrase, or \
         a key file with an age identity, or with recipients and the writer key"
    )]
    NoKey,
    #[error(
        "the key file gives recipients but not the repository's writer key ({WRITER_KEY_PREFIX} \
         line), which a host holding only public keys needs to write"
    )]
    NoWriterKey,
    #[error("{0}")]
    BadKeyFile(String),
    #[error("keyring object {object} is damaged or not a keyring object: {why}")]
    Damaged { object: String, why: String },
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("keyring: {0}")]
    Storage(#[from] StorageError),
}

impl crate::error::HasKind for KeyError {
    fn error_kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            KeyError::WrongPassphrase
            | KeyError::WrongIdentity
            | KeyError::WrongWriterKey
            | KeyError::NoKey
            | KeyError::NoWriterKey => K::Refused,
            KeyError::BadKeyFile(_) => K::Usage,
            KeyError::Damaged { .. } => K::Corrupt,
            KeyError::Kdf(_) => K::Internal,
            KeyError::Storage(e) => crate::error::HasKind::error_kind(e),
        }
    }
}

/// The keys a host holds.
#[derive(Default)]
pub struct KeyMaterial {
    pub passphrase: Option<Zeroizing<String>>,
    pub identities: Vec<age::x25519::Identity>,
    pub recipients: Vec<age::x25519::Recipient>,
    pub writer_key: Option<SecretKey>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "…"))
            .field("identities", &self.identities.len())
            .field("recipients", &self.recipients.len())
            .field("writer_key", &self.writer_key.is_some())
            .finish()
    }
}

impl KeyMaterial {
    /// Adds what a key file holds: `AGE-SECRET-KEY-1…` identities, `age1…` recipients, the
    /// `PGSAFE-WRITER-KEY-1…` writer key; `#` comments and blank lines are skipped. Messages
    /// name the line, never quote it.
    pub fn add_key_file(&mut self, text: &str) -> std::result::Result<(), KeyError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            let bad = |what: &str| KeyError::BadKeyFile(format!("line {}: {what}", i + 1));
            if line.is_empty() || line.starts_with('#') {
                continue;
            } else if line.starts_with("AGE-SECRET-KEY-1") {
                let id = age::x25519::Identity::from_str(line)
                    .map_err(|_| bad("not a valid age identity"))?;
                self.identities.push(id);
            } else if line.starts_with("age1") {
                let r = age::x25519::Recipient::from_str(line)
                    .map_err(|_| bad("not a valid age X25519 recipient"))?;
                self.recipients.push(r);
            } else if let Some(hex) = line.strip_prefix(WRITER_KEY_PREFIX) {
                let mut k = Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(hex, &mut k[..])
                    .map_err(|_| bad("not a valid writer key (64 hex digits expected)"))?;
                self.writer_key = Some(SecretKey::from_bytes(*k));
            } else {
                return Err(bad(
                    "neither an age identity, an age recipient nor a pgsafe writer key",
                ));
            }
        }
        Ok(())
    }

    /// Whether this host could unwrap keys at all.
    pub fn can_read(&self) -> bool {
        self.passphrase.is_some() || !self.identities.is_empty()
    }

    /// The recipients new keys are wrapped to: those given and the identities' own.
    fn all_recipients(&self) -> Vec<age::x25519::Recipient> {
        let mut out: Vec<age::x25519::Recipient> = self.recipients.clone();
        for id in &self.identities {
            let r = id.to_public();
            if !out.iter().any(|o| o.to_string() == r.to_string()) {
                out.push(r);
            }
        }
        out
    }
}

/// The line of a key file holding `key`.
pub fn writer_key_line(key: &SecretKey) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{WRITER_KEY_PREFIX}{}",
        hex::encode(key.as_bytes())
    ))
}

fn random<const N: usize>() -> std::result::Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| KeyError::Kdf(format!("no random numbers from the operating system: {e}")))?;
    Ok(b)
}

fn mac(key: &SecretKey, data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(data);
    m.finalize().into_bytes().into()
}

fn fingerprint(writer: &SecretKey) -> String {
    hex::encode(&mac(writer, FINGERPRINT_PURPOSE.as_bytes())[..16])
}

/// A passphrase's derivation record (`keyring/passphrase/<id>.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfDoc {
    version: u32,
    algorithm: String,
    params: KdfParams,
    salt: String,
    /// HMAC of a constant under the derived key: tells a wrong passphrase from a damaged
    /// wrapping.
    check: String,
}

/// One wrapping of a key (`keyring/…/<key id>/<wrapping id>.json`).
// No deny_unknown_fields: serde does not combine it with the flattened wrapping.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WrapDoc {
    version: u32,
    key_id: String,
    scope: String,
    #[serde(flatten)]
    wrap: Wrap,
    /// HMAC, under a key derived from the repository's writer key, of what the wrapping
    /// seals: only a host holding the writer key makes it, so a data key someone wrapped to
    /// the public recipients (age has no sender authentication) is never reused for new
    /// objects ([`Keyring::reusable_key`]). Absent in wrappings made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    binding: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "wrap", rename_all = "lowercase")]
enum Wrap {
    /// Sealed with the passphrase-derived key of KDF record `kdf`.
    Passphrase {
        kdf: String,
        nonce: String,
        sealed: String,
    },
    /// An age file to `recipients` (listed for `key list`; the age header is what counts).
    Age {
        recipients: Vec<String>,
        file: String,
    },
}

/// The bytes a wrapping seals: the key bound to its id and scope.
fn wrapped_plaintext(id: &KeyId, scope: &str, key: &SecretKey) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(
        WRAP_MAGIC.len() + 16 + 8 + scope.len() + 32,
    ));
    p.extend_from_slice(WRAP_MAGIC);
    p.extend_from_slice(&id.0);
    p.extend_from_slice(&(scope.len() as u64).to_be_bytes());
    p.extend_from_slice(scope.as_bytes());
    p.extend_from_slice(key.as_bytes());
    p
}

/// A passphrase-derived key and its record's id.
struct Kek {
    id: String,
    key: SecretKey,
}

fn derive(passphrase: &str, doc: &KdfDoc) -> std::result::Result<SecretKey, KeyError> {
    if doc.version != 1 || doc.algorithm != "argon2id" {
        return Err(KeyError::Kdf(format!(
            "unknown key derivation {} (version {})",
            doc.algorithm, doc.version
        )));
    }
    let salt = hex::decode(&doc.salt).map_err(|_| KeyError::Kdf("bad salt".into()))?;
    let p = doc.params;
    // Bounded: a planted record must not make this host allocate without limit.
    if p.m_kib > 4 * 1024 * 1024 || p.t > 100 || p.p > 64 {
        return Err(KeyError::Kdf(format!(
            "Argon2id parameters out of range ({} KiB, {} passes, {} lanes)",
            p.m_kib, p.t, p.p
        )));
    }
    let params = argon2::Params::new(p.m_kib, p.t, p.p, Some(32))
        .map_err(|e| KeyError::Kdf(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase.as_bytes(), &salt, &mut out[..])
        .map_err(|e| KeyError::Kdf(e.to_string()))?;
    Ok(SecretKey::from_bytes(*out))
}

fn n(s: &str) -> Result<ObjectName> {
    ObjectName::new(s)
}

fn put_doc(b: &dyn Backend, name: &ObjectName, doc: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    bytes.push(b'\n');
    b.put(name, &bytes, PutOptions::default())?;
    Ok(())
}

fn get_doc<T: for<'de> Deserialize<'de>>(
    b: &dyn Backend,
    name: &ObjectName,
) -> std::result::Result<T, KeyError> {
    let bytes = b.get(name, KEYRING_DOC_LIMIT)?;
    serde_json::from_slice(&bytes).map_err(|e| KeyError::Damaged {
        object: name.to_string(),
        why: e.to_string(),
    })
}

/// The keyring prefix of `scope` (a data scope, or the writer key).
fn scope_prefix(scope: &str) -> Result<ObjectName> {
    if scope == WRITER_SCOPE {
        n(&format!("{KEYRING}/{WRITER_SCOPE}"))
    } else {
        n(&format!("{KEYRING}/data/{scope}"))
    }
}

/// A host's keys, opened against one repository: the [`KeySource`] of its [`super::Encrypted`].
pub struct Keyring {
    material: KeyMaterial,
    writer: SecretKey,
    kek: Option<Kek>,
    write_cache: Mutex<HashMap<ObjectName, (KeyId, SecretKey)>>,
    read_cache: Mutex<HashMap<KeyId, SecretKey>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("material", &self.material)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Creates the keyring of a new encrypted repository in `b`: the passphrase's derivation
    /// record (if any), and the writer key wrapped for `material`. Returns what the marker
    /// records and the writer key (for the key files of public-key-only hosts).
    pub fn create(
        b: &dyn Backend,
        material: KeyMaterial,
        kdf: KdfParams,
    ) -> std::result::Result<(EncryptionInfo, Keyring), KeyError> {
        if material.passphrase.is_none() && material.all_recipients().is_empty() {
            return Err(KeyError::NoKey);
        }
        let kek = match &material.passphrase {
            Some(p) => Some(new_kek(b, p, kdf)?),
            None => None,
        };
        let writer = SecretKey::from_bytes(random::<32>()?);
        let id = KeyId(random::<16>()?);
        let info = EncryptionInfo {
            format: "xchacha20poly1305-64k-v1".into(),
            writer_key_id: id.to_hex(),
            writer_key_fingerprint: fingerprint(&writer),
        };
        let k = Keyring {
            material,
            writer,
            kek,
            write_cache: Mutex::default(),
            read_cache: Mutex::default(),
        };
        k.store_wrappings(b, WRITER_SCOPE, &id, &k.writer, true)?;
        Ok((info, k))
    }

    /// Opens the keyring of the repository whose marker records `info` with what this host
    /// holds, checking it: a wrong passphrase, identity or writer key is refused here, before
    /// anything is written.
    pub fn open(
        b: &dyn Backend,
        info: &EncryptionInfo,
        material: KeyMaterial,
    ) -> std::result::Result<Keyring, KeyError> {
        if !material.can_read() && material.writer_key.is_none() {
            return Err(if material.recipients.is_empty() {
                KeyError::NoKey
            } else {
                KeyError::NoWriterKey
            });
        }
        let kek = match &material.passphrase {
            Some(p) => Some(find_kek(b, p)?),
            None => None,
        };
        let mut k = Keyring {
            material,
            writer: SecretKey::from_bytes([0; 32]),
            kek,
            write_cache: Mutex::default(),
            read_cache: Mutex::default(),
        };
        let writer = match k.material.writer_key.clone() {
            Some(w) => w,
            None => {
                let id = KeyId::from_hex(&info.writer_key_id).ok_or_else(|| KeyError::Damaged {
                    object: crate::storage::key::REPOSITORY_MARKER.into(),
                    why: "its writer key id is not 32 hex digits".into(),
                })?;
                match k.unwrap_key(b, WRITER_SCOPE, &id) {
                    Ok(w) => w,
                    Err(e) if is_unavailable(&e) => {
                        return Err(if k.kek.is_some() {
                            KeyError::WrongPassphrase
                        } else {
                            KeyError::WrongIdentity
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if fingerprint(&writer) != info.writer_key_fingerprint {
            return Err(KeyError::WrongWriterKey);
        }
        k.writer = writer;
        if k.material.all_recipients().is_empty() && k.kek.is_none() {
            return Err(KeyError::NoKey);
        }
        Ok(k)
    }

    /// The writer key (for `key` commands that write a public-key-only host's key file).
    pub fn writer_key(&self) -> &SecretKey {
        &self.writer
    }

    /// Whether this host can unwrap keys (restore, verify, archive-get).
    pub fn can_read(&self) -> bool {
        self.material.can_read()
    }

    /// Wraps `key` for every target this host has and stores the wrappings durably; `bind`:
    /// with the binding under the writer key (a key this host made, or one it may reuse).
    fn store_wrappings(
        &self,
        b: &dyn Backend,
        scope: &str,
        id: &KeyId,
        key: &SecretKey,
        bind: bool,
    ) -> Result<()> {
        let prefix = scope_prefix(scope)?.join(id.to_hex())?;
        for doc in self.wrap(scope, id, key, bind).map_err(|e| {
            StorageError::new(ErrorKind::Other, "wrap key", &prefix).with_detail(e.to_string())
        })? {
            let wrap_id = hex::encode(random::<8>().map_err(|e| {
                StorageError::new(ErrorKind::Other, "wrap key", &prefix).with_detail(e.to_string())
            })?);
            put_doc(b, &prefix.join(format!("{wrap_id}.json"))?, &doc)?;
        }
        Ok(())
    }

    fn wrap(
        &self,
        scope: &str,
        id: &KeyId,
        key: &SecretKey,
        bind: bool,
    ) -> std::result::Result<Vec<WrapDoc>, KeyError> {
        let plain = wrapped_plaintext(id, scope, key);
        let binding = bind.then(|| self.binding(scope, id, key));
        let mut out = Vec::new();
        if let Some(kek) = &self.kek {
            let nonce = random::<24>()?;
            let sealed = XChaCha20Poly1305::new(kek.key.as_bytes().into())
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &plain,
                        aad: WRAP_MAGIC,
                    },
                )
                .map_err(|_| KeyError::Kdf("sealing a key failed".into()))?;
            out.push(WrapDoc {
                version: 1,
                key_id: id.to_hex(),
                scope: scope.into(),
                wrap: Wrap::Passphrase {
                    kdf: kek.id.clone(),
                    nonce: hex::encode(nonce),
                    sealed: hex::encode(sealed),
                },
                binding: binding.clone(),
            });
        }
        let recipients = self.material.all_recipients();
        if !recipients.is_empty() {
            let enc = age::Encryptor::with_recipients(
                recipients.iter().map(|r| r as &dyn age::Recipient),
            )
            .map_err(|e| KeyError::Kdf(e.to_string()))?;
            let mut file = Vec::new();
            let mut w = enc
                .wrap_output(&mut file)
                .map_err(|e| KeyError::Kdf(e.to_string()))?;
            w.write_all(&plain)
                .and_then(|()| w.finish().map(|_| ()))
                .map_err(|e| KeyError::Kdf(e.to_string()))?;
            out.push(WrapDoc {
                version: 1,
                key_id: id.to_hex(),
                scope: scope.into(),
                wrap: Wrap::Age {
                    recipients: recipients.iter().map(|r| r.to_string()).collect(),
                    file: hex::encode(file),
                },
                binding,
            });
        }
        Ok(out)
    }

    /// The binding of key `id` of `scope` to the repository's writer key ([`WrapDoc::binding`]).
    fn binding(&self, scope: &str, id: &KeyId, key: &SecretKey) -> String {
        let plain = wrapped_plaintext(id, scope, key);
        hex::encode(mac(&self.writer.derive(BINDING_PURPOSE), &plain))
    }

    /// Key `id` of `scope` when this host may seal new objects with it: a wrapping of it
    /// opens and carries its binding, and this host's writer key cannot have been planted —
    /// it comes from the host's key file, or was opened with the passphrase alone. (An
    /// identity-holding host takes the writer key from the repository, where someone who
    /// knows the public recipients can replace it along with the marker: such a host makes
    /// its own keys, as a host holding only public keys does.) Whoever wrapped a key to the
    /// public recipients could read everything sealed with it.
    fn reusable_key(&self, b: &dyn Backend, scope: &str, id: &KeyId) -> Option<SecretKey> {
        let own_writer = self.material.writer_key.is_some()
            || (self.material.identities.is_empty() && self.kek.is_some());
        if !own_writer {
            return None;
        }
        let prefix = scope_prefix(scope).ok()?.join(id.to_hex()).ok()?;
        for w in b.list(Some(&prefix)).ok()? {
            let Ok(doc) = get_doc::<WrapDoc>(b, &w.name) else {
                continue;
            };
            let Ok(Some(k)) = self.unwrap_doc(&doc, scope, id, &w.name) else {
                continue;
            };
            if doc.binding.as_deref() == Some(self.binding(scope, id, &k).as_str()) {
                return Some(k);
            }
        }
        None
    }

    /// Opens one wrapping; `Ok(None)` when this host's keys do not open it.
    fn unwrap_doc(
        &self,
        doc: &WrapDoc,
        scope: &str,
        id: &KeyId,
        object: &ObjectName,
    ) -> std::result::Result<Option<SecretKey>, KeyError> {
        let damaged = |why: &str| KeyError::Damaged {
            object: object.to_string(),
            why: why.into(),
        };
        if doc.version != 1 || doc.key_id != id.to_hex() || doc.scope != scope {
            return Err(damaged("it names another key, scope or version"));
        }
        let plain: Zeroizing<Vec<u8>> = match &doc.wrap {
            Wrap::Passphrase { kdf, nonce, sealed } => {
                let Some(kek) = self.kek.as_ref().filter(|k| &k.id == kdf) else {
                    return Ok(None);
                };
                let nonce = hex::decode(nonce).map_err(|_| damaged("bad nonce"))?;
                let sealed = hex::decode(sealed).map_err(|_| damaged("bad sealed key"))?;
                if nonce.len() != 24 {
                    return Err(damaged("bad nonce"));
                }
                match XChaCha20Poly1305::new(kek.key.as_bytes().into()).decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &sealed,
                        aad: WRAP_MAGIC,
                    },
                ) {
                    Ok(p) => Zeroizing::new(p),
                    // The passphrase was checked: this wrapping was changed.
                    Err(_) => return Err(damaged("it does not authenticate")),
                }
            }
            Wrap::Age { file, .. } => {
                if self.material.identities.is_empty() {
                    return Ok(None);
                }
                let file = hex::decode(file).map_err(|_| damaged("bad age file"))?;
                let Ok(d) = age::Decryptor::new_buffered(&file[..]) else {
                    return Err(damaged("not an age file"));
                };
                let mut r = match d.decrypt(
                    self.material
                        .identities
                        .iter()
                        .map(|i| i as &dyn age::Identity),
                ) {
                    Ok(r) => r,
                    Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
                    Err(e) => return Err(damaged(&e.to_string())),
                };
                let mut p = Zeroizing::new(Vec::new());
                r.by_ref()
                    .take(1024)
                    .read_to_end(&mut p)
                    .map_err(|e| damaged(&e.to_string()))?;
                p
            }
        };
        let want = wrapped_plaintext(id, scope, &SecretKey::from_bytes([0; 32]));
        let head = want.len() - 32;
        if plain.len() != want.len() || plain[..head] != want[..head] {
            return Err(damaged("it wraps a key of another id or scope"));
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&plain[head..]);
        Ok(Some(SecretKey::from_bytes(k)))
    }

    /// The key `id` of `scope`, unwrapped from any of its wrappings this host opens.
    fn unwrap_key(&self, b: &dyn Backend, scope: &str, id: &KeyId) -> Result<SecretKey> {
        let prefix = scope_prefix(scope)?.join(id.to_hex())?;
        let wrappings = b.list(Some(&prefix))?;
        if wrappings.is_empty() {
            return Err(
                StorageError::new(ErrorKind::NotFound, "read key", &prefix).with_detail(format!(
                    "data key {id} is not in the repository's keyring (deleted, or never \
                     written): what it encrypted cannot be read"
                )),
            );
        }
        let mut damage = None;
        for w in &wrappings {
            let r = get_doc::<WrapDoc>(b, &w.name)
                .and_then(|doc| self.unwrap_doc(&doc, scope, id, &w.name));
            match r {
                Ok(Some(k)) => return Ok(k),
                Ok(None) => {}
                Err(KeyError::Storage(e)) => return Err(e),
                Err(e) => damage = Some(e),
            }
        }
        if let Some(e) = damage {
            return Err(StorageError::new(ErrorKind::Other, "read key", &prefix)
                .with_detail(format!("{e}; the key is not used")));
        }
        let why = if self.material.can_read() {
            format!(
                "none of the {} wrapping(s) of key {id} opens with this host's passphrase or \
                 identities (rotated to other ones?)",
                wrappings.len()
            )
        } else {
            format!(
                "this host holds only the repository's public keys (age recipients) and its \
                 writer key, which cannot decrypt: reading key {id} needs the age identity file \
                 or the passphrase"
            )
        };
        Err(
            StorageError::new(ErrorKind::PermissionDenied, "read key", &prefix)
                .with_detail(why.clone())
                .with_source(KeyUnavailable(why)),
        )
    }
}

fn is_unavailable(e: &StorageError) -> bool {
    super::is_key_unavailable(e)
}

fn new_kek(
    b: &dyn Backend,
    passphrase: &str,
    params: KdfParams,
) -> std::result::Result<Kek, KeyError> {
    let salt = random::<16>()?;
    let mut doc = KdfDoc {
        version: 1,
        algorithm: "argon2id".into(),
        params,
        salt: hex::encode(salt),
        check: String::new(),
    };
    let key = derive(passphrase, &doc)?;
    doc.check = hex::encode(mac(&key, CHECK_PURPOSE.as_bytes()));
    let id = hex::encode(random::<8>()?);
    put_doc(b, &n(&format!("{KEYRING}/passphrase/{id}.json"))?, &doc)?;
    Ok(Kek { id, key })
}

fn find_kek(b: &dyn Backend, passphrase: &str) -> std::result::Result<Kek, KeyError> {
    for o in b.list(Some(&n(&format!("{KEYRING}/passphrase"))?))? {
        let doc: KdfDoc = get_doc(b, &o.name)?;
        let key = derive(passphrase, &doc)?;
        if hex::encode(mac(&key, CHECK_PURPOSE.as_bytes())) == doc.check {
            let id = String::from_utf8_lossy(o.name.file_name())
                .trim_end_matches(".json")
                .to_string();
            return Ok(Kek { id, key });
        }
    }
    Err(KeyError::WrongPassphrase)
}

impl KeySource for Keyring {
    fn identity_key(&self) -> Result<SecretKey> {
        Ok(self.writer.derive(IDENTITY_PURPOSE))
    }

    fn write_key(&self, inner: &dyn Backend, scope: &ObjectName) -> Result<(KeyId, SecretKey)> {
        let mut cache = self.write_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cache.get(scope) {
            return Ok(k.clone());
        }
        let s = scope.to_str().unwrap_or_default().to_owned();
        // A host that can unwrap reuses the scope's key (one key per WAL epoch), but only one
        // bound to the writer key: never one planted in the keyring.
        if self.can_read() {
            for e in inner.list_entries(&scope_prefix(&s)?)? {
                let Some(id) = std::str::from_utf8(&e.name).ok().and_then(KeyId::from_hex) else {
                    continue;
                };
                if let Some(k) = self.reusable_key(inner, &s, &id) {
                    cache.insert(scope.clone(), (id, k.clone()));
                    return Ok((id, k));
                }
            }
        }
        let err = |e: KeyError| {
            StorageError::new(ErrorKind::Other, "create key", scope).with_detail(e.to_string())
        };
        let key = SecretKey::from_bytes(random::<32>().map_err(err)?);
        let id = KeyId(random::<16>().map_err(err)?);
        self.store_wrappings(inner, &s, &id, &key, true)?;
        cache.insert(scope.clone(), (id, key.clone()));
        Ok((id, key))
    }

    fn read_key(&self, inner: &dyn Backend, scope: &ObjectName, id: &KeyId) -> Result<SecretKey> {
        if let Some(k) = self
            .read_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(k.clone());
        }
        let k = self.unwrap_key(inner, scope.to_str().unwrap_or_default(), id)?;
        self.read_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*id, k.clone());
        Ok(k)
    }
}

pub mod rotate;
#[cfg(test)]
mod tests;
