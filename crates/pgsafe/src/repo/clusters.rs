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

/// Lists the clusters of the repository at `repo` (its folder, as [`super::Repository::root`]
/// gives it), reading through `b` whether each has a registration.
pub fn list_clusters(repo: &std::path::Path, b: &dyn Backend) -> Result<ClusterList, RepoError> {
    let io = |source| RepoError::Create {
        path: repo.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(repo).map_err(io)? {
        let e = e.map_err(io)?;
        let ty = match e.file_type() {
            Ok(t) => t,
            // Deleted while listing.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io(err)),
        };
        names.push((e.file_name(), ty));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = ClusterList::default();
    for (name, ty) in names {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
        let shown = String::from_utf8_lossy(bytes).escape_debug().to_string();
        if bytes == REPOSITORY_MARKER.as_bytes()
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
        if !ty.is_dir() {
            let why = if ty.is_symlink() {
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
