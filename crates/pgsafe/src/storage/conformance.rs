//! The one test suite every [`Backend`] must pass: local, memory, the decorators, and object
//! storage. Each check works under its own prefix (`conformance/<check>/`), so the suite runs
//! against one empty backend (a fresh folder, a fresh bucket) in one go: [`run`].
//!
//! Compiled for the crate's tests and, with the `conformance` feature, for other crates' tests.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use super::key::Ident;
use super::{Backend, ErrorKind, ObjectName, PutOptions, PutOutcome};

/// A check of the suite.
pub type Check = fn(&dyn Backend);

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("roundtrip", roundtrip),
    ("identical_reput", identical_reput),
    ("different_reput", different_reput),
    ("atomic_visibility", atomic_visibility),
    ("concurrent_visibility", concurrent_visibility),
    ("crash_leftovers", crash_leftovers),
    ("listing", listing),
    ("ranges", ranges),
    ("delete", delete),
    ("delete_prefix", delete_prefix),
    ("missing", missing),
    ("hostile_names", hostile_names),
    ("concurrent_puts", concurrent_puts),
    ("deferred_then_sync", deferred_then_sync),
    ("local_files", local_files),
    ("folders", folders),
];

/// Runs every check against `backend` (empty, or at least without `conformance/`), naming the
/// check that fails.
pub fn run(backend: &dyn Backend) {
    for (name, check) in CHECKS {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(backend)));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("conformance check {name} failed on {backend:?}: {msg}");
        }
    }
}

fn n(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

/// Bytes that differ at every position from their neighbours' (a misplaced range shows).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u64) as u8
                ^ (i >> 8) as u8
        })
        .collect()
}

fn get_all(b: &dyn Backend, name: &ObjectName) -> Vec<u8> {
    b.get(name, u64::MAX).unwrap()
}

fn kind_of<T: std::fmt::Debug>(r: super::Result<T>) -> ErrorKind {
    r.expect_err("an error").kind()
}

