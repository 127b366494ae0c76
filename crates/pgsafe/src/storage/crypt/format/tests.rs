#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn key(b: u8) -> SecretKey {
    SecretKey::from_bytes([b; 32])
}

fn header(b: u8) -> Header {
    Header {
        key_id: KeyId([b; 16]),
        nonce_prefix: [b.wrapping_add(1); 16],
    }
}

fn open(stored: &[u8], name: &[u8], k: &SecretKey) -> Result<Vec<u8>, FormatError> {
    open_object(stored, name, |_| Ok::<_, FormatError>(k.clone()))
}

const T: [u8; TRAILER_LEN] = [7; TRAILER_LEN];

#[test]
fn sizes_follow_from_each_other() {
    for plain in [
        0u64,
        1,
        15,
        16,
        17,
        CHUNK as u64 - 1,
        CHUNK as u64,
        CHUNK as u64 + 1,
        3 * CHUNK as u64,
        3 * CHUNK as u64 + 5,
        16 << 20,
        1 << 40,
    ] {
        let s = stored_size(plain).unwrap();
        assert_eq!(plain_size(s), Ok(plain), "{plain}");
    }
    // Sizes no object has: shorter than header and trailer, a last chunk shorter than its
    // tag, an empty chunk after full ones.
    for s in [
        0u64,
        79,
        80,
        95,
        81,
        80 + SEALED_CHUNK as u64 + 16,
        80 + SEALED_CHUNK as u64 + 3,
    ] {
        assert_eq!(plain_size(s), Err(FormatError::BadSize(s)), "{s}");
    }
    assert_eq!(stored_size(u64::MAX), None);
}

#[test]
fn ranges_map_to_whole_chunks() {
    let c = CHUNK as u64;
    assert_eq!(chunks_for_range(0, 0, 10), None);
    assert_eq!(chunks_for_range(10, 10, 10), None);
    assert_eq!(chunks_for_range(10, 3, 0), None);
    assert_eq!(chunks_for_range(3 * c, 0, 1), Some((0, 0)));
    assert_eq!(chunks_for_range(3 * c, c - 1, 2), Some((0, 1)));
    assert_eq!(chunks_for_range(3 * c, c, c), Some((1, 1)));
    assert_eq!(chunks_for_range(3 * c, 2 * c, u64::MAX), Some((2, 2)));
    assert_eq!(chunks_for_range(3 * c + 1, u64::MAX - 1, 5), None);
    assert_eq!(chunk_plain_len(3 * c + 1, 3), 1);
    assert_eq!(chunk_plain_len(3 * c + 1, 4), 0);
    assert_eq!(chunk_plain_len(0, 0), 0);
}

#[test]
fn header_round_trip_and_refusals() {
    let h = header(3);
    assert_eq!(Header::decode(&h.encode()), Ok(h));
    let mut b = h.encode();
    b[0] = b'{';
    assert_eq!(Header::decode(&b), Err(FormatError::NotEncrypted));
    let mut b = h.encode();
    b[8] = 2;
    assert_eq!(Header::decode(&b), Err(FormatError::UnsupportedVersion(2)));
    let mut b = h.encode();
    b[9] = 9;
    assert_eq!(Header::decode(&b), Err(FormatError::UnsupportedCipher(9)));
    let mut b = h.encode();
    b[12] = 1;
    assert_eq!(Header::decode(&b), Err(FormatError::BadHeader));
    assert_eq!(Header::decode(&b[..47]), Err(FormatError::NotEncrypted));
}

/// Three and a half chunks, sealed under one name.
fn sample() -> (Vec<u8>, Vec<u8>) {
    let plain: Vec<u8> = (0..(3 * CHUNK + CHUNK / 2))
        .map(|i| (i * 7 + i / 300) as u8)
        .collect();
    let stored = seal_object(&key(1), &header(2), b"c/backups/A/base/1/1", &T, &plain);
    (plain, stored)
}

