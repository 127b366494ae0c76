use super::*;
use crate::repo::catalog::{InfoDoc, Observed, ObservedDoc, ObservedEntry, ObservedKind, derive};
use crate::repo::doc::{EventKind, VerifyResult};
use crate::repo::testdata::{SYSID, event, ident, info_json, lease, registration};

const SEC: i64 = 1_000_000;
const NOW: i64 = 1_000_000 * SEC;

fn folder(name: &str, info: InfoDoc) -> ObservedEntry {
    ObservedEntry {
        name: name.as_bytes().to_vec(),
        kind: ObservedKind::Folder(info),
    }
}

fn complete(name: &str, tli: u32, lsn: u64, started: i64) -> ObservedEntry {
    folder(
        name,
        InfoDoc::Bytes(info_json(SYSID, 15, tli, lsn, started)),
    )
}

/// A complete backup whose `pgsafe.json` is changed by `edit` first.
fn edited(
    name: &str,
    lsn: u64,
    started: i64,
    edit: impl Fn(&mut serde_json::Value),
) -> ObservedEntry {
    let mut v: serde_json::Value =
        serde_json::from_slice(&info_json(SYSID, 15, 1, lsn, started)).unwrap();
    edit(&mut v);
    folder(name, InfoDoc::Bytes(serde_json::to_vec(&v).unwrap()))
}

fn observed(entries: Vec<ObservedEntry>, events: Vec<(&str, crate::repo::Event)>) -> Observed {
    Observed {
        registration: registration(),
        entries,
        leases: Vec::new(),
        events: events
            .into_iter()
            .map(|(n, e)| ObservedDoc {
                name: n.into(),
                doc: Ok(e),
            })
            .collect(),
        now_us: NOW,
        clock_skew_us: 60 * SEC,
    }
}

fn verified(backup: &str, problems: u64) -> EventKind {
    EventKind::Verified {
        backup: ident(backup),
        result: if problems == 0 {
            VerifyResult::Passed
        } else {
            VerifyResult::Failed
        },
        problems,
        restore_test: false,
    }
}

fn kinds(s: &ClusterSummary) -> Vec<(ProblemKind, Option<String>)> {
    s.problems
        .iter()
        .map(|p| (p.kind, p.backup.as_ref().map(|b| b.to_string())))
        .collect()
}

#[test]
fn a_healthy_cluster_is_ok_with_its_window_and_ages() {
    let o = observed(
        vec![
            complete("B", 1, 0x5000000, 200),
            complete("A", 1, 0x3000000, 100),
        ],
        vec![
            ("e1", event(10 * SEC, EventKind::Pin { backup: ident("A") })),
            ("e2", event(20 * SEC, verified("B", 0))),
            ("e3", event(15 * SEC, verified("A", 0))),
        ],
    );
    let s = summarize(&derive(&ident("main"), o), NOW);
    assert!(s.status.ok, "{:?}", s.problems);
    assert!(s.problems.is_empty());
    assert_eq!(s.registration.system_identifier, SystemId(SYSID));
    assert_eq!(s.registration.major, "15");
    assert_eq!(s.registration.wal_segment_size, 16 << 20);
    let ids: Vec<&str> = s.backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["A", "B"], "lineage order");
    let (a, b) = (&s.backups[0], &s.backups[1]);
    assert!(a.pinned && !b.pinned);
    assert!(!a.latest && b.latest);
    assert_eq!(a.kind, "full");
    assert_eq!(a.state, "complete");
    assert_eq!(a.stop_lsn, Some(Lsn(0x3000000)));
    assert_eq!(a.start_lsn, Some(Lsn(0x3000000 - 0x100)));
    assert_eq!(
        a.wal_last.map(|w| w.to_string()).as_deref(),
        Some("000000010000000000000003")
    );
    assert_eq!(a.original_bytes, Some(10));
    assert_eq!(a.page_checksum_errors, None, "not checked");
    assert_eq!(
        b.verification.as_ref().map(|v| v.result),
        Some(VerifyResult::Passed)
    );
    let w = &s.recoverability;
    assert_eq!(w.restore_points, 2);
    assert!(!w.continuous);
    assert_eq!(
        w.earliest
            .as_ref()
            .map(|p| (p.backup.as_str(), p.lsn, p.time)),
        Some(("A", Lsn(0x3000000), 100))
    );
    assert_eq!(
        w.latest.as_ref().map(|p| (p.backup.as_str(), p.lsn)),
        Some(("B", Lsn(0x5000000)))
    );
    assert_eq!(w.timelines, [TimelineId(1)]);
    assert_eq!(
        s.status.last_good_backup.as_ref().map(|i| i.as_str()),
        Some("B")
    );
    assert_eq!(s.status.last_good_backup_age_secs, Some(1_000_000 - 200));
    assert_eq!(
        s.status.last_verified_backup.as_ref().map(|i| i.as_str()),
        Some("B")
    );
    assert_eq!(s.totals.complete, 2);
    assert_eq!(s.totals.pinned, 1);
    assert_eq!(s.totals.original_bytes, 20);
    assert_eq!(s.totals.never_verified, 0);
}

