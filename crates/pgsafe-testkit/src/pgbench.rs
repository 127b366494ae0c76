//! pgbench (Debian's PostgreSQL 15 client, which works against servers 10–18) as a write load
//! with an outside oracle: every pgbench transaction adds the same delta to one account, one
//! teller and one branch and inserts it into `pgbench_history`, so at every commit the sums of
//! `abalance`, `tbalance`, `bbalance` and `delta` are equal. A restored copy that replayed half a
//! transaction, or lost a page, breaks the equality.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::Client;

use crate::SUPERUSER;
use crate::cluster::Cluster;
use crate::install::client_bin_dir;

/// `pgbench` connecting to `c` (database `postgres`), with the test's PG* variables removed.
pub fn pgbench_command(c: &Cluster) -> Command {
    let mut cmd = Command::new(client_bin_dir().join("pgbench"));
    cmd.arg("-h")
        .arg(c.socket_dir())
        .args(["-p", &c.port().to_string(), "-U", SUPERUSER])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .stdin(Stdio::null());
    cmd
}

/// `pgbench -i -q -s scale postgres`: the four tables with `scale` × 100,000 accounts.
pub fn pgbench_init(c: &Cluster, scale: u32) {
    let out = pgbench_command(c)
        .args(["-i", "-q", "-s", &scale.to_string(), "postgres"])
        .output()
        .unwrap_or_else(|e| panic!("running pgbench -i: {e}"));
    if !out.status.success() {
        panic!(
            "pgbench -i against PostgreSQL {} failed ({}): {}{}",
            c.major(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A running `pgbench -n` (TPC-B-like transactions, no vacuum first), killed when stopped or
/// dropped (also when a test fails). The invariant holds at every commit, so killing it at any
/// moment is fine.
pub struct PgbenchRun {
    child: Option<Child>,
}

impl PgbenchRun {
    /// Starts `clients` pgbench clients writing to `c` until stopped.
    pub fn start(c: &Cluster, clients: u32) -> PgbenchRun {
        let child = pgbench_command(c)
            .args(["-n", "-c", &clients.to_string(), "-T", "3600", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting pgbench: {e}"));
        PgbenchRun { child: Some(child) }
    }

    /// Waits until pgbench has committed `n` more transactions on `c` than now (history rows);
    /// panics if it makes no progress for a minute or has exited.
    pub fn wait_more(&mut self, c: &Cluster, n: i64) {
        let mut client = c.connect();
        let target = history_rows(&mut client) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = history_rows(&mut client);
            if rows >= target {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("pgbench exited ({status}) at {rows} history rows");
            }
            assert!(
                Instant::now() < deadline,
                "pgbench made no progress: {rows} history rows, waiting for {target}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills pgbench (its open transactions roll back).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PgbenchRun {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Rows in `pgbench_history` (one per committed pgbench transaction).
pub fn history_rows(client: &mut Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .and_then(|r| r.try_get(0))
        .unwrap_or_else(|e| panic!("counting pgbench_history: {e}"))
}

/// Checks pgbench's balance invariant (sum of account, teller and branch balances = sum of the
/// history deltas) and returns the number of history rows.
pub fn pgbench_invariant(client: &mut Client) -> Result<i64, String> {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(sum(abalance), 0)::bigint FROM pgbench_accounts), \
                    (SELECT coalesce(sum(tbalance), 0)::bigint FROM pgbench_tellers), \
                    (SELECT coalesce(sum(bbalance), 0)::bigint FROM pgbench_branches), \
                    (SELECT coalesce(sum(delta), 0)::bigint FROM pgbench_history), \
                    (SELECT count(*) FROM pgbench_history)",
            &[],
        )
        .map_err(|e| format!("reading pgbench's balances: {e}"))?;
    let get = |i: usize| -> Result<i64, String> {
        row.try_get(i)
            .map_err(|e| format!("pgbench balance column {i}: {e}"))
    };
    let (a, t, b, h, n) = (get(0)?, get(1)?, get(2)?, get(3)?, get(4)?);
    if a == t && t == b && b == h {
        Ok(n)
    } else {
        Err(format!(
            "pgbench balance invariant broken: accounts {a}, tellers {t}, branches {b}, history \
             {h} ({n} history rows)"
        ))
    }
}
