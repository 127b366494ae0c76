//! The backup plan: every directory and file of PGDATA and of its tablespaces that a backup
//! stores, with the exclusions `pg_basebackup` applies for the server's version (reference §5.1),
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
use std::fs::{self, DirEntry, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{FsError, IoContext};
use crate::types::PgVersion;

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

/// Why an entry is left out of the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exclusion {
    /// `pgsql_tmp*`: temporary files and directories.
    TempFile,
    /// `postgresql.auto.conf.tmp`, `current_logfiles.tmp`: half-written files.
    TransientFile,
    /// `pg_internal.init*`: relation cache init files, rebuilt at startup.
    RelcacheInit,
    /// `backup_label`, `tablespace_map`, `backup_manifest`: the backup writes its own.
    BackupFile,
    /// `postmaster.pid`, `postmaster.opts`: state of the running server.
    ServerRuntime,
    /// `.DS_Store` (15+).
    DsStore,
    /// pgsafe's own file of an earlier backup or restore ([`PGSAFE_FILES`]).
    PgsafeFile,
    /// A fork other than the init fork of an unlogged relation.
    UnloggedRelation,
    /// A temporary relation `t<backend>_<relfilenode>…`.
    TempRelation,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exclusion::TempFile => "temporary file",
            Exclusion::TransientFile => "half-written configuration or log-name file",
            Exclusion::RelcacheInit => "relation cache init file",
            Exclusion::BackupFile => "file of an earlier backup",
            Exclusion::ServerRuntime => "state file of the running server",
            Exclusion::DsStore => "macOS metadata file",
            Exclusion::PgsafeFile => "pgsafe's own file of an earlier backup or restore",
            Exclusion::UnloggedRelation => "unlogged relation (only its init fork is kept)",
            Exclusion::TempRelation => "temporary relation",
        })
    }
}

/// What the name rules say about one entry (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Copy the file, or recreate the directory and walk into it.
    Include,
    /// Leave the entry out.
    Exclude(Exclusion),
    /// A directory recreated empty: its contents are not copied.
    EmptyDir,
    /// The WAL directory: recreated empty with an empty `archive_status` (and on 17+ `summaries`).
    WalDir,
    /// `global/pg_control`: copied last, not in the walk.
    ControlFile,
    /// A relation file other than an init fork: excluded (unlogged) when the file named
    /// `init_fork` exists in the same directory, otherwise copied.
    UnlessInitFork { init_fork: String },
}

/// Files pgsafe itself writes at the top of a backup folder or a data directory, left out of
/// every backup (rule 3a): the completion and incompleteness markers of a backup
/// ([`crate::backup::COMPLETE_MARKER`], [`crate::backup::INCOMPLETE_MARKER`]), the restore marker
/// ([`crate::doctor::RESTORE_MARKER_FILE`]) and the label `doctor --fix` renamed
/// ([`crate::doctor::REMOVED_LABEL_FILE`]). `backup_manifest` is rule 3.
pub const PGSAFE_FILES: [&str; 4] = [
    "pgsafe.json",
    "pgsafe.incomplete",
    "pgsafe_restore.json",
    "backup_label.pgsafe-removed",
];

/// A half-written file of pgsafe's durable writes, left behind when a restore or backup was
/// killed mid-write: `.<name>.pgsafe-tmp` (restore) or `.<name>.pgsafe-tmp-<pid>`
/// ([`crate::fsutil`]). At any depth, like PostgreSQL's own `*.tmp` files (rule 3).
fn is_pgsafe_temp(name: &[u8]) -> bool {
    const TMP: &[u8] = b".pgsafe-tmp";
    if name.first() != Some(&b'.') {
        return false;
    }
    name.ends_with(TMP)
        || name
            .windows(TMP.len() + 1)
            .any(|w| w.starts_with(TMP) && w[TMP.len()] == b'-')
}

