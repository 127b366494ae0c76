//! amcheck over every database of the restored server, as `pg_amcheck` does it
//! (`src/bin/pg_amcheck/pg_amcheck.c`): on 14+ `verify_heapam` on every table, materialized
//! view and TOAST table and `bt_index_check(index, heapallindexed => true)` on every valid
//! B-tree index; on 11–13 (amcheck 1.1–1.2, no heap checks) the index checks; on 10 (amcheck
//! 1.0) `bt_index_check(index)` without the heap cross-check. Temporary relations are left
//! out (their files are removed at start-up, `RemovePgTempFiles` in
//! `src/backend/storage/file/fd.c`), and so are databases that do not allow connections
//! (`template0`). The extension is created where missing: the copy is a scratch copy.

use std::sync::atomic::{AtomicBool, Ordering};

use postgres::{Client, NoTls};
use serde::Serialize;

use super::reasons::CheckError;
use super::server::Server;
use crate::session::db_message;

/// The error of a check stopped because the operator cancelled.
pub const CANCELLED: &str = "cancelled";

/// Findings kept per report (the counts are exact).
const MAX_FINDINGS: usize = 200;

/// One thing amcheck found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub database: String,
    /// `schema.name`.
    pub relation: String,
    /// `index` or `table`.
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} in database {}: {}",
            self.kind, self.relation, self.database, self.message
        )
    }
}

/// What the checks did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AmcheckReport {
    /// The amcheck extension is installed with these binaries.
    pub available: bool,
    /// The extension's version in the databases checked (`pg_extension.extversion`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `verify_heapam` ran on every table.
    pub heap_checks: bool,
    /// `bt_index_check` cross-checked every index against its table (`heapallindexed`).
    pub heapallindexed: bool,
    pub databases: Vec<String>,
    /// Databases that do not allow connections (not checked).
    pub skipped_databases: Vec<String>,
    /// Relations with storage (tables, indexes, TOAST tables, materialized views, sequences).
    pub relations: u64,
    pub tables_checked: u64,
    pub indexes_checked: u64,
    /// Number of problems found (each heap corruption row, each failed index check).
    pub problems: u64,
    /// The first problems (at most 200).
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
}

fn sql_err(what: &str, e: postgres::Error) -> CheckError {
    CheckError::Sql {
        what: what.to_owned(),
        source: e.into(),
    }
}

/// Double-quotes an identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Runs the checks with `user` (the bootstrap superuser), starting from the open `first`
/// connection to `template1`. `Err`: a check could not be run (not a finding).
pub fn check_all(
    server: &Server,
    first: &mut Client,
    user: &str,
    major: u32,
    cancel: Option<&AtomicBool>,
) -> Result<AmcheckReport, CheckError> {
    let mut r = AmcheckReport::default();
    let rows = first
        .query(
            "SELECT datname::text, datallowconn FROM pg_database ORDER BY datname",
            &[],
        )
        .map_err(|e| sql_err("list databases", e))?;
    let mut dbs = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).map_err(|e| sql_err("read a row", e))?;
        let allow: bool = row.try_get(1).map_err(|e| sql_err("read a row", e))?;
        if allow {
            dbs.push(name);
        } else {
            r.skipped_databases.push(name);
        }
    }
    // Known when the first CREATE EXTENSION runs (pg_available_extensions reads every
    // control file of the installation, and one broken file makes it fail).
    r.available = true;
    for db in &dbs {
        let mut c = server
            .config(user, db)
            .connect(NoTls)
            .map_err(|e| sql_err(&format!("connect to database {db}"), e))?;
        r.relations += count_relations(&mut c).map_err(|e| sql_err("count relations", e))?;
        if r.available && !check_database(&mut c, db, major, &mut r, cancel)? {
            r.available = false;
            r.notes.push(format!(
                "the amcheck extension is not installed with these PostgreSQL {major} binaries \
                 (it is in the contrib package): indexes and tables were not checked"
            ));
        }
        r.databases.push(db.clone());
    }
    Ok(r)
}

fn count_relations(c: &mut Client) -> Result<u64, postgres::Error> {
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'i', 't', 'm', 'S') \
             AND relpersistence <> 't'",
            &[],
        )?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn push(r: &mut AmcheckReport, f: Finding) {
    r.problems += 1;
    if r.findings.len() < MAX_FINDINGS {
        r.findings.push(f);
    }
}

/// The schema amcheck is installed in, its version, and whether it has `verify_heapam` and the
/// two-argument `bt_index_check`.
struct Ext {
    schema: String,
    version: String,
    heapam: bool,
    heapallindexed: bool,
}

fn extension(c: &mut Client) -> Result<Option<Ext>, postgres::Error> {
    let Some(row) = c.query_opt(
        "SELECT n.nspname::text, e.extversion::text, \
         EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid \
                 AND p.proname = 'verify_heapam'), \
         EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid \
                 AND p.proname = 'bt_index_check' AND p.pronargs = 2) \
         FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname = 'amcheck'",
        &[],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(Ext {
        schema: row.try_get(0)?,
        version: row.try_get(1)?,
        heapam: row.try_get(2)?,
        heapallindexed: row.try_get(3)?,
    }))
}

