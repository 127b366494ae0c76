//! The holder process itself: owns the backup session from start to stop, answers `status`,
//! `stop` and `abort` over its socket, watches the session, and enforces `--max-hold`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::protocol::{
    Envelope, PROTOCOL_VERSION, Ready, Refusal, Request, Response, StopOptions, WaitArchive,
};
use super::{
    BackupId, BackupRecord, BackupState, HoldError, RunDir, StopResult, TextBytes, unix_now,
};
use crate::conninfo::ConnSettings;
use crate::error::{ErrorKind, HasKind};
use crate::fsutil::IoContext;
use crate::session::{ArchiveStatus, ArchiveWaiter, BackupStarted, POLL_EVERY, Session};
use crate::types::PgVersion;

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
    /// The connection as the user gave it (no password), for display.
    #[serde(default)]
    pub connection: Option<String>,
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
                    error: Some(format!(
                        "the backup could not start: bad holder configuration: {e}"
                    )),
                    kind: Some(ErrorKind::Internal),
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
                error: Some(format!(
                    "the backup could not start: a backup with ID {id} is already in progress"
                )),
                kind: Some(ErrorKind::Conflict),
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
        system_id: None,
        data_directory: None,
        port: None,
        connection: config.connection.clone(),
    };
    run_dir.write_record(&rec)?;
    log(format_args!("backup {id}: connecting to {}", rec.server));
    let (started, port) = match start(&config) {
        Ok(s) => s,
        Err(e) => {
            log(format_args!("backup {id}: {e}"));
            // Nothing is running on the server: leave nothing behind either.
            let _ = fs::remove_file(&socket);
            let _ = fs::remove_file(run_dir.record_path(&id));
            report(
                ready,
                &Ready {
                    record: None,
                    error: Some(e.to_string()),
                    kind: Some(e.error_kind()),
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
    rec.system_id = Some(started.info().system_id);
    rec.data_directory = started.info().data_directory.clone();
    rec.port = port;
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
            kind: None,
        },
    );

    let holder = Arc::new(Holder {
        run_dir: run_dir.clone(),
        rec: Mutex::new(rec),
        held: Mutex::new(Held::Started(started)),
        active: AtomicUsize::new(0),
    });
    {
        let holder = Arc::clone(&holder);
        std::thread::spawn(move || accept_loop(listener, holder));
    }
    let result = holder.serve();
    let _ = fs::remove_file(&socket);
    log(format_args!("backup {id}: holder exiting"));
    result
}

fn start(config: &HolderConfig) -> Result<(BackupStarted, Option<u16>), HoldError> {
    let client = config.conn.connect().map_err(HoldError::Connect)?;
    let mut session = Session::new(client).map_err(HoldError::Session)?;
    session.preflight().map_err(HoldError::Session)?;
    let port = super::server_port(&mut session);
    session
        .start_backup(&config.label, config.fast)
        .map(|s| (s, port))
        .map_err(HoldError::Session)
}

/// Accepts control connections, each served on its own thread, concurrently: a `stop` waiting
/// for WAL archiving (or a client that died while waiting) never delays a `status`, `abort` or
/// another `stop`. The threads share the holder's state under [`Holder::held`], which each one
/// holds only for one step (one query) at a time.
fn accept_loop(listener: UnixListener, holder: Arc<Holder>) {
    for stream in listener.incoming().flatten() {
        let holder = Arc::clone(&holder);
        holder.active.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let answer = match peer_allowed(&stream) {
                Err(why) => Response::error(why),
                Ok(()) => holder.handle(&stream),
            };
            if let Ok(line) = serde_json::to_string(&answer) {
                let _ = (&stream).write_all(format!("{line}\n").as_bytes());
            }
            holder.active.fetch_sub(1, Ordering::SeqCst);
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

/// True once the client at the other end of `stream` has gone (closed or killed): nothing will
/// read an answer any more.
fn client_gone(stream: &UnixStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) => false,
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => false,
        Err(_) => true,
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

struct Holder {
    run_dir: RunDir,
    /// The record `status` answers with; lock order: `held` before `rec`.
    rec: Mutex<BackupRecord>,
    held: Mutex<Held>,
    /// Control connections being served (the holder exits only once their answers are out).
    active: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Holder {
    fn record(&self) -> BackupRecord {
        lock(&self.rec).clone()
    }

    /// Updates the shared record and saves it durably.
    fn save(&self, f: impl FnOnce(&mut BackupRecord)) -> Result<BackupRecord, HoldError> {
        let mut guard = lock(&self.rec);
        f(&mut guard);
        self.run_dir.write_record(&guard)?;
        Ok(guard.clone())
    }

    /// Ends the backup (if still running) and records why it is not usable.
    fn fail(
        &self,
        held: &mut Held,
        state: BackupState,
        why: String,
    ) -> Result<BackupRecord, HoldError> {
        log(format_args!("backup {}: {state}: {why}", self.record().id));
        if let Held::Started(s) = std::mem::replace(held, Held::Done) {
            s.abort();
        }
        let rec = self.save(|r| {
            r.state = state;
            r.failure = Some(why);
        })?;
        self.retire();
        Ok(rec)
    }

    /// The record is final and saved: remove the control socket now, so that later requests go
    /// to the record file instead of to a holder that is about to exit.
    fn retire(&self) {
        let _ = fs::remove_file(self.run_dir.socket(&self.record().id));
    }

    /// Checks that the backup's session is alive; a dead one fails the backup.
    fn check_session(&self, held: &mut Held) -> Result<(), HoldError> {
        if let Held::Started(s) = held {
            if let Err(e) = s.ping() {
                let why = format!(
                    "lost the database session ({e}): the server ended the backup (server \
                     restart, crash, or the session was terminated); no backup_label can be \
                     produced and the copy is NOT usable"
                );
                self.fail(held, BackupState::Failed, why)?;
            }
        }
        Ok(())
    }

    /// The main thread: enforces `--max-hold`, watches the session, and ends the process once
    /// the backup is final and every answer is written.
    fn serve(&self) -> Result<(), HoldError> {
        let max_hold = Duration::from_secs(self.record().max_hold_secs);
        let began = Instant::now();
        let mut last_ping = Instant::now();
        let mut done_since: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let mut held = lock(&self.held);
            match &mut *held {
                Held::Done => {
                    let since = *done_since.get_or_insert_with(Instant::now);
                    // Give answers in flight time to be written (bounded: a client that never
                    // reads must not keep the holder forever).
                    if self.active.load(Ordering::SeqCst) == 0
                        || since.elapsed() > Duration::from_secs(30)
                    {
                        return Ok(());
                    }
                }
                Held::ArchivePending { since, session } => {
                    if since.elapsed() > PENDING_ARCHIVE_RETENTION {
                        log("giving up waiting for another stop to re-check WAL archiving");
                        *held = Held::Done;
                        self.retire();
                    } else if last_ping.elapsed() >= PING_EVERY {
                        last_ping = Instant::now();
                        if let Err(e) = session.ping() {
                            // Nothing left to re-check with: say so in the record and end.
                            self.save(|r| {
                                if let Some(res) = r.result.as_mut() {
                                    res.archive.detail = format!(
                                        "{}; the database session was then lost ({e}), so \
                                         pgsafe can no longer re-check: the backup is usable \
                                         once {} are in the archive",
                                        res.archive.detail,
                                        res.archive_needs.join(" and ")
                                    );
                                }
                            })?;
                            log(format_args!(
                                "lost the session while WAL archiving was pending: {e}"
                            ));
                            *held = Held::Done;
                            self.retire();
                        }
                    }
                }
                Held::Started(_) => {
                    if began.elapsed() >= max_hold {
                        let why = format!(
                            "the backup was held longer than its maximum hold time ({}s, set \
                             when it was started), so the holder aborted it: no backup_label \
                             was produced and the copy is NOT usable",
                            max_hold.as_secs()
                        );
                        self.fail(&mut held, BackupState::Failed, why)?;
                    } else if last_ping.elapsed() >= PING_EVERY {
                        last_ping = Instant::now();
                        self.check_session(&mut held)?;
                    }
                }
            }
        }
    }

    fn handle(&self, stream: &UnixStream) -> Response {
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
                "protocol version {} not supported (this holder speaks {PROTOCOL_VERSION}); use \
                 the pgsafe that started the backup",
                env.v
            ));
        }
        let result = match env.request {
            Request::Status => self.on_status(),
            Request::Abort => self.on_abort(),
            Request::Stop(opts) => self.on_stop(opts, stream),
        };
        match result {
            Ok(r) => Response::record(r),
            Err(e) => Response::refused(e),
        }
    }

    /// The record, after checking that a running backup's session is still alive (a terminated
    /// backend is not "in progress"). Never waits for another request: if the state is busy,
    /// the record as last saved is the answer.
    fn on_status(&self) -> Result<BackupRecord, Refusal> {
        if let Ok(mut held) = self.held.try_lock() {
            self.check_session(&mut held).map_err(|e| e.to_string())?;
        }
        Ok(self.record())
    }

    fn on_abort(&self) -> Result<BackupRecord, Refusal> {
        let mut held = lock(&self.held);
        match &*held {
            Held::Started(_) => self
                .fail(
                    &mut held,
                    BackupState::Aborted,
                    "aborted by `pgsafe abort`: the server discarded the backup; no backup_label \
                     was produced and the copy is NOT usable"
                        .into(),
                )
                .map_err(|e| e.to_string().into()),
            _ => Err(Refusal::NothingToAbort),
        }
    }

    fn on_stop(&self, opts: StopOptions, stream: &UnixStream) -> Result<BackupRecord, Refusal> {
        let mut held = lock(&self.held);
        let started = match std::mem::replace(&mut *held, Held::Done) {
            Held::Started(s) => s,
            Held::ArchivePending { session, since } => {
                let version = session.info().version;
                *held = Held::ArchivePending { session, since };
                drop(held);
                let rec = self.record();
                if opts.wait_archive == WaitArchive::No {
                    // Honour "do not wait": answer now, from what is known; a later stop
                    // can still re-check.
                    return Ok(not_waited_view(rec));
                }
                let needs = rec
                    .result
                    .as_ref()
                    .map(|r| r.archive_needs.clone())
                    .unwrap_or_default();
                return self.wait_archive(needs, version, opts.archive_timeout_secs, stream);
            }
            Held::Done => return Ok(self.record()),
        };
        let info = started.info().clone();
        let applies = info.archiving_applies();
        let keep = |held: &mut Held, started: BackupStarted, why: Refusal| {
            *held = Held::Started(started);
            Err(why)
        };
        if opts.wait_archive == WaitArchive::Yes && !applies {
            let why = Refusal::NotArchiving {
                archive_mode: info.archive_mode.clone(),
                on_standby: info.in_recovery,
                backup_running: true,
            };
            return keep(&mut held, started, why);
        }
        let record_table = match opts
            .record_table
            .as_deref()
            .map(quote_qualified)
            .transpose()
        {
            Ok(t) => t,
            Err(e) => return keep(&mut held, started, e),
        };
        if record_table.is_some() && info.in_recovery {
            return keep(&mut held, started, Refusal::RecordTableOnStandby);
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
                return self
                    .fail(&mut held, BackupState::Failed, why)
                    .map_err(|e| e.to_string().into());
            }
        };
        let needs = stopped.archive_needs();
        let result = StopResult {
            backup_label: TextBytes::from(stopped.label.as_bytes()),
            tablespace_map: TextBytes::from(stopped.tablespace_map.clone()),
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
                    "not waited for (as the stop asked)".into()
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
            archive_needs: needs.clone(),
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
        if let Some(table) = &record_table {
            let recorded = record(&mut session, table, &rec);
            log(format_args!("backup {}: {recorded}", rec.id));
            self.save(|r| {
                if let Some(res) = r.result.as_mut() {
                    res.recorded = Some(recorded);
                }
            })
            .map_err(|e| e.to_string())?;
        }
        if !wait {
            self.retire();
            return Ok(self.record());
        }
        *held = Held::ArchivePending {
            session,
            since: Instant::now(),
        };
        drop(held);
        self.wait_archive(needs, info.version, opts.archive_timeout_secs, stream)
    }

    /// Waits for `needs` to be archived, holding the session only for one check at a time; stops
    /// early (saving nothing) when the client that asked has gone.
    fn wait_archive(
        &self,
        needs: Vec<String>,
        version: PgVersion,
        timeout_secs: u64,
        stream: &UnixStream,
    ) -> Result<BackupRecord, Refusal> {
        let mut waiter = ArchiveWaiter::new(needs, version, Duration::from_secs(timeout_secs));
        loop {
            if client_gone(stream) {
                log(format_args!(
                    "backup {}: the stop that waited for WAL archiving went away; the next stop \
                     re-checks",
                    self.record().id
                ));
                return Ok(self.record());
            }
            let mut held = lock(&self.held);
            let Held::ArchivePending { session, .. } = &mut *held else {
                // Another stop saw the WAL archived (or the holder gave up): its record stands.
                return Ok(self.record());
            };
            if let Some(status) = waiter.poll(session.client()) {
                let done = status.complete;
                let rec = self
                    .save(|r| {
                        if let Some(res) = r.result.as_mut() {
                            res.archive = status;
                        }
                    })
                    .map_err(|e| e.to_string())?;
                if done {
                    *held = Held::Done;
                    self.retire();
                }
                return Ok(rec);
            }
            drop(held);
            std::thread::sleep(POLL_EVERY);
        }
    }
}

