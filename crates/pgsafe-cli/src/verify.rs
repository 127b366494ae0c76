//! `pgsafe verify BACKUP`: render the library's verification (text or `--json`); exit 0 when the
//! backup is good, 1 with the list of problems, 2 when it could not be checked.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use pgsafe::restore_test::{RestoreTestOptions, RestoreTestReport, Verdict, run_restore_test};
use pgsafe::verify::{VerifyOptions, VerifyReport, verify_backup_with};

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
unreadable file included, not only the first. Lists the tablespace locations of tablespace_map.

With --restore-test the backup is proven instead: restored (with full verification) into a \
private scratch folder, every tablespace inside it; started with the PostgreSQL binaries of its \
major (--pg-bindir, else pg_config, PATH, /usr/lib/postgresql/MAJOR/bin, /usr/pgsql-MAJOR/bin) \
as the owner of its data (as root: --run-as, else the owner the backup records when the backup \
folder belongs to root or to that user; never root) on a private socket folder, without TCP, \
archiving off, recovering to the end of the backup; once recovery has ended, amcheck on every \
database that allows connections (14+: verify_heapam on every table and bt_index_check with \
heapallindexed on every B-tree index; 11-13: the index checks; 10: bt_index_check without the \
heap cross-check); then a fast shutdown and the scratch folder removed (--keep leaves it and \
prints how to start it). Reports what ran, the recovery time and the restore's (the measured \
RTO), the relations checked and the verdict. The backed-up server is never touched.";

pub const AFTER_HELP: &str = "\
Exit codes: 0 the backup is good; 1 problems were found (each listed on its own line); 2 the \
backup could not be checked (not a backup, unreadable files, bad arguments).
With --restore-test: 0 proven; 1 the restore test found problems (the backup failed \
verification, the server did not start or recover, amcheck reported corruption); 2 the test \
could not be carried out, or the server started but amcheck is not installed (\"started, not \
checked\").

Examples:
  pgsafe verify /backup/2026-11-21
  pgsafe verify --quick --json /backup/2026-11-21 | jq .problems
  pgsafe verify --restore-test /backup/2026-11-21
  sudo pgsafe verify --restore-test --run-as postgres --pg-bindir /usr/lib/postgresql/17/bin \\
      --scratch-dir /backup/scratch /backup/2026-11-21";

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The backup folder (written by pgsafe backup); or name a repository's backup with
    /// --repo/--cluster/--backup.
    #[arg(
        value_name = "BACKUP",
        required_unless_present = "cluster",
        conflicts_with_all = ["repo", "cluster"]
    )]
    pub backup: Option<PathBuf>,
    /// A backup in a repository (verify records the result in the repository).
    #[command(flatten)]
    pub from_repo: crate::repo::RepoBackupArgs,
    /// Presence and sizes only: no checksums, no WAL page headers.
    #[arg(long, conflicts_with = "restore_test")]
    pub quick: bool,
    /// Prove the backup: restore it into a scratch folder, start it, wait for recovery to
    /// end, run amcheck, stop it, remove the folder.
    #[arg(long)]
    pub restore_test: bool,
    /// The bin folder of PostgreSQL binaries of the backup's major (default: found).
    #[arg(long, value_name = "DIR", requires = "restore_test")]
    pub pg_bindir: Option<PathBuf>,
    /// Keep the scratch folder and print how to start the restored server.
    #[arg(long, requires = "restore_test")]
    pub keep: bool,
    /// The user the restored server runs as (root only; default: the owner the backup records).
    #[arg(long, value_name = "USER", requires = "restore_test")]
    pub run_as: Option<String>,
    /// Where to make the scratch folder (default: $TMPDIR or /tmp). On the backup's file
    /// system, files are cloned where the file system can (btrfs, XFS).
    #[arg(long, value_name = "DIR", requires = "restore_test")]
    pub scratch_dir: Option<PathBuf>,
    /// How long start-up and recovery of the restored server may take.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 3600,
        requires = "restore_test"
    )]
    pub start_timeout: u64,
    /// Parallel workers (default: `jobs` in the config file, else the number of CPU cores).
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

pub fn run(mut args: VerifyArgs) -> anyhow::Result<u8> {
    // The cluster's `jobs` when a repository cluster is named, else the file's default.
    let cluster = args.from_repo.repo.cluster.clone();
    args.jobs = args
        .jobs
        .or(crate::config::resolved(cluster.as_deref())?.settings.jobs);
    let chosen = match &args.backup {
        Some(_) => None,
        None => Some(crate::repo::choose(&args.from_repo)?),
    };
    if let Some(c) = &chosen {
        args.backup = Some(c.folder.clone());
        if !args.json {
            eprintln!(
                "pgsafe: backup {} of cluster {} ({})",
                c.entry.id,
                c.cluster,
                c.folder.display()
            );
        }
    }
    if args.restore_test {
        return run_restore_test_cmd(args, chosen.as_ref());
    }
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
    // A repository's backup whose WAL is in the repository's archive is checked there.
    let result = match &chosen {
        Some(c) => pgsafe::verify::verify_stored_with(
            &c.stored,
            Some(&c.repo.wal_archive(&c.cluster)),
            &opts,
            &progress,
        ),
        None => verify_backup_with(
            args.backup.as_deref().unwrap_or(std::path::Path::new("")),
            None,
            &opts,
            &progress,
        ),
    };
    progress.finish();
    let report = result.map_err(|e| anyhow::Error::new(e).context("verify failed"))?;
    // A full verification of a repository's backup is recorded there (a quick one proves too
    // little to count): a failed backup is then never `latest`.
    if let (Some(c), false) = (&chosen, args.quick) {
        let problems = u64::try_from(report.problems.len()).unwrap_or(u64::MAX);
        c.repo
            .record_verification(&c.cluster, &c.entry.id, problems, false)
            .map_err(|e| anyhow::Error::new(e).context("record the verification"))?;
    }
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
            "{} file(s) and {} of pgsafe's own, {} WAL segment(s) with {} record(s), {:.1} MiB \
             in {:.1} s",
            r.files,
            r.files_checked.saturating_sub(r.files),
            r.wal_segments_checked,
            r.wal_records_checked,
            r.bytes_checked as f64 / (1 << 20) as f64,
            r.elapsed_secs
        ),
    );
}

