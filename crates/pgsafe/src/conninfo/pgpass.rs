//! The password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`), as libpq reads it ("The Password
//! File"; fe-connect.c `passwordFromFile`, `pwdfMatchesString`).
//!
//! - Lines are `hostname:port:database:username:password`. A line starting with `#` is a
//!   comment; trailing `\r`/`\n` are stripped; the first matching line wins.
//! - Each of the first four fields is a literal or `*` (matches anything; only a field that is
//!   exactly `*`). `\` escapes the next character, so `\:` and `\\` stand for `:` and `\`. The
//!   password is de-escaped the same way and ends at the next unescaped `:`.
//! - For a Unix-socket connection the host compared is `localhost` when the socket directory is
//!   the default one, else the directory path itself.
//! - On Unix the file is ignored, with a warning, unless it is a plain file with no group or
//!   world permissions (`mode & 0o077 == 0`, i.e. u=rw (0600) or less).
//!
//! [`lookup`] is pure (bytes plus `st_mode`); [`read_passfile`] is the thin IO wrapper.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Secret;

/// The connection parameters a password-file line must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgpassKey<'a> {
    /// Host name as given, hostaddr when no host was given, or `localhost` for a Unix socket in
    /// the default directory (a socket elsewhere is matched by its directory path).
    pub host: &'a str,
    pub port: &'a str,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// What [`read_passfile`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassfileRead {
    /// No such file: silently no password, as libpq.
    Missing,
    /// The file's `st_mode` and, if its mode makes it usable, its contents (else empty).
    Read { mode: u32, bytes: Vec<u8> },
    /// It exists but could not be read; the text says why.
    Unreadable(String),
}

/// The outcome of one password-file lookup: a password, and/or a warning for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgpassLookup {
    pub password: Option<Secret>,
    pub warning: Option<String>,
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

/// libpq's permission rule: `Some(warning)` if a file with `mode` must be ignored.
pub fn mode_warning(path: &Path, mode: u32) -> Option<String> {
    if mode & S_IFMT != S_IFREG {
        Some(format!(
            "password file \"{}\" is not a plain file",
            path.display()
        ))
    } else if mode & 0o077 != 0 {
        Some(format!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        ))
    } else {
        None
    }
}

/// Looks `key` up in the contents of the password file at `path` whose `st_mode` is `mode`.
pub fn lookup(path: &Path, mode: u32, bytes: &[u8], key: &PgpassKey<'_>) -> PgpassLookup {
    if let Some(warning) = mode_warning(path, mode) {
        return PgpassLookup {
            password: None,
            warning: Some(warning),
        };
    }
    if key.dbname.is_empty() || key.user.is_empty() {
        return PgpassLookup::default();
    }
    for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let mut line = raw;
        while let [rest @ .., b'\r' | b'\n'] = line {
            line = rest;
        }
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let rest = match_field(line, key.host.as_bytes())
            .and_then(|r| match_field(r, key.port.as_bytes()))
            .and_then(|r| match_field(r, key.dbname.as_bytes()))
            .and_then(|r| match_field(r, key.user.as_bytes()));
        let Some(rest) = rest else { continue };
        let password = unescape_password(rest);
        return match String::from_utf8(password) {
            Ok(p) if p.is_empty() => PgpassLookup::default(),
            Ok(p) => PgpassLookup {
                password: Some(Secret::new(p)),
                warning: None,
            },
            Err(_) => PgpassLookup {
                password: None,
                warning: Some(format!(
                    "password file \"{}\" line {}: the password is not valid UTF-8; ignored",
                    path.display(),
                    n + 1
                )),
            },
        };
    }
    PgpassLookup::default()
}

/// Matches one `:`-terminated field against `token`; returns the rest of the line after the `:`.
fn match_field<'l>(line: &'l [u8], token: &[u8]) -> Option<&'l [u8]> {
    if let Some(rest) = line.strip_prefix(b"*:") {
        return Some(rest);
    }
    let (mut i, mut t) = (0, 0);
    while i < line.len() {
        let escaped = line[i] == b'\\';
        if escaped {
            i += 1;
        }
        let c = line.get(i).copied();
        if c == Some(b':') && !escaped && t == token.len() {
            return Some(&line[i + 1..]);
        }
        if t == token.len() || c != Some(token[t]) {
            return None;
        }
        i += 1;
        t += 1;
    }
    None
}

