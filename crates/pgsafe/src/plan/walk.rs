//! The walk over PGDATA and its tablespaces that fills a [`BackupPlan`]: directory listings,
//! `lstat`s, tablespace links and the version directories inside them (rule 8 of [`super`]'s
//! documentation), applying [`classify`] to every entry.

use std::fs::{self, DirEntry, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::rules::{all_digits, is_tablespace_version_dir};
use super::{Decision, Exclusion, PlanDir, PlanError, PlanFile, PlanOptions, RelPath, classify};
use crate::fsutil::{FsError, IoContext};
use crate::types::PgVersion;

/// The PGDATA-relative path of `stats_temp_directory` when it lies inside PGDATA (≤ 14).
pub(super) fn stats_temp_rel(
    pgdata: &Path,
    version: PgVersion,
    opts: &PlanOptions,
) -> Option<Vec<u8>> {
    if version.at_least(15) {
        return None;
    }
    let dir = opts.stats_temp_directory.as_deref()?;
    let rel = if dir.is_absolute() {
        match dir.strip_prefix(pgdata) {
            Ok(r) => r.to_owned(),
            Err(_) => {
                let canon_root = fs::canonicalize(pgdata).ok()?;
                let canon_dir = fs::canonicalize(dir).ok()?;
                canon_dir.strip_prefix(&canon_root).ok()?.to_owned()
            }
        }
    } else {
        dir.to_owned()
    };
    let parts: Vec<&[u8]> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(&b'/'))
}

/// PGDATA-relative paths of tablespace directories located inside PGDATA: the main walk records
/// them as directories but does not descend (their contents go under `pg_tblspc/<oid>`).
pub(super) fn tablespaces_inside(pgdata: &Path) -> Vec<Vec<u8>> {
    let Ok(root) = fs::canonicalize(pgdata) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(pgdata.join("pg_tblspc")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            if !e.file_type().ok()?.is_symlink() {
                return None;
            }
            let target = fs::canonicalize(e.path()).ok()?;
            let rel = target.strip_prefix(&root).ok()?;
            (!rel.as_os_str().is_empty()).then(|| rel.as_os_str().as_bytes().to_vec())
        })
        .collect()
}

pub(super) struct Walker<'a> {
    pub(super) pgdata: &'a Path,
    pub(super) version: PgVersion,
    pub(super) opts: &'a PlanOptions,
    pub(super) stats_rel: Option<Vec<u8>>,
    pub(super) skip_dirs: Vec<Vec<u8>>,
    pub(super) dirs: Vec<PlanDir>,
    pub(super) files: Vec<PlanFile>,
    pub(super) control: Option<PlanFile>,
    pub(super) tablespaces: Vec<(u32, PathBuf)>,
    pub(super) excluded: Vec<(RelPath, Exclusion)>,
    pub(super) warnings: Vec<String>,
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// A directory's entries with their names, sorted by name.
type Listing = Vec<(Vec<u8>, DirEntry)>;

/// A directory's entries sorted by name; `None` if the directory vanished.
pub(super) fn list_dir(dir: &Path) -> Result<Option<Listing>, FsError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(FsError::new("read directory", dir, e)),
    };
    let mut entries = Vec::new();
    for e in rd {
        let e = e.ctx("read directory", dir)?;
        entries.push((e.file_name().as_bytes().to_vec(), e));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(entries))
}