fn run_restore_test_cmd(
    args: VerifyArgs,
    chosen: Option<&crate::repo::Chosen>,
) -> anyhow::Result<u8> {
    let mut opts =
        RestoreTestOptions::new(args.backup.as_deref().unwrap_or(std::path::Path::new("")));
    opts.bin_dir = args.pg_bindir;
    opts.scratch_parent = args.scratch_dir;
    opts.run_as = args.run_as;
    opts.keep = args.keep;
    opts.jobs = args.jobs.unwrap_or_else(default_jobs);
    opts.timeout = Duration::from_secs(args.start_timeout);
    if let Some(c) = chosen {
        opts.wal_archive = Some(c.repo.wal_archive(&c.cluster));
        opts.stored = Some(c.stored.clone());
    }
    let cancel = Arc::new(AtomicBool::new(false));
    opts.cancel = Some(Arc::clone(&cancel));
    let _ = ctrlc::set_handler(move || {
        if cancel.swap(true, Ordering::SeqCst) {
            eprintln!("pgsafe: interrupted again; exiting now");
            std::process::exit(130);
        }
        eprintln!(
            "pgsafe: interrupted; stopping the restore test and removing its scratch folder \
             (press Ctrl-C again to exit now)"
        );
    });
    let progress = CliProgress::new(if args.json && args.progress == ProgressMode::Auto {
        ProgressMode::None
    } else {
        args.progress
    });
    let result = run_restore_test(&opts, &progress);
    progress.finish();
    let report = result.map_err(|e| anyhow::Error::new(e).context("restore test failed"))?;
    // A repository's backup records the verdict when it says something about the backup
    // itself: proven, or damaged (failed verification, amcheck found corruption). A server
    // that did not start or had no amcheck may be this host's doing: not recorded.
    let problems = match report.verdict {
        Verdict::Proven => Some(0),
        Verdict::BackupInvalid | Verdict::CorruptionFound => Some(
            u64::try_from(report.problems.len())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
        Verdict::StartedNotChecked | Verdict::DidNotStart => None,
    };
    if let (Some(c), Some(problems)) = (chosen, problems) {
        c.repo
            .record_verification(&c.cluster, &c.entry.id, problems, true)
            .map_err(|e| anyhow::Error::new(e).context("record the restore test's verdict"))?;
    }
    if args.json {
        crate::render::json(&report)?;
    } else {
        print_restore_test(&report);
    }
    Ok(match report.verdict {
        Verdict::Proven => exit::OK,
        Verdict::StartedNotChecked => exit::ERROR,
        Verdict::BackupInvalid | Verdict::DidNotStart | Verdict::CorruptionFound => exit::PROBLEMS,
    })
}

/// The human-readable result of a restore test.
pub fn print_restore_test(r: &RestoreTestReport) {
    println!(
        "restore test of {}: {}",
        r.backup.display(),
        r.verdict.to_string().to_uppercase()
    );
    for p in &r.problems {
        println!("  - {p}");
    }
    if let Some(log) = &r.server_log {
        println!("server log (last lines):");
        for l in log.lines() {
            println!("  | {l}");
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    for (i, s) in r.steps.iter().enumerate() {
        field(&format!("step {}", i + 1), s);
    }
    field(
        "server",
        format!(
            "PostgreSQL {} ({}, found by {}) as {}",
            r.binaries.version,
            r.binaries.bin_dir.display(),
            r.binaries.found_by,
            r.run_as
        ),
    );
    if let Some(x) = &r.restore {
        field(
            "restore",
            format!(
                "{} file(s), {:.1} MiB, {} WAL file(s) in {:.1} s{}",
                x.files,
                x.bytes as f64 / (1 << 20) as f64,
                x.wal_files,
                r.restore_secs,
                x.space_used
                    .map(|u| format!(
                        "; {:.1} MiB of file-system space used",
                        u as f64 / (1 << 20) as f64
                    ))
                    .unwrap_or_default()
            ),
        );
        for w in &x.warnings {
            println!("warning: {w}");
        }
    }
    if let (Some(rec), Some(rto)) = (r.recovery_secs, r.rto_secs) {
        field(
            "recovery",
            format!(
                "{rec:.1} s from start to the end of recovery; RTO (restore + recovery) {rto:.1} s"
            ),
        );
    }
    if let Some(a) = &r.amcheck {
        field(
            "checked",
            format!(
                "{} table(s), {} index(es) of {} relation(s) in {} database(s){}",
                a.tables_checked,
                a.indexes_checked,
                a.relations,
                a.databases.len(),
                if a.skipped_databases.is_empty() {
                    String::new()
                } else {
                    format!(" (not connectable: {})", a.skipped_databases.join(", "))
                }
            ),
        );
    }
    if let Some(s) = &r.stopped {
        field("stopped", s);
    }
    if r.kept {
        field("kept", r.scratch.display());
        if let Some(c) = &r.start_command {
            field("start it with", c);
        }
    }
    field("elapsed", format!("{:.1} s", r.elapsed_secs));
}
