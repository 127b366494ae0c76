//! A failed command: its error kind, its exit code (the table in `exit`), and how it is shown —
//! the message on standard error and, with `--json`, `{"error": {"kind": …, "message": …}}` on
//! standard output, so a script reading the JSON never gets an empty document.

use std::error::Error as StdError;
use std::fmt;

use pgsafe::error::{ErrorKind, HasKind};
use serde::Serialize;

use crate::exit;

/// An error the CLI itself raises (an option it refuses, a message it adds advice to), with the
/// kind it has. The wrapped library error, if any, stays the source.
#[derive(Debug)]
pub struct CliError {
    kind: ErrorKind,
    message: String,
    source: Option<anyhow::Error>,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CliError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn StdError + 'static))
    }
}

/// An error of `kind` the CLI raises itself.
pub fn error(kind: ErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CliError {
        kind,
        message: message.into(),
        source: None,
    })
}

/// The request is not valid as given (an option value or combination).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    error(ErrorKind::Usage, message)
}

/// `message` (the error's own text followed by advice the CLI adds, e.g. the command that
/// finishes the job), keeping `e` as the source so its kind is the kind.
pub fn advised(e: impl StdError + Send + Sync + 'static, message: String) -> anyhow::Error {
    let source = anyhow::Error::new(e);
    anyhow::Error::new(CliError {
        kind: kind_of(&source),
        message,
        source: Some(source),
    })
}

/// The kind of the first error in the chain that has one; an IO error without context is "io";
/// anything else is unexpected ("internal").
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    for cause in e.chain() {
        if let Some(k) = known_kind(cause) {
            return k;
        }
    }
    ErrorKind::Internal
}

fn known_kind(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    macro_rules! try_kinds {
        ($($t:ty),* $(,)?) => {
            $(if let Some(x) = e.downcast_ref::<$t>() { return Some(x.error_kind()); })*
        };
    }
    if let Some(x) = e.downcast_ref::<CliError>() {
        return Some(x.kind);
    }
    try_kinds!(
        pgsafe::backup::BackupError,
        pgsafe::archive::ArchiveError,
        pgsafe::archive::spool::SpoolError,
        pgsafe::backup::repo::RepoBackupError,
        pgsafe::repo::RepoError,
        pgsafe::storage::crypt::keys::KeyError,
        pgsafe::storage::crypt::open::OpenError,
        pgsafe::check::CheckError,
        pgsafe::repo::expire::ExpireError,
        pgsafe::repo::retention::RetentionError,
        pgsafe::verify::VerifyError,
        pgsafe::restore::RestoreError,
        pgsafe::restore::pitr::PitrError,
        pgsafe::restore_test::RestoreTestError,
        pgsafe::doctor::DoctorError,
        pgsafe::hold::HoldError,
        pgsafe::runrecord::InvalidBackupId,
        pgsafe::session::SessionError,
        pgsafe::conninfo::ConnInfoError,
        pgsafe::config::ConfigError,
        pgsafe::conninfo::ConnectError,
        pgsafe::datadir::DataDirError,
        pgsafe::plan::PlanError,
        pgsafe::copy::CopyError,
        pgsafe::control::ControlError,
        pgsafe::label::LabelError,
        pgsafe::manifest::ManifestError,
        pgsafe::types::TypeError,
        pgsafe::storage::StorageError,
        pgsafe::fsutil::FsError,
        std::io::Error,
    );
    None
}

/// The exit code of a failure of `kind`: 130 for an interrupted command (as a shell reports
/// SIGINT), 2 for every other error.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Cancelled => exit::INTERRUPTED,
        _ => exit::ERROR,
    }
}

#[derive(Serialize)]
struct ErrorDoc<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: ErrorKind,
    message: &'a str,
    exit_code: u8,
}

/// Shows the failure `e` and returns its exit code: the message on standard error, and with
/// `json` the error document on standard output.
pub fn report(e: &anyhow::Error, json: bool) -> u8 {
    let kind = kind_of(e);
    let mut message = crate::error_chain(e);
    if let Some(advice) = crate::advice::for_error(e) {
        message = format!("{message} ({advice})");
    }
    let code = exit_code(kind);
    eprintln!("pgsafe: error: {message}");
    if json {
        print_json(kind, &message, code);
    }
    code
}

/// The error document on standard output (a failure to write it is reported by
/// `output::finish`).
pub fn print_json(kind: ErrorKind, message: &str, code: u8) {
    let doc = ErrorDoc {
        error: ErrorBody {
            kind,
            message,
            exit_code: code,
        },
    };
    if let Err(e) = crate::render::json(&doc) {
        eprintln!("pgsafe: error: could not render the error as JSON: {e}");
    }
}

/// Whether the raw arguments ask for JSON: for errors found while parsing them, before the
/// command's own `--json` is known. Only arguments before a `--` count.
pub fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_comes_from_the_library_error_under_context() {
        let e = anyhow::Error::new(pgsafe::verify::VerifyError::Missing("/nope".into()))
            .context("verify failed");
        assert_eq!(kind_of(&e), ErrorKind::NotFound);
        let e = anyhow::Error::new(pgsafe::backup::BackupError::Cancelled).context("x");
        assert_eq!(exit_code(kind_of(&e)), exit::INTERRUPTED);
        assert_eq!(kind_of(&usage("bad")), ErrorKind::Usage);
        assert_eq!(kind_of(&anyhow::anyhow!("unknown")), ErrorKind::Internal);
        let e = pgsafe::hold::HoldError::BadId("x".into());
        let text = format!("{e}\nadvice");
        let advised = advised(e, text.clone());
        assert_eq!(kind_of(&advised), ErrorKind::Usage);
        assert_eq!(crate::error_chain(&advised), text);
    }

    #[test]
    fn json_is_looked_for_before_a_double_dash_only() {
        let a = |v: &[&str]| json_requested(v.iter().map(std::ffi::OsString::from));
        assert!(a(&["pgsafe", "verify", "--json", "--jobs", "x"]));
        assert!(!a(&["pgsafe", "verify", "--jobs", "x"]));
        assert!(!a(&["pgsafe", "snapshot", "--", "--json"]));
    }
}
