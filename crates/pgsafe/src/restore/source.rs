//! What a restore reads: a pgsafe backup folder (plain or compressed layout, described by its
//! manifest), or a file-system copy of PGDATA made in snapshot mode (`--from-copy`: a `cp -a` or
//! snapshot taken between `pgsafe start` and `pgsafe stop`, with the `backup_label` and
//! `tablespace_map` that `pgsafe stop --output-dir` wrote into it).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::checksum::ChecksumAlgorithm;
use crate::codec::Compression;
use crate::control::ControlFile;
use crate::fsutil::{self, FsError, IoContext};
use crate::info::{BackupInfo, FileOwner, WalMode};
use crate::label::{BackupLabel, MapEscaping, TablespaceMap};
use crate::layout::{
    self, COMPLETE_MARKER, CONTROL_FILE, LABEL_FILE, MANIFEST_FILE, MANIFEST_LIMIT, MAP_FILE,
    SMALL_FILE_LIMIT, StoredBackup, WAL_DIR,
};
use crate::manifest::Manifest;
use crate::plan::{BackupPlan, PlanOptions, RelPath};
use crate::storage::{ObjectReader, StorageError};
use crate::types::PgVersion;
use crate::verify;

use super::{BadCopy, BadManifest, RestoreError};

/// One file to restore.
#[derive(Debug, Clone)]
pub(super) struct SourceFile {
    /// PGDATA-relative path (`pg_tblspc/<oid>/…` for tablespace files).
    pub rel: RelPath,
    /// Where it is read from.
    pub path: PathBuf,
    /// Original (uncompressed) size.
    pub size: u64,
    pub compression: Compression,
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    /// For a stored backup: the stored path below its root.
    pub stored: Option<RelPath>,
}

/// A source file opened for reading.
pub(super) enum SourceRead<'a> {
    /// A local file (a backup folder's, or a copy's): copies between local files are kernel
    /// copies.
    File(File),
    /// An object of another storage backend.
    Stream(ObjectReader<'a>),
}

impl SourceRead<'_> {
    /// As a reader, whatever it is.
    pub fn into_reader<'a>(self) -> Box<dyn Read + Send + 'a>
    where
        Self: 'a,
    {
        match self {
            SourceRead::File(f) => Box::new(f),
            SourceRead::Stream(r) => r,
        }
    }
}

impl SourceFile {
    /// Opens the file for reading, never through a symbolic link: a stored backup's through its
    /// storage backend (a folder's below it, refusing hard links); for a copy, the last
    /// component (the copy's tablespaces are reached through its `pg_tblspc` links, as the plan
    /// listed them).
    pub fn open<'a>(&self, store: Option<&'a StoredBackup>) -> io::Result<SourceRead<'a>> {
        let f = match (&self.stored, store) {
            (Some(rel), Some(store)) => {
                let Some(opened) = store.open_file(rel) else {
                    return store
                        .read(rel)
                        .map(SourceRead::Stream)
                        .map_err(StorageError::into_io);
                };
                let f = opened.map_err(StorageError::into_io)?;
                if f.metadata()?.nlink() > 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is a hard link: {}",
                            rel.as_path().display(),
                            layout::HARD_LINK_WHY
                        ),
                    ));
                }
                return Ok(SourceRead::File(f));
            }
            (Some(_), None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a backup file opened without its backup",
                ));
            }
            (None, _) => crate::datadir::open_regular(&self.path, false)?,
        };
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a regular file", self.path.display()),
            ));
        }
        Ok(SourceRead::File(f))
    }
}

