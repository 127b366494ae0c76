//! File checksums as `backup_manifest` records them (`pg_checksum_final` in
//! `src/common/checksum_helper.c`, hex-encoded by `backup_manifest.c`): CRC-32C stored as the
//! little-endian bytes of the native u32, SHA-2 as digest bytes; both written as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The per-file checksum algorithm of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    None,
    #[default]
    Crc32c,
    Sha256,
}

impl ChecksumAlgorithm {
    /// The manifest's `Checksum-Algorithm` value (`None` for no checksum: the key is omitted).
    pub fn manifest_name(self) -> Option<&'static str> {
        match self {
            ChecksumAlgorithm::None => None,
            ChecksumAlgorithm::Crc32c => Some("CRC32C"),
            ChecksumAlgorithm::Sha256 => Some("SHA256"),
        }
    }

    /// From a manifest's `Checksum-Algorithm` (case-insensitive, as the server's parser).
    pub fn from_manifest_name(s: &str) -> Option<ChecksumAlgorithm> {
        match s.to_ascii_uppercase().as_str() {
            "NONE" => Some(ChecksumAlgorithm::None),
            "CRC32C" => Some(ChecksumAlgorithm::Crc32c),
            "SHA256" => Some(ChecksumAlgorithm::Sha256),
            _ => None,
        }
    }

    pub fn hasher(self) -> Checksummer {
        match self {
            ChecksumAlgorithm::None => Checksummer::None,
            ChecksumAlgorithm::Crc32c => Checksummer::Crc32c(0),
            ChecksumAlgorithm::Sha256 => Checksummer::Sha256(Box::default()),
        }
    }

    /// Checksum of a whole buffer, as manifest hex.
    pub fn of(self, bytes: &[u8]) -> Option<String> {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish_hex()
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumAlgorithm::None => "none",
            ChecksumAlgorithm::Crc32c => "crc32c",
            ChecksumAlgorithm::Sha256 => "sha256",
        })
    }
}

impl FromStr for ChecksumAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(ChecksumAlgorithm::None),
            "crc32c" => Ok(ChecksumAlgorithm::Crc32c),
            "sha256" => Ok(ChecksumAlgorithm::Sha256),
            _ => Err(format!(
                "unknown checksum algorithm {s:?}: use crc32c, sha256 or none"
            )),
        }
    }
}

/// A running checksum, fed as a file is read.
#[derive(Clone)]
pub enum Checksummer {
    None,
    Crc32c(u32),
    Sha256(Box<sha2::Sha256>),
}

impl Checksummer {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Checksummer::None => {}
            Checksummer::Crc32c(c) => *c = crc32c::crc32c_append(*c, bytes),
            Checksummer::Sha256(h) => h.update(bytes),
        }
    }

    /// Lowercase hex of the digest as the manifest stores it; `None` for no checksum.
    pub fn finish_hex(self) -> Option<String> {
        match self {
            Checksummer::None => None,
            Checksummer::Crc32c(c) => Some(hex::encode(c.to_le_bytes())),
            Checksummer::Sha256(h) => Some(hex::encode(h.finalize())),
        }
    }
}

impl fmt::Debug for Checksummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksummer::None => f.write_str("None"),
            Checksummer::Crc32c(c) => write!(f, "Crc32c({c:08x})"),
            Checksummer::Sha256(_) => f.write_str("Sha256(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_server() {
        // PG_VERSION "15\n" has CRC 0x2247748A, written "8a744722" (`pg_checksum_final` copies
        // the CRC's native bytes).
        assert_eq!(ChecksumAlgorithm::Crc32c.of(b"15\n").unwrap(), "8a744722");
        assert_eq!(ChecksumAlgorithm::Crc32c.of(b"").unwrap(), "00000000");
        assert_eq!(
            ChecksumAlgorithm::Crc32c.of(b"123456789").unwrap(),
            "839206e3"
        );
        assert_eq!(ChecksumAlgorithm::None.of(b"x"), None);
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Sha256] {
            let mut h = alg.hasher();
            for chunk in data.chunks(777) {
                h.update(chunk);
            }
            assert_eq!(h.finish_hex(), alg.of(&data));
        }
        assert_eq!(
            ChecksumAlgorithm::Sha256.of(b"").unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn names_parse() {
        assert_eq!(
            "CRC32C".parse::<ChecksumAlgorithm>(),
            Ok(ChecksumAlgorithm::Crc32c)
        );
        assert_eq!(
            ChecksumAlgorithm::from_manifest_name("sha256"),
            Some(ChecksumAlgorithm::Sha256)
        );
        assert!("md5".parse::<ChecksumAlgorithm>().is_err());
    }
}
