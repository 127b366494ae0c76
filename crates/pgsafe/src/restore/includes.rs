//! Recovery settings of the source hidden in files its configuration includes (`include`,
//! `include_if_exists`, `include_dir`). The copy reads those files too, but they are not
//! pgsafe's to edit (they may live outside the copy, in the source's own configuration
//! directory): instead each recovery setting found there is set back to PostgreSQL's default in
//! the copy's `postgresql.auto.conf`, which is read last, so it wins (`ProcessConfigFileInternal`
//! in `src/backend/utils/misc/guc-file.l` applies only the last setting of each name). The
//! reset lines come before pgsafe's own recovery settings: the recovery-target settings'
//! check hooks see them in file order, so a stale target is gone before pgsafe's is applied
//! (`src/backend/utils/misc/guc.c`, "multiple recovery targets specified").
//!
//! Only 12+: before 12 these are `recovery.conf` settings, which `postgresql.conf` cannot carry
//! (the server would not have started).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::config::{RECOVERY_SETTINGS, setting_name};
use crate::types::PgVersion;

/// Nesting limit of includes, as PostgreSQL's `CONF_FILE_MAX_DEPTH` (`guc-file.l`).
const MAX_DEPTH: usize = 10;
/// Included files larger than this are not read (PostgreSQL's own are a few KiB).
const MAX_BYTES: u64 = 16 << 20;

/// An include directive of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Include {
    /// `include` or `include_if_exists`: one file.
    File(Vec<u8>),
    /// `include_dir`: every `*.conf` file of a directory, in name order.
    Dir(Vec<u8>),
}

/// The include directives of `conf`, in order. Pure. The value may be quoted (`'a''b'`, with
/// backslash escapes left as they are) or bare, after optional `=`; a comment may follow.
pub fn include_directives(conf: &[u8]) -> Vec<Include> {
    let mut out = Vec::new();
    for line in conf.split(|&b| b == b'\n') {
        let Some(name) = setting_name(line) else {
            continue;
        };
        let dir = match name.as_str() {
            "include" | "include_if_exists" => false,
            "include_dir" => true,
            _ => continue,
        };
        let start = line
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(0);
        let mut rest = &line[start + name.len()..];
        rest = trim_start(rest);
        if let Some(r) = rest.strip_prefix(b"=") {
            rest = trim_start(r);
        }
        let Some(value) = parse_value(rest) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        out.push(if dir {
            Include::Dir(value)
        } else {
            Include::File(value)
        });
    }
    out
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn parse_value(rest: &[u8]) -> Option<Vec<u8>> {
    if let Some(mut q) = rest.strip_prefix(b"'") {
        let mut v = Vec::new();
        loop {
            let i = q.iter().position(|&b| b == b'\'')?;
            v.extend_from_slice(&q[..i]);
            q = &q[i + 1..];
            match q.strip_prefix(b"'") {
                Some(r) => {
                    v.push(b'\'');
                    q = r;
                }
                None => return Some(v),
            }
        }
    }
    let end = rest
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'#')
        .unwrap_or(rest.len());
    Some(rest[..end].to_vec())
}

/// PostgreSQL's default of a recovery setting on `version` (12+); `None` for names that are no
/// server setting there (`standby_mode`, `trigger_file`; `promote_trigger_file` from 16).
pub fn default_value(name: &str, version: PgVersion) -> Option<&'static str> {
    Some(match name {
        "restore_command" | "archive_cleanup_command" | "recovery_end_command" => "",
        "recovery_target" | "recovery_target_name" | "recovery_target_time" => "",
        "recovery_target_xid" | "recovery_target_lsn" => "",
        "recovery_target_inclusive" => "on",
        "recovery_target_timeline" => "latest",
        "recovery_target_action" => "pause",
        "recovery_min_apply_delay" => "0",
        "primary_conninfo" | "primary_slot_name" => "",
        "promote_trigger_file" if !version.at_least(16) => "",
        _ => return None,
    })
}

/// A file that an include names, as the copy's server will read it: relative to the including
/// file's directory.
fn resolve(including: &Path, value: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let p = Path::new(std::ffi::OsStr::from_bytes(value));
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        including.parent().unwrap_or(Path::new("/")).join(p)
    }
}

/// A regular file's bytes (following links, as the server does), bounded; `None` for anything
/// else or what cannot be read (the server fails on a missing `include` itself).
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    // The paths come from configuration files of the backup, which its writer controls, and
    // restore runs as root: look before opening (opening a FIFO waits for a writer; opening
    // some devices has effects, e.g. arms a watchdog), and open non-blocking in case it was
    // swapped since.
    let file = crate::datadir::open_regular(path, true).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The recovery settings (lower case, sorted, once each) that the files included from `roots`
