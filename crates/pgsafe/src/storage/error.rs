//! Errors of the storage interface: every failure carries a [`ErrorKind`] that callers (and the
//! retry decorator) act on without parsing messages, the operation, the object's name, and the
//! underlying error as its source.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use nix::errno::Errno;

/// What went wrong, in the terms a caller decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No object of that name.
    NotFound,
    /// A write-once put met an object of that name with other content.
    Conflict,
    /// Worth trying again: a timeout, throttling, an interrupted call, a reset connection.
    Transient,
    /// The storage refused access (file permissions, a read-only mount, credentials).
    PermissionDenied,
    /// The storage is full or over its quota.
    NoSpace,
    /// The name cannot be an object name (a `..` or absolute path, a NUL byte, an empty
    /// component, a reserved temporary name).
    InvalidName,
    /// Something stored where an object or its folder should be is not one: a symbolic link, a
    /// special file, a file where a folder is needed. Never followed or read.
    NotAnObject,
    /// Anything else (an IO error without a better kind).
    Other,
}

impl ErrorKind {
    /// Whether trying the same operation again may succeed.
    pub fn is_transient(self) -> bool {
        self == ErrorKind::Transient
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "no such object",
            ErrorKind::Conflict => {
                "an object of that name already exists with different content; objects are \
                 written once and never replaced (is another writer, or a restored copy, \
                 writing to the same place?)"
            }
            ErrorKind::Transient => "a temporary failure",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::NoSpace => "no space left in the storage",
            ErrorKind::InvalidName => "not a valid object name",
            ErrorKind::NotAnObject => {
                "not a regular file or folder (a symbolic link or special file is never \
                 followed or read)"
            }
            ErrorKind::Other => "failed",
        }
    }
}

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// A failed storage operation.
#[derive(Debug)]
pub struct StorageError {
    kind: ErrorKind,
    action: &'static str,
    name: String,
    detail: Option<String>,
    source: Option<Source>,
}

impl StorageError {
    /// An error of `kind` while doing `action` ("read", "store", "list"…) to `name`.
    pub fn new(kind: ErrorKind, action: &'static str, name: impl fmt::Display) -> StorageError {
        StorageError {
            kind,
            action,
            name: name.to_string(),
            detail: None,
            source: None,
        }
    }

    /// Adds a sentence saying more than the kind does.
    pub fn with_detail(mut self, detail: impl Into<String>) -> StorageError {
        self.detail = Some(detail.into());
        self
    }

    /// Adds the underlying error.
    pub fn with_source(mut self, source: impl Into<Source>) -> StorageError {
        self.source = Some(source.into());
        self
    }

    /// An IO error, its kind derived from the error number or [`io::ErrorKind`]. An
    /// `io::Error` that wraps a [`StorageError`] (from a stream) gives that error's kind.
    pub fn io(action: &'static str, name: impl fmt::Display, e: io::Error) -> StorageError {
        let kind = io_kind(&e);
        StorageError::new(kind, action, name).with_source(e)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The object (or prefix) the operation was about.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This error as an `io::Error` (for `Read`/`Write` implementations), keeping it as the
    /// source so [`StorageError::io`] recovers the kind.
    pub fn into_io(self) -> io::Error {
        let kind = match self.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::Transient => io::ErrorKind::TimedOut,
            ErrorKind::InvalidName => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.action, self.name)?;
        match (&self.detail, &self.source) {
            (Some(d), _) => f.write_str(d),
            // The source says more than the kind for IO errors ("Read-only file system").
            (None, Some(s)) if !matches!(self.kind, ErrorKind::Conflict) => write!(f, "{s}"),
            _ => f.write_str(self.kind.describe()),
        }
    }
}

impl StdError for StorageError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// The kind of an IO error.
pub(crate) fn io_kind(e: &io::Error) -> ErrorKind {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<StorageError>()) {
        return inner.kind;
    }
    if let Some(n) = e.raw_os_error() {
        return errno_kind(Errno::from_raw(n));
    }
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            ErrorKind::PermissionDenied
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::NoSpace,
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ErrorKind::Transient
        }
        io::ErrorKind::InvalidInput => ErrorKind::InvalidName,
        _ => ErrorKind::Other,
    }
}

/// The kind of an error number from a system call.
pub(crate) fn errno_kind(e: Errno) -> ErrorKind {
    match e {
        Errno::ENOENT => ErrorKind::NotFound,
        Errno::EACCES | Errno::EPERM | Errno::EROFS => ErrorKind::PermissionDenied,
        Errno::ENOSPC | Errno::EDQUOT => ErrorKind::NoSpace,
        Errno::EINTR | Errno::EAGAIN | Errno::ETIMEDOUT => ErrorKind::Transient,
        // O_NOFOLLOW on a link; O_DIRECTORY on something else.
        Errno::ELOOP | Errno::ENOTDIR | Errno::EISDIR => ErrorKind::NotAnObject,
        Errno::ENAMETOOLONG => ErrorKind::InvalidName,
        _ => ErrorKind::Other,
    }
}

/// Shorthand for results of the storage interface.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
