//! A restored copy must never write into its source (`docs/threat-model.md`):
//! - a backup during which a tablespace was created is refused (its `CREATE TABLESPACE` replays
//!   with the source's absolute location; see `backup/tablespaces.rs`);
//! - the copy's configuration: archiving off unless asked to keep it, the source's stale
//!   recovery settings commented out, in-place tablespaces allowed (see [`super::config`]).
//!
//! The new timeline at the end of recovery is in [`super::recovery::recovery_files`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;

use crate::fsutil::{FsError, IoContext};
use crate::info::TablespaceChangeKind;

use super::config::{self, ArchiveMode, CopySettings, DisabledSetting};
use super::includes;
use super::source::Source;
use super::{RestoreError, RestoreOptions, Writer};

/// Configuration files larger than this are not rewritten (PostgreSQL's own are a few KiB).
const MAX_CONF_BYTES: u64 = 16 << 20;

/// Refuses a backup during which a tablespace was created; returns warnings for dropped ones.
pub(super) fn check_tablespace_changes(source: &Source) -> Result<Vec<String>, RestoreError> {
    if source.from_copy {
        check_copy_tablespaces(source)?;
    }
    let Some(info) = &source.info else {
        return Ok(Vec::new());
    };
    let (created, dropped): (Vec<_>, Vec<_>) = info
        .tablespace_changes
        .iter()
        .partition(|c| c.change == TablespaceChangeKind::Created);
    // In-place tablespaces live inside pg_tblspc of the copy itself: replaying their creation
    // writes nowhere else.
    let outside: Vec<String> = created
        .iter()
        .filter(|c| !c.location.is_empty())
        .map(|c| c.to_string())
        .collect();
    if !outside.is_empty() {
        return Err(RestoreError::TablespaceCreatedDuringBackup {
            backup: source.root.clone(),
            changes: outside.join("; "),
        });
    }
    Ok(dropped
        .iter()
        .map(|c| {
            format!(
                "{c}: recovery replays the drop, which removes that tablespace's restored files"
            )
        })
        .collect())
}

/// A snapshot-mode copy has no `pgsafe.json`, but its `tablespace_map` is the one the server
/// wrote at the backup's start: a `pg_tblspc/<oid>` link it does not list is a tablespace
/// created during the backup (and the link, copied as a link, points at the live location).
fn check_copy_tablespaces(source: &Source) -> Result<(), RestoreError> {
    let dir = source.root.join("pg_tblspc");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::new("read directory", dir, e).into()),
    };
    let mut created = Vec::new();
    for entry in rd {
        let entry = entry.ctx("read directory", &dir)?;
        let name = entry.file_name();
        let Some(oid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let is_link = entry
            .file_type()
            .ctx("inspect", &entry.path())?
            .is_symlink();
        if is_link && !source.tablespaces.iter().any(|(o, _)| *o == oid) {
            let to = fs::read_link(entry.path()).ctx("read link", &entry.path())?;
            created.push(format!(
                "tablespace {oid} at {} is in the copy's pg_tblspc but not in its tablespace_map \
                 (written when the backup started): it was created during the backup",
                to.display()
            ));
        }
    }
    created.sort();
    if created.is_empty() {
        return Ok(());
    }
    Err(RestoreError::TablespaceCreatedDuringBackup {
        backup: source.root.clone(),
        changes: created.join("; "),
    })
}

/// Replaying WAL beyond the backup (PITR or a standby) replays the source's later `CREATE
/// TABLESPACE` records too, with their original absolute locations: no check of the backup can
/// cover WAL written after it.
pub(super) fn replay_warning(opts: &RestoreOptions) -> Option<String> {
    let r = &opts.recovery;
    let beyond = r.standby
        || (r.restore_command.is_some() && r.target.is_none())
        || matches!(r.target, Some(ref t) if *t != super::RecoveryTarget::Immediate);
    beyond.then(|| {
        "recovery replays WAL written after the backup: a CREATE TABLESPACE in it is replayed \
         with its original absolute location (PostgreSQL points pg_tblspc/<oid> there), so on \
         the original server's host the restored server would use that server's tablespace \
         directory. If a tablespace was created after the backup, recover to a point before it \
         or restore on another host"
            .to_owned()
    })
}

