//! The repository on a real folder: marker, registration, leases, events, the catalog loader.

use std::os::unix::fs::symlink;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::testdata::{SYSID, ident, info_json, registration};
use super::*;
use crate::types::{PgVersion, SystemId};

fn timing() -> LeaseTiming {
    LeaseTiming::default()
}

/// A repository with cluster `main` registered.
fn repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let r = Repository::create(dir.path().join("repo")).unwrap();
    assert!(r.register(&registration()).unwrap());
    (dir, r)
}

/// Writes a backup folder `id` of `main` with `pgsafe.json` = `info` (None: none).
fn put_backup(r: &Repository, id: &str, info: Option<Vec<u8>>) {
    let folder = r.local_root().unwrap().join("main/backups").join(id);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("backup_label"), b"label").unwrap();
    if let Some(i) = info {
        std::fs::write(folder.join("pgsafe.json"), i).unwrap();
    }
}

#[test]
fn a_folder_without_the_marker_is_not_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let e = Repository::open(dir.path()).unwrap_err();
    assert!(matches!(e, RepoError::NotARepository { .. }), "{e}");
    std::fs::write(dir.path().join("precious"), b"x").unwrap();
    let e = Repository::create(dir.path()).unwrap_err();
    assert!(matches!(e, RepoError::NotEmpty { .. }), "{e}");
    // Nothing was written into it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let missing = dir.path().join("nope");
    assert!(matches!(
        Repository::open(&missing).unwrap_err(),
        RepoError::NotARepository { .. }
    ));
}

#[test]
fn create_is_idempotent_and_registration_refuses_another_cluster() {
    let (dir, r) = repo();
    let again = Repository::create(r.local_root().unwrap()).unwrap();
    // The same cluster again: success, nothing new.
    assert!(!again.register(&registration()).unwrap());
    let mut minor = registration();
    minor.server_version = PgVersion::from_num(150012).unwrap();
    assert!(!again.register(&minor).unwrap());
    let mut other = registration();
    other.system_identifier = SystemId(SYSID + 1);
    let e = again.register(&other).unwrap_err();
    assert!(matches!(e, RepoError::OtherCluster { .. }), "{e}");
    let mut major = registration();
    major.server_version = PgVersion::from_num(160001).unwrap();
    assert!(matches!(
        again.register(&major).unwrap_err(),
        RepoError::OtherCluster { .. }
    ));
    assert_eq!(r.registration(&ident("main")).unwrap(), registration());
    assert!(matches!(
        r.registration(&ident("other")).unwrap_err(),
        RepoError::NotRegistered { .. }
    ));
    drop(dir);
}

