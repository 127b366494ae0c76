//! Classifier tests on hand-made facts: every state, and the rules that must never break
//! (no removal advice for restored backups, `--fix` only for unambiguous state 4).

use std::path::PathBuf;

use super::facts::{ControlFacts, Facts, Files, Liveness, MarkerFacts, PidFacts, SegState};
use super::*;
use crate::control::DbState;
use crate::datadir::LabelFile;
use crate::types::{Lsn, PgVersion, SystemId, TimelineId, WalSegSize, WalSegment};

const DIR: &str = "/srv/pg/data";

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

fn control(state: DbState, checkpoint: &str, redo: &str) -> ControlFacts {
    ControlFacts {
        state,
        checkpoint: lsn(checkpoint),
        prev_checkpoint: None,
        redo: lsn(redo),
        timeline: TimelineId(1),
        checkpoint_time: 1_763_716_000,
        time: 1_763_716_100,
        min_recovery_point: Lsn(0),
        min_recovery_point_tli: TimelineId(0),
        backup_start_point: Lsn(0),
        backup_end_point: Lsn(0),
        backup_end_required: false,
        system_identifier: SystemId(7_300_000_000_000_000_001),
        pg_control_version: 1300,
        catalog_version_no: 202107181,
        // The classifier takes the version from PG_VERSION; set per test where it matters.
        version: None,
        wal_seg_size: WalSegSize::DEFAULT,
        sentinel: false,
    }
}

/// A crashed v14 primary: in production, stale pid naming this directory, postmaster.opts,
/// pg_wal 9..B valid.
fn crashed(major: u32) -> Facts {
    let mut f = Facts {
        path: PathBuf::from(DIR),
        version: PgVersion::from_num(major * 10000).ok(),
        control: Some(control(DbState::InProduction, "0/A000098", "0/A000060")),
        files: Files {
            postmaster_opts: true,
            ..Files::default()
        },
        postmaster: PidFacts {
            liveness: Liveness::Stale,
            pid: Some(4242),
            data_directory: Some(DIR.into()),
            names_this_directory: Some(true),
            detail: "no process has pid 4242: the server that wrote the file is gone".into(),
            ..PidFacts::default()
        },
        ..Facts::default()
    };
    if let Some(c) = f.control.as_mut() {
        c.version = f.version;
    }
    f.wal.exists = true;
    f.wal.seg_size = Some(WalSegSize::DEFAULT);
    segs(&mut f, 9, 0xB);
    f
}

fn segs(f: &mut Facts, first: u64, last: u64) {
    for n in first..=last {
        f.wal.segments.insert(
            WalSegment::from_segno(TimelineId(1), n, WalSegSize::DEFAULT),
            SegState::Valid,
        );
    }
}

const EXCLUSIVE: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                         CHECKPOINT LOCATION: 0/2000060\n\
                         BACKUP METHOD: pg_start_backup\n\
                         BACKUP FROM: primary\n\
                         START TIME: 2025-11-21 10:46:49 UTC\n\
                         LABEL: nightly\n\
                         START TIMELINE: 1\n";

const STREAMED: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                        CHECKPOINT LOCATION: 0/2000060\n\
                        BACKUP METHOD: streamed\n\
                        BACKUP FROM: primary\n\
                        START TIME: 2025-11-21 10:46:49 UTC\n\
                        LABEL: nightly\n\
                        START TIMELINE: 1\n";

const REWIND: &str = "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n\
                      CHECKPOINT LOCATION: 0/3000060\n\
                      BACKUP METHOD: pg_rewind\n\
                      BACKUP FROM: standby\n\
                      START TIME: 2025-11-21 10:46:49 UTC\n";

fn label(text: &str) -> Option<LabelFile> {
    let l = LabelFile::of(text.as_bytes());
    assert!(l.parsed.is_some(), "{:?}", l.error);
    Some(l)
}

/// A restored copy of a non-exclusive backup of v`major`: streamed label, pg_control copied
/// during the backup (in production, checkpoint = the label's), no pid/opts, WAL 2..3.
fn restored(major: u32) -> Facts {
    let mut f = crashed(major);
    f.label = label(STREAMED);
    f.control = Some(control(DbState::InProduction, "0/2000060", "0/2000028"));
    f.files.postmaster_opts = false;
    f.postmaster = PidFacts::default();
    f.wal.segments.clear();
    segs(&mut f, 2, 3);
    f
}

fn marker() -> RestoreMarker {
    RestoreMarker {
        format: RESTORE_MARKER_FORMAT,
        backup_id: "20251121T104649".into(),
        label: Some("nightly".into()),
        start_lsn: lsn("0/2000028"),
        start_timeline: Some(TimelineId(1)),
        checkpoint_lsn: Some(lsn("0/2000060")),
        stop_lsn: Some(lsn("0/3000100")),
        stop_timeline: Some(TimelineId(1)),
        backup_start_time: Some("2025-11-21 10:46:49 UTC".into()),
        restored_at: "2025-11-22T08:00:00Z".into(),
        source: Some("/backups/20251121T104649".into()),
        system_identifier: None,
        sentinel: true,
        pgsafe_version: Some("0.1.0".into()),
    }
}