/// Replaying WAL beyond the backup on the host where the backed-up server still runs: that
/// server's `pg_tblspc/<oid>` links that the backup does not have are tablespaces created after
/// the backup, whose `CREATE TABLESPACE` the replay would apply with the live location (redo
/// creates the version directory there and points the copy's `pg_tblspc/<oid>` at it:
/// `create_tablespace_directories` in `src/backend/commands/tablespace.c`). Refused unless
/// confirmed. The backed-up server is recognised by its PGDATA recorded in `pgsafe.json` and the
/// system identifier of the `global/pg_control` found there.
pub(super) fn check_live_tablespaces(
    source: &Source,
    opts: &RestoreOptions,
) -> Result<(), RestoreError> {
    use std::os::unix::ffi::OsStrExt;
    if opts.allow_live_tablespaces || replay_warning(opts).is_none() {
        return Ok(());
    }
    let system_id = |path: &Path| {
        let bytes = read_conf(path).ok().flatten()?;
        crate::control::ControlFile::decode(&bytes)
            .ok()
            .map(|c| c.system_identifier)
    };
    // The backed-up PGDATA and its system identifier: from pgsafe.json, or, for a
    // snapshot-mode copy, the `postmaster.pid` it carries (line 2, the data directory) and its
    // own pg_control.
    let (pgdata, ours) = match &source.info {
        Some(info) => match &info.source_pgdata {
            Some(p) => (
                std::ffi::OsStr::from_bytes(p.as_bytes()).into(),
                Some(info.system_identifier),
            ),
            None => return Ok(()),
        },
        None => {
            let pid = read_conf(&source.root.join("postmaster.pid"))
                .ok()
                .flatten();
            let Some(dd) =
                pid.and_then(|b| crate::datadir::PostmasterPid::parse(&b).data_directory)
            else {
                return Ok(());
            };
            (
                std::path::PathBuf::from(dd),
                system_id(&source.control.path),
            )
        }
    };
    let pgdata: &Path = &pgdata;
    let live = system_id(&pgdata.join("global").join("pg_control"));
    if ours.is_none() || live != ours {
        return Ok(());
    }
    let known: Vec<u32> = source.tablespaces.iter().map(|(oid, _)| *oid).collect();
    let dir = pgdata.join("pg_tblspc");
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut live = Vec::new();
    for entry in rd.flatten() {
        let Some(oid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if known.contains(&oid) {
            continue;
        }
        // In-place tablespaces (directories) live inside the server's own PGDATA: replaying
        // their creation writes into the copy only.
        if let Ok(target) = fs::read_link(entry.path()) {
            live.push(format!("OID {oid} at {}", target.display()));
        }
    }
    if live.is_empty() {
        return Ok(());
    }
    live.sort();
    Err(RestoreError::LiveTablespacesOnThisHost {
        pgdata: pgdata.to_path_buf(),
        tablespaces: live.join(", "),
    })
}

/// OIDs of in-place tablespaces: `pg_tblspc/<oid>` directories of the source that no
/// `tablespace_map` entry turns into a link.
pub(super) fn in_place_tablespaces(source: &Source) -> Vec<u32> {
    let mut out: Vec<u32> = source
        .dirs
        .iter()
        .filter_map(|d| {
            let oid = d.as_bytes().strip_prefix(b"pg_tblspc/")?;
            if oid.is_empty() || !oid.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(oid).ok()?.parse::<u32>().ok()
        })
        .filter(|oid| !source.tablespaces.iter().any(|(o, _)| o == oid))
        .collect();
    if let Some(info) = &source.info {
        out.extend(info.tablespace_changes.iter().filter_map(|c| {
            (c.change == TablespaceChangeKind::Created && c.location.is_empty()).then_some(c.oid)
        }));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What the copy's configuration got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigOutcome {
    /// Files rewritten (`postgresql.auto.conf`, `postgresql.conf`).
    pub files: Vec<String>,
    /// `name = 'value'` lines pgsafe wrote besides the recovery settings.
    pub settings_written: Vec<String>,
    /// Settings of the source commented out.
    pub disabled_settings: Vec<DisabledSetting>,
    /// In-place tablespaces found in the backup.
    pub in_place_tablespaces: Vec<u32>,
    /// Recovery settings of the source found in files its configuration includes (left as
    /// they are), each set back to PostgreSQL's default in `postgresql.auto.conf`:
    /// `name (set in FILE)`.
    pub reset_settings: Vec<String>,
}

/// Rewrites the restored `postgresql.conf` (stale recovery settings commented out) and
/// `postgresql.auto.conf` (the same, then the copy's settings and `recovery_append`, the 12+
/// recovery settings).
pub(super) fn write_config(
    w: &Writer<'_>,
    source: &Source,
    opts: &RestoreOptions,
    recovery_append: Option<&[u8]>,
) -> Result<ConfigOutcome, RestoreError> {
    let t = w.target;
    let in_place = in_place_tablespaces(source);
    let copy = CopySettings {
        archive: opts.archive_mode,
        in_place_tablespaces: !in_place.is_empty() && source.version.at_least(15),
    };
    let mut out = ConfigOutcome {
        settings_written: copy
            .settings()
            .iter()
            .map(|(n, v, _)| format!("{n} = {}", super::quote_value(v)))
            .collect(),
        in_place_tablespaces: in_place,
        ..ConfigOutcome::default()
    };

    let conf_path = t.join("postgresql.conf");
    if let Some(original) = read_conf(&conf_path)? {
        let (new, disabled) = config::disable_recovery_settings(&original, "postgresql.conf");
        if !disabled.is_empty() {
            w.write_durable(&conf_path, &new)?;
            out.files.push("postgresql.conf".into());
            out.disabled_settings.extend(disabled);
        }
    }

    let auto_path = t.join("postgresql.auto.conf");
    let original = read_conf(&auto_path)?.unwrap_or_default();
    let block = copy.block("settings of this restored copy, written by pgsafe restore");
    // Recovery settings in included files: reset here, before pgsafe's own recovery settings.
    let mut resets = Vec::new();
    if source.version.at_least(12) {
        let found =
            includes::recovery_settings_in_includes(&[conf_path.clone(), auto_path.clone()]);
        for (name, file) in found {
            if let Some(v) = includes::default_value(&name, source.version) {
                resets.push((name.clone(), v));
                out.reset_settings
                    .push(format!("{name} (set in {})", file.display()));
            }
        }
    }
    let reset_block = if resets.is_empty() {
        Vec::new()
    } else {
        let mut b = String::from(
            "# recovery settings of the backed-up server found in files its configuration \
             includes (left as they are), set back to their defaults by pgsafe restore\n",
        );
        for (name, v) in &resets {
            b.push_str(&format!("{name} = {}\n", super::quote_value(v)));
        }
        b.into_bytes()
    };
    let (new, disabled) = config::auto_conf(
        &original,
        &[&block, &reset_block, recovery_append.unwrap_or_default()],
    );
    if new != original {
        w.write_durable(&auto_path, &new)?;
        out.files.push("postgresql.auto.conf".into());
    }
    out.disabled_settings.extend(disabled);
    Ok(out)
}

/// A restored configuration file (written by this restore: a regular file, never a link), at
/// most [`MAX_CONF_BYTES`]; `None` when absent.
fn read_conf(path: &Path) -> Result<Option<Vec<u8>>, RestoreError> {
    let file: File = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("open", path, e).into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONF_BYTES + 1)
        .read_to_end(&mut bytes)
        .ctx("read", path)?;
    if bytes.len() as u64 > MAX_CONF_BYTES {
        return Err(FsError::new(
            "rewrite",
            path,
            io::Error::other(format!(
                "larger than {} MiB: not a configuration file pgsafe rewrites",
                MAX_CONF_BYTES >> 20
            )),
        )
        .into());
    }
    Ok(Some(bytes))
}

/// The archiving line of the summary.
pub fn archive_summary(mode: ArchiveMode) -> &'static str {
    match mode {
        ArchiveMode::Off => {
            "off in the copy (archive_mode = 'off' in postgresql.auto.conf): it never archives \
             into the archive of the server it was copied from"
        }
        ArchiveMode::Preserve => {
            "the backed-up server's archive settings are kept: the copy archives with its \
             archive_command, on its own new timeline"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RecoveryOptions, RecoveryTarget};
    use super::*;

    #[test]
    fn replay_beyond_the_backup_is_warned_about() {
        let mut o = RestoreOptions::new("/b", "/t");
        assert_eq!(
            replay_warning(&o),
            None,
            "the default stops at the backup's end"
        );
        o.recovery = RecoveryOptions {
            restore_command: Some("cp /a/%f %p".into()),
            target: Some(RecoveryTarget::Immediate),
            ..Default::default()
        };
        assert_eq!(replay_warning(&o), None);
        o.recovery.target = None;
        assert!(replay_warning(&o).unwrap().contains("CREATE TABLESPACE"));
        o.recovery.target = Some(RecoveryTarget::Name("x".into()));
        assert!(replay_warning(&o).is_some());
        o.recovery = RecoveryOptions {
            standby: true,
            primary_conninfo: Some("host=x".into()),
            ..Default::default()
        };
        assert!(replay_warning(&o).is_some());
    }
}
