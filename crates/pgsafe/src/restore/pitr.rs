//! Point-in-time recovery from a repository: which backup ([`super::select`]), whether the
//! archive holds every WAL segment recovery will read from it to the target (checked before
//! anything is written), the recovery settings with `restore_command` = `pgsafe archive-get`,
//! and the plan in words for the DBA.
//!
//! The restored copy keeps the isolation of every restore (`restore/isolation.rs`, README
//! "restore"): archiving is off unless asked, and recovery ends on a new timeline, so the copy
//! never archives into the repository it was restored from; the plan says so.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::recovery::{RecoveryOptions, TargetAction, TargetTimeline};
use super::report::shell_quote;
use super::select::{self, PitrTarget, SelectError, Skipped, Timelines};
use crate::archive::contents::{ArchiveContents, Gap, GapSource, Missing, RecoveryEnd};
use crate::error::{ErrorKind, HasKind};
use crate::info::WalMode;
use crate::repo::{LeaseTiming, RepoError, Repository};
use crate::storage::Ident;
use crate::types::{Lsn, TimelineId, WalSegment};

/// `restore_command` running `pgsafe archive-get` from this repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveGet {
    /// This pgsafe, absolute.
    pub exe: PathBuf,
    /// The repository, absolute.
    pub repo: PathBuf,
    pub cluster: Ident,
    /// The config file this run used, absolute (the server's environment will not name it).
    pub config: Option<PathBuf>,
    /// More arguments, written after the others (how to reach an object store: the server's
    /// environment has none of the variables this run may have used).
    pub extra_args: Vec<String>,
    /// Variables set for the command, written in front of it (`NAME=value`; the files holding
    /// an encrypted repository's keys).
    pub env: Vec<(String, String)>,
}

impl ArchiveGet {
    /// The command: each path shell-quoted, then every `%` doubled (PostgreSQL replaces `%%`
    /// by `%`, `%f` and `%p` by the file and destination: `BuildRestoreCommand` in
    /// src/common/archive.c). The configuration file's quoting is applied when written.
    pub fn command(&self) -> Result<String, PitrError> {
        let text = |p: &Path| {
            let s = p.to_str().ok_or_else(|| PitrError::NotUtf8(p.to_owned()))?;
            if !p.is_absolute() {
                return Err(PitrError::NotAbsolute(p.to_owned()));
            }
            Ok(shell_quote(s).replace('%', "%%"))
        };
        let mut cmd = String::new();
        for (k, v) in &self.env {
            cmd.push_str(&format!("{k}={} ", shell_quote(v).replace('%', "%%")));
        }
        cmd += &format!(
            "{} archive-get --repo {} --cluster {}",
            text(&self.exe)?,
            // An object-storage repository is a URL, the same wherever the command runs.
            match self.repo.to_str() {
                Some(u) if crate::storage::location::is_url(u) => shell_quote(u).replace('%', "%%"),
                _ => text(&self.repo)?,
            },
            shell_quote(self.cluster.as_str()).replace('%', "%%")
        );
        if let Some(c) = &self.config {
            cmd.push_str(&format!(" --config {}", text(c)?));
        }
        for a in &self.extra_args {
            cmd.push(' ');
            cmd.push_str(&shell_quote(a).replace('%', "%%"));
        }
        cmd.push_str(" %f %p");
        Ok(cmd)
    }
}

/// A point-in-time restore asked for.
#[derive(Debug, Clone)]
pub struct PitrRequest {
    pub cluster: Ident,
    /// A backup ID (checked to reach the target), else the planner chooses.
    pub backup: Option<String>,
    pub target: PitrTarget,
    pub timeline: TargetTimeline,
    pub action: TargetAction,
    pub archive_get: ArchiveGet,
    pub timing: LeaseTiming,
}

/// The WAL recovery replays from the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// The first segment fetched from the archive (the backup's start, or the segment after
    /// the WAL stored in the backup).
    pub first: WalSegment,
    /// The last segment needed (an LSN target, the end of the backup), or the last one in the
    /// archive (a time, transaction or restore point: recovery reads until it finds it).
    pub last: Option<WalSegment>,
    /// `first..=last` (segment numbers).
    pub segments: u64,
    /// `target`: up to the target; `end_of_archive`: everything archived so far.
    pub until: &'static str,
    /// When the last segment was stored (Unix seconds), where known.
    pub last_stored_at: Option<i64>,
}

