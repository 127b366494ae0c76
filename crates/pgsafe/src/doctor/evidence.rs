//! Evidence from outside the directory: the WAL archive named by the copied configuration and
//! pgsafe's own holder records. Gathered here (IO), weighed in `classify/copy.rs` (pure).
//!
//! Why: a file-level copy of a running server (cp, rsync, a storage snapshot) carries
//! `postmaster.pid`, `postmaster.opts`, pg_control "in production" and its own `pg_wal` — it
//! looks exactly like the crashed original. What tells them apart lies outside it: the backup
//! that was running while the files were captured was *stopped* later (its backup history file,
//! `<start segment>.<offset>.backup`, written by `do_pg_backup_stop` in
//! src/backend/access/transam/xlog.c, reaches the archive but not the copy's `pg_wal`), the
//! server kept writing WAL past the end of the copy's `pg_wal` (the archive has newer segments
//! of the same timeline and system), or pgsafe's holder recorded that backup's LSNs.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::archive_cmd::archive_dir_of;
use super::conf::Settings;
use crate::control::ControlFile;
use crate::datadir::{MAX_SMALL_FILE, read_bounded};
use crate::label::BackupLabel;
use crate::types::{Lsn, TimelineId, WalSegSize, WalSegment};
use crate::wal;

/// Most directory entries read from one archive or run directory.
const MAX_ENTRIES: usize = 2_000_000;
/// Most backup history files kept per location (the newest).
const MAX_HISTORY: usize = 200;
/// A backup history file is a few hundred bytes.
const MAX_HISTORY_FILE: u64 = 64 << 10;

/// A backup history file (`<segment>.<offset>.backup`): one stopped backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryFile {
    pub name: String,
    /// Where it was found (`pg_wal`, or the archive directory).
    pub location: String,
    /// From the name (`START WAL LOCATION`).
    pub start: Lsn,
    pub checkpoint: Option<Lsn>,
    pub stop: Option<Lsn>,
    pub label: Option<String>,
    /// Why its content could not be read (compressed, damaged …).
    pub error: Option<String>,
}

/// One WAL archive location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveLocation {
    pub dir: PathBuf,
    /// The setting that names it, with its value.
    pub from: String,
    pub suffix: String,
    pub error: Option<String>,
    pub segments: u64,
    pub history_files: Vec<HistoryFile>,
    /// The newest archived segment of pg_control's timeline, if it is newer than the newest
    /// valid segment in `pg_wal`: the server wrote WAL after these files were captured.
    pub beyond_pg_wal: Option<String>,
    /// `beyond_pg_wal`'s page header was read and names this cluster (system identifier).
    pub beyond_checked: bool,
    pub beyond_note: Option<String>,
}

/// The WAL archive(s) named by the copied configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveFacts {
    pub locations: Vec<ArchiveLocation>,
    /// Settings that name an archive pgsafe cannot read, and why.
    pub not_interpreted: Vec<String>,
    /// Neither archive_command (with archive_mode on) nor restore_command is set.
    pub none_configured: bool,
}

impl ArchiveFacts {
    /// Every location could be listed, and at least one exists.
    pub fn fully_checked(&self) -> bool {
        !self.locations.is_empty()
            && self.not_interpreted.is_empty()
            && self.locations.iter().all(|l| l.error.is_none())
    }
}

/// One pgsafe holder record (`<id>.json` in a run directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HolderRecordFacts {
    pub file: PathBuf,
    pub id: String,
    pub state: String,
    pub server: String,
    pub label: String,
    pub start_lsn: Option<Lsn>,
    pub start_tli: Option<TimelineId>,
    /// From the label returned at stop.
    pub checkpoint: Option<Lsn>,
    pub stop_lsn: Option<Lsn>,
    /// The record is final (complete, failed, aborted): when it was last written (epoch s).
    pub final_at: Option<i64>,
    /// Why this record is about another server (its port differs from postmaster.pid's).
    pub other_server: Option<String>,
}

/// pgsafe's snapshot-mode holder records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HolderFacts {
    /// Each run directory looked at, and what was found there.
    pub looked_at: Vec<String>,
    pub records: Vec<HolderRecordFacts>,
}

/// The run directories pgsafe's holders use by default, for the current user and for the
/// owner of `pgdata` (doctor often runs as root while `pgsafe start` ran as postgres):
/// `$PGSAFE_RUN_DIR`, each user's default (see `runrecord::default_run_dir_for`), and the
/// places older pgsafe versions used: `$XDG_RUNTIME_DIR/pgsafe`, `/tmp/pgsafe-<uid>`,
/// `/run/user/<uid>/pgsafe`.
pub fn default_run_dirs(pgdata: &Path, env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(d) = env("PGSAFE_RUN_DIR").filter(|v| !v.is_empty()) {
        add(PathBuf::from(d));
    }
    let mut uids = vec![nix::unistd::geteuid().as_raw()];
    if let Ok(m) = fs::metadata(pgdata) {
        uids.push(m.uid());
    }
    for &uid in &uids {
        add(crate::runrecord::default_run_dir_for(uid));
    }
    if let Some(x) = env("XDG_RUNTIME_DIR").filter(|v| v.starts_with('/')) {
        add(Path::new(&x).join("pgsafe"));
    }
    for uid in uids {
        add(PathBuf::from(format!("/tmp/pgsafe-{uid}")));
        add(PathBuf::from(format!("/run/user/{uid}/pgsafe")));
    }
    out
}

