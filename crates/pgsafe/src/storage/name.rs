//! Object names: relative, `/`-separated, checked once so that no backend can be handed a name
//! that escapes its root or collides with its temporary files.
//!
//! Names are bytes, not UTF-8 strings, because a plain backup folder stores a stray file of
//! PGDATA under its own name (PostgreSQL's names are ASCII; a user's file may not be UTF-8, see
//! `plan::RelPath`). A backend that needs text (object storage) refuses the others with
//! [`ErrorKind::InvalidName`].

use std::fmt;

use super::error::{ErrorKind, Result, StorageError};
use crate::plan::RelPath;

/// The marker in the names of a backend's temporary files (an object being written). No object
/// name may contain it, so a temporary file left by a crash is never taken for an object.
pub const TEMP_MARKER: &str = ".pgsafe-tmp";

/// Longest name, in bytes: S3's limit for a key.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest component, in bytes: `NAME_MAX` of Linux file systems.
pub const MAX_COMPONENT_LEN: usize = 255;

/// A checked object name: not empty, relative, components separated by single `/`, no `.` or
/// `..` component, no NUL byte, no component containing [`TEMP_MARKER`], within the length
/// limits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(Vec<u8>);

impl ObjectName {
    /// Checks `name`; [`ErrorKind::InvalidName`] says what is wrong with it.
    pub fn new(name: impl AsRef<[u8]>) -> Result<ObjectName> {
        let bytes = name.as_ref();
        check(bytes).map_err(|why| {
            StorageError::new(
                ErrorKind::InvalidName,
                "use object name",
                String::from_utf8_lossy(bytes).escape_debug(),
            )
            .with_detail(why)
        })?;
        Ok(ObjectName(bytes.to_vec()))
    }

    /// The name of a backup's file (its path relative to the backup's root).
    pub fn from_rel_path(path: &RelPath) -> Result<ObjectName> {
        ObjectName::new(path.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The components, in order.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/')
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        self.components().next_back().unwrap_or_default()
    }

    /// Everything before the last component, if there is more than one.
    pub fn parent(&self) -> Option<ObjectName> {
        let cut = self.0.iter().rposition(|b| *b == b'/')?;
        Some(ObjectName(self.0[..cut].to_vec()))
    }

    /// This name followed by `/` and `rest` (one or more components), checked again.
    pub fn join(&self, rest: impl AsRef<[u8]>) -> Result<ObjectName> {
        let mut v = self.0.clone();
        v.push(b'/');
        v.extend_from_slice(rest.as_ref());
        ObjectName::new(v)
    }

    /// Whether this name lies under `prefix` (component-wise: `a/bc` is not under `a/b`).
    pub fn is_under(&self, prefix: &ObjectName) -> bool {
        self.0.len() > prefix.0.len()
            && self.0.starts_with(&prefix.0)
            && self.0[prefix.0.len()] == b'/'
    }

    /// Whether this name lies under `prefix`, or anywhere for `None`.
    pub fn is_under_opt(&self, prefix: Option<&ObjectName>) -> bool {
        prefix.is_none_or(|p| self.is_under(p))
    }
}

fn check(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.is_empty() {
        return Err("the name is empty".into());
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} bytes"));
    }
    if bytes.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    if bytes[0] == b'/' {
        return Err("an absolute path; object names are relative to the storage's root".into());
    }
    for c in bytes.split(|b| *b == b'/') {
        match c {
            b"" => return Err("an empty component (a doubled or trailing \"/\")".into()),
            b"." | b".." => {
                return Err(
                    "a \".\" or \"..\" component; names never leave the storage's root".into(),
                );
            }
            _ if c.len() > MAX_COMPONENT_LEN => {
                return Err(format!("a component longer than {MAX_COMPONENT_LEN} bytes"));
            }
            _ if c
                .windows(TEMP_MARKER.len())
                .any(|w| w == TEMP_MARKER.as_bytes()) =>
            {
                return Err(format!(
                    "contains \"{TEMP_MARKER}\", reserved for files being written"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not UTF-8: shown with replacement characters; control characters escaped so a
        // hostile name cannot rewrite a terminal line.
        write!(f, "{}", String::from_utf8_lossy(&self.0).escape_debug())
    }
}

impl fmt::Debug for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}
