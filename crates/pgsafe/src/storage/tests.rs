use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::key::{BackupAt, backup_prefix, repo_prefix};
use super::ratelimit::Clock;
use super::*;
use crate::plan::RelPath;
use crate::types::TimelineId;

fn n(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

#[test]
fn conformance_local() {
    let d = tempfile::tempdir().unwrap();
    let b = LocalBackend::create(&d.path().join("new/root")).unwrap();
    conformance::run(&b);
    // Nothing but objects (and their folders) remains: no temporary file of a finished,
    // dropped or failed put (the one forgotten writer of the crash check excepted).
    let mut leftovers = Vec::new();
    walk(b.root(), &mut leftovers);
    let tmp: Vec<_> = leftovers
        .iter()
        .filter(|p| p.contains(".pgsafe-tmp"))
        .collect();
    assert_eq!(tmp.len(), 1, "{tmp:?}");
    assert!(tmp[0].contains("conformance/crash/"), "{tmp:?}");
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path().display().to_string());
        }
    }
}

#[test]
fn conformance_memory() {
    conformance::run(&MemoryBackend::new());
}

#[test]
fn conformance_decorated() {
    let d = tempfile::tempdir().unwrap();
    let local = LocalBackend::open(d.path()).unwrap();
    let b = Retry::new(RateLimit::new(local, 1 << 40), RetryPolicy::default());
    conformance::run(&b);
    conformance::run(&RateLimit::new(
        Retry::new(MemoryBackend::new(), RetryPolicy::default()),
        1 << 40,
    ));
}

/// A folder someone else wrote: links to files and folders outside, a FIFO. None is followed,
/// listed, written through or deleted.
#[test]
fn local_never_follows_links() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("backup");
    fs::create_dir_all(root.join("base/1")).unwrap();
    fs::write(root.join("base/1/112"), b"data").unwrap();
    fs::write(d.path().join("secret"), b"secret").unwrap();
    fs::create_dir(d.path().join("elsewhere")).unwrap();
    fs::write(d.path().join("elsewhere/x"), b"x").unwrap();
    symlink(d.path().join("secret"), root.join("base/1/113")).unwrap();
    symlink(d.path().join("elsewhere"), root.join("base/2")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let b = LocalBackend::open(&root).unwrap();

    let names: Vec<_> = b
        .list(None)
        .unwrap()
        .into_iter()
        .map(|o| o.name.to_string())
        .collect();
    assert_eq!(names, ["base/1/112"]);
    assert_eq!(b.get(&n("base/1/112"), 100).unwrap(), b"data");
    for (name, kind) in [
        ("base/1/113", ErrorKind::NotAnObject),
        ("base/2/x", ErrorKind::NotAnObject),
        ("fifo", ErrorKind::NotAnObject),
    ] {
        let e = b.get(&n(name), 100).unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        assert_eq!(b.size(&n(name)).unwrap_err().kind(), kind, "{name}");
    }
    assert_eq!(
        b.list(Some(&n("base/2"))).unwrap_err().kind(),
        ErrorKind::NotAnObject
    );
    // Writing through the linked folder fails and writes nothing outside.
    let e = b
        .put(&n("base/2/new"), b"new", PutOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAnObject, "{e}");
    assert!(!d.path().join("elsewhere/new").exists());
    // Writing over the link to a file: the name is taken by something that is not an object.
    let e = b
        .put(&n("base/1/113"), b"x", PutOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAnObject, "{e}");
    assert_eq!(fs::read(d.path().join("secret")).unwrap(), b"secret");
    // Deleting a link is refused; neither it nor its target goes.
    let e = b.delete(&n("base/1/113")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAnObject);
    assert!(fs::symlink_metadata(root.join("base/1/113")).is_ok());
    assert!(d.path().join("secret").exists());
}

