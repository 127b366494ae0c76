//! The configuration a restored copy starts with, so that it can never write into the server it
//! was copied from (`docs/threat-model.md`). Pure: bytes in, bytes out.
//!
//! - **Archiving off** by default ([`ArchiveMode`]): a copy that keeps the source's
//!   `archive_mode`/`archive_command` archives its own WAL into the source's archive. pgsafe
//!   appends `archive_mode = 'off'` to the copy's `postgresql.auto.conf` (read after
//!   `postgresql.conf` and its includes, so the last value wins — PostgreSQL's
//!   `src/backend/utils/misc/guc-file.l` applies only the last setting of a name).
//! - **Stale recovery settings** of the source (`recovery_target_*`, `restore_command`,
//!   `primary_conninfo`, … set with `ALTER SYSTEM` or in `postgresql.conf`) are commented out in
//!   the copy, as pgBackRest does: left in force they make the copy's recovery stop at the
//!   source's old target ("recovery ended before configured recovery target was reached") or
//!   fetch WAL from, and stream from, the source's archive and primary.
//! - **In-place tablespaces** (`pg_tblspc/<oid>` directories, `allow_in_place_tablespaces`,
//!   15+): recovery PANICs on them ("unexpected directory entry", `CheckTablespaceDirectory` in
//!   `src/backend/access/transam/xlogrecovery.c`) unless the setting is on, so the copy gets it.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::recovery::quote_value;

/// What the restored copy does with the source's WAL archiving settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveMode {
    /// `archive_mode = 'off'` in the copy (default): it archives nothing, wherever the source's
    /// `archive_command` points.
    #[default]
    Off,
    /// Keep the source's settings: the copy archives with the source's `archive_command` (on its
    /// own new timeline, so its WAL file names differ from the source's).
    Preserve,
}

impl ArchiveMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveMode::Off => "off",
            ArchiveMode::Preserve => "preserve",
        }
    }
}

impl fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArchiveMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(ArchiveMode::Off),
            "preserve" => Ok(ArchiveMode::Preserve),
            _ => Err(format!("unknown archive mode {s:?}: use off or preserve")),
        }
    }
}

/// Settings that steer recovery or replication: left over from the source they must not be in
/// force in a restored copy (PostgreSQL's documentation, "Archive Recovery", "Recovery Target",
/// "Standby Servers"; `standby_mode` and `trigger_file` are the 10–11 names).
pub const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
    "recovery_min_apply_delay",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "standby_mode",
    "trigger_file",
];

/// Prefix of a line pgsafe commented out.
pub const DISABLED_PREFIX: &str =
    "# disabled by pgsafe restore (setting of the backed-up server): ";

/// A setting line commented out (the value is not kept here: it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisabledSetting {
    /// `postgresql.auto.conf` or `postgresql.conf`.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// The setting's name, lower case.
    pub name: String,
}

impl fmt::Display for DisabledSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (line {} of {})", self.name, self.line, self.file)
    }
}

/// The setting a configuration line assigns, lower case (`name = value`, `name value`, or
/// `name=value`; PostgreSQL's names are case-insensitive). `None` for comments, blank lines,
/// `include` directives and anything else.
pub fn setting_name(line: &[u8]) -> Option<String> {
    let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &line[start..];
    let first = *rest.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let end = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$'))
        .unwrap_or(rest.len());
    let after = &rest[end..];
    // A name must be followed by `=`, whitespace and a value, or the end of the line.
    if !(after.is_empty() || after[0] == b'=' || after[0].is_ascii_whitespace()) {
        return None;
    }
    let name = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
    Some(name)
}

/// Comments out every line of `conf` that sets one of [`RECOVERY_SETTINGS`]; `file` names the
/// file in the result. Other bytes are kept as they are.
pub fn disable_recovery_settings(conf: &[u8], file: &str) -> (Vec<u8>, Vec<DisabledSetting>) {
    let mut out = Vec::with_capacity(conf.len() + 128);
    let mut disabled = Vec::new();
    for (i, line) in conf.split_inclusive(|&b| b == b'\n').enumerate() {
        let hit = setting_name(line).filter(|n| RECOVERY_SETTINGS.contains(&n.as_str()));
        match hit {
            Some(name) => {
                out.extend_from_slice(DISABLED_PREFIX.as_bytes());
                out.extend_from_slice(line);
                disabled.push(DisabledSetting {
                    file: file.to_owned(),
                    line: i + 1,
                    name,
                });
            }
            None => out.extend_from_slice(line),
        }
    }
    (out, disabled)
}

/// What pgsafe adds to the copy's `postgresql.auto.conf` besides the recovery settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySettings {
    pub archive: ArchiveMode,
    /// The backup holds in-place tablespaces and the server is 15+.
    pub in_place_tablespaces: bool,
}

impl CopySettings {
    /// `(name, value, why)` of each setting written.
    pub fn settings(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let mut v = Vec::new();
        if self.archive == ArchiveMode::Off {
            v.push((
                "archive_mode",
                "off",
                "a restored copy must not archive its WAL into the archive of the server it was \
                 copied from; set it on with the copy's own archive_command when it needs one",
            ));
        }
        if self.in_place_tablespaces {
            v.push((
                "allow_in_place_tablespaces",
                "on",
                "the backup holds in-place tablespaces (directories in pg_tblspc): without this \
                 setting recovery stops with PANIC \"unexpected directory entry\"",
            ));
        }
        v
    }

