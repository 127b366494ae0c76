//! Tests of [`super`]: unit, golden and property tests.

use super::*;
use crate::types::{Lsn, TimelineId};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

/// Appends the Manifest-Checksum line to a body ending with a newline.
fn with_checksum(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    let digest = hex::encode(Sha256::digest(body));
    v.extend_from_slice(format!("\"Manifest-Checksum\": \"{digest}\"}}\n").as_bytes());
    v
}

/// Recomputes the checksum of a manifest whose body was changed.
fn fix_checksum(bytes: &[u8]) -> Vec<u8> {
    let end = bytes[..bytes.len().saturating_sub(1)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    with_checksum(&bytes[..end])
}

fn parse_err(body: &str) -> String {
    Manifest::parse(&with_checksum(body.as_bytes()))
        .unwrap_err()
        .to_string()
}

const HEAD1: &str = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n";
const RANGES: &str = "\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n";

fn with_files(files: &str) -> String {
    format!("{HEAD1}\"Files\": [\n{files}\n],\n{RANGES}")
}

// A manifest as PostgreSQL 15.18 writes it (`src/backend/backup/backup_manifest.c`), for a
// backup of a few files.
const GOLDEN_BODY: &str = concat!(
    "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n",
    "\"Files\": [\n",
    "{ \"Path\": \"backup_label\", \"Size\": 225, \"Last-Modified\": \"2026-11-21 10:46:42 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"6e6c55ac\" },\n",
    "{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2026-11-21 10:46:40 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"8a744722\" },\n",
    "{ \"Path\": \"global/pg_control\", \"Size\": 8192, \"Last-Modified\": \"2026-11-21 10:46:42 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"0badcafe\" }\n",
    "],\n",
    "\"WAL-Ranges\": [\n",
    "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n",
    "],\n",
);

fn golden_writer() -> ManifestWriter {
    let t = NaiveDateTime::parse_from_str("2026-11-21 10:46:42", "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
        .timestamp();
    let crc = |h: &str| Some((ChecksumAlgorithm::Crc32c, h.to_owned()));
    let mut w = ManifestWriter::new(ManifestVersion::V1, Some(SystemId(7))).unwrap();
    w.add_file(b"backup_label", 225, t, crc("6e6c55ac"))
        .unwrap();
    w.add_file(
        b"PG_VERSION",
        3,
        t - 2,
        ChecksumAlgorithm::Crc32c
            .of(b"15\n")
            .map(|h| (ChecksumAlgorithm::Crc32c, h)),
    )
    .unwrap();
    w.add_file(b"global/pg_control", 8192, t, crc("0BADCAFE"))
        .unwrap();
    w
}

fn golden_ranges() -> [WalRange; 1] {
    [WalRange {
        tli: TimelineId(1),
        start_lsn: lsn("0/2000028"),
        end_lsn: lsn("0/2000100"),
    }]
}

#[test]
fn golden_layout_of_reference_example() {
    let out = golden_writer().finish(&golden_ranges());
    let (body, last) = out.split_at(GOLDEN_BODY.len());
    assert_eq!(std::str::from_utf8(body).unwrap(), GOLDEN_BODY);
    let digest = hex::encode(Sha256::digest(GOLDEN_BODY.as_bytes()));
    assert_eq!(
        std::str::from_utf8(last).unwrap(),
        format!("\"Manifest-Checksum\": \"{digest}\"}}\n")
    );
    let m = Manifest::parse(&out).unwrap();
    assert_eq!(m.version, ManifestVersion::V1);
    assert_eq!(m.system_id, None);
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.files[1].path, b"PG_VERSION");
    assert_eq!(
        m.files[1].last_modified.as_deref(),
        Some("2026-11-21 10:46:40 GMT")
    );
    assert_eq!(
        m.files[2].checksum,
        Some((ChecksumAlgorithm::Crc32c, "0badcafe".to_owned()))
    );
    assert_eq!(m.wal_ranges, golden_ranges());
    assert_eq!(m.encode().unwrap(), out);
}

#[test]
fn version_2_header_and_streaming() {
    let mut w =
        ManifestWriter::new(ManifestVersion::V2, Some(SystemId(7710574220281484033))).unwrap();
    let mut streamed = w.take_output();
    w.add_file(b"a", 0, 0, None).unwrap();
    streamed.extend(w.take_output());
    w.add_file(b"b/c", 1, 0, None).unwrap();
    assert_eq!(w.files_added(), 2);
    streamed.extend(w.finish(&[]));
    let text = String::from_utf8(streamed.clone()).unwrap();
    assert!(
        text.starts_with(concat!(
            "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n",
            "\"System-Identifier\": 7710574220281484033,\n",
            "\"Files\": [\n",
            "{ \"Path\": \"a\", \"Size\": 0, \"Last-Modified\": \"1970-01-01 00:00:00 GMT\" },\n",
            "{ \"Path\": \"b/c\", \"Size\": 1, \"Last-Modified\": \"1970-01-01 00:00:00 GMT\" }\n",
            "],\n\"WAL-Ranges\": [\n\n],\n\"Manifest-Checksum\": \""
        )),
        "{text}"
    );
    let m = Manifest::parse(&streamed).unwrap();
    assert_eq!(m.system_id, Some(SystemId(7710574220281484033)));
    assert_eq!(m.files[1].last_modified_unix(), Some(0));
    assert_eq!(m.encode().unwrap(), streamed);
    // empty file list, two ranges
    let w = ManifestWriter::new(ManifestVersion::V1, None).unwrap();
    let r = |t, a, b| WalRange {
        tli: TimelineId(t),
        start_lsn: lsn(a),
        end_lsn: lsn(b),
    };
    let out = w.finish(&[r(2, "0/3000000", "1/A0"), r(1, "0/2000028", "0/3000000")]);
    assert!(out.starts_with(concat!(
        "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n\"WAL-Ranges\": [\n",
        "{ \"Timeline\": 2, \"Start-LSN\": \"0/3000000\", \"End-LSN\": \"1/A0\" },\n",
        "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/3000000\" }\n],\n"
    ).as_bytes()));
    assert_eq!(Manifest::parse(&out).unwrap().wal_ranges.len(), 2);
}

#[test]
fn escaping_and_encoded_paths() {
    let mut w = ManifestWriter::new(ManifestVersion::V1, None).unwrap();
    w.add_file(
        b"we ird\"na\\me\x01\x08\x0c\n\r\t\x7f/\xc3\xa9\xe2\x82\xac",
        1,
        0,
        None,
    )
    .unwrap();
    w.add_file(b"caf\xe9", 2, 0, None).unwrap();
    let out = w.finish(&[]);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains(
            "{ \"Path\": \"we ird\\\"na\\\\me\\u0001\\b\\f\\n\\r\\t\x7f/é€\", \"Size\": 1,"
        ),
        "{text}"
    );
    assert!(
        text.contains("{ \"Encoded-Path\": \"636166e9\", \"Size\": 2,"),
        "{text}"
    );
    let m = Manifest::parse(&out).unwrap();
    assert_eq!(
        m.files[0].path,
        b"we ird\"na\\me\x01\x08\x0c\n\r\t\x7f/\xc3\xa9\xe2\x82\xac"
    );
    assert_eq!(m.files[1].path, b"caf\xe9");
}

