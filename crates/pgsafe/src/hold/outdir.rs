//! Where `stop --output-dir` / `snapshot --output-dir` may write `backup_label`.
//!
//! A `backup_label` in a *live* data directory is the exclusive-backup failure pgsafe exists to
//! avoid: after a crash the server would start from the label's (old, maybe recycled) checkpoint,
//! or fail to start; a root-owned label even blocks its restart (docs/threat-model.md, README
//! "snapshot mode"). The label belongs in the snapshot or copy, never in the directory a server
//! runs on. So before anything is written (and, for `stop`, before the backup is stopped), the
//! output directory is refused when
//! - a running PostgreSQL serves it: its `postmaster.pid` names a live process whose working
//!   directory is this directory (a copy carries the original's `postmaster.pid` with a live
//!   pid too, but that process works elsewhere — the postmaster `chdir`s into its data directory,
//!   src/backend/utils/init/miscinit.c ChangeToDataDir), or, when /proc cannot tell, whose
//!   recorded data directory (line 2) is this directory;
//! - it is the data directory of the server being backed up (same device and inode as the
//!   server's `data_directory`), or lies inside it;
//! - its `global/pg_control` belongs to another cluster (another system identifier): that label
//!   would describe WAL that cluster never wrote.
//!
//! `snapshot` checks once more before it starts the backup ([`check_output_dir_early`]): a
//! directory that cannot be written, or cannot be created, fails the command before the server
//! is in backup mode, not after the copy was taken.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use std::path::{Component, PathBuf};

use super::HoldError;
use crate::control::ControlFile;
use crate::datadir::PostmasterPid;
pub use crate::runrecord::ServerIdentity;

/// Largest `postmaster.pid` / `pg_control` read (both are far smaller; anything bigger is not
/// what it claims to be).
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// Refuses an output directory that is a live data directory or another cluster's (see the
/// module comment). `Ok` for a staging folder, a mounted snapshot, or a copy.
pub fn check_output_dir(dir: &Path, server: &ServerIdentity) -> Result<(), HoldError> {
    let refuse = |why: String| HoldError::UnsafeOutputDir {
        dir: dir.to_path_buf(),
        why,
        next: "",
    };
    let meta = fs::metadata(dir).map_err(|e| refuse(format!("it cannot be used: {e}")))?;
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    let id = (meta.dev(), meta.ino());
    let same_dir = |p: &Path| fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == id);

    if let Some(dd) = &server.data_directory {
        if same_dir(Path::new(dd)) {
            return Err(refuse(format!(
                "it is the data directory of the running server being backed up ({dd})"
            )));
        }
        if inside(dir, Path::new(dd)) {
            return Err(refuse(format!(
                "it lies inside the data directory of the running server being backed up ({dd})"
            )));
        }
    }
    if let Some(bytes) = read_small(&dir.join("postmaster.pid")) {
        let pm = PostmasterPid::parse(&bytes).with_liveness();
        if let (Some(pid), Some(true)) = (pm.pid, pm.process_running) {
            let serves_this = match fs::read_link(format!("/proc/{pid}/cwd")) {
                Ok(cwd) => same_dir(&cwd),
                // No access to /proc/<pid>: trust the directory the server recorded.
                Err(_) => pm
                    .data_directory
                    .as_deref()
                    .is_some_and(|d| same_dir(Path::new(d))),
            };
            if serves_this {
                return Err(refuse(format!(
                    "a running PostgreSQL server (pid {pid}) uses it as its data directory"
                )));
            }
        }
    }
    if let (Some(ours), Some(bytes)) = (
        server.system_id,
        read_small(&dir.join("global").join("pg_control")),
    ) {
        // A pg_control that does not decode is no evidence either way (a snapshot may hold a
        // torn one; recovery restores it from WAL).
        if let Ok(c) = ControlFile::decode(&bytes) {
            if c.system_identifier != ours {
                return Err(refuse(format!(
                    "its global/pg_control belongs to another cluster (system identifier {}; \
                     the server being backed up has {ours})",
                    c.system_identifier
                )));
            }
        }
    }
    Ok(())
}