#[test]
fn problems_are_listed_most_serious_first_and_bad_backups_leave_the_window() {
    let o = observed(
        vec![
            complete("A", 1, 0x3000000, 100),
            complete("B", 1, 0x4000000, 150),
            edited("C", 0x5000000, 200, |v| {
                v["page_checksums"] = serde_json::json!({
                    "files_checked": 3, "pages_checked": 30, "relseg_size": 131072,
                    "corrupt": [{"path": "base/5/16384", "blocks": [0, 7]}],
                    "changed_during_copy": [{"path": "base/5/16385", "blocks": [1]}],
                });
            }),
            edited("T", 0x6000000, 250, |v| {
                v["tablespace_changes"] = serde_json::json!([
                    {"oid": 16500, "change": "created", "location": "/srv/ts"}
                ]);
            }),
            folder("X", InfoDoc::Missing),
            folder("D", InfoDoc::Bytes(b"{garbage".to_vec())),
            folder(
                "F",
                InfoDoc::Bytes(info_json(SYSID + 1, 15, 1, 0x7000000, 300)),
            ),
        ],
        vec![("e1", event(10 * SEC, verified("B", 3)))],
    );
    let mut o = o;
    o.entries.push(ObservedEntry {
        name: b"notes.txt".to_vec(),
        kind: ObservedKind::File,
    });
    o.leases.push(ObservedDoc {
        name: "main/leases/backup-Q-000000.json".into(),
        doc: Err("not a valid document".into()),
    });
    let c = derive(&ident("main"), o);
    let s = summarize(&c, NOW);
    assert!(!s.status.ok);
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        kinds(&s),
        [
            (ProblemKind::FailedVerification, some("B")),
            (ProblemKind::NotRestorable, some("T")),
            (ProblemKind::Corrupt, some("D")),
            (ProblemKind::Foreign, some("F")),
            (ProblemKind::SourcePageErrors, some("C")),
            (ProblemKind::Incomplete, some("X")),
            (ProblemKind::OddEntry, None),
            (ProblemKind::UnreadableObject, None),
        ]
    );
    assert_eq!(s.status.problems, 8);
    assert!(s.problems[0].message.contains("3 problems found"));
    assert!(
        s.problems[4].message.contains("2 pages"),
        "{}",
        s.problems[4].message
    );
    // B failed, T is refused by restore: A and C remain.
    let points: Vec<&str> = [&s.recoverability.earliest, &s.recoverability.latest]
        .iter()
        .filter_map(|p| p.as_ref().map(|p| p.backup.as_str()))
        .collect();
    assert_eq!(points, ["A", "C"]);
    assert_eq!(s.recoverability.restore_points, 2);
    assert_eq!(
        s.status.last_good_backup.as_ref().map(|i| i.as_str()),
        Some("C")
    );
    // `latest` is the catalog's (what restore takes), even when restore would refuse it.
    let latest: Vec<&str> = s
        .backups
        .iter()
        .filter(|b| b.latest)
        .map(|b| b.id.as_str())
        .collect();
    assert_eq!(latest, ["T"]);
    let by = |id: &str| s.backups.iter().find(|b| b.id.as_str() == id).unwrap();
    assert_eq!(by("C").page_checksum_errors, Some(2));
    assert!(!by("B").usable && !by("T").usable && by("C").usable);
    assert_eq!(by("F").state, "foreign");
    assert!(
        by("F")
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("system identifier")
    );
    assert_eq!(
        by("F").stop_lsn,
        Some(Lsn(0x7000000)),
        "a foreign backup's own figures are shown"
    );
    assert_eq!(by("D").state, "corrupt");
    assert_eq!(by("D").stop_lsn, None);
    assert_eq!(s.totals.backups, 7);
    assert_eq!(
        (
            s.totals.complete,
            s.totals.incomplete,
            s.totals.corrupt,
            s.totals.foreign
        ),
        (4, 1, 1, 1)
    );
    assert_eq!(s.totals.failed_verification, 1);
    assert_eq!(s.totals.never_verified, 3);

    let d = backup_detail(&c, c.get("C").unwrap());
    let p = d.page_checksums.as_ref().unwrap();
    assert_eq!(
        (
            p.corrupt_blocks,
            p.changed_during_copy_blocks,
            p.pages_checked
        ),
        (2, 1, 30)
    );
    assert_eq!(d.checksum_algorithm.as_deref(), Some("crc32c"));
    assert_eq!(d.wal_mode, Some(WalMode::Include));
    let t = backup_detail(&c, c.get("T").unwrap());
    assert_eq!(t.tablespace_changes.len(), 1);
    let x = backup_detail(&c, c.get("X").unwrap());
    assert_eq!(x.summary.state, "incomplete");
    assert!(x.compression.is_none() && x.tablespaces.is_empty());
}

