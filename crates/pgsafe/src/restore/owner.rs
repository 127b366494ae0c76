//! Who gets the restored files and with which modes.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use super::{Owner, OwnerError, RestoreError};
use crate::info::FileOwner;

/// Resolves who gets the files: as root, `--owner` or the backup's recorded owner; otherwise
/// the current user (and `--owner` may only name them).
///
/// The recorded owner comes from the backup folder, which is untrusted (docs/threat-model.md):
/// as root it is used only when the operator's own file system agrees — the target's nearest
/// existing parent belongs to that user. Otherwise whoever wrote the backup folder
/// would choose which account the restored server (and commands its configuration runs) runs
/// as.
pub(super) fn resolve_owner(
    requested: Option<&str>,
    recorded: Option<&FileOwner>,
    target: &Path,
) -> Result<Option<Owner>, RestoreError> {
    let me = nix::unistd::geteuid();
    let owner = match requested {
        Some(spec) => Some(parse_owner(spec)?),
        None if me.is_root() => match recorded {
            Some(r) => Some(recorded_owner(r)),
            None => {
                return Err(OwnerError::NotRecorded.into());
            }
        },
        None => None,
    };
    match owner {
        // (uid_t)-1 / (gid_t)-1 tell chown(2) to leave the owner unchanged: the files would
        // silently stay root's.
        Some(o) if o.uid.as_raw() == u32::MAX || o.gid.as_raw() == u32::MAX => {
            Err(OwnerError::NoChangeIds {
                uid: o.uid.as_raw(),
                gid: o.gid.as_raw(),
            }
            .into())
        }
        Some(o) if o.uid.is_root() => Err(OwnerError::Root.into()),
        Some(o) if !me.is_root() && o.uid != me => Err(OwnerError::OtherUser {
            uid: o.uid.as_raw(),
        }
        .into()),
        Some(o) if me.is_root() => {
            if requested.is_none()
                && let Some((dir, uid)) = nearest_existing_owner(target)
                && uid != o.uid.as_raw()
            {
                return Err(RestoreError::OwnerNotConfirmed {
                    recorded: recorded
                        .and_then(|r| r.user.clone())
                        .unwrap_or_else(|| "?".into()),
                    uid: o.uid.as_raw(),
                    dir,
                    found: uid,
                });
            }
            Ok(Some(o))
        }
        _ => Ok(None),
    }
}

/// The owner of the nearest existing parent of `path` (links followed: the operator named the
/// path). The target itself is left out: root often creates the empty target just before a
/// restore, where it sits among the server's other directories.
fn nearest_existing_owner(path: &Path) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors()
        .skip(1)
        .find_map(|p| fs::metadata(p).ok().map(|m| (p.to_path_buf(), m.uid())))
}

fn recorded_owner(r: &FileOwner) -> Owner {
    // By name where the name exists on this host (the restore may run on another machine).
    let user = r
        .user
        .as_deref()
        .and_then(|n| User::from_name(n).ok().flatten());
    let group = r
        .group
        .as_deref()
        .and_then(|n| Group::from_name(n).ok().flatten());
    Owner {
        uid: user.as_ref().map_or(Uid::from_raw(r.uid), |u| u.uid),
        gid: group.map_or(user.as_ref().map_or(Gid::from_raw(r.gid), |u| u.gid), |g| {
            g.gid
        }),
    }
}

/// `(uid_t)-1`: chown(2)'s "no change".
const NO_CHANGE_ID: &str = "4294967295";

/// `USER`, `USER:GROUP`, `UID`, `UID:GID`.
pub(super) fn parse_owner(spec: &str) -> Result<Owner, RestoreError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if [Some(u), g]
        .into_iter()
        .flatten()
        .any(|x| x == NO_CHANGE_ID)
    {
        return Err(OwnerError::NoChangeSpec {
            spec: spec.to_owned(),
        }
        .into());
    }
    let user = if u.bytes().all(|b| b.is_ascii_digit()) && !u.is_empty() {
        let uid = Uid::from_raw(u.parse().map_err(|source| OwnerError::BadUid {
            id: u.to_owned(),
            source,
        })?);
        (uid, User::from_uid(uid).ok().flatten().map(|x| x.gid))
    } else {
        let x = User::from_name(u)
            .ok()
            .flatten()
            .ok_or_else(|| OwnerError::NoUser(u.to_owned()))?;
        (x.uid, Some(x.gid))
    };
    let gid = match g {
        Some(g) if g.bytes().all(|b| b.is_ascii_digit()) && !g.is_empty() => {
            Gid::from_raw(g.parse().map_err(|source| OwnerError::BadGid {
                id: g.to_owned(),
                source,
            })?)
        }
        Some(g) => {
            Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| OwnerError::NoGroup(g.to_owned()))?
                .gid
        }
        None => user
            .1
            .ok_or_else(|| OwnerError::NoGroupForUid(u.to_owned()))?,
    };
    Ok(Owner { uid: user.0, gid })
}
