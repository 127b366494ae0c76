//! The holder process itself: owns the backup session from start to stop, answers `status`,
//! `stop` and `abort` over its socket, watches the session, and enforces `--max-hold`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::protocol::{
    Envelope, PROTOCOL_VERSION, Ready, Request, Response, StopOptions, WaitArchive,
};
use super::{BackupId, BackupRecord, BackupState, HoldError, RunDir, StopResult, unix_now};
use crate::conninfo::ConnSettings;
use crate::fsutil::IoContext;
use crate::session::{ArchiveStatus, BackupStarted, Session};

/// How often the holder checks that its session is alive.
const PING_EVERY: Duration = Duration::from_secs(2);
/// How long a holder whose backup is stopped but whose WAL is not yet archived stays around for
/// another `stop` to re-check archiving.
const PENDING_ARCHIVE_RETENTION: Duration = Duration::from_secs(3600);

/// What `pgsafe start` hands to the holder over its stdin pipe (never in argv: it carries the
/// password).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderConfig {
    pub id: BackupId,
    pub conn: ConnSettings,
    pub label: String,
    pub fast: bool,
    pub max_hold_secs: u64,
}

fn log(msg: impl std::fmt::Display) {
    eprintln!(
        "{} {msg}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
}

fn report(ready: &mut dyn Write, r: &Ready) {
    // If the parent is gone there is nobody to tell; the record file and the log remain.
    if let Ok(line) = serde_json::to_string(r) {
        let _ = writeln!(ready, "{line}");
        let _ = ready.flush();
    }
}

/// Runs the holder: reads its [`HolderConfig`] from `input`, starts the backup, reports to
/// `ready` exactly once, then serves until the backup is final. Call it in a fresh process whose
/// stderr is the holder log.
pub fn run_holder(
    run_dir: &RunDir,
    input: &mut dyn Read,
    ready: &mut dyn Write,
) -> Result<(), HoldError> {
    // Leave the caller's session and process group: a hook runner that kills its process group
    // or closes its terminal must not end the backup.
    let _ = nix::unistd::setsid();
    let mut buf = Vec::new();
    input
        .read_to_end(&mut buf)
        .ctx("read holder configuration from", run_dir.path())?;
    let config: HolderConfig = match serde_json::from_slice(&buf) {
        Ok(c) => c,
        Err(e) => {
            report(
                ready,
                &Ready {
                    record: None,
                    error: Some(format!("bad holder configuration: {e}")),
                },
            );
            return Ok(());
        }
    };
    let id = config.id.clone();
    let Some(_lock) = run_dir.try_lock(&id)? else {
        report(
            ready,
            &Ready {
                record: None,
                error: Some(format!("a backup with ID {id:?} is already in progress")),
            },
        );
        return Ok(());
    };
    // We hold the lock: any socket of this ID is a dead holder's leftover.
    let socket = run_dir.socket(&id);
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).ctx("create control socket", &socket)?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
        .ctx("set permissions of", &socket)?;

    let mut rec = BackupRecord {
        id: id.clone(),
        state: BackupState::Starting,
        holder_pid: std::process::id(),
        server: config.conn.redacted(),
        server_version: None,
        from_standby: false,
        label: config.label.clone(),
        fast: config.fast,
        start_lsn: None,
        start_tli: None,
        start_wal: None,
        started_at: unix_now(),
        start_duration_ms: None,
        max_hold_secs: config.max_hold_secs,
        result: None,
        failure: None,
    };
    run_dir.write_record(&rec)?;
    log(format_args!("backup {id}: connecting to {}", rec.server));
    let started = match start(&config) {
        Ok(s) => s,
        Err(e) => {
            log(format_args!("backup {id}: could not start: {e}"));
            // Nothing is running on the server: leave nothing behind either.
            let _ = fs::remove_file(&socket);
            let _ = fs::remove_file(run_dir.record_path(&id));
            report(
                ready,
                &Ready {
                    record: None,
                    error: Some(e),
                },
            );
            return Ok(());
        }
    };
    rec.state = BackupState::InProgress;
    rec.server_version = Some(started.info().version.to_string());
    rec.from_standby = started.info().in_recovery;
    rec.start_lsn = Some(started.start_lsn);
    rec.start_tli = Some(started.start_tli);
    rec.start_wal = Some(started.start_wal);
    rec.start_duration_ms = Some(started.start_duration.as_millis() as u64);
    run_dir.write_record(&rec)?;
    log(format_args!(
        "backup {id}: in progress, start LSN {} (WAL file {}), server {}",
        started.start_lsn,
        started.start_wal,
        started.info().version
    ));
    report(
        ready,
        &Ready {
            record: Some(rec.clone()),
            error: None,
        },
    );

    let shared = Arc::new(Mutex::new(rec));
    let (tx, rx) = mpsc::channel::<Command>();
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(listener, shared, tx));
    }
    let result = Holder {
        run_dir,
        shared,
        state: Held::Started(started),
    }
    .serve(&rx);
    let _ = fs::remove_file(&socket);
    log(format_args!("backup {id}: holder exiting"));
    result
}

