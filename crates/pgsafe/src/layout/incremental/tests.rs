use proptest::prelude::*;

use super::*;

const BS: u32 = 8192;

fn block(fill: u8) -> Vec<u8> {
    vec![fill; BS as usize]
}

/// A header of `count` entries, as raw bytes, with a correct CRC: for hostile headers the
/// encoder would refuse.
fn raw_header(bs: u32, file_blocks: u32, count: u32, entries: &[(u32, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&INCR_MAGIC);
    out.extend_from_slice(&INCR_VERSION.to_le_bytes());
    out.extend_from_slice(&bs.to_le_bytes());
    out.extend_from_slice(&file_blocks.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for (b, c) in entries {
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&c.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn the_names_and_magic_are_fixed() {
    // What older backups hold: a change must fail here.
    assert_eq!(INCR_SUFFIX, ".pgsafe-incr");
    assert_eq!(&INCR_MAGIC, b"PGSAFEIB");
    assert_eq!(INCR_VERSION, 1);
}

#[test]
fn an_object_round_trips() {
    let (a, b) = (block(1), block(2));
    let obj = encode_object(BS, 10, &[(3, &a), (7, &b)]).unwrap();
    assert_eq!(obj.len(), 28 + 2 * 8 + 2 * BS as usize);
    let (h, blocks) = decode_object(&obj).unwrap();
    assert_eq!(h.block_size, BS);
    assert_eq!(h.file_blocks, 10);
    assert_eq!(
        h.blocks.iter().map(|b| b.block).collect::<Vec<_>>(),
        vec![3, 7]
    );
    assert_eq!(blocks, vec![&a[..], &b[..]]);
    assert_eq!(h.object_len(), obj.len() as u64);
    assert_eq!(h.file_len(), 10 * 8192);
    assert_eq!(h.data_offset(1), h.header_len() + u64::from(BS));
    let (h2, len) = decode_header(&obj).unwrap();
    assert_eq!(h2, h);
    assert_eq!(len as u64, h.header_len());
    assert_eq!(header_len(&obj[..FIXED_LEN]).unwrap(), len);
}

#[test]
fn a_file_with_no_changed_block_is_a_header_alone() {
    let obj = encode_object(BS, 5, &[]).unwrap();
    assert_eq!(obj.len(), 28);
    let (h, blocks) = decode_object(&obj).unwrap();
    assert!(h.blocks.is_empty() && blocks.is_empty());
    assert_eq!(h.file_blocks, 5);
    // An empty file, too.
    assert!(decode_object(&encode_object(BS, 0, &[]).unwrap()).is_ok());
}

#[test]
fn a_changed_byte_anywhere_is_caught() {
    let (a, b) = (block(1), block(2));
    let obj = encode_object(BS, 10, &[(3, &a), (7, &b)]).unwrap();
    for i in 0..obj.len() {
        let mut bad = obj.clone();
        bad[i] ^= 0x40;
        assert!(
            decode_object(&bad).is_err(),
            "byte {i} flipped went unnoticed"
        );
    }
    // One block too few or too many bytes.
    assert!(matches!(
        decode_object(&obj[..obj.len() - 1]),
        Err(IncrError::DataLength { .. })
    ));
    let mut longer = obj.clone();
    longer.push(0);
    assert!(matches!(
        decode_object(&longer),
        Err(IncrError::DataLength { .. })
    ));
}

#[test]
fn a_swapped_block_is_caught_by_its_crc() {
    let (a, b) = (block(1), block(2));
    let mut obj = encode_object(BS, 10, &[(3, &a), (7, &b)]).unwrap();
    let start = 28 + 16;
    obj[start..start + BS as usize].copy_from_slice(&b);
    assert_eq!(
        decode_object(&obj).unwrap_err(),
        IncrError::BlockCrc {
            block: 3,
            stored: block_crc(&a),
            computed: block_crc(&b)
        }
    );
}

#[test]
fn the_encoder_refuses_what_the_decoder_would() {
    let a = block(1);
    let enc = |file_blocks, blocks: &[(u32, &[u8])]| encode_object(BS, file_blocks, blocks);
    assert!(matches!(
        enc(3, &[(3, &a)]),
        Err(IncrError::BlockPastLength { .. })
    ));
    assert!(matches!(
        enc(9, &[(4, &a), (2, &a)]),
        Err(IncrError::NotAscending { .. })
    ));
    assert!(matches!(
        enc(9, &[(4, &a), (4, &a)]),
        Err(IncrError::NotAscending { .. })
    ));
    assert!(matches!(
        enc(9, &[(4, &a[..100])]),
        Err(IncrError::BlockLength { .. })
    ));
    assert!(matches!(
        encode_object(8000, 9, &[]),
        Err(IncrError::BlockSize(8000))
    ));
    assert!(matches!(
        encode_object(65536, 9, &[]),
        Err(IncrError::BlockSize(65536))
    ));
}

#[test]
fn hostile_headers_are_refused_not_obeyed() {
    let d = |h: &[u8]| decode_header(h).unwrap_err();
    // Unsorted, duplicated, past the length: with a correct CRC, so the check is the order's.
    assert!(matches!(
        d(&raw_header(BS, 10, 2, &[(5, 0), (4, 0)])),
        IncrError::NotAscending {
            previous: 5,
            block: 4
        }
    ));
    assert!(matches!(
        d(&raw_header(BS, 10, 2, &[(5, 0), (5, 0)])),
        IncrError::NotAscending { .. }
    ));
    assert!(matches!(
        d(&raw_header(BS, 10, 1, &[(10, 0)])),
        IncrError::BlockPastLength {
            block: 10,
            file_blocks: 10
        }
    ));
    // A count that would allocate gigabytes: refused from the fixed prefix alone.
    let huge = raw_header(BS, u32::MAX, u32::MAX, &[]);
    assert_eq!(
        header_len(&huge[..FIXED_LEN]).unwrap_err(),
        IncrError::TooManyBlocks(u32::MAX)
    );
    assert!(matches!(
        d(&raw_header(BS, u32::MAX, MAX_STORED_BLOCKS + 1, &[])),
        IncrError::TooManyBlocks(_)
    ));
    // More stored blocks than the file has.
    assert!(matches!(
        d(&raw_header(BS, 2, 3, &[])),
        IncrError::CountPastLength { .. }
    ));
    // A legitimate count whose entries are missing: truncated, asking for exactly the header.
    assert_eq!(
        d(&raw_header(BS, 100, 50, &[])),
        IncrError::Truncated {
            need: 28 + 50 * 8,
            have: 28
        }
    );
    // Other magic, version, block sizes.
    let mut m = raw_header(BS, 1, 0, &[]);
    m[0] = b'X';
    assert!(matches!(d(&m), IncrError::Magic { .. }));
    let mut v = raw_header(BS, 1, 0, &[]);
    v[8] = 2;
    assert!(matches!(d(&v), IncrError::Version { found: 2 }));
    for bs in [0, 1, 512, 8191, 65536, u32::MAX] {
        assert!(matches!(
            d(&raw_header(bs, 1, 0, &[])),
            IncrError::BlockSize(_)
        ));
    }
    assert!(matches!(d(b"PGSAFEIB"), IncrError::Truncated { .. }));
    assert!(matches!(d(b""), IncrError::Truncated { .. }));
}

#[test]
fn incremental_paths_only_in_incremental_backups() {
    let p = incremental_path(b"base/5/16384.1");
    assert_eq!(p, b"base/5/16384.1.pgsafe-incr");
    assert_eq!(
        incremental_target(&p, BackupType::Incr),
        Some(&b"base/5/16384.1"[..])
    );
    assert_eq!(
        incremental_target(&p, BackupType::Diff),
        Some(&b"base/5/16384.1"[..])
    );
    assert_eq!(incremental_target(&p, BackupType::Full), None);
    assert_eq!(incremental_target(b"base/5/16384", BackupType::Incr), None);
    assert_eq!(incremental_target(b".pgsafe-incr", BackupType::Incr), None);
    assert_eq!(
        incremental_target(b"base/.pgsafe-incr", BackupType::Incr),
        None
    );
    // Compressed, the stored name has the compression suffix after it.
    assert_eq!(
        crate::layout::stored_path(&p, crate::codec::Compression::Lz4).to_string(),
        "base/5/16384.1.pgsafe-incr.lz4"
    );
}

proptest! {
    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_header(&bytes);
        let _ = decode_object(&bytes);
        let _ = header_len(&bytes);
    }

    #[test]
    fn never_panics_on_a_valid_prefix_with_any_tail(
        file_blocks in any::<u32>(),
        count in any::<u32>(),
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = raw_header(BS, file_blocks, count, &[]);
        bytes.truncate(FIXED_LEN);
        bytes.extend_from_slice(&tail);
        let _ = decode_header(&bytes);
        let _ = decode_object(&bytes);
    }

    #[test]
    fn any_valid_object_round_trips(
        file_blocks in 0u32..64,
        picks in proptest::collection::btree_set(0u32..64, 0..8),
        bs_shift in 0u32..6,
    ) {
        let bs = 1024u32 << bs_shift;
        let nums: Vec<u32> = picks.into_iter().filter(|b| *b < file_blocks).collect();
        let datas: Vec<Vec<u8>> = nums.iter().map(|n| vec![*n as u8; bs as usize]).collect();
        let blocks: Vec<(u32, &[u8])> =
            nums.iter().copied().zip(datas.iter().map(|d| &d[..])).collect();
        let obj = encode_object(bs, file_blocks, &blocks).unwrap();
        let (h, got) = decode_object(&obj).unwrap();
        prop_assert_eq!(h.file_blocks, file_blocks);
        prop_assert_eq!(h.block_size, bs);
        prop_assert_eq!(h.blocks.iter().map(|b| b.block).collect::<Vec<_>>(), nums);
        prop_assert_eq!(got, datas.iter().map(|d| &d[..]).collect::<Vec<_>>());
        prop_assert_eq!(h.object_len(), obj.len() as u64);
    }
}
