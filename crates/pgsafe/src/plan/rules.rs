//! The name rules of the backup plan (rules 1–7 of [`super`]'s documentation): what a
//! backup-relative path is (included, excluded, kept empty, pg_control, the WAL directory),
//! decided from its name and the server's version alone. Pure: no IO.

use std::fmt;

use crate::layout::{COMPLETE_MARKER, INCOMPLETE_MARKER, REMOVED_LABEL_FILE, RESTORE_MARKER_FILE};
use crate::types::PgVersion;

#[cfg(test)]
mod tests;

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
/// ([`COMPLETE_MARKER`], [`INCOMPLETE_MARKER`]), the restore marker ([`RESTORE_MARKER_FILE`]) and
/// the label `doctor --fix` renamed ([`REMOVED_LABEL_FILE`]). `backup_manifest` is rule 3.
pub const PGSAFE_FILES: [&str; 4] = [
    COMPLETE_MARKER,
    INCOMPLETE_MARKER,
    RESTORE_MARKER_FILE,
    REMOVED_LABEL_FILE,
];

/// A half-written file of pgsafe's durable writes, left behind when a restore or backup was
/// killed mid-write: `.<name>.pgsafe-tmp` (restore) or `.<name>.pgsafe-tmp-<pid>`
/// ([`crate::fsutil`]). At any depth, like PostgreSQL's own `*.tmp` files (rule 3).
pub(super) fn is_pgsafe_temp(name: &[u8]) -> bool {
    const TMP: &[u8] = b".pgsafe-tmp";
    if name.first() != Some(&b'.') {
        return false;
    }
    name.ends_with(TMP)
        || name
            .windows(TMP.len() + 1)
            .any(|w| w.starts_with(TMP) && w[TMP.len()] == b'-')
}

/// Applies the name rules (`sendDir` and its `excludeFiles`/`excludeDirContents` tables in
/// `src/backend/backup/basebackup.c`, `src/backend/replication/basebackup.c` before 15) to a
/// backup-relative path (`base/5/16384_vm`) for a server version. Pure: the caller supplies the file type and the directory listing (rules 6
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

pub(super) fn all_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// `PG_<major>_<digits>`: a tablespace version directory of this major.
pub(super) fn is_tablespace_version_dir(name: &[u8], version: PgVersion) -> bool {
    let prefix = format!("PG_{}_", version.major_name());
    name.strip_prefix(prefix.as_bytes()).is_some_and(all_digits)
}

/// Whether files directly in `parent` can be relation files: `global`, `base/<db>` or
/// `pg_tblspc/<oid>/PG_<major>_<cat>/<db>`.
pub(super) fn is_relation_dir(parent: &[u8], version: PgVersion) -> bool {
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
pub(super) fn fork_name_chars(s: &[u8]) -> Option<(usize, Fork)> {
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

pub(super) fn fits_u32_without_leading_zero(d: &[u8]) -> bool {
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