/// What the restore will do, for the DBA (text and JSON).
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    pub backup: String,
    pub backup_folder: PathBuf,
    pub why: String,
    pub skipped: Vec<Skipped>,
    pub backup_start_lsn: Lsn,
    pub backup_stop_lsn: Lsn,
    pub backup_timeline: TimelineId,
    pub backup_finished_at: i64,
    pub target: PitrTarget,
    pub timeline: TimelineId,
    pub timeline_why: String,
    pub wal: WalPlan,
    pub action: TargetAction,
    pub restore_command: String,
    /// What to check once the server has started.
    pub after_start: Vec<String>,
    pub warnings: Vec<String>,
}

/// Why a point-in-time restore is refused before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{0}")]
    Select(#[from] SelectError),
    #[error(
        "the archive does not hold the WAL recovery needs from backup {backup} to {to}: {missing}\
         {}. Nothing was written. Restore a newer backup taken after the missing WAL, or choose \
         a target before it",
        gap_text(.gap)
    )]
    Missing {
        backup: String,
        to: String,
        missing: Missing,
        gap: Option<Box<Gap>>,
    },
    #[error(
        "the WAL in the archive after backup {backup} stops at {missing} while later WAL is \
         there: a gap{}. Recovery toward {target} would stop at the gap (on PostgreSQL 10-12 it \
         would open the database there as if the target had been reached). Nothing was \
         written. Restore a backup taken after the gap, or give a target LSN before {end}",
        gap_text(.gap)
    )]
    Hole {
        backup: String,
        target: String,
        missing: WalSegment,
        end: Lsn,
        gap: Option<Box<Gap>>,
    },
    #[error("{0} is not valid UTF-8: it cannot be written into restore_command")]
    NotUtf8(PathBuf),
    #[error("{0} is not an absolute path: restore_command runs in the data directory")]
    NotAbsolute(PathBuf),
}

fn gap_text(gap: &Option<Box<Gap>>) -> String {
    match gap {
        None => String::new(),
        Some(g) => {
            let what = match &g.source {
                GapSource::Recorded { reason, host, time } => {
                    format!("recorded by the archiver on {host} at {time}: {reason}")
                }
                GapSource::Hole => "missing between archived segments".to_owned(),
                GapSource::Switch { to } => {
                    format!("missing around the switch to timeline {to}")
                }
            };
            format!(
                " (gap {}..{} of timeline {}, {what})",
                g.first, g.last, g.timeline
            )
        }
    }
}

impl HasKind for PitrError {
    fn error_kind(&self) -> ErrorKind {
        match self {
            PitrError::Repo(e) => e.error_kind(),
            PitrError::Select(SelectError::NoBackups | SelectError::NoSuchBackup(_)) => {
                ErrorKind::NotFound
            }
            PitrError::Select(_) | PitrError::Missing { .. } | PitrError::Hole { .. } => {
                ErrorKind::Refused
            }
            PitrError::NotUtf8(_) | PitrError::NotAbsolute(_) => ErrorKind::Usage,
        }
    }
}

/// The gap that holds `segment`, recorded ones first.
fn gap_of(contents: &ArchiveContents, segment: WalSegment) -> Option<Box<Gap>> {
    let gaps = contents.gaps();
    let holds = |g: &&Gap| g.timeline == segment.tli && g.first <= segment && segment <= g.last;
    gaps.iter()
        .filter(holds)
        .find(|g| matches!(g.source, GapSource::Recorded { .. }))
        .or_else(|| gaps.iter().find(holds))
        .cloned()
        .map(Box::new)
}

