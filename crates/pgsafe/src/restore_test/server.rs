//! The restored server of a restore test: started with settings that keep it away from
//! everything but its scratch folder, waited for until recovery has ended, connected to over
//! its private socket, and stopped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};
use postgres::{Client, NoTls};

use super::reasons::RoleRefused;

/// The port in the socket file's name (`.s.PGSQL.<port>`). The socket folder is private and
/// there is no TCP listener, so it cannot collide with another server's.
pub const PORT: u16 = 5432;

/// Who the server runs as.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The current user (no change of user).
    pub is_current: bool,
}

/// Where everything of one restore test lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub scratch: PathBuf,
    pub data: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub hba: PathBuf,
    pub ident: PathBuf,
}

impl Layout {
    pub fn new(scratch: &Path) -> Layout {
        Layout {
            scratch: scratch.to_owned(),
            data: scratch.join("data"),
            socket: scratch.join("socket"),
            log: scratch.join("server.log"),
            hba: scratch.join("pg_hba.conf"),
            ident: scratch.join("pg_ident.conf"),
        }
    }

    /// The settings the server is started with, on its command line: they win over every
    /// configuration file (`src/backend/utils/misc/guc.c`: command-line options take
    /// precedence over the files), so nothing the backup's `postgresql.conf`, its includes or
    /// `postgresql.auto.conf` say can make the copy listen on TCP, use the backed-up server's
    /// socket folder, data directory, authentication files or PID file, archive, log outside
    /// the scratch folder, or wait for a synchronous standby that is not there.
    pub fn settings(&self, major: u32) -> Vec<(&'static str, String)> {
        let p = |p: &Path| p.display().to_string();
        let mut v = vec![
            ("data_directory", p(&self.data)),
            ("hba_file", p(&self.hba)),
            ("ident_file", p(&self.ident)),
            ("listen_addresses", String::new()),
            ("port", PORT.to_string()),
            ("unix_socket_directories", p(&self.socket)),
            // An empty value is not "none" (the postmaster tries to write a file named ""):
            // a file in the scratch folder.
            (
                "external_pid_file",
                p(&self.scratch.join("postmaster.external.pid")),
            ),
            ("archive_mode", "off".into()),
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            ("synchronous_standby_names", String::new()),
            // No TCP, so no TLS: certificate files of the backed-up server need not exist here.
            ("ssl", "off".into()),
        ];
        if major < 15 {
            // A location outside the data directory would be the backed-up server's folder.
            v.push(("stats_temp_directory", "pg_stat_tmp".into()));
        }
        v
    }
}

/// Single-quotes a shell word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command that starts the server as the restore test did (printed for `keep`).
pub fn start_command(bin_dir: &Path, layout: &Layout, major: u32, run_as: &RunAs) -> String {
    let mut s = String::new();
    if !run_as.is_current {
        s.push_str(&format!("runuser -u {} -- ", shell_quote(&run_as.name)));
    }
    s.push_str(&shell_quote(
        &bin_dir.join("postgres").display().to_string(),
    ));
    s.push_str(" -D ");
    s.push_str(&shell_quote(&layout.data.display().to_string()));
    for (k, v) in layout.settings(major) {
        s.push_str(" -c ");
        s.push_str(&shell_quote(&format!("{k}={v}")));
    }
    s
}

/// A started postmaster.
pub struct Server {
    child: Option<Child>,
    pub started: Instant,
    socket: PathBuf,
    log: PathBuf,
}

/// How a wait for the server ended.
pub enum Ready {
    /// Recovery has ended; connected as `user` to `template1`.
    Open { client: Box<Client>, user: String },
    /// The postmaster exited.
    Exited(ExitStatus),
    /// Still not open when the time was up.
    TimedOut,
    /// No candidate role could log in (each with its error).
    NoRole(Vec<RoleRefused>),
    /// The operator cancelled.
    Cancelled,
}

