//! Tests of the name rules (pure), for every major from 9.6 to 18.

use super::*;
use crate::plan::tests::v;

const ALL: [&str; 10] = ["9.6", "10", "11", "12", "13", "14", "15", "16", "17", "18"];

fn d(path: &str, version: &str) -> Decision {
    classify(path, v(version))
}

fn ex(e: Exclusion) -> Decision {
    Decision::Exclude(e)
}

fn unless(init: &str) -> Decision {
    Decision::UnlessInitFork {
        init_fork: init.to_owned(),
    }
}

/// Asserts `path` classifies as `expected(version)` for every version in `ALL`.
fn each(path: &str, expected: impl Fn(PgVersion) -> Decision) {
    for ver in ALL {
        assert_eq!(d(path, ver), expected(v(ver)), "{path} on {ver}");
    }
}

#[test]
fn temp_files_at_any_depth() {
    for p in [
        "pgsql_tmp",
        "base/pgsql_tmp",
        "base/pgsql_tmp/pgsql_tmp1234.0",
        "base/5/pgsql_tmp42",
        "pg_tblspc/16385/PG_15_202209061/pgsql_tmp",
        "pgsql_tmpanything",
    ] {
        each(p, |_| ex(Exclusion::TempFile));
    }
    each("base/pgsql_tm", |_| Decision::Include);
}

#[test]
fn ds_store_from_15() {
    for p in [".DS_Store", "base/.DS_Store", "base/5/.DS_Store"] {
        each(p, |ver| {
            if ver.at_least(15) {
                ex(Exclusion::DsStore)
            } else {
                Decision::Include
            }
        });
    }
}

#[test]
fn transient_files() {
    each("postgresql.auto.conf.tmp", |_| ex(Exclusion::TransientFile));
    each("sub/postgresql.auto.conf.tmp", |_| {
        ex(Exclusion::TransientFile)
    });
    each("postgresql.auto.conf", |_| Decision::Include);
    each("current_logfiles.tmp", |ver| {
        if ver.at_least(10) {
            ex(Exclusion::TransientFile)
        } else {
            Decision::Include
        }
    });
    each("current_logfiles", |_| Decision::Include);
}

#[test]
fn relcache_init_files() {
    each("global/pg_internal.init", |ver| {
        if ver.at_least(11) {
            ex(Exclusion::RelcacheInit)
        } else {
            Decision::Include
        }
    });
    each("base/5/pg_internal.init.4242", |ver| {
        if ver.at_least(11) {
            ex(Exclusion::RelcacheInit)
        } else {
            Decision::Include
        }
    });
    each("base/5/pg_internal.ini", |_| Decision::Include);
}

#[test]
fn files_of_earlier_backups() {
    for p in ["backup_label", "tablespace_map", "base/backup_label"] {
        each(p, |_| ex(Exclusion::BackupFile));
    }
    // At the top level on every version: pgsafe writes its own there (rule 3a's reason);
    // deeper only where pg_basebackup leaves it out (13+).
    each("backup_manifest", |_| ex(Exclusion::BackupFile));
    each("base/backup_manifest", |ver| {
        if ver.at_least(13) {
            ex(Exclusion::BackupFile)
        } else {
            Decision::Include
        }
    });
    // pg_basebackup copies these: parity.
    for p in ["backup_label.old", "tablespace_map.old", "recovery.signal"] {
        each(p, |_| Decision::Include);
    }
}

#[test]
fn pgsafe_files_at_the_top_level() {
    // Spelled out: the names older backups and restored data directories carry, whatever
    // the constants in layout.rs say.
    for f in [
        "pgsafe.json",
        "pgsafe.incomplete",
        "pgsafe_restore.json",
        "backup_label.pgsafe-removed",
    ] {
        assert!(PGSAFE_FILES.contains(&f), "{f}");
        each(f, |_| ex(Exclusion::PgsafeFile));
        // Only pgsafe's own place: a user's file of that name elsewhere is data.
        each(&format!("base/{f}"), |_| Decision::Include);
    }
    each("pgsafe.json.bak", |_| Decision::Include);
    // Half-written files of pgsafe's durable writes, at any depth.
    for p in [
        ".backup_label.pgsafe-tmp",
        ".pgsafe_restore.json.pgsafe-tmp",
        "pg_tblspc/.x.pgsafe-tmp-4242",
        ".pgsafe.json.pgsafe-tmp-1",
    ] {
        each(p, |_| ex(Exclusion::PgsafeFile));
    }
    for p in [
        "x.pgsafe-tmp",
        ".x.pgsafe-tmpl",
        ".pgsafe-tmpx",
        "base/5/.x.pgsafe-temp",
    ] {
        each(p, |_| Decision::Include);
    }
}

#[test]
fn postmaster_files() {
    each("postmaster.pid", |_| ex(Exclusion::ServerRuntime));
    each("postmaster.opts", |_| ex(Exclusion::ServerRuntime));
    each("base/postmaster.pid", |ver| {
        if ver.at_least(10) {
            ex(Exclusion::ServerRuntime)
        } else {
            Decision::Include
        }
    });
    each("postmaster.pid.bak", |_| Decision::Include);
}

