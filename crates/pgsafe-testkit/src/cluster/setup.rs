//! What a cluster is made of: private data and socket folders owned by the server user, ports,
//! the initdb template cache, configuration lines and their quoting, clean-up of stale clusters.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::{BASE_SETTINGS, TEMPLATE_FORMAT};
use crate::SUPERUSER;
use crate::fsx;
use crate::install::PgInstall;
use crate::user::{ServerUser, server_user};

pub(super) fn timeout() -> Duration {
    static T: OnceLock<Duration> = OnceLock::new();
    *T.get_or_init(|| {
        let secs = std::env::var("PGSAFE_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok());
        Duration::from_secs(secs.unwrap_or(120))
    })
}

/// A fresh port per cluster: sequential within a process from a per-process random base, so
/// log lines and socket names are unique-ish across concurrent test processes. (Ports only name
/// the socket file in a private folder, so a clash would not even be a conflict.)
pub(super) fn pick_port() -> u16 {
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7919) ^ nanos) % 20000
    });
    (20000 + (base + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % 40000) as u16
}

/// The cluster temp folder (in [`fsx::scratch_root`], holds data etc.) and a short socket folder in /tmp (Unix
/// socket paths are limited to 107 bytes), both owned by the server user and tagged with this
/// process's ID so a later test run can clean up after a killed one.
pub(super) fn make_private_dirs(user: &ServerUser) -> (TempDir, TempDir) {
    let root = fsx::scratch_root();
    let base = tempfile::Builder::new()
        .prefix(CLUSTER_PREFIX)
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("creating a temp dir in {}: {e}", root.display()));
    let socket = tempfile::Builder::new()
        .prefix(SOCKET_PREFIX)
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("creating a socket dir in /tmp: {e}"));
    for d in [base.path(), socket.path()] {
        fs::write(d.join(OWNER_FILE), format!("{}\n", std::process::id()))
            .unwrap_or_else(|e| panic!("writing {}: {e}", d.display()));
        user.chown(d);
    }
    (base, socket)
}

pub(super) const CLUSTER_PREFIX: &str = "pgsafe-cluster-";
pub(super) const SOCKET_PREFIX: &str = "pgs-";
pub(super) const OWNER_FILE: &str = "pgsafe-testkit.owner";

/// Once per process: kill servers and remove folders left behind by test processes that died
/// without cleaning up (killed by a timeout, say). Only folders carrying an owner file whose
/// process is gone are touched, and only a postmaster whose command line names that folder is
/// killed.
pub(super) fn cleanup_stale_clusters() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let mut candidates = Vec::new();
        let roots = [
            (fsx::scratch_root().to_path_buf(), CLUSTER_PREFIX),
            (std::env::temp_dir(), CLUSTER_PREFIX),
            (PathBuf::from("/tmp"), SOCKET_PREFIX),
        ];
        for (dir, prefix) in roots {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    candidates.push(e.path());
                }
            }
        }
        for dir in candidates {
            let Ok(owner) = fs::read_to_string(dir.join(OWNER_FILE)) else {
                continue;
            };
            let Ok(pid) = owner.trim().parse::<i32>() else {
                continue;
            };
            if pid <= 1 || kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) {
                continue; // owner alive (or not ours to judge)
            }
            if let Some(pm) = fs::read_to_string(dir.join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            {
                let cmdline = fs::read(format!("/proc/{pm}/cmdline")).unwrap_or_default();
                let needle = dir.join("data");
                if pm > 1 && String::from_utf8_lossy(&cmdline).contains(&*needle.to_string_lossy())
                {
                    let _ = kill(Pid::from_raw(pm), Signal::SIGKILL);
                }
            }
            let _ = fs::remove_dir_all(&dir);
        }
    });
}

/// Creates an (empty) folder owned by the server user.
pub(super) fn make_server_dir(dir: &Path, user: &ServerUser) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    user.chown(dir);
}

/// Writes a file (mode 0600) the server must own.
pub(super) fn write_server_file(path: &Path, bytes: &[u8], user: &ServerUser) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    user.chown(path);
}