#[test]
fn the_catalog_is_loaded_from_folders_leases_and_events() {
    let (_dir, r) = repo();
    let main = ident("main");
    put_backup(
        &r,
        "20261203T100000Z",
        Some(info_json(SYSID, 15, 1, 0x1000000, 100)),
    );
    put_backup(
        &r,
        "20261203T110000Z",
        Some(info_json(SYSID, 15, 1, 0x2000000, 200)),
    );
    put_backup(&r, "20261203T120000Z", None);
    put_backup(&r, "20261203T130000Z", None);
    put_backup(
        &r,
        "planted",
        Some(info_json(SYSID + 7, 15, 9, 0xff000000, 999)),
    );
    // Odd entries: a link to a complete backup elsewhere, a file, a name that is no ID.
    let elsewhere = r.local_root().unwrap().parent().unwrap().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(
        elsewhere.join("pgsafe.json"),
        info_json(SYSID, 15, 5, 0xfff000000, 5000),
    )
    .unwrap();
    symlink(
        &elsewhere,
        r.local_root()
            .unwrap()
            .join("main/backups/20261203T140000Z"),
    )
    .unwrap();
    std::fs::write(r.local_root().unwrap().join("main/backups/stray"), b"x").unwrap();
    std::fs::create_dir(r.local_root().unwrap().join("main/backups/bad name")).unwrap();

    let lease = Lease::acquire(
        r.backend(),
        &main,
        &ident("backup"),
        &ident("20261203T120000Z"),
        Some(&ident("20261203T120000Z")),
        timing(),
    )
    .unwrap()
    .unwrap();
    r.record_event(
        &main,
        EventKind::Pin {
            backup: ident("20261203T100000Z"),
        },
    )
    .unwrap();

    let c = r.catalog(&main, timing()).unwrap();
    let st = |id: &str| c.get(id).unwrap().state.name();
    assert_eq!(st("20261203T100000Z"), "complete");
    assert_eq!(st("20261203T110000Z"), "complete");
    assert_eq!(st("20261203T120000Z"), "running");
    assert_eq!(st("20261203T130000Z"), "incomplete");
    assert_eq!(st("planted"), "foreign");
    assert!(c.get("20261203T140000Z").is_none());
    assert_eq!(c.odd_entries.len(), 3, "{:?}", c.odd_entries);
    assert!(c.get("20261203T100000Z").unwrap().pinned);
    assert_eq!(c.latest().unwrap().id.as_str(), "20261203T110000Z");

    // Resolving: latest, a chosen ID, and refusals.
    let (e, folder) = r.resolve(&main, None, timing()).unwrap();
    assert_eq!(e.id.as_str(), "20261203T110000Z");
    assert_eq!(
        folder.shown(),
        r.local_root()
            .unwrap()
            .join("main/backups/20261203T110000Z")
    );
    assert!(r.resolve(&main, Some("20261203T100000Z"), timing()).is_ok());
    for bad in [
        "planted",
        "20261203T120000Z",
        "20261203T130000Z",
        "20261203T140000Z",
        "../x",
    ] {
        let e = r.resolve(&main, Some(bad), timing()).unwrap_err();
        assert!(
            matches!(
                e,
                RepoError::NotUsable { .. } | RepoError::NoSuchBackup { .. }
            ),
            "{bad}: {e}"
        );
    }
    assert!(matches!(
        r.backup_folder(&main, &ident("20261203T140000Z"))
            .unwrap_err(),
        RepoError::NotAFolder { .. }
    ));

    // Released: the backup that never finished is incomplete.
    lease.release(r.backend()).unwrap();
    let c = r.catalog(&main, timing()).unwrap();
    assert_eq!(
        c.get("20261203T120000Z").unwrap().state.name(),
        "incomplete"
    );
}

#[test]
fn renewal_replaces_the_lease_and_release_removes_it() {
    let (_dir, r) = repo();
    let main = ident("main");
    // Renewed every second; the catalog allows a wide margin so that a loaded machine's late
    // renewal does not matter to what is checked (renewal replaces, release removes).
    let t = LeaseTiming {
        ttl: Duration::from_millis(3000),
        clock_skew: Duration::from_secs(30),
    };
    put_backup(&r, "B", None);
    let kind = ident("backup");
    let lease = Lease::acquire(r.backend(), &main, &kind, &ident("B"), Some(&ident("B")), t)
        .unwrap()
        .unwrap();
    // The same holder name again is taken.
    assert!(
        Lease::acquire(r.backend(), &main, &kind, &ident("B"), Some(&ident("B")), t)
            .unwrap()
            .is_none()
    );
    let lost = AtomicBool::new(false);
    let ((), released) = lease.hold_while(r.backend(), &lost, &|| {}, || {
        // Several renewals happen; each time exactly one lease is there, and it stays live.
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            let c = r.catalog(&main, t).unwrap();
            assert_eq!(c.get("B").unwrap().state.name(), "running");
            std::thread::sleep(Duration::from_millis(50));
        }
        let c = r.catalog(&main, t).unwrap();
        assert!(c.leases.iter().all(|l| l.lease.seq > 0), "{:?}", c.leases);
    });
    released.unwrap();
    assert!(!lost.load(std::sync::atomic::Ordering::SeqCst));
    let c = r.catalog(&main, t).unwrap();
    assert!(c.leases.is_empty());
    assert_eq!(c.get("B").unwrap().state.name(), "incomplete");
}