/// Applies the name rules of reference §5.1 to a backup-relative path (`base/5/16384_vm`) for a
/// server version. Pure: the caller supplies the file type and the directory listing (rules 6
/// and 7 concern directories; [`Decision::UnlessInitFork`] needs the sibling names).
pub fn classify(rel_path: impl AsRef<[u8]>, version: PgVersion) -> Decision {
    let rel = rel_path.as_ref();
    let (parent, name) = match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let top = parent.is_empty();
    let at = |major| version.at_least(major);

    if name.starts_with(b"pgsql_tmp") {
        return Decision::Exclude(Exclusion::TempFile);
    }
    if at(15) && name == b".DS_Store" {
        return Decision::Exclude(Exclusion::DsStore);
    }
    if name == b"postgresql.auto.conf.tmp" || (at(10) && name == b"current_logfiles.tmp") {
        return Decision::Exclude(Exclusion::TransientFile);
    }
    if at(11) && name.starts_with(b"pg_internal.init") {
        return Decision::Exclude(Exclusion::RelcacheInit);
    }
    if name == b"backup_label"
        || name == b"tablespace_map"
        || ((at(13) || top) && name == b"backup_manifest")
    {
        return Decision::Exclude(Exclusion::BackupFile);
    }
    if (top && PGSAFE_FILES.iter().any(|f| f.as_bytes() == name)) || is_pgsafe_temp(name) {
        return Decision::Exclude(Exclusion::PgsafeFile);
    }
    if (at(10) || top) && (name == b"postmaster.pid" || name == b"postmaster.opts") {
        return Decision::Exclude(Exclusion::ServerRuntime);
    }
    if is_relation_dir(parent, version) {
        if looks_like_temp_rel_name(name) {
            return Decision::Exclude(Exclusion::TempRelation);
        }
        match parse_relation_file_name(name, version) {
            Some((relfilenode, fork)) if fork != Fork::Init => {
                let mut init_fork = String::from_utf8_lossy(relfilenode).into_owned();
                init_fork.push_str("_init");
                return Decision::UnlessInitFork { init_fork };
            }
            _ => {}
        }
    }
    if rel == b"global/pg_control" {
        return Decision::ControlFile;
    }
    let keep_empty: &[&[u8]] = if at(10) {
        &[
            b"pg_stat_tmp",
            b"pg_replslot",
            b"pg_dynshmem",
            b"pg_notify",
            b"pg_serial",
            b"pg_snapshots",
            b"pg_subtrans",
        ]
    } else {
        &[b"pg_replslot"]
    };
    // 9.6 compares pg_stat_tmp as a prefix.
    if keep_empty.contains(&name) || (!at(10) && name.starts_with(b"pg_stat_tmp")) {
        return Decision::EmptyDir;
    }
    if top && name == wal_dir_name(version).as_bytes() {
        return Decision::WalDir;
    }
    Decision::Include
}

/// `pg_wal`, or `pg_xlog` before 10.
pub fn wal_dir_name(version: PgVersion) -> &'static str {
    if version.at_least(10) {
        "pg_wal"
    } else {
        "pg_xlog"
    }
}

fn all_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `PG_<major>_<digits>`: a tablespace version directory of this major.
fn is_tablespace_version_dir(name: &[u8], version: PgVersion) -> bool {
    let prefix = format!("PG_{}_", version.major_name());
    name.strip_prefix(prefix.as_bytes()).is_some_and(all_digits)
}

/// Whether files directly in `parent` can be relation files: `global`, `base/<db>` or
/// `pg_tblspc/<oid>/PG_<major>_<cat>/<db>`.
fn is_relation_dir(parent: &[u8], version: PgVersion) -> bool {
    let comps: Vec<&[u8]> = parent.split(|b| *b == b'/').collect();
    match comps.as_slice() {
        [b"global"] => true,
        [b"base", db] => all_digits(db),
        [b"pg_tblspc", oid, ver, db] => {
            all_digits(oid) && is_tablespace_version_dir(ver, version) && all_digits(db)
        }
        _ => false,
    }
}

/// Relation forks as they appear in file names (`main` has no suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fork {
    Main,
    Fsm,
    Vm,
    Init,
}

