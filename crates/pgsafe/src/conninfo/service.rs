//! Connection service files (`pg_service.conf`), as libpq reads them ("The Connection Service
//! File"; fe-connect.c `parseServiceInfo`, `parseServiceFile`).
//!
//! - The service name is the `service` option, else `PGSERVICE`.
//! - Files, in order: `PGSERVICEFILE` if set (it must exist), else `~/.pg_service.conf` if it
//!   exists; then, if the service was not found there, `pg_service.conf` in `PGSYSCONFDIR`
//!   (libpq's compiled-in `SYSCONFDIR` when unset: pgsafe looks in the first of
//!   [`DEFAULT_SYSCONF_DIRS`] that has the file). Not found in any → error.
//! - A file is read line by line: surrounding white space is dropped, empty lines and lines
//!   starting with `#` are skipped, `[name]` starts a section (the text between `[` and the
//!   first `]` must be the name exactly). Inside the wanted section every line is `key=value`
//!   with no spaces around `=` (libpq splits at the first `=` and compares the key as is); an
//!   unknown key or a line without `=` is a syntax error; `service=` inside a section is
//!   refused (no nesting). The next section header ends the service.
//! - A setting from the service applies only where the connection string (and `-h`/`-p`/`-U`)
//!   left the option unset; environment variables fill in after it (libpq
//!   `conninfo_add_defaults`: conninfo > service > environment > defaults).
//!
//! [`parse_service`] is pure; [`read_service_file`] is the IO.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::ConnInfoError;
use super::parse::keyword;

/// Where libpq's `SYSCONFDIR` usually is: Debian/Ubuntu's libpq, then PGDG RPMs'.
pub const DEFAULT_SYSCONF_DIRS: [&str; 2] = ["/etc/postgresql-common", "/etc/sysconfig/pgsql"];

/// libpq reads service-file lines into a 1024-byte buffer; a longer line is an error.
const MAX_LINE: usize = 1022;

/// What [`read_service_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceFileRead {
    Missing,
    Read(Vec<u8>),
    Unreadable(String),
}

/// Reads a service file (it holds no secrets of its own unless the user put a password in it;
/// its text is never shown in messages, only line numbers).
pub fn read_service_file(path: &Path) -> ServiceFileRead {
    match std::fs::read(path) {
        Ok(bytes) => ServiceFileRead::Read(bytes),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            ServiceFileRead::Missing
        }
        Err(e) => ServiceFileRead::Unreadable(e.to_string()),
    }
}

/// The settings of service `name` in the text of the service file at `path`, in file order, or
/// `None` if the file has no such section. Errors carry libpq's wording and the line number.
pub fn parse_service(
    path: &Path,
    bytes: &[u8],
    name: &str,
) -> Result<Option<ServiceSettings>, ConnInfoError> {
    let err = |what: String| ConnInfoError::Service(what);
    let mut found = false;
    let mut settings = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        if raw.len() > MAX_LINE {
            return Err(err(format!(
                "line {line_no} too long in service file \"{}\"",
                path.display()
            )));
        }
        let line = raw.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        if line[0] == b'[' {
            if found {
                break;
            }
            let rest = &line[1..];
            found = rest.len() > name.len()
                && rest.starts_with(name.as_bytes())
                && rest[name.len()] == b']';
            continue;
        }
        if !found {
            continue;
        }
        let syntax = || {
            err(format!(
                "syntax error in service file \"{}\", line {line_no}",
                path.display()
            ))
        };
        let Some(eq) = line.iter().position(|b| *b == b'=') else {
            return Err(syntax());
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        if key == b"service" {
            return Err(err(format!(
                "nested service specifications not supported in service file \"{}\", line {line_no}",
                path.display()
            )));
        }
        let kw = std::str::from_utf8(key)
            .ok()
            .and_then(keyword)
            .ok_or_else(syntax)?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| syntax())?;
        if value.contains('\0') {
            return Err(syntax());
        }
        settings.push((kw.name, value));
    }
    Ok(found.then_some(settings))
}