#[test]
fn last_modified_matches_pg_strftime() {
    assert_eq!(format_last_modified(0), "1970-01-01 00:00:00 GMT");
    assert_eq!(format_last_modified(-1), "1969-12-31 23:59:59 GMT");
    assert_eq!(
        format_last_modified(1_700_000_000),
        "2023-11-14 22:13:20 GMT"
    );
    assert_eq!(
        format_last_modified(-62_135_596_800),
        "0001-01-01 00:00:00 GMT"
    );
    assert_eq!(
        format_last_modified(-62_198_755_200),
        "-001-01-01 00:00:00 GMT"
    );
    assert_eq!(
        format_last_modified(253_402_300_800),
        "10000-01-01 00:00:00 GMT"
    );
    assert!(format_last_modified(i64::MAX).starts_with("262142-"));
    assert!(format_last_modified(i64::MIN).starts_with("-262143-"));
}

#[test]
fn version_for_server() {
    for (v, want) in [
        ("10", 1),
        ("12.22", 1),
        ("13", 1),
        ("16.9", 1),
        ("17", 2),
        ("18.1", 2),
    ] {
        let got = ManifestVersion::for_server(v.parse().unwrap());
        assert_eq!(got.number(), want, "{v}");
    }
}

#[test]
fn writer_rejects_bad_entries() {
    assert_eq!(
        ManifestWriter::new(ManifestVersion::V2, None).unwrap_err(),
        ManifestError::MissingSystemId
    );
    let mut w = ManifestWriter::new(ManifestVersion::V1, None).unwrap();
    for p in [
        &b""[..],
        b"/etc/passwd",
        b"a//b",
        b"a/",
        b"../x",
        b"a/./b",
        b"a\0b",
    ] {
        assert!(
            matches!(
                w.add_file(p, 0, 0, None),
                Err(ManifestError::BadEntry { .. })
            ),
            "{p:?}"
        );
    }
    let c = |a, h: &str| Some((a, h.to_owned()));
    assert!(
        w.add_file(b"x", 0, 0, c(ChecksumAlgorithm::Crc32c, "abc"))
            .is_err()
    );
    assert!(
        w.add_file(b"x", 0, 0, c(ChecksumAlgorithm::Crc32c, "0000000g"))
            .is_err()
    );
    assert!(
        w.add_file(b"x", 0, 0, c(ChecksumAlgorithm::Sha256, "00000000"))
            .is_err()
    );
    let e = w
        .add_file(b"x", 0, 0, c(ChecksumAlgorithm::None, ""))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot add \"x\" to the backup manifest: checksum \"\" given with algorithm none"
    );
    assert_eq!(w.files_added(), 0);
    // a failed add leaves the output intact
    w.add_file(b"x", 0, 0, None).unwrap();
    assert_eq!(Manifest::parse(&w.finish(&[])).unwrap().files.len(), 1);
}

