//! `pgsafe backup`: argument parsing, progress and the summary; the work is in the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use pgsafe::backup::{self, BackupError, BackupOptions, COMPLETE_MARKER, WalMode};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::copy::Compression;

use crate::conn::ConnArgs;
use crate::exit;
use crate::progress::{CliProgress, ProgressMode};
use crate::render::field;

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The data directory of the server you connect to (pgsafe reads the files directly; run it
    /// on the database host or with PGDATA mounted). Default: the cluster's `pgdata` in the
    /// config file, else the PGDATA variable.
    #[arg(short = 'D', long = "pgdata", value_name = "PGDATA")]
    pub pgdata: Option<PathBuf>,
    /// Where the backup goes: a new or empty folder (or use --repo).
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub target: Option<PathBuf>,
    /// Store the backup in this repository (created by `pgsafe init`) under --cluster, with a
    /// new time-based ID that is printed. Default when --target is not given: `repo` in the
    /// config file.
    #[arg(long, value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// The cluster's name in the repository; its table in the config file gives the data
    /// directory, the connection and settings (flags still win).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Label stored in backup_label. Default: "pgsafe backup <time>".
    #[arg(long)]
    pub label: Option<String>,
    /// Immediate checkpoint at start (default).
    #[arg(long, overrides_with = "spread")]
    pub fast: bool,
    /// Spread checkpoint at start (less I/O impact; the start can take minutes).
    #[arg(long)]
    pub spread: bool,
    /// Parallel copy workers (default: `jobs` in the config file, else the number of CPU
    /// cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Per-file compression: none, zstd[:LEVEL] (level 1 by default), lz4. Only the uncompressed
    /// layout can be checked with PostgreSQL's pg_verifybackup; pgsafe verify reads all.
    /// Default: `compression` in the config file, else none.
    #[arg(long, value_name = "METHOD")]
    pub compress: Option<Compression>,
    /// Per-file checksum recorded in backup_manifest (default: `checksum` in the config file,
    /// else crc32c).
    #[arg(long, value_name = "ALGORITHM")]
    pub checksum: Option<ChecksumAlgorithm>,
    /// Read at most this many bytes per second (suffixes k, M, G: e.g. 100M). Default:
    /// `max_rate` in the config file, else no limit.
    #[arg(long, value_parser = pgsafe::config::parse_rate, value_name = "RATE")]
    pub max_rate: Option<u64>,
    /// WAL: include (copied into the backup, self-contained), archive (wait until the archive
    /// has it), none (your own archive provides it). Default: include; with --repo, archive
    /// when the server archives into that repository and cluster (pgsafe archive-push), so
    /// the backup waits for its WAL there instead of copying it.
    #[arg(long, value_name = "MODE")]
    pub wal: Option<WalMode>,
    /// With WAL from the archive: how long to wait for archiving.
    #[arg(long, default_value = "5m", value_parser = crate::snapshot::parse_duration)]
    pub archive_timeout: std::time::Duration,
    /// Do not check that the target has room for the data before starting.
    #[arg(long)]
    pub skip_space_check: bool,
    /// Accept a server data_directory that names another directory on this host than PGDATA
    /// (PGDATA mounted from the database host at a path that is used otherwise here). The
    /// system identifier must still match; a bind mount or a symbolic link of the same
    /// directory needs no flag.
    #[arg(long)]
    pub allow_data_directory_mismatch: bool,
    /// Removed: it skipped two unrelated checks at once. Use --skip-space-check or
    /// --allow-data-directory-mismatch.
    #[arg(long, hide = true)]
    pub force: bool,
    /// Do not check the checksum of every data page while copying (checked by default when the
    /// cluster has data checksums).
    #[arg(long)]
    pub no_verify_checksums: bool,
    /// Remove the partial target if the backup fails (default: keep it, marked incomplete).
    #[arg(long)]
    pub remove_on_failure: bool,
    /// Backup type (with --repo): full, diff (the changes since the newest complete full
    /// backup) or incr (the changes since the newest complete backup). When that parent cannot
    /// serve (another system's, failed verification, another timeline…) the backup is full;
    /// the output says which and why. Default: full. A backup into a folder (--target) is
    /// always full.
    #[arg(long = "type", value_name = "TYPE")]
    pub backup_type: Option<pgsafe::info::BackupType>,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BackupArgs) -> anyhow::Result<u8> {
    if args.force {
        return Err(crate::failure::usage(
            "--force was removed: it turned off two unrelated checks at once. Use \
             --skip-space-check to skip the free-space check, or \
             --allow-data-directory-mismatch when PGDATA is the server's data directory mounted \
             at a path that names another directory on this host",
        ));
    }
    // Flags first, then the config file (README "Config file"), then the built-in defaults.
    let cfg = crate::config::resolved(args.cluster.as_deref())?;
    let pgdata = crate::config::pgdata(args.pgdata, &cfg)?;
    let conn = crate::config::resolve_conn(&args.conn, &cfg)?;
    let label = args.label.clone().unwrap_or_else(|| {
        format!(
            "pgsafe backup {}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        )
    });
    pgsafe::session::check_label(&label)?;
    if args.target.is_some() && args.backup_type.is_some_and(|t| !t.is_full()) {
        return Err(crate::failure::usage(
            "--type diff and --type incr need a repository (--repo): a backup into a folder is \
             always full",
        ));
    }
    // A folder (--target), or the repository (--repo, or the config file's with --cluster).
    let repo = match &args.target {
        Some(_) => None,
        None => {
            let path = crate::repo::repo_path(args.repo.as_deref(), &cfg).map_err(|_| {
                crate::failure::usage(
                    "say where the backup goes: --target DIR (a new folder), or --repo REPO \
                     --cluster NAME (a repository; `repo` in the config file)",
                )
            })?;
            let cluster = crate::repo::cluster_name(args.cluster.as_deref())?;
            let timing = crate::repo::timing()?;
            Some((crate::repo::open_at(&path)?, cluster, timing))
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = BackupOptions {
        pgdata,
        target: args.target.clone().unwrap_or_default(),
        conn,
        label,
        fast: !args.spread,
        jobs: args
            .jobs
            .or(cfg.settings.jobs)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        compression: args
            .compress
            .or(cfg.settings.compression)
            .unwrap_or_default(),
        checksum: args.checksum.or(cfg.settings.checksum).unwrap_or_default(),
        max_rate: args.max_rate.or(cfg.settings.max_rate),
        wal: args.wal,
        check_space: !args.skip_space_check,
        allow_data_directory_mismatch: args.allow_data_directory_mismatch,
        archive_timeout: args.archive_timeout,
        cancel: Some(Arc::clone(&cancel)),
        before_open: None,
        check_pages: !args.no_verify_checksums,
        backup_type: args.backup_type,
    };
    {
        // First Ctrl-C (or SIGTERM): stop cleanly — the server-side backup is aborted and the
        // target stays marked incomplete. A second one exits at once (the server still aborts
        // the backup when the session ends).
        let cancel = Arc::clone(&cancel);
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                eprintln!("pgsafe: interrupted again; exiting now");
                std::process::exit(130);
            }
            eprintln!(
                "pgsafe: interrupted; cancelling the backup (press Ctrl-C again to exit now)"
            );
        });
    }
    let progress = CliProgress::new(args.progress);
    if let Some((repo, cluster, timing)) = repo {
        let result = backup::repo::run_repo_backup(&repo, &cluster, &opts, timing, &progress);
        progress.finish();
        return match result {
            Ok(done) => report(
                args.json,
                &done.info,
                &done.folder,
                Some((&cluster, &done.id)),
            ),
            Err(e) => {
                if let backup::repo::RepoBackupError::Backup { id, .. } = &e {
                    if repo.marked_incomplete(&cluster, id) {
                        if args.remove_on_failure {
                            let _ = repo.remove_incomplete(&cluster, id);
                            eprintln!(
                                "pgsafe: removed the partial backup {}",
                                repo.backup_shown(&cluster, id).display()
                            );
                        } else {
                            eprintln!(
                                "pgsafe: backup {id} is INCOMPLETE (no {COMPLETE_MARKER}); the \
                                 repository shows it as incomplete and expire removes it"
                            );
                        }
                    }
                }
                Err(match e {
                    backup::repo::RepoBackupError::Backup { id, source } => {
                        describe(*source).context(format!("backup {id} of cluster {cluster}"))
                    }
                    e => anyhow::Error::new(e).context("the backup failed"),
                })
            }
        };
    }
    let target = opts.target.clone();
    let target_existed = target.exists();
    let result = backup::run_backup(&opts, &progress);
    progress.finish();
    let info = match result {
        Ok(i) => i,
        Err(e) => {
            let written = target.join(backup::INCOMPLETE_MARKER).exists();
            if written && args.remove_on_failure && !target_existed {
                let _ = std::fs::remove_dir_all(&target);
                eprintln!("pgsafe: removed the partial backup {}", target.display());
            } else if written {
                eprintln!(
                    "pgsafe: {} is an INCOMPLETE backup (no {COMPLETE_MARKER}): do not restore \
                     it; remove it (or rerun with --remove-on-failure)",
                    target.display()
                );
            }
            return Err(describe(e));
        }
    };
    report(args.json, &info, &target, None)
}

