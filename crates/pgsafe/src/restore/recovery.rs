//! Recovery settings of a restore and the files that carry them (`xlogrecovery.c`): `recovery.conf`
//! on PostgreSQL 10–11; `recovery.signal` or `standby.signal` plus lines appended to
//! `postgresql.auto.conf` on 12+. Pure: returns the file contents, the caller writes them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::backup_end::BackupEnd;
use crate::types::{Lsn, PgVersion, TimelineId};

/// Where recovery stops (`recovery_target_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RecoveryTarget {
    /// `recovery_target_time` (a timestamp PostgreSQL parses, e.g. `2026-11-21 10:46:49+00`).
    Time(String),
    Lsn(Lsn),
    /// `recovery_target_xid`.
    Xid(String),
    /// `recovery_target_name` (a restore point made with `pg_create_restore_point`).
    Name(String),
    /// `recovery_target = 'immediate'`: stop as soon as the backup is consistent.
    Immediate,
}

impl RecoveryTarget {
    fn setting(&self) -> (&'static str, String) {
        match self {
            RecoveryTarget::Time(t) => ("recovery_target_time", t.clone()),
            RecoveryTarget::Lsn(l) => ("recovery_target_lsn", l.to_string()),
            RecoveryTarget::Xid(x) => ("recovery_target_xid", x.clone()),
            RecoveryTarget::Name(n) => ("recovery_target_name", n.clone()),
            RecoveryTarget::Immediate => ("recovery_target", "immediate".into()),
        }
    }
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Time(t) => write!(f, "time {t}"),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
            RecoveryTarget::Immediate => f.write_str("the end of the backup (immediate)"),
        }
    }
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

impl FromStr for TargetAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pause" => Ok(TargetAction::Pause),
            "promote" => Ok(TargetAction::Promote),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(format!(
                "unknown recovery target action {s:?}: use pause, promote or shutdown"
            )),
        }
    }
}

/// `recovery_target_timeline`: which timeline recovery follows (`xlogrecovery.c`,
/// `validateRecoveryParameters`). PostgreSQL's default is `current` on 10–11 and `latest` on
/// 12+, so a restore that replays WAL from an archive always writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum TargetTimeline {
    /// The newest timeline whose history file the archive has (probed upwards from the
    /// backup's timeline).
    Latest,
    /// The timeline of the restored `pg_control`'s checkpoint: the backup's.
    Current,
    /// This timeline (its history file must be in the archive, unless it is 1).
    Id(TimelineId),
}

impl TargetTimeline {
    /// The value of `recovery_target_timeline`.
    pub fn setting(self) -> String {
        match self {
            TargetTimeline::Latest => "latest".into(),
            TargetTimeline::Current => "current".into(),
            TargetTimeline::Id(t) => t.0.to_string(),
        }
    }
}

impl fmt::Display for TargetTimeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.setting())
    }
}

impl FromStr for TargetTimeline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(TargetTimeline::Latest),
            "current" => Ok(TargetTimeline::Current),
            _ => s.parse::<TimelineId>().map(TargetTimeline::Id).map_err(|_| {
                format!(
                    "{s:?} is not a recovery target timeline: use latest, current or a timeline \
                     ID (a decimal number from 1)"
                )
            }),
        }
    }
}

/// The recovery settings a restore writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryOptions {
    pub target: Option<RecoveryTarget>,
    pub target_action: Option<TargetAction>,
    /// `recovery_target_timeline`; when unset and WAL comes from a `restore_command`, `latest`
    /// is written (the same on every major: 10–11 would otherwise stay on the backup's
    /// timeline and never follow a promotion).
    pub target_timeline: Option<TargetTimeline>,
    /// `restore_command` (`%f`, `%p` as PostgreSQL expands them).
    pub restore_command: Option<String>,
    /// Start as a standby (`standby.signal` / `standby_mode = 'on'`).
    pub standby: bool,
    pub primary_conninfo: Option<String>,
}