#[test]
fn writer_refuses_a_duplicate_path() {
    // Same bytes twice (also a non-UTF-8 path, written as Encoded-Path): an error naming it, and
    // the manifest keeps one entry that its own reader accepts.
    for path in [&b"base/1/1259"[..], b"pgsafe.json", b"x\xff"] {
        let mut w = ManifestWriter::new(ManifestVersion::V1, None).unwrap();
        w.add_file(path, 1, 0, None).unwrap();
        w.add_file(b"other", 1, 0, None).unwrap();
        let e = w.add_file(path, 2, 5, None).unwrap_err();
        assert!(
            matches!(e, ManifestError::DuplicateEntry { .. }),
            "{path:?}: {e:?}"
        );
        assert!(e.to_string().contains("second time"), "{e}");
        let parsed = ManifestWriter::add(
            &mut w,
            &ManifestFile {
                path: path.to_vec(),
                size: 3,
                last_modified: None,
                checksum: None,
            },
        );
        assert!(parsed.is_err(), "add() checks too");
        assert_eq!(w.files_added(), 2);
        let m = Manifest::parse(&w.finish(&[])).unwrap();
        assert_eq!(m.files.len(), 2);
    }
}

#[test]
fn reader_accepts_what_postgresql_accepts() {
    // compact JSON, keys in any order, either hex case, lower-case algorithm and LSN digits
    let body = "{\"PostgreSQL-Backup-Manifest-Version\":1,\"WAL-Ranges\":[{\"End-LSN\":\"0/2000a0\",\"Timeline\":3,\"Start-LSN\":\"0/1\"}],\"Files\":[{\"Size\":5,\"Checksum\":\"8A744722\",\"Checksum-Algorithm\":\"crc32c\",\"Encoded-Path\":\"4142\"},{\"Path\":\"\\u00e9\\/\\ud83d\\ude00\",\"Size\":0}],\r\n";
    let m = Manifest::parse(&with_checksum(body.as_bytes())).unwrap();
    assert_eq!(m.files[0].path, b"AB");
    assert_eq!(
        m.files[0].checksum,
        Some((ChecksumAlgorithm::Crc32c, "8a744722".into()))
    );
    assert_eq!(m.files[0].last_modified, None);
    assert_eq!(m.files[1].path, "é/😀".as_bytes());
    assert_eq!(m.wal_ranges[0].tli, TimelineId(3));
    assert_eq!(m.wal_ranges[0].end_lsn, Lsn(0x2000a0));
    // algorithm NONE means no checksum
    let f = "{ \"Path\": \"a\", \"Size\": 1, \"Checksum-Algorithm\": \"NONE\" }";
    let m = Manifest::parse(&with_checksum(with_files(f).as_bytes())).unwrap();
    assert_eq!(m.files[0].checksum, None);
}

