//! archive-push's look-ahead and queue limit, archive-get's prefetch: flags, config, and the
//! lines they write to stderr (which PostgreSQL puts in the server log). The work is the
//! library's (`pgsafe::archive::{lookahead, prefetch, spool}`).

use std::path::Path;

use clap::Args;
use pgsafe::archive::lookahead::{self, Acknowledged, LookAhead, OverLimit, PushReport};
use pgsafe::archive::prefetch::{self, Prefetch, Served};
use pgsafe::archive::{ArchiveFile, spool};
use pgsafe::repo::{Registration, Repository};
use pgsafe::storage::Ident;

use crate::repo::RepoArgs;

#[derive(Args, Debug, Default)]
pub struct PushAheadArgs {
    /// Files pushed at once: besides the file PostgreSQL asks for, the next files waiting in
    /// pg_wal/archive_status are pushed ahead (up to 4 per thread) and acknowledged from the
    /// spool when PostgreSQL asks for them (1: no look-ahead). Default: 4
    /// (`archive_push_parallel` in the config file).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parallel: Option<u64>,
    /// Protect the server's disk: when more than SIZE bytes of WAL wait to be archived (e.g.
    /// 4G; suffix K, M or G), a WAL segment is reported archived WITHOUT being stored, so that
    /// PostgreSQL can recycle it, and the gap is recorded (in the repository, or locally until
    /// the repository is reachable): point-in-time recovery across it is impossible. Off by
    /// default (`archive_push_queue_max` in the config file).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub archive_push_queue_max: Option<u64>,
    /// Push in a background process that keeps pushing the files waiting in
    /// pg_wal/archive_status between PostgreSQL's calls (one per pg_wal, started by a call
    /// when none runs, gone when nothing waits): a call exits 0 once that process has durably
    /// stored its file, or pushes the file itself when it could not.
    #[arg(long = "async")]
    pub background_pusher: bool,
    /// Run as that background process for the pg_wal folder PATH (started by --async).
    #[arg(long, hide = true)]
    pub background: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    pgsafe::config::parse_rate(s).map_err(|_| format!("{s:?} is not a size like 4G or 500M"))
}

impl PushAheadArgs {
    /// The look-ahead from the flags, else the config file (the cluster's table, then its
    /// defaults), else the defaults.
    pub fn look_ahead(&self, repo: &RepoArgs) -> anyhow::Result<LookAhead> {
        let d = LookAhead::default();
        let cfg = crate::config::resolved(repo.cluster.as_deref())?.settings;
        let flag = self.parallel.and_then(|n| usize::try_from(n).ok());
        Ok(LookAhead {
            parallel: flag.or(cfg.archive_push_parallel).unwrap_or(d.parallel),
            queue_max: self
                .archive_push_queue_max
                .or(cfg.archive_push_queue_max)
                .or(d.queue_max),
        })
    }
}

/// The queue limit, before the repository is opened: `true` when the file was dropped (its
/// gap recorded) or acknowledged from the spool, and PostgreSQL is to be told it is archived.
pub fn drop_over_limit(
    repo: &RepoArgs,
    la: &LookAhead,
    file: &ArchiveFile,
    src: &Path,
) -> anyhow::Result<bool> {
    let Some(max) = la.queue_max else {
        return Ok(false);
    };
    let cluster = crate::repo::cluster_name(repo.cluster.as_deref())?;
    let cfg = crate::config::resolved(Some(cluster.as_str()))?;
    let path = crate::repo::repo_path(repo.repo.as_deref(), &cfg)?;
    match lookahead::drop_over_limit(&path, &cluster, file, src, max)? {
        None => Ok(false),
        Some(OverLimit::Spooled) => Ok(true),
        Some(OverLimit::Dropped { gap, backlog }) => {
            eprintln!(
                "pgsafe: WARNING: WAL segment {} was NOT archived: {} files ({} MiB) are \
                 waiting to be archived, more than the archive queue limit ({} MiB). It is \
                 reported archived so that PostgreSQL can recycle it and pg_wal does not fill \
                 its disk. Point-in-time recovery across this segment is IMPOSSIBLE: once \
                 archiving works again, take a new full backup. The gap is recorded in {} and \
                 goes into the repository with the next successful push",
                gap.segment,
                backlog.ready.len(),
                backlog.bytes >> 20,
                max >> 20,
                spool::Spool::beside(src)
                    .map(|s| s.dir().join("gap"))
                    .unwrap_or_default()
                    .display(),
            );
            Ok(true)
        }
    }
}

