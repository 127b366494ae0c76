//! amcheck as an outside oracle for a restored or recovered server: are its B-tree indexes
//! consistent with themselves and with their tables, and (14+) are its heaps sound?

use std::process::Command;

use crate::SUPERUSER;
use crate::cluster::Cluster;
use crate::install::client_bin_dir;

/// Runs amcheck on every B-tree index (and on 14+ every table) of database `postgres` of a
/// running, writable server (it creates the extension). On 14+ this is Debian's PostgreSQL 15
/// `pg_amcheck --heapallindexed`, which needs the heap checks that amcheck has from 14 on
/// (`verify_heapam`); on 11–13 `bt_index_check(index, true)` (heapallindexed) per index; on 10,
/// whose amcheck has only `bt_index_check(index)`, the structural check alone. Returns what it
/// found, or the number of indexes it checked below 14 (0 from pg_amcheck, which does not say).
pub fn amcheck(c: &Cluster) -> Result<usize, String> {
    let mut client = c.connect();
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .map_err(|e| format!("CREATE EXTENSION amcheck: {e}"))?;
    if c.major() >= 14 {
        let o = Command::new(client_bin_dir().join("pg_amcheck"))
            .arg("-h")
            .arg(c.socket_dir())
            .args(["-p", &c.port().to_string(), "-U", SUPERUSER])
            .args(["--heapallindexed", "-d", "postgres"])
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGDATABASE")
            .output()
            .map_err(|e| format!("running pg_amcheck: {e}"))?;
        if o.status.success() && o.stdout.is_empty() {
            return Ok(0);
        }
        return Err(format!(
            "pg_amcheck found problems ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let rows = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
             WHERE a.amname = 'btree' AND i.indisvalid AND c.relpersistence <> 't'",
            &[],
        )
        .map_err(|e| format!("listing B-tree indexes: {e}"))?;
    let mut problems = Vec::new();
    for r in &rows {
        let index: String = r.try_get(0).map_err(|e| e.to_string())?;
        let sql = if c.major() >= 11 {
            "SELECT bt_index_check($1::text::regclass, true)"
        } else {
            "SELECT bt_index_check($1::text::regclass)"
        };
        if let Err(e) = client.execute(sql, &[&index]) {
            problems.push(format!("{index}: {e}"));
        }
    }
    if problems.is_empty() {
        Ok(rows.len())
    } else {
        Err(format!("amcheck: {}", problems.join("; ")))
    }
}
