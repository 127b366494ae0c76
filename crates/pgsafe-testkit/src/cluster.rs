//! One PostgreSQL server for a test: a data directory in a temp folder, a private Unix socket
//! folder, a port, and a postmaster that is a direct child of the test process.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgsafe::Lsn;
use postgres::types::FromSqlOwned;
use postgres::{Client, NoTls};
use tempfile::TempDir;

use crate::SUPERUSER;
use crate::fsx;
use crate::install::PgInstall;
use crate::user::server_user;

mod process;
mod setup;
mod standby;

use setup::{
    append_conf, archive_command, check_enterable, cleanup_stale_clusters, conf_line_to_arg,
    conf_quote, conn_quote, make_private_dirs, make_server_dir, pick_port, run_initdb, tail,
    template, write_server_file,
};
use standby::drop_slot;

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

#[cfg(test)]
mod tests;
