//! The S3 backend against real S3 servers on loopback (s3s-fs and moto, started by the
//! testkit): the storage conformance suite, multipart uploads, write-once under races, and
//! failures injected by a proxy.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};

use pgsafe::storage::conformance::{self, pattern};
use pgsafe::storage::s3::{S3Backend, SINGLE_PUT_MAX};
use pgsafe::storage::{Backend, ErrorKind, ObjectName, PutOptions, PutOutcome};
use pgsafe_testkit::s3::{S3Kind, S3Server};

fn n(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

/// Conformance checks a server fails for its own quirks, with the reason.
fn quirks(kind: S3Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        // s3s-fs keeps objects as files: a key that is a prefix of others is a folder, and a
        // HEAD or GET of it answers 500 InternalError instead of 404.
        S3Kind::S3sFs => &[
            ("delete", "HEAD of a prefix answers 500"),
            ("missing", "HEAD of a prefix answers 500"),
            // s3s-fs 0.14.1 ignores If-None-Match on PUT: of two writers racing for one name
            // both "create" it and the last one's bytes stay (see
            // racing_writers_and_if_none_match).
            ("concurrent_puts", "ignores If-None-Match"),
        ],
        S3Kind::Moto => &[],
    }
}

fn conformance_on(kind: S3Kind) {
    let server = S3Server::start(kind);
    let b = S3Backend::open(&server.config("repo/one")).unwrap();
    let quirks = quirks(kind);
    for (name, check) in conformance::CHECKS {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&b)));
        match (quirks.iter().find(|q| q.0 == *name), r) {
            (None, Ok(())) => {}
            (None, Err(p)) => std::panic::resume_unwind(p),
            // Still failing: the quirk is real (when a new server version fixes it, this
            // fails and the exception goes).
            (Some(_), Err(_)) => {}
            (Some((_, why)), Ok(())) => panic!("{kind:?} passes {name} now (was: {why})"),
        }
    }
    // A second repository in the same bucket sees none of the first's objects.
    let other = S3Backend::open(&server.config("repo/two")).unwrap();
    assert_eq!(other.list(None).unwrap(), []);
}

#[test]
fn conformance_s3s_fs() {
    conformance_on(S3Kind::S3sFs);
}

#[test]
fn conformance_moto() {
    conformance_on(S3Kind::Moto);
}

/// Writes `data` through a writer in 1 MiB pieces.
fn write_all(
    b: &dyn Backend,
    name: &ObjectName,
    data: &[u8],
) -> pgsafe::storage::Result<PutOutcome> {
    let mut w = b.writer(name, PutOptions::default())?;
    for c in data.chunks(1024 * 1024) {
        w.write_all(c)
            .map_err(|e| pgsafe::storage::StorageError::io("store", name, e))?;
    }
    w.finish()
}

