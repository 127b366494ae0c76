use proptest::prelude::*;

use super::*;

fn rel(n: u32) -> RelFileLocator {
    RelFileLocator {
        spc_oid: 1663,
        db_oid: 5,
        rel_number: n,
    }
}

type Entry = ((RelFileLocator, Fork), Option<u32>, Vec<u32>);

fn table(entries: Vec<Entry>) -> BlockRefTable {
    let mut t = BlockRefTable::default();
    for (k, limit_block, blocks) in entries {
        t.forks.insert(
            k,
            ForkSummary {
                limit_block,
                blocks: blocks.into_iter().collect(),
            },
        );
    }
    t
}

#[test]
fn names_parse_and_format() {
    let name = "0000000100000000010C80C000000000017146C8.summary";
    let n = SummaryFileName::parse(name).expect("parses");
    assert_eq!(
        (n.tli, n.start, n.end),
        (TimelineId(1), Lsn(0x10C80C0), Lsn(0x17146C8))
    );
    assert_eq!(n.to_string(), name);
    for bad in [
        "0000000100000000010C80C000000000017146C8",
        "0000000100000000010c80c000000000017146c8.summary",
        "00000001000000000200000000000000010000000.summary",
        "000000010000000002000000000000000100000.summary",
        "00000001000000000200000000000000010000000.summary.tmp",
    ] {
        assert_eq!(SummaryFileName::parse(bad), None, "{bad}");
    }
    // The end before the start.
    assert_eq!(
        SummaryFileName::parse("0000000100000000020000000000000001000000.summary"),
        None
    );
}

#[test]
fn arrays_bitmaps_and_limits_round_trip() {
    let dense: Vec<u32> = (65536..65536 + 5000).collect();
    let t = table(vec![
        ((rel(1259), Fork::Main), None, vec![0, 3, 7]),
        ((rel(1259), Fork::Vm), Some(0), vec![]),
        (
            (rel(16384), Fork::Main),
            Some(12),
            dense.iter().copied().chain([200_000]).collect(),
        ),
        ((rel(16384), Fork::Fsm), None, vec![u32::MAX - 1]),
    ]);
    let bytes = encode_summary(&t);
    assert_eq!(parse_summary(&bytes), Ok(t));
}

#[test]
fn damage_is_named() {
    let t = table(vec![((rel(1), Fork::Main), None, vec![1, 2])]);
    let bytes = encode_summary(&t);
    let mut b = bytes.clone();
    b[30] ^= 1;
    assert!(matches!(parse_summary(&b), Err(SummaryError::Crc { .. })));
    let mut b = bytes.clone();
    b[0] ^= 1;
    assert!(matches!(parse_summary(&b), Err(SummaryError::Magic { .. })));
    assert!(matches!(
        parse_summary(&bytes[..bytes.len() - 6]),
        Err(SummaryError::Truncated { .. } | SummaryError::Crc { .. })
    ));
    let mut b = bytes[..bytes.len() - 4].to_vec();
    b.extend_from_slice(&[0; 8]);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        parse_summary(&b),
        Err(SummaryError::Trailing { .. } | SummaryError::Crc { .. })
    ));
    // Entries out of the server's order.
    let two = table(vec![
        ((rel(1), Fork::Main), None, vec![1]),
        ((rel(2), Fork::Main), None, vec![1]),
    ]);
    let mut b = encode_summary(&two);
    let second = 4 + 24 + 2 + 2;
    b[second + 8..second + 12].copy_from_slice(&1u32.to_le_bytes());
    let n = b.len() - 4;
    let crc = crc32c::crc32c(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(parse_summary(&b), Err(SummaryError::Order { index: 1 }));
}

fn table_strategy() -> impl Strategy<Value = BlockRefTable> {
    let fork = prop_oneof![
        Just(Fork::Main),
        Just(Fork::Fsm),
        Just(Fork::Vm),
        Just(Fork::Init)
    ];
    let blocks = prop_oneof![
        proptest::collection::vec(any::<u32>(), 0..50),
        (0u32..4, 0usize..6000)
            .prop_map(|(c, n)| (0..n as u32).map(|i| c * 65536 + i * 7 % 65536).collect()),
    ];
    proptest::collection::vec(
        (
            0u32..4,
            0u32..4,
            0u32..100,
            fork,
            proptest::option::of(any::<u32>()),
            blocks,
        ),
        0..8,
    )
    .prop_map(|v| {
        let mut t = BlockRefTable::default();
        for (s, d, r, f, limit, blocks) in v {
            let rel = RelFileLocator {
                spc_oid: s,
                db_oid: d,
                rel_number: r,
            };
            let limit_block = limit.filter(|&l| l != u32::MAX);
            t.forks.insert(
                (rel, f),
                ForkSummary {
                    limit_block,
                    blocks: blocks.into_iter().collect(),
                },
            );
        }
        t
    })
}

proptest! {
    #[test]
    fn tables_round_trip(t in table_strategy()) {
        prop_assert_eq!(parse_summary(&encode_summary(&t)), Ok(t));
    }

    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_summary(&bytes);
        // With the magic and a valid CRC, the entry parser sees the arbitrary bytes.
        let mut b = BLOCKREFTABLE_MAGIC.to_le_bytes().to_vec();
        b.extend_from_slice(&bytes);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let _ = parse_summary(&b);
    }

    #[test]
    fn never_panics_on_damaged_tables(t in table_strategy(), at in any::<usize>(), x in 1u8..) {
        let mut b = encode_summary(&t);
        let i = at % b.len();
        b[i] ^= x;
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        let _ = parse_summary(&b);
    }
}
