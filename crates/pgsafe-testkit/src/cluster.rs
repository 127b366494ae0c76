//! One PostgreSQL server for a test: a data directory in a temp folder, a private Unix socket
//! folder, a port, and a postmaster that is a direct child of the test process.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgsafe::Lsn;
use postgres::types::FromSqlOwned;
use postgres::{Client, NoTls};
use tempfile::TempDir;

use crate::SUPERUSER;
use crate::fsx::{self, Entry};
use crate::install::PgInstall;
use crate::user::{ServerUser, server_user};

/// Bump when the template's initdb options or base settings change (invalidates cached templates).
const TEMPLATE_FORMAT: u32 = 1;
/// Name of the tablespace [`ClusterOptions::with_tablespace`] creates.
pub const TABLESPACE_NAME: &str = "ts1";
/// Folder name of that tablespace's location (inside the cluster's temp folder, outside PGDATA);
/// it contains spaces on purpose.
const TABLESPACE_DIR_NAME: &str = "tablespace dir with spaces";

/// Settings every harness server gets (written into the template's postgresql.conf).
const BASE_SETTINGS: &[&str] = &[
    "listen_addresses = ''",
    "max_connections = 30",
    "shared_buffers = 32MB",
    "wal_level = replica",
    "max_wal_senders = 10",
    "max_replication_slots = 10",
    "hot_standby = on",
    "logging_collector = off",
    "log_line_prefix = '%m [%p] '",
    "lc_messages = 'C'",
    "dynamic_shared_memory_type = posix",
];

/// How to stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM: wait for clients to disconnect.
    Smart,
    /// SIGINT: abort transactions, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit without a checkpoint; the next start runs crash recovery.
    Immediate,
    /// SIGKILL of the postmaster only (its children notice and exit): a crash.
    Kill,
}

/// How to make a [`Cluster`]. Defaults: data checksums on, 16 MB WAL segments, fsync on, no
/// tablespace, no archiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    pub data_checksums: bool,
    /// WAL segment size in MB (`initdb --wal-segsize`, PostgreSQL 11+; a power of two 1..=1024).
    pub wal_segsize_mb: Option<u32>,
    /// Lines appended to postgresql.conf, e.g. `"max_wal_size = 32MB"`.
    pub extra_conf: Vec<String>,
    /// Create tablespace `ts1` in a folder outside PGDATA whose name contains spaces.
    pub tablespace: bool,
    /// `archive_mode = on` with an `archive_command` copying into [`Cluster::archive_dir`].
    pub archive: bool,
    /// `fsync` (on by default: crash tests need it; see [`ClusterOptions::fast_unsafe`]).
    pub fsync: bool,
    /// Run initdb for this cluster instead of copying a cached template: slower, but gives the
    /// cluster its own system identifier (clusters from one template share theirs).
    pub fresh_initdb: bool,
    /// TCP addresses to listen on besides the private socket (`listen_addresses`); none by
    /// default. For tests of TCP-only behaviour such as TLS (PostgreSQL never uses TLS on a
    /// Unix socket).
    pub listen_addresses: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            data_checksums: true,
            wal_segsize_mb: None,
            extra_conf: Vec::new(),
            tablespace: false,
            archive: false,
            fsync: true,
            fresh_initdb: false,
            listen_addresses: None,
        }
    }
}

impl ClusterOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn checksums(mut self, on: bool) -> Self {
        self.data_checksums = on;
        self
    }

    /// WAL segment size in MB; PostgreSQL 10 fixes it at compile time, so [`Cluster::new`]
    /// panics when this is set for 10.
    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        assert!(
            mb.is_power_of_two() && (1..=1024).contains(&mb),
            "WAL segment size must be a power of two from 1 to 1024 MB, not {mb}"
        );
        self.wal_segsize_mb = Some(mb);
        self
    }

    /// Appends one line to postgresql.conf.
    pub fn conf(mut self, line: impl Into<String>) -> Self {
        self.extra_conf.push(line.into());
        self
    }

    pub fn with_tablespace(mut self, on: bool) -> Self {
        self.tablespace = on;
        self
    }

    pub fn with_archive(mut self, on: bool) -> Self {
        self.archive = on;
        self
    }

    /// `fsync = off`: faster, for tests that never crash a server or restore its files.
    pub fn fast_unsafe(mut self) -> Self {
        self.fsync = false;
        self
    }

    pub fn fresh_initdb(mut self, on: bool) -> Self {
        self.fresh_initdb = on;
        self
    }

    /// Listen on these TCP addresses too (e.g. `"127.0.0.1"`), on [`Cluster::port`].
    pub fn listen_addresses(mut self, addrs: impl Into<String>) -> Self {
        self.listen_addresses = Some(addrs.into());
        self
    }
}

