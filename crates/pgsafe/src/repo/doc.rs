//! The repository's own documents, as pure formats (no IO): the repository marker, a cluster's
//! registration, catalog events and leases. Each is written once as one JSON object and never
//! changed; each carries a format number, and one of a newer format than this pgsafe reads is
//! refused (it may promise something this version cannot check). Fields added later get
//! `#[serde(default)]` so that older documents keep reading.
//!
//! Times are RFC 3339 strings in UTC with microseconds (as pgsafe's JSON output writes them,
//! README "JSON output"); the catalog works on microseconds since the epoch ([`parse_time`]).

use serde::{Deserialize, Serialize};

use crate::storage::Ident;
use crate::types::{PgVersion, SystemId, TimelineId, WalSegSize, WalSegment};

/// Format of every repository document this pgsafe writes (and the newest it reads).
pub const REPO_FORMAT: u32 = 1;

/// Why a repository document cannot be read (the caller names the object).
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("not a valid document: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "format {found} is newer than this pgsafe reads (up to {supported}): use the pgsafe \
         version that wrote it, or a newer one"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("{0}")]
    Invalid(String),
}

fn check_format(found: u32) -> Result<(), DocError> {
    if found > REPO_FORMAT {
        return Err(DocError::NewerFormat {
            found,
            supported: REPO_FORMAT,
        });
    }
    Ok(())
}

fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    // Plain data with string keys: serializing cannot fail.
    let mut v = serde_json::to_vec_pretty(doc).unwrap_or_default();
    v.push(b'\n');
    v
}

/// `pgsafe-repo.json`: makes a folder a repository. A folder without it is not one, so that a
/// mistyped path is never filled with (or cleaned of) clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoMarker {
    pub format: u32,
    pub created_at: String,
    pub pgsafe_version: String,
    /// Set for an encrypted repository (docs/encryption.md), whose format is
    /// [`ENCRYPTED_REPO_FORMAT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::storage::crypt::keys::EncryptionInfo>,
}

/// The marker's format of an encrypted repository: a pgsafe that knows only format 1 refuses
/// it (newer format) instead of storing plain objects in it.
pub const ENCRYPTED_REPO_FORMAT: u32 = 2;

