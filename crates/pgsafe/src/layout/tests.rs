//! The names are spelled out here on purpose: they are what pg_verifybackup, PostgreSQL and
//! older pgsafe versions read, so a change to one of them must fail a test.

use std::fs;
use std::os::unix::fs::symlink;

use super::*;

#[test]
fn names_are_the_ones_postgresql_and_older_backups_use() {
    assert_eq!(LABEL_FILE, "backup_label");
    assert_eq!(MAP_FILE, "tablespace_map");
    assert_eq!(MANIFEST_FILE, "backup_manifest");
    assert_eq!(COMPLETE_MARKER, "pgsafe.json");
    assert_eq!(INCOMPLETE_MARKER, "pgsafe.incomplete");
    assert_eq!(WAL_DIR, "pg_wal");
    assert_eq!(CONTROL_FILE, "global/pg_control");
    assert_eq!(RESTORE_MARKER_FILE, "pgsafe_restore.json");
    assert_eq!(REMOVED_LABEL_FILE, "backup_label.pgsafe-removed");
    assert_eq!(Compression::Zstd { level: 3 }.suffix(), ".zst");
    assert_eq!(Compression::Lz4.suffix(), ".lz4");
}

#[test]
fn stored_paths_follow_the_layout() {
    let z = Compression::Zstd { level: 1 };
    assert_eq!(stored_path(b"base/1/1", z).to_string(), "base/1/1.zst");
    assert_eq!(
        stored_path(b"global/pg_control", Compression::Lz4).to_string(),
        "global/pg_control.lz4"
    );
    for p in [
        "backup_label",
        "tablespace_map",
        "pgsafe.json",
        "backup_manifest",
        "pg_wal/000000010000000000000002",
        "pg_wal/00000002.history",
    ] {
        assert_eq!(stored_path(p.as_bytes(), z).to_string(), p);
        assert_eq!(stored_path(p.as_bytes(), Compression::Lz4).to_string(), p);
    }
    // Only the exact root names are kept as they are: a data file that happens to be called
    // like one (in a database directory) or a folder named like pg_wal is compressed.
    for p in ["base/1/backup_label", "pg_walx/1", "base/pg_wal/1"] {
        assert_eq!(stored_path(p.as_bytes(), z).to_string(), format!("{p}.zst"));
    }
    assert_eq!(
        stored_path(b"base/1/1", Compression::None).to_string(),
        "base/1/1"
    );
}

#[test]
fn wal_file_names() {
    assert_eq!(
        wal_file_name(b"pg_wal/000000010000000000000002"),
        Some(&b"000000010000000000000002"[..])
    );
    assert_eq!(wal_file_name(b"pg_wal/"), Some(&b""[..]));
    assert_eq!(wal_file_name(b"pg_wal"), None);
    assert_eq!(wal_file_name(b"pg_walx/1"), None);
    assert_eq!(wal_file_name(b"base/pg_wal/1"), None);
}

#[test]
fn listing_reports_links_and_oddities_without_following_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"x").unwrap();
    fs::create_dir_all(root.join("base/1")).unwrap();
    fs::write(root.join("base/1/1"), b"abc").unwrap();
    fs::write(root.join(COMPLETE_MARKER), b"{}").unwrap();
    symlink(outside.path(), root.join("pg_tblspc_link")).unwrap();
    fs::hard_link(root.join("base/1/1"), root.join("base/1/2")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();

    let l = list_backup(root).unwrap();
    let rel = |s: &str| RelPath::from_bytes(s.as_bytes());
    assert_eq!(l.dirs, [rel("base"), rel("base/1")]);
    assert_eq!(l.files.get(&rel("base/1/1")), Some(&3));
    assert_eq!(l.files.get(&rel(COMPLETE_MARKER)), Some(&2));
    assert_eq!(l.hard_links, [rel("base/1/1"), rel("base/1/2")]);
    assert_eq!(l.special, [rel("fifo")]);
    assert_eq!(l.links.len(), 1);
    assert_eq!(l.links[0].0, rel("pg_tblspc_link"));
    // Not followed: nothing of the link's target is listed.
    assert!(l.files.keys().all(|p| !p.to_string().contains("secret")));
    assert!(l.unreadable.is_empty());
}

#[test]
fn listing_a_missing_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(list_backup(&dir.path().join("nothing")).is_err());
}