#[test]
fn relation_forks_in_relation_directories() {
    let dirs = [
        "base/5",
        "base/16384",
        "global",
        "pg_tblspc/16385/PG_15_202209061/5",
    ];
    for dir in dirs {
        let on = |ver: &str| !dir.starts_with("pg_tblspc") || ver == "15";
        for ver in ALL {
            let rel = |name: &str| format!("{dir}/{name}");
            let want = |init: &str| {
                if on(ver) {
                    unless(init)
                } else {
                    Decision::Include
                }
            };
            assert_eq!(d(&rel("16384"), ver), want("16384_init"), "{dir} {ver}");
            assert_eq!(d(&rel("16384.1"), ver), want("16384_init"), "{dir} {ver}");
            assert_eq!(d(&rel("16384_fsm"), ver), want("16384_init"), "{dir} {ver}");
            assert_eq!(
                d(&rel("16384_vm.12"), ver),
                want("16384_init"),
                "{dir} {ver}"
            );
            // Init forks are always kept.
            assert_eq!(d(&rel("16384_init"), ver), Decision::Include);
            assert_eq!(d(&rel("16384_init.1"), ver), Decision::Include);
            // Not relation names.
            for name in [
                "16384_main",
                "16384_fsmx",
                "16384_",
                "16384.",
                "16384.1a",
                "16384_vm_fsm",
                "x16384",
                "12345678901",
                "PG_VERSION",
                "pg_filenode.map",
            ] {
                assert_eq!(d(&rel(name), ver), Decision::Include, "{dir}/{name} {ver}");
            }
        }
    }
}

#[test]
fn relation_name_grammar_tightened_in_17() {
    // 10–16: leading zeros and up to 10 digits; 17+: no leading zero, at most 2^32-1, and the
    // segment number follows the same rule.
    for (name, old, new) in [
        ("0017", Some("0017_init"), None),
        ("16384.0", Some("16384_init"), None),
        ("16384.01", Some("16384_init"), None),
        (
            "4294967295",
            Some("4294967295_init"),
            Some("4294967295_init"),
        ),
        ("4294967296", Some("4294967296_init"), None),
        ("9999999999", Some("9999999999_init"), None),
        ("1.4294967296", Some("1_init"), None),
        ("1.4294967295", Some("1_init"), Some("1_init")),
    ] {
        let p = format!("base/5/{name}");
        for ver in ALL {
            let want = if v(ver).at_least(17) { new } else { old };
            let want = want.map_or(Decision::Include, unless);
            assert_eq!(d(&p, ver), want, "{p} on {ver}");
        }
    }
}

#[test]
fn relation_rules_only_in_relation_directories() {
    for p in [
        "16384",
        "base/16384",
        "base/5x/16384",
        "base/5/sub/16384",
        "pg_xact/0000",
        "pg_multixact/members/0000",
        "pg_tblspc/16385/PG_15_202209061/16386",
        "pg_tblspc/16385/PG_15_/5/16386",
        "pg_tblspc/x/PG_15_202209061/5/16386",
        "pg_tblspc/16385/PG_15_202209061/5/6/16386",
        "t3_16400",
        "pg_xact/t3_16400",
    ] {
        for ver in ["15", "17"] {
            assert_eq!(d(p, ver), Decision::Include, "{p} on {ver}");
        }
    }
}

#[test]
fn temporary_relations() {
    for name in [
        "t3_16400",
        "t3_16400_fsm",
        "t3_16400_vm",
        "t3_16400_init",
        "t3_16400.1",
        "t3_16400_fsm.2",
        "t123456_0",
        "t0_0",
    ] {
        each(&format!("base/5/{name}"), |_| ex(Exclusion::TempRelation));
        each(&format!("pg_tblspc/9/PG_17_202406281/5/{name}"), |ver| {
            if ver.major() == 17 {
                ex(Exclusion::TempRelation)
            } else {
                Decision::Include
            }
        });
    }
    for name in [
        "t_16400",
        "t3_",
        "t3",
        "t3_16400_main",
        "t3_16400.",
        "t3_16400x",
        "tt3_16400",
        "T3_16400",
    ] {
        each(&format!("base/5/{name}"), |_| Decision::Include);
    }
}

#[test]
fn control_file_only_in_global() {
    each("global/pg_control", |_| Decision::ControlFile);
    each("pg_control", |_| Decision::Include);
    each("base/5/pg_control", |_| Decision::Include);
    each("global/pg_control.bak", |_| Decision::Include);
}

#[test]
fn directories_kept_empty() {
    for name in ["pg_stat_tmp", "pg_replslot"] {
        each(name, |_| Decision::EmptyDir);
        each(&format!("base/{name}"), |_| Decision::EmptyDir);
    }
    for name in [
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
    ] {
        each(name, |ver| {
            if ver.at_least(10) {
                Decision::EmptyDir
            } else {
                Decision::Include
            }
        });
        assert_eq!(d(&format!("x/{name}"), "15"), Decision::EmptyDir);
    }
    // 9.6 compared pg_stat_tmp as a prefix.
    each("pg_stat_tmp_old", |ver| {
        if ver.at_least(10) {
            Decision::Include
        } else {
            Decision::EmptyDir
        }
    });
    for p in [
        "pg_stat",
        "pg_xact",
        "pg_multixact",
        "pg_logical",
        "pg_commit_ts",
        "pg_twophase",
    ] {
        each(p, |_| Decision::Include);
    }
}

#[test]
fn wal_directory_top_level_only() {
    each("pg_wal", |ver| {
        if ver.at_least(10) {
            Decision::WalDir
        } else {
            Decision::Include
        }
    });
    each("pg_xlog", |ver| {
        if ver.at_least(10) {
            Decision::Include
        } else {
            Decision::WalDir
        }
    });
    each("base/pg_wal", |_| Decision::Include);
    assert_eq!(wal_dir_name(v("15")), "pg_wal");
}

#[test]
fn non_utf8_names_are_classified_as_bytes() {
    assert_eq!(
        classify(&b"base/5/\xff\xfe"[..], v("15")),
        Decision::Include
    );
    assert_eq!(
        classify(&b"pgsql_tmp\xff"[..], v("15")),
        ex(Exclusion::TempFile)
    );
}
