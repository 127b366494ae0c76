//! The repository as the archiver will meet it: there, a pgsafe repository, mounted writable,
//! with room for WAL, and writable by the operating-system user the server runs as (who runs
//! `archive_command`), which is usually not the user running `check`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::ArchiveFile;
use crate::storage::{Backend, ErrorKind, Ident, StorageError};
use crate::types::WalSegment;

/// What `check` found out about the repository's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepoState {
    pub path: String,
    /// The folder exists.
    pub exists: bool,
    /// It is a pgsafe repository (has its marker) and could be opened.
    pub is_repository: bool,
    /// Its file system is mounted read-only.
    pub read_only: bool,
    /// Free space for an unprivileged writer, in bytes.
    pub free_bytes: Option<u64>,
    /// The server's operating-system user (owner of its data directory), when the data
    /// directory is on this host.
    pub server_user: Option<String>,
    /// A folder or file of the repository that user cannot use as `archive-push` must, and why.
    pub server_cannot_write: Option<String>,
    /// For a repository in object storage: the probe's findings (create, clock, delete).
    pub object_store: Option<super::object_store::ObjectStoreState>,
}

/// The file system's view of `path`: mounted read-only, free bytes.
pub fn file_system(path: &Path) -> Option<(bool, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let read_only = st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    Some((read_only, free))
}

/// A user, with the groups that count for permission checks.
#[derive(Debug, Clone)]
pub struct Who {
    pub uid: u32,
    pub name: String,
    pub groups: Vec<u32>,
}

impl Who {
    /// The user owning `path` (a data directory), with its groups.
    pub fn owner_of(path: &Path) -> Option<Who> {
        let uid = std::fs::metadata(path).ok()?.uid();
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let (name, groups) = match user {
            Some(u) => {
                let groups = std::ffi::CString::new(u.name.clone())
                    .ok()
                    .and_then(|c| nix::unistd::getgrouplist(&c, u.gid).ok())
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_else(|| vec![u.gid.as_raw()]);
                (u.name, groups)
            }
            None => (format!("uid {uid}"), Vec::new()),
        };
        Some(Who { uid, name, groups })
    }

    /// Whether the permission bits of `meta` grant `want` (`0o4` read, `0o2` write, `0o1`
    /// search) to this user. Root is granted everything; access control lists are not read
    /// (they can only grant more, so a "no" here can be wrong, a "yes" not).
    pub fn may(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if self.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want & 0o7 == want
    }
}

/// The first place below `root` where `who` lacks what `archive-push` of `segment` needs:
/// search on the folders down to the segment's, read of the registration, write on the
/// deepest folder that exists (where it creates the next folder, or the segment).
pub fn server_cannot_write(
    root: &Path,
    cluster: &Ident,
    segment: &WalSegment,
    who: &Who,
) -> Option<String> {
    let describe = |p: &Path, m: &std::fs::Metadata, need: &str| {
        format!(
            "{} ({need} needed; owner uid {}, group gid {}, mode {:04o})",
            p.display(),
            m.uid(),
            m.gid(),
            m.mode() & 0o7777
        )
    };
    let name = segment.to_string();
    let mut chain: Vec<PathBuf> = vec![root.to_owned()];
    for c in [
        cluster.as_str(),
        "wal",
        &name[..8],
        name.get(8..16).unwrap_or_default(),
    ] {
        let next = chain[chain.len() - 1].join(c);
        chain.push(next);
    }
    let mut deepest: Option<(PathBuf, std::fs::Metadata)> = None;
    for p in &chain {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                if !who.may(&m, 0o1) {
                    return Some(describe(p, &m, "search (x)"));
                }
                deepest = Some((p.clone(), m));
            }
            _ => break,
        }
    }
    let reg = root.join(cluster.as_str()).join("cluster.json");
    if let Ok(m) = std::fs::metadata(&reg)
        && !who.may(&m, 0o4)
    {
        return Some(describe(&reg, &m, "read"));
    }
    match deepest {
        Some((p, m)) if p != root && !who.may(&m, 0o3) => Some(describe(&p, &m, "write (wx)")),
        _ => None,
    }
}

/// The stored object of `segment` of `cluster`, if the repository holds one under any of the
/// names `archive-get` looks for (never a `.partial` file: not a complete segment): its name.
/// Only a look; [`crate::archive::fetch`] proves the content.
pub fn stored_segment(
    backend: &dyn Backend,
    cluster: &Ident,
    segment: &WalSegment,
) -> Result<Option<String>, StorageError> {
    let file = ArchiveFile::Segment(*segment);
    for (_, c) in file.stored_candidates() {
        let name = file.object_name(cluster, c)?;
        match backend.size(&name) {
            Ok(_) => return Ok(Some(name.to_string())),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn meta_with(mode: u32) -> (tempfile::TempDir, std::fs::Metadata) {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        (d, m)
    }

    #[test]
    fn permission_bits_are_read_for_owner_group_and_others() {
        let (_d, m) = meta_with(0o750);
        let owner = Who {
            uid: m.uid().max(1),
            name: "o".into(),
            groups: vec![],
        };
        let stranger = Who {
            uid: m.uid() + 12345,
            name: "s".into(),
            groups: vec![],
        };
        let member = Who {
            uid: m.uid() + 12345,
            name: "g".into(),
            groups: vec![m.gid()],
        };
        if m.uid() != 0 {
            assert!(owner.may(&m, 0o3));
        }
        assert!(member.may(&m, 0o1));
        assert!(!member.may(&m, 0o2));
        assert!(!stranger.may(&m, 0o1));
        let root = Who {
            uid: 0,
            name: "root".into(),
            groups: vec![],
        };
        assert!(root.may(&m, 0o7));
    }

    #[test]
    fn the_first_unusable_folder_is_named() {
        let d = tempfile::tempdir().unwrap();
        let cluster = Ident::new("main").unwrap();
        let seg: WalSegment = "000000010000000000000003".parse().unwrap();
        std::fs::create_dir_all(d.path().join("main/wal")).unwrap();
        std::fs::write(d.path().join("main/cluster.json"), "{}").unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        let stranger = Who {
            uid: m.uid() + 12345,
            name: "s".into(),
            groups: vec![],
        };
        for p in ["", "main", "main/wal"] {
            std::fs::set_permissions(d.path().join(p), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        std::fs::set_permissions(
            d.path().join("main/cluster.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        // Everything searchable and readable, but main/wal not writable by others.
        let why = server_cannot_write(d.path(), &cluster, &seg, &stranger).unwrap();
        assert!(why.contains("main/wal") && why.contains("write"), "{why}");
        std::fs::set_permissions(
            d.path().join("main/wal"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        assert_eq!(
            server_cannot_write(d.path(), &cluster, &seg, &stranger),
            None
        );
        std::fs::set_permissions(
            d.path().join("main/cluster.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let why = server_cannot_write(d.path(), &cluster, &seg, &stranger).unwrap();
        assert!(why.contains("cluster.json"), "{why}");
        std::fs::set_permissions(
            d.path().join("main"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let why = server_cannot_write(d.path(), &cluster, &seg, &stranger).unwrap();
        assert!(why.contains("search"), "{why}");
    }
}
