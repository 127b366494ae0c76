//! `pgsafe restore BACKUP --pgdata TARGET`: argument parsing, progress and the summary; the work
//! is in the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use pgsafe::Lsn;
use pgsafe::restore::pitr::{self, ArchiveGet, PitrPlan, PitrRequest};
use pgsafe::restore::select::{PitrTarget, parse_target_time};
use pgsafe::restore::{
    ArchiveMode, RecoveryOptions, RecoveryTarget, RestoreError, RestoreOptions, TablespaceMapping,
    TargetAction, TargetTimeline, run_restore,
};

use crate::exit;
use crate::progress::{CliProgress, ProgressMode};
use crate::render::field;

pub const LONG_ABOUT: &str = "\
Restores a backup written by pgsafe backup into a new or empty data directory (with --delta: \
into an existing, stopped data directory of the same system, writing only the files and blocks \
that differ and removing what the backup does not have).

Refuses, before writing anything: a target that is not empty (or cannot be created), a target \
with a running server, an incomplete backup, a backup without backup_label, a backup that fails \
verification (full; with --no-verify: presence and sizes, and checksums while writing), \
tablespace locations that are not empty, and a backup whose WAL is not in it (--wal archive / \
none) without --restore-command; a target that overlaps the backup (paths compared resolved), a \
target another restore holds (an exclusive lock on the target for the whole restore), and too \
little free space for the manifest's sizes.

A backup folder is input from whoever can write into it: restore never follows a symbolic link \
inside it, reads no compressed file beyond the size the manifest gives, never changes the owner \
or mode of a directory it did not create, and prints the tablespace locations it will use before \
writing. Run as root, it writes to a tablespace location taken only from the backup's \
tablespace_map only when you confirm it: --tablespace-map OID=PATH (PATH may be the original \
location), or --trust-backup-tablespace-locations for all of them.

