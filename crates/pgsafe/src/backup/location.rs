//! Where a backup may be written: never inside the directories it copies.
//!
//! A target inside PGDATA (or inside a tablespace, or inside the WAL directory that `pg_wal`
//! links to) makes the backup part of what it copies: the walk meets the half-written backup,
//! copies it into itself, and the server's own directory fills with files PostgreSQL does not
//! know (a restored copy of the *next* backup then carries this one). pgsafe compares resolved
//! absolute paths, so a relative target, `..` components and symbolic links (a target that is a
//! link into PGDATA, a PGDATA reached through a link, a tablespace link) are all seen through.
//! Nothing is created before this check.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A directory the backup reads, which the target must stay out of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDir {
    /// What it is, for the message ("the data directory", "tablespace 16385", …).
    pub what: String,
    /// Its resolved absolute path.
    pub path: PathBuf,
}

/// `path` made absolute and resolved as far as it exists: symbolic links and `..` in the part
/// that exists are resolved by the file system (`realpath`); the rest, which does not exist yet,
/// is appended with `.` dropped and `..` applied lexically (there is no link in it to follow).
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut missing: Vec<OsString> = Vec::new();
    let mut probe = abs.as_path();
    let base = loop {
        match fs::canonicalize(probe) {
            Ok(p) => break p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The last component (a name, or `..`) is applied after its parent is resolved.
        match (probe.parent(), probe.components().next_back()) {
            (Some(parent), Some(last)) => {
                missing.push(last.as_os_str().to_owned());
                probe = parent;
            }
            // The root itself cannot be missing; whatever this is, resolve it lexically.
            _ => break lexical(probe),
        }
    };
    let mut out = base;
    for name in missing.iter().rev() {
        match Path::new(name).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            _ => out.push(name),
        }
    }
    Ok(out)
}

/// `.` dropped and `..` applied without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The directories a backup of `pgdata` reads: PGDATA itself, every tablespace location its
/// `pg_tblspc/` links to, and the real location of `pg_wal` when it is a link. Locations that
/// cannot be resolved (a dangling tablespace link) are skipped: nothing can be written there.
pub fn source_dirs(pgdata: &Path) -> io::Result<Vec<SourceDir>> {
    let mut dirs = vec![SourceDir {
        what: "the data directory".into(),
        path: fs::canonicalize(pgdata)?,
    }];
    if let Ok(entries) = fs::read_dir(pgdata.join("pg_tblspc")) {
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            if let Ok(path) = fs::canonicalize(e.path()) {
                dirs.push(SourceDir {
                    what: format!("tablespace {}", e.file_name().to_string_lossy()),
                    path,
                });
            }
        }
    }
    for wal in ["pg_wal", "pg_xlog"] {
        let link = pgdata.join(wal);
        if fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            if let Ok(path) = fs::canonicalize(&link) {
                dirs.push(SourceDir {
                    what: format!("the WAL directory ({wal})"),
                    path,
                });
            }
        }
    }
    Ok(dirs)
}

/// The first source directory that contains `target` (or is it), both resolved.
pub fn target_inside<'a>(target: &Path, sources: &'a [SourceDir]) -> Option<&'a SourceDir> {
    sources.iter().find(|s| target.starts_with(&s.path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolve_sees_through_links_relative_paths_and_dot_dot() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let data = root.join("data");
        fs::create_dir_all(data.join("base")).unwrap();
        symlink(&data, root.join("link")).unwrap();
        // An existing path through a link.
        assert_eq!(resolve(&root.join("link/base")).unwrap(), data.join("base"));
        // A missing path below a link, with `.` and `..` in the missing part.
        assert_eq!(
            resolve(&root.join("link/new/./x/../backup")).unwrap(),
            data.join("new/backup")
        );
        // `..` in the existing part goes through the link's target, as the kernel does.
        fs::create_dir(root.join("other")).unwrap();
        assert_eq!(
            resolve(&root.join("link/base/../../other/b")).unwrap(),
            root.join("other/b")
        );
        // Relative to the working directory.
        let rel = resolve(Path::new("some/relative")).unwrap();
        assert!(rel.is_absolute() && rel.ends_with("some/relative"));
    }

    #[test]
    fn sources_are_pgdata_tablespaces_and_a_linked_wal_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let data = root.join("data");
        let (ts, wal) = (root.join("ts"), root.join("wal"));
        for d in [data.join("pg_tblspc"), ts.clone(), wal.clone()] {
            fs::create_dir_all(d).unwrap();
        }
        symlink(&ts, data.join("pg_tblspc/16385")).unwrap();
        symlink(root.join("gone"), data.join("pg_tblspc/16386")).unwrap();
        symlink(&wal, data.join("pg_wal")).unwrap();
        let s = source_dirs(&data).unwrap();
        let paths: Vec<&Path> = s.iter().map(|d| d.path.as_path()).collect();
        assert_eq!(paths, [data.as_path(), ts.as_path(), wal.as_path()]);
        assert_eq!(s[1].what, "tablespace 16385");
        let inside = |p: &Path| target_inside(&resolve(p).unwrap(), &s).map(|d| d.what.clone());
        assert_eq!(
            inside(&data.join("backup")).as_deref(),
            Some("the data directory")
        );
        assert_eq!(inside(&data).as_deref(), Some("the data directory"));
        assert_eq!(inside(&ts.join("b")).as_deref(), Some("tablespace 16385"));
        for p in [data.join("pg_wal/b"), wal.join("b")] {
            assert_eq!(
                inside(&p).as_deref(),
                Some("the WAL directory (pg_wal)"),
                "{}",
                p.display()
            );
        }
        // Beside, not inside: a sibling whose name starts with the same letters.
        assert_eq!(inside(&root.join("data2/b")), None);
        assert_eq!(inside(&root.join("backup")), None);
    }
}