fn with_marker(f: &mut Facts) {
    let m = marker();
    f.backup_end = Some(BackupEnd {
        lsn: m.stop_lsn.unwrap(),
        timeline: m.stop_timeline,
        source: format!("the restore marker {RESTORE_MARKER_FILE}"),
    });
    f.marker = Some(MarkerFacts {
        parsed: Some(m),
        error: None,
    });
}

/// Commands that would move or delete backup_label.
fn removes_label(v: &Verdict) -> bool {
    v.next_steps.iter().any(|s| {
        s.command.as_deref().is_some_and(|c| {
            (c.starts_with("mv ") || c.starts_with("rm ")) && c.contains("/backup_label ")
                || c.starts_with("rm ") && c.ends_with("/backup_label")
        })
    }) || v.fix.is_some()
}

fn check(v: &Verdict, state: DoctorState) {
    assert_eq!(v.state, state, "{v:#?}");
    assert_eq!(v.state_number, state.number());
    assert!(!v.summary.is_empty());
    assert!(!v.evidence.is_empty(), "{v:#?}");
    assert!(!v.next_steps.is_empty(), "{v:#?}");
    if state != DoctorState::CrashedDuringExclusiveBackup && state != DoctorState::Running {
        assert!(
            !removes_label(v),
            "must not advise removing the label: {v:#?}"
        );
    }
}

// ---- 1 ------------------------------------------------------------------------------------

#[test]
fn live_postmaster_is_running() {
    let mut f = crashed(15);
    f.postmaster.liveness = Liveness::Live;
    f.postmaster.pid_in_use = true;
    f.postmaster.detail = "process 4242 is a PostgreSQL server running in this directory".into();
    let v = classify(&f);
    check(&v, DoctorState::Running);
    assert_eq!(v.confidence, Confidence::High);
    assert!(v.state.is_healthy());
}

#[test]
fn running_with_exclusive_backup_in_progress() {
    let mut f = crashed(14);
    f.postmaster.liveness = Liveness::Live;
    f.label = label(EXCLUSIVE);
    f.server = Some(ServerFacts {
        reachable: true,
        same_directory: Some(true),
        in_exclusive_backup: Some(true),
        backup_start_time: Some("2025-11-21 10:46:49+00".into()),
        ..ServerFacts::default()
    });
    let v = classify(&f);
    check(&v, DoctorState::Running);
    assert!(
        v.summary.contains("exclusive backup in progress"),
        "{}",
        v.summary
    );
    assert!(
        v.next_steps
            .iter()
            .any(|s| s.command.as_deref() == Some("psql -c 'SELECT pg_stop_backup()'"))
    );
    assert!(v.fix.is_none());
}

#[test]
fn running_with_a_stray_streamed_label_warns() {
    let mut f = crashed(16);
    f.postmaster.liveness = Liveness::Live;
    f.label = label(STREAMED);
    let v = classify(&f);
    check(&v, DoctorState::Running);
    assert!(v.summary.contains("stray backup_label"), "{}", v.summary);
    assert!(v.caveats.iter().any(|c| c.contains("next restart")));
    assert!(v.fix.is_none(), "--fix is for state 4 only");
}

#[test]
fn running_15_plus_with_an_exclusive_label_is_stray() {
    let mut f = crashed(15);
    f.postmaster.liveness = Liveness::Live;
    f.label = label(EXCLUSIVE);
    let v = classify(&f);
    check(&v, DoctorState::Running);
    assert!(v.summary.contains("stray backup_label"), "{}", v.summary);
    assert!(
        v.evidence.iter().any(|e| e.contains("cannot write")),
        "{v:#?}"
    );
    // On 14 without --connect it is probably a backup in progress: no move advised.
    let mut f = crashed(14);
    f.postmaster.liveness = Liveness::Live;
    f.label = label(EXCLUSIVE);
    let v = classify(&f);
    assert!(!removes_label(&v), "{v:#?}");
}

#[test]
fn connect_to_this_directory_counts_as_running() {
    let mut f = crashed(17);
    f.postmaster = PidFacts::default();
    f.server = Some(ServerFacts {
        reachable: true,
        same_directory: Some(true),
        ..ServerFacts::default()
    });
    check(&classify(&f), DoctorState::Running);
}

// ---- 2, 3 -----------------------------------------------------------------------------------

#[test]
fn clean_shutdown() {
    let mut f = crashed(18);
    f.control = Some(control(DbState::ShutDown, "0/A000028", "0/A000028"));
    f.postmaster = PidFacts::default();
    let v = classify(&f);
    check(&v, DoctorState::CleanShutdown);
    assert!(v.state.is_healthy());
}

