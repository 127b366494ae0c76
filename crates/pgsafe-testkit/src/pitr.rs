//! Point-in-time recovery from a test's side: commit marks whose recovery targets separate
//! exactly the marks before from the marks after, and a server that archives its WAL with a
//! command of the test's choosing (such as `pgsafe archive-push`).
//!
//! A mark is one row inserted in its own transaction. After the commit returns, [`Marks::mark`]
//! reads the WAL insert position and the server's clock and then creates a named restore point,
//! so each mark yields four recovery targets (see `recoveryStopsBefore`/`recoveryStopsAfter` in
//! src/backend/access/transam/xlogrecovery.c, `recovery_target_inclusive` at its default, on):
//! * `xid`: recovery stops after that transaction's commit record;
//! * `name`: it stops after the restore point record, written after the commit;
//! * `lsn`: it stops after the first record that starts at or past the position read after the
//!   commit. The commit record ends before that position, and the restore point record starts at
//!   or after it and comes before the next mark's commit, so that record is never the next mark;
//! * `time`: it stops before the first commit whose timestamp is later. The commit's timestamp
//!   is taken before it returns; the next mark's commit takes its own after the clock was read.
//!
//! So a copy recovered to any target of mark k holds exactly the marks up to k. Commits of other
//! sessions acknowledged before the mark's commit was sent are before every one of its targets
//! ([`Mark::load_mark`] records a [`LoadGenerator`]'s position at that moment).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use pgsafe::Lsn;
use postgres::Client;

use crate::cluster::Cluster;
use crate::fsx;
use crate::load::LoadGenerator;
use crate::loopfs::shell_quote;
use crate::user::server_user;

/// One committed mark and its recovery targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub id: i32,
    /// The mark transaction's 32-bit transaction ID (`recovery_target_xid`).
    pub xid: String,
    /// The WAL insert position read after the commit (`recovery_target_lsn`).
    pub lsn: Lsn,
    /// The server's clock read after the commit, `YYYY-MM-DD HH:MM:SS.ffffff+00`
    /// (`recovery_target_time`).
    pub time: String,
    /// The restore point created after the commit (`recovery_target_name`).
    pub name: String,
    /// The timeline the mark was written on.
    pub timeline: u32,
    /// [`LoadGenerator::mark`] taken just before the commit was sent: every load commit before it
    /// is before each of this mark's targets.
    pub load_mark: Option<u64>,
}

/// A series of marks in one table (several series may share a table, e.g. one per timeline
/// after a promotion, each with its own range of IDs).
#[derive(Debug, Clone)]
pub struct Marks {
    table: String,
    next: i32,
    marks: Vec<Mark>,
}

impl Marks {
    /// Creates the marks table `table` on `c` (if missing); the series starts at ID `first`.
    pub fn create(c: &Cluster, table: &str, first: i32) -> Marks {
        assert!(
            table
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
            "table name {table:?} must be a plain identifier"
        );
        c.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, \
             at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ));
        Marks {
            table: table.to_owned(),
            next: first,
            marks: Vec::new(),
        }
    }

    /// Another series in a table that already exists (on `c` or, replicated, on another server).
    pub fn continuing(table: &str, first: i32) -> Marks {
        Marks {
            table: table.to_owned(),
            next: first,
            marks: Vec::new(),
        }
    }

    /// Commits the next mark on `c` (a primary) and returns it.
    pub fn mark(&mut self, c: &Cluster, load: Option<&LoadGenerator>) -> Mark {
        let id = self.next;
        self.next += 1;
        let mut client = c.connect();
        let fail = |what: &str, e: postgres::Error| -> ! {
            panic!(
                "PostgreSQL {}: mark {id}: {what}: {e}; server log:\n{}",
                c.major(),
                c.server_log_tail(20)
            )
        };
        let mut tx = client.transaction().unwrap_or_else(|e| fail("BEGIN", e));
        tx.execute(
            &format!("INSERT INTO {} (id) VALUES ($1)", self.table),
            &[&id],
        )
        .unwrap_or_else(|e| fail("INSERT", e));
        let xid: String = tx
            .query_one("SELECT (txid_current() % 4294967296)::text", &[])
            .and_then(|r| r.try_get(0))
            .unwrap_or_else(|e| fail("txid_current()", e));
        let load_mark = load.map(LoadGenerator::mark);
        tx.commit().unwrap_or_else(|e| fail("COMMIT", e));
        let row = client
            .query_one(
                "SELECT pg_current_wal_insert_lsn()::text, \
                 to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') \
                 || '+00', pg_walfile_name(pg_current_wal_insert_lsn())",
                &[],
            )
            .unwrap_or_else(|e| fail("reading the position and clock", e));
        let get = |i: usize| -> String {
            row.try_get(i)
                .unwrap_or_else(|e| panic!("mark {id}: column {i}: {e}"))
        };
        let lsn: Lsn = get(0).parse().unwrap_or_else(|e| panic!("mark {id}: {e}"));
        let time = get(1);
        let timeline = u32::from_str_radix(&get(2)[..8], 16)
            .unwrap_or_else(|e| panic!("mark {id}: timeline of {}: {e}", get(2)));
        let name = format!("{}_{id}", self.table);
        client
            .execute("SELECT pg_create_restore_point($1)", &[&name])
            .unwrap_or_else(|e| fail("pg_create_restore_point", e));
        let mark = Mark {
            id,
            xid,
            lsn,
            time,
            name,
            timeline,
            load_mark,
        };
        self.marks.push(mark.clone());
        mark
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Every mark of this series so far, oldest first.
    pub fn all(&self) -> &[Mark] {
        &self.marks
    }

    /// IDs of this series' marks up to and including `id`.
    pub fn ids_through(&self, id: i32) -> Vec<i32> {
        self.marks
            .iter()
            .map(|m| m.id)
            .filter(|&m| m <= id)
            .collect()
    }

    /// IDs of every mark of this series.
    pub fn ids(&self) -> Vec<i32> {
        self.marks.iter().map(|m| m.id).collect()
    }
}

