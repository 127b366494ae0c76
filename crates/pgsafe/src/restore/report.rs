//! What a restore reports: the summary, the restore marker `pgsafe doctor` reads, the command
//! that starts the server and the recovery plan.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ArchiveMode, ConfigOutcome, RecoveryOptions, Source, TargetAction};
use crate::control::SENTINEL_CHECKPOINT;
use crate::fsutil;
use crate::info::{RESTORE_MARKER_FORMAT, RestoreMarker};
use crate::types::{Lsn, TimelineId};

/// A restored tablespace.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredTablespace {
    pub oid: u32,
    pub original_location: PathBuf,
    pub location: PathBuf,
    /// `"backup"`: the backup's `tablespace_map` named it; `"mapping"`: the operator did.
    pub location_source: &'static str,
    /// The location existed (empty) before the restore: its owner and mode were kept.
    pub existed: bool,
}

/// What [`run_restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub target: PathBuf,
    pub source: PathBuf,
    pub from_copy: bool,
    pub server_major: String,
    /// `"full"` or `"quick"` (copies: `"none"`).
    pub verification: &'static str,
    /// The backup's files written: the data directory's files, `pg_control` included (the
    /// count `backup` and `verify` report; recovery files left out are not written, see
    /// `warnings`).
    pub files: u64,
    pub bytes: u64,
    pub wal_files: u64,
    pub tablespaces: Vec<RestoredTablespace>,
    /// `user:group` the files were given to (root only).
    pub owner: Option<String>,
    pub start_lsn: Lsn,
    pub checkpoint_lsn: Lsn,
    pub timeline: TimelineId,
    pub stop_lsn: Option<Lsn>,
    pub recovery: RecoveryOptions,
    /// Files written for the recovery settings (`recovery.conf`, `recovery.signal`, …).
    pub recovery_files: Vec<String>,
    /// Recovery ends on a new timeline (every restore that does not make a standby).
    pub new_timeline: bool,
    pub archive_mode: ArchiveMode,
    /// The copy's configuration: settings written, the source's settings commented out.
    pub config: ConfigOutcome,
    /// pg_control carries [`SENTINEL_CHECKPOINT`].
    pub sentinel: bool,
    pub sentinel_checkpoint: Lsn,
    /// How to start the server.
    pub start_command: String,
    /// What recovery will do, in words.
    pub recovery_plan: String,
    pub warnings: Vec<String>,
    /// A delta restore (into an existing data directory): what it wrote and left alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<super::DeltaReport>,
    pub elapsed_secs: f64,
}

/// The restore marker `pgsafe doctor` reads.
pub(super) fn restore_marker(source: &Source) -> RestoreMarker {
    let label = &source.label;
    let fields = label.fields();
    let info = source.info.as_ref();
    RestoreMarker {
        format: RESTORE_MARKER_FORMAT,
        backup_id: source
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| source.root.display().to_string()),
        label: label.label_text().map(|l| l.into_owned()),
        start_lsn: label.start_lsn(),
        start_timeline: Some(label.timeline()),
        checkpoint_lsn: Some(label.checkpoint_lsn()),
        stop_lsn: info.map(|i| i.stop_lsn),
        stop_timeline: info.map(|i| i.stop_tli),
        backup_start_time: fields.start_time.clone(),
        restored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        source: Some(source.root.display().to_string()),
        system_identifier: info.map(|i| i.system_identifier),
        sentinel: true,
        pgsafe_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    }
}

/// How to start the restored server.
pub(super) fn start_command(target: &Path, owner: Option<&str>) -> String {
    let pgctl = format!(
        "pg_ctl -D {} -l {} start",
        shell_quote(&target.display().to_string()),
        shell_quote(&format!(
            "{}/restore.log",
            fsutil::parent_dir(target).display()
        ))
    );
    match owner.and_then(|o| o.split(':').next()) {
        Some(user) => format!("sudo -u {} {pgctl}", shell_quote(user)),
        None => pgctl,
    }
}

pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What recovery will do, in words.
pub(super) fn recovery_plan(
    source: &Source,
    r: &RecoveryOptions,
    stop: Option<Lsn>,
    target: &Path,
) -> String {
    let label = &source.label;
    let to = match stop {
        Some(s) => format!(" to the end of the backup at {s}"),
        None => " to the end of the backup".to_owned(),
    };
    let from = if source.wal_included {
        "from the backup's WAL in pg_wal/"
    } else if r.restore_command.is_some() {
        "with WAL fetched by restore_command"
    } else {
        "with WAL streamed from the primary"
    };
    let mut s = format!(
        "At startup PostgreSQL reads backup_label and replays WAL from {} (checkpoint {}, \
         timeline {}){to} {from}; ",
        label.start_lsn(),
        label.checkpoint_lsn(),
        label.timeline()
    );
    s.push_str(&match (&r.target, r.standby, &r.restore_command) {
        (_, true, _) => "then it keeps running as a standby (read-only) until promoted.".into(),
        (Some(t), false, _) => format!(
            "then it continues with restore_command up to the recovery target {t}, and then \
             {} (recovery_target_action).",
            match r.target_action {
                Some(TargetAction::Promote) => "opens for writes on a new timeline",
                Some(TargetAction::Shutdown) => "shuts down",
                // PostgreSQL's default.
                Some(TargetAction::Pause) | None => {
                    "pauses (read-only; SELECT pg_wal_replay_resume() to promote)"
                }
            }
        ),
        (None, false, Some(_)) => "then it continues with every WAL file restore_command \
            provides and opens for writes on a new timeline."
            .into(),
        (None, false, None) => "then it stops at the end of the backup and opens for reads and \
            writes on a new timeline (archive recovery with restore_command 'false', which fetches \
            nothing), so its WAL never takes the file names of the server it was copied from."
            .into(),
    });
    s.push_str(&format!(
        " Keep backup_label: the restored pg_control points at the impossible checkpoint {} on \
         purpose, so the server refuses to start without the label instead of silently \
         corrupting data (if it does not start, run pgsafe doctor {}).",
        SENTINEL_CHECKPOINT,
        shell_quote(&target.display().to_string())
    ));
    s
}