/// What a push says besides success: gaps written into the repository, files pushed ahead
/// that failed, and archiving falling behind.
pub fn push_report(file: &ArchiveFile, r: &PushReport) {
    for ev in &r.gaps_recorded {
        if let pgsafe::repo::EventKind::WalGap { first, last, .. } = ev {
            eprintln!(
                "pgsafe: WARNING: recorded in the repository: WAL {first} to {last} was dropped \
                 by the archive queue limit and is NOT in the archive; point-in-time recovery \
                 across it is impossible (take a new full backup)"
            );
        }
    }
    for f in &r.foreign_gaps {
        eprintln!(
            "pgsafe: WARNING: gap record {f} is not this cluster's (a spool copied with a data \
             directory?); it was left where it is"
        );
    }
    if r.acknowledged == Acknowledged::AlreadyPresent {
        eprintln!("pgsafe: {file} was already archived with the same content");
    }
    if !r.ahead_stored.is_empty() {
        eprintln!(
            "pgsafe: {file} archived, and {} more files ahead",
            r.ahead_stored.len()
        );
    }
    for (f, why) in &r.ahead_failed {
        eprintln!(
            "pgsafe: {f} could not be archived ahead ({why}); it is pushed when its turn comes"
        );
    }
    let Some(st) = &r.status else {
        return;
    };
    if let Some(since) = &st.behind_since {
        // Behind on two pushes in a row, not one burst: say so (not on acknowledgements, which
        // come by the dozen).
        if r.acknowledged != Acknowledged::Spooled && *since != st.updated_at {
            eprintln!(
                "pgsafe: WARNING: archiving is slower than WAL generation: {} files ({} MiB) \
                 wait to be archived, the oldest ({}) since {}; falling behind since {since}",
                st.ready_files,
                st.ready_bytes >> 20,
                st.oldest_ready.as_deref().unwrap_or("?"),
                st.oldest_ready_since.as_deref().unwrap_or("?"),
            );
        }
    }
    if let Some(max) = st.queue_max {
        if st.ready_bytes > max / 10 * 8 && r.acknowledged != Acknowledged::Spooled {
            eprintln!(
                "pgsafe: WARNING: {} MiB of WAL wait to be archived, {}% of the archive queue \
                 limit ({} MiB): past it, WAL is dropped",
                st.ready_bytes >> 20,
                st.ready_bytes.saturating_mul(100) / max.max(1),
                max >> 20
            );
        }
    }
}

/// archive-get with prefetch: `true` when the file was restored.
pub fn get(
    repo: &Repository,
    cluster: &Ident,
    reg: &Registration,
    file: &ArchiveFile,
    dest: &Path,
    count: Option<usize>,
) -> anyhow::Result<bool> {
    let cfg = crate::config::resolved(Some(cluster.as_str()))?.settings;
    let pf = Prefetch {
        count: count
            .or(cfg.archive_get_prefetch)
            .unwrap_or(Prefetch::default().count),
    };
    let r = prefetch::get(repo.backend(), &repo.path(), cluster, reg, file, dest, &pf)?;
    for why in &r.rejected {
        eprintln!("pgsafe: WARNING: {why}");
    }
    for (s, why) in &r.failed {
        eprintln!("pgsafe: {s} could not be fetched ahead ({why}); it is fetched when asked for");
    }
    Ok(r.served != Served::NotFound)
}