    /// The lines, each after a comment saying why (empty when nothing is written).
    pub fn block(&self, header: &str) -> Vec<u8> {
        let settings = self.settings();
        if settings.is_empty() {
            return Vec::new();
        }
        let mut s = format!("# {header}\n");
        for (name, value, why) in settings {
            s.push_str(&format!("# {why}\n{name} = {}\n", quote_value(value)));
        }
        s.into_bytes()
    }
}

/// The copy's new `postgresql.auto.conf`: the source's with its recovery settings commented
/// out, then `extra` blocks appended (each should end with a newline).
pub fn auto_conf(original: &[u8], extra: &[&[u8]]) -> (Vec<u8>, Vec<DisabledSetting>) {
    let (mut out, disabled) = disable_recovery_settings(original, "postgresql.auto.conf");
    for block in extra.iter().filter(|b| !b.is_empty()) {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(block);
    }
    (out, disabled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_of_setting_lines() {
        assert_eq!(
            setting_name(b"  Recovery_Target_Time = 'x'\n").as_deref(),
            Some("recovery_target_time")
        );
        assert_eq!(
            setting_name(b"restore_command='cp %p'").as_deref(),
            Some("restore_command")
        );
        assert_eq!(
            setting_name(b"primary_conninfo 'host=x'").as_deref(),
            Some("primary_conninfo")
        );
        assert_eq!(setting_name(b"# restore_command = 'x'"), None);
        assert_eq!(setting_name(b"   \n"), None);
        assert_eq!(setting_name(b""), None);
        assert_eq!(setting_name(b"=x"), None);
        assert_eq!(setting_name(b"a-b = 1"), None);
        assert_eq!(
            setting_name(b"include 'x.conf'").as_deref(),
            Some("include")
        );
    }

    #[test]
    fn recovery_settings_are_commented_out_and_others_kept() {
        let conf = b"# Do not edit this file manually!\n\
            max_connections = '50'\n\
            recovery_target_time = '2000-01-01 00:00:00+00'\n\
            \tPRIMARY_CONNINFO='host=src password=secret'\n\
            recovery_target_timeline_x = '1'\n\
            restore_command = 'cp /src/arch/%f %p'";
        let (out, disabled) = disable_recovery_settings(conf, "postgresql.auto.conf");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            format!(
                "# Do not edit this file manually!\nmax_connections = '50'\n\
                 {DISABLED_PREFIX}recovery_target_time = '2000-01-01 00:00:00+00'\n\
                 {DISABLED_PREFIX}\tPRIMARY_CONNINFO='host=src password=secret'\n\
                 recovery_target_timeline_x = '1'\n\
                 {DISABLED_PREFIX}restore_command = 'cp /src/arch/%f %p'"
            )
        );
        let names: Vec<String> = disabled.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            names,
            [
                "recovery_target_time (line 3 of postgresql.auto.conf)",
                "primary_conninfo (line 4 of postgresql.auto.conf)",
                "restore_command (line 6 of postgresql.auto.conf)"
            ]
        );
        // Never the value (it may hold a password).
        assert!(!format!("{disabled:?}").contains("secret"));
    }

    #[test]
    fn copy_settings_block() {
        let none = CopySettings {
            archive: ArchiveMode::Preserve,
            in_place_tablespaces: false,
        };
        assert!(none.block("h").is_empty());
        let both = CopySettings {
            archive: ArchiveMode::Off,
            in_place_tablespaces: true,
        };
        let b = String::from_utf8(both.block("written by pgsafe")).unwrap();
        assert!(b.starts_with("# written by pgsafe\n"), "{b}");
        assert!(b.contains("\narchive_mode = 'off'\n"), "{b}");
        assert!(b.ends_with("\nallow_in_place_tablespaces = 'on'\n"), "{b}");
        let (out, d) = auto_conf(
            b"archive_mode = 'on'",
            &[&both.block("h"), b"", b"x = '1'\n"],
        );
        let out = String::from_utf8(out).unwrap();
        assert!(d.is_empty());
        assert!(out.starts_with("archive_mode = 'on'\n# h\n"), "{out}");
        assert!(out.ends_with("'on'\nx = '1'\n"), "{out}");
        assert_eq!("preserve".parse::<ArchiveMode>(), Ok(ArchiveMode::Preserve));
        assert!("on".parse::<ArchiveMode>().is_err());
    }

    proptest! {
        /// Any bytes: no panic, every line kept (disabled ones behind the prefix), and a second
        /// pass disables nothing more.
        #[test]
        fn disabling_never_panics_and_is_idempotent(conf in proptest::collection::vec(
            prop_oneof![
                Just(b"restore_command = 'x'\n".to_vec()),
                Just(b"  recovery_target_lsn '0/1'\n".to_vec()),
                Just(b"work_mem = 4MB\n".to_vec()),
                Just(b"# comment\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            0..12,
        )) {
            let conf: Vec<u8> = conf.concat();
            let (out, disabled) = disable_recovery_settings(&conf, "f");
            let lines_in = conf.split_inclusive(|&b| b == b'\n').count();
            let lines_out = out.split_inclusive(|&b| b == b'\n').count();
            prop_assert_eq!(lines_in, lines_out);
            prop_assert_eq!(out.len(), conf.len() + disabled.len() * DISABLED_PREFIX.len());
            let (again, more) = disable_recovery_settings(&out, "f");
            prop_assert!(more.is_empty());
            prop_assert_eq!(again, out);
        }
    }
}