/// Where a standby streams from, to drop its replication slot when it goes away.
#[derive(Debug)]
struct StandbyOf {
    primary_conninfo: String,
    slot: String,
}

/// One PostgreSQL server. Dropping it kills the server (if running) and removes its temp folders.
#[derive(Debug)]
pub struct Cluster {
    install: PgInstall,
    opts: ClusterOptions,
    // Field order matters for Drop: the process goes first (Drop::drop), then the folders.
    child: Option<Child>,
    base: TempDir,
    socket: TempDir,
    data_dir: PathBuf,
    port: u16,
    log_path: PathBuf,
    tablespace_dir: Option<PathBuf>,
    tablespace_pending: bool,
    archive_dir: Option<PathBuf>,
    /// Settings passed on the postgres command line besides port and socket folder.
    extra_args: Vec<String>,
    standby_of: Option<StandbyOf>,
}

impl Cluster {
    /// A new, stopped cluster of `install` (copied from a cached initdb template).
    pub fn new(install: &PgInstall, opts: ClusterOptions) -> Cluster {
        if opts.wal_segsize_mb.is_some() && install.major < 11 {
            panic!(
                "PostgreSQL {} cannot change the WAL segment size at initdb time (it is fixed when \
                 the server is compiled; --wal-segsize exists from 11 on)",
                install.major
            );
        }
        let user = server_user();
        cleanup_stale_clusters();
        let (base, socket) = make_private_dirs(user);
        let data_dir = base.path().join("data");
        if opts.fresh_initdb {
            run_initdb(install, &data_dir, opts.data_checksums, opts.wal_segsize_mb);
            append_conf(&data_dir, "pgsafe-testkit base settings", BASE_SETTINGS);
        } else {
            let template = template(install, opts.data_checksums, opts.wal_segsize_mb);
            fsx::copy_tree(&template, &data_dir, Some(user)).unwrap_or_else(|e| {
                panic!(
                    "copying template {} to {}: {e}",
                    template.display(),
                    data_dir.display()
                )
            });
        }
        let mut settings: Vec<String> = Vec::new();
        if !opts.fsync {
            settings.push("fsync = off".into());
        }
        let archive_dir = opts.archive.then(|| {
            let dir = base.path().join("archive");
            make_server_dir(&dir, user);
            settings.push("archive_mode = on".into());
            settings.push(format!(
                "archive_command = {}",
                conf_quote(&archive_command(&dir))
            ));
            dir
        });
        let tablespace_dir = opts.tablespace.then(|| {
            let dir = base.path().join(TABLESPACE_DIR_NAME);
            make_server_dir(&dir, user);
            dir
        });
        settings.extend(opts.extra_conf.iter().cloned());
        append_conf(&data_dir, "pgsafe-testkit cluster settings", &settings);
        Cluster {
            install: install.clone(),
            tablespace_pending: opts.tablespace,
            opts,
            child: None,
            log_path: base.path().join("server.log"),
            base,
            socket,
            data_dir,
            port: pick_port(),
            tablespace_dir,
            archive_dir,
            extra_args: Vec::new(),
            standby_of: None,
        }
    }

    /// [`Cluster::new`] and [`Cluster::start`].
    pub fn started(install: &PgInstall, opts: ClusterOptions) -> Cluster {
        let mut c = Cluster::new(install, opts);
        c.start();
        c
    }

