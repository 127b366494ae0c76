//! Red team of client-side encryption (storage::crypt) under the WAL archive: real segments of a
//! real server pushed and got through the library's archive functions over an [`Encrypted`]
//! local backend with the repository's scoping, as `archive-push` / `archive-get` will once
//! the repository opens an encrypted backend. Hosts differ by the keys they hold: one that
//! reads (restore, archive-get), one holding only public keys (the database server that
//! archives: it writes, it cannot read), one with the wrong key.
//!
//! The key source is the test's own (fixed data keys per scope, like the decorator's unit
//! tests): what is attacked is how the archive uses the decorator, not key wrapping.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use pgsafe::archive::{ArchiveFile, PushOptions, PushOutcome, fetch, get_to, push_file};
use pgsafe::repo::{Registration, Repository};
use pgsafe::storage::crypt::format::{HEADER_LEN, SEALED_CHUNK, TRAILER_LEN};
use pgsafe::storage::crypt::{
    Encrypted, KeyId, KeySource, KeyUnavailable, SecretKey, repository_scope,
};
use pgsafe::storage::{Backend, ErrorKind, Ident, LocalBackend, ObjectName, StorageError};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir};

use common::{ok, repo_init};

const CLUSTER: &str = "main";

/// Fixed data keys: one per scope, derived from it and `secret` (a host with another secret
/// holds the wrong key); a host that cannot read fails as a public-key-only host does.
#[derive(Debug)]
struct Keys {
    can_read: bool,
    secret: u8,
}

fn id_of(scope: &ObjectName) -> KeyId {
    let mut id = [0u8; 16];
    for (i, b) in scope.as_bytes().iter().enumerate() {
        id[i % 16] ^= *b;
    }
    KeyId(id)
}

fn key_of(id: &KeyId, secret: u8) -> SecretKey {
    let mut k = [secret; 32];
    for (i, b) in id.0.iter().enumerate() {
        k[i] ^= *b;
    }
    SecretKey::from_bytes(k)
}

impl KeySource for Keys {
    fn identity_key(&self) -> pgsafe::storage::Result<SecretKey> {
        Ok(SecretKey::from_bytes([9; 32]))
    }
    fn write_key(
        &self,
        _: &dyn Backend,
        scope: &ObjectName,
    ) -> pgsafe::storage::Result<(KeyId, SecretKey)> {
        let id = id_of(scope);
        Ok((id, key_of(&id, self.secret)))
    }
    fn read_key(
        &self,
        _: &dyn Backend,
        scope: &ObjectName,
        id: &KeyId,
    ) -> pgsafe::storage::Result<SecretKey> {
        if !self.can_read {
            return Err(
                StorageError::new(ErrorKind::PermissionDenied, "read key", scope)
                    .with_source(KeyUnavailable("this host holds public keys only".into())),
            );
        }
        Ok(key_of(id, self.secret))
    }
}

fn host(repo: &Path, can_read: bool, secret: u8) -> Encrypted {
    Encrypted::new(
        Arc::new(LocalBackend::open(repo).unwrap()),
        Arc::new(Keys { can_read, secret }),
        repository_scope,
    )
}

fn finish_segment(c: &Cluster) -> (String, Vec<u8>) {
    c.execute(
        "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t SELECT generate_series(1, 5000)",
    );
    let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let bytes = fs::read(c.data_dir().join("pg_wal").join(&seg)).unwrap();
    (seg, bytes)
}

struct Setup {
    _c: Cluster,
    scratch: tempfile::TempDir,
    repo: std::path::PathBuf,
    cluster: Ident,
    reg: Registration,
    segs: Vec<(String, Vec<u8>)>,
}

fn setup() -> Setup {
    let install = PgInstall::major(16);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let cluster = Ident::new(CLUSTER).unwrap();
    let reg = Repository::open(&repo)
        .unwrap()
        .registration(&cluster)
        .unwrap();
    let segs = (0..2).map(|_| finish_segment(&c)).collect();
    Setup {
        _c: c,
        scratch,
        repo,
        cluster,
        reg,
        segs,
    }
}

