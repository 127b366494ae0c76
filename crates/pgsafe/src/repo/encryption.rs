//! Creating an encrypted repository (docs/encryption.md), and what the `key` commands need: the
//! repository's storage without the decorator, and its marker's encryption record.

use std::sync::Arc;

use super::doc::{self, ENCRYPTED_REPO_FORMAT, RepoMarker};
use super::{DOC_LIMIT, RepoError, marker_name};
use crate::storage::crypt::SecretKey;
use crate::storage::crypt::keys::{EncryptionInfo, KdfParams, KeyMaterial, Keyring};
use crate::storage::{Backend, ErrorKind, Location, PutOptions};

/// What [`create_encrypted`] did.
pub struct Created {
    /// The repository's writer key (for the key file of a host that holds only public keys).
    pub writer_key: SecretKey,
}

/// Creates an encrypted repository at `location` (missing or empty), its keyring made for
/// `material` (a passphrase and/or age recipients). The keyring is written before the marker:
/// an interrupted init leaves a location that is not a repository and not empty (refused, as
/// any such location is), never a marker naming keys that are not there.
///
/// The process's keys for opening the repository afterwards are the caller's to install
/// ([`crate::storage::crypt::open::install`]).
pub fn create_encrypted(
    location: &Location,
    material: KeyMaterial,
    kdf: KdfParams,
) -> Result<Created, RepoError> {
    let backend = location.create()?;
    let name = marker_name()?;
    match backend.get(&name, DOC_LIMIT) {
        Ok(_) => {
            return Err(RepoError::NotEmpty {
                path: location.shown_path(""),
            });
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let empty = super::is_empty(backend.as_ref(), location)?;
    if !empty {
        return Err(RepoError::NotEmpty {
            path: location.shown_path(""),
        });
    }
    let (info, keyring) = Keyring::create(&*backend, material, kdf)?;
    let writer_key = keyring.writer_key().clone();
    let marker = RepoMarker {
        format: ENCRYPTED_REPO_FORMAT,
        created_at: doc::format_time(doc::now_us()),
        pgsafe_version: env!("CARGO_PKG_VERSION").into(),
        encryption: Some(info),
    };
    backend.put(&name, &marker.to_json(), PutOptions::default())?;
    // Opened afterwards ([`Repository::open`]) with the keys the caller installs.
    Ok(Created { writer_key })
}

/// The repository's storage without the decorator and its encryption record (`None`: a plain
/// repository), for the `key` commands.
pub fn raw(location: &Location) -> Result<(Arc<dyn Backend>, Option<EncryptionInfo>), RepoError> {
    let backend = match location.open() {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(RepoError::NotARepository {
                path: location.shown_path(""),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let name = marker_name()?;
    let marker = match backend.get(&name, DOC_LIMIT) {
        Ok(bytes) => RepoMarker::parse(&bytes).map_err(|source| RepoError::Doc {
            object: location.show(&name.to_string()),
            source,
        })?,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(RepoError::NotARepository {
                path: location.shown_path(""),
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok((backend, marker.encryption))
}
