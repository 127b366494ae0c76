//! Every error variant that wraps another error keeps it as its `source()`: the chain from the
//! command's error reaches the IO, JSON, parse or PostgreSQL error underneath, with its type, and
//! the variant keeps its kind. The underlying errors are real ones (a refused connection, bytes
//! that do not parse), not built by hand.

use std::error::Error;
use std::io;

use super::{ErrorKind, HasKind};
use crate::backup::{BackupError, BackupWalError, TablespaceListError};
use crate::conninfo::ConnectError;
use crate::control::{ControlError, ControlFile};
use crate::doctor::{DoctorError, FixRefusal};
use crate::hold::{HoldError, IdentifyError, Refusal};
use crate::info::{BackupInfo, InfoError};
use crate::label::{BackupLabel, LabelError, MapError, MapEscaping, TablespaceMap};
use crate::manifest::{Manifest, ManifestError};
use crate::restore::{BadCopy, BadManifest, MappingError, OwnerError, RestoreError};
use crate::restore_test::{CheckError, RestoreTestError, RunAsError, ScratchError, UnreadableInfo};
use crate::session::{BadLabel, ServerError, SessionError};
use crate::types::{PgVersion, TimelineId, TypeError};
use crate::wal::{HistoryError, PageHeaderError, TimelineHistory, WalPageHeader};

