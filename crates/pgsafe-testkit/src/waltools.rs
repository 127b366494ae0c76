//! PostgreSQL's own WAL tools of a given major (`pg_waldump`; `pg_walsummary` on 17+), the
//! oracles of the WAL-format tests. The server packages carry only initdb, pg_ctl and
//! postgres; `scripts/install-wal-tools` puts a whole build's `bin/` for 14 and later into
//! `<pg-dir>/tools/<major>/` (Debian's PostgreSQL 15 tools serve 15 too). WAL tools read only
//! their own major's WAL, so no other major's tool can stand in.

use std::path::PathBuf;

use crate::install::{PgInstall, client_bin_dir};

/// The path of `tool` (e.g. `pg_waldump`) of PostgreSQL `major`; panics with the install hint
/// when it is missing, so a test that needs it fails instead of passing unchecked.
pub fn wal_tool(major: u32, tool: &str) -> PathBuf {
    let path = PgInstall::pg_dir()
        .join("tools")
        .join(major.to_string())
        .join("bin")
        .join(tool);
    if path.is_file() {
        return path;
    }
    if major == 15 {
        let debian = client_bin_dir().join(tool);
        if debian.is_file() {
            return debian;
        }
    }
    panic!(
        "{tool} of PostgreSQL {major} is not installed ({} is missing): run scripts/install-wal-tools \
         (scripts/test does; it covers 14 and later — older majors' tools are not packaged anywhere \
         this project can install from)",
        path.display()
    );
}
