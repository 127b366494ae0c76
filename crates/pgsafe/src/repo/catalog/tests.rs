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

mod chains {
    use super::*;
    use crate::repo::testdata::child_info_json;

    fn child(name: &str, lsn: u64, kind: &str, parent: &str, parent_lsn: u64) -> ObservedEntry {
        // info_json's start LSN is its stop LSN - 0x100.
        folder(
            name,
            InfoDoc::Bytes(child_info_json(
                SYSID,
                lsn,
                lsn as i64,
                kind,
                parent,
                parent_lsn - 0x100,
            )),
        )
    }

    fn ids(c: &[&BackupEntry]) -> Vec<String> {
        c.iter().map(|b| b.id.to_string()).collect()
    }

    #[test]
    fn a_chain_runs_newest_first_to_its_full() {
        let c = derive(
            &ident("main"),
            observed(vec![
                complete("F", 1, 0x1000, 1),
                child("D", 0x2000, "diff", "F", 0x1000),
                child("I1", 0x3000, "incr", "D", 0x2000),
                child("I2", 0x4000, "incr", "I1", 0x3000),
            ]),
        );
        assert_eq!(ids(&c.chain("I2").unwrap()), ["I2", "I1", "D", "F"]);
        assert_eq!(ids(&c.chain("F").unwrap()), ["F"]);
        let i2 = c.get("I2").unwrap();
        assert_eq!(i2.backup_type, BackupType::Incr);
        assert_eq!(i2.parent.as_ref().map(|p| p.as_str()), Some("I1"));
        assert_eq!(c.get("F").unwrap().backup_type, BackupType::Full);
        // Retention sees the parents: expire keeps what a kept backup needs.
        let r = c.retention_entries();
        let e = r.iter().find(|e| e.id == "D").unwrap();
        match &e.state {
            crate::repo::retention::EntryState::Complete(l) => {
                assert_eq!(l.parent.as_deref(), Some("F"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.chain("nope").unwrap_err(),
            ChainError::NotFound { id: "nope".into() }
        );
    }

    #[test]
    fn a_broken_link_is_named() {
        let mut o = observed(vec![
            complete("F", 1, 0x1000, 1),
            child("I1", 0x3000, "incr", "GONE", 0x2000),
            child("I2", 0x4000, "incr", "X", 0x3000),
            folder("X", InfoDoc::Missing),
            child("I3", 0x5000, "incr", "Y", 0x3000),
            folder("Y", InfoDoc::Bytes(info_json(SYSID + 1, 15, 1, 0x3000, 1))),
            // Recorded a parent start that is not the parent's (a replaced parent).
            child("I4", 0x6000, "incr", "F", 0x1800),
            folder("B", InfoDoc::Missing),
        ]);
        o.leases = vec![doc(
            "main/leases/backup-B-000000.json",
            lease("B", 0, NOW + 10 * SEC),
        )];
        o.entries.push(child("I5", 0x7000, "incr", "B", 0x1000));
        let c = derive(&ident("main"), o);
        assert_eq!(
            c.chain("I1").unwrap_err(),
            ChainError::MissingParent {
                child: "I1".into(),
                parent: "GONE".into()
            }
        );
        let e = c.chain("I2").unwrap_err();
        assert!(
            matches!(&e, ChainError::NotComplete { id, child: Some(ch), state: "incomplete", .. }
                if id == "X" && ch == "I2"),
            "{e:?}"
        );
        assert!(e.to_string().contains("needed by I2"), "{e}");
        let e = c.chain("I3").unwrap_err();
        assert!(
            matches!(&e, ChainError::NotComplete { id, state: "foreign", reason: Some(r), .. }
                if id == "Y" && r.contains("system identifier")),
            "{e:?}"
        );
        assert!(matches!(
            c.chain("I4").unwrap_err(),
            ChainError::ParentMismatch { .. }
        ));
        assert!(matches!(
            c.chain("I5").unwrap_err(),
            ChainError::NotComplete {
                state: "running",
                ..
            }
        ));
        assert!(matches!(
            c.chain("X").unwrap_err(),
            ChainError::NotComplete { child: None, .. }
        ));
    }

    #[test]
    fn hostile_parent_fields_make_the_backup_corrupt_or_a_loop() {
        let bytes = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&child_info_json(SYSID, 0x3000, 3, "incr", "F", 0xf00))
                    .unwrap();
            f(&mut v);
            InfoDoc::Bytes(serde_json::to_vec(&v).unwrap())
        };
        let o = observed(vec![
            complete("F", 1, 0x1000, 1),
            folder("P1", bytes(&|v| v["parent"] = "../../etc".into())),
            folder(
                "P2",
                bytes(&|v| {
                    v.as_object_mut().unwrap().remove("parent");
                }),
            ),
            folder(
                "P3",
                bytes(&|v| {
                    v["backup_type"] = "full".into();
                }),
            ),
            folder(
                "P4",
                bytes(&|v| {
                    v.as_object_mut().unwrap().remove("parent_start_lsn");
                }),
            ),
            // Two incrementals naming each other, same start LSN.
            folder(
                "L1",
                bytes(&|v| {
                    v["parent"] = "L2".into();
                    v["parent_start_lsn"] = "0/2F00".into();
                }),
            ),
            folder(
                "L2",
                bytes(&|v| {
                    v["parent"] = "L1".into();
                    v["parent_start_lsn"] = "0/2F00".into();
                }),
            ),
        ]);
        let c = derive(&ident("main"), o);
        for id in ["P1", "P2", "P3", "P4"] {
            assert!(
                matches!(state(&c, id), BackupState::Corrupt { .. }),
                "{id}: {:?}",
                state(&c, id)
            );
            assert!(c.chain(id).is_err());
        }
        assert!(matches!(
            c.chain("L1").unwrap_err(),
            ChainError::Loop { .. }
        ));
        // A corrupt backup is never the latest either.
        assert_eq!(c.latest().unwrap().id.as_str(), "L2");
    }
}