Writes the files in parallel (decompressing), recreates pg_tblspc/<oid> links to the original \
or remapped tablespace locations with a matching tablespace_map, writes backup_label byte for \
byte, the recovery settings (recovery.conf on 10-11; recovery.signal or standby.signal and \
postgresql.auto.conf on 12+), modes 0700/0600 (0750/0640 if the cluster used group access), \
ownership (as root: the original data directory's owner, or --owner), fsyncs everything, and \
writes global/pg_control last.

The copy never writes into the backed-up server: recovery ends on a new timeline (without \
recovery options: restore_command 'false', recovery_target 'immediate', promote), archive_mode \
is 'off' in its postgresql.auto.conf (--archive-mode preserve keeps the backed-up server's), \
the backed-up server's recovery settings (restore_command, recovery_target_*, \
primary_conninfo, ...) are commented out, in-place tablespaces are allowed (15+), and a backup \
during which a tablespace was created is refused.

Safety sentinel: the restored pg_control names an impossible checkpoint (FFFFFFFF/28, with a \
correct CRC). With backup_label the server recovers from the label's checkpoint and rewrites \
pg_control; if anyone removes backup_label, the server refuses to start instead of silently \
corrupting the database.";

pub const AFTER_HELP: &str = "\
Exit codes: 0 restored; 2 refused or failed (the message says why; a refused restore wrote \
nothing).

Examples:
  pgsafe restore /backup/2026-11-21 --pgdata /var/lib/postgresql/16/restored
  pgsafe restore /backup/b1 --pgdata /srv/pg/new --tablespace-map /srv/ts1=/srv/ts1-new
  pgsafe restore /backup/b1 --pgdata /srv/pg/pitr --restore-command 'cp /archive/%f %p' \\
      --target-time '2026-11-21 12:00:00+00' --target-action promote
  pgsafe restore /mnt/snap/pgdata --from-copy --pgdata /srv/pg/new --restore-command 'cp /archive/%f %p'";

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup folder (written by pgsafe backup); with --from-copy, a file-system copy of
    /// PGDATA holding the backup_label written by `pgsafe stop --output-dir`. Or name a
    /// repository's backup with --repo/--cluster/--backup.
    #[arg(
        value_name = "BACKUP",
        required_unless_present = "cluster",
        conflicts_with_all = ["repo", "cluster"]
    )]
    pub backup: Option<PathBuf>,
    /// A backup in a repository (instead of BACKUP).
    #[command(flatten)]
    pub from_repo: crate::repo::RepoBackupArgs,
    /// The new data directory: must not exist yet, or be empty.
    #[arg(short = 'D', long = "pgdata", value_name = "TARGET")]
    pub pgdata: PathBuf,
    /// TARGET is an existing, stopped data directory of the backup's system (a standby to
    /// rebuild, an earlier restore): write only the files and 8 KiB blocks that differ from the
    /// backup and remove what the backup does not have; the result is what a restore into an
    /// empty directory gives. Refused, changing nothing, for a running server or another
    /// system's data directory. Symbolic links in TARGET are removed, never followed.
    #[arg(long, conflicts_with = "from_copy")]
    pub delta: bool,
    /// BACKUP is a snapshot-mode copy of PGDATA (cp -a or a storage snapshot taken between
    /// `pgsafe start` and `pgsafe stop --output-dir`), not a pgsafe backup folder. Its pg_wal is
    /// not used: pass --restore-command (or --standby --primary-conninfo).
    #[arg(long)]
    pub from_copy: bool,
    /// Restore a tablespace elsewhere: OLD_PATH=NEW_PATH or OID=NEW_PATH (repeatable; split at
    /// the first '=': for an old location containing '=', use the OID, the first column of the
    /// backup's tablespace_map). Default: the original locations, which must be empty or absent.
    #[arg(long = "tablespace-map", value_name = "OLD=NEW")]
    pub tablespace_map: Vec<TablespaceMapping>,
    /// Running as root: use the tablespace locations the backup's tablespace_map names without
    /// a --tablespace-map for each (only for a backup folder nobody else could write into).
    #[arg(long)]
    pub trust_backup_tablespace_locations: bool,
    /// Replay WAL beyond the backup although the backed-up server runs on this host with
    /// tablespaces created after the backup (only with a recovery target before their creation).
    #[arg(long)]
    pub allow_live_tablespaces: bool,
    /// Do not check free space before writing.
    #[arg(long)]
    pub skip_space_check: bool,
    /// Parallel writers (default: `jobs` in the config file, else the number of CPU cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Check only presence and sizes before writing (checksums are then checked while
    /// writing) instead of verifying the whole backup first.
    #[arg(long)]
    pub no_verify: bool,
    /// Recover up to this time (recovery_target_time), e.g. '2026-11-21 12:00:00+00'.
    #[arg(long, value_name = "TIMESTAMP", group = "recovery_target")]
    pub target_time: Option<String>,
    /// Recover up to this WAL location (recovery_target_lsn), e.g. 0/3000060.
    #[arg(long, value_name = "LSN", group = "recovery_target")]
    pub target_lsn: Option<Lsn>,
    /// Recover up to this transaction (recovery_target_xid).
    #[arg(long, value_name = "XID", group = "recovery_target")]
    pub target_xid: Option<String>,
    /// Recover up to this restore point (recovery_target_name, see pg_create_restore_point).
    #[arg(long, value_name = "NAME", group = "recovery_target")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent (recovery_target = 'immediate').
    #[arg(long, group = "recovery_target")]
    pub target_immediate: bool,
    /// From a repository: replay every archived WAL file from the backup on and open at the end
    /// of the archive (the usual restore after losing the server). No recovery_target is
    /// written; the copy opens for writes on a new timeline when the archive runs out.
    #[arg(long, group = "recovery_target")]
    pub target_end: bool,
    /// The timeline recovery follows (recovery_target_timeline): latest, current (the backup's)
    /// or a timeline ID. Default: latest, written explicitly on every major (10-11 default to
    /// current). From a repository, latest is the newest timeline in its archive that descends
    /// from the chosen backup; two such branches are refused until you name one.
    #[arg(long, value_name = "TIMELINE")]
    pub target_timeline: Option<TargetTimeline>,
    /// What to do at the target: pause (PostgreSQL's default), promote, shutdown.
    #[arg(long, value_name = "ACTION")]
    pub target_action: Option<TargetAction>,
    /// restore_command for recovery, e.g. 'cp /archive/%f %p'.
    #[arg(long, value_name = "CMD")]
    pub restore_command: Option<String>,
    /// Start as a standby (standby.signal on 12+, standby_mode on 10-11).
    #[arg(long)]
    pub standby: bool,
    /// primary_conninfo for --standby.
    #[arg(long, value_name = "CONNINFO")]
    pub primary_conninfo: Option<String>,
    /// Give the files to USER[:GROUP] or UID[:GID] (root only). Default as root: the owner of
    /// the original data directory, as recorded in the backup.
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// WAL archiving in the restored copy: off (archive_mode = 'off' in its
    /// postgresql.auto.conf, so it never archives into the backed-up server's archive) or
    /// preserve (keep the backed-up server's archive settings; the copy archives on its own new
    /// timeline). Default: off, or preserve with --standby (a standby of the same cluster archives
    /// nothing while it replays, and after a failover it must archive where its primary did).
    #[arg(long, value_name = "MODE")]
    pub archive_mode: Option<ArchiveMode>,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn recovery(args: &RestoreArgs) -> RecoveryOptions {
    let target = if let Some(t) = &args.target_time {
        Some(RecoveryTarget::Time(t.clone()))
    } else if let Some(l) = args.target_lsn {
        Some(RecoveryTarget::Lsn(l))
    } else if let Some(x) = &args.target_xid {
        Some(RecoveryTarget::Xid(x.clone()))
    } else if let Some(n) = &args.target_name {
        Some(RecoveryTarget::Name(n.clone()))
    } else if args.target_immediate {
        Some(RecoveryTarget::Immediate)
    } else {
        None
    };
    RecoveryOptions {
        target,
        target_action: args.target_action,
        target_timeline: args.target_timeline,
        restore_command: args.restore_command.clone(),
        standby: args.standby,
        primary_conninfo: args.primary_conninfo.clone(),
    }
}

