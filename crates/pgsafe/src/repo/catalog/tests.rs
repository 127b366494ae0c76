use proptest::prelude::*;

use super::*;
use crate::repo::doc::{EventKind, VerifyResult};
use crate::repo::testdata::{SYSID, event, ident, info_json, lease, registration};

const NOW: i64 = 1_000_000_000_000_000;
const SEC: i64 = 1_000_000;

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

fn observed(entries: Vec<ObservedEntry>) -> Observed {
    Observed {
        registration: registration(),
        entries,
        leases: Vec::new(),
        events: Vec::new(),
        now_us: NOW,
        clock_skew_us: 60 * SEC,
    }
}

fn doc<T>(name: &str, d: T) -> ObservedDoc<T> {
    ObservedDoc {
        name: name.into(),
        doc: Ok(d),
    }
}

fn state<'a>(c: &'a Catalog, id: &str) -> &'a BackupState {
    &c.get(id).expect("the backup is in the catalog").state
}

#[test]
fn each_folder_gets_its_state() {
    let mut o = observed(vec![
        complete("A", 1, 0x3000000, 100),
        folder("B", InfoDoc::Missing),
        folder("C", InfoDoc::Missing),
        folder("D", InfoDoc::Bytes(b"{not json".to_vec())),
        folder(
            "E",
            InfoDoc::Bytes(info_json(SYSID + 1, 15, 1, 0x5000000, 300)),
        ),
        folder("F", InfoDoc::Bytes(info_json(SYSID, 16, 1, 0x5000000, 300))),
        folder("G", InfoDoc::Unreadable("permission denied".into())),
        folder("H", InfoDoc::Missing),
    ]);
    o.leases = vec![
        doc(
            "main/leases/backup-B-000003.json",
            lease("B", 3, NOW + 10 * SEC),
        ),
        // Expired beyond the margin: C was interrupted.
        doc(
            "main/leases/backup-C-000000.json",
            lease("C", 0, NOW - 61 * SEC),
        ),
        // Expired, but within the clock-skew margin: still live.
        doc(
            "main/leases/backup-H-000000.json",
            lease("H", 0, NOW - 59 * SEC),
        ),
    ];
    let c = derive(&ident("main"), o);
    assert_eq!(state(&c, "A"), &BackupState::Complete);
    assert_eq!(state(&c, "B"), &BackupState::Running);
    assert_eq!(c.get("B").unwrap().lease.as_ref().map(|l| l.seq), Some(3));
    assert_eq!(state(&c, "C"), &BackupState::Incomplete);
    assert!(matches!(state(&c, "D"), BackupState::Corrupt { .. }));
    assert!(
        matches!(state(&c, "E"), BackupState::Foreign { reason } if reason.contains("system identifier"))
    );
    assert!(matches!(state(&c, "F"), BackupState::Foreign { reason } if reason.contains("major")));
    assert!(
        matches!(state(&c, "G"), BackupState::Corrupt { reason } if reason.contains("permission"))
    );
    assert_eq!(state(&c, "H"), &BackupState::Running);
    assert_eq!(c.latest().map(|b| b.id.as_str()), Some("A"));
    assert_eq!(c.in_progress().count(), 2);
}

#[test]
fn latest_follows_the_lineage_not_the_name() {
    // Names sort the other way round (a clock set back, or a renamed folder). The timeline-1
    // backup stopped before the timeline-2 backups began: one history.
    let c = derive(
        &ident("main"),
        observed(vec![
            complete("20270101T000000Z", 1, 0x1000000, 200),
            complete("20260101T000000Z", 2, 0x2000000, 100),
            complete("20250101T000000Z", 2, 0x2000000, 150),
        ]),
    );
    assert_eq!(c.latest().map(|b| b.id.as_str()), Some("20250101T000000Z"));
    let order: Vec<&str> = c.backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(
        order,
        ["20270101T000000Z", "20260101T000000Z", "20250101T000000Z"]
    );
}

#[test]
fn diverging_timelines_have_no_latest() {
    // Timeline 1 went on past where timeline 2's backup shows timeline 2 had begun: two
    // branches, and which one is live cannot be told from the repository.
    let c = derive(
        &ident("main"),
        observed(vec![
            complete("a", 1, 0x1000000, 100),
            complete("b", 2, 0x2000000, 200),
            complete("c", 1, 0x9000000, 300),
        ]),
    );
    assert!(c.latest().is_none());
    let (x, y) = c.diverging().unwrap();
    assert_eq!((x.as_str(), y.as_str()), ("b", "c"));
}

#[test]
fn foreign_and_corrupt_are_never_latest() {
    let c = derive(
        &ident("main"),
        observed(vec![
            complete("old", 1, 0x1000000, 100),
            folder(
                "planted",
                InfoDoc::Bytes(info_json(SYSID ^ 1, 15, 9, u64::MAX, i64::MAX)),
            ),
            folder("broken", InfoDoc::Bytes(b"{}".to_vec())),
        ]),
    );
    assert_eq!(c.latest().map(|b| b.id.as_str()), Some("old"));
}

