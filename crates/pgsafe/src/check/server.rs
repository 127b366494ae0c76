//! What `check` asks the server: the archiving settings, `pg_stat_archiver`, the backlog of
//! segments waiting in `pg_wal/archive_status`, the functions it needs, and the WAL switch.
//! Every value is read with `try_get` and checked; nothing from the server can panic here.

use postgres::{Client, Row};
use serde::Serialize;

use crate::session::SessionError;
use crate::types::{Lsn, PgVersion, WalSegment};

/// The settings that decide whether and how the server archives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveSettings {
    /// `off`, `on` or `always`.
    pub archive_mode: String,
    /// A changed `archive_mode` waits for a restart (`pg_settings.pending_restart`).
    pub archive_mode_pending_restart: bool,
    /// The configured command, also while archiving is off: the server then shows
    /// "(disabled)" (`show_archive_command` in src/backend/access/transam/xlog.c), and the
    /// value is read from `pg_settings.reset_val`.
    pub archive_command: String,
    /// `archive_library` (15+; `None` before): archiving through a loadable module instead of
    /// the command.
    pub archive_library: Option<String>,
    pub wal_level: String,
}

/// `pg_stat_archiver` (times as unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiverStats {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<i64>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<i64>,
    pub stats_reset: Option<i64>,
    /// The server's clock when these were read (for ages).
    pub server_time: Option<i64>,
}

/// Segments (and history files) the archiver has not archived yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// `.ready` files in `pg_wal/archive_status`.
    pub ready: u64,
    /// The oldest segment among them, and when the oldest status file was written (unix
    /// seconds; 12+).
    pub oldest_ready: Option<String>,
    pub oldest_ready_time: Option<i64>,
}

/// An answer pgsafe does not understand (a NULL, a value of another type, a bad name).
fn protocol(query: &'static str, e: impl std::fmt::Display) -> SessionError {
    SessionError::Protocol {
        query,
        detail: e.to_string(),
    }
}

fn sql(action: &'static str) -> impl FnOnce(postgres::Error) -> SessionError {
    move |source| SessionError::Sql {
        action,
        source: Box::new(source),
    }
}

fn get<'a, T: postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    query: &'static str,
) -> Result<T, SessionError> {
    row.try_get(idx).map_err(|e| protocol(query, e))
}

/// Reads [`ArchiveSettings`].
pub fn settings(client: &mut Client, version: PgVersion) -> Result<ArchiveSettings, SessionError> {
    let row = client.query_one(
        "SELECT setting, reset_val, pending_restart FROM pg_settings WHERE name = 'archive_command'",
        &[],
    ).map_err(sql("read archive_command"))?;
    let setting: String = get(&row, 0, "archive_command")?;
    let reset: Option<String> = get(&row, 1, "archive_command")?;
    let row = client
        .query_one(
            "SELECT setting, pending_restart FROM pg_settings WHERE name = 'archive_mode'",
            &[],
        )
        .map_err(sql("read archive_mode"))?;
    let archive_mode: String = get(&row, 0, "archive_mode")?;
    let archive_mode_pending_restart: bool = get(&row, 1, "archive_mode")?;
    let archive_library = if version.at_least(15) {
        let row = client
            .query_one("SELECT current_setting('archive_library')", &[])
            .map_err(sql("read archive_library"))?;
        Some(get::<String>(&row, 0, "archive_library")?)
    } else {
        None
    };
    let row = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .map_err(sql("read wal_level"))?;
    let wal_level: String = get(&row, 0, "wal_level")?;
    let archive_command = if setting == "(disabled)" {
        reset.unwrap_or_default()
    } else {
        setting
    };
    Ok(ArchiveSettings {
        archive_mode,
        archive_mode_pending_restart,
        archive_command,
        archive_library,
        wal_level,
    })
}

/// Reads `pg_stat_archiver`.
pub fn archiver(client: &mut Client) -> Result<ArchiverStats, SessionError> {
    let row = client
        .query_one(
            "SELECT archived_count, last_archived_wal, \
                extract(epoch FROM last_archived_time)::bigint, \
                failed_count, last_failed_wal, \
                extract(epoch FROM last_failed_time)::bigint, \
                extract(epoch FROM stats_reset)::bigint, \
                extract(epoch FROM now())::bigint \
         FROM pg_stat_archiver",
            &[],
        )
        .map_err(sql("read pg_stat_archiver"))?;
    const W: &str = "pg_stat_archiver";
    Ok(ArchiverStats {
        archived_count: get(&row, 0, W)?,
        last_archived_wal: get(&row, 1, W)?,
        last_archived_time: get(&row, 2, W)?,
        failed_count: get(&row, 3, W)?,
        last_failed_wal: get(&row, 4, W)?,
        last_failed_time: get(&row, 5, W)?,
        stats_reset: get(&row, 6, W)?,
        server_time: get(&row, 7, W)?,
    })
}

