//! Helpers of the WAL archive tests (archive_cli, archive_async_cli, the archive red team files,
//! backup_archive_cli): archive-push and archive-get command lines, the objects of a cluster's
//! archive, and a finished segment of a real server to push.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgsafe_testkit::{Cluster, repo_wal_objects};

use super::{command, path_str};

/// `pgsafe archive-push --repo REPO --cluster CLUSTER [extra…] FILE` (`FILE` is `%p`: a path,
/// relative to the command's folder or absolute).
pub fn push_cmd(repo: &Path, cluster: &str, file: impl AsRef<OsStr>, extra: &[&str]) -> Command {
    let mut cmd = command(&[
        "archive-push",
        "--repo",
        path_str(repo),
        "--cluster",
        cluster,
    ]);
    cmd.args(extra).arg(file);
    cmd
}

/// `pgsafe archive-get --repo REPO --cluster CLUSTER [extra…] FILE DEST` (`%f %p`).
pub fn get_cmd(repo: &Path, cluster: &str, file: &str, dest: &Path, extra: &[&str]) -> Command {
    let mut cmd = command(&[
        "archive-get",
        "--repo",
        path_str(repo),
        "--cluster",
        cluster,
    ]);
    cmd.args(extra).arg(file).arg(dest);
    cmd
}

/// Every file below the archive of `cluster` in `repo` (`<repo>/<cluster>/wal/`), temporary
/// files included, as full paths, sorted.
pub fn wal_objects(repo: &Path, cluster: &str) -> Vec<PathBuf> {
    let base = repo.join(cluster).join("wal");
    repo_wal_objects(repo, cluster)
        .into_iter()
        .map(|rel| base.join(rel))
        .collect()
}

/// Where the archive of `cluster` keeps a segment (`suffix`: `.zst`, `.lz4` or ``).
pub fn seg_object(repo: &Path, cluster: &str, seg: &str, suffix: &str) -> PathBuf {
    repo.join(cluster)
        .join("wal")
        .join(&seg[..8])
        .join(&seg[8..16])
        .join(format!("{seg}{suffix}"))
}

/// Writes some WAL, switches to a new segment, and returns the name of the one just finished
/// and its bytes (read from pg_wal at once, before a checkpoint could recycle it).
pub fn finish_segment(c: &Cluster) -> (String, Vec<u8>) {
    c.execute(
        "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let bytes = fs::read(c.data_dir().join("pg_wal").join(&seg)).unwrap();
    (seg, bytes)
}

/// A segment name `n` segments after `seg` (same timeline and log).
pub fn later(seg: &str, n: u32) -> String {
    let low = u32::from_str_radix(&seg[16..], 16).unwrap() + n;
    format!("{}{low:08X}", &seg[..16])
}
