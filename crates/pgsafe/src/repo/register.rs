//! Registering a cluster in a repository (`init`): the server is asked who it is, its data
//! directory must be that server's, and the name is bound to that cluster once.

use std::path::Path;

use super::doc::{self, REPO_FORMAT, Registration};
use super::{RepoError, Repository};
use crate::conninfo::ConnSettings;
use crate::datadir::DataDir;
use crate::session::{ServerInfo, Session};
use crate::storage::Ident;

/// What `init` did.
#[derive(Debug, Clone)]
pub struct InitOutcome {
    pub registration: Registration,
    /// The repository folder was made a repository by this call.
    pub repository_created: bool,
    /// The cluster was registered by this call (`false`: it already was, as the same cluster).
    pub registered: bool,
}

/// Connects to the server and reads who it is.
pub fn server_info(conn: &ConnSettings) -> Result<ServerInfo, RepoError> {
    let client = conn.connect()?;
    let session = Session::new(client)?;
    Ok(session.info().clone())
}

/// Checks that `pgdata` is the data directory of the server `info` describes (system
/// identifier and major version of its pg_control and PG_VERSION).
pub fn check_pgdata(pgdata: &Path, info: &ServerInfo) -> Result<(), RepoError> {
    let dir = DataDir::open(pgdata)?;
    let control = dir.control()?;
    let wrong = |why: String| RepoError::WrongPgdata {
        pgdata: pgdata.to_owned(),
        why,
    };
    if control.system_identifier != info.system_id {
        return Err(wrong(format!(
            "its pg_control has system identifier {}, the server's is {}",
            control.system_identifier, info.system_id
        )));
    }
    let version = dir.pg_version()?;
    if version.major() != info.version.major() {
        return Err(wrong(format!(
            "its PG_VERSION says {}, the server is {}",
            version.major_name(),
            info.version
        )));
    }
    Ok(())
}

/// Makes `repo` a repository if it is not one yet (a missing or empty folder) and registers
/// the server `conn` reaches, whose data directory is `pgdata`, as `cluster`. Idempotent for
/// the same cluster; another cluster under a taken name is refused, and nothing is written
/// before the server and the data directory were checked.
pub fn init_cluster(
    repo: &crate::storage::Location,
    cluster: &Ident,
    pgdata: &Path,
    conn: &ConnSettings,
) -> Result<InitOutcome, RepoError> {
    let info = server_info(conn)?;
    check_pgdata(pgdata, &info)?;
    let existed = Repository::open(repo).is_ok();
    let r = Repository::create(repo)?;
    let now = doc::format_time(doc::now_us());
    let reg = Registration {
        format: REPO_FORMAT,
        cluster: cluster.clone(),
        system_identifier: info.system_id,
        server_version: info.version,
        wal_segment_size: info.wal_segment_size,
        pgdata: pgdata.display().to_string(),
        registered_at: now,
        pgsafe_version: env!("CARGO_PKG_VERSION").into(),
    };
    let registered = r.register(&reg)?;
    let registration = if registered {
        reg
    } else {
        r.registration(cluster)?
    };
    Ok(InitOutcome {
        registration,
        repository_created: !existed,
        registered,
    })
}
