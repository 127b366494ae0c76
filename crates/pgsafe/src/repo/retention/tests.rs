use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const SYS: SystemId = SystemId(7_000_000_000_000_000_001);
const OTHER: SystemId = SystemId(7_300_000_000_000_000_002);
const DAY: i64 = 86_400;

fn complete(id: &str, sys: SystemId, stop: u64, tli: u32, at: i64) -> BackupEntry {
    BackupEntry {
        id: id.into(),
        pinned: false,
        state: EntryState::Complete(Lineage {
            system_identifier: sys,
            start_lsn: Lsn(stop.saturating_sub(100)),
            stop_lsn: Lsn(stop),
            start_tli: TimelineId(tli),
            stop_tli: TimelineId(tli),
            started_at: at - 60,
            finished_at: at,
            verification_failed: false,
            parent: None,
        }),
    }
}

fn other(id: &str, state: EntryState) -> BackupEntry {
    BackupEntry {
        id: id.into(),
        pinned: false,
        state,
    }
}

fn keep(full: Option<u32>, within_days: Option<u64>) -> KeepOptions {
    KeepOptions {
        keep_full: full,
        keep_within: within_days.map(|d| Duration::from_secs(d * 86_400)),
    }
}

fn decisions(p: &ExpirePlan) -> HashMap<String, Decision> {
    p.backups
        .iter()
        .map(|b| (b.backup.id.clone(), b.decision.clone()))
        .collect()
}

fn deleted(p: &ExpirePlan) -> Vec<&str> {
    p.deletions().map(|b| b.backup.id.as_str()).collect()
}

