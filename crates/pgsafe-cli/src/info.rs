//! `pgsafe info`: what a repository holds, per cluster — status and problems first, the
//! recoverability window, every backup in lineage order — or everything about one backup. The
//! figures are the library's (`pgsafe::repo::summary`); this renders them, as text a DBA reads
//! at a glance or as the JSON documented in docs/info-json.md.

use std::path::{Path, PathBuf};

use clap::Args;
use pgsafe::archive::contents::{ArchiveContents, GapSource, Window};
use pgsafe::archive::failure::{self, FailedPush, RecordedIn};
use pgsafe::archive::report::{self, WalSummary};
use pgsafe::repo::catalog::Catalog;
use pgsafe::repo::clusters::list_clusters;
use pgsafe::repo::summary::{
    self, BackupDetail, BackupSummary, ClusterSummary, Recoverability, RestorePoint,
    VerificationSummary,
};
use pgsafe::repo::{LeaseTiming, VerifyResult};
use pgsafe::storage::Ident;
use serde::Serialize;

use crate::exit;
use crate::render::field;

pub const LONG_ABOUT: &str = "Read-only. Shows every cluster of a repository (or the one \
    --cluster names): its registration; a status line (OK, or the number of problems) with the \
    age of the last good backup; the problems — interrupted, corrupt or foreign backups, failed \
    verifications, source pages that failed their checksum, entries that are not backups; the \
    recoverability window (the stop points of the usable backups, and with archived WAL the \
    point-in-time window: any point from a backup's stop to the end of the WAL archived \
    after it without a gap); and every backup in lineage order \
    (timeline, LSN), not in name order. --backup ID shows everything about one backup. Exit 0 \
    whenever the repository could be read, whatever the problems (they are in the output; with \
    --json in `ok` and each cluster's `status`).";

pub const AFTER_HELP: &str = "Examples:\n  pgsafe info --repo /var/lib/pgsafe\n  \
    pgsafe info --repo /var/lib/pgsafe --cluster main --backup latest\n  \
    pgsafe info --cluster main --json | jq .clusters[0].status";

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The backup repository (a folder). Default: `repo` in the config file.
    #[arg(long, value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// Show only this cluster.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Show everything about one backup: its ID, or `latest` (the backup a restore of
    /// `latest` takes).
    #[arg(long = "backup", value_name = "ID")]
    pub backup: Option<String>,
    /// Print one JSON document instead of text (docs/info-json.md).
    #[arg(long)]
    pub json: bool,
}

/// A problem of the repository itself (not of one cluster's backups).
#[derive(Serialize)]
struct RepoProblem {
    kind: &'static str,
    object: String,
    message: String,
}

#[derive(Serialize)]
struct InfoDoc<'a> {
    repository: &'a Path,
    generated_at: i64,
    /// No problem anywhere.
    ok: bool,
    problems: Vec<RepoProblem>,
    clusters: Vec<ClusterView>,
}

/// A cluster: its backups' summary and its WAL archive's (`null` when it has none).
#[derive(Serialize)]
struct ClusterView {
    #[serde(flatten)]
    summary: ClusterSummary,
    wal: Option<WalSummary>,
}

#[derive(Serialize)]
struct BackupDoc<'a> {
    repository: &'a Path,
    cluster: &'a Ident,
    generated_at: i64,
    backup: BackupDetail,
}

fn repo_path(flag: Option<PathBuf>, cluster: Option<&str>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let cfg = crate::config::resolved(cluster)?;
    match crate::repo::configured(&cfg)? {
        Some(p) => Ok(p),
        None => Err(crate::failure::usage(
            "no repository: give --repo REPO (or `repo` in the config file)",
        )),
    }
}

fn cluster_name(name: &str) -> anyhow::Result<Ident> {
    Ident::new(name).map_err(|e| crate::failure::usage(format!("--cluster: {e}")))
}

