//! Red team of an encrypted repository's keyring (docs/encryption.md, "Keys") through the real
//! binary and a real server: someone who can write the repository's storage but holds no
//! secret key. In age mode they know the public recipients (every wrapping lists them, in
//! plain), and age has no sender authentication: they can wrap a data key of their own to the
//! real recipients. A host that reads must never encrypt new backups or WAL with such a key
//! (the attacker would then read them); removed or swapped keyring entries must refuse a
//! restore loudly, with nothing restored.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use pgsafe::storage::crypt::{Encrypted, KeyId, KeySource, SecretKey, repository_scope};
use pgsafe::storage::{Backend, LocalBackend, ObjectName};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::archive::finish_segment;
use common::{command, json, ok, path_str as s, text};

fn run(args: &[&str], key_file: &Path) -> Output {
    command(args)
        .env("PGSAFE_KEY_FILE", key_file)
        .output()
        .unwrap()
}

/// The attacker's reading host: whatever key id an object names, it tries the planted key.
#[derive(Debug)]
struct Attacker(SecretKey);

impl KeySource for Attacker {
    fn identity_key(&self) -> pgsafe::storage::Result<SecretKey> {
        Ok(self.0.clone())
    }
    fn write_key(
        &self,
        _: &dyn Backend,
        _: &ObjectName,
    ) -> pgsafe::storage::Result<(KeyId, SecretKey)> {
        Ok((KeyId([0; 16]), self.0.clone()))
    }
    fn read_key(
        &self,
        _: &dyn Backend,
        _: &ObjectName,
        _: &KeyId,
    ) -> pgsafe::storage::Result<SecretKey> {
        Ok(self.0.clone())
    }
}

/// What a wrapping seals (storage/crypt/keys.rs `wrapped_plaintext`, docs/encryption.md
/// "Wrappings"): magic, key id, scope (length-prefixed), key.
fn wrapped_plaintext(id: &[u8; 16], scope: &str, key: &[u8; 32]) -> Vec<u8> {
    let mut p = b"pgsafe key wrapping v1".to_vec();
    p.extend_from_slice(id);
    p.extend_from_slice(&(scope.len() as u64).to_be_bytes());
    p.extend_from_slice(scope.as_bytes());
    p.extend_from_slice(key);
    p
}

/// Plants a wrapping of `key` (id `id`) for `scope`, made for `recipients` as a host holding
/// only public keys would make it.
fn plant(repo: &Path, scope: &str, id: &[u8; 16], key: &[u8; 32], recipients: &[String]) {
    let rs: Vec<age::x25519::Recipient> = recipients.iter().map(|r| r.parse().unwrap()).collect();
    let enc = age::Encryptor::with_recipients(rs.iter().map(|r| r as &dyn age::Recipient)).unwrap();
    let mut file = Vec::new();
    let mut w = enc.wrap_output(&mut file).unwrap();
    w.write_all(&wrapped_plaintext(id, scope, key)).unwrap();
    w.finish().unwrap();
    let doc = serde_json::json!({
        "version": 1,
        "key_id": hex::encode(id),
        "scope": scope,
        "wrap": "age",
        "recipients": recipients,
        "file": hex::encode(file),
    });
    let dir = repo
        .join("pgsafe-keyring/data")
        .join(scope)
        .join(hex::encode(id));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("00aa00aa00aa00aa.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

/// Every regular file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The recipients an attacker reads from the keyring (plain JSON).
fn recipients_of(repo: &Path) -> Vec<String> {
    for f in files(&repo.join("pgsafe-keyring")) {
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&f).unwrap()).unwrap();
        if let Some(r) = v["recipients"].as_array() {
            return r.iter().map(|x| x.as_str().unwrap().to_owned()).collect();
        }
    }
    panic!("no age wrapping in the keyring");
}

struct Setup {
    c: Cluster,
    scratch: tempfile::TempDir,
    repo: PathBuf,
    identity_file: PathBuf,
}

fn setup(major: u32) -> Setup {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE secret AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let id = age::x25519::Identity::generate();
    let identity_file = scratch.path().join("identity.key");
    fs::write(
        &identity_file,
        format!("{}\n", id.to_string().expose_secret()),
    )
    .unwrap();
    let conn = c.conninfo();
    ok(
        run(
            &[
                "init",
                "--repo",
                s(&repo),
                "--cluster",
                "main",
                "-D",
                s(c.data_dir()),
                "-d",
                &conn,
                "--encrypt",
                "age",
                "--recipient",
                &id.to_public().to_string(),
                "--writer-key-out",
                s(&scratch.path().join("writer.key")),
                "--json",
            ],
            &identity_file,
        ),
        "init --encrypt age",
    );
    Setup {
        c,
        scratch,
        repo,
        identity_file,
    }
}

fn backup(st: &Setup) -> String {
    let conn = st.c.conninfo();
    let v = json(&ok(
        run(
            &[
                "backup",
                "--repo",
                s(&st.repo),
                "--cluster",
                "main",
                "-D",
                s(st.c.data_dir()),
                "-d",
                &conn,
                "--progress",
                "none",
                "--json",
            ],
            &st.identity_file,
        ),
        "backup by the identity host",
    ));
    v["backup_id"].as_str().unwrap().to_owned()
}

fn restore(st: &Setup, id: &str, target: &Path) -> Output {
    run(
        &[
            "restore",
            "--repo",
            s(&st.repo),
            "--cluster",
            "main",
            "--backup",
            id,
            "--pgdata",
            s(target),
            "--progress",
            "none",
        ],
        &st.identity_file,
    )
}