/// Appends a commented block of settings to `<data>/postgresql.conf`.
pub(super) fn append_conf(data_dir: &Path, title: &str, lines: &[impl AsRef<str>]) {
    if lines.is_empty() {
        return;
    }
    let path = data_dir.join("postgresql.conf");
    let mut text = format!("\n# {title}\n");
    for l in lines {
        text.push_str(l.as_ref());
        text.push('\n');
    }
    let mut f = OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A postgresql.conf string literal.
pub(super) fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A libpq conninfo value, quoted when needed.
pub(super) fn conn_quote(s: &str) -> String {
    if !s.is_empty() && !s.contains([' ', '\'', '\\', '\t', '\n']) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `name = value` (a postgresql.conf line) as a `-c name=value` argument.
pub(super) fn conf_line_to_arg(line: &str) -> String {
    let (name, value) = line
        .split_once('=')
        .unwrap_or_else(|| panic!("conf line {line:?} is not `name = value`"));
    let value = value.trim();
    let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => value.to_owned(),
    };
    format!("{}={value}", name.trim())
}

/// Shell command that copies a finished WAL file into `dir`, refusing to overwrite.
pub(super) fn archive_command(dir: &Path) -> String {
    let d = dir.to_str().expect("UTF-8 archive path");
    assert!(!d.contains('\''), "archive path {d:?} contains a quote");
    format!("test ! -f '{d}/%f' && cp %p '{d}/%f'")
}

/// Environment for initdb/postgres: no PG* variables from the test's environment, C messages.
pub(super) fn server_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("LC_ALL", "C").env("TZ", "UTC");
}

/// Panics unless the server user can enter every folder above `path`.
pub(super) fn check_enterable(path: &Path, user: &ServerUser) {
    if user.is_current {
        return;
    }
    for dir in path.ancestors().skip(1) {
        let Ok(m) = dir.metadata() else { continue };
        let ok = m.mode() & 0o001 != 0
            || (m.uid() == user.uid.as_raw() && m.mode() & 0o100 != 0)
            || (m.gid() == user.gid.as_raw() && m.mode() & 0o010 != 0);
        if !ok {
            panic!(
                "the server user {} cannot enter {} (mode {:o}), which holds {}; put data for test \
                 servers below pgsafe_testkit::server_owned_tempdir()",
                user.name,
                dir.display(),
                m.mode() & 0o7777,
                path.display()
            );
        }
    }
}

/// The cached template data directory for (install, checksums, segment size): initdb once per
/// combination, shared by every test process of this user.
pub(super) fn template(install: &PgInstall, checksums: bool, segsize_mb: Option<u32>) -> PathBuf {
    let user = server_user();
    let tag = install
        .package_version
        .clone()
        .unwrap_or_else(|| install.version.to_string());
    let key = format!(
        "template-{}-{tag}-{}-{}-u{}-f{TEMPLATE_FORMAT}",
        install.major,
        if checksums { "k" } else { "nok" },
        segsize_mb
            .map(|m| format!("seg{m}"))
            .unwrap_or_else(|| "segdefault".into()),
        user.uid
    );
    let dest = fsx::shared_cache_dir().join(key);
    fsx::build_once(&dest, |tmp| {
        user.chown(tmp);
        let data = tmp.join("data");
        run_initdb(install, &data, checksums, segsize_mb);
        append_conf(&data, "pgsafe-testkit base settings", BASE_SETTINGS);
    });
    dest.join("data")
}

pub(super) fn run_initdb(
    install: &PgInstall,
    data_dir: &Path,
    checksums: bool,
    segsize_mb: Option<u32>,
) {
    let user = server_user();
    let parent = data_dir.parent().expect("data dir has a parent");
    let bin = install.server_bin_dir().join("initdb");
    let mut cmd = Command::new(&bin);
    cmd.arg("-D").arg(data_dir);
    cmd.args([
        "-U",
        SUPERUSER,
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    if checksums {
        cmd.arg("--data-checksums");
    } else if install.major >= 18 {
        cmd.arg("--no-data-checksums"); // 18 turned them on by default
    }
    if let Some(mb) = segsize_mb {
        cmd.arg(format!("--wal-segsize={mb}"));
    }
    cmd.current_dir(parent).stdin(Stdio::null());
    server_env(&mut cmd);
    user.apply(&mut cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    if !out.status.success() {
        panic!(
            "initdb of PostgreSQL {} into {} failed ({}):\n{}\n{}",
            install.major,
            data_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
