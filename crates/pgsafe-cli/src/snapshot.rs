//! Snapshot mode: `start`, `stop`, `status`, `abort`, `snapshot`, and the hidden holder entry.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pgsafe::hold::{
    self, BackupId, BackupRecord, BackupState, HoldError, HolderConfig, RunDir, SnapshotOptions,
    StopOptions, WaitArchive,
};

use crate::conn::ConnArgs;
use crate::exit;
use crate::render::{epoch, field};

#[derive(Args, Debug)]
pub struct RunDirArg {
    /// Private directory for holder sockets, records and logs (default: ~USER/.pgsafe/run, the
    /// home directory from the password database, not $HOME; /tmp/pgsafe-$UID for a user
    /// without a home directory of their own). The same under cron, su, sudo, ssh and systemd.
    /// Must be owned by you with mode 0700.
    #[arg(long, value_name = "DIR", env = "PGSAFE_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

impl RunDirArg {
    fn path(&self) -> PathBuf {
        self.run_dir.clone().unwrap_or_else(RunDir::default_path)
    }

    /// Opens the run directory, creating it if needed (commands that start a backup).
    pub fn open(&self) -> anyhow::Result<RunDir> {
        Ok(RunDir::open(self.path())?)
    }

    /// Opens an existing run directory, creating nothing; `None` if it does not exist.
    pub fn open_existing(&self) -> anyhow::Result<Option<RunDir>> {
        Ok(RunDir::open_existing(self.path())?)
    }

    /// Like [`RunDirArg::open_existing`], but a missing directory is an error naming `id`.
    fn open_for(&self, id: &BackupId) -> anyhow::Result<RunDir> {
        match self.open_existing()? {
            Some(r) => Ok(r),
            None => Err(crate::failure::error(
                pgsafe::error::ErrorKind::NotFound,
                format!(
                    "no backup with ID {id} in {}: the directory does not exist (was `pgsafe \
                     start` run with another --run-dir or PGSAFE_RUN_DIR, or as another user?)",
                    self.path().display()
                ),
            )),
        }
    }

