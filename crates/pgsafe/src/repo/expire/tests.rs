//! expire on a real repository folder with synthetic backups (the CLI tests use real servers).

use std::time::Instant;

use super::*;
use crate::repo::Repository;
use crate::repo::doc::{REPO_FORMAT, format_time};
use crate::repo::retention::{Decision, DeleteReason, KeepReason};
use crate::repo::testdata::{SYSID, ident, info_json, lease, registration};
use crate::storage::PutOptions;

fn repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let r = Repository::create(dir.path().join("repo")).unwrap();
    assert!(r.register(&registration()).unwrap());
    (dir, r)
}

/// A backup folder `id` with a few files; `pgsafe.json` of a backup stopping at `stop` on
/// timeline `tli`, finished at `at` (None: no pgsafe.json, an unfinished backup).
fn put_backup(r: &Repository, id: &str, tli: u32, stop: u64, at: Option<i64>) {
    let folder = r.local_root().unwrap().join("main/backups").join(id);
    for f in [
        "backup_label",
        "global/pg_control",
        "base/1/1259",
        "pg_wal/x",
    ] {
        let p = folder.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
    if let Some(at) = at {
        std::fs::write(
            folder.join("pgsafe.json"),
            info_json(SYSID, 15, tli, stop, at),
        )
        .unwrap();
    }
}

fn put_lease(r: &Repository, doc: &LeaseDoc, holder: &str) {
    let name = Key::Lease {
        cluster: &ident("main"),
        kind: &doc.kind,
        holder: &ident(holder),
    }
    .name()
    .unwrap();
    r.backend()
        .put(&name, &doc.to_json(), PutOptions::default())
        .unwrap();
}

fn expire_lease(pid: u32, expires_us: i64) -> LeaseDoc {
    LeaseDoc {
        format: REPO_FORMAT,
        kind: ident(EXPIRE_LEASE),
        backup: None,
        host: "elsewhere".into(),
        pid,
        seq: 0,
        acquired_at: format_time(0),
        expires_at: format_time(expires_us),
    }
}

fn opts(keep_full: Option<u32>, dry_run: bool) -> ExpireOptions {
    ExpireOptions {
        keep: KeepOptions {
            keep_full,
            keep_within: None,
        },
        dry_run,
        timing: LeaseTiming::default(),
    }
}

fn folders(r: &Repository) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(r.local_root().unwrap().join("main/backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn ids(d: &[Deleted]) -> Vec<&str> {
    d.iter().map(|d| d.id.as_str()).collect()
}

#[test]
fn dry_run_lists_exactly_what_is_then_deleted() {
    let (_d, r) = repo();
    // IDs in the opposite order of the lineage.
    put_backup(&r, "z1", 1, 0x100_0000, Some(1000));
    put_backup(&r, "y2", 1, 0x200_0000, Some(2000));
    put_backup(&r, "x3", 1, 0x300_0000, Some(3000));
    put_backup(&r, "w4", 1, 0x400_0000, Some(4000));
    put_backup(&r, "crashed", 1, 0, None);
    let main = ident("main");
    let mut shown = None;
    let dry = expire(r.backend(), &main, &opts(Some(2), true), |p| {
        shown = Some(p.clone())
    })
    .unwrap();
    assert_eq!(shown.as_ref(), Some(&dry.plan));
    let planned: Vec<&str> = dry.plan.deletions().map(|b| b.backup.id.as_str()).collect();
    assert_eq!(planned, ["z1", "y2", "crashed"]);
    assert!(dry.deleted.is_empty());
    assert_eq!(folders(&r).len(), 5, "a dry run deletes nothing");
    assert!(
        !r.local_root().unwrap().join("main/leases").exists()
            || list_leases(r.backend(), &main).unwrap().is_empty()
    );

    let done = expire(r.backend(), &main, &opts(Some(2), false), |_| {}).unwrap();
    assert_eq!(ids(&done.deleted), planned);
    assert_eq!(done.deleted[0].objects, 5, "four files and pgsafe.json");
    assert_eq!(done.deleted[2].objects, 4);
    assert_eq!(folders(&r), ["w4", "x3"]);
    // One expire-started event per deleted backup; no lease left behind.
    let c = r.catalog(&main, LeaseTiming::default()).unwrap();
    assert!(c.leases.is_empty(), "{:?}", c.leases);
    let events = r
        .backend()
        .list(Some(&repo_prefix(&main, FileType::Event).unwrap()))
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.name.to_string().contains("expire-started"))
            .count(),
        3
    );
    // Again: nothing more to do.
    let again = expire(r.backend(), &main, &opts(Some(2), false), |_| {}).unwrap();
    assert!(again.deleted.is_empty());
}