/// The answer to `stop --no-wait-archive` for a backup whose WAL archiving is still pending:
/// usable as far as pgsafe is asked to judge (as for a first stop with that option), with what
/// the last check found. Not saved: a later `stop` still re-checks.
fn not_waited_view(mut rec: BackupRecord) -> BackupRecord {
    if let Some(res) = rec.result.as_mut() {
        res.archive = ArchiveStatus {
            waited: false,
            complete: true,
            detail: format!(
                "not waited for (as the stop asked); the last check said: {}",
                res.archive.detail
            ),
        };
    }
    rec
}

/// `name` or `schema.name` as a quoted SQL identifier (`"schema"."name"`).
fn quote_qualified(name: &str) -> Result<String, Refusal> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(Refusal::BadRecordTable {
            name: name.to_owned(),
        });
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
                &res.backup_label.as_text(),
                &res.tablespace_map.as_text(),
                &rec.started_at,
                &res.stopped_at,
                &rec.server_version,
            ],
        )
    });
    match result {
        // A text column cannot hold bytes that are not valid in the encoding: such a file is
        // stored as NULL there, and only the record (hex) keeps it.
        Ok(_) if res.backup_label.as_text().is_none() || res.tablespace_map.as_text().is_none() => {
            format!(
                "recorded in {table}, with NULL for the label file(s) that are not UTF-8 (a \
                 tablespace path in another encoding); the backup record keeps them byte for byte"
            )
        }
        Ok(_) => format!("recorded in {table}"),
        Err(e) => format!(
            "FAILED to record in {table}: {} (the backup itself is complete)",
            crate::session::db_message(&e)
        ),
    }
}