#[test]
fn standby_shut_down_without_its_signal_is_warned_about() {
    let mut f = crashed(13);
    f.control = Some(control(
        DbState::ShutDownInRecovery,
        "0/A000028",
        "0/A000028",
    ));
    f.postmaster = PidFacts::default();
    let v = classify(&f);
    check(&v, DoctorState::CleanShutdown);
    assert!(v.summary.contains("PRIMARY"), "{v:#?}");
    assert!(
        !v.starts_safely_as_is(),
        "it would start as a primary: {v:#?}"
    );
    assert!(
        v.next_steps
            .iter()
            .any(|s| s.command.as_deref() == Some("touch /srv/pg/data/standby.signal")),
        "{v:#?}"
    );
    f.files.standby_signal = true;
    assert!(classify(&f).starts_safely_as_is());
}

#[test]
fn crashed_standby_without_its_signal_is_not_safe() {
    for major in [11, 14, 18] {
        let mut f = crashed(major);
        f.control.as_mut().unwrap().state = DbState::InArchiveRecovery;
        let v = classify(&f);
        check(&v, DoctorState::Crashed);
        assert!(v.summary.contains("PRIMARY"), "{v:#?}");
        assert!(!v.starts_safely_as_is(), "{v:#?}");
        if major < 12 {
            f.files.recovery_conf = true;
        } else {
            f.files.standby_signal = true;
        }
        assert!(classify(&f).starts_safely_as_is(), "{major}");
    }
}

// ---- outside evidence: is it a copy? ---------------------------------------------------------

/// A holder record of a backup that started at 0/9000028 (checkpoint 0/9000060) and, with
/// `stop`, stopped there.
fn holder_record(stop: Option<&str>) -> HolderRecordFacts {
    HolderRecordFacts {
        file: PathBuf::from("/tmp/pgsafe-999/nightly.json"),
        id: "nightly".into(),
        state: if stop.is_some() {
            "complete"
        } else {
            "in progress"
        }
        .into(),
        server: "host=/tmp port=5432".into(),
        label: "nightly".into(),
        start_lsn: Some(lsn("0/9000028")),
        start_tli: Some(TimelineId(1)),
        checkpoint: stop.map(|_| lsn("0/9000060")),
        stop_lsn: stop.map(lsn),
        final_at: stop.map(|_| 1_763_716_200),
        other_server: None,
    }
}

fn history(location: &str, start: &str, ck: &str, stop: &str) -> HistoryFile {
    HistoryFile {
        name: "000000010000000000000009.00000028.backup".into(),
        location: location.into(),
        start: lsn(start),
        checkpoint: Some(lsn(ck)),
        stop: Some(lsn(stop)),
        label: Some("nightly".into()),
        error: None,
    }
}

fn archive_with(f: &mut Facts, loc: ArchiveLocation) {
    f.archive.locations.push(ArchiveLocation {
        dir: PathBuf::from("/arch"),
        from: "archive_command `cp %p /arch/%f`".into(),
        ..loc
    });
}

#[test]
fn copy_taken_during_a_backup_is_not_a_crash() {
    // pg_control's checkpoint 0/A000098 lies in the window 0/9000060..0/B000000.
    type Edit = fn(&mut Facts);
    let cases: [(&str, Edit); 3] = [
        ("history file in the archive only", |f| {
            archive_with(
                f,
                ArchiveLocation {
                    history_files: vec![history("/arch", "0/9000028", "0/9000060", "0/B000000")],
                    ..ArchiveLocation::default()
                },
            )
        }),
        ("archive WAL beyond pg_wal", |f| {
            archive_with(
                f,
                ArchiveLocation {
                    beyond_pg_wal: Some("00000001000000000000000D".into()),
                    beyond_checked: true,
                    ..ArchiveLocation::default()
                },
            )
        }),
        ("holder record of a stopped backup", |f| {
            f.holders.records.push(holder_record(Some("0/B000000")))
        }),
    ];
    for (what, edit) in cases {
        let mut f = crashed(18);
        edit(&mut f);
        let v = classify(&f);
        check(&v, DoctorState::RestoredBroken);
        assert_eq!(v.confidence, Confidence::High, "{what}: {v:#?}");
        assert!(!v.starts_safely_as_is());
        // The same facts with a label from that backup: a restored copy, never state 4.
        let mut f = crashed(12);
        f.label = label(
            "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n\
             CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: pg_start_backup\n\
             BACKUP FROM: primary\nSTART TIME: 2025-11-21 10:46:49 UTC\nLABEL: nightly\n",
        );
        f.wal.segments.clear();
        segs(&mut f, 0xA, 0xB);
        edit(&mut f);
        let v = classify(&f);
        assert_ne!(
            v.state,
            DoctorState::CrashedDuringExclusiveBackup,
            "{what}: {v:#?}"
        );
        assert!(!removes_label(&v), "{what}: {v:#?}");
    }
}

