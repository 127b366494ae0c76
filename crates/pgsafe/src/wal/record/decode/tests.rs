use proptest::prelude::*;

use super::*;
use crate::wal::record::testwal::{Spec, encode};

const BLCKSZ: u32 = 8192;

fn rel(n: u32) -> RelFileLocator {
    RelFileLocator {
        spc_oid: 1663,
        db_oid: 5,
        rel_number: 16384 + n,
    }
}

fn block(id: u8, r: u32, blk: u32) -> BlockRef {
    BlockRef {
        id,
        rel: rel(r),
        fork: Fork::Main,
        block: blk,
        image: None,
        data_len: 0,
        will_init: false,
    }
}

fn spec(blocks: Vec<BlockRef>, main: Vec<u8>) -> Spec {
    Spec {
        rmid: 10,
        info: 0x30,
        xid: 742,
        origin: None,
        toplevel_xid: None,
        blocks,
        main,
    }
}

fn format(major: u32) -> RecordFormat {
    RecordFormat::new(major, BLCKSZ)
}

#[test]
fn decodes_blocks_images_and_main_data() {
    let mut b0 = block(0, 1, 7);
    b0.image = Some(BlockImage {
        length: 8192 - 100,
        hole_offset: 40,
        hole_length: 100,
        apply: true,
        compression: ImageCompression::None,
    });
    let mut b1 = block(1, 1, 8);
    b1.data_len = 30;
    b1.fork = Fork::Vm;
    let mut b3 = block(3, 2, 0);
    b3.will_init = true;
    for major in [10, 14, 15, 18] {
        let s = spec(vec![b0, b1, b3], b"main data".to_vec());
        let bytes = encode(&s, Lsn(0x100), major);
        let r = decode_record(Lsn(0x200), &bytes, format(major)).expect("decodes");
        assert_eq!(r.blocks, vec![b0, b1, b3], "major {major}");
        assert_eq!(r.main_data, b"main data");
        assert_eq!((r.rmid, r.info, r.xid, r.prev), (10, 0x30, 742, Lsn(0x100)));
        assert_eq!(r.rmgr_info(), 0x30);
    }
}

#[test]
fn a_changed_byte_fails_the_crc() {
    let bytes = encode(&spec(vec![block(0, 1, 2)], vec![1, 2, 3]), Lsn(8), 17);
    for i in (0..bytes.len()).filter(|i| !(20..24).contains(i) && !(0..4).contains(i)) {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        let e = decode_record(Lsn(64), &b, format(17)).expect_err("damage found");
        assert!(
            matches!(e.what, DecodeErrorKind::Crc { .. }),
            "byte {i}: {e}"
        );
    }
}

/// Re-seals a record after a change, so the check under test is not the CRC.
fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    let crc = record_crc(&b).expect("header");
    b[20..24].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn malformed_fragments_are_refused_as_the_server_refuses_them() {
    let f = format(17);
    let base = encode(
        &spec(vec![block(0, 1, 2), block(1, 1, 3)], vec![]),
        Lsn(8),
        17,
    );
    // Block 1 refers to the same relation: make block 0 claim SAME_REL too.
    let mut b = base.clone();
    b[25] |= 0x80;
    let e = decode_record(Lsn(64), &reseal(b), f).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::SameRel { id: 0 });
    // Block ids must increase.
    let two = spec(vec![block(4, 1, 2), block(5, 2, 3)], vec![]);
    let mut b = encode(&two, Lsn(8), 17);
    let second = 24 + 4 + 12 + 4;
    b[second] = 4;
    let e = decode_record(Lsn(64), &reseal(b), f).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::BlockOrder { id: 4 });
    // An id above 32 that is none of the special ones.
    let mut b = base.clone();
    b[24] = 100;
    let e = decode_record(Lsn(64), &reseal(b), f).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::BlockId { id: 100 });
    // A fork number beyond init.
    let mut b = base.clone();
    b[25] = (b[25] & 0xF0) | 9;
    let e = decode_record(Lsn(64), &reseal(b), f).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::Fork { id: 0, fork: 9 });
    // HAS_DATA without data.
    let mut b = base.clone();
    b[25] |= 0x20;
    let e = decode_record(Lsn(64), &reseal(b), f).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::NoData { id: 0 });
    // A record cut short inside its last block reference.
    let mut b = base.clone();
    b.pop();
    let tot = b.len() as u32;
    b[0..4].copy_from_slice(&tot.to_le_bytes());
    let e = decode_record(Lsn(64), &reseal(b), f).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::ShortData);
    // An unknown resource manager (custom ones exist from 15 on).
    let mut b = base.clone();
    b[17] = 22;
    let e = decode_record(Lsn(64), &reseal(b.clone()), f).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::Rmgr { rmid: 22 });
    b[17] = 130;
    assert!(decode_record(Lsn(64), &reseal(b.clone()), f).is_ok());
    let e = decode_record(Lsn(64), &reseal(b), format(14)).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::Rmgr { rmid: 130 });
}

