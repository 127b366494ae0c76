//! Just enough of PostgreSQL's configuration-file syntax (`guc-file.l`) to find the recovery
//! settings doctor cares about: `restore_command` and `primary_conninfo`.
//!
//! Syntax: one `name [=] value` per line, `#` starts a comment outside quotes, names are
//! case-insensitive, values are bare words or single-quoted strings (`''` and `\'` are quotes,
//! C-style backslash escapes); `include`, `include_if_exists` and `include_dir` pull in other
//! files (relative to the including file). The last setting wins; `postgresql.auto.conf` is read
//! after `postgresql.conf`. On 10–11 the recovery settings live in `recovery.conf` instead.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::types::PgVersion;

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// Lower-case name.
    pub name: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// The recovery and archiving settings found, and where pgsafe looked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub restore_command: Option<Setting>,
    /// Its password (if any) is masked: doctor prints settings, and a password must never
    /// reach a terminal, a log or `--json`.
    pub primary_conninfo: Option<Setting>,
    pub archive_mode: Option<Setting>,
    pub archive_command: Option<Setting>,
    /// 15+: an archive module instead of a command.
    pub archive_library: Option<Setting>,
    /// Developer option (15+): recovery refuses in-place tablespaces unless it is on.
    pub allow_in_place_tablespaces: Option<Setting>,
    pub files_read: Vec<PathBuf>,
    /// What could not be checked (e.g. postgresql.conf is not in PGDATA).
    pub notes: Vec<String>,
}

