//! `pgsafe snapshot --exec CMD`: start, run the snapshot/copy command, stop, write the label
//! files — all in one process, so no holder is needed. Also the writer of `backup_label` and
//! `tablespace_map` into an output directory, shared with `pgsafe stop`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{
    BackupId, BackupRecord, BackupState, HoldError, Refusal, RunDir, ServerIdentity, StopOptions,
    StopResult, TextBytes, WaitArchive, check_output_dir, check_output_dir_early, unix_now,
};
use crate::conninfo::ConnSettings;
use crate::fsutil::{self, FsError};
use crate::session::{ArchiveStatus, Session};

/// Writes `backup_label` (and `tablespace_map` when not empty) into `dir`, byte for byte and
/// durably. Writing the same content again is fine (a repeated `stop`); replacing a *different*
/// label, or leaving a stale `tablespace_map` beside a backup that has none, is refused.
pub fn write_label_files(dir: &Path, label: &[u8], map: &[u8]) -> Result<Vec<PathBuf>, HoldError> {
    let meta = fs::metadata(dir).map_err(|e| FsError::new("use output directory", dir, e))?;
    if !meta.is_dir() {
        return Err(FsError::new(
            "use output directory",
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        )
        .into());
    }
    let label_path = dir.join("backup_label");
    let map_path = dir.join("tablespace_map");
    let refuse = |path: &Path, why: &str| -> HoldError {
        FsError::new(
            "write",
            path,
            io::Error::new(io::ErrorKind::AlreadyExists, why.to_owned()),
        )
        .into()
    };
    if let Ok(old) = fs::read(&label_path) {
        if old != label {
            return Err(refuse(
                &label_path,
                "a different backup_label is already there (from another backup?); refusing to \
                 replace it — move it away if it is stale",
            ));
        }
    }
    if map.is_empty() && map_path.exists() {
        return Err(refuse(
            &map_path,
            "this backup has no tablespaces, but a tablespace_map is there (stale?); recovery \
             would apply it — remove it, then run stop again",
        ));
    }
    if let Ok(old) = fs::read(&map_path) {
        if old != map {
            return Err(refuse(
                &map_path,
                "a different tablespace_map is already there; refusing to replace it",
            ));
        }
    }
    let mut written = Vec::new();
    fsutil::write_durable(&label_path, label, 0o600)?;
    written.push(label_path);
    if !map.is_empty() {
        fsutil::write_durable(&map_path, map, 0o600)?;
        written.push(map_path);
    }
    Ok(written)
}

/// What `pgsafe snapshot` needs.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub id: BackupId,
    pub conn: ConnSettings,
    pub label: String,
    pub fast: bool,
    /// Run with `sh -c`; its stdout goes to pgsafe's stderr so results on stdout stay clean.
    pub command: String,
    pub output_dir: Option<PathBuf>,
    pub stop: StopOptions,
    /// Where the backup's record goes (and its ID is locked while it runs), so `status` shows
    /// it and a repeated `stop` returns its result; `None`: no record.
    pub run_dir: Option<RunDir>,
    /// The connection as the user gave it (no password), for display.
    pub connection: Option<String>,
}

/// The outcome of a one-shot snapshot backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotReport {
    pub record: BackupRecord,
    /// Exit code of the command (`None` if killed by a signal or not run).
    pub command_exit: Option<i32>,
    pub command_succeeded: bool,
    pub written: Vec<PathBuf>,
}