#[test]
fn toplevel_xid_exists_from_14_and_image_flags_follow_the_major() {
    let mut s = spec(vec![block(0, 1, 2)], vec![9; 300]);
    s.toplevel_xid = Some(99);
    s.origin = Some(3);
    let b = encode(&s, Lsn(8), 14);
    let r = decode_record(Lsn(64), &b, format(14)).expect("14 has it");
    assert_eq!(
        (r.toplevel_xid, r.origin, r.main_data.len()),
        (Some(99), Some(3), 300)
    );
    let e = decode_record(Lsn(64), &b, format(13)).unwrap_err();
    assert_eq!(e.what, DecodeErrorKind::BlockId { id: 252 });
    // LZ4 (0x08) does not exist before 15.
    let mut b0 = block(0, 1, 2);
    b0.image = Some(BlockImage {
        length: 900,
        hole_offset: 0,
        hole_length: 0,
        apply: true,
        compression: ImageCompression::Lz4,
    });
    let b = encode(&spec(vec![b0], vec![]), Lsn(8), 15);
    assert_eq!(
        decode_record(Lsn(64), &b, format(15)).unwrap().blocks,
        vec![b0]
    );
    let e = decode_record(Lsn(64), &b, format(14)).unwrap_err();
    assert!(matches!(e.what, DecodeErrorKind::ImageFlags { .. }), "{e}");
}

fn image_strategy() -> impl Strategy<Value = Option<BlockImage>> {
    let comp = prop_oneof![
        Just(ImageCompression::None),
        Just(ImageCompression::Pglz),
        Just(ImageCompression::Lz4),
        Just(ImageCompression::Zstd),
    ];
    prop_oneof![
        Just(None),
        (comp, any::<bool>(), 1u16..8000, 1u16..100, 1u16..8000).prop_map(
            |(compression, apply, offset, hole, clen)| {
                let (length, hole_offset, hole_length) = match compression {
                    ImageCompression::None if offset % 3 == 0 => (8192, 0, 0),
                    ImageCompression::None => (8192 - hole, offset, hole),
                    _ if offset % 3 == 0 => (clen, 0, 0),
                    _ => (clen, offset, hole),
                };
                Some(BlockImage {
                    length,
                    hole_offset,
                    hole_length,
                    apply,
                    compression,
                })
            }
        ),
    ]
}

fn spec_strategy() -> impl Strategy<Value = (Spec, u32)> {
    let blk = (
        0u32..3,
        0u8..4,
        any::<u32>(),
        image_strategy(),
        0u16..300,
        any::<bool>(),
    );
    (
        proptest::collection::vec(blk, 0..6),
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<u8>(),
        0u8..=21,
        prop_oneof![
            Just(10u32),
            Just(13),
            Just(14),
            Just(15),
            Just(16),
            Just(18)
        ],
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(blocks, main, info, rmid, major, origin, top)| {
            let blocks = blocks
                .into_iter()
                .enumerate()
                .map(|(i, (r, fork, b, image, data_len, will_init))| {
                    let image = image.filter(|img| {
                        major >= 15
                            || matches!(
                                img.compression,
                                ImageCompression::None | ImageCompression::Pglz
                            )
                    });
                    BlockRef {
                        id: (i * 3) as u8,
                        rel: rel(r),
                        fork: Fork::from_number(u32::from(fork)).unwrap_or(Fork::Main),
                        block: b,
                        image,
                        data_len,
                        will_init,
                    }
                })
                .collect();
            let spec = Spec {
                rmid,
                info,
                xid: 1,
                origin,
                toplevel_xid: top.filter(|_| major >= 14),
                blocks,
                main,
            };
            (spec, major)
        })
}

proptest! {
    #[test]
    fn records_round_trip((s, major) in spec_strategy()) {
        let bytes = encode(&s, Lsn(1 << 33), major);
        let r = decode_record(Lsn(1 << 34), &bytes, format(major)).expect("decodes");
        prop_assert_eq!(&r.blocks, &s.blocks);
        prop_assert_eq!(r.main_data, &s.main[..]);
        prop_assert_eq!((r.origin, r.toplevel_xid), (s.origin, s.toplevel_xid));
        prop_assert_eq!((r.rmid, r.info, r.prev), (s.rmid, s.info, Lsn(1 << 33)));
    }

    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), major in 10u32..=18) {
        // Valid lengths and CRCs, so the fragment parser sees the arbitrary bytes.
        let mut b = bytes;
        if b.len() >= 24 {
            let tot = b.len() as u32;
            b[0..4].copy_from_slice(&tot.to_le_bytes());
            b = reseal(b);
        }
        let _ = decode_record(Lsn(0), &b, format(major));
    }

    #[test]
    fn never_panics_on_damaged_records((s, major) in spec_strategy(), at in any::<usize>(), x in 1u8..) {
        let mut b = encode(&s, Lsn(8), major);
        let i = at % b.len();
        b[i] ^= x;
        let _ = decode_record(Lsn(0), &reseal(b), format(major));
    }
}
