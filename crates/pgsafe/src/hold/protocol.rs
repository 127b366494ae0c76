//! The holder's control protocol: one JSON object per line, each request answered by one
//! response line. `v` is the protocol version; a holder refuses versions it does not speak.

use serde::{Deserialize, Serialize};

use super::BackupRecord;

pub const PROTOCOL_VERSION: u32 = 1;

/// A request to a holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stop(StopOptions),
    Abort,
}

/// The wire form of a request: `{"v":1,"op":"stop","wait_archive":"auto",...}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

impl Serialize for RequestLine<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Envelope {
            v: PROTOCOL_VERSION,
            request: self.0.clone(),
        }
        .serialize(s)
    }
}

/// Serializes a [`Request`] with the protocol version.
pub(crate) struct RequestLine<'a>(pub &'a Request);

/// Whether `stop` waits until the WAL the backup needs is archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitArchive {
    /// Wait when archiving applies to this server (primary with archive_mode on/always,
    /// standby with archive_mode=always).
    #[default]
    Auto,
    /// Wait; refuse when archiving does not apply (and leave the backup running).
    Yes,
    /// Do not wait.
    No,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopOptions {
    pub wait_archive: WaitArchive,
    pub archive_timeout_secs: u64,
    /// `SCHEMA.TABLE` (or `TABLE`) to insert the result into after the stop (primary only).
    #[serde(default)]
    pub record_table: Option<String>,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            wait_archive: WaitArchive::Auto,
            archive_timeout_secs: 300,
            record_table: None,
        }
    }
}

/// A holder's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub record: Option<BackupRecord>,
    /// Why the request was refused, in words (what older clients read).
    pub error: Option<String>,
    /// The same, typed (absent from older holders).
    #[serde(default)]
    pub refusal: Option<Refusal>,
}

/// Why a request was refused, or a backup not started: each reason with the facts it names.
/// Settings are named in words; the CLI adds its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// Waiting for WAL archiving was asked for, and this server does not archive.
    #[error("{}", not_archiving(archive_mode, *on_standby, *backup_running))]
    NotArchiving {
        archive_mode: String,
        on_standby: bool,
        /// Whether the backup is in progress (a stop), or was not started (a snapshot).
        backup_running: bool,
    },
    #[error(
        "recording the result in a table needs a primary: a standby is read-only. The backup is \
         still in progress; stop it without recording it in a table"
    )]
    RecordTableOnStandby,
    #[error("record table {name:?}: expected TABLE or SCHEMA.TABLE")]
    BadRecordTable { name: String },
    #[error("the backup is already stopped; there is nothing to abort")]
    NothingToAbort,
    /// Anything else the holder reports, in its words (an error inside the holder process,
    /// whose type stays there).
    #[error("{message}")]
    Other { message: String },
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal::Other { message }
    }
}

fn not_archiving(mode: &str, on_standby: bool, running: bool) -> String {
    let then = if running {
        " The backup is still in progress."
    } else {
        " The backup was not started."
    };
    if on_standby {
        format!(
            "waiting for WAL archiving on a standby needs archive_mode = always (it is {mode:?}): \
             a standby with archive_mode = on does not archive. Do not wait for archiving, and \
             make sure the WAL reaches the archive from the primary (run SELECT pg_switch_wal() \
             there).{then}"
        )
    } else {
        format!(
            "waiting for WAL archiving was asked for, but archive_mode is {mode:?} on this \
             server, so nothing is archived: do not wait for it.{then}"
        )
    }
}

impl Response {
    pub fn record(r: BackupRecord) -> Response {
        Response {
            v: PROTOCOL_VERSION,
            record: Some(r),
            error: None,
            refusal: None,
        }
    }
    pub fn error(e: impl Into<String>) -> Response {
        Response::refused(Refusal::from(e.into()))
    }
    pub fn refused(r: Refusal) -> Response {
        Response {
            v: PROTOCOL_VERSION,
            record: None,
            error: Some(r.to_string()),
            refusal: Some(r),
        }
    }
}

/// The one line a starting holder writes to its parent: the record once the server confirmed
/// backup mode, or the reason it could not start.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ready {
    pub record: Option<BackupRecord>,
    pub error: Option<String>,
    /// The kind of the error, so the parent's error has it too.
    #[serde(default)]
    pub kind: Option<crate::error::ErrorKind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_version() {
        let r = Request::Stop(StopOptions::default());
        let s = serde_json::to_string(&RequestLine(&r)).unwrap();
        assert!(
            s.contains("\"v\":1") && s.contains("\"op\":\"stop\""),
            "{s}"
        );
        let e: Envelope = serde_json::from_str(&s).unwrap();
        assert!(matches!(e.request, Request::Stop(o) if o.archive_timeout_secs == 300));
        let e: Envelope = serde_json::from_str(r#"{"v":1,"op":"status"}"#).unwrap();
        assert!(matches!(e.request, Request::Status));
        assert!(serde_json::from_str::<Envelope>(r#"{"v":1,"op":"drop_table"}"#).is_err());
    }
}
