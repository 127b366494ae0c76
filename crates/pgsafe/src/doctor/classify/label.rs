//! States with a `backup_label`: 4 (crashed during an exclusive backup), 5 and 6 (restored
//! backup ready or broken), 8 (pg_rewind), and an unparseable label (9).

use super::*;

/// How the crash-during-exclusive-backup hypothesis fares against the facts.
struct CrashLook {
    /// Facts that fit a crashed original server.
    fits: Vec<String>,
    /// Facts that contradict it strongly (a restore or copy).
    restore_signs: Vec<String>,
    /// Facts that weaken it (ambiguous).
    doubts: Vec<String>,
    /// Reason the rename would not even help (pg_control's own WAL is missing).
    rename_would_not_help: Option<String>,
    /// Sources of evidence that could not be checked (the WAL archive …): without them the
    /// rename is never called safe.
    unchecked: Vec<String>,
    /// What the outside evidence showed.
    checked: Vec<String>,
}

impl Ctx<'_> {
    // ---- with a label ----------------------------------------------------------------------

    pub(super) fn with_label(&self, label: &BackupLabel) -> Verdict {
        if label.fields().method == Some(BackupMethod::PgRewind) {
            return self.rewound(label);
        }
        if label.is_incremental() {
            let mut d = Draft::new(
                DoctorState::RestoredBroken,
                Confidence::High,
                "an incremental backup (INCREMENTAL FROM LSN in backup_label): PostgreSQL refuses \
                 to start it — combine it with its full backup first",
            );
            d.evidence.push(self.label_line(label));
            d.steps.push(Step::run(
                "Reconstruct a full data directory with pg_combinebackup (full backup first, \
                 then each incremental in order), and start that:",
                format!(
                    "pg_combinebackup FULL_BACKUP ... {} -o NEW_PGDATA",
                    self.dir()
                ),
            ));
            return d.done();
        }
        if let Some(v) = self.stray_label(label) {
            return v;
        }
        if is_exclusive_like(label) {
            let look = self.crash_look(label);
            if look.restore_signs.is_empty() {
                return self.exclusive_crash(label, look);
            }
            return self.restored(label, look);
        }
        let look = self.crash_look(label);
        self.restored(label, look)
    }

    /// Weighs "the original server crashed during its own exclusive backup" (also used for
    /// streamed labels, where it only decides what the user must confirm).
    fn crash_look(&self, label: &BackupLabel) -> CrashLook {
        let f = self.f;
        let c = self.c;
        let mut k = CrashLook {
            fits: Vec::new(),
            restore_signs: Vec::new(),
            doubts: Vec::new(),
            rename_would_not_help: None,
            unchecked: Vec::new(),
            checked: Vec::new(),
        };
        let copy = self.copy_look(Some(label));
        k.restore_signs.extend(copy.proof.iter().cloned());
        k.doubts.extend(copy.overlap.iter().cloned());
        k.unchecked.extend(copy.unchecked.iter().cloned());
        k.checked = self.copy_lines(&copy);
        let signals = self.signal_files();
        if signals.is_empty() {
            k.fits.push(
                "no recovery.signal, standby.signal or recovery.conf: nobody set this directory up \
                 to recover from a backup"
                    .into(),
            );
        } else {
            k.restore_signs.push(format!(
                "{} exists: this directory was set up to recover from a backup",
                signals.join(" and ")
            ));
        }
        if let Some(stale) = self.marker_stale() {
            k.fits.push(stale);
        } else if let Some(m) = self.marker_line() {
            k.restore_signs.push(m);
        }
        if c.sentinel {
            k.restore_signs.push(self.sentinel_line());
        }
        if f.files.backup_manifest || f.files.pgsafe_json {
            k.restore_signs.push(
                "a backup_manifest or pgsafe.json is in the directory: it is (a copy of) a backup \
                 folder"
                    .into(),
            );
        }
        if let Some(h) = &f.label_history_file {
            k.restore_signs.push(format!(
                "pg_wal holds the backup history file {h} for this label's start: that backup was \
                 stopped, and stopping removes backup_label from the server's own directory — so \
                 this label was copied back in"
            ));
        }
        if f.postmaster.names_this_directory == Some(false) {
            // Copied from there — or moved by hand after the crash: a doubt, not proof.
            k.doubts.push(format!(
                "postmaster.pid was written by a server running in {}, not here: these files were \
                 copied or moved from there (expected only if you moved the directory yourself \
                 after the crash)",
                f.postmaster.data_directory.as_deref().unwrap_or("?")
            ));
        }
        if label.is_from_standby() {
            k.restore_signs.push(
                "the label says BACKUP FROM: standby — it was taken on a standby and copied here"
                    .into(),
            );
        }
        if label.fields().method.is_none() {
            k.doubts.push(
                "the label has no BACKUP METHOD line, which PostgreSQL 9.6 and later always \
                 write: it was written by hand or by a much older server"
                    .into(),
            );
        }
        if is_exclusive_like(label) && !self.has_exclusive_mode() {
            k.restore_signs.push(format!(
                "PostgreSQL {} has no exclusive backups: this server cannot have written this \
                 label",
                self.version.major_name()
            ));
        }
        match c.state {
            DbState::InProduction => k.fits.push(
                "pg_control still says \"in production\": the server was running and did not \
                 shut down cleanly"
                    .into(),
            ),
            DbState::ShutDown => k.restore_signs.push(
                "pg_control says the server was shut down cleanly, and a clean shutdown ends an \
                 exclusive backup (the label becomes backup_label.old): this label was put here \
                 afterwards"
                    .into(),
            ),
            DbState::InArchiveRecovery | DbState::ShutDownInRecovery => {
                k.restore_signs.push(format!(
                    "pg_control state \"{}\": this pg_control comes from a server in recovery (a \
                     standby), where exclusive backups cannot run",
                    c.state
                ))
            }
            other => k.doubts.push(format!(
                "pg_control state \"{other}\" is not the \"in production\" a server crashing \
                 during its backup leaves behind"
            )),
        }
        match (f.postmaster.liveness, f.postmaster.names_this_directory) {
            (Liveness::Stale, Some(true) | None) => k.fits.push(format!(
                "postmaster.pid is stale: {} (a crash leaves it behind — and so does a file copy \
                 of a running server: it proves nothing by itself)",
                f.postmaster.detail
            )),
            (Liveness::Absent, _) => k.fits.push(
                "postmaster.pid is absent (PostgreSQL removes it when a start attempt fails, as \
                 one does in this situation)"
                    .into(),
            ),
            _ => {}
        }
        if !f.files.postmaster_opts {
            k.doubts.push(
                "postmaster.opts is missing: a server that ran here always leaves it, while backup \
                 tools and the documented manual procedure leave it out of copies"
                    .into(),
            );
        }
        match c.checkpoint.cmp(&label.checkpoint_lsn()) {
            std::cmp::Ordering::Greater => k.fits.push(format!(
                "pg_control's latest checkpoint {} ({}) is newer than the label's {}: the server \
                 kept running and checkpointing after the backup started",
                c.checkpoint,
                when(c.checkpoint_time),
                label.checkpoint_lsn()
            )),
            std::cmp::Ordering::Equal => k.fits.push(format!(
                "pg_control's latest checkpoint is the label's own ({}): no checkpoint happened \
                 after the backup started",
                c.checkpoint
            )),
            std::cmp::Ordering::Less => k.doubts.push(format!(
                "pg_control's latest checkpoint {} is older than the label's {}: this pg_control \
                 was not written by the server after its backup started",
                c.checkpoint,
                label.checkpoint_lsn()
            )),
        }
        let (miss, n) = self.missing(c.redo, c.checkpoint, c.timeline);
        if miss.is_empty() {
            k.fits.push(format!(
                "pg_wal holds the WAL of pg_control's latest checkpoint (redo {} in {}): crash \
                 recovery from it can run",
                c.redo,
                WalSegment::containing(c.redo, c.timeline, c.wal_seg_size)
            ));
        } else {
            let text = format!(
                "pg_wal lacks {} ({} segment(s) from pg_control's redo point {} to its checkpoint \
                 {}): a crashed server always keeps that WAL, and without it crash recovery \
                 cannot start either",
                seg_list(&miss, n),
                n,
                c.redo,
                c.checkpoint
            );
            k.doubts.push(text.clone());
            k.rename_would_not_help = Some(text);
        }
        k
    }

    /// The label's own WAL, from its start through pg_control's checkpoint: if present, the
    /// server starts with the label in place.
    fn label_wal_missing(&self, label: &BackupLabel) -> (Vec<WalSegment>, u64) {
        let to = self.c.checkpoint.max(label.checkpoint_lsn());
        let tli = self.c.timeline.max(label.timeline());
        self.missing(label.start_lsn(), to, tli)
    }

    // ---- 4 -----------------------------------------------------------------------------------

    fn exclusive_crash(&self, label: &BackupLabel, look: CrashLook) -> Verdict {
        let f = self.f;
        let (label_miss, label_n) = self.label_wal_missing(label);
        let label_wal_present = label_miss.is_empty();
        let mut ev = vec![self.label_line(label), self.control_line()];
        ev.extend(look.fits.iter().cloned());
        ev.extend(look.doubts.iter().cloned());
        ev.extend(look.checked.iter().cloned());
        if label_wal_present {
            ev.push(format!(
                "the label's own WAL from {} ({}) is still in pg_wal: the server can start with \
                 the label in place (recovery then begins at the label's older checkpoint)",
                label.start_lsn(),
                label.fields().start.file
            ));
        } else {
            ev.push(format!(
                "the label's WAL is gone from pg_wal ({} missing, recycled by later checkpoints): \
                 PostgreSQL cannot start from the label and stops with \"could not locate \
                 required checkpoint record\" or \"could not find redo location referenced by \
                 checkpoint record\"",
                seg_list(&label_miss, label_n)
            ));
        }
        ev.push(self.wal_summary());
        if let Some(m) = &f.tablespace_map {
            ev.push(format!(
                "tablespace_map ({} entr{}) was written by the same exclusive backup; PostgreSQL \
                 ignores it once backup_label is gone (renames it to tablespace_map.old)",
                m.entries.len(),
                if m.entries.len() == 1 { "y" } else { "ies" }
            ));
        }
        let unsafe_if = format!(
            "What would make renaming unsafe: this directory being a restored or copied backup — \
             a file-level copy (tar, rsync, storage snapshot) taken during a pg_start_backup() \
             backup, which carries backup_label. Then the label is what tells PostgreSQL where \
             recovery must begin, and without it the server starts from a later checkpoint and \
             silently corrupts data. If you know this directory was restored, do not rename: \
             {} and start it.",
            if self.pre12() {
                "create recovery.conf with a restore_command".to_owned()
            } else {
                format!(
                    "touch {}, set restore_command",
                    self.file("recovery.signal")
                )
            }
        );
        // Renaming loses data if these files are a copy: call it safe only when every source
        // that could show a copy was read (the WAL archive above all) and showed none.
        let unverified = !label_wal_present && !look.unchecked.is_empty();
        if !look.doubts.is_empty() || unverified {
            // Ambiguous: no fix, the user must confirm.
            let mut d = Draft::new(
                DoctorState::CrashedDuringExclusiveBackup,
                Confidence::Low,
                "probably crashed during an exclusive backup, but the evidence is not conclusive: \
                 do not remove backup_label until you have confirmed what this directory is",
            )
            .evidence(ev);
            d.confirm.push(
                "This is the original data directory of the server that crashed — not restored, \
                 copied or cloned (tar, rsync, snapshot) from a backup."
                    .into(),
            );
            for doubt in &look.doubts {
                d.confirm.push(format!("Explain this: {doubt}."));
            }
            if unverified {
                d.summary = "crashed during an exclusive backup — or a file copy of this server \
                             taken during that backup and put back: the evidence for both is the \
                             same here, so pgsafe will not call renaming backup_label safe"
                    .into();
                for u in &look.unchecked {
                    d.evidence.push(format!("not checked: {u}"));
                }
                d.confirm.push(
                    "No file-level copy or snapshot of this directory was put back here: the \
                     files are the ones the server itself left when it stopped. If in doubt, \
                     check the WAL archive for a backup history file named after the label's \
                     START WAL LOCATION (it means that backup was stopped and these files are a \
                     copy)."
                        .into(),
                );
            }
            d.caveats.push(unsafe_if);
            if let Some(why) = &look.rename_would_not_help {
                d.caveats.push(format!(
                    "Renaming the label alone will not make the server start: {why}. Look for the \
                     missing WAL (a WAL directory on another disk? a copy made without pg_wal?)."
                ));
            }
            d.steps.push(Step::run(
                "Only if you confirmed every point below: rename the label (never delete it)",
                format!(
                    "mv {} {}",
                    self.file("backup_label"),
                    self.file(REMOVED_LABEL_FILE)
                ),
            ));
            d.steps.push(Step::says(
                "If it is a restored backup instead: keep backup_label, configure recovery \
                 (recovery.signal + restore_command) and start it; pgsafe doctor will then say \
                 whether the WAL it needs is reachable.",
            ));
            return d.done();
        }
        if label_wal_present {
            let mut d = Draft::new(
                DoctorState::CrashedDuringExclusiveBackup,
                Confidence::High,
                "crashed while an exclusive backup was running; its WAL is still here, so it will \
                 start as it is — start it",
            )
            .evidence(ev);
            d.steps.extend(self.stale_pid_step());
            d.steps.push(self.start_step(
                "Start the server; it consumes the label (renames it to backup_label.old) and \
                 replays the WAL from the label's checkpoint.",
            ));
            d.steps.push(Step::says(
                "The backup that was running is unusable: take a new one (non-exclusive: pgsafe \
                 backup).",
            ));
            d.caveats.push(
                "Renaming backup_label would also be correct here, but it is not needed, and \
                 leaving it is the choice that is safe even if this directory were a restored \
                 copy."
                    .into(),
            );
            return d.done();
        }
        let mut d = Draft::new(
            DoctorState::CrashedDuringExclusiveBackup,
            Confidence::High,
            "crashed while an exclusive backup was running: renaming backup_label is safe, and \
             needed for the server to start",
        )
        .evidence(ev);
        d.evidence.push(
            "no pgsafe restore marker, no restore sentinel in pg_control, no backup_manifest, no \
             backup history file for this label in pg_wal or the WAL archive, no newer WAL in the \
             archive, no pgsafe holder record of a backup these files could come from: nothing \
             says this directory was restored or copied"
                .into(),
        );
        d.caveats.push(format!(
            "Why pgsafe calls it safe: everything it checked (listed above) fits a label that \
             this server's own pg_start_backup() wrote, and nothing it checked shows these files \
             to be a copy; if so, pg_control and pg_wal are the crashed server's own and \
             describe a later, complete state, and crash recovery from pg_control loses \
             nothing. {unsafe_if}"
        ));
        if f.files.removed_label {
            d.caveats.push(format!(
                "{REMOVED_LABEL_FILE} already exists (an earlier rename): move it away first; \
                 pgsafe never overwrites it"
            ));
        } else {
            d.fix = Some(FixAction {
                description: format!(
                    "rename backup_label to {REMOVED_LABEL_FILE} (durably; the file is kept)"
                ),
                from: f.path.join("backup_label"),
                to: f.path.join(REMOVED_LABEL_FILE),
            });
        }
        d.steps.push(Step::run(
            "Rename the label (pgsafe never deletes it):",
            format!("pgsafe doctor --fix {}", self.dir()),
        ));
        d.steps.push(Step::run(
            "or by hand:",
            format!(
                "mv {} {}",
                self.file("backup_label"),
                self.file(REMOVED_LABEL_FILE)
            ),
        ));
        d.steps.extend(self.stale_pid_step());
        d.steps.push(self.start_step(
            "Start the server; crash recovery replays the WAL from pg_control's checkpoint.",
        ));
        d.steps.push(Step::says(
            "The backup that was running is unusable: take a new one (non-exclusive: pgsafe \
             backup).",
        ));
        d.done()
    }

    // ---- 5 / 6 with a label ------------------------------------------------------------------

    fn restored(&self, label: &BackupLabel, look: CrashLook) -> Verdict {
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
    fn streamed_in_original(&self, d: &mut Draft, label: &BackupLabel) {
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
    fn stray_label(&self, label: &BackupLabel) -> Option<Verdict> {
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

    // ---- 8 -----------------------------------------------------------------------------------

    fn rewound(&self, label: &BackupLabel) -> Verdict {
        let f = self.f;
        let c = self.c;
        let mut d = Draft::new(
            DoctorState::RewoundByPgRewind,
            Confidence::High,
            "rewound by pg_rewind and not started since: configure it to follow the new primary \
             and start it; keep backup_label",
        );
        d.evidence.push(format!(
            "{} — pg_rewind wrote it after rewinding this directory to the point where it and the \
             new primary diverged",
            self.label_line(label)
        ));
        d.evidence.push(self.control_line());
        d.evidence.push(format!(
            "recovery must replay at least to {} (pg_control's minimum recovery point) before the \
             server is consistent",
            c.min_recovery_point
        ));
        let (miss, n) = self.missing(
            label.start_lsn(),
            label.checkpoint_lsn().max(c.min_recovery_point),
            c.timeline.max(label.timeline()),
        );
        d.evidence.push(self.wal_summary());
        let standby_configured = if self.pre12() {
            f.files.recovery_conf
        } else {
            f.files.standby_signal || f.files.recovery_signal
        };
        if standby_configured {
            d.evidence.push(format!(
                "{} exists: recovery is configured",
                self.signal_files().join(" and ")
            ));
        } else {
            d.steps.push(if self.pre12() {
                Step::run(
                    "Make it a standby of the new primary (fill in the connection):",
                    format!(
                        "printf \"standby_mode = 'on'\\nprimary_conninfo = 'host=NEW_PRIMARY user=replicator'\\n\" > {}",
                        self.file("recovery.conf")
                    ),
                )
            } else {
                Step::run(
                    "Make it a standby of the new primary: set primary_conninfo in \
                     postgresql.conf (or rerun pg_rewind with --write-recovery-conf), then",
                    format!("touch {}", self.file("standby.signal")),
                )
            });
        }
        if !miss.is_empty() {
            let line = format!(
                "pg_wal lacks {}: it must come from the new primary (streaming via \
                 primary_conninfo) or its archive (restore_command)",
                seg_list(&miss, n)
            );
            if self.wal_source().is_none() {
                d.caveats
                    .push(format!("{line}; neither is configured yet."));
            } else {
                d.evidence.push(line);
            }
        }
        d.caveats.push(
            "Do not remove backup_label: it tells recovery where to begin replaying the new \
             primary's WAL over the rewound files."
                .into(),
        );
        d.steps.push(self.start_step("Then start it."));
        d.done()
    }

    pub(super) fn bad_label(&self, lf: &LabelFile) -> Verdict {
        let mut d = Draft::new(
            DoctorState::Unknown,
            Confidence::Low,
            "a backup_label pgsafe cannot parse: do not remove it before you know where it came \
             from",
        );
        d.evidence.push(format!(
            "backup_label: {}",
            lf.error.as_deref().unwrap_or("unparseable")
        ));
        let first: Vec<&str> = lf.text.lines().take(3).collect();
        if !first.is_empty() {
            d.evidence.push(format!("it begins: {}", first.join(" | ")));
        }
        d.evidence.push(self.control_line());
        d.confirm.push(
            "What wrote this file, and is this directory a restored backup or the original \
             server's?"
                .into(),
        );
        d.caveats.push(
            "PostgreSQL reads the label more leniently than pgsafe and may accept it, or stop \
             with \"invalid data in file backup_label\". Compare it with the label stored with \
             your backup."
                .into(),
        );
        d.done()
    }
}
