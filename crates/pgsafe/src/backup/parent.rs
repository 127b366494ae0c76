//! The type of a backup into a repository, and the parent a differential or incremental backup
//! stores the changes since.
//!
//! A backup asked for (or by default, see [`AUTO_INCREMENTAL`]) as incremental takes the newest complete backup of the
//! cluster as its parent, a differential one the newest complete full backup. "Newest" is by
//! the time the backup started: a backup that was interrupted (incomplete, or still running)
//! is not a backup and is passed over, but a complete one that cannot serve is not: the backup
//! is then full, and says why. It cannot serve when:
//! * it is of another database system (a foreign backup in the cluster's folder), or its chain
//!   is broken ([`crate::repo::catalog::Catalog::chain`]);
//! * its latest verification failed;
//! * the data checksum setting changed since (`pg_checksums --enable` rewrites every page's
//!   checksum but not its LSN, so a page scan would miss every page);
//! * its timeline is neither this backup's nor an ancestor of it, or it ended on that ancestor
//!   after the timeline switched (a promotion): its data then holds changes this cluster's
//!   history does not have;
//! * it started after this backup's start;
//! * the cluster's block size is not 8 KiB (the only page size pgsafe reads), or its segment
//!   size differs from the one the parent recorded. Both are fixed at initdb, and a parent of
//!   the same system identifier and major version comes from the same initdb; checked where
//!   recorded all the same;
//! * the data directory holds a file whose name ends like an incremental object's
//!   ([`crate::layout::INCR_SUFFIX`]): both would have the same name in the backup.
//!
//! A backup outside a repository (a plain folder) is always full.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::copy::IncrementalCopy;
use crate::info::{BackupInfo, BackupType, ChangedSource, ChangedSourceKind};
use crate::layout::{INCR_SUFFIX, MANIFEST_FILE, MANIFEST_LIMIT, incremental_target};
use crate::manifest::Manifest;
use crate::page::BLCKSZ;
use crate::plan::BackupPlan;
use crate::repo::{LeaseTiming, Repository};
use crate::storage::Ident;
use crate::types::{Lsn, TimelineId};

/// Whether a backup into a repository that names no type is incremental (when a parent can
/// serve). Off while `restore` refuses differential and incremental backups
/// (`RestoreError::NeedsChain`): a default backup must stay restorable. Turned on together
/// with the restore of chains.
pub(super) const AUTO_INCREMENTAL: bool = false;

/// A backup into a repository asks for its type here.
#[derive(Clone, Copy)]
pub(super) struct TypeRequest<'a> {
    pub repo: &'a Repository,
    pub cluster: &'a Ident,
    pub timing: LeaseTiming,
    /// `None`: incremental when a parent can serve, else full.
    pub asked: Option<BackupType>,
}

/// What this backup is.
pub(super) struct Decision {
    pub backup_type: BackupType,
    /// Why, for the output.
    pub reason: String,
    pub parent: Option<Parent>,
}

/// The parent chosen, and what the copy needs from it.
pub(super) struct Parent {
    pub id: Ident,
    pub info: BackupInfo,
    /// The files its chain restores (manifest paths, incremental objects under the path of
    /// the file they stand for).
    files: HashSet<Vec<u8>>,
    /// `PG_VERSION` files of database directories in its manifest: size and `Last-Modified`.
    pg_versions: HashMap<Vec<u8>, (u64, Option<String>)>,
}

fn full(reason: impl Into<String>) -> Decision {
    Decision {
        backup_type: BackupType::Full,
        reason: reason.into(),
        parent: None,
    }
}

/// What the server and the data directory say, for the checks.
pub(super) struct Current<'a> {
    pub start_lsn: Lsn,
    pub start_tli: TimelineId,
    pub pgdata: &'a Path,
    pub data_checksums: bool,
    pub blcksz: u32,
    pub relseg_size: u32,
}

/// Chooses the type and the parent (see the module documentation).
pub(super) fn decide(req: Option<TypeRequest<'_>>, now: &Current<'_>) -> Decision {
    let Some(req) = req else {
        return full("full: a backup outside a repository is always full");
    };
    let wanted = match req.asked {
        Some(BackupType::Full) => return full("full: asked for"),
        Some(t) => t,
        None if AUTO_INCREMENTAL => BackupType::Incr,
        None => {
            return full(
                "full: the default until pgsafe restores chains (ask for diff or incr to store \
                 only the changes)",
            );
        }
    };
    let catalog = match req.repo.catalog(req.cluster, req.timing) {
        Ok(c) => c,
        Err(e) => {
            return full(format!(
                "full: the repository's backups could not be listed ({e})"
            ));
        }
    };
    let candidate = catalog
        .backups
        .iter()
        .filter(|b| b.info.is_some() && (b.is_complete() || b.state.name() == "foreign"))
        .filter(|b| wanted == BackupType::Incr || b.backup_type == BackupType::Full)
        .max_by_key(|b| (b.info.as_ref().map(|i| i.started_at), b.lineage_key()));
    let what = match wanted {
        BackupType::Diff => "complete full backup",
        _ => "complete backup",
    };
    let Some(c) = candidate else {
        return full(format!(
            "full: the repository has no earlier {what} of cluster {}",
            req.cluster
        ));
    };
    let Some(info) = c.info.clone() else {
        return full("full: no earlier backup");
    };
    let refuse = |why: String| full(format!("full: the newest {what}, {}, {why}", c.id));
    if let crate::repo::catalog::BackupState::Foreign { reason } = &c.state {
        return refuse(format!("is of another database system ({reason})"));
    }
    if c.failed_verification() {
        return refuse("failed its latest verification".into());
    }
    if let Err(e) = catalog.chain(c.id.as_str()) {
        return refuse(format!("cannot be restored: {e}"));
    }
    if let Err(why) = check_parent(&info, now) {
        return refuse(why);
    }
    let stored = match req.repo.stored_backup(req.cluster, &c.id) {
        Ok(s) => s,
        Err(e) => return refuse(format!("cannot be read: {e}")),
    };
    let manifest = match stored.get(MANIFEST_FILE, MANIFEST_LIMIT) {
        Ok(Some(bytes)) => Manifest::parse(&bytes).map_err(|e| e.to_string()),
        Ok(None) => Err("it has no backup_manifest".into()),
        Err(e) => Err(e.to_string()),
    };
    let manifest = match manifest {
        Ok(m) => m,
        Err(e) => return refuse(format!("has a backup_manifest that cannot be read: {e}")),
    };
    let mut files = HashSet::new();
    let mut pg_versions = HashMap::new();
    for f in manifest.files {
        let path = incremental_target(&f.path, info.backup_type)
            .unwrap_or(&f.path)
            .to_vec();
        if path.ends_with(b"/PG_VERSION") {
            pg_versions.insert(path.clone(), (f.size, f.last_modified.clone()));
        }
        files.insert(path);
    }
    Decision {
        backup_type: wanted,
        reason: format!(
            "{wanted}: the changes since {} ({}, started at {})",
            c.id, info.backup_type, info.start_lsn
        ),
        parent: Some(Parent {
            id: c.id.clone(),
            info,
            files,
            pg_versions,
        }),
    }
}