fn history_from(
    name: &str,
    location: &str,
    size: WalSegSize,
    bytes: Result<Vec<u8>, String>,
) -> HistoryFile {
    let start = super::facts::history_file_start(name, size);
    let mut h = HistoryFile {
        name: name.to_owned(),
        location: location.to_owned(),
        start: start.unwrap_or(Lsn(0)),
        checkpoint: None,
        stop: None,
        label: None,
        error: None,
    };
    match bytes {
        Ok(b) => match BackupLabel::parse(&b) {
            Ok(l) => {
                h.start = l.start_lsn();
                h.checkpoint = Some(l.checkpoint_lsn());
                h.stop = l.stop_lsn();
                h.label = l.label_text().map(|t| t.into_owned());
            }
            Err(e) => h.error = Some(e.to_string()),
        },
        Err(e) => h.error = Some(e),
    }
    h
}

/// The backup history files in `pg_wal` (names from [`super::WalFacts`]), with their content.
pub fn pg_wal_history(wal_dir: &Path, names: &[String], size: WalSegSize) -> Vec<HistoryFile> {
    names
        .iter()
        .map(|n| {
            let bytes =
                read_bounded(&wal_dir.join(n), MAX_HISTORY_FILE, false).map_err(|e| e.to_string());
            history_from(n, "pg_wal", size, bytes)
        })
        .collect()
}

/// Reads the archive locations named by `settings`.
pub fn gather_archive(
    settings: &Settings,
    control: Option<&ControlFile>,
    newest_pg_wal: Option<WalSegment>,
    major: Option<u32>,
) -> ArchiveFacts {
    let mut a = ArchiveFacts::default();
    let mut commands = Vec::new();
    if let Some(c) = settings.archive_command() {
        commands.push(("archive_command", c.to_owned()));
    }
    if let Some(c) = settings.restore_command() {
        commands.push(("restore_command", c.to_owned()));
    }
    if let Some(lib) = settings.archive_library() {
        a.not_interpreted.push(format!(
            "archive_library = '{lib}': an archive module, whose archive pgsafe cannot locate"
        ));
    }
    if commands.iter().all(|(_, c)| !c.contains("%f")) && a.not_interpreted.is_empty() {
        a.none_configured = true;
    }
    for (setting, cmd) in commands {
        // A command that never names %f fetches or stores no WAL file (pgsafe restore leaves
        // `restore_command = 'false'` behind): it names no archive.
        if !cmd.contains("%f") {
            continue;
        }
        match archive_dir_of(&cmd) {
            Ok(d) => {
                if a.locations.iter().any(|l| l.dir == d.dir) {
                    continue;
                }
                let mut loc = ArchiveLocation {
                    dir: d.dir,
                    from: format!("{setting} `{cmd}`"),
                    suffix: d.suffix,
                    ..ArchiveLocation::default()
                };
                list_archive(&mut loc, control, newest_pg_wal, major);
                a.locations.push(loc);
            }
            Err(why) => a.not_interpreted.push(format!(
                "{setting} `{cmd}`: pgsafe cannot locate its archive: {why}"
            )),
        }
    }
    a
}

