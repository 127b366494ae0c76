//! libpq connection-string syntax: `key=value` strings and `postgresql://` URIs. Pure: no IO.
//!
//! Rules (libpq "Connection Strings", fe-connect.c `conninfo_parse`, `conninfo_uri_parse_options`):
//! - `key = value` pairs separated by whitespace; spaces around `=` are allowed. A value is either
//!   a run of non-space characters, or single-quoted; in both forms `\x` stands for `x` (so `\'`
//!   and `\\` inside quotes). A later setting of the same key overrides an earlier one. An unknown
//!   key is an error: `invalid connection option "x"`.
//! - `postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...]` (or
//!   `postgres://`): every part is percent-decoded (`%00` is forbidden, a bare space is an error),
//!   IPv6 addresses go in brackets, a percent-encoded path (`%2Ftmp`) is a Unix socket directory,
//!   query parameters are connection options (plus JDBC's `ssl=true` = `sslmode=require`); an
//!   unknown parameter is `invalid URI query parameter`.
//! - `requiressl=1`/`0` is libpq's old spelling of `sslmode=require`/`prefer`.

use std::collections::BTreeMap;
use std::fmt;

use super::ConnInfoError;

/// How pgsafe treats a libpq connection option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Support {
    /// Honoured.
    Used,
    /// Accepted and ignored: GSSAPI settings (pgsafe has no GSSAPI; a value that would
    /// *require* it is rejected where the settings are resolved), and TLS settings rustls has
    /// no use for (`sslcompression`: no TLS compression; `sslpassword`: encrypted keys are
    /// refused when read).
    Ignored,
    /// Rejected with a clear error when set to a non-empty value: ignoring it could connect
    /// somewhere else or weaken a security requirement the user asked for.
    Unsupported,
}

/// One libpq connection option: its keyword, the environment variable libpq falls back to, and
/// what pgsafe does with it. The list is libpq's (PostgreSQL 18) `PQconninfoOptions`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyword {
    pub name: &'static str,
    pub env: Option<&'static str>,
    pub support: Support,
}

const fn kw(name: &'static str, env: Option<&'static str>, support: Support) -> Keyword {
    Keyword { name, env, support }
}

use Support::{Ignored, Unsupported, Used};

pub(crate) const KEYWORDS: &[Keyword] = &[
    kw("service", Some("PGSERVICE"), Used),
    kw("user", Some("PGUSER"), Used),
    kw("password", Some("PGPASSWORD"), Used),
    kw("passfile", Some("PGPASSFILE"), Used),
    kw("channel_binding", Some("PGCHANNELBINDING"), Used),
    kw("connect_timeout", Some("PGCONNECT_TIMEOUT"), Used),
    kw("dbname", Some("PGDATABASE"), Used),
    kw("host", Some("PGHOST"), Used),
    kw("hostaddr", Some("PGHOSTADDR"), Used),
    kw("port", Some("PGPORT"), Used),
    kw("client_encoding", Some("PGCLIENTENCODING"), Used),
    kw("options", Some("PGOPTIONS"), Used),
    kw("application_name", Some("PGAPPNAME"), Used),
    kw("fallback_application_name", None, Used),
    kw("keepalives", None, Used),
    kw("keepalives_idle", None, Used),
    kw("keepalives_interval", None, Used),
    kw("keepalives_count", None, Used),
    kw("tcp_user_timeout", None, Used),
    kw("sslmode", Some("PGSSLMODE"), Used),
    kw("sslnegotiation", Some("PGSSLNEGOTIATION"), Used),
    kw("sslcompression", Some("PGSSLCOMPRESSION"), Ignored),
    kw("sslcert", Some("PGSSLCERT"), Used),
    kw("sslkey", Some("PGSSLKEY"), Used),
    kw("sslcertmode", Some("PGSSLCERTMODE"), Used),
    kw("sslpassword", None, Ignored),
    kw("sslrootcert", Some("PGSSLROOTCERT"), Used),
    kw("sslcrl", Some("PGSSLCRL"), Used),
    kw("sslcrldir", Some("PGSSLCRLDIR"), Used),
    kw("sslsni", Some("PGSSLSNI"), Used),
    kw("requirepeer", Some("PGREQUIREPEER"), Unsupported),
    kw("require_auth", Some("PGREQUIREAUTH"), Unsupported),
    kw(
        "ssl_min_protocol_version",
        Some("PGSSLMINPROTOCOLVERSION"),
        Used,
    ),
    kw(
        "ssl_max_protocol_version",
        Some("PGSSLMAXPROTOCOLVERSION"),
        Used,
    ),
    kw(
        "min_protocol_version",
        Some("PGMINPROTOCOLVERSION"),
        Unsupported,
    ),
    kw(
        "max_protocol_version",
        Some("PGMAXPROTOCOLVERSION"),
        Unsupported,
    ),
    kw("gssencmode", Some("PGGSSENCMODE"), Used),
    kw("krbsrvname", Some("PGKRBSRVNAME"), Ignored),
    kw("gsslib", Some("PGGSSLIB"), Ignored),
    kw("gssdelegation", Some("PGGSSDELEGATION"), Ignored),
    kw("replication", None, Unsupported),
    kw("target_session_attrs", Some("PGTARGETSESSIONATTRS"), Used),
    kw("load_balance_hosts", Some("PGLOADBALANCEHOSTS"), Used),
    kw("scram_client_key", None, Unsupported),
    kw("scram_server_key", None, Unsupported),
    kw("oauth_issuer", None, Unsupported),
    kw("oauth_client_id", None, Unsupported),
    kw("oauth_client_secret", None, Unsupported),
    kw("oauth_scope", None, Unsupported),
];

