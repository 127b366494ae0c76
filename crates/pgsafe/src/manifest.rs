//! `backup_manifest`: a streaming writer that produces exactly the bytes a PostgreSQL server
//! produces, and a strict reader. Pure: no file-system IO.
//!
//! Facts (PostgreSQL `src/backend/backup/backup_manifest.c`, `src/common/parse_manifest.c`,
//! `src/bin/pg_verifybackup`):
//!
//! * Layout: `{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [`, then per file `\n` (first)
//!   or `,\n` (others) and one object on one line: `{ "Path": …, "Size": N, "Last-Modified":
//!   "YYYY-MM-DD HH:MM:SS GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "<hex>" }`; then
//!   `\n],\n"WAL-Ranges": [\n`, the ranges `{ "Timeline": T, "Start-LSN": "%X/%X", "End-LSN":
//!   "%X/%X" }` separated by `,\n`, then `\n],\n` and the last line
//!   `"Manifest-Checksum": "<sha256 hex>"}\n`. Version 2 (17–18) adds
//!   `"System-Identifier": N,\n` after the version line.
//! * Manifest-Checksum: SHA-256 of every byte before the last line, i.e. up to and including the
//!   penultimate `\n` (the writer hashes everything it appends before `"Manifest-Checksum"`; the
//!   verifier hashes up to the second-to-last newline and requires the file to end with `\n`).
//! * Paths: JSON-escaped as `escape_json` does (`\b \f \n \r \t \" \\`, other bytes below 0x20 as
//!   `\u00xx` in lowercase hex, everything else verbatim); a path that is not valid UTF-8 is
//!   written as `Encoded-Path`, the lowercase hex of its bytes.
//! * Per-file checksums: CRC32C as the little-endian bytes of the CRC, SHA-2 as the digest, both in
//!   lowercase hex (see [`crate::checksum`]). The manifest itself is not listed, nor is WAL.
//!
//! The reader is at least as strict as pg_verifybackup's parser: the version key first, only
//! known keys, `Path` xor `Encoded-Path`, `Checksum` only with `Checksum-Algorithm`, WAL ranges
//! with all three keys, no duplicate paths, and the Manifest-Checksum verified over the exact
//! bytes. It is stricter where the server's output never varies: values must have their JSON
//! type (numbers for `Size`, `Timeline` and `System-Identifier`), keys may not repeat, `Files`
//! and `WAL-Ranges` must be present, a version 1 manifest may not carry `System-Identifier` and a
//! version 2 one must, the checksum must be alone on the last line, file checksums must have
//! their algorithm's length (the verifier would report those per file), and paths must be
//! relative and free of empty, `.` and `..` components (pgsafe opens them inside a backup).
//! Whitespace between tokens is free, as in PostgreSQL's JSON parser.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};

use crate::checksum::ChecksumAlgorithm;
use crate::types::{PgVersion, SystemId};
use crate::wal::WalRange;

mod lexer;
mod reader;
mod writer;

use reader::{Parser, verify_checksum};
pub use writer::ManifestWriter;

const VERSION_KEY: &str = "PostgreSQL-Backup-Manifest-Version";
const CHECKSUM_KEY: &str = "Manifest-Checksum";

/// Which manifest format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestVersion {
    /// Version 1, written by PostgreSQL 13–16: no system identifier.
    V1,
    /// Version 2, written by PostgreSQL 17–18: adds `System-Identifier`, which pg_verifybackup
    /// 17+ compares with `global/pg_control`. Parsers of 13–16 reject it.
    V2,
}

impl ManifestVersion {
    /// The version the server of `version` would write: V1 for 13–16, V2 for 17–18. PostgreSQL
    /// 10–12 have no backup manifest; pgsafe writes its own V1 manifest for them (same shape,
    /// readable by pg_verifybackup 13–16 with `-n`, since no pg_waldump of 13+ reads older WAL).
    pub fn for_server(version: PgVersion) -> ManifestVersion {
        if version.at_least(17) {
            ManifestVersion::V2
        } else {
            ManifestVersion::V1
        }
    }

    /// The `PostgreSQL-Backup-Manifest-Version` number.
    pub fn number(self) -> u32 {
        match self {
            ManifestVersion::V1 => 1,
            ManifestVersion::V2 => 2,
        }
    }
}

