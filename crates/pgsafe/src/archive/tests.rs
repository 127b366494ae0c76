//! push and get on in-memory and local storage, with synthetic segments (real servers are in
//! crates/pgsafe-cli/tests/archive_cli.rs).

use std::path::Path;

use super::*;
use crate::codec::Compression;
use crate::repo::Registration;
use crate::repo::testdata::{SYSID, ident, registration};
use crate::storage::{
    Backend, Ident, MemoryBackend, ObjectInfo, ObjectName, ObjectReader, ObjectWriter, PutOptions,
    StorageError,
};
use crate::types::{WalSegSize, WalSegment};
use crate::wal::{XLP_LONG_HEADER, xlog_page_magic};

const SEG: u64 = 1 << 20;

fn reg() -> Registration {
    Registration {
        wal_segment_size: WalSegSize::new(SEG).unwrap(),
        ..registration()
    }
}

/// A segment of the registered cluster named `name`: its long page header, then `fill`.
fn segment(name: &str, sysid: u64, fill: u8) -> Vec<u8> {
    let seg: WalSegment = name.parse().unwrap();
    let size = WalSegSize::new(SEG).unwrap();
    let mut b = vec![fill; SEG as usize];
    b[..40].fill(0);
    b[0..2].copy_from_slice(&xlog_page_magic(15).unwrap().to_le_bytes());
    b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
    b[4..8].copy_from_slice(&seg.tli.0.to_le_bytes());
    b[8..16].copy_from_slice(&seg.start_lsn(size).unwrap().0.to_le_bytes());
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    b[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn main_cluster() -> Ident {
    ident("main")
}

/// A backend that fails every listing: lookups of missing files must not list.
#[derive(Debug)]
struct NoListing(MemoryBackend);

impl Backend for NoListing {
    fn list(&self, _: Option<&ObjectName>) -> crate::storage::Result<Vec<ObjectInfo>> {
        panic!("the archive was listed")
    }
    fn size(&self, name: &ObjectName) -> crate::storage::Result<u64> {
        self.0.size(name)
    }
    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> crate::storage::Result<ObjectReader<'_>> {
        self.0.read_range(name, offset, len)
    }
    fn writer(
        &self,
        name: &ObjectName,
        opts: PutOptions,
    ) -> crate::storage::Result<Box<dyn ObjectWriter + '_>> {
        self.0.writer(name, opts)
    }
    fn delete(&self, name: &ObjectName) -> Result<bool, StorageError> {
        self.0.delete(name)
    }
}

#[test]
fn push_then_get_every_compression_without_listing() {
    let dir = tempfile::tempdir().unwrap();
    let b = NoListing(MemoryBackend::new());
    let (c, r) = (main_cluster(), reg());
    for (i, comp) in [
        Compression::Zstd { level: 1 },
        Compression::Lz4,
        Compression::None,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("00000001000000000000000{i}");
        let bytes = segment(&name, SYSID, i as u8 + 1);
        let p = write(dir.path(), &name, &bytes);
        let f = ArchiveFile::parse(&name).unwrap();
        let opts = PushOptions { compression: comp };
        assert_eq!(
            push_file(&b, &c, &r, &f, &p, &opts).unwrap(),
            PushOutcome::Stored
        );
        // Again, asking for any compression: found under the first one.
        for again in [Compression::None, Compression::Lz4] {
            let opts = PushOptions { compression: again };
            let got = push_file(&b, &c, &r, &f, &p, &opts).unwrap();
            assert_eq!(got, PushOutcome::AlreadyPresent);
        }
        assert_eq!(fetch(&b, &c, &r, &f).unwrap().unwrap(), bytes);
        let dest = dir.path().join("RECOVERYXLOG");
        assert!(get_to(&b, &c, &r, &f, &dest).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    }
    for missing in ["000000010000000000000009", "00000002.history"] {
        let f = ArchiveFile::parse(missing).unwrap();
        assert!(fetch(&b, &c, &r, &f).unwrap().is_none());
        let dest = dir.path().join("missing");
        assert!(!get_to(&b, &c, &r, &f, &dest).unwrap());
        assert!(!dest.exists());
    }
}

#[test]
fn different_content_is_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = MemoryBackend::new();
    let (c, r) = (main_cluster(), reg());
    let name = "000000010000000000000003";
    let f = ArchiveFile::parse(name).unwrap();
    let p = write(dir.path(), name, &segment(name, SYSID, 7));
    push_file(&b, &c, &r, &f, &p, &PushOptions::default()).unwrap();
    let before = b.list(None).unwrap();
    let other = segment(name, SYSID, 8);
    let q = write(dir.path(), "other", &other);
    for comp in [Compression::Zstd { level: 1 }, Compression::Lz4] {
        let e = push_file(&b, &c, &r, &f, &q, &PushOptions { compression: comp }).unwrap_err();
        assert!(e.is_conflict(), "{e}");
        assert_eq!(e.error_kind(), crate::error::ErrorKind::Conflict);
    }
    assert_eq!(b.list(None).unwrap(), before);
    assert_eq!(
        fetch(&b, &c, &r, &f).unwrap().unwrap(),
        segment(name, SYSID, 7)
    );
}