#[test]
fn a_history_file_in_pg_wal_means_the_files_came_after_the_stop() {
    let mut f = crashed(16);
    f.wal_history
        .push(history("pg_wal", "0/9000028", "0/9000060", "0/B000000"));
    archive_with(
        &mut f,
        ArchiveLocation {
            history_files: vec![history("/arch", "0/9000028", "0/9000060", "0/B000000")],
            ..ArchiveLocation::default()
        },
    );
    f.holders.records.push(holder_record(Some("0/B000000")));
    let v = classify(&f);
    check(&v, DoctorState::Crashed);
    assert_eq!(v.confidence, Confidence::High, "{v:#?}");
    assert!(v.starts_safely_as_is());
}

#[test]
fn a_backup_that_never_ended_makes_a_crash_ambiguous() {
    let mut f = crashed(17);
    f.holders.records.push(holder_record(None));
    let v = classify(&f);
    check(&v, DoctorState::Crashed);
    assert_eq!(v.confidence, Confidence::Low);
    assert!(!v.starts_safely_as_is(), "{v:#?}");
    assert!(!v.must_confirm.is_empty());
    // A record of another server (another port) proves nothing.
    f.holders.records[0].other_server = Some("port 5433".into());
    assert!(classify(&f).starts_safely_as_is());
}

#[test]
fn unchecked_archive_lowers_confidence_and_blocks_the_rename() {
    let mut f = crashed(18);
    f.archive.none_configured = true;
    let v = classify(&f);
    check(&v, DoctorState::Crashed);
    assert_eq!(v.confidence, Confidence::Medium);
    assert!(
        v.caveats
            .iter()
            .any(|c| c.contains("proves") || c.contains("do not show"))
    );
    // The exclusive-backup rename is never "safe" without the archive checked.
    let mut f = crashed(14);
    f.label = label(EXCLUSIVE);
    f.archive
        .not_interpreted
        .push("archive_command `scp ...`".into());
    let v = classify(&f);
    check(&v, DoctorState::CrashedDuringExclusiveBackup);
    assert!(v.fix.is_none(), "{v:#?}");
    assert!(v.confidence < Confidence::High);
    assert!(!v.must_confirm.is_empty());
    assert!(refusal(&v).to_string().contains("ambiguous"));
}

#[test]
fn a_finished_restore_marker_does_not_make_a_later_crash_a_restore() {
    // Restored once (marker, backup 0/2000028..0/3000100, label consumed), then ran on its own;
    // later an exclusive backup began at 0/9000028 and the server crashed.
    let mut f = crashed(14);
    with_marker(&mut f);
    f.backup_end = None;
    f.label_old = label(STREAMED);
    f.label = label(
        "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n\
         CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: pg_start_backup\n\
         BACKUP FROM: primary\nSTART TIME: 2025-11-21 10:46:49 UTC\nLABEL: later\n",
    );
    let v = classify(&f);
    check(&v, DoctorState::CrashedDuringExclusiveBackup);
    assert!(
        v.evidence.iter().any(|e| e.contains("restore is over")),
        "{v:#?}"
    );
    assert!(
        !v.next_steps
            .iter()
            .any(|s| s.command.as_deref().unwrap_or("").contains("/backups/")),
        "no advice to copy WAL from the old backup: {v:#?}"
    );
    // Without a label: a plain crash, not "restored backup whose label is missing".
    f.label = None;
    let v = classify(&f);
    check(&v, DoctorState::Crashed);
    // The marker still counts while that restore is in progress (pg_control before its end).
    let mut f = restored(14);
    with_marker(&mut f);
    f.label = None;
    assert_eq!(classify(&f).state, DoctorState::RestoredBroken);
}

#[test]
fn label_starting_after_pg_control_is_stray() {
    for (text, major) in [(EXCLUSIVE, 12), (STREAMED, 16)] {
        let mut f = crashed(major);
        f.label = label(text);
        let c = f.control.as_mut().unwrap();
        c.checkpoint = lsn("0/1000060");
        c.redo = lsn("0/1000028");
        segs(&mut f, 1, 1);
        let v = classify(&f);
        check(&v, DoctorState::RestoredBroken);
        assert!(v.summary.contains("does not belong"), "{v:#?}");
        assert!(!v.starts_safely_as_is());
    }
}

#[test]
fn crash_without_backup() {
    let v = classify(&crashed(10));
    check(&v, DoctorState::Crashed);
    assert_eq!(v.confidence, Confidence::High);
    assert!(v.state.is_healthy());
}

#[test]
fn crash_with_its_checkpoint_wal_missing_will_not_start() {
    let mut f = crashed(12);
    f.wal.segments.clear();
    segs(&mut f, 0xB, 0xC);
    let v = classify(&f);
    check(&v, DoctorState::Unknown);
    assert!(
        v.summary.contains("00000001000000000000000A"),
        "{}",
        v.summary
    );
    assert!(!v.state.is_healthy());
}

