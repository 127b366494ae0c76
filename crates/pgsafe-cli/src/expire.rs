//! `pgsafe expire`: retention for one cluster of a repository. The work is the library's
//! (`pgsafe::repo::expire`); this parses, merges the config file's `keep_full`/`keep_within`
//! under the flags, and renders the plan (before anything is deleted) and the result.

use std::time::Duration;

use clap::Args;
use pgsafe::archive::contents::ArchiveContents;
use pgsafe::archive::wal_retention::{self, WalPlan};
use pgsafe::repo::expire::{ExpireOptions, ExpireReport, expire};
use pgsafe::repo::retention::{Decision, EntryState, ExpirePlan, KeepOptions, PlannedBackup};

use crate::exit;
use crate::repo::{RepoArgs, open, timing};

#[derive(Args, Debug)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Keep this many newest valid full backups (complete, verification not failed), and every
    /// backup newer than the oldest of them. Default:
    /// `keep_full` in the config file.
    #[arg(long, value_name = "N")]
    pub keep_full: Option<u32>,
    /// Keep every complete backup that finished within this long (`14d`, `36h`, `2w`, `90m`).
    /// Default: `keep_within` in the config file.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<Duration>,
    /// Show what would be deleted and why; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan and the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    pgsafe::config::parse_duration(s)
}

pub fn run(args: ExpireArgs) -> anyhow::Result<u8> {
    let (repo, cluster) = open(&args.repo)?;
    let cfg = crate::config::resolved(Some(cluster.as_str()))?;
    let keep = KeepOptions {
        keep_full: args.keep_full.or(cfg.settings.keep_full),
        keep_within: args.keep_within.or(cfg.settings.keep_within),
    };
    let opts = ExpireOptions {
        keep,
        dry_run: args.dry_run,
        timing: timing()?,
    };
    let json = args.json;
    let report = expire(repo.backend(), &cluster, &opts, |plan| {
        if !json {
            print_plan(plan, args.dry_run);
        }
    })?;
    // WAL the kept backups do not need, once the backups are dealt with.
    let reg = pgsafe::repo::read_registration(repo.backend(), &cluster)?;
    let contents = ArchiveContents::load(repo.backend(), &cluster, &reg)?;
    let wal = wal_retention::plan(&report.plan, &contents);
    if let Err(why) = wal.check(&report.plan, &contents) {
        return Err(crate::failure::error(
            pgsafe::error::ErrorKind::Internal,
            format!(
                "the WAL expire plan failed its safety check, no WAL was deleted: {why}. This \
                 is a bug in pgsafe; please report it"
            ),
        ));
    }
    let wal_deleted = if args.dry_run {
        0
    } else {
        wal_retention::apply(repo.backend(), &wal)?
    };
    if json {
        crate::render::json(&ExpireDoc {
            report: &report,
            wal: &wal,
            wal_objects_deleted: wal_deleted,
        })?;
    } else {
        print_result(&report);
        print_wal(&wal, args.dry_run, wal_deleted);
    }
    Ok(exit::OK)
}

#[derive(serde::Serialize)]
struct ExpireDoc<'a> {
    #[serde(flatten)]
    report: &'a ExpireReport,
    wal: &'a WalPlan,
    wal_objects_deleted: u64,
}

fn print_wal(w: &WalPlan, dry_run: bool, deleted: u64) {
    if let Some(why) = &w.kept_because {
        println!("WAL archive: nothing deleted: {why}");
        return;
    }
    let from = w
        .keep_from
        .map(|(t, l)| format!(" (kept from {l} on timeline {t}, the oldest kept backup's start)"))
        .unwrap_or_default();
    for (t, a, z) in &w.delete_segments {
        let action = if dry_run { "would delete" } else { "delete" };
        println!("WAL archive: {action} timeline {t} segments {a} .. {z}");
    }
    if dry_run {
        println!(
            "WAL archive: dry run: {} object(s), {} would be deleted{from}",
            w.delete_objects.len(),
            mib(w.bytes)
        );
    } else {
        println!(
            "WAL archive: deleted {deleted} object(s), {}{from}",
            mib(w.bytes)
        );
    }
}

fn retention(keep: &KeepOptions) -> String {
    let mut parts = Vec::new();
    if let Some(n) = keep.keep_full {
        parts.push(format!("keep the {n} newest valid full backups"));
    }
    if let Some(d) = keep.keep_within {
        parts.push(format!(
            "keep what finished within {}",
            pgsafe::config::format_duration(d)
        ));
    }
    if parts.is_empty() {
        "none configured: only incomplete leftovers are deleted".into()
    } else {
        parts.join(", and ")
    }
}

fn time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}

/// One line per backup: decision, ID, where it sits in the lineage, why.
fn line(b: &PlannedBackup) -> String {
    let action = match b.decision {
        Decision::Keep(_) => "keep  ",
        Decision::Delete(_) => "DELETE",
    };
    let at = match &b.backup.state {
        EntryState::Complete(l) => format!(
            "timeline {} stop {:<12} {}",
            l.stop_tli,
            l.stop_lsn.to_string(),
            time(l.finished_at)
        ),
        EntryState::Running => "running".into(),
        EntryState::Incomplete => "incomplete".into(),
        EntryState::Foreign { reason } => format!("foreign ({reason})"),
        EntryState::Corrupt { reason } => format!("corrupt ({reason})"),
    };
    let reason = match &b.decision {
        Decision::Keep(r) => r.to_string(),
        Decision::Delete(r) => r.to_string(),
    };
    let pin = if b.backup.pinned { " [pinned]" } else { "" };
    format!("{action}  {:<20} {at}  {reason}{pin}", b.backup.id)
}

fn print_plan(plan: &ExpirePlan, dry_run: bool) {
    println!(
        "expire plan{} (retention: {}):",
        if dry_run { ", dry run" } else { "" },
        retention(&plan.options)
    );
    if plan.backups.is_empty() {
        println!("  no backups");
    }
    for b in &plan.backups {
        println!("  {}", line(b));
    }
}

fn print_result(r: &ExpireReport) {
    let planned = r.plan.deletions().count();
    let kept = r.plan.backups.len() - planned;
    if r.dry_run {
        println!(
            "dry run: nothing deleted; {planned} backup(s) would be deleted, {kept} kept \
             (cluster {})",
            r.cluster
        );
        return;
    }
    for s in &r.skipped {
        eprintln!("pgsafe: warning: backup {} not deleted: {}", s.id, s.why);
    }
    let files: u64 = r.deleted.iter().map(|d| d.objects).sum();
    println!(
        "deleted {} backup(s) ({files} files), kept {kept} (cluster {})",
        r.deleted.len(),
        r.cluster
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
