//! The backup session as typestate: [`Session`] (connected, facts about the server known) →
//! [`BackupStarted`] (the server is in non-exclusive backup mode for *this* session) →
//! [`BackupStopped`] (label, tablespace map and stop LSN in hand).
//!
//! Facts (`xlogfuncs.c`): the non-exclusive backup belongs to the session that started it; an
//! ERROR in that session does not abort it, a disconnect does. 10–14 use
//! `pg_start_backup(label, fast, false)` / `pg_stop_backup(false, wait)` (`exclusive` defaults to
//! TRUE there, so it is always passed), 15+ `pg_backup_start(label, fast)` /
//! `pg_backup_stop(wait)`. Stop returns `lsn, labelfile, spcmapfile`; `spcmapfile` is an empty
//! string when there are no tablespaces.

mod archive;
pub mod archive_command;
pub mod archive_target;

use std::time::{Duration, Instant};

use postgres::{Client, Row, SimpleQueryMessage};
use serde::{Deserialize, Serialize};

use crate::label::{BackupLabel, LabelError};
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, TypeError, WalSegSize, WalSegment};

pub use archive::{ArchiveWaiter, POLL_EVERY, archive_needs};

/// Longest label the server accepts (`MAXPGPATH` check in start: strlen(label) > 1024 is refused);
/// pgsafe keeps one byte of margin so the label line fits the server's 1023-byte `%1023[^\n]` read.
pub const MAX_LABEL_BYTES: usize = 1023;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{action}: {source}")]
    Sql {
        action: &'static str,
        source: Box<postgres::Error>,
    },
    #[error("PostgreSQL {version} is not supported: pgsafe supports PostgreSQL {min}–{max}{hint}")]
    UnsupportedVersion {
        version: PgVersion,
        min: u32,
        max: u32,
        hint: &'static str,
    },
    #[error(
        "wal_level is \"minimal\" on this server: an online backup needs \"replica\" or \"logical\" \
         (set wal_level = replica in postgresql.conf and restart the server)"
    )]
    WalLevelMinimal,
    #[error(
        "user {user:?} may not run {function}: connect as a superuser, or run \
         GRANT EXECUTE ON FUNCTION {signature} TO {user};{extra}"
    )]
    Privilege {
        user: String,
        function: &'static str,
        signature: &'static str,
        extra: String,
    },
    #[error(
        "an exclusive backup is in progress on this server (pg_is_in_backup() is true: a \
         backup_label exists in its data directory); finish it with SELECT pg_stop_backup() or, \
         if no backup is running, check the data directory with `pgsafe doctor` before anything else"
    )]
    ExclusiveBackupRunning,
    #[error("invalid backup label: {0}")]
    BadLabel(#[source] BadLabel),
    #[error("unexpected answer from the server to {query}: {detail}")]
    Protocol { query: &'static str, detail: String },
    #[error("the server returned a backup_label pgsafe cannot parse: {0}")]
    Label(#[from] LabelError),
    #[error("bad value from the server: {0}")]
    Value(#[from] TypeError),
}

/// Column `idx` of a server row, typed; a NULL or a value of another type is an error, never a
/// panic (`Row::get` panics on both).
fn col<'a, T: postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    query: &'static str,
) -> Result<T, SessionError> {
    row.try_get(idx).map_err(|e| SessionError::Protocol {
        query,
        detail: format!("column {}: {e}", idx + 1),
    })
}

fn sql(action: &'static str) -> impl FnOnce(postgres::Error) -> SessionError {
    move |source| SessionError::Sql {
        action,
        source: Box::new(source),
    }
}

/// Facts about the server, read once when the session is set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub version: PgVersion,
    pub in_recovery: bool,
    pub system_id: SystemId,
    pub wal_segment_size: WalSegSize,
    pub user: String,
    pub is_superuser: bool,
    pub data_directory: Option<String>,
    pub archive_mode: String,
    pub wal_level: String,
    /// `server_encoding` of the connected database (how text from the server is to be read
    /// byte for byte; see [`raw_text_sql`]).
    #[serde(default)]
    pub server_encoding: String,
}

impl ServerInfo {
    /// Whether this server archives the WAL a backup needs: a primary with archive_mode on or
    /// always, a standby only with always (`do_pg_backup_stop`, `xlog.c`).
    pub fn archiving_applies(&self) -> bool {
        if self.in_recovery {
            self.archive_mode == "always"
        } else {
            self.archive_mode == "on" || self.archive_mode == "always"
        }
    }
}

/// Whether the WAL the backup needs has reached the archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveStatus {
    /// Waiting was requested and applies to this server.
    pub waited: bool,
    /// All needed WAL is archived (always true when not waited for).
    pub complete: bool,
    pub detail: String,
}

