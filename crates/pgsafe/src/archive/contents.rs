//! What a cluster's WAL archive holds: per timeline the runs of contiguous segments, `.partial`
//! files, history files (parsed), backup history files, recorded gaps and the newest object
//! time; and the questions asked of it: does it cover the WAL from a backup's start to a
//! target ([`ArchiveContents::covers`]), how far recovery from a point can replay
//! ([`ArchiveContents::reach`]), where WAL is missing ([`ArchiveContents::gaps`]), and from
//! when to when a restore can reach any point ([`ArchiveContents::window`]).
//!
//! [`ArchiveContents::load`] does the IO (one listing of `<cluster>/wal/`, a read of each history
//! file and of each gap event); [`ArchiveContents::analyse`] and everything after it are pure.
//! Objects are used only when their name is one PostgreSQL gives an archived file
//! (`IsXLogFileName`, `IsPartialXLogFileName`, `IsTLHistoryFileName`, `IsBackupHistoryFileName`
//! in src/include/access/xlog_internal.h) and they lie where `storage/key.rs` puts that name;
//! anything else is reported, never used: a segment that `archive-get` would not find under its
//! name is not in the archive for recovery either.
//!
//! Following timelines (src/backend/access/transam/xlogrecovery.c `XLogFileReadAnyTLI`,
//! timeline.c `tliOfPointInHistory`): recovery reads segment number `s` from the newest
//! timeline of the target's history that began at or before segment `s`, so after a switch at
//! LSN L the parent's segments are read up to the one before the segment containing L, and the
//! child's from the segment containing L on (it starts with a copy of the parent's WAL up to
//! L). When that file is missing, recovery tries the older timelines; an older timeline's copy
//! serves only for bytes before that timeline ended, which matters for the last segment a
//! target needs.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::ArchiveFile;
use crate::repo::RepoError;
use crate::repo::doc::{Event, EventKind, Registration};
use crate::storage::key::repo_prefix;
use crate::storage::{Backend, EntryKind, ErrorKind, FileType, Ident, ObjectInfo, ObjectName};
use crate::types::{TimelineId, WalSegSize, WalSegment};
use crate::wal::TimelineHistory;

mod coverage;
#[cfg(test)]
mod tests;

pub use coverage::{
    Gap, GapSource, Missing, Reach, RecoveryEnd, Window, WindowBackup, WindowPoint,
};

/// Largest history file read (a history file holds one line per ancestor timeline).
pub const HISTORY_LIMIT: u64 = 1 << 20;
/// Largest gap event read.
const EVENT_LIMIT: u64 = 1 << 20;
/// One object found under `<cluster>/wal/`, as the pure analysis takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The whole object name.
    pub name: String,
    pub size: u64,
    /// Unix seconds of the object's last write, where the storage says.
    pub modified: Option<i64>,
}

impl From<&ObjectInfo> for Listed {
    fn from(o: &ObjectInfo) -> Listed {
        Listed {
            name: o.name.to_string(),
            size: o.size,
            modified: o.modified.map(unix_secs),
        }
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A history file as found: parsed, or why it cannot be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HistoryState {
    Parsed { history: TimelineHistory },
    Broken { why: String },
}

/// A stretch of consecutive segments of one timeline, all present: segment numbers
/// `first..=last` (segment number = LSN / segment size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Run {
    pub first: u64,
    pub last: u64,
}

/// What the archive holds of one timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TimelineWal {
    /// Present segments (by segment number) with their object time (Unix seconds).
    #[serde(skip)]
    pub segments: BTreeMap<u64, Option<i64>>,
    /// Runs of consecutive present segments, ascending.
    pub runs: Vec<Run>,
    pub partials: Vec<WalSegment>,
    /// The timeline's history file (`None`: not in the archive).
    pub history: Option<HistoryState>,
    /// Backup history files: segment and offset of each backup's start.
    pub backup_histories: Vec<(WalSegment, u32)>,
    /// The segments, `.partial` and backup history files stored (what WAL retention may
    /// delete), by segment number.
    #[serde(skip)]
    pub stored: Vec<StoredObject>,
    /// Objects and bytes under the timeline's folder that the analysis used.
    pub objects: u64,
    pub bytes: u64,
}