/// Checks that the marks table `table` holds exactly `expected` (in any order).
pub fn check_marks(client: &mut Client, table: &str, expected: &[i32]) -> Result<(), String> {
    let rows = client
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .map_err(|e| format!("reading {table}: {e}"))?;
    let mut got = Vec::with_capacity(rows.len());
    for r in &rows {
        got.push(r.try_get::<_, i32>(0).map_err(|e| e.to_string())?);
    }
    let mut want = expected.to_vec();
    want.sort_unstable();
    if got == want {
        return Ok(());
    }
    let missing: Vec<i32> = want.iter().filter(|i| !got.contains(i)).copied().collect();
    let extra: Vec<i32> = got.iter().filter(|i| !want.contains(i)).copied().collect();
    Err(format!(
        "{table}: expected marks {want:?}, found {got:?} (missing, committed before the target: \
         {missing:?}; present, committed after it: {extra:?})"
    ))
}

/// `archive_mode = on` and an `archive_command` running `program args… %p` (each argument
/// shell-quoted, `%` doubled since PostgreSQL expands `%%` to `%`): settings for
/// [`crate::ClusterOptions::conf`].
pub fn archive_settings(program: &Path, args: &[&str]) -> Vec<String> {
    let mut cmd = shell_quote(program).replace('%', "%%");
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(Path::new(a)).replace('%', "%%"));
    }
    cmd.push_str(" %p");
    vec![
        "archive_mode = on".to_owned(),
        format!("archive_command = '{}'", cmd.replace('\'', "''")),
    ]
}

/// Gives the tree at `path` to the server user (a repository created by the test process that
/// the server's `archive_command` writes into).
pub fn give_to_server_user(path: &Path) {
    fsx::chown_tree(path, server_user())
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Ends the current WAL segment of `c` (a primary; something is written first, so there is
/// always a segment to end) and waits until the server has archived it: its `.done` status
/// file exists, or the segment is gone (removed or recycled, which a server archiving WAL does
/// only after archiving it). Returns the segment's name. Panics, with the log, after 2 minutes.
pub fn wait_archived(c: &Cluster) -> String {
    let mut client = c.connect();
    let seg: String = client
        .query_one(
            "SELECT pg_walfile_name(pg_create_restore_point('pgsafe_testkit_switch'))",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("PostgreSQL {}: {e}", c.major()));
    client
        .execute("SELECT pg_switch_wal()", &[])
        .unwrap_or_else(|e| panic!("PostgreSQL {}: pg_switch_wal(): {e}", c.major()));
    wait_segment_archived(c, &seg);
    seg
}

/// Waits until `c` has archived the WAL file `name` (see [`wait_archived`]). Connects to the
/// server now and then while it waits: an archiver that exited (its `archive_command` died of a
/// signal, which it treats as fatal: src/backend/postmaster/pgarch.c) is started again by the
/// postmaster on its next loop, which otherwise may sleep up to a minute when nothing happens
/// (`DetermineSleepTime` in src/backend/postmaster/postmaster.c); a connection wakes it, as any
/// client of a real server would.
pub fn wait_segment_archived(c: &Cluster, name: &str) {
    let wal = c.data_dir().join("pg_wal");
    let done = wal.join("archive_status").join(format!("{name}.done"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut poked = Instant::now();
    while !done.exists() && wal.join(name).exists() {
        if poked.elapsed() > Duration::from_millis(500) {
            drop(c.try_connect());
            poked = Instant::now();
        }
        if Instant::now() > deadline {
            let status: Vec<String> = fs::read_dir(wal.join("archive_status"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "PostgreSQL {} did not archive {name} in time (archive_status: {status:?}); \
                 server log:\n{}",
                c.major(),
                c.server_log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
