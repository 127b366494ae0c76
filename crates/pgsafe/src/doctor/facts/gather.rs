//! Reading the directory (and, with `--connect`, asking the server): the files at the top of
//! PGDATA, the postmaster's pid file and process, nested data directories, `tablespace_map`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::wal_state::{find_backup_end, wal_dir_name, wal_facts};
use super::{
    ControlFacts, Facts, Files, Liveness, MapEntryFacts, MapFacts, MarkerFacts, PidFacts, SegState,
    ServerFacts,
};
use crate::control::{self, ControlError};
use crate::datadir::{LabelFile, MAX_SMALL_FILE, PostmasterPid, is_refusal, read_bounded};
use crate::doctor::conf::read_settings;
use crate::doctor::evidence;
use crate::doctor::{DoctorError, DoctorOptions, RESTORE_MARKER_FILE, RestoreMarker};
use crate::label::{MapEscaping, TablespaceMap};
use crate::layout::{COMPLETE_MARKER, MANIFEST_FILE};
use crate::types::{PgVersion, WalSegSize};

fn io_err(what: &str, path: &Path, source: io::Error) -> DoctorError {
    DoctorError::Io {
        what: what.to_owned(),
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `rel` in `dir`: `Ok(None)` if missing, `Ok(Some(Err(why)))` for a file pgsafe will
/// not read (a FIFO, device, directory or symbolic link where a file should be, or one far
/// too large: never a hang, never unbounded memory); other errors are errors.
fn read_opt(dir: &Path, rel: &str) -> Result<Option<Result<Vec<u8>, String>>, DoctorError> {
    match read_bounded(&dir.join(rel), MAX_SMALL_FILE, false) {
        Ok(b) => Ok(Some(Ok(b))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if is_refusal(&e) => Ok(Some(Err(e.to_string()))),
        Err(e) => Err(io_err(rel, dir, e)),
    }
}

fn label_file(r: Result<Vec<u8>, String>) -> LabelFile {
    match r {
        Ok(b) => LabelFile::of(&b),
        Err(e) => LabelFile::unreadable(e),
    }
}

fn exists(dir: &Path, rel: &str) -> bool {
    fs::symlink_metadata(dir.join(rel)).is_ok()
}

/// Gathers the facts (see [`Facts`]). Errors only when the directory itself cannot be read
/// (missing, not a directory, permission denied); everything wrong *inside* it is a fact.
pub fn gather(path: &Path, opts: &DoctorOptions) -> Result<Facts, DoctorError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DoctorError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err("the directory", path, e)),
    };
    if !meta.is_dir() {
        return Err(DoctorError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut f = Facts {
        path: path.to_path_buf(),
        ..Facts::default()
    };
    let entries: Vec<String> = fs::read_dir(path)
        .map_err(|e| io_err("the directory listing", path, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if entries.is_empty() {
        f.missing.push("everything: the directory is empty".into());
    }
    for required in ["PG_VERSION", "global/pg_control"] {
        if !path.join(required).is_file() {
            f.missing.push(required.to_owned());
        }
    }
    if !f.missing.is_empty() {
        f.nested_data_dirs = nested_data_dirs(path);
    }

    if let Some(b) = read_opt(path, "PG_VERSION")? {
        match b
            .map_err(|e| e.to_string())
            .and_then(|b| PgVersion::from_pg_version_file(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => f.version = Some(v),
            Err(e) => f.pg_version_error = Some(e),
        }
    }
    let mut control_file = None;
    if path.join("global/pg_control").is_file() {
        match control::read_control_file(&path.join("global/pg_control")) {
            Ok(c) => {
                f.control = Some(ControlFacts::from(&c));
                control_file = Some(c);
            }
            Err(ControlError::Io { source, .. }) => {
                return Err(io_err("global/pg_control", path, source));
            }
            Err(e) => f.control_error = Some(e.to_string()),
        }
    }
    let version = f.version.or(f.control.as_ref().and_then(|c| c.version));

    f.label = read_opt(path, "backup_label")?.map(label_file);
    f.label_old = read_opt(path, "backup_label.old")?.map(label_file);
    if let Some(bytes) = read_opt(path, "tablespace_map")? {
        let escaping = version.map_or(MapEscaping::V14, MapEscaping::for_version);
        f.tablespace_map = Some(match bytes {
            Ok(b) => map_facts(&b, escaping, path),
            Err(e) => MapFacts {
                error: Some(e),
                entries: Vec::new(),
            },
        });
    }
    f.files = Files {
        recovery_signal: exists(path, "recovery.signal"),
        standby_signal: exists(path, "standby.signal"),
        recovery_conf: exists(path, "recovery.conf"),
        recovery_done: exists(path, "recovery.done"),
        tablespace_map_old: exists(path, "tablespace_map.old"),
        postmaster_opts: exists(path, "postmaster.opts"),
        backup_manifest: exists(path, MANIFEST_FILE),
        pgsafe_json: exists(path, COMPLETE_MARKER),
        removed_label: exists(path, crate::doctor::REMOVED_LABEL_FILE),
    };
    f.postmaster = match read_opt(path, "postmaster.pid")? {
        None => PidFacts::default(),
        Some(b) => pid_facts(
            &PostmasterPid::parse(&b.unwrap_or_default()).with_liveness(),
            &canon,
        ),
    };
    f.wal = wal_facts(path, version, control_file.as_ref());
    f.settings = read_settings(path, version, &opts.config_files);
    f.marker = read_opt(path, RESTORE_MARKER_FILE)?.map(|b| {
        match b.and_then(|b| RestoreMarker::parse(&b).map_err(|e| e.to_string())) {
            Ok(m) => MarkerFacts {
                parsed: Some(m),
                error: None,
            },
            Err(e) => MarkerFacts {
                parsed: None,
                error: Some(e),
            },
        }
    });
    find_backup_end(&mut f, path);
    let size = f.wal.seg_size.unwrap_or(WalSegSize::DEFAULT);
    f.wal_history = evidence::pg_wal_history(
        &path.join(wal_dir_name(version)),
        &f.wal.backup_history_files,
        size,
    );
    let newest = control_file.as_ref().and_then(|c| {
        let tli = c.checkpoint_copy.this_timeline;
        f.wal
            .segments
            .iter()
            .filter(|(s, st)| s.tli == tli && **st == SegState::Valid)
            .map(|(s, _)| *s)
            .max_by_key(|s| s.segno(size).unwrap_or(0))
    });
    f.archive = evidence::gather_archive(
        &f.settings,
        control_file.as_ref(),
        newest,
        version.map(|v| v.major()),
    );
    f.holders = evidence::gather_holders(
        &opts.run_dirs,
        f.postmaster.port,
        control_file.as_ref().map(|c| c.system_identifier),
    );
    if let Ok(rd) = fs::read_dir(path.join("pg_tblspc")) {
        for e in rd.flatten().take(10_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            let oid_named = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
            if oid_named && e.file_type().is_ok_and(|t| t.is_dir()) {
                f.in_place_tablespaces.push(name);
            }
        }
        f.in_place_tablespaces.sort();
    }
    if let Some(conn) = &opts.conn {
        f.server = Some(ask_server(conn, &canon));
    }
    Ok(f)
}

/// Folders up to two levels below `path` holding `PG_VERSION` and `global/pg_control`.
fn nested_data_dirs(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut level = vec![path.to_path_buf()];
    for _ in 0..2 {
        let mut next = Vec::new();
        for dir in level {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                if p.join("PG_VERSION").is_file() && p.join("global/pg_control").is_file() {
                    out.push(p);
                } else {
                    next.push(p);
                }
                if out.len() >= 10 {
                    return out;
                }
            }
        }
        level = next;
        if level.len() > 1000 {
            break;
        }
    }
    out.sort();
    out
}

fn map_facts(bytes: &[u8], escaping: MapEscaping, path: &Path) -> MapFacts {
    match TablespaceMap::parse(bytes, escaping) {
        Ok(m) => MapFacts {
            error: None,
            entries: m
                .entries()
                .iter()
                .map(|e| {
                    let p = e.as_path();
                    let p = if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        path.join("pg_tblspc").join(p)
                    };
                    MapEntryFacts {
                        oid: e.oid,
                        path: String::from_utf8_lossy(&e.path).into_owned(),
                        exists: p.is_dir(),
                    }
                })
                .collect(),
        },
        Err(e) => MapFacts {
            error: Some(e.to_string()),
            entries: Vec::new(),
        },
    }
}

fn pid_facts(p: &PostmasterPid, canon: &Path) -> PidFacts {
    let names_this_directory = p
        .data_directory
        .as_ref()
        .map(|d| fs::canonicalize(d).is_ok_and(|c| c == canon) || Path::new(d) == canon);
    let base = PidFacts {
        pid: p.pid,
        status: p.status.clone(),
        start_time: p.start_time,
        data_directory: p.data_directory.clone(),
        port: p.port,
        names_this_directory,
        ..PidFacts::default()
    };
    let Some(pid) = p.pid else {
        return PidFacts {
            liveness: Liveness::Unreadable,
            detail: "postmaster.pid exists but holds no process ID (empty or damaged)".into(),
            ..base
        };
    };
    if p.process_running != Some(true) {
        return PidFacts {
            liveness: Liveness::Stale,
            detail: format!("no process has pid {pid}: the server that wrote the file is gone"),
            ..base
        };
    }
    let (liveness, detail) = probe_process(pid, canon);
    PidFacts {
        liveness,
        pid_in_use: true,
        detail,
        ..base
    }
}

/// What the running process `pid` is, from /proc.
pub(super) fn probe_process(pid: i32, canon: &Path) -> (Liveness, String) {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        if state.is_some_and(|s| s.starts_with('Z')) {
            return (
                Liveness::Stale,
                format!(
                    "process {pid} has exited but its parent has not reaped it yet (a zombie): \
                     no server is running"
                ),
            );
        }
    }
    let comm = fs::read_to_string(proc_dir.join("comm"))
        .ok()
        .map(|c| c.trim().to_owned());
    match comm {
        None => (
            Liveness::Live,
            format!("a process with pid {pid} is running (pgsafe could not check what it is)"),
        ),
        Some(c) if c != "postgres" && c != "postmaster" => (
            Liveness::Stale,
            format!("pid {pid} now belongs to another program ({c}), not to PostgreSQL"),
        ),
        Some(_) => match fs::read_link(proc_dir.join("cwd")) {
            Ok(cwd) if cwd == canon || fs::canonicalize(&cwd).is_ok_and(|c| c == canon) => (
                Liveness::Live,
                format!("process {pid} is a PostgreSQL server running in this directory"),
            ),
            Ok(cwd) => (
                Liveness::Stale,
                format!(
                    "pid {pid} is a PostgreSQL process working in {}, not in this directory",
                    cwd.display()
                ),
            ),
            Err(_) => (
                Liveness::Live,
                format!(
                    "process {pid} is a PostgreSQL process (which directory it serves could not \
                     be checked without more privileges)"
                ),
            ),
        },
    }
}

/// `--connect`: what the server says. Never fails; a failure is a fact.
fn ask_server(conn: &crate::conninfo::ConnSettings, canon: &Path) -> ServerFacts {
    let mut s = ServerFacts {
        target: conn.redacted(),
        ..ServerFacts::default()
    };
    let mut client = match conn.connect() {
        Ok(c) => c,
        Err(e) => {
            s.error = Some(e.to_string());
            return s;
        }
    };
    s.reachable = true;
    let mut first = |sql: &str| -> Option<Vec<Option<String>>> {
        let msgs = client.simple_query(sql).ok()?;
        msgs.into_iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                // try_get: a value that is not UTF-8 reads as absent instead of panicking.
                Some(
                    (0..r.len())
                        .map(|i| r.try_get(i).ok().flatten().map(str::to_owned))
                        .collect(),
                )
            }
            _ => None,
        })
    };
    let col =
        |row: Option<Vec<Option<String>>>, i: usize| row.and_then(|r| r.get(i).cloned().flatten());
    s.version = col(first("SHOW server_version_num"), 0)
        .and_then(|v| PgVersion::from_server_version_num(&v).ok());
    s.in_recovery = col(first("SELECT pg_is_in_recovery()"), 0).map(|v| v == "t");
    s.system_identifier = col(
        first("SELECT system_identifier::text FROM pg_control_system()"),
        0,
    )
    .and_then(|v| v.parse().ok());
    s.data_directory = col(
        first("SELECT setting FROM pg_settings WHERE name = 'data_directory'"),
        0,
    );
    s.same_directory = s
        .data_directory
        .as_ref()
        .map(|d| fs::canonicalize(d).is_ok_and(|c| c == canon) || Path::new(d) == canon);
    let setting = |first: &mut dyn FnMut(&str) -> Option<Vec<Option<String>>>, name: &str| {
        col(
            first(&format!(
                "SELECT setting FROM pg_settings WHERE name = '{name}'"
            )),
            0,
        )
    };
    s.archive_mode = setting(&mut first, "archive_mode");
    s.archive_command = setting(&mut first, "archive_command");
    s.restore_command = setting(&mut first, "restore_command");
    if s.version.is_some_and(|v| v.num() < 150000) {
        let row = first("SELECT pg_is_in_backup(), pg_backup_start_time()::text");
        s.in_exclusive_backup = col(row.clone(), 0).map(|v| v == "t");
        s.backup_start_time = col(row, 1);
    }
    s
}