impl TimelineWal {
    /// The first present segment at or after `from` up to `to` that is missing, `None` when
    /// `from..=to` are all present.
    fn first_missing(&self, from: u64, to: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.last < from);
        match self.runs.get(i) {
            Some(r) if r.first <= from && r.last >= to => None,
            Some(r) if r.first <= from => r.last.checked_add(1),
            _ => Some(from),
        }
    }

    fn has(&self, segno: u64) -> bool {
        self.segments.contains_key(&segno)
    }
}

/// One stored segment, `.partial` or backup history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub name: String,
    pub size: u64,
    pub segno: u64,
    /// A complete segment (not a `.partial` or backup history file).
    pub segment: bool,
}

/// A WAL gap recorded by the archiver (a [`EventKind::WalGap`] event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedGap {
    pub timeline: TimelineId,
    pub first: WalSegment,
    pub last: WalSegment,
    pub reason: String,
    /// Who dropped the WAL (the event's `dropped_by`).
    pub host: String,
    /// When, RFC 3339 (the event's `dropped_at`).
    pub time: String,
}

/// What is odd under `<cluster>/wal/` (never used, reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A history file that cannot be read or parsed: timelines after it cannot be followed.
    BrokenHistory,
    /// A segment of the wrong size (an uncompressed one not the segment size, or an empty one).
    WrongSize,
    /// A name PostgreSQL does not give an archived file, or one not valid for the cluster's
    /// segment size.
    UnknownName,
    /// A WAL file name in another folder than the archive keeps it in.
    Misplaced,
    /// A gap event that cannot be read.
    UnreadableEvent,
    /// A symbolic link or special file (local repository): never followed or read, so
    /// `archive-get` refuses it (recovery stops) and nothing behind it counts as archived.
    NotAnObject,
}

/// One odd object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub object: String,
    pub message: String,
}

/// Everything in a cluster's WAL archive, analysed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveContents {
    pub cluster: Ident,
    pub seg_size: WalSegSize,
    pub timelines: BTreeMap<TimelineId, TimelineWal>,
    pub recorded_gaps: Vec<RecordedGap>,
    pub problems: Vec<Problem>,
    /// The newest object time under `wal/` (Unix seconds), and of which object.
    pub newest: Option<(i64, String)>,
}

impl ArchiveContents {
    /// Lists `<cluster>/wal/` once, reads each history file and each gap event, and analyses
    /// them ([`ArchiveContents::analyse`]).
    pub fn load(
        b: &dyn Backend,
        cluster: &Ident,
        reg: &Registration,
    ) -> Result<ArchiveContents, RepoError> {
        let prefix = |ty| {
            repo_prefix(cluster, ty).ok_or_else(|| RepoError::NotRegistered {
                cluster: cluster.clone(),
            })
        };
        let listed: Vec<Listed> = b
            .list(Some(&prefix(FileType::Wal)?))?
            .iter()
            .map(Listed::from)
            .collect();
        let mut histories = BTreeMap::new();
        for o in &listed {
            let file = o.name.rsplit('/').next().unwrap_or_default();
            if let Ok((ArchiveFile::History(timeline), _)) = ArchiveFile::parse_stored(file) {
                let name = crate::storage::ObjectName::new(o.name.as_str())?;
                let got = match b.get(&name, HISTORY_LIMIT) {
                    Ok(bytes) => Ok(bytes),
                    // Deleted since the listing.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => Err(e.to_string()),
                };
                histories.insert((timeline, o.name.clone()), got);
            }
        }
        let mut events = Vec::new();
        for o in b.list(Some(&prefix(FileType::Event)?))? {
            // Event names carry their kind (repo::record_event): only gap events are read.
            let n = o.name.to_string();
            if !n.contains(&format!("-{}-", wal_gap_kind())) {
                continue;
            }
            let got = match b.get(&o.name, EVENT_LIMIT) {
                Ok(bytes) => Event::parse(&bytes).map_err(|e| e.to_string()),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => Err(e.to_string()),
            };
            events.push((n, got));
        }
        let mut out = ArchiveContents::analyse(
            cluster.clone(),
            reg.wal_segment_size,
            &listed,
            &histories,
            events,
        );
        // The listing above holds objects only: a link or special file under wal/ (a planted
        // FIFO, a log folder replaced by a link) is invisible to it, and behind a linked folder
        // the archive would read as empty without a word. Report them.
        for name in not_objects(b, &prefix(FileType::Wal)?)? {
            out.problems.push(Problem {
                kind: ProblemKind::NotAnObject,
                message: format!(
                    "{name} is a symbolic link or special file, not a stored object: never \
                     followed or read (archive-get refuses it and recovery stops there); \
                     remove it and find out who put it there"
                ),
                object: name,
            });
        }
        out.problems
            .sort_by(|a, b| (a.kind, &a.object).cmp(&(b.kind, &b.object)));
        Ok(out)
    }

