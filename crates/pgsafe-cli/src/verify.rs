//! `pgsafe verify BACKUP`: render the library's verification (text or `--json`); exit 0 when the
//! backup is good, 1 with the list of problems, 2 when it could not be checked.

use std::path::PathBuf;

use clap::Args;
use pgsafe::verify::{VerifyOptions, VerifyReport, verify_backup};

use crate::exit;
use crate::progress::{CliProgress, ProgressMode};
use crate::render::field;

pub const LONG_ABOUT: &str = "\
Checks a backup written by pgsafe backup (plain or compressed layout) without starting a server: \
pgsafe.json present (else: incomplete backup); backup_manifest present with a correct \
Manifest-Checksum; every file it lists stored with the right size and checksum (compressed \
files are decompressed); no file stored that it does not list; backup_label present, parseable \
and consistent with the manifest's WAL range and pgsafe.json; the system identifier, version and \
WAL segment size of the stored pg_control equal the manifest's and pgsafe.json's; every WAL \
segment from the backup's start to its stop in pg_wal/ with valid page headers for its timeline \
(for --wal archive and --wal none backups: where that WAL must come from). Every symbolic link or \
special file in the folder is a problem (pgsafe never stores one; none is followed), so is a \
manifest entry without a checksum in a backup taken with checksums, and a compressed file that \
inflates beyond its manifest size (reading stops there). Every problem is reported, an \
unreadable file included, not only the first. Lists the tablespace locations of tablespace_map.";

pub const AFTER_HELP: &str = "\
Exit codes: 0 the backup is good; 1 problems were found (each listed on its own line); 2 the \
backup could not be checked (not a backup, unreadable files, bad arguments).

Examples:
  pgsafe verify /backup/2026-11-21
  pgsafe verify --quick --json /backup/2026-11-21 | jq .problems";

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The backup folder (written by pgsafe backup).
    #[arg(value_name = "BACKUP")]
    pub backup: PathBuf,
    /// Presence and sizes only: no checksums, no WAL page headers.
    #[arg(long)]
    pub quick: bool,
    /// Parallel workers (default: number of CPU cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let opts = VerifyOptions {
        quick: args.quick,
        jobs: args.jobs.unwrap_or_else(default_jobs),
        cancel: None,
    };
    let progress = CliProgress::new(if args.json && args.progress == ProgressMode::Auto {
        ProgressMode::None
    } else {
        args.progress
    });
    let result = verify_backup(&args.backup, &opts, &progress);
    progress.finish();
    let report = result.map_err(|e| anyhow::Error::new(e).context("verify failed"))?;
    if args.json {
        crate::render::json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if report.is_ok() {
        exit::OK
    } else {
        exit::PROBLEMS
    })
}

/// The human-readable result: a verdict line, the problems one per line, notes, a summary.
pub fn print_report(r: &VerifyReport) {
    if r.is_ok() {
        println!(
            "backup {} is good{}",
            r.backup.display(),
            if r.quick { " (quick check)" } else { "" }
        );
    } else {
        println!(
            "backup {} has {} problem(s):",
            r.backup.display(),
            r.problems.len()
        );
        for p in &r.problems {
            println!("  - {p}");
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if let Some(l) = &r.label {
        field("label", l);
    }
    if let Some(v) = &r.server_version {
        field("server", format!("PostgreSQL {v}"));
    }
    if let (Some(a), Some(b)) = (r.start_lsn, r.stop_lsn) {
        field("start / stop LSN", format!("{a} / {b}"));
    }
    field("compression", r.compression);
    for t in &r.tablespaces {
        field(
            &format!("tablespace {}", t.oid),
            format!(
                "{} (tablespace_map: restore puts it there unless remapped)",
                t.location.display()
            ),
        );
    }
    field(
        "checked",
        format!(
            "{} file(s), {} WAL segment(s) with {} record(s), {:.1} MiB in {:.1} s",
            r.files_checked,
            r.wal_segments_checked,
            r.wal_records_checked,
            r.bytes_checked as f64 / (1 << 20) as f64,
            r.elapsed_secs
        ),
    );
}