/// Length of the fork name at the start of `s` (`forkname_chars`: a prefix match, main excluded).
fn fork_name_chars(s: &[u8]) -> Option<(usize, Fork)> {
    [
        (&b"fsm"[..], Fork::Fsm),
        (b"vm", Fork::Vm),
        (b"init", Fork::Init),
    ]
    .into_iter()
    .find(|(n, _)| s.starts_with(n))
    .map(|(n, f)| (n.len(), f))
}

/// `parse_filename_for_nontemp_relation`: `<relfilenode>[_<fork>][.<segno>]`. Returns the
/// relfilenode digits and the fork. 10–16: up to 10 digits, leading zeros allowed; 17+: no
/// leading zero and at most 2^32−1, for the relfilenode and the segment number alike.
pub(crate) fn parse_relation_file_name(name: &[u8], version: PgVersion) -> Option<(&[u8], Fork)> {
    let strict = version.at_least(17);
    let digits = name.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    if strict && !fits_u32_without_leading_zero(&name[..digits]) {
        return None;
    }
    if !strict && digits > 10 {
        return None;
    }
    let relfilenode = &name[..digits];
    let mut rest = &name[digits..];
    let mut fork = Fork::Main;
    if let Some(after) = rest.strip_prefix(b"_") {
        let (len, f) = fork_name_chars(after)?;
        fork = f;
        rest = &after[len..];
    }
    if let Some(after) = rest.strip_prefix(b".") {
        let seg = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if seg == 0 || (strict && !fits_u32_without_leading_zero(&after[..seg])) {
            return None;
        }
        rest = &after[seg..];
    }
    rest.is_empty().then_some((relfilenode, fork))
}

fn fits_u32_without_leading_zero(d: &[u8]) -> bool {
    if d.first().is_none_or(|b| *b == b'0') || d.len() > 10 {
        return false;
    }
    std::str::from_utf8(d)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n <= u64::from(u32::MAX))
}

/// `looks_like_temp_rel_name`: `t<digits>_<digits>[_<fork>][.<digits>]`.
pub(crate) fn looks_like_temp_rel_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b"t") else {
        return false;
    };
    let backend = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let Some(rest) = rest[backend..].strip_prefix(b"_").filter(|_| backend > 0) else {
        return false;
    };
    let node = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if node == 0 {
        return false;
    }
    let mut rest = &rest[node..];
    if let Some(after) = rest.strip_prefix(b"_") {
        let Some((len, _)) = fork_name_chars(after) else {
            return false;
        };
        rest = &after[len..];
    }
    if let Some(after) = rest.strip_prefix(b".") {
        let seg = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if seg == 0 {
            return false;
        }
        rest = &after[seg..];
    }
    rest.is_empty()
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

/// The PGDATA-relative path of `stats_temp_directory` when it lies inside PGDATA (≤ 14).
fn stats_temp_rel(pgdata: &Path, version: PgVersion, opts: &PlanOptions) -> Option<Vec<u8>> {
    if version.at_least(15) {
        return None;
    }
    let dir = opts.stats_temp_directory.as_deref()?;
    let rel = if dir.is_absolute() {
        match dir.strip_prefix(pgdata) {
            Ok(r) => r.to_owned(),
            Err(_) => {
                let canon_root = fs::canonicalize(pgdata).ok()?;
                let canon_dir = fs::canonicalize(dir).ok()?;
                canon_dir.strip_prefix(&canon_root).ok()?.to_owned()
            }
        }
    } else {
        dir.to_owned()
    };
    let parts: Vec<&[u8]> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(&b'/'))
}

/// PGDATA-relative paths of tablespace directories located inside PGDATA: the main walk records
/// them as directories but does not descend (their contents go under `pg_tblspc/<oid>`).
fn tablespaces_inside(pgdata: &Path) -> Vec<Vec<u8>> {
    let Ok(root) = fs::canonicalize(pgdata) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(pgdata.join("pg_tblspc")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            if !e.file_type().ok()?.is_symlink() {
                return None;
            }
            let target = fs::canonicalize(e.path()).ok()?;
            let rel = target.strip_prefix(&root).ok()?;
            (!rel.as_os_str().is_empty()).then(|| rel.as_os_str().as_bytes().to_vec())
        })
        .collect()
}