pub fn run(mut args: RestoreArgs) -> anyhow::Result<u8> {
    // The cluster's `jobs` when a repository cluster is named, else the file's default.
    let cluster = args.from_repo.repo.cluster.clone();
    args.jobs = args
        .jobs
        .or(crate::config::resolved(cluster.as_deref())?.settings.jobs);
    let mut wal_archive = None;
    // A repository's backup, read through the repository's storage.
    let mut stored = None;
    let mut pitr: Option<(PitrPlan, RecoveryOptions)> = None;
    if args.target_end && args.backup.is_some() {
        return Err(crate::failure::usage(
            "--target-end replays a repository's WAL archive: give --repo and --cluster instead \
             of a backup folder (for a folder, set --restore-command and no target)",
        ));
    }
    if args.backup.is_none() {
        if args.from_copy {
            return Err(crate::failure::usage(
                "--from-copy restores a file-system copy given as BACKUP, not a repository's \
                 backup",
            ));
        }
        if let Some(target) = pitr_target(&args)? {
            let p = plan_pitr(&args, target)?;
            if !args.json {
                eprintln!(
                    "pgsafe: restoring backup {} of cluster {} to {} ({})",
                    p.0.backup,
                    cluster.as_deref().unwrap_or_default(),
                    p.0.target,
                    p.0.why
                );
            }
            args.backup = Some(p.0.backup_folder.clone());
            // A backup whose WAL is in the archive is verified against it (see below).
            let (repo, c) = crate::repo::open(&args.from_repo.repo)?;
            let id = pgsafe::storage::Ident::new(p.0.backup.as_str())?;
            stored = Some(repo.stored_backup(&c, &id)?);
            wal_archive = Some(repo.wal_archive(&c));
            pitr = Some(p);
        }
    }
    if args.backup.is_none() {
        let c = crate::repo::choose(&args.from_repo)?;
        if !args.json {
            eprintln!(
                "pgsafe: restoring backup {} of cluster {} ({})",
                c.entry.id,
                c.cluster,
                c.folder.display()
            );
        }
        // A backup whose WAL is in the repository's archive gets it from there.
        wal_archive = Some(c.repo.wal_archive(&c.cluster));
        args.backup = Some(c.folder);
        stored = Some(c.stored);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = RestoreOptions {
        source: args.backup.clone().unwrap_or_default(),
        from_copy: args.from_copy,
        target: args.pgdata.clone(),
        tablespace_map: args.tablespace_map.clone(),
        jobs: args.jobs.unwrap_or_else(crate::verify::default_jobs),
        full_verify: !args.no_verify,
        recovery: match &pitr {
            Some((_, r)) => r.clone(),
            None => recovery(&args),
        },
        archive_mode: args.archive_mode.unwrap_or(if args.standby {
            ArchiveMode::Preserve
        } else {
            ArchiveMode::Off
        }),
        owner: args.owner.clone(),
        cancel: Some(Arc::clone(&cancel)),
        sync: true,
        trust_backup_locations: args.trust_backup_tablespace_locations,
        check_space: !args.skip_space_check,
        allow_live_tablespaces: args.allow_live_tablespaces,
        wal_archive,
        delta: args.delta,
    };
    {
        let cancel = Arc::clone(&cancel);
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                eprintln!("pgsafe: interrupted again; exiting now");
                std::process::exit(130);
            }
            eprintln!("pgsafe: interrupted; stopping the restore (press Ctrl-C again to exit now)");
        });
    }
    let progress = CliProgress::new(if args.json && args.progress == ProgressMode::Auto {
        ProgressMode::None
    } else {
        args.progress
    });
    let before = target_state(&args.pgdata);
    let control_before = args.pgdata.join("global/pg_control").exists();
    let result = match &stored {
        Some(s) => pgsafe::restore::run_restore_stored(s, &opts, &progress),
        None => run_restore(&opts, &progress),
    };
    progress.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            // Another restore's files are not this one's to call incomplete.
            let busy = matches!(e, RestoreError::TargetBusy(_));
            // Refusals of a delta restore come before it changes anything.
            let refusal = matches!(
                e,
                RestoreError::DeltaOtherSystem { .. }
                    | RestoreError::DeltaNotADataDirectory { .. }
                    | RestoreError::TargetRunning { .. }
            );
            let wrote =
                !busy && before != TargetState::NonEmpty && target_state(&args.pgdata) != before;
            let hint = match &e {
                RestoreError::UnconfirmedLocations(l) => Some(format!(
                    "pass --tablespace-map OID=PATH for each ({}), or \
                     --trust-backup-tablespace-locations",
                    l.iter()
                        .map(|(o, p)| format!("{o}={}", p.display()))
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
                RestoreError::OwnerNotConfirmed { recorded, .. } => Some(format!(
                    "pass --owner USER: the user the server runs as (--owner {recorded} if the \
                     backup is right)"
                )),
                RestoreError::NoSpace { .. } => {
                    Some("--skip-space-check skips this check".to_owned())
                }
                _ => None,
            };
            let e = match hint {
                Some(h) => anyhow::Error::new(e).context(h),
                None => anyhow::Error::new(e),
            };
            // A delta restore that started changing the target removed its pg_control
            // first, so no server starts on it; running it again finishes the job.
            let delta_started = args.delta
                && !busy
                && before == TargetState::NonEmpty
                && !args.pgdata.join("global/pg_control").exists()
                && (control_before || !refusal);
            return Err(if delta_started {
                e.context(format!(
                    "the delta restore failed after it began changing {}: it has no \
                     global/pg_control now, so no server can start on it; run the same restore \
                     with --delta again (it finishes the job), or restore into an empty directory",
                    args.pgdata.display()
                ))
            } else if wrote {
                e.context(format!(
                    "the restore failed; {} is an INCOMPLETE restore (it has no \
                     global/pg_control, so no server can start on it): remove it",
                    args.pgdata.display()
                ))
            } else {
                e.context("restore refused (nothing was written)")
            });
        }
    };
    if args.json {
        match &pitr {
            Some((plan, _)) => crate::render::json(&PitrDoc {
                report: &report,
                pitr: plan,
            })?,
            None => crate::render::json(&report)?,
        }
        return Ok(exit::OK);
    }
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    println!("restore complete: {}", report.target.display());
    field("from", report.source.display());
    if let Some(d) = &report.delta {
        field(
            "delta",
            format!(
                "{} file(s) written, {} unchanged; {} block(s) written, {} already equal ({}); \
                 {} entr(y/ies) the backup does not have removed",
                d.files_written,
                d.files_unchanged,
                d.blocks_written,
                d.blocks_skipped,
                mib(d.bytes_written),
                d.entries_removed
            ),
        );
    }
    field(
        "restored",
        format!(
            "{} file(s), {} (verification: {}), {} WAL file(s), {:.1} s",
            report.files,
            mib(report.bytes),
            report.verification,
            report.wal_files,
            report.elapsed_secs
        ),
    );
    for t in &report.tablespaces {
        field(
            &format!("tablespace {}", t.oid),
            if t.location == t.original_location {
                format!(
                    "{} (the backup's location{})",
                    t.location.display(),
                    if t.existed { "; it existed" } else { "" }
                )
            } else {
                format!(
                    "{} (originally {})",
                    t.location.display(),
                    t.original_location.display()
                )
            },
        );
    }
    if let Some(o) = &report.owner {
        field("owner", o);
    }
    if !report.recovery_files.is_empty() {
        field("recovery settings", report.recovery_files.join(", "));
    }
    field(
        "archiving",
        pgsafe::restore::archive_summary(report.archive_mode),
    );
    for s in &report.config.settings_written {
        field("setting written", s);
    }
    for d in &report.config.disabled_settings {
        field(
            "setting disabled",
            format!("{d}: a recovery setting of the backed-up server, commented out"),
        );
    }
    for r in &report.config.reset_settings {
        field(
            "setting reset",
            format!(
                "{r}: a recovery setting of the backed-up server in an included file, set back \
                 to its default in postgresql.auto.conf"
            ),
        );
    }
    field(
        "pg_control",
        format!(
            "written last, with the safety sentinel (checkpoint {})",
            report.sentinel_checkpoint
        ),
    );
    for w in &report.warnings {
        eprintln!("pgsafe: warning: {w}");
    }
    println!("start the server: {}", report.start_command);
    println!("recovery: {}", report.recovery_plan);
    if let Some((plan, _)) = &pitr {
        print_plan(plan);
    }
    Ok(exit::OK)
}

