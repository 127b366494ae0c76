//! The postmaster as a direct child of the test process: start (with retries and the tablespace
//! of the first start), stop in every shutdown mode, crash, signals, reaping.

use std::fs::{self, OpenOptions};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use postgres::NoTls;

use super::setup::{pick_port, server_env, tail, timeout};
use super::{Cluster, StopMode, TABLESPACE_NAME};
use crate::user::server_user;

impl Cluster {
    /// True while the postmaster runs (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Starts the server and waits until it accepts connections (after any crash recovery).
    /// Retries when a previous incarnation's processes still hold its shared memory (after a
    /// crash, orphaned backends take a moment to exit). On the first start with
    /// [`ClusterOptions::with_tablespace`], creates tablespace `ts1`.
    pub fn start(&mut self) {
        if self.is_running() {
            panic!(
                "the PostgreSQL {} server in {} is already running",
                self.major(),
                self.data_dir.display()
            );
        }
        let deadline = Instant::now() + timeout();
        loop {
            let offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
            self.spawn();
            match self.wait_ready(deadline) {
                Ok(()) => break,
                Err(status) => {
                    let log = self.log_since(offset);
                    let retriable = [
                        "pre-existing shared memory block",
                        "already exists",
                        "Address already in use",
                        "could not create lock file",
                    ]
                    .iter()
                    .any(|s| log.contains(s));
                    if retriable && Instant::now() < deadline {
                        if log.contains("Address already in use")
                            || log.contains("could not create lock file")
                        {
                            self.port = pick_port();
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    panic!(
                        "PostgreSQL {} in {} did not start ({status}); server log:\n{}",
                        self.major(),
                        self.data_dir.display(),
                        tail(&log, 60)
                    );
                }
            }
        }
        if self.tablespace_pending {
            self.create_tablespace();
        }
    }

    /// Starts the server once (no retries) and waits until it accepts connections or exits:
    /// `Err` with the exit status and the server log of this start, for tests of a server that
    /// must refuse to start or stop during recovery.
    pub fn try_start(&mut self) -> Result<(), String> {
        if self.is_running() {
            return Err("already running".into());
        }
        let offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        self.spawn();
        self.wait_ready(Instant::now() + timeout())
            .map_err(|status| format!("{status}\n{}", self.log_since(offset)))
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of the log file: {e}"));
        let bin = self.install.server_bin_dir().join("postgres");
        let mut cmd = Command::new(&bin);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-c")
            .arg(format!("port={}", self.port))
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket.path().display()
            ))
            .arg("-c")
            .arg(format!(
                "listen_addresses={}",
                self.opts.listen_addresses.as_deref().unwrap_or("")
            ));
        for a in &self.extra_args {
            cmd.arg("-c").arg(a);
        }
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(self.base.path());
        server_env(&mut cmd);
        server_user().apply(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// Polls until a connection succeeds; `Err` with the exit status if the postmaster exits.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let mut config = self.pg_config();
        config.connect_timeout(Duration::from_secs(5));
        // Every failed attempt costs the server a fork: back off from 5 ms to 100 ms.
        let mut pause = Duration::from_millis(5);
        loop {
            let child = self.child.as_mut().expect("spawned");
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(format!("postmaster exited: {status}"));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for the postmaster: {e}")),
            }
            if config.connect(NoTls).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill_and_reap();
                return Err(format!("not accepting connections after {:?}", timeout()));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn create_tablespace(&mut self) {
        let dir = self.tablespace_dir.clone().expect("tablespace folder");
        let exists: i64 = self.query_one(&format!(
            "SELECT count(*) FROM pg_tablespace WHERE spcname = '{TABLESPACE_NAME}'"
        ));
        if exists == 0 {
            let loc = dir
                .to_str()
                .expect("UTF-8 tablespace path")
                .replace('\'', "''");
            self.execute(&format!(
                "CREATE TABLESPACE {TABLESPACE_NAME} LOCATION '{loc}'"
            ));
        }
        self.tablespace_pending = false;
    }

    /// Fast shutdown (SIGINT): waits until the server exited; panics if it fails.
    pub fn stop(&mut self) {
        let status = self.stop_with(StopMode::Fast);
        if !status.success() {
            panic!(
                "PostgreSQL {} did not shut down cleanly ({status}); server log:\n{}",
                self.major(),
                self.server_log_tail(40)
            );
        }
    }

    /// Immediate shutdown (SIGQUIT): no checkpoint; the next start runs crash recovery.
    pub fn immediate_stop(&mut self) {
        self.stop_with(StopMode::Immediate);
    }

    /// SIGKILL of the postmaster, then reaps it: a crash. Its orphaned children exit by
    /// themselves; [`Cluster::start`] waits for them if needed.
    pub fn crash(&mut self) {
        self.stop_with(StopMode::Kill);
    }

    /// Stops (fast) and starts again.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Reloads the configuration (SIGHUP).
    pub fn reload(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// Stops the server as `mode` says and reaps the postmaster; returns its exit status.
    /// Panics if it was not running or does not exit within the timeout (it is killed then).
    pub fn stop_with(&mut self, mode: StopMode) -> ExitStatus {
        if !self.is_running() {
            panic!(
                "PostgreSQL {} in {} is not running; server log:\n{}",
                self.major(),
                self.data_dir.display(),
                self.server_log_tail(30)
            );
        }
        let signal = match mode {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
            StopMode::Kill => Signal::SIGKILL,
        };
        self.signal(signal);
        match self.wait_exit(timeout()) {
            Some(status) => status,
            None => {
                self.kill_and_reap();
                panic!(
                    "PostgreSQL {} did not stop within {:?} after {signal}; killed it. Server log:\n{}",
                    self.major(),
                    timeout(),
                    self.server_log_tail(40)
                );
            }
        }
    }

    pub(super) fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            match kill(Pid::from_raw(child.id() as i32), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => panic!("kill -{signal} {}: {e}", child.id()),
            }
        }
    }

    pub(super) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => return None,
                Err(e) => panic!("waiting for the postmaster: {e}"),
            }
        }
    }

    pub(super) fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
