//! The pure classifier: [`Facts`] in, [`Verdict`] out. No IO, so every branch is unit-tested.
//!
//! Order of the questions:
//! 1. Is this a readable data directory at all? (else 9)
//! 2. Is a server running on it? (1)
//! 3. Is there a `backup_label`?
//!    * written by pg_rewind → 8; incremental → 6;
//!    * exclusive (`pg_start_backup`, or no METHOD line) and nothing says "restore" → the crash
//!      checks decide 4 (high confidence, `--fix` offered only when needed) or 4 ambiguous;
//!    * otherwise a restored backup → 5 or 6 depending on whether recovery can get its WAL.
//! 4. No label: sentinel / marker / backup-copy file pattern → 6; recovery from a backup
//!    interrupted → 5/6; recovered and cleanly stopped → 7; clean shutdown → 2; crash → 3;
//!    and anything that would still stop the server (no pg_wal, missing checkpoint WAL) → 9.

mod copy;
mod label;
mod nolabel;

use chrono::{DateTime, Utc};

use super::facts::{ControlFacts, Facts, Liveness};
use super::{
    Confidence, DoctorState, FixAction, REMOVED_LABEL_FILE, RESTORE_MARKER_FILE,
    SENTINEL_CHECKPOINT, Step, Verdict,
};
use crate::control::DbState;
use crate::datadir::LabelFile;
use crate::label::{BackupLabel, BackupMethod};
use crate::types::{Lsn, PgVersion, TimelineId, WalSegment};

/// A verdict being written.
struct Draft {
    state: DoctorState,
    confidence: Confidence,
    summary: String,
    evidence: Vec<String>,
    caveats: Vec<String>,
    steps: Vec<Step>,
    confirm: Vec<String>,
    fix: Option<FixAction>,
}

impl Draft {
    fn new(state: DoctorState, confidence: Confidence, summary: impl Into<String>) -> Draft {
        Draft {
            state,
            confidence,
            summary: summary.into(),
            evidence: Vec::new(),
            caveats: Vec::new(),
            steps: Vec::new(),
            confirm: Vec::new(),
            fix: None,
        }
    }

    fn evidence(mut self, lines: impl IntoIterator<Item = String>) -> Draft {
        self.evidence.extend(lines);
        self
    }

    fn done(self) -> Verdict {
        Verdict {
            state: self.state,
            state_number: self.state.number(),
            summary: self.summary,
            confidence: self.confidence,
            evidence: self.evidence,
            caveats: self.caveats,
            next_steps: self.steps,
            must_confirm: self.confirm,
            fix: self.fix,
        }
    }
}

