use std::collections::BTreeMap;

use super::*;
use crate::repo::catalog::{InfoDoc, Observed, ObservedDoc, ObservedEntry, ObservedKind, derive};
use crate::repo::doc::EventKind;
use crate::repo::testdata::{SYSID, event, ident, info_json, lease, registration};

const SEC: i64 = 1_000_000;
/// Now, in seconds.
const NOW: i64 = 1_000_000;

fn folder(name: &str, info: InfoDoc) -> ObservedEntry {
    ObservedEntry {
        name: name.as_bytes().to_vec(),
        kind: ObservedKind::Folder(info),
    }
}

fn complete(name: &str, lsn: u64, at: i64) -> ObservedEntry {
    folder(name, InfoDoc::Bytes(info_json(SYSID, 15, 1, lsn, at)))
}

fn doc<T>(name: &str, d: T) -> ObservedDoc<T> {
    ObservedDoc {
        name: name.into(),
        doc: Ok(d),
    }
}

/// A (oldest, never verified), B (verified, passed), C (newest, failed its verification), an
/// incomplete, a running, a foreign and a corrupt backup, and an odd file.
fn catalog() -> Catalog {
    let verified = |us: i64, backup: &str, result: VerifyResult, problems: u64| {
        event(
            us,
            EventKind::Verified {
                backup: ident(backup),
                result,
                problems,
                restore_test: false,
            },
        )
    };
    let obs = Observed {
        registration: registration(),
        entries: vec![
            complete("A", 0x3000000, 100_000),
            complete("B", 0x5000000, 200_000),
            complete("C", 0x7000000, 300_000),
            folder("D", InfoDoc::Missing),
            folder("R", InfoDoc::Missing),
            folder(
                "F",
                InfoDoc::Bytes(info_json(SYSID + 1, 15, 1, 0x9000000, 400_000)),
            ),
            folder("X", InfoDoc::Bytes(b"{".to_vec())),
            ObservedEntry {
                name: b"stray".to_vec(),
                kind: ObservedKind::File,
            },
        ],
        leases: vec![doc(
            "leases/backup-R-1.json",
            lease("R", 1, (NOW + 600) * SEC),
        )],
        events: vec![
            doc("e1", verified(210_000 * SEC, "B", VerifyResult::Passed, 0)),
            doc("e2", verified(310_000 * SEC, "C", VerifyResult::Failed, 3)),
            doc(
                "e3",
                event(320_000 * SEC, EventKind::Pin { backup: ident("A") }),
            ),
        ],
        now_us: NOW * SEC,
        clock_skew_us: 60 * SEC,
    };
    derive(&ident("main"), obs)
}

#[test]
fn figures_follow_the_catalog() {
    let m = ClusterMetrics::from_catalog(&catalog(), NOW);
    assert_eq!(
        m.backups,
        StateCounts {
            complete: 3,
            running: 1,
            incomplete: 1,
            corrupt: 1,
            foreign: 1,
        }
    );
    assert_eq!(m.failed_verification, 1);
    assert_eq!(m.pinned, 1);
    assert_eq!(m.system_identifier, SYSID.to_string());
    // C failed its verification: the newest good backup is B.
    let good = m.last_good.as_ref().unwrap();
    assert_eq!(good.id, "B");
    assert_eq!(good.finished_at_unix, 200_000);
    assert_eq!(good.age_secs, NOW - 200_000);
    assert_eq!(good.stop_lsn, "0/5000000");
    assert_eq!(m.last_verified.as_ref().unwrap().id, "B");
    let v = m.last_verification.as_ref().unwrap();
    assert_eq!((v.backup.as_str(), v.passed, v.problems), ("C", false, 3));
    assert_eq!(v.time_unix, 310_000);
    let w = m.window.as_ref().unwrap();
    assert_eq!((w.earliest.id.as_str(), w.latest.id.as_str()), ("A", "B"));
    assert_eq!(m.running_operations, BTreeMap::from([("backup".into(), 1)]));
    assert_eq!(m.repository_problems, 1);
}