    /// The pure analysis: `listed` is the listing of `<cluster>/wal/`, `histories` the bytes
    /// (or why they could not be read) of each history file listed, by timeline and object
    /// name, `events` the gap events (object name, parsed event or why not). Never fails:
    /// what cannot be used is reported in [`ArchiveContents::problems`].
    pub fn analyse(
        cluster: Ident,
        seg_size: WalSegSize,
        listed: &[Listed],
        histories: &BTreeMap<(TimelineId, String), Result<Vec<u8>, String>>,
        events: Vec<(String, Result<Event, String>)>,
    ) -> ArchiveContents {
        let mut out = ArchiveContents {
            cluster,
            seg_size,
            timelines: BTreeMap::new(),
            recorded_gaps: Vec::new(),
            problems: Vec::new(),
            newest: None,
        };
        let mut problem = |kind, object: &str, message: String| {
            out.problems.push(Problem {
                kind,
                object: object.to_owned(),
                message,
            })
        };
        let mut timelines: BTreeMap<TimelineId, TimelineWal> = BTreeMap::new();
        let mut newest: Option<(i64, String)> = None;
        for o in listed {
            if let Some(t) = o.modified
                && newest.as_ref().is_none_or(|(n, _)| t > *n)
            {
                newest = Some((t, o.name.clone()));
            }
            let file = o.name.rsplit('/').next().unwrap_or_default();
            let Ok((f, compression)) = ArchiveFile::parse_stored(file) else {
                problem(
                    ProblemKind::UnknownName,
                    &o.name,
                    "not the name of a WAL segment, .partial, history or backup history file: \
                     never used"
                        .into(),
                );
                continue;
            };
            let compressed = !compression.is_none();
            let expected = f.object_name(&out.cluster, compression).ok();
            if expected.as_ref().map(|n| n.to_string()).as_deref() != Some(o.name.as_str()) {
                let at = expected.map_or_else(|| "nowhere".into(), |n| n.to_string());
                problem(
                    ProblemKind::Misplaced,
                    &o.name,
                    format!("a WAL file outside its folder (it belongs at {at}): never used"),
                );
                continue;
            }
            let tl = timelines.entry(f.timeline()).or_default();
            match f {
                ArchiveFile::Segment(segment) => {
                    let Ok(segno) = segment.segno(seg_size) else {
                        problem(
                            ProblemKind::UnknownName,
                            &o.name,
                            format!("not a segment name for {seg_size} segments: never used"),
                        );
                        continue;
                    };
                    if o.size == 0 || (!compressed && o.size != seg_size.bytes()) {
                        problem(
                            ProblemKind::WrongSize,
                            &o.name,
                            format!(
                                "{} bytes, not a {seg_size} segment: damaged or truncated, never \
                                 used",
                                o.size
                            ),
                        );
                        continue;
                    }
                    // The same segment under two compressions: one is enough.
                    let t = tl.segments.entry(segno).or_insert(o.modified);
                    *t = (*t).max(o.modified);
                    tl.stored.push(StoredObject {
                        name: o.name.clone(),
                        size: o.size,
                        segno,
                        segment: true,
                    });
                }
                ArchiveFile::Partial(segment) => {
                    if let Ok(segno) = segment.segno(seg_size) {
                        tl.stored.push(StoredObject {
                            name: o.name.clone(),
                            size: o.size,
                            segno,
                            segment: false,
                        });
                    }
                    tl.partials.push(segment)
                }
                ArchiveFile::History(timeline) => {
                    let state = match histories.get(&(timeline, o.name.clone())) {
                        None => continue,
                        Some(Err(why)) => HistoryState::Broken {
                            why: format!("cannot be read: {why}"),
                        },
                        Some(Ok(bytes)) => match TimelineHistory::parse(timeline, bytes) {
                            Ok(history) => HistoryState::Parsed { history },
                            Err(e) => HistoryState::Broken { why: e.to_string() },
                        },
                    };
                    if let HistoryState::Broken { why } = &state {
                        problem(
                            ProblemKind::BrokenHistory,
                            &o.name,
                            format!(
                                "{why}: recovery cannot follow timeline {timeline} from the \
                                 archive"
                            ),
                        );
                    }
                    tl.history = Some(state);
                }
                ArchiveFile::BackupHistory { segment, offset } => {
                    if let Ok(segno) = segment.segno(seg_size) {
                        tl.stored.push(StoredObject {
                            name: o.name.clone(),
                            size: o.size,
                            segno,
                            segment: false,
                        });
                    }
                    tl.backup_histories.push((segment, offset))
                }
            }
            tl.objects += 1;
            tl.bytes = tl.bytes.saturating_add(o.size);
        }
        for tl in timelines.values_mut() {
            tl.runs = runs(tl.segments.keys().copied());
            tl.partials.sort();
            tl.partials.dedup();
            tl.backup_histories.sort();
            tl.backup_histories.dedup();
        }
        for (name, ev) in events {
            match ev {
                Ok(Event {
                    what:
                        EventKind::WalGap {
                            timeline,
                            first,
                            last,
                            reason,
                            dropped_at,
                            dropped_by,
                        },
                    ..
                }) => out.recorded_gaps.push(RecordedGap {
                    timeline,
                    first,
                    last,
                    reason,
                    host: dropped_by,
                    time: dropped_at,
                }),
                Ok(_) => {}
                Err(why) => problem(
                    ProblemKind::UnreadableEvent,
                    &name,
                    format!("a WAL gap event that cannot be read ({why}): a gap may be unknown"),
                ),
            }
        }
        out.recorded_gaps
            .sort_by(|a, b| (a.timeline, a.first, &a.time).cmp(&(b.timeline, b.first, &b.time)));
        out.problems
            .sort_by(|a, b| (a.kind, &a.object).cmp(&(b.kind, &b.object)));
        out.timelines = timelines;
        out.newest = newest;
        out
    }