/// Removing a backup someone else wrote into: links are removed, never followed (their targets
/// survive), a crashed writer's temporary file and a FIFO go too, and no folder remains.
#[test]
fn local_delete_prefix_removes_folders_and_never_follows_links() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("repo");
    let backup = root.join("c/backups/b1");
    fs::create_dir_all(backup.join("base/1")).unwrap();
    fs::create_dir_all(root.join("c/backups/b2")).unwrap();
    fs::write(backup.join("base/1/112"), b"data").unwrap();
    fs::write(backup.join("pgsafe.json"), b"{}").unwrap();
    fs::write(backup.join("base/1/.pgsafe-tmp-4242-7"), b"half").unwrap();
    fs::write(root.join("c/backups/b2/kept"), b"kept").unwrap();
    fs::write(d.path().join("secret"), b"secret").unwrap();
    fs::create_dir(d.path().join("elsewhere")).unwrap();
    fs::write(d.path().join("elsewhere/x"), b"x").unwrap();
    symlink(d.path().join("secret"), backup.join("base/1/113")).unwrap();
    symlink(d.path().join("elsewhere"), backup.join("base/2")).unwrap();
    nix::unistd::mkfifo(
        &backup.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let b = LocalBackend::open(&root).unwrap();
    assert_eq!(b.delete_prefix(&n("c/backups/b1")).unwrap(), 2);
    assert!(!backup.exists());
    assert!(root.join("c/backups").is_dir());
    assert_eq!(fs::read(d.path().join("secret")).unwrap(), b"secret");
    assert_eq!(fs::read(d.path().join("elsewhere/x")).unwrap(), b"x");
    assert_eq!(fs::read(root.join("c/backups/b2/kept")).unwrap(), b"kept");
    // A link as the prefix itself is not followed, nor removed.
    symlink(d.path().join("elsewhere"), root.join("c/backups/b3")).unwrap();
    assert_eq!(b.delete_prefix(&n("c/backups/b3")).unwrap(), 0);
    assert!(d.path().join("elsewhere/x").exists());
}

#[test]
fn local_skips_leftovers_of_other_processes() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("a")).unwrap();
    fs::write(d.path().join("a/.pgsafe-tmp-4242-7"), b"half").unwrap();
    fs::write(d.path().join("a/.x.pgsafe-tmp-4242"), b"old style").unwrap();
    fs::write(d.path().join("a/y"), b"y").unwrap();
    let b = LocalBackend::open(d.path()).unwrap();
    let names: Vec<_> = b
        .list(None)
        .unwrap()
        .into_iter()
        .map(|o| o.name.to_string())
        .collect();
    assert_eq!(names, ["a/y"]);
}

#[test]
fn local_files_modes_links_and_raw_names() {
    let d = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(d.path()).unwrap();
    let k = n("base/5/16384");
    b.put(
        &k,
        b"rel",
        PutOptions {
            mode: 0o640,
            ..PutOptions::default()
        },
    )
    .unwrap();
    let p = d.path().join("base/5/16384");
    let meta = fs::metadata(&p).unwrap();
    let opened = b.open_file(&k).unwrap().unwrap().metadata().unwrap();
    assert_eq!((opened.dev(), opened.ino()), (meta.dev(), meta.ino()));
    assert_eq!(meta.mode() & 0o777, 0o640);
    // One link: verify and restore refuse files with more (a planted hard link).
    assert_eq!(meta.nlink(), 1);
    assert_eq!(
        fs::metadata(d.path().join("base/5")).unwrap().mode() & 0o777,
        0o700
    );
    // Owner read and write are always kept.
    let k2 = n("ro");
    b.put(
        &k2,
        b"",
        PutOptions {
            mode: 0o400,
            ..PutOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs::metadata(d.path().join("ro"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // A stray file of PGDATA whose name is not UTF-8 keeps its name.
    let raw = ObjectName::from_rel_path(&RelPath::from_bytes(b"base/caf\xe9".to_vec())).unwrap();
    b.put(&raw, b"latin1", PutOptions::default()).unwrap();
    assert!(
        d.path()
            .join(std::ffi::OsStr::from_bytes(b"base/caf\xe9"))
            .exists()
    );
    assert!(
        b.list(Some(&n("base")))
            .unwrap()
            .iter()
            .any(|o| o.name == raw)
    );
    // A file where a folder is needed.
    let e = b.put(&n("ro/x"), b"x", PutOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAnObject, "{e}");
}

#[test]
fn local_conflict_leaves_no_temporary_file() {
    let d = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(d.path()).unwrap();
    b.put(&n("x"), b"one", PutOptions::default()).unwrap();
    assert!(b.put(&n("x"), b"two", PutOptions::default()).is_err());
    assert_eq!(
        b.put(&n("x"), b"one", PutOptions::default()).unwrap(),
        PutOutcome::AlreadyPresent
    );
    let entries: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["x"]);
    assert_eq!(fs::read(d.path().join("x")).unwrap(), b"one");
}

#[test]
fn local_open_refuses_what_is_not_a_folder() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("f"), b"").unwrap();
    assert!(LocalBackend::open(&d.path().join("f")).is_err());
    assert_eq!(
        LocalBackend::open(&d.path().join("missing"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// Fails the first `failures` calls of every operation with `kind`; with `lose_answer`, a
/// failing put stores the object first (the answer was lost on the way back).
#[derive(Debug)]
struct Flaky<B> {
    inner: B,
    failures: AtomicU32,
    kind: ErrorKind,
    calls: AtomicU32,
    lose_answer: bool,
}

impl<B: Backend> Flaky<B> {
    fn new(inner: B, failures: u32, kind: ErrorKind) -> Flaky<B> {
        Flaky {
            inner,
            failures: AtomicU32::new(failures),
            kind,
            calls: AtomicU32::new(0),
            lose_answer: false,
        }
    }

    fn fail(&self, name: &ObjectName) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StorageError::new(self.kind, "flaky", name));
        }
        Ok(())
    }
}

impl<B: Backend> Backend for Flaky<B> {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        self.fail(&n("list"))?;
        self.inner.list(prefix)
    }
    fn size(&self, name: &ObjectName) -> Result<u64> {
        self.fail(name)?;
        self.inner.size(name)
    }
    fn read_range(&self, name: &ObjectName, o: u64, l: Option<u64>) -> Result<ObjectReader<'_>> {
        self.fail(name)?;
        self.inner.read_range(name, o, l)
    }
    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        self.inner.writer(name, opts)
    }
    fn delete(&self, name: &ObjectName) -> Result<bool> {
        self.fail(name)?;
        self.inner.delete(name)
    }
    fn put(&self, name: &ObjectName, bytes: &[u8], opts: PutOptions) -> Result<PutOutcome> {
        if self.lose_answer && self.failures.load(Ordering::SeqCst) > 0 {
            self.inner.put(name, bytes, opts)?;
        }
        self.fail(name)?;
        self.inner.put(name, bytes, opts)
    }
}