fn list_archive(
    loc: &mut ArchiveLocation,
    control: Option<&ControlFile>,
    newest_pg_wal: Option<WalSegment>,
    major: Option<u32>,
) {
    let rd = match fs::read_dir(&loc.dir) {
        Ok(rd) => rd,
        Err(e) => {
            loc.error = Some(format!("cannot list {}: {e}", loc.dir.display()));
            return;
        }
    };
    let size = control.map(|c| c.xlog_seg_size);
    let tli = control.map(|c| c.checkpoint_copy.this_timeline);
    let mut newest: Option<(u64, WalSegment, String)> = None;
    let mut hist = Vec::new();
    for (i, e) in rd.flatten().enumerate() {
        if i >= MAX_ENTRIES {
            loc.error = Some(format!(
                "more than {MAX_ENTRIES} entries; only the first were read"
            ));
            break;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let stem = strip_suffix(&name, &loc.suffix);
        if let Ok(seg) = stem.parse::<WalSegment>() {
            loc.segments += 1;
            if let (Some(size), Some(tli)) = (size, tli)
                && seg.tli == tli
                && let Ok(n) = seg.segno(size)
                && newest.as_ref().is_none_or(|(m, _, _)| n > *m)
            {
                newest = Some((n, seg, name.clone()));
            }
        } else if stem.ends_with(".backup") {
            let stem = stem.to_owned();
            hist.push((name, stem));
        }
    }
    hist.sort_by(|a, b| b.1.cmp(&a.1));
    hist.truncate(MAX_HISTORY);
    let location = loc.dir.display().to_string();
    for (name, stem) in hist {
        let bytes = if name == stem {
            read_bounded(&loc.dir.join(&name), MAX_HISTORY_FILE, false).map_err(|e| e.to_string())
        } else {
            Err("compressed; its STOP location was not read".to_owned())
        };
        let mut h = history_from(&stem, &location, size.unwrap_or(WalSegSize::DEFAULT), bytes);
        h.name = name;
        loc.history_files.push(h);
    }
    let (Some(c), Some(size), Some((n, seg, name))) = (control, size, newest) else {
        return;
    };
    let Some(pg) = newest_pg_wal.and_then(|s| s.segno(size).ok()) else {
        return;
    };
    if n <= pg {
        return;
    }
    loc.beyond_pg_wal = Some(name.clone());
    if name != seg.to_string() {
        loc.beyond_note = Some("compressed: its page header was not checked".into());
        return;
    }
    let head = read_bounded(&loc.dir.join(&name), size.bytes(), false).map(|mut b| {
        b.truncate(wal::LONG_HEADER_SIZE);
        b
    });
    match head {
        Ok(h) => match wal::check_segment_header(&h, seg, size, Some(c.system_identifier), major) {
            Ok(_) => loc.beyond_checked = true,
            Err(e) => {
                // Another cluster's WAL under the same name proves nothing about this one.
                loc.beyond_pg_wal = None;
                loc.beyond_note = Some(format!("{name}: {e}"));
            }
        },
        Err(e) => loc.beyond_note = Some(format!("{name}: {e}")),
    }
}

fn strip_suffix<'a>(name: &'a str, suffix: &str) -> &'a str {
    if !suffix.is_empty()
        && let Some(s) = name.strip_suffix(suffix)
    {
        return s;
    }
    for s in [".gz", ".zst", ".lz4", ".xz", ".bz2"] {
        if let Some(x) = name.strip_suffix(s) {
            return x;
        }
    }
    name
}

/// Reads the holder records in `run_dirs`; `port` is the one postmaster.pid names, `system_id`
/// pg_control's. A record of another cluster (its system identifier, which holder records carry
/// when pgsafe wrote them with it, differs) or of another server on this host (its port differs: a standby shares its
/// primary's identifier) says nothing about these files.
pub fn gather_holders(
    run_dirs: &[PathBuf],
    port: Option<u16>,
    system_id: Option<crate::types::SystemId>,
) -> HolderFacts {
    use std::os::unix::fs::MetadataExt;
    let mut h = HolderFacts::default();
    for dir in run_dirs {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                h.looked_at
                    .push(format!("{}: does not exist", dir.display()));
                continue;
            }
            Err(e) => {
                h.looked_at
                    .push(format!("{}: cannot be read ({e})", dir.display()));
                continue;
            }
        };
        let mut n = 0;
        for (i, e) in rd.flatten().enumerate() {
            if i >= MAX_ENTRIES {
                break;
            }
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(bytes) = read_bounded(&path, MAX_SMALL_FILE, false) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<crate::runrecord::BackupRecord>(&bytes) else {
                continue;
            };
            n += 1;
            let checkpoint = rec
                .result
                .as_ref()
                .and_then(|r| BackupLabel::parse(r.backup_label.as_bytes()).ok())
                .map(|l| l.checkpoint_lsn());
            let rec_port = rec.port.unwrap_or_else(|| record_port(&rec.server));
            let other_server = match (rec.system_id, system_id, rec_port, port) {
                (Some(a), Some(b), _, _) if a != b => Some(format!(
                    "it was taken from the cluster with system identifier {a}, and pg_control \
                     names {b}"
                )),
                (_, _, a, Some(b)) if a != b => Some(format!(
                    "it was taken from the server on port {a}, and postmaster.pid names port {b}"
                )),
                _ => None,
            };
            h.records.push(HolderRecordFacts {
                file: path.clone(),
                id: rec.id.to_string(),
                state: rec.state.to_string(),
                server: rec.server.clone(),
                label: rec.label.clone(),
                start_lsn: rec.start_lsn,
                start_tli: rec.start_tli,
                checkpoint,
                stop_lsn: rec.result.as_ref().map(|r| r.stop_lsn),
                final_at: rec
                    .state
                    .is_final()
                    .then(|| e.metadata().ok().map(|m| m.mtime()))
                    .flatten(),
                other_server,
            });
        }
        h.looked_at
            .push(format!("{}: {n} backup record(s)", dir.display()));
    }
    h
}

/// The port of a connection target as pgsafe records it (`... port=5433 ...`); libpq's
/// default otherwise.
fn record_port(server: &str) -> u16 {
    server
        .split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
        .and_then(|p| p.trim_matches('\'').parse().ok())
        .unwrap_or(5432)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_records() {
        assert_eq!(record_port("host=/tmp port=5433 user=postgres"), 5433);
        assert_eq!(record_port("host=/tmp"), 5432);
        assert_eq!(record_port("host=/tmp port='6000'"), 6000);
    }

    #[test]
    fn suffixes_are_stripped() {
        assert_eq!(strip_suffix("a.backup.gz", ""), "a.backup");
        assert_eq!(
            strip_suffix("000000010000000000000001", ".gz"),
            "000000010000000000000001"
        );
    }
}