#[test]
fn redo_segment_missing_names_it_and_what_postgres_does() {
    // Redo in 0A, the checkpoint record in 0B (PostgreSQL's 050 scenario); 0A missing.
    for (major, effect) in [(13, "starts anyway"), (14, "could not find redo location")] {
        let mut f = crashed(major);
        f.control = Some(control(DbState::InProduction, "0/B000028", "0/AFFFF00"));
        f.wal.segments.clear();
        segs(&mut f, 0xB, 0xC);
        let v = classify(&f);
        check(&v, DoctorState::Unknown);
        assert!(
            v.summary.contains("00000001000000000000000A"),
            "{}",
            v.summary
        );
        assert!(v.summary.contains("redo point"), "{}", v.summary);
        assert!(
            v.summary
                .contains("00000001000000000000000B, which is present")
        );
        assert!(v.evidence.iter().any(|e| e.contains(effect)), "{v:#?}");
    }
}

#[test]
fn in_place_tablespace_in_a_restore_is_named_with_its_fix() {
    let mut f = restored(15);
    f.in_place_tablespaces = vec!["16384".into()];
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert!(v.summary.contains("pg_tblspc/16384"), "{}", v.summary);
    assert!(
        v.summary.contains("unexpected directory entry"),
        "{}",
        v.summary
    );
    assert!(
        v.next_steps.iter().any(|s| s.command.as_deref()
            == Some(
                "echo \"allow_in_place_tablespaces = on\" >> /srv/pg/data/postgresql.auto.conf"
            )),
        "{v:#?}"
    );
    f.settings.allow_in_place_tablespaces = Some(Setting {
        name: "allow_in_place_tablespaces".into(),
        value: "on".into(),
        file: PathBuf::from("/srv/pg/data/postgresql.auto.conf"),
        line: 1,
    });
    assert_eq!(classify(&f).state, DoctorState::RestoredReady);
}

#[test]
fn stale_pid_reused_by_another_program_is_removed_first() {
    let mut f = crashed(15);
    f.postmaster.pid_in_use = true;
    f.postmaster.detail =
        "pid 4242 now belongs to another program (bash), not to PostgreSQL".into();
    let v = classify(&f);
    check(&v, DoctorState::Crashed);
    assert_eq!(
        v.next_steps[0].command.as_deref(),
        Some("rm /srv/pg/data/postmaster.pid")
    );
}

#[test]
fn recovery_conf_on_12_plus_blocks_the_start() {
    let mut f = crashed(12);
    f.files.recovery_conf = true;
    let v = classify(&f);
    check(&v, DoctorState::Unknown);
    assert!(v.summary.contains("recovery.conf"));
}

// ---- 4 ------------------------------------------------------------------------------------

#[test]
fn crashed_during_exclusive_backup_is_fixable() {
    for major in [10, 11, 12, 13, 14] {
        let mut f = crashed(major);
        f.label = label(EXCLUSIVE);
        let v = classify(&f);
        check(&v, DoctorState::CrashedDuringExclusiveBackup);
        assert_eq!(v.confidence, Confidence::High, "{v:#?}");
        assert!(v.must_confirm.is_empty(), "{v:#?}");
        let fix = v.fix.as_ref().expect("fix offered");
        assert_eq!(fix.from, PathBuf::from(DIR).join("backup_label"));
        assert_eq!(fix.to, PathBuf::from(DIR).join(REMOVED_LABEL_FILE));
        assert!(
            v.caveats
                .iter()
                .any(|c| c.contains("What would make renaming unsafe")),
            "{v:#?}"
        );
        assert!(
            v.evidence
                .iter()
                .any(|e| e.contains("could not locate required checkpoint record")),
            "{v:#?}"
        );
        assert!(!v.state.is_healthy());
    }
}

#[test]
fn exclusive_crash_with_its_wal_still_present_just_starts() {
    let mut f = crashed(14);
    f.label = label(EXCLUSIVE);
    segs(&mut f, 2, 8);
    let v = classify(&f);
    check(&v, DoctorState::CrashedDuringExclusiveBackup);
    assert!(v.fix.is_none(), "no rename needed: {v:#?}");
    assert!(v.summary.contains("start it"), "{}", v.summary);
    assert!(refusal(&v).to_string().contains("nothing needs fixing"));
}

#[test]
fn exclusive_label_with_a_gap_in_its_wal_still_needs_the_rename() {
    let mut f = crashed(14);
    f.label = label(EXCLUSIVE);
    segs(&mut f, 2, 5); // 6..8 recycled
    let v = classify(&f);
    assert!(v.fix.is_some(), "{v:#?}");
}

#[test]
fn exclusive_label_any_restore_sign_means_restored() {
    type Edit = fn(&mut Facts);
    let edits: [(&str, Edit); 7] = [
        ("recovery.signal", |f| f.files.recovery_signal = true),
        ("standby.signal", |f| f.files.standby_signal = true),
        ("marker", with_marker),
        ("sentinel", |f| {
            f.control.as_mut().unwrap().sentinel = true;
        }),
        ("backup_manifest", |f| f.files.backup_manifest = true),
        ("history file", |f| {
            f.label_history_file = Some("000000010000000000000002.00000028.backup".into())
        }),
        ("clean shutdown", |f| {
            f.control.as_mut().unwrap().state = DbState::ShutDown;
        }),
    ];
    for (what, edit) in edits {
        let mut f = crashed(14);
        f.label = label(EXCLUSIVE);
        edit(&mut f);
        let v = classify(&f);
        assert!(
            matches!(
                v.state,
                DoctorState::RestoredReady | DoctorState::RestoredBroken
            ),
            "{what}: {v:#?}"
        );
        assert!(!removes_label(&v), "{what}: {v:#?}");
    }
}