pub fn run(args: InfoArgs) -> anyhow::Result<u8> {
    let path = repo_path(args.repo, args.cluster.as_deref())?;
    let timing = LeaseTiming::from_env().map_err(crate::failure::usage)?;
    let repo = crate::repo::open_at(&path)?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut problems = Vec::new();
    let names = match &args.cluster {
        Some(c) => vec![cluster_name(c)?],
        None => {
            let list = list_clusters(&repo)?;
            for o in list.odd_entries {
                problems.push(RepoProblem {
                    kind: "odd_entry",
                    message: format!("{}: {}", o.name, o.why),
                    object: o.name,
                });
            }
            list.clusters
        }
    };
    // Each cluster's catalog; with all clusters, one that cannot be read is a problem of the
    // repository (the others are still shown); the one cluster asked for is an error.
    let mut catalogs: Vec<Catalog> = Vec::new();
    for name in names {
        match repo.catalog(&name, timing) {
            Ok(c) => catalogs.push(c),
            Err(e) if args.cluster.is_none() => problems.push(RepoProblem {
                kind: "unreadable_cluster",
                message: format!(
                    "cluster {name} cannot be read: {}",
                    crate::error_chain(&e.into())
                ),
                object: name.to_string(),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(which) = &args.backup {
        return show_backup(&path, &catalogs, which, args.json, now_us);
    }
    let mut clusters = Vec::new();
    for c in &catalogs {
        let mut summary = summary::summarize(c, now_us);
        let contents = ArchiveContents::load(repo.backend(), &c.cluster, &c.registration)?;
        let failures = failure::merge(
            failure::recorded(repo.backend(), &c.cluster)?,
            &failure::local_records(&path, &c.cluster, &c.registration),
            &contents,
        );
        let has_archive = !contents.timelines.is_empty()
            || !contents.recorded_gaps.is_empty()
            || !contents.problems.is_empty()
            || !failures.is_empty();
        let wal = has_archive.then(|| {
            let mut w = report::summarize(&contents, c, now_us.div_euclid(1_000_000));
            report::add_failures(&mut w, &failures);
            w
        });
        if let Some(w) = &wal {
            report::fold_into(&mut summary.status, w);
        }
        clusters.push(ClusterView { summary, wal });
    }
    let doc = InfoDoc {
        repository: &path,
        generated_at: now_us.div_euclid(1_000_000),
        ok: problems.is_empty() && clusters.iter().all(|c| c.summary.status.ok),
        problems,
        clusters,
    };
    if args.json {
        crate::render::json(&doc)?;
    } else {
        print_human(&doc);
    }
    Ok(exit::OK)
}

fn show_backup(
    path: &Path,
    catalogs: &[Catalog],
    which: &str,
    json: bool,
    now_us: i64,
) -> anyhow::Result<u8> {
    let found: Vec<(&Catalog, &pgsafe::repo::BackupEntry)> = catalogs
        .iter()
        .filter_map(|c| {
            let e = if which == "latest" {
                c.latest()
            } else {
                c.get(which)
            };
            e.map(|e| (c, e))
        })
        .collect();
    let (catalog, entry) = match found.as_slice() {
        [one] => *one,
        [] if which == "latest" => {
            return Err(crate::failure::error(
                pgsafe::error::ErrorKind::NotFound,
                "no complete backup that can be used (none, or every one failed verification)",
            ));
        }
        [] => {
            return Err(crate::failure::error(
                pgsafe::error::ErrorKind::NotFound,
                format!("no backup {} in the repository", which.escape_debug()),
            ));
        }
        many => {
            let names: Vec<String> = many.iter().map(|(c, _)| c.cluster.to_string()).collect();
            return Err(crate::failure::usage(format!(
                "backup {} is in several clusters ({}): name one with --cluster",
                which.escape_debug(),
                names.join(", ")
            )));
        }
    };
    let detail = summary::backup_detail(catalog, entry);
    if json {
        crate::render::json(&BackupDoc {
            repository: path,
            cluster: &catalog.cluster,
            generated_at: now_us.div_euclid(1_000_000),
            backup: detail,
        })?;
    } else {
        print_detail(&catalog.cluster, &detail);
    }
    Ok(exit::OK)
}

/// Unix seconds as RFC 3339 in UTC (`-` when unknown).
fn time(secs: Option<i64>) -> String {
    secs.and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// An RFC 3339 time as recorded (microseconds), shown to the second.
fn time_text(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| time(Some(t.timestamp())))
        .unwrap_or_else(|_| s.to_owned())
}

/// Bytes in MiB below 1 GiB, in GiB below 1 TiB, then in TiB.
pub fn size(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if bytes < 1 << 30 {
        format!("{:.1} MiB", b / MIB)
    } else if bytes < 1 << 40 {
        format!("{:.2} GiB", b / MIB / 1024.0)
    } else {
        format!("{:.2} TiB", b / MIB / 1024.0 / 1024.0)
    }
}

/// A duration in words a glance reads: `42.5s`, `5m 03s`, `2h 05m`, `3d 04h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    match s {
        ..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn verification(v: Option<&VerificationSummary>) -> String {
    match v {
        None => "never".into(),
        Some(v) if v.result == VerifyResult::Passed && v.restore_test => {
            format!("proven {}", time_text(&v.time))
        }
        Some(v) if v.result == VerifyResult::Passed => format!("passed {}", time_text(&v.time)),
        Some(v) => format!("FAILED ({}) {}", v.problems, time_text(&v.time)),
    }
}

fn point(p: &RestorePoint) -> String {
    format!(
        "{} ({}, timeline {}, backup {})",
        time(Some(p.time)),
        p.lsn,
        p.timeline,
        p.backup
    )
}

/// The backups' stop points. With a WAL archive window (`archived`), the points between come
/// from the archive: this line must not say the repository keeps no WAL.
fn window(r: &Recoverability, archived: bool) -> String {
    match (&r.earliest, &r.latest) {
        (Some(e), Some(l)) if archived => {
            let points = if r.restore_points == 1 {
                format!("1 backup stop point, {}", point(e))
            } else {
                format!(
                    "{} backup stop points, from {} to {}",
                    r.restore_points,
                    point(e),
                    point(l)
                )
            };
            format!("{points}; with the archived WAL, any point of the PITR window below")
        }
        (Some(e), Some(_)) if r.restore_points == 1 => format!(
            "1 point, {}: the stop point of the only usable backup; the repository keeps no \
             WAL after it, so a restore reaches this point only",
            point(e)
        ),
        (Some(e), Some(l)) => format!(
            "{} points, from {} to {}: the stop points of the usable backups; the repository \
             keeps no WAL between backups, so a restore reaches these points and none between \
             them",
            r.restore_points,
            point(e),
            point(l)
        ),
        _ => "none: no usable backup".into(),
    }
}

/// Rows of cells as aligned columns (two spaces apart), the last column not padded.
fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

fn timeline(b: &BackupSummary) -> String {
    match (b.start_timeline, b.stop_timeline) {
        (Some(a), Some(z)) if a != z => format!("{a}->{z}"),
        (_, z) => opt(z),
    }
}

fn backup_row(b: &BackupSummary) -> Vec<String> {
    let state = match b.state {
        "complete" if b.latest => "complete (latest)".to_owned(),
        s => s.to_owned(),
    };
    vec![
        b.id.to_string(),
        b.kind.to_owned(),
        state,
        time(b.started_at),
        time(b.finished_at),
        opt(b.duration_secs.map(duration)),
        opt(b.start_lsn),
        opt(b.stop_lsn),
        timeline(b),
        opt(b.wal_first),
        opt(b.wal_last),
        opt(b.original_bytes.map(size)),
        opt(b.stored_bytes.map(size)),
        verification(b.verification.as_ref()),
        opt(b.page_checksum_errors),
        if b.pinned { "pinned" } else { "-" }.to_owned(),
    ]
}

const HEADER: [&str; 16] = [
    "ID",
    "TYPE",
    "STATE",
    "STARTED",
    "FINISHED",
    "DURATION",
    "START LSN",
    "STOP LSN",
    "TL",
    "WAL FIRST",
    "WAL LAST",
    "ORIGINAL",
    "STORED",
    "VERIFIED",
    "PAGE ERRORS",
    "PINNED",
];

fn print_human(doc: &InfoDoc) {
    println!("repository {}", doc.repository.display());
    for p in &doc.problems {
        println!("PROBLEM  {}", p.message);
    }
    if doc.clusters.is_empty() {
        println!("no cluster is registered (register one with pgsafe init)");
    }
    for c in &doc.clusters {
        let archived = c.wal.as_ref().is_some_and(|w| w.window.is_some());
        print_cluster(&c.summary, archived);
        if let Some(w) = &c.wal {
            print_wal(w);
        }
    }
}

/// `archived`: the WAL archive gives a point-in-time window (printed after, as `PITR`).
fn print_cluster(c: &ClusterSummary, archived: bool) {
    let r = &c.registration;
    println!();
    println!(
        "cluster {}: PostgreSQL {} (registered as {}), system identifier {}, WAL segments {}",
        c.cluster,
        r.major,
        r.server_version,
        r.system_identifier,
        size(r.wal_segment_size)
    );
    let s = &c.status;
    let last = match (&s.last_good_backup, s.last_good_backup_age_secs) {
        (Some(id), Some(age)) => format!(
            "last good backup {id} finished {} ago",
            duration(age as f64)
        ),
        _ => "no good backup".to_owned(),
    };
    let head = if s.ok {
        "OK".to_owned()
    } else {
        format!("PROBLEMS ({})", s.problems)
    };
    println!("  {:<10}{head}: {last}", "status");
    for p in &c.problems {
        println!("  {:<10}{}", "PROBLEM", p.message);
    }
    println!("  {:<10}{}", "restore", window(&c.recoverability, archived));
    let t = &c.totals;
    let mut states = vec![format!("{} complete", t.complete)];
    for (n, what) in [
        (t.running, "running"),
        (t.incomplete, "incomplete"),
        (t.corrupt, "corrupt"),
        (t.foreign, "foreign"),
    ] {
        if n > 0 {
            states.push(format!("{n} {what}"));
        }
    }
    println!(
        "  {:<10}{} ({}); {} pinned; complete ones: {} original, {} stored, {} WAL",
        "backups",
        t.backups,
        states.join(", "),
        t.pinned,
        size(t.original_bytes),
        size(t.stored_bytes),
        size(t.wal_bytes)
    );
    if c.backups.is_empty() {
        return;
    }
    println!();
    let mut rows = vec![HEADER.iter().map(|h| (*h).to_owned()).collect()];
    rows.extend(c.backups.iter().map(backup_row));
    for line in table(&rows) {
        println!("  {line}");
    }
}

fn wal_window(w: Option<&Window>) -> String {
    let Some(w) = w else {
        return "none: no usable backup has all its WAL (in the backup or the archive)".into();
    };
    let hole = if w.ends_at_hole {
        "; WAL after it is missing while later WAL is archived (a gap)"
    } else {
        ""
    };
    format!(
        "any point from {} ({}, timeline {}, backup {}) to {} ({}, timeline {}){hole}",
        time(w.from.time),
        w.from.lsn,
        w.from.timeline,
        w.backup,
        time(w.to.time),
        w.to.lsn,
        w.to.timeline
    )
}

/// The WAL archive: problems first, then the window, the last archived segment and the lag,
/// one line per timeline and per gap.
fn print_wal(w: &WalSummary) {
    for p in &w.problems {
        println!("  {:<10}{}", "PROBLEM", p.message);
    }
    println!("  {:<10}{}", "PITR", wal_window(w.window.as_ref()));
    let last = match &w.last_archived {
        Some(l) => format!("last archived {} at {}", l.segment, time(l.time)),
        None => "no segment archived".into(),
    };
    let lag = w
        .archive_lag_secs
        .map_or_else(String::new, |s| format!(", lag {}", duration(s as f64)));
    println!(
        "  {:<10}{} objects, {}; {last}{lag}",
        "archive",
        w.objects,
        size(w.bytes)
    );
    if let Some(f) = &w.last_failed {
        println!("  {:<10}{}", "failed", failed_push(f));
    }
    for t in &w.timelines {
        let switch = match (t.parent, t.switchpoint) {
            (Some(p), Some(l)) => format!(", from timeline {p} at {l}"),
            _ => String::new(),
        };
        println!(
            "  {:<10}timeline {}: {} .. {} ({} segments, {} partial; history {}{switch})",
            "WAL",
            t.timeline,
            opt(t.wal_min),
            opt(t.wal_max),
            t.segments,
            t.partials,
            t.history
        );
        if let Some(f) = &t.last_failed {
            println!(
                "  {:<10}timeline {}: last failed push {}",
                "failed", t.timeline, f.file
            );
        }
    }
    for g in &w.gaps {
        let what = match &g.gap.source {
            GapSource::Hole => "hole".to_owned(),
            GapSource::Switch { to } => format!("missing around the switch to timeline {to}"),
            GapSource::Recorded { reason, host, .. } => format!("dropped by {host}: {reason}"),
        };
        let note = if g.before_oldest_backup {
            " (before the oldest backup: harmless)"
        } else {
            ""
        };
        println!(
            "  {:<10}timeline {} {} .. {}: {what}{note}",
            "gap", g.gap.timeline, g.gap.first, g.gap.last
        );
    }
}

/// The last failed push, for people: which file, when, why, and whether it was archived since.
fn failed_push(f: &FailedPush) -> String {
    let times = if f.failures > 1 {
        format!(
            "{} failures from {} to {}",
            f.failures, f.first_failed_at, f.last_failed_at
        )
    } else {
        format!("at {}", f.last_failed_at)
    };
    let since = if f.archived_since {
        "archived since"
    } else {
        "NOT archived since: the archiver retries it until it succeeds; pgsafe check shows \
         whether archiving works now"
    };
    let local = if f.recorded_in == RecordedIn::Spool {
        " (recorded in the server's pg_wal/pgsafe_archive only: the repository could not take \
         it yet)"
    } else {
        ""
    };
    format!(
        "last failed push {} on {}, {times} ({}: {}){local}; {since}",
        f.file, f.host, f.error, f.message
    )
}

fn print_detail(cluster: &Ident, d: &BackupDetail) {
    let b = &d.summary;
    field("cluster", cluster);
    field("backup", &b.id);
    field("type", b.kind);
    if let Some(p) = &b.parent {
        field("parent", p);
    }
    if let Some(why) = &b.chain_problem {
        field("chain", format!("BROKEN: {why}"));
    }
    if let Some(r) = &b.type_reason {
        field("type reason", r);
    }
    if let Some(cs) = &b.changed_source {
        field(
            "changed blocks",
            format!("{}: {}", cs.kind.name(), cs.reason),
        );
    }
    let state = match (&b.reason, b.latest) {
        (Some(why), _) => format!("{}: {why}", b.state),
        (None, true) => format!("{} (latest)", b.state),
        (None, false) => b.state.to_owned(),
    };
    field("state", state);
    field("usable", if b.usable { "yes" } else { "no" });
    field("pinned", if b.pinned { "yes" } else { "no" });
    field("verification", verification(b.verification.as_ref()));
    if let Some(w) = &b.writer {
        field(
            "written by",
            format!(
                "{} pid {} (lease until {})",
                w.host, w.pid, w.lease_expires_at
            ),
        );
    }
    if b.started_at.is_none() {
        return;
    }
    field("label", opt(b.label.as_deref()));
    field("started", time(b.started_at));
    field("finished", time(b.finished_at));
    field("duration", opt(b.duration_secs.map(duration)));
    field(
        "start",
        format!("{} (timeline {})", opt(b.start_lsn), opt(b.start_timeline)),
    );
    field("checkpoint", opt(d.checkpoint_lsn));
    field(
        "stop",
        format!("{} (timeline {})", opt(b.stop_lsn), opt(b.stop_timeline)),
    );
    field(
        "WAL",
        format!("{} .. {}", opt(b.wal_first), opt(b.wal_last)),
    );
    let mode = d.wal_mode.map(|m| match m {
        pgsafe::info::WalMode::Include => "include (stored in the backup)",
        pgsafe::info::WalMode::Archive => "archive (from the server's WAL archive)",
        pgsafe::info::WalMode::None => "none (the WAL must come from your archive)",
    });
    field("WAL mode", opt(mode));
    field("WAL source", opt(d.wal_source.as_deref()));
    if let Some(n) = d.wal_segments_stored {
        let segments = if n == 1 { "segment" } else { "segments" };
        field(
            "WAL stored",
            format!("{n} {segments}, {}", opt(b.wal_bytes.map(size))),
        );
    }
    field(
        "size",
        format!(
            "{} original, {} stored, {} files",
            opt(b.original_bytes.map(size)),
            opt(b.stored_bytes.map(size)),
            opt(d.files)
        ),
    );
    if let Some(r) = b.bytes_read {
        field("read", size(r));
    }
    field("compression", opt(d.compression.as_deref()));
    field("checksums", opt(d.checksum_algorithm.as_deref()));
    field(
        "data checksums",
        opt(d.data_checksums.map(|c| if c { "on" } else { "off" })),
    );
    match &d.page_checksums {
        None => field("page checks", "not checked"),
        Some(p) => {
            field(
                "page checks",
                format!(
                    "{} pages of {} files checked: {} failed (source corrupt), {} changed \
                     during the copy",
                    p.pages_checked,
                    p.files_checked,
                    p.corrupt_blocks,
                    p.changed_during_copy_blocks
                ),
            );
            for f in &p.corrupt {
                field("  corrupt", format!("{} blocks {:?}", f.path, f.blocks));
            }
        }
    }
    if d.tablespaces.is_empty() {
        field("tablespaces", "none");
    }
    for t in &d.tablespaces {
        field(
            "tablespace",
            format!("{} at {}", t.oid, t.original_path.display()),
        );
    }
    for c in &d.tablespace_changes {
        field("tablespace change", c);
    }
    field(
        "vanished/shrunk",
        format!(
            "{} files vanished, {} shrunk during the copy",
            opt(d.vanished_files),
            opt(d.shrunk_files)
        ),
    );
    field(
        "from standby",
        opt(d.from_standby.map(|s| if s { "yes" } else { "no" })),
    );
    field("server", opt(d.server_version));
    field("system identifier", opt(d.system_identifier));
    field("pgsafe version", opt(d.pgsafe_version.as_deref()));
    if let (Some(s), Some(r)) = (d.copy_secs, d.copy_mib_per_sec) {
        field("copy", format!("{} at {r:.1} MiB/s", duration(s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_columns() {
        assert_eq!(size(0), "0.0 MiB");
        assert_eq!(size(3 << 20), "3.0 MiB");
        assert_eq!(size(3 << 30), "3.00 GiB");
        assert_eq!(size(5 << 40), "5.00 TiB");
        assert_eq!(duration(4.25), "4.2s");
        assert_eq!(duration(303.0), "5m 03s");
        assert_eq!(duration(7500.0), "2h 05m");
        assert_eq!(duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(duration(f64::NAN), "-");
        let rows = vec![
            vec!["ID".to_owned(), "STATE".to_owned(), "X".to_owned()],
            vec!["long-id".to_owned(), "ok".to_owned(), "y".to_owned()],
        ];
        assert_eq!(table(&rows), ["ID       STATE  X", "long-id  ok     y"]);
    }
}
