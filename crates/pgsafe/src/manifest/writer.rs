//! The streaming `backup_manifest` writer: the exact bytes `src/backend/backup/backup_manifest.c`
//! produces, with the running SHA-256 of the Manifest-Checksum.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::{
    CHECKSUM_KEY, ManifestError, ManifestFile, ManifestVersion, VERSION_KEY, check_checksum,
    check_path, format_last_modified,
};
use crate::checksum::ChecksumAlgorithm;
use crate::types::SystemId;
use crate::wal::WalRange;

/// Streaming manifest writer: each [`add_file`](ManifestWriter::add_file) appends one line and
/// feeds the running SHA-256, so memory holds only the output bytes (which a caller may drain
/// with [`take_output`](ManifestWriter::take_output) and write as it goes).
///
/// A path added twice is an error ([`ManifestError::DuplicateEntry`]), never a second entry:
/// pg_verifybackup and pgsafe's own reader reject such a manifest, so a backup written with one
/// could never be verified or restored.
#[derive(Debug, Clone)]
pub struct ManifestWriter {
    out: Vec<u8>,
    hasher: Sha256,
    files: u64,
    line: Vec<u8>,
    /// Every path added so far.
    seen: HashSet<Vec<u8>>,
}

impl ManifestWriter {
    /// Starts a manifest. `system_id` is required for V2 and not written for V1 (version 1 has
    /// no such field).
    pub fn new(
        version: ManifestVersion,
        system_id: Option<SystemId>,
    ) -> Result<ManifestWriter, ManifestError> {
        let header = match (version, system_id) {
            (ManifestVersion::V1, _) => format!("{{ \"{VERSION_KEY}\": 1,\n\"Files\": ["),
            (ManifestVersion::V2, Some(id)) => {
                format!("{{ \"{VERSION_KEY}\": 2,\n\"System-Identifier\": {id},\n\"Files\": [")
            }
            (ManifestVersion::V2, None) => return Err(ManifestError::MissingSystemId),
        };
        let mut w = ManifestWriter {
            out: Vec::with_capacity(64 * 1024),
            hasher: Sha256::new(),
            files: 0,
            line: Vec::with_capacity(256),
            seen: HashSet::new(),
        };
        w.append(header.as_bytes());
        Ok(w)
    }

    /// Adds one file: `path` relative to the backup root, `/`-separated raw bytes; `checksum` the
    /// algorithm and hex digest (as [`crate::checksum::Checksummer::finish_hex`] gives it; upper
    /// case is lowered). Rejects empty, absolute or `..` paths, NUL bytes, and checksums of the
    /// wrong length or with algorithm `None`.
    pub fn add_file(
        &mut self,
        path: &[u8],
        size: u64,
        mtime_unix: i64,
        checksum: Option<(ChecksumAlgorithm, String)>,
    ) -> Result<(), ManifestError> {
        let last_modified = format_last_modified(mtime_unix);
        let checksum = checksum.as_ref().map(|(a, h)| (*a, h.as_str()));
        self.add_entry(path, size, Some(&last_modified), checksum)
    }

    /// Adds a parsed entry again, keeping its `Last-Modified` text (omitted when `None`).
    pub fn add(&mut self, file: &ManifestFile) -> Result<(), ManifestError> {
        let checksum = file.checksum.as_ref().map(|(a, h)| (*a, h.as_str()));
        self.add_entry(
            &file.path,
            file.size,
            file.last_modified.as_deref(),
            checksum,
        )
    }

    fn add_entry(
        &mut self,
        path: &[u8],
        size: u64,
        last_modified: Option<&str>,
        checksum: Option<(ChecksumAlgorithm, &str)>,
    ) -> Result<(), ManifestError> {
        let bad = |msg: String| ManifestError::BadEntry {
            path: String::from_utf8_lossy(path).into_owned(),
            msg,
        };
        check_path(path).map_err(|m| bad(m.to_owned()))?;
        if last_modified.is_some_and(|s| s.contains('\0')) {
            return Err(bad("Last-Modified contains a NUL character".to_owned()));
        }
        let checksum = match checksum {
            None => None,
            Some((alg, hex)) => Some(check_checksum(alg, hex).map_err(bad)?),
        };
        if !self.seen.insert(path.to_vec()) {
            return Err(ManifestError::DuplicateEntry {
                path: String::from_utf8_lossy(path).into_owned(),
            });
        }
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.extend_from_slice(if self.files == 0 { b"\n" } else { b",\n" });
        if std::str::from_utf8(path).is_ok() {
            line.extend_from_slice(b"{ \"Path\": ");
            escape_json(&mut line, path);
        } else {
            line.extend_from_slice(b"{ \"Encoded-Path\": \"");
            line.extend_from_slice(hex::encode(path).as_bytes());
            line.push(b'"');
        }
        line.extend_from_slice(format!(", \"Size\": {size}").as_bytes());
        if let Some(lm) = last_modified {
            line.extend_from_slice(b", \"Last-Modified\": ");
            escape_json(&mut line, lm.as_bytes());
        }
        if let Some((name, hex)) = checksum {
            let s = format!(", \"Checksum-Algorithm\": \"{name}\", \"Checksum\": \"{hex}\"");
            line.extend_from_slice(s.as_bytes());
        }
        line.extend_from_slice(b" }");
        self.append(&line);
        self.line = line;
        self.files += 1;
        Ok(())
    }

    /// How many files were added.
    pub fn files_added(&self) -> u64 {
        self.files
    }

    /// Drains the bytes produced so far (the checksum still covers them): for writing a large
    /// manifest out as it grows. [`finish`](ManifestWriter::finish) then returns only the rest.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Ends the file list, writes the WAL ranges (in the given order; the server puts the newest
    /// timeline first, see [`crate::wal::backup_wal_ranges`]) and the Manifest-Checksum line, and
    /// returns the (remaining) bytes. Ranges must have valid timelines (1 and up) to be readable.
    pub fn finish(mut self, wal_ranges: &[WalRange]) -> Vec<u8> {
        self.append(b"\n],\n\"WAL-Ranges\": [\n");
        for (i, r) in wal_ranges.iter().enumerate() {
            let s = format!(
                "{}{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}",
                if i == 0 { "" } else { ",\n" },
                r.tli.0,
                r.start_lsn,
                r.end_lsn
            );
            self.append(s.as_bytes());
        }
        self.append(b"\n],\n");
        let digest = hex::encode(self.hasher.finalize());
        self.out
            .extend_from_slice(format!("\"{CHECKSUM_KEY}\": \"{digest}\"}}\n").as_bytes());
        self.out
    }

    fn append(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.out.extend_from_slice(bytes);
    }
}

/// PostgreSQL's `escape_json` over raw bytes.
fn escape_json(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &c in s {
        match c {
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            c if c < 0x20 => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}