#[test]
fn exclusive_label_doubts_make_it_ambiguous() {
    type Edit = fn(&mut Facts);
    let edits: [(&str, Edit); 6] = [
        ("no postmaster.opts", |f| f.files.postmaster_opts = false),
        ("pid of another dir", |f| {
            f.postmaster.names_this_directory = Some(false);
            f.postmaster.data_directory = Some("/elsewhere".into());
        }),
        (
            "pg_control's checkpoint between the label's start and checkpoint",
            |f| {
                let c = f.control.as_mut().unwrap();
                c.checkpoint = lsn("0/2000040");
                c.redo = lsn("0/2000028");
                segs(f, 2, 2);
            },
        ),
        ("a holder record overlaps", |f| {
            f.holders.records.push(holder_record(None));
            f.control.as_mut().unwrap().time = 1_763_716_100;
        }),
        ("pg_control's WAL missing", |f| {
            f.wal.segments.clear();
        }),
        ("no METHOD line", |f| {
            f.label = label(
                "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                 CHECKPOINT LOCATION: 0/2000060\n",
            );
        }),
    ];
    for (what, edit) in edits {
        let mut f = crashed(12);
        f.label = label(EXCLUSIVE);
        edit(&mut f);
        let v = classify(&f);
        check(&v, DoctorState::CrashedDuringExclusiveBackup);
        assert_eq!(v.confidence, Confidence::Low, "{what}");
        assert!(v.fix.is_none(), "{what}: ambiguous must not be fixable");
        assert!(v.must_confirm.len() >= 2, "{what}: {v:#?}");
        assert!(refusal(&v).to_string().contains("ambiguous"));
    }
}

#[test]
fn exclusive_label_on_15_plus_is_never_state_4() {
    for major in [15, 16, 17, 18] {
        let mut f = crashed(major);
        f.label = label(EXCLUSIVE);
        let v = classify(&f);
        assert_ne!(v.state, DoctorState::CrashedDuringExclusiveBackup, "{v:#?}");
        assert!(!removes_label(&v), "{v:#?}");
        assert!(
            v.evidence
                .iter()
                .any(|e| e.contains("has no exclusive backups")),
            "{v:#?}"
        );
    }
}

#[test]
fn earlier_rename_blocks_the_fix() {
    let mut f = crashed(14);
    f.label = label(EXCLUSIVE);
    f.files.removed_label = true;
    let v = classify(&f);
    check(&v, DoctorState::CrashedDuringExclusiveBackup);
    assert!(v.fix.is_none());
    assert!(
        refusal(&v).to_string().contains("already exists"),
        "{}",
        refusal(&v).to_string()
    );
}

// ---- 5, 6 with a label ----------------------------------------------------------------------

#[test]
fn restored_backup_with_its_wal_is_ready() {
    for major in [10, 12, 14, 15, 17, 18] {
        let v = classify(&restored(major));
        check(&v, DoctorState::RestoredReady);
        assert!(v.state.is_healthy());
        assert!(
            v.caveats
                .iter()
                .any(|c| c.contains("Never remove backup_label"))
        );
    }
}

#[test]
fn restored_backup_with_known_end_and_all_wal_is_high_confidence() {
    let mut f = restored(16);
    with_marker(&mut f);
    let v = classify(&f);
    check(&v, DoctorState::RestoredReady);
    assert_eq!(v.confidence, Confidence::High);
}

#[test]
fn restored_backup_missing_its_first_segment_names_it() {
    let mut f = restored(15);
    with_marker(&mut f);
    f.wal.segments.clear();
    segs(&mut f, 3, 3);
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert!(
        v.summary.contains("000000010000000000000002"),
        "{}",
        v.summary
    );
    let cp = v
        .next_steps
        .iter()
        .find_map(|s| s.command.clone().filter(|c| c.starts_with("cp ")))
        .expect("a cp step");
    assert_eq!(
        cp,
        "cp /backups/20251121T104649/pg_wal/000000010000000000000002 /srv/pg/data/pg_wal/"
    );
    assert!(!v.state.is_healthy());
}

#[test]
fn restore_command_with_signal_makes_missing_wal_fetchable() {
    let mut f = restored(15);
    f.wal.segments.clear();
    f.files.recovery_signal = true;
    f.settings.restore_command = Some(Setting {
        name: "restore_command".into(),
        value: "cp /arch/%f %p".into(),
        file: PathBuf::from("/srv/pg/data/postgresql.conf"),
        line: 1,
    });
    let v = classify(&f);
    check(&v, DoctorState::RestoredReady);
    assert_eq!(v.confidence, Confidence::Medium);
    // Without the signal, restore_command is not used.
    f.files.recovery_signal = false;
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert!(
        v.next_steps
            .iter()
            .any(|s| s.command.as_deref() == Some("touch /srv/pg/data/recovery.signal")),
        "{v:#?}"
    );
}