#[test]
fn reader_errors_are_precise() {
    let cases: &[(String, &str)] = &[
        (
            "{ \"Files\": [],\n\"PostgreSQL-Backup-Manifest-Version\": 1,\n".into(),
            "backup_manifest line 1: the first key must be \"PostgreSQL-Backup-Manifest-Version\"",
        ),
        (
            format!("{{ \"PostgreSQL-Backup-Manifest-Version\": 3,\n\"Files\": [],\n{RANGES}"),
            "backup_manifest line 1: unsupported manifest version 3",
        ),
        (
            format!("{{ \"PostgreSQL-Backup-Manifest-Version\": \"1\",\n\"Files\": [],\n{RANGES}"),
            "backup_manifest line 1: PostgreSQL-Backup-Manifest-Version must be a non-negative integer, found string \"1\"",
        ),
        (
            format!("{HEAD1}\"System-Identifier\": 5,\n\"Files\": [],\n{RANGES}"),
            "backup_manifest line 2: System-Identifier is not allowed in a version 1 manifest",
        ),
        (
            format!("{{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"Files\": [],\n{RANGES}"),
            "backup_manifest line 6: System-Identifier (required in a version 2 manifest) is missing",
        ),
        (
            format!("{HEAD1}\"Files\": [],\n\"Extra\": 1,\n{RANGES}"),
            "backup_manifest line 3: unknown top-level key \"Extra\"",
        ),
        (
            format!("{HEAD1}\"Files\": [],\n\"Files\": [],\n{RANGES}"),
            "backup_manifest line 3: duplicate top-level key \"Files\"",
        ),
        (
            format!("{HEAD1}\"Files\": [],\n"),
            "backup_manifest line 3: the \"WAL-Ranges\" list is missing",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 1, \"Mode\": 1 }"),
            "backup_manifest line 3: unknown file key \"Mode\"",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Encoded-Path\": \"61\", \"Size\": 1 }"),
            "backup_manifest line 3: a file has both Path and Encoded-Path",
        ),
        (
            with_files("{ \"Size\": 1 }"),
            "backup_manifest line 3: a file needs a Path or an Encoded-Path",
        ),
        (
            with_files("{ \"Path\": \"a\" }"),
            "backup_manifest line 3: file \"a\": Size is missing",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": -1 }"),
            "backup_manifest line 3: Size must be a non-negative integer, found number -1",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 1.0 }"),
            "backup_manifest line 3: Size must be a non-negative integer, found number 1.0",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 18446744073709551616 }"),
            "backup_manifest line 3: Size 18446744073709551616 is too large for 64 bits",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Path\": \"b\", \"Size\": 1 }"),
            "backup_manifest line 3: duplicate file key \"Path\"",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 1, \"Checksum\": \"00000000\" }"),
            "backup_manifest line 3: file \"a\": Checksum without Checksum-Algorithm",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 1, \"Checksum-Algorithm\": \"CRC32C\" }"),
            "backup_manifest line 3: file \"a\": CRC32C without a Checksum",
        ),
        (
            with_files(
                "{ \"Path\": \"a\", \"Size\": 1, \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"123456\" }",
            ),
            "backup_manifest line 3: file \"a\": checksum \"123456\" is not 8 hex digits as CRC32C needs",
        ),
        (
            with_files(
                "{ \"Path\": \"a\", \"Size\": 1, \"Checksum-Algorithm\": \"MD5\", \"Checksum\": \"00\" }",
            ),
            "backup_manifest line 3: file \"a\": unknown checksum algorithm \"MD5\"",
        ),
        (
            with_files(
                "{ \"Path\": \"a\", \"Size\": 1, \"Checksum-Algorithm\": \"SHA512\", \"Checksum\": \"00\" }",
            ),
            "backup_manifest line 3: file \"a\" uses checksum algorithm SHA512, which PostgreSQL knows but pgsafe cannot verify (only CRC32C and SHA256)",
        ),
        (
            with_files(
                "{ \"Path\": \"a\", \"Size\": 1 },\n{ \"Path\": \"b\", \"Size\": 1 },\n{ \"Encoded-Path\": \"61\", \"Size\": 2 }",
            ),
            "backup_manifest line 5: duplicate path \"a\"",
        ),
        (
            with_files("{ \"Path\": \"../etc/passwd\", \"Size\": 1 }"),
            "backup_manifest line 3: unsafe path \"../etc/passwd\": the path has an empty, \".\" or \"..\" component",
        ),
        (
            with_files("{ \"Path\": \"/abs\", \"Size\": 1 }"),
            "backup_manifest line 3: unsafe path \"/abs\": the path is absolute",
        ),
        (
            with_files("{ \"Encoded-Path\": \"610062\", \"Size\": 1 }"),
            "backup_manifest line 3: unsafe path \"a\\0b\": the path contains a NUL byte",
        ),
        (
            with_files("{ \"Encoded-Path\": \"6\", \"Size\": 1 }"),
            "backup_manifest line 3: Encoded-Path \"6\" is not hex",
        ),
        (
            with_files("{ \"Path\": \"a\\u0000\", \"Size\": 1 }"),
            "backup_manifest line 3: \\u0000 is not allowed in a manifest string",
        ),
        (
            with_files("{ \"Path\": \"\\ud800x\", \"Size\": 1 }"),
            "backup_manifest line 3: invalid JSON: unpaired high surrogate",
        ),
        (
            with_files("{ \"Path\": \"\\udc00\", \"Size\": 1 }"),
            "backup_manifest line 3: invalid JSON: unpaired low surrogate",
        ),
        (
            with_files("{ \"Path\": \"\\x\", \"Size\": 1 }"),
            "backup_manifest line 3: invalid JSON: bad escape sequence in a string",
        ),
        (
            with_files("{ \"Path\": \"a\tb\", \"Size\": 1 }"),
            "backup_manifest line 3: invalid JSON: control character in a string",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 1 },\n]"),
            "backup_manifest line 4: expected a file object '{', found ']'",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 1 } { }"),
            "backup_manifest line 3: expected ',' or ']', found '{'",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 01 }"),
            "backup_manifest line 3: Size must be a non-negative integer, found number 01",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": 1e3 }"),
            "backup_manifest line 3: Size must be a non-negative integer, found number 1e3",
        ),
        (
            with_files("{ \"Path\": \"a\", \"Size\": true }"),
            "backup_manifest line 3: invalid JSON: unexpected character 't'",
        ),
        (
            format!(
                "{HEAD1}\"Files\": [],\n\"WAL-Ranges\": [{{ \"Timeline\": 1, \"Start-LSN\": \"0/1\" }}],\n"
            ),
            "backup_manifest line 3: a WAL range needs Timeline, Start-LSN and End-LSN",
        ),
        (
            format!(
                "{HEAD1}\"Files\": [],\n\"WAL-Ranges\": [{{ \"Timeline\": 0, \"Start-LSN\": \"0/1\", \"End-LSN\": \"0/1\" }}],\n"
            ),
            "backup_manifest line 3: invalid timeline 0",
        ),
        (
            format!(
                "{HEAD1}\"Files\": [],\n\"WAL-Ranges\": [{{ \"Timeline\": 1, \"Start-LSN\": \"0/XYZ\", \"End-LSN\": \"0/1\" }}],\n"
            ),
            "backup_manifest line 3: Start-LSN \"0/XYZ\" is not an LSN like 0/16B3748",
        ),
        (
            format!(
                "{HEAD1}\"Files\": [],\n\"WAL-Ranges\": [{{ \"Timeline\": 1, \"Start-LSN\": \"0/1\", \"End-LSN\": \"0/1\", \"Note\": \"\" }}],\n"
            ),
            "backup_manifest line 3: unknown WAL range key \"Note\"",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(parse_err(body), *want, "{body}");
    }
    // a string that is not UTF-8
    let mut body = with_files("{ \"Path\": \"aX\", \"Size\": 1 }").into_bytes();
    let i = body.iter().position(|&b| b == b'X').unwrap();
    body[i] = 0xff;
    assert_eq!(
        Manifest::parse(&with_checksum(&body))
            .unwrap_err()
            .to_string(),
        "backup_manifest line 3: string is not valid UTF-8"
    );
}