/// The JSON of a point-in-time restore: the restore's report and the plan.
#[derive(serde::Serialize)]
struct PitrDoc<'a> {
    #[serde(flatten)]
    report: &'a pgsafe::restore::RestoreReport,
    pitr: &'a PitrPlan,
}

/// The recovery target asked for a restore from a repository (`None`: a plain restore of a
/// backup, no WAL from the archive).
fn pitr_target(args: &RestoreArgs) -> anyhow::Result<Option<PitrTarget>> {
    let target = if let Some(t) = &args.target_time {
        PitrTarget::Time(
            parse_target_time(t)
                .map_err(|e| crate::failure::usage(format!("--target-time: {e}")))?,
        )
    } else if let Some(l) = args.target_lsn {
        PitrTarget::Lsn(l)
    } else if let Some(x) = &args.target_xid {
        PitrTarget::Xid(x.clone())
    } else if let Some(n) = &args.target_name {
        PitrTarget::Name(n.clone())
    } else if args.target_immediate {
        PitrTarget::Immediate
    } else if args.target_end {
        if args.target_action.is_some() {
            return Err(crate::failure::usage(
                "--target-end has no target action: the copy opens for writes when the archive \
                 runs out (PostgreSQL ignores recovery_target_action without a target)",
            ));
        }
        PitrTarget::End
    } else {
        if args.target_timeline.is_some() || args.target_action.is_some() {
            return Err(crate::failure::usage(
                "--target-timeline and --target-action need a recovery target from a \
                 repository: --target-time, --target-lsn, --target-xid, --target-name, \
                 --target-immediate or --target-end",
            ));
        }
        return Ok(None);
    };
    if args.restore_command.is_some() || args.standby || args.primary_conninfo.is_some() {
        return Err(crate::failure::usage(
            "a point-in-time restore from a repository fetches its WAL from the repository's \
             archive with pgsafe archive-get: leave out --restore-command, --standby and \
             --primary-conninfo (they are for a backup folder)",
        ));
    }
    Ok(Some(target))
}

