//! Tests of gathering, on synthetic directories.

use std::fs;
use std::path::Path;

use super::gather::probe_process;
use super::*;
use crate::doctor::{DoctorOptions, RESTORE_MARKER_FILE};

#[test]
fn history_file_names_decode() {
    let size = WalSegSize::DEFAULT;
    assert_eq!(
        history_file_start("000000010000000000000004.00000028.backup", size),
        Some(Lsn(0x0400_0028))
    );
    assert_eq!(
        history_file_start("00000001000000000000000.backup", size),
        None
    );
    assert_eq!(history_file_start("x.backup", size), None);
}

#[test]
fn gathers_a_synthetic_directory() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::write(p.join("PG_VERSION"), "15\n").unwrap();
    fs::create_dir_all(p.join("global")).unwrap();
    fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pg_control-15"),
        p.join("global/pg_control"),
    )
    .unwrap();
    fs::create_dir_all(p.join("pg_wal")).unwrap();
    let full = usize::try_from(WalSegSize::DEFAULT.bytes()).unwrap();
    fs::write(p.join("pg_wal/000000010000000000000007"), vec![0u8; full]).unwrap();
    fs::write(p.join("pg_wal/000000010000000000000008"), b"short").unwrap();
    fs::write(
        p.join("pg_wal/00000002.history"),
        b"1\t0/3000000\tno reason\n",
    )
    .unwrap();
    fs::write(p.join("postmaster.pid"), b"999999999\n/elsewhere\n").unwrap();
    fs::write(p.join("backup_label"), b"garbage").unwrap();
    fs::write(p.join(RESTORE_MARKER_FILE), b"{not json").unwrap();
    let f = gather(p, &DoctorOptions::default()).unwrap();
    assert!(f.missing.is_empty(), "{:?}", f.missing);
    assert_eq!(f.version.map(|v| v.major()), Some(15));
    assert!(f.control.is_some());
    let segs: Vec<_> = f.wal.segments.values().cloned().collect();
    assert_eq!(segs, vec![SegState::Unwritten, SegState::WrongSize(5)]);
    assert!(f.wal.segment_ranges.is_empty());
    assert_eq!(f.wal.unusable_segments.len(), 2);
    assert_eq!(f.wal.history_files, vec!["00000002.history".to_owned()]);
    assert_eq!(f.postmaster.liveness, Liveness::Stale);
    assert_eq!(f.postmaster.names_this_directory, Some(false));
    assert!(f.label.as_ref().is_some_and(|l| l.parsed.is_none()));
    assert!(f.marker.as_ref().is_some_and(|m| m.error.is_some()));
    // The whole thing serialises.
    serde_json::to_string(&f).unwrap();
}

#[test]
fn own_process_is_probed() {
    let me = std::process::id() as i32;
    let (l, detail) = probe_process(me, Path::new("/nonexistent"));
    // The test binary is not called postgres.
    assert_eq!(l, Liveness::Stale, "{detail}");
    assert!(detail.contains("another program"), "{detail}");
}
