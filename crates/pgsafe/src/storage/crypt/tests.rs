#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::sync::Arc;

use super::format::{CHUNK, HEADER_LEN, SEALED_CHUNK, TRAILER_LEN};
use super::keys::{KdfParams, KeyMaterial, Keyring};
use super::*;
use crate::storage::conformance::{self, pattern};
use crate::storage::{LocalBackend, MemoryBackend};

/// Fixed keys: one data key per scope (its id derived from the scope), readable or not.
#[derive(Debug)]
struct StaticKeys {
    can_read: bool,
}

fn id_of(scope: &ObjectName) -> KeyId {
    let mut id = [0u8; 16];
    for (i, b) in scope.as_bytes().iter().enumerate() {
        id[i % 16] ^= *b;
    }
    KeyId(id)
}

impl KeySource for StaticKeys {
    fn identity_key(&self) -> Result<SecretKey> {
        Ok(SecretKey::from_bytes([9; 32]))
    }
    fn write_key(&self, _: &dyn Backend, scope: &ObjectName) -> Result<(KeyId, SecretKey)> {
        Ok((
            id_of(scope),
            SecretKey::from_bytes(id_of(scope).0.repeat(2).try_into().unwrap()),
        ))
    }
    fn read_key(&self, _: &dyn Backend, scope: &ObjectName, id: &KeyId) -> Result<SecretKey> {
        if !self.can_read {
            return Err(
                StorageError::new(ErrorKind::PermissionDenied, "read key", scope)
                    .with_source(KeyUnavailable("public keys only".into())),
            );
        }
        Ok(SecretKey::from_bytes(id.0.repeat(2).try_into().unwrap()))
    }
}

/// Everything encrypted, under its folder's key.
fn all(name: &ObjectName) -> Option<ObjectName> {
    Some(name.parent().unwrap_or_else(|| name.clone()))
}

fn encrypted(inner: Arc<dyn Backend>, can_read: bool) -> Encrypted {
    Encrypted::new(inner, Arc::new(StaticKeys { can_read }), all)
}

fn n(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

#[test]
fn conformance_over_memory() {
    conformance::run(&encrypted(Arc::new(MemoryBackend::new()), true));
}

#[test]
fn conformance_over_local() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalBackend::create(dir.path()).unwrap();
    conformance::run(&encrypted(Arc::new(local), true));
}

#[test]
fn conformance_over_memory_with_a_real_keyring() {
    let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let mut m = KeyMaterial::default();
    m.identities.push(age::x25519::Identity::generate());
    let (_, keyring) = Keyring::create(&*inner, m, KdfParams::default()).unwrap();
    conformance::run(&Encrypted::new(inner, Arc::new(keyring), all));
}

#[test]
fn nothing_is_stored_in_plain_and_sizes_are_plaintext_sizes() {
    let mem = MemoryBackend::new();
    let e = encrypted(Arc::new(mem.clone()), true);
    let data = pattern(3 * CHUNK + 100, 1);
    e.put(&n("b/x"), &data, PutOptions::default()).unwrap();
    let stored = mem.get(&n("b/x"), u64::MAX).unwrap();
    assert_eq!(
        stored.len() as u64,
        format::stored_size(data.len() as u64).unwrap()
    );
    assert!(
        !stored
            .windows(64)
            .any(|w| data.windows(64).next() == Some(w)),
        "plaintext in the stored object"
    );
    assert_eq!(e.size(&n("b/x")).unwrap(), data.len() as u64);
    assert_eq!(e.list(None).unwrap()[0].size, data.len() as u64);
    let entries = e.list_entries(&n("b")).unwrap();
    assert_eq!(
        entries[0].kind,
        EntryKind::Object {
            size: data.len() as u64
        }
    );
    assert!(e.open_file(&n("b/x")).is_none());
}

/// A plain-scoped object passes through unchanged.
#[test]
fn catalog_objects_stay_plain() {
    let mem = MemoryBackend::new();
    let e = Encrypted::new(
        Arc::new(mem.clone()),
        Arc::new(StaticKeys { can_read: true }),
        repository_scope,
    );
    for (name, plain) in [
        ("pgsafe-repo.json", true),
        ("c/cluster.json", true),
        ("c/events/e.json", true),
        ("c/leases/l.json", true),
        ("c/backups/B/pgsafe.json", true),
        ("c/backups/B/backup_label", false),
        ("c/backups/B/base/1/1", false),
        ("c/wal/00000001/00000000/000000010000000000000001", false),
        ("c/wal/00000001/00000002.history", false),
    ] {
        e.put(&n(name), b"{}", PutOptions::default()).unwrap();
        let stored = mem.get(&n(name), u64::MAX).unwrap();
        assert_eq!(stored == b"{}", plain, "{name}");
        assert_eq!(e.get(&n(name), 100).unwrap(), b"{}");
    }
    assert_eq!(
        repository_scope(&n("c/backups/B/base/1/1")),
        Some(n("c/backups/B"))
    );
    assert_eq!(
        repository_scope(&n("c/wal/00000001/00000000/000000010000000000000001")),
        Some(n("c/wal/00000001/00000000"))
    );
}