/// Why recovery settings do not go together, or cannot be written. PostgreSQL's names for the
/// settings (src/backend/utils/misc/guc_tables.c), not the options that set them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "a recovery target action needs a recovery target (a time, an LSN, a transaction ID, a \
         restore point name, or immediate)"
    )]
    ActionWithoutTarget,
    #[error("a primary_conninfo is for a standby: restore as a standby, or leave it out")]
    PrimaryWithoutStandby,
    #[error(
        "a standby needs somewhere to get WAL from: a primary_conninfo and/or a restore_command"
    )]
    StandbyWithoutWal,
    #[error(
        "recovery_target = 'immediate' needs a restore_command (PostgreSQL requires one for \
         targeted recovery). Without any recovery option the restored server replays the \
         backup's own WAL and opens at the end of the backup, which is what the immediate \
         target would do"
    )]
    ImmediateWithoutRestoreCommand,
    #[error(
        "recovering to {target} needs the WAL written after the backup: set a restore_command \
         that fetches it from your WAL archive"
    )]
    TargetWithoutRestoreCommand { target: String },
    #[error(
        "recovery_target_timeline is about WAL fetched from an archive or a primary: set a \
         restore_command (or restore as a standby)"
    )]
    TimelineWithoutWal,
    #[error("{setting} must not be empty")]
    Empty { setting: &'static str },
    #[error("{setting} must not contain a line break or NUL character")]
    LineBreak { setting: &'static str },
    #[error("recovery_target_xid {xid:?} is not a transaction ID (digits only)")]
    BadXid { xid: String },
}

impl RecoveryOptions {
    /// True when nothing is configured: the server recovers from `backup_label` with the WAL in
    /// `pg_wal/` only, to the end of the backup, and opens on a new timeline
    /// ([`recovery_files`]).
    pub fn is_empty(&self) -> bool {
        *self == RecoveryOptions::default()
    }

    /// True when WAL can come from somewhere else than the restored `pg_wal/`.
    pub fn has_wal_source(&self) -> bool {
        self.restore_command.is_some() || (self.standby && self.primary_conninfo.is_some())
    }

    /// Checks that the combination makes sense and every value can be written.
    pub fn validate(&self) -> Result<(), RecoveryError> {
        if self.target_action.is_some() && self.target.is_none() {
            return Err(RecoveryError::ActionWithoutTarget);
        }
        if self.primary_conninfo.is_some() && !self.standby {
            return Err(RecoveryError::PrimaryWithoutStandby);
        }
        if self.standby && !self.has_wal_source() {
            return Err(RecoveryError::StandbyWithoutWal);
        }
        if self.target_timeline.is_some() && !self.has_wal_source() {
            return Err(RecoveryError::TimelineWithoutWal);
        }
        if let (Some(t), false) = (&self.target, self.standby) {
            if self.restore_command.is_none() {
                return Err(match t {
                    RecoveryTarget::Immediate => RecoveryError::ImmediateWithoutRestoreCommand,
                    _ => RecoveryError::TargetWithoutRestoreCommand {
                        target: t.to_string(),
                    },
                });
            }
        }
        let mut values: Vec<(&'static str, String)> = Vec::new();
        if let Some(t) = &self.target {
            values.push(t.setting());
        }
        if let Some(c) = &self.restore_command {
            values.push(("restore_command", c.clone()));
        }
        if let Some(c) = &self.primary_conninfo {
            values.push(("primary_conninfo", c.clone()));
        }
        for (name, v) in values {
            if v.trim().is_empty() {
                return Err(RecoveryError::Empty { setting: name });
            }
            if v.contains(['\n', '\r', '\0']) {
                return Err(RecoveryError::LineBreak { setting: name });
            }
        }
        if let Some(RecoveryTarget::Xid(x)) = &self.target {
            if !x.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RecoveryError::BadXid { xid: x.clone() });
            }
        }
        Ok(())
    }

    /// The `name = 'value'` settings, in the order written.
    pub fn settings(&self, version: PgVersion) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: String| out.push((k.to_owned(), v));
        if let Some(c) = &self.restore_command {
            push("restore_command", c.clone());
        }
        if self.standby && !version.at_least(12) {
            push("standby_mode", "on".into());
        }
        if let Some(c) = &self.primary_conninfo {
            push("primary_conninfo", c.clone());
        }
        if let Some(t) = &self.target {
            let (k, v) = t.setting();
            push(k, v);
        }
        if let Some(t) = self.target_timeline {
            push("recovery_target_timeline", t.setting());
        }
        if let Some(a) = self.target_action {
            push("recovery_target_action", a.as_str().into());
        }
        out
    }
}