    /// The parsed history of `tli` from the archive (timeline 1 has none and needs none).
    pub fn history_of(&self, tli: TimelineId) -> Option<TimelineHistory> {
        match self.timelines.get(&tli).and_then(|t| t.history.as_ref()) {
            Some(HistoryState::Parsed { history }) => Some(history.clone()),
            Some(HistoryState::Broken { .. }) => None,
            None if tli == TimelineId::FIRST => TimelineHistory::without_parents(tli).ok(),
            None => None,
        }
    }

    /// The newest timeline the archive holds anything of.
    pub fn newest_timeline(&self) -> Option<TimelineId> {
        self.timelines.keys().next_back().copied()
    }
}

/// The kind name of gap events, as in their object names (`EventKind::name`).
fn wal_gap_kind() -> &'static str {
    "wal-gap"
}

/// Runs of consecutive numbers from an ascending sequence.
pub(crate) fn runs(segnos: impl Iterator<Item = u64>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for s in segnos {
        match out.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(s) => r.last = s,
            _ => out.push(Run { first: s, last: s }),
        }
    }
    out
}

/// The names of entries under `wal` (down to the files of `<timeline>/<log>/`) that are neither
/// objects nor folders.
fn not_objects(b: &dyn Backend, wal: &ObjectName) -> Result<Vec<String>, RepoError> {
    // wal/<timeline>/<log>/<file>: three levels; deeper folders hold nothing the archive uses
    // (their objects are reported as misplaced by the analysis).
    let mut out = Vec::new();
    let mut level = vec![wal.clone()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for dir in &level {
            for e in b.list_entries(dir)? {
                let shown = format!("{dir}/{}", String::from_utf8_lossy(&e.name));
                match e.kind {
                    EntryKind::NotAnObject => out.push(shown),
                    EntryKind::Prefix => {
                        // A folder whose name is not a valid object name holds nothing
                        // listable either; the analysis reports what it finds.
                        if let Ok(n) = ObjectName::new(&shown) {
                            next.push(n);
                        }
                    }
                    EntryKind::Object { .. } => {}
                }
            }
        }
        level = next;
    }
    Ok(out)
}
