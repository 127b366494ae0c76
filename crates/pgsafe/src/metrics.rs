//! The figures a monitoring system needs about a repository, per cluster, and their Prometheus
//! text exposition. Pure: [`ClusterMetrics::from_catalog`] reads a [`Catalog`] (derived from
//! what is stored, see `repo::catalog`), [`prometheus`] renders text; the caller lists the
//! clusters and loads the catalogs.
//!
//! "Good" means complete (its `pgsafe.json` names the registered cluster) and not failed at its
//! latest verification: the backups `latest` can choose. Ages and the recoverability window
//! count only those. The window runs from the oldest good backup's end (the first point a
//! restore reaches) to the newest one's; WAL archived beyond a backup does not widen it yet.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::archive::contents::ArchiveContents;
use crate::archive::failure;
use crate::archive::report::{WalSummary, add_failures, summarize};
use crate::repo::catalog::{BackupEntry, BackupState, Catalog};
use crate::repo::doc::{VerifyResult, parse_time};
use crate::repo::{LeaseTiming, RepoError, Repository};
use crate::storage::Ident;
use crate::types::WalSegSize;

/// Backups of one cluster in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub complete: u64,
    pub running: u64,
    pub incomplete: u64,
    pub corrupt: u64,
    pub foreign: u64,
}

impl StateCounts {
    fn by_name(&self) -> [(&'static str, u64); 5] {
        [
            ("complete", self.complete),
            ("running", self.running),
            ("incomplete", self.incomplete),
            ("corrupt", self.corrupt),
            ("foreign", self.foreign),
        ]
    }
}

/// One backup, as monitoring sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupFigures {
    pub id: String,
    /// When the backup ended (its consistency point): RFC 3339, and unix seconds.
    pub finished_at: String,
    pub finished_at_unix: i64,
    /// Seconds from its end to when the metrics were taken (0 if the clock went back).
    pub age_secs: i64,
    /// Data files: original and stored (compressed) bytes.
    pub bytes: u64,
    pub stored_bytes: u64,
    pub duration_secs: f64,
    pub stop_lsn: String,
    pub stop_lsn_bytes: u64,
    pub timeline: u32,
}

/// The latest verification recorded for any backup of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerificationFigures {
    pub backup: String,
    pub passed: bool,
    pub problems: u64,
    pub time: String,
    pub time_unix: i64,
}

/// From the first to the last point a restore of a good backup can reach.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub earliest: BackupFigures,
    pub latest: BackupFigures,
}

/// Everything `pgsafe metrics` reports about one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterMetrics {
    pub cluster: String,
    pub system_identifier: String,
    pub major: String,
    pub backups: StateCounts,
    /// Complete backups whose latest verification failed (counted in `complete` too).
    pub failed_verification: u64,
    pub pinned: u64,
    /// The newest good backup.
    pub last_good: Option<BackupFigures>,
    /// The newest complete backup whose latest verification passed.
    pub last_verified: Option<BackupFigures>,
    pub last_verification: Option<VerificationFigures>,
    pub window: Option<Window>,
    /// Live leases by kind (running backups, expires, …).
    pub running_operations: BTreeMap<String, u64>,
    /// Entries that are not backups, leases or events that cannot be read, and leases that
    /// expire implausibly far ahead.
    pub repository_problems: u64,
    /// The cluster's WAL archive in the repository (`None`: it could not be listed).
    pub archive: Option<ArchiveFigures>,
    /// The server's local archive spool, when its data directory (the registration's) is
    /// readable on this host (`None` otherwise).
    pub spool: Option<SpoolFigures>,
}

/// What `archive-push` left in the server's local spool (`pg_wal/pgsafe_archive`), as of the
/// last push (`updated_unix`): the backlog, whether archiving falls behind WAL generation,
/// WAL dropped by the queue limit that the repository does not know of yet, and failed pushes
/// recorded only there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpoolFigures {
    pub updated_unix: Option<i64>,
    pub ready_files: u64,
    pub ready_bytes: u64,
    pub oldest_ready_since_unix: Option<i64>,
    /// Since when the backlog has kept growing (`None`: archiving keeps up).
    pub behind_since_unix: Option<i64>,
    pub pending_gaps: u64,
    pub pending_failures: u64,
}

