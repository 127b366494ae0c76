//! Page checksum tests: golden pages written by a real PostgreSQL 15 (pg_checksums --check
//! accepted the cluster they come from), constructed pages, and never-panic properties.

use super::*;
use proptest::prelude::*;

const HEAP: &[u8] = include_bytes!("../../tests/data/heap-15-blocks-0-1");
const PG_CLASS: &[u8] = include_bytes!("../../tests/data/pg_class-15-blocks-0-2");

fn pages(bytes: &[u8]) -> Vec<[u8; BLCKSZ]> {
    bytes
        .chunks_exact(BLCKSZ)
        .map(|c| c.try_into().unwrap())
        .collect::<Vec<_>>()
}

fn v(major: &str) -> PgVersion {
    major.parse().unwrap()
}

#[test]
fn real_pages_carry_the_checksum_postgresql_wrote() {
    for (file, bytes) in [("heap", HEAP), ("pg_class", PG_CLASS)] {
        for (blk, page) in pages(bytes).iter().enumerate() {
            let blk = blk as u32;
            assert_ne!(pd_upper(page), 0, "{file} block {blk} is initialised");
            assert_eq!(
                checksum_page(page, blk),
                stored_checksum(page),
                "{file} block {blk}"
            );
            assert_eq!(check_page(page, blk), Ok(()));
            // The block number is folded in: the same page elsewhere in the relation fails.
            assert!(matches!(
                check_page(page, blk + 1),
                Err(PageFault::Checksum { .. })
            ));
            assert!(matches!(
                check_page(page, relation_block(1, DEFAULT_RELSEG_SIZE, blk)),
                Err(PageFault::Checksum { .. })
            ));
        }
    }
    // The LSN is read as the server lays it out: a page of a fresh cluster is far below 1/0.
    let lsn = page_lsn(&pages(HEAP)[0]);
    assert!(lsn.0 > 0 && lsn.0 < (1 << 32), "{lsn}");
}

#[test]
fn any_flipped_bit_outside_the_checksum_is_caught() {
    let page = pages(HEAP)[1];
    for byte in (0..BLCKSZ)
        .step_by(37)
        .chain([0, 7, 10, 14, 15, BLCKSZ - 1])
    {
        if byte == 8 || byte == 9 {
            continue;
        }
        for bit in [0, 3, 7] {
            let mut p = page;
            p[byte] ^= 1 << bit;
            assert!(check_page(&p, 1).is_err(), "byte {byte} bit {bit}");
        }
    }
    // A wrong stored checksum alone is caught too, and reported as such.
    let mut p = page;
    p[8] ^= 0x40;
    assert_eq!(
        check_page(&p, 1),
        Err(PageFault::Checksum {
            stored: stored_checksum(&p),
            computed: stored_checksum(&page)
        })
    );
}

#[test]
fn a_garbage_lsn_is_no_excuse() {
    let mut p = pages(HEAP)[0];
    p[..8].fill(0xFF);
    assert_eq!(page_lsn(&p), Lsn(u64::MAX));
    assert!(matches!(check_page(&p, 0), Err(PageFault::Checksum { .. })));
}

#[test]
fn new_pages_must_be_all_zeros() {
    let zero = [0u8; BLCKSZ];
    assert_eq!(check_page(&zero, 0), Ok(()));
    assert_eq!(check_page(&zero, 12345), Ok(()));
    let mut p = zero;
    p[5000] = 1;
    assert_eq!(check_page(&p, 0), Err(PageFault::NewNotZero));
    // A real page whose pd_upper was zeroed is not a new page.
    let mut p = pages(HEAP)[0];
    p[14] = 0;
    p[15] = 0;
    assert_eq!(check_page(&p, 0), Err(PageFault::NewNotZero));
}