/// (the copy's `postgresql.conf` and `postgresql.auto.conf`, already rewritten) set, with the
/// included file each was first seen in. Reads only; never writes.
pub fn recovery_settings_in_includes(roots: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = Vec::new();
    for root in roots {
        if let Some(bytes) = read_regular(root) {
            push_includes(root, &bytes, 1, &mut stack);
        }
    }
    let mut seen = 0usize;
    while let Some((path, depth)) = stack.pop() {
        seen += 1;
        // A loop of includes (PostgreSQL refuses it at depth 10): stop reading, never hang.
        if depth > MAX_DEPTH || seen > 1000 {
            continue;
        }
        let Some(bytes) = read_regular(&path) else {
            continue;
        };
        for line in bytes.split(|&b| b == b'\n') {
            if let Some(n) = setting_name(line) {
                if RECOVERY_SETTINGS.contains(&n.as_str()) && !found.iter().any(|(f, _)| *f == n) {
                    found.push((n, path.clone()));
                }
            }
        }
        push_includes(&path, &bytes, depth + 1, &mut stack);
    }
    found.sort();
    found
}

fn push_includes(file: &Path, bytes: &[u8], depth: usize, stack: &mut Vec<(PathBuf, usize)>) {
    for inc in include_directives(bytes) {
        match inc {
            Include::File(v) => stack.push((resolve(file, &v), depth)),
            Include::Dir(v) => {
                let dir = resolve(file, &v);
                let Ok(rd) = fs::read_dir(&dir) else {
                    continue;
                };
                // guc-file.l: only names ending in ".conf" and not starting with '.'.
                let mut names: Vec<PathBuf> = rd
                    .flatten()
                    .map(|e| e.file_name())
                    .filter(|n| {
                        let n = n.as_encoded_bytes();
                        n.ends_with(b".conf") && !n.starts_with(b".")
                    })
                    .map(|n| dir.join(n))
                    .collect();
                names.sort();
                stack.extend(names.into_iter().map(|p| (p, depth)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn directives_with_odd_spelling() {
        let conf = b"Include_If_Exists   'extra.conf'   # c\ninclude_dir='conf.d'\n\
                     include = 'it''s.conf'\ninclude bare.conf # x\n# include 'no.conf'\n\
                     include_files = 'no'\nshared_buffers = 1\n";
        assert_eq!(
            include_directives(conf),
            vec![
                Include::File(b"extra.conf".to_vec()),
                Include::Dir(b"conf.d".to_vec()),
                Include::File(b"it's.conf".to_vec()),
                Include::File(b"bare.conf".to_vec()),
            ]
        );
    }

    #[test]
    fn defaults_per_version() {
        let v = |m: u32| PgVersion::from_num(m * 10000).unwrap();
        assert_eq!(
            default_value("recovery_target_timeline", v(12)),
            Some("latest")
        );
        assert_eq!(default_value("promote_trigger_file", v(15)), Some(""));
        assert_eq!(default_value("promote_trigger_file", v(16)), None);
        assert_eq!(default_value("standby_mode", v(12)), None);
        for n in RECOVERY_SETTINGS {
            if !matches!(*n, "standby_mode" | "trigger_file" | "promote_trigger_file") {
                assert!(default_value(n, v(18)).is_some(), "{n}");
            }
        }
    }

    #[test]
    fn includes_are_followed_relative_to_the_including_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("postgresql.conf");
        fs::write(
            &root,
            "include_dir 'conf.d'\ninclude_if_exists 'missing.conf'\n",
        )
        .unwrap();
        fs::create_dir(d.path().join("conf.d")).unwrap();
        fs::write(
            d.path().join("conf.d/a.conf"),
            "Recovery_End_Command = 'x'\ninclude '../b.conf'\n",
        )
        .unwrap();
        fs::write(
            d.path().join("conf.d/.hidden.conf"),
            "primary_slot_name = 's'\n",
        )
        .unwrap();
        fs::write(d.path().join("conf.d/c.txt"), "primary_slot_name = 's'\n").unwrap();
        // A loop back to the root ends at the depth limit.
        fs::write(
            d.path().join("b.conf"),
            "recovery_target_lsn='0/1'\ninclude 'postgresql.conf'\n",
        )
        .unwrap();
        let found: Vec<String> = recovery_settings_in_includes(&[root])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found, vec!["recovery_end_command", "recovery_target_lsn"]);
    }

    #[test]
    fn a_fifo_or_device_in_an_include_is_skipped_without_hanging() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let root = d.path().join("postgresql.conf");
        fs::write(
            &root,
            format!("include '{}'\ninclude '/dev/zero'\n", fifo.display()),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(recovery_settings_in_includes(&[root]));
        });
        // A hang is the failure; the limit only turns it into a failed test.
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("reading the includes hung on a FIFO");
        assert!(found.is_empty(), "{found:?}");
    }

    proptest! {
        #[test]
        fn directives_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = include_directives(&bytes);
        }
    }
}
