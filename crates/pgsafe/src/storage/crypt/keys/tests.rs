#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::rotate::{list, rotate};
use super::*;
use crate::storage::crypt::{Encrypted, is_key_unavailable, repository_scope};
use crate::storage::{MemoryBackend, PutOutcome};

/// Cheap parameters: the tests are about who can open what, not about the cost.
const FAST: KdfParams = KdfParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn pass(p: &str) -> KeyMaterial {
    KeyMaterial {
        passphrase: Some(Zeroizing::new(p.into())),
        ..KeyMaterial::default()
    }
}

fn ident(id: &age::x25519::Identity) -> KeyMaterial {
    KeyMaterial {
        identities: vec![id.clone()],
        ..KeyMaterial::default()
    }
}

fn n(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

fn over(mem: &MemoryBackend, k: Keyring) -> Encrypted {
    Encrypted::new(Arc::new(mem.clone()), Arc::new(k), repository_scope)
}

const SEG: &str = "c/wal/00000001/00000000/000000010000000000000001";
const FILE: &str = "c/backups/B1/base/1/1259";

#[test]
fn a_passphrase_opens_and_a_wrong_one_is_refused_with_nothing_written() {
    let mem = MemoryBackend::new();
    let (info, k) = Keyring::create(&mem, pass("correct horse"), FAST).unwrap();
    let e = over(&mem, k);
    e.put(&n(FILE), b"page", PutOptions::default()).unwrap();
    let before = mem.list(None).unwrap();
    let err = Keyring::open(&mem, &info, pass("wrong")).unwrap_err();
    assert!(matches!(err, KeyError::WrongPassphrase), "{err}");
    assert!(err.to_string().contains("wrong passphrase"));
    assert_eq!(mem.list(None).unwrap(), before, "something was written");
    let e2 = over(
        &mem,
        Keyring::open(&mem, &info, pass("correct horse")).unwrap(),
    );
    assert_eq!(e2.get(&n(FILE), 100).unwrap(), b"page");
}

#[test]
fn a_wrong_identity_is_refused_and_no_key_at_all_too() {
    let mem = MemoryBackend::new();
    let right = age::x25519::Identity::generate();
    let (info, _) = Keyring::create(&mem, ident(&right), FAST).unwrap();
    let other = age::x25519::Identity::generate();
    let err = Keyring::open(&mem, &info, ident(&other)).unwrap_err();
    assert!(matches!(err, KeyError::WrongIdentity), "{err}");
    let err = Keyring::open(&mem, &info, KeyMaterial::default()).unwrap_err();
    assert!(matches!(err, KeyError::NoKey), "{err}");
    // Recipients without the writer key cannot write either.
    let m = KeyMaterial {
        recipients: vec![right.to_public()],
        ..KeyMaterial::default()
    };
    assert!(matches!(
        Keyring::open(&mem, &info, m).unwrap_err(),
        KeyError::NoWriterKey
    ));
    // Another repository's writer key is refused.
    let m = KeyMaterial {
        recipients: vec![right.to_public()],
        writer_key: Some(SecretKey::from_bytes([3; 32])),
        ..KeyMaterial::default()
    };
    assert!(matches!(
        Keyring::open(&mem, &info, m).unwrap_err(),
        KeyError::WrongWriterKey
    ));
}

/// The public-key-only host: backs up and archives (a retried push is "already there"), but
/// reads nothing, and says what it is missing. The host with the identity reads it all.
#[test]
fn a_public_key_only_host_writes_but_cannot_read() {
    let mem = MemoryBackend::new();
    let id = age::x25519::Identity::generate();
    let (info, k) = Keyring::create(&mem, ident(&id), FAST).unwrap();
    let mut file = String::new();
    file.push_str(&format!("# recipients\n{}\n", id.to_public()));
    file.push_str(&writer_key_line(k.writer_key()));
    let mut m = KeyMaterial::default();
    m.add_key_file(&file).unwrap();
    assert!(!m.can_read());
    let w = over(&mem, Keyring::open(&mem, &info, m).unwrap());
    let seg = vec![7u8; 200_000];
    assert_eq!(
        w.put(&n(SEG), &seg, PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        w.put(&n(SEG), &seg, PutOptions::default()).unwrap(),
        PutOutcome::AlreadyPresent
    );
    w.put(&n(FILE), b"page", PutOptions::default()).unwrap();
    for name in [SEG, FILE] {
        let err = w.get(&n(name), u64::MAX).unwrap_err();
        assert!(is_key_unavailable(&err), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("age identity file or the passphrase"),
            "{text}"
        );
    }
    // Catalog objects stay readable.
    w.put(&n("c/cluster.json"), b"{}", PutOptions::default())
        .unwrap();
    assert_eq!(w.get(&n("c/cluster.json"), 10).unwrap(), b"{}");
    let r = over(&mem, Keyring::open(&mem, &info, ident(&id)).unwrap());
    assert_eq!(r.get(&n(SEG), u64::MAX).unwrap(), seg);
    assert_eq!(r.get(&n(FILE), 10).unwrap(), b"page");
}

#[test]
fn one_key_per_backup_and_per_wal_epoch() {
    let mem = MemoryBackend::new();
    let (_, k) = Keyring::create(&mem, pass("p"), FAST).unwrap();
    let e = over(&mem, k);
    for name in [
        FILE,
        "c/backups/B1/base/1/1260",
        "c/backups/B2/base/1/1259",
        SEG,
        "c/wal/00000001/00000000/000000010000000000000002",
        "c/wal/00000001/00000001/000000010000000100000000",
    ] {
        e.put(&n(name), b"x", PutOptions::default()).unwrap();
    }
    let scopes: Vec<String> = list(&mem).unwrap().into_iter().map(|k| k.scope).collect();
    assert_eq!(
        scopes,
        [
            "c/backups/B1",
            "c/backups/B2",
            "c/wal/00000001/00000000",
            "c/wal/00000001/00000001",
            "writer",
        ]
    );
}

/// A data key someone wrapped to the public recipients for a coming scope (age has no sender
/// authentication; the recipients are listed in every wrapping) is never reused to seal new
/// objects; a key a writer made is, by a host whose writer key is its own.
#[test]
fn only_keys_bound_to_the_writer_key_are_reused() {
    let mem = MemoryBackend::new();
    let id = age::x25519::Identity::generate();
    let (info, made) = Keyring::create(&mem, ident(&id), FAST).unwrap();
    let writer = made.writer_key().clone();
    let with_writer = || KeyMaterial {
        writer_key: Some(writer.clone()),
        ..ident(&id)
    };
    let scope = n("c/wal/00000001/00000000");
    let forger = Keyring::create(&MemoryBackend::new(), ident(&id), FAST)
        .unwrap()
        .1;
    let planted = KeyId([7; 16]);
    for doc in forger
        .wrap(
            scope.to_str().unwrap(),
            &planted,
            &SecretKey::from_bytes([7; 32]),
            true,
        )
        .unwrap()
    {
        let name = n(&format!(
            "pgsafe-keyring/data/{}/{}/f.json",
            scope.to_str().unwrap(),
            planted.to_hex()
        ));
        put_doc(&mem, &name, &doc).unwrap();
    }
    for m in [ident(&id), with_writer()] {
        let k = Keyring::open(&mem, &info, m).unwrap();
        assert_ne!(k.write_key(&mem, &scope).unwrap().0, planted);
    }
    // A key one process made is reused by the next one holding the writer key.
    let scope2 = n("c/wal/00000001/00000001");
    let first = Keyring::open(&mem, &info, with_writer()).unwrap();
    let made = first.write_key(&mem, &scope2).unwrap().0;
    let next = Keyring::open(&mem, &info, with_writer()).unwrap();
    assert_eq!(next.write_key(&mem, &scope2).unwrap().0, made);
    let pass_mem = MemoryBackend::new();
    let (pinfo, _) = Keyring::create(&pass_mem, pass("p"), FAST).unwrap();
    let a = Keyring::open(&pass_mem, &pinfo, pass("p")).unwrap();
    let made = a.write_key(&pass_mem, &scope2).unwrap().0;
    let b = Keyring::open(&pass_mem, &pinfo, pass("p")).unwrap();
    assert_eq!(b.write_key(&pass_mem, &scope2).unwrap().0, made);
}

/// A keyring object replaced by one made for another key (someone who knows the public
/// recipient can make one) is never used to serve bytes.
#[test]
fn a_replaced_keyring_object_is_detected() {
    let mem = MemoryBackend::new();
    let id = age::x25519::Identity::generate();
    let (info, k) = Keyring::create(&mem, ident(&id), FAST).unwrap();
    let e = over(&mem, k);
    e.put(&n(FILE), b"secret page", PutOptions::default())
        .unwrap();
    let wrapping = mem
        .list(Some(&n("pgsafe-keyring/data/c/backups/B1")))
        .unwrap()
        .remove(0)
        .name;
    let key_id =
        KeyId::from_hex(std::str::from_utf8(wrapping.parent().unwrap().file_name()).unwrap())
            .unwrap();
    // Another key wrapped to the same recipient under the same id and scope.
    let forger = Keyring::create(&MemoryBackend::new(), ident(&id), FAST)
        .unwrap()
        .1;
    let doc = forger
        .wrap(
            "c/backups/B1",
            &key_id,
            &SecretKey::from_bytes([1; 32]),
            true,
        )
        .unwrap()
        .remove(0);
    mem.delete(&wrapping).unwrap();
    put_doc(&mem, &wrapping, &doc).unwrap();
    let r = over(&mem, Keyring::open(&mem, &info, ident(&id)).unwrap());
    let err = r.get(&n(FILE), 100).unwrap_err();
    assert!(err.to_string().contains("does not authenticate"), "{err}");
    // A wrapping moved to another key id does not open at all.
    let moved = n(&format!(
        "pgsafe-keyring/data/c/backups/B1/{}/x.json",
        KeyId([9; 16]).to_hex()
    ));
    put_doc(&mem, &moved, &doc).unwrap();
    assert!(
        r.keys
            .read_key(&mem, &n("c/backups/B1"), &KeyId([9; 16]))
            .is_err()
    );
}

#[test]
fn rotation_rewraps_without_touching_data() {
    let mem = MemoryBackend::new();
    let (info, k) = Keyring::create(&mem, pass("old"), FAST).unwrap();
    let e = over(&mem, k);
    e.put(&n(FILE), b"page", PutOptions::default()).unwrap();
    e.put(&n(SEG), b"wal", PutOptions::default()).unwrap();
    let data_before: Vec<_> = [FILE, SEG]
        .iter()
        .map(|f| mem.get(&n(f), u64::MAX).unwrap())
        .collect();
    let old = Keyring::open(&mem, &info, pass("old")).unwrap();
    let id = age::x25519::Identity::generate();
    let mut new = pass("new");
    new.recipients.push(id.to_public());
    let report = rotate(&mem, &old, new, FAST).unwrap();
    assert_eq!(report.keys, 3);
    assert_eq!(report.wrappings_written, 6);
    assert_eq!(report.wrappings_removed, 3);
    assert_eq!(report.passphrase_records_removed, 1);
    let data_after: Vec<_> = [FILE, SEG]
        .iter()
        .map(|f| mem.get(&n(f), u64::MAX).unwrap())
        .collect();
    assert_eq!(data_before, data_after, "data objects were rewritten");
    assert!(matches!(
        Keyring::open(&mem, &info, pass("old")).unwrap_err(),
        KeyError::WrongPassphrase
    ));
    for m in [pass("new"), ident(&id)] {
        let r = over(&mem, Keyring::open(&mem, &info, m).unwrap());
        assert_eq!(r.get(&n(FILE), 10).unwrap(), b"page");
        assert_eq!(r.get(&n(SEG), 10).unwrap(), b"wal");
    }
}

#[test]
fn key_files_are_parsed_and_bad_lines_named_not_quoted() {
    let id = age::x25519::Identity::generate();
    let mut m = KeyMaterial::default();
    let text = format!(
        "# a comment\n\n{}\n{}\n{}{}\n",
        id.to_string().expose_secret(),
        id.to_public(),
        WRITER_KEY_PREFIX,
        "ab".repeat(32)
    );
    m.add_key_file(&text).unwrap();
    assert_eq!((m.identities.len(), m.recipients.len()), (1, 1));
    assert!(m.writer_key.is_some());
    let mut m = KeyMaterial::default();
    let err = m
        .add_key_file("AGE-SECRET-KEY-1NOTAKEYATALLSECRETSTUFF\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains("SECRETSTUFF"), "{err}");
}

use age::secrecy::ExposeSecret;

#[test]
fn deleting_a_scope_deletes_its_keys_and_only_its_keys() {
    let mem = MemoryBackend::new();
    let (_, k) = Keyring::create(&mem, pass("p"), FAST).unwrap();
    let e = over(&mem, k);
    let other = "c/backups/B2/base/1/1259";
    for f in [FILE, "c/backups/B1/global/pg_control", other, SEG] {
        e.put(&n(f), b"data", PutOptions::default()).unwrap();
    }
    let keys_of = |scope: &str| {
        mem.list(Some(&n(&format!("{KEYRING}/data/{scope}"))))
            .unwrap()
            .len()
    };
    assert!(keys_of("c/backups/B1") > 0 && keys_of("c/backups/B2") > 0);
    // A prefix inside a scope leaves the scope's key: other objects still need it.
    e.delete_prefix(&n("c/backups/B1/base")).unwrap();
    assert!(keys_of("c/backups/B1") > 0);
    assert_eq!(
        e.get(&n("c/backups/B1/global/pg_control"), 100).unwrap(),
        b"data"
    );
    // The whole backup: its objects, then its keys; the other backup's and the WAL's stay.
    e.delete_prefix(&n("c/backups/B1")).unwrap();
    assert_eq!(keys_of("c/backups/B1"), 0);
    assert!(keys_of("c/backups/B2") > 0 && keys_of("c/wal/00000001/00000000") > 0);
    assert_eq!(e.get(&n(other), 100).unwrap(), b"data");
    assert_eq!(e.get(&n(SEG), 100).unwrap(), b"data");
}