fn recording() -> (
    Arc<Mutex<Vec<Duration>>>,
    impl Fn(Duration) + Send + Sync + 'static,
) {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let w = waits.clone();
    (waits, move |d| w.lock().unwrap().push(d))
}

#[test]
fn retry_retries_transient_errors_with_growing_jittered_waits() {
    let policy = RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(250),
        budget: Duration::from_secs(60),
    };
    let mem = MemoryBackend::new();
    mem.put(&n("x"), b"x", PutOptions::default()).unwrap();
    let (waits, sleep) = recording();
    let b = Retry::new(Flaky::new(mem, 4, ErrorKind::Transient), policy).with_sleep(sleep);
    assert_eq!(b.get(&n("x"), 10).unwrap(), b"x");
    assert_eq!(b.inner().calls.load(Ordering::SeqCst), 5);
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 4);
    for (i, w) in waits.iter().enumerate() {
        let bound = Duration::from_millis(100 << i).min(Duration::from_millis(250));
        assert!(*w <= bound, "wait {i}: {w:?} > {bound:?}");
    }
}

#[test]
fn retry_gives_up_and_keeps_other_errors() {
    let (_, sleep) = recording();
    let policy = RetryPolicy {
        attempts: 3,
        ..RetryPolicy::default()
    };
    let b = Retry::new(
        Flaky::new(MemoryBackend::new(), 10, ErrorKind::Transient),
        policy,
    )
    .with_sleep(sleep);
    assert_eq!(b.size(&n("x")).unwrap_err().kind(), ErrorKind::Transient);
    assert_eq!(b.inner().calls.load(Ordering::SeqCst), 3);

    let (waits, sleep) = recording();
    let b = Retry::new(
        Flaky::new(MemoryBackend::new(), 1, ErrorKind::PermissionDenied),
        policy,
    )
    .with_sleep(sleep);
    assert_eq!(
        b.list(None).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(b.inner().calls.load(Ordering::SeqCst), 1);
    assert!(waits.lock().unwrap().is_empty());

    // A budget smaller than any wait: no retry.
    let policy = RetryPolicy {
        budget: Duration::ZERO,
        first_delay: Duration::from_secs(1),
        ..policy
    };
    let b = Retry::new(
        Flaky::new(MemoryBackend::new(), 1, ErrorKind::Transient),
        policy,
    )
    .with_sleep(|_| {});
    let _ = b.size(&n("x"));
    assert!(b.inner().calls.load(Ordering::SeqCst) <= 2);
}

#[test]
fn retry_delay_is_bounded_and_never_overflows() {
    let p = RetryPolicy::default();
    assert_eq!(p.delay(0, 0.0), Duration::ZERO);
    assert_eq!(p.delay(0, 1.0), Duration::from_millis(100));
    assert_eq!(p.delay(3, 1.0), Duration::from_millis(800));
    assert_eq!(p.delay(40, 1.0), p.max_delay);
    assert_eq!(p.delay(u32::MAX, 0.5), p.max_delay / 2);
}

/// A put whose answer was lost is retried and finds its own bytes: write-once makes the retry
/// safe.
#[test]
fn retry_of_a_put_that_stored_finds_it_present() {
    let mut flaky = Flaky::new(MemoryBackend::new(), 1, ErrorKind::Transient);
    flaky.lose_answer = true;
    let b = Retry::new(flaky, RetryPolicy::default()).with_sleep(|_| {});
    assert_eq!(
        b.put(&n("seg"), b"wal", PutOptions::default()).unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(b.get(&n("seg"), 10).unwrap(), b"wal");
}

/// A clock whose sleeps only move it on.
#[derive(Default)]
struct FakeClock(Mutex<Duration>);

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap()
    }
    fn sleep(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

#[test]
fn rate_limit_paces_reads_and_writes() {
    let clock = Arc::new(FakeClock::default());
    let rate = 100 * 1024;
    let b = RateLimit::with_clock(MemoryBackend::new(), rate, clock.clone());
    let data = conformance::pattern(1024 * 1024, 1);
    b.put(&n("x"), &data, PutOptions::default()).unwrap();
    let mut back = Vec::new();
    b.read(&n("x")).unwrap().read_to_end(&mut back).unwrap();
    assert!(back == data);
    // 2 MiB at 100 KiB/s: 20.48 s of the fake clock, less the first burst (100 ms).
    let t = clock.now().as_secs_f64();
    assert!((20.38..=20.49).contains(&t), "{t}");
    // Listing and sizes move no data.
    b.list(None).unwrap();
    b.size(&n("x")).unwrap();
    assert_eq!(clock.now().as_secs_f64(), t);
    // No kernel-copy bypass of the limit.
    let d = tempfile::tempdir().unwrap();
    let local = RateLimit::new(LocalBackend::open(d.path()).unwrap(), rate);
    local.put(&n("x"), b"x", PutOptions::default()).unwrap();
    assert!(local.open_file(&n("x")).is_none());
    assert!(
        local
            .writer(&n("y"), PutOptions::default())
            .unwrap()
            .local_file()
            .is_none()
    );
}

#[test]
fn keys_name_objects_in_one_place() {
    let c = Ident::new("main").unwrap();
    let id = Ident::new("20261203T141500Z").unwrap();
    let rel = RelPath::from_bytes(b"base/5/16384".to_vec());
    let name = |k: Key<'_>| k.name().unwrap().to_string();
    assert_eq!(
        name(Key::BackupFile {
            at: BackupAt::Root,
            path: &rel
        }),
        "base/5/16384"
    );
    assert_eq!(
        name(Key::BackupFile {
            at: BackupAt::Repo {
                cluster: &c,
                backup: &id
            },
            path: &rel
        }),
        "main/backups/20261203T141500Z/base/5/16384"
    );
    let tli = TimelineId(2);
    let seg = Ident::new("000000020000000A000000FE").unwrap();
    assert_eq!(
        name(Key::Wal {
            cluster: &c,
            timeline: tli,
            file: &seg
        }),
        "main/wal/00000002/0000000A/000000020000000A000000FE"
    );
    let zst = Ident::new("000000020000000A000000FE.zst").unwrap();
    assert_eq!(
        name(Key::Wal {
            cluster: &c,
            timeline: tli,
            file: &zst
        }),
        "main/wal/00000002/0000000A/000000020000000A000000FE.zst"
    );
    let hist = Ident::new("00000002.history").unwrap();
    assert_eq!(
        name(Key::Wal {
            cluster: &c,
            timeline: tli,
            file: &hist
        }),
        "main/wal/00000002/00000002.history"
    );
    let other = Ident::new("000000010000000A000000FE").unwrap();
    let e = Key::Wal {
        cluster: &c,
        timeline: tli,
        file: &other,
    }
    .name()
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidName);
    let ev = Ident::new("20261203T141500Z-verified").unwrap();
    assert_eq!(
        name(Key::Event {
            cluster: &c,
            name: &ev
        }),
        "main/events/20261203T141500Z-verified.json"
    );
    let kind = Ident::new("backup").unwrap();
    assert_eq!(
        name(Key::Lease {
            cluster: &c,
            kind: &kind,
            holder: &id
        }),
        "main/leases/backup-20261203T141500Z.json"
    );
    assert_eq!(name(Key::Cluster { cluster: &c }), "main/cluster.json");
    assert_eq!(Key::Cluster { cluster: &c }.file_type(), FileType::Cluster);
    assert_eq!(
        repo_prefix(&c, FileType::Wal).unwrap().to_string(),
        "main/wal"
    );
    assert_eq!(repo_prefix(&c, FileType::Cluster), None);
    assert_eq!(
        backup_prefix(&c, &id).unwrap().to_string(),
        "main/backups/20261203T141500Z"
    );
    // A backup file named like a traversal is refused when its key is named.
    let evil = RelPath::from_bytes(b"../../etc/passwd".to_vec());
    let e = Key::BackupFile {
        at: BackupAt::Repo {
            cluster: &c,
            backup: &id,
        },
        path: &evil,
    }
    .name();
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidName);
}