#[test]
fn checksum_never_zero_and_stamped_pages_verify() {
    // Any page made valid by storing its checksum verifies at that block number only.
    let mut p = [0u8; BLCKSZ];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    p[14] = 0x10; // pd_upper != 0
    for blk in [0u32, 1, 131_071, 131_072, u32::MAX] {
        let c = checksum_page(&p, blk);
        assert_ne!(c, 0);
        let mut q = p;
        q[8..10].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(checksum_page(&q, blk), c, "pd_checksum is not summed");
        assert_eq!(check_page(&q, blk), Ok(()));
    }
}

#[test]
fn checksummed_files_are_relation_segments() {
    let v15 = v("15");
    let yes: &[(&str, u32)] = &[
        ("base/5/16384", 0),
        ("base/5/16384.1", 1),
        ("base/5/16384.12", 12),
        ("base/5/16384_fsm", 0),
        ("base/5/16384_vm", 0),
        ("base/5/16384_init", 0),
        ("base/1/1259", 0),
        ("global/1260", 0),
        ("global/1260_fsm.3", 3),
        ("pg_tblspc/16385/PG_15_202209061/5/16386.2", 2),
    ];
    for (p, seg) in yes {
        assert_eq!(checksummed_segment(p.as_bytes(), v15), Some(*seg), "{p}");
    }
    let no = [
        "global/pg_control",
        "global/pg_filenode.map",
        "global/pg_internal.init",
        "base/5/PG_VERSION",
        "base/5/pg_filenode.map",
        "base/5/pg_internal.init.123",
        "base/5/t3_16384",
        "base/5/16384_foo",
        "base/5/16384.x",
        "base/pgsql_tmp/pgsql_tmp1.0",
        "pg_xact/0000",
        "pg_multixact/offsets/0000",
        "16384",
        "base/abc/16384",
        "pg_tblspc/16385/16386",
        "pg_wal/000000010000000000000001",
        "base/5/16384.99999999999",
    ];
    for p in no {
        assert_eq!(checksummed_segment(p.as_bytes(), v15), None, "{p}");
    }
    // 17+ rejects leading zeros in segment numbers (parse_filename_for_relfilenumber).
    assert_eq!(checksummed_segment(b"base/5/16384.01", v("17")), None);
    assert_eq!(checksummed_segment(b"base/5/16384.01", v("16")), Some(1));
}

#[test]
fn relation_blocks_wrap_as_the_server_computes_them() {
    assert_eq!(relation_block(0, DEFAULT_RELSEG_SIZE, 7), 7);
    assert_eq!(relation_block(2, DEFAULT_RELSEG_SIZE, 7), 262_151);
    assert_eq!(
        relation_block(40_000, DEFAULT_RELSEG_SIZE, 0),
        40_000u32.wrapping_mul(131_072)
    );
}

#[test]
fn scanner_matches_page_by_page_checks() {
    let mut bytes = HEAP.to_vec();
    bytes.extend_from_slice(&[0u8; BLCKSZ]);
    bytes.extend_from_slice(HEAP);
    bytes[BLCKSZ + 100] ^= 1; // block 1 bad
    bytes[3 * BLCKSZ + 9] ^= 1; // block 3 (the HEAP page 0 at block 3) bad anyway
    bytes.extend_from_slice(&[1, 2, 3]); // trailing partial page
    for step in [1usize, 100, 4096, 8191, 8192, 8193, 50_000] {
        let mut s = PageScanner::new(0, DEFAULT_RELSEG_SIZE, 0);
        for chunk in bytes.chunks(step) {
            s.update(chunk);
        }
        let r = s.finish();
        assert_eq!(r.pages, 5, "step {step}");
        assert_eq!(r.trailing, 3);
        let blocks: Vec<u32> = r.faults.iter().map(|f| f.0).collect();
        // Block 3 holds page 0's bytes (wrong block number), block 4 page 1's.
        assert_eq!(blocks, vec![1, 3, 4], "step {step}");
    }
    // A range scanner starts at its own block.
    let mut s = PageScanner::new(0, DEFAULT_RELSEG_SIZE, 1);
    s.update(&HEAP[BLCKSZ..]);
    assert_eq!(s.finish().faults, vec![]);
}

