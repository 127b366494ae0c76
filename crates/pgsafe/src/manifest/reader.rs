//! The strict `backup_manifest` reader: the Manifest-Checksum and framing check, then the
//! manifest grammar over [`Lexer`] (the checks of `src/common/parse_manifest.c`, and stricter
//! where the server's output never varies; see [`super`]).

use sha2::{Digest, Sha256};

use super::lexer::{Lexer, Tok, Token};
use super::{
    CHECKSUM_KEY, Manifest, ManifestError, ManifestFile, ManifestVersion, VERSION_KEY,
    check_checksum, check_path,
};
use crate::checksum::ChecksumAlgorithm;
use crate::types::{Lsn, SystemId, TimelineId};
use crate::wal::WalRange;

/// The framing and Manifest-Checksum check (parse_manifest.c `verify_manifest_checksum`): the
/// file ends with `\n`, has at least two lines, and the last line is exactly the checksum member
/// and the closing `}`, whose value is the SHA-256 of everything before that line.
pub(super) fn verify_checksum(bytes: &[u8]) -> Result<(), ManifestError> {
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

/// The manifest grammar over the lexer (no generic JSON tree, no recursion).
pub(super) struct Parser<'a> {
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
    pub(super) fn new(bytes: &'a [u8]) -> Self {
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

    pub(super) fn manifest(mut self) -> Result<Manifest, ManifestError> {
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
