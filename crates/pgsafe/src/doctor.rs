//! `pgsafe doctor`: tell a crashed server from a restored backup, and say exactly what is safe.
//!
//! A data directory holding a `backup_label` is either (a) a primary that crashed while an
//! exclusive backup (`pg_start_backup()`, PostgreSQL ≤ 14) was running — it may refuse to start,
//! and renaming the label is the fix — or (b) a restored backup, where removing the same file
//! silently corrupts the database. PostgreSQL cannot tell them apart; this module gathers every
//! piece of evidence ([`Facts`], the only IO) and classifies it ([`classify`], pure) into one of
//! nine [`DoctorState`]s with the evidence, a confidence, the exact next steps and, for the one
//! unambiguous repair (state 4), a [`FixAction`] that [`apply_fix`] performs: rename
//! `backup_label` to [`REMOVED_LABEL_FILE`], never delete.
//!
//! The state machine (details in `classify.rs`):
//! 1. running: `postmaster.pid` names a live PostgreSQL process in this directory (or
//!    `--connect` reached the server of this directory);
//! 2. cleanly shut down: pg_control "shut down" / "shut down in recovery", no label;
//! 3. crashed: pg_control "in production" (or another unclean state), no label, no sign of a
//!    restore, the WAL from pg_control's redo point to its checkpoint is in `pg_wal`;
//! 4. crashed while an exclusive backup was running: exclusive label, ≤ 14, no recovery
//!    signal, no restore marker/sentinel/manifest, pg_control "in production", `postmaster.pid`
//!    stale or absent, `postmaster.opts` present (backup tools leave it out), pg_control's
//!    checkpoint newer than the label's and its WAL present; the rename is offered only when
//!    the label's own WAL is gone (otherwise the server starts as is, which is safe either way);
//! 5. restored backup, ready to recover: a label (not from pg_rewind) with its WAL in `pg_wal`
//!    or obtainable (restore_command / primary_conninfo with a signal file), or a recovery from
//!    a backup that was interrupted and can resume;
//! 6. restored backup that will fail or corrupt: label missing (restore marker, sentinel, or
//!    the file pattern a backup tool leaves), or WAL missing with nowhere to get it from, or a
//!    label the server will reject (incremental, standby label with a primary's pg_control);
//! 7. recovery finished: `backup_label.old`, backup end reached, cleanly shut down since;
//! 8. a label written by pg_rewind;
//! 9. not a data directory, or unknown / damaged (says what is missing).

mod archive_cmd;
mod classify;
mod conf;
mod evidence;
mod facts;
mod fix;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Serialize;

pub use archive_cmd::{ArchiveDir, archive_dir_of};
pub use classify::classify;
pub use conf::{Setting, Settings, mask_conninfo, parse_conf_text};
pub use evidence::{
    ArchiveFacts, ArchiveLocation, HistoryFile, HolderFacts, HolderRecordFacts, default_run_dirs,
};
pub use facts::{
    BackupEnd, ControlFacts, Facts, Files, Liveness, MapEntryFacts, MapFacts, MarkerFacts,
    PidFacts, SegState, ServerFacts, WalFacts, gather,
};
pub use fix::{FixOutcome, FixRefusal, apply_fix, refusal};

// The names, the marker's schema and the sentinel doctor reads have their owners in
// `layout`, `info` and `control` (restore writes them); re-exported under their old paths.
pub use crate::control::{SENTINEL_CHECKPOINT, apply_sentinel, has_sentinel};
pub use crate::info::{RESTORE_MARKER_FORMAT, RestoreMarker};
pub use crate::layout::{REMOVED_LABEL_FILE, RESTORE_MARKER_FILE};

/// The nine states `doctor` tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DoctorState {
    /// 1: a server is running on this directory.
    Running,
    /// 2: cleanly shut down; starts normally.
    CleanShutdown,
    /// 3: crashed; normal crash recovery will run at the next start.
    Crashed,
    /// 4: crashed while an exclusive backup was running.
    CrashedDuringExclusiveBackup,
    /// 5: a restored backup, ready to recover.
    RestoredReady,
    /// 6: a restored backup that will fail to start or would be corrupted.
    RestoredBroken,
    /// 7: restored from a backup; recovery finished.
    RecoveryFinished,
    /// 8: rewound by pg_rewind (its label is in place).
    RewoundByPgRewind,
    /// 9: not a data directory, or a state pgsafe cannot classify.
    Unknown,
}

