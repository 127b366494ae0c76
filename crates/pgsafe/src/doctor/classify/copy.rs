//! Is this directory the crashed original, or a file-level copy of it taken while it ran?
//!
//! `postmaster.pid`, `postmaster.opts`, pg_control "in production" and a `pg_wal` of its own
//! prove nothing: a copy (cp, rsync, a storage snapshot) carries all of them. The evidence
//! that does tell lies outside the directory (gathered in `evidence.rs`):
//! * a backup history file (`do_pg_backup_stop`, src/backend/access/transam/xlog.c) whose
//!   CHECKPOINT..STOP brackets pg_control's checkpoint, found in the archive but not in this
//!   `pg_wal` (the server writes it into `pg_wal` at stop, so a `pg_wal` captured after the
//!   stop has it): these files were captured while that backup ran;
//! * a history file for *this label's* START anywhere: that backup was stopped, and stopping
//!   an exclusive backup removes the label from the server's own directory;
//! * WAL of this timeline and system in the archive newer than anything in `pg_wal`: the
//!   server kept running after these files were captured;
//! * a pgsafe holder record whose backup window brackets pg_control's checkpoint.
//!
//! Proof of a copy makes doctor say so; a window that overlaps without proof (a backup that
//! never ended: crash during it, or copy during it) makes the verdict ambiguous (no "high",
//! no exit 0, no `--fix`); a source that could not be checked is said plainly.

use super::*;

/// What the outside evidence says.
#[derive(Debug, Default)]
pub(super) struct CopyLook {
    /// These files are a copy of a running server (or carry a label from a stopped backup).
    pub proof: Vec<String>,
    /// A backup overlapped pg_control's checkpoint and never ended: copy or crash, pgsafe
    /// cannot tell.
    pub overlap: Vec<String>,
    /// What was checked and found clean.
    pub checked: Vec<String>,
    /// What could not be checked.
    pub unchecked: Vec<String>,
    /// A pgsafe holder record holds the label of the backup these files belong to.
    pub label_source: Option<String>,
}