#[test]
fn ranges_decrypt_only_their_chunks() {
    let mem = MemoryBackend::new();
    let e = encrypted(Arc::new(mem.clone()), true);
    let data = pattern(5 * CHUNK + 10, 2);
    e.put(&n("b/x"), &data, PutOptions::default()).unwrap();
    // Damage chunk 0 in the stored copy: a range in chunks 2..=3 still reads, one touching
    // chunk 0 does not.
    let mut stored = mem.get(&n("b/x"), u64::MAX).unwrap();
    stored[HEADER_LEN + 5] ^= 1;
    let damaged = MemoryBackend::new();
    damaged
        .put(&n("b/x"), &stored, PutOptions::default())
        .unwrap();
    let d = encrypted(Arc::new(damaged), true);
    let from = 2 * CHUNK as u64 + 7;
    assert_eq!(
        d.get_range(&n("b/x"), from, CHUNK as u64 + 3).unwrap(),
        &data[from as usize..from as usize + CHUNK + 3]
    );
    assert_eq!(
        d.get_range(&n("b/x"), 5 * CHUNK as u64, 100).unwrap(),
        &data[5 * CHUNK..]
    );
    let e0 = d.get_range(&n("b/x"), 10, 10).unwrap_err();
    assert!(e0.to_string().contains("does not authenticate"), "{e0}");
}

fn stored_of(mem: &MemoryBackend, name: &str) -> Vec<u8> {
    mem.get(&n(name), u64::MAX).unwrap()
}

fn plant(mem: &MemoryBackend, name: &str, bytes: &[u8]) {
    mem.delete(&n(name)).unwrap();
    mem.put(&n(name), bytes, PutOptions::default()).unwrap();
}

fn read_all(e: &Encrypted, name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    e.read(&n(name))?
        .read_to_end(&mut out)
        .map_err(|err| StorageError::io("read", name, err))?;
    Ok(out)
}

/// The attacker's side: whatever is done to stored objects, the decorator gives an error,
/// never bytes other than those written.
#[test]
fn tampered_objects_are_never_served() {
    let mem = MemoryBackend::new();
    let e = encrypted(Arc::new(mem.clone()), true);
    let data = pattern(3 * CHUNK + 1000, 3);
    e.put(&n("b1/x"), &data, PutOptions::default()).unwrap();
    e.put(&n("b1/y"), &data[..CHUNK * 2], PutOptions::default())
        .unwrap();
    e.put(&n("b2/x"), &data, PutOptions::default()).unwrap();
    let good = stored_of(&mem, "b1/x");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = good.clone();
    flipped[HEADER_LEN + CHUNK + 3] ^= 0x01;
    cases.push(("a flipped byte", flipped));
    let mut swapped = good.clone();
    let (a, b) = (HEADER_LEN, HEADER_LEN + SEALED_CHUNK);
    let c0 = good[a..b].to_vec();
    swapped[a..b].copy_from_slice(&good[b..b + SEALED_CHUNK]);
    swapped[b..b + SEALED_CHUNK].copy_from_slice(&c0);
    cases.push(("swapped chunks", swapped));
    let mut truncated = good[..HEADER_LEN + 2 * SEALED_CHUNK].to_vec();
    truncated.extend_from_slice(&good[good.len() - TRAILER_LEN..]);
    cases.push(("truncated at a chunk boundary", truncated));
    cases.push(("truncated anywhere", good[..good.len() - 7].to_vec()));
    let mut extended = good.clone();
    extended.splice(
        good.len() - TRAILER_LEN..good.len() - TRAILER_LEN,
        good[HEADER_LEN..HEADER_LEN + SEALED_CHUNK].iter().copied(),
    );
    cases.push(("extended by a chunk", extended));
    cases.push(("copied from another backup", stored_of(&mem, "b2/x")));
    cases.push(("renamed from another object", stored_of(&mem, "b1/y")));
    let mut key_id = good.clone();
    key_id[20] ^= 1;
    cases.push(("the header's key id changed", key_id));
    let mut trailer = good.clone();
    let l = trailer.len();
    trailer[l - 1] ^= 1;
    cases.push(("the trailer changed", trailer));
    cases.push(("a plain file", data.clone()));
    for (what, bytes) in cases {
        plant(&mem, "b1/x", &bytes);
        assert!(read_all(&e, "b1/x").is_err(), "{what}: served");
        // A ranged read of the first bytes fails too, except where only later chunks changed
        // (it serves the first chunk, which is genuine).
        if matches!(
            what,
            "a flipped byte"
                | "extended by a chunk"
                | "the trailer changed"
                | "truncated anywhere"
                | "truncated at a chunk boundary"
        ) {
            continue;
        }
        assert!(
            e.get_range(&n("b1/x"), 0, 10).is_err(),
            "{what}: range served"
        );
    }
}

#[test]
fn write_once_identity_without_a_read_key() {
    let mem = MemoryBackend::new();
    let reader = encrypted(Arc::new(mem.clone()), true);
    let writer = encrypted(Arc::new(mem.clone()), false);
    let data = pattern(100_000, 4);
    assert_eq!(
        writer.put(&n("w/x"), &data, PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    // The same bytes again (a retried push): present. Others: a conflict. Neither reads.
    assert_eq!(
        writer.put(&n("w/x"), &data, PutOptions::default()).unwrap(),
        PutOutcome::AlreadyPresent
    );
    let mut other = data.clone();
    other[5] ^= 1;
    assert_eq!(
        writer
            .put(&n("w/x"), &other, PutOptions::default())
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    // It cannot read back, and says why.
    let err = writer.get(&n("w/x"), u64::MAX).unwrap_err();
    assert!(is_key_unavailable(&err), "{err}");
    assert_eq!(reader.get(&n("w/x"), u64::MAX).unwrap(), data);
    // A host that reads checks the stored object whole: damaged, it is not "already present".
    let mut s = stored_of(&mem, "w/x");
    s[HEADER_LEN + 1] ^= 1;
    plant(&mem, "w/x", &s);
    assert_eq!(
        reader
            .put(&n("w/x"), &data, PutOptions::default())
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
}
