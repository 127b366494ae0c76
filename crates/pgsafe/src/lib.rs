//! pgsafe: safe online physical backups of PostgreSQL 10–18.
//!
//! Every behaviour lives in this library; the `pgsafe` binary only parses arguments, renders
//! output and maps errors to exit codes. Format modules (`types`, `label`, `control`, `wal`) are
//! pure: they parse and encode bytes and never touch the file system (the one exception,
//! `control::read_control_file`, is a small IO wrapper kept beside its format).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod archive;
pub mod backup;
pub mod changed;
pub mod check;
pub mod checksum;
pub mod codec;
pub mod config;
pub mod conninfo;
pub mod control;
pub mod copy;
pub mod datadir;
pub mod doctor;
pub mod error;
pub mod fsutil;
pub mod hold;
pub mod info;
pub mod label;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod page;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod repo;
pub mod restore;
pub mod restore_test;
pub mod runrecord;
pub mod session;
pub mod storage;
pub mod textbytes;
pub mod types;
pub mod verify;
pub mod wal;

pub use types::{Lsn, PgVersion, SystemId, TimelineId, TypeError, WalSegSize, WalSegment};