#[test]
fn names_are_component_wise() {
    let a = n("a/b");
    assert!(n("a/b/c").is_under(&a));
    assert!(!n("a/bc").is_under(&a));
    assert!(!a.is_under(&a));
    assert_eq!(n("a/b/c").parent(), Some(a.clone()));
    assert_eq!(n("a").parent(), None);
    assert_eq!(n("a/b/c").file_name(), b"c");
    assert_eq!(a.join("c/d").unwrap(), n("a/b/c/d"));
    assert!(a.join("../x").is_err());
    // Control characters are escaped when shown.
    assert_eq!(n("a\nb").to_string(), "a\\nb");
}

#[test]
fn errors_say_what_and_keep_kinds_through_streams() {
    let e = StorageError::new(ErrorKind::Conflict, "store", "wal/x");
    assert!(
        e.to_string()
            .starts_with("store wal/x: an object of that name already exists"),
        "{e}"
    );
    let io = e.into_io();
    assert_eq!(
        StorageError::io("copy", "y", io).kind(),
        ErrorKind::Conflict
    );
    let e = StorageError::io(
        "read",
        "z",
        std::io::Error::from_raw_os_error(nix::libc::EROFS),
    );
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(std::error::Error::source(&e).is_some());
}

/// A backend that replaces objects on put, as a plain `rename` or an unconditional S3 PUT
/// would: the suite must refuse it.
#[derive(Debug, Default)]
struct Overwriting(MemoryBackend);