/// Plans a point-in-time restore from the repository (writes nothing).
fn plan_pitr(
    args: &RestoreArgs,
    target: PitrTarget,
) -> anyhow::Result<(PitrPlan, RecoveryOptions)> {
    let (repo, cluster) = crate::repo::open(&args.from_repo.repo)?;
    let cfg = crate::config::resolved(Some(cluster.as_str()))?;
    // An object store: restore_command repeats how this run reached it.
    let (extra_args, s3_advice) = match repo.location() {
        pgsafe::storage::Location::S3(c) => crate::config::s3_command_args(c),
        _ => (Vec::new(), None),
    };
    let (env, key_advice) = key_files_for_server(repo.encrypted())?;
    let absolute = |p: &std::path::Path| {
        std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let req = PitrRequest {
        cluster: cluster.clone(),
        backup: args.from_repo.backup_id.clone().filter(|b| b != "latest"),
        target,
        timeline: args.target_timeline.unwrap_or(TargetTimeline::Latest),
        action: args.target_action.unwrap_or(TargetAction::Pause),
        archive_get: ArchiveGet {
            exe: std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("the path of this pgsafe: {e}"))?,
            repo: match repo.local_root() {
                Some(root) => absolute(root)?,
                // Object storage: its URL, as the restore_command gives it to archive-get.
                None => repo.path(),
            },
            cluster,
            config: cfg.path.as_deref().map(absolute).transpose()?,
            extra_args,
            env,
        },
        timing: crate::repo::timing()?,
    };
    let (mut plan, opts) = pitr::plan(&repo, &req)?;
    for a in s3_advice.into_iter().chain(key_advice) {
        plan.warnings.push(format!("restore_command: {a}"));
    }
    Ok((plan, opts))
}