#[test]
fn checksum_and_framing_errors() {
    let good = golden_writer().finish(&golden_ranges());
    let mut edited = good.clone();
    let i = edited.windows(3).position(|w| w == b"225").unwrap();
    edited[i] = b'3';
    assert_eq!(
        Manifest::parse(&edited).unwrap_err().to_string(),
        "backup_manifest: checksum mismatch: the manifest is damaged or was edited"
    );
    // damage that also breaks the JSON is still reported as damage
    edited[i] = b'"';
    assert_eq!(
        Manifest::parse(&edited),
        Err(ManifestError::ChecksumMismatch)
    );
    assert_eq!(
        Manifest::parse(&good[..good.len() - 1])
            .unwrap_err()
            .to_string(),
        "backup_manifest: the last line is not newline-terminated (the file is truncated or is not a backup manifest)"
    );
    assert_eq!(
        Manifest::parse(b"{}\n"),
        Err(ManifestError::Framing("expected at least 2 lines"))
    );
    assert_eq!(
        Manifest::parse(b""),
        Err(ManifestError::Framing(
            "the last line is not newline-terminated"
        ))
    );
    let cut = fix_checksum(&good).len() - 89;
    assert_eq!(fix_checksum(&good), good);
    let mut upper = good[..cut + 22].to_vec();
    upper.extend(good[cut + 22..].to_ascii_uppercase());
    assert_eq!(
        Manifest::parse(&upper).unwrap(),
        Manifest::parse(&good).unwrap()
    );
    let n = good.iter().filter(|&&b| b == b'\n').count();
    for (last, msg) in [
        (
            "\"Manifest-Checksum\": \"00\"}\n",
            "invalid manifest checksum \"00\": expected 64 hex digits".to_string(),
        ),
        (
            "\"Manifest-Checksum\": \"x\", \"Files\": []}\n",
            "the last line must hold only \"Manifest-Checksum\": \"<SHA-256 hex>\"}".to_string(),
        ),
        (
            "}\n",
            "the last line must hold only \"Manifest-Checksum\": \"<SHA-256 hex>\"}".to_string(),
        ),
    ] {
        let mut b = good[..cut].to_vec();
        b.extend_from_slice(last.as_bytes());
        assert_eq!(
            Manifest::parse(&b),
            Err(ManifestError::Syntax { line: n, msg }),
            "{last}"
        );
    }
    // trailing bytes after the closing brace, or the checksum member not last
    for last in [
        "\"Manifest-Checksum\": \"{d}\"} x\n",
        "\"Manifest-Checksum\": \"{d}\"}}\n",
    ] {
        let body = &good[..cut];
        let d = hex::encode(Sha256::digest(body));
        let mut b = body.to_vec();
        b.extend_from_slice(last.replace("{d}", &d).as_bytes());
        assert!(
            matches!(Manifest::parse(&b), Err(ManifestError::Syntax { .. })),
            "{last}"
        );
    }
    // the checksum member may not hide on a line other than the last
    let body = format!("{HEAD1}\"Files\": [],\n{RANGES}\"Manifest-Checksum\": \"ab\"}}\n\n");
    assert!(matches!(
        Manifest::parse(body.as_bytes()),
        Err(ManifestError::Syntax { .. })
    ));
}

