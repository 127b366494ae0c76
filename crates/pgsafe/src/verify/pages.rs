//! `pgsafe verify`: page checksums of the stored relation files, re-checked in the same pass
//! that checksums each file (decompressing).
//!
//! The rule that tells damage from a page legitimately torn by the copy: `pgsafe backup` checked
//! every page as it stored it, so a stored page that fails its checksum now is either
//! * a block the backup recorded in `pgsafe.json` as **changed during the copy** (the server was
//!   writing it; the WAL from the backup's start to its stop, which a restore replays, holds a
//!   full-page image that rewrites it): excused, and counted in a note;
//! * a block the backup recorded as **corrupt on the source**: not damage of the backup (it holds
//!   what the source held), reported in a note naming the blocks;
//! * anything else: the backup was damaged after it was written — a problem, whatever the
//!   page's LSN says (a corrupt page can carry any LSN, so none is excused by it).
//!
//! Backups without that record (taken without data checksums, with the check turned off, or by
//! an older pgsafe) are not page-checked: nothing would tell a torn page from damage.

use std::sync::Mutex;

use crate::info::BackupInfo;
use crate::page::{PageChecksumReport, PageFault, PageScanner, ScanResult, checksummed_segment};
use crate::types::PgVersion;

use super::Problem;

/// The page checks of one verification.
pub(super) struct PageVerify {
    record: PageChecksumReport,
    version: PgVersion,
    found: Mutex<Found>,
}

#[derive(Default)]
struct Found {
    files: u64,
    pages: u64,
    faults: Vec<(String, u32, PageFault)>,
}

impl PageVerify {
    /// `None` when the backup recorded no page checks.
    pub fn new(info: &BackupInfo) -> Option<PageVerify> {
        Self::from_record(info.page_checksums.clone()?, info.server_version)
    }

    fn from_record(record: PageChecksumReport, version: PgVersion) -> Option<PageVerify> {
        if record.relseg_size == 0 {
            return None;
        }
        Some(PageVerify {
            record,
            version,
            found: Mutex::new(Found::default()),
        })
    }

    /// Why pages are not checked, when they are not (for the notes).
    pub fn not_checked(info: &BackupInfo) -> Option<String> {
        if info.page_checksums.is_some() || !info.data_checksums {
            return None;
        }
        Some(
            "page checksums not re-checked: the backup was taken without checking them (page \
             checks turned off, or an older pgsafe), so nothing tells a page torn by the copy \
             from damage"
                .into(),
        )
    }

    /// A scanner for the stored file `path` (manifest path), from block `first_block`; `None`
    /// when the file has no checksummed pages.
    pub fn scanner(&self, path: &[u8], first_block: u32) -> Option<PageScanner> {
        let segno = checksummed_segment(path, self.version)?;
        Some(PageScanner::new(
            segno,
            self.record.relseg_size,
            first_block,
        ))
    }

    /// Records what a scanner of `path` found; `whole` when it covered the whole file (counts
    /// the file once, not per range).
    pub fn done(&self, path: &str, r: ScanResult, whole: bool) {
        let mut f = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if whole {
            f.files += 1;
        }
        f.pages += r.pages;
        f.faults
            .extend(r.faults.into_iter().map(|(b, e)| (path.to_owned(), b, e)));
    }

    /// Problems (stored pages damaged since the backup) and notes.
    pub fn finish(self, quick: bool) -> (Vec<Problem>, Vec<String>) {
        let found = self.found.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut excused = 0u64;
        let mut faults = found.faults;
        faults.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (path, block, fault) in faults {
            if PageChecksumReport::lists(&self.record.changed_during_copy, &path, block) {
                excused += 1;
            } else if PageChecksumReport::lists(&self.record.corrupt, &path, block) {
                // Recorded as corrupt on the source: in the note below.
            } else {
                problems.push(Problem::PageChecksum {
                    path,
                    block,
                    error: fault.to_string(),
                });
            }
        }
        if !quick {
            let mut n = format!(
                "page checksums: {} page(s) of {} relation file(s) re-checked",
                found.pages, found.files
            );
            if excused > 0 {
                n.push_str(&format!(
                    "; {excused} page(s) the server was writing while the backup copied them \
                     fail as recorded (the backup's WAL rewrites them at recovery)"
                ));
            }
            notes.push(n);
        }
        let corrupt = self.record.corrupt_blocks();
        if corrupt > 0 {
            let files: Vec<String> = self
                .record
                .corrupt
                .iter()
                .map(|f| {
                    let shown: Vec<String> = f.blocks.iter().take(10).map(u32::to_string).collect();
                    let more = f.blocks.len().saturating_sub(10);
                    format!(
                        "{} block {}{}",
                        f.path,
                        shown.join(", "),
                        if more > 0 {
                            format!(" (+{more})")
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            notes.push(format!(
                "the SOURCE cluster had {corrupt} corrupt page(s) when this backup was taken \
                 ({}): the backup holds the same bytes, so a restore brings that damage back; \
                 restore those relations from an older backup",
                files.join("; ")
            ));
        }
        (problems, notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{DEFAULT_RELSEG_SIZE, FileBlocks};

    fn blocks(path: &str, blocks: &[u32]) -> FileBlocks {
        FileBlocks {
            path: path.into(),
            blocks: blocks.to_vec(),
        }
    }

    fn fault() -> PageFault {
        PageFault::Checksum {
            stored: 1,
            computed: 2,
        }
    }

    #[test]
    fn only_recorded_blocks_are_excused() {
        let record = PageChecksumReport {
            files_checked: 2,
            pages_checked: 10,
            relseg_size: DEFAULT_RELSEG_SIZE,
            corrupt: vec![blocks("base/5/1", &[7])],
            changed_during_copy: vec![blocks("base/5/2", &[3])],
        };
        let v = PageVerify::from_record(record, "15".parse().unwrap()).unwrap();
        assert!(v.scanner(b"base/5/PG_VERSION", 0).is_none());
        assert!(v.scanner(b"base/5/1.1", 0).is_some());
        let found = |faults: Vec<(u32, PageFault)>| ScanResult {
            pages: 5,
            faults,
            trailing: 0,
        };
        // base/5/2 block 3 changed during the copy: excused. Block 4 of the same file, and
        // block 3 of another file, are damage. base/5/1 block 7: corrupt on the source.
        v.done("base/5/2", found(vec![(3, fault()), (4, fault())]), true);
        v.done("base/5/1", found(vec![(7, fault()), (3, fault())]), true);
        let (problems, notes) = v.finish(false);
        let damaged: Vec<(String, u32)> = problems
            .iter()
            .map(|p| match p {
                Problem::PageChecksum { path, block, .. } => (path.clone(), *block),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            damaged,
            vec![("base/5/1".to_owned(), 3), ("base/5/2".to_owned(), 4)]
        );
        assert!(
            notes[0].contains("10 page(s) of 2 relation file(s)"),
            "{notes:?}"
        );
        assert!(
            notes[0].contains("1 page(s) the server was writing"),
            "{notes:?}"
        );
        assert!(
            notes[1].contains("SOURCE cluster had 1 corrupt page(s)"),
            "{notes:?}"
        );
        assert!(notes[1].contains("base/5/1 block 7"), "{notes:?}");
    }

    #[test]
    fn a_record_without_segment_size_checks_nothing() {
        let record = PageChecksumReport::default();
        assert!(PageVerify::from_record(record, "15".parse().unwrap()).is_none());
    }
}