/// A connected session whose server facts are known; no backup running.
pub struct Session {
    client: Client,
    info: ServerInfo,
}

impl Session {
    /// Sets the session up for a long backup (no statement or idle timeouts) and reads
    /// [`ServerInfo`]. Refuses servers older than 10 or newer than pgsafe knows.
    pub fn new(mut client: Client) -> Result<Session, SessionError> {
        let version = PgVersion::from_server_version_num(&simple_value(
            &mut client,
            "SHOW server_version_num",
        )?)?;
        if !version.is_supported() {
            let hint = if version.major() < PgVersion::MIN_SUPPORTED_MAJOR || version.num() < 100000
            {
                " (older servers are past end of life; upgrade, or use the tools of that era)"
            } else {
                " (this server is newer than this pgsafe; upgrade pgsafe)"
            };
            return Err(SessionError::UnsupportedVersion {
                version,
                min: PgVersion::MIN_SUPPORTED_MAJOR,
                max: PgVersion::MAX_SUPPORTED_MAJOR,
                hint,
            });
        }
        for stmt in crate::conninfo::session_setup_sql(version) {
            client
                .batch_execute(stmt)
                .map_err(sql("configure the backup session"))?;
        }
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), \
                        (SELECT system_identifier::text FROM pg_control_system()), \
                        (SELECT bytes_per_wal_segment::bigint FROM pg_control_init()), \
                        current_user::text, \
                        (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
                        current_setting('archive_mode'), current_setting('wal_level')",
                &[],
            )
            .map_err(sql("read server facts"))?;
        const FACTS: &str = "server facts";
        let sysid: String = col(&row, 1, FACTS)?;
        let seg: i64 = col(&row, 2, FACTS)?;
        // data_directory is readable by superusers and pg_read_all_settings members only.
        let data_directory = client
            .query_opt(
                "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
                &[],
            )
            .ok()
            .flatten()
            .and_then(|r| r.try_get::<_, String>(0).ok());
        let server_encoding = client
            .query_opt("SELECT current_setting('server_encoding')", &[])
            .ok()
            .flatten()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_default();
        let info = ServerInfo {
            version,
            in_recovery: col(&row, 0, FACTS)?,
            system_id: sysid.parse()?,
            wal_segment_size: WalSegSize::new(u64::try_from(seg).unwrap_or(0))?,
            user: col(&row, 3, FACTS)?,
            is_superuser: col::<Option<bool>>(&row, 4, FACTS)?.unwrap_or(false),
            data_directory,
            archive_mode: col(&row, 5, FACTS)?,
            wal_level: col(&row, 6, FACTS)?,
            server_encoding,
        };
        Ok(Session { client, info })
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Cheap liveness check of the session: `SELECT 1`.
    pub fn ping(&mut self) -> Result<(), SessionError> {
        self.client
            .simple_query("SELECT 1")
            .map(|_| ())
            .map_err(sql("check the session"))
    }