impl Settings {
    /// The value of `restore_command` if set to something non-empty.
    pub fn restore_command(&self) -> Option<&str> {
        self.restore_command
            .as_ref()
            .map(|s| s.value.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// `archive_command` when archiving is on (`archive_mode` on/always/true/yes/1) and it is
    /// not empty.
    pub fn archive_command(&self) -> Option<&str> {
        let mode = self.archive_mode.as_ref()?.value.to_ascii_lowercase();
        if !matches!(mode.as_str(), "on" | "always" | "true" | "yes" | "1") {
            return None;
        }
        self.archive_command
            .as_ref()
            .map(|s| s.value.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// `allow_in_place_tablespaces` is on in the configuration files.
    pub fn allows_in_place_tablespaces(&self) -> bool {
        self.allow_in_place_tablespaces.as_ref().is_some_and(|s| {
            matches!(
                s.value.to_ascii_lowercase().as_str(),
                "on" | "true" | "yes" | "1"
            )
        })
    }

    /// `archive_library` when set (15+).
    pub fn archive_library(&self) -> Option<&str> {
        self.archive_library
            .as_ref()
            .map(|s| s.value.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    pub fn primary_conninfo(&self) -> Option<&str> {
        self.primary_conninfo
            .as_ref()
            .map(|s| s.value.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

/// A parsed line: lower-case name, value, 1-based line number.
pub type ConfEntry = (String, String, usize);

/// Parses configuration text; lines that do not parse are skipped (the server would refuse
/// them; doctor only looks for a few settings).
pub fn parse_conf_text(text: &str) -> Vec<ConfEntry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| parse_line(l).map(|(n, v)| (n, v, i + 1)))
        .collect()
}

fn parse_line(line: &str) -> Option<(String, String)> {
    let s = line.trim_start();
    let name_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len());
    if name_len == 0 {
        return None;
    }
    let name = s[..name_len].to_ascii_lowercase();
    let mut rest = s[name_len..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let value = if let Some(q) = rest.strip_prefix('\'') {
        unquote(q)?
    } else {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(rest.len());
        rest[..end].to_owned()
    };
    Some((name, value))
}

/// The body of a single-quoted string (after the opening quote), unescaped; `None` if it is
/// not terminated on this line.
fn unquote(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
    None
}

const MAX_DEPTH: usize = 10;

/// Reads `file` and what it includes, appending entries in order.
fn read_file(path: &Path, depth: usize, out: &mut Vec<Setting>, s: &mut Settings, required: bool) {
    if depth > MAX_DEPTH {
        s.notes.push(format!(
            "{}: includes nested more than {MAX_DEPTH} deep; not followed",
            path.display()
        ));
        return;
    }
    // Configuration files may be symbolic links (some packagings link postgresql.conf), but
    // never a FIFO or a device: those would hang the doctor.
    let text = match crate::datadir::read_bounded(path, crate::datadir::MAX_SMALL_FILE, true) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return,
        Err(e) => {
            s.notes
                .push(format!("could not read {}: {e}", path.display()));
            return;
        }
    };
    s.files_read.push(path.to_path_buf());
    let dir = path.parent().unwrap_or(Path::new("."));
    for (name, value, line) in parse_conf_text(&text) {
        match name.as_str() {
            "include" | "include_if_exists" => {
                read_file(&dir.join(&value), depth + 1, out, s, name == "include");
            }
            "include_dir" => {
                let d = dir.join(&value);
                let mut names: Vec<PathBuf> = match fs::read_dir(&d) {
                    Ok(rd) => rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.ends_with(".conf") && !n.starts_with('.'))
                        })
                        .collect(),
                    Err(e) => {
                        s.notes
                            .push(format!("could not read include_dir {}: {e}", d.display()));
                        continue;
                    }
                };
                names.sort();
                for p in names {
                    read_file(&p, depth + 1, out, s, true);
                }
            }
            _ => out.push(Setting {
                name,
                value,
                file: path.to_path_buf(),
                line,
            }),
        }
    }
}

/// The recovery settings of the data directory `datadir` for `version`, reading `extra` config
/// files after PGDATA's `postgresql.conf` and before `postgresql.auto.conf`.
pub fn read_settings(datadir: &Path, version: Option<PgVersion>, extra: &[PathBuf]) -> Settings {
    let mut s = Settings::default();
    let mut entries = Vec::new();
    let old_style = version.is_some_and(|v| v.num() < 120000);
    let main = datadir.join("postgresql.conf");
    if !main.exists() && extra.is_empty() {
        s.notes.push(format!(
            "{} does not exist (Debian and Ubuntu keep it in /etc/postgresql/<version>/<cluster>/): \
             settings made there were not checked; pass --config-file",
            main.display()
        ));
    }
    read_file(&main, 0, &mut entries, &mut s, false);
    for f in extra {
        read_file(f, 0, &mut entries, &mut s, true);
    }
    read_file(
        &datadir.join("postgresql.auto.conf"),
        0,
        &mut entries,
        &mut s,
        false,
    );
    // 10–11 read the recovery settings from recovery.conf only (and ignore them elsewhere).
    let mut recovery = Vec::new();
    if old_style {
        read_file(
            &datadir.join("recovery.conf"),
            0,
            &mut recovery,
            &mut s,
            false,
        );
    }
    for e in entries {
        match e.name.as_str() {
            "restore_command" if !old_style => s.restore_command = Some(e),
            "primary_conninfo" if !old_style => s.primary_conninfo = Some(e),
            "archive_mode" => s.archive_mode = Some(e),
            "archive_command" => s.archive_command = Some(e),
            "archive_library" => s.archive_library = Some(e),
            "allow_in_place_tablespaces" => s.allow_in_place_tablespaces = Some(e),
            _ => {}
        }
    }
    for e in recovery {
        match e.name.as_str() {
            "restore_command" => s.restore_command = Some(e),
            "primary_conninfo" => s.primary_conninfo = Some(e),
            _ => {}
        }
    }
    if let Some(p) = s.primary_conninfo.as_mut() {
        p.value = mask_conninfo(&p.value);
    }
    s
}

/// `conninfo` with every password value replaced by `********` (keyword/value form and URIs).
/// What cannot be parsed is not shown at all: a wrong guess could print the password.
pub fn mask_conninfo(conninfo: &str) -> String {
    const MASK: &str = "********";
    if let Ok(opts) = crate::conninfo::parse_conninfo(conninfo) {
        if !opts.iter().any(|(k, _)| crate::conninfo::is_secret_key(k)) {
            return conninfo.to_owned();
        }
        return opts
            .iter()
            .map(|(k, v)| {
                if crate::conninfo::is_secret_key(k) {
                    format!("{k}={MASK}")
                } else {
                    format!("{k}={}", crate::conninfo::quote_value(v))
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    let lower = conninfo.to_ascii_lowercase();
    if lower.contains("password") || lower.contains('@') {
        "(set, but not shown: pgsafe could not parse it to hide its password)".into()
    } else {
        conninfo.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_postgres_accepts() {
        let text = "# comment\n\
                    restore_command = 'cp /arch/%f \"%p\"'   # trailing\n\
                    Archive_Mode on\n\
                    x='it''s \\'quoted\\''\n\
                    broken = 'unterminated\n\
                    y=5#c\n";
        let e = parse_conf_text(text);
        assert_eq!(
            e,
            vec![
                ("restore_command".into(), "cp /arch/%f \"%p\"".into(), 2),
                ("archive_mode".into(), "on".into(), 3),
                ("x".into(), "it's 'quoted'".into(), 4),
                ("y".into(), "5".into(), 6),
            ]
        );
    }

    #[test]
    fn last_setting_wins_and_auto_conf_comes_last() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("conf.d")).unwrap();
        fs::write(
            d.join("postgresql.conf"),
            "restore_command = 'a'\ninclude_dir 'conf.d'\ninclude_if_exists 'nope.conf'\n",
        )
        .unwrap();
        fs::write(d.join("conf.d/10.conf"), "restore_command = 'b'\n").unwrap();
        fs::write(d.join("conf.d/.hidden.conf"), "restore_command = 'h'\n").unwrap();
        let v15 = PgVersion::from_num(150000).ok();
        let s = read_settings(d, v15, &[]);
        assert_eq!(s.restore_command(), Some("b"));
        fs::write(d.join("postgresql.auto.conf"), "restore_command = ''\n").unwrap();
        let s = read_settings(d, v15, &[]);
        assert_eq!(s.restore_command(), None, "an empty value unsets it");
        assert!(s.notes.is_empty(), "{:?}", s.notes);
    }

    #[test]
    fn old_versions_read_recovery_conf_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("postgresql.conf"), "restore_command = 'x'\n").unwrap();
        let v11 = PgVersion::from_num(110000).ok();
        assert_eq!(read_settings(d, v11, &[]).restore_command(), None);
        fs::write(
            d.join("recovery.conf"),
            "restore_command = 'cp /a/%f %p'\nprimary_conninfo='host=x'\n",
        )
        .unwrap();
        let s = read_settings(d, v11, &[]);
        assert_eq!(s.restore_command(), Some("cp /a/%f %p"));
        assert_eq!(s.primary_conninfo(), Some("host=x"));
    }

    #[test]
    fn passwords_are_masked() {
        for (ci, secret) in [
            (
                "host=p user=rep password=s3cret application_name=x",
                "s3cret",
            ),
            ("host=p password='a b\\'c'", "a b"),
            ("postgresql://rep:hunter2@primary:5432/db", "hunter2"),
            ("postgresql://rep@primary/db?password=hunter3", "hunter3"),
            ("host=p password=unterminated'", "unterminated"),
            ("host=p sslpassword=keypass", "keypass"),
        ] {
            let m = mask_conninfo(ci);
            assert!(!m.contains(secret), "{ci} -> {m}");
        }
        assert_eq!(mask_conninfo("host=p user=rep"), "host=p user=rep");
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("postgresql.auto.conf"),
            "primary_conninfo = 'host=p user=rep password=s3cret'\n",
        )
        .unwrap();
        let s = read_settings(dir.path(), PgVersion::from_num(160000).ok(), &[]);
        let v = s.primary_conninfo().unwrap();
        assert!(
            v.contains("password=********") && !v.contains("s3cret"),
            "{v}"
        );
        assert!(!serde_json::to_string(&s).unwrap().contains("s3cret"));
    }

    #[test]
    fn archive_settings_are_read_on_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(
            d.join("postgresql.conf"),
            "archive_mode = on\narchive_command = 'cp %p /arch/%f'\n",
        )
        .unwrap();
        for v in [100000, 110000, 120000, 180000] {
            let s = read_settings(d, PgVersion::from_num(v).ok(), &[]);
            assert_eq!(s.archive_command(), Some("cp %p /arch/%f"), "{v}");
        }
        fs::write(d.join("postgresql.auto.conf"), "archive_mode = off\n").unwrap();
        let s = read_settings(d, PgVersion::from_num(160000).ok(), &[]);
        assert_eq!(s.archive_command(), None);
    }

    #[test]
    fn missing_postgresql_conf_is_noted() {
        let dir = tempfile::tempdir().unwrap();
        let s = read_settings(dir.path(), PgVersion::from_num(160000).ok(), &[]);
        assert!(s.notes[0].contains("--config-file"), "{:?}", s.notes);
    }
}
