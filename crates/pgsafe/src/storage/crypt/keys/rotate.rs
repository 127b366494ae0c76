//! Listing the keyring, and rotation: every key wrapped anew for another passphrase and/or
//! other recipients, without re-encrypting any data (docs/encryption.md, "Rotation").
//!
//! Order: every key is unwrapped first (a key this host cannot open stops the rotation before
//! anything is written), the new wrappings are written durably, and only then are the old
//! wrappings and passphrase records deleted. Interrupted anywhere, every key still opens with
//! the old or the new secret.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::{
    KEYRING, KdfParams, KeyError, KeyMaterial, Keyring, WRITER_SCOPE, Wrap, WrapDoc, get_doc,
    new_kek, scope_prefix,
};
use crate::storage::crypt::format::KeyId;
use crate::storage::name::ObjectName;
use crate::storage::{Backend, ObjectInfo};

/// One wrapping of a key, as `key list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WrappingInfo {
    pub object: String,
    /// `passphrase` or `age`.
    pub kind: String,
    /// The age recipients it was made for (empty for a passphrase wrapping).
    pub recipients: Vec<String>,
}

/// One key of the keyring.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    /// `writer`, or the scope of a data key (`<cluster>/backups/<ID>`, `<cluster>/wal/<TLI>/<log>`).
    pub scope: String,
    pub key_id: String,
    pub wrappings: Vec<WrappingInfo>,
}

/// What a rotation did.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RotateReport {
    pub keys: usize,
    pub wrappings_written: usize,
    pub wrappings_removed: usize,
    pub passphrase_records_removed: usize,
}

/// The keys of the keyring, by scope and id, with the objects of their wrappings.
fn groups(b: &dyn Backend) -> Result<BTreeMap<(String, String), Vec<ObjectInfo>>, KeyError> {
    let mut out: BTreeMap<(String, String), Vec<ObjectInfo>> = BTreeMap::new();
    for sub in [WRITER_SCOPE, "data"] {
        let prefix = ObjectName::new(format!("{KEYRING}/{sub}"))?;
        for o in b.list(Some(&prefix))? {
            let comps: Vec<String> = o
                .name
                .components()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            // keyring/writer/<id>/<w>.json, keyring/data/<scope…>/<id>/<w>.json
            let (scope, id) = match comps.as_slice() {
                [_, w, id, _] if w == WRITER_SCOPE => (WRITER_SCOPE.to_owned(), id.clone()),
                [_, d, scope @ .., id, _] if d == "data" && !scope.is_empty() => {
                    (scope.join("/"), id.clone())
                }
                _ => {
                    return Err(KeyError::Damaged {
                        object: o.name.to_string(),
                        why: "not where a key wrapping lies".into(),
                    });
                }
            };
            out.entry((scope, id)).or_default().push(o);
        }
    }
    Ok(out)
}

/// Every key of the keyring and its wrappings (needs no key: wrappings name their recipients).
pub fn list(b: &dyn Backend) -> Result<Vec<KeyInfo>, KeyError> {
    let mut out = Vec::new();
    for ((scope, key_id), objects) in groups(b)? {
        let mut wrappings = Vec::new();
        for o in objects {
            let doc: WrapDoc = get_doc(b, &o.name)?;
            let (kind, recipients) = match doc.wrap {
                Wrap::Passphrase { .. } => ("passphrase", Vec::new()),
                Wrap::Age { recipients, .. } => ("age", recipients),
            };
            wrappings.push(WrappingInfo {
                object: o.name.to_string(),
                kind: kind.into(),
                recipients,
            });
        }
        out.push(KeyInfo {
            scope,
            key_id,
            wrappings,
        });
    }
    Ok(out)
}

/// Rewraps every key of the keyring, opened by `old`, for `new` (a passphrase and/or
/// recipients; the writer key stays the repository's).
pub fn rotate(
    b: &dyn Backend,
    old: &Keyring,
    new: KeyMaterial,
    kdf: KdfParams,
) -> Result<RotateReport, KeyError> {
    if new.passphrase.is_none() && new.all_recipients().is_empty() {
        return Err(KeyError::NoKey);
    }
    let groups = groups(b)?;
    // Every key opens before anything is written.
    let mut keys = Vec::with_capacity(groups.len());
    for (scope, id) in groups.keys() {
        let kid = KeyId::from_hex(id).ok_or_else(|| KeyError::Damaged {
            object: format!("{KEYRING}/…/{id}"),
            why: "not a key id".into(),
        })?;
        keys.push((scope.clone(), kid, old.unwrap_key(b, scope, &kid)?));
    }
    let old_kdfs = b.list(Some(&ObjectName::new(format!("{KEYRING}/passphrase"))?))?;
    let kek = match &new.passphrase {
        Some(p) => Some(new_kek(b, p, kdf)?),
        None => None,
    };
    let next = Keyring {
        material: new,
        writer: old.writer.clone(),
        kek,
        write_cache: Mutex::default(),
        read_cache: Mutex::default(),
    };
    let mut written = 0;
    for (scope, id, key) in &keys {
        let before = b
            .list(Some(&scope_prefix(scope)?.join(id.to_hex())?))?
            .len();
        // Bound again only if it was: a rotation must not launder a planted key.
        let bind = old.reusable_key(b, scope, id).is_some();
        next.store_wrappings(b, scope, id, key, bind)?;
        let after = b
            .list(Some(&scope_prefix(scope)?.join(id.to_hex())?))?
            .len();
        written += after.saturating_sub(before);
    }
    // The new wrappings are durable (Immediate puts): the old ones can go.
    b.sync_all()?;
    let mut removed = 0;
    for objects in groups.values() {
        for o in objects {
            if b.delete(&o.name)? {
                removed += 1;
            }
        }
    }
    let mut kdf_removed = 0;
    for o in old_kdfs {
        if b.delete(&o.name)? {
            kdf_removed += 1;
        }
    }
    Ok(RotateReport {
        keys: keys.len(),
        wrappings_written: written,
        wrappings_removed: removed,
        passphrase_records_removed: kdf_removed,
    })
}