impl RepoMarker {
    pub fn parse(bytes: &[u8]) -> Result<RepoMarker, DocError> {
        let m: RepoMarker = serde_json::from_slice(bytes)?;
        if !(m.format == ENCRYPTED_REPO_FORMAT && m.encryption.is_some()) {
            check_format(m.format)?;
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// `<cluster>/cluster.json`: which PostgreSQL cluster a name stands for. Written once by the
/// first `init`; every backup stored under the name must come from this system identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub format: u32,
    pub cluster: Ident,
    pub system_identifier: SystemId,
    /// The server's version when registered (its major is what a backup must have).
    pub server_version: PgVersion,
    pub wal_segment_size: WalSegSize,
    /// PGDATA as the operator gave it (for messages; backups check the server itself).
    pub pgdata: String,
    pub registered_at: String,
    pub pgsafe_version: String,
}

impl Registration {
    pub fn parse(bytes: &[u8]) -> Result<Registration, DocError> {
        let r: Registration = serde_json::from_slice(bytes)?;
        check_format(r.format)?;
        Ok(r)
    }

    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Whether a server with these properties is the registered cluster (the major, not the
    /// minor version: minor updates keep the cluster).
    pub fn same_cluster(
        &self,
        system_identifier: SystemId,
        version: PgVersion,
        seg: WalSegSize,
    ) -> bool {
        self.system_identifier == system_identifier
            && self.server_version.major() == version.major()
            && self.wal_segment_size == seg
    }
}

/// The result of a verification, as an event records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyResult {
    /// Every check passed.
    Passed,
    /// Problems were found: the backup is damaged.
    Failed,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventKind {
    /// Keep this backup whatever the retention says.
    Pin { backup: Ident },
    /// Undo a pin.
    Unpin { backup: Ident },
    /// `pgsafe verify` checked the backup.
    Verified {
        backup: Ident,
        result: VerifyResult,
        /// Problems found (0 when passed).
        #[serde(default)]
        problems: u64,
        /// The backup was proven by a restore test (restored, started, amcheck), not only
        /// checked.
        #[serde(default)]
        restore_test: bool,
    },
    /// `expire` began deleting these backups (so that a crash part-way is explained).
    ExpireStarted {
        #[serde(default)]
        backups: Vec<Ident>,
    },
    /// WAL that was never archived: `archive-push` acknowledged segments `first..=last` of
    /// `timeline` to PostgreSQL without storing them (the archive queue limit), so PostgreSQL
    /// recycled them and no recovery can replay across them: a backup whose WAL or a recovery
    /// whose replay crosses the gap cannot reach past it (a new full backup is needed).
    /// `dropped_at`/`dropped_by` say when and on which host the first segment was dropped; the
    /// event's own time and host say when it reached the repository (later, when the repository
    /// was unreachable at the time and the record waited in the local spool).
    WalGap {
        timeline: TimelineId,
        first: WalSegment,
        last: WalSegment,
        /// Why, for people (the backlog and the limit, the repository's error if any).
        reason: String,
        dropped_at: String,
        dropped_by: String,
    },
    /// `archive-push` of `file` failed (refused, a conflict, the repository failing…): the
    /// trace `info` shows as the last failed push. At most one per file and kind of error is
    /// written (the local spool remembers what was recorded), however often PostgreSQL
    /// retries; `failed_at`/`failed_by` say when and where the first of those failures
    /// happened, `failures` how many there had been when the event was written (later
    /// retries are counted only in the spool).
    PushFailed {
        /// The file as PostgreSQL named it (`%f`).
        file: String,
        timeline: TimelineId,
        /// The kind of error, as pgsafe's JSON names it (`refused`, `conflict`, `io`…).
        error: String,
        /// The error, for people.
        message: String,
        failed_at: String,
        failed_by: String,
        #[serde(default)]
        failures: u64,
    },
    /// A kind a newer pgsafe writes: kept out of the catalog, never an error.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// The kind's name, as in the event's object name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Pin { .. } => "pin",
            EventKind::Unpin { .. } => "unpin",
            EventKind::Verified { .. } => "verified",
            EventKind::ExpireStarted { .. } => "expire-started",
            EventKind::WalGap { .. } => "wal-gap",
            EventKind::PushFailed { .. } => "push-failed",
            EventKind::Unknown => "unknown",
        }
    }
}

/// `<cluster>/events/<time>-<kind>-<random>.json`: something that happened to the catalog.
/// Events are never changed or deleted by the command that wrote them; the catalog folds them
/// in time order (the latest pin or unpin of a backup wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub format: u32,
    pub time: String,
    pub host: String,
    pub pgsafe_version: String,
    #[serde(flatten)]
    pub what: EventKind,
}

impl Event {
    pub fn parse(bytes: &[u8]) -> Result<Event, DocError> {
        let e: Event = serde_json::from_slice(bytes)?;
        check_format(e.format)?;
        if parse_time(&e.time).is_none() {
            return Err(DocError::Invalid(format!("bad time {:?}", e.time)));
        }
        if let EventKind::WalGap {
            timeline,
            first,
            last,
            dropped_at,
            ..
        } = &e.what
        {
            if first.tli != *timeline || last.tli != *timeline || first > last {
                return Err(DocError::Invalid(format!(
                    "WAL gap {first}..{last} is not a range of timeline {timeline}"
                )));
            }
            if parse_time(dropped_at).is_none() {
                return Err(DocError::Invalid(format!("bad time {dropped_at:?}")));
            }
        }
        if let EventKind::PushFailed { failed_at, .. } = &e.what
            && parse_time(failed_at).is_none()
        {
            return Err(DocError::Invalid(format!("bad time {failed_at:?}")));
        }
        Ok(e)
    }

    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// A lease: "this holder is working on this, until `expires_at`". Leases are written once;
/// renewing one writes the next (`seq` + 1) before deleting the previous, so a live holder
/// always has a visible lease. A lease whose expiry has passed (beyond a clock-skew margin)
/// is dead whatever its holder thinks: a crashed holder needs no cleanup to release it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDoc {
    pub format: u32,
    /// What the lease is for (`backup`, `expire`…).
    pub kind: Ident,
    /// The backup being written (for `backup` leases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Ident>,
    pub host: String,
    pub pid: u32,
    /// Renewal number, from 0.
    pub seq: u64,
    pub acquired_at: String,
    pub expires_at: String,
}

