//! Red team of `archive-push`: two or three pushes of the same WAL file running at once, each
//! asked for another compression (so each writes its own object name: `<seg>.zst`, `<seg>.lz4`,
//! `<seg>`). Write-once must hold across the names: one object per file, no Conflict for the
//! same bytes, and for different bytes (a split brain: two servers archiving as one cluster)
//! exactly one push may succeed, the others fail loudly, and what archive-get hands out is
//! what the successful push stored.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, repo_wal_objects, server_owned_tempdir};

use common::{command, ok, repo_init};

const CLUSTER: &str = "main";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn push_cmd(repo: &Path, path: &Path, compress: &str) -> Command {
    let mut cmd = command(&[
        "archive-push",
        "--repo",
        s(repo),
        "--cluster",
        CLUSTER,
        "--compress",
        compress,
    ]);
    cmd.arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn get(repo: &Path, file: &str, dest: &Path) -> Output {
    command(&[
        "archive-get",
        "--repo",
        s(repo),
        "--cluster",
        CLUSTER,
        file,
        s(dest),
    ])
    .output()
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes some WAL, switches to a new segment, and returns the name of the one just finished
/// and its bytes (read at once, before a checkpoint could recycle it).
fn finish_segment(c: &Cluster) -> (String, Vec<u8>) {
    c.execute(
        "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t SELECT generate_series(1, 20000)",
    );
    let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let bytes = fs::read(c.data_dir().join("pg_wal").join(&seg)).unwrap();
    (seg, bytes)
}

/// `content` as `name` in a folder of its own under `dir`.
fn source(dir: &Path, tag: &str, name: &str, content: &[u8]) -> PathBuf {
    let d = dir.join(tag);
    fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    fs::write(&p, content).unwrap();
    p
}

/// Starts every push, then waits for all (started together, they all look for a stored copy
/// before any has written its object: the race under test).
fn race(cmds: Vec<Command>) -> Vec<Output> {
    let children: Vec<Child> = cmds.into_iter().map(|mut c| c.spawn().unwrap()).collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// The archive's objects of segment `seg`.
fn objects_of(repo: &Path, seg: &str) -> Vec<String> {
    repo_wal_objects(repo, CLUSTER)
        .into_iter()
        .filter(|o| o.rsplit('/').next().unwrap().starts_with(seg))
        .collect()
}

/// Identical bytes pushed three times at once, with zstd, lz4 and none: every push succeeds
/// (PostgreSQL must not see a Conflict for its own retry), and the archive ends with one object
/// of the segment, which archive-get gives back byte for byte.
#[test]
fn racing_pushes_of_the_same_bytes_store_one_object() {
    let install = PgInstall::major(16);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let src = scratch.path().join("src");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let dest = scratch.path().join("RECOVERYXLOG");
    for round in 0..4 {
        let (seg, bytes) = finish_segment(&c);
        let cmds = ["zstd", "lz4", "none"]
            .iter()
            .map(|m| {
                push_cmd(
                    &repo,
                    &source(&src, &format!("{round}{m}"), &seg, &bytes),
                    m,
                )
            })
            .collect();
        for out in race(cmds) {
            assert_eq!(out.status.code(), Some(0), "{seg}: {}", stderr(&out));
        }
        let objects = objects_of(&repo, &seg);
        assert_eq!(objects.len(), 1, "{seg}: {objects:?}");
        ok(get(&repo, &seg, &dest), "archive-get");
        assert!(fs::read(&dest).unwrap() == bytes, "{seg}: other bytes");
    }
}

/// Two servers archiving as one cluster (a split brain) push the same segment name with
/// different bytes at the same moment, each with its own compression: at most one push
/// succeeds, every other fails loudly naming the split brain, and archive-get serves the bytes
/// of the push that succeeded (never those of a push that failed, which PostgreSQL keeps and
/// retries). Without a winner (both failed) the archive may hold nothing of that segment, or
/// the objects of both, but never serve bytes a failed push alone stored as the only copy.
#[test]
fn racing_pushes_of_different_bytes_conflict_loudly() {
    let install = PgInstall::major(16);
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let src = scratch.path().join("src");
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    ok(repo_init(&c, &repo, CLUSTER), "pgsafe init");
    let dest = scratch.path().join("RECOVERYXLOG");
    for (round, (ma, mb)) in [
        ("zstd", "lz4"),
        ("lz4", "zstd"),
        ("none", "zstd"),
        ("lz4", "none"),
    ]
    .into_iter()
    .enumerate()
    {
        let (seg, a) = finish_segment(&c);
        // The other server's segment: the same first page, other records further on.
        let mut b = a.clone();
        for byte in &mut b[1 << 20..(1 << 20) + 64] {
            *byte ^= 0x5A;
        }
        let outs = race(vec![
            push_cmd(&repo, &source(&src, &format!("{round}a"), &seg, &a), ma),
            push_cmd(&repo, &source(&src, &format!("{round}b"), &seg, &b), mb),
        ]);
        let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
        assert!(
            won.len() <= 1,
            "{seg} ({ma} vs {mb}): both pushes of different bytes succeeded; archive holds \
             {:?}",
            objects_of(&repo, &seg)
        );
        for (i, out) in outs.iter().enumerate() {
            if !won.contains(&i) {
                let err = stderr(out);
                assert_eq!(out.status.code(), Some(2), "{seg}: {err}");
                assert!(err.contains("DIFFERENT content"), "{seg}: {err}");
            }
        }
        let objects = objects_of(&repo, &seg);
        if let Some(&w) = won.first() {
            assert_eq!(objects.len(), 1, "{seg} ({ma} vs {mb}): {objects:?}");
            ok(get(&repo, &seg, &dest), "archive-get");
            let got = fs::read(&dest).unwrap();
            assert!(
                got == [&a, &b][w][..],
                "{seg} ({ma} vs {mb}): archive-get serves the failed push's bytes"
            );
            // The loser's retry (PostgreSQL keeps its file and tries again) still conflicts.
            let loser = 1 - w;
            let again = push_cmd(
                &repo,
                &source(&src, &format!("{round}r"), &seg, [&a, &b][loser]),
                [ma, mb][loser],
            )
            .output()
            .unwrap();
            assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
        }
    }
}
