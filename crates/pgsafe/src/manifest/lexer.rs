//! The JSON tokens of a `backup_manifest`, lexed with the rules of PostgreSQL's own JSON lexer
//! (`src/common/jsonapi.c`).

use super::ManifestError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok<'a> {
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
    pub(super) fn describe(&self) -> String {
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

pub(super) struct Token<'a> {
    pub(super) tok: Tok<'a>,
    pub(super) line: usize,
}

/// A JSON lexer with PostgreSQL's rules: whitespace is space, tab, CR, LF; strings must be
/// valid UTF-8 with control characters escaped; `\u0000` and unpaired surrogates are refused.
pub(super) struct Lexer<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    pub(super) line: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn err(&self, msg: impl Into<String>) -> ManifestError {
        ManifestError::Syntax {
            line: self.line,
            msg: msg.into(),
        }
    }

    pub(super) fn next(&mut self) -> Result<Token<'a>, ManifestError> {
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

    pub(super) fn string(&mut self) -> Result<String, ManifestError> {
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

    pub(super) fn escape(&mut self) -> Result<char, ManifestError> {
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

    pub(super) fn hex4(&mut self) -> Result<u32, ManifestError> {
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
    pub(super) fn number(&mut self) -> &'a str {
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
