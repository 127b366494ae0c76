use super::*;
use crate::types::TimelineId;

fn seg(s: &str) -> WalSegment {
    s.parse().unwrap()
}

#[test]
fn segments_follow_the_ranges() {
    let size = WalSegSize::DEFAULT;
    let one = [WalRange {
        tli: TimelineId(1),
        start_lsn: "0/2000028".parse().unwrap(),
        end_lsn: "0/4000000".parse().unwrap(),
    }];
    let s = segments_for_ranges(&one, size);
    assert_eq!(
        s,
        [
            seg("000000010000000000000002"),
            seg("000000010000000000000003")
        ]
    );
    // A switch to timeline 2 inside segment 3: segment 3 on is named with timeline 2.
    let two = [
        WalRange {
            tli: TimelineId(2),
            start_lsn: "0/3000100".parse().unwrap(),
            end_lsn: "0/4000100".parse().unwrap(),
        },
        WalRange {
            tli: TimelineId(1),
            start_lsn: "0/2000028".parse().unwrap(),
            end_lsn: "0/3000100".parse().unwrap(),
        },
    ];
    let s = segments_for_ranges(&two, size);
    assert_eq!(
        s,
        [
            seg("000000010000000000000002"),
            seg("000000020000000000000003"),
            seg("000000020000000000000004")
        ]
    );
    assert!(segments_for_ranges(&[], size).is_empty());
}

#[test]
fn problems_read_precisely() {
    let p = Problem::Size {
        path: "base/5/1".into(),
        expected: 8192,
        found: 4096,
    };
    assert_eq!(
        p.to_string(),
        "wrong size: base/5/1 is 4096 bytes, backup_manifest says 8192 (truncated)"
    );
    let p = Problem::Missing {
        path: "base/5/1".into(),
        stored_as: "base/5/1.zst".into(),
    };
    assert!(p.to_string().contains("base/5/1.zst is not in the backup"));
    let p = Problem::Incomplete {
        incomplete_marker: true,
    };
    assert!(
        p.to_string()
            .starts_with("incomplete backup: pgsafe.json is missing")
    );
    let j = serde_json::to_value(Problem::Extra { path: "x".into() }).unwrap();
    assert_eq!(j["problem"], "extra");
}

#[test]
fn not_a_backup_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let e = verify_backup(
        d.path(),
        &VerifyOptions::default(),
        &crate::progress::NoProgress,
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::NotABackup(_)), "{e}");
    let e = verify_backup(
        &d.path().join("nope"),
        &VerifyOptions::default(),
        &crate::progress::NoProgress,
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::Missing(_)), "{e}");
}