#[test]
fn an_empty_cluster_has_no_window_and_says_so() {
    let s = summarize(
        &derive(&ident("main"), observed(Vec::new(), Vec::new())),
        NOW,
    );
    assert_eq!(kinds(&s), [(ProblemKind::NoUsableBackup, None)]);
    assert_eq!(s.recoverability.restore_points, 0);
    assert!(s.recoverability.earliest.is_none() && s.recoverability.latest.is_none());
    assert!(s.status.last_good_backup.is_none() && s.status.last_good_backup_age_secs.is_none());
}

#[test]
fn a_running_backup_is_not_a_problem_and_names_its_writer() {
    let mut o = observed(
        vec![
            complete("A", 1, 0x3000000, 100),
            folder("R", InfoDoc::Missing),
        ],
        Vec::new(),
    );
    o.leases.push(ObservedDoc {
        name: "main/leases/backup-R-000000.json".into(),
        doc: Ok(lease("R", 0, NOW + 10 * SEC)),
    });
    let s = summarize(&derive(&ident("main"), o), NOW);
    assert!(s.status.ok, "{:?}", s.problems);
    let r = s.backups.iter().find(|b| b.id.as_str() == "R").unwrap();
    assert_eq!(r.state, "running");
    assert_eq!(r.writer.as_ref().map(|w| w.pid), Some(1));
    assert_eq!(s.totals.running, 1);
}

/// The window follows the lineage (timeline, then LSN), not the IDs nor the start times: after
/// a promotion the new timeline's backups are the latest points even with lower LSNs.
#[test]
fn the_window_follows_the_lineage_not_the_names() {
    let o = observed(
        vec![
            complete("Z-old", 1, 0x9000000, 500),
            complete("A-new", 2, 0x4000000, 100),
        ],
        Vec::new(),
    );
    let s = summarize(&derive(&ident("main"), o), NOW);
    let w = &s.recoverability;
    assert_eq!(
        w.earliest.as_ref().map(|p| p.backup.as_str()),
        Some("Z-old")
    );
    assert_eq!(
        w.latest.as_ref().map(|p| (p.backup.as_str(), p.timeline)),
        Some(("A-new", TimelineId(2)))
    );
    assert_eq!(w.timelines, [TimelineId(1), TimelineId(2)]);
}

#[test]
fn a_finish_in_the_future_is_age_zero() {
    let o = observed(vec![complete("A", 1, 0x3000000, 2_000_000)], Vec::new());
    let s = summarize(&derive(&ident("main"), o), NOW);
    assert_eq!(s.status.last_good_backup_age_secs, Some(0));
}

/// A lease planted with an expiry in the year 9999 keeps its backup "running" forever (and
/// expire away from it): honoured, but reported, with the lease's object named.
#[test]
fn a_lease_expiring_in_the_far_future_is_a_problem() {
    let mut o = observed(
        vec![
            complete("A", 1, 0x3000000, 100),
            folder("R", InfoDoc::Missing),
            folder("S", InfoDoc::Missing),
        ],
        Vec::new(),
    );
    o.leases.push(ObservedDoc {
        name: "main/leases/backup-R-000000.json".into(),
        doc: Ok(lease("R", 0, NOW + 10 * SEC)),
    });
    let mut forged = lease("S", 0, 0);
    forged.expires_at = "9999-12-31T23:59:59Z".into();
    o.leases.push(ObservedDoc {
        name: "main/leases/backup-S-000000.json".into(),
        doc: Ok(forged),
    });
    let s = summarize(&derive(&ident("main"), o), NOW);
    assert_eq!(
        kinds(&s),
        [(ProblemKind::ImplausibleLease, Some("S".to_owned()))]
    );
    assert!(!s.status.ok);
    assert!(s.problems[0].message.contains("9999"), "{:?}", s.problems);
    assert_eq!(
        s.problems[0].object.as_deref(),
        Some("main/leases/backup-S-000000.json")
    );
    assert_eq!(s.totals.running, 2);
}
