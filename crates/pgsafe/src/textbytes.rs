//! Bytes that are text to PostgreSQL but need not be UTF-8 — label files, tablespace paths —
//! kept byte for byte in pgsafe's JSON: a string when valid UTF-8 (the usual case, and what
//! older files hold), else `{"hex": "…"}`. [`TextBytes`] for byte buffers, [`path_text`] for
//! `PathBuf` fields.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that are text in the server's encoding — `backup_label`, `tablespace_map` — kept byte
/// for byte (a tablespace path is file-system bytes and need not be UTF-8). In JSON they are a
/// string when valid UTF-8 (the usual case, and what older records hold), else `{"hex": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextBytes(Vec<u8>);

impl TextBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The text, when it is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl From<Vec<u8>> for TextBytes {
    fn from(b: Vec<u8>) -> Self {
        TextBytes(b)
    }
}

impl From<&[u8]> for TextBytes {
    fn from(b: &[u8]) -> Self {
        TextBytes(b.to_vec())
    }
}

/// `#[serde(with = "crate::textbytes::path_text")]` for a `PathBuf` that may not be UTF-8 (a
/// tablespace location is file-system bytes).
pub mod path_text {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TextBytes;

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        TextBytes::from(p.as_os_str().as_bytes()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let b = TextBytes::deserialize(d)?;
        Ok(PathBuf::from(OsString::from_vec(b.into_bytes())))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for TextBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_text() {
            Some(t) => Repr::Text(t.to_owned()),
            None => Repr::Hex {
                hex: hex::encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TextBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(TextBytes(t.into_bytes())),
            Repr::Hex { hex } => hex::decode(hex)
                .map(TextBytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utf8_is_a_plain_string_and_other_bytes_are_hex() {
        let t = TextBytes::from(b"16384 /srv/ts\n".to_vec());
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"16384 /srv/ts\\n\"");
        let b = TextBytes::from(b"16384 /srv/caf\xe9\n".to_vec());
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, r#"{"hex":"3136333834202f7372762f636166e90a"}"#);
        assert_eq!(serde_json::from_str::<TextBytes>(&j).unwrap(), b);
    }

    #[test]
    fn paths_round_trip_byte_for_byte() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        use std::path::PathBuf;
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "path_text")]
            p: PathBuf,
        }
        for raw in [&b"/srv/ts1"[..], b"/srv/caf\xe9"] {
            let t = T {
                p: PathBuf::from(OsStr::from_bytes(raw)),
            };
            let j = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<T>(&j).unwrap(), t, "{j}");
        }
        // What older pgsafe.json files hold: a plain string.
        let t: T = serde_json::from_str(r#"{"p":"/srv/old"}"#).unwrap();
        assert_eq!(t.p, PathBuf::from("/srv/old"));
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let t = TextBytes::from(bytes.clone());
            let back: TextBytes = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            prop_assert_eq!(back.as_bytes(), &bytes[..]);
        }
    }
}
