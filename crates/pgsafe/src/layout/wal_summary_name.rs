//! Where pgsafe's own WAL summaries are stored: one object per archived segment, written once
//! by archive-push next to the archive (`<cluster>/wal-summaries/<timeline>/<log>/<segment>.json`,
//! the same log-folder spread as the segments, see [`crate::storage::key`]). They live apart
//! from `wal/` so the archive's listings (info, check, expire) see only WAL files.

use crate::storage::{Ident, ObjectName, StorageError};
use crate::types::WalSegment;

/// The folder of a cluster's summaries.
pub const WAL_SUMMARY_DIR: &str = "wal-summaries";
/// Suffix of a summary object.
pub const WAL_SUMMARY_SUFFIX: &str = ".json";

/// The object holding the summary of `segment` in the archive of `cluster`.
pub fn wal_summary_object(
    cluster: &Ident,
    segment: WalSegment,
) -> Result<ObjectName, StorageError> {
    let name = segment.to_string();
    let log = &name[8..16];
    ObjectName::new(format!(
        "{cluster}/{WAL_SUMMARY_DIR}/{}/{log}/{name}{WAL_SUMMARY_SUFFIX}",
        segment.tli.hex()
    ))
}
