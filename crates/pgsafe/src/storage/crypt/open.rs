//! Opening a repository's storage with this host's keys (docs/encryption.md, "What each host
//! can do"): the repository marker says whether it is encrypted; the keys come from the
//! environment every command and `archive_command` can set — `PGSAFE_PASSPHRASE`,
//! `PGSAFE_PASSPHRASE_FILE` (a file holding the passphrase) and `PGSAFE_KEY_FILE` (age
//! identities, recipients, the writer key) — read only when an encrypted repository is opened,
//! or from what a caller installed ([`install`], tests and `init`).
//!
//! A keyring opened once (an Argon2id derivation, an age decryption) is kept for the process,
//! by repository (its writer key id).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use zeroize::Zeroizing;

use super::keys::{EncryptionInfo, KeyError, KeyMaterial, Keyring};
use super::{Encrypted, repository_scope};
use crate::storage::Backend;

pub const PASSPHRASE_ENV: &str = "PGSAFE_PASSPHRASE";
pub const PASSPHRASE_FILE_ENV: &str = "PGSAFE_PASSPHRASE_FILE";
pub const KEY_FILE_ENV: &str = "PGSAFE_KEY_FILE";

/// Largest key or passphrase file read.
const KEY_FILE_LIMIT: u64 = 64 * 1024;

type MaterialFn = Box<dyn Fn() -> Result<KeyMaterial, KeyError> + Send + Sync>;

fn installed() -> &'static Mutex<Option<MaterialFn>> {
    static M: OnceLock<Mutex<Option<MaterialFn>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(None))
}

fn opened() -> &'static Mutex<HashMap<String, Arc<Keyring>>> {
    static M: OnceLock<Mutex<HashMap<String, Arc<Keyring>>>> = OnceLock::new();
    M.get_or_init(Mutex::default)
}

/// Makes `material` (called when needed) the keys of this process instead of the environment.
pub fn install(material: impl Fn() -> Result<KeyMaterial, KeyError> + Send + Sync + 'static) {
    *installed().lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(material));
    opened().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Reads a key or passphrase file (bounded; the message names the file, never its content).
pub fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>, KeyError> {
    use std::io::Read;
    let bad = |why: String| KeyError::BadKeyFile(format!("{what} {}: {why}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut s = Zeroizing::new(String::new());
    f.take(KEY_FILE_LIMIT)
        .read_to_string(&mut s)
        .map_err(|e| bad(e.to_string()))?;
    Ok(s)
}

/// The keys the environment gives (nothing set: empty material).
pub fn material_from_env() -> Result<KeyMaterial, KeyError> {
    let mut m = KeyMaterial::default();
    if let Some(p) = std::env::var_os(PASSPHRASE_ENV) {
        let p = p
            .into_string()
            .map_err(|_| KeyError::BadKeyFile(format!("{PASSPHRASE_ENV} is not valid UTF-8")))?;
        m.passphrase = Some(Zeroizing::new(p));
    } else if let Some(f) = std::env::var_os(PASSPHRASE_FILE_ENV) {
        let text = read_secret_file(Path::new(&f), "passphrase file")?;
        // One line: a trailing newline is not part of the passphrase.
        let line = text.strip_suffix('\n').unwrap_or(&text);
        m.passphrase = Some(Zeroizing::new(
            line.strip_suffix('\r').unwrap_or(line).to_owned(),
        ));
    }
    if let Some(f) = std::env::var_os(KEY_FILE_ENV) {
        let text = read_secret_file(Path::new(&f), "key file")?;
        m.add_key_file(&text).map_err(|e| match e {
            KeyError::BadKeyFile(why) => {
                KeyError::BadKeyFile(format!("key file {}: {why}", Path::new(&f).display()))
            }
            e => e,
        })?;
    }
    Ok(m)
}

/// Whether the keys this process has (installed, else from the environment) can unwrap data
/// keys: `false` for a host holding only public keys (or none).
pub fn host_can_read() -> bool {
    material().is_ok_and(|m| m.can_read())
}

fn material() -> Result<KeyMaterial, KeyError> {
    match &*installed().lock().unwrap_or_else(|p| p.into_inner()) {
        Some(f) => f(),
        None => material_from_env(),
    }
}

fn is_empty(m: &KeyMaterial) -> bool {
    m.passphrase.is_none()
        && m.identities.is_empty()
        && m.recipients.is_empty()
        && m.writer_key.is_none()
}

/// Why a repository cannot be opened with the keys this host has.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("repository {repo} is encrypted: {source}")]
    Keys {
        repo: String,
        #[source]
        source: KeyError,
    },
    #[error(
        "repository {repo} is not encrypted, but encryption keys were given ({PASSPHRASE_ENV}, \
         {PASSPHRASE_FILE_ENV} or {KEY_FILE_ENV}): refusing to treat it as encrypted. Unset them \
         for this repository, or use the encrypted repository you meant"
    )]
    NotEncrypted { repo: String },
}

impl crate::error::HasKind for OpenError {
    fn error_kind(&self) -> crate::error::ErrorKind {
        match self {
            OpenError::Keys { source, .. } => crate::error::HasKind::error_kind(source),
            OpenError::NotEncrypted { .. } => crate::error::ErrorKind::Refused,
        }
    }
}

/// The storage a repository is used through: `inner` itself for a plain repository, or
/// [`Encrypted`] over it with this host's keyring for an encrypted one (`info` from its
/// marker). `repo` names it in messages.
pub fn repository_backend(
    inner: Arc<dyn Backend>,
    info: Option<&EncryptionInfo>,
    repo: &str,
) -> Result<Arc<dyn Backend>, OpenError> {
    let keys = |source| OpenError::Keys {
        repo: repo.to_owned(),
        source,
    };
    let Some(info) = info else {
        if !is_empty(&material().map_err(keys)?) {
            return Err(OpenError::NotEncrypted {
                repo: repo.to_owned(),
            });
        }
        return Ok(inner);
    };
    let cached = opened()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&info.writer_key_id)
        .cloned();
    let keyring = match cached {
        Some(k) => k,
        None => {
            let m = material().map_err(keys)?;
            let k = Arc::new(Keyring::open(&*inner, info, m).map_err(keys)?);
            opened()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(info.writer_key_id.clone(), Arc::clone(&k));
            k
        }
    };
    Ok(Arc::new(Encrypted::new(inner, keyring, repository_scope)))
}

/// The keyring of an encrypted repository opened with this host's keys (for `key` commands).
pub fn keyring(inner: &dyn Backend, info: &EncryptionInfo) -> Result<Keyring, KeyError> {
    Keyring::open(inner, info, material()?)
}