#[test]
fn report_lists_blocks() {
    let r = PageChecksumReport {
        corrupt: vec![FileBlocks {
            path: "base/5/1".into(),
            blocks: vec![1, 4, 9],
        }],
        ..Default::default()
    };
    assert_eq!(r.corrupt_blocks(), 3);
    assert!(PageChecksumReport::lists(&r.corrupt, "base/5/1", 4));
    assert!(!PageChecksumReport::lists(&r.corrupt, "base/5/1", 5));
    assert!(!PageChecksumReport::lists(&r.corrupt, "base/5/2", 4));
    // Older pgsafe.json without the lists still reads.
    let old: PageChecksumReport =
        serde_json::from_str(r#"{"files_checked":1,"pages_checked":2,"relseg_size":131072}"#)
            .unwrap();
    assert!(old.corrupt.is_empty() && old.changed_during_copy.is_empty());
}

proptest! {
    #[test]
    fn never_panics_on_any_page(bytes in proptest::collection::vec(any::<u8>(), BLCKSZ), blk in any::<u32>()) {
        let page: [u8; BLCKSZ] = bytes.as_slice().try_into().unwrap();
        let _ = check_page(&page, blk);
        let _ = page_lsn(&page);
        let c = checksum_page(&page, blk);
        prop_assert!(c != 0);
        let mut q = page;
        q[8..10].copy_from_slice(&c.to_ne_bytes());
        if pd_upper(&q) != 0 {
            prop_assert_eq!(check_page(&q, blk), Ok(()));
        }
    }

    #[test]
    fn scanner_never_panics(data in proptest::collection::vec(any::<u8>(), 0..3 * BLCKSZ), cut in 1usize..20_000, seg in any::<u32>(), first in any::<u32>()) {
        let mut s = PageScanner::new(seg, DEFAULT_RELSEG_SIZE, first);
        for c in data.chunks(cut) {
            s.update(c);
        }
        let r = s.finish();
        prop_assert_eq!(r.pages as usize, data.len() / BLCKSZ);
        prop_assert_eq!(r.trailing, data.len() % BLCKSZ);
    }

    #[test]
    fn file_names_never_panic(name in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = checksummed_segment(&name, v("15"));
        let mut p = b"base/5/".to_vec();
        p.extend_from_slice(&name);
        let _ = checksummed_segment(&p, v("17"));
    }
}

/// A page with `pd_lsn` = `lsn` and `pd_upper` = `upper` (the rest zero).
fn lsn_page(lsn: u64, upper: u16) -> Vec<u8> {
    let mut p = vec![0u8; BLCKSZ];
    p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
    p[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
    p[14..16].copy_from_slice(&upper.to_ne_bytes());
    p
}

#[test]
fn changed_pages_are_newer_or_new() {
    let since = Lsn(0x1_0000_0100);
    let mut file = Vec::new();
    file.extend(lsn_page(0x1_0000_0100, 8000)); // 0: at the start: unchanged
    file.extend(lsn_page(0x1_0000_0101, 8000)); // 1: after
    file.extend(lsn_page(0x0_FFFF_FFFF, 8000)); // 2: before
    file.extend(vec![0u8; BLCKSZ]); // 3: new (all zero)
    file.extend(lsn_page(0x2_0000_0000, 8000)); // 4: after (high half)
    assert_eq!(changed_pages(&file, since), [1, 3, 4]);
    file.extend([1, 2, 3]); // a torn tail
    assert_eq!(changed_pages(&file, since), [1, 3, 4, 5]);
    assert_eq!(changed_pages(&[], since), Vec::<u32>::new());
}

proptest! {
    #[test]
    fn changed_pages_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3 * BLCKSZ), since in any::<u64>()) {
        let n = changed_pages(&bytes, Lsn(since));
        prop_assert!(n.len() <= bytes.len().div_ceil(BLCKSZ));
    }
}