pub(crate) fn keyword(name: &str) -> Option<&'static Keyword> {
    KEYWORDS.iter().find(|k| k.name == name)
}

/// Options set explicitly by one connection string (no defaults, no environment), keyed by libpq
/// keyword. `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnOptions {
    values: BTreeMap<&'static str, String>,
}

impl ConnOptions {
    /// The value given for `key`, if any (possibly empty: libpq then uses the built-in default).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Sets a libpq option, as a later `key=value` in a connection string would.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConnInfoError> {
        // libpq: requiressl=1 means sslmode=require, anything else sslmode=prefer.
        let (key, value) = if key == "requiressl" {
            (
                "sslmode",
                if value.starts_with('1') {
                    "require"
                } else {
                    "prefer"
                },
            )
        } else {
            (key, value)
        };
        let kw = keyword(key).ok_or_else(|| ConnInfoError::InvalidOption(key.to_owned()))?;
        if value.contains('\0') {
            return Err(ConnInfoError::NulByte);
        }
        self.values.insert(kw.name, value.to_owned());
        Ok(())
    }

    /// Every option given, in keyword order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.values.iter().map(|(k, v)| (*k, v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for ConnOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if is_secret_key(k) {
                m.entry(k, &"********");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// Keys whose values must never be displayed.
pub(crate) fn is_secret_key(key: &str) -> bool {
    matches!(
        key,
        "password"
            | "sslpassword"
            | "oauth_client_secret"
            | "scram_client_key"
            | "scram_server_key"
    )
}

const URI_PREFIXES: [&str; 2] = ["postgresql://", "postgres://"];

/// libpq's `recognized_connection_string`: a value of `dbname` that starts with a URI scheme or
/// contains `=` is a connection string to expand ("expand_dbname"); anything else is a name.
pub fn is_connection_string(s: &str) -> bool {
    URI_PREFIXES.iter().any(|p| s.starts_with(p)) || s.contains('=')
}

/// Parses a connection string: a URI if it starts with `postgresql://` or `postgres://`,
/// otherwise `key=value` pairs. Only what the string sets is returned.
pub fn parse_conninfo(s: &str) -> Result<ConnOptions, ConnInfoError> {
    if s.contains('\0') {
        return Err(ConnInfoError::NulByte);
    }
    match URI_PREFIXES.iter().find(|p| s.starts_with(**p)) {
        Some(prefix) => parse_uri(s, prefix.len()),
        None => parse_key_value(s),
    }
}