impl Server {
    /// Spawns `postgres` as `run_as`, its output appended to the layout's log file.
    pub fn spawn(
        bin_dir: &Path,
        layout: &Layout,
        major: u32,
        run_as: &RunAs,
    ) -> std::io::Result<Server> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&layout.log)?;
        let log2 = log.try_clone()?;
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.arg("-D").arg(&layout.data);
        for (k, v) in layout.settings(major) {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        // The caller's connection variables are not the copy's (and PGDATA must not compete
        // with -D); the server needs none.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&layout.scratch)
            // Its own process group: a Ctrl-C at the terminal reaches pgsafe, which stops the
            // server itself, instead of a server shut down behind its back looking like one
            // that did not start.
            .process_group(0);
        if !run_as.is_current {
            // std drops the supplementary groups (setgroups) before setuid when run as root.
            cmd.uid(run_as.uid).gid(run_as.gid);
        }
        let child = cmd.spawn()?;
        Ok(Server {
            child: Some(child),
            started: Instant::now(),
            socket: layout.socket.clone(),
            log: layout.log.clone(),
        })
    }

    /// A connection configuration for `user` to `dbname` over the private socket, with the
    /// session settings the checks need whatever the backup configured (no statement or lock
    /// timeout, not read-only).
    pub fn config(&self, user: &str, dbname: &str) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host_path(&self.socket)
            .port(PORT)
            .user(user)
            .dbname(dbname)
            .application_name("pgsafe restore test")
            .options(
                "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0 \
                 -c default_transaction_read_only=off",
            )
            .connect_timeout(Duration::from_secs(10));
        c
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(s)) => {
                self.child = None;
                Some(s)
            }
            _ => None,
        }
    }

    /// Waits until the server accepts connections and has left recovery (consistency reached,
    /// the backup's WAL replayed, promoted), or exits, or `limit` passes. `roles` are tried in
    /// order; the first that can log in is used.
    pub fn wait_open(
        &mut self,
        roles: &[String],
        limit: Duration,
        cancel: Option<&AtomicBool>,
    ) -> Ready {
        let deadline = self.started + limit;
        let mut pause = Duration::from_millis(10);
        let mut client: Option<(Client, String)> = None;
        loop {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Ready::Cancelled;
            }
            if let Some(s) = self.exited() {
                return Ready::Exited(s);
            }
            if client.is_none() {
                let mut role_errors = Vec::new();
                for r in roles {
                    match self.config(r, "template1").connect(NoTls) {
                        Ok(c) => {
                            client = Some((c, r.clone()));
                            break;
                        }
                        Err(e) => {
                            let code = e.code().map(|c| c.code().to_owned());
                            // 28000 invalid_authorization_specification: no such role (or it
                            // may not log in); any other error: not open yet.
                            if code.as_deref() == Some("28000") {
                                role_errors.push(RoleRefused {
                                    role: r.clone(),
                                    source: e.into(),
                                });
                            } else {
                                break;
                            }
                        }
                    }
                }
                if client.is_none() && !role_errors.is_empty() && role_errors.len() == roles.len() {
                    return Ready::NoRole(role_errors);
                }
            }
            if let Some((c, _)) = client.as_mut() {
                match c.query_one("SELECT pg_is_in_recovery()", &[]) {
                    Ok(row) => {
                        if let Ok(false) = row.try_get::<_, bool>(0) {
                            let (client, user) = client.take().expect("connected");
                            return Ready::Open {
                                client: Box::new(client),
                                user,
                            };
                        }
                    }
                    // Terminated (e.g. by the end of recovery on old majors): connect again.
                    Err(_) => client = None,
                }
            }
            if Instant::now() >= deadline {
                return Ready::TimedOut;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Stops the server: fast shutdown (SIGINT), then immediate (SIGQUIT) after `grace`, then
    /// SIGKILL. Returns the exit status and how it was stopped.
    pub fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, &'static str) {
        let Some(child) = self.child.as_mut() else {
            return (None, "already exited");
        };
        let Ok(raw) = i32::try_from(child.id()) else {
            return (None, "unknown process id");
        };
        let pid = Pid::from_raw(raw);
        for (sig, how) in [
            (Signal::SIGINT, "fast shutdown"),
            (Signal::SIGQUIT, "immediate shutdown"),
            (Signal::SIGKILL, "killed"),
        ] {
            let _ = kill(pid, sig);
            let until = Instant::now() + grace;
            loop {
                if let Ok(Some(s)) = child.try_wait() {
                    self.child = None;
                    return (Some(s), how);
                }
                if Instant::now() >= until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (None, "did not exit")
    }

    /// The last `lines` lines of the server's log (at most 16 KiB read).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Duration::from_secs(30));
        }
    }
}

/// The last `lines` lines of `path` (at most 16 KiB read; lossy UTF-8).
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 16 << 10;
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = f.take(MAX).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// True when running as root (who must not start PostgreSQL itself).
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_settings() {
        let l = Layout::new(Path::new("/tmp/x y"));
        let s = l.settings(14);
        let get = |k: &str| s.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("listen_addresses").as_deref(), Some(""));
        assert_eq!(get("archive_mode").as_deref(), Some("off"));
        assert_eq!(
            get("unix_socket_directories").as_deref(),
            Some("/tmp/x y/socket")
        );
        assert_eq!(get("data_directory").as_deref(), Some("/tmp/x y/data"));
        assert!(get("stats_temp_directory").is_some());
        assert!(
            l.settings(15)
                .iter()
                .all(|(k, _)| *k != "stats_temp_directory")
        );
        let run_as = RunAs {
            name: "pg user".into(),
            uid: 1,
            gid: 1,
            is_current: false,
        };
        let cmd = start_command(Path::new("/usr/lib/postgresql/14/bin"), &l, 14, &run_as);
        assert!(
            cmd.starts_with(
                "runuser -u 'pg user' -- /usr/lib/postgresql/14/bin/postgres -D '/tmp/x y/data'"
            ),
            "{cmd}"
        );
        assert!(cmd.contains(" -c listen_addresses= "), "{cmd}");
    }

    #[test]
    fn log_tails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&p, 2), "b\nc");
        assert_eq!(log_tail(&p, 10), "a\nb\nc");
        assert_eq!(log_tail(&d.path().join("none"), 3), "");
    }
}
