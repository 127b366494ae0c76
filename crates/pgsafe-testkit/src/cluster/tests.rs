//! Tests of the harness's pure helpers.

use super::setup::{conf_line_to_arg, conf_quote, conn_quote, pick_port};
use super::standby::standby_copy_filter;
use super::*;
use crate::fsx::Entry;

#[test]
fn quoting() {
    assert_eq!(conf_quote("it's"), "'it''s'");
    assert_eq!(conn_quote("/tmp/pgs-abc"), "/tmp/pgs-abc");
    assert_eq!(conn_quote("/a b/it's"), r"'/a b/it\'s'");
    assert_eq!(conf_line_to_arg("max_wal_size = 32MB"), "max_wal_size=32MB");
    assert_eq!(
        conf_line_to_arg("log_line_prefix = '%m it''s '"),
        "log_line_prefix=%m it's "
    );
}

#[test]
fn standby_filter_leaves_out_runtime_files() {
    let f = |p: &str, d| standby_copy_filter(Path::new(p), d);
    assert_eq!(f("postmaster.pid", false), Entry::Skip);
    assert_eq!(f("pg_wal", true), Entry::Copy);
    assert_eq!(f("pg_wal/000000010000000000000001", false), Entry::Skip);
    assert_eq!(f("pg_wal/archive_status", true), Entry::EmptyDir);
    assert_eq!(f("pg_replslot", true), Entry::EmptyDir);
    assert_eq!(f("base/1/pg_internal.init", false), Entry::Skip);
    assert_eq!(f("base/1/1259", false), Entry::Copy);
    assert_eq!(f("global/pg_control", false), Entry::Copy);
}

#[test]
fn ports_are_distinct_within_a_process() {
    let ports: std::collections::BTreeSet<u16> = (0..1000).map(|_| pick_port()).collect();
    assert_eq!(ports.len(), 1000);
    assert!(ports.iter().all(|p| (20000..60000).contains(p)));
}
