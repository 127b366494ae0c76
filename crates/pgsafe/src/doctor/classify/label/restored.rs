//! States 5 and 6 with a label: a restored backup, ready to start or broken; a streamed label
//! in what looks like the original; a label that cannot belong to these files.

use super::*;

impl Ctx<'_> {
    pub(super) fn restored(&self, label: &BackupLabel, look: CrashLook) -> Verdict {
        let f = self.f;
        let c = self.c;
        let mut ev = vec![self.label_line(label)];
        let exclusive = is_exclusive_like(label);
        if !exclusive {
            ev.push(
                "a non-exclusive (streamed) label: PostgreSQL never writes one into its own data \
                 directory — it came with a backup"
                    .into(),
            );
        }
        ev.extend(look.restore_signs.iter().cloned());
        ev.push(self.control_line());
        let mut blockers: Vec<(String, Vec<Step>)> = Vec::new();
        if f.files.recovery_conf && !self.pre12() {
            blockers.push((
                format!(
                    "recovery.conf exists, and PostgreSQL {} refuses to start with it (\"using \
                     recovery command file recovery.conf is not supported\")",
                    self.version.major_name()
                ),
                vec![
                    Step::says(
                        "Move its settings (restore_command, recovery_target_*) into \
                         postgresql.conf, then replace it by recovery.signal:",
                    ),
                    Step::run(
                        "",
                        format!(
                            "mv {} {} && touch {}",
                            self.file("recovery.conf"),
                            self.file("recovery.conf.pgsafe-old"),
                            self.file("recovery.signal")
                        ),
                    ),
                ],
            ));
        }
        if label.is_from_standby()
            && !matches!(
                c.state,
                DbState::InArchiveRecovery | DbState::ShutDownInRecovery
            )
        {
            blockers.push((
                format!(
                    "the label is from a standby but pg_control says \"{}\": PostgreSQL refuses \
                     (\"backup_label contains data inconsistent with control file\") — \
                     pg_control must be the one copied from the standby with the backup",
                    c.state
                ),
                vec![Step::says(
                    "Copy global/pg_control from the same backup (it is copied last) into \
                     global/pg_control.",
                )],
            ));
        }
        if self.version.major() >= 15
            && !f.in_place_tablespaces.is_empty()
            && !f.settings.allows_in_place_tablespaces()
        {
            // CheckTablespaceDirectory (src/backend/access/transam/xlogrecovery.c) PANICs
            // when recovery reaches consistency with a directory in pg_tblspc.
            let names: Vec<String> = f
                .in_place_tablespaces
                .iter()
                .map(|o| format!("pg_tblspc/{o}"))
                .collect();
            blockers.push((
                format!(
                    "{} {} an in-place tablespace (a directory, not a link), and \
                     allow_in_place_tablespaces is not on: recovery stops with PANIC \
                     \"unexpected directory entry \"{}\" found in pg_tblspc/\"",
                    names.join(", "),
                    if names.len() == 1 { "is" } else { "are" },
                    f.in_place_tablespaces[0]
                ),
                vec![Step::run(
                    "Let recovery accept the in-place tablespace: turn allow_in_place_tablespaces \
                     on for this server (it may be turned off again once recovery is complete):",
                    format!(
                        "echo \"allow_in_place_tablespaces = on\" >> {}",
                        self.file("postgresql.auto.conf")
                    ),
                )],
            ));
        }
        if let Some(m) = &f.tablespace_map {
            if let Some(e) = &m.error {
                blockers.push((
                    format!("tablespace_map cannot be parsed ({e}): the server will refuse it"),
                    vec![Step::says(
                        "Copy tablespace_map from the backup again, byte for byte.",
                    )],
                ));
            }
            for e in m.entries.iter().filter(|e| !e.exists) {
                blockers.push((
                    format!(
                        "tablespace_map maps tablespace {} to {}, which does not exist: restore \
                         that tablespace's files there first",
                        e.oid, e.path
                    ),
                    vec![Step::says(format!(
                        "Restore tablespace {} into {} (or edit the path in tablespace_map to \
                         where you restored it).",
                        e.oid, e.path
                    ))],
                ));
            }
        }

        // The WAL recovery needs: from the label's start to the backup's end (or at least the
        // label's checkpoint).
        let tli = label.timeline();
        let end = f.backup_end.as_ref();
        let (to, max_tli) = match end {
            Some(e) => (
                Lsn(e.lsn.0.saturating_sub(1)).max(label.checkpoint_lsn()),
                e.timeline.unwrap_or(tli).max(tli),
            ),
            // A standby backup ends at the copied pg_control's minimum recovery point.
            None if label.is_from_standby() && c.min_recovery_point.is_valid() => (
                label.checkpoint_lsn().max(c.min_recovery_point),
                tli.max(c.min_recovery_point_tli),
            ),
            None => (label.checkpoint_lsn(), tli),
        };
        let (miss, n) = self.missing(label.start_lsn(), to, max_tli);
        let source = self.wal_source();
        // The backup the marker names is a WAL source only for its own label.
        let backup_src = self
            .current_marker()
            .filter(|m| m.start_lsn == label.start_lsn())
            .and_then(|m| m.source.clone());
        match end {
            Some(e) => ev.push(format!(
                "the backup ended at {} (from {}): recovery needs the WAL from {} through {}",
                e.lsn,
                e.source,
                WalSegment::containing(label.start_lsn(), tli, c.wal_seg_size),
                WalSegment::containing_end(e.lsn, e.timeline.unwrap_or(tli), c.wal_seg_size)
            )),
            None => ev.push(
                "where the backup ended is not recorded here (no restore marker, backup history \
                 file or backup_manifest): recovery needs the WAL from the label's start up to \
                 that point"
                    .into(),
            ),
        }
        ev.push(self.wal_summary());
        if let Some(s) = &source {
            ev.push(format!("recovery can also fetch WAL by {s}"));
        } else if let Some(cmd) = f.settings.restore_command() {
            ev.push(format!(
                "restore_command is set (`{cmd}`) but is not used: no {} asks for archive \
                 recovery",
                if self.pre12() {
                    "recovery.conf"
                } else {
                    "recovery.signal"
                }
            ));
        }
        ev.extend(f.settings.notes.iter().cloned());
        let never_remove = "Never remove backup_label from a restored backup: it tells PostgreSQL \
                            where recovery must begin; without it the server starts from \
                            pg_control's checkpoint and silently corrupts data.";

        // A streamed label in what looks exactly like a crashed original: say what to confirm
        // (pgsafe cannot tell a snapshot restore from a script's mistake; see the module docs).
        let crash_like = !exclusive
            && look.restore_signs.is_empty()
            && look.doubts.is_empty()
            && c.checkpoint > label.checkpoint_lsn();

        if !blockers.is_empty() || (!miss.is_empty() && source.is_none()) {
            let mut d = Draft::new(DoctorState::RestoredBroken, Confidence::High, "");
            let mut reasons = Vec::new();
            for (why, steps) in blockers {
                reasons.push(why.clone());
                d.evidence.push(why);
                d.steps.extend(steps);
            }
            if !miss.is_empty() && source.is_none() {
                let first = miss[0];
                let why = format!(
                    "WAL segment {first} is missing{} and there is nowhere to get it from (no \
                     restore_command in use)",
                    if n > 1 {
                        format!(" (with {} more: {})", n - 1, seg_list(&miss, n))
                    } else {
                        String::new()
                    }
                );
                reasons.push(why.clone());
                d.evidence.push(why);
                let from = match &backup_src {
                    Some(src) => format!("{}/pg_wal/{first}", src.trim_end_matches('/')),
                    None => format!("BACKUP/pg_wal/{first}"),
                };
                d.steps.push(Step::run(
                    format!(
                        "Copy the backup's WAL into pg_wal: {first} and every later segment up to \
                         the end of the backup{}. It is in the backup's pg_wal/ folder (pgsafe and \
                         pg_basebackup keep it there) or in your WAL archive.",
                        end.map(|e| format!(
                            " ({})",
                            WalSegment::containing_end(
                                e.lsn,
                                e.timeline.unwrap_or(tli),
                                c.wal_seg_size
                            )
                        ))
                        .unwrap_or_default()
                    ),
                    format!("cp {} {}/", shq(&from), self.file("pg_wal")),
                ));
                if f.settings.restore_command().is_some() && !self.recovery_requested() {
                    d.steps.push(Step::run(
                        "Or let the restore_command that is already set fetch it: it is used only \
                         in archive recovery, so ask for that:",
                        if self.pre12() {
                            format!(
                                "echo \"restore_command = '{}'\" > {}",
                                f.settings.restore_command().unwrap_or_default(),
                                self.file("recovery.conf")
                            )
                        } else {
                            format!("touch {}", self.file("recovery.signal"))
                        },
                    ));
                } else if self.pre12() {
                    d.steps.push(Step::run(
                        "Or fetch it from your WAL archive during recovery:",
                        format!(
                            "echo \"restore_command = 'cp /path/to/archive/%f %p'\" > {}",
                            self.file("recovery.conf")
                        ),
                    ));
                } else {
                    d.steps.push(Step::run(
                        "Or fetch it from your WAL archive during recovery: set restore_command \
                         in postgresql.conf (e.g. restore_command = 'cp /path/to/archive/%f %p'), \
                         then",
                        format!("touch {}", self.file("recovery.signal")),
                    ));
                }
            }
            d.summary = if crash_like {
                format!(
                    "will not start as it is: {} — and pgsafe cannot tell whether this is a \
                     restored backup (supply the WAL) or the original server with a backup's label \
                     written into it by mistake; confirm which before acting",
                    reasons.first().cloned().unwrap_or_default()
                )
            } else {
                format!(
                    "a restored backup that will not start as it is: {}",
                    reasons.first().cloned().unwrap_or_default()
                )
            };
            d.evidence.splice(0..0, ev);
            d.caveats.push(never_remove.into());
            if crash_like {
                self.streamed_in_original(&mut d, label);
            }
            d.steps.push(self.start_step("Then start it."));
            return d.done();
        }

        // Ready.
        let (confidence, wal_line) = if miss.is_empty() {
            let conf = if end.is_some() {
                Confidence::High
            } else {
                Confidence::Medium
            };
            (
                conf,
                if end.is_some() {
                    "pg_wal holds all the WAL the backup needs".to_owned()
                } else {
                    format!(
                        "pg_wal holds the backup's first WAL ({} onward)",
                        label.fields().start.file
                    )
                },
            )
        } else {
            (
                Confidence::Medium,
                format!(
                    "pg_wal lacks {}; recovery will fetch it by {} (pgsafe cannot check that the \
                     archive has it)",
                    seg_list(&miss, n),
                    source.clone().unwrap_or_default()
                ),
            )
        };
        let mut d = Draft::new(
            DoctorState::RestoredReady,
            confidence,
            "a restored backup, ready to recover: start it and keep backup_label",
        )
        .evidence(ev);
        d.evidence.push(wal_line);
        if c.sentinel {
            d.evidence.push(
                "the restore sentinel is in pg_control, and backup_label is present: exactly as \
                 pgsafe restore leaves it"
                    .into(),
            );
        }
        d.caveats.push(never_remove.into());
        if end.is_none() && !exclusive {
            d.caveats.push(
                "If WAL past the present segments is missing, PostgreSQL stops with \"WAL ends \
                 before end of online backup\" and changes nothing: then supply the rest and \
                 start again."
                    .into(),
            );
        }
        if exclusive && !self.recovery_requested() {
            d.caveats.push(
                "With an exclusive backup's label and no recovery signal, PostgreSQL does not \
                 check that replay reached the end of the backup: ask for archive recovery so it \
                 does."
                    .into(),
            );
            d.steps.push(Step::run(
                "Ask for archive recovery (PostgreSQL then insists on reaching the backup's end):",
                if self.pre12() {
                    format!(
                        "echo \"restore_command = 'cp /path/to/archive/%f %p'\" > {}",
                        self.file("recovery.conf")
                    )
                } else {
                    format!("touch {}", self.file("recovery.signal"))
                },
            ));
        }
        if !self.recovery_requested() && !exclusive {
            d.caveats.push(format!(
                "Without {} the server recovers from pg_wal only and stays on timeline {}; to \
                 recover further from a WAL archive (point in time), add it and restore_command \
                 before the first start.",
                if self.pre12() {
                    "recovery.conf"
                } else {
                    "recovery.signal"
                },
                tli
            ));
        }
        if crash_like {
            self.streamed_in_original(&mut d, label);
        }
        d.steps.extend(self.stale_pid_step());
        d.steps.push(self.start_step(
            "Start the server; watch its log for \"consistent recovery state reached\" and \
             \"database system is ready to accept connections\".",
        ));
        d.done()
    }

    /// A streamed label in a directory that otherwise looks like the crashed original: the
    /// one case where removing it *might* be right, and pgsafe cannot know. Documented choice:
    /// never offered as a fix; listed as a question.
    pub(super) fn streamed_in_original(&self, d: &mut Draft, label: &BackupLabel) {
        d.confidence = d.confidence.min(Confidence::Medium);
        d.confirm.push(
            "Was this directory restored from a backup or a storage snapshot? Then keep \
             backup_label and follow the steps."
                .into(),
        );
        d.confirm.push(format!(
            "Or is it the original server's directory, into which a backup script wrote a \
             backup's label by mistake (pg_backup_stop()'s output written to PGDATA instead of the \
             backup, started {})? Only then is moving the label away right — pgsafe cannot tell \
             the two apart (a snapshot restore looks exactly like this), so it will not do it.",
            label.fields().start_time.as_deref().unwrap_or("?")
        ));
    }

    /// A label whose START is later than pg_control's checkpoint cannot belong to these files:
    /// a backup's pg_control is copied after its start (last), so its checkpoint is never
    /// older than the label's START. Starting from such a label replays from the wrong place;
    /// removing it is wrong too if these files are a backup whose own label was replaced.
    pub(super) fn stray_label(&self, label: &BackupLabel) -> Option<Verdict> {
        let c = self.c;
        if c.sentinel || label.start_lsn() <= c.checkpoint {
            return None;
        }
        let mut d = Draft::new(
            DoctorState::RestoredBroken,
            Confidence::High,
            "backup_label does not belong to these files: its START is later than pg_control's \
             checkpoint (a stray label from another backup or another cluster) — do not start \
             the server until the right label is in place",
        );
        d.evidence.push(self.label_line(label));
        d.evidence.push(self.control_line());
        d.evidence.push(format!(
            "the label's START WAL LOCATION {} is later than pg_control's latest checkpoint {}: \
             a backup's pg_control is copied after the backup started, so its checkpoint is \
             never older than its label's start",
            label.start_lsn(),
            c.checkpoint
        ));
        d.evidence.extend(self.pid_line());
        d.caveats.push(
            "Starting with this label would make PostgreSQL begin recovery at a checkpoint these \
             files were never at (wrong or corrupt data); removing it is just as wrong if these \
             files are a backup whose own label was overwritten."
                .into(),
        );
        d.steps.push(Step::says(
            "Find where this directory came from and the backup_label that belongs to it (the \
             label stored with that backup: its START WAL LOCATION is not later than pg_control's \
             checkpoint), put it in place byte for byte, and run pgsafe doctor again.",
        ));
        d.confirm.push(
            "Which backup or copy are these files, and where is that backup's own backup_label? \
             If this is the original server after a crash and something wrote a foreign label \
             into it, move the label away by hand (keep it) and run pgsafe doctor again."
                .into(),
        );
        Some(d.done())
    }
}
