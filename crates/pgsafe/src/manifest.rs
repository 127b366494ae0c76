//! `backup_manifest`: a streaming writer that produces exactly the bytes a PostgreSQL server
//! produces, and a strict reader (reference §3). Pure: no file-system IO.
//!
//! Facts (PostgreSQL `src/backend/backup/backup_manifest.c`, `src/common/parse_manifest.c`,
//! `src/bin/pg_verifybackup`; reference §3.1–3.5):
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
use std::collections::HashSet;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use sha2::{Digest, Sha256};

use crate::checksum::ChecksumAlgorithm;
use crate::types::{Lsn, PgVersion, SystemId, TimelineId};
use crate::wal::WalRange;

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

/// The framing and Manifest-Checksum check (parse_manifest.c `verify_manifest_checksum`): the
/// file ends with `\n`, has at least two lines, and the last line is exactly the checksum member
/// and the closing `}`, whose value is the SHA-256 of everything before that line.
fn verify_checksum(bytes: &[u8]) -> Result<(), ManifestError> {
    if bytes.last() != Some(&b'\n') {
        return Err(ManifestError::Framing(
            "the last line is not newline-terminated",
        ));
    }
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    if newlines < 2 {
        return Err(ManifestError::Framing("expected at least 2 lines"));
    }
    let body_len = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let mut lex = Lexer {
        b: &bytes[body_len..],
        pos: 0,
        line: newlines,
    };
    let bad_line = || ManifestError::Syntax {
        line: newlines,
        msg: format!("the last line must hold only \"{CHECKSUM_KEY}\": \"<SHA-256 hex>\"}}"),
    };
    let mut toks = Vec::with_capacity(5);
    for _ in 0..5 {
        toks.push(lex.next().map_err(|_| bad_line())?.tok);
    }
    let expected = match toks.as_slice() {
        [Tok::Str(k), Tok::Colon, Tok::Str(v), Tok::RBrace, Tok::Eof] if k == CHECKSUM_KEY => {
            match hex::decode(v) {
                Ok(d) if d.len() == 32 => d,
                _ => {
                    return Err(ManifestError::Syntax {
                        line: newlines,
                        msg: format!("invalid manifest checksum {v:?}: expected 64 hex digits"),
                    });
                }
            }
        }
        _ => return Err(bad_line()),
    };
    if Sha256::digest(&bytes[..body_len]).as_slice() != expected.as_slice() {
        return Err(ManifestError::ChecksumMismatch);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Colon,
    Comma,
    Str(String),
    Num(&'a str),
    Eof,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Colon => "':'".into(),
            Tok::Comma => "','".into(),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

struct Token<'a> {
    tok: Tok<'a>,
    line: usize,
}

/// A JSON lexer with PostgreSQL's rules: whitespace is space, tab, CR, LF; strings must be
/// valid UTF-8 with control characters escaped; `\u0000` and unpaired surrogates are refused.
struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, msg: impl Into<String>) -> ManifestError {
        ManifestError::Syntax {
            line: self.line,
            msg: msg.into(),
        }
    }

    fn next(&mut self) -> Result<Token<'a>, ManifestError> {
        while let Some(&c) = self.b.get(self.pos) {
            match c {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let line = self.line;
        let Some(&c) = self.b.get(self.pos) else {
            return Ok(Token {
                tok: Tok::Eof,
                line,
            });
        };
        let single = match c {
            b'{' => Some(Tok::LBrace),
            b'}' => Some(Tok::RBrace),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b':' => Some(Tok::Colon),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        let tok = if let Some(t) = single {
            self.pos += 1;
            t
        } else if c == b'"' {
            Tok::Str(self.string()?)
        } else if c == b'-' || c.is_ascii_digit() {
            Tok::Num(self.number())
        } else if c.is_ascii_graphic() {
            return Err(self.err(format!(
                "invalid JSON: unexpected character '{}'",
                c as char
            )));
        } else {
            return Err(self.err(format!("invalid JSON: unexpected byte 0x{c:02x}")));
        };
        Ok(Token { tok, line })
    }

    fn string(&mut self) -> Result<String, ManifestError> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            let start = self.pos;
            while let Some(&c) = self.b.get(self.pos) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            let run = std::str::from_utf8(&self.b[start..self.pos])
                .map_err(|_| self.err("string is not valid UTF-8"))?;
            s.push_str(run);
            match self.b.get(self.pos) {
                None => return Err(self.err("invalid JSON: unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    s.push(self.escape()?);
                }
                Some(_) => {
                    return Err(self.err("invalid JSON: control character in a string"));
                }
            }
        }
    }

    fn escape(&mut self) -> Result<char, ManifestError> {
        let c = self.b.get(self.pos).copied();
        self.pos += 1;
        Ok(match c {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hi = self.hex4()?;
                let code = match hi {
                    0 => return Err(self.err("\\u0000 is not allowed in a manifest string")),
                    0xD800..=0xDBFF => {
                        if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.err("invalid JSON: unpaired high surrogate"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.err("invalid JSON: unpaired high surrogate"));
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.err("invalid JSON: unpaired low surrogate"));
                    }
                    c => c,
                };
                char::from_u32(code).ok_or_else(|| self.err("invalid JSON: bad \\u escape"))?
            }
            _ => return Err(self.err("invalid JSON: bad escape sequence in a string")),
        })
    }

    fn hex4(&mut self) -> Result<u32, ManifestError> {
        let digits = self
            .b
            .get(self.pos..self.pos + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| self.err("invalid JSON: \\u needs four hex digits"))?;
        self.pos += 4;
        Ok(digits.iter().fold(0, |acc, &d| {
            acc * 16 + (d as char).to_digit(16).unwrap_or(0)
        }))
    }

    /// A number-like run (`[-+.eE0-9]+`). The manifest holds only non-negative integers, so
    /// [`Parser::uint_value`] checks the exact form and every other number is refused anyway.
    fn number(&mut self) -> &'a str {
        let start = self.pos;
        while matches!(
            self.b.get(self.pos),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.pos += 1;
        }
        // only ASCII was consumed
        std::str::from_utf8(&self.b[start..self.pos]).unwrap_or_default()
    }
}