/// The checks that need nothing but the parent's `pgsafe.json` and this backup's start.
fn check_parent(info: &BackupInfo, now: &Current<'_>) -> Result<(), String> {
    if info.data_checksums != now.data_checksums {
        return Err(format!(
            "was taken with data checksums {}, the cluster now has them {}",
            on_off(info.data_checksums),
            on_off(now.data_checksums)
        ));
    }
    if now.blcksz as usize != BLCKSZ {
        return Err(format!(
            "cannot serve: this cluster's block size is {} bytes, and pgsafe reads pages of \
             {BLCKSZ} bytes only",
            now.blcksz
        ));
    }
    if let Some(p) = &info.page_checksums {
        if p.relseg_size != 0 && p.relseg_size != now.relseg_size {
            return Err(format!(
                "recorded {} blocks per segment file, the cluster has {}",
                p.relseg_size, now.relseg_size
            ));
        }
    }
    if info.start_lsn > now.start_lsn {
        return Err(format!(
            "started at {}, after this backup's start at {}",
            info.start_lsn, now.start_lsn
        ));
    }
    if info.stop_tli != now.start_tli {
        let history = read_history(now.pgdata, now.start_tli)?;
        match history.switchpoint_of(info.stop_tli) {
            None => {
                return Err(format!(
                    "is on timeline {}, which is not an ancestor of the current timeline {}",
                    info.stop_tli.0, now.start_tli.0
                ));
            }
            Some(sp) if info.stop_lsn > sp => {
                return Err(format!(
                    "ended at {} on timeline {}, after this cluster's history left that \
                     timeline at {} (a promotion): it holds changes this cluster does not have",
                    info.stop_lsn, info.stop_tli.0, sp
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The history of timeline `tli` from the data directory's `pg_wal` (the server keeps every
/// history file there).
fn read_history(pgdata: &Path, tli: TimelineId) -> Result<crate::wal::TimelineHistory, String> {
    if tli.0 <= 1 {
        return crate::wal::TimelineHistory::without_parents(tli).map_err(|e| e.to_string());
    }
    let path = pgdata
        .join(crate::layout::WAL_DIR)
        .join(tli.history_file_name());
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot be checked against the current timeline {}: {}: {e}",
            tli.0,
            path.display()
        )
    })?;
    crate::wal::TimelineHistory::parse(tli, &bytes).map_err(|e| {
        format!(
            "cannot be checked against the current timeline {}: {}: {e}",
            tli.0,
            path.display()
        )
    })
}

impl Parent {
    /// What the copy needs, once the files to copy are known; `Err`: why the backup must be
    /// full after all.
    pub fn for_plan(&self, plan: &BackupPlan, relseg_size: u32) -> Result<IncrementalCopy, String> {
        let mut recreated = HashSet::new();
        for f in &plan.files {
            let path = f.rel_path.as_bytes();
            if path.ends_with(INCR_SUFFIX.as_bytes()) {
                return Err(format!(
                    "full: the data directory holds {}, named like pgsafe's incremental objects",
                    f.rel_path
                ));
            }
            let Some(dir) = path.strip_suffix(b"/PG_VERSION") else {
                continue;
            };
            let Some(db) = crate::copy::incremental::database_oid(dir) else {
                continue;
            };
            let now = (f.size, Some(crate::manifest::format_last_modified(f.mtime)));
            if self.pg_versions.get(path) != Some(&now) {
                recreated.insert(db);
            }
        }
        Ok(IncrementalCopy {
            since: self.info.start_lsn,
            parent_files: self.files.clone(),
            recreated_databases: recreated,
            version: plan.version,
            relseg_size,
        })
    }

    /// Where the changed blocks come from, and why.
    pub fn changed_source(&self) -> ChangedSource {
        ChangedSource {
            kind: ChangedSourceKind::PageScan,
            reason: format!(
                "every relation file read; pages with an LSN after the parent's start {} kept \
                 (pgsafe does not read WAL summaries for this backup)",
                self.info.start_lsn
            ),
        }
    }
}
