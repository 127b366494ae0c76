//! TLS set-up without a server: the key-file rule, which files are required in which sslmode,
//! protocol versions. The handshakes themselves are tested against real servers
//! (crates/pgsafe/tests/tls_real.rs).

use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn key_file_permission_rule_is_libpqs() {
    // Owned by someone other than root: nothing for group or others.
    for (mode, ok) in [
        (0o100600, true),
        (0o100400, true),
        (0o100700, true),
        (0o100640, false),
        (0o100604, false),
        (0o100610, false),
        (0o100660, false),
    ] {
        assert_eq!(key_mode_allowed(1000, mode), ok, "uid 1000 mode {mode:o}");
    }
    // Owned by root: the group may read, nothing more.
    for (mode, ok) in [
        (0o100600, true),
        (0o100640, true),
        (0o100440, true),
        (0o100660, false),
        (0o100650, false),
        (0o100644, false),
        (0o100641, false),
    ] {
        assert_eq!(key_mode_allowed(0, mode), ok, "root mode {mode:o}");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn key_file_checks_come_before_reading_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let secret = b"secret-key-material\n";
    let missing = dir.path().join("nope.key");
    assert_eq!(
        load_key(&missing),
        Err(TlsError::KeyMissing(missing.clone()))
    );
    assert_eq!(
        load_key(dir.path()),
        Err(TlsError::KeyNotRegular(dir.path().to_owned()))
    );
    let open = write(dir.path(), "open.key", secret, 0o644);
    let e = load_key(&open).unwrap_err();
    assert_eq!(e, TlsError::KeyPermissions(open.clone()));
    assert!(e.to_string().contains("has group or world access"), "{e}");
    // Readable by its owner only, but not a key: refused, and the message shows no content.
    let bad = write(dir.path(), "bad.key", secret, 0o600);
    let e = load_key(&bad).unwrap_err();
    assert_eq!(e, TlsError::KeyUnreadable(bad.clone()));
    assert!(!e.to_string().contains("secret-key"), "{e}");
    let enc = write(
        dir.path(),
        "enc.key",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        0o600,
    );
    assert_eq!(load_key(&enc), Err(TlsError::KeyEncrypted(enc.clone())));
}

fn settings(dir: &Path) -> TlsSettings {
    TlsSettings {
        default_dir: Some(dir.to_owned()),
        ..TlsSettings::default()
    }
}

#[test]
fn a_root_file_is_needed_only_to_verify() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let root = dir.path().join("root.crt");
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let e = s.prepare(mode).err().unwrap();
        assert_eq!(e, TlsError::RootCertMissing(root.clone()));
        assert!(e.to_string().contains("sslrootcert=system"), "{e}");
    }
    for mode in [SslMode::Allow, SslMode::Prefer, SslMode::Require] {
        assert!(s.prepare(mode).is_ok(), "{mode:?}");
    }
    // Without a home directory and without sslrootcert.
    let none = TlsSettings::default();
    assert_eq!(
        none.prepare(SslMode::VerifyFull).err(),
        Some(TlsError::NoHomeForRootCert)
    );
    // A root file that is not PEM is an error in every mode (it exists, so it is used).
    write(dir.path(), "root.crt", b"not a certificate", 0o644);
    for mode in [SslMode::Require, SslMode::VerifyFull] {
        assert!(
            matches!(
                s.prepare(mode).err(),
                Some(TlsError::ReadFile {
                    what: "root certificate file",
                    ..
                })
            ),
            "{mode:?}"
        );
    }
}

#[test]
fn a_client_certificate_without_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    // No certificate file: none is sent, nothing else is read.
    assert!(s.prepare(SslMode::Require).is_ok());
    // A certificate that does not parse names its file.
    write(dir.path(), "postgresql.crt", b"garbage", 0o644);
    match s.prepare(SslMode::Require).err() {
        Some(TlsError::ReadFile { what, path, .. }) => {
            assert_eq!(
                (what, path),
                ("certificate file", dir.path().join("postgresql.crt"))
            )
        }
        other => panic!("{other:?}"),
    }
    // sslcertmode=disable does not even look at it.
    let off = TlsSettings {
        certmode: SslCertMode::Disable,
        ..settings(dir.path())
    };
    assert!(off.prepare(SslMode::Require).is_ok());
}

#[test]
fn protocol_version_window() {
    let v = |min: Option<&str>, max: Option<&str>| {
        TlsSettings {
            min_protocol: min.map(Into::into),
            max_protocol: max.map(Into::into),
            ..TlsSettings::default()
        }
        .versions()
        .iter()
        .map(|v| v.version)
        .collect::<Vec<_>>()
    };
    use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
    assert_eq!(v(None, None), [TLSv1_2, TLSv1_3]);
    assert_eq!(v(Some("TLSv1"), None), [TLSv1_2, TLSv1_3]);
    assert_eq!(v(Some("TLSv1.3"), None), [TLSv1_3]);
    assert_eq!(v(None, Some("TLSv1.2")), [TLSv1_2]);
    assert!(v(None, Some("TLSv1.1")).is_empty());
    let s = TlsSettings {
        max_protocol: Some("TLSv1.1".into()),
        ..TlsSettings::default()
    };
    assert_eq!(
        s.prepare(SslMode::Require).err(),
        Some(TlsError::NoProtocolVersion)
    );
}