    /// Takes charge of an existing data directory (e.g. a restored backup): gives it and its
    /// tablespaces to the server user and runs it with a private socket folder and port, without
    /// editing its configuration files (port, socket folder and `archive_mode = off` go on the
    /// command line; with `opts.archive`, archiving into a fresh [`Cluster::archive_dir`] instead;
    /// `opts.extra_conf` lines are passed as `-c` settings). The folder is not removed on drop.
    /// Its parent folders must be enterable by the server user: see
    /// [`crate::server_owned_tempdir`]. `opts` initdb and tablespace settings are ignored.
    pub fn adopt(
        install: &PgInstall,
        data_dir: impl Into<PathBuf>,
        opts: ClusterOptions,
    ) -> Cluster {
        let data_dir: PathBuf = data_dir.into();
        let user = server_user();
        cleanup_stale_clusters();
        assert!(
            data_dir.join("PG_VERSION").is_file(),
            "{} is not a data directory (no PG_VERSION)",
            data_dir.display()
        );
        check_enterable(&data_dir, user);
        fsx::chown_tree(&data_dir, user)
            .unwrap_or_else(|e| panic!("chown {} to {}: {e}", data_dir.display(), user.name));
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod 0700 {}: {e}", data_dir.display()));
        // Tablespaces: symlinks in pg_tblspc, or a tablespace_map the server turns into links.
        let mut targets: Vec<PathBuf> = Vec::new();
        if let Ok(rd) = fs::read_dir(data_dir.join("pg_tblspc")) {
            for link in rd.flatten() {
                if let Ok(target) = fs::read_link(link.path()) {
                    targets.push(data_dir.join("pg_tblspc").join(target));
                }
            }
        }
        if let Ok(map) = fs::read_to_string(data_dir.join("tablespace_map")) {
            for line in map.lines() {
                if let Some((_oid, path)) = line.split_once(' ') {
                    targets.push(PathBuf::from(path));
                }
            }
        }
        let mut tablespace_dir = None;
        for target in targets {
            if target.is_dir() {
                check_enterable(&target, user);
                fsx::chown_tree(&target, user)
                    .unwrap_or_else(|e| panic!("chown {}: {e}", target.display()));
                tablespace_dir.get_or_insert(target);
            }
        }
        let (base, socket) = make_private_dirs(user);
        let mut extra_args = Vec::new();
        let archive_dir = if opts.archive {
            let dir = base.path().join("archive");
            make_server_dir(&dir, user);
            extra_args.push("archive_mode=on".to_owned());
            extra_args.push(format!("archive_command={}", archive_command(&dir)));
            Some(dir)
        } else {
            extra_args.push("archive_mode=off".to_owned());
            None
        };
        if !opts.fsync {
            extra_args.push("fsync=off".to_owned());
        }
        for line in &opts.extra_conf {
            extra_args.push(conf_line_to_arg(line));
        }
        Cluster {
            install: install.clone(),
            opts,
            child: None,
            log_path: base.path().join("server.log"),
            base,
            socket,
            data_dir,
            port: pick_port(),
            tablespace_dir,
            tablespace_pending: false,
            archive_dir,
            extra_args,
            standby_of: None,
        }
    }

    /// Runs an adopted directory with the archive settings of its own configuration files
    /// instead of `archive_mode=off` on the command line (a command-line setting would hide
    /// what the directory's `postgresql.auto.conf` says): for tests of what a restored copy
    /// archives.
    pub fn keep_own_archive_settings(&mut self) {
        self.extra_args.retain(|a| a != "archive_mode=off");
    }

