//! Snapshot mode: a detached *holder* process keeps the backup session open between
//! `pgsafe start` and `pgsafe stop`, so pre-/post-backup hooks that return at once can still use
//! the non-exclusive backup API.
//!
//! One holder per backup ID. Everything about a backup lives in the private run directory:
//!
//! | file | written by | meaning |
//! |---|---|---|
//! | `<id>.lock` | holder | `flock`ed for the holder's whole life: the only liveness test trusted |
//! | `<id>.sock` | holder | control socket (0600, peer uid checked), JSON lines, versioned |
//! | `<id>.json` | holder, or `stop` for a dead holder | the [`BackupRecord`]; final once `state` is final |
//! | `<id>.log`  | holder | the holder's log (its stderr) |
//!
//! The run directory is `--run-dir`, `$PGSAFE_RUN_DIR`, else [`RunDir::default_path`]: a
//! per-user path taken from the password database, never from login-session variables, so
//! `start` under cron and `stop` over SSH (or su, sudo, systemd) find the same holders.
//!
//! A record whose state is final (complete, failed, aborted) is written durably before the
//! holder answers, so a repeated `stop` returns the same result even after the holder exited.

mod holder;
mod oneshot;
mod outdir;
mod protocol;
mod rundir;

pub use crate::runrecord::{BackupId, BackupRecord, BackupState, InvalidBackupId, StopResult};
pub use crate::textbytes::TextBytes;
pub use holder::{HolderConfig, run_holder};
pub use oneshot::{SnapshotOptions, SnapshotReport, snapshot, write_label_files};
pub use outdir::{ServerIdentity, check_output_dir, check_output_dir_early, check_writable};
pub use protocol::{Refusal, Request, Response, StopOptions, WaitArchive};
pub use rundir::RunDir;

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::conninfo::ConnSettings;
use crate::fsutil::{FsError, IoContext};
pub use crate::session::ArchiveStatus;
use crate::session::Session;

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "invalid backup ID {0:?}: use 1–64 letters, digits, '.', '_' or '-' (not starting with '.')"
    )]
    BadId(String),
    #[error(
        "a backup with ID {id} is already in progress (holder pid {pid}); stop or abort it first, or use another backup ID"
    )]
    AlreadyRunning { id: String, pid: String },
    #[error("no backup with ID {id} in {run_dir}{known}")]
    UnknownId {
        id: String,
        run_dir: PathBuf,
        known: String,
    },
    #[error(
        "socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a run directory with a \
         shorter path",
        .0.display()
    )]
    SocketPathTooLong(PathBuf),
    #[error("start the holder process {exe}: {source}")]
    Spawn { exe: PathBuf, source: io::Error },
    /// The backup could not start in the holder process: its report, with the kind of the
    /// holder's error (the error itself stayed in that process).
    #[error("{message}")]
    StartFailed {
        message: String,
        kind: crate::error::ErrorKind,
    },
    #[error("the backup could not start: {0}")]
    Connect(#[source] crate::conninfo::ConnectError),
    #[error("the backup could not start: {0}")]
    Session(#[source] crate::session::SessionError),
    #[error("could not connect to check which server the backup is on: {0}")]
    Identify(#[source] IdentifyError),
    #[error("talk to the holder of backup {id} over {socket}: {source}")]
    Channel {
        id: String,
        socket: PathBuf,
        source: io::Error,
    },
    #[error("the holder of backup {id} answered something pgsafe does not understand: {detail}")]
    Protocol { id: String, detail: String },
    #[error(
        "the holder of backup {id} answered something pgsafe does not understand: {source} in \
         {answer:?}"
    )]
    BadAnswer {
        id: String,
        answer: String,
        #[source]
        source: serde_json::Error,
    },
    /// Encoding what pgsafe itself built (a request, the holder's configuration, a record).
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The holder refused the request, or (`snapshot`) pgsafe refused to start.
    #[error("{}", refused_text(.0))]
    Refused(#[source] Refusal),
    #[error("the server could not stop the backup: {0}; the copy is NOT usable")]
    StopFailed(#[source] crate::session::SessionError),
    /// `snapshot` without a run directory: the label exists nowhere else than in this error.
    #[error(
        "the backup IS stopped and complete, but its label files could not be written \
         ({source}); write them yourself, byte for byte, into the backup's root. \
         backup_label:\n{label}"
    )]
    LabelOnlyHere {
        /// `backup_label` (and `tablespace_map`) as text, hex-escaped where not UTF-8.
        label: String,
        #[source]
        source: Box<HoldError>,
    },
    #[error("read backup record {}: {source}", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "backup {id} is not a backup of the server you connected to: {why}. Nothing was done; \
         connect to the server the backup was started on"
    )]
    OtherServer { id: String, why: String },
    #[error(
        "backup {id} IS stopped and complete, but its label files could not be written into \
         {dir}: {source}. backup_label and tablespace_map are kept, byte for byte, in {record}; \
         once the directory is writable, stopping the backup again writes them"
    )]
    LabelNotWritten {
        id: String,
        dir: PathBuf,
        record: PathBuf,
        source: Box<HoldError>,
    },
    #[error(
        "refusing to write backup_label into {dir}: {why}. A backup_label belongs in the root of \
         the snapshot or copy, never in a data directory a server runs on (after a crash that \
         server would recover from the label's checkpoint, or not start at all){next}"
    )]
    UnsafeOutputDir {
        dir: PathBuf,
        why: String,
        /// What happened to the backup, filled in by the caller.
        next: &'static str,
    },
    #[error("cannot write backup_label into {dir}: {why}{next}")]
    OutputDirNotWritable {
        dir: PathBuf,
        why: String,
        /// What happened to the backup, filled in by the caller.
        next: &'static str,
    },
}

