//! State 4: a `backup_label` left by an exclusive backup during which the original server
//! crashed. Renaming the label is offered only when the evidence says these are the original
//! files and the WAL from pg_control's checkpoint is present.

use super::*;

impl Ctx<'_> {
    pub(super) fn exclusive_crash(&self, label: &BackupLabel, look: CrashLook) -> Verdict {
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
}