#[test]
fn tampering_is_detected() {
    let (plain, stored) = sample();
    let name = b"c/backups/A/base/1/1";
    assert_eq!(open(&stored, name, &key(1)).unwrap(), plain);
    let auth = |r: Result<Vec<u8>, FormatError>| {
        assert!(
            matches!(
                r,
                Err(FormatError::Authentication { .. } | FormatError::BadSize(_))
            ),
            "{r:?}"
        )
    };
    // A wrong key, another name (copied to another backup), a flipped byte anywhere.
    auth(open(&stored, name, &key(9)));
    auth(open(&stored, b"c/backups/B/base/1/1", &key(1)));
    for at in [
        HEADER_LEN,
        HEADER_LEN + 70_000,
        stored.len() - TRAILER_LEN - 1,
        stored.len() - 1,
    ] {
        let mut s = stored.clone();
        s[at] ^= 0x40;
        auth(open(&s, name, &key(1)));
    }
    // The header's key id or nonce prefix changed (the key lookup still returns the key).
    for at in [20, 40] {
        let mut s = stored.clone();
        s[at] ^= 1;
        auth(open(&s, name, &key(1)));
    }
    // Chunks swapped.
    let mut s = stored.clone();
    let (a, b) = (HEADER_LEN, HEADER_LEN + SEALED_CHUNK);
    let first = s[a..b].to_vec();
    let second = s[b..b + SEALED_CHUNK].to_vec();
    s[a..b].copy_from_slice(&second);
    s[b..b + SEALED_CHUNK].copy_from_slice(&first);
    auth(open(&s, name, &key(1)));
    // Truncated to whole chunks (a valid size): the new last chunk was not sealed as last.
    let mut s = stored[..HEADER_LEN + 2 * SEALED_CHUNK].to_vec();
    s.extend_from_slice(&T);
    auth(open(&s, name, &key(1)));
    // Extended by a chunk of another object under the same key and name.
    let other = seal_object(&key(1), &header(2), name, &T, &plain[..CHUNK]);
    let mut s = stored[..stored.len() - TRAILER_LEN].to_vec();
    s.extend_from_slice(&other[HEADER_LEN..HEADER_LEN + SEALED_CHUNK]);
    s.extend_from_slice(&T);
    auth(open(&s, name, &key(1)));
    // Another trailer.
    let mut s = stored.clone();
    let n = s.len();
    s[n - 5] ^= 1;
    auth(open(&s, name, &key(1)));
}

#[test]
fn identity_tags_bind_name_and_content() {
    let k = key(5);
    let tag = |name: &[u8], parts: &[&[u8]]| {
        let mut h = TagHasher::new(&k, name);
        for p in parts {
            h.update(p);
        }
        h.finish()
    };
    assert_eq!(tag(b"a", &[b"xy", b"z"]), tag(b"a", &[b"xyz"]));
    assert_ne!(tag(b"a", &[b"xyz"]), tag(b"b", &[b"xyz"]));
    assert_ne!(tag(b"a", &[b"xyz"]), tag(b"a", &[b"xyZ"]));
    // The name is length-prefixed: no shifting of bytes between name and content.
    assert_ne!(tag(b"ab", &[b"c"]), tag(b"a", &[b"bc"]));
    let mut h = TagHasher::new(&key(6), b"a");
    h.update(b"xyz");
    assert_ne!(h.finish(), tag(b"a", &[b"xyz"]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip(
        len in prop_oneof![0usize..300, (CHUNK - 2)..(CHUNK + 2), (2 * CHUNK - 1)..(2 * CHUNK + 70)],
        seed in any::<u8>(),
        name in "[a-z0-9/]{1,40}",
    ) {
        let plain: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let stored = seal_object(&key(seed), &header(seed), name.as_bytes(), &T, &plain);
        prop_assert_eq!(stored.len() as u64, stored_size(len as u64).unwrap());
        prop_assert_eq!(plain_size(stored.len() as u64).unwrap(), len as u64);
        prop_assert_eq!(trailer_of(&stored).unwrap(), T);
        prop_assert_eq!(open(&stored, name.as_bytes(), &key(seed)).unwrap(), plain.clone());
        // Every chunk opens on its own (what a ranged read does).
        let c = ObjectCipher::new(&key(seed), &header(seed), name.as_bytes());
        let n = chunk_count(len as u64);
        for i in 0..n {
            let at = chunk_offset(i).unwrap() as usize;
            let l = chunk_plain_len(len as u64, i) + TAG_LEN;
            let mut out = Vec::new();
            c.open(i, (i + 1 == n).then_some(&T), &stored[at..at + l], &mut out).unwrap();
            let start = i as usize * CHUNK;
            prop_assert_eq!(&out[..], &plain[start..start + out.len()]);
        }
    }

    #[test]
    fn never_panics_on_stored_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), valid_header in any::<bool>()) {
        let mut bytes = bytes;
        if valid_header && bytes.len() >= HEADER_LEN {
            bytes[..HEADER_LEN].copy_from_slice(&header(1).encode());
        }
        let _ = plain_size(bytes.len() as u64);
        let _ = Header::decode(&bytes);
        prop_assert!(open(&bytes, b"x", &key(1)).is_err());
        let c = ObjectCipher::new(&key(1), &header(1), b"x");
        let mut out = Vec::new();
        prop_assert!(c.open(0, None, &bytes, &mut out).is_err());
        prop_assert!(out.is_empty());
    }

    #[test]
    fn size_functions_never_panic(s in any::<u64>(), o in any::<u64>(), l in any::<u64>()) {
        if let Ok(p) = plain_size(s) {
            prop_assert_eq!(stored_size(p), Some(s));
        }
        let _ = chunks_for_range(s, o, l);
        let _ = chunk_plain_len(s, o);
        let _ = chunk_offset(o);
        let _ = stored_size(s);
    }
}
