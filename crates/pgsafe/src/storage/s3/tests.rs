//! Tests of the S3 backend's pure parts: the configuration (URL, settings, environment) and
//! the part sizes. The backend itself runs against real S3 servers in
//! `crates/pgsafe/tests/s3_backend.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use super::config::{DEFAULT_REGION, S3Config, S3Settings};
use super::credentials::CredentialSource;
use super::part_size;
use crate::storage::ErrorKind;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

#[test]
fn urls_parse_into_bucket_and_prefix() {
    let c = S3Config::from_url("s3://my-bucket/a/b/").unwrap();
    assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("my-bucket", "a/b"));
    assert_eq!(c.region, DEFAULT_REGION);
    assert!(c.credentials.is_none() && !c.path_style && !c.allow_http);
    let c = S3Config::from_url("s3://my.bucket").unwrap();
    assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("my.bucket", ""));
    assert_eq!(c.to_string(), "s3://my.bucket");
    for bad in [
        "http://bucket/x",
        "s3://",
        "s3://ab",
        "s3://Upper",
        "s3://-bucket",
        "s3://bu..cket",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://bucket/./b",
        "s3://bucket/a\nb",
        "s3://bucket_x/p",
    ] {
        let e = S3Config::from_url(bad).expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidName, "{bad}");
    }
}

#[test]
fn settings_override_the_environment() {
    let e = env(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "envkey"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ("AWS_SESSION_TOKEN", "envtoken"),
    ]);
    let c = S3Config::resolve("s3://bkt/p", &S3Settings::default(), &e).unwrap();
    assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.region, "eu-west-1");
    // An endpoint without an explicit style: path style.
    assert!(c.path_style);
    let cr = c.credentials.clone().unwrap();
    assert_eq!(cr.access_key_id, "envkey");
    assert_eq!(cr.session_token.as_deref(), Some("envtoken"));
    // AWS_REGION wins over AWS_DEFAULT_REGION.
    let e2 = env(&[
        ("AWS_REGION", "us-west-2"),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
    ]);
    let c2 = S3Config::resolve("s3://bkt", &S3Settings::default(), &e2).unwrap();
    assert_eq!(c2.region, "us-west-2");
    assert!(!c2.path_style && c2.credentials.is_none());

    // Settings win, and the key, secret and token come as a set (no env token with them).
    let s = S3Settings {
        endpoint: Some("https://s3.example.net".into()),
        region: Some("ap-south-1".into()),
        path_style: Some(false),
        access_key_id: Some("setkey".into()),
        secret_access_key: Some("setsecret".into()),
        ..S3Settings::default()
    };
    let c = S3Config::resolve("s3://bkt/p", &s, &e).unwrap();
    assert_eq!(c.endpoint.as_deref(), Some("https://s3.example.net"));
    assert_eq!(c.region, "ap-south-1");
    assert!(!c.path_style);
    let cr = c.credentials.unwrap();
    assert_eq!(
        (cr.access_key_id.as_str(), cr.session_token),
        ("setkey", None)
    );

    // Half a credential is refused.
    for (k, v) in [("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")] {
        let e = S3Config::resolve("s3://bkt", &S3Settings::default(), env(&[(k, v)]));
        assert!(e.is_err(), "{k} alone");
    }
}