/// Settings of one service, in file order.
pub type ServiceSettings = Vec<(&'static str, String)>;

/// The injected reads the lookup needs.
pub(crate) struct ServiceWorld<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
    pub read: &'a dyn Fn(&Path) -> ServiceFileRead,
}

/// libpq's `parseServiceInfo`: the settings of service `name` and the file they came from.
pub(crate) fn lookup_service(
    name: &str,
    w: &ServiceWorld<'_>,
) -> Result<(PathBuf, ServiceSettings), ConnInfoError> {
    let unreadable = |path: &Path, why: &str| {
        ConnInfoError::Service(format!(
            "could not read service file \"{}\": {why}",
            path.display()
        ))
    };
    let user_file = match (w.env)("PGSERVICEFILE") {
        Some(f) => Some((PathBuf::from(f), true)),
        None => w.home.as_ref().map(|h| (h.join(".pg_service.conf"), false)),
    };
    if let Some((path, must_exist)) = user_file {
        match (w.read)(&path) {
            ServiceFileRead::Read(bytes) => {
                if let Some(s) = parse_service(&path, &bytes, name)? {
                    return Ok((path, s));
                }
            }
            ServiceFileRead::Missing if must_exist => {
                return Err(ConnInfoError::Service(format!(
                    "service file \"{}\" not found",
                    path.display()
                )));
            }
            ServiceFileRead::Missing => {}
            ServiceFileRead::Unreadable(why) => return Err(unreadable(&path, &why)),
        }
    }
    let sys_dirs: Vec<PathBuf> = match (w.env)("PGSYSCONFDIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => DEFAULT_SYSCONF_DIRS.iter().map(PathBuf::from).collect(),
    };
    for dir in sys_dirs {
        let path = dir.join("pg_service.conf");
        match (w.read)(&path) {
            ServiceFileRead::Read(bytes) => {
                if let Some(s) = parse_service(&path, &bytes, name)? {
                    return Ok((path, s));
                }
                // libpq reads one system file only.
                break;
            }
            ServiceFileRead::Missing => {}
            ServiceFileRead::Unreadable(why) => return Err(unreadable(&path, &why)),
        }
    }
    Err(ConnInfoError::Service(format!(
        "definition of service \"{name}\" not found"
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str, name: &str) -> Result<Option<Vec<(&'static str, String)>>, String> {
        parse_service(Path::new("/s.conf"), text.as_bytes(), name).map_err(|e| e.to_string())
    }

    fn kv(v: &[(&'static str, &str)]) -> Option<Vec<(&'static str, String)>> {
        Some(v.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    #[test]
    fn sections_comments_and_whitespace() {
        let text = "# comment\n[other]\nhost=x\n\n  [prod]  \n  host=db1\t\nport=5433\n# c\nsslmode=verify-full\n[next]\nhost=y\n";
        assert_eq!(
            parse(text, "prod").unwrap(),
            kv(&[
                ("host", "db1"),
                ("port", "5433"),
                ("sslmode", "verify-full")
            ])
        );
        assert_eq!(parse(text, "other").unwrap(), kv(&[("host", "x")]));
        assert_eq!(parse(text, "missing").unwrap(), None);
        // The name must be followed by ']' directly; a prefix of the name does not match.
        assert_eq!(parse("[prod2]\nhost=a\n", "prod").unwrap(), None);
        assert_eq!(parse("[pro]\nhost=a\n", "prod").unwrap(), None);
        // Anything after the ']' is ignored, as libpq does.
        assert_eq!(
            parse("[prod] trailing\nhost=a\n", "prod").unwrap(),
            kv(&[("host", "a")])
        );
        // An empty section is found.
        assert_eq!(parse("[prod]\n", "prod").unwrap(), kv(&[]));
        // Values keep inner spaces and '=' signs; CRLF line ends are fine.
        assert_eq!(
            parse("[p]\r\noptions=-c a=b -c x=y\r\n", "p").unwrap(),
            kv(&[("options", "-c a=b -c x=y")])
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        assert_eq!(
            parse("[p]\nhost db1\n", "p").unwrap_err(),
            "syntax error in service file \"/s.conf\", line 2"
        );
        // libpq compares the key as written: a space before '=' makes it unknown.
        assert_eq!(
            parse("[p]\nhost =db1\n", "p").unwrap_err(),
            "syntax error in service file \"/s.conf\", line 2"
        );
        assert_eq!(
            parse("[p]\n\nbogus=1\n", "p").unwrap_err(),
            "syntax error in service file \"/s.conf\", line 3"
        );
        assert_eq!(
            parse("[p]\nservice=q\n", "p").unwrap_err(),
            "nested service specifications not supported in service file \"/s.conf\", line 2"
        );
        // Errors outside the wanted section are not looked at.
        assert!(parse("[q]\nbogus\n[p]\nhost=a\n", "p").is_ok());
        let long = format!("[p]\nhost={}\n", "a".repeat(2000));
        assert!(parse(&long, "p").unwrap_err().contains("line 2 too long"));
        // A password in the file never shows in an error.
        let e = parse("[p]\npassword=hunter2\nbad\n", "p").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    struct Files(HashMap<PathBuf, ServiceFileRead>);

    fn lookup(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        name: &str,
    ) -> Result<(PathBuf, ServiceSettings), String> {
        let files = Files(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), ServiceFileRead::Read(t.as_bytes().into())))
                .collect(),
        );
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = |k: &str| env.get(k).cloned();
        let read = |p: &Path| files.0.get(p).cloned().unwrap_or(ServiceFileRead::Missing);
        let w = ServiceWorld {
            env: &env,
            home: Some("/home/a".into()),
            read: &read,
        };
        lookup_service(name, &w).map_err(|e| e.to_string())
    }

    #[test]
    fn lookup_order_follows_libpq() {
        let user = ("/home/a/.pg_service.conf", "[p]\nhost=user\n");
        let sys = (
            "/etc/postgresql-common/pg_service.conf",
            "[p]\nhost=sys\n[s]\nhost=only-sys\n",
        );
        let (path, s) = lookup(&[user, sys], &[], "p").unwrap();
        assert_eq!((path.to_str().unwrap(), s[0].1.as_str()), (user.0, "user"));
        // Not in the user's file: the system file.
        let (path, s) = lookup(&[user, sys], &[], "s").unwrap();
        assert_eq!(
            (path.to_str().unwrap(), s[0].1.as_str()),
            (sys.0, "only-sys")
        );
        // PGSERVICEFILE replaces ~/.pg_service.conf; PGSYSCONFDIR the system directory.
        let mine = ("/x/my.conf", "[p]\nhost=mine\n");
        let (_, s) = lookup(&[user, mine], &[("PGSERVICEFILE", "/x/my.conf")], "p").unwrap();
        assert_eq!(s[0].1, "mine");
        let other_sys = ("/opt/etc/pg_service.conf", "[p]\nhost=opt\n");
        let (_, s) = lookup(&[sys, other_sys], &[("PGSYSCONFDIR", "/opt/etc")], "p").unwrap();
        assert_eq!(s[0].1, "opt");
        // A PGSERVICEFILE that does not exist is an error (libpq: "not found").
        assert_eq!(
            lookup(&[sys], &[("PGSERVICEFILE", "/nope")], "p").unwrap_err(),
            "service file \"/nope\" not found"
        );
        assert_eq!(
            lookup(&[user, sys], &[], "zz").unwrap_err(),
            "definition of service \"zz\" not found"
        );
        // The user's file wins even when the section is empty.
        let (_, s) = lookup(&[("/home/a/.pg_service.conf", "[p]\n"), sys], &[], "p").unwrap();
        assert!(s.is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "(\\[?[a-z]{0,3}\\]?|[a-z_]{0,8}=?[ -~]{0,8}|#.*|\\s*)(\\n(\\[?[a-z]{0,3}\\]?|[a-z_]{0,8}=?[ -~]{0,8}))*", name in "[a-z]{0,3}") {
            let _ = parse_service(Path::new("/f"), text.as_bytes(), &name);
        }

        #[test]
        fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), name in "[a-z]{1,3}") {
            let _ = parse_service(Path::new("/f"), &bytes, &name);
        }
    }
}
