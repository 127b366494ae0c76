//! Tablespaces created or dropped while a backup runs (`docs/threat-model.md`, restore).
//!
//! `tablespace_map` lists the tablespaces that existed when the backup started. A tablespace
//! created during the backup is in no map, and replaying its `CREATE TABLESPACE` record makes
//! the restored server create the directory at the source's absolute path and point
//! `pg_tblspc/<oid>` at it (`tblspc_redo` → `create_tablespace_directories` in
//! `src/backend/commands/tablespace.c`, which replaces any link already there): restored on the
//! source's host, the copy writes into the source's live tablespace. pgsafe lists the
//! tablespaces in the backup's own session before the start and again after the stop, records
//! the differences in `pgsafe.json`, and `pgsafe restore` refuses a backup with a created one.
//! The list before the start is taken before the start checkpoint, so every tablespace whose
//! `CREATE TABLESPACE` record recovery can replay (from the start checkpoint's redo point to the
//! stop point) is either in the first list or reported as created.

use postgres::Client;

use crate::info::{TablespaceChange, TablespaceChangeKind};

/// A tablespace of the server (not `pg_default`/`pg_global`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTablespace {
    pub oid: u32,
    /// `pg_tablespace_location()`, read as bytes (a location need not be UTF-8); empty for an
    /// in-place tablespace.
    pub location: Vec<u8>,
}

/// Why the server's tablespaces could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum TablespaceListError {
    #[error("{0}")]
    Query(#[source] crate::session::ServerError),
    #[error("tablespace OID {0} out of range")]
    OidOutOfRange(i64),
}

/// The server's tablespaces, through the backup's session; locations byte for byte in a
/// database of `server_encoding` ([`crate::session::raw_text_sql`]). Never panics on server data.
pub fn list(
    client: &mut Client,
    server_encoding: &str,
) -> Result<Vec<ServerTablespace>, TablespaceListError> {
    let location = crate::session::raw_text_sql(server_encoding, "pg_tablespace_location(oid)");
    let rows = client
        .query(
            &format!(
                "SELECT oid::int8, {location} FROM pg_tablespace \
                 WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
            ),
            &[],
        )
        .map_err(|e| TablespaceListError::Query(e.into()))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let oid: i64 = r
            .try_get(0)
            .map_err(|e| TablespaceListError::Query(e.into()))?;
        let oid = u32::try_from(oid).map_err(|_| TablespaceListError::OidOutOfRange(oid))?;
        let location: Option<Vec<u8>> = r
            .try_get(1)
            .map_err(|e| TablespaceListError::Query(e.into()))?;
        out.push(ServerTablespace {
            oid,
            location: location.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The differences between the lists before the start and after the stop, by OID.
pub fn changes(before: &[ServerTablespace], after: &[ServerTablespace]) -> Vec<TablespaceChange> {
    let change = |t: &ServerTablespace, kind| TablespaceChange {
        oid: t.oid,
        change: kind,
        location: String::from_utf8_lossy(&t.location).into_owned(),
    };
    let mut out: Vec<TablespaceChange> = after
        .iter()
        .filter(|a| !before.iter().any(|b| b.oid == a.oid))
        .map(|t| change(t, TablespaceChangeKind::Created))
        .collect();
    out.extend(
        before
            .iter()
            .filter(|b| !after.iter().any(|a| a.oid == b.oid))
            .map(|t| change(t, TablespaceChangeKind::Dropped)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(oid: u32, loc: &str) -> ServerTablespace {
        ServerTablespace {
            oid,
            location: loc.as_bytes().to_vec(),
        }
    }

    #[test]
    fn created_and_dropped_by_oid() {
        let before = [ts(16384, "/a"), ts(16390, "/b")];
        let after = [ts(16384, "/a"), ts(16400, ""), ts(16401, "/c")];
        let c = changes(&before, &after);
        let text: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            [
                "tablespace 16400 in place (inside pg_tblspc) was created during the backup",
                "tablespace 16401 at /c was created during the backup",
                "tablespace 16390 at /b was dropped during the backup",
            ]
        );
        assert!(changes(&before, &before).is_empty());
        let json = serde_json::to_string(&c[1]).unwrap();
        assert_eq!(json, r#"{"oid":16401,"change":"created","location":"/c"}"#);
    }
}