impl SpoolFigures {
    /// The spool beside the `pg_wal` folder `wal_dir`, for the repository at `repo`.
    pub fn read(
        wal_dir: &std::path::Path,
        repo: &std::path::Path,
        cluster: &Ident,
    ) -> SpoolFigures {
        let secs = |t: &Option<String>| {
            t.as_deref()
                .and_then(parse_time)
                .map(|us| us.div_euclid(1_000_000))
        };
        let st = crate::archive::spool::read_status(wal_dir).ok().flatten();
        let spool = crate::archive::spool::Spool::of_wal_dir(wal_dir);
        let records = crate::archive::failure::spool_records(
            &spool,
            &crate::archive::spool::repo_identity(repo),
            cluster,
        );
        SpoolFigures {
            updated_unix: st.as_ref().and_then(|s| secs(&Some(s.updated_at.clone()))),
            ready_files: st.as_ref().map_or(0, |s| s.ready_files),
            ready_bytes: st.as_ref().map_or(0, |s| s.ready_bytes),
            oldest_ready_since_unix: st.as_ref().and_then(|s| secs(&s.oldest_ready_since)),
            behind_since_unix: st.as_ref().and_then(|s| secs(&s.behind_since)),
            pending_gaps: spool.pending_gaps().map(|g| g.len() as u64).unwrap_or(0),
            pending_failures: records.iter().filter(|(_, r)| !r.in_repository).count() as u64,
        }
    }
}

/// The health of a cluster's WAL archive, from [`crate::archive::report::summarize`] (the
/// figures `info` shows, with the same names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveFigures {
    /// The archive holds WAL segments of the cluster: archiving into the repository is set up
    /// (whether it still works, `pgsafe check` proves).
    pub set_up: bool,
    /// Segments held, all timelines.
    pub segments: u64,
    /// The newest segment, when it was stored (RFC 3339 and unix seconds), and the LSN where it
    /// ends.
    pub last_archived: Option<String>,
    pub last_archived_at: Option<String>,
    pub last_archived_unix: Option<i64>,
    pub last_archived_end_lsn_bytes: Option<u64>,
    /// Seconds since the newest object was stored.
    pub archive_lag_secs: Option<u64>,
    /// Gaps by source: `hole`, `switch`, `recorded`.
    pub gaps: BTreeMap<String, u64>,
    /// Gaps after the newest usable backup's stop: recovery cannot replay past them (a new
    /// full backup is needed).
    pub gaps_after_newest_backup: u64,
    /// What `info` lists as the archive's problems (gaps a restore would cross, broken history
    /// files, damaged or misplaced objects).
    pub problems: u64,
    /// The last failed push (the file), when it failed last (unix seconds), and whether the
    /// file is still not in the archive.
    pub last_failed_push: Option<String>,
    pub last_failed_push_unix: Option<i64>,
    pub last_failed_push_unresolved: bool,
}