#[test]
fn foreign_and_mismatched_segments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = MemoryBackend::new();
    let (c, r) = (main_cluster(), reg());
    let name = "000000020000000000000005";
    let f = ArchiveFile::parse(name).unwrap();
    let good = segment(name, SYSID, 1);
    let mut older_tli = good.clone();
    older_tli[4..8].copy_from_slice(&1u32.to_le_bytes());
    let mut newer_tli = good.clone();
    newer_tli[4..8].copy_from_slice(&3u32.to_le_bytes());
    let cases = [
        (
            "other system",
            segment(name, SYSID + 1, 1),
            "database system",
        ),
        (
            "renamed",
            segment("000000020000000000000006", SYSID, 1),
            "page address",
        ),
        ("newer timeline", newer_tli, "timeline"),
        ("zero page", vec![0; SEG as usize], "zero-filled"),
        ("short", good[..4096].to_vec(), "exactly"),
    ];
    for (what, bytes, needle) in cases {
        let p = write(dir.path(), name, &bytes);
        let e = push_file(&b, &c, &r, &f, &p, &PushOptions::default()).unwrap_err();
        assert_eq!(
            e.error_kind(),
            crate::error::ErrorKind::Refused,
            "{what}: {e}"
        );
        assert!(e.to_string().contains(needle), "{what}: {e}");
        assert!(b.list(None).unwrap().is_empty(), "{what}");
    }
    // A timeline's first segment starts with its parent's page timeline: accepted.
    let p = write(dir.path(), name, &older_tli);
    push_file(&b, &c, &r, &f, &p, &PushOptions::default()).unwrap();
}

#[test]
fn stored_objects_failing_the_checks_are_corrupt_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let b = MemoryBackend::new();
    let (c, r) = (main_cluster(), reg());
    let name = "000000010000000000000004";
    let f = ArchiveFile::parse(name).unwrap();
    let bytes = segment(name, SYSID, 3);
    let p = write(dir.path(), name, &bytes);
    push_file(&b, &c, &r, &f, &p, &PushOptions::default()).unwrap();
    let object = f.object_name(&c, Compression::Zstd { level: 1 }).unwrap();
    let good = b.get(&object, u64::MAX).unwrap();
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 0x10;
    let plain = f.object_name(&c, Compression::None).unwrap();
    let planted = segment(name, SYSID + 1, 3);
    for (what, obj, content) in [
        ("flipped", &object, flipped),
        ("cut", &object, good[..n - 4].to_vec()),
        ("foreign", &plain, planted),
        ("long", &plain, [&bytes[..], b"x"].concat()),
    ] {
        b.delete(&object).unwrap();
        b.put(obj, &content, PutOptions::default()).unwrap();
        let e = fetch(&b, &c, &r, &f).unwrap_err();
        assert_eq!(
            e.error_kind(),
            crate::error::ErrorKind::Corrupt,
            "{what}: {e}"
        );
        let dest = dir.path().join("RECOVERYXLOG");
        get_to(&b, &c, &r, &f, &dest).unwrap_err();
        assert!(!dest.exists(), "{what}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "{what}: leftovers"
        );
        b.delete(obj).unwrap();
    }
}