/// Variables written in front of a command (`NAME=value`).
type CommandEnv = Vec<(String, String)>;

/// The key files of an encrypted repository this run reads, for restore_command (the server's
/// environment has none of this run's variables): `PGSAFE_KEY_FILE` and
/// `PGSAFE_PASSPHRASE_FILE` as absolute paths. A passphrase given in the variable itself cannot
/// be written into the command: what to tell the DBA instead.
fn key_files_for_server(encrypted: bool) -> anyhow::Result<(CommandEnv, Option<String>)> {
    use pgsafe::storage::crypt::open::{KEY_FILE_ENV, PASSPHRASE_ENV, PASSPHRASE_FILE_ENV};
    let mut env = Vec::new();
    if !encrypted {
        return Ok((env, None));
    }
    for name in [KEY_FILE_ENV, PASSPHRASE_FILE_ENV] {
        if let Some(f) = std::env::var_os(name).filter(|f| !f.is_empty()) {
            let abs = std::path::absolute(&f)
                .map_err(|e| anyhow::anyhow!("{name} {}: {e}", f.to_string_lossy()))?;
            let abs = abs.to_str().ok_or_else(|| {
                crate::failure::usage(format!(
                    "{name} {} is not valid UTF-8: it cannot be written into restore_command",
                    abs.display()
                ))
            })?;
            env.push((name.to_owned(), abs.to_owned()));
        }
    }
    let advice = (std::env::var_os(PASSPHRASE_ENV).is_some()
        && std::env::var_os(PASSPHRASE_FILE_ENV).is_none())
    .then(|| {
        format!(
            "the passphrase comes from {PASSPHRASE_ENV}, which is not written into the command \
             (every database user can read it): the server's environment must hold it, or give \
             the passphrase in a file ({PASSPHRASE_FILE_ENV}) readable by the server's user"
        )
    });
    Ok((env, advice))
}

fn print_plan(p: &PitrPlan) {
    println!("point-in-time recovery:");
    field("backup", format!("{} ({})", p.backup, p.why));
    for s in &p.skipped {
        field("passed over", format!("{} {}", s.id, s.why));
    }
    field("target", &p.target);
    field("timeline", &p.timeline_why);
    let wal = &p.wal;
    field(
        "WAL from the archive",
        match (&wal.last, wal.until) {
            (Some(last), "target") => {
                format!("{} to {} ({} segment(s))", wal.first, last, wal.segments)
            }
            (Some(last), _) => format!(
                "{} to {}, the last one archived so far ({} segment(s)): recovery reads until \
                 it finds the target",
                wal.first, last, wal.segments
            ),
            (None, _) => format!("from {} (none archived after the backup yet)", wal.first),
        },
    );
    field("at the target", p.action.as_str());
    field("restore_command", &p.restore_command);
    for a in &p.after_start {
        field("after start-up", a);
    }
    for w in &p.warnings {
        eprintln!("pgsafe: warning: {w}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetState {
    Absent,
    Empty,
    NonEmpty,
}

fn target_state(p: &std::path::Path) -> TargetState {
    match std::fs::read_dir(p).map(|mut rd| rd.next().is_none()) {
        Ok(true) => TargetState::Empty,
        Ok(false) => TargetState::NonEmpty,
        Err(_) if p.exists() => TargetState::NonEmpty,
        Err(_) => TargetState::Absent,
    }
}