#[test]
fn the_key_comes_from_the_source_the_settings_name() {
    let aws = [
        ("AWS_ACCESS_KEY_ID", "envkey"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ("MY_KEY", "mykey"),
        ("MY_SECRET", "mysecret"),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
    ];
    let with = |source: Option<CredentialSource>| {
        let s = S3Settings {
            credentials: source,
            ..S3Settings::default()
        };
        S3Config::resolve("s3://bkt", &s, env(&aws))
    };
    let c = with(None).unwrap();
    assert_eq!(c.source, CredentialSource::AwsEnv);
    assert_eq!(c.credentials.unwrap().access_key_id, "envkey");
    let named = CredentialSource::Env {
        access_key_id: "MY_KEY".into(),
        secret_access_key: "MY_SECRET".into(),
        session_token: None,
    };
    let c = with(Some(named)).unwrap();
    let cr = c.credentials.unwrap();
    assert_eq!(
        (cr.access_key_id.as_str(), cr.secret_access_key.as_str()),
        ("mykey", "mysecret")
    );
    // A named variable that is not set is an error that names it (not the AWS_* fallback).
    let e = with(Some(CredentialSource::Env {
        access_key_id: "MY_KEY".into(),
        secret_access_key: "UNSET_SECRET".into(),
        session_token: None,
    }))
    .unwrap_err();
    assert!(e.to_string().contains("UNSET_SECRET"), "{e}");
    // The machine's role: no key, and the role variables handed on.
    let c = with(Some(CredentialSource::Instance)).unwrap();
    assert!(c.credentials.is_none());
    assert_eq!(c.role_env.len(), 2, "{:?}", c.role_env);
    // A credentials file (the file's own checks: credentials.rs).
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("creds");
    std::fs::write(
        &f,
        "[x]\naws_access_key_id = fk\naws_secret_access_key = fs\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = |profile: Option<&str>| {
        with(Some(CredentialSource::File {
            path: f.clone(),
            profile: profile.map(str::to_owned),
        }))
    };
    assert_eq!(
        file(Some("x")).unwrap().credentials.unwrap().access_key_id,
        "fk"
    );
    let e = file(None).unwrap_err();
    assert!(e.to_string().contains("no profile [default]"), "{e}");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);

    // Flags over the file: each setting, the key source as one.
    let flags = S3Settings {
        region: Some("r1".into()),
        credentials: Some(CredentialSource::Instance),
        ..S3Settings::default()
    };
    let file = S3Settings {
        region: Some("r2".into()),
        endpoint: Some("https://e".into()),
        credentials: Some(CredentialSource::AwsEnv),
        ..S3Settings::default()
    };
    let m = flags.or(&file);
    assert_eq!(
        (m.region.as_deref(), m.endpoint.as_deref(), m.credentials),
        (
            Some("r1"),
            Some("https://e"),
            Some(CredentialSource::Instance)
        )
    );
}

#[test]
fn plain_http_only_to_loopback_unless_allowed() {
    let with = |endpoint: &str, allow: Option<bool>| {
        let s = S3Settings {
            endpoint: Some(endpoint.into()),
            allow_http: allow,
            ..S3Settings::default()
        };
        S3Config::resolve("s3://bkt", &s, |_| None)
    };
    for ok in [
        "http://127.0.0.1:9000",
        "http://127.8.9.1",
        "http://localhost:9000",
        "http://[::1]:9000/",
        "https://s3.example.net",
        "https://10.0.0.5:9000",
    ] {
        with(ok, None).expect(ok);
    }
    for bad in [
        "http://10.0.0.5:9000",
        "http://s3.example.net",
        "http://127.0.0.1.example.net",
        "ftp://127.0.0.1",
        "127.0.0.1:9000",
        "https://host/path",
        "https://user@host",
        "https://",
    ] {
        with(bad, None).expect_err(bad);
    }
    let allowed = with("http://10.0.0.5:9000", Some(true)).unwrap();
    // Allowed, but said: the content and signed requests cross the network in the clear.
    assert_eq!(allowed.warnings().len(), 1, "{:?}", allowed.warnings());
    assert!(
        with("http://127.0.0.1:9000", Some(true))
            .unwrap()
            .warnings()
            .is_empty()
    );
    assert!(
        with("https://10.0.0.5", Some(true))
            .unwrap()
            .warnings()
            .is_empty()
    );
}

#[test]
fn debug_never_shows_secrets() {
    let s = S3Settings {
        access_key_id: Some("AKIDVISIBLE".into()),
        secret_access_key: Some("very-secret-value".into()),
        session_token: Some("token-value".into()),
        ..S3Settings::default()
    };
    let c = S3Config::resolve("s3://bkt", &s, |_| None).unwrap();
    for text in [format!("{c:?}"), format!("{s:?}"), c.to_string()] {
        assert!(!text.contains("very-secret-value"), "{text}");
        assert!(!text.contains("token-value"), "{text}");
    }
    assert!(format!("{c:?}").contains("AKIDVISIBLE"));
}

#[test]
fn part_sizes_fit_a_terabyte() {
    let mib = 1024 * 1024;
    // Parts start at the smallest size and stay there for objects up to 12,000 MiB.
    assert_eq!(part_size(0), 8 * mib);
    assert_eq!(part_size(12_000 * mib), 8 * mib);
    assert_eq!(part_size(16 * 1024 * mib), 11 * mib);
    // Walk the parts of a 1 TiB object: fewer than S3's 10,000.
    let (mut sent, mut parts, mut largest) = (0u64, 0u32, 0u64);
    let tib = 1024 * 1024 * mib;
    while sent < tib {
        let p = part_size(sent);
        assert!(p >= 5 * mib && p <= 5 * 1024 * mib, "part {parts}: {p}");
        assert!(p >= largest, "parts never shrink");
        largest = p;
        sent += p;
        parts += 1;
    }
    assert!(parts < 10_000, "{parts} parts");
    assert!(largest < 1024 * mib, "largest part {largest}");
}