/// Checks one database; `Ok(false)` when amcheck is not installed with the binaries.
fn check_database(
    c: &mut Client,
    db: &str,
    major: u32,
    r: &mut AmcheckReport,
    cancel: Option<&AtomicBool>,
) -> Result<bool, CheckError> {
    let cancelled = || {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            Err(CheckError::Cancelled)
        } else {
            Ok(())
        }
    };
    // Installed by an older release (kept through pg_upgrade): update it, so this major's
    // checks are there. A scratch copy may be changed.
    if extension(c)
        .map_err(|e| sql_err("read pg_extension", e))?
        .is_some()
    {
        let _ = c.batch_execute("ALTER EXTENSION amcheck UPDATE");
    } else if let Err(e) = c.batch_execute("CREATE EXTENSION amcheck") {
        // No amcheck.control: 58P01 undefined_file ("could not open extension control file"),
        // from 16 on 0A000 feature_not_supported ("extension ... is not available";
        // `src/backend/commands/extension.c`).
        if matches!(e.code().map(|c| c.code()), Some("58P01" | "0A000")) {
            return Ok(false);
        }
        return Err(sql_err(&format!("CREATE EXTENSION amcheck in {db}"), e));
    }
    let ext = extension(c)
        .map_err(|e| sql_err("read pg_extension", e))?
        .ok_or_else(|| CheckError::NotInstalled { db: db.to_owned() })?;
    r.version.get_or_insert_with(|| ext.version.clone());
    r.heap_checks = ext.heapam;
    r.heapallindexed = ext.heapallindexed;
    if major >= 14 && !ext.heapam {
        r.notes.push(format!(
            "amcheck {} in {db} has no verify_heapam",
            ext.version
        ));
    }
    let schema = ident(&ext.schema);

    if ext.heapam {
        let tables = c
            .query(
                "SELECT c.oid, n.nspname::text || '.' || c.relname::text, c.relkind::text \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't' \
                 ORDER BY c.oid",
                &[],
            )
            .map_err(|e| sql_err("list tables", e))?;
        for row in tables {
            let oid: u32 = row.try_get(0).map_err(|e| sql_err("read a row", e))?;
            let name: String = row.try_get(1).map_err(|e| sql_err("read a row", e))?;
            let kind: String = row.try_get(2).map_err(|e| sql_err("read a row", e))?;
            cancelled()?;
            // TOAST tables are checked on their own; their owners' pointers into them too.
            let toast = if kind == "t" { "false" } else { "true" };
            let sql = format!(
                "SELECT blkno, offnum, attnum, msg FROM {schema}.verify_heapam({oid}::oid::regclass, \
                 on_error_stop => false, check_toast => {toast}, skip => 'none')"
            );
            r.tables_checked += 1;
            match c.query(&sql, &[]) {
                Ok(rows) => {
                    for row in rows {
                        let blk: Option<i64> = row.try_get(0).ok().flatten();
                        let off: Option<i32> = row.try_get(1).ok().flatten();
                        let att: Option<i32> = row.try_get(2).ok().flatten();
                        let msg: Option<String> = row.try_get(3).ok().flatten();
                        let mut at = String::new();
                        if let Some(b) = blk {
                            at.push_str(&format!("block {b}"));
                        }
                        if let Some(o) = off {
                            at.push_str(&format!(", offset {o}"));
                        }
                        if let Some(a) = att {
                            at.push_str(&format!(", attribute {a}"));
                        }
                        push(
                            r,
                            Finding {
                                database: db.to_owned(),
                                relation: name.clone(),
                                kind: "table",
                                message: format!("{at}: {}", msg.unwrap_or_default()),
                            },
                        );
                    }
                }
                Err(e) => push(
                    r,
                    Finding {
                        database: db.to_owned(),
                        relation: name,
                        kind: "table",
                        message: db_message(&e),
                    },
                ),
            }
        }
    }

    let indexes = c
        .query(
            "SELECT c.oid, n.nspname::text || '.' || c.relname::text \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam \
             WHERE a.amname = 'btree' AND c.relkind = 'i' AND c.relpersistence <> 't' \
             AND i.indisready AND i.indisvalid ORDER BY c.oid",
            &[],
        )
        .map_err(|e| sql_err("list indexes", e))?;
    for row in indexes {
        let oid: u32 = row.try_get(0).map_err(|e| sql_err("read a row", e))?;
        let name: String = row.try_get(1).map_err(|e| sql_err("read a row", e))?;
        cancelled()?;
        let sql = if ext.heapallindexed {
            format!("SELECT {schema}.bt_index_check({oid}::oid::regclass, true)")
        } else {
            format!("SELECT {schema}.bt_index_check({oid}::oid::regclass)")
        };
        r.indexes_checked += 1;
        if let Err(e) = c.batch_execute(&sql) {
            push(
                r,
                Finding {
                    database: db.to_owned(),
                    relation: name,
                    kind: "index",
                    message: db_message(&e),
                },
            );
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("public"), "\"public\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