// ---- property tests ----

fn component() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => 0x20u8..0x7f,
        1 => Just(b'"'),
        1 => Just(b'\\'),
        1 => 1u8..0x20,
        1 => 0x7fu8..=0xff,
    ];
    prop_oneof![
        proptest::collection::vec(byte, 1..6),
        "[^/\u{0}]{1,4}".prop_map(String::into_bytes),
    ]
    .prop_filter("not a path component", |c| {
        c != b"." && c != b".." && !c.contains(&b'/') && !c.contains(&0)
    })
}

type Entry = (Vec<u8>, u64, i64, Option<(ChecksumAlgorithm, String)>);

fn checksum() -> impl Strategy<Value = Option<(ChecksumAlgorithm, String)>> {
    prop_oneof![
        Just(None),
        (proptest::collection::vec(any::<u8>(), 4), any::<bool>())
            .prop_map(|(b, up)| Some((ChecksumAlgorithm::Crc32c, case(hex::encode(b), up)))),
        (proptest::collection::vec(any::<u8>(), 32), any::<bool>())
            .prop_map(|(b, up)| Some((ChecksumAlgorithm::Sha256, case(hex::encode(b), up)))),
    ]
}

fn case(s: String, upper: bool) -> String {
    if upper { s.to_ascii_uppercase() } else { s }
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let path = proptest::collection::vec(component(), 1..4).prop_map(|c| c.join(&b'/'));
    proptest::collection::vec((path, any::<u64>(), any::<i64>(), checksum()), 0..12).prop_map(
        |mut v| {
            let mut seen = std::collections::HashSet::new();
            v.retain(|e| seen.insert(e.0.clone()));
            v
        },
    )
}