impl ArchiveFigures {
    pub fn from_summary(w: &WalSummary, seg_size: WalSegSize) -> ArchiveFigures {
        let mut gaps: BTreeMap<String, u64> = ["hole", "switch", "recorded"]
            .into_iter()
            .map(|k| (k.to_owned(), 0))
            .collect();
        for g in &w.gaps {
            *gaps.entry(g.source.to_owned()).or_insert(0) += 1;
        }
        let last = w.last_archived.as_ref();
        ArchiveFigures {
            segments: w.timelines.iter().map(|t| t.segments).sum(),
            set_up: w.timelines.iter().any(|t| t.segments > 0),
            last_archived: last.map(|l| l.segment.to_string()),
            last_archived_at: last.and_then(|l| l.time).map(rfc3339),
            last_archived_unix: last.and_then(|l| l.time),
            last_archived_end_lsn_bytes: last
                .and_then(|l| l.segment.start_lsn(seg_size).ok())
                .and_then(|lsn| lsn.0.checked_add(seg_size.bytes())),
            archive_lag_secs: w.archive_lag_secs,
            gaps,
            gaps_after_newest_backup: w.gaps.iter().filter(|g| g.after_newest_backup).count()
                as u64,
            problems: w.problems.len() as u64,
            last_failed_push: w.last_failed.as_ref().map(|f| f.file.clone()),
            last_failed_push_unix: w
                .last_failed
                .as_ref()
                .map(|f| f.last_us().div_euclid(1_000_000)),
            last_failed_push_unresolved: w.last_failed.as_ref().is_some_and(|f| !f.archived_since),
        }
    }
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn figures(b: &BackupEntry, now: i64) -> Option<BackupFigures> {
    let info = b.info.as_ref()?;
    Some(BackupFigures {
        id: b.id.as_str().to_owned(),
        finished_at: rfc3339(info.finished_at),
        finished_at_unix: info.finished_at,
        age_secs: now.saturating_sub(info.finished_at).max(0),
        bytes: info.bytes,
        stored_bytes: info.stored_bytes,
        duration_secs: info.duration_secs,
        stop_lsn: info.stop_lsn.to_string(),
        stop_lsn_bytes: info.stop_lsn.0,
        timeline: info.stop_tli.0,
    })
}

/// Live leases expiring further ahead than any holder renews them (`info` reports them too:
/// [`crate::repo::summary::IMPLAUSIBLE_LEASE_US`]); they keep what they hold running for ever.
fn implausible_leases(catalog: &Catalog, now: i64) -> usize {
    let now_us = now.saturating_mul(1_000_000);
    catalog
        .leases
        .iter()
        .filter(|l| {
            l.live
                && l.lease.expires_us()
                    > now_us.saturating_add(crate::repo::summary::IMPLAUSIBLE_LEASE_US)
        })
        .count()
}

fn passed(b: &BackupEntry) -> bool {
    b.verification
        .as_ref()
        .is_some_and(|v| v.result == VerifyResult::Passed)
}

impl ClusterMetrics {
    /// The figures of one cluster's catalog at `now` (unix seconds).
    pub fn from_catalog(catalog: &Catalog, now: i64) -> ClusterMetrics {
        let mut counts = StateCounts::default();
        for b in &catalog.backups {
            let n = match b.state {
                BackupState::Complete => &mut counts.complete,
                BackupState::Running => &mut counts.running,
                BackupState::Incomplete => &mut counts.incomplete,
                BackupState::Corrupt { .. } => &mut counts.corrupt,
                BackupState::Foreign { .. } => &mut counts.foreign,
            };
            *n += 1;
        }
        // Complete backups are in lineage order, oldest first (the catalog's contract).
        let good: Vec<&BackupEntry> = catalog
            .complete()
            .filter(|b| !b.failed_verification())
            .collect();
        let last_good = catalog.latest().and_then(|b| figures(b, now));
        let last_verified = catalog
            .complete()
            .filter(|b| passed(b))
            .last()
            .and_then(|b| figures(b, now));
        let window = match (good.first(), good.last()) {
            (Some(first), Some(last)) => figures(first, now)
                .zip(figures(last, now))
                .map(|(earliest, latest)| Window { earliest, latest }),
            _ => None,
        };
        let last_verification = catalog
            .backups
            .iter()
            .filter_map(|b| {
                let v = b.verification.as_ref()?;
                let t = parse_time(&v.time)?.div_euclid(1_000_000);
                Some(VerificationFigures {
                    backup: b.id.as_str().to_owned(),
                    passed: v.result == VerifyResult::Passed,
                    problems: v.problems,
                    time: v.time.clone(),
                    time_unix: t,
                })
            })
            .max_by(|a, b| (a.time_unix, &a.backup).cmp(&(b.time_unix, &b.backup)));
        let mut running_operations = BTreeMap::new();
        for l in catalog.leases.iter().filter(|l| l.live) {
            *running_operations
                .entry(l.lease.kind.as_str().to_owned())
                .or_insert(0) += 1;
        }
        ClusterMetrics {
            cluster: catalog.cluster.as_str().to_owned(),
            system_identifier: catalog.registration.system_identifier.to_string(),
            major: catalog.registration.server_version.major_name(),
            backups: counts,
            failed_verification: catalog
                .complete()
                .filter(|b| b.failed_verification())
                .count() as u64,
            pinned: catalog.backups.iter().filter(|b| b.pinned).count() as u64,
            last_good,
            last_verified,
            last_verification,
            window,
            running_operations,
            repository_problems: (catalog.odd_entries.len()
                + catalog.unreadable.len()
                + implausible_leases(catalog, now)
                + usize::from(catalog.diverging().is_some()))
                as u64,
            archive: None,
            spool: None,
        }
    }
}

/// The clusters registered in `repo` (a folder with `cluster.json`), by name. Other entries of
/// the repository's root are not clusters and are skipped; nothing is followed through a link.
pub fn registered_clusters(repo: &Repository) -> Result<Vec<Ident>, RepoError> {
    Ok(crate::repo::clusters::list_clusters(repo)?.clusters)
}

/// The figures of `cluster` (every registered one when `None`), from catalogs loaded now.
pub fn collect(
    repo: &Repository,
    cluster: Option<&Ident>,
    timing: LeaseTiming,
    now: i64,
) -> Result<Vec<ClusterMetrics>, RepoError> {
    let clusters = match cluster {
        Some(c) => {
            // Not registered: the repository's own error, naming the cluster.
            repo.registration(c)?;
            vec![c.clone()]
        }
        None => registered_clusters(repo)?,
    };
    clusters
        .iter()
        .map(|c| {
            let catalog = repo.catalog(c, timing)?;
            let mut m = ClusterMetrics::from_catalog(&catalog, now);
            let reg = &catalog.registration;
            let wal_dir = failure::local_wal_dir(Path::new(&reg.pgdata), reg.system_identifier);
            let records = failure::local_records(&repo.path(), c, reg);
            m.spool = wal_dir.map(|w| SpoolFigures::read(&w, &repo.path(), c));
            let recorded = failure::recorded(repo.backend(), c);
            match ArchiveContents::load(repo.backend(), c, reg) {
                Ok(contents) => {
                    let mut w = summarize(&contents, &catalog, now);
                    match recorded {
                        Ok(r) => add_failures(&mut w, &failure::merge(r, &records, &contents)),
                        Err(_) => m.repository_problems += 1,
                    }
                    m.archive = Some(ArchiveFigures::from_summary(&w, reg.wal_segment_size));
                }
                // The archive's folder cannot be listed: no archive figures, one problem more.
                Err(_) => m.repository_problems += 1,
            }
            Ok(m)
        })
        .collect()
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its samples (extra labels, value) for each cluster.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, cluster: &str, extra: &[(&str, &str)], value: f64) {
        let mut labels = format!("cluster=\"{}\"", label(cluster));
        for (k, v) in extra {
            let _ = write!(labels, ",{k}=\"{}\"", label(v));
        }
        self.samples.push((labels, value));
    }
}