/// Everything a restore needs to know about its source.
#[derive(Debug)]
pub(super) struct Source {
    /// The backup or copy, as messages name it.
    pub root: PathBuf,
    /// The stored backup its files are read from (`None` for a copy).
    pub store: Option<StoredBackup>,
    pub from_copy: bool,
    pub version: PgVersion,
    pub label: BackupLabel,
    /// Tablespaces with their original locations (from the source's `tablespace_map`).
    pub tablespaces: Vec<(u32, PathBuf)>,
    /// Directories to recreate, PGDATA-relative, parents first.
    pub dirs: Vec<RelPath>,
    /// Data files, `pg_control` excluded.
    pub files: Vec<SourceFile>,
    pub control: SourceFile,
    /// WAL file names restored into `pg_wal/` (marked `.done` so they are not archived again).
    pub wal_names: Vec<String>,
    pub info: Option<BackupInfo>,
    /// The original owner of PGDATA, if known.
    pub owner: Option<FileOwner>,
    /// PGDATA had group access (0750).
    pub group_access: bool,
    /// The WAL recovery needs is in the restored `pg_wal/`.
    pub wal_included: bool,
    /// Where the WAL must come from otherwise, in words.
    pub wal_source: String,
    pub warnings: Vec<String>,
    /// What the verification's WAL walk found after the consistency point (full verification
    /// only).
    pub backup_end_scan: Option<crate::verify::BackupEndScan>,
}

/// Recovery files of the server the backup was taken from (a standby has `standby.signal` or a
/// `recovery.conf` with `standby_mode`): not restored — the restore writes the recovery settings
/// asked for.
pub(super) const SOURCE_RECOVERY_FILES: [&str; 3] =
    ["standby.signal", "recovery.signal", "recovery.conf"];

/// What the checks before writing need, read cheaply (before a full verification).
#[derive(Debug, Clone)]
pub(super) struct Outline {
    pub version: PgVersion,
    pub tablespaces: Vec<(u32, PathBuf)>,
    pub wal_included: bool,
    /// The WAL is in the repository's archive (the backup waited for it there).
    pub wal_in_repository: bool,
    pub wal_source: String,
    pub owner: Option<FileOwner>,
}

/// The backup folder `root` as a stored backup (it must be a directory).
pub(super) fn open_folder(root: &Path) -> Result<StoredBackup, RestoreError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(verify::VerifyError::NotADirectory(root.to_owned()).into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(verify::VerifyError::Missing(root.to_owned()).into());
        }
        Err(e) => return Err(FsError::new("inspect", root, e).into()),
    }
    Ok(StoredBackup::folder(root)?)
}