/// The manifest grammar over the lexer (no generic JSON tree, no recursion).
struct Parser<'a> {
    lex: Lexer<'a>,
}

#[derive(Default)]
struct FileFields {
    path: Option<String>,
    encoded: Option<String>,
    size: Option<u64>,
    last_modified: Option<String>,
    algorithm: Option<String>,
    checksum: Option<String>,
}

type Member<'p, 'a> =
    &'p mut dyn FnMut(&mut Parser<'a>, String, usize) -> Result<(), ManifestError>;

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let lex = Lexer {
            b: bytes,
            pos: 0,
            line: 1,
        };
        Parser { lex }
    }

    fn next(&mut self) -> Result<Token<'a>, ManifestError> {
        self.lex.next()
    }

    fn err(line: usize, msg: impl Into<String>) -> ManifestError {
        let msg = msg.into();
        ManifestError::Syntax { line, msg }
    }

    fn expect(&mut self, want: Tok<'static>) -> Result<Token<'a>, ManifestError> {
        let t = self.next()?;
        if t.tok != want {
            let msg = format!("expected {}, found {}", want.describe(), t.tok.describe());
            return Err(Self::err(t.line, msg));
        }
        Ok(t)
    }

    fn string_value(&mut self, key: &str) -> Result<String, ManifestError> {
        let t = self.next()?;
        match t.tok {
            Tok::Str(s) => Ok(s),
            other => {
                let msg = format!("{key} must be a string, found {}", other.describe());
                Err(Self::err(t.line, msg))
            }
        }
    }

    fn uint_value(&mut self, key: &str) -> Result<u64, ManifestError> {
        let t = self.next()?;
        match t.tok {
            // digits without a leading zero (JSON's integer form)
            Tok::Num(n)
                if n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0')) =>
            {
                n.parse()
                    .map_err(|_| Self::err(t.line, format!("{key} {n} is too large for 64 bits")))
            }
            other => {
                let msg = format!(
                    "{key} must be a non-negative integer, found {}",
                    other.describe()
                );
                Err(Self::err(t.line, msg))
            }
        }
    }

    fn lsn_value(&mut self, key: &str, line: usize) -> Result<Lsn, ManifestError> {
        let s = self.string_value(key)?;
        s.parse()
            .map_err(|_| Self::err(line, format!("{key} {s:?} is not an LSN like 0/16B3748")))
    }

    /// After an array element or object member: `,` (true) or the closing token (false).
    fn more(&mut self, close: Tok<'static>) -> Result<bool, ManifestError> {
        let t = self.next()?;
        match t.tok {
            Tok::Comma => Ok(true),
            ref c if *c == close => Ok(false),
            other => {
                let (c, o) = (close.describe(), other.describe());
                Err(Self::err(t.line, format!("expected ',' or {c}, found {o}")))
            }
        }
    }

    /// The members of an object whose `{` was read: `member(parser, key, line)` reads the value.
    fn members(&mut self, member: Member<'_, 'a>) -> Result<(), ManifestError> {
        let mut t = self.next()?;
        if t.tok == Tok::RBrace {
            return Ok(());
        }
        loop {
            let Tok::Str(key) = t.tok else {
                let msg = format!("expected a key string, found {}", t.tok.describe());
                return Err(Self::err(t.line, msg));
            };
            self.expect(Tok::Colon)?;
            member(self, key, t.line)?;
            if !self.more(Tok::RBrace)? {
                return Ok(());
            }
            t = self.next()?;
        }
    }

    /// `[ {…}, … ]`: `each(parser, line)` reads each object after its `{`.
    fn object_array(
        &mut self,
        what: &str,
        each: &mut dyn FnMut(&mut Self, usize) -> Result<(), ManifestError>,
    ) -> Result<(), ManifestError> {
        self.expect(Tok::LBracket)?;
        let mut t = self.next()?;
        if t.tok == Tok::RBracket {
            return Ok(());
        }
        loop {
            if t.tok != Tok::LBrace {
                let msg = format!("expected a {what} object '{{', found {}", t.tok.describe());
                return Err(Self::err(t.line, msg));
            }
            each(self, t.line)?;
            if !self.more(Tok::RBracket)? {
                return Ok(());
            }
            t = self.next()?;
        }
    }

    fn manifest(mut self) -> Result<Manifest, ManifestError> {
        use ManifestVersion::{V1, V2};
        self.expect(Tok::LBrace)?;
        let (mut version, mut system_id, mut files, mut wal_ranges) = (None, None, None, None);
        let mut checksum_seen = false;
        self.members(&mut |p, key, line| {
            let err = |msg: String| -> Result<(), ManifestError> { Err(Self::err(line, msg)) };
            if checksum_seen {
                return err(format!(
                    "{key:?} follows {CHECKSUM_KEY:?}, which must be last"
                ));
            }
            let Some(version) = version else {
                if key != VERSION_KEY {
                    return err(format!("the first key must be {VERSION_KEY:?}"));
                }
                version = Some(match p.uint_value(VERSION_KEY)? {
                    1 => V1,
                    2 => V2,
                    v => return err(format!("unsupported manifest version {v}")),
                });
                return Ok(());
            };
            let dup = match key.as_str() {
                "System-Identifier" if version == V1 => {
                    return err("System-Identifier is not allowed in a version 1 manifest".into());
                }
                "System-Identifier" => system_id.replace(SystemId(p.uint_value(&key)?)).is_some(),
                "Files" => files.replace(p.files()?).is_some(),
                "WAL-Ranges" => wal_ranges.replace(p.wal_ranges()?).is_some(),
                CHECKSUM_KEY => {
                    // its value and the framing were checked by verify_checksum
                    p.string_value(CHECKSUM_KEY)?;
                    checksum_seen = true;
                    false
                }
                VERSION_KEY => true,
                _ => return err(format!("unknown top-level key {key:?}")),
            };
            if dup {
                return err(format!("duplicate top-level key {key:?}"));
            }
            Ok(())
        })?;
        let end = self.lex.line;
        self.expect(Tok::Eof)?;
        let missing = |what: &str| Err(Self::err(end, format!("{what} is missing")));
        let Some(version) = version else {
            return missing(VERSION_KEY);
        };
        if !checksum_seen {
            return missing(CHECKSUM_KEY);
        }
        if version == V2 && system_id.is_none() {
            return missing("System-Identifier (required in a version 2 manifest)");
        }
        let Some((files, lines)) = files else {
            return missing("the \"Files\" list");
        };
        let Some(wal_ranges) = wal_ranges else {
            return missing("the \"WAL-Ranges\" list");
        };
        check_duplicates(&files, &lines)?;
        Ok(Manifest {
            version,
            system_id,
            files,
            wal_ranges,
        })
    }

    /// The `Files` list: the entries and the line of each.
    fn files(&mut self) -> Result<(Vec<ManifestFile>, Vec<usize>), ManifestError> {
        let (mut files, mut lines) = (Vec::new(), Vec::new());
        self.object_array("file", &mut |p, line| {
            let mut f = FileFields::default();
            p.members(&mut |p, key, kline| {
                let dup = match key.as_str() {
                    "Size" => f.size.replace(p.uint_value(&key)?).is_some(),
                    "Path" => f.path.replace(p.string_value(&key)?).is_some(),
                    "Encoded-Path" => f.encoded.replace(p.string_value(&key)?).is_some(),
                    "Last-Modified" => f.last_modified.replace(p.string_value(&key)?).is_some(),
                    "Checksum-Algorithm" => f.algorithm.replace(p.string_value(&key)?).is_some(),
                    "Checksum" => f.checksum.replace(p.string_value(&key)?).is_some(),
                    _ => return Err(Self::err(kline, format!("unknown file key {key:?}"))),
                };
                if dup {
                    return Err(Self::err(kline, format!("duplicate file key {key:?}")));
                }
                Ok(())
            })?;
            files.push(finish_file(f, line)?);
            lines.push(line);
            Ok(())
        })?;
        Ok((files, lines))
    }

    fn wal_ranges(&mut self) -> Result<Vec<WalRange>, ManifestError> {
        let mut ranges = Vec::new();
        self.object_array("WAL range", &mut |p, line| {
            let (mut tli, mut start, mut end) = (None, None, None);
            p.members(&mut |p, key, kline| {
                let dup = match key.as_str() {
                    "Timeline" => {
                        let v = p.uint_value(&key)?;
                        let bad = || Self::err(kline, format!("invalid timeline {v}"));
                        let v = u32::try_from(v).ok().filter(|&v| v >= 1).ok_or_else(bad)?;
                        tli.replace(TimelineId(v)).is_some()
                    }
                    "Start-LSN" => start.replace(p.lsn_value(&key, kline)?).is_some(),
                    "End-LSN" => end.replace(p.lsn_value(&key, kline)?).is_some(),
                    _ => return Err(Self::err(kline, format!("unknown WAL range key {key:?}"))),
                };
                if dup {
                    return Err(Self::err(kline, format!("duplicate WAL range key {key:?}")));
                }
                Ok(())
            })?;
            let (Some(tli), Some(start_lsn), Some(end_lsn)) = (tli, start, end) else {
                let msg = "a WAL range needs Timeline, Start-LSN and End-LSN";
                return Err(Self::err(line, msg));
            };
            ranges.push(WalRange {
                tli,
                start_lsn,
                end_lsn,
            });
            Ok(())
        })?;
        Ok(ranges)
    }
}

