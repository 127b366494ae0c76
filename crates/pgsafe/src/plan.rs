//! The backup plan: every directory and file of PGDATA and of its tablespaces that a backup
//! stores, with the exclusions `pg_basebackup` applies for the server's version (`sendDir` in
//! `src/backend/backup/basebackup.c`; `src/backend/replication/basebackup.c` before 15),
//! and `global/pg_control` set apart to be copied last.
//!
//! Rules, in the order `pg_basebackup` (`sendDir`) applies them to each directory entry:
//! 1. names starting with `pgsql_tmp` (temporary files and directories), at any depth;
//! 2. `.DS_Store` (15+: 17.0 has it, and 15 and 16 got it in a minor release — 15.18 and 16.14
//!    leave it out, 14.23 copies it; pgsafe leaves it out on every 15 and 16 minor, a macOS
//!    Finder file is never data PostgreSQL reads);
//! 3. the excluded files: `postgresql.auto.conf.tmp`, `current_logfiles.tmp` (10+),
//!    `pg_internal.init` (any name starting with it: 12.0 on, and 11 in later minors — 11.22
//!    leaves out `pg_internal.init_4242` — pgsafe does so on every 11 minor), `backup_label`,
//!    `tablespace_map`, `backup_manifest` (13+; pgsafe: at the top level on every version),
//!    `postmaster.pid`, `postmaster.opts` (any depth from 10 on; 9.6: top level only);
//!
//!    pgsafe's own files at the top level (not a pg_basebackup rule; "rule 3a"): `pgsafe.json`,
//!    `pgsafe.incomplete`, `pgsafe_restore.json`, `backup_label.pgsafe-removed`. A backup folder
//!    copied into place (`cp -a`, as DBAs do with pg_basebackup output) carries the first two
//!    and `backup_manifest`; a restored cluster carries the restore marker; `doctor --fix`
//!    leaves the renamed label. Each describes another backup, restore or incident than the one
//!    being taken: copied, they would be listed twice in the new backup (pgsafe writes its own),
//!    make a half-written backup folder look complete, or tell `doctor` on a restored copy
//!    something that happened to the source. See [`PGSAFE_FILES`]. Also, at any depth, the
//!    half-written files of pgsafe's durable writes (`.<name>.pgsafe-tmp[-<pid>]`);
//! 4. in relation directories (`global/`, `base/<db>/`, `pg_tblspc/<oid>/PG_<major>_<cat>/<db>/`):
//!    every fork of an unlogged relation except its init fork (a relation is unlogged when
//!    `<relfilenode>_init` exists beside it), and temporary relations `t<backend>_<relfilenode>…`.
//!    The server does this from 11 on; pgsafe does it for 10 too: at the end of recovery every
//!    version resets unlogged relations from their init forks and deletes temporary relation
//!    files (`ResetUnloggedRelations`, `RemovePgTempFiles`, both older than 9.1), so those files
//!    are never read and copying them only costs time and space;
//! 5. `global/pg_control`: left out of the walk, recorded in [`BackupPlan::control_file`];
//! 6. directories kept empty: `pg_stat_tmp`, `pg_replslot`, and from 10 on `pg_dynshmem`,
//!    `pg_notify`, `pg_serial`, `pg_snapshots`, `pg_subtrans` (any depth), and the directory named
//!    by `stats_temp_directory` when it lies inside PGDATA (≤ 14, see [`PlanOptions`]);
//! 7. `pg_wal` (top level): stored as an empty directory plus empty `archive_status` (and
//!    `summaries` on 17+); the backup's WAL is copied separately;
//! 8. symbolic links are followed only directly in `pg_tblspc/` (tablespaces); any other
//!    symbolic link or special file is skipped with the warning "skipping special file", except
//!    a tablespace's version directory that is a link: that is an error (a planted link would
//!    make the walk read any directory, see [`PlanError::VersionDirLink`]).
//!
//! `backup_label.old`, `tablespace_map.old` and the signal files are copied, as pg_basebackup
//! does. Tablespaces are stored inside the backup under `pg_tblspc/<oid>/`, holding only the
//! server's own version directory (`PG_<major>_<catversion>`), as pg_basebackup sends them; the
//! original link targets are kept in [`BackupPlan::tablespaces`]. A tablespace located inside
//! PGDATA is stored once, as the tablespace. Entries that vanish while the walk runs are skipped.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{FsError, IoContext};
use crate::types::PgVersion;

mod rules;
mod walk;

pub(crate) use rules::parse_relation_file_name;
pub use rules::{Decision, Exclusion, PGSAFE_FILES, classify, wal_dir_name};
#[cfg(test)]
use walk::list_dir;
use walk::{Walker, stats_temp_rel, tablespaces_inside};

#[cfg(test)]
pub(crate) mod tests;

