//! A PostgreSQL data directory as pgsafe sees it: recognise one, and read (never write) what its
//! control file, backup label, tablespace map, signal files and `postmaster.pid` say.
//!
//! `inspect` reports facts; `doctor` (later) draws conclusions from them.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::control::{self, ControlError, ControlFile};
use crate::label::{BackupLabel, MapEscaping, TablespaceMap};
use crate::types::PgVersion;

/// Files whose mere presence matters for recovery, in the order they are reported.
pub const MARKER_FILES: [&str; 7] = [
    "recovery.signal",
    "standby.signal",
    "recovery.conf",
    "recovery.done",
    "backup_label.old",
    "tablespace_map.old",
    "postmaster.opts",
];

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} is not a PostgreSQL data directory: {missing} is missing (a data directory \
         holds PG_VERSION, global/pg_control, base/ …); pass the directory initdb created"
    )]
    NotADataDirectory {
        path: PathBuf,
        missing: &'static str,
    },
    #[error("read {what} in {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("read PG_VERSION in {path}: {source}")]
    Version {
        path: PathBuf,
        source: crate::types::TypeError,
    },
    #[error("read pg_control of {path}: {source}")]
    Control { path: PathBuf, source: ControlError },
}

/// The most `pgsafe inspect` and `pgsafe doctor` read of a small text file of a data directory
/// (`backup_label`, `tablespace_map`, `postmaster.pid`, a configuration file, a restore marker,
/// a backup history file). PostgreSQL's own are a few kB; a tablespace map with thousands of
/// entries stays far below this.
pub const MAX_SMALL_FILE: u64 = 16 << 20;

/// What kind of thing a path is, in words ("a FIFO (named pipe)"), for files that are not
/// regular files.
fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, ft: &fs::FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is {}, not a regular file: pgsafe does not read it (a data directory's files are \
             regular files; something replaced this one)",
            path.display(),
            kind_of(ft)
        ),
    )
}

/// Opens `path` for reading only if it is a regular file: never blocks on a FIFO or device
/// (`O_NONBLOCK`, type checked before and after opening), and with `follow_links == false`
/// never follows a symbolic link (`O_NOFOLLOW`).
pub fn open_regular(path: &Path, follow_links: bool) -> io::Result<fs::File> {
    let meta = if follow_links {
        fs::metadata(path)?
    } else {
        fs::symlink_metadata(path)?
    };
    if !meta.file_type().is_file() {
        return Err(not_regular(path, &meta.file_type()));
    }
    let mut flags = nix::fcntl::OFlag::O_NONBLOCK.bits();
    if !follow_links {
        flags |= nix::fcntl::OFlag::O_NOFOLLOW.bits();
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    // The path may have been swapped between the check and the open.
    let ft = f.metadata()?.file_type();
    if !ft.is_file() {
        return Err(not_regular(path, &ft));
    }
    Ok(f)
}

/// Reads a regular file of at most `max` bytes (see [`open_regular`]); a larger file is an
/// error (`InvalidData`), read no further than `max + 1` bytes.
pub fn read_bounded(path: &Path, max: u64, follow_links: bool) -> io::Result<Vec<u8>> {
    let f = open_regular(path, follow_links)?;
    let mut out = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {max} bytes, far more than such a file ever holds: pgsafe does \
                 not read it",
                path.display()
            ),
        ));
    }
    Ok(out)
}

/// True for the errors of [`read_bounded`] that describe the file itself (wrong type, too
/// large, a symbolic link not followed) rather than a failure to read it.
pub fn is_refusal(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData || e.raw_os_error() == Some(nix::libc::ELOOP)
}