/// The summary of a finished backup (`in_repo`: its cluster and ID in a repository).
fn report(
    json: bool,
    info: &backup::BackupInfo,
    target: &std::path::Path,
    in_repo: Option<(&pgsafe::storage::Ident, &pgsafe::storage::Ident)>,
) -> anyhow::Result<u8> {
    let info = info.clone();
    let corrupt = info
        .page_checksums
        .as_ref()
        .is_some_and(|p| !p.corrupt.is_empty());
    if corrupt {
        warn_corrupt(&info);
    }
    if json {
        let code = if corrupt {
            exit::SOURCE_CORRUPT
        } else {
            exit::OK
        };
        let mut doc = serde_json::to_value(&info)?;
        if let (Some((cluster, id)), serde_json::Value::Object(m)) = (in_repo, &mut doc) {
            m.insert("backup_id".into(), id.as_str().into());
            m.insert("cluster".into(), cluster.as_str().into());
        }
        crate::render::summary(&doc, Some(target), code)?;
    } else {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        println!("backup complete: {}", target.display());
        if let Some((cluster, id)) = in_repo {
            field("backup ID", format!("{id} (cluster {cluster})"));
        }
        field("type", type_line(&info));
        field("label", &info.label);
        field(
            "server",
            format!(
                "PostgreSQL {}{}",
                info.server_version,
                if info.from_standby { " (standby)" } else { "" }
            ),
        );
        field(
            "start / stop LSN",
            format!(
                "{} / {} (timeline {})",
                info.start_lsn, info.stop_lsn, info.stop_tli
            ),
        );
        field("files", info.files);
        field(
            "size",
            format!(
                "{} ({} stored, {})",
                mib(info.bytes),
                mib(info.stored_bytes),
                info.compression
            ),
        );
        if let Some(r) = info.bytes_read {
            field("read", mib(r));
        }
        if let Some(c) = &info.changed_source {
            field("changed blocks", format!("{}: {}", c.kind.name(), c.reason));
        }
        field(
            "WAL",
            format!(
                "{} segment(s), {}",
                info.wal.segments.len(),
                info.wal.source
            ),
        );
        if let Some(r) = &info.wal.reason {
            field("WAL mode", r);
        }
        field(
            "time",
            format!(
                "{:.1} s ({:.1} MiB/s copying)",
                info.duration_secs, info.copy_mib_per_sec
            ),
        );
        field("page checksums", page_summary(&info));
    }
    Ok(if corrupt {
        exit::SOURCE_CORRUPT
    } else {
        exit::OK
    })
}