/// Quotes a word for a POSIX shell when needed.
pub(crate) fn shq(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:@%+=,-".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn when(secs: i64) -> String {
    if secs == 0 {
        return "-".into();
    }
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// Classifies gathered facts.
pub fn classify(f: &Facts) -> Verdict {
    if let Some(v) = not_a_data_directory(f) {
        return v;
    }
    let (Some(c), Some(version)) = (
        f.control.as_ref(),
        f.version.or(f.control.as_ref().and_then(|c| c.version)),
    ) else {
        return Draft::new(
            DoctorState::Unknown,
            Confidence::Low,
            "pgsafe could not determine the PostgreSQL version of this directory",
        )
        .done();
    };
    let cx = Ctx { f, c, version };
    if cx.is_running() {
        return cx.running();
    }
    if let Some(v) = cx.no_wal_dir() {
        return v;
    }
    match &f.label {
        Some(lf) => match &lf.parsed {
            Some(label) => cx.with_label(label),
            None => cx.bad_label(lf),
        },
        None => cx.without_label(),
    }
}

fn not_a_data_directory(f: &Facts) -> Option<Verdict> {
    let dir = f.path.display().to_string();
    if !f.missing.is_empty() {
        let only_control = f.missing == ["global/pg_control"];
        let mut d = if only_control {
            Draft::new(
                DoctorState::Unknown,
                Confidence::High,
                "an incomplete data directory: global/pg_control is missing, so PostgreSQL cannot \
                 start it (an interrupted copy or restore?)",
            )
        } else {
            Draft::new(
                DoctorState::Unknown,
                Confidence::High,
                format!("{dir} is not a PostgreSQL data directory"),
            )
        };
        for m in &f.missing {
            d.evidence.push(if m.starts_with("everything") {
                "the directory is empty".to_owned()
            } else {
                format!("{m} is missing (every data directory has it)")
            });
        }
        if let Some(v) = f.version {
            d.evidence
                .push(format!("PG_VERSION says PostgreSQL {}", v.major_name()));
        }
        for n in &f.nested_data_dirs {
            d.steps.push(Step::run(
                "A data directory lies below this folder; did you mean it?",
                format!("pgsafe doctor {}", shq(&n.display().to_string())),
            ));
        }
        if only_control {
            d.steps.push(Step::says(
                "Restore the directory again from its backup (pg_control must be copied too, \
                 last); do not try to create pg_control with pg_resetwal, which loses data.",
            ));
        } else if f.nested_data_dirs.is_empty() {
            d.steps.push(Step::says(
                "Pass the directory initdb created (it holds PG_VERSION, global/, base/, pg_wal/). \
                 `SHOW data_directory;` in psql prints it for a running server.",
            ));
        }
        return Some(d.done());
    }
    if let Some(e) = &f.pg_version_error {
        let mut d = Draft::new(
            DoctorState::Unknown,
            Confidence::High,
            "PG_VERSION cannot be read as a PostgreSQL version: the directory is damaged or not a \
             data directory",
        );
        d.evidence.push(format!("PG_VERSION: {e}"));
        d.steps.push(Step::says(
            "PG_VERSION holds the major version alone (e.g. \"15\"); if this is a data \
             directory, restore it from a backup rather than editing files by hand.",
        ));
        return Some(d.done());
    }
    if let Some(e) = &f.control_error {
        let mut d = Draft::new(
            DoctorState::Unknown,
            Confidence::High,
            "global/pg_control cannot be decoded, so nothing about this directory's state can be \
             trusted: do not start it before restoring pg_control from a backup",
        );
        d.evidence.push(format!("global/pg_control: {e}"));
        d.steps.push(Step::says(
            "Keep the directory as it is (make a copy first). Restore from a backup; \
             pg_resetwal can force a start but loses data and is the last resort.",
        ));
        return Some(d.done());
    }
    if let (Some(v), Some(c)) = (f.version, f.control.as_ref().and_then(|c| c.version))
        && v.major() != c.major()
    {
        let mut d = Draft::new(
            DoctorState::Unknown,
            Confidence::High,
            format!(
                "PG_VERSION says PostgreSQL {} but pg_control was written by PostgreSQL {}: files \
                 of two different clusters are mixed here",
                v.major_name(),
                c.major_name()
            ),
        );
        d.evidence.push(format!(
            "pg_control catalog version {} belongs to PostgreSQL {}",
            f.control.as_ref().map_or(0, |c| c.catalog_version_no),
            c.major_name()
        ));
        d.steps.push(Step::says(
            "Do not start it: restore the whole directory from one backup (pg_control is copied \
             with, and last among, the files of the same cluster).",
        ));
        return Some(d.done());
    }
    None
}

struct Ctx<'a> {
    f: &'a Facts,
    c: &'a ControlFacts,
    version: PgVersion,
}