/// Plans the restore: chooses the backup, checks the archive, and returns the plan with the
/// recovery settings to write. Reads the repository; writes nothing.
pub fn plan(
    repo: &Repository,
    req: &PitrRequest,
) -> Result<(PitrPlan, RecoveryOptions), PitrError> {
    let catalog = repo.catalog(&req.cluster, req.timing)?;
    let contents = ArchiveContents::load(repo.backend(), &req.cluster, &catalog.registration)?;
    let seg_bytes = contents.seg_size.bytes();
    let timelines = Timelines::new(
        contents
            .timelines
            .keys()
            .filter_map(|t| contents.history_of(*t)),
    )
    .with_ends(
        seg_bytes,
        contents.timelines.iter().filter_map(|(t, w)| {
            let last = w.runs.last()?.last;
            Some((*t, Lsn(last.checked_add(1)?.checked_mul(seg_bytes)?)))
        }),
    );
    let candidates = select::candidates(&catalog);
    let chosen = select::select(
        &candidates,
        req.backup.as_deref(),
        &req.target,
        req.timeline,
        &timelines,
        catalog.diverging(),
    )?;
    let b = &chosen.backup;
    let entry = catalog.get(&b.id).ok_or_else(|| RepoError::NoSuchBackup {
        cluster: req.cluster.clone(),
        id: b.id.clone(),
    })?;
    let in_backup = entry
        .info
        .as_ref()
        .is_some_and(|i| i.wal.mode == WalMode::Include);
    let history = timelines
        .history(chosen.timeline)
        .ok_or(SelectError::NoSuchTimeline(chosen.timeline))?;
    let seg = contents.seg_size;
    // A backup carrying its WAL needs the archive from the segment of its stop on (the rest of
    // that segment is in the archive only); otherwise from its start.
    let from = if in_backup {
        (b.stop_tli, b.stop_lsn)
    } else {
        (b.start_tli, b.start_lsn)
    };
    let missing = |to: RecoveryEnd, what: String| {
        contents
            .covers(from, to, &history)
            .map_err(|missing| PitrError::Missing {
                backup: b.id.clone(),
                to: what,
                gap: match &missing {
                    Missing::Segment { segment } => gap_of(&contents, *segment),
                    _ => None,
                },
                missing,
            })
    };
    let first = WalSegment::containing(from.1, history.timeline_of(from.1), seg);
    let count = |last: WalSegment| {
        let a = first.segno(seg).unwrap_or(0);
        let z = last.segno(seg).unwrap_or(0);
        z.saturating_sub(a) + 1
    };
    let mut warnings = Vec::new();
    let wal = match &req.target {
        PitrTarget::Lsn(l) => {
            missing(RecoveryEnd::Through(*l), format!("the target LSN {l}"))?;
            let last = WalSegment::containing(*l, history.timeline_of(*l), seg);
            WalPlan {
                first,
                last: Some(last),
                segments: count(last),
                until: "target",
                last_stored_at: None,
            }
        }
        PitrTarget::Immediate => {
            if !in_backup {
                missing(
                    RecoveryEnd::Before(b.stop_lsn),
                    format!("its end at {}", b.stop_lsn),
                )?;
            }
            let last = WalSegment::containing_end(b.stop_lsn, b.stop_tli, seg);
            WalPlan {
                first,
                last: Some(last),
                segments: count(last),
                until: "target",
                last_stored_at: None,
            }
        }
        PitrTarget::Time(_) | PitrTarget::Xid(_) | PitrTarget::Name(_) | PitrTarget::End => {
            if !in_backup {
                missing(
                    RecoveryEnd::Before(b.stop_lsn),
                    format!("its end at {}", b.stop_lsn),
                )?;
            }
            let reach = contents
                .reach(from, &history)
                .map_err(|missing| PitrError::Missing {
                    backup: b.id.clone(),
                    to: req.target.to_string(),
                    gap: None,
                    missing,
                })?;
            if reach.hole {
                return Err(PitrError::Hole {
                    backup: b.id.clone(),
                    target: req.target.to_string(),
                    missing: reach.missing,
                    end: reach.end,
                    gap: gap_of(&contents, reach.missing),
                });
            }
            // The archiver dropped WAL where recovery will end (its queue limit, a gap
            // record): the end of the archive is not the end of what the server wrote.
            if let Some(g) = gap_of(&contents, reach.missing)
                .filter(|g| matches!(g.source, GapSource::Recorded { .. }))
            {
                warnings.push(format!(
                    "recovery ends at {}, where WAL the server wrote was dropped before it was                      archived{}: nothing after it can be restored from this archive; take a new                      full backup",
                    reach.end,
                    gap_text(&Some(g))
                ));
            }
            if let (PitrTarget::Time(t), Some(stored)) = (&req.target, reach.last_time) {
                if stored < t.timestamp() {
                    warnings.push(format!(
                        "the newest WAL segment in the archive on this timeline was stored at \
                         {}, before the target: if the server went on writing, the WAL up to the \
                         target may not be archived yet (PostgreSQL 13+ then stops with \
                         \"recovery ended before configured recovery target was reached\"; \
                         10-12 open the database at the end of the archive)",
                        rfc3339(stored)
                    ));
                }
            }
            WalPlan {
                first,
                last: reach.last,
                segments: reach.last.map_or(0, count),
                until: "end_of_archive",
                last_stored_at: reach.last_time,
            }
        }
    };
    let restore_command = req.archive_get.command()?;
    let target = req.target.recovery_target();
    // Without a target, archive recovery ends at the first file the archive does not have and
    // the server opens on a new timeline (xlogrecovery.c): that is a promotion, whatever
    // recovery_target_action says (PostgreSQL ignores it without a target).
    let action = if target.is_some() {
        req.action
    } else {
        TargetAction::Promote
    };
    let recovery = RecoveryOptions {
        target_action: target.as_ref().map(|_| action),
        target,
        target_timeline: Some(TargetTimeline::Id(chosen.timeline)),
        restore_command: Some(restore_command.clone()),
        standby: false,
        primary_conninfo: None,
    };
    let after_start = after_start(req, &chosen, entry.info.as_ref().map(|i| i.stop_lsn));
    let folder = repo
        .backup_folder(&req.cluster, &entry.id)?
        .unwrap_or_else(|| repo.backup_shown(&req.cluster, &entry.id));
    let plan = PitrPlan {
        backup: b.id.clone(),
        backup_folder: folder,
        why: chosen.why.clone(),
        skipped: chosen.skipped.clone(),
        backup_start_lsn: b.start_lsn,
        backup_stop_lsn: b.stop_lsn,
        backup_timeline: b.stop_tli,
        backup_finished_at: b.finished_at,
        target: req.target.clone(),
        timeline: chosen.timeline,
        timeline_why: chosen.timeline_why.clone(),
        wal,
        action,
        restore_command,
        after_start,
        warnings,
    };
    Ok((plan, recovery))
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(|| secs.to_string(), |d| d.to_rfc3339())
}

