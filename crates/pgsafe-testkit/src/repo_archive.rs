//! A server archiving into a pgsafe repository: `archive_command` set to `pgsafe archive-push`
//! with `ALTER SYSTEM` (so a standby copied from the server, and a restored backup of it, carry
//! it in `postgresql.auto.conf`, as in production), and what the repository's archive holds.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::loopfs::shell_quote;

/// `<pgsafe> archive-push --repo <repo> --cluster <cluster> %p`, paths shell-quoted and `%`
/// doubled (PostgreSQL expands `%%`).
pub fn push_command(pgsafe: &Path, repo: &Path, cluster: &str) -> String {
    format!(
        "{} archive-push --repo {} --cluster {cluster} %p",
        shell_quote(pgsafe).replace('%', "%%"),
        shell_quote(repo).replace('%', "%%")
    )
}

/// Sets `archive_command` of `c` (started with `archive_mode = on`) to [`push_command`] with
/// `ALTER SYSTEM`, reloads, and waits until new sessions see it.
pub fn archive_into_repo(c: &Cluster, pgsafe: &Path, repo: &Path, cluster: &str) {
    set_archive_command(c, &push_command(pgsafe, repo, cluster));
}

/// Sets `archive_command` of `c` (started with `archive_mode = on`) to `cmd` with `ALTER
/// SYSTEM`, reloads, and waits until new sessions see it.
pub fn set_archive_command(c: &Cluster, cmd: &str) {
    c.execute(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        cmd.replace('\'', "''")
    ));
    c.execute("SELECT pg_reload_conf()");
    let t = Instant::now();
    while c.show("archive_command") != cmd {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "PostgreSQL {}: the new archive_command was not loaded",
            c.major()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The objects below `<repo>/<cluster>/wal/` (paths relative to it, sorted).
pub fn repo_wal_objects(repo: &Path, cluster: &str) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p: PathBuf = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, base, out);
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let base = repo.join(cluster).join("wal");
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}
