use proptest::prelude::*;

use super::*;

fn seg(s: &str) -> WalSegment {
    s.parse().unwrap()
}

#[test]
fn postgresql_names_parse() {
    let s = seg("000000010000000A000000FF");
    assert_eq!(
        ArchiveFile::parse("000000010000000A000000FF").unwrap(),
        ArchiveFile::Segment(s)
    );
    assert_eq!(
        ArchiveFile::parse("000000010000000A000000FF.partial").unwrap(),
        ArchiveFile::Partial(s)
    );
    assert_eq!(
        ArchiveFile::parse("0000001A.history").unwrap(),
        ArchiveFile::History(TimelineId(26))
    );
    assert_eq!(
        ArchiveFile::parse("000000010000000A000000FF.00000028.backup").unwrap(),
        ArchiveFile::BackupHistory {
            segment: s,
            offset: 0x28
        }
    );
}

#[test]
fn other_names_are_refused() {
    let long = "0".repeat(5000);
    for bad in [
        "",
        "../000000010000000000000001",
        "/etc/passwd",
        "000000010000000000000001/",
        "x/000000010000000000000001",
        "00000001000000000000000",
        "0000000100000000000000011",
        "00000001000000000000000a",
        "00000000000000000000000A",
        "000000010000000000000001.zst",
        "000000010000000000000001.partial.zst",
        "000000010000000000000001.PARTIAL",
        "00000000.history",
        "0000001.history",
        "0000000a.history",
        "00000002.history.zst",
        "000000010000000000000001.0000028.backup",
        "000000010000000000000001.00000028.backup.zst",
        "000000010000000000000001.backup",
        "000000010000000000000001.00000028.00000028.backup",
        "RECOVERYXLOG",
        ".history",
        long.as_str(),
    ] {
        let e = ArchiveFile::parse(bad).unwrap_err();
        assert!(e.to_string().len() < 600, "{e}");
    }
}

#[test]
fn stored_names() {
    let f = ArchiveFile::parse("000000020000000A000000FF").unwrap();
    assert_eq!(
        f.stored_name(Compression::Zstd { level: 1 }),
        "000000020000000A000000FF.zst"
    );
    assert_eq!(
        f.stored_name(Compression::Lz4),
        "000000020000000A000000FF.lz4"
    );
    assert_eq!(f.stored_name(Compression::None), "000000020000000A000000FF");
    let cluster = Ident::new("main").unwrap();
    assert_eq!(
        f.object_name(&cluster, Compression::Zstd { level: 1 })
            .unwrap()
            .to_string(),
        "main/wal/00000002/0000000A/000000020000000A000000FF.zst"
    );
    let h = ArchiveFile::History(TimelineId(3));
    assert_eq!(h.stored_name(Compression::Lz4), "00000003.history");
    assert_eq!(
        h.object_name(&cluster, Compression::Lz4)
            .unwrap()
            .to_string(),
        "main/wal/00000003/00000003.history"
    );
    let b = ArchiveFile::parse("000000030000000000000002.00000028.backup").unwrap();
    assert_eq!(
        b.object_name(&cluster, Compression::Lz4)
            .unwrap()
            .to_string(),
        "main/wal/00000003/00000000/000000030000000000000002.00000028.backup"
    );
    assert_eq!(b.stored_candidates().len(), 1);
    assert_eq!(f.stored_candidates().len(), 3);
    assert!(ArchiveFile::parse_stored("00000002.history.zst").is_err());
    assert_eq!(
        ArchiveFile::parse_stored("000000020000000A000000FF.partial.lz4").unwrap(),
        (
            ArchiveFile::Partial(seg("000000020000000A000000FF")),
            Compression::Lz4
        )
    );
}

fn any_segment() -> impl Strategy<Value = WalSegment> {
    (1u32.., any::<u32>(), any::<u32>())
        .prop_map(|(t, l, s)| seg(&format!("{t:08X}{l:08X}{s:08X}")))
}

fn any_file() -> impl Strategy<Value = ArchiveFile> {
    prop_oneof![
        any_segment().prop_map(ArchiveFile::Segment),
        any_segment().prop_map(ArchiveFile::Partial),
        (1u32..).prop_map(|t| ArchiveFile::History(TimelineId(t))),
        (any_segment(), any::<u32>())
            .prop_map(|(segment, offset)| ArchiveFile::BackupHistory { segment, offset }),
    ]
}

fn any_compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd { level: 0 })
    ]
}

proptest! {
    #[test]
    fn names_round_trip(f in any_file()) {
        let name = f.to_string();
        prop_assert_eq!(ArchiveFile::parse(&name).unwrap(), f);
        let cluster = Ident::new("c").unwrap();
        for (stored, c) in f.stored_candidates() {
            prop_assert_eq!(ArchiveFile::parse_stored(&stored).unwrap(), (f, c));
            let object = f.object_name(&cluster, c).unwrap();
            prop_assert!(object.to_str().unwrap().ends_with(&stored));
        }
    }

    #[test]
    fn stored_names_round_trip(f in any_file(), c in any_compression()) {
        let stored = f.stored_name(c);
        let (back, bc) = ArchiveFile::parse_stored(&stored).unwrap();
        prop_assert_eq!(back, f);
        prop_assert_eq!(bc, f.stored_compression(c));
    }

    /// Any string: parsed or refused, never a panic; what parses prints back as given.
    #[test]
    fn parse_never_panics(s in "\\PC{0,60}|[0-9A-Fa-f./]{0,50}") {
        if let Ok(f) = ArchiveFile::parse(&s) {
            prop_assert_eq!(f.to_string(), s.clone());
        }
        if let Ok((f, c)) = ArchiveFile::parse_stored(&s) {
            prop_assert_eq!(f.stored_name(c), s);
        }
    }
}
