//! `pgsafe metrics`: the monitoring figures of a repository (library `pgsafe::metrics`) as
//! Prometheus text or JSON, on stdout or written atomically into a file for node-exporter's
//! textfile collector.

use std::path::PathBuf;

use clap::Args;
use pgsafe::metrics::{self, ClusterMetrics};
use pgsafe::repo::LeaseTiming;
use pgsafe::storage::Ident;
use serde::Serialize;

use crate::exit;

pub const LONG_ABOUT: &str = "\
Per cluster of a repository, the figures a monitoring system needs: the newest good backup \
(complete, not failed at its latest verification): its end time, age, original and stored size, \
duration; the newest backup whose verification passed; the latest verification (result, \
problems, time); backups by state (complete, running, incomplete, corrupt, foreign), pinned \
ones and those that failed verification; the recoverability window (the ends of the oldest and \
newest good backups, times and LSNs); operations holding a live lease (running backups, \
expires); entries of the repository that are not backups. Read-only: nothing is written to the \
repository.

Prometheus text exposition by default (gauges, prefix pgsafe_, label cluster, units in the \
names, times as unix seconds); --json for one JSON document. With --output FILE the text is \
written to FILE atomically (temporary file, fsync, rename), as node-exporter's textfile \
collector needs: it never reads a half-written file.";

pub const AFTER_HELP: &str = "\
Exit codes: 0 written; 2 the repository cannot be read (the message says why).

Examples:
  pgsafe metrics --repo /var/lib/pgsafe
  pgsafe metrics --output /var/lib/prometheus/node-exporter/pgsafe.prom
  pgsafe metrics --cluster main --json | jq '.clusters[0].last_good.age_secs'";

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// The repository (default: `repo` in the config file).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Only this cluster (default: every cluster registered in the repository).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Print one JSON document instead of Prometheus text.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Prometheus text exposition format (the default).
    #[arg(long)]
    pub prometheus: bool,
    /// Write to FILE atomically (mode 0644) instead of stdout: for node-exporter's textfile
    /// collector, FILE ends in .prom in its --collector.textfile.directory.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Serialize)]
struct Doc<'a> {
    repository: String,
    generated_at: i64,
    clusters: &'a [ClusterMetrics],
}

pub fn run(args: MetricsArgs) -> anyhow::Result<u8> {
    let cfg = crate::config::resolved(args.cluster.as_deref())?;
    let repo_dir = match args.repo {
        Some(r) => r,
        None => match crate::repo::configured(&cfg)? {
            Some(r) => r,
            None => {
                let why = cfg.missing("the repository", "repo", crate::config::file()?);
                return Err(crate::failure::usage(format!(
                    "{why}: give --repo DIR (or `repo` in the config file)"
                )));
            }
        },
    };
    let cluster = match &args.cluster {
        Some(c) => Some(Ident::new(c.as_str())?),
        None => None,
    };
    let repo = crate::repo::open_at(&repo_dir)?;
    let timing = LeaseTiming::from_env().map_err(crate::failure::usage)?;
    let now = chrono::Utc::now().timestamp();
    let clusters = metrics::collect(&repo, cluster.as_ref(), timing, now)?;
    let bytes = if args.json {
        let mut v = serde_json::to_value(Doc {
            repository: repo_dir.to_string_lossy().into_owned(),
            generated_at: now,
            clusters: &clusters,
        })?;
        crate::render::conventions(&mut v);
        let mut s = serde_json::to_string_pretty(&v)?;
        s.push('\n');
        s.into_bytes()
    } else {
        metrics::prometheus(&clusters, now).into_bytes()
    };
    match &args.output {
        Some(path) => pgsafe::fsutil::write_durable(path, &bytes, 0o644)?,
        None => crate::output::write_bytes(&bytes),
    }
    Ok(exit::OK)
}