impl LeaseDoc {
    pub fn parse(bytes: &[u8]) -> Result<LeaseDoc, DocError> {
        let l: LeaseDoc = serde_json::from_slice(bytes)?;
        check_format(l.format)?;
        if parse_time(&l.expires_at).is_none() || parse_time(&l.acquired_at).is_none() {
            return Err(DocError::Invalid("bad time".into()));
        }
        Ok(l)
    }

    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The expiry in microseconds since the epoch (parse checked it).
    pub fn expires_us(&self) -> i64 {
        parse_time(&self.expires_at).unwrap_or(i64::MAX)
    }
}

/// Microseconds since the epoch as RFC 3339 in UTC with microseconds.
pub fn format_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An RFC 3339 time as microseconds since the epoch (`None` when it is not one).
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Microseconds since the epoch, now.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// This host's name, for leases and events (`unknown` when it cannot be read).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gap_event(tli: u32, first: u64, last: u64) -> Event {
        let seg = |n| WalSegment::from_segno(TimelineId(tli), n, WalSegSize::DEFAULT);
        Event {
            format: REPO_FORMAT,
            time: format_time(1_700_000_000_000_000),
            host: "db1".into(),
            pgsafe_version: "0.1.0".into(),
            what: EventKind::WalGap {
                timeline: TimelineId(tli),
                first: seg(first),
                last: seg(last),
                reason: "queue limit".into(),
                dropped_at: format_time(1_600_000_000_000_000),
                dropped_by: "db1".into(),
            },
        }
    }

    #[test]
    fn a_wal_gap_reads_back_and_names_its_segments() {
        let e = gap_event(3, 0x1FE, 0x203);
        let json = String::from_utf8(e.to_json()).unwrap();
        assert!(json.contains("\"kind\": \"wal-gap\""), "{json}");
        assert!(
            json.contains("\"first\": \"0000000300000001000000FE\""),
            "{json}"
        );
        assert!(
            json.contains("\"last\": \"000000030000000200000003\""),
            "{json}"
        );
        assert_eq!(Event::parse(json.as_bytes()).unwrap(), e);
        assert_eq!(e.what.name(), "wal-gap");
    }

    #[test]
    fn a_wal_gap_that_is_not_a_range_of_its_timeline_is_invalid() {
        for bad in [gap_event(2, 9, 8), {
            let mut e = gap_event(2, 1, 2);
            if let EventKind::WalGap { timeline, .. } = &mut e.what {
                *timeline = TimelineId(1);
            }
            e
        }] {
            let err = Event::parse(&bad.to_json()).unwrap_err();
            assert!(matches!(err, DocError::Invalid(_)), "{err}");
        }
        let mut e = gap_event(1, 1, 2);
        if let EventKind::WalGap { dropped_at, .. } = &mut e.what {
            *dropped_at = "yesterday".into();
        }
        assert!(Event::parse(&e.to_json()).is_err());
    }

    proptest! {
        #[test]
        fn wal_gaps_round_trip(tli in 1u32..u32::MAX, first in 0u64..1 << 40, n in 0u64..1 << 20) {
            let e = gap_event(tli, first, first + n);
            prop_assert_eq!(Event::parse(&e.to_json()).unwrap(), e);
        }

        #[test]
        fn event_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Event::parse(&bytes);
        }
    }
}
