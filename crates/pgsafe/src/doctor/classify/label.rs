//! States with a `backup_label`: 4 (crashed during an exclusive backup), 5 and 6 (restored
//! backup ready or broken), 8 (pg_rewind), and an unparseable label (9).

use super::*;

mod crash;
mod restored;

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
