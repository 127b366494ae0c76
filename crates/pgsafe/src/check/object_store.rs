//! What `check` asks of a repository in object storage, where there is no folder to inspect
//! (mount flags, free space, who may write): can this host create an object there, does the
//! store's clock agree with ours, and may it delete. One probe object, created and removed.
//!
//! The clock matters because S3 refuses a signed request whose time is more than 15 minutes
//! away from its own (`RequestTimeTooSkewed`), so a drifting clock stops archiving outright; the
//! store's time is read from the probe object's modification time.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::repo::Repository;
use crate::storage::{Backend, ObjectName, PutOptions};

/// Where the probe object goes (a name no other part of a repository uses).
pub const PROBE_PREFIX: &str = "pgsafe-check";

/// A skew above this is a problem: well before the 15 minutes after which S3 refuses requests.
pub const SKEW_LIMIT: Duration = Duration::from_secs(5 * 60);

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObjectStoreState {
    /// A new object could be created.
    pub writable: bool,
    /// Why not, when not.
    pub write_error: Option<String>,
    /// How far the store's clock is from this host's, in seconds (0 within the store's
    /// time resolution); `None` when it could not be read.
    pub clock_skew_secs: Option<u64>,
    /// The probe object could be deleted (expire needs that; a create-only key is a deliberate
    /// choice for archive hosts).
    pub can_delete: bool,
    /// Why not, when not.
    pub delete_error: Option<String>,
}

/// Creates, reads back and deletes a probe object in `repo`.
pub fn probe(repo: &Repository) -> ObjectStoreState {
    let mut st = ObjectStoreState::default();
    let b = repo.backend();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = match ObjectName::new(format!(
        "{PROBE_PREFIX}/probe-{}-{nanos}",
        std::process::id()
    )) {
        Ok(n) => n,
        Err(e) => {
            st.write_error = Some(e.to_string());
            return st;
        }
    };
    let before = SystemTime::now();
    if let Err(e) = b.put(&name, b"pgsafe check probe\n", PutOptions::default()) {
        st.write_error = Some(e.to_string());
        return st;
    }
    let after = SystemTime::now();
    st.writable = true;
    let modified = name
        .parent()
        .and_then(|p| b.list(Some(&p)).ok())
        .and_then(|l| l.into_iter().find(|o| o.name == name))
        .and_then(|o| o.modified);
    st.clock_skew_secs = modified.map(|m| skew(m, before, after).as_secs());
    match b.delete(&name) {
        Ok(_) => st.can_delete = true,
        Err(e) => st.delete_error = Some(e.to_string()),
    }
    st
}

/// How far `stored` (the store's time of a write made between `before` and `after` here) is
/// outside that interval, less a second for stores that keep whole seconds.
fn skew(stored: SystemTime, before: SystemTime, after: SystemTime) -> Duration {
    let slop = Duration::from_secs(1);
    if let Ok(d) = before.duration_since(stored) {
        d.saturating_sub(slop)
    } else if let Ok(d) = stored.duration_since(after) {
        d.saturating_sub(slop)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_the_distance_outside_the_write() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        assert_eq!(skew(t, t, t + s(2)), Duration::ZERO);
        assert_eq!(skew(t + s(1), t, t + s(2)), Duration::ZERO);
        // Whole seconds: a stored time up to a second early is no skew.
        assert_eq!(skew(t - s(1), t, t + s(2)), Duration::ZERO);
        assert_eq!(skew(t - s(600), t, t + s(2)), s(599));
        assert_eq!(skew(t + s(902), t, t + s(2)), s(899));
    }
}