/// A directory that looks like a PostgreSQL data directory (has `PG_VERSION` and
/// `global/pg_control`).
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Checks that `path` is a data directory; reads nothing else.
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir, DataDirError> {
        let path = path.as_ref().to_path_buf();
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DataDirError::Missing { path });
            }
            Err(source) => {
                return Err(DataDirError::Io {
                    what: "directory".into(),
                    path,
                    source,
                });
            }
        };
        if !meta.is_dir() {
            return Err(DataDirError::NotADirectory { path });
        }
        for missing in ["PG_VERSION", "global/pg_control"] {
            if !path.join(missing).is_file() {
                return Err(DataDirError::NotADataDirectory { path, missing });
            }
        }
        Ok(DataDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The major version named by `PG_VERSION`.
    pub fn pg_version(&self) -> Result<PgVersion, DataDirError> {
        let bytes = self.read_required("PG_VERSION")?;
        PgVersion::from_pg_version_file(&bytes).map_err(|source| DataDirError::Version {
            path: self.path.clone(),
            source,
        })
    }

    /// Decodes `global/pg_control` (retrying torn reads of a live server's file).
    pub fn control(&self) -> Result<ControlFile, DataDirError> {
        control::read_control_file(&self.path.join("global/pg_control")).map_err(|source| {
            DataDirError::Control {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Reads a file relative to the data directory; `Ok(None)` if it does not exist.
    /// Only regular files are read (a FIFO, device or symbolic link there is an error, never
    /// a hang), and at most [`MAX_SMALL_FILE`] bytes.
    pub fn read_optional(&self, rel: &str) -> Result<Option<Vec<u8>>, DataDirError> {
        match read_bounded(&self.path.join(rel), MAX_SMALL_FILE, false) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DataDirError::Io {
                what: rel.to_owned(),
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Like [`DataDir::read_optional`], but a file pgsafe refuses to read (not a regular file,
    /// far too large) is reported as `Err(reason)` instead of failing.
    fn read_soft(&self, rel: &str) -> Result<Option<Result<Vec<u8>, String>>, DataDirError> {
        match read_bounded(&self.path.join(rel), MAX_SMALL_FILE, false) {
            Ok(b) => Ok(Some(Ok(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if is_refusal(&e) => Ok(Some(Err(e.to_string()))),
            Err(source) => Err(DataDirError::Io {
                what: rel.to_owned(),
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn read_required(&self, rel: &'static str) -> Result<Vec<u8>, DataDirError> {
        self.read_optional(rel)?
            .ok_or(DataDirError::NotADataDirectory {
                path: self.path.clone(),
                missing: rel,
            })
    }

    /// Everything `pgsafe inspect` reports. Unparseable optional files are reported with their
    /// error instead of failing the whole inspection; a bad pg_control is an error.
    pub fn inspect(&self) -> Result<DataDirReport, DataDirError> {
        let pg_version = self.pg_version()?;
        let control = self.control()?;
        let backup_label = self.read_soft("backup_label")?.map(|r| match r {
            Ok(b) => LabelFile::of(&b),
            Err(e) => LabelFile::unreadable(e),
        });
        let tablespace_map = self.read_soft("tablespace_map")?.map(|r| match r {
            Ok(b) => MapFile::of(&b, MapEscaping::for_version(pg_version)),
            Err(e) => MapFile {
                text: String::new(),
                parsed: None,
                error: Some(e),
            },
        });
        // A postmaster.pid that is not a regular file names no process.
        let postmaster_pid = self
            .read_soft("postmaster.pid")?
            .map(|r| PostmasterPid::parse(&r.unwrap_or_default()))
            .map(|pid| pid.with_liveness());
        let markers = MARKER_FILES
            .iter()
            .filter(|name| self.path.join(name).exists())
            .map(|name| (*name).to_owned())
            .collect();
        Ok(DataDirReport {
            path: self.path.clone(),
            pg_major: pg_version.major_name(),
            control,
            backup_label,
            tablespace_map,
            postmaster_pid,
            markers,
        })
    }
}

/// What `pgsafe inspect` prints.
#[derive(Debug, Serialize)]
pub struct DataDirReport {
    pub path: PathBuf,
    /// The major version named by `PG_VERSION` (`"15"`, `"9.6"`): that file holds no minor.
    pub pg_major: String,
    pub control: ControlFile,
    pub backup_label: Option<LabelFile>,
    pub tablespace_map: Option<MapFile>,
    pub postmaster_pid: Option<PostmasterPid>,
    /// Which of [`MARKER_FILES`] exist.
    pub markers: Vec<String>,
}

/// A `backup_label` as found on disk: its text, and what it parses to (or why it does not).
#[derive(Debug, Serialize)]
pub struct LabelFile {
    pub text: String,
    pub parsed: Option<BackupLabel>,
    pub error: Option<String>,
}

impl LabelFile {
    /// A label file pgsafe would not read (see [`read_bounded`]).
    pub fn unreadable(reason: String) -> LabelFile {
        LabelFile {
            text: String::new(),
            parsed: None,
            error: Some(reason),
        }
    }

    pub fn of(bytes: &[u8]) -> LabelFile {
        let text = String::from_utf8_lossy(bytes).into_owned();
        match BackupLabel::parse(bytes) {
            Ok(l) => LabelFile {
                text,
                parsed: Some(l),
                error: None,
            },
            Err(e) => LabelFile {
                text,
                parsed: None,
                error: Some(e.to_string()),
            },
        }
    }
}

/// A `tablespace_map` as found on disk.
#[derive(Debug, Serialize)]
pub struct MapFile {
    pub text: String,
    pub parsed: Option<TablespaceMap>,
    pub error: Option<String>,
}

impl MapFile {
    pub fn of(bytes: &[u8], escaping: MapEscaping) -> MapFile {
        let text = String::from_utf8_lossy(bytes).into_owned();
        match TablespaceMap::parse(bytes, escaping) {
            Ok(m) => MapFile {
                text,
                parsed: Some(m),
                error: None,
            },
            Err(e) => MapFile {
                text,
                parsed: None,
                error: Some(e.to_string()),
            },
        }
    }
}

/// `postmaster.pid`: line 1 pid, 2 data directory, 3 start time (epoch seconds), 4 port,
/// 5 socket directory, 6 listen address, 7 shared memory key, 8 status (10+: `starting`,
/// `stopping`, `ready`, `standby`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostmasterPid {
    pub pid: Option<i32>,
    pub data_directory: Option<String>,
    pub start_time: Option<i64>,
    pub port: Option<u16>,
    pub socket_directory: Option<String>,
    pub listen_address: Option<String>,
    pub status: Option<String>,
    /// Filled by [`PostmasterPid::with_liveness`]: is a process with that pid running now?
    pub process_running: Option<bool>,
}

impl PostmasterPid {
    /// Pure parse; tolerant (a half-written file yields `None` fields).
    pub fn parse(bytes: &[u8]) -> PostmasterPid {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.split('\n').collect();
        let line = |i: usize| lines.get(i).map(|l| l.trim()).filter(|l| !l.is_empty());
        PostmasterPid {
            pid: line(0)
                .and_then(|l| l.parse().ok())
                .filter(|p: &i32| *p > 0),
            data_directory: line(1).map(str::to_owned),
            start_time: line(2).and_then(|l| l.parse().ok()),
            port: line(3).and_then(|l| l.parse().ok()),
            socket_directory: line(4).map(str::to_owned),
            listen_address: line(5).map(str::to_owned),
            status: line(7).map(str::to_owned),
            process_running: None,
        }
    }

    /// Checks whether the recorded pid names a running process (`kill(pid, 0)`; EPERM counts as
    /// running). A running process with that pid may still be an unrelated program that reused it.
    pub fn with_liveness(mut self) -> PostmasterPid {
        self.process_running = self.pid.map(process_exists);
        self
    }
}

/// Whether the System V shared memory segment a `postmaster.pid` names (its seventh line: key
/// and id) still has processes attached — the check PostgreSQL makes before it takes over a
/// data directory whose pid file names a process that seems gone (`PGSharedMemoryIsInUse`,
/// src/backend/port/sysv_shmem.c): a server in another PID namespace (a container sharing the
/// volume) is invisible to `kill(pid, 0)` here, but its processes are still attached. `None`:
/// the pid file names no segment, or the kernel's list (`/proc/sysvipc/shm`) cannot be read
/// (nor can a segment in another IPC namespace be seen).
pub fn shared_memory_in_use(pid_file: &[u8]) -> Option<bool> {
    let text = String::from_utf8_lossy(pid_file);
    let mut fields = text.split('\n').nth(6)?.split_whitespace();
    let _key: u64 = fields.next()?.parse().ok()?;
    let id: i64 = fields.next()?.parse().ok()?;
    let list = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    shm_attached(&list, id)
}

/// The attach count of segment `id` in `/proc/sysvipc/shm`'s text, as "is it above 0"
/// (`Some(false)`: not listed, so removed).
fn shm_attached(list: &str, id: i64) -> Option<bool> {
    let mut lines = list.lines();
    let head: Vec<&str> = lines.next()?.split_whitespace().collect();
    let id_col = head.iter().position(|h| *h == "shmid")?;
    let nattch_col = head.iter().position(|h| *h == "nattch")?;
    for l in lines {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.get(id_col).and_then(|c| c.parse::<i64>().ok()) == Some(id) {
            return Some(cols.get(nattch_col)?.parse::<u64>().ok()? > 0);
        }
    }
    Some(false)
}

fn process_exists(pid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_attach_counts_are_read_from_the_kernels_list() {
        let list = "       key      shmid perms       size  cpid  lpid nattch   uid\n  \
                    26272001    2523136   600         56 10659 13517      0   999\n  \
                    3477703    2228225   600         56   771   798      7   999\n";
        assert_eq!(shm_attached(list, 2228225), Some(true));
        assert_eq!(shm_attached(list, 2523136), Some(false));
        assert_eq!(shm_attached(list, 42), Some(false));
        assert_eq!(shm_attached("garbage", 42), None);
        assert_eq!(shared_memory_in_use(b"4242\n/d\n1\n5432\n/tmp\n\n"), None);
    }

    #[test]
    fn postmaster_pid_parses_a_real_file() {
        let text =
            b"4242\n/var/lib/pg/data\n1763716000\n5432\n/tmp\n\n  5432001    131072\nready   \n";
        let p = PostmasterPid::parse(text);
        assert_eq!(p.pid, Some(4242));
        assert_eq!(p.port, Some(5432));
        assert_eq!(p.socket_directory.as_deref(), Some("/tmp"));
        assert_eq!(p.listen_address, None);
        assert_eq!(p.status.as_deref(), Some("ready"));
    }

    #[test]
    fn postmaster_pid_tolerates_garbage() {
        for b in [&b""[..], b"\n\n", b"abc", b"-5\n", b"\xff\xfe"] {
            let p = PostmasterPid::parse(b);
            assert_eq!(p.pid, None);
        }
    }

    #[test]
    fn open_rejects_what_is_not_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataDir::open(dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, DataDirError::Missing { .. }), "{err}");
        let err = DataDir::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("PG_VERSION is missing"), "{err}");
        fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        let err = DataDir::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("global/pg_control is missing"),
            "{err}"
        );
        let file = dir.path().join("PG_VERSION");
        assert!(matches!(
            DataDir::open(&file),
            Err(DataDirError::NotADirectory { .. })
        ));
    }

    #[test]
    fn own_process_is_running() {
        assert!(process_exists(std::process::id() as i32));
    }
}