/// A typed refusal says what happened itself; the holder's own words are marked as its.
fn refused_text(r: &Refusal) -> String {
    match r {
        Refusal::Other { .. } => format!("the holder refused: {r}"),
        _ => r.to_string(),
    }
}

/// Why the server a command connected to could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    #[error("{0}")]
    Connect(#[from] crate::conninfo::ConnectError),
    #[error("{0}")]
    Session(#[from] crate::session::SessionError),
}

impl From<InvalidBackupId> for HoldError {
    fn from(e: InvalidBackupId) -> HoldError {
        HoldError::BadId(e.0)
    }
}

impl HoldError {
    /// An output-directory refusal with `next` (what became of the backup) filled in; other
    /// errors as they are.
    pub(crate) fn with_next(self, then: &'static str) -> HoldError {
        match self {
            HoldError::UnsafeOutputDir { dir, why, .. } => HoldError::UnsafeOutputDir {
                dir,
                why,
                next: then,
            },
            HoldError::OutputDirNotWritable { dir, why, .. } => HoldError::OutputDirNotWritable {
                dir,
                why,
                next: then,
            },
            e => e,
        }
    }
}

/// Connects to `conn` and reads what tells one server from another: system identifier,
/// `data_directory` (when readable), port and whether it is a standby.
pub fn identify(conn: &ConnSettings) -> Result<ServerIdentity, HoldError> {
    let client = conn.connect().map_err(|e| HoldError::Identify(e.into()))?;
    let mut session = Session::new(client).map_err(|e| HoldError::Identify(e.into()))?;
    let port = server_port(&mut session);
    let info = session.info();
    Ok(ServerIdentity {
        system_id: Some(info.system_id),
        data_directory: info.data_directory.clone(),
        port,
        in_recovery: Some(info.in_recovery),
    })
}

/// The server's `port` setting (readable by every role); `None` if it cannot be read.
pub(crate) fn server_port(session: &mut Session) -> Option<u16> {
    session
        .client()
        .query_one("SELECT current_setting('port')", &[])
        .ok()
        .and_then(|r| r.try_get::<_, String>(0).ok())
        .and_then(|p| p.trim().parse().ok())
}

/// Refuses when `server` is not the server `rec` was taken from: another system identifier,
/// another `data_directory`, another port, or a primary where the backup ran on a standby (or
/// the reverse). A fact either side does not know is not compared.
pub fn check_same_server(rec: &BackupRecord, server: &ServerIdentity) -> Result<(), HoldError> {
    let ours = rec.server_identity();
    let differs = |what: &str, theirs: String, mine: String| {
        Err(HoldError::OtherServer {
            id: rec.id.to_string(),
            why: format!(
                "it was started on the server with {what} {mine}, and this one has {theirs}"
            ),
        })
    };
    if let (Some(a), Some(b)) = (ours.system_id, server.system_id) {
        if a != b {
            return differs("system identifier", b.to_string(), a.to_string());
        }
    }
    if let (Some(a), Some(b)) = (&ours.data_directory, &server.data_directory) {
        if a != b {
            return differs("data_directory", b.clone(), a.clone());
        }
    }
    if let (Some(a), Some(b)) = (ours.port, server.port) {
        if a != b {
            return differs("port", b.to_string(), a.to_string());
        }
    }
    if let (Some(a), Some(b)) = (ours.in_recovery, server.in_recovery) {
        if a != b {
            let role = |standby: bool| if standby { "standby" } else { "primary" }.to_owned();
            return differs("role", role(b), role(a));
        }
    }
    Ok(())
}

/// Starts a holder: re-executes `exe` with `args` (which must lead to [`run_holder`]), detached
/// (its stdin is a pipe carrying `config` — so the password never appears in its arguments or
/// environment —, its stdout a pipe used once to report readiness, its stderr the log file), and
/// waits until it reports that the server confirmed backup mode, or why it could not.
pub fn spawn_holder(
    run_dir: &RunDir,
    exe: &Path,
    args: &[&str],
    config: &HolderConfig,
) -> Result<BackupRecord, HoldError> {
    let id = &config.id;
    run_dir.check_socket_len(id)?;
    if run_dir.is_live(id)? {
        let pid = run_dir
            .read_record(id)
            .ok()
            .flatten()
            .map_or_else(|| "unknown".into(), |r| r.holder_pid.to_string());
        return Err(HoldError::AlreadyRunning {
            id: id.to_string(),
            pid,
        });
    }
    let log_path = run_dir.log(id);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ctx("open holder log", &log_path)?;
    let mut child = Command::new(exe)
        .args(args)
        .env_remove("PGPASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .current_dir("/")
        .spawn()
        .map_err(|source| HoldError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
    let payload = serde_json::to_vec(config).map_err(|source| HoldError::Encode {
        what: "the holder configuration",
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // An error here means the child died at once; its report (or EOF) below says why.
        let _ = stdin.write_all(&payload);
    }
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let report: Result<protocol::Ready, _> = serde_json::from_str(line.trim());
    match report {
        Ok(protocol::Ready {
            record: Some(rec), ..
        }) => Ok(rec),
        Ok(protocol::Ready {
            error: Some(message),
            kind,
            ..
        }) => {
            let _ = child.wait();
            Err(HoldError::StartFailed {
                message,
                kind: kind.unwrap_or(crate::error::ErrorKind::Internal),
            })
        }
        _ => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let tail = log_tail(&log_path, 10);
            Err(HoldError::StartFailed {
                message: format!(
                    "the backup could not start: the holder process exited ({status}) before \
                     confirming backup mode; its log {} ends with:\n{tail}",
                    log_path.display()
                ),
                kind: crate::error::ErrorKind::Internal,
            })
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends one request to the holder of `id` and returns its answer.
pub fn request(
    run_dir: &RunDir,
    id: &BackupId,
    req: &Request,
    timeout: Option<Duration>,
) -> Result<Response, HoldError> {
    let socket = run_dir.socket(id);
    let chan = |source| HoldError::Channel {
        id: id.to_string(),
        socket: socket.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&socket).map_err(chan)?;
    stream.set_read_timeout(timeout).map_err(chan)?;
    let mut line =
        serde_json::to_string(&protocol::RequestLine(req)).map_err(|source| HoldError::Encode {
            what: "the request",
            source,
        })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(chan)?;
    let mut answer = String::new();
    let n = BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(chan)?;
    if n == 0 {
        // End of stream before any answer: the holder ended (killed, or exited) while this
        // request was open. Its record is the answer; callers treat this like a lost channel.
        return Err(chan(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the holder ended without answering",
        )));
    }
    serde_json::from_str(answer.trim()).map_err(|source| HoldError::BadAnswer {
        id: id.to_string(),
        answer: answer.clone(),
        source,
    })
}

/// The current record of `id`: from its live holder if there is one, else from its record file
/// (a record that is not final but whose holder is gone is turned into a failure and saved).
pub fn status(run_dir: &RunDir, id: &BackupId) -> Result<BackupRecord, HoldError> {
    if run_dir.is_live(id)? {
        if let Ok(Response {
            record: Some(r), ..
        }) = request(run_dir, id, &Request::Status, Some(Duration::from_secs(10)))
        {
            return Ok(r);
        }
        // The holder is alive but busy (e.g. still starting): its record file is current.
        if let Some(r) = run_dir.read_record(id)? {
            return Ok(r);
        }
    }
    settle_dead(run_dir, id)
}

/// Stops the backup `id` (idempotent: a final record is returned again as it is).
pub fn stop(run_dir: &RunDir, id: &BackupId, opts: StopOptions) -> Result<BackupRecord, HoldError> {
    if run_dir.is_live(id)? {
        match request(run_dir, id, &Request::Stop(opts), None) {
            Ok(Response {
                record: Some(r), ..
            }) => return Ok(r),
            Ok(Response {
                refusal: Some(r), ..
            }) => return Err(HoldError::Refused(r)),
            Ok(Response { error: Some(e), .. }) => return Err(HoldError::Refused(e.into())),
            Ok(_) => {
                return Err(HoldError::Protocol {
                    id: id.to_string(),
                    detail: "empty answer".into(),
                });
            }
            // The holder died while we talked to it, or finished and removed its socket: its
            // record is the answer.
            Err(HoldError::Channel { .. }) if !run_dir.is_live_soon(id)? => {}
            Err(e @ HoldError::Channel { .. }) => match run_dir.read_record(id)? {
                Some(rec) if rec.state.is_final() => return Ok(rec),
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    settle_dead(run_dir, id)
}

/// [`stop`], writing the label files into `output_dir` when given. The directory is checked
/// first ([`check_output_dir`]): a live or foreign data directory is refused *before* the
/// backup is stopped, so it stays in progress for a `stop` with the right directory.
pub fn stop_into(
    run_dir: &RunDir,
    id: &BackupId,
    opts: StopOptions,
    output_dir: Option<&Path>,
) -> Result<(BackupRecord, Vec<PathBuf>), HoldError> {
    if let Some(dir) = output_dir {
        let rec = status(run_dir, id)?;
        if let Err(e) =
            check_output_dir(dir, &rec.server_identity()).and_then(|()| check_writable(dir))
        {
            return Err(if rec.state.is_final() {
                e
            } else {
                e.with_next(
                    ". The backup is still in progress: run `pgsafe stop` again with the root of \
                     the snapshot or copy, or, for a read-only snapshot, a folder kept with it \
                     (named after the snapshot)",
                )
            });
        }
    }
    let rec = stop(run_dir, id, opts)?;
    let written = match (&rec.result, output_dir) {
        (Some(res), Some(dir)) if rec.state == BackupState::Complete => write_label_files(
            dir,
            res.backup_label.as_bytes(),
            res.tablespace_map.as_bytes(),
        )
        .map_err(|e| HoldError::LabelNotWritten {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            record: run_dir.record_path(id),
            source: Box::new(e),
        })?,
        _ => vec![],
    };
    Ok((rec, written))
}

/// Aborts the backup `id`: the holder closes its session and the server discards the backup.
pub fn abort(run_dir: &RunDir, id: &BackupId) -> Result<BackupRecord, HoldError> {
    if run_dir.is_live(id)? {
        match request(run_dir, id, &Request::Abort, Some(Duration::from_secs(60))) {
            Ok(Response {
                record: Some(r), ..
            }) => return Ok(r),
            Ok(Response {
                refusal: Some(r), ..
            }) => return Err(HoldError::Refused(r)),
            Ok(Response { error: Some(e), .. }) => return Err(HoldError::Refused(e.into())),
            Ok(_) | Err(HoldError::Channel { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let rec = settle_dead(run_dir, id)?;
    // The holder may have finished a stop and exited between the liveness check and the
    // request (a stop racing the abort): the record then says complete, and an abort that
    // reported success would tell the hook the backup is gone when its label is kept.
    if rec.state == BackupState::Complete {
        return Err(HoldError::Refused(Refusal::NothingToAbort));
    }
    Ok(rec)
}

/// No live holder: the record file is the truth. A non-final record means the holder died
/// without finishing: the server aborted the backup when the session ended.
fn settle_dead(run_dir: &RunDir, id: &BackupId) -> Result<BackupRecord, HoldError> {
    let Some(mut rec) = run_dir.read_record(id)? else {
        let ids = run_dir.ids()?;
        let known = if ids.is_empty() {
            " (no backups are known there; was the backup started with another run directory?)"
                .into()
        } else {
            let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            format!(" (known IDs: {})", names.join(", "))
        };
        return Err(HoldError::UnknownId {
            id: id.to_string(),
            run_dir: run_dir.path().to_path_buf(),
            known,
        });
    };
    let pending = rec.state == BackupState::Complete
        && rec.result.as_ref().is_some_and(|r| {
            !r.archive.complete && !r.archive.detail.contains("can no longer re-check")
        });
    if pending {
        // Stopped and labelled, but the holder ended before archiving was confirmed (killed,
        // or it gave up waiting): nobody re-checks any more, so say what the DBA must check.
        let pid = rec.holder_pid;
        if let Some(res) = rec.result.as_mut() {
            res.archive.detail = format!(
                "{}; then the holder process (pid {pid}) ended, so pgsafe can no longer re-check: \
                 the backup is usable once {} are in the archive",
                res.archive.detail,
                res.archive_needs.join(" and ")
            );
        }
        run_dir.write_record(&rec)?;
    }
    if !rec.state.is_final() {
        rec.failure = Some(format!(
            "the holder process (pid {}) ended while the backup was {}: its database session is \
             gone, so the server aborted the backup. The copy taken since `pgsafe start` is NOT \
             usable; start a new backup. The holder's log is {}",
            rec.holder_pid,
            rec.state,
            run_dir.log(id).display()
        ));
        rec.state = BackupState::Failed;
        run_dir.write_record(&rec)?;
    }
    Ok(rec)
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for ok in ["default", "nightly-2026.11.21", "a_b", "X"] {
            assert!(ok.parse::<BackupId>().is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "x".repeat(65).as_str(), "é"] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_id_lists_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();
        let err = stop(&run, &"nope".parse().unwrap(), StopOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("no backup with ID nope in"),
            "{err}"
        );
    }

    #[test]
    fn a_dead_holder_is_settled_as_failed_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();
        let id: BackupId = "b1".parse().unwrap();
        let rec = BackupRecord {
            id: id.clone(),
            state: BackupState::InProgress,
            holder_pid: 999_999,
            server: "host=/tmp".into(),
            server_version: None,
            from_standby: false,
            label: "x".into(),
            fast: true,
            start_lsn: None,
            start_tli: None,
            start_wal: None,
            started_at: 0,
            start_duration_ms: None,
            max_hold_secs: 60,
            result: None,
            failure: None,
            system_id: None,
            data_directory: None,
            port: None,
            connection: None,
        };
        run.write_record(&rec).unwrap();
        let got = stop(&run, &id, StopOptions::default()).unwrap();
        assert_eq!(got.state, BackupState::Failed);
        assert!(got.failure.as_deref().unwrap_or("").contains("NOT usable"));
        assert_eq!(
            run.read_record(&id).unwrap().unwrap().state,
            BackupState::Failed
        );
        assert!(!got.is_usable());
    }
}