struct Walker<'a> {
    pgdata: &'a Path,
    version: PgVersion,
    opts: &'a PlanOptions,
    stats_rel: Option<Vec<u8>>,
    skip_dirs: Vec<Vec<u8>>,
    dirs: Vec<PlanDir>,
    files: Vec<PlanFile>,
    control: Option<PlanFile>,
    tablespaces: Vec<(u32, PathBuf)>,
    excluded: Vec<(RelPath, Exclusion)>,
    warnings: Vec<String>,
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// A directory's entries with their names, sorted by name.
type Listing = Vec<(Vec<u8>, DirEntry)>;

/// A directory's entries sorted by name; `None` if the directory vanished.
fn list_dir(dir: &Path) -> Result<Option<Listing>, FsError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(FsError::new("read directory", dir, e)),
    };
    let mut entries = Vec::new();
    for e in rd {
        let e = e.ctx("read directory", dir)?;
        entries.push((e.file_name().as_bytes().to_vec(), e));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(entries))
}

/// `lstat` of an entry; `None` if it vanished.
fn entry_meta(e: &DirEntry) -> Result<Option<Metadata>, FsError> {
    match e.metadata() {
        Ok(m) => Ok(Some(m)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(FsError::new("inspect", e.path(), err)),
    }
}

impl Walker<'_> {
    fn walk(&mut self, dir: &Path, rel: &RelPath) -> Result<(), PlanError> {
        let Some(entries) = list_dir(dir)? else {
            return Ok(());
        };
        for (name, entry) in &entries {
            let child = rel.join(name);
            let mut decision = classify(child.as_bytes(), self.version);
            if decision == Decision::Include && self.stats_rel.as_deref() == Some(child.as_bytes())
            {
                decision = Decision::EmptyDir;
            }
            match decision {
                Decision::Exclude(why) => self.excluded.push((child, why)),
                Decision::UnlessInitFork { init_fork } => {
                    let has_init = entries
                        .binary_search_by(|(n, _)| n.as_slice().cmp(init_fork.as_bytes()))
                        .is_ok();
                    if has_init {
                        self.excluded.push((child, Exclusion::UnloggedRelation));
                    } else {
                        self.include(entry, child, rel)?;
                    }
                }
                Decision::ControlFile => match entry_meta(entry)? {
                    Some(meta) if meta.is_file() => {
                        self.control = Some(plan_file(child, entry.path(), &meta));
                    }
                    _ => {}
                },
                Decision::EmptyDir | Decision::WalDir => {
                    let Some(meta) = entry_meta(entry)? else {
                        continue;
                    };
                    let mode = if meta.is_dir() {
                        Some(meta.mode() & 0o7777)
                    } else if meta.is_symlink() {
                        // Written as a directory, like pg_basebackup's convert_link_to_directory.
                        Some(
                            fs::metadata(entry.path())
                                .ok()
                                .filter(Metadata::is_dir)
                                .map_or(0o700, |m| m.mode() & 0o7777),
                        )
                    } else {
                        None
                    };
                    match mode {
                        Some(mode) => {
                            if decision == Decision::WalDir {
                                let mut subdirs = vec![&b"archive_status"[..]];
                                if self.version.at_least(17) {
                                    subdirs.push(b"summaries");
                                }
                                let subs =
                                    subdirs.iter().map(|s| child.join(s)).collect::<Vec<_>>();
                                self.dirs.push(PlanDir {
                                    rel_path: child,
                                    mode,
                                });
                                for rel_path in subs {
                                    self.dirs.push(PlanDir { rel_path, mode });
                                }
                            } else {
                                self.dirs.push(PlanDir {
                                    rel_path: child,
                                    mode,
                                });
                            }
                        }
                        None => self.include(entry, child, rel)?,
                    }
                }
                Decision::Include => self.include(entry, child, rel)?,
            }
        }
        Ok(())
    }

    /// An entry the name rules keep: by its type.
    fn include(
        &mut self,
        entry: &DirEntry,
        child: RelPath,
        parent: &RelPath,
    ) -> Result<(), PlanError> {
        let Some(meta) = entry_meta(entry)? else {
            return Ok(());
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            if parent.as_bytes() == b"pg_tblspc" {
                self.tablespace(entry, child)?;
            } else {
                self.special(&entry.path());
            }
        } else if ft.is_dir() {
            self.dirs.push(PlanDir {
                rel_path: child.clone(),
                mode: meta.mode() & 0o7777,
            });
            if !self.skip_dirs.iter().any(|d| d == child.as_bytes()) {
                self.walk(&entry.path(), &child)?;
            }
        } else if ft.is_file() {
            self.files.push(plan_file(child, entry.path(), &meta));
        } else {
            self.special(&entry.path());
        }
        Ok(())
    }

    fn special(&mut self, path: &Path) {
        self.warnings
            .push(format!("skipping special file \"{}\"", path.display()));
    }

    /// `pg_tblspc/<oid>` symbolic link: stored as a directory holding the version directory.
    fn tablespace(&mut self, entry: &DirEntry, child: RelPath) -> Result<(), PlanError> {
        let link = entry.path();
        let oid = std::str::from_utf8(child.file_name())
            .ok()
            .filter(|s| all_digits(s.as_bytes()))
            .and_then(|s| s.parse::<u32>().ok());
        let Some(oid) = oid else {
            self.warnings.push(format!(
                "skipping special file \"{}\" (a symbolic link in pg_tblspc whose name is not a \
                 tablespace OID)",
                link.display()
            ));
            return Ok(());
        };
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(FsError::new("read tablespace link", link, e).into()),
        };
        self.tablespaces.push((oid, target.clone()));
        let location = if target.is_relative() {
            self.pgdata.join("pg_tblspc").join(&target)
        } else {
            target.clone()
        };
        let meta = match fs::metadata(&location) {
            Ok(m) if m.is_dir() => m,
            Ok(_) | Err(_) => {
                self.warnings.push(format!(
                    "tablespace {oid}: its location \"{}\" is not a readable directory; the \
                     backup holds an empty pg_tblspc/{oid}",
                    target.display()
                ));
                self.dirs.push(PlanDir {
                    rel_path: child,
                    mode: 0o700,
                });
                return Ok(());
            }
        };
        self.dirs.push(PlanDir {
            rel_path: child.clone(),
            mode: meta.mode() & 0o7777,
        });
        let Some(entries) = list_dir(&location)? else {
            return Ok(());
        };
        let wanted = self
            .opts
            .catalog_version
            .map(|c| format!("PG_{}_{c}", self.version.major_name()));
        for (name, e) in &entries {
            let ours = match &wanted {
                Some(w) => name.as_slice() == w.as_bytes(),
                None => is_tablespace_version_dir(name, self.version),
            };
            if !ours {
                continue;
            }
            let path = e.path();
            // lstat: PostgreSQL creates the version directory itself (tablespace.c,
            // create_tablespace_directories). A link there was planted by whoever can write
            // the tablespace (or a copy of PGDATA): following it would copy any directory
            // it names — root's, when root runs the backup or a `--from-copy` restore.
            let Some(m) = entry_meta(e)? else {
                continue;
            };
            if m.file_type().is_symlink() {
                return Err(PlanError::VersionDirLink {
                    oid,
                    path,
                    points_to: fs::read_link(e.path()).unwrap_or_default(),
                });
            }
            if !m.is_dir() {
                continue;
            }
            let rel = child.join(name);
            self.dirs.push(PlanDir {
                rel_path: rel.clone(),
                mode: m.mode() & 0o7777,
            });
            self.walk(&path, &rel)?;
        }
        Ok(())
    }
}

fn plan_file(rel_path: RelPath, source: PathBuf, meta: &Metadata) -> PlanFile {
    PlanFile {
        rel_path,
        source,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
    }
}
