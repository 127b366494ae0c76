//! Streaming standbys made without pg_basebackup, promotion, and waiting for replay.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use postgres::NoTls;

use super::setup::{
    append_conf, archive_command, conf_quote, conn_quote, make_private_dirs, make_server_dir,
    pick_port, timeout, write_server_file,
};
use super::{Cluster, ClusterOptions, StandbyOf, TABLESPACE_DIR_NAME};
use crate::fsx::{self, Entry};
use crate::user::server_user;

impl Cluster {
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
}

/// Best effort: drop a gone standby's slot on its primary so it does not retain WAL forever.
pub(super) fn drop_slot(s: &StandbyOf) {
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

/// What a standby copy of a running primary's PGDATA leaves out (as pg_basebackup does).
pub(super) fn standby_copy_filter(rel: &Path, is_dir: bool) -> Entry {
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