#[test]
fn events_fold_in_time_order() {
    let mut o = observed(vec![
        complete("A", 1, 0x1000000, 100),
        complete("B", 1, 0x2000000, 200),
    ]);
    let pin = |b: &str| EventKind::Pin { backup: ident(b) };
    let unpin = |b: &str| EventKind::Unpin { backup: ident(b) };
    let verified = |b: &str, ok: bool| EventKind::Verified {
        backup: ident(b),
        result: if ok {
            VerifyResult::Passed
        } else {
            VerifyResult::Failed
        },
        problems: u64::from(!ok),
        restore_test: false,
    };
    // Listed out of order: time decides.
    o.events = vec![
        doc("e3", event(3 * SEC, unpin("A"))),
        doc("e1", event(SEC, pin("A"))),
        doc("e2", event(2 * SEC, pin("B"))),
        doc("e5", event(5 * SEC, verified("B", false))),
        doc("e4", event(4 * SEC, verified("B", true))),
        doc("e6", event(6 * SEC, verified("A", true))),
        ObservedDoc {
            name: "bad".into(),
            doc: Err("not json".into()),
        },
    ];
    let c = derive(&ident("main"), o);
    assert!(!c.get("A").unwrap().pinned);
    assert!(c.get("B").unwrap().pinned);
    assert!(c.get("B").unwrap().failed_verification());
    // B failed its latest verification: A is the latest usable backup.
    assert_eq!(c.latest().map(|b| b.id.as_str()), Some("A"));
    assert_eq!(c.unreadable.len(), 1);
}

#[test]
fn odd_entries_are_reported_not_used() {
    let mut o = observed(vec![
        complete("A", 1, 0x1000000, 100),
        folder(
            "bad\nname",
            InfoDoc::Bytes(info_json(SYSID, 15, 5, u64::MAX, 1)),
        ),
        folder(".hidden", InfoDoc::Missing),
        ObservedEntry {
            name: b"link".to_vec(),
            kind: ObservedKind::NotAnObject,
        },
        ObservedEntry {
            name: b"file".to_vec(),
            kind: ObservedKind::File,
        },
    ]);
    o.entries.push(folder("\u{1b}[2J", InfoDoc::Missing));
    let c = derive(&ident("main"), o);
    assert_eq!(c.backups.len(), 1);
    assert_eq!(c.odd_entries.len(), 5);
    assert!(
        c.odd_entries
            .iter()
            .all(|e| !e.name.contains('\n') && !e.name.contains('\u{1b}'))
    );
    assert_eq!(c.latest().map(|b| b.id.as_str()), Some("A"));
}

#[test]
fn an_unreadable_lease_keeps_its_backup_running() {
    let mut o = observed(vec![
        folder("X", InfoDoc::Missing),
        folder("Y", InfoDoc::Missing),
    ]);
    o.leases = vec![ObservedDoc {
        name: "main/leases/backup-X-000002.json".into(),
        doc: Err("truncated".into()),
    }];
    let c = derive(&ident("main"), o);
    assert_eq!(state(&c, "X"), &BackupState::Running);
    assert_eq!(state(&c, "Y"), &BackupState::Incomplete);
}

fn arb_entry() -> impl Strategy<Value = ObservedEntry> {
    let name = prop_oneof![
        "[A-Z0-9]{1,4}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    let info = prop_oneof![
        Just(InfoDoc::Missing),
        (0u64..3, 1u32..4, 0u64..1 << 40, 0i64..1000).prop_map(|(s, tli, lsn, t)| {
            InfoDoc::Bytes(info_json(SYSID + s % 2 * s, 15, tli, lsn, t))
        }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(InfoDoc::Bytes),
        Just(InfoDoc::Unreadable("x".into())),
    ];
    let kind = prop_oneof![
        4 => info.prop_map(ObservedKind::Folder),
        1 => Just(ObservedKind::File),
        1 => Just(ObservedKind::NotAnObject),
    ];
    (name, kind).prop_map(|(name, kind)| ObservedEntry { name, kind })
}

proptest! {
    #[test]
    fn latest_is_the_lineage_maximum_of_usable_backups(
        entries in proptest::collection::vec(arb_entry(), 0..20),
        failed in proptest::collection::vec(any::<bool>(), 20),
    ) {
        let mut o = observed(entries);
        o.events = o.entries.iter().zip(&failed).enumerate().filter_map(|(i, (e, f))| {
            let id = Ident::new(std::str::from_utf8(&e.name).ok()?).ok()?;
            let result = if *f { VerifyResult::Failed } else { VerifyResult::Passed };
            Some(doc(&format!("e{i}"), event(SEC, EventKind::Verified {
                backup: id, result, problems: 0, restore_test: true })))
        }).collect();
        let c = derive(&ident("main"), o);
        let usable: Vec<&BackupEntry> = c.backups.iter()
            .filter(|b| b.is_complete() && !b.failed_verification()).collect();
        match c.latest() {
            None => prop_assert!(usable.is_empty() || c.diverging().is_some()),
            Some(l) => {
                prop_assert!(c.diverging().is_none());
                prop_assert!(l.is_complete());
                prop_assert_eq!(
                    l.info.as_ref().map(|i| i.system_identifier.0),
                    Some(SYSID)
                );
                for b in usable {
                    prop_assert!(b.lineage_key() <= l.lineage_key());
                }
            }
        }
        // Every complete backup is of the registered cluster.
        for b in c.complete() {
            prop_assert_eq!(b.info.as_ref().map(|i| i.system_identifier.0), Some(SYSID));
        }
    }
}
