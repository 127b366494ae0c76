//! `pgsafe inspect PGDATA`: render what the library reads from a data directory.

use std::path::Path;

use pgsafe::datadir::{DataDir, DataDirReport};

use crate::exit;
use crate::render::{epoch, field, json, yes_no};

pub fn run(pgdata: &Path, as_json: bool) -> anyhow::Result<u8> {
    let report = DataDir::open(pgdata)?.inspect()?;
    if as_json {
        json(&report)?;
    } else {
        print_human(&report);
    }
    Ok(exit::OK)
}

fn print_human(r: &DataDirReport) {
    let c = &r.control;
    let cp = &c.checkpoint_copy;
    field("data directory", r.path.display());
    field(
        "PostgreSQL",
        format!(
            "{} (PG_VERSION; pg_control version {}, catalog version {})",
            r.pg_major, c.pg_control_version, c.catalog_version_no
        ),
    );
    field("system identifier", c.system_identifier);
    field(
        "state",
        format!("{} (pg_control updated {})", c.state, epoch(c.time)),
    );
    field(
        "latest checkpoint",
        format!("{} at {}", c.checkpoint, epoch(cp.time)),
    );
    field(
        "redo LSN",
        format!("{} (timeline {})", cp.redo, cp.this_timeline),
    );
    if let Some(prev) = c.prev_checkpoint {
        field("prior checkpoint", prev);
    }
    field(
        "min recovery point",
        format!(
            "{} (timeline {})",
            c.min_recovery_point, c.min_recovery_point_tli
        ),
    );
    field(
        "backup start / end",
        format!(
            "{} / {} (end-of-backup record required: {})",
            c.backup_start_point,
            c.backup_end_point,
            yes_no(c.backup_end_required)
        ),
    );
    field("wal_level", c.wal_level);
    field(
        "data checksums",
        if c.data_checksum_version == 0 {
            "off".to_owned()
        } else {
            format!("on (version {})", c.data_checksum_version)
        },
    );
    field("WAL segment size", c.xlog_seg_size);
    field("block size", c.blcksz);
    match &r.backup_label {
        None => field("backup_label", "absent"),
        Some(l) => {
            match (&l.parsed, &l.error) {
                (Some(p), _) => field(
                    "backup_label",
                    format!(
                        "present: start {} ({}), checkpoint {}, method {}, from {}",
                        p.start_lsn(),
                        p.fields().start.file,
                        p.checkpoint_lsn(),
                        p.fields().method.as_ref().map_or("?", |m| m.as_str()),
                        p.fields().from.as_ref().map_or("?", |f| f.as_str())
                    ),
                ),
                (None, e) => field(
                    "backup_label",
                    format!("present but unparseable: {}", e.as_deref().unwrap_or("?")),
                ),
            }
            for line in l.text.lines() {
                println!("{:<22}  | {line}", "");
            }
        }
    }
    match &r.tablespace_map {
        None => field("tablespace_map", "absent"),
        Some(m) => match (&m.parsed, &m.error) {
            (Some(p), _) => {
                field("tablespace_map", format!("{} tablespace(s)", p.len()));
                for e in p.entries() {
                    println!(
                        "{:<22}  | {} -> {}",
                        "",
                        e.oid,
                        String::from_utf8_lossy(&e.path)
                    );
                }
            }
            (None, e) => field(
                "tablespace_map",
                format!("present but unparseable: {}", e.as_deref().unwrap_or("?")),
            ),
        },
    }
    match &r.postmaster_pid {
        None => field("postmaster.pid", "absent"),
        Some(p) => field(
            "postmaster.pid",
            format!(
                "pid {} ({}){}",
                p.pid.map_or("?".to_owned(), |x| x.to_string()),
                match p.process_running {
                    Some(true) => "a process with this pid is running",
                    Some(false) => "no such process: stale",
                    None => "unreadable pid",
                },
                p.status
                    .as_deref()
                    .map(|s| format!(", status {s}"))
                    .unwrap_or_default()
            ),
        ),
    }
    field(
        "other files",
        if r.markers.is_empty() {
            "none".to_owned()
        } else {
            r.markers.join(", ")
        },
    );
}