fn source(s: &Setup, tag: &str, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let d = s.scratch.path().join("src").join(tag);
    fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// The database server holds only public keys: it archives, and when PostgreSQL retries a
/// push whose object is already stored (a crash between the store and `.done`), the retry must
/// succeed for the same bytes and conflict for other bytes, without reading the object, which
/// it cannot. A host that reads gets the segment back whole.
#[test]
fn a_public_key_only_host_retries_a_push() {
    let s = setup();
    let writer = host(&s.repo, false, 1);
    let reader = host(&s.repo, true, 1);
    let (seg, bytes) = &s.segs[0];
    let file = ArchiveFile::parse(seg).unwrap();
    let opts = PushOptions::default();
    let p = source(&s, "a", seg, bytes);
    assert_eq!(
        push_file(&writer, &s.cluster, &s.reg, &file, &p, &opts).unwrap(),
        PushOutcome::Stored
    );
    let again = push_file(&writer, &s.cluster, &s.reg, &file, &p, &opts);
    assert!(
        matches!(again, Ok(PushOutcome::AlreadyPresent)),
        "a retried push of the same bytes on a public-key-only host: {again:?}"
    );
    let mut other = bytes.clone();
    other[1 << 20] ^= 0xFF;
    let p2 = source(&s, "b", seg, &other);
    let e = push_file(&writer, &s.cluster, &s.reg, &file, &p2, &opts).unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let got = fetch(&reader, &s.cluster, &s.reg, &file).unwrap().unwrap();
    assert!(got == *bytes, "the reader gets other bytes");
}

/// archive-get on a host that cannot read (public keys only) or holds the wrong key: an error
/// (archive-get then exits 200 and recovery stops), never "not in the archive" (exit 1, which
/// PostgreSQL may take for the end of WAL), and nothing written.
#[test]
fn a_host_without_the_key_never_answers_not_there() {
    let s = setup();
    let writer = host(&s.repo, false, 1);
    let (seg, bytes) = &s.segs[0];
    let file = ArchiveFile::parse(seg).unwrap();
    let p = source(&s, "a", seg, bytes);
    push_file(
        &writer,
        &s.cluster,
        &s.reg,
        &file,
        &p,
        &PushOptions::default(),
    )
    .unwrap();
    let dest = s.scratch.path().join("RECOVERYXLOG");
    for (what, h) in [
        ("public keys only", host(&s.repo, false, 1)),
        ("wrong key", host(&s.repo, true, 2)),
    ] {
        let r = get_to(&h, &s.cluster, &s.reg, &file, &dest);
        assert!(r.is_err(), "{what}: {r:?}");
        assert!(!dest.exists(), "{what}");
    }
    // Not there at all: "not there" for every host.
    let missing = ArchiveFile::parse(&s.segs[1].0).unwrap();
    assert!(!get_to(&host(&s.repo, true, 1), &s.cluster, &s.reg, &missing, &dest).unwrap());
}

/// Stored objects tampered with on the storage: chunks of a real segment's object swapped,
/// the object truncated at a chunk boundary (trailer kept), another segment's object (another
/// name) copied over it, an object of another WAL folder scope copied in: the reader never
/// serves any of them.
#[test]
fn tampered_wal_objects_are_never_served() {
    let s = setup();
    let h = host(&s.repo, true, 1);
    let opts = PushOptions {
        compression: pgsafe::codec::Compression::None,
    };
    let mut objects = Vec::new();
    for (i, (seg, bytes)) in s.segs.iter().enumerate() {
        let file = ArchiveFile::parse(seg).unwrap();
        let p = source(&s, &i.to_string(), seg, bytes);
        push_file(&h, &s.cluster, &s.reg, &file, &p, &opts).unwrap();
        let o = s
            .repo
            .join(CLUSTER)
            .join("wal")
            .join(&seg[..8])
            .join(&seg[8..16])
            .join(seg);
        objects.push(o);
    }
    let good = fs::read(&objects[0]).unwrap();
    let other = fs::read(&objects[1]).unwrap();
    let mut swapped = good.clone();
    let (a, b) = (HEADER_LEN + SEALED_CHUNK, HEADER_LEN + 2 * SEALED_CHUNK);
    swapped[a..b].copy_from_slice(&good[b..b + SEALED_CHUNK]);
    swapped[b..b + SEALED_CHUNK].copy_from_slice(&good[a..b]);
    let mut cut = good[..HEADER_LEN + 4 * SEALED_CHUNK].to_vec();
    cut.extend_from_slice(&good[good.len() - TRAILER_LEN..]);
    // Another timeline's folder (another scope, another data key), the same segment name.
    let (seg0, bytes0) = &s.segs[0];
    let tli2 = format!("00000002{}", &seg0[8..]);
    let mut moved = bytes0.clone();
    moved[4..8].copy_from_slice(&2u32.to_le_bytes());
    let p = source(&s, "t2", &tli2, &moved);
    let r = push_file(
        &h,
        &s.cluster,
        &s.reg,
        &ArchiveFile::parse(&tli2).unwrap(),
        &p,
        &opts,
    );
    let from_tli2 = r.ok().map(|_| {
        fs::read(
            s.repo
                .join(CLUSTER)
                .join("wal/00000002")
                .join(&seg0[8..16])
                .join(&tli2),
        )
        .unwrap()
    });
    let mut cases = vec![
        ("swapped chunks", swapped),
        ("truncated at a chunk boundary", cut),
        ("another segment's object", other),
    ];
    if let Some(t) = from_tli2 {
        cases.push(("another scope's object", t));
    }
    let file = ArchiveFile::parse(seg0).unwrap();
    let dest = s.scratch.path().join("RECOVERYXLOG");
    for (what, bytes) in cases {
        fs::write(&objects[0], &bytes).unwrap();
        let r = get_to(&h, &s.cluster, &s.reg, &file, &dest);
        assert!(r.is_err(), "{what}: {r:?}");
        assert!(!dest.exists(), "{what}");
    }
    fs::write(&objects[0], &good).unwrap();
    assert!(get_to(&h, &s.cluster, &s.reg, &file, &dest).unwrap());
    assert!(fs::read(&dest).unwrap() == *bytes0);
}

/// One damaged object in the archive (cut to a few bytes: not even a header): what the archive
/// holds is still readable, the damaged object reported or left out; the listing of the whole
/// archive does not fail for it (`info`, `check`, `metrics`, `expire` and restore planning all
/// start from it: one bad object must not blind them, nor stop expire deleting it).
#[test]
fn one_damaged_object_does_not_blind_the_archive() {
    let s = setup();
    let h = host(&s.repo, true, 1);
    for (i, (seg, bytes)) in s.segs.iter().enumerate() {
        let file = ArchiveFile::parse(seg).unwrap();
        let p = source(&s, &i.to_string(), seg, bytes);
        push_file(&h, &s.cluster, &s.reg, &file, &p, &PushOptions::default()).unwrap();
    }
    let seg = &s.segs[0].0;
    let o = s
        .repo
        .join(CLUSTER)
        .join("wal")
        .join(&seg[..8])
        .join(&seg[8..16])
        .join(format!("{seg}.zst"));
    fs::write(&o, b"short").unwrap();
    let contents = pgsafe::archive::contents::ArchiveContents::load(&h, &s.cluster, &s.reg);
    let contents =
        contents.unwrap_or_else(|e| panic!("one damaged object makes the archive unreadable: {e}"));
    assert!(
        contents
            .problems
            .iter()
            .any(|p| p.object.contains(seg.as_str())),
        "the damaged object is not reported: {:?}",
        contents.problems
    );
}
