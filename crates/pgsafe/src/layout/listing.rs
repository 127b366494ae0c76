//! The listing of a stored backup: what files, directories, links and oddities a backup folder
//! holds. Verify compares it with the manifest; restore takes its WAL and sizes from it.
//!
//! This walk is for backup folders, where more than objects can be found; a backup in another
//! storage backend is listed through it ([`super::StoredBackup::list`]).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil::FsError;
use crate::plan::RelPath;

/// What a backup folder holds. Symbolic links are listed, never followed (pg_verifybackup
/// follows them; pgsafe never stores one, and following a planted one would let the folder's
/// writer choose what a root-run restore reads: docs/threat-model.md).
#[derive(Debug, Default)]
pub struct Listing {
    /// Directories, parents before children.
    pub dirs: Vec<RelPath>,
    /// Regular files and their sizes.
    pub files: BTreeMap<RelPath, u64>,
    /// Entries that are neither (sockets, fifos, devices).
    pub special: Vec<RelPath>,
    /// Symbolic links and what they point to.
    pub links: Vec<(RelPath, PathBuf)>,
    /// Regular files with more than one name (also in `files`).
    pub hard_links: Vec<RelPath>,
    /// Directories below the root that could not be read, with the error.
    pub unreadable: Vec<(RelPath, String)>,
}

/// Deepest directory nesting listed.
const MAX_DEPTH: usize = 64;

/// Lists a backup folder.
pub fn list_backup(root: &Path) -> Result<Listing, FsError> {
    let mut l = Listing::default();
    walk(root, &RelPath::default(), 0, &mut l)?;
    Ok(l)
}

fn walk(dir: &Path, rel: &RelPath, depth: usize, l: &mut Listing) -> Result<(), FsError> {
    let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    // Below the root, an unreadable directory is one problem among others: keep listing.
    let read = fs::read_dir(dir).and_then(|rd| {
        for e in rd {
            let e = e?;
            entries.push((e.file_name().as_bytes().to_vec(), e.path()));
        }
        Ok(())
    });
    match read {
        Ok(()) => {}
        Err(e) if rel.is_empty() => return Err(FsError::new("read directory", dir, e)),
        Err(e) => {
            l.unreadable
                .push((rel.clone(), format!("read directory: {e}")));
            return Ok(());
        }
    }
    entries.sort();
    for (name, path) in entries {
        let child = rel.join(&name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&path).unwrap_or_default();
                l.links.push((child, to));
            }
            Ok(m) if m.is_file() => {
                if m.nlink() > 1 {
                    l.hard_links.push(child.clone());
                }
                l.files.insert(child, m.len());
            }
            Ok(m) if m.is_dir() && depth < MAX_DEPTH => {
                l.dirs.push(child.clone());
                walk(&path, &child, depth + 1, l)?;
            }
            Ok(_) => l.special.push(child),
            // Removed while listing: nothing there to check.
            Err(e) if e.kind() == io::ErrorKind::NotFound => l.special.push(child),
            Err(e) => l.unreadable.push((child, format!("inspect: {e}"))),
        }
    }
    Ok(())
}

/// Why a hard link in a backup folder is refused: pgsafe never makes one, and a link to a file
/// the folder's writer cannot read (possible where `fs.protected_hardlinks` is 0) would make a
/// root-run restore hand that file to the database user, checksums removed by the same writer.
pub const HARD_LINK_WHY: &str = "pgsafe never stores hard links in a backup; one may name a \
    file outside it that the folder's writer could not read";