fn roundtrip(b: &dyn Backend) {
    let small = n("conformance/roundtrip/small");
    let data = pattern(1000, 1);
    assert_eq!(
        b.put(&small, &data, PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(get_all(b, &small), data);
    assert_eq!(b.size(&small).unwrap(), 1000);

    let empty = n("conformance/roundtrip/empty");
    assert_eq!(
        b.put(&empty, b"", PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(get_all(b, &empty), b"");
    assert_eq!(b.size(&empty).unwrap(), 0);

    // Larger than any buffer, streamed in and out.
    let big = n("conformance/roundtrip/deep/er/big");
    let data = pattern(3 * 1024 * 1024 + 17, 2);
    let outcome = b
        .put_from(&big, &mut &data[..], PutOptions::default())
        .unwrap();
    assert_eq!(outcome, PutOutcome::Created);
    let mut back = Vec::new();
    b.read(&big).unwrap().read_to_end(&mut back).unwrap();
    assert!(back == data, "streamed object differs");
    assert_eq!(b.size(&big).unwrap(), data.len() as u64);

    // Many small writes through a writer.
    let pieces = n("conformance/roundtrip/pieces");
    let mut w = b.writer(&pieces, PutOptions::default()).unwrap();
    for chunk in data[..100_000].chunks(7) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.finish().unwrap(), PutOutcome::Created);
    assert!(get_all(b, &pieces) == data[..100_000]);

    // get's limit: an object larger than the caller allows is an error, not a large buffer.
    assert!(b.get(&small, 999).is_err());
    assert_eq!(b.get(&small, 1000).unwrap(), pattern(1000, 1));
}

fn identical_reput(b: &dyn Backend) {
    let k = n("conformance/identical/x");
    let data = pattern(70_000, 3);
    assert_eq!(
        b.put(&k, &data, PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        b.put(&k, &data, PutOptions::default()).unwrap(),
        PutOutcome::AlreadyPresent
    );
    let outcome = b
        .put_from(&k, &mut &data[..], PutOptions::deferred())
        .unwrap();
    assert_eq!(outcome, PutOutcome::AlreadyPresent);
    assert_eq!(get_all(b, &k), data);
    let e = n("conformance/identical/empty");
    b.put(&e, b"", PutOptions::default()).unwrap();
    assert_eq!(
        b.put(&e, b"", PutOptions::default()).unwrap(),
        PutOutcome::AlreadyPresent
    );
}

fn different_reput(b: &dyn Backend) {
    let k = n("conformance/different/x");
    let data = pattern(70_000, 4);
    b.put(&k, &data, PutOptions::default()).unwrap();
    let mut other = data.clone();
    other[69_999] ^= 1;
    let longer = [&data[..], b"+"].concat();
    for (what, bytes) in [
        ("one bit changed", &other[..]),
        ("a prefix", &data[..69_999]),
        ("longer", &longer[..]),
        ("empty", &b""[..]),
    ] {
        let r = b.put(&k, bytes, PutOptions::default());
        assert_eq!(kind_of(r), ErrorKind::Conflict, "{what}");
        assert!(get_all(b, &k) == data, "{what}: the stored object changed");
    }
    let e = n("conformance/different/empty");
    b.put(&e, b"", PutOptions::default()).unwrap();
    assert_eq!(
        kind_of(b.put(&e, b"x", PutOptions::default())),
        ErrorKind::Conflict
    );
    let names: Vec<_> = b
        .list(Some(&n("conformance/different")))
        .unwrap()
        .into_iter()
        .map(|o| o.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["conformance/different/empty", "conformance/different/x"]
    );
}

fn atomic_visibility(b: &dyn Backend) {
    let dir = n("conformance/atomic");
    let k = n("conformance/atomic/x");
    let data = pattern(200_000, 5);
    let mut w = b.writer(&k, PutOptions::default()).unwrap();
    w.write_all(&data[..100_000]).unwrap();
    w.flush().unwrap();
    let invisible = |b: &dyn Backend| {
        assert_eq!(kind_of(b.get(&k, u64::MAX)), ErrorKind::NotFound);
        assert_eq!(kind_of(b.size(&k)), ErrorKind::NotFound);
        assert_eq!(b.list(Some(&dir)).unwrap(), []);
    };
    invisible(b);
    w.write_all(&data[100_000..]).unwrap();
    w.flush().unwrap();
    invisible(b);
    assert_eq!(w.finish().unwrap(), PutOutcome::Created);
    assert_eq!(get_all(b, &k), data);

    // A writer dropped unfinished stores nothing.
    let k2 = n("conformance/atomic/dropped");
    let mut w = b.writer(&k2, PutOptions::default()).unwrap();
    w.write_all(&data).unwrap();
    drop(w);
    assert_eq!(kind_of(b.get(&k2, u64::MAX)), ErrorKind::NotFound);
    assert_eq!(b.list(Some(&dir)).unwrap().len(), 1);
    assert_eq!(
        b.put(&k2, b"later", PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
}

fn concurrent_visibility(b: &dyn Backend) {
    let k = n("conformance/concurrent_visibility/x");
    let data = pattern(2 * 1024 * 1024, 6);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = b.writer(&k, PutOptions::default()).unwrap();
            for chunk in data.chunks(4096) {
                w.write_all(chunk).unwrap();
                w.flush().unwrap();
            }
            w.finish().unwrap();
            done.store(true, Ordering::SeqCst);
        });
        // Every read that finds the object finds all of it.
        loop {
            let finished = done.load(Ordering::SeqCst);
            match b.get(&k, u64::MAX) {
                Ok(got) => {
                    assert!(
                        got == data,
                        "a reader saw {} of {} bytes",
                        got.len(),
                        data.len()
                    );
                    break;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    assert!(!finished, "finished but not found");
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
}

fn crash_leftovers(b: &dyn Backend) {
    // A writer that never finishes nor aborts (its process was killed) leaves nothing that
    // lists or reads as an object, and does not block the name.
    let dir = n("conformance/crash");
    let k = n("conformance/crash/x");
    let mut w = b.writer(&k, PutOptions::default()).unwrap();
    w.write_all(&pattern(300_000, 7)).unwrap();
    w.flush().unwrap();
    std::mem::forget(w);
    assert_eq!(b.list(Some(&dir)).unwrap(), []);
    assert!(b.list(None).unwrap().iter().all(|o| o.name != k));
    assert_eq!(kind_of(b.get(&k, u64::MAX)), ErrorKind::NotFound);
    assert_eq!(
        b.put(&k, b"after", PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(get_all(b, &k), b"after");
    let listed: Vec<_> = b
        .list(Some(&dir))
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(listed, [k]);
}

fn listing(b: &dyn Backend) {
    let objs: [(&str, u64); 5] = [
        ("conformance/list/a/1", 1),
        ("conformance/list/a/2", 2),
        ("conformance/list/a/sub/3", 3),
        ("conformance/list/ab/5", 5),
        ("conformance/list/b", 4),
    ];
    // Put in an order other than the listing's.
    for (name, size) in objs.iter().rev() {
        b.put(&n(name), &pattern(*size as usize, 8), PutOptions::default())
            .unwrap();
    }
    let got = |p: &str| -> Vec<(String, u64)> {
        b.list(Some(&n(p)))
            .unwrap()
            .into_iter()
            .map(|o| (o.name.to_string(), o.size))
            .collect()
    };
    let want = |names: &[(&str, u64)]| -> Vec<(String, u64)> {
        names.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    };
    assert_eq!(got("conformance/list"), want(&objs));
    assert_eq!(got("conformance/list/a"), want(&objs[..3]));
    assert_eq!(got("conformance/list/a/sub"), want(&objs[2..3]));
    // Component-wise: "a" is not a prefix of "ab/5"; an object is not a prefix of itself.
    assert_eq!(got("conformance/list/b"), []);
    assert_eq!(got("conformance/list/nothing"), []);
    assert_eq!(got("conformance/list/a/1/deeper"), []);
    let all = b.list(None).unwrap();
    for (name, size) in objs {
        assert!(
            all.iter().any(|o| o.name == n(name) && o.size == size),
            "{name} in the full list"
        );
    }
    assert!(
        all.windows(2).all(|w| w[0].name < w[1].name),
        "sorted by name"
    );
}

fn ranges(b: &dyn Backend) {
    let k = n("conformance/ranges/x");
    let data = pattern(1000, 9);
    b.put(&k, &data, PutOptions::default()).unwrap();
    assert_eq!(b.get_range(&k, 0, 10).unwrap(), &data[..10]);
    assert_eq!(b.get_range(&k, 500, 250).unwrap(), &data[500..750]);
    // Past the end: cut at the end, or nothing.
    assert_eq!(b.get_range(&k, 990, 100).unwrap(), &data[990..]);
    assert_eq!(b.get_range(&k, 1000, 5).unwrap(), b"");
    assert_eq!(b.get_range(&k, 5000, 5).unwrap(), b"");
    assert_eq!(b.get_range(&k, u64::MAX - 1, u64::MAX).unwrap(), b"");
    assert_eq!(b.get_range(&k, 10, 0).unwrap(), b"");
    let mut rest = Vec::new();
    b.read_range(&k, 100, None)
        .unwrap()
        .read_to_end(&mut rest)
        .unwrap();
    assert_eq!(rest, &data[100..]);
    let mut mid = Vec::new();
    b.read_range(&k, 100, Some(u64::MAX))
        .unwrap()
        .read_to_end(&mut mid)
        .unwrap();
    assert_eq!(mid, &data[100..]);
    assert_eq!(
        kind_of(b.get_range(&n("conformance/ranges/none"), 0, 1)),
        ErrorKind::NotFound
    );
}

fn delete(b: &dyn Backend) {
    let k = n("conformance/delete/x");
    b.put(&k, b"one", PutOptions::default()).unwrap();
    assert!(b.delete(&k).unwrap());
    assert_eq!(kind_of(b.get(&k, u64::MAX)), ErrorKind::NotFound);
    assert_eq!(b.list(Some(&n("conformance/delete"))).unwrap(), []);
    assert!(!b.delete(&k).unwrap(), "deleting a missing object");
    // The name is free again.
    assert_eq!(
        b.put(&k, b"two", PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(get_all(b, &k), b"two");
    // A prefix is not an object.
    b.put(&n("conformance/delete/d/y"), b"y", PutOptions::default())
        .unwrap();
    assert!(!b.delete(&n("conformance/delete/d")).unwrap());
    assert_eq!(get_all(b, &n("conformance/delete/d/y")), b"y");
}

fn delete_prefix(b: &dyn Backend) {
    for name in ["keep", "d/x", "d/e/y", "d/e/f/z", "dz"] {
        b.put(
            &n(&format!("conformance/delete_prefix/{name}")),
            b"1",
            PutOptions::default(),
        )
        .unwrap();
    }
    let d = n("conformance/delete_prefix/d");
    assert_eq!(b.delete_prefix(&d).unwrap(), 3);
    let left: Vec<String> = b
        .list(Some(&n("conformance/delete_prefix")))
        .unwrap()
        .into_iter()
        .map(|o| o.name.to_string())
        .collect();
    // Component-wise: `d` is not a prefix of `dz`.
    assert_eq!(
        left,
        [
            "conformance/delete_prefix/dz",
            "conformance/delete_prefix/keep"
        ]
    );
    assert_eq!(b.delete_prefix(&d).unwrap(), 0, "deleting it again");
    assert_eq!(
        b.delete_prefix(&n("conformance/delete_prefix/none"))
            .unwrap(),
        0
    );
    // An object is not a prefix of itself.
    assert_eq!(
        b.delete_prefix(&n("conformance/delete_prefix/keep"))
            .unwrap(),
        0
    );
    assert_eq!(get_all(b, &n("conformance/delete_prefix/keep")), b"1");
    // The name is free again.
    assert_eq!(
        b.put(
            &n("conformance/delete_prefix/d/x"),
            b"2",
            PutOptions::default()
        )
        .unwrap(),
        PutOutcome::Created
    );
}

fn missing(b: &dyn Backend) {
    b.put(&n("conformance/missing/file"), b"f", PutOptions::default())
        .unwrap();
    for name in [
        "conformance/missing/x",
        "conformance/missing/no/such/prefix",
        // Below an object, as if it were a folder.
        "conformance/missing/file/x",
        // A prefix, not an object.
        "conformance/missing",
    ] {
        let k = n(name);
        assert_eq!(
            kind_of(b.get(&k, u64::MAX)),
            ErrorKind::NotFound,
            "get {name}"
        );
        assert_eq!(kind_of(b.size(&k)), ErrorKind::NotFound, "size {name}");
        assert_eq!(
            kind_of(b.read(&k).map(|_| ())),
            ErrorKind::NotFound,
            "read {name}"
        );
        assert_eq!(
            kind_of(b.get_range(&k, 1, 1)),
            ErrorKind::NotFound,
            "range {name}"
        );
        assert!(!b.delete(&k).unwrap(), "delete {name}");
    }
}

fn hostile_names(b: &dyn Backend) {
    for bad in [
        "",
        "..",
        "../x",
        "a/../../x",
        "a/./b",
        ".",
        "/etc/passwd",
        "a//b",
        "a/",
        "a\0b",
        "a/.pgsafe-tmp-1-2",
        "x.pgsafe-tmp",
    ] {
        let e = ObjectName::new(bad).expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidName, "{bad}");
    }
    let long = "x".repeat(256);
    assert_eq!(kind_of(ObjectName::new(&long)), ErrorKind::InvalidName);
    let deep = vec!["x"; 600].join("/");
    assert_eq!(kind_of(ObjectName::new(&deep)), ErrorKind::InvalidName);
    for bad in ["", "..", ".hidden", "a/b", "a\0", "é"] {
        assert_eq!(
            kind_of(Ident::new(bad)),
            ErrorKind::InvalidName,
            "ident {bad:?}"
        );
    }
    // Nothing was stored by the attempts.
    assert!(
        b.list(None)
            .unwrap()
            .iter()
            .all(|o| !o.name.to_string().contains("passwd"))
    );
}

fn concurrent_puts(b: &dyn Backend) {
    for round in 0..8 {
        // The same bytes from two threads: both succeed, one of them created the object.
        let k = n(&format!("conformance/concurrent/same-{round}"));
        let data = pattern(50_000 + round, 10);
        let barrier = Barrier::new(2);
        let outcomes: Vec<PutOutcome> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        b.put(&k, &data, PutOptions::default()).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = outcomes
            .iter()
            .filter(|o| **o == PutOutcome::Created)
            .count();
        assert_eq!(created, 1, "{outcomes:?}");
        assert_eq!(get_all(b, &k), data);

        // Different bytes: exactly one wins, the other is refused, the winner's bytes stay.
        let k = n(&format!("conformance/concurrent/diff-{round}"));
        let mine = [pattern(50_000, 11), pattern(50_000, 12)];
        let barrier = Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = mine
                .iter()
                .map(|d| {
                    let (b, k, barrier) = (b, &k, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        b.put(k, d, PutOptions::default()).map_err(|e| e.kind())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winner = match (&results[0], &results[1]) {
            (Ok(PutOutcome::Created), Err(ErrorKind::Conflict)) => 0,
            (Err(ErrorKind::Conflict), Ok(PutOutcome::Created)) => 1,
            other => panic!("round {round}: {other:?}"),
        };
        assert!(get_all(b, &k) == mine[winner]);
    }
}

fn deferred_then_sync(b: &dyn Backend) {
    let names: Vec<_> = (0..20)
        .map(|i| n(&format!("conformance/deferred/{i}")))
        .collect();
    for (i, k) in names.iter().enumerate() {
        let outcome = b
            .put(k, &pattern(i * 100, 13), PutOptions::deferred())
            .unwrap();
        assert_eq!(outcome, PutOutcome::Created);
        // Visible at once; durable after sync_all.
        assert_eq!(b.size(k).unwrap(), (i * 100) as u64);
    }
    b.sync_all().unwrap();
    assert_eq!(b.list(Some(&n("conformance/deferred"))).unwrap().len(), 20);
}

/// The optional local-file capabilities keep the same promises: the file written through is
/// invisible until finished and then write-once; the file opened is the object.
fn local_files(b: &dyn Backend) {
    use std::os::unix::fs::FileExt;
    let k = n("conformance/local_files/x");
    let data = pattern(300_000, 14);
    let mut w = b.writer(&k, PutOptions::default()).unwrap();
    w.write_all(&data[..1000]).unwrap();
    let Some(file) = w.local_file() else {
        assert!(b.open_file(&k).is_none(), "open_file without local_file");
        return;
    };
    // Positioned writes after what went through Write (flushed first).
    file.unwrap().write_all_at(&data[1000..], 1000).unwrap();
    assert_eq!(kind_of(b.size(&k)), ErrorKind::NotFound);
    assert_eq!(w.finish().unwrap(), PutOutcome::Created);
    assert!(get_all(b, &k) == data);
    let mut f = b.open_file(&k).expect("open_file with local_file").unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert!(back == data);
    assert_eq!(
        kind_of(b.open_file(&n("conformance/local_files/none")).unwrap()),
        ErrorKind::NotFound
    );
    // Write-once through the file too.
    let mut w = b.writer(&k, PutOptions::default()).unwrap();
    w.local_file()
        .unwrap()
        .unwrap()
        .write_all_at(b"other", 0)
        .unwrap();
    assert_eq!(kind_of(w.finish()), ErrorKind::Conflict);
}

/// A folder is not an object: creating one (twice, or under objects' folders) lists nothing,
/// and objects are put under it as under any prefix.
fn folders(b: &dyn Backend) {
    let dir = n("conformance/folders/a/b");
    b.create_folder(&dir, 0o750).unwrap();
    b.create_folder(&dir, 0o700).unwrap();
    assert!(b.list(Some(&n("conformance/folders"))).unwrap().is_empty());
    assert_eq!(kind_of(b.size(&dir)), ErrorKind::NotFound);
    let k = n("conformance/folders/a/b/x");
    b.put(&k, b"x", PutOptions::default()).unwrap();
    b.create_folder(&n("conformance/folders/a"), 0o700).unwrap();
    let listed: Vec<_> = b
        .list(Some(&n("conformance/folders")))
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(listed, vec![k]);
}
