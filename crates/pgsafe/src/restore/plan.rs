//! Before anything is written: the backup opened (and verified), the target checked, the
//! tablespaces placed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{
    MappingError, RestoreError, RestoreOptions, Source, TablespaceMapping, TablespacePlan,
    TablespaceSelector, guard, is_plain_absolute, source,
};
use crate::datadir::PostmasterPid;
use crate::fsutil::{self, FsError, IoContext};
use crate::label::{MapEscaping, TablespaceEntry, TablespaceMap};
use crate::layout::StoredBackup;
use crate::plan::RelPath;
use crate::progress::Progress;
use crate::types::PgVersion;
use crate::verify::{self, VerifyError, VerifyOptions};

/// The tablespace OID of a `pg_tblspc/<oid>/…` path.
pub(super) fn tablespace_oid(rel: &RelPath) -> Option<u32> {
    let b = rel.as_bytes().strip_prefix(b"pg_tblspc/")?;
    let end = b.iter().position(|&c| c == b'/').unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).ok()?.parse().ok()
}

/// Verifies and opens a backup folder.
pub(super) fn open_backup(
    store: &StoredBackup,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<(Source, &'static str), RestoreError> {
    let root = &opts.source;
    let cancel = opts.cancel.as_deref();
    let vopts = VerifyOptions {
        quick: !opts.full_verify,
        jobs: opts.jobs.max(1),
        cancel,
    };
    let report =
        match verify::verify_stored_with(store, opts.wal_archive.as_ref(), &vopts, progress) {
            Err(VerifyError::Cancelled) => {
                return Err(RestoreError::Cancelled(opts.target.clone()));
            }
            r => r?,
        };
    if !report.is_ok() {
        return Err(RestoreError::BackupInvalid {
            backup: root.clone(),
            quick: report.quick,
            problems: report.problems,
        });
    }
    // Whatever pgsafe.json says (it can be edited): replaying a CREATE TABLESPACE with a
    // location creates directories there, on this host (`tblspc_redo` in
    // `src/backend/commands/tablespace.c` removes an existing version directory first). A
    // tablespace created and dropped during the backup is in no list the backup took.
    let outside: Vec<String> = report
        .wal_tablespaces_created
        .iter()
        .filter(|t| !t.location.is_empty())
        .map(|t| {
            format!(
                "the backup's WAL creates tablespace {} at {} (record at {})",
                t.oid,
                String::from_utf8_lossy(&t.location),
                t.lsn
            )
        })
        .collect();
    if !outside.is_empty() {
        return Err(RestoreError::TablespaceCreatedDuringBackup {
            backup: root.clone(),
            changes: outside.join("; "),
        });
    }
    let mut source = Source::backup(store, report.info)?;
    source.backup_end_scan = report.backup_end;
    Ok((source, if opts.full_verify { "full" } else { "quick" }))
}

/// The target must be absent (with a parent that exists or can be created) or an empty
/// directory, with no live postmaster. Returns whether it exists.
pub(super) fn check_target(target: &Path) -> Result<bool, RestoreError> {
    let unusable = |why: String| RestoreError::TargetUnusable {
        target: target.to_owned(),
        why,
    };
    // Symbolic links are followed: a data directory may be a link to the real folder.
    match fs::metadata(target) {
        Ok(m) if m.is_dir() => {
            let pid_file = target.join("postmaster.pid");
            if let Ok(b) = fs::read(&pid_file) {
                let pid = PostmasterPid::parse(&b).with_liveness();
                if let (Some(p), Some(true)) = (pid.pid, pid.process_running) {
                    return Err(RestoreError::TargetRunning {
                        target: target.to_owned(),
                        pid: p,
                    });
                }
            }
            let mut rd = fs::read_dir(target).ctx("read directory", target)?;
            if rd.next().is_some() {
                return Err(RestoreError::TargetNotEmpty(target.to_owned()));
            }
            Ok(true)
        }
        Ok(_) => Err(unusable("it exists and is not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The nearest existing ancestor must be a directory we can create entries in.
            let mut probe = fsutil::parent_dir(target);
            loop {
                match fs::metadata(&probe) {
                    Ok(m) if m.is_dir() => break,
                    Ok(_) => {
                        return Err(unusable(format!("{} is not a directory", probe.display())));
                    }
                    Err(_) if probe.parent().is_some() => probe = fsutil::parent_dir(&probe),
                    Err(e) => return Err(FsError::new("inspect", probe, e).into()),
                }
            }
            nix::unistd::access(
                &probe,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .map_err(|e| {
                unusable(format!(
                    "it does not exist and cannot be created in {}: {e}",
                    probe.display()
                ))
            })?;
            Ok(false)
        }
        Err(e) => Err(FsError::new("inspect", target, e).into()),
    }
}

/// Applies `--tablespace-map` to the source's tablespaces and checks the locations.
pub(super) fn map_tablespaces(
    source_tablespaces: &[(u32, PathBuf)],
    mappings: &[TablespaceMapping],
    target: &Path,
    backup: &Path,
    delta: bool,
) -> Result<Vec<TablespacePlan>, RestoreError> {
    let target_resolved = guard::resolved(target)?;
    let backup_resolved = guard::resolved(backup)?;
    // Which mapping applies to which tablespace (each mapping must name one of them).
    let mut chosen: Vec<(u32, PathBuf, PathBuf, bool)> = Vec::new();
    let mut used = vec![false; mappings.len()];
    for (oid, original) in source_tablespaces {
        let mut location = None;
        for (i, m) in mappings.iter().enumerate() {
            let hit = match &m.from {
                TablespaceSelector::Oid(o) => o == oid,
                TablespaceSelector::Path(p) => source::same_path(p, original),
            };
            if hit {
                if location.is_some() {
                    return Err(MappingError::MappedTwice {
                        oid: *oid,
                        original: original.clone(),
                    }
                    .into());
                }
                used[i] = true;
                location = Some(m.to.clone());
            }
        }
        let from_backup = location.is_none();
        let location = location.unwrap_or_else(|| original.clone());
        chosen.push((*oid, original.clone(), location, from_backup));
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let known: Vec<String> = source_tablespaces
            .iter()
            .map(|(o, p)| format!("{o}={}", p.display()))
            .collect();
        let what = match &mappings[i].from {
            TablespaceSelector::Oid(o) => format!("OID {o}"),
            TablespaceSelector::Path(p) => format!("location {}", p.display()),
        };
        return Err(MappingError::NoSuchTablespace {
            selector: what,
            known,
        }
        .into());
    }
    let mut out: Vec<TablespacePlan> = Vec::new();
    let mut resolved_locations: Vec<PathBuf> = Vec::new();
    for (oid, original, location, from_backup) in chosen {
        if !is_plain_absolute(&location) {
            return Err(MappingError::NotAbsolute { oid, location }.into());
        }
        // Compared resolved: a link or a relative path must not hide an overlap.
        let resolved = guard::resolved(&location)?;
        if guard::overlap(&resolved, &target_resolved) {
            return Err(MappingError::Overlaps {
                oid,
                location,
                what: "target data directory",
                other: target.to_owned(),
                resolved,
                other_resolved: target_resolved,
            }
            .into());
        }
        if guard::overlap(&resolved, &backup_resolved) {
            return Err(MappingError::Overlaps {
                oid,
                location,
                what: "backup",
                other: backup.to_owned(),
                resolved,
                other_resolved: backup_resolved,
            }
            .into());
        }
        if resolved_locations
            .iter()
            .any(|r| guard::overlap(r, &resolved))
        {
            return Err(MappingError::SameLocation { location }.into());
        }
        let existed = match fs::read_dir(&location) {
            Ok(mut rd) => {
                // A delta restore brings the location's files up to date (restore/delta.rs).
                if !delta && rd.next().is_some() {
                    return Err(RestoreError::TablespaceNotEmpty {
                        oid,
                        path: location,
                    });
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(FsError::new("inspect tablespace location", location, e).into()),
        };
        resolved_locations.push(resolved);
        out.push(TablespacePlan {
            oid,
            original,
            location,
            from_backup,
            existed,
        });
    }
    Ok(out)
}

/// The `tablespace_map` for the restored locations (empty without tablespaces).
pub(super) fn tablespace_map_bytes(
    tablespaces: &[TablespacePlan],
    version: PgVersion,
) -> Result<Vec<u8>, RestoreError> {
    use std::os::unix::ffi::OsStrExt;
    let entries = tablespaces
        .iter()
        .map(|t| TablespaceEntry {
            oid: t.oid,
            path: t.location.as_os_str().as_bytes().to_vec(),
        })
        .collect();
    let map = TablespaceMap::new(entries)
        .and_then(|m| m.format(MapEscaping::for_version(version)))
        .map_err(MappingError::from)?;
    Ok(map)
}