/// parse_manifest.c `json_manifest_finalize_file`, plus pgsafe's path and checksum-length rules.
fn finish_file(f: FileFields, line: usize) -> Result<ManifestFile, ManifestError> {
    let err = |msg: String| ManifestError::Syntax { line, msg };
    let path = match (f.path, f.encoded) {
        (Some(p), None) => p.into_bytes(),
        (None, Some(e)) => {
            hex::decode(&e).map_err(|_| err(format!("Encoded-Path {e:?} is not hex")))?
        }
        (None, None) => return Err(err("a file needs a Path or an Encoded-Path".into())),
        (Some(_), Some(_)) => return Err(err("a file has both Path and Encoded-Path".into())),
    };
    let shown = String::from_utf8_lossy(&path).into_owned();
    check_path(&path).map_err(|m| err(format!("unsafe path {shown:?}: {m}")))?;
    let ferr = |msg: &str| err(format!("file {shown:?}: {msg}"));
    let size = f.size.ok_or_else(|| ferr("Size is missing"))?;
    let checksum = match (f.algorithm, f.checksum) {
        (None, None) => None,
        (None, Some(_)) => return Err(ferr("Checksum without Checksum-Algorithm")),
        (Some(name), hex) => match ChecksumAlgorithm::from_manifest_name(&name) {
            Some(ChecksumAlgorithm::None) => {
                let h = hex.unwrap_or_default();
                if h.len() % 2 != 0 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ferr(&format!("invalid checksum {h:?}")));
                }
                None
            }
            Some(alg) => {
                let h = hex.ok_or_else(|| ferr(&format!("{name} without a Checksum")))?;
                Some((alg, check_checksum(alg, &h).map_err(|m| ferr(&m))?.1))
            }
            None if ["SHA224", "SHA384", "SHA512"]
                .contains(&name.to_ascii_uppercase().as_str()) =>
            {
                return Err(ManifestError::UnsupportedAlgorithm {
                    line,
                    path: shown,
                    name,
                });
            }
            None => return Err(ferr(&format!("unknown checksum algorithm {name:?}"))),
        },
    };
    Ok(ManifestFile {
        path,
        size,
        last_modified: f.last_modified,
        checksum,
    })
}

/// pg_verifybackup refuses a manifest listing a path twice; reports the later line.
fn check_duplicates(files: &[ManifestFile], lines: &[usize]) -> Result<(), ManifestError> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[a].path.cmp(&files[b].path));
    for w in order.windows(2) {
        if files[w[0]].path == files[w[1]].path {
            let later = w[0].max(w[1]);
            return Err(ManifestError::DuplicatePath {
                line: lines.get(later).copied().unwrap_or(0),
                path: files[later].path_lossy().into_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