/// `lstat` of an entry; `None` if it vanished.
fn entry_meta(e: &DirEntry) -> Result<Option<Metadata>, FsError> {
    match e.metadata() {
        Ok(m) => Ok(Some(m)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(FsError::new("inspect", e.path(), err)),
    }
}

impl Walker<'_> {
    pub(super) fn walk(&mut self, dir: &Path, rel: &RelPath) -> Result<(), PlanError> {
        let Some(entries) = list_dir(dir)? else {
            return Ok(());
        };
        for (name, entry) in &entries {
            let child = rel.join(name);
            let mut decision = classify(child.as_bytes(), self.version);
            if decision == Decision::Include && self.stats_rel.as_deref() == Some(child.as_bytes())
            {
                decision = Decision::EmptyDir;
            }
            match decision {
                Decision::Exclude(why) => self.excluded.push((child, why)),
                Decision::UnlessInitFork { init_fork } => {
                    let has_init = entries
                        .binary_search_by(|(n, _)| n.as_slice().cmp(init_fork.as_bytes()))
                        .is_ok();
                    if has_init {
                        self.excluded.push((child, Exclusion::UnloggedRelation));
                    } else {
                        self.include(entry, child, rel)?;
                    }
                }
                Decision::ControlFile => match entry_meta(entry)? {
                    Some(meta) if meta.is_file() => {
                        self.control = Some(plan_file(child, entry.path(), &meta));
                    }
                    _ => {}
                },
                Decision::EmptyDir | Decision::WalDir => {
                    let Some(meta) = entry_meta(entry)? else {
                        continue;
                    };
                    let mode = if meta.is_dir() {
                        Some(meta.mode() & 0o7777)
                    } else if meta.is_symlink() {
                        // Written as a directory, like pg_basebackup's convert_link_to_directory.
                        Some(
                            fs::metadata(entry.path())
                                .ok()
                                .filter(Metadata::is_dir)
                                .map_or(0o700, |m| m.mode() & 0o7777),
                        )
                    } else {
                        None
                    };
                    match mode {
                        Some(mode) => {
                            if decision == Decision::WalDir {
                                let mut subdirs = vec![&b"archive_status"[..]];
                                if self.version.at_least(17) {
                                    subdirs.push(b"summaries");
                                }
                                let subs =
                                    subdirs.iter().map(|s| child.join(s)).collect::<Vec<_>>();
                                self.dirs.push(PlanDir {
                                    rel_path: child,
                                    mode,
                                });
                                for rel_path in subs {
                                    self.dirs.push(PlanDir { rel_path, mode });
                                }
                            } else {
                                self.dirs.push(PlanDir {
                                    rel_path: child,
                                    mode,
                                });
                            }
                        }
                        None => self.include(entry, child, rel)?,
                    }
                }
                Decision::Include => self.include(entry, child, rel)?,
            }
        }
        Ok(())
    }

    /// An entry the name rules keep: by its type.
    fn include(
        &mut self,
        entry: &DirEntry,
        child: RelPath,
        parent: &RelPath,
    ) -> Result<(), PlanError> {
        let Some(meta) = entry_meta(entry)? else {
            return Ok(());
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            if parent.as_bytes() == b"pg_tblspc" {
                self.tablespace(entry, child)?;
            } else {
                self.special(&entry.path());
            }
        } else if ft.is_dir() {
            self.dirs.push(PlanDir {
                rel_path: child.clone(),
                mode: meta.mode() & 0o7777,
            });
            if !self.skip_dirs.iter().any(|d| d == child.as_bytes()) {
                self.walk(&entry.path(), &child)?;
            }
        } else if ft.is_file() {
            self.files.push(plan_file(child, entry.path(), &meta));
        } else {
            self.special(&entry.path());
        }
        Ok(())
    }

    fn special(&mut self, path: &Path) {
        self.warnings
            .push(format!("skipping special file \"{}\"", path.display()));
    }

    /// `pg_tblspc/<oid>` symbolic link: stored as a directory holding the version directory.
    fn tablespace(&mut self, entry: &DirEntry, child: RelPath) -> Result<(), PlanError> {
        let link = entry.path();
        let oid = std::str::from_utf8(child.file_name())
            .ok()
            .filter(|s| all_digits(s.as_bytes()))
            .and_then(|s| s.parse::<u32>().ok());
        let Some(oid) = oid else {
            self.warnings.push(format!(
                "skipping special file \"{}\" (a symbolic link in pg_tblspc whose name is not a \
                 tablespace OID)",
                link.display()
            ));
            return Ok(());
        };
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(FsError::new("read tablespace link", link, e).into()),
        };
        self.tablespaces.push((oid, target.clone()));
        let location = if target.is_relative() {
            self.pgdata.join("pg_tblspc").join(&target)
        } else {
            target.clone()
        };
        let meta = match fs::metadata(&location) {
            Ok(m) if m.is_dir() => m,
            Ok(_) | Err(_) => {
                self.warnings.push(format!(
                    "tablespace {oid}: its location \"{}\" is not a readable directory; the \
                     backup holds an empty pg_tblspc/{oid}",
                    target.display()
                ));
                self.dirs.push(PlanDir {
                    rel_path: child,
                    mode: 0o700,
                });
                return Ok(());
            }
        };
        self.dirs.push(PlanDir {
            rel_path: child.clone(),
            mode: meta.mode() & 0o7777,
        });
        let Some(entries) = list_dir(&location)? else {
            return Ok(());
        };
        let wanted = self
            .opts
            .catalog_version
            .map(|c| format!("PG_{}_{c}", self.version.major_name()));
        for (name, e) in &entries {
            let ours = match &wanted {
                Some(w) => name.as_slice() == w.as_bytes(),
                None => is_tablespace_version_dir(name, self.version),
            };
            if !ours {
                continue;
            }
            let path = e.path();
            // lstat: PostgreSQL creates the version directory itself (tablespace.c,
            // create_tablespace_directories). A link there was planted by whoever can write
            // the tablespace (or a copy of PGDATA): following it would copy any directory
            // it names — root's, when root runs the backup or a `--from-copy` restore.
            let Some(m) = entry_meta(e)? else {
                continue;
            };
            if m.file_type().is_symlink() {
                return Err(PlanError::VersionDirLink {
                    oid,
                    path,
                    points_to: fs::read_link(e.path()).unwrap_or_default(),
                });
            }
            if !m.is_dir() {
                continue;
            }
            let rel = child.join(name);
            self.dirs.push(PlanDir {
                rel_path: rel.clone(),
                mode: m.mode() & 0o7777,
            });
            self.walk(&path, &rel)?;
        }
        Ok(())
    }
}

fn plan_file(rel_path: RelPath, source: PathBuf, meta: &Metadata) -> PlanFile {
    PlanFile {
        rel_path,
        source,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
    }
}
