//! Where a restore may write, decided before it writes: paths compared as resolved absolute
//! paths (a relative or linked `--pgdata` must not slip past an overlap check), tablespace
//! locations that came from the backup only, an exclusive lock on the target for the whole
//! restore, and the free space the manifest's sizes need.
//!
//! A backup folder is input from whoever could write into it (docs/threat-model.md): its
//! `tablespace_map` decides where directories are created, so a root-run restore uses those
//! locations only when the operator confirmed them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::{RestoreError, TablespacePlan};
use crate::fsutil::FsError;

/// `p` as an absolute path with every symbolic link of its existing part resolved; the part
/// that does not exist yet is appended as written (it must not contain `..`).
pub(super) fn resolve(p: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match fs::canonicalize(existing) {
            Ok(mut out) => {
                out.extend(rest.iter().rev());
                return Ok(out);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match (existing.file_name(), existing.parent()) {
                    (Some(name), Some(parent)) => {
                        rest.push(name.to_owned());
                        existing = parent;
                    }
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "{} cannot be resolved (a \"..\" below a directory that does \
                                 not exist)",
                                p.display()
                            ),
                        ));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// One of the two resolved paths is inside the other (or they are the same).
pub(super) fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Resolves `p` for an overlap check, as a restore error.
pub(super) fn resolved(p: &Path) -> Result<PathBuf, RestoreError> {
    resolve(p).map_err(|e| FsError::new("resolve", p, e).into())
}

/// The target and the backup must not overlap: a restore into the backup folder would add
/// files the backup does not list (or write over them), a backup inside the target would be
/// restored into itself.
pub(super) fn check_target_vs_source(target: &Path, source: &Path) -> Result<(), RestoreError> {
    let (t, s) = (resolved(target)?, resolved(source)?);
    if overlap(&t, &s) {
        return Err(RestoreError::TargetUnusable {
            target: target.to_owned(),
            why: format!(
                "it overlaps the backup {} (resolved: {} and {}); restore into a directory \
                 outside the backup",
                source.display(),
                t.display(),
                s.display()
            ),
        });
    }
    Ok(())
}

/// An exclusive `flock` on the target directory, held for the whole restore: a second
/// restore into the same empty directory is refused instead of mixing two backups.
#[derive(Debug)]
pub(super) struct TargetLock {
    _lock: Flock<File>,
}

impl TargetLock {
    pub fn acquire(target: &Path) -> Result<TargetLock, RestoreError> {
        let f = File::open(target).map_err(|e| FsError::new("open", target, e))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(TargetLock { _lock: l }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(RestoreError::TargetBusy(target.to_owned()))
            }
            Err((_, e)) => Err(FsError::new("lock", target, io::Error::from(e)).into()),
        }
    }
}

/// Space a file takes at least (whole 4 KiB blocks).
fn on_disk(size: u64) -> u64 {
    size.div_ceil(4096).saturating_mul(4096)
}

/// Checks that each file system has room for what goes there: `needs` pairs a destination
/// directory (it may not exist yet) with the bytes written below it.
pub(super) fn check_space(needs: &[(PathBuf, u64)]) -> Result<(), RestoreError> {
    // Per file system (device of the nearest existing ancestor): bytes needed, and a path on it.
    let mut per_dev: BTreeMap<u64, (PathBuf, u64)> = BTreeMap::new();
    for (dir, bytes) in needs {
        let mut probe = dir.as_path();
        let meta = loop {
            match fs::metadata(probe) {
                Ok(m) => break m,
                Err(_) => match probe.parent() {
                    Some(p) => probe = p,
                    None => return Ok(()),
                },
            }
        };
        let e = per_dev
            .entry(meta.dev())
            .or_insert_with(|| (probe.to_owned(), 0));
        e.1 = e.1.saturating_add(*bytes);
    }
    for (path, need) in per_dev.values() {
        let st = nix::sys::statvfs::statvfs(path.as_path())
            .map_err(|e| FsError::new("check free space of", path, io::Error::from(e)))?;
        let available = st.blocks_available().saturating_mul(st.fragment_size());
        if *need > available {
            return Err(RestoreError::NoSpace {
                path: path.clone(),
                need: *need,
                available,
            });
        }
    }
    Ok(())
}

/// What each destination needs: the files of a tablespace go to its location, the rest to
/// the target.
pub(super) fn space_needs(
    target: &Path,
    tablespaces: &[TablespacePlan],
    files: impl Iterator<Item = (Option<u32>, u64)>,
) -> Vec<(PathBuf, u64)> {
    let mut target_bytes: u64 = 64 << 10; // labels, recovery settings, pg_control
    let mut ts_bytes = vec![0u64; tablespaces.len()];
    for (oid, size) in files {
        let bytes = on_disk(size);
        match oid.and_then(|o| tablespaces.iter().position(|t| t.oid == o)) {
            Some(i) => ts_bytes[i] = ts_bytes[i].saturating_add(bytes),
            None => target_bytes = target_bytes.saturating_add(bytes),
        }
    }
    let mut out = vec![(target.to_owned(), target_bytes)];
    out.extend(
        tablespaces
            .iter()
            .zip(ts_bytes)
            .map(|(t, b)| (t.location.clone(), b)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_follows_links_and_keeps_the_missing_part() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        let base = fs::canonicalize(d.path()).unwrap();
        assert_eq!(
            resolve(&d.path().join("link/new/deeper")).unwrap(),
            base.join("real/new/deeper")
        );
        assert_eq!(
            resolve(&d.path().join("real/../link")).unwrap(),
            base.join("real")
        );
        assert!(resolve(&d.path().join("missing/../x")).is_err());
        assert!(overlap(&base.join("real"), &base.join("real/new")));
        assert!(!overlap(&base.join("real"), &base.join("realm")));
    }

    #[test]
    fn a_second_lock_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let first = TargetLock::acquire(d.path()).unwrap();
        assert!(matches!(
            TargetLock::acquire(d.path()),
            Err(RestoreError::TargetBusy(_))
        ));
        drop(first);
        TargetLock::acquire(d.path()).unwrap();
    }

    #[test]
    fn space_is_counted_per_file_system() {
        let d = tempfile::tempdir().unwrap();
        check_space(&[(d.path().join("new/target"), 4096)]).unwrap();
        let e = check_space(&[(d.path().join("t"), u64::MAX / 2)]).unwrap_err();
        assert!(matches!(e, RestoreError::NoSpace { .. }), "{e}");
    }
}