impl Ctx<'_> {
    /// Weighs the outside evidence; `label` is the directory's `backup_label` if any.
    pub(super) fn copy_look(&self, label: Option<&BackupLabel>) -> CopyLook {
        let f = self.f;
        let c = self.c;
        let mut k = CopyLook::default();
        let in_pg_wal = |start: Lsn| f.wal_history.iter().any(|h| h.start == start);
        let archive_hist = f
            .archive
            .locations
            .iter()
            .flat_map(|l| l.history_files.iter());
        for h in f.wal_history.iter().chain(archive_hist) {
            let what = format!(
                "backup history file {} in {}{}",
                h.name,
                h.location,
                h.label
                    .as_deref()
                    .map(|l| format!(" (label \"{l}\")"))
                    .unwrap_or_default()
            );
            if let Some(l) = label
                && h.start == l.start_lsn()
            {
                if h.location != "pg_wal" {
                    k.proof.push(format!(
                        "{what} has this backup_label's START {}: that backup was stopped, \
                         and stopping a backup never leaves its label in the server's own \
                         directory — this label (and these files) were copied",
                        h.start
                    ));
                }
                continue;
            }
            let (Some(ck), Some(stop)) = (h.checkpoint, h.stop) else {
                continue;
            };
            if ck <= c.checkpoint && c.checkpoint <= stop && !in_pg_wal(h.start) {
                k.proof.push(format!(
                    "{what}: that backup ran from {} to {}, pg_control's checkpoint {} lies \
                     between, and its history file — which the server writes into pg_wal when \
                     the backup stops — is not in this pg_wal: these files were captured while \
                     that backup was running",
                    h.start, stop, c.checkpoint
                ));
            }
        }
        let primary = matches!(c.state, DbState::InProduction);
        for loc in &f.archive.locations {
            if let Some(e) = &loc.error {
                k.unchecked
                    .push(format!("the WAL archive {}: {e}", loc.dir.display()));
            }
            match (&loc.beyond_pg_wal, loc.beyond_checked) {
                (Some(seg), true) if primary => k.proof.push(format!(
                    "the WAL archive {} holds {seg}, WAL of this cluster (its page header \
                     names system identifier {}) newer than anything in pg_wal: the server kept \
                     running and writing WAL after these files were captured",
                    loc.dir.display(),
                    c.system_identifier
                )),
                (Some(seg), false) if primary => k.overlap.push(format!(
                    "the WAL archive {} holds {seg}, newer than anything in pg_wal ({}): if it \
                     is this cluster's, the server kept running after these files were captured",
                    loc.dir.display(),
                    loc.beyond_note.as_deref().unwrap_or("not checked")
                )),
                _ => {}
            }
            if loc.error.is_none() {
                k.checked.push(format!(
                    "the WAL archive {} (from {}) was read: {} segment(s), {} backup history \
                     file(s)",
                    loc.dir.display(),
                    loc.from,
                    loc.segments,
                    loc.history_files.len()
                ));
            }
        }
        for n in &f.archive.not_interpreted {
            k.unchecked.push(n.clone());
        }
        if f.archive.none_configured {
            k.unchecked.push(
                "no WAL archive is configured in the settings that came with these files \
                 (archive_mode off or no archive_command, no restore_command): pgsafe could not \
                 look there for the backup history files and newer WAL that would show them to be \
                 a copy"
                    .into(),
            );
        }
        self.holder_look(label, &mut k);
        k
    }

    fn holder_look(&self, label: Option<&BackupLabel>, k: &mut CopyLook) {
        let f = self.f;
        let c = self.c;
        let in_pg_wal = |start: Lsn| f.wal_history.iter().any(|h| h.start == start);
        for r in &f.holders.records {
            let Some(start) = r.start_lsn else { continue };
            let what = format!(
                "pgsafe holder record {} (backup \"{}\", label \"{}\", {})",
                r.file.display(),
                r.id,
                r.label,
                r.state
            );
            if let Some(why) = &r.other_server {
                k.checked
                    .push(format!("{what} is about another server: {why}"));
                continue;
            }
            if let Some(l) = label
                && l.start_lsn() == start
            {
                k.proof.push(format!(
                    "{what} started at this backup_label's START {start}: the label is that \
                     backup's, and pgsafe never writes a label into the server's own directory"
                ));
                continue;
            }
            let lower = r.checkpoint.unwrap_or(start);
            match r.stop_lsn {
                Some(stop) => {
                    if lower <= c.checkpoint && c.checkpoint <= stop && !in_pg_wal(start) {
                        k.proof.push(format!(
                            "{what}: that backup ran from {start} to {stop}, pg_control's \
                             checkpoint {} lies between, and its backup history file is not in \
                             this pg_wal: these files were captured while it was running",
                            c.checkpoint
                        ));
                        k.label_source = Some(format!(
                            "the backup_label these files need is the one pgsafe stop returned \
                             for backup \"{}\" (written to its output directory, and kept in {})",
                            r.id,
                            r.file.display()
                        ));
                    }
                }
                None => {
                    let after_start = c.redo >= start;
                    let before_end = r.final_at.is_none_or(|t| c.time <= t);
                    if after_start && before_end {
                        k.overlap.push(format!(
                            "{what}: that backup started at {start} and never completed, and \
                             pg_control's checkpoint {} is not older: these files are either the \
                             server that crashed during that backup, or a copy taken while it ran",
                            c.checkpoint
                        ));
                    }
                }
            }
        }
    }

    /// Evidence lines for a verdict: what the outside evidence showed and what it could not.
    pub(super) fn copy_lines(&self, k: &CopyLook) -> Vec<String> {
        let mut v = k.checked.clone();
        let looked = &self.f.holders.looked_at;
        if !looked.is_empty() {
            v.push(format!(
                "pgsafe holder records looked for in: {}",
                looked.join("; ")
            ));
        }
        v
    }
}