#[test]
fn standby_label_needs_a_standby_pg_control() {
    let mut f = restored(14);
    f.label = label(&STREAMED.replace("FROM: primary", "FROM: standby"));
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert!(
        v.summary.contains("inconsistent with control file"),
        "{}",
        v.summary
    );
    f.control.as_mut().unwrap().state = DbState::InArchiveRecovery;
    check(&classify(&f), DoctorState::RestoredReady);
}

#[test]
fn streamed_label_in_a_crash_like_directory_asks_but_never_removes() {
    // The 15+ trap: a live primary's PGDATA into which a script wrote pg_backup_stop()'s
    // label, then a crash — indistinguishable from a snapshot restore.
    let mut f = crashed(16);
    f.label = label(STREAMED);
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert!(v.fix.is_none());
    assert!(
        v.must_confirm
            .iter()
            .any(|c| c.contains("cannot tell the two apart")),
        "{v:#?}"
    );
}

#[test]
fn incremental_backup_must_be_combined() {
    let mut f = restored(17);
    f.label = label(&format!(
        "{STREAMED}INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\n"
    ));
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert!(
        v.next_steps[0]
            .command
            .as_deref()
            .unwrap()
            .starts_with("pg_combinebackup")
    );
}

// ---- 6 without a label ------------------------------------------------------------------------

#[test]
fn sentinel_without_label_is_a_broken_restore() {
    let mut f = restored(15);
    f.label = None;
    f.control.as_mut().unwrap().sentinel = true;
    f.control.as_mut().unwrap().checkpoint = SENTINEL_CHECKPOINT;
    with_marker(&mut f);
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert_eq!(v.confidence, Confidence::High);
    assert_eq!(
        v.next_steps[0].command.as_deref(),
        Some("cp /backups/20251121T104649/backup_label /srv/pg/data/")
    );
}

#[test]
fn marker_without_label_is_a_broken_restore() {
    let mut f = restored(12);
    f.label = None;
    with_marker(&mut f);
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert_eq!(v.confidence, Confidence::High);
}

#[test]
fn backup_copy_pattern_without_label_is_a_broken_restore() {
    let mut f = restored(14);
    f.label = None;
    let v = classify(&f);
    check(&v, DoctorState::RestoredBroken);
    assert_eq!(v.confidence, Confidence::Medium);
    assert!(!v.must_confirm.is_empty());
    let mut f = restored(14);
    f.label = None;
    f.files.postmaster_opts = true;
    f.files.backup_manifest = true;
    check(&classify(&f), DoctorState::RestoredBroken);
}

#[test]
fn interrupted_recovery_resumes() {
    let mut f = crashed(15);
    f.label_old = label(STREAMED);
    let c = f.control.as_mut().unwrap();
    c.state = DbState::InArchiveRecovery;
    c.backup_start_point = lsn("0/2000028");
    c.backup_end_required = true;
    check(&classify(&f), DoctorState::RestoredReady);
    f.wal.segments.clear();
    check(&classify(&f), DoctorState::RestoredBroken);
}

// ---- 7, 8, 9 --------------------------------------------------------------------------------

#[test]
fn recovered_and_stopped_is_finished() {
    let mut f = restored(18);
    f.label = None;
    f.label_old = label(STREAMED);
    with_marker(&mut f);
    f.control = Some(control(DbState::ShutDown, "0/A000028", "0/A000028"));
    f.wal.segments.clear();
    segs(&mut f, 0xA, 0xA);
    let v = classify(&f);
    check(&v, DoctorState::RecoveryFinished);
    assert!(v.state.is_healthy());
}

#[test]
fn pg_rewind_label() {
    let mut f = crashed(15);
    f.label = label(REWIND);
    f.control = Some(control(
        DbState::InArchiveRecovery,
        "0/A000098",
        "0/A000060",
    ));
    let v = classify(&f);
    check(&v, DoctorState::RewoundByPgRewind);
    assert!(
        v.next_steps
            .iter()
            .any(|s| s.command.as_deref() == Some("touch /srv/pg/data/standby.signal"))
    );
    assert!(!v.state.is_healthy());
}

#[test]
fn not_a_data_directory() {
    let f = Facts {
        path: PathBuf::from("/tmp/x"),
        missing: vec![
            "everything: the directory is empty".into(),
            "PG_VERSION".into(),
            "global/pg_control".into(),
        ],
        ..Facts::default()
    };
    let v = classify(&f);
    check(&v, DoctorState::Unknown);
    assert!(v.summary.contains("not a PostgreSQL data directory"));
    assert!(v.evidence.iter().any(|e| e == "the directory is empty"));

    let f = Facts {
        path: PathBuf::from("/var/lib/postgresql/15"),
        missing: vec!["PG_VERSION".into(), "global/pg_control".into()],
        nested_data_dirs: vec![PathBuf::from("/var/lib/postgresql/15/main")],
        ..Facts::default()
    };
    let v = classify(&f);
    assert_eq!(
        v.next_steps[0].command.as_deref(),
        Some("pgsafe doctor /var/lib/postgresql/15/main")
    );
}