impl Backend for Overwriting {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        self.0.list(prefix)
    }
    fn size(&self, name: &ObjectName) -> Result<u64> {
        self.0.size(name)
    }
    fn read_range(&self, name: &ObjectName, o: u64, l: Option<u64>) -> Result<ObjectReader<'_>> {
        self.0.read_range(name, o, l)
    }
    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        self.0.delete(name)?;
        self.0.writer(name, opts)
    }
    fn delete(&self, name: &ObjectName) -> Result<bool> {
        self.0.delete(name)
    }
}

#[test]
#[should_panic(expected = "conformance check identical_reput failed")]
fn conformance_refuses_a_backend_that_overwrites() {
    conformance::run(&Overwriting::default());
}

const CRASH_CHILD: &str = "PGSAFE_STORAGE_CRASH_CHILD";

/// A process killed (SIGKILL) in the middle of a put leaves no object: nothing lists or reads,
/// the name is free, and only a temporary file remains.
#[test]
fn local_put_killed_midway_leaves_no_object() {
    use std::io::{BufRead, BufReader, Write};
    if let Some(dir) = std::env::var_os(CRASH_CHILD) {
        let b = LocalBackend::open(Path::new(&dir)).unwrap();
        let mut w = b.writer(&n("wal/seg"), PutOptions::default()).unwrap();
        w.write_all(&conformance::pattern(1 << 20, 3)).unwrap();
        w.flush().unwrap();
        // libtest may print the test's name on the same line first.
        println!("\nchild-ready");
        std::io::stdout().flush().unwrap();
        // Killed here; bounded in case the parent died first.
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "storage::tests::local_put_killed_midway_leaves_no_object",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, d.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let ready = out
        .lines()
        .map_while(|l| l.ok())
        .any(|l| l.ends_with("child-ready"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "the child did not get to the middle of its put");

    let b = LocalBackend::open(d.path()).unwrap();
    assert_eq!(b.list(None).unwrap(), []);
    assert_eq!(
        b.get(&n("wal/seg"), u64::MAX).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let left: Vec<_> = fs::read_dir(d.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1);
    assert!(
        left[0].to_string_lossy().starts_with(".pgsafe-tmp-"),
        "{left:?}"
    );
    assert_eq!(
        b.put(&n("wal/seg"), b"retried", PutOptions::default())
            .unwrap(),
        PutOutcome::Created
    );
}
