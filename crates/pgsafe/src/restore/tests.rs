use std::fs;

use super::owner::parse_owner;
use super::report::shell_quote;
use super::*;
use crate::info::FileOwner;

#[test]
fn tablespace_mappings_parse() {
    let m: TablespaceMapping = "16385=/new/ts".parse().unwrap();
    assert_eq!(m.from, TablespaceSelector::Oid(16385));
    assert_eq!(m.to, PathBuf::from("/new/ts"));
    let m: TablespaceMapping = "/old/ts dir=/new/ts".parse().unwrap();
    assert_eq!(m.from, TablespaceSelector::Path("/old/ts dir".into()));
    for bad in ["x", "=/a", "1=", "1=rel", "rel=/abs", "99999999999=/a"] {
        assert!(bad.parse::<TablespaceMapping>().is_err(), "{bad}");
    }
}

#[test]
fn shell_quoting() {
    assert_eq!(shell_quote("/var/lib/pg"), "/var/lib/pg");
    assert_eq!(shell_quote("/a b"), "'/a b'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}

#[test]
fn target_checks() {
    let d = tempfile::tempdir().unwrap();
    assert!(!check_target(&d.path().join("new")).unwrap());
    assert!(!check_target(&d.path().join("a/b/c")).unwrap());
    assert!(check_target(d.path()).unwrap());
    fs::write(d.path().join("x"), b"").unwrap();
    assert!(matches!(
        check_target(d.path()),
        Err(RestoreError::TargetNotEmpty(_))
    ));
    assert!(matches!(
        check_target(&d.path().join("x")),
        Err(RestoreError::TargetUnusable { .. })
    ));
    // A live postmaster (this process's pid).
    let t = d.path().join("live");
    fs::create_dir(&t).unwrap();
    fs::write(
        t.join("postmaster.pid"),
        format!("{}\n{}\n", std::process::id(), t.display()),
    )
    .unwrap();
    assert!(matches!(
        check_target(&t),
        Err(RestoreError::TargetRunning { .. })
    ));
    // A link to an empty directory is a usable target.
    let e = d.path().join("empty");
    fs::create_dir(&e).unwrap();
    std::os::unix::fs::symlink(&e, d.path().join("link")).unwrap();
    assert!(check_target(&d.path().join("link")).unwrap());
}

#[test]
fn owner_specs() {
    let o = parse_owner("0:0").unwrap();
    assert!(o.uid.is_root());
    assert!(parse_owner("no-such-user-pgsafe").is_err());
    assert!(parse_owner("root:no-such-group-pgsafe").is_err());
    let r = parse_owner("root").unwrap();
    assert_eq!(r.gid, Gid::from_raw(0));
    // Root can never own a data directory.
    let e = resolve_owner(Some("root"), None, Path::new("/")).unwrap_err();
    assert!(e.to_string().contains("refuses to run as root"), "{e}");
    // chown(2)'s "no change" value would leave the files root's.
    for spec in ["4294967295", "4294967295:4294967295", "0:4294967295"] {
        let e = parse_owner(spec).unwrap_err();
        assert!(e.to_string().contains("leave unchanged"), "{spec}: {e}");
    }
    let recorded = FileOwner {
        uid: u32::MAX,
        gid: u32::MAX,
        user: None,
        group: None,
    };
    if nix::unistd::geteuid().is_root() {
        let e = resolve_owner(None, Some(&recorded), Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("leave unchanged"), "{e}");
    }
}