#[test]
fn damaged_pg_control_is_unknown() {
    let f = Facts {
        path: PathBuf::from(DIR),
        version: PgVersion::from_num(150000).ok(),
        control_error: Some("incorrect checksum in pg_control".into()),
        ..Facts::default()
    };
    let v = classify(&f);
    check(&v, DoctorState::Unknown);
    assert!(v.evidence[0].contains("incorrect checksum"));
}

#[test]
fn mixed_versions_are_unknown() {
    let mut f = crashed(15);
    f.control.as_mut().unwrap().version = PgVersion::from_num(140000).ok();
    let v = classify(&f);
    check(&v, DoctorState::Unknown);
    assert!(
        v.summary.contains("two different clusters"),
        "{}",
        v.summary
    );
}

#[test]
fn unparseable_label_is_unknown_and_kept() {
    let mut f = crashed(14);
    f.label = Some(LabelFile::of(b"garbage\n"));
    let v = classify(&f);
    assert_eq!(v.state, DoctorState::Unknown);
    assert!(!removes_label(&v));
}

#[test]
fn missing_wal_directory() {
    let mut f = crashed(15);
    f.wal.error = Some("pg_wal is a symbolic link to /mnt/wal, which does not exist".into());
    check(&classify(&f), DoctorState::Unknown);
    f.label = label(STREAMED);
    check(&classify(&f), DoctorState::RestoredBroken);
}

// ---- sentinel and marker ----------------------------------------------------------------------

#[test]
fn marker_round_trips_and_tolerates_missing_optional_fields() {
    let m = marker();
    assert_eq!(RestoreMarker::parse(&m.to_json()).unwrap(), m);
    let minimal = br#"{"format":1,"backup_id":"b","start_lsn":"0/2000028","restored_at":"t"}"#;
    let p = RestoreMarker::parse(minimal).unwrap();
    assert_eq!(p.start_lsn, lsn("0/2000028"));
    assert!(!p.sentinel);
}

#[test]
fn shell_quoting() {
    use super::classify::shq;
    assert_eq!(shq("/srv/pg/data"), "/srv/pg/data");
    assert_eq!(shq("/srv/my data"), "'/srv/my data'");
    assert_eq!(shq("it's"), r"'it'\''s'");
}

#[test]
fn exit_classes() {
    use DoctorState::*;
    let healthy: Vec<u8> = [
        Running,
        CleanShutdown,
        Crashed,
        CrashedDuringExclusiveBackup,
        RestoredReady,
        RestoredBroken,
        RecoveryFinished,
        RewoundByPgRewind,
        Unknown,
    ]
    .into_iter()
    .filter(|s| s.is_healthy())
    .map(|s| s.number())
    .collect();
    assert_eq!(healthy, [1, 2, 3, 5, 7]);
}

/// A holder record of another cluster (another system identifier, even on the same port) or of
/// another server on this host (same identifier — a standby — but another port) is set apart;
/// a record of this cluster on this port is kept as evidence.
#[test]
fn holder_records_of_other_clusters_are_set_apart() {
    use crate::runrecord::{BackupRecord, BackupState};
    use crate::types::SystemId;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, port: u16, sid: Option<u64>| {
        let rec = BackupRecord {
            id: name.parse().unwrap(),
            state: BackupState::InProgress,
            holder_pid: 1,
            server: format!("host=/tmp port={port} user=postgres"),
            server_version: None,
            from_standby: false,
            label: "l".into(),
            fast: true,
            start_lsn: Some("0/2000028".parse().unwrap()),
            start_tli: None,
            start_wal: None,
            started_at: 0,
            start_duration_ms: None,
            max_hold_secs: 60,
            result: None,
            failure: None,
            system_id: sid.map(SystemId),
            data_directory: None,
            port: None,
            connection: None,
        };
        std::fs::write(
            dir.path().join(format!("{name}.json")),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
    };
    write("same", 5432, Some(7));
    write("other-cluster", 5432, Some(8));
    write("other-port", 5433, Some(7));
    write("old-record", 5432, None);
    let h =
        super::evidence::gather_holders(&[dir.path().to_path_buf()], Some(5432), Some(SystemId(7)));
    let other = |id: &str| {
        h.records
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("{id} not read: {h:#?}"))
            .other_server
            .clone()
    };
    assert_eq!(other("same"), None);
    assert_eq!(other("old-record"), None);
    assert!(
        other("other-cluster")
            .unwrap()
            .contains("system identifier 8")
    );
    assert!(other("other-port").unwrap().contains("port 5433"));
}