fn unescape_password(rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while let Some(&c) = rest.get(i) {
        if c == b':' {
            break;
        }
        match (c, rest.get(i + 1)) {
            (b'\\', Some(&next)) => {
                out.push(next);
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Reads the password file at `path` (stat first, as libpq, so that a FIFO is never opened;
/// the contents of a file the permission rule rejects are not read at all).
pub fn read_passfile(path: &Path) -> PassfileRead {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return PassfileRead::Missing,
        Err(e) => return PassfileRead::Unreadable(e.to_string()),
    };
    let mode = meta.mode();
    if mode_warning(path, mode).is_some() {
        return PassfileRead::Read {
            mode,
            bytes: Vec::new(),
        };
    }
    match std::fs::read(path) {
        Ok(bytes) => PassfileRead::Read { mode, bytes },
        Err(e) if e.kind() == ErrorKind::NotFound => PassfileRead::Missing,
        Err(e) => PassfileRead::Unreadable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REG: u32 = 0o100600;

    fn key<'a>(host: &'a str, port: &'a str, dbname: &'a str, user: &'a str) -> PgpassKey<'a> {
        PgpassKey {
            host,
            port,
            dbname,
            user,
        }
    }

    fn find(file: &str, k: PgpassKey<'_>) -> Option<String> {
        let r = lookup(Path::new("/h/.pgpass"), REG, file.as_bytes(), &k);
        assert_eq!(r.warning, None);
        r.password.map(|s| s.expose().to_owned())
    }

    #[test]
    fn first_match_wins_with_wildcards() {
        let file = "# hostname:port:database:username:password\n\
                    db1:5432:app:alice:one\n\
                    *:5432:*:alice:two\n\
                    *:*:*:*:three\n";
        assert_eq!(
            find(file, key("db1", "5432", "app", "alice")).as_deref(),
            Some("one")
        );
        assert_eq!(
            find(file, key("db2", "5432", "app", "alice")).as_deref(),
            Some("two")
        );
        assert_eq!(
            find(file, key("db1", "5433", "app", "alice")).as_deref(),
            Some("three")
        );
        assert_eq!(
            find("db1:5432:app:alice:x\n", key("db1", "5432", "app", "bob")),
            None
        );
        // Prefix of a field is no match; nor is a token longer than the field.
        assert_eq!(find("db:5432:*:*:x\n", key("db1", "5432", "a", "b")), None);
        assert_eq!(
            find("db12:5432:*:*:x\n", key("db1", "5432", "a", "b")),
            None
        );
        // '*' is a wildcard only as the whole field.
        assert_eq!(find("d*:5432:*:*:x\n", key("db", "5432", "a", "b")), None);
        assert_eq!(find("\\*:5432:*:*:x\n", key("db", "5432", "a", "b")), None);
        assert_eq!(
            find("\\*:5432:*:*:x\n", key("*", "5432", "a", "b")).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn escapes_comments_and_line_endings() {
        let file = "#*:*:*:*:commented\r\n\
                    \n\
                    /tmp\\:x:5432:d\\\\b:u:p\\:w\\\\d:extra\r\n";
        assert_eq!(
            find(file, key("/tmp:x", "5432", "d\\b", "u")).as_deref(),
            Some("p:w\\d")
        );
        // Last line without a newline; a trailing backslash is kept literally.
        assert_eq!(
            find("h:1:d:u:pw\\", key("h", "1", "d", "u")).as_deref(),
            Some("pw\\")
        );
        // Too few fields never match; an empty password counts as none.
        assert_eq!(find("h:1:d:u\n", key("h", "1", "d", "u")), None);
        assert_eq!(
            find("h:1:d:u:\n*:*:*:*:later\n", key("h", "1", "d", "u")),
            None
        );
        assert_eq!(
            find("h:1:d:u:héllo\n", key("h", "1", "d", "u")).as_deref(),
            Some("héllo")
        );
    }

    #[test]
    fn permission_rule() {
        let file = b"*:*:*:*:secret\n";
        let k = key("h", "5432", "d", "u");
        for mode in [0o100640, 0o100604, 0o100660, 0o100777] {
            let r = lookup(Path::new("/h/.pgpass"), mode, file, &k);
            assert_eq!(r.password, None);
            let w = r.warning.unwrap();
            assert!(
                w.contains("group or world access") && w.contains("/h/.pgpass"),
                "{w}"
            );
        }
        let r = lookup(Path::new("/h/.pgpass"), 0o040700, file, &k);
        assert!(r.warning.unwrap().contains("not a plain file"));
        for mode in [0o100600, 0o100400, 0o100700] {
            assert!(lookup(Path::new("/p"), mode, file, &k).password.is_some());
        }
        let bad = lookup(Path::new("/p"), REG, b"*:*:*:*:\xff\n", &k);
        assert!(bad.password.is_none() && bad.warning.unwrap().contains("line 1"));
    }

    #[test]
    fn io_wrapper_reads_and_respects_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        assert_eq!(read_passfile(&path), PassfileRead::Missing);
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let PassfileRead::Read { mode, bytes } = read_passfile(&path) else {
            panic!()
        };
        assert_eq!(bytes, b"*:*:*:*:pw\n");
        assert!(
            lookup(&path, mode, &bytes, &key("h", "1", "d", "u"))
                .password
                .is_some()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let PassfileRead::Read { mode, bytes } = read_passfile(&path) else {
            panic!()
        };
        assert!(bytes.is_empty());
        assert!(
            lookup(&path, mode, &bytes, &key("h", "1", "d", "u"))
                .warning
                .is_some()
        );
    }

    proptest! {
        #[test]
        fn lookup_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), host in ".{0,8}") {
            let _ = lookup(Path::new("/p"), REG, &bytes, &key(&host, "5432", "d", "u"));
        }
    }
}