/// Before the backup starts (`snapshot`): an existing `dir` must pass [`check_output_dir`] and
/// be writable; a missing one must be creatable (its nearest existing parent a writable
/// directory) and not lie inside the server's data directory. The command run between start and
/// stop may create or mount it, so a missing directory is not an error yet.
pub fn check_output_dir_early(dir: &Path, server: &ServerIdentity) -> Result<(), HoldError> {
    if fs::symlink_metadata(dir).is_ok() {
        check_output_dir(dir, server)?;
        return check_writable(dir);
    }
    let parent = dir
        .ancestors()
        .skip(1)
        .find(|a| fs::symlink_metadata(a).is_ok())
        .unwrap_or(Path::new("/"));
    let refuse = |why: String| HoldError::OutputDirNotWritable {
        dir: dir.to_path_buf(),
        why,
        next: "",
    };
    if !fs::metadata(parent).is_ok_and(|m| m.is_dir()) {
        return Err(refuse(format!(
            "it does not exist, and {} is not a directory it could be created in",
            parent.display()
        )));
    }
    if let Some(dd) = &server.data_directory {
        if inside(dir, Path::new(dd)) {
            return Err(HoldError::UnsafeOutputDir {
                dir: dir.to_path_buf(),
                why: format!(
                    "it lies inside the data directory of the running server being backed up \
                     ({dd})"
                ),
                next: "",
            });
        }
    }
    check_writable(parent).map_err(|_| {
        refuse(format!(
            "it does not exist, and {} does not let this user create it",
            parent.display()
        ))
    })
}

/// `dir` can be written by this process (`access(2)`: permissions, and a read-only file system
/// even for root).
pub fn check_writable(dir: &Path) -> Result<(), HoldError> {
    use nix::unistd::{AccessFlags, access};
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        HoldError::OutputDirNotWritable {
            dir: dir.to_path_buf(),
            why: format!("it is not writable ({})", e.desc()),
            next: "",
        }
    })
}

/// `path` (which may not exist yet) lies strictly inside `dir`, both resolved: symbolic links,
/// `.` and `..` are seen through.
fn inside(path: &Path, dir: &Path) -> bool {
    let (Some(p), Ok(d)) = (resolve(path), fs::canonicalize(dir)) else {
        return false;
    };
    p != d && p.starts_with(&d)
}

/// `path` made absolute with its existing part canonicalized and the rest appended (`..` in
/// the rest removes a component).
fn resolve(path: &Path) -> Option<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let existing = abs.ancestors().find(|a| fs::canonicalize(a).is_ok())?;
    let mut out = fs::canonicalize(existing).ok()?;
    for c in abs.strip_prefix(existing).ok()?.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Some(out)
}

/// A regular file's contents (not following a link at the last component, at most
/// [`MAX_SMALL_FILE`] bytes); `None` when absent or not a plain small file.
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_SMALL_FILE {
        return None;
    }
    let f = fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_SMALL_FILE).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_folder_is_fine_and_a_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        check_output_dir(d.path(), &ServerIdentity::default()).unwrap();
        let f = d.path().join("f");
        fs::write(&f, "x").unwrap();
        let e = check_output_dir(&f, &ServerIdentity::default()).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn the_servers_data_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let server = ServerIdentity {
            data_directory: Some(d.path().to_str().unwrap().to_owned()),
            ..ServerIdentity::default()
        };
        let e = check_output_dir(d.path(), &server).unwrap_err();
        assert!(
            e.to_string()
                .contains("data directory of the running server"),
            "{e}"
        );
        let sub = d.path().join("base");
        fs::create_dir(&sub).unwrap();
        let e = check_output_dir(&sub, &server).unwrap_err();
        assert!(
            e.to_string().contains("lies inside the data directory"),
            "{e}"
        );
        let e = check_output_dir_early(&d.path().join("new/../x"), &server).unwrap_err();
        assert!(
            e.to_string().contains("lies inside the data directory"),
            "{e}"
        );
        check_output_dir_early(&tempfile::tempdir().unwrap().path().join("new"), &server).unwrap();
    }
}
