//! States without a `backup_label`: 2, 3, 5/6 (interrupted recovery, missing label), 7, 9.

use super::copy::CopyLook;
use super::*;
use crate::doctor::facts::SegState;

/// What PostgreSQL does when pg_control's checkpoint record is readable but its redo point is
/// not (no backup_label). 14 and later (current minors) check the redo point and stop with
/// "could not find redo location … referenced by checkpoint record at …"; 10–13 do not check
/// it and start anyway, without the WAL between the redo point and the record — measured with
/// the real servers by doctor_hostile_cli's redo_segment_missing tests.
fn redo_missing_effect(version: PgVersion) -> Result<&'static str, String> {
    if version.major() >= 14 {
        Ok("could not find redo location")
    } else {
        Err(format!(
            "PostgreSQL {} starts anyway: it does not check this, and never replays the WAL \
             between the redo point and the checkpoint record — changes made there are silently \
             lost or half-applied. Do not start it before the segment is back.",
            version.major_name()
        ))
    }
}

impl Ctx<'_> {
    // ---- no label ------------------------------------------------------------------------------

    pub(super) fn without_label(&self) -> Verdict {
        let f = self.f;
        let c = self.c;
        let marker = f.marker.as_ref().and_then(|m| m.parsed.as_ref());
        let old = f.label_old.as_ref().and_then(|l| l.parsed.as_ref());
        let consumed_marker_backup =
            marker.is_some_and(|m| old.is_some_and(|o| o.start_lsn() == m.start_lsn));

        if c.sentinel {
            let mut ev = vec![self.sentinel_line()];
            ev.extend(self.marker_line());
            ev.push(
                "backup_label is missing: PostgreSQL will refuse to start (\"could not locate a \
                 valid checkpoint record\") — the sentinel doing its job, no harm done yet"
                    .into(),
            );
            return self.label_missing(Confidence::High, ev);
        }
        if c.backup_start_point.is_valid() || c.backup_end_required || c.backup_end_point.is_valid()
        {
            return self.resume_recovery();
        }
        if f.marker.is_some() && !consumed_marker_backup && self.marker_stale().is_none() {
            let mut ev: Vec<String> = self.marker_line().into_iter().collect();
            ev.push(
                "backup_label is missing and recovery from that backup never began (no \
                 backup_label.old from it)"
                    .into(),
            );
            let conf = if marker.is_some() {
                Confidence::High
            } else {
                Confidence::Medium
            };
            return self.label_missing(conf, ev);
        }
        let unclean = !matches!(c.state, DbState::ShutDown | DbState::ShutDownInRecovery);
        let copy = if unclean {
            self.copy_look(None)
        } else {
            CopyLook::default()
        };
        if !copy.proof.is_empty() {
            // A copy of a running server put in place without the backup_label of the backup
            // it was taken during: crash recovery would start from pg_control's checkpoint, too
            // late, and lose what was written while the files were being copied.
            let mut ev = copy.proof.clone();
            ev.extend(copy.label_source.clone());
            let mut v = self.label_missing(Confidence::High, ev);
            v.summary = "a file copy of this server taken while a backup was running, put here \
                         without that backup's backup_label: do not start it as it is — crash \
                         recovery would silently lose what was written during the copy; put the \
                         backup's label back first"
                .into();
            return v;
        }
        if old.is_none() && !matches!(c.state, DbState::ShutDown) {
            let mut signs = Vec::new();
            if f.files.backup_manifest || f.files.pgsafe_json {
                signs.push(
                    "a backup_manifest or pgsafe.json is in the directory: it is (a copy of) a \
                     backup folder, and its backup_label is missing"
                        .to_owned(),
                );
            }
            if !f.files.postmaster_opts && f.postmaster.liveness == Liveness::Absent {
                signs.push(format!(
                    "pg_control says \"{}\" — the server was running when these files were \
                     captured — yet postmaster.pid and postmaster.opts, which a server that ran \
                     here always leaves, are both missing: backup tools leave exactly these two \
                     out",
                    c.state
                ));
            }
            if f.postmaster.names_this_directory == Some(false) {
                signs.push(format!(
                    "postmaster.pid was written by a server running in {}: these files were \
                     copied from there",
                    f.postmaster.data_directory.as_deref().unwrap_or("?")
                ));
            }
            if !signs.is_empty() {
                // Two independent signs (a backup file and the missing pid/opts pair, say)
                // leave little doubt.
                let confidence = if signs.len() >= 2 {
                    Confidence::High
                } else {
                    Confidence::Medium
                };
                return self.label_missing(confidence, signs);
            }
        }
        match c.state {
            DbState::ShutDown if old.is_some() && !f.files.standby_signal => self.finished(),
            DbState::ShutDown | DbState::ShutDownInRecovery => self.clean(),
            _ => self.crashed(&copy),
        }
    }

    /// 6: a restore whose backup_label is missing.
    fn label_missing(&self, confidence: Confidence, mut ev: Vec<String>) -> Verdict {
        let marker = self.current_marker();
        let mut d = Draft::new(
            DoctorState::RestoredBroken,
            confidence,
            "a restored backup whose backup_label is missing: put the backup's label back before \
             starting — without it the database would be silently corrupted",
        );
        ev.push(self.control_line());
        ev.extend(self.pid_line());
        ev.push(self.wal_summary());
        ev.extend(self.server_context());
        d.evidence = ev;
        let src = marker.and_then(|m| m.source.clone());
        let (action, cmd) = match (&src, marker) {
            (Some(s), _) => (
                format!(
                    "Copy the backup's backup_label (and tablespace_map, if the backup has one) \
                     back, byte for byte, from the backup this directory was restored from ({s}):"
                ),
                format!(
                    "cp {} {}/",
                    shq(&format!("{}/backup_label", s.trim_end_matches('/'))),
                    self.dir()
                ),
            ),
            (None, Some(m)) => (
                format!(
                    "Copy backup_label (and tablespace_map, if any) back from backup {} (start \
                     {}), byte for byte:",
                    m.backup_id, m.start_lsn
                ),
                format!("cp BACKUP/backup_label {}/", self.dir()),
            ),
            (None, None) => (
                "Find the backup this directory was restored from and copy its backup_label (and \
                 tablespace_map, if any) back, byte for byte:"
                    .to_owned(),
                format!("cp BACKUP/backup_label {}/", self.dir()),
            ),
        };
        d.steps.push(Step::run(action, cmd));
        d.steps.push(Step::run(
            "Then check again before starting:",
            format!("pgsafe doctor {}", self.dir()),
        ));
        d.caveats.push(if self.c.sentinel {
            "Do not try to get past the refusal (pg_resetwal, or rewriting pg_control): without \
             the label PostgreSQL would start from a checkpoint later than where the backup \
             began, and data changed during the backup would be silently lost or corrupted."
                .into()
        } else {
            "Do not start the server without the label, and do not run pg_resetwal: PostgreSQL \
             would recover from pg_control's checkpoint, which is later than where the backup \
             began, and data changed during the backup would be silently lost or corrupted."
                .into()
        });
        if confidence < Confidence::High {
            d.confirm.push(
                "Was this directory restored from a backup? If it is instead the original \
                 server's directory after a crash (and someone removed postmaster.pid and \
                 postmaster.opts), crash recovery is right: start it."
                    .into(),
            );
        }
        d.done()
    }

    /// 5 or 6: recovery from a backup began (the label was consumed) and was interrupted.
    fn resume_recovery(&self) -> Verdict {
        let f = self.f;
        let c = self.c;
        let mut ev = vec![
            format!(
                "pg_control: backup start point {}, backup end point {}, end-of-backup record \
                 required: {} — recovery from a base backup began and has not reached the end of \
                 the backup",
                c.backup_start_point,
                c.backup_end_point,
                if c.backup_end_required { "yes" } else { "no" }
            ),
            self.control_line(),
        ];
        if let Some(old) = f.label_old.as_ref().and_then(|l| l.parsed.as_ref()) {
            ev.push(format!(
                "backup_label.old: the label was consumed when recovery began ({})",
                self.label_line(old).trim_start_matches("backup_label: ")
            ));
        }
        ev.extend(self.marker_line());
        ev.extend(self.pid_line());
        let end = f
            .backup_end
            .as_ref()
            .map(|e| e.lsn)
            .or(c.backup_end_point.is_valid().then_some(c.backup_end_point))
            .unwrap_or(c.min_recovery_point)
            .max(c.checkpoint);
        let (miss, n) = self.missing(
            c.redo,
            Lsn(end.0.saturating_sub(1)).max(c.checkpoint),
            c.timeline,
        );
        ev.push(self.wal_summary());
        let source = self.wal_source();
        if miss.is_empty() || source.is_some() {
            let mut d = Draft::new(
                DoctorState::RestoredReady,
                if miss.is_empty() {
                    Confidence::High
                } else {
                    Confidence::Medium
                },
                "a restored backup whose recovery was interrupted; it resumes where it stopped: \
                 start it",
            )
            .evidence(ev);
            if let Some(s) = source {
                d.evidence.push(format!("recovery can fetch WAL by {s}"));
            }
            d.steps.extend(self.stale_pid_step());
            d.steps
                .push(self.start_step("Start the server; recovery continues from pg_control."));
            return d.done();
        }
        let mut d = Draft::new(
            DoctorState::RestoredBroken,
            Confidence::High,
            format!(
                "a restored backup whose recovery was interrupted and cannot continue: WAL \
                 segment {} is missing and no restore_command is in use",
                miss[0]
            ),
        )
        .evidence(ev);
        d.evidence.push(format!("missing: {}", seg_list(&miss, n)));
        d.steps.push(Step::run(
            "Copy the missing WAL from the backup's pg_wal/ or your WAL archive into pg_wal:",
            format!("cp BACKUP/pg_wal/{} {}/", miss[0], self.file("pg_wal")),
        ));
        d.steps.push(self.start_step("Then start it."));
        d.done()
    }

    /// 7.
    fn finished(&self) -> Verdict {
        let f = self.f;
        let mut d = Draft::new(
            DoctorState::RecoveryFinished,
            Confidence::High,
            "restored from a backup; recovery finished and the server was shut down cleanly \
             since: it starts normally",
        );
        if let Some(old) = f.label_old.as_ref().and_then(|l| l.parsed.as_ref()) {
            d.evidence.push(format!(
                "backup_label.old: recovery consumed the label of the backup this directory came \
                 from ({})",
                self.label_line(old).trim_start_matches("backup_label: ")
            ));
        }
        d.evidence.push(
            "pg_control has no backup start point pending: replay reached the end of the backup"
                .into(),
        );
        d.evidence.push(self.control_line());
        d.evidence.extend(self.marker_line());
        if f.files.recovery_done {
            d.evidence
                .push("recovery.done: archive recovery ended (recovery.conf was renamed)".into());
        }
        if let Some(v) = self.checkpoint_wal_problem() {
            return v;
        }
        d.steps.push(Step::says("Nothing to repair."));
        d.steps.push(self.start_step("Start it when you want."));
        d.done()
    }

    /// Whether pg_wal lacks the segments from redo to checkpoint (the server would not start).
    ///
    /// Two different failures (PostgreSQL's recovery test 050_redo_segment_missing): the
    /// segment holding the checkpoint *record* is missing — the server cannot read pg_control's
    /// checkpoint at all ("could not locate a valid checkpoint record") — or only a segment
    /// between the checkpoint's redo point and its record is (a checkpoint that ran while WAL
    /// was switched): the record is read, then the redo point is not found. The message is
    /// the one src/backend/access/transam/xlogrecovery.c (xlog.c before 15) of that version
    /// prints; the 050 test in doctor_hostile_cli checks it against the real server's log.
    fn checkpoint_wal_problem(&self) -> Option<Verdict> {
        let c = self.c;
        let (miss, n) = self.missing(c.redo, c.checkpoint, c.timeline);
        if miss.is_empty() {
            return None;
        }
        let size = c.wal_seg_size;
        let ckpt_seg = WalSegment::containing(c.checkpoint, c.timeline, size);
        let record_missing = miss.contains(&ckpt_seg)
            || (n > miss.len() as u64
                && !self
                    .f
                    .wal
                    .state_of(c.checkpoint.0 / size.bytes(), c.timeline)
                    .is_some_and(SegState::usable));
        let (summary, message) = if record_missing {
            (
                format!(
                    "PostgreSQL will not start: pg_wal lacks {ckpt_seg}, which holds pg_control's \
                     latest checkpoint record ({})",
                    c.checkpoint
                ),
                Ok("could not locate a valid checkpoint record".to_owned()),
            )
        } else {
            (
                format!(
                    "PostgreSQL will not start: pg_wal lacks {}, which holds the redo point {} of \
                     pg_control's latest checkpoint (the checkpoint record itself, at {}, is in \
                     {ckpt_seg}, which is present)",
                    miss[0], c.redo, c.checkpoint
                ),
                redo_missing_effect(self.version).map(str::to_owned),
            )
        };
        let mut d = Draft::new(DoctorState::Unknown, Confidence::High, summary);
        d.evidence.push(self.control_line());
        d.evidence.push(match message {
            Ok(m) => format!(
                "missing: {} — PostgreSQL stops with \"{m}\"",
                seg_list(&miss, n)
            ),
            Err(e) => format!("missing: {} — {e}", seg_list(&miss, n)),
        });
        d.evidence.push(self.wal_summary());
        d.evidence.extend(self.pid_line());
        d.confirm.push(
            "Where did pg_wal's files go — a WAL directory on another disk that is not mounted, a \
             copy made without pg_wal, a cleanup script?"
                .into(),
        );
        d.steps.push(Step::says(
            "Put the missing WAL segments back into pg_wal (from where they were moved, or from \
             the WAL archive), then run pgsafe doctor again.",
        ));
        d.caveats.push(
            "pg_resetwal would make the server start, but throws away the WAL it needs: data \
             loss and possibly corruption. Use it only as the last resort, on a copy."
                .into(),
        );
        Some(d.done())
    }

    /// 2.
    fn clean(&self) -> Verdict {
        let f = self.f;
        let c = self.c;
        if let Some(v) = self.checkpoint_wal_problem() {
            return v;
        }
        if let Some(v) = self.recovery_conf_on_12(DoctorState::Unknown) {
            return v;
        }
        let standby = c.state == DbState::ShutDownInRecovery;
        let mut d = Draft::new(
            DoctorState::CleanShutdown,
            Confidence::High,
            if standby {
                "cleanly shut down (as a standby): it starts normally"
            } else {
                "cleanly shut down: it starts normally"
            },
        );
        d.evidence.push(self.control_line());
        d.evidence.push(match f.postmaster.liveness {
            Liveness::Absent => "no postmaster.pid: no server is running".to_owned(),
            _ => self.pid_line().unwrap_or_default(),
        });
        if let Some(old) = f.label_old.as_ref().and_then(|l| l.parsed.as_ref()) {
            d.evidence.push(format!(
                "backup_label.old: this directory was started from a backup once (start {})",
                old.start_lsn()
            ));
        }
        if f.files.removed_label {
            d.evidence.push(format!(
                "{REMOVED_LABEL_FILE}: a leftover backup_label was renamed here earlier (by \
                 pgsafe doctor's fix or by hand)"
            ));
        }
        d.evidence.extend(self.server_context());
        d.steps.extend(self.stale_pid_step());
        if standby && !self.recovery_requested() {
            self.standby_without_signal(&mut d);
        } else {
            d.steps.push(Step::says("Nothing to repair."));
        }
        d.done()
    }

    /// A standby (pg_control in recovery) without its signal file starts as a primary: a
    /// second primary if the real one still runs (split brain), and a new timeline that the
    /// real primary's standbys cannot follow. Never "start it" without a question.
    fn standby_without_signal(&self, d: &mut Draft) {
        let file = if self.pre12() {
            "recovery.conf (with standby_mode = 'on')"
        } else {
            "standby.signal"
        };
        d.summary = format!(
            "{} — but it was a standby and {file} is missing: started as it is, it would end \
             recovery and come up as a PRIMARY",
            d.summary
                .split([':', ';'])
                .next()
                .unwrap_or("stopped while in recovery")
        );
        d.confidence = d.confidence.min(Confidence::Medium);
        d.evidence.push(format!(
            "pg_control says \"{}\" (a server in recovery: a standby, or a restore being \
             replayed), and no {} asks for recovery",
            self.c.state,
            if self.pre12() {
                "recovery.conf"
            } else {
                "standby.signal or recovery.signal"
            }
        ));
        d.steps.push(if self.pre12() {
            Step::run(
                "If it should stay a standby, put recovery.conf back (standby_mode = 'on', \
                 primary_conninfo, restore_command as before), then start it:",
                format!(
                    "printf \"standby_mode = 'on'\\nprimary_conninfo = 'host=PRIMARY user=replicator'\\n\" > {}",
                    self.file("recovery.conf")
                ),
            )
        } else {
            Step::run(
                "If it should stay a standby, put standby.signal back before starting it:",
                format!("touch {}", self.file("standby.signal")),
            )
        });
        d.confirm.push(
            "Should this server become a primary? Only if its old primary is gone for good (a \
             failover you decided on); otherwise two primaries would accept writes."
                .into(),
        );
    }

    fn recovery_conf_on_12(&self, state: DoctorState) -> Option<Verdict> {
        if !self.f.files.recovery_conf || self.pre12() {
            return None;
        }
        let mut d = Draft::new(
            state,
            Confidence::High,
            format!(
                "PostgreSQL {} will refuse to start: recovery.conf is not supported since 12",
                self.version.major_name()
            ),
        );
        d.evidence.push(self.control_line());
        d.evidence.push(
            "recovery.conf exists (FATAL: using recovery command file \"recovery.conf\" is not \
             supported)"
                .into(),
        );
        d.steps.push(Step::run(
            "Move its settings into postgresql.conf, use standby.signal (standby) or \
             recovery.signal (archive recovery) instead, and set the old file aside:",
            format!(
                "mv {} {}",
                self.file("recovery.conf"),
                self.file("recovery.conf.pgsafe-old")
            ),
        ));
        Some(d.done())
    }

    /// 3.
    fn crashed(&self, copy: &CopyLook) -> Verdict {
        let f = self.f;
        let c = self.c;
        if let Some(v) = self.checkpoint_wal_problem() {
            return v;
        }
        if let Some(v) = self.recovery_conf_on_12(DoctorState::Unknown) {
            return v;
        }
        let in_recovery = matches!(c.state, DbState::InArchiveRecovery);
        // postmaster.pid and postmaster.opts prove nothing (a file copy of a running server
        // has both): the confidence comes from the outside evidence having been checked.
        let confidence = if !copy.overlap.is_empty() {
            Confidence::Low
        } else if copy.unchecked.is_empty() {
            Confidence::High
        } else {
            Confidence::Medium
        };
        let mut d = Draft::new(
            DoctorState::Crashed,
            confidence,
            if in_recovery {
                "crashed (or was killed) while in recovery; it resumes recovery at the next start"
            } else {
                "crashed (or was killed); normal crash recovery will run at the next start"
            },
        );
        d.evidence.push(self.control_line());
        d.evidence.extend(self.pid_line());
        if f.postmaster.liveness == Liveness::Absent {
            d.evidence.push(
                "no postmaster.pid (removed after the crash, or by a failed start attempt)".into(),
            );
        }
        d.evidence.push(format!(
            "pg_wal holds the WAL from pg_control's redo point {} ({}) onward: crash recovery can \
             replay it",
            c.redo,
            WalSegment::containing(c.redo, c.timeline, c.wal_seg_size)
        ));
        d.evidence.push(self.wal_summary());
        d.evidence
            .push("no backup_label: there is no backup to recover from".into());
        if let Some(old) = f.label_old.as_ref().and_then(|l| l.parsed.as_ref()) {
            d.evidence.push(format!(
                "backup_label.old: this directory was restored from a backup once (start {}); \
                 that recovery finished",
                old.start_lsn()
            ));
        }
        if f.files.removed_label {
            d.evidence.push(format!(
                "{REMOVED_LABEL_FILE}: a leftover backup_label was renamed here earlier (by \
                 pgsafe doctor's fix or by hand)"
            ));
        }
        d.evidence.extend(self.server_context());
        d.evidence.extend(self.copy_lines(copy));
        if !copy.overlap.is_empty() {
            d.summary = "crashed during a backup — or a file copy of this server taken during \
                         that backup and put back without its backup_label: the evidence for \
                         both is the same, confirm which before starting it"
                .into();
            d.evidence.extend(copy.overlap.iter().cloned());
            d.confirm.push(
                "These are the files the server itself left when it stopped — not a file copy, \
                 rsync or storage snapshot taken while a backup was running and put back here. \
                 If they are such a copy, starting them without that backup's backup_label loses \
                 what was written while they were being copied: put the label back first."
                    .into(),
            );
        } else if !copy.unchecked.is_empty() {
            d.caveats.push(format!(
                "postmaster.pid and postmaster.opts do not show that these are the server's own \
                 files (a file copy of a running server has both), and pgsafe could not check \
                 everything that would show a copy: {}. If this directory was put back from a \
                 copy or snapshot taken during a backup, do not start it without that backup's \
                 backup_label.",
                copy.unchecked.join("; ")
            ));
            // Without the outside evidence a crashed server and a copy put back without its
            // label look the same (docs/threat-model.md, "What doctor may claim"): the DBA
            // confirms, and doctor does not exit 0 on its own word.
            d.confirm.push(
                "These are the files this server itself left when it stopped — not a file copy, \
                 rsync or storage snapshot of a running server put back here. pgsafe could not \
                 check the WAL archive that would tell them apart (see the warning). If they are \
                 such a copy taken during a backup, starting them without that backup's \
                 backup_label silently loses what was written while they were copied: put the \
                 label back first."
                    .into(),
            );
        }
        if in_recovery && !self.recovery_requested() {
            self.standby_without_signal(&mut d);
        }
        d.steps.extend(self.stale_pid_step());
        d.steps
            .push(self.start_step("Start the server; it recovers by itself."));
        d.done()
    }
}