/// The Prometheus text exposition (format 0.0.4) of `clusters`, taken at `now` (unix seconds):
/// every family has `# HELP` and `# TYPE` (all gauges), the prefix `pgsafe_`, the label
/// `cluster`, units in the names (`_seconds`, `_bytes`), times as unix seconds. A figure that
/// does not exist (no good backup yet) has no sample: alert on `pgsafe_backups{state="complete"}`
/// or on the absence of `pgsafe_last_good_backup_timestamp_seconds`.
pub fn prometheus(clusters: &[ClusterMetrics], now: i64) -> String {
    use Family as F;
    let mut info = F::new(
        "pgsafe_cluster_info",
        "A cluster registered in the repository (always 1), with its system identifier and major version.",
    );
    let mut backups = F::new("pgsafe_backups", "Backups in the repository by state.");
    let mut failed = F::new(
        "pgsafe_backups_failed_verification",
        "Complete backups whose latest verification failed (never used by latest).",
    );
    let mut pinned = F::new("pgsafe_backups_pinned", "Pinned backups (never expired).");
    let mut good_ts = F::new(
        "pgsafe_last_good_backup_timestamp_seconds",
        "End time of the newest complete backup not failed at verification (unix seconds).",
    );
    let mut good_age = F::new(
        "pgsafe_last_good_backup_age_seconds",
        "Seconds since the end of the newest complete backup not failed at verification.",
    );
    let mut good_bytes = F::new(
        "pgsafe_last_good_backup_size_bytes",
        "Original size of the data files of the newest good backup.",
    );
    let mut good_stored = F::new(
        "pgsafe_last_good_backup_stored_bytes",
        "Stored (compressed) size of the data files of the newest good backup.",
    );
    let mut good_duration = F::new(
        "pgsafe_last_good_backup_duration_seconds",
        "How long the newest good backup took.",
    );
    let mut verified_ts = F::new(
        "pgsafe_last_verified_backup_timestamp_seconds",
        "End time of the newest backup whose latest verification passed (unix seconds).",
    );
    let mut verified_age = F::new(
        "pgsafe_last_verified_backup_age_seconds",
        "Seconds since the end of the newest backup whose latest verification passed.",
    );
    let mut verification_ts = F::new(
        "pgsafe_last_verification_timestamp_seconds",
        "When the latest verification of any backup ran (unix seconds).",
    );
    let mut verification_ok = F::new(
        "pgsafe_last_verification_success",
        "1 if the latest verification passed, 0 if it found problems.",
    );
    let mut verification_problems = F::new(
        "pgsafe_last_verification_problems",
        "Problems the latest verification found.",
    );
    let mut window_start = F::new(
        "pgsafe_recovery_window_start_timestamp_seconds",
        "Earliest point a restore can reach: the end of the oldest good backup (unix seconds).",
    );
    let mut window_end = F::new(
        "pgsafe_recovery_window_end_timestamp_seconds",
        "Latest point a restore can reach: the end of the newest good backup (unix seconds).",
    );
    let mut window_start_lsn = F::new(
        "pgsafe_recovery_window_start_lsn_bytes",
        "WAL position of the earliest point a restore can reach (LSN as a byte position).",
    );
    let mut window_end_lsn = F::new(
        "pgsafe_recovery_window_end_lsn_bytes",
        "WAL position of the latest point a restore can reach (LSN as a byte position).",
    );
    let mut running = F::new(
        "pgsafe_running_operations",
        "Operations holding a live lease (backups, expires) by kind.",
    );
    let mut problems = F::new(
        "pgsafe_repository_problems",
        "Entries that are not backups, leases or events that cannot be read, and leases expiring more than a day ahead, and 1 when valid backups lie on diverging timelines (restore refuses 'latest', expire deletes nothing complete).",
    );
    let mut wal_set_up = F::new(
        "pgsafe_wal_archive_configured",
        "1 when the repository holds archived WAL segments of the cluster (archiving into it is set up; pgsafe check proves it works), else 0.",
    );
    let mut wal_segments = F::new(
        "pgsafe_wal_archive_segments",
        "WAL segments in the repository's archive of the cluster, all timelines.",
    );
    let mut wal_last_ts = F::new(
        "pgsafe_wal_archive_last_segment_timestamp_seconds",
        "When the newest archived WAL segment was stored (unix seconds).",
    );
    let mut wal_last_age = F::new(
        "pgsafe_wal_archive_last_segment_age_seconds",
        "Seconds since the newest archived WAL object was stored (archive lag as the repository sees it).",
    );
    let mut wal_last_lsn = F::new(
        "pgsafe_wal_archive_last_segment_end_lsn_bytes",
        "WAL position where the newest archived segment ends (LSN as a byte position).",
    );
    let mut wal_gaps = F::new(
        "pgsafe_wal_archive_gaps",
        "Gaps in the WAL archive by source: hole (between archived segments), switch (around a timeline switch), recorded (dropped by the archive queue limit).",
    );
    let mut wal_gaps_after = F::new(
        "pgsafe_wal_archive_gaps_after_newest_backup",
        "Gaps after the newest usable backup's stop: point-in-time recovery cannot get past them; take a new full backup.",
    );
    let mut wal_problems = F::new(
        "pgsafe_wal_archive_problems",
        "Problems of the WAL archive (gaps a restore would cross, broken history files, damaged or misplaced objects).",
    );
    let mut wal_failed_ts = F::new(
        "pgsafe_wal_archive_last_failed_push_timestamp_seconds",
        "When the last failed archive-push failed (unix seconds; recorded in the repository, or in the server's spool when readable here).",
    );
    let mut wal_failed_open = F::new(
        "pgsafe_wal_archive_last_failed_push_unresolved",
        "1 when the file of the last failed archive-push is still not in the archive, else 0.",
    );
    let mut spool_updated = F::new(
        "pgsafe_wal_archive_spool_updated_timestamp_seconds",
        "When archive-push last wrote its status into the server's spool (unix seconds; the spool figures are as of then).",
    );
    let mut spool_files = F::new(
        "pgsafe_wal_archive_backlog_files",
        "WAL files waiting to be archived at the last push (pg_wal/archive_status .ready).",
    );
    let mut spool_bytes = F::new(
        "pgsafe_wal_archive_backlog_bytes",
        "Bytes of WAL waiting to be archived at the last push.",
    );
    let mut spool_oldest = F::new(
        "pgsafe_wal_archive_backlog_oldest_timestamp_seconds",
        "Since when the oldest WAL file waiting to be archived has waited (unix seconds).",
    );
    let mut spool_behind = F::new(
        "pgsafe_wal_archive_falling_behind",
        "1 when the backlog has kept growing over pushes (archiving is slower than WAL generation; pg_wal grows), else 0.",
    );
    let mut spool_behind_since = F::new(
        "pgsafe_wal_archive_falling_behind_since_timestamp_seconds",
        "Since when archiving has been falling behind (unix seconds).",
    );
    let mut spool_gaps = F::new(
        "pgsafe_wal_archive_pending_gaps",
        "WAL segments dropped by the archive queue limit whose gap record has not reached the repository yet (point-in-time recovery across them is impossible).",
    );
    let mut spool_failures = F::new(
        "pgsafe_wal_archive_pending_failed_pushes",
        "Failed pushes recorded only in the server's spool (the repository could not take them).",
    );
    for c in clusters {
        let n = c.cluster.as_str();
        if let Some(sp) = &c.spool {
            if let Some(t) = sp.updated_unix {
                spool_updated.add(n, &[], t as f64);
            }
            spool_files.add(n, &[], sp.ready_files as f64);
            spool_bytes.add(n, &[], sp.ready_bytes as f64);
            if let Some(t) = sp.oldest_ready_since_unix {
                spool_oldest.add(n, &[], t as f64);
            }
            spool_behind.add(
                n,
                &[],
                if sp.behind_since_unix.is_some() {
                    1.0
                } else {
                    0.0
                },
            );
            if let Some(t) = sp.behind_since_unix {
                spool_behind_since.add(n, &[], t as f64);
            }
            spool_gaps.add(n, &[], sp.pending_gaps as f64);
            spool_failures.add(n, &[], sp.pending_failures as f64);
        }
        if let Some(a) = &c.archive {
            if let Some(t) = a.last_failed_push_unix {
                wal_failed_ts.add(n, &[], t as f64);
                wal_failed_open.add(
                    n,
                    &[],
                    if a.last_failed_push_unresolved {
                        1.0
                    } else {
                        0.0
                    },
                );
            }
            wal_set_up.add(n, &[], if a.set_up { 1.0 } else { 0.0 });
            wal_segments.add(n, &[], a.segments as f64);
            if let Some(t) = a.last_archived_unix {
                wal_last_ts.add(n, &[], t as f64);
            }
            if let Some(s) = a.archive_lag_secs {
                wal_last_age.add(n, &[], s as f64);
            }
            if let Some(l) = a.last_archived_end_lsn_bytes {
                wal_last_lsn.add(n, &[], l as f64);
            }
            for (source, count) in &a.gaps {
                wal_gaps.add(n, &[("source", source)], *count as f64);
            }
            wal_gaps_after.add(n, &[], a.gaps_after_newest_backup as f64);
            wal_problems.add(n, &[], a.problems as f64);
        }
        info.add(
            n,
            &[
                ("system_identifier", &c.system_identifier),
                ("major", &c.major),
            ],
            1.0,
        );
        for (state, count) in c.backups.by_name() {
            backups.add(n, &[("state", state)], count as f64);
        }
        failed.add(n, &[], c.failed_verification as f64);
        pinned.add(n, &[], c.pinned as f64);
        if let Some(b) = &c.last_good {
            good_ts.add(n, &[], b.finished_at_unix as f64);
            good_age.add(n, &[], b.age_secs as f64);
            good_bytes.add(n, &[], b.bytes as f64);
            good_stored.add(n, &[], b.stored_bytes as f64);
            good_duration.add(n, &[], b.duration_secs);
        }
        if let Some(b) = &c.last_verified {
            verified_ts.add(n, &[], b.finished_at_unix as f64);
            verified_age.add(n, &[], b.age_secs as f64);
        }
        if let Some(v) = &c.last_verification {
            verification_ts.add(n, &[], v.time_unix as f64);
            verification_ok.add(n, &[], if v.passed { 1.0 } else { 0.0 });
            verification_problems.add(n, &[], v.problems as f64);
        }
        if let Some(w) = &c.window {
            window_start.add(n, &[], w.earliest.finished_at_unix as f64);
            window_end.add(n, &[], w.latest.finished_at_unix as f64);
            window_start_lsn.add(n, &[], w.earliest.stop_lsn_bytes as f64);
            window_end_lsn.add(n, &[], w.latest.stop_lsn_bytes as f64);
        }
        for (kind, count) in &c.running_operations {
            running.add(n, &[("kind", kind)], *count as f64);
        }
        problems.add(n, &[], c.repository_problems as f64);
    }
    let mut generated = F::new(
        "pgsafe_metrics_generated_timestamp_seconds",
        "When these metrics were taken (unix seconds): a stale file means pgsafe metrics stopped running.",
    );
    generated.samples.push((String::new(), now as f64));
    let families = [
        generated,
        info,
        backups,
        failed,
        pinned,
        good_ts,
        good_age,
        good_bytes,
        good_stored,
        good_duration,
        verified_ts,
        verified_age,
        verification_ts,
        verification_ok,
        verification_problems,
        window_start,
        window_end,
        window_start_lsn,
        window_end_lsn,
        running,
        problems,
        wal_set_up,
        wal_segments,
        wal_last_ts,
        wal_last_age,
        wal_last_lsn,
        wal_gaps,
        wal_gaps_after,
        wal_problems,
        wal_failed_ts,
        wal_failed_open,
        spool_updated,
        spool_files,
        spool_bytes,
        spool_oldest,
        spool_behind,
        spool_behind_since,
        spool_gaps,
        spool_failures,
    ];
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} gauge", f.name);
        for (labels, value) in f.samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{} {}", f.name, value);
            } else {
                let _ = writeln!(out, "{}{{{labels}}} {}", f.name, value);
            }
        }
    }
    out
}