    /// Waits until every file of `needs` ([`archive_needs`]) is archived, deciding per file as
    /// the server's own `pg_backup_stop(wait => true)` does (see [`archive`]), or until
    /// `timeout_secs` have passed. Waiting here (instead of in the stop call) keeps the label
    /// safe if the wait is interrupted: the stop already returned it.
    pub fn wait_for_archive(&mut self, needs: Vec<String>, timeout_secs: u64) -> ArchiveStatus {
        let mut waiter =
            ArchiveWaiter::new(needs, self.info.version, Duration::from_secs(timeout_secs));
        loop {
            if let Some(done) = waiter.poll(&mut self.client) {
                return done;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Everything that would make a start fail or a backup useless, checked before starting:
    /// wal_level, privileges on the start/stop functions, an exclusive backup on 10–14.
    pub fn preflight(&mut self) -> Result<(), SessionError> {
        if self.info.wal_level == "minimal" {
            return Err(SessionError::WalLevelMinimal);
        }
        let api = BackupApi::for_version(self.info.version);
        if !self.info.is_superuser {
            for (function, signature) in [api.start_fn, api.stop_fn] {
                let row = self
                    .client
                    .query_one(
                        "SELECT has_function_privilege(current_user, $1::text, 'EXECUTE')",
                        &[&signature],
                    )
                    .map_err(sql("check privileges"))?;
                let ok: bool = col(&row, 0, "has_function_privilege()")?;
                if !ok {
                    let extra = if self.info.version.at_least(15) {
                        String::new()
                    } else {
                        " the user also needs to read pg_control_checkpoint(): GRANT pg_monitor \
                         helps"
                            .into()
                    };
                    return Err(SessionError::Privilege {
                        user: self.info.user.clone(),
                        function,
                        signature,
                        extra,
                    });
                }
            }
        }
        if !self.info.version.at_least(15) && !self.info.in_recovery {
            let row = self
                .client
                .query_one("SELECT pg_is_in_backup()", &[])
                .map_err(sql("check for an exclusive backup"))?;
            let busy: bool = col(&row, 0, "pg_is_in_backup()")?;
            if busy {
                return Err(SessionError::ExclusiveBackupRunning);
            }
        }
        Ok(())
    }

    /// Starts a non-exclusive backup in this session. `fast` asks for an immediate checkpoint
    /// (otherwise the start waits for a spread checkpoint).
    pub fn start_backup(mut self, label: &str, fast: bool) -> Result<BackupStarted, SessionError> {
        check_label(label)?;
        let api = BackupApi::for_version(self.info.version);
        let began = Instant::now();
        let row = self
            .client
            .query_one(api.start_sql, &[&label, &fast])
            .map_err(sql("start the backup"))?;
        let lsn_text: String = col(&row, 0, "the backup start")?;
        let start_lsn: Lsn = lsn_text.parse()?;
        // The start LSN is the redo pointer of the checkpoint the start waited for; read its
        // timeline from pg_control (pg_walfile_name() fails during recovery).
        let row = self
            .client
            .query_one(
                "SELECT redo_lsn::text, timeline_id::bigint FROM pg_control_checkpoint()",
                &[],
            )
            .map_err(sql("read the start timeline"))?;
        let tli = u32::try_from(col::<i64>(&row, 1, "pg_control_checkpoint()")?)
            .map(TimelineId)
            .map_err(|_| SessionError::Protocol {
                query: "pg_control_checkpoint()",
                detail: "timeline out of range".into(),
            })?;
        let start_wal = WalSegment::containing(start_lsn, tli, self.info.wal_segment_size);
        Ok(BackupStarted {
            session: self,
            label: label.to_owned(),
            start_lsn,
            start_tli: tli,
            start_wal,
            start_duration: began.elapsed(),
        })
    }
}

/// The SQL of the backup API of one server version.
#[derive(Debug, Clone, Copy)]
pub struct BackupApi {
    pub start_sql: &'static str,
    pub stop_sql: &'static str,
    /// The stop call as a FROM item, for selecting its columns in another form.
    pub stop_from: &'static str,
    pub start_fn: (&'static str, &'static str),
    pub stop_fn: (&'static str, &'static str),
}

impl BackupApi {
    pub fn for_version(v: PgVersion) -> BackupApi {
        if v.at_least(15) {
            BackupApi {
                start_sql: "SELECT pg_backup_start($1, $2)::text",
                stop_sql: "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop($1)",
                stop_from: "pg_backup_stop($1)",
                start_fn: ("pg_backup_start", "pg_backup_start(text, boolean)"),
                stop_fn: ("pg_backup_stop", "pg_backup_stop(boolean)"),
            }
        } else {
            BackupApi {
                start_sql: "SELECT pg_start_backup($1, $2, false)::text",
                stop_sql: "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, $1)",
                stop_from: "pg_stop_backup(false, $1)",
                start_fn: ("pg_start_backup", "pg_start_backup(text, boolean, boolean)"),
                stop_fn: ("pg_stop_backup", "pg_stop_backup(boolean, boolean)"),
            }
        }
    }
}

/// Why a label cannot be a backup's label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLabel {
    #[error("it contains a line break, which would corrupt backup_label")]
    LineBreak,
    #[error("it contains a NUL byte")]
    Nul,
    #[error("it is {len} bytes long; the limit is {MAX_LABEL_BYTES} bytes")]
    TooLong { len: usize },
}

/// Labels go into a one-line field of `backup_label`: no newlines, at most 1023 bytes.
pub fn check_label(label: &str) -> Result<(), SessionError> {
    if label.contains(['\n', '\r']) {
        return Err(SessionError::BadLabel(BadLabel::LineBreak));
    }
    if label.contains('\0') {
        return Err(SessionError::BadLabel(BadLabel::Nul));
    }
    if label.len() > MAX_LABEL_BYTES {
        return Err(SessionError::BadLabel(BadLabel::TooLong {
            len: label.len(),
        }));
    }
    Ok(())
}

/// The server is in backup mode for this session. Must be stopped ([`BackupStarted::stop`]) or
/// aborted ([`BackupStarted::abort`]); dropping it closes the connection, which makes the server
/// abort the backup.
#[must_use = "a started backup must be stopped or aborted"]
pub struct BackupStarted {
    session: Session,
    pub label: String,
    pub start_lsn: Lsn,
    pub start_tli: TimelineId,
    pub start_wal: WalSegment,
    pub start_duration: Duration,
}

impl BackupStarted {
    pub fn info(&self) -> &ServerInfo {
        &self.session.info
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.session.client
    }

    /// Cheap liveness check of the session: `SELECT 1`.
    pub fn ping(&mut self) -> Result<(), SessionError> {
        self.session
            .client
            .simple_query("SELECT 1")
            .map(|_| ())
            .map_err(sql("check the session"))
    }

    /// True if the connection is known to be gone.
    pub fn is_closed(&self) -> bool {
        self.session.client.is_closed()
    }

    /// Stops the backup in the same session. `wait_for_archive` makes the server wait until the
    /// WAL the backup needs is archived (when archiving is on; `do_pg_backup_stop`, `xlog.c`).
    pub fn stop(mut self, wait_for_archive: bool) -> Result<BackupStopped, SessionError> {
        let api = BackupApi::for_version(self.session.info.version);
        let began = Instant::now();
        // The server's clock once the stop function has returned (the select list is computed
        // after the function scan), in microseconds, rounded up: every transaction whose
        // commit or abort record lies before the stop point took its timestamp before this
        // (`RecordTransactionCommit` in src/backend/access/transam/xact.c takes it before
        // inserting the record), which is what a time target is compared with
        // (`recoveryStopsBefore` in xlogrecovery.c).
        let stop_sql = format!(
            "SELECT lsn::text, {}, {}, \
                floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint + 1 FROM {}",
            raw_text_sql(&self.session.info.server_encoding, "labelfile"),
            raw_text_sql(&self.session.info.server_encoding, "spcmapfile"),
            api.stop_from
        );
        let row = self
            .session
            .client
            .query_one(&stop_sql, &[&wait_for_archive])
            .map_err(sql("stop the backup"))?;
        const STOP: &str = "the backup stop";
        let stop_lsn: Lsn = col::<String>(&row, 0, STOP)?.parse()?;
        let label_bytes: Vec<u8> = col(&row, 1, STOP)?;
        let spcmap: Option<Vec<u8>> = col(&row, 2, STOP)?;
        let stop_time_us: Option<i64> = col(&row, 3, STOP)?;
        let label = BackupLabel::parse(&label_bytes)?;
        // pg_backup_stop does not return the stop timeline: on a primary it is the start
        // timeline; on a standby min_recovery_end_timeline right after the stop (`xlog.c`).
        let stop_tli = if self.session.info.in_recovery {
            let row = self
                .session
                .client
                .query_one(
                    "SELECT min_recovery_end_timeline::bigint FROM pg_control_recovery()",
                    &[],
                )
                .map_err(sql("read the stop timeline"))?;
            let t: i64 = col(&row, 0, "pg_control_recovery()")?;
            TimelineId(u32::try_from(t).unwrap_or(self.start_tli.0))
        } else {
            label.timeline()
        };
        let seg = self.session.info.wal_segment_size;
        Ok(BackupStopped {
            stop_wal: WalSegment::containing_end(stop_lsn, stop_tli, seg),
            label,
            tablespace_map: spcmap.unwrap_or_default(),
            start_lsn: self.start_lsn,
            start_tli: self.start_tli,
            stop_lsn,
            stop_tli,
            stop_duration: began.elapsed(),
            stop_time_us,
            session: self.session,
        })
    }

    /// Ends the backup without a label: closes the session, so the server discards it
    /// ("aborting backup due to backend exiting before pg_backup_stop was called").
    pub fn abort(self) {
        drop(self.session.client);
    }
}

/// A finished backup: what the server returned at stop.
pub struct BackupStopped {
    session: Session,
    /// `backup_label`, byte for byte as returned (`label.as_bytes()`).
    pub label: BackupLabel,
    /// `tablespace_map` bytes; empty when there are no tablespaces (then no file is written).
    pub tablespace_map: Vec<u8>,
    pub start_lsn: Lsn,
    pub start_tli: TimelineId,
    pub stop_lsn: Lsn,
    pub stop_tli: TimelineId,
    pub stop_wal: WalSegment,
    pub stop_duration: Duration,
    /// The server's clock right after the stop (microseconds since the Unix epoch, rounded
    /// up): later than the end of every transaction before the stop point.
    pub stop_time_us: Option<i64>,
}

impl BackupStopped {
    pub fn info(&self) -> &ServerInfo {
        &self.session.info
    }

    /// The files whose archiving makes this backup usable ([`archive_needs`]).
    pub fn archive_needs(&self) -> Vec<String> {
        archive_needs(
            self.start_lsn,
            self.stop_lsn,
            self.stop_tli,
            self.session.info.wal_segment_size,
            self.session.info.in_recovery,
        )
    }

    /// Back to a plain session (for a next backup or follow-up queries).
    pub fn into_session(self) -> Session {
        self.session
    }
}

/// SQL that returns the text expression `expr` as `bytea`, byte for byte as the server holds it
/// (tablespace paths in a `tablespace_map` are file-system bytes, not necessarily valid in any
/// encoding). `textsend` sends the bytes converted to the client encoding (UTF8), which is no
/// conversion for UTF8 and SQL_ASCII databases and never fails; for other database encodings
/// `convert_to(…, 'SQL_ASCII')` returns the bytes unchanged after checking them against the
/// database encoding (src/backend/utils/mb/mbutils.c: pg_convert, pg_do_encoding_conversion).
pub fn raw_text_sql(server_encoding: &str, expr: &str) -> String {
    match server_encoding {
        "UTF8" | "SQL_ASCII" | "" => format!("textsend({expr})"),
        _ => format!("convert_to({expr}, 'SQL_ASCII')"),
    }
}

/// The server's own words for a database error (message, detail, hint), or the client error.
pub fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = d.message().to_owned();
            if let Some(detail) = d.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = d.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// An error from the server, or from the connection to it, shown in the server's own words
/// ([`db_message`]: message, detail, hint). The `postgres` error stays the source, so its
/// SQLSTATE ([`ServerError::code`]) and the IO error under a lost connection remain reachable.
#[derive(Debug)]
pub struct ServerError(Box<postgres::Error>);

impl ServerError {
    /// The SQLSTATE the server sent, if the server sent the error.
    pub fn code(&self) -> Option<&str> {
        self.0.as_db_error().map(|d| d.code().code())
    }

    /// Whether the server sent it (rather than the connection failing).
    pub fn is_server(&self) -> bool {
        self.0.as_db_error().is_some()
    }

    pub fn postgres(&self) -> &postgres::Error {
        &self.0
    }
}

impl From<postgres::Error> for ServerError {
    fn from(e: postgres::Error) -> ServerError {
        ServerError(Box::new(e))
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&db_message(&self.0))
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn simple_value(client: &mut Client, query: &'static str) -> Result<String, SessionError> {
    let msgs = client
        .simple_query(query)
        .map_err(sql("ask the server version"))?;
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            if let Ok(Some(v)) = r.try_get(0) {
                return Ok(v.to_owned());
            }
        }
    }
    Err(SessionError::Protocol {
        query,
        detail: "no value returned".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_is_dispatched_by_version() {
        let v14 = PgVersion::from_num(140013).unwrap();
        let v15 = PgVersion::from_num(150000).unwrap();
        assert!(
            BackupApi::for_version(v14)
                .start_sql
                .contains("pg_start_backup($1, $2, false)")
        );
        assert!(
            BackupApi::for_version(v14)
                .stop_sql
                .contains("pg_stop_backup(false, $1)")
        );
        assert!(
            BackupApi::for_version(v15)
                .start_sql
                .contains("pg_backup_start($1, $2)")
        );
        assert!(
            BackupApi::for_version(v15)
                .stop_sql
                .contains("pg_backup_stop($1)")
        );
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label("nightly 2026-11-21").is_ok());
        assert!(check_label(&"x".repeat(1023)).is_ok());
        assert!(check_label(&"x".repeat(1024)).is_err());
        assert!(check_label("a\nb").is_err());
        assert!(check_label("a\rb").is_err());
    }
}