    /// ` --run-dir DIR` when the directory is not the default one (for commands to print).
    fn flag(&self, run_dir: &RunDir) -> String {
        if run_dir.path() == RunDir::default_path() {
            String::new()
        } else {
            format!(
                " --run-dir {}",
                shell_quote(&run_dir.path().to_string_lossy())
            )
        }
    }
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Connects to the server the options name and refuses unless `rec` was taken from it (see
/// [`hold::check_same_server`]). Nothing is checked when no connection option was given.
fn check_server(conn: &ConnArgs, rec: &BackupRecord) -> anyhow::Result<()> {
    if !conn.given() {
        return Ok(());
    }
    let settings = conn.resolve()?;
    let server = hold::identify(&settings).map_err(|e| {
        anyhow::Error::new(e).context(
            "run the command without connection options to act on the backup by its ID alone",
        )
    })?;
    hold::check_same_server(rec, &server)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run_dir: RunDirArg,
    /// Backup ID: names this backup for stop/status/abort; several IDs may run at once.
    #[arg(long, default_value = "default")]
    pub id: BackupId,
    /// Label stored in backup_label (one line, at most 1023 bytes). Default: "pgsafe <ID>".
    #[arg(long)]
    pub label: Option<String>,
    /// Request an immediate checkpoint (default: the caller is waiting).
    #[arg(long, overrides_with = "spread")]
    pub fast: bool,
    /// Wait for a spread checkpoint instead (less I/O impact, start can take minutes).
    #[arg(long)]
    pub spread: bool,
    /// Abort the backup if it is still held after this long (e.g. 90m, 24h, 2d).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub max_hold: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// The same connection options as `start` (optional): the backup is stopped only if it runs
    /// on that server (system identifier, data_directory, port, primary or standby).
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run_dir: RunDirArg,
    /// Backup ID given to `pgsafe start`.
    #[arg(long, default_value = "default")]
    pub id: BackupId,
    /// Write backup_label (and tablespace_map, when the backup has tablespaces) into DIR —
    /// typically the root of the mounted snapshot or the backup's staging folder.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// Also insert the result (label, map, LSNs, times) into this table, created if missing
    /// (SCHEMA.TABLE; primary only): for backup software that reads results from SQL.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub record_table: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ArchiveArgs {
    /// Wait until the WAL the backup needs is archived; fail if this server does not archive.
    /// Default: wait when archiving is on (primary: archive_mode on/always; standby: always).
    #[arg(long, conflicts_with = "no_wait_archive")]
    pub wait_archive: bool,
    /// Do not wait for WAL archiving (you then make sure the WAL reaches the backup).
    #[arg(long)]
    pub no_wait_archive: bool,
    /// How long to wait for archiving before reporting the WAL file still missing.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub archive_timeout: Duration,
}

impl ArchiveArgs {
    fn options(&self) -> StopOptions {
        let wait_archive = if self.wait_archive {
            WaitArchive::Yes
        } else if self.no_wait_archive {
            WaitArchive::No
        } else {
            WaitArchive::Auto
        };
        StopOptions {
            wait_archive,
            archive_timeout_secs: self.archive_timeout.as_secs(),
            record_table: None,
        }
    }
}

#[derive(Args, Debug)]
pub struct IdArgs {
    /// The same connection options as `start` (optional): only a backup on that server is
    /// acted on (status without --id: only backups on that server are listed).
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub run_dir: RunDirArg,
    /// Backup ID (status: all backups when omitted; abort: "default" when omitted).
    #[arg(long)]
    pub id: Option<BackupId>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Command that takes the snapshot or copy (run with sh -c). It sees PGSAFE_START_LSN,
    /// PGSAFE_START_WAL, PGSAFE_START_TIMELINE, PGSAFE_BACKUP_ID, PGSAFE_LABEL and
    /// PGSAFE_OUTPUT_DIR. If it fails, the backup is aborted and nothing is written.
    #[arg(long, value_name = "CMD")]
    pub exec: String,
    /// Where to write backup_label / tablespace_map after the command succeeded. Checked before
    /// the backup starts (writable, or creatable; not a live data directory or inside one) and
    /// again before the stop.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub run_dir: RunDirArg,
    /// Backup ID: its record goes into the run directory (`pgsafe status` shows it, `pgsafe
    /// stop --id ID` returns its result again); a held backup with this ID makes it refuse.
    #[arg(long, default_value = "snapshot")]
    pub id: BackupId,
    /// Label stored in backup_label (one line, at most 1023 bytes). Default: "pgsafe <ID>".
    #[arg(long)]
    pub label: Option<String>,
    /// Request an immediate checkpoint (the default).
    #[arg(long, overrides_with = "spread")]
    pub fast: bool,
    /// Wait for a spread checkpoint instead (less I/O impact, start can take minutes).
    #[arg(long)]
    pub spread: bool,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `"2s"`, `"90m"`, `"24h"`, `"2d"`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 90m, 24h"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

pub fn start(args: StartArgs) -> anyhow::Result<u8> {
    let conn = args.conn.resolve()?;
    let connection = Some(args.conn.shown(&conn));
    let run_dir = args.run_dir.open()?;
    let label = args.label.unwrap_or_else(|| format!("pgsafe {}", args.id));
    pgsafe::session::check_label(&label)?;
    let config = HolderConfig {
        id: args.id.clone(),
        conn,
        label,
        fast: !args.spread,
        max_hold_secs: args.max_hold.as_secs().max(1),
        connection,
    };
    let exe = std::env::current_exe().context("find the pgsafe executable to start the holder")?;
    let run_dir_arg = run_dir.path().to_string_lossy().into_owned();
    let rec = hold::spawn_holder(
        &run_dir,
        &exe,
        &["__holder", "--run-dir", &run_dir_arg],
        &config,
    )?;
    if args.json {
        crate::render::json(&rec)?;
    } else {
        println!("backup {} in progress", rec.id);
        print_start(&rec);
        field(
            "holder",
            format!(
                "pid {} (log {})",
                rec.holder_pid,
                run_dir.log(&rec.id).display()
            ),
        );
        println!(
            "Take the snapshot or copy now, then run: pgsafe stop --id {}{}",
            rec.id,
            args.run_dir.flag(&run_dir)
        );
    }
    Ok(exit::OK)
}

fn print_start(rec: &BackupRecord) {
    if let (Some(lsn), Some(wal), Some(tli)) = (rec.start_lsn, rec.start_wal, rec.start_tli) {
        field("start LSN", lsn);
        field("start WAL file", format!("{wal} (timeline {tli})"));
    }
    field("label", &rec.label);
    field(
        "server",
        format!(
            "{} ({}{})",
            rec.shown_server(),
            rec.server_version.as_deref().unwrap_or("?"),
            if rec.from_standby { ", standby" } else { "" }
        ),
    );
}

pub fn stop(args: StopArgs) -> anyhow::Result<u8> {
    let run_dir = args.run_dir.open_for(&args.id)?;
    if args.conn.given() {
        check_server(&args.conn, &hold::status(&run_dir, &args.id)?)?;
    }
    let opts = StopOptions {
        record_table: args.record_table.clone(),
        ..args.archive.options()
    };
    let (rec, written) = match hold::stop_into(&run_dir, &args.id, opts, args.output_dir.as_deref())
    {
        Ok(r) => r,
        Err(e @ HoldError::LabelNotWritten { .. }) => {
            let dir = args.output_dir.as_deref().unwrap_or(run_dir.path());
            let advice = format!(
                "{e}\nFinish the job with:\n  pgsafe stop --id {}{} --output-dir {}",
                args.id,
                args.run_dir.flag(&run_dir),
                shell_quote(&dir.to_string_lossy())
            );
            return Err(crate::failure::advised(e, advice));
        }
        Err(e) => return Err(e.into()),
    };
    report_final(&rec, &written, args.output_dir.as_deref(), args.json)
}

/// Prints a stopped (or failed) backup; exit code 0 only if it is usable.
fn report_final(
    rec: &BackupRecord,
    written: &[PathBuf],
    output_dir: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<u8> {
    let record_failed = rec
        .result
        .as_ref()
        .and_then(|r| r.recorded.as_deref())
        .filter(|r| r.starts_with("FAILED"));
    let code = if rec.is_usable() && record_failed.is_none() {
        exit::OK
    } else {
        exit::ERROR
    };
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            record: &'a BackupRecord,
            usable: bool,
            written: &'a [PathBuf],
        }
        crate::render::summary(
            &Out {
                record: rec,
                usable: rec.is_usable(),
                written,
            },
            output_dir,
            code,
        )?;
    } else if let Some(res) = rec
        .result
        .as_ref()
        .filter(|_| rec.state == BackupState::Complete)
    {
        println!("backup {} complete", rec.id);
        print_start(rec);
        field("stop LSN", res.stop_lsn);
        field(
            "stop WAL file",
            format!("{} (timeline {})", res.stop_wal, res.stop_tli),
        );
        field("WAL archiving", &res.archive.detail);
        if let Some(r) = &res.recorded {
            field("record table", r);
        }
        field("stopped at", epoch(res.stopped_at));
        for p in written {
            field("wrote", p.display());
        }
        let mut out = crate::output::Stdout;
        writeln!(out, "--- backup_label ---")?;
        out.write_all(res.backup_label.as_bytes())?;
        if !res.tablespace_map.is_empty() {
            writeln!(out, "--- tablespace_map ---")?;
            out.write_all(res.tablespace_map.as_bytes())?;
        }
        writeln!(out, "--- end ---")?;
    }
    if rec.is_usable() {
        if let Some(r) = record_failed {
            eprintln!("pgsafe: error: backup {} is usable, but {r}", rec.id);
        }
        return Ok(code);
    }
    let why = match (&rec.failure, &rec.result) {
        (Some(f), _) => f.clone(),
        (None, Some(res)) => res.archive.detail.clone(),
        (None, None) => format!("the backup is {}", rec.state),
    };
    eprintln!("pgsafe: error: backup {} is NOT usable: {why}", rec.id);
    Ok(exit::ERROR)
}

pub fn status(args: IdArgs) -> anyhow::Result<u8> {
    // Read-only: a missing run directory is not created, and no lock file is left behind.
    let run_dir = match &args.id {
        Some(id) => Some(args.run_dir.open_for(id)?),
        None => args.run_dir.open_existing()?,
    };
    let ids = match (&run_dir, args.id) {
        (_, Some(id)) => vec![id],
        (Some(run), None) => run.ids()?,
        (None, None) => vec![],
    };
    let mut recs = match &run_dir {
        Some(run) => ids
            .iter()
            .map(|id| hold::status(run, id))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![],
    };
    let mut elsewhere = 0;
    if args.conn.given() && !recs.is_empty() {
        let settings = args.conn.resolve()?;
        let server = hold::identify(&settings)?;
        if ids.len() == 1 && recs.len() == 1 {
            hold::check_same_server(&recs[0], &server)?;
        } else {
            let before = recs.len();
            recs.retain(|r| hold::check_same_server(r, &server).is_ok());
            elsewhere = before - recs.len();
        }
    }
    if args.json {
        crate::render::json(&recs)?;
        return Ok(exit::OK);
    }
    let shown_dir = run_dir
        .as_ref()
        .map_or_else(|| args.run_dir.path(), |r| r.path().to_path_buf());
    if recs.is_empty() {
        println!("no backups known in {}", shown_dir.display());
    } else {
        print_status_table(&recs);
    }
    if elsewhere > 0 {
        println!("({elsewhere} backup(s) of other servers not shown)");
    }
    Ok(exit::OK)
}

/// `status` as a table whose columns are as wide as their widest cell.
fn print_status_table(recs: &[BackupRecord]) {
    let now = hold_now();
    let header = ["ID", "STATE", "START LSN", "AGE", "HOLDER", "SERVER"];
    let rows: Vec<[String; 6]> = recs
        .iter()
        .map(|r| {
            let age = Duration::from_secs(now.saturating_sub(r.started_at).max(0) as u64);
            [
                r.id.to_string(),
                r.state.to_string(),
                r.start_lsn.map_or_else(|| "-".into(), |l| l.to_string()),
                fmt_age(age),
                if r.state.is_final() {
                    "-".into()
                } else {
                    r.holder_pid.to_string()
                },
                r.shown_server().to_owned(),
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i == 5 {
                out.push_str(cell);
            } else if i == 3 {
                // AGE is a number: right-aligned.
                out.push_str(&format!("{cell:>w$}  "));
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out
    };
    println!("{}", line(header));
    for row in &rows {
        println!("{}", line(row.each_ref().map(String::as_str)));
    }
}

fn hold_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn abort(args: IdArgs) -> anyhow::Result<u8> {
    let id = match args.id {
        Some(id) => id,
        None => "default".parse()?,
    };
    let run_dir = args.run_dir.open_for(&id)?;
    if args.conn.given() {
        check_server(&args.conn, &hold::status(&run_dir, &id)?)?;
    }
    let rec = hold::abort(&run_dir, &id)?;
    if args.json {
        crate::render::json(&rec)?;
    } else {
        println!("backup {}: {}", rec.id, rec.state);
        if let Some(f) = &rec.failure {
            println!("{f}");
        }
    }
    Ok(exit::OK)
}

pub fn snapshot(args: SnapshotArgs) -> anyhow::Result<u8> {
    let conn = args.conn.resolve()?;
    let connection = Some(args.conn.shown(&conn));
    let run_dir = args.run_dir.open()?;
    let label = args.label.unwrap_or_else(|| format!("pgsafe {}", args.id));
    let id = args.id.clone();
    let finish = |dir: &std::path::Path| {
        format!(
            "Finish the job with:\n  pgsafe stop --id {id}{} --output-dir {}",
            args.run_dir.flag(&run_dir),
            shell_quote(&dir.to_string_lossy())
        )
    };
    let opts = SnapshotOptions {
        id: args.id.clone(),
        conn,
        label,
        fast: !args.spread,
        command: args.exec.clone(),
        output_dir: args.output_dir.clone(),
        stop: args.archive.options(),
        run_dir: Some(run_dir.clone()),
        connection,
    };
    let report = match hold::snapshot(&opts) {
        Ok(r) => r,
        Err(e @ HoldError::LabelNotWritten { .. }) => {
            let dir = args.output_dir.clone().unwrap_or_default();
            let advice = format!("{e}\n{}", finish(&dir));
            return Err(crate::failure::advised(e, advice));
        }
        Err(e) => return Err(e.into()),
    };
    if !report.command_succeeded {
        if args.json {
            crate::render::json(&report)?;
        }
        eprintln!(
            "pgsafe: error: backup {} aborted: {}",
            report.record.id,
            report
                .record
                .failure
                .as_deref()
                .unwrap_or("the command failed")
        );
        return Ok(exit::EXEC_FAILED);
    }
    report_final(
        &report.record,
        &report.written,
        args.output_dir.as_deref(),
        args.json,
    )
}

/// The hidden holder entry: stdin carries the configuration, stdout is the readiness pipe.
pub fn holder(run_dir: PathBuf) -> anyhow::Result<u8> {
    let run_dir = RunDir::open(run_dir)?;
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    hold::run_holder(&run_dir, &mut stdin, &mut stdout)?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