/// A configuration file value in single quotes: `'` doubled and `\` doubled (PostgreSQL's
/// configuration parser treats backslash as an escape inside quotes).
pub fn quote_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// What to write into the restored data directory for the recovery settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryFiles {
    /// `recovery.conf` (10–11), complete content.
    pub recovery_conf: Option<Vec<u8>>,
    /// `recovery.signal` or `standby.signal` (12+), written empty.
    pub signal: Option<&'static str>,
    /// Lines appended to `postgresql.auto.conf` (12+).
    pub auto_conf_append: Option<Vec<u8>>,
}

/// `restore_command` of a restore without recovery options: it provides no file, so recovery
/// replays the backup's WAL from `pg_wal/` (PostgreSQL falls back to `pg_wal/` when the command
/// fails, `XLogFileReadAnyTLI` in `src/backend/access/transam/xlogrecovery.c`, `xlog.c` on
/// 10–14) up to the end of the backup (`recovery_target = 'immediate'`), and then, being an
/// archive recovery, promotes onto a new timeline. PostgreSQL requires a `restore_command` for
/// an archive recovery that is not a standby ("must specify restore_command when standby mode
/// is not enabled"). Stopping at the backup's end also keeps WAL written after the stop (the
/// rest of the last segment) from being replayed: the backup's checks of what happened during
/// it (tablespaces created) cover exactly the replayed range.
pub const NEW_TIMELINE_RESTORE_COMMAND: &str = "false";

/// Why [`NEW_TIMELINE_RESTORE_COMMAND`] is there, as a configuration comment.
const NEW_TIMELINE_COMMENT: &str = "# restore_command 'false' fetches nothing: recovery replays \
    the backup's WAL from pg_wal/ to the end of the backup and promotes onto a NEW timeline, so \
    this copy never writes WAL under the file names of the server it was copied from\n";

/// Why a restore without recovery options has no `recovery_target` (see [`BackupEnd`]).
const END_OF_WAL_COMMENT: &str = "# no recovery_target: the backup's WAL ends where the backup \
    becomes consistent, so recovery ends there at the end of the WAL (PostgreSQL 13+ refuses to \
    start when recovery_target = 'immediate' finds no record after that point)\n";