/// The error, a check of its chain, and the kind it must have.
type Case<E> = (E, fn(&(dyn Error + 'static)) -> bool, ErrorKind);

/// Whether an error of type `T` is in `e`'s chain of sources (`e` itself excluded).
fn reaches<T: Error + 'static>(e: &(dyn Error + 'static)) -> bool {
    let mut cur = e.source();
    while let Some(c) = cur {
        if c.is::<T>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A real client error: connecting to a socket folder that does not exist.
fn refused_connection() -> ServerError {
    let dir = tempfile::tempdir().unwrap();
    postgres::Config::new()
        .host_path(dir.path().join("none"))
        .user("x")
        .connect(postgres::NoTls)
        .err()
        .expect("no server there")
        .into()
}

fn io_error() -> io::Error {
    std::fs::read("/nonexistent/pgsafe-error-sources").unwrap_err()
}

#[test]
fn server_errors_keep_the_postgres_error_and_its_cause() {
    let e = refused_connection();
    assert!(!e.is_server());
    assert_eq!(e.code(), None);
    assert!(reaches::<postgres::Error>(&e));
    assert!(
        reaches::<io::Error>(&e),
        "the IO error under the connection: {e:?}"
    );
    assert_eq!(e.error_kind(), ErrorKind::Connection);
}

#[test]
fn backup_errors_keep_their_sources() {
    let cases: Vec<Case<BackupError>> = vec![
        (
            BackupError::Connect(ConnectError::Failed { attempts: vec![] }),
            reaches::<ConnectError>,
            ErrorKind::Connection,
        ),
        (
            BackupError::Slot {
                source: refused_connection(),
            },
            reaches::<postgres::Error>,
            ErrorKind::Server,
        ),
        (
            TablespaceListError::Query(refused_connection()).into(),
            reaches::<io::Error>,
            ErrorKind::Server,
        ),
        (
            BackupWalError::ReceiveCheck(refused_connection()).into(),
            reaches::<postgres::Error>,
            ErrorKind::Server,
        ),
        (
            BackupWalError::History {
                path: "/pg_wal/00000002.history".into(),
                source: TimelineHistory::parse(TimelineId(2), b"x y z\n").unwrap_err(),
            }
            .into(),
            reaches::<HistoryError>,
            ErrorKind::Server,
        ),
        (
            BackupWalError::SegmentHeader {
                path: "/pg_wal/x".into(),
                source: WalPageHeader::decode(&[0; 4]).unwrap_err(),
            }
            .into(),
            reaches::<PageHeaderError>,
            ErrorKind::Server,
        ),
        (
            BackupError::EncodeInfo(serde_json::from_str::<u32>("x").unwrap_err()),
            reaches::<serde_json::Error>,
            ErrorKind::Internal,
        ),
    ];
    for (e, check, kind) in cases {
        assert!(check(&e), "{e} ({e:?}) lost its source");
        assert_eq!(e.error_kind(), kind, "{e}");
    }
}

#[test]
fn restore_errors_keep_their_sources() {
    let map_err = TablespaceMap::parse(b"not a map line", MapEscaping::V14).unwrap_err();
    let cases: Vec<Case<RestoreError>> = vec![
        (
            RestoreError::BadInfo(BackupInfo::parse(b"{").unwrap_err()),
            reaches::<serde_json::Error>,
            ErrorKind::Corrupt,
        ),
        (
            RestoreError::BadInfo(BackupInfo::parse(b"{").unwrap_err()),
            reaches::<InfoError>,
            ErrorKind::Corrupt,
        ),
        (
            RestoreError::BadLabel(BackupLabel::parse(b"garbage\n").unwrap_err()),
            reaches::<LabelError>,
            ErrorKind::Corrupt,
        ),
        (
            RestoreError::BadMap(map_err),
            reaches::<MapError>,
            ErrorKind::Corrupt,
        ),
        (
            BadManifest::Parse(Manifest::parse(b"{}").unwrap_err()).into(),
            reaches::<ManifestError>,
            ErrorKind::Corrupt,
        ),
        (
            BadCopy::Version(PgVersion::from_pg_version_file(b"x\n").unwrap_err()).into(),
            reaches::<TypeError>,
            ErrorKind::Corrupt,
        ),
        (
            BadCopy::Control(ControlFile::decode(&[]).unwrap_err()).into(),
            reaches::<ControlError>,
            ErrorKind::Corrupt,
        ),
        (
            MappingError::from(TablespaceMap::parse(b"x", MapEscaping::V14).unwrap_err()).into(),
            reaches::<MapError>,
            ErrorKind::Usage,
        ),
        (
            OwnerError::BadUid {
                id: "99999999999999999999".into(),
                source: "99999999999999999999".parse::<u32>().unwrap_err(),
            }
            .into(),
            reaches::<std::num::ParseIntError>,
            ErrorKind::Usage,
        ),
    ];
    for (e, check, kind) in cases {
        assert!(check(&e), "{e} ({e:?}) lost its source");
        assert_eq!(e.error_kind(), kind, "{e}");
    }
}

#[test]
fn restore_test_and_session_errors_keep_their_sources() {
    let cases: Vec<Case<RestoreTestError>> = vec![
        (
            RestoreTestError::NotABackup {
                backup: "/b".into(),
                source: UnreadableInfo::Parse(BackupInfo::parse(b"[").unwrap_err()),
            },
            reaches::<serde_json::Error>,
            ErrorKind::Usage,
        ),
        (
            RestoreTestError::NotABackup {
                backup: "/b".into(),
                source: crate::fsutil::FsError::new("open", "/b", io_error()).into(),
            },
            reaches::<io::Error>,
            ErrorKind::Usage,
        ),
        (
            RestoreTestError::RunAs(RunAsError::Inspect {
                path: "/b".into(),
                source: io_error(),
            }),
            reaches::<io::Error>,
            ErrorKind::Usage,
        ),
        (
            RestoreTestError::Scratch(ScratchError::SocketPathTooLong {
                socket: "/long".into(),
            }),
            reaches::<ScratchError>,
            ErrorKind::Io,
        ),
        (
            RestoreTestError::Check(CheckError::Sql {
                what: "list databases".into(),
                source: refused_connection(),
            }),
            reaches::<postgres::Error>,
            ErrorKind::Server,
        ),
    ];
    for (e, check, kind) in cases {
        assert!(check(&e), "{e} ({e:?}) lost its source");
        assert_eq!(e.error_kind(), kind, "{e}");
    }
    let e = crate::session::check_label("a\nb").unwrap_err();
    assert!(matches!(e, SessionError::BadLabel(BadLabel::LineBreak)));
    assert!(reaches::<BadLabel>(&e));
    assert_eq!(e.error_kind(), ErrorKind::Usage);
}

#[test]
fn hold_and_doctor_errors_keep_their_sources() {
    let cases: Vec<Case<HoldError>> = vec![
        (
            HoldError::Identify(IdentifyError::Connect(ConnectError::Failed {
                attempts: vec![],
            })),
            reaches::<ConnectError>,
            ErrorKind::Connection,
        ),
        (
            HoldError::Identify(IdentifyError::Session(SessionError::BadLabel(
                BadLabel::Nul,
            ))),
            reaches::<BadLabel>,
            ErrorKind::Connection,
        ),
        (
            HoldError::BadRecord {
                path: "/run/x.json".into(),
                source: serde_json::from_slice::<crate::hold::BackupRecord>(b"{").unwrap_err(),
            },
            reaches::<serde_json::Error>,
            ErrorKind::Corrupt,
        ),
        (
            HoldError::Refused(Refusal::RecordTableOnStandby),
            reaches::<Refusal>,
            ErrorKind::Refused,
        ),
        (
            HoldError::LabelOnlyHere {
                label: "START WAL LOCATION: 0/2000028\n".into(),
                source: Box::new(crate::fsutil::FsError::new("write", "/x", io_error()).into()),
            },
            reaches::<io::Error>,
            ErrorKind::NotFound,
        ),
    ];
    for (e, check, kind) in cases {
        assert!(check(&e), "{e} ({e:?}) lost its source");
        assert_eq!(e.error_kind(), kind, "{e}");
    }
    // A refusal from the holder survives its trip over the socket, typed.
    let r = Refusal::NotArchiving {
        archive_mode: "on".into(),
        on_standby: true,
        backup_running: true,
    };
    let wire = serde_json::to_string(&crate::hold::Response::refused(r.clone())).unwrap();
    let back: crate::hold::Response = serde_json::from_str(&wire).unwrap();
    assert_eq!(back.refusal, Some(r));
    assert!(back.error.unwrap().contains("archive_mode = always"));
    let e = DoctorError::FixRefused(FixRefusal::Changed);
    assert!(reaches::<FixRefusal>(&e));
    assert_eq!(e.error_kind(), ErrorKind::Refused);
}