impl DoctorState {
    /// 1–9, as in the documentation.
    pub fn number(self) -> u8 {
        match self {
            DoctorState::Running => 1,
            DoctorState::CleanShutdown => 2,
            DoctorState::Crashed => 3,
            DoctorState::CrashedDuringExclusiveBackup => 4,
            DoctorState::RestoredReady => 5,
            DoctorState::RestoredBroken => 6,
            DoctorState::RecoveryFinished => 7,
            DoctorState::RewoundByPgRewind => 8,
            DoctorState::Unknown => 9,
        }
    }

    /// True for the states in which the directory is healthy or can be started as it is
    /// (1, 2, 3, 5, 7); the CLI exits 0 for those.
    pub fn is_healthy(self) -> bool {
        matches!(
            self,
            DoctorState::Running
                | DoctorState::CleanShutdown
                | DoctorState::Crashed
                | DoctorState::RestoredReady
                | DoctorState::RecoveryFinished
        )
    }

    /// A short name for humans.
    pub fn title(self) -> &'static str {
        match self {
            DoctorState::Running => "running",
            DoctorState::CleanShutdown => "cleanly shut down",
            DoctorState::Crashed => "crashed",
            DoctorState::CrashedDuringExclusiveBackup => "crashed during an exclusive backup",
            DoctorState::RestoredReady => "restored backup, ready to recover",
            DoctorState::RestoredBroken => "restored backup that will fail or corrupt",
            DoctorState::RecoveryFinished => "restored, recovery finished",
            DoctorState::RewoundByPgRewind => "rewound by pg_rewind",
            DoctorState::Unknown => "unknown",
        }
    }
}

/// How sure the verdict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        })
    }
}

/// One next step: what to do and why, and the exact command if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub action: String,
    pub command: Option<String>,
}

impl Step {
    pub fn says(action: impl Into<String>) -> Step {
        Step {
            action: action.into(),
            command: None,
        }
    }

    pub fn run(action: impl Into<String>, command: impl Into<String>) -> Step {
        Step {
            action: action.into(),
            command: Some(command.into()),
        }
    }
}

/// The single repair `doctor --fix` may perform: rename `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixAction {
    pub description: String,
    pub from: PathBuf,
    pub to: PathBuf,
}

/// The doctor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub state: DoctorState,
    /// [`DoctorState::number`].
    pub state_number: u8,
    /// One line: what this directory is and what to do.
    pub summary: String,
    pub confidence: Confidence,
    /// The facts that led to the verdict, one sentence each.
    pub evidence: Vec<String>,
    /// Warnings: what would make the advice wrong, risks that remain.
    pub caveats: Vec<String>,
    /// What to do, in order.
    pub next_steps: Vec<Step>,
    /// What only the user can know and must confirm before acting (empty when unambiguous).
    pub must_confirm: Vec<String>,
    /// Present only when the verdict is unambiguous and `--fix` may act.
    pub fix: Option<FixAction>,
}

impl Verdict {
    /// The directory may be started as it is without asking anyone: a healthy state and
    /// nothing to confirm. `pgsafe doctor` exits 0 only then — when "crashed original" and
    /// "copy" fit the evidence equally, the verdict lists what to confirm and this is false.
    pub fn starts_safely_as_is(&self) -> bool {
        self.state.is_healthy() && self.must_confirm.is_empty()
    }
}

/// What [`diagnose`] may use besides the directory.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// `--connect`: ask the server too.
    pub conn: Option<crate::conninfo::ConnSettings>,
    /// Configuration files outside PGDATA to read for `restore_command` (e.g. Debian's
    /// `/etc/postgresql/<version>/<cluster>/postgresql.conf`), read after PGDATA's own.
    pub config_files: Vec<PathBuf>,
    /// pgsafe run directories whose holder records to read (see [`default_run_dirs`]).
    pub run_dirs: Vec<PathBuf>,
}

/// Facts and verdict together (what `--json` prints).
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    pub facts: Facts,
}

/// Why the doctor could not examine the directory at all.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("{path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not a directory (pass the data directory itself)")]
    NotADirectory { path: PathBuf },
    #[error("cannot read {what} in {path}: {source}{}", permission_hint(.source))]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the fix was refused: {0}")]
    FixRefused(#[source] FixRefusal),
    #[error("the fix: {0}")]
    Fs(#[from] crate::fsutil::FsError),
}

fn permission_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (run pgsafe doctor as the data directory's owner, e.g. sudo -u postgres, or as root)"
    } else {
        ""
    }
}

/// Gathers the facts about `path` and classifies them.
pub fn diagnose(
    path: impl AsRef<std::path::Path>,
    opts: &DoctorOptions,
) -> Result<Diagnosis, DoctorError> {
    let facts = gather(path.as_ref(), opts)?;
    let verdict = classify(&facts);
    Ok(Diagnosis { verdict, facts })
}