/// Starts a backup, runs the command with `PGSAFE_*` variables describing it, then stops the
/// backup and writes the label files — or aborts the backup if the command failed.
pub fn snapshot(opts: &SnapshotOptions) -> Result<SnapshotReport, HoldError> {
    // The ID is this process's while it runs: a `start` with the same ID is refused, and
    // `status` sees this backup in progress.
    let _lock = match &opts.run_dir {
        Some(run) => {
            run.check_socket_len(&opts.id)?;
            match run.try_lock(&opts.id)? {
                Some(lock) => Some(lock),
                None => {
                    let pid = run
                        .read_record(&opts.id)
                        .ok()
                        .flatten()
                        .map_or_else(|| "unknown".into(), |r| r.holder_pid.to_string());
                    return Err(HoldError::AlreadyRunning {
                        id: opts.id.to_string(),
                        pid,
                    });
                }
            }
        }
        None => None,
    };
    let save = |rec: &BackupRecord| match &opts.run_dir {
        Some(run) => run.write_record(rec),
        None => Ok(()),
    };
    let client = opts.conn.connect().map_err(HoldError::Connect)?;
    let mut session = Session::new(client).map_err(HoldError::Session)?;
    session.preflight().map_err(HoldError::Session)?;
    let port = super::server_port(&mut session);
    let info = session.info().clone();
    let identity = ServerIdentity {
        system_id: Some(info.system_id),
        data_directory: info.data_directory.clone(),
        port,
        in_recovery: Some(info.in_recovery),
    };
    // Before the server is in backup mode: an output directory that could never take the
    // label fails now, not after the snapshot was taken.
    if let Some(dir) = &opts.output_dir {
        check_output_dir_early(dir, &identity)
            .map_err(|e| e.with_next(". The backup was not started"))?;
    }
    if opts.stop.wait_archive == WaitArchive::Yes && !info.archiving_applies() {
        return Err(HoldError::Refused(Refusal::NotArchiving {
            archive_mode: info.archive_mode.clone(),
            on_standby: info.in_recovery,
            backup_running: false,
        }));
    }
    let started = session
        .start_backup(&opts.label, opts.fast)
        .map_err(HoldError::Session)?;
    let mut record = BackupRecord {
        id: opts.id.clone(),
        state: BackupState::InProgress,
        holder_pid: std::process::id(),
        server: opts.conn.redacted(),
        server_version: Some(info.version.to_string()),
        from_standby: info.in_recovery,
        label: opts.label.clone(),
        fast: opts.fast,
        start_lsn: Some(started.start_lsn),
        start_tli: Some(started.start_tli),
        start_wal: Some(started.start_wal),
        started_at: unix_now(),
        start_duration_ms: Some(started.start_duration.as_millis() as u64),
        max_hold_secs: 0,
        result: None,
        failure: None,
        system_id: Some(info.system_id),
        data_directory: info.data_directory.clone(),
        port,
        connection: opts.connection.clone(),
    };
    if let Err(e) = save(&record) {
        started.abort();
        return Err(e);
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&opts.command)
        .env("PGSAFE_BACKUP_ID", opts.id.as_str())
        .env("PGSAFE_START_LSN", started.start_lsn.to_string())
        .env("PGSAFE_START_WAL", started.start_wal.to_string())
        .env("PGSAFE_START_TIMELINE", started.start_tli.to_string())
        .env("PGSAFE_LABEL", &opts.label)
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::from(io::stderr()));
    if let Some(dir) = &opts.output_dir {
        cmd.env("PGSAFE_OUTPUT_DIR", dir);
    }
    let status = cmd.status();
    let (ok, code, why) = match &status {
        Ok(s) if s.success() => (true, s.code(), String::new()),
        Ok(s) => (false, s.code(), format!("the command failed ({s})")),
        Err(e) => (false, None, format!("the command could not be run: {e}")),
    };
    if !ok {
        started.abort();
        record.state = BackupState::Aborted;
        record.failure = Some(format!(
            "{why}: the backup was aborted and no backup_label was written; the copy is NOT usable"
        ));
        save(&record)?;
        return Ok(SnapshotReport {
            record,
            command_exit: code,
            command_succeeded: false,
            written: vec![],
        });
    }
    // The output directory may be created by the command (a mounted snapshot), so it is
    // checked now, before the stop: a live or foreign data directory gets no label, and the
    // backup is aborted (nothing is written).
    if let Some(dir) = &opts.output_dir {
        if let Err(e) = check_output_dir(dir, &identity).and_then(|()| super::check_writable(dir)) {
            started.abort();
            record.state = BackupState::Aborted;
            record.failure = Some(format!("{e}; the copy is NOT usable"));
            save(&record)?;
            return Err(e.with_next(". The backup was aborted and nothing was written"));
        }
    }
    let applies = info.archiving_applies();
    let wait = applies && opts.stop.wait_archive != WaitArchive::No;
    let stopped = started.stop(false).map_err(HoldError::StopFailed)?;
    let needs = stopped.archive_needs();
    record.state = BackupState::Complete;
    record.result = Some(StopResult {
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
            } else {
                "not waited for".into()
            },
        },
        archive_needs: needs.clone(),
        recorded: None,
    });
    // The label exists only in this process until it is on disk: the record first.
    save(&record)?;
    let written = match &opts.output_dir {
        Some(dir) => write_label_files(dir, stopped.label.as_bytes(), &stopped.tablespace_map)
            .map_err(|e| match &opts.run_dir {
                Some(run) => HoldError::LabelNotWritten {
                    id: opts.id.to_string(),
                    dir: dir.clone(),
                    record: run.record_path(&opts.id),
                    source: Box::new(e),
                },
                // No record: the label stays in the error, byte for byte (hex-escaped where
                // it is not UTF-8).
                None => {
                    let map = if stopped.tablespace_map.is_empty() {
                        String::new()
                    } else {
                        format!("tablespace_map:\n{}", shown(&stopped.tablespace_map))
                    };
                    HoldError::LabelOnlyHere {
                        label: format!("{}{map}", shown(stopped.label.as_bytes())),
                        source: Box::new(e),
                    }
                }
            }),
        None => Ok(vec![]),
    };
    if wait {
        let status = stopped
            .into_session()
            .wait_for_archive(needs, opts.stop.archive_timeout_secs);
        if let Some(res) = record.result.as_mut() {
            res.archive = status;
        }
        save(&record)?;
    }
    let written = written?;
    Ok(SnapshotReport {
        record,
        command_exit: code,
        command_succeeded: true,
        written,
    })
}

/// Label file bytes for a message: as text when UTF-8, else with the other bytes escaped.
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(t) => t.to_owned(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_files_are_written_and_rewriting_the_same_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n";
        let w = write_label_files(dir.path(), label, b"").unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(fs::read(dir.path().join("backup_label")).unwrap(), label);
        assert!(!dir.path().join("tablespace_map").exists());
        write_label_files(dir.path(), label, b"").unwrap();
        let err = write_label_files(dir.path(), b"other\n", b"").unwrap_err();
        assert!(err.to_string().contains("different backup_label"), "{err}");
        assert_eq!(
            fs::read(dir.path().join("backup_label")).unwrap(),
            label,
            "unchanged"
        );
    }

    #[test]
    fn a_stale_tablespace_map_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tablespace_map"), "16384 /old\n").unwrap();
        let err = write_label_files(dir.path(), b"x\n", b"").unwrap_err();
        assert!(err.to_string().contains("stale"), "{err}");
        assert!(!dir.path().join("backup_label").exists(), "nothing written");
        let w = write_label_files(dir.path(), b"x\n", b"16384 /old\n").unwrap();
        assert_eq!(w.len(), 2);
    }
}