fn start(config: &HolderConfig) -> Result<BackupStarted, String> {
    let client = config.conn.connect().map_err(|e| e.to_string())?;
    let mut session = Session::new(client).map_err(|e| e.to_string())?;
    session.preflight().map_err(|e| e.to_string())?;
    session
        .start_backup(&config.label, config.fast)
        .map_err(|e| e.to_string())
}

/// A request for the main loop, the channel for its answer, and a channel that the connection
/// thread closes once the answer is written (so the holder never exits with an answer unsent).
type Command = (Request, mpsc::Sender<Response>, mpsc::Receiver<()>);

/// Accepts control connections; each is served on its own short thread. `status` is answered
/// from the shared record; `stop`/`abort` go to the main loop, which owns the session.
fn accept_loop(
    listener: UnixListener,
    shared: Arc<Mutex<BackupRecord>>,
    tx: mpsc::Sender<Command>,
) {
    for stream in listener.incoming().flatten() {
        let shared = Arc::clone(&shared);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let (written_tx, written_rx) = mpsc::channel::<()>();
            let answer = match peer_allowed(&stream) {
                Err(why) => Response::error(why),
                Ok(()) => handle(&stream, &shared, &tx, written_rx),
            };
            if let Ok(line) = serde_json::to_string(&answer) {
                let _ = (&stream).write_all(format!("{line}\n").as_bytes());
            }
            drop(written_tx);
        });
    }
}

/// Only the holder's own user, or root, may talk to it.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(stream, PeerCredentials) {
        Ok(c) if c.uid() == me || c.uid() == 0 => Ok(()),
        Ok(c) => {
            log(format_args!(
                "refused a control connection from uid {}",
                c.uid()
            ));
            Err(format!(
                "permission denied: this holder belongs to uid {me}"
            ))
        }
        Err(e) => Err(format!("cannot check peer credentials: {e}")),
    }
}

fn handle(
    stream: &UnixStream,
    shared: &Mutex<BackupRecord>,
    tx: &mpsc::Sender<Command>,
    written: mpsc::Receiver<()>,
) -> Response {
    let mut line = String::new();
    if let Err(e) = BufReader::new(stream).read_line(&mut line) {
        return Response::error(format!("read request: {e}"));
    }
    let env: Envelope = match serde_json::from_str(line.trim()) {
        Ok(e) => e,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    if env.v != PROTOCOL_VERSION {
        return Response::error(format!(
            "protocol version {} not supported (this holder speaks {PROTOCOL_VERSION}); use the \
             pgsafe that started the backup",
            env.v
        ));
    }
    match env.request {
        Request::Status => Response::record(
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        ),
        req => {
            let (reply_tx, reply_rx) = mpsc::channel();
            if tx.send((req, reply_tx, written)).is_err() {
                return Response::error("the holder is shutting down");
            }
            reply_rx
                .recv()
                .unwrap_or_else(|_| Response::error("the holder ended while answering"))
        }
    }
}

enum Held {
    Started(BackupStarted),
    /// Stopped; the record is final (durably saved) but the WAL is not archived yet.
    ArchivePending {
        session: Session,
        since: Instant,
    },
    Done,
}

struct Holder<'a> {
    run_dir: &'a RunDir,
    shared: Arc<Mutex<BackupRecord>>,
    state: Held,
}

