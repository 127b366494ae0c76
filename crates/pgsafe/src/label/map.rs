//! `tablespace_map`: parse and format it as PostgreSQL 9.6–18 write and read it
//! (`do_pg_backup_start` in `src/backend/access/transam/xlog.c`, `read_tablespace_map` in
//! `src/backend/access/transam/xlogrecovery.c`, `xlog.c` before 15), with the two escapings
//! of [`MapEscaping`]. Pure: no IO.

use serde::Serialize;

use super::{serialize_lossy, show};
use crate::types::PgVersion;

/// Which `tablespace_map` escaping a server uses (the writer in `do_pg_backup_start`, the reader
/// `read_tablespace_map`; both changed in 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MapEscaping {
    /// 9.6–13: the writer puts a backslash before `\n` and `\r` only. The reader ends a line at
    /// `\n`/`\r` unless the previous byte is a backslash (which it then drops), and splits the
    /// line with `sscanf("%s %n")`: leading whitespace and the whitespace after the OID vanish.
    Pre14,
    /// 14+: the writer puts a backslash before `\n`, `\r` and `\`; the reader lets any backslash
    /// escape the next byte, skips empty lines, and wants `<oid> <path>` split at the first
    /// space (the path may begin with spaces). An unterminated last line or a dangling backslash
    /// is FATAL.
    V14,
}

impl MapEscaping {
    pub fn for_version(version: PgVersion) -> Self {
        if version.at_least(14) {
            MapEscaping::V14
        } else {
            MapEscaping::Pre14
        }
    }
}

/// One `pg_tblspc/<oid>` symlink: OID and link target (bytes, as `readlink` returns them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TablespaceEntry {
    pub oid: u32,
    #[serde(serialize_with = "serialize_lossy")]
    pub path: Vec<u8>,
}

impl TablespaceEntry {
    /// The path as a file-system path (Unix paths are bytes).
    #[cfg(unix)]
    pub fn as_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }
}

/// Why a `tablespace_map` cannot be parsed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("tablespace_map line {line}: expected \"<oid> <path>\", found {found}")]
    Syntax { line: usize, found: String },
    #[error(
        "tablespace_map line {line}: invalid tablespace OID {found}: expected a decimal number from 1 to 4294967295 without leading zeros"
    )]
    BadOid { line: usize, found: String },
    #[error("tablespace_map line {line}: tablespace {oid} has an empty path")]
    EmptyPath { line: usize, oid: u32 },
    #[error("tablespace_map line {line} is empty; PostgreSQL 13 and older refuse such a file")]
    EmptyLine { line: usize },
    #[error("tablespace_map line {line} is not terminated by a newline (truncated file?): {found}")]
    Unterminated { line: usize, found: String },
    #[error(
        "tablespace_map line {line} ends with a dangling backslash; PostgreSQL 14+ refuses such a file"
    )]
    DanglingBackslash { line: usize },
    #[error("tablespace_map: tablespace OID {oid} is listed twice")]
    DuplicateOid { oid: u32 },
    #[error(
        "tablespace {oid}: path {path} cannot be written to the tablespace_map of PostgreSQL 13 or older: {why}"
    )]
    NotRepresentable {
        oid: u32,
        path: String,
        why: &'static str,
    },
    #[error("tablespace {oid}: invalid path {path}: {why}")]
    InvalidPath {
        oid: u32,
        path: String,
        why: &'static str,
    },
}

/// The contents of `tablespace_map`: entries in file order. Empty bytes = no tablespaces.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TablespaceMap {
    entries: Vec<TablespaceEntry>,
}

/// C `isspace` in the "C" locale.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn parse_oid(text: &[u8], line: usize) -> Result<u32, MapError> {
    let digits = text.first().is_some_and(|&b| b != b'0') && text.iter().all(u8::is_ascii_digit);
    let oid = std::str::from_utf8(text)
        .ok()
        .filter(|_| digits)
        .and_then(|t| t.parse().ok());
    oid.ok_or_else(|| MapError::BadOid {
        line,
        found: show(text),
    })
}

fn check_path(e: &TablespaceEntry) -> Result<(), MapError> {
    let why = match () {
        _ if e.path.is_empty() => "it is empty",
        _ if e.path.contains(&0) => "it contains a NUL byte",
        _ => return Ok(()),
    };
    Err(MapError::InvalidPath {
        oid: e.oid,
        path: show(&e.path),
        why,
    })
}

impl TablespaceMap {
    /// A map from entries; OIDs must be unique and paths non-empty without NUL bytes.
    pub fn new(entries: Vec<TablespaceEntry>) -> Result<Self, MapError> {
        for (i, e) in entries.iter().enumerate() {
            check_path(e)?;
            if entries[..i].iter().any(|o| o.oid == e.oid) {
                return Err(MapError::DuplicateOid { oid: e.oid });
            }
        }
        Ok(TablespaceMap { entries })
    }