/// What the DBA checks once the server runs, for the action and the kind of target.
fn after_start(req: &PitrRequest, chosen: &select::Selection, stop: Option<Lsn>) -> Vec<String> {
    let b = &chosen.backup;
    if req.target == PitrTarget::End {
        return vec![
            "the server log says \"selected new timeline ID\" and \"archive recovery \
             complete\" after the last segment the archive has: recovery replayed every \
             archived segment from the backup on and opened for writes on a new timeline"
                .to_owned(),
            "the log's \"last completed transaction was at log time …\" is how far the copy \
             goes: WAL the lost server wrote but had not archived is not in it (pgsafe info \
             shows the newest archived segment)"
                .to_owned(),
        ];
    }
    let mut out = vec![format!(
        "the server log names where recovery stopped (\"recovery stopping before/after …\") and \
         then \"{}\"",
        match req.action {
            TargetAction::Pause => "pausing at the end of recovery",
            TargetAction::Promote => "selected new timeline ID",
            TargetAction::Shutdown => "shutdown at recovery target",
        }
    )];
    out.push(match req.action {
        TargetAction::Pause => "paused at the target, read-only: check the data; SELECT \
            pg_wal_replay_resume() ends recovery and opens for writes on a new timeline. If the \
            target is too early, stop the server and restore again with a later target (a \
            paused recovery cannot go further). With hot_standby = off PostgreSQL shuts down \
            instead of pausing"
            .to_owned(),
        TargetAction::Promote => "it opens for writes on a new timeline at the target".to_owned(),
        TargetAction::Shutdown => "it shuts down at the target; starting it again replays to \
            the same target and shuts down again: set recovery_target_action = 'promote' to open \
            it"
        .to_owned(),
    });
    out.push(format!(
        "\"requested recovery stop point is before consistent recovery point\": the target \
         lies before the end of backup {} (LSN {}, {}): restore an older backup",
        b.id,
        stop.unwrap_or(b.stop_lsn),
        match b.stop_time_us {
            Some(us) => format!(
                "stopped {} by the server's clock",
                crate::repo::doc::format_time(us)
            ),
            None => format!("finished {}", rfc3339(b.finished_at)),
        }
    ));
    if chosen.unknowable {
        out.push(format!(
            "a transaction or restore point older than backup {} is never found: PostgreSQL \
             13+ stops with \"recovery ended before configured recovery target was reached\", \
             10-12 replay to the end of the archive and open there (no \"recovery stopping\" \
             line in the log: do not use that copy). Then restore an older backup by its ID \
             (pgsafe info lists them with their times)",
            b.id
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `command` as PostgreSQL would (`%f`, `%p`, `%%` replaced) with `sh -c`, the program
    /// being a script that prints its arguments one per line.
    fn run_as_postgres(command: &str, f: &str, p: &str) -> Vec<String> {
        let mut expanded = String::new();
        let mut it = command.chars().peekable();
        while let Some(c) = it.next() {
            if c == '%' {
                match it.next() {
                    Some('f') => expanded.push_str(f),
                    Some('p') => expanded.push_str(p),
                    Some('%') => expanded.push('%'),
                    other => panic!("stray % before {other:?} in {command}"),
                }
            } else {
                expanded.push(c);
            }
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(&expanded)
            .output()
            .unwrap();
        assert!(out.status.success(), "{expanded}: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn restore_command_survives_shell_and_percent_expansion() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("pg safe's 100% \"bin\"");
        std::fs::write(
            &exe,
            "#!/bin/sh\nprintf '%s\\n' \"$PGSAFE_KEY_FILE\"\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let repo = PathBuf::from("/srv/repo with 'quotes' and \\ and %f $HOME `x`");
        let get = ArchiveGet {
            exe: exe.clone(),
            repo: repo.clone(),
            cluster: Ident::new("main").unwrap(),
            config: Some(PathBuf::from("/etc/pg safe/%p.toml")),
            extra_args: vec!["--s3-region".into(), "it's 100%f $X".into()],
            env: vec![("PGSAFE_KEY_FILE".into(), "/etc/pg safe/%f key".into())],
        };
        let cmd = get.command().unwrap();
        let args = run_as_postgres(&cmd, "000000010000000000000003", "pg_wal/RECOVERYXLOG");
        assert_eq!(
            args,
            [
                "/etc/pg safe/%f key",
                "archive-get",
                "--repo",
                repo.to_str().unwrap(),
                "--cluster",
                "main",
                "--config",
                "/etc/pg safe/%p.toml",
                "--s3-region",
                "it's 100%f $X",
                "000000010000000000000003",
                "pg_wal/RECOVERYXLOG"
            ]
        );
        // And the configuration file's quoting reads back (doubled quotes and backslashes).
        let quoted = super::super::quote_value(&cmd);
        assert!(quoted.starts_with('\'') && quoted.ends_with('\''));
        let inner = &quoted[1..quoted.len() - 1];
        assert_eq!(inner.replace("''", "'").replace("\\\\", "\\"), cmd);
        // Relative and non-UTF-8 paths are refused.
        let rel = ArchiveGet {
            repo: PathBuf::from("repo"),
            ..get.clone()
        };
        assert!(matches!(rel.command(), Err(PitrError::NotAbsolute(_))));
        // A repository in object storage is its URL (it was refused as a relative path).
        let s3 = ArchiveGet {
            repo: PathBuf::from("s3://bucket/a prefix"),
            ..get.clone()
        };
        let cmd = s3.command().unwrap();
        assert!(cmd.contains(" --repo 's3://bucket/a prefix' "), "{cmd}");
        use std::os::unix::ffi::OsStrExt;
        let bad = ArchiveGet {
            repo: PathBuf::from(std::ffi::OsStr::from_bytes(b"/r\xff")),
            ..get
        };
        assert!(matches!(bad.command(), Err(PitrError::NotUtf8(_))));
    }
}
