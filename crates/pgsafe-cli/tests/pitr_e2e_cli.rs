//! WAL archiving and point-in-time recovery end to end, per major, through the real binary: the
//! server archives with `archive_command = 'pgsafe archive-push --repo R --cluster C %p'` (run by
//! PostgreSQL as the unprivileged server user).
//!
//! - `copy_archiving_into_its_source`: a copy of the data directory started as is (same system,
//!   same timeline) archives into its source's repository: its different segment is refused
//!   loudly (PostgreSQL keeps the segment and retries), the source's object is unchanged; the
//!   same bytes pushed again succeed.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use pgsafe::storage::name::TEMP_MARKER;
use pgsafe_testkit::{
    Cluster, ClusterOptions, Marks, PgInstall, archive_settings, copy_tree, give_to_server_user,
    per_major, server_owned_tempdir, server_user, wait_archived,
};
use tempfile::TempDir;

use common::{bin, ok, pgsafe, repo_init, text};

const CLUSTER: &str = "main";
const MARKS: &str = "pitr_marks";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A server archiving into a pgsafe repository, registered as [`CLUSTER`].
struct Rig {
    install: PgInstall,
    c: Cluster,
    scratch: TempDir,
    repo: PathBuf,
}

impl Rig {
    /// `opts` plus archiving into a new repository in a server-owned scratch folder; 1 MB WAL
    /// segments from 11 on (10 has only 16 MB), so the loads span many segments and little WAL.
    fn new(major: u32, opts: ClusterOptions) -> Rig {
        let install = PgInstall::major(major);
        let scratch = server_owned_tempdir();
        let repo = scratch.path().join("repo");
        let mut opts = opts.fast_unsafe();
        if major >= 11 && opts.wal_segsize_mb.is_none() {
            opts = opts.wal_segsize_mb(1);
        }
        for line in archive_settings(
            &bin(),
            &["archive-push", "--repo", s(&repo), "--cluster", CLUSTER],
        ) {
            opts = opts.conf(line);
        }
        let c = Cluster::started(&install, opts);
        ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
        // The server runs archive-push (and a restored copy archive-get) as its own user.
        give_to_server_user(&repo);
        Rig {
            install,
            c,
            scratch,
            repo,
        }
    }

    fn m(&self) -> String {
        format!("PostgreSQL {}", self.install.major)
    }

    /// `pgsafe archive-get --repo --cluster main NAME DEST` run by the test.
    fn archive_get(&self, name: &str, dest: &Path) -> Output {
        pgsafe(&[
            "archive-get",
            "--repo",
            s(&self.repo),
            "--cluster",
            CLUSTER,
            name,
            s(dest),
        ])
    }
}

/// Files below `dir` (recursively) whose name contains `needle`.
fn files_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named(&p, needle));
        } else if e.file_name().to_string_lossy().contains(needle) {
            out.push(p);
        }
    }
    out
}

/// Every stored object below `dir` (temporary files left by killed writers excluded): name and
/// bytes.
fn objects(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for p in files_named(dir, "") {
        if !p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains(TEMP_MARKER)
        {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

/// A copy of the data directory (a clone, a storage snapshot) started as it is: the same system
/// on the same timeline, archiving into its source's repository. Both write into the same
/// segment; the source archives first; the copy's push of its different segment fails loudly,
/// PostgreSQL keeps the copy's segment and retries, and nothing stored changes. The same bytes
/// pushed again (PostgreSQL retrying after a crash between storing and recording it) succeed.
fn copy_archiving_into_its_source(major: u32) {
    let mut rig = Rig::new(major, ClusterOptions::new());
    let m = rig.m();
    let mut marks = Marks::create(&rig.c, MARKS, 0);
    marks.mark(&rig.c, None);
    let first = wait_archived(&rig.c);
    let wal = rig.repo.join(CLUSTER).join("wal");

    // Identical: the stored segment pushed again, by hand.
    let again = rig.scratch.path().join("again");
    fs::create_dir(&again).unwrap();
    let copy_of_first = again.join(&first);
    ok(rig.archive_get(&first, &copy_of_first), "archive-get");
    let before = objects(&wal);
    let out = ok(
        pgsafe(&[
            "archive-push",
            "--repo",
            s(&rig.repo),
            "--cluster",
            CLUSTER,
            s(&copy_of_first),
        ]),
        &format!("{m}: archive-push of {first} again"),
    );
    assert_eq!(objects(&wal), before, "{m}: {}", text(&out));

    // The clone: a copy of the stopped source, then both run.
    rig.c.stop();
    let copy_data = rig.scratch.path().join("clone");
    copy_tree(rig.c.data_dir(), &copy_data, Some(server_user())).unwrap();
    rig.c.start();
    let mut copy = Cluster::adopt(
        &rig.install,
        &copy_data,
        ClusterOptions::new().fast_unsafe(),
    );
    copy.keep_own_archive_settings();
    copy.start();
    marks.mark(&rig.c, None);
    Marks::continuing(MARKS, 500).mark(&copy, None);
    let seg = wait_archived(&rig.c);
    let stored = objects(&wal);
    let copy_seg: String = copy.query_one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    assert_eq!(copy_seg, seg, "{m}: the copy writes another segment");
    copy.execute("SELECT pg_switch_wal()");
    let t = Instant::now();
    loop {
        let (failed, last): (i64, Option<String>) = {
            let row = copy
                .connect()
                .query_one(
                    "SELECT failed_count, last_failed_wal FROM pg_stat_archiver",
                    &[],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        if failed > 0 && last.as_deref() == Some(seg.as_str()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{m}: the copy's push of {seg} never failed ({failed} failures, last {last:?}); \
             log:\n{}",
            copy.server_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = copy.server_log();
    assert!(
        log.contains(&seg) && log.to_lowercase().contains("different content"),
        "{m}: no loud refusal in the copy's log:\n{}",
        copy.server_log_tail(20)
    );
    // Nothing stored changed; the copy keeps its segment for another try.
    assert_eq!(objects(&wal), stored, "{m}: the archive changed");
    let mine = fs::read(copy_data.join("pg_wal").join(&seg)).unwrap();
    let theirs = again.join("theirs");
    ok(rig.archive_get(&seg, &theirs), "archive-get");
    assert!(
        fs::read(&theirs).unwrap() != mine,
        "{m}: the archive holds the copy's {seg}"
    );
    assert!(
        copy_data
            .join("pg_wal/archive_status")
            .join(format!("{seg}.ready"))
            .exists(),
        "{m}: the copy gave up its segment"
    );
    copy.stop();
}
per_major!(copy_archiving_into_its_source: 11, 18);
