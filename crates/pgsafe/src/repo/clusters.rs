//! The clusters a repository holds: the folders at its top that have a registration
//! (`<cluster>/cluster.json`). Anything else there is reported, never read or followed.

use super::RepoError;
use super::catalog::OddEntry;
use crate::storage::key::REPOSITORY_MARKER;
use crate::storage::name::TEMP_MARKER;
use crate::storage::{Backend, ErrorKind, Ident, Key};

/// The registered clusters, by name, and what else lies at the top of the repository.
#[derive(Debug, Clone, Default)]
pub struct ClusterList {
    pub clusters: Vec<Ident>,
    pub odd_entries: Vec<OddEntry>,
}

/// What an entry at the top of the repository is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Top {
    Folder,
    Link,
    Other,
}

/// Lists the clusters of `repo`, reading through its backend whether each has a registration.
/// A repository on this host is listed as a folder (links and other files are reported);
/// in object storage the top names are the first components of the objects' names.
pub fn list_clusters(repo: &super::Repository) -> Result<ClusterList, RepoError> {
    let b: &dyn Backend = repo.backend();
    let mut names: Vec<(Vec<u8>, Top)> = Vec::new();
    if let Some(root) = repo.local_root() {
        let io = |source| RepoError::Create {
            path: root.to_owned(),
            source,
        };
        for e in std::fs::read_dir(root).map_err(io)? {
            let e = e.map_err(io)?;
            let ty = match e.file_type() {
                Ok(t) => t,
                // Deleted while listing.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(io(err)),
            };
            let top = if ty.is_dir() {
                Top::Folder
            } else if ty.is_symlink() {
                Top::Link
            } else {
                Top::Other
            };
            let name = std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec();
            names.push((name, top));
        }
    } else {
        for o in b.list(None)? {
            let bytes = o.name.as_bytes();
            let (first, top) = match bytes.iter().position(|c| *c == b'/') {
                Some(i) => (&bytes[..i], Top::Folder),
                None => (bytes, Top::Other),
            };
            match names.iter_mut().find(|(n, _)| n == first) {
                Some(e) if top == Top::Folder => e.1 = Top::Folder,
                Some(_) => {}
                None => names.push((first.to_vec(), top)),
            }
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = ClusterList::default();
    for (name, ty) in names {
        let bytes = name.as_slice();
        let shown = String::from_utf8_lossy(bytes).escape_debug().to_string();
        if bytes == REPOSITORY_MARKER.as_bytes()
            || bytes == crate::storage::crypt::keys::KEYRING.as_bytes()
            || bytes
                .windows(TEMP_MARKER.len())
                .any(|w| w == TEMP_MARKER.as_bytes())
        {
            continue;
        }
        let odd = |why: &str| OddEntry {
            name: shown.clone(),
            why: why.to_owned(),
        };
        if ty != Top::Folder {
            let why = if ty == Top::Link {
                "a symbolic link at the top of the repository: never followed"
            } else {
                "not a cluster's folder"
            };
            out.odd_entries.push(odd(why));
            continue;
        }
        let Some(id) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| Ident::new(s).ok())
        else {
            out.odd_entries
                .push(odd("a folder whose name is not a cluster name: not read"));
            continue;
        };
        match b.size(&Key::Cluster { cluster: &id }.name()?) {
            Err(e) if e.kind() == ErrorKind::NotFound => out.odd_entries.push(odd(
                "a folder without cluster.json: no cluster is registered under this name",
            )),
            // Any other failure is the cluster's: reading its catalog reports it.
            _ => out.clusters.push(id),
        }
    }
    Ok(out)
}