#[test]
fn keep_full_deletes_the_oldest_by_lsn_not_by_id() {
    // IDs sort the other way round from the LSNs.
    let now = 100 * DAY;
    let entries = vec![
        complete("a-newest", SYS, 5000, 1, now - DAY),
        complete("b", SYS, 4000, 1, now - 2 * DAY),
        complete("c", SYS, 3000, 1, now - 3 * DAY),
        complete("z-oldest", SYS, 1000, 1, now - 4 * DAY),
    ];
    let p = plan(entries, SYS, keep(Some(2), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["z-oldest", "c"]);
    let d = decisions(&p);
    assert_eq!(d["a-newest"], Decision::Keep(KeepReason::NewestValid));
    assert_eq!(
        d["b"],
        Decision::Keep(KeepReason::WithinNewest { rank: 2, of: 2 })
    );
    // Display order is lineage order, oldest first.
    let ids: Vec<_> = p.backups.iter().map(|b| b.backup.id.as_str()).collect();
    assert_eq!(ids, ["z-oldest", "c", "b", "a-newest"]);
}

#[test]
fn no_retention_deletes_only_incomplete_leftovers() {
    let now = 100 * DAY;
    let entries = vec![
        complete("old", SYS, 1000, 1, 0),
        complete("new", SYS, 2000, 1, now),
        other("crashed", EntryState::Incomplete),
        other("live", EntryState::Running),
        other("junk", EntryState::Foreign { reason: "x".into() }),
    ];
    let p = plan(entries, SYS, KeepOptions::default(), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["crashed"]);
    assert_eq!(
        decisions(&p)["old"],
        Decision::Keep(KeepReason::NoRetention)
    );
}

#[test]
fn zero_retention_and_duplicate_ids_are_refused() {
    let e = || vec![complete("a", SYS, 1, 1, 0)];
    assert!(matches!(
        plan(e(), SYS, keep(Some(0), None), 0),
        Err(RetentionError::KeepFullZero)
    ));
    assert!(matches!(
        plan(e(), SYS, keep(None, Some(0)), 0),
        Err(RetentionError::KeepWithinZero)
    ));
    let twice = vec![complete("a", SYS, 1, 1, 0), complete("a", SYS, 2, 1, 0)];
    assert!(matches!(
        plan(twice, SYS, keep(Some(1), None), 0),
        Err(RetentionError::DuplicateId { .. })
    ));
}

#[test]
fn pg_upgrade_backups_of_a_new_system_are_never_expired() {
    // After pg_upgrade the new cluster's LSNs start low and its timeline at 1 again (WAL-G's
    // retention deleted the new backups this way). The registration is still the old system.
    let now = 100 * DAY;
    let entries = vec![
        complete("old-1", SYS, 900_000, 3, now - 10 * DAY),
        complete("old-2", SYS, 950_000, 3, now - 9 * DAY),
        complete("new-1", OTHER, 1000, 1, now - 2 * DAY),
        complete("new-2", OTHER, 2000, 1, now - DAY),
    ];
    let p = plan(entries.clone(), SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["old-1"]);
    assert_eq!(
        decisions(&p)["new-1"],
        Decision::Keep(KeepReason::OtherSystem {
            system_identifier: OTHER
        })
    );
    // Registered to the new system instead: the old system's backups are kept and reported.
    let p = plan(entries, OTHER, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["new-1"]);
}

#[test]
fn a_promoted_standby_backup_on_a_new_timeline_is_newer() {
    let now = 100 * DAY;
    let entries = vec![
        complete("tl1-a", SYS, 1000, 1, now - 3 * DAY),
        complete("tl1-b", SYS, 2000, 1, now - 2 * DAY),
        // Same stop LSN as tl1-b (promotion right there, the backup started at the switch
        // point): the higher timeline is newer.
        {
            let mut e = complete("0-tl2", SYS, 2000, 2, now - 2 * DAY);
            if let EntryState::Complete(l) = &mut e.state {
                l.start_lsn = Lsn(2000);
            }
            e
        },
    ];
    let p = plan(entries, SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["tl1-a", "tl1-b"]);
}

#[test]
fn after_a_recovery_to_an_earlier_point_the_branches_are_kept_until_the_dba_decides() {
    // Timeline 2 ran to LSN 6000; the DBA recovered to LSN 3000 (a mistake happened after) and
    // the server continued on timeline 3. Its backups have lower LSNs. From the repository this
    // looks exactly like a stale promoted standby's branch (see the next test): which branch
    // is live cannot be told, so nothing complete is deleted and the plan says why.
    let now = 100 * DAY;
    let entries = vec![
        complete("tl2-a", SYS, 5000, 2, now - 3 * DAY),
        complete("tl2-b", SYS, 6000, 2, now - 2 * DAY),
        complete("tl3-a", SYS, 3100, 3, now - DAY),
        complete("tl3-b", SYS, 3200, 3, now),
    ];
    let p = plan(entries.clone(), SYS, keep(Some(2), None), now).unwrap();
    p.check().unwrap();
    assert!(deleted(&p).is_empty(), "{:?}", deleted(&p));
    assert!(matches!(
        decisions(&p)["tl3-b"],
        Decision::Keep(KeepReason::Branched { .. })
    ));
    // Once the DBA has removed the abandoned branch, retention applies again.
    let rest: Vec<BackupEntry> = entries
        .into_iter()
        .filter(|e| e.id.starts_with("tl3"))
        .collect();
    let p = plan(rest, SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["tl3-a"]);
}

#[test]
fn a_stale_promoted_branch_never_deletes_the_live_primarys_backups() {
    // Timeline 1 is the live primary; a standby promoted by mistake at about LSN 2000 was
    // backed up once on timeline 2 and abandoned; the primary went on to 9000 and 10000.
    let now = 100 * DAY;
    let entries = vec![
        complete("p1", SYS, 1000, 1, now - 3 * DAY),
        complete("stale", SYS, 2100, 2, now - 2 * DAY),
        complete("p2", SYS, 9000, 1, now - DAY),
        complete("p3", SYS, 10000, 1, now),
    ];
    let p = plan(entries, SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert!(deleted(&p).is_empty(), "{:?}", deleted(&p));
}

#[test]
fn a_normal_failover_is_one_history_and_retention_applies() {
    // Timeline 1's backups stopped before timeline 2's backups started: one history.
    let now = 100 * DAY;
    let entries = vec![
        complete("t1-a", SYS, 1000, 1, now - 3 * DAY),
        complete("t1-b", SYS, 2000, 1, now - 2 * DAY),
        complete("t2-a", SYS, 3000, 2, now - DAY),
        complete("t2-b", SYS, 4000, 2, now),
    ];
    let p = plan(entries, SYS, keep(Some(2), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["t1-a", "t1-b"]);
}

#[test]
fn a_check_refuses_deleting_complete_backups_of_a_branched_cluster() {
    let now = 100 * DAY;
    let entries = vec![
        complete("stale", SYS, 2100, 2, now - 2 * DAY),
        complete("p3", SYS, 10000, 1, now),
    ];
    let mut p = plan(entries, SYS, keep(Some(1), None), now).unwrap();
    for b in &mut p.backups {
        if b.backup.id == "p3" {
            b.decision = Decision::Delete(DeleteReason::BeyondRetention);
        }
    }
    assert!(p.check().is_err());
}

#[test]
fn keep_within_with_a_clock_that_went_backwards_keeps_newer_lineage() {
    let now = 100 * DAY;
    let entries = vec![
        complete("a", SYS, 1000, 1, now - 30 * DAY),
        complete("b", SYS, 2000, 1, now - DAY),
        // Newer by LSN, but its host's clock was a month behind.
        complete("c", SYS, 3000, 1, now - 40 * DAY),
        // A host whose clock is ahead: finished "after now".
        complete("d", SYS, 4000, 1, now + DAY),
    ];
    let p = plan(entries, SYS, keep(None, Some(7)), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["a"]);
    let d = decisions(&p);
    assert_eq!(d["c"], Decision::Keep(KeepReason::NewerThanKept));
    assert_eq!(d["d"], Decision::Keep(KeepReason::NewestValid));
}

#[test]
fn failed_verification_does_not_count_and_never_leaves_no_valid_backup() {
    let now = 100 * DAY;
    let mut failed = complete("newest-failed", SYS, 3000, 1, now);
    if let EntryState::Complete(l) = &mut failed.state {
        l.verification_failed = true;
    }
    let entries = vec![
        complete("a", SYS, 1000, 1, now - 2 * DAY),
        complete("b", SYS, 2000, 1, now - DAY),
        failed.clone(),
    ];
    let p = plan(entries, SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["a"]);
    let d = decisions(&p);
    assert_eq!(d["b"], Decision::Keep(KeepReason::NewestValid));
    assert_eq!(
        d["newest-failed"],
        Decision::Keep(KeepReason::NewerThanKept)
    );

    // Nothing valid at all: nothing complete is deleted.
    let mut old_failed = complete("old-failed", SYS, 1000, 1, 0);
    if let EntryState::Complete(l) = &mut old_failed.state {
        l.verification_failed = true;
    }
    let p = plan(vec![old_failed, failed], SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert!(deleted(&p).is_empty());
}

#[test]
fn pinned_and_parents_are_kept() {
    let now = 100 * DAY;
    let mut pinned = complete("pinned", SYS, 500, 1, 0);
    pinned.pinned = true;
    let mut child = complete("child", SYS, 3000, 1, now);
    if let EntryState::Complete(l) = &mut child.state {
        l.parent = Some("parent".into());
    }
    let mut pinned_incomplete = other("pinned-incomplete", EntryState::Incomplete);
    pinned_incomplete.pinned = true;
    let entries = vec![
        pinned,
        complete("grandparent", SYS, 800, 1, 1),
        {
            let mut p = complete("parent", SYS, 1000, 1, 2);
            if let EntryState::Complete(l) = &mut p.state {
                l.parent = Some("grandparent".into());
            }
            p
        },
        complete("unrelated", SYS, 2000, 1, 3),
        child,
        pinned_incomplete,
    ];
    // keep_full counts full backups: "unrelated" is the newest full, so it is kept, and so
    // is everything newer; the child's chain is kept as its needs.
    let p = plan(entries, SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert!(deleted(&p).is_empty(), "{:?}", deleted(&p));
    let d = decisions(&p);
    assert_eq!(
        d["unrelated"],
        Decision::Keep(KeepReason::WithinNewest { rank: 1, of: 1 })
    );
    assert_eq!(d["pinned"], Decision::Keep(KeepReason::Pinned));
    assert_eq!(
        d["parent"],
        Decision::Keep(KeepReason::NeededBy { id: "child".into() })
    );
    assert_eq!(
        d["grandparent"],
        Decision::Keep(KeepReason::NeededBy {
            id: "parent".into()
        })
    );
    assert_eq!(d["pinned-incomplete"], Decision::Keep(KeepReason::Pinned));
}

#[test]
fn check_refuses_unsafe_plans() {
    let now = 100 * DAY;
    let mut pinned = complete("pinned", SYS, 500, 1, 0);
    pinned.pinned = true;
    let entries = vec![
        pinned,
        complete("a", SYS, 1000, 1, now),
        complete("b", SYS, 2000, 1, now),
        complete("foreign-sys", OTHER, 10, 1, now),
        other("live", EntryState::Running),
        other("junk", EntryState::Foreign { reason: "x".into() }),
    ];
    let good = plan(entries, SYS, keep(Some(1), None), now).unwrap();
    good.check().unwrap();
    for id in ["pinned", "b", "foreign-sys", "live", "junk"] {
        let mut bad = good.clone();
        for e in &mut bad.backups {
            if e.backup.id == id {
                e.decision = Decision::Delete(DeleteReason::BeyondRetention);
            }
        }
        let err = bad.check().unwrap_err().to_string();
        assert!(err.contains(id), "{id}: {err}");
        assert!(err.contains("nothing was deleted"), "{err}");
    }
    // Deleting everything complete.
    let mut all = good.clone();
    for e in &mut all.backups {
        if matches!(e.backup.state, EntryState::Complete(_)) {
            e.decision = Decision::Delete(DeleteReason::BeyondRetention);
        }
    }
    assert!(all.check().is_err());
    // Deleting a complete backup while no retention is configured.
    let mut none = good.clone();
    none.options = KeepOptions::default();
    assert!(
        none.check()
            .unwrap_err()
            .to_string()
            .contains("without retention")
    );
}

#[test]
fn json_names_action_and_reason() {
    let now = 100 * DAY;
    let p = plan(
        vec![
            complete("a", SYS, 1000, 1, now - 9 * DAY),
            complete("b", SYS, 2000, 1, now),
        ],
        SYS,
        keep(Some(1), Some(2)),
        now,
    )
    .unwrap();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["options"]["keep_within_secs"], 2 * 86_400);
    assert_eq!(v["planned_at"], now);
    assert_eq!(v["backups"][0]["id"], "a");
    assert_eq!(v["backups"][0]["state"], "complete");
    assert_eq!(v["backups"][0]["stop_lsn"], "0/3E8");
    assert_eq!(v["backups"][0]["decision"]["action"], "delete");
    assert_eq!(v["backups"][0]["decision"]["reason"], "beyond_retention");
    assert_eq!(v["backups"][1]["decision"]["reason"], "newest_valid");
    assert_eq!(
        p.backups[0].decision.to_string(),
        "delete: beyond retention"
    );
    assert_eq!(
        KeepReason::WithinDuration { secs: 7 * 86_400 }.to_string(),
        "finished within the last 7d"
    );
}

// ---- Property tests on random histories ----

/// One step of a random history.
#[derive(Debug, Clone)]
struct Step {
    lsn_advance: u64,
    new_timeline: bool,
    /// With a new timeline: a recovery to an earlier point, this many bytes of LSN back.
    rewind: u64,
    /// pg_upgrade / re-initdb: a new system identifier, LSN and timeline start over.
    new_system: bool,
    /// Seconds the clock moves (negative: it went backwards).
    clock: i64,
    kind: u8,
    pinned: bool,
    failed: bool,
    parent_back: Option<usize>,
    id_noise: u32,
}

fn step() -> impl Strategy<Value = Step> {
    (
        1u64..1_000_000,
        (prop::bool::weighted(0.1), 0u64..3_000_000),
        prop::bool::weighted(0.05),
        -3 * DAY..6 * DAY,
        0u8..10,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.15, 1usize..4),
        any::<u32>(),
    )
        .prop_map(
            |(
                lsn_advance,
                (new_timeline, rewind),
                new_system,
                clock,
                kind,
                pinned,
                failed,
                parent_back,
                id_noise,
            )| Step {
                lsn_advance,
                new_timeline,
                rewind,
                new_system,
                clock,
                kind,
                pinned,
                failed,
                parent_back,
                id_noise,
            },
        )
}

/// Builds the entries of a history; returns them and the system identifiers used.
fn history(steps: &[Step]) -> (Vec<BackupEntry>, Vec<SystemId>) {
    let mut systems = vec![SystemId(1000)];
    let mut lsn = 0x1000_0000u64;
    let mut tli = 1u32;
    let mut clock = 50 * DAY;
    let mut entries: Vec<BackupEntry> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if s.new_system {
            systems.push(SystemId(1000 + systems.len() as u64));
            lsn = 0x1000_0000;
            tli = 1;
        }
        if s.new_timeline {
            tli += 1;
            lsn = lsn.saturating_sub(s.rewind).max(0x1000_0000);
        }
        lsn += s.lsn_advance;
        clock += s.clock;
        // IDs whose lexical order has nothing to do with the history's order.
        let id = format!("{:08x}-{i}", s.id_noise);
        let state = match s.kind {
            0 => EntryState::Running,
            1 => EntryState::Incomplete,
            2 => EntryState::Foreign {
                reason: "planted".into(),
            },
            3 => EntryState::Corrupt {
                reason: "bad json".into(),
            },
            _ => EntryState::Complete(Lineage {
                system_identifier: *systems.last().expect("one system"),
                start_lsn: Lsn(lsn - s.lsn_advance / 2),
                stop_lsn: Lsn(lsn),
                start_tli: TimelineId(tli),
                stop_tli: TimelineId(tli),
                started_at: clock - 100,
                finished_at: clock,
                verification_failed: s.failed,
                parent: s
                    .parent_back
                    .and_then(|b| i.checked_sub(b))
                    .map(|j| entries[j].id.clone()),
            }),
        };
        entries.push(BackupEntry {
            id,
            pinned: s.pinned,
            state,
        });
    }
    (entries, systems)
}

fn options() -> impl Strategy<Value = KeepOptions> {
    (
        prop::option::of(1u32..6),
        prop::option::of(1u64..20 * 86_400),
    )
        .prop_map(|(keep_full, within)| KeepOptions {
            keep_full,
            keep_within: within.map(Duration::from_secs),
        })
}

fn lineage_of(b: &BackupEntry) -> Option<&Lineage> {
    match &b.state {
        EntryState::Complete(l) => Some(l),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_of_random_histories_are_safe(
        steps in prop::collection::vec(step(), 0..40),
        options in options(),
        registered in 0usize..3,
        now_offset in -10 * DAY..60 * DAY,
    ) {
        let (entries, systems) = history(&steps);
        let system = systems[registered % systems.len()];
        let now = 50 * DAY + now_offset;
        let p = plan(entries.clone(), system, options, now).unwrap();
        prop_assert!(p.check().is_ok(), "{:?}", p.check());
        prop_assert_eq!(p.backups.len(), entries.len());

        let ours: Vec<&PlannedBackup> = p
            .backups
            .iter()
            .filter(|b| lineage_of(&b.backup).is_some_and(|l| l.system_identifier == system))
            .collect();
        // Display order is lineage order: timeline, then stop LSN, never decreasing.
        for w in ours.windows(2) {
            let (a, b) = (lineage_of(&w[0].backup).unwrap(), lineage_of(&w[1].backup).unwrap());
            prop_assert!((a.stop_tli, a.stop_lsn) <= (b.stop_tli, b.stop_lsn));
        }
        let valid: Vec<usize> = (0..ours.len())
            .filter(|&i| !lineage_of(&ours[i].backup).unwrap().verification_failed)
            .collect();
        if let Some(&newest) = valid.last() {
            prop_assert!(!ours[newest].decision.is_delete());
        }
        for b in &p.backups {
            let protected = b.backup.pinned
                || matches!(b.backup.state, EntryState::Running | EntryState::Foreign { .. } | EntryState::Corrupt { .. })
                || lineage_of(&b.backup).is_some_and(|l| l.system_identifier != system);
            if protected {
                prop_assert!(!b.decision.is_delete(), "{:?}", b);
            }
            // Incomplete leftovers go, unless pinned or named as a kept backup's parent.
            if matches!(b.backup.state, EntryState::Incomplete)
                && !b.backup.pinned
                && !matches!(b.decision, Decision::Keep(KeepReason::NeededBy { .. }))
            {
                prop_assert!(b.decision.is_delete(), "{:?}", b);
            }
        }
        // Retention deletes only the oldest: a deleted complete backup is older than every
        // backup kept by retention (not kept for being pinned or needed).
        let retained = |d: &Decision| matches!(d, Decision::Keep(
            KeepReason::NewestValid | KeepReason::WithinNewest { .. }
            | KeepReason::WithinDuration { .. } | KeepReason::NewerThanKept));
        if let Some(first_kept) = ours.iter().position(|b| retained(&b.decision)) {
            prop_assert!(ours[first_kept..].iter().all(|b| !b.decision.is_delete()));
        }
        if !options.is_configured() || valid.is_empty() {
            prop_assert!(ours.iter().all(|b| !b.decision.is_delete()));
        }
        if let Some(n) = options.keep_full {
            // keep_full counts full backups (no parent).
            let fulls: Vec<usize> = valid
                .iter()
                .copied()
                .filter(|&i| lineage_of(&ours[i].backup).unwrap().parent.is_none())
                .collect();
            let kept = fulls.iter().filter(|&&i| !ours[i].decision.is_delete()).count();
            prop_assert!(kept >= fulls.len().min(n as usize));
        }
        if let Some(d) = options.keep_within {
            let cutoff = i128::from(now) - i128::from(d.as_secs());
            for b in &ours {
                if i128::from(lineage_of(&b.backup).unwrap().finished_at) >= cutoff {
                    prop_assert!(!b.decision.is_delete());
                }
            }
        }
    }

    #[test]
    fn decisions_do_not_depend_on_ids_or_input_order(
        steps in prop::collection::vec(step(), 0..30),
        options in options(),
        seed in any::<u64>(),
    ) {
        let (entries, systems) = history(&steps);
        let system = systems[0];
        let now = 60 * DAY;
        let p = plan(entries.clone(), system, options, now).unwrap();
        // Rename every backup (a different lexical order) and shuffle the input.
        let mut rng = fastrand::Rng::with_seed(seed);
        let names: HashMap<String, String> = entries
            .iter()
            .map(|e| (e.id.clone(), format!("{:016x}{}", rng.u64(..), e.id)))
            .collect();
        let mut renamed: Vec<BackupEntry> = entries
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.id = names[&e.id].clone();
                if let EntryState::Complete(l) = &mut e.state {
                    l.parent = l.parent.as_ref().map(|p| names[p].clone());
                }
                e
            })
            .collect();
        rng.shuffle(&mut renamed);
        let q = plan(renamed, system, options, now).unwrap();
        let back: HashMap<&str, &str> =
            names.iter().map(|(a, b)| (b.as_str(), a.as_str())).collect();
        let mut dq: Vec<(String, bool)> = q
            .backups
            .iter()
            .map(|b| (back[b.backup.id.as_str()].to_string(), b.decision.is_delete()))
            .collect();
        let mut dp: Vec<(String, bool)> = p
            .backups
            .iter()
            .map(|b| (b.backup.id.clone(), b.decision.is_delete()))
            .collect();
        dq.sort();
        dp.sort();
        prop_assert_eq!(dp, dq);
    }

    #[test]
    fn check_catches_any_protected_deletion(
        steps in prop::collection::vec(step(), 1..30),
        options in options(),
        pick in any::<prop::sample::Index>(),
    ) {
        let (entries, systems) = history(&steps);
        let system = systems[0];
        let p = plan(entries, system, options, 60 * DAY).unwrap();
        let i = pick.index(p.backups.len());
        let b = &p.backups[i].backup;
        let ours: Vec<usize> = (0..p.backups.len())
            .filter(|&j| lineage_of(&p.backups[j].backup)
                .is_some_and(|l| l.system_identifier == system))
            .collect();
        let newest_valid = ours.iter().rev().copied().find(|&j| {
            !lineage_of(&p.backups[j].backup).unwrap().verification_failed
        });
        let protected = b.pinned
            || matches!(b.state, EntryState::Running | EntryState::Foreign { .. } | EntryState::Corrupt { .. })
            || lineage_of(b).is_some_and(|l| l.system_identifier != system)
            || newest_valid == Some(i)
            || (lineage_of(b).is_some() && !options.is_configured());
        let mut bad = p.clone();
        bad.backups[i].decision = Decision::Delete(DeleteReason::BeyondRetention);
        if protected {
            prop_assert!(bad.check().is_err());
        }
    }

    #[test]
    fn planner_never_panics_on_arbitrary_entries(
        raw in prop::collection::vec(
            (any::<u8>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<i64>(), any::<bool>(),
             any::<bool>(), 0u8..4, prop::option::of(any::<u8>())),
            0..20),
        keep_full in prop::option::of(any::<u32>()),
        within in prop::option::of(any::<u64>()),
        now in any::<i64>(),
    ) {
        let entries: Vec<BackupEntry> = raw
            .iter()
            .map(|(id, sys, lsn, tli, at, pinned, failed, kind, parent)| BackupEntry {
                id: id.to_string(),
                pinned: *pinned,
                state: match kind {
                    0 => EntryState::Running,
                    1 => EntryState::Incomplete,
                    2 => EntryState::Foreign { reason: "planted".into() },
                    _ => EntryState::Complete(Lineage {
                        system_identifier: SystemId(sys % 3),
                        start_lsn: Lsn(lsn / 2),
                        stop_lsn: Lsn(*lsn),
                        start_tli: TimelineId(*tli),
                        stop_tli: TimelineId(*tli),
                        started_at: *at,
                        finished_at: *at,
                        verification_failed: *failed,
                        parent: parent.map(|p| p.to_string()),
                    }),
                },
            })
            .collect();
        let options = KeepOptions { keep_full, keep_within: within.map(Duration::from_secs) };
        if let Ok(p) = plan(entries, SystemId(0), options, now) {
            prop_assert!(p.check().is_ok(), "{:?}", p.check());
        }
    }
}

/// A backup of `id` with `parent` (a differential or incremental backup).
fn child_of(id: &str, parent: &str, stop: u64, at: i64) -> BackupEntry {
    let mut b = complete(id, SYS, stop, 1, at);
    if let EntryState::Complete(l) = &mut b.state {
        l.parent = Some(parent.into());
    }
    b
}

#[test]
fn keep_full_counts_full_backups_and_never_breaks_a_chain() {
    let now = 100 * DAY;
    // f1 <- i1 <- i2 (incremental), f2 <- i3, f2 <- d4 (differential).
    let entries = || {
        vec![
            complete("f1", SYS, 1000, 1, 10 * DAY),
            child_of("i1", "f1", 2000, 11 * DAY),
            child_of("i2", "i1", 3000, 12 * DAY),
            complete("f2", SYS, 4000, 1, 13 * DAY),
            child_of("i3", "f2", 5000, 14 * DAY),
            child_of("d4", "f2", 6000, 15 * DAY),
        ]
    };
    // One full: f2 and the backups built on it; f1's chain goes whole.
    let p = plan(entries(), SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert_eq!(deleted(&p), ["f1", "i1", "i2"]);
    let d = decisions(&p);
    assert_eq!(
        d["f2"],
        Decision::Keep(KeepReason::WithinNewest { rank: 1, of: 1 })
    );
    assert_eq!(d["d4"], Decision::Keep(KeepReason::NewestValid));
    // Two fulls: the incrementals between them do not count, nothing goes.
    let p = plan(entries(), SYS, keep(Some(2), None), now).unwrap();
    p.check().unwrap();
    assert!(deleted(&p).is_empty());
    // A duration that ends inside f1's chain keeps the chain's start.
    let p = plan(entries(), SYS, keep(None, Some(100 - 12)), now).unwrap();
    p.check().unwrap();
    assert!(deleted(&p).is_empty(), "{:?}", deleted(&p));
    let d = decisions(&p);
    assert_eq!(
        d["i1"],
        Decision::Keep(KeepReason::NeededBy { id: "i2".into() })
    );
    assert_eq!(
        d["f1"],
        Decision::Keep(KeepReason::NeededBy { id: "i1".into() })
    );
    assert!(d["f1"].to_string().contains("never breaks"), "{}", d["f1"]);
    // A full that failed verification does not count: the next older full is kept, and the
    // chain of the failed one stays whole as it is newer.
    let mut e = entries();
    if let EntryState::Complete(l) = &mut e[3].state {
        l.verification_failed = true;
    }
    let p = plan(e, SYS, keep(Some(1), None), now).unwrap();
    p.check().unwrap();
    assert!(deleted(&p).is_empty(), "{:?}", deleted(&p));
    assert_eq!(
        decisions(&p)["f1"],
        Decision::Keep(KeepReason::WithinNewest { rank: 1, of: 1 })
    );
}