impl Holder<'_> {
    fn record(&self) -> BackupRecord {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Updates the shared record and saves it durably.
    fn save(&self, f: impl FnOnce(&mut BackupRecord)) -> Result<BackupRecord, HoldError> {
        let mut guard = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard);
        self.run_dir.write_record(&guard)?;
        Ok(guard.clone())
    }

    fn fail(&mut self, state: BackupState, why: String) -> Result<BackupRecord, HoldError> {
        log(format_args!("backup {}: {state}: {why}", self.record().id));
        if let Held::Started(s) = std::mem::replace(&mut self.state, Held::Done) {
            s.abort();
        }
        self.save(|r| {
            r.state = state;
            r.failure = Some(why);
        })
    }

    fn serve(mut self, rx: &mpsc::Receiver<Command>) -> Result<(), HoldError> {
        let max_hold = Duration::from_secs(self.record().max_hold_secs);
        let began = Instant::now();
        let mut last_ping = Instant::now();
        loop {
            match &self.state {
                Held::Done => return Ok(()),
                Held::ArchivePending { since, .. }
                    if since.elapsed() > PENDING_ARCHIVE_RETENTION =>
                {
                    log("giving up waiting for another stop to re-check WAL archiving");
                    return Ok(());
                }
                _ => {}
            }
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok((req, reply, written)) => {
                    let answer = match self.on_request(req) {
                        Ok(r) => Response::record(r),
                        Err(e) => Response::error(e),
                    };
                    // Wait until the connection thread has written the answer (it closes its end
                    // of `written` then) before possibly exiting.
                    if reply.send(answer).is_ok() {
                        let _ = written.recv_timeout(Duration::from_secs(10));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Held::Started(s) = &mut self.state {
                if began.elapsed() >= max_hold {
                    let why = format!(
                        "the backup was held longer than --max-hold ({}s), so the holder \
                         aborted it: no backup_label was produced and the copy is NOT usable",
                        max_hold.as_secs()
                    );
                    self.fail(BackupState::Failed, why)?;
                } else if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    if let Err(e) = s.ping() {
                        let why = format!(
                            "lost the database session ({e}): the server ended the backup (server \
                             restart, crash, or the session was terminated); no backup_label can \
                             be produced and the copy is NOT usable"
                        );
                        self.fail(BackupState::Failed, why)?;
                    }
                }
            }
        }
    }

    fn on_request(&mut self, req: Request) -> Result<BackupRecord, String> {
        match req {
            Request::Status => Ok(self.record()),
            Request::Abort => match self.state {
                Held::Started(_) => self
                    .fail(
                        BackupState::Aborted,
                        "aborted by `pgsafe abort`: the server discarded the backup; no \
                         backup_label was produced and the copy is NOT usable"
                            .into(),
                    )
                    .map_err(|e| e.to_string()),
                _ => Err("the backup is already stopped; there is nothing to abort".into()),
            },
            Request::Stop(opts) => self.on_stop(opts),
        }
    }

    fn on_stop(&mut self, opts: StopOptions) -> Result<BackupRecord, String> {
        let started = match std::mem::replace(&mut self.state, Held::Done) {
            Held::Started(s) => s,
            Held::ArchivePending { mut session, since } => {
                let rec = self.record();
                let Some(result) = rec.result.as_ref() else {
                    return Err("internal: stopped backup without result".into());
                };
                let archive = session.wait_for_archive(result.stop_wal, opts.archive_timeout_secs);
                let done = archive.complete;
                let rec = self
                    .save(|r| {
                        if let Some(res) = r.result.as_mut() {
                            res.archive = archive;
                        }
                    })
                    .map_err(|e| e.to_string())?;
                self.state = if done {
                    Held::Done
                } else {
                    Held::ArchivePending { session, since }
                };
                return Ok(rec);
            }
            Held::Done => return Ok(self.record()),
        };
        let info = started.info().clone();
        let applies = info.archiving_applies();
        if opts.wait_archive == WaitArchive::Yes && !applies {
            let why = if info.in_recovery {
                format!(
                    "--wait-archive on a standby needs archive_mode = always (it is {:?}): a \
                     standby with archive_mode = on does not archive. Use --no-wait-archive and \
                     make sure the WAL reaches the archive from the primary (run \
                     SELECT pg_switch_wal() there). The backup is still in progress.",
                    info.archive_mode
                )
            } else {
                format!(
                    "--wait-archive was given but archive_mode is {:?} on this server, so nothing \
                     is archived. Use --no-wait-archive. The backup is still in progress.",
                    info.archive_mode
                )
            };
            self.state = Held::Started(started);
            return Err(why);
        }
        let record_table = match opts
            .record_table
            .as_deref()
            .map(quote_qualified)
            .transpose()
        {
            Ok(t) => t,
            Err(e) => {
                self.state = Held::Started(started);
                return Err(e);
            }
        };
        if record_table.is_some() && info.in_recovery {
            self.state = Held::Started(started);
            return Err(
                "--record-table needs a primary: a standby is read-only. The backup is \
                        still in progress; stop it without --record-table"
                    .into(),
            );
        }
        let wait = applies && opts.wait_archive != WaitArchive::No;
        self.save(|r| r.state = BackupState::Stopping)
            .map_err(|e| e.to_string())?;
        log(format_args!("backup {}: stopping", self.record().id));
        let stopped = match started.stop(false) {
            Ok(s) => s,
            Err(e) => {
                let why =
                    format!("the server could not stop the backup: {e}; the copy is NOT usable");
                self.state = Held::Done;
                return self
                    .fail(BackupState::Failed, why)
                    .map_err(|e| e.to_string());
            }
        };
        let result = StopResult {
            backup_label: String::from_utf8_lossy(stopped.label.as_bytes()).into_owned(),
            tablespace_map: String::from_utf8_lossy(&stopped.tablespace_map).into_owned(),
            stop_lsn: stopped.stop_lsn,
            stop_tli: stopped.stop_tli,
            stop_wal: stopped.stop_wal,
            stopped_at: unix_now(),
            stop_duration_ms: stopped.stop_duration.as_millis() as u64,
            archive: ArchiveStatus {
                waited: wait,
                complete: !wait,
                detail: if wait {
                    "waiting for WAL archiving".into()
                } else if applies {
                    "not waited for (--no-wait-archive)".into()
                } else {
                    format!(
                        "archiving is not in effect (archive_mode = {}{}): the WAL from {} to {} \
                         must be copied by other means",
                        info.archive_mode,
                        if info.in_recovery {
                            " on a standby"
                        } else {
                            ""
                        },
                        stopped.label.fields().start.file,
                        stopped.stop_wal
                    )
                },
            },
            recorded: None,
        };
        let stop_wal = result.stop_wal;
        // The label exists only in this process until it is on disk: save it before anything
        // else can fail.
        let rec = self
            .save(|r| {
                r.state = BackupState::Complete;
                r.result = Some(result);
            })
            .map_err(|e| e.to_string())?;
        log(format_args!(
            "backup {}: stopped at {} ({})",
            rec.id, stop_wal, rec.state
        ));
        let mut session = stopped.into_session();
        let rec = match &record_table {
            Some(table) => {
                let recorded = record(&mut session, table, &rec);
                log(format_args!("backup {}: {recorded}", rec.id));
                self.save(|r| {
                    if let Some(res) = r.result.as_mut() {
                        res.recorded = Some(recorded);
                    }
                })
                .map_err(|e| e.to_string())?
            }
            None => rec,
        };
        if !wait {
            return Ok(rec);
        }
        let archive = session.wait_for_archive(stop_wal, opts.archive_timeout_secs);
        let done = archive.complete;
        let rec = self
            .save(|r| {
                if let Some(res) = r.result.as_mut() {
                    res.archive = archive;
                }
            })
            .map_err(|e| e.to_string())?;
        if !done {
            self.state = Held::ArchivePending {
                session,
                since: Instant::now(),
            };
        }
        Ok(rec)
    }
}