/// C `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn parse_key_value(s: &str) -> Result<ConnOptions, ConnInfoError> {
    let b = s.as_bytes();
    let mut opts = ConnOptions::default();
    let mut i = 0;
    while i < b.len() {
        if is_space(b[i]) {
            i += 1;
            continue;
        }
        let name_start = i;
        while i < b.len() && b[i] != b'=' && !is_space(b[i]) {
            i += 1;
        }
        let name = &s[name_start..i];
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err(ConnInfoError::MissingEquals(name.to_owned()));
        }
        i += 1;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        // Only ASCII backslashes and quotes are dropped, so `value` stays valid UTF-8.
        let mut value = Vec::new();
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(ConnInfoError::UnterminatedQuote),
                    Some(b'\\') => {
                        if let Some(&c) = b.get(i + 1) {
                            value.push(c);
                        }
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = b.get(i) {
                i += 1;
                if is_space(c) {
                    break;
                }
                if c == b'\\' {
                    if let Some(&next) = b.get(i) {
                        value.push(next);
                        i += 1;
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let value =
            String::from_utf8(value).map_err(|_| ConnInfoError::NotUtf8(name.to_owned()))?;
        opts.set(name, &value)?;
    }
    Ok(opts)
}

fn is_uri_host_end(b: u8) -> bool {
    matches!(b, b':' | b'/' | b'?' | b',')
}

fn parse_uri(uri: &str, prefix_len: usize) -> Result<ConnOptions, ConnInfoError> {
    let b = uri.as_bytes();
    let len = b.len();
    let mut opts = ConnOptions::default();
    let start = prefix_len;

    // Credentials: everything before the first '@' that comes before any '/'.
    let mut p = start;
    while p < len && b[p] != b'@' && b[p] != b'/' {
        p += 1;
    }
    if p < len && b[p] == b'@' {
        let userinfo = &uri[start..p];
        let (user, password) = match userinfo.split_once(':') {
            Some((u, pw)) => (u, Some(pw)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            opts.set("user", &decode_field(user, "user")?)?;
        }
        if let Some(pw) = password.filter(|pw| !pw.is_empty()) {
            opts.set("password", &decode_field(pw, "password")?)?;
        }
        p += 1;
    } else {
        p = start;
    }

    // One or more netloc[:port], separated by commas.
    let mut hosts = String::new();
    let mut ports = String::new();
    let mut terminator: Option<u8>;
    loop {
        let host;
        if b.get(p) == Some(&b'[') {
            let host_start = p + 1;
            let mut q = host_start;
            while q < len && b[q] != b']' {
                q += 1;
            }
            if q >= len {
                return Err(ConnInfoError::Uri(
                    "end of string reached when looking for matching \"]\" in IPv6 host address"
                        .into(),
                ));
            }
            if q == host_start {
                return Err(ConnInfoError::Uri(
                    "IPv6 host address may not be empty".into(),
                ));
            }
            host = &uri[host_start..q];
            p = q + 1;
            if let Some(&c) = b.get(p).filter(|c| !is_uri_host_end(**c)) {
                return Err(ConnInfoError::Uri(format!(
                    "unexpected character \"{}\" at position {} (expected \":\" or \"/\")",
                    char::from(c).escape_default(),
                    p + 1
                )));
            }
        } else {
            let host_start = p;
            while p < len && !is_uri_host_end(b[p]) {
                p += 1;
            }
            host = &uri[host_start..p];
        }
        hosts.push_str(host);
        terminator = b.get(p).copied();
        if terminator == Some(b':') {
            p += 1;
            let port_start = p;
            while p < len && !matches!(b[p], b'/' | b'?' | b',') {
                p += 1;
            }
            ports.push_str(&uri[port_start..p]);
            terminator = b.get(p).copied();
        }
        if terminator != Some(b',') {
            break;
        }
        p += 1;
        hosts.push(',');
        ports.push(',');
    }
    if !hosts.is_empty() {
        opts.set("host", &decode_field(&hosts, "host")?)?;
    }
    if !ports.is_empty() {
        opts.set("port", &decode_field(&ports, "port")?)?;
    }

    if terminator == Some(b'/') {
        p += 1;
        let db_start = p;
        while p < len && b[p] != b'?' {
            p += 1;
        }
        // An empty dbname is not set at all, so PGDATABASE still applies.
        let dbname = &uri[db_start..p];
        if !dbname.is_empty() {
            opts.set("dbname", &decode_field(dbname, "dbname")?)?;
        }
        terminator = b.get(p).copied();
    }
    if terminator.is_some() {
        parse_uri_params(&uri[p + 1..], &mut opts)?;
    }
    Ok(opts)
}

fn parse_uri_params(params: &str, opts: &mut ConnOptions) -> Result<(), ConnInfoError> {
    let mut rest = params;
    while !rest.is_empty() {
        let (piece, next) = rest.split_once('&').unwrap_or((rest, ""));
        rest = next;
        let Some((key, value)) = piece.split_once('=') else {
            return Err(ConnInfoError::Uri(format!(
                "missing key/value separator \"=\" in URI query parameter: \"{piece}\""
            )));
        };
        if value.contains('=') {
            return Err(ConnInfoError::Uri(format!(
                "extra key/value separator \"=\" in URI query parameter: \"{key}\""
            )));
        }
        let key = decode_field(key, "query parameter name")?;
        let value = decode_field(value, &key)?;
        // JDBC compatibility, as libpq: ssl=true means sslmode=require.
        let (key, value) = if key == "ssl" && value == "true" {
            ("sslmode".to_owned(), "require".to_owned())
        } else {
            (key, value)
        };
        if keyword(&key).is_none() && key != "requiressl" {
            return Err(ConnInfoError::InvalidUriParam(key));
        }
        opts.set(&key, &value)?;
    }
    Ok(())
}

/// libpq's `conninfo_uri_decode`: leading and trailing spaces are dropped, an inner space is an
/// error, `%XY` is a byte (not `%00`). The decoded bytes must be UTF-8.
fn percent_decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let mut out = Vec::with_capacity(b.len());
    while let Some(&c) = b.get(i) {
        match c {
            b' ' => break,
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|d| char::from(*d).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err("invalid percent-encoded token");
                };
                let byte = (hi * 16 + lo) as u8;
                if byte == 0 {
                    return Err("forbidden value %00 in percent-encoded value");
                }
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    if i != b.len() {
        return Err("unexpected spaces found, use percent-encoded spaces (%20) instead");
    }
    String::from_utf8(out).map_err(|_| "percent-decoded value is not valid UTF-8")
}

/// Decodes one URI part; the error names the part and shows its text unless it is secret.
fn decode_field(s: &str, what: &str) -> Result<String, ConnInfoError> {
    percent_decode(s).map_err(|why| {
        ConnInfoError::Uri(if is_secret_key(what) {
            format!("{why} in the {what}")
        } else {
            format!("{why} in {what} \"{s}\"")
        })
    })
}

/// Quotes a value for a `key=value` string the way libpq reads it back: bare if it is a
/// non-empty run of safe characters, otherwise in single quotes with `'` and `\` escaped.
pub fn quote_value(v: &str) -> String {
    let bare = !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-/,:@+".contains(&c));
    if bare {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(s: &str) -> Vec<(String, String)> {
        parse_conninfo(s)
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn key_value_spacing_quoting_and_escapes() {
        assert_eq!(
            kv("host=db1  port = 5433\tuser= 'o\\'brien' dbname='my db' options='-c a=\\\\b'"),
            pairs(&[
                ("host", "db1"),
                ("port", "5433"),
                ("user", "o'brien"),
                ("dbname", "my db"),
                ("options", "-c a=\\b"),
            ])
        );
        // Backslash escapes work outside quotes too; a later key overrides an earlier one.
        assert_eq!(kv("user=a\\ b user=c"), pairs(&[("user", "c")]));
        assert_eq!(kv("dbname=a\\ b"), pairs(&[("dbname", "a b")]));
        // Empty values, quoted or not; a closing quote may be followed directly by a key.
        assert_eq!(kv("host='' port="), pairs(&[("host", ""), ("port", "")]));
        assert_eq!(
            kv("user='x'dbname=y"),
            pairs(&[("dbname", "y"), ("user", "x")])
        );
        assert_eq!(kv("  "), pairs(&[]));
        assert_eq!(kv("requiressl=1"), pairs(&[("sslmode", "require")]));
        assert_eq!(kv("dbname=héllo"), pairs(&[("dbname", "héllo")]));
    }

    #[test]
    fn key_value_errors_match_libpq() {
        let err = |s: &str| parse_conninfo(s).unwrap_err().to_string();
        assert_eq!(err("x=1"), "invalid connection option \"x\"");
        assert_eq!(
            err("host"),
            "missing \"=\" after \"host\" in connection info string"
        );
        assert_eq!(
            err("host db"),
            "missing \"=\" after \"host\" in connection info string"
        );
        assert_eq!(
            err("user='abc"),
            "unterminated quoted string in connection info string"
        );
        assert_eq!(
            err("user='abc\\'"),
            "unterminated quoted string in connection info string"
        );
        assert_eq!(err("=x"), "invalid connection option \"\"");
        assert!(matches!(
            parse_conninfo("user=a\0b"),
            Err(ConnInfoError::NulByte)
        ));
    }

    #[test]
    fn uri_parts_and_percent_decoding() {
        assert_eq!(
            kv(
                "postgresql://al%40ice:p%3Ass@db.example.com:5433/my%20db?application_name=x&connect_timeout=5"
            ),
            pairs(&[
                ("user", "al@ice"),
                ("password", "p:ss"),
                ("host", "db.example.com"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("application_name", "x"),
                ("connect_timeout", "5"),
            ])
        );
        assert_eq!(kv("postgres://"), pairs(&[]));
        assert_eq!(kv("postgresql:///"), pairs(&[]));
        assert_eq!(
            kv("postgresql://%2Ftmp%2Fsock/db"),
            pairs(&[("host", "/tmp/sock"), ("dbname", "db")])
        );
        assert_eq!(
            kv("postgresql:///db?host=/var/run/postgresql"),
            pairs(&[("host", "/var/run/postgresql"), ("dbname", "db")])
        );
        assert_eq!(kv("postgresql://u@"), pairs(&[("user", "u")]));
        assert_eq!(kv("postgresql://:5433"), pairs(&[("port", "5433")]));
        assert_eq!(
            kv("postgresql://h?ssl=true"),
            pairs(&[("host", "h"), ("sslmode", "require")])
        );
        assert_eq!(kv("postgresql://h?"), pairs(&[("host", "h")]));
        assert_eq!(
            kv("postgresql://h?dbname=a&"),
            pairs(&[("host", "h"), ("dbname", "a")])
        );
        assert_eq!(
            kv("postgresql:// h /d"),
            pairs(&[("host", "h"), ("dbname", "d")])
        );
        assert_eq!(
            kv("postgresql://%20h/d"),
            pairs(&[("host", " h"), ("dbname", "d")])
        );
    }

    #[test]
    fn uri_ipv6_and_host_lists() {
        assert_eq!(
            kv("postgresql://[::1]:5433/db"),
            pairs(&[("host", "::1"), ("port", "5433"), ("dbname", "db")])
        );
        assert_eq!(
            kv("postgresql://[2001:db8::7],h2:5433,h3/d"),
            pairs(&[
                ("host", "2001:db8::7,h2,h3"),
                ("port", ",5433,"),
                ("dbname", "d")
            ])
        );
        assert_eq!(
            kv("postgresql://h1:1,h2:2"),
            pairs(&[("host", "h1,h2"), ("port", "1,2")])
        );
        let err = |s: &str| parse_conninfo(s).unwrap_err().to_string();
        assert!(err("postgresql://[::1").contains("matching \"]\""));
        assert!(err("postgresql://[]/d").contains("may not be empty"));
        assert!(err("postgresql://[::1]x/d").contains("unexpected character \"x\" at position 19"));
    }

    #[test]
    fn uri_errors() {
        let err = |s: &str| parse_conninfo(s).unwrap_err().to_string();
        assert_eq!(
            err("postgresql://h/d?foo=1"),
            "invalid URI query parameter: \"foo\""
        );
        assert!(err("postgresql://h/d?a").contains("missing key/value separator"));
        assert!(err("postgresql://h/d?host=a=b").contains("extra key/value separator"));
        assert!(err("postgresql://h/d?user=a&&port=1").contains("missing key/value separator"));
        assert!(
            err("postgresql://h/d%zz").contains("invalid percent-encoded token in dbname \"d%zz\"")
        );
        assert!(err("postgresql://h/d%0").contains("invalid percent-encoded token"));
        assert!(err("postgresql://h/d%00").contains("%00"));
        assert!(err("postgresql://h/a b").contains("%20"));
        assert!(err("postgresql://h/%ff").contains("UTF-8"));
        // A bad password is reported without its text.
        let e = err("postgresql://u:se%zzcret@h/d");
        assert!(e.contains("in the password") && !e.contains("se%zz"), "{e}");
    }

    #[test]
    fn expand_dbname_recognition() {
        assert!(is_connection_string("host=x"));
        assert!(is_connection_string("postgresql://x"));
        assert!(is_connection_string("postgres://"));
        assert!(!is_connection_string("mydb"));
        assert!(!is_connection_string("postgresql:/x"));
        assert!(!is_connection_string("POSTGRESQL://x"));
    }

    #[test]
    fn debug_hides_password() {
        let o = parse_conninfo("user=u password=hunter2 sslpassword=k2").unwrap();
        let d = format!("{o:?}");
        assert!(
            !d.contains("hunter2") && !d.contains("k2") && d.contains("********"),
            "{d}"
        );
    }

    #[test]
    fn quoting_cases() {
        assert_eq!(quote_value("abc"), "abc");
        assert_eq!(quote_value("/var/run/postgresql"), "/var/run/postgresql");
        assert_eq!(quote_value(""), "''");
        assert_eq!(quote_value("a b"), "'a b'");
        assert_eq!(quote_value("it's\\"), "'it\\'s\\\\'");
        assert_eq!(quote_value("a=b"), "'a=b'");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}", t in "(postgres(ql)?://)?[a-z:@/?&=%,\\[\\] '\\\\0-9.]{0,30}") {
            let _ = parse_conninfo(&s);
            let _ = parse_conninfo(&t);
            let _ = percent_decode(&s);
        }

        #[test]
        fn quoted_values_round_trip(v in "\\PC{0,20}") {
            let s = format!("options={}", quote_value(&v));
            let parsed = parse_conninfo(&s).unwrap();
            prop_assert_eq!(parsed.get("options"), Some(v.as_str()));
        }
    }
}
