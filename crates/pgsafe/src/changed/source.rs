//! Where an incremental backup's changed blocks come from. This part: pgsafe's own summaries
//! of archived segments ([`crate::archive::summarize`]), joined over a stretch of WAL.

use crate::archive::summarize::{SegmentSummary, join_straddle, load};
use crate::changed::ChangedBlocks;
use crate::storage::{Backend, Ident};
use crate::types::{Lsn, TimelineId, WalSegSize, WalSegment};

/// The blocks changed by the records starting in `[from, to)` on timeline `tli`, from the
/// archive's summaries of every segment of that stretch; `Err` says why they cannot tell
/// (a segment without a summary, a doubt in one): then the caller must scan pages.
pub fn from_archive_summaries(
    backend: &dyn Backend,
    cluster: &Ident,
    tli: TimelineId,
    (from, to): (Lsn, Lsn),
    seg_size: WalSegSize,
) -> Result<ChangedBlocks, String> {
    let size = seg_size.bytes();
    if to <= from {
        return Ok(ChangedBlocks::new());
    }
    let (first, last) = (from.0 / size, (to.0 - 1) / size);
    let summary = |segno: u64| -> Result<SegmentSummary, String> {
        let seg = WalSegment::containing(Lsn(segno.saturating_mul(size)), tli, seg_size);
        load(backend, cluster, seg).ok_or_else(|| {
            format!(
                "the archive has no summary of WAL segment {seg} (not archived yet, archived \
                 by something other than pgsafe archive-push, or by a version without summaries)"
            )
        })
    };
    let mut set = ChangedBlocks::new();
    let mut prev: Option<SegmentSummary> = None;
    for segno in first..=last {
        let s = summary(segno)?;
        if let Some(p) = &prev {
            join_straddle(p, &s, &mut set);
        }
        set.append(&s.changed());
        prev = Some(s);
    }
    // A record begun in the last segment before `to` and continued after it.
    if let Some(p) = prev.filter(|p| p.straddle.as_ref().is_some_and(|c| c.lsn < to)) {
        let next = summary(last + 1)?;
        join_straddle(&p, &next, &mut set);
    }
    match set.doubt() {
        Some(d) => Err(d.to_string()),
        None => Ok(set),
    }
}