/// A path inside the backup, relative to its root, with `/` between components: the raw bytes of
/// the file names (PostgreSQL's own names are ASCII; a user's stray file may not be UTF-8).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// From raw bytes; the caller guarantees `/`-separated, relative, no `.`/`..` components.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> RelPath {
        RelPath(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The path as a relative file-system path (to `join` onto a root).
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// This path with one more component.
    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }

    /// This path with `suffix` appended to its last component (`base/5/1.zst`).
    pub fn with_suffix(&self, suffix: &str) -> RelPath {
        let mut v = self.0.clone();
        v.extend_from_slice(suffix.as_bytes());
        RelPath(v)
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for RelPath {
    fn from(s: &str) -> RelPath {
        RelPath(s.as_bytes().to_vec())
    }
}

/// Settings of the walk that the server's configuration decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `stats_temp_directory` (10–14; removed in 15), absolute or relative to PGDATA. When it
    /// lies inside PGDATA its contents are left out like `pg_stat_tmp`'s.
    pub stats_temp_directory: Option<PathBuf>,
    /// `CATALOG_VERSION_NO` of the server (pg_control `catalog_version_no`): only
    /// `PG_<major>_<catversion>` is taken from each tablespace, as pg_basebackup does. `None`:
    /// every `PG_<major>_<digits>` directory.
    pub catalog_version: Option<u32>,
}

/// A directory to recreate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanDir {
    pub rel_path: RelPath,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// A regular file to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFile {
    /// Where the file goes in the backup (`pg_tblspc/<oid>/…` for tablespace files).
    pub rel_path: RelPath,
    /// Where it is read from.
    pub source: PathBuf,
    /// Size from `lstat` when planned: the copy stores at most this many bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// `st_mtime` when planned, seconds since the Unix epoch.
    pub mtime: i64,
}

/// Everything a backup copies, in an order ready for parallel copying.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    pub pgdata: PathBuf,
    pub version: PgVersion,
    /// Permission bits of PGDATA itself.
    pub root_mode: u32,
    /// Directories to create, parents before children (walk order).
    pub dirs: Vec<PlanDir>,
    /// Files to copy, largest first (then by path): the order to schedule them in.
    pub files: Vec<PlanFile>,
    /// `global/pg_control`, to be copied after everything else.
    pub control_file: PlanFile,
    /// Tablespaces (`pg_tblspc/<oid>` symbolic links): OID and link target as read.
    pub tablespaces: Vec<(u32, PathBuf)>,
    /// Entries left out by a name rule (contents of directories kept empty are not listed).
    pub excluded: Vec<(RelPath, Exclusion)>,
    /// Non-fatal findings ("skipping special file …").
    pub warnings: Vec<String>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Io(#[from] FsError),
    #[error("{path} has no regular file global/pg_control: it is not a PostgreSQL data directory")]
    NoControlFile { path: PathBuf },
    /// PostgreSQL always creates it as a directory; it is not followed.
    #[error(
        "tablespace {oid}: its version directory {path} is a symbolic link (to {points_to}), \
         which PostgreSQL never creates and pgsafe does not follow: it would read whatever \
         directory the link names. Replace the link with the directory it should be"
    )]
    VersionDirLink {
        oid: u32,
        path: PathBuf,
        points_to: PathBuf,
    },
}

impl BackupPlan {
    /// Walks `pgdata` and its tablespaces (see the module documentation).
    pub fn build(
        pgdata: &Path,
        version: PgVersion,
        opts: &PlanOptions,
    ) -> Result<BackupPlan, PlanError> {
        let root_meta = fs::metadata(pgdata).ctx("inspect data directory", pgdata)?;
        if !root_meta.is_dir() {
            return Err(FsError::new(
                "walk data directory",
                pgdata,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            )
            .into());
        }
        let mut w = Walker {
            pgdata,
            version,
            opts,
            stats_rel: stats_temp_rel(pgdata, version, opts),
            skip_dirs: tablespaces_inside(pgdata),
            dirs: Vec::new(),
            files: Vec::new(),
            control: None,
            tablespaces: Vec::new(),
            excluded: Vec::new(),
            warnings: Vec::new(),
        };
        w.walk(pgdata, &RelPath::default())?;
        let Some(control_file) = w.control else {
            return Err(PlanError::NoControlFile {
                path: pgdata.to_owned(),
            });
        };
        let mut files = w.files;
        files.sort_by(|a, b| {
            b.size
                .cmp(&a.size)
                .then_with(|| a.rel_path.cmp(&b.rel_path))
        });
        Ok(BackupPlan {
            pgdata: pgdata.to_owned(),
            version,
            root_mode: root_meta.mode() & 0o7777,
            dirs: w.dirs,
            files,
            control_file,
            tablespaces: w.tablespaces,
            excluded: w.excluded,
            warnings: w.warnings,
        })
    }

    /// Bytes to copy, pg_control included (sizes as planned).
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum::<u64>() + self.control_file.size
    }

    /// Files to copy, pg_control included.
    pub fn total_files(&self) -> u64 {
        self.files.len() as u64 + 1
    }

    /// The planned file at `rel` (pg_control included), if any. Linear: for tests and tools.
    pub fn file(&self, rel: &str) -> Option<&PlanFile> {
        let rel = rel.as_bytes();
        self.files
            .iter()
            .chain(std::iter::once(&self.control_file))
            .find(|f| f.rel_path.as_bytes() == rel)
    }
}