/// `name` or `schema.name` as a quoted SQL identifier (`"schema"."name"`).
fn quote_qualified(name: &str) -> Result<String, String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "--record-table {name:?}: expected TABLE or SCHEMA.TABLE"
        ));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join("."))
}

/// Inserts the stopped backup's result into `table` (created if missing), in the backup's own
/// session. Returns what happened, in words; a failure does not make the backup unusable.
fn record(session: &mut Session, table: &str, rec: &BackupRecord) -> String {
    let Some(res) = rec.result.as_ref() else {
        return "not recorded: no result".into();
    };
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (backup_id text, label text, start_lsn pg_lsn, \
         stop_lsn pg_lsn, start_timeline integer, stop_timeline integer, backup_label text, \
         tablespace_map text, started_at timestamptz, stopped_at timestamptz, \
         server_version text)"
    );
    let insert = format!(
        "INSERT INTO {table} VALUES ($1, $2, $3::text::pg_lsn, $4::text::pg_lsn, $5, $6, $7, $8, \
         to_timestamp($9::bigint), to_timestamp($10::bigint), $11)"
    );
    let start_lsn = rec.start_lsn.map(|l| l.to_string());
    let start_tli = rec.start_tli.map(|t| t.0 as i32);
    let result = session.client().batch_execute(&create).and_then(|()| {
        session.client().execute(
            &insert,
            &[
                &rec.id.as_str(),
                &rec.label,
                &start_lsn,
                &res.stop_lsn.to_string(),
                &start_tli,
                &(res.stop_tli.0 as i32),
                &res.backup_label,
                &res.tablespace_map,
                &rec.started_at,
                &res.stopped_at,
                &rec.server_version,
            ],
        )
    });
    match result {
        Ok(_) => format!("recorded in {table}"),
        Err(e) => format!(
            "FAILED to record in {table}: {} (the backup itself is complete)",
            crate::session::db_message(&e)
        ),
    }
}
