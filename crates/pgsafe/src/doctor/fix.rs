//! The doctor's fix: the one repair the doctor performs, and only for an unambiguous state 4 —
//! rename `backup_label` to [`REMOVED_LABEL_FILE`]. Never deletes, never overwrites.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    Diagnosis, DoctorError, DoctorOptions, DoctorState, REMOVED_LABEL_FILE, Verdict, diagnose,
};
use crate::fsutil::{FsError, IoContext};

/// What the fix did.
#[derive(Debug, Clone, Serialize)]
pub struct FixOutcome {
    pub renamed_from: PathBuf,
    pub renamed_to: PathBuf,
    /// The verdict after the rename.
    pub after: Verdict,
}

/// Why the fix was refused: nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixRefusal {
    #[error(
        "the evidence is ambiguous: pgsafe renames backup_label only when nothing suggests a \
         restored backup. Confirm the points listed, then rename it by hand if they hold."
    )]
    Ambiguous,
    #[error(
        "nothing needs fixing: the label's WAL is still present, so the server starts as it is \
         (and keeping the label is the safe choice)"
    )]
    NothingNeeded,
    #[error(
        "the fix only renames the backup_label of a server that crashed during an exclusive \
         backup (state 4); this directory is in state {state} ({title}), where the doctor's \
         advice must be followed by hand"
    )]
    WrongState { state: u8, title: &'static str },
    #[error("the directory changed while pgsafe examined it; run pgsafe doctor again")]
    Changed,
    #[error("cannot rename {}: not a file path", path.display())]
    NotAFilePath { path: PathBuf },
    #[error("{} already exists; pgsafe never overwrites it", path.display())]
    Exists { path: PathBuf },
}

/// Why the fix will not act on `v` (for a verdict without a fix).
pub fn refusal(v: &Verdict) -> FixRefusal {
    match v.state {
        DoctorState::CrashedDuringExclusiveBackup if !v.must_confirm.is_empty() => {
            FixRefusal::Ambiguous
        }
        DoctorState::CrashedDuringExclusiveBackup
            if v.caveats.iter().any(|c| c.contains(REMOVED_LABEL_FILE)) =>
        {
            FixRefusal::Exists {
                path: PathBuf::from(REMOVED_LABEL_FILE),
            }
        }
        DoctorState::CrashedDuringExclusiveBackup => FixRefusal::NothingNeeded,
        other => FixRefusal::WrongState {
            state: other.number(),
            title: other.title(),
        },
    }
}

/// Performs the verdict's [`super::FixAction`] after examining the directory again: refuses
/// unless the fresh verdict still offers the same fix and `backup_label` is byte-identical to
/// the one `before` classified (the directory may have changed since). The rename is atomic
/// and refuses to replace an existing file; the directory is fsynced afterwards.
pub fn apply_fix(
    path: &Path,
    opts: &DoctorOptions,
    before: &Diagnosis,
) -> Result<FixOutcome, DoctorError> {
    let now = diagnose(path, opts)?;
    let Some(fix) = now.verdict.fix.clone() else {
        return Err(DoctorError::FixRefused(refusal(&now.verdict)));
    };
    let label_text = |d: &Diagnosis| d.facts.label.as_ref().map(|l| l.text.clone());
    if before.verdict.fix.as_ref() != Some(&fix) || label_text(before) != label_text(&now) {
        return Err(DoctorError::FixRefused(FixRefusal::Changed));
    }
    rename_no_replace(&fix.from, &fix.to)?;
    let after = diagnose(path, opts)?.verdict;
    Ok(FixOutcome {
        renamed_from: fix.from,
        renamed_to: fix.to,
        after,
    })
}

/// Renames `from` to `to` (same directory) without ever replacing `to`, then fsyncs the
/// directory.
fn rename_no_replace(from: &Path, to: &Path) -> Result<(), DoctorError> {
    use nix::errno::Errno;
    use nix::fcntl::{RenameFlags, renameat2};
    let dir = crate::fsutil::parent_dir(from);
    let (Some(old_name), Some(new_name)) = (from.file_name(), to.file_name()) else {
        return Err(DoctorError::FixRefused(FixRefusal::NotAFilePath {
            path: from.to_owned(),
        }));
    };
    let dirf = File::open(&dir).ctx("open directory", &dir)?;
    match renameat2(
        &dirf,
        Path::new(old_name),
        &dirf,
        Path::new(new_name),
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            return Err(DoctorError::FixRefused(FixRefusal::Exists {
                path: to.to_owned(),
            }));
        }
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            // File system without RENAME_NOREPLACE: a hard link cannot replace either; then drop
            // the old name (the content stays under the new one).
            std::fs::hard_link(from, to).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    DoctorError::FixRefused(FixRefusal::Exists {
                        path: to.to_owned(),
                    })
                } else {
                    DoctorError::Fs(FsError::new("link", to, e))
                }
            })?;
            std::fs::remove_file(from).ctx("remove the old name", from)?;
        }
        Err(e) => {
            return Err(DoctorError::Fs(FsError::new(
                "rename",
                from,
                std::io::Error::from(e),
            )));
        }
    }
    dirf.sync_all().ctx("fsync directory", &dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("backup_label");
        let b = d.path().join(REMOVED_LABEL_FILE);
        std::fs::write(&a, "label").unwrap();
        rename_no_replace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "label");
        std::fs::write(&a, "second").unwrap();
        let err = rename_no_replace(&a, &b).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "second");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "label");
    }
}
