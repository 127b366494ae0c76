use std::collections::HashSet;
use std::io::Read;

use super::*;
use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::copy::{CopyOptions, copy_plan};
use crate::layout::incremental::decode_object;
use crate::plan::tests::{fake_pgdata, v, write};
use crate::plan::{BackupPlan, PlanOptions};
use crate::progress::NoProgress;

const SINCE: Lsn = Lsn(0x1_0000_0000);

/// A relation file of `blocks` heap pages; the pages in `newer` have an LSN after [`SINCE`],
/// the others one before; `new_pages` are all zero (never initialised).
fn relation(blocks: u32, newer: &[u32], new_pages: &[u32]) -> Vec<u8> {
    let heap = include_bytes!("../../../tests/data/heap-15-blocks-0-1");
    let mut out = Vec::new();
    for b in 0..blocks {
        let mut p: [u8; BLCKSZ] = heap[..BLCKSZ].try_into().unwrap();
        if new_pages.contains(&b) {
            p = [0; BLCKSZ];
        } else {
            let lsn = if newer.contains(&b) {
                SINCE.0 + 8
            } else {
                SINCE.0 - 8
            };
            p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
            p[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
            p[100] = b as u8;
        }
        out.extend_from_slice(&p);
    }
    out
}

fn incr(parent: &[&str], recreated: &[u32]) -> IncrementalCopy {
    IncrementalCopy {
        since: SINCE,
        parent_files: parent.iter().map(|p| p.as_bytes().to_vec()).collect(),
        recreated_databases: recreated.iter().copied().collect::<HashSet<_>>(),
        version: v("15"),
        relseg_size: 131_072,
    }
}

fn stored(target: &std::path::Path, f: &CopiedFile, c: Compression) -> Vec<u8> {
    let file = std::fs::File::open(target.join(f.stored_path.as_path())).unwrap();
    let mut out = Vec::new();
    c.decoder(file).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn changed_and_new_pages_are_stored_the_rest_comes_from_the_parent() {
    for c in [Compression::None, Compression::Zstd { level: 1 }] {
        let fake = fake_pgdata("15");
        let rel = relation(10, &[2, 7], &[9]);
        write(&fake.pgdata.join("base/1/16384"), &rel);
        // Every block changed: stored whole, under its own name.
        write(
            &fake.pgdata.join("base/1/16385"),
            &relation(3, &[0, 1, 2], &[]),
        );
        // Not in the parent, a visibility map fork, a recreated database: whole.
        write(&fake.pgdata.join("base/1/16386"), &relation(4, &[1], &[]));
        write(&fake.pgdata.join("base/1/16384_vm"), &relation(1, &[], &[]));
        write(&fake.pgdata.join("base/5/16384"), &relation(4, &[1], &[]));
        let plan = BackupPlan::build(&fake.pgdata, v("15"), &PlanOptions::default()).unwrap();
        let inc = incr(
            &[
                "base/1/16384",
                "base/1/16385",
                "base/1/16384_vm",
                "base/5/16384",
            ],
            &[5],
        );
        let o = CopyOptions {
            jobs: 2,
            compression: c,
            checksum: ChecksumAlgorithm::Crc32c,
            incremental: Some(&inc),
            ..CopyOptions::default()
        };
        let out = tempfile::tempdir().unwrap();
        let report = copy_plan(&plan, out.path(), &o, &NoProgress).unwrap();
        let by = |p: &str| report.files.iter().find(|f| f.rel_path.to_string() == p);
        let f = by("base/1/16384.pgsafe-incr").expect("stored incrementally");
        assert!(by("base/1/16384").is_none());
        let bytes = stored(out.path(), f, c);
        assert_eq!(f.size, bytes.len() as u64);
        assert_eq!(f.checksum, ChecksumAlgorithm::Crc32c.of(&bytes));
        let (h, blocks) = decode_object(&bytes).unwrap();
        assert_eq!(h.file_blocks, 10);
        assert_eq!(
            h.blocks.iter().map(|b| b.block).collect::<Vec<_>>(),
            vec![2, 7, 9]
        );
        for (b, got) in [2usize, 7, 9].iter().zip(blocks) {
            assert_eq!(got, &rel[b * BLCKSZ..(b + 1) * BLCKSZ]);
        }
        for whole in [
            "base/1/16385",
            "base/1/16386",
            "base/1/16384_vm",
            "base/5/16384",
        ] {
            let f = by(whole).unwrap_or_else(|| panic!("{whole} stored whole"));
            let src = std::fs::read(fake.pgdata.join(whole)).unwrap();
            assert_eq!(stored(out.path(), f, c), src, "{whole}");
        }
        // Every byte was read (a page scan), though far fewer were stored.
        let total: u64 = plan.files.iter().map(|f| f.size).sum::<u64>() + plan.control_file.size;
        assert_eq!(report.bytes_read, total);
    }
}

#[test]
fn which_files_may_be_incremental() {
    let inc = incr(
        &[
            "base/1/16384",
            "base/1/16384.1",
            "base/1/16384_fsm",
            "base/1/16384_init",
            "global/1262",
            "base/1/PG_VERSION",
            "pg_tblspc/16400/PG_15_202209061/7/16390",
            "base/9/16384",
        ],
        &[9],
    );
    let c = |p: &str, size: u64| inc.candidate(&RelPath::from_bytes(p.as_bytes()), size);
    let b = BLCKSZ as u64;
    assert!(c("base/1/16384", 3 * b));
    assert!(c("base/1/16384.1", b));
    assert!(c("global/1262", b));
    assert!(c("pg_tblspc/16400/PG_15_202209061/7/16390", b));
    assert!(!c("base/1/16384", 0), "empty");
    assert!(!c("base/1/16384", 3 * b + 1), "not whole blocks");
    assert!(!c("base/1/16384", 131_073 * b), "longer than a segment");
    assert!(!c("base/1/16384_fsm", b));
    assert!(!c("base/1/16384_init", b));
    assert!(!c("base/1/PG_VERSION", b));
    assert!(!c("base/1/16399", b), "not in the parent");
    assert!(!c("base/9/16384", b), "database recreated");
    assert_eq!(database_oid(b"base/12"), Some(12));
    assert_eq!(database_oid(b"pg_tblspc/1/PG_15_2/13"), Some(13));
    assert_eq!(database_oid(b"global"), None);
}