/// The files carrying `opts` for a server of `version`; `header` is a comment line (without
/// `#`) saying who wrote them. Without any option ([`RecoveryOptions::is_empty`]) this is an
/// archive recovery with [`NEW_TIMELINE_RESTORE_COMMAND`]: the copy ends on a new timeline.
/// `end` says how such a recovery stops at the end of the backup ([`BackupEnd`]).
pub fn recovery_files(
    opts: &RecoveryOptions,
    version: PgVersion,
    header: &str,
    end: BackupEnd,
) -> RecoveryFiles {
    let mut body = format!("# {header}\n");
    let new_timeline;
    let opts = if opts.is_empty() {
        body.push_str(NEW_TIMELINE_COMMENT);
        new_timeline = match end {
            BackupEnd::Immediate => RecoveryOptions {
                restore_command: Some(NEW_TIMELINE_RESTORE_COMMAND.to_owned()),
                target: Some(RecoveryTarget::Immediate),
                target_action: Some(TargetAction::Promote),
                ..RecoveryOptions::default()
            },
            BackupEnd::EndOfWal => {
                body.push_str(END_OF_WAL_COMMENT);
                RecoveryOptions {
                    restore_command: Some(NEW_TIMELINE_RESTORE_COMMAND.to_owned()),
                    ..RecoveryOptions::default()
                }
            }
        };
        &new_timeline
    } else if opts.target_timeline.is_none() && (opts.restore_command.is_some() || opts.standby) {
        // Written whatever the major: its default differs (10–11 `current`, 12+ `latest`).
        new_timeline = RecoveryOptions {
            target_timeline: Some(TargetTimeline::Latest),
            ..opts.clone()
        };
        &new_timeline
    } else {
        opts
    };
    for (k, v) in opts.settings(version) {
        body.push_str(&format!("{k} = {}\n", quote_value(&v)));
    }
    if version.at_least(12) {
        let wants_signal = opts.standby || opts.restore_command.is_some() || opts.target.is_some();
        RecoveryFiles {
            recovery_conf: None,
            signal: wants_signal.then_some(if opts.standby {
                "standby.signal"
            } else {
                "recovery.signal"
            }),
            auto_conf_append: Some(body.into_bytes()),
        }
    } else {
        RecoveryFiles {
            recovery_conf: Some(body.into_bytes()),
            signal: None,
            auto_conf_append: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32) -> PgVersion {
        PgVersion::from_num(major * 10000).unwrap()
    }

    #[test]
    fn quoting_doubles_quotes_and_backslashes() {
        assert_eq!(quote_value("cp /a/%f %p"), "'cp /a/%f %p'");
        assert_eq!(quote_value("it's"), "'it''s'");
        assert_eq!(quote_value(r"C:\x"), r"'C:\\x'");
    }

    #[test]
    fn target_timeline_is_always_explicit_when_wal_comes_from_elsewhere() {
        let mut o = RecoveryOptions {
            target: Some(RecoveryTarget::Lsn(Lsn(0x3000000))),
            restore_command: Some("cp /a/%f %p".into()),
            ..Default::default()
        };
        for major in [10, 11, 12, 18] {
            let f = recovery_files(&o, v(major), "x", BackupEnd::Immediate);
            let text = f.recovery_conf.or(f.auto_conf_append).unwrap();
            let text = String::from_utf8(text).unwrap();
            assert!(
                text.contains("\nrecovery_target_timeline = 'latest'\n"),
                "{major}: {text}"
            );
        }
        o.target_timeline = Some(TargetTimeline::Id(TimelineId(3)));
        let f = recovery_files(&o, v(10), "x", BackupEnd::Immediate);
        let text = String::from_utf8(f.recovery_conf.unwrap()).unwrap();
        assert!(
            text.contains("\nrecovery_target_timeline = '3'\n"),
            "{text}"
        );
        o.target_timeline = Some(TargetTimeline::Current);
        let f = recovery_files(&o, v(16), "x", BackupEnd::Immediate);
        let text = String::from_utf8(f.auto_conf_append.unwrap()).unwrap();
        assert!(
            text.contains("\nrecovery_target_timeline = 'current'\n"),
            "{text}"
        );
        // The default restore fetches nothing: no timeline to follow, nothing written.
        let f = recovery_files(
            &RecoveryOptions::default(),
            v(16),
            "x",
            BackupEnd::Immediate,
        );
        let text = String::from_utf8(f.auto_conf_append.unwrap()).unwrap();
        assert!(!text.contains("recovery_target_timeline"), "{text}");
        assert_eq!("latest".parse(), Ok(TargetTimeline::Latest));
        assert_eq!("current".parse(), Ok(TargetTimeline::Current));
        assert_eq!("2".parse(), Ok(TargetTimeline::Id(TimelineId(2))));
        for bad in ["0", "-1", "0x2", "", "Latest", "2 "] {
            assert!(bad.parse::<TargetTimeline>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_catches_bad_combinations() {
        let mut o = RecoveryOptions {
            target_action: Some(TargetAction::Promote),
            ..Default::default()
        };
        assert_eq!(o.validate(), Err(RecoveryError::ActionWithoutTarget));
        o.target = Some(RecoveryTarget::Lsn(Lsn(0x3000000)));
        assert!(matches!(
            o.validate(),
            Err(RecoveryError::TargetWithoutRestoreCommand { .. })
        ));
        o.restore_command = Some("cp /a/%f %p".into());
        o.validate().unwrap();
        o.restore_command = Some("cp\n".into());
        assert_eq!(
            o.validate(),
            Err(RecoveryError::LineBreak {
                setting: "restore_command"
            })
        );
        let s = RecoveryOptions {
            standby: true,
            ..Default::default()
        };
        assert_eq!(s.validate(), Err(RecoveryError::StandbyWithoutWal));
        let p = RecoveryOptions {
            primary_conninfo: Some("host=x".into()),
            ..Default::default()
        };
        assert_eq!(p.validate(), Err(RecoveryError::PrimaryWithoutStandby));
        let x = RecoveryOptions {
            target: Some(RecoveryTarget::Xid("12a".into())),
            restore_command: Some("true".into()),
            ..Default::default()
        };
        assert!(x.validate().is_err());
        assert!(RecoveryOptions::default().validate().is_ok());
        let t = RecoveryOptions {
            target_timeline: Some(TargetTimeline::Latest),
            ..Default::default()
        };
        assert_eq!(t.validate(), Err(RecoveryError::TimelineWithoutWal));
    }

    #[test]
    fn files_per_version() {
        let o = RecoveryOptions {
            target: Some(RecoveryTarget::Time("2026-01-01 00:00:00+00".into())),
            target_action: Some(TargetAction::Promote),
            restore_command: Some("cp '/arch ive'/%f %p".into()),
            ..Default::default()
        };
        let f = recovery_files(&o, v(11), "pgsafe", BackupEnd::Immediate);
        let conf = String::from_utf8(f.recovery_conf.unwrap()).unwrap();
        assert_eq!(
            conf,
            "# pgsafe\nrestore_command = 'cp ''/arch ive''/%f %p'\nrecovery_target_time = \
             '2026-01-01 00:00:00+00'\nrecovery_target_timeline = 'latest'\n\
             recovery_target_action = 'promote'\n"
        );
        assert_eq!(f.signal, None);
        let f = recovery_files(&o, v(16), "pgsafe", BackupEnd::Immediate);
        assert_eq!(f.signal, Some("recovery.signal"));
        assert!(f.recovery_conf.is_none());
        assert!(
            String::from_utf8(f.auto_conf_append.unwrap())
                .unwrap()
                .contains("recovery_target_action = 'promote'\n")
        );

        let s = RecoveryOptions {
            standby: true,
            primary_conninfo: Some("host=/tmp port=5432".into()),
            ..Default::default()
        };
        let f = recovery_files(&s, v(10), "x", BackupEnd::Immediate);
        let conf = String::from_utf8(f.recovery_conf.unwrap()).unwrap();
        assert!(conf.contains("standby_mode = 'on'\nprimary_conninfo = 'host=/tmp port=5432'\n"));
        let f = recovery_files(&s, v(12), "x", BackupEnd::Immediate);
        assert_eq!(f.signal, Some("standby.signal"));
        assert!(
            !String::from_utf8(f.auto_conf_append.unwrap())
                .unwrap()
                .contains("standby_mode")
        );

        // No option: archive recovery that serves no file, ending on a new timeline.
        let f = recovery_files(
            &RecoveryOptions::default(),
            v(15),
            "x",
            BackupEnd::Immediate,
        );
        assert_eq!(f.signal, Some("recovery.signal"));
        let conf = String::from_utf8(f.auto_conf_append.unwrap()).unwrap();
        assert!(
            conf.ends_with(
                "\nrestore_command = 'false'\nrecovery_target = 'immediate'\n\
                 recovery_target_action = 'promote'\n"
            ),
            "{conf}"
        );
        assert!(conf.contains("NEW timeline"), "{conf}");
        // The backup's WAL ends at its consistency point: no target (see BackupEnd).
        let f = recovery_files(&RecoveryOptions::default(), v(16), "x", BackupEnd::EndOfWal);
        assert_eq!(f.signal, Some("recovery.signal"));
        let conf = String::from_utf8(f.auto_conf_append.unwrap()).unwrap();
        assert!(conf.ends_with("\nrestore_command = 'false'\n"), "{conf}");
        assert!(!conf.contains("\nrecovery_target"), "{conf}");
        let f = recovery_files(
            &RecoveryOptions::default(),
            v(10),
            "x",
            BackupEnd::Immediate,
        );
        assert!(
            String::from_utf8(f.recovery_conf.unwrap())
                .unwrap()
                .contains("\nrestore_command = 'false'\nrecovery_target = 'immediate'\n")
        );
    }
}