#[test]
fn another_live_expire_is_refused_a_dead_one_is_cleaned() {
    let (_d, r) = repo();
    put_backup(&r, "a", 1, 0x100_0000, Some(1000));
    put_backup(&r, "b", 1, 0x200_0000, Some(2000));
    let main = ident("main");
    let far = now_us() + 3_600_000_000;
    put_lease(&r, &expire_lease(4242, far), "4242-0000abcd-000000");
    let e = expire(r.backend(), &main, &opts(Some(1), false), |_| {
        panic!("no plan while another expire runs")
    })
    .unwrap_err();
    assert!(matches!(e, ExpireError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("pid 4242"), "{e}");
    assert_eq!(e.error_kind(), ErrorKind::Conflict);
    assert_eq!(folders(&r), ["a", "b"]);
    // Only the other expire's lease remains (ours was given up).
    assert_eq!(list_leases(r.backend(), &main).unwrap().len(), 1);

    // That expire was killed: its lease expired long ago.
    r.backend()
        .delete_prefix(&repo_prefix(&main, FileType::Lease).unwrap())
        .unwrap();
    put_lease(&r, &expire_lease(4242, 0), "4242-0000abcd-000000");
    let done = expire(r.backend(), &main, &opts(Some(1), false), |_| {}).unwrap();
    assert_eq!(ids(&done.deleted), ["a"]);
    assert_eq!(done.dead_leases_removed, 1);
    assert!(list_leases(r.backend(), &main).unwrap().is_empty());
}

#[test]
fn running_backups_are_kept_and_half_deleted_ones_are_finished() {
    let (_d, r) = repo();
    let main = ident("main");
    put_backup(&r, "old", 1, 0x100_0000, Some(1000));
    put_backup(&r, "new", 1, 0x200_0000, Some(2000));
    // Being written (live lease), and one whose writer died (dead lease).
    put_backup(&r, "running", 1, 0, None);
    put_lease(
        &r,
        &lease("running", 0, now_us() + 3_600_000_000),
        "running-000000",
    );
    put_backup(&r, "died", 1, 0, None);
    put_lease(&r, &lease("died", 3, 0), "died-000003");
    // An expire killed after deleting pgsafe.json of a backup.
    put_backup(&r, "half", 1, 0x50_0000, None);
    std::fs::remove_file(
        r.local_root()
            .unwrap()
            .join("main/backups/half/base/1/1259"),
    )
    .unwrap();

    // No retention configured: only the leftovers go.
    let done = expire(r.backend(), &main, &opts(None, false), |p| {
        let d: Vec<_> = p.deletions().map(|b| b.decision.clone()).collect();
        assert!(
            d.iter()
                .all(|d| *d == Decision::Delete(DeleteReason::IncompleteLeftover))
        );
    })
    .unwrap();
    let mut gone = ids(&done.deleted);
    gone.sort();
    assert_eq!(gone, ["died", "half"]);
    assert_eq!(folders(&r), ["new", "old", "running"]);
    let running = done
        .plan
        .backups
        .iter()
        .find(|b| b.backup.id == "running")
        .unwrap();
    assert_eq!(running.decision, Decision::Keep(KeepReason::Running));
    // The dead backup lease went, the live one stays.
    assert_eq!(done.dead_leases_removed, 1);
    assert_eq!(list_leases(r.backend(), &main).unwrap().len(), 1);
}

#[test]
fn a_backup_lease_appearing_after_the_catalog_saves_the_folder() {
    let (_d, r) = repo();
    let main = ident("main");
    put_backup(&r, "a", 1, 0x100_0000, Some(1000));
    put_backup(&r, "slow", 1, 0, None);
    // The catalog saw no lease; one appears before the deletion (a backup's renewal delayed
    // past the catalog's view, or a clock far off).
    let done = expire(r.backend(), &main, &opts(None, false), |_| {
        put_lease(
            &r,
            &lease("slow", 1, now_us() + 3_600_000_000),
            "slow-000001",
        );
    })
    .unwrap();
    assert!(done.deleted.is_empty());
    assert_eq!(done.skipped.len(), 1);
    assert!(
        done.skipped[0].why.contains("live lease"),
        "{:?}",
        done.skipped
    );
    assert_eq!(folders(&r), ["a", "slow"]);
}

#[test]
fn an_unregistered_cluster_is_refused_before_any_lease() {
    let (_d, r) = repo();
    let e = expire(r.backend(), &ident("other"), &opts(Some(1), false), |_| {}).unwrap_err();
    assert!(
        matches!(e, ExpireError::Repo(RepoError::NotRegistered { .. })),
        "{e}"
    );
    assert!(!r.local_root().unwrap().join("other").exists());
}

#[test]
fn zero_retention_is_refused_before_anything() {
    let (_d, r) = repo();
    put_backup(&r, "a", 1, 0x100_0000, Some(1000));
    let e = expire(r.backend(), &ident("main"), &opts(Some(0), false), |_| {}).unwrap_err();
    assert_eq!(e.error_kind(), ErrorKind::Usage, "{e}");
    assert_eq!(folders(&r), ["a"]);
    assert!(list_leases(r.backend(), &ident("main")).unwrap().is_empty());
}

/// Performance: expire of 100 backups (of 200, each with 50 files) from a local repository.
/// Prints the times (no assertion on them); run with `--ignored --nocapture`.
#[test]
#[ignore]
fn expire_of_100_backups_time() {
    let (_d, r) = repo();
    let main = ident("main");
    for i in 0..200u64 {
        let id = format!("b{i:04}");
        put_backup(&r, &id, 1, 0x100_0000 * (i + 1), Some(i as i64 * 3600));
        for f in 0..46 {
            std::fs::write(
                r.local_root()
                    .unwrap()
                    .join("main/backups")
                    .join(&id)
                    .join(format!("base/1/{f}")),
                b"x",
            )
            .unwrap();
        }
    }
    let t = Instant::now();
    let dry = expire(r.backend(), &main, &opts(Some(100), true), |_| {}).unwrap();
    let plan_took = t.elapsed();
    assert_eq!(dry.plan.deletions().count(), 100);
    let t = Instant::now();
    let done = expire(r.backend(), &main, &opts(Some(100), false), |_| {}).unwrap();
    let took = t.elapsed();
    assert_eq!(done.deleted.len(), 100);
    let objects: u64 = done.deleted.iter().map(|d| d.objects).sum();
    println!(
        "plan of 200 backups: {plan_took:?}; expire of 100 backups ({objects} files): {took:?} \
         ({:?} per backup)",
        took / 100
    );
}