/// Reads the stored backup's small file `rel` (never through a link): `Ok(None)` when there
/// is none.
fn read_small(store: &StoredBackup, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, FsError> {
    store
        .get(rel, limit)
        .map_err(|e| FsError::new("read", store.shown().join(rel), e.into_io()))
}

/// The outline of a stored backup: `pgsafe.json` (else: incomplete), `backup_label` present,
/// `tablespace_map`.
pub(super) fn backup_outline(store: &StoredBackup) -> Result<Outline, RestoreError> {
    let root = store.shown();
    let info: BackupInfo = match read_small(store, COMPLETE_MARKER, SMALL_FILE_LIMIT)? {
        Some(b) => BackupInfo::parse(&b).map_err(RestoreError::BadInfo)?,
        None => return Err(RestoreError::Incomplete(root.to_owned())),
    };
    // Until restore reads chains: a backup of changes alone would leave holes.
    if !info.backup_type.is_full() {
        return Err(RestoreError::NeedsChain {
            path: root.to_owned(),
            backup_type: info.backup_type,
            parent: info.parent.clone().unwrap_or_default(),
        });
    }
    if !store.exists(LABEL_FILE) {
        return Err(RestoreError::NoLabel(root.to_owned()));
    }
    Ok(Outline {
        version: info.server_version,
        tablespaces: read_map(store, info.server_version)?,
        wal_included: info.wal.mode == WalMode::Include,
        wal_in_repository: info.wal.in_repository().is_some(),
        wal_source: info.wal.source.clone(),
        owner: info.pgdata_owner.clone(),
    })
}

/// Leaves the source server's recovery files out of `files`; returns a warning per file.
fn drop_recovery_files(files: &mut Vec<SourceFile>) -> Vec<String> {
    let mut warnings = Vec::new();
    files.retain(|f| {
        let name = f.rel.as_bytes();
        match SOURCE_RECOVERY_FILES.iter().find(|r| r.as_bytes() == name) {
            Some(r) => {
                warnings.push(format!(
                    "{r} of the backed-up server (a standby) was not restored: the restored \
                     server recovers as the restore options say (as a standby only when asked)"
                ));
                false
            }
            None => true,
        }
    });
    warnings
}

fn read_label(store: &StoredBackup) -> Result<BackupLabel, RestoreError> {
    let Some(bytes) = read_small(store, LABEL_FILE, SMALL_FILE_LIMIT)? else {
        return Err(RestoreError::NoLabel(store.shown().to_owned()));
    };
    BackupLabel::parse(&bytes).map_err(RestoreError::BadLabel)
}

fn read_map(store: &StoredBackup, version: PgVersion) -> Result<Vec<(u32, PathBuf)>, RestoreError> {
    let Some(bytes) = read_small(store, MAP_FILE, SMALL_FILE_LIMIT)? else {
        return Ok(Vec::new());
    };
    let map = TablespaceMap::parse(&bytes, MapEscaping::for_version(version))
        .map_err(RestoreError::BadMap)?;
    Ok(map
        .entries()
        .iter()
        .map(|e| (e.oid, e.as_path().to_path_buf()))
        .collect())
}

/// The directories a restore makes: those the backup recorded (every directory of the data
/// directory, empty ones included), those its listing shows (a folder's; in object storage
/// only the parents of objects), and `pg_wal/archive_status` (PostgreSQL needs it to start,
/// and backups written before the list was recorded and stored in object storage lack it).
/// Sorted by bytes, parents come first.
fn backup_dirs(listing: &layout::Listing, info: &BackupInfo) -> Vec<RelPath> {
    let mut dirs: std::collections::BTreeSet<RelPath> = listing.dirs.iter().cloned().collect();
    // Read from the backup: only names that stay inside the data directory (an object name
    // has no `..`, no empty component and is relative) are taken.
    dirs.extend(
        info.directories
            .iter()
            .filter(|d| crate::storage::ObjectName::new(d.as_bytes()).is_ok())
            .map(|d| RelPath::from_bytes(d.as_bytes())),
    );
    dirs.insert(RelPath::from(WAL_DIR));
    dirs.insert(RelPath::from(format!("{WAL_DIR}/archive_status").as_str()));
    dirs.into_iter().collect()
}

/// Top-level `pg_wal/<name>` files of a listing.
fn wal_names(listing: &layout::Listing) -> Vec<String> {
    listing
        .files
        .keys()
        .filter_map(|p| std::str::from_utf8(layout::wal_file_name(p.as_bytes())?).ok())
        .map(str::to_owned)
        .filter(|n| !n.contains('/'))
        .collect()
}

impl Source {
    pub fn outline(&self) -> Outline {
        Outline {
            version: self.version,
            tablespaces: self.tablespaces.clone(),
            wal_included: self.wal_included,
            wal_in_repository: false,
            wal_source: self.wal_source.clone(),
            owner: self.owner.clone(),
        }
    }

    /// A stored pgsafe backup. The caller has verified it (completeness included).
    pub fn backup(store: &StoredBackup, info: Option<BackupInfo>) -> Result<Source, RestoreError> {
        let root = store.shown();
        let Some(info) = info else {
            return Err(RestoreError::Incomplete(root.to_owned()));
        };
        let label = read_label(store)?;
        let version = info.server_version;
        let bytes = read_small(store, MANIFEST_FILE, MANIFEST_LIMIT)?.ok_or_else(|| {
            FsError::new(
                "read",
                root.join(MANIFEST_FILE),
                io::ErrorKind::NotFound.into(),
            )
        })?;
        let manifest = Manifest::parse(&bytes).map_err(BadManifest::Parse)?;
        let listing = store.list()?;
        let compression = info.compression;
        let skip = [LABEL_FILE, MAP_FILE, COMPLETE_MARKER];
        let mut files = Vec::with_capacity(manifest.files.len());
        let mut control = None;
        for f in &manifest.files {
            if skip.iter().any(|s| s.as_bytes() == f.path.as_slice()) {
                continue;
            }
            let stored = layout::stored_path(&f.path, compression);
            let sf = SourceFile {
                rel: RelPath::from_bytes(f.path.clone()),
                path: root.join(stored.as_path()),
                size: f.size,
                compression: if stored.as_bytes() == f.path.as_slice() {
                    Compression::None
                } else {
                    compression
                },
                checksum: f.checksum.clone(),
                stored: Some(stored.clone()),
            };
            if f.path == CONTROL_FILE.as_bytes() {
                control = Some(sf);
            } else {
                files.push(sf);
            }
        }
        let Some(control) = control else {
            return Err(BadManifest::NoControlFile.into());
        };
        let wal_included = info.wal.mode == WalMode::Include;
        let mut wal = Vec::new();
        for name in wal_names(&listing) {
            let rel = RelPath::from(format!("{WAL_DIR}/{name}").as_str());
            let size = listing.files.get(&rel).copied().unwrap_or(0);
            files.push(SourceFile {
                path: root.join(rel.as_path()),
                stored: Some(rel.clone()),
                rel,
                size,
                compression: Compression::None,
                checksum: None,
            });
            wal.push(name);
        }
        let group_access = version.at_least(11)
            && match info.pgdata_mode {
                Some(m) => m & 0o070 != 0,
                // Older backups (folders): the stored files keep PGDATA's modes.
                None => store
                    .open_file(&RelPath::from("PG_VERSION"))
                    .and_then(|f| f.ok()?.metadata().ok())
                    .is_some_and(|m| m.mode() & 0o040 != 0),
            };
        let tablespaces = read_map(store, version)?;
        let dirs = backup_dirs(&listing, &info);
        let mut warnings = drop_recovery_files(&mut files);
        for t in &info.tablespaces {
            if !tablespaces.iter().any(|(oid, _)| *oid == t.oid) {
                warnings.push(format!(
                    "tablespace {} is in {COMPLETE_MARKER} but not in tablespace_map",
                    t.oid
                ));
            }
        }
        Ok(Source {
            root: root.to_owned(),
            store: Some(store.clone()),
            from_copy: false,
            version,
            label,
            tablespaces,
            dirs,
            files,
            control,
            wal_names: wal,
            owner: info.pgdata_owner.clone(),
            group_access,
            wal_included,
            wal_source: info.wal.source.clone(),
            warnings,
            info: Some(info),
            backup_end_scan: None,
        })
    }

    /// A file-system copy of PGDATA holding `backup_label` (and `tablespace_map`) from
    /// `pgsafe stop --output-dir`. Its `pg_wal/` contents are left out, as pg_basebackup leaves
    /// them out: WAL copied while the server wrote it is not trustworthy, so the WAL must come
    /// from `restore_command` or a primary.
    pub fn copy(root: &Path) -> Result<Source, RestoreError> {
        // Its small files are read like a backup folder's: whoever wrote the copy may have put
        // a link or a FIFO there (a FIFO would make the restore wait forever for a writer).
        let store = StoredBackup::folder(root)?;
        let label = read_label(&store)?;
        let Some(vbytes) = read_small(&store, "PG_VERSION", SMALL_FILE_LIMIT)? else {
            return Err(RestoreError::NotACopy(root.to_owned()));
        };
        let version = PgVersion::from_pg_version_file(&vbytes).map_err(BadCopy::Version)?;
        let control_bytes = read_small(
            &store,
            CONTROL_FILE,
            crate::control::PG_CONTROL_FILE_SIZE as u64,
        )?
        .ok_or_else(|| {
            FsError::new(
                "read",
                root.join(CONTROL_FILE),
                io::ErrorKind::NotFound.into(),
            )
        })?;
        let control = ControlFile::decode(&control_bytes).map_err(BadCopy::Control)?;
        check_copy_control(&control, version)?;
        check_copy_not_older(&control, &label)?;
        let plan = BackupPlan::build(
            root,
            version,
            &PlanOptions {
                stats_temp_directory: None,
                catalog_version: Some(control.catalog_version_no),
            },
        )
        .map_err(BadCopy::Plan)?;
        let tablespaces = read_map(&store, version)?;
        // A copy whose pg_tblspc link still points at the tablespace's own location did not
        // copy the tablespace: reading it now would not be the backup's content.
        for (oid, link) in &plan.tablespaces {
            if let Some((_, orig)) = tablespaces.iter().find(|(o, _)| o == oid) {
                if same_path(link, orig) {
                    return Err(BadCopy::LiveTablespaceLink {
                        oid: *oid,
                        location: orig.clone(),
                    }
                    .into());
                }
            }
        }
        let file = |f: &crate::plan::PlanFile| SourceFile {
            rel: f.rel_path.clone(),
            path: f.source.clone(),
            size: f.size,
            compression: Compression::None,
            checksum: None,
            stored: None,
        };
        let root_mode = fs::metadata(root).ctx("inspect", root)?.mode();
        let mut files: Vec<SourceFile> = plan.files.iter().map(file).collect();
        let mut warnings = plan.warnings.clone();
        warnings.extend(drop_recovery_files(&mut files));
        if !plan.tablespaces.is_empty() || !tablespaces.is_empty() {
            warnings.push(
                "tablespaces are read through the copy's pg_tblspc entries: they must hold the \
                 tablespace contents copied during the backup"
                    .into(),
            );
        }
        Ok(Source {
            root: root.to_owned(),
            store: None,
            from_copy: true,
            version,
            label,
            tablespaces,
            dirs: plan.dirs.iter().map(|d| d.rel_path.clone()).collect(),
            files,
            control: file(&plan.control_file),
            wal_names: Vec::new(),
            info: None,
            owner: fsutil::file_owner(root),
            group_access: version.at_least(11) && root_mode & 0o070 != 0,
            wal_included: false,
            wal_source: "restore_command (a copy's pg_wal is not used: set a restore_command \
                         reading the WAL archive)"
                .into(),
            warnings,
            backup_end_scan: None,
        })
    }
}

fn check_copy_control(control: &ControlFile, version: PgVersion) -> Result<(), RestoreError> {
    match control.major_version() {
        Some(v) if v.major() == version.major() => Ok(()),
        other => Err(BadCopy::VersionMismatch {
            version: version.major_name(),
            control: other.map_or("an unknown version".to_owned(), |v| v.major_name()),
        }
        .into()),
    }
}

/// A copy taken after the backup started holds a `pg_control` whose latest checkpoint is at
/// least the label's: the backup's start returns only once its checkpoint (on a standby, the
/// restartpoint it starts from) is in `pg_control` (`do_pg_backup_start` in
/// src/backend/access/transam/xlog.c). An older one means this copy of PGDATA predates the
/// backup — a snapshot taken before the start, or the label of a later backup put beside it —
/// and recovery from the label would skip the WAL between the two: silent corruption.
fn check_copy_not_older(control: &ControlFile, label: &BackupLabel) -> Result<(), RestoreError> {
    let label_checkpoint = label.checkpoint_lsn();
    if control.checkpoint < label_checkpoint {
        return Err(BadCopy::OlderThanLabel {
            control: control.checkpoint,
            label: label_checkpoint,
        }
        .into());
    }
    Ok(())
}

/// Same location, ignoring trailing slashes and resolving symbolic links where possible.
pub(super) fn same_path(a: &Path, b: &Path) -> bool {
    let norm = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.components().collect());
    norm(a) == norm(b)
}