/// The backup's type, its parent and why.
fn type_line(info: &backup::BackupInfo) -> String {
    let mut s = info.backup_type.to_string();
    if let Some(p) = &info.parent {
        s.push_str(&format!(
            " (parent {p}, {} incremental file(s))",
            info.incremental_files
        ));
    }
    if let Some(r) = &info.backup_type_reason {
        s.push_str(&format!(" — {r}"));
    }
    s
}

/// One line on the page checks.
fn page_summary(info: &backup::BackupInfo) -> String {
    let Some(p) = &info.page_checksums else {
        return if info.data_checksums {
            "not checked".into()
        } else {
            "not checked (the cluster has no data checksums)".into()
        };
    };
    let changed: usize = p.changed_during_copy.iter().map(|f| f.blocks.len()).sum();
    let mut s = format!(
        "{} pages in {} files checked, {} corrupt",
        p.pages_checked,
        p.files_checked,
        p.corrupt_blocks()
    );
    if changed > 0 {
        s.push_str(&format!(
            ", {changed} changed while copied (the WAL in the backup rewrites them)"
        ));
    }
    s
}

/// The corrupt blocks, on stderr: file, blocks, and what it means.
fn warn_corrupt(info: &backup::BackupInfo) {
    let Some(p) = &info.page_checksums else {
        return;
    };
    eprintln!(
        "pgsafe: WARNING: the SOURCE cluster has {} page(s) that fail their checksum; the backup \
         is complete and holds the same (corrupt) bytes:",
        p.corrupt_blocks()
    );
    for f in &p.corrupt {
        let shown: Vec<String> = f.blocks.iter().take(20).map(u32::to_string).collect();
        let more = f.blocks.len().saturating_sub(20);
        eprintln!(
            "  {}: block {}{}",
            f.path,
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more (all listed in {COMPLETE_MARKER})")
            } else {
                String::new()
            }
        );
    }
    eprintln!(
        "  The pages were read twice and did not change, so the server was not writing them: the \
         data files of the source are damaged (storage, memory or file-system fault). Check the \
         source (pg_amcheck, or reading the table fails with \"invalid page in block\"), restore \
         the affected relations from an older backup, and find the cause before trusting the \
         storage. Exit status 4."
    );
}

fn describe(e: BackupError) -> anyhow::Error {
    let hint = match &e {
        BackupError::NoSpace { .. } => Some("--skip-space-check skips this check"),
        BackupError::WrongPgdata { why, .. } if why.contains("data_directory") => Some(
            "if PGDATA is that data directory mounted from the database host at a path that \
             names another directory here, pass --allow-data-directory-mismatch",
        ),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(format!("the backup failed ({h})")),
        None => anyhow::Error::new(e).context("the backup failed"),
    }
}