    /// A running streaming standby of `primary` (which must be running), made without
    /// pg_basebackup (whose version would have to match the primary's): a non-exclusive
    /// low-level backup (`pg_backup_start`/`pg_start_backup(..., false)`) in one session, a copy
    /// of PGDATA and tablespaces, `backup_label` from the stop call, and `primary_conninfo` plus a
    /// physical replication slot (`standby.signal` on 12+, `recovery.conf` on 10–11). Returns
    /// once the standby accepts read-only connections.
    pub fn new_standby(primary: &Cluster) -> Cluster {
        let user = server_user();
        let install = primary.install.clone();
        let major = install.major;
        let (base, socket) = make_private_dirs(user);
        let data_dir = base.path().join("data");
        static SLOT_N: AtomicU32 = AtomicU32::new(0);
        let port = pick_port();
        let slot = format!(
            "pgsafe_standby_{}_{}_{}",
            std::process::id(),
            port,
            SLOT_N.fetch_add(1, Ordering::Relaxed)
        );

        let mut session = primary.connect();
        primary.ok(
            session.execute(
                "SELECT pg_create_physical_replication_slot($1, true)",
                &[&slot],
            ),
            "creating the standby's replication slot",
        );
        let start_sql = if major >= 15 {
            "SELECT pg_backup_start('pgsafe-testkit standby', true)::text"
        } else {
            "SELECT pg_start_backup('pgsafe-testkit standby', true, false)::text"
        };
        primary.ok(
            session.query_one(start_sql, &[]),
            "starting the standby's base backup",
        );

        fsx::copy_tree_filtered(
            &primary.data_dir,
            &data_dir,
            Some(user),
            &standby_copy_filter,
        )
        .unwrap_or_else(|e| panic!("copying {} for a standby: {e}", primary.data_dir.display()));
        let mut tablespace_dir = None;
        let links = fs::read_dir(data_dir.join("pg_tblspc"))
            .unwrap_or_else(|e| panic!("reading the standby's pg_tblspc: {e}"));
        for link in links.flatten() {
            let link_path = link.path();
            let Ok(target) = fs::read_link(&link_path) else {
                continue;
            };
            let source = primary.data_dir.join("pg_tblspc").join(&target);
            let oid = link.file_name().to_string_lossy().into_owned();
            let copy = base.path().join(format!("{TABLESPACE_DIR_NAME} {oid}"));
            fsx::copy_tree(&source, &copy, Some(user))
                .unwrap_or_else(|e| panic!("copying tablespace {}: {e}", source.display()));
            fs::remove_file(&link_path).unwrap_or_else(|e| panic!("{}: {e}", link_path.display()));
            std::os::unix::fs::symlink(&copy, &link_path)
                .unwrap_or_else(|e| panic!("{}: {e}", link_path.display()));
            user.chown(&link_path);
            tablespace_dir.get_or_insert(copy);
        }

        let stop_sql = if major >= 15 {
            "SELECT labelfile FROM pg_backup_stop(false)"
        } else {
            "SELECT labelfile FROM pg_stop_backup(false, false)"
        };
        let row = primary.ok(
            session.query_one(stop_sql, &[]),
            "stopping the standby's base backup",
        );
        let label: String = row.get(0);
        drop(session);
        write_server_file(&data_dir.join("backup_label"), label.as_bytes(), user);

        let primary_conninfo = format!(
            "{} application_name={}",
            primary.conninfo_without_db(),
            conn_quote(&slot)
        );
        let mut settings = vec![
            format!("primary_conninfo = {}", conf_quote(&primary_conninfo)),
            format!("primary_slot_name = {}", conf_quote(&slot)),
        ];
        let archive_dir = primary.archive_dir.as_ref().map(|_| {
            let dir = base.path().join("archive");
            make_server_dir(&dir, user);
            let line = format!("archive_command = {}", conf_quote(&archive_command(&dir)));
            append_conf(&data_dir, "pgsafe-testkit standby archive", &[line]);
            dir
        });
        if major >= 12 {
            append_conf(&data_dir, "pgsafe-testkit standby settings", &settings);
            write_server_file(&data_dir.join("standby.signal"), b"", user);
        } else {
            settings.push("standby_mode = 'on'".into());
            settings.push("recovery_target_timeline = 'latest'".into());
            let text = settings.join("\n") + "\n";
            write_server_file(&data_dir.join("recovery.conf"), text.as_bytes(), user);
        }

        let mut standby = Cluster {
            install,
            opts: ClusterOptions {
                tablespace: false,
                ..primary.opts.clone()
            },
            child: None,
            log_path: base.path().join("server.log"),
            base,
            socket,
            data_dir,
            port,
            tablespace_dir,
            tablespace_pending: false,
            archive_dir,
            extra_args: Vec::new(),
            standby_of: Some(StandbyOf {
                primary_conninfo: primary.conninfo(),
                slot,
            }),
        };
        standby.start();
        standby
    }