#[test]
fn an_expired_lease_is_dead() {
    let (_dir, r) = repo();
    let main = ident("main");
    let t = LeaseTiming {
        ttl: Duration::from_millis(1),
        clock_skew: Duration::ZERO,
    };
    put_backup(&r, "B", None);
    let _held = Lease::acquire(
        r.backend(),
        &main,
        &ident("backup"),
        &ident("B"),
        Some(&ident("B")),
        t,
    )
    .unwrap()
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let c = r.catalog(&main, t).unwrap();
    assert_eq!(c.get("B").unwrap().state.name(), "incomplete");
    // With a clock-skew margin it is still live.
    let skewed = LeaseTiming {
        clock_skew: Duration::from_secs(60),
        ..t
    };
    let c = r.catalog(&main, skewed).unwrap();
    assert_eq!(c.get("B").unwrap().state.name(), "running");
}

/// Performance: the catalog of 1,000 backups (each with a few files) loaded from a local
/// repository. Prints the time (no assertion on it); run with `--ignored --nocapture`.
#[test]
#[ignore]
fn catalog_of_1000_backups_load_time() {
    let (_dir, r) = repo();
    for i in 0..1000u64 {
        let id = id::backup_id(1_796_317_925_000_000 + i as i64 * 3_600_000_000, 0);
        put_backup(
            &r,
            id.as_str(),
            Some(info_json(SYSID, 15, 1, 0x1000000 * (i + 1), i as i64)),
        );
        for f in ["backup_manifest", "global/pg_control", "base/1/1259"] {
            let p = r
                .local_root()
                .unwrap()
                .join("main/backups")
                .join(id.as_str())
                .join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        if i % 10 == 0 {
            r.record_event(&ident("main"), EventKind::Pin { backup: id.clone() })
                .unwrap();
        }
    }
    let t = Instant::now();
    let c = r.catalog(&ident("main"), timing()).unwrap();
    let took = t.elapsed();
    assert_eq!(c.complete().count(), 1000);
    assert_eq!(c.backups.iter().filter(|b| b.pinned).count(), 100);
    println!("catalog of 1000 backups (100 events) loaded in {took:?}");
}

#[test]
fn local_entries_match_the_listing() {
    use crate::storage::{Backend, EntryKind, MemoryBackend, ObjectName, PutOptions};
    let dir = tempfile::tempdir().unwrap();
    let local = crate::storage::LocalBackend::open(dir.path()).unwrap();
    let mem = MemoryBackend::default();
    for n in ["p/a.x", "p/a/b", "p/a/c/d", "p/b", "p/c/d", "q/z"] {
        let name = ObjectName::new(n).unwrap();
        local.put(&name, b"12", PutOptions::default()).unwrap();
        mem.put(&name, b"12", PutOptions::default()).unwrap();
    }
    symlink("/", dir.path().join("p/link")).unwrap();
    let p = ObjectName::new("p").unwrap();
    let mut l = local.list_entries(&p).unwrap();
    let m = mem.list_entries(&p).unwrap();
    let link = l.iter().position(|e| e.name == b"link").unwrap();
    assert_eq!(l.remove(link).kind, EntryKind::NotAnObject);
    assert_eq!(l, m);
    let names: Vec<&[u8]> = m.iter().map(|e| e.name.as_slice()).collect();
    assert_eq!(names, [&b"a"[..], b"a.x", b"b", b"c"]);
    assert_eq!(m[1].kind, EntryKind::Object { size: 2 });
    assert_eq!(m[0].kind, EntryKind::Prefix);
    assert!(
        local
            .list_entries(&ObjectName::new("none").unwrap())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_holder_woken_after_its_lease_expired_stops() {
    let (_dir, r) = repo();
    let main = ident("main");
    let t = LeaseTiming {
        ttl: Duration::from_millis(300),
        clock_skew: Duration::ZERO,
    };
    let lease = Lease::acquire(
        r.backend(),
        &main,
        &ident("backup"),
        &ident("B"),
        Some(&ident("B")),
        t,
    )
    .unwrap()
    .unwrap();
    // Renewal every 100 ms; a renewal that comes too late (simulated by making the lease
    // expire at once: the document's expiry is in the past) must not resurrect it.
    let lease = {
        let mut l = lease;
        l.expire_now_for_test();
        l
    };
    let lost = AtomicBool::new(false);
    let called = AtomicBool::new(false);
    let on_lost = || called.store(true, std::sync::atomic::Ordering::SeqCst);
    let ((), _) = lease.hold_while(r.backend(), &lost, &on_lost, || {
        let until = Instant::now() + Duration::from_secs(10);
        while !lost.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert!(lost.load(std::sync::atomic::Ordering::SeqCst));
    assert!(called.load(std::sync::atomic::Ordering::SeqCst));
    // It was not renewed: no lease of a later sequence number was written.
    let c = r.catalog(&main, t).unwrap();
    assert!(c.leases.iter().all(|l| l.lease.seq == 0), "{:?}", c.leases);
}

#[test]
fn claiming_a_backup_id_is_create_only_in_object_storage_and_in_a_folder() {
    use crate::storage::{Backend, Location, MemoryBackend, ObjectName, PutOptions};
    let main = ident("main");
    let id = ident("20261203T150000Z");
    let mem: std::sync::Arc<dyn Backend> = std::sync::Arc::new(MemoryBackend::new());
    let d = tempfile::tempdir().unwrap();
    let local = Repository::create(d.path()).unwrap();
    // A registered cluster has its folder (cluster.json).
    std::fs::create_dir(d.path().join("main")).unwrap();
    let first = local.claim_backup(&main, &id).unwrap().unwrap();
    assert!(first.folder.is_some());
    assert!(local.claim_backup(&main, &id).unwrap().is_none());
    // Memory stands for object storage: no folders, the claim is an object.
    let repo =
        &Repository::create_over(mem.clone(), Location::Opened("memory://test".into())).unwrap();
    let first = repo.claim_backup(&main, &id).unwrap().unwrap();
    assert!(first.folder.is_none() && first.marker_written);
    let marker = ObjectName::new("main/backups/20261203T150000Z/pgsafe.incomplete").unwrap();
    let note = mem.get(&marker, 1 << 20).unwrap();
    assert!(note.starts_with(crate::layout::INCOMPLETE_NOTE));
    // A second claim of the same ID (another host, same second) loses.
    assert!(repo.claim_backup(&main, &id).unwrap().is_none());
    assert_eq!(mem.get(&marker, 1 << 20).unwrap(), note);
    // Finished: pgsafe.json written, the marker deleted. Claiming the ID again must not
    // write into the finished backup.
    let info = ObjectName::new("main/backups/20261203T150000Z/pgsafe.json").unwrap();
    mem.put(&info, b"{}", PutOptions::default()).unwrap();
    mem.delete(&marker).unwrap();
    assert!(repo.claim_backup(&main, &id).unwrap().is_none());
    assert_eq!(
        mem.size(&marker).unwrap_err().kind(),
        crate::storage::ErrorKind::NotFound
    );
    // An unused claim is released without a trace; a used one stays.
    let other = ident("20261203T150001Z");
    let c = repo.claim_backup(&main, &other).unwrap().unwrap();
    repo.release_unused(&c).unwrap();
    assert!(
        mem.list(Some(
            &ObjectName::new("main/backups/20261203T150001Z").unwrap()
        ))
        .unwrap()
        .is_empty()
    );
    let c = repo.claim_backup(&main, &other).unwrap().unwrap();
    c.store
        .put(
            &ObjectName::new("base/1/1").unwrap(),
            b"x",
            PutOptions::default(),
        )
        .unwrap();
    repo.release_unused(&c).unwrap();
    assert!(repo.marked_incomplete(&main, &other));
    assert!(repo.remove_incomplete(&main, &other).unwrap());
    assert!(!repo.marked_incomplete(&main, &other));
}