#[test]
fn an_empty_cluster_has_no_ages() {
    let obs = Observed {
        registration: registration(),
        entries: vec![folder("D", InfoDoc::Missing)],
        leases: Vec::new(),
        events: Vec::new(),
        now_us: NOW * SEC,
        clock_skew_us: 0,
    };
    let m = ClusterMetrics::from_catalog(&derive(&ident("main"), obs), NOW);
    assert_eq!(m.backups.incomplete, 1);
    assert!(m.last_good.is_none() && m.window.is_none() && m.last_verification.is_none());
    let text = prometheus(&[m], NOW);
    let samples = parse(&text);
    assert_eq!(
        samples[&(
            "pgsafe_backups".into(),
            "cluster=\"main\",state=\"complete\"".into()
        )],
        0.0
    );
    assert!(
        !samples
            .keys()
            .any(|(n, _)| n == "pgsafe_last_good_backup_age_seconds"),
        "no age without a backup"
    );
}

/// Parses the exposition format strictly enough to catch a malformed line: every family has
/// HELP then TYPE before its samples, names and labels are well-formed, values are numbers.
/// Returns (name, labels) -> value.
pub(crate) fn parse(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    let mut typed: Option<String> = None;
    let mut helped: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty());
            helped = Some(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(kind, "gauge");
            assert_eq!(helped.as_deref(), Some(name), "HELP before TYPE");
            typed = Some(name.to_owned());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(name.starts_with("pgsafe_"), "{line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert_eq!(
            typed.as_deref(),
            Some(name),
            "a sample of its family: {line}"
        );
        let value: f64 = value.parse().expect("a number");
        assert!(
            out.insert((name.to_owned(), labels.to_owned()), value)
                .is_none(),
            "duplicate series {line}"
        );
    }
    out
}

#[test]
fn prometheus_text_has_the_catalog_numbers() {
    let m = ClusterMetrics::from_catalog(&catalog(), NOW);
    let text = prometheus(&[m], NOW);
    let s = parse(&text);
    let get = |name: &str, labels: &str| {
        *s.get(&(name.to_owned(), labels.to_owned()))
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing in\n{text}"))
    };
    let main = "cluster=\"main\"";
    assert_eq!(
        get("pgsafe_metrics_generated_timestamp_seconds", ""),
        NOW as f64
    );
    for (state, n) in [
        ("complete", 3.0),
        ("running", 1.0),
        ("incomplete", 1.0),
        ("corrupt", 1.0),
        ("foreign", 1.0),
    ] {
        assert_eq!(
            get("pgsafe_backups", &format!("{main},state=\"{state}\"")),
            n
        );
    }
    assert_eq!(
        get("pgsafe_last_good_backup_timestamp_seconds", main),
        200_000.0
    );
    assert_eq!(
        get("pgsafe_last_good_backup_age_seconds", main),
        (NOW - 200_000) as f64
    );
    assert_eq!(get("pgsafe_last_good_backup_size_bytes", main), 10.0);
    assert_eq!(get("pgsafe_last_verification_success", main), 0.0);
    assert_eq!(get("pgsafe_last_verification_problems", main), 3.0);
    assert_eq!(
        get("pgsafe_last_verification_timestamp_seconds", main),
        310_000.0
    );
    assert_eq!(
        get("pgsafe_recovery_window_start_timestamp_seconds", main),
        100_000.0
    );
    assert_eq!(
        get("pgsafe_recovery_window_end_lsn_bytes", main),
        0x5000000 as f64
    );
    assert_eq!(
        get(
            "pgsafe_running_operations",
            &format!("{main},kind=\"backup\"")
        ),
        1.0
    );
    assert_eq!(get("pgsafe_backups_failed_verification", main), 1.0);
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}