/// Why a manifest cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("backup_manifest: checksum mismatch: the manifest is damaged or was edited")]
    ChecksumMismatch,
    #[error("backup_manifest: {0} (the file is truncated or is not a backup manifest)")]
    Framing(&'static str),
    #[error("backup_manifest line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("backup_manifest line {line}: duplicate path {path:?}")]
    DuplicatePath { line: usize, path: String },
    #[error(
        "backup_manifest line {line}: file {path:?} uses checksum algorithm {name}, which \
         PostgreSQL knows but pgsafe cannot verify (only CRC32C and SHA256)"
    )]
    UnsupportedAlgorithm {
        line: usize,
        path: String,
        name: String,
    },
    #[error("a version 2 backup manifest needs the database system identifier")]
    MissingSystemId,
    #[error("cannot add {path:?} to the backup manifest: {msg}")]
    BadEntry { path: String, msg: String },
    #[error(
        "cannot add {path:?} to the backup manifest a second time: a manifest lists each path \
         once (PostgreSQL's pg_verifybackup rejects duplicates), so two files of the backup \
         claim the same path"
    )]
    DuplicateEntry { path: String },
}

/// One `Files` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestFile {
    /// Raw path bytes, relative to the backup root, `/`-separated (decoded from `Path` or
    /// `Encoded-Path`).
    pub path: Vec<u8>,
    pub size: u64,
    /// `Last-Modified` as written (`YYYY-MM-DD HH:MM:SS GMT` from servers; pg_verifybackup
    /// ignores it). `None` if the key is absent.
    pub last_modified: Option<String>,
    /// Algorithm and lowercase hex digest; `None` without checksum (or with algorithm `NONE`).
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

impl ManifestFile {
    /// The path for messages (invalid UTF-8 replaced).
    pub fn path_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// `Last-Modified` as Unix seconds, if it has the server's format.
    pub fn last_modified_unix(&self) -> Option<i64> {
        let s = self.last_modified.as_deref()?;
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S GMT")
            .ok()
            .map(|t| t.and_utc().timestamp())
    }
}

/// A parsed (and checksum-verified) backup manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: ManifestVersion,
    /// `System-Identifier`: always present in V2, never in V1.
    pub system_id: Option<SystemId>,
    /// In manifest order.
    pub files: Vec<ManifestFile>,
    /// In manifest order (the server lists the newest timeline first).
    pub wal_ranges: Vec<WalRange>,
}

impl Manifest {
    /// Reads and verifies a whole `backup_manifest` (see the module documentation for the rules).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        verify_checksum(bytes)?;
        Parser::new(bytes).manifest()
    }

    /// Writes this manifest again; for a manifest a server wrote (without
    /// `--manifest-force-encode`), the result is byte-identical to the original.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        let mut w = ManifestWriter::new(self.version, self.system_id)?;
        for f in &self.files {
            w.add(f)?;
        }
        Ok(w.finish(&self.wal_ranges))
    }
}

/// `Last-Modified` text for a modification time, as the server's
/// `pg_strftime("%Y-%m-%d %H:%M:%S %Z", pg_gmtime(&mtime))` prints it: years below 1000 are
/// zero-padded to four digits, negative years print as `-` and at least three digits. Times
/// beyond chrono's range (about ±262,000 years) are clamped to it.
pub fn format_last_modified(mtime_unix: i64) -> String {
    let t = DateTime::from_timestamp(mtime_unix, 0).unwrap_or(if mtime_unix < 0 {
        DateTime::<chrono::Utc>::MIN_UTC
    } else {
        DateTime::<chrono::Utc>::MAX_UTC
    });
    let y = t.year();
    let year = if y < 0 {
        format!("-{:03}", y.unsigned_abs())
    } else {
        format!("{y:04}")
    };
    format!(
        "{year}-{:02}-{:02} {:02}:{:02}:{:02} GMT",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Paths pgsafe accepts: relative, non-empty components, no `.`/`..`, no NUL (a C path cannot
/// hold one; the server's JSON parser rejects `\u0000`).
fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        Err("the path is empty")
    } else if path.contains(&0) {
        Err("the path contains a NUL byte")
    } else if path[0] == b'/' {
        Err("the path is absolute")
    } else if path
        .split(|&b| b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        Err("the path has an empty, \".\" or \"..\" component")
    } else {
        Ok(())
    }
}

/// Checks a file checksum's hex against its algorithm; returns the manifest name and lowercase hex.
fn check_checksum(alg: ChecksumAlgorithm, hex: &str) -> Result<(&'static str, String), String> {
    let Some(name) = alg.manifest_name() else {
        return Err(format!("checksum {hex:?} given with algorithm none"));
    };
    let want = match alg {
        ChecksumAlgorithm::Crc32c => 8,
        _ => 64,
    };
    if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "checksum {hex:?} is not {want} hex digits as {name} needs"
        ));
    }
    Ok((name, hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests;