impl Ctx<'_> {
    fn dir(&self) -> String {
        shq(&self.f.path.display().to_string())
    }

    fn file(&self, rel: &str) -> String {
        shq(&self.f.path.join(rel).display().to_string())
    }

    fn start_step(&self, why: &str) -> Step {
        Step::run(
            format!(
                "{why} (As the data directory's owner, or through your service manager, e.g. \
                 systemctl start postgresql.)"
            ),
            format!("pg_ctl -D {} start", self.dir()),
        )
    }

    fn pre12(&self) -> bool {
        self.version.num() < 120000
    }

    fn has_exclusive_mode(&self) -> bool {
        self.version.num() < 150000
    }

    fn signal_files(&self) -> Vec<&'static str> {
        let fl = &self.f.files;
        let mut v = Vec::new();
        if fl.recovery_signal {
            v.push("recovery.signal");
        }
        if fl.standby_signal {
            v.push("standby.signal");
        }
        if fl.recovery_conf {
            v.push("recovery.conf");
        }
        v
    }

    /// A signal file (or recovery.conf) that asks for archive recovery / standby mode.
    fn recovery_requested(&self) -> bool {
        let fl = &self.f.files;
        if self.pre12() {
            fl.recovery_conf
        } else {
            fl.recovery_signal || fl.standby_signal
        }
    }

    /// A WAL source besides pg_wal that recovery will actually use.
    fn wal_source(&self) -> Option<String> {
        if !self.recovery_requested() {
            return None;
        }
        if let Some(cmd) = self.f.settings.restore_command() {
            return Some(format!("restore_command `{cmd}`"));
        }
        let standby = if self.pre12() {
            self.f.files.recovery_conf
        } else {
            self.f.files.standby_signal
        };
        if standby && let Some(ci) = self.f.settings.primary_conninfo() {
            return Some(format!(
                "streaming from the primary (primary_conninfo `{ci}`)"
            ));
        }
        None
    }

    fn control_line(&self) -> String {
        let c = self.c;
        format!(
            "pg_control: state \"{}\", latest checkpoint {} (redo {}, timeline {}) taken {}",
            c.state,
            c.checkpoint,
            c.redo,
            c.timeline,
            when(c.checkpoint_time)
        )
    }

    fn label_line(&self, l: &BackupLabel) -> String {
        let fl = l.fields();
        let method = match &fl.method {
            Some(BackupMethod::Exclusive) => "pg_start_backup (exclusive)".to_owned(),
            Some(BackupMethod::Streamed) => "streamed (non-exclusive)".to_owned(),
            Some(m) => m.as_str().to_owned(),
            None => "none given".to_owned(),
        };
        let mut s = format!(
            "backup_label: BACKUP METHOD {method}, START WAL LOCATION {} (file {}), CHECKPOINT \
             LOCATION {}",
            l.start_lsn(),
            fl.start.file,
            l.checkpoint_lsn()
        );
        if let Some(from) = &fl.from {
            s.push_str(&format!(", from {}", from.as_str()));
        }
        if let Some(t) = &fl.start_time {
            s.push_str(&format!(", started {t}"));
        }
        if let Some(label) = l.label_text() {
            s.push_str(&format!(", label \"{label}\""));
        }
        s
    }

    fn pid_line(&self) -> Option<String> {
        let p = &self.f.postmaster;
        match p.liveness {
            Liveness::Absent => None,
            Liveness::Unreadable => Some(p.detail.clone()),
            Liveness::Stale | Liveness::Live => {
                let mut s = format!("postmaster.pid: {}", p.detail);
                if let Some(st) = &p.status {
                    s.push_str(&format!(" (status line: {st})"));
                }
                Some(s)
            }
        }
    }

    /// The step that removes a stale postmaster.pid whose pid is in use by something else
    /// (PostgreSQL only checks that the pid exists and would refuse to start).
    fn stale_pid_step(&self) -> Option<Step> {
        let p = &self.f.postmaster;
        (p.liveness == Liveness::Stale && p.pid_in_use).then(|| {
            Step::run(
                format!(
                    "Remove postmaster.pid first (no server runs in this directory): {}. \
                     PostgreSQL only checks that some \
                     process has that pid and would refuse to start (\"lock file postmaster.pid \
                     already exists\").",
                    p.detail
                ),
                format!("rm {}", self.file("postmaster.pid")),
            )
        })
    }

    fn marker_line(&self) -> Option<String> {
        if let Some(stale) = self.marker_stale() {
            return Some(stale);
        }
        let m = self.f.marker.as_ref()?;
        Some(match &m.parsed {
            Some(m) => {
                let mut s = format!(
                    "{RESTORE_MARKER_FILE}: pgsafe restored backup \"{}\" here at {} (backup start {}",
                    m.backup_id, m.restored_at, m.start_lsn
                );
                if let Some(src) = &m.source {
                    s.push_str(&format!(", from {src}"));
                }
                s.push(')');
                s
            }
            None => format!(
                "{RESTORE_MARKER_FILE} exists (a pgsafe restore) but cannot be read: {}",
                m.error.as_deref().unwrap_or("?")
            ),
        })
    }

    /// Why the restore marker no longer describes this directory, if it does not: it
    /// describes one restore, and once that restore's recovery has passed the end of its backup
    /// (no sentinel, no backup end pending in pg_control, a checkpoint past the backup's stop)
    /// the directory is a running cluster of its own — a later crash of it is not "a restored
    /// backup", and the backup it came from is no source of WAL for it.
    fn marker_stale(&self) -> Option<String> {
        let m = self.f.marker.as_ref()?.parsed.as_ref()?;
        let c = self.c;
        if c.sentinel || c.backup_start_point.is_valid() || c.backup_end_required {
            return None;
        }
        let end = m.stop_lsn.unwrap_or(m.start_lsn);
        if c.checkpoint <= end {
            return None;
        }
        if let Some(l) = self.f.label.as_ref().and_then(|l| l.parsed.as_ref())
            && l.start_lsn() == m.start_lsn
        {
            return None;
        }
        Some(format!(
            "{RESTORE_MARKER_FILE} records pgsafe's restore of backup {} (start {}) at {}, but that \
             restore is over: pg_control has no backup end pending and its checkpoint {} is past \
             the backup's end {} — this cluster has run on its own since, so the marker says \
             nothing about its present state",
            m.backup_id, m.start_lsn, m.restored_at, c.checkpoint, end
        ))
    }

    /// The restore marker, when it still describes this directory (see [`Ctx::marker_stale`]).
    fn current_marker(&self) -> Option<&super::RestoreMarker> {
        if self.marker_stale().is_some() {
            return None;
        }
        self.f.marker.as_ref()?.parsed.as_ref()
    }

    fn sentinel_line(&self) -> String {
        format!(
            "pg_control's checkpoint location is pgsafe's restore sentinel {SENTINEL_CHECKPOINT}: \
             pgsafe restored this directory, and it can start only with the backup's backup_label"
        )
    }

    fn wal_summary(&self) -> String {
        let w = &self.f.wal;
        let ranges = w.ranges();
        let others = w.segments.values().filter(|s| !s.usable()).count();
        let mut s = if ranges.is_empty() {
            "pg_wal holds no usable WAL segment".to_owned()
        } else {
            let mut shown: Vec<String> = ranges.iter().take(6).cloned().collect();
            if ranges.len() > 6 {
                shown.push(format!("and {} more runs", ranges.len() - 6));
            }
            format!("pg_wal holds {}", shown.join(", "))
        };
        if others > 0 {
            s.push_str(&format!(
                " (plus {others} file(s) holding no usable WAL: recycled or pre-allocated for \
                 reuse)"
            ));
        }
        s
    }

    /// Missing (unusable) segments between two LSNs, for messages.
    fn missing(&self, from: Lsn, to: Lsn, tli: TimelineId) -> (Vec<WalSegment>, u64) {
        self.f.wal.missing_between(from, to, tli, 3)
    }

    fn is_running(&self) -> bool {
        self.f.postmaster.liveness == Liveness::Live
            || self
                .f
                .server
                .as_ref()
                .is_some_and(|s| s.reachable && s.same_directory == Some(true))
    }

    fn server_context(&self) -> Vec<String> {
        let Some(s) = &self.f.server else {
            return Vec::new();
        };
        if !s.reachable {
            return vec![format!(
                "asked over the connection given: no server answered ({})",
                s.error
                    .as_deref()
                    .unwrap_or("?")
                    .lines()
                    .next()
                    .unwrap_or("?")
            )];
        }
        let mut v = Vec::new();
        let same_sys = s.system_identifier == Some(self.c.system_identifier);
        match (s.same_directory, same_sys) {
            (Some(true), _) => {}
            (Some(false), true) => v.push(format!(
                "asked over the connection given: the server that answered belongs to the same cluster (system \
                 identifier {}) but runs on {}: a standby, the primary, or another copy",
                self.c.system_identifier,
                s.data_directory.as_deref().unwrap_or("?")
            )),
            (None, true) => v.push(format!(
                "asked over the connection given: the server that answered belongs to the same cluster (system \
                 identifier {}); its data_directory is not visible to this user (superuser or \
                 pg_read_all_settings needed), so pgsafe cannot tell whether it runs here",
                self.c.system_identifier
            )),
            (_, false) => v.push(format!(
                "asked over the connection given: the server that answered is a different cluster (system identifier \
                 {}), not this directory's",
                s.system_identifier
                    .map_or("unknown".to_owned(), |x| x.to_string())
            )),
        }
        v
    }

    // ---- 1: running ------------------------------------------------------------------------

    fn running(&self) -> Verdict {
        let f = self.f;
        let p = &f.postmaster;
        let server = f.server.as_ref().filter(|s| s.reachable);
        let confidence = if p.detail.contains("could not") && server.is_none() {
            Confidence::Medium
        } else {
            Confidence::High
        };
        let pid = p.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let mut d = Draft::new(
            DoctorState::Running,
            confidence,
            format!("a PostgreSQL server is running on this directory{pid}"),
        );
        d.evidence.extend(self.pid_line());
        if let Some(s) = server {
            let role = match s.in_recovery {
                Some(true) => "in recovery (a standby, or replaying a backup)",
                Some(false) => "a primary, accepting writes",
                None => "role unknown",
            };
            let mut archiving = format!(
                "archive_mode = {}",
                s.archive_mode.as_deref().unwrap_or("?")
            );
            if s.archive_mode.as_deref().is_some_and(|m| m != "off")
                && let Some(cmd) = &s.archive_command
            {
                archiving.push_str(&format!(", archive_command = `{cmd}`"));
            }
            if let Some(rc) = s.restore_command.as_deref().filter(|r| !r.is_empty()) {
                archiving.push_str(&format!(", restore_command = `{rc}`"));
            }
            d.evidence.push(format!(
                "asked over the connection given: the server{} answers and is {role}; {archiving}",
                s.version
                    .map(|v| format!(" (PostgreSQL {})", v.major_name()))
                    .unwrap_or_default()
            ));
        } else {
            d.evidence.extend(self.server_context());
        }
        d.evidence.push(self.control_line());
        let starting = p.status.as_deref() == Some("starting");
        if let Some(lf) = &f.label {
            let exclusive = lf.parsed.as_ref().is_some_and(is_exclusive_like);
            match (
                exclusive && self.has_exclusive_mode(),
                server.and_then(|s| s.in_exclusive_backup),
            ) {
                (true, Some(true)) => {
                    d.summary = format!(
                        "a PostgreSQL server is running on this directory{pid}, with an exclusive \
                         backup in progress"
                    );
                    d.evidence.push(format!(
                        "pg_is_in_backup() is true: an exclusive backup started {} is running; \
                         its backup_label is in the data directory",
                        server
                            .and_then(|s| s.backup_start_time.clone())
                            .unwrap_or_else(|| "?".into())
                    ));
                    d.caveats.push(
                        "While an exclusive backup runs, a crash leaves a server that may refuse \
                         to restart (\"could not locate required checkpoint record\"); pgsafe \
                         doctor recognises that case. Exclusive backups were removed in \
                         PostgreSQL 15: switch to non-exclusive backups (pgsafe backup)."
                            .into(),
                    );
                    d.steps.push(Step::run(
                        "When the copy is complete, end the backup (in any session):",
                        "psql -c 'SELECT pg_stop_backup()'",
                    ));
                }
                (true, None) => {
                    d.evidence.push(
                        "backup_label is an exclusive backup's (pg_start_backup): an exclusive \
                         backup is probably in progress"
                            .into(),
                    );
                    d.steps.push(Step::run(
                        "Check whether it is (pg_is_in_backup()), or let pgsafe doctor ask the server:",
                        "psql -c 'SELECT pg_is_in_backup(), pg_backup_start_time()'",
                    ));
                }
                _ if starting => {
                    d.evidence.push(
                        "backup_label exists and the server is starting: it is probably reading \
                         it right now (it renames it to backup_label.old)"
                            .into(),
                    );
                }
                (is_excl, _) => {
                    d.summary = format!(
                        "a PostgreSQL server is running on this directory{pid}, but a stray \
                         backup_label lies in it"
                    );
                    d.evidence.push(if is_excl {
                        "backup_label is an exclusive backup's, but the server is not in backup \
                         mode (pg_is_in_backup() is false): it was put back or left behind"
                            .to_owned()
                    } else if exclusive {
                        format!(
                            "backup_label is an exclusive backup's (pg_start_backup), which \
                             PostgreSQL {} cannot write: it was copied in from elsewhere",
                            self.version.major_name()
                        )
                    } else {
                        "backup_label is in the live data directory, but PostgreSQL never writes \
                         a non-exclusive backup's label there (and 15+ has no other kind): \
                         something put it there — typically a backup script that wrote \
                         pg_backup_stop()'s label into PGDATA instead of into the backup"
                            .into()
                    });
                    d.caveats.push(
                        "At the next restart or crash the server would treat this directory as a \
                         backup and recover from the label's position: it may refuse to start, \
                         or replay from the wrong place."
                            .into(),
                    );
                    d.steps.push(Step::run(
                        "While the server runs it does not use the file: move it out of the way \
                         now (keep it: it may belong with a backup), then fix whatever wrote it.",
                        format!(
                            "mv {} {}",
                            self.file("backup_label"),
                            self.file(REMOVED_LABEL_FILE)
                        ),
                    ));
                }
            }
        }
        if let Some(old) = f.label_old.as_ref().and_then(|l| l.parsed.as_ref()) {
            d.evidence.push(format!(
                "backup_label.old: this directory was started from a backup once (start {}{})",
                old.start_lsn(),
                old.label_text()
                    .map(|l| format!(", label \"{l}\""))
                    .unwrap_or_default()
            ));
        }
        d.evidence.extend(self.marker_line());
        if d.steps.is_empty() {
            d.steps.push(Step::says("Nothing to repair."));
            if f.server.is_none() {
                d.steps.push(Step::run(
                    "For the server's own view (recovery, backup mode, archiving), ask it:",
                    format!(
                        "pgsafe doctor --connect 'host=... user=postgres' {}",
                        self.dir()
                    ),
                ));
            }
        }
        d.done()
    }

    // ---- blockers ------------------------------------------------------------------------------

    fn no_wal_dir(&self) -> Option<Verdict> {
        let err = self.f.wal.error.as_ref()?;
        let restored = self.f.label.is_some() || self.f.marker.is_some() || self.c.sentinel;
        let state = if restored {
            DoctorState::RestoredBroken
        } else {
            DoctorState::Unknown
        };
        let mut d = Draft::new(
            state,
            Confidence::High,
            "PostgreSQL will not start: the WAL directory is missing or unreadable",
        );
        d.evidence.push(err.clone());
        d.evidence.push(self.control_line());
        d.steps.push(Step::says(
            "Bring the WAL directory back (mount the disk its symbolic link points to, or \
             restore it from the backup) before starting; never recreate it empty — the server \
             would then start without the WAL it needs.",
        ));
        Some(d.done())
    }
}

/// `BACKUP METHOD: pg_start_backup`, or no METHOD line (labels of PostgreSQL ≤ 9.5, or
/// hand-written ones: treated like exclusive, never with high confidence of anything).
fn is_exclusive_like(l: &BackupLabel) -> bool {
    l.is_exclusive() || l.fields().method.is_none()
}

fn seg_list(miss: &[WalSegment], n: u64) -> String {
    let mut s = miss
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if n > miss.len() as u64 {
        s.push_str(&format!(" and {} more", n - miss.len() as u64));
    }
    s
}