fn multipart_on(kind: S3Kind) {
    let server = S3Server::start(kind);
    let b = S3Backend::open(&server.config("mp")).unwrap();
    let k = n("big/object");
    // Larger than one PUT: a multipart upload of several parts, two in flight.
    let data = pattern(SINGLE_PUT_MAX * 2 + 12_345, 21);
    assert_eq!(write_all(&b, &k, &data).unwrap(), PutOutcome::Created);
    assert_eq!(b.size(&k).unwrap(), data.len() as u64);
    let mut back = Vec::new();
    b.read(&k).unwrap().read_to_end(&mut back).unwrap();
    assert!(back == data, "multipart object differs");
    // Ranges across the part boundaries (8 MiB parts).
    let edge: usize = 8 * 1024 * 1024;
    assert_eq!(
        b.get_range(&k, edge as u64 - 10, 20).unwrap(),
        &data[edge - 10..edge + 10]
    );
    let tail = b.get_range(&k, data.len() as u64 - 5, 100).unwrap();
    assert_eq!(tail, &data[data.len() - 5..]);

    // The same bytes again: nothing uploaded, already present; other bytes: a conflict, and
    // the stored object is unchanged.
    assert_eq!(
        write_all(&b, &k, &data).unwrap(),
        PutOutcome::AlreadyPresent
    );
    let mut other = data.clone();
    *other.last_mut().unwrap() ^= 1;
    assert_eq!(
        write_all(&b, &k, &other).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let shorter = &data[..data.len() - 1];
    assert_eq!(
        write_all(&b, &k, shorter).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert!(b.get(&k, u64::MAX).unwrap() == data);

    // A writer dropped in the middle of a multipart upload: no object, no upload left.
    let dropped = n("big/dropped");
    let mut w = b.writer(&dropped, PutOptions::default()).unwrap();
    w.write_all(&data[..SINGLE_PUT_MAX + 9 * 1024 * 1024])
        .unwrap();
    drop(w);
    assert_eq!(b.size(&dropped).unwrap_err().kind(), ErrorKind::NotFound);
    let names: Vec<_> = b.list(None).unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, std::slice::from_ref(&k));
    assert_eq!(server.multipart_uploads(), Vec::<String>::new());
}

#[test]
fn multipart_s3s_fs() {
    multipart_on(S3Kind::S3sFs);
}

#[test]
fn multipart_moto() {
    multipart_on(S3Kind::Moto);
}

/// Two writers opened before either finished (both found the name free): the second to
/// finish must not replace the first's object. With one PUT this rests on the server honouring
/// `If-None-Match: *`; with multipart uploads on the check before completing.
#[test]
fn racing_writers_and_if_none_match() {
    for kind in S3Kind::ALL {
        let server = S3Server::start(kind);
        let b = S3Backend::open(&server.config("race")).unwrap();
        for (what, len) in [("one PUT", 100_000), ("multipart", SINGLE_PUT_MAX + 1)] {
            let k = n(&format!("race/{len}"));
            let first = pattern(len, 1);
            let second = pattern(len, 2);
            let mut wa = b.writer(&k, PutOptions::default()).unwrap();
            let mut wb = b.writer(&k, PutOptions::default()).unwrap();
            let mut wc = b.writer(&k, PutOptions::default()).unwrap();
            wa.write_all(&first).unwrap();
            wb.write_all(&second).unwrap();
            wc.write_all(&first).unwrap();
            assert_eq!(wa.finish().unwrap(), PutOutcome::Created, "{kind:?} {what}");
            let rb = wb.finish().map_err(|e| e.kind());
            let rc = wc.finish().map_err(|e| e.kind());
            let stored = b.get(&k, u64::MAX).unwrap();
            assert_eq!(rb, Err(ErrorKind::Conflict), "{kind:?} {what}: other bytes");
            assert_eq!(
                rc,
                Ok(PutOutcome::AlreadyPresent),
                "{kind:?} {what}: same bytes"
            );
            assert!(
                stored == first,
                "{kind:?} {what}: the first object was replaced"
            );
        }
    }
}

/// Failures injected between client and server: transient ones are retried (and a broken-off
/// read resumes) so every operation succeeds; a failure that persists past the retry budget
/// is a clean Transient error with nothing half-visible: no object listed, no multipart
/// upload left.
#[test]
fn faults_are_retried_or_fail_cleanly() {
    use pgsafe_testkit::s3::{Fault, FaultProxy, RequestKind};
    let server = S3Server::start(S3Kind::S3sFs);
    let proxy = FaultProxy::start(server.port);
    let mut config = server.config("faults");
    config.endpoint = Some(proxy.endpoint());
    config.retry_budget = std::time::Duration::from_secs(5);
    let b = S3Backend::open(&config).unwrap();

    let k = n("a/b");
    let data = pattern(300_000, 3);
    proxy.inject(RequestKind::Head, Fault::ResetBefore, 2);
    proxy.inject(RequestKind::PutObject, Fault::SlowDown, 2);
    proxy.inject(RequestKind::PutObject, Fault::InternalError, 1);
    assert_eq!(
        b.put(&k, &data, PutOptions::default()).unwrap(),
        PutOutcome::Created
    );
    proxy.inject(RequestKind::Get, Fault::InternalError, 1);
    proxy.inject(RequestKind::Get, Fault::Truncate, 2);
    assert!(b.get(&k, u64::MAX).unwrap() == data);
    proxy.inject(RequestKind::List, Fault::SlowDown, 2);
    assert_eq!(b.list(None).unwrap().len(), 1);
    assert!(proxy.injected() >= 10, "{:?}", proxy.seen());

    // Every part upload refused: the write fails, and leaves nothing.
    proxy.inject(RequestKind::UploadPart, Fault::SlowDown, 100_000);
    let big = n("a/big");
    let e = write_all(&b, &big, &pattern(SINGLE_PUT_MAX + 20 * 1024 * 1024, 4)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    proxy.clear();
    let names: Vec<_> = b.list(None).unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, std::slice::from_ref(&k));
    assert_eq!(server.multipart_uploads(), Vec::<String>::new());
}