fn ranges() -> impl Strategy<Value = Vec<WalRange>> {
    proptest::collection::vec((1u32.., any::<u64>(), any::<u64>()), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(t, a, b)| WalRange {
                tli: TimelineId(t),
                start_lsn: Lsn(a),
                end_lsn: Lsn(b),
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn write_parse_round_trips(files in entries(), wal in ranges(), v2: bool, sysid: u64) {
        let (version, system_id) = if v2 {
            (ManifestVersion::V2, Some(SystemId(sysid)))
        } else {
            (ManifestVersion::V1, None)
        };
        let mut w = ManifestWriter::new(version, system_id).unwrap();
        for (p, size, mtime, c) in &files {
            w.add_file(p, *size, *mtime, c.clone()).unwrap();
        }
        let bytes = w.finish(&wal);
        let m = Manifest::parse(&bytes).unwrap();
        let want: Vec<ManifestFile> = files.iter().map(|(p, size, mtime, c)| ManifestFile {
            path: p.clone(),
            size: *size,
            last_modified: Some(format_last_modified(*mtime)),
            checksum: c.clone().map(|(a, h)| (a, h.to_ascii_lowercase())),
        }).collect();
        prop_assert_eq!(&m.files, &want);
        prop_assert_eq!(&m.wal_ranges, &wal);
        prop_assert_eq!((m.version, m.system_id), (version, system_id));
        prop_assert_eq!(m.encode().unwrap(), bytes.clone());
        for (f, (_, _, mtime, _)) in m.files.iter().zip(&files) {
            if (-62_135_596_800..253_402_300_800).contains(mtime) {
                prop_assert_eq!(f.last_modified_unix(), Some(*mtime));
            }
        }
        // the manifest is pure UTF-8 and every byte before the last line is covered
        prop_assert!(std::str::from_utf8(&bytes).is_ok());
        if !files.is_empty() {
            let mut b = bytes.clone();
            let i = b.len() / 3;
            b[i] ^= 0x20;
            prop_assert!(Manifest::parse(&b).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Manifest::parse(&bytes);
        let _ = Manifest::parse(&fix_checksum(&bytes));
    }

    #[test]
    fn damaged_manifests_never_panic(files in entries(), cut in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), byte: u8) {
        let mut w = ManifestWriter::new(ManifestVersion::V1, None).unwrap();
        for (p, size, mtime, c) in &files {
            w.add_file(p, *size, *mtime, c.clone()).unwrap();
        }
        let good = w.finish(&[]);
        let mut b = good.clone();
        b[pos.index(good.len())] = byte;
        let _ = Manifest::parse(&b);
        // with a matching checksum, the JSON parser itself sees the damage
        let fixed = fix_checksum(&b);
        if let Ok(m) = Manifest::parse(&fixed) {
            prop_assert!(m.encode().is_ok());
        }
        let _ = Manifest::parse(&fix_checksum(&good[..cut.index(good.len())]));
    }
}