    pub fn entries(&self) -> &[TablespaceEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The path of tablespace `oid`.
    pub fn get(&self, oid: u32) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.oid == oid)
            .map(|e| e.path.as_slice())
    }

    /// Parses the file as the given versions' reader does. Stricter than the server: OIDs
    /// must be plain decimal without leading zeros, an OID may appear once, an empty path is an
    /// error (the server fails later, creating the symlink), and an unterminated last line is an
    /// error also for ≤13 (whose reader silently drops it).
    pub fn parse(bytes: &[u8], escaping: MapEscaping) -> Result<Self, MapError> {
        let lines = match escaping {
            MapEscaping::Pre14 => split_pre14(bytes)?,
            MapEscaping::V14 => split_v14(bytes)?,
        };
        let mut entries: Vec<TablespaceEntry> = Vec::with_capacity(lines.len());
        for (line, text) in lines {
            let (oid_text, path) = match escaping {
                MapEscaping::Pre14 => {
                    let start = text.iter().position(|&b| !c_isspace(b));
                    let rest = &text[start.ok_or(MapError::EmptyLine { line })?..];
                    let end = rest
                        .iter()
                        .position(|&b| c_isspace(b))
                        .unwrap_or(rest.len());
                    let skip = rest[end..].iter().take_while(|&&b| c_isspace(b)).count();
                    (&rest[..end], &rest[end + skip..])
                }
                MapEscaping::V14 => match text.iter().position(|&b| b == b' ') {
                    Some(n) if n > 0 => (&text[..n], &text[n + 1..]),
                    _ => {
                        return Err(MapError::Syntax {
                            line,
                            found: show(&text),
                        });
                    }
                },
            };
            let oid = parse_oid(oid_text, line)?;
            if path.is_empty() {
                return Err(MapError::EmptyPath { line, oid });
            }
            if entries.iter().any(|e| e.oid == oid) {
                return Err(MapError::DuplicateOid { oid });
            }
            entries.push(TablespaceEntry {
                oid,
                path: path.to_vec(),
            });
        }
        Ok(TablespaceMap { entries })
    }

    /// Writes the file as the given versions' writer does (`<oid> <escaped path>\n` per entry).
    /// For ≤13 it refuses paths the old reader cannot read back exactly: containing `\n`, `\r`
    /// or `\` (the old writer leaves a backslash unescaped, so one before a line end would be
    /// read as an escape; refusing every backslash is the simple safe rule) or starting with
    /// whitespace.
    pub fn format(&self, escaping: MapEscaping) -> Result<Vec<u8>, MapError> {
        let mut out = Vec::new();
        for e in &self.entries {
            check_path(e)?;
            out.extend_from_slice(format!("{} ", e.oid).as_bytes());
            let special = |b: &u8| matches!(b, b'\n' | b'\r' | b'\\');
            if escaping == MapEscaping::Pre14 {
                let why = match () {
                    _ if e.path.iter().any(special) => {
                        "it contains a newline, carriage return or backslash"
                    }
                    _ if c_isspace(e.path[0]) => {
                        "it starts with whitespace, which the old reader strips"
                    }
                    _ => "",
                };
                if !why.is_empty() {
                    return Err(MapError::NotRepresentable {
                        oid: e.oid,
                        path: show(&e.path),
                        why,
                    });
                }
            }
            for b in &e.path {
                if special(b) {
                    out.push(b'\\');
                }
                out.push(*b);
            }
            out.push(b'\n');
        }
        Ok(out)
    }
}

/// Logical lines of a ≤13 map, with the line number each starts on (escaped newlines count).
fn split_pre14(bytes: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, MapError> {
    let (mut lines, mut cur, mut prev, mut line_no, mut start) = (vec![], vec![], 0u8, 1, 1);
    for &ch in bytes {
        let newline = ch == b'\n' || ch == b'\r';
        line_no += usize::from(ch == b'\n');
        if newline && prev != b'\\' {
            // The server leaves its "previous byte" alone here; as it is not a backslash (else
            // this newline would be escaped), that is the same as forgetting it.
            lines.push((start, std::mem::take(&mut cur)));
            start = line_no;
            continue;
        }
        match cur.last_mut() {
            Some(last) if newline => *last = ch,
            _ => cur.push(ch),
        }
        prev = ch;
    }
    if !cur.is_empty() {
        return Err(MapError::Unterminated {
            line: start,
            found: show(&cur),
        });
    }
    Ok(lines)
}

/// Logical (de-escaped, non-empty) lines of a 14+ map, with their starting line numbers.
fn split_v14(bytes: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, MapError> {
    let (mut lines, mut cur, mut escaped, mut line_no, mut start) = (vec![], vec![], false, 1, 1);
    for &ch in bytes {
        if cur.is_empty() && !escaped {
            start = line_no;
        }
        line_no += usize::from(ch == b'\n');
        if !escaped && (ch == b'\n' || ch == b'\r') {
            if !cur.is_empty() {
                lines.push((start, std::mem::take(&mut cur)));
            }
        } else if !escaped && ch == b'\\' {
            escaped = true;
        } else {
            cur.push(ch);
            escaped = false;
        }
    }
    if escaped {
        return Err(MapError::DanglingBackslash { line: start });
    }
    if !cur.is_empty() {
        return Err(MapError::Unterminated {
            line: start,
            found: show(&cur),
        });
    }
    Ok(lines)
}