    // ---- accessors ----------------------------------------------------------------------------

    pub fn install(&self) -> &PgInstall {
        &self.install
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    pub fn major(&self) -> u32 {
        self.install.major
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        self.socket.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The tablespace location (a folder outside PGDATA, with spaces in its name), if any.
    pub fn tablespace_dir(&self) -> Option<&Path> {
        self.tablespace_dir.as_deref()
    }

    /// Where `archive_command` copies WAL to, with [`ClusterOptions::with_archive`].
    pub fn archive_dir(&self) -> Option<&Path> {
        self.archive_dir.as_deref()
    }

    /// This cluster's temp folder (holds `data/`, the log, tablespace and archive folders).
    pub fn base_dir(&self) -> &Path {
        self.base.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The replication slot on the primary that this standby streams through.
    pub fn standby_slot(&self) -> Option<&str> {
        self.standby_of.as_ref().map(|s| s.slot.as_str())
    }

    /// The postmaster's process ID while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// libpq key=value connection string: `host=<socket dir> port=<port> user=postgres
    /// dbname=postgres`.
    pub fn conninfo(&self) -> String {
        format!("{} dbname=postgres", self.conninfo_without_db())
    }

    fn conninfo_without_db(&self) -> String {
        format!(
            "host={} port={} user={SUPERUSER}",
            conn_quote(&self.socket.path().to_string_lossy()),
            self.port
        )
    }

    /// Connection settings for the `postgres` crate (database `postgres`).
    pub fn pg_config(&self) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host_path(self.socket.path())
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres")
            .application_name("pgsafe-testkit")
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// Writes `name` in the data directory (mode 0600, owned by the server user): server
    /// certificates and keys, a `pg_hba.conf` of the test's own. Takes effect at the next start
    /// or reload.
    pub fn write_data_file(&self, name: &str, bytes: &[u8]) {
        write_server_file(&self.data_dir.join(name), bytes, server_user());
    }

    /// The whole server log (stderr of the postmaster and its children, across restarts).
    pub fn server_log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn server_log_tail(&self, lines: usize) -> String {
        tail(&self.server_log(), lines)
    }

    // ---- process control ----------------------------------------------------------------------

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

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            match kill(Pid::from_raw(child.id() as i32), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => panic!("kill -{signal} {}: {e}", child.id()),
            }
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
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

    fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Promotes a standby (the `promote` signal file plus SIGUSR1, as `pg_ctl promote` does,
    /// which works on every major) and waits until it accepts writes.
    pub fn promote(&mut self) {
        write_server_file(&self.data_dir.join("promote"), b"", server_user());
        self.signal(Signal::SIGUSR1);
        self.wait_recovery_done();
        self.standby_of = None;
    }

    /// Waits until the server has left recovery: a promotion completed, or a restored backup
    /// finished archive recovery. (A restored server accepts read-only connections as soon as
    /// it is consistent, before recovery ends.)
    pub fn wait_recovery_done(&self) {
        let deadline = Instant::now() + timeout();
        let mut client = self.connect();
        while self
            .ok(
                client.query_one("SELECT pg_is_in_recovery()", &[]),
                "pg_is_in_recovery()",
            )
            .get(0)
        {
            if Instant::now() > deadline {
                panic!(
                    "PostgreSQL {} did not leave recovery in time; server log:\n{}",
                    self.major(),
                    self.server_log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until this standby has replayed everything `primary` has written so far.
    pub fn wait_for_replay(&self, primary: &Cluster) {
        let target = primary.current_wal_lsn();
        let deadline = Instant::now() + timeout();
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        let mut client = self.connect();
        while !self
            .ok(client.query_one(&sql, &[]), &sql)
            .get::<_, Option<bool>>(0)
            .unwrap_or(false)
        {
            if Instant::now() > deadline {
                panic!(
                    "standby did not replay up to {target} in time; standby log:\n{}\nprimary log:\n{}",
                    self.server_log_tail(30),
                    primary.server_log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // ---- SQL ----------------------------------------------------------------------------------

    /// A new connection as the superuser to database `postgres`.
    pub fn connect(&self) -> Client {
        self.try_connect().unwrap_or_else(|e| {
            panic!(
                "connecting to PostgreSQL {} ({}): {e}; server log:\n{}",
                self.major(),
                self.conninfo(),
                self.server_log_tail(30)
            )
        })
    }

    pub fn try_connect(&self) -> Result<Client, postgres::Error> {
        self.pg_config().connect(NoTls)
    }

    /// Runs one or more SQL statements (simple query protocol) on a new connection.
    pub fn execute(&self, sql: &str) {
        let mut c = self.connect();
        self.ok(c.batch_execute(sql), sql);
    }

    /// The first column of the single row `sql` returns.
    pub fn query_one<T: FromSqlOwned>(&self, sql: &str) -> T {
        let mut c = self.connect();
        let row = self.ok(c.query_one(sql, &[]), sql);
        self.ok(row.try_get(0), sql)
    }

    /// The first column of every row `sql` returns.
    pub fn query_column<T: FromSqlOwned>(&self, sql: &str) -> Vec<T> {
        let mut c = self.connect();
        let rows = self.ok(c.query(sql, &[]), sql);
        rows.iter().map(|r| self.ok(r.try_get(0), sql)).collect()
    }

    /// `SHOW <setting>`.
    pub fn show(&self, setting: &str) -> String {
        self.query_one(&format!("SHOW {setting}"))
    }

    /// `server_version_num` of the running server.
    pub fn server_version_num(&self) -> u32 {
        self.show("server_version_num")
            .parse()
            .expect("numeric server_version_num")
    }

    /// `pg_current_wal_lsn()` (on a primary).
    pub fn current_wal_lsn(&self) -> Lsn {
        let text: String = self.query_one("SELECT pg_current_wal_lsn()::text");
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Unwraps a database result, or panics with the statement and the server log tail.
    fn ok<T>(&self, r: Result<T, postgres::Error>, what: &str) -> T {
        r.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL {}: {what}: {e}; server log:\n{}",
                self.major(),
                self.server_log_tail(30)
            )
        })
    }

    fn log_since(&self, offset: u64) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.seek(SeekFrom::Start(offset));
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            s = String::from_utf8_lossy(&b).into_owned();
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(Signal::SIGQUIT);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                self.kill_and_reap();
            }
        }
        if let Some(s) = self.standby_of.take() {
            drop_slot(&s);
        }
        if std::env::var_os("PGSAFE_KEEP_CLUSTERS").is_some_and(|v| !v.is_empty() && v != "0") {
            self.base.disable_cleanup(true);
            self.socket.disable_cleanup(true);
            eprintln!(
                "pgsafe-testkit: kept PostgreSQL {} cluster in {} (PGSAFE_KEEP_CLUSTERS)",
                self.major(),
                self.base.path().display()
            );
        }
    }
}

/// Best effort: drop a gone standby's slot on its primary so it does not retain WAL forever.
fn drop_slot(s: &StandbyOf) {
    let Ok(mut config) = s.primary_conninfo.parse::<postgres::Config>() else {
        return;
    };
    config.connect_timeout(Duration::from_secs(2));
    let Ok(mut client) = config.connect(NoTls) else {
        return;
    };
    for _ in 0..50 {
        let r = client.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND NOT active",
            &[&s.slot],
        );
        let gone = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&s.slot],
            )
            .map(|r| r.get::<_, i64>(0) == 0);
        if r.is_err() || !matches!(gone, Ok(false)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- helpers ------------------------------------------------------------------------------------

fn timeout() -> Duration {
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
fn pick_port() -> u16 {
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
fn make_private_dirs(user: &ServerUser) -> (TempDir, TempDir) {
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

const CLUSTER_PREFIX: &str = "pgsafe-cluster-";
const SOCKET_PREFIX: &str = "pgs-";
const OWNER_FILE: &str = "pgsafe-testkit.owner";

/// Once per process: kill servers and remove folders left behind by test processes that died
/// without cleaning up (killed by a timeout, say). Only folders carrying an owner file whose
/// process is gone are touched, and only a postmaster whose command line names that folder is
/// killed.
fn cleanup_stale_clusters() {
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
fn make_server_dir(dir: &Path, user: &ServerUser) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    user.chown(dir);
}

/// Writes a file (mode 0600) the server must own.
fn write_server_file(path: &Path, bytes: &[u8], user: &ServerUser) {
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
fn append_conf(data_dir: &Path, title: &str, lines: &[impl AsRef<str>]) {
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
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A libpq conninfo value, quoted when needed.
fn conn_quote(s: &str) -> String {
    if !s.is_empty() && !s.contains([' ', '\'', '\\', '\t', '\n']) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `name = value` (a postgresql.conf line) as a `-c name=value` argument.
fn conf_line_to_arg(line: &str) -> String {
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
fn archive_command(dir: &Path) -> String {
    let d = dir.to_str().expect("UTF-8 archive path");
    assert!(!d.contains('\''), "archive path {d:?} contains a quote");
    format!("test ! -f '{d}/%f' && cp %p '{d}/%f'")
}

/// Environment for initdb/postgres: no PG* variables from the test's environment, C messages.
fn server_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("LC_ALL", "C").env("TZ", "UTC");
}

/// Panics unless the server user can enter every folder above `path`.
fn check_enterable(path: &Path, user: &ServerUser) {
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

/// What a standby copy of a running primary's PGDATA leaves out (as pg_basebackup does).
fn standby_copy_filter(rel: &Path, is_dir: bool) -> Entry {
    let s = rel.to_string_lossy();
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "pg_internal.init" || name.starts_with("pgsql_tmp") {
        return Entry::Skip;
    }
    if let Some(inner) = s.strip_prefix("pg_wal/") {
        // Keep pg_wal's sub-folders (archive_status, summaries) empty; no segments.
        return if is_dir && !inner.contains('/') {
            Entry::EmptyDir
        } else {
            Entry::Skip
        };
    }
    match s.as_ref() {
        "postmaster.pid" | "postmaster.opts" | "backup_label" | "tablespace_map"
        | "standby.signal" | "recovery.signal" | "recovery.conf" | "current_logfiles"
        | "promote" => Entry::Skip,
        "pg_replslot" | "pg_dynshmem" | "pg_notify" | "pg_serial" | "pg_snapshots"
        | "pg_stat_tmp" | "pg_subtrans"
            if is_dir =>
        {
            Entry::EmptyDir
        }
        _ => Entry::Copy,
    }
}

/// The cached template data directory for (install, checksums, segment size): initdb once per
/// combination, shared by every test process of this user.
fn template(install: &PgInstall, checksums: bool, segsize_mb: Option<u32>) -> PathBuf {
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

fn run_initdb(install: &PgInstall, data_dir: &Path, checksums: bool, segsize_mb: Option<u32>) {
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conn_quote("/tmp/pgs-abc"), "/tmp/pgs-abc");
        assert_eq!(conn_quote("/a b/it's"), r"'/a b/it\'s'");
        assert_eq!(conf_line_to_arg("max_wal_size = 32MB"), "max_wal_size=32MB");
        assert_eq!(
            conf_line_to_arg("log_line_prefix = '%m it''s '"),
            "log_line_prefix=%m it's "
        );
    }

    #[test]
    fn standby_filter_leaves_out_runtime_files() {
        let f = |p: &str, d| standby_copy_filter(Path::new(p), d);
        assert_eq!(f("postmaster.pid", false), Entry::Skip);
        assert_eq!(f("pg_wal", true), Entry::Copy);
        assert_eq!(f("pg_wal/000000010000000000000001", false), Entry::Skip);
        assert_eq!(f("pg_wal/archive_status", true), Entry::EmptyDir);
        assert_eq!(f("pg_replslot", true), Entry::EmptyDir);
        assert_eq!(f("base/1/pg_internal.init", false), Entry::Skip);
        assert_eq!(f("base/1/1259", false), Entry::Copy);
        assert_eq!(f("global/pg_control", false), Entry::Copy);
    }

    #[test]
    fn ports_are_distinct_within_a_process() {
        let ports: std::collections::BTreeSet<u16> = (0..1000).map(|_| pick_port()).collect();
        assert_eq!(ports.len(), 1000);
        assert!(ports.iter().all(|p| (20000..60000).contains(p)));
    }
}
