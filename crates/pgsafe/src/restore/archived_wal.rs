//! The WAL of a backup that waited for it in its repository's archive instead of copying it
//! ([`crate::info::WalInfo::in_repository`]): a restore from the repository fetches the
//! backup's range (segments start..stop, timeline history files) into the restored `pg_wal/`,
//! each segment checked again (full size, long page header of this system and major: the
//! archive may have changed since the verification), so recovery to the end of the backup
//! runs from `pg_wal/` exactly as for a self-contained backup. Recovery options that fetch
//! more WAL (a restore_command) work on top of it.

use super::{RestoreError, Source, Writer};
use crate::layout::WAL_DIR;
use crate::plan::RelPath;
use crate::progress::Progress;
use crate::verify::WalArchive;
use crate::wal;

/// Whether `source`'s WAL is in a repository's archive and `archive` can provide it.
pub(super) fn applies(
    source_info: Option<&crate::info::BackupInfo>,
    archive: Option<&WalArchive>,
) -> bool {
    archive.is_some() && source_info.is_some_and(|i| i.wal.in_repository().is_some())
}

impl Writer<'_> {
    /// Fetches the backup's WAL from `archive` into `pg_wal/`; returns the names written (for
    /// their `.done` status, so the restored server never archives them again).
    pub(super) fn fetch_archived_wal(
        &self,
        source: &Source,
        archive: &WalArchive,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, RestoreError> {
        let Some(info) = source.info.as_ref() else {
            return Ok(Vec::new());
        };
        let seg_size = info.wal_segment_size;
        let size = seg_size.bytes();
        let err = |file: &str, detail: String| RestoreError::ArchivedWal {
            file: file.to_owned(),
            archive: archive.shown().to_owned(),
            detail,
            target: self.target.to_owned(),
        };
        self.make_dir(&RelPath::from(WAL_DIR))?;
        let dir = self.target.join(WAL_DIR);
        let mut names = Vec::new();
        progress.plan(
            info.wal.segments.len() as u64,
            (info.wal.segments.len() as u64).saturating_mul(size),
        );
        for seg in &info.wal.segments {
            let name = seg.to_string();
            let bytes = match archive.get(seg.tli, &name, size) {
                Ok(Some(b)) => b,
                Ok(None) => return Err(err(&name, "it is not in the archive".into())),
                Err(e) => return Err(err(&name, e.to_string())),
            };
            if bytes.len() as u64 != size {
                return Err(err(
                    &name,
                    format!("it is {} bytes, a segment {size}", bytes.len()),
                ));
            }
            wal::check_segment_header(
                &bytes,
                *seg,
                seg_size,
                Some(info.system_identifier),
                Some(info.server_version.major()),
            )
            .map_err(|e| err(&name, e.to_string()))?;
            self.write_durable(&dir.join(&name), &bytes)?;
            progress.bytes(size);
            progress.file_done(&format!("{WAL_DIR}/{name}"), size);
            names.push(name);
        }
        for h in &info.wal.history_files {
            let Some(tli) = wal::history_file_tli(h) else {
                return Err(err(h, "not a timeline history file name".into()));
            };
            let bytes = match archive.get(tli, h, crate::layout::SMALL_FILE_LIMIT) {
                Ok(Some(b)) => b,
                Ok(None) => return Err(err(h, "it is not in the archive".into())),
                Err(e) => return Err(err(h, e.to_string())),
            };
            wal::TimelineHistory::parse(tli, &bytes).map_err(|e| err(h, e.to_string()))?;
            self.write_durable(&dir.join(h), &bytes)?;
            names.push(h.clone());
        }
        Ok(names)
    }
}