/// The attacker plants a data key wrapped to the real recipients for the WAL epoch the server
/// writes next and for every backup ID of the next minutes (IDs are the start time). The host
/// that archives and backs up holds the identity: it reads, so it may reuse a scope's key. What
/// it then stores must not open with the attacker's key.
#[test]
fn a_data_key_planted_for_coming_wal_and_backups_is_never_used() {
    let st = setup(16);
    let recipients = recipients_of(&st.repo);
    let key = [0x5a_u8; 32];
    let kid = [0xa5_u8; 16];
    plant(
        &st.repo,
        "main/wal/00000001/00000000",
        &kid,
        &key,
        &recipients,
    );
    let now = chrono::Utc::now();
    for sec in 0..240 {
        let t = now + chrono::Duration::seconds(sec);
        let id = t.format("%Y%m%dT%H%M%SZ").to_string();
        plant(
            &st.repo,
            &format!("main/backups/{id}"),
            &kid,
            &key,
            &recipients,
        );
    }

    // The identity host archives a segment and takes a backup.
    let (seg, bytes) = finish_segment(&st.c);
    ok(
        command(&["archive-push", "--repo", s(&st.repo), "--cluster", "main"])
            .env("PGSAFE_KEY_FILE", &st.identity_file)
            .arg(st.c.data_dir().join("pg_wal").join(&seg))
            .output()
            .unwrap(),
        "archive-push by the identity host",
    );
    let id = backup(&st);

    // The attacker reads the repository with the key they planted.
    let attacker = Encrypted::new(
        Arc::new(LocalBackend::open(&st.repo).unwrap()),
        Arc::new(Attacker(SecretKey::from_bytes(key))),
        repository_scope,
    );
    let wal: Vec<PathBuf> = files(&st.repo.join("main/wal"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&seg))
        .collect();
    assert_eq!(wal.len(), 1, "{wal:?}");
    let wal_name = wal[0].strip_prefix(&st.repo).unwrap().to_str().unwrap();
    let read = attacker.get(&ObjectName::new(wal_name).unwrap(), 1 << 26);
    assert!(
        read.is_err(),
        "the archived segment {wal_name} opens with the attacker's planted key"
    );
    let label = format!("main/backups/{id}/backup_label");
    let read = attacker.get(&ObjectName::new(&label).unwrap(), 1 << 20);
    assert!(
        read.is_err(),
        "backup {id} opens with the attacker's planted key: {:?}",
        read.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    assert_ne!(
        fs::read(st.repo.join(&label)).unwrap()[16..32],
        kid,
        "backup {id} names the planted key"
    );

    // The identity host still reads what it stored.
    let dest = st.scratch.path().join("got");
    ok(
        command(&["archive-get", "--repo", s(&st.repo), "--cluster", "main"])
            .env("PGSAFE_KEY_FILE", &st.identity_file)
            .arg(&seg)
            .arg(&dest)
            .output()
            .unwrap(),
        "archive-get by the identity host",
    );
    assert!(
        fs::read(&dest).unwrap() == bytes,
        "archive-get served other bytes"
    );
}

/// A backup's keyring entry removed, or replaced by another backup's (as stored, or with its
/// key id and scope edited to fit): restore refuses, says it is the key, writes nothing.
#[test]
fn removed_or_swapped_keyring_entries_refuse_the_restore() {
    let st = setup(13);
    let a = backup(&st);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = backup(&st);
    assert_ne!(a, b);
    let ring = st.repo.join("pgsafe-keyring/data/main/backups");
    let key_dir = |id: &str| {
        let d: Vec<PathBuf> = fs::read_dir(ring.join(id))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(d.len(), 1, "one data key per backup: {d:?}");
        d[0].clone()
    };
    let (ka, kb) = (key_dir(&a), key_dir(&b));
    let (wa, wb) = (files(&ka), files(&kb));

    let refused = |id: &str, what: &str, needle: &str| {
        let target = st.scratch.path().join(format!("restored-{what}"));
        let out = restore(&st, id, &target);
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert!(text(&out).contains(needle), "{what}: {}", text(&out));
        assert!(
            !target.join("PG_VERSION").exists() && !target.join("base").exists(),
            "{what}: files were restored"
        );
    };

    // B's wrapping in place of A's, as stored (it names B's key and scope).
    let saved: Vec<(PathBuf, Vec<u8>)> = wa
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    for p in &wa {
        fs::remove_file(p).unwrap();
    }
    fs::copy(&wb[0], ka.join(wb[0].file_name().unwrap())).unwrap();
    refused(&a, "swapped", "key");

    // The same with its key id and scope edited to A's: the age plaintext binds them.
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&wb[0]).unwrap()).unwrap();
    doc["key_id"] = ka.file_name().unwrap().to_str().unwrap().into();
    doc["scope"] = format!("main/backups/{a}").into();
    fs::write(
        ka.join(wb[0].file_name().unwrap()),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    refused(&a, "swapped-edited", "another id or scope");

    // Removed.
    fs::remove_dir_all(&ka).unwrap();
    refused(&a, "removed", "not in the repository's keyring");

    // Put back: A restores again (the refusals were about the key, nothing else).
    fs::create_dir_all(&ka).unwrap();
    for (p, bytes) in saved {
        fs::write(p, bytes).unwrap();
    }
    let target = st.scratch.path().join("restored-ok");
    ok(
        restore(&st, &a, &target),
        "restore with the keyring put back",
    );
    assert!(target.join("PG_VERSION").exists());
}