/// The `.ready` files of `pg_wal/archive_status`, or why they cannot be listed (the
/// functions need superuser, or pg_monitor on 12+).
pub fn backlog(client: &mut Client, version: PgVersion) -> Result<Backlog, String> {
    let sql = if version.at_least(12) {
        "SELECT count(*), min(name) FILTER (WHERE name ~ '^[0-9A-F]{24}[.]ready$'), \
                extract(epoch FROM min(modification))::bigint \
         FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
    } else {
        "SELECT count(*), min(f) FILTER (WHERE f ~ '^[0-9A-F]{24}[.]ready$'), NULL::bigint \
         FROM pg_ls_dir('pg_wal/archive_status') AS f WHERE f LIKE '%.ready'"
    };
    let row = client
        .query_one(sql, &[])
        .map_err(|e| crate::session::db_message(&e))?;
    let ready: i64 = row.try_get(0).map_err(|e| e.to_string())?;
    let oldest: Option<String> = row.try_get(1).map_err(|e| e.to_string())?;
    Ok(Backlog {
        ready: u64::try_from(ready).unwrap_or(0),
        oldest_ready: oldest.map(|n| n.trim_end_matches(".ready").to_owned()),
        oldest_ready_time: row.try_get(2).map_err(|e| e.to_string())?,
    })
}

/// The functions `check` calls that need a grant (superusers have them all): the WAL switch
/// and the record written before it so that there is something to switch (17+ gave that
/// function a fourth argument, `flush`, with a default).
pub fn needed_functions(version: PgVersion) -> [&'static str; 2] {
    [
        "pg_switch_wal()",
        if version.at_least(17) {
            "pg_logical_emit_message(boolean, text, text, boolean)"
        } else {
            "pg_logical_emit_message(boolean, text, text)"
        },
    ]
}

/// Which of [`needed_functions`] the connected user may not execute.
pub fn missing_privileges(
    client: &mut Client,
    version: PgVersion,
) -> Result<Vec<&'static str>, SessionError> {
    let mut missing = Vec::new();
    for f in needed_functions(version) {
        let row = client
            .query_one(
                "SELECT has_function_privilege(current_user, $1::text, 'EXECUTE')",
                &[&f],
            )
            .map_err(sql("check privileges"))?;
        if !get::<bool>(&row, 0, "has_function_privilege")? {
            missing.push(f);
        }
    }
    Ok(missing)
}

/// The WAL file the server is writing now (primary only: `pg_walfile_name` fails during
/// recovery).
pub fn current_segment(client: &mut Client) -> Result<WalSegment, SessionError> {
    let row = client
        .query_one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())", &[])
        .map_err(sql("read the current WAL file"))?;
    let name: String = get(&row, 0, "pg_walfile_name")?;
    name.parse().map_err(|e| protocol("pg_walfile_name", e))
}

/// Writes a small non-transactional WAL record and switches to a new WAL file: the file the
/// switch completed, and the LSN the switch returned. Without the record, a server that has
/// written nothing since the last switch has nothing to switch: `pg_switch_wal` then returns
/// the start of the current file and no new file is completed (`RequestXLogSwitch`,
/// src/backend/access/transam/xlog.c). The LSN returned is the end of the switch record,
/// which lies in the completed file; `pg_walfile_name` names the file holding the byte before
/// an LSN (`XLByteToPrevSeg`), so it names that file, on the server's current timeline.
pub fn switch_wal(client: &mut Client) -> Result<(WalSegment, Lsn), SessionError> {
    client
        .query_one(
            "SELECT pg_logical_emit_message(false, 'pgsafe', 'check: WAL switch')",
            &[],
        )
        .map_err(sql("write a WAL record before the switch"))?;
    let row = client
        .query_one(
            "SELECT pg_walfile_name(lsn), lsn::text FROM (SELECT pg_switch_wal() AS lsn) AS s",
            &[],
        )
        .map_err(sql("switch to a new WAL file"))?;
    let name: String = get(&row, 0, "pg_switch_wal")?;
    let lsn: String = get(&row, 1, "pg_switch_wal")?;
    let segment = name.parse().map_err(|e| protocol("pg_walfile_name", e))?;
    let lsn = lsn.parse().map_err(|e| protocol("pg_switch_wal", e))?;
    Ok((segment, lsn))
}
