//! Test support: real PostgreSQL clusters of every supported major version (10–18).
//!
//! * [`PgInstall`] finds the server binaries that `scripts/install-postgres` put into the
//!   repository's git-ignored `.pg/<major>/` folders (or `$PGSAFE_PG_DIR/<major>/`), and
//!   [`client_bin_dir`] the Debian PostgreSQL 15 client tools (`pg_basebackup`, `pg_verifybackup`,
//!   `pg_controldata`, `pg_waldump`, `pgbench`, ...).
//! * [`Cluster`] is one server: initdb (from a per-version template cache, so creating one is
//!   cheap), start, stop, crash (SIGKILL), immediate stop (SIGQUIT), connect, query; a streaming
//!   standby of another cluster; adopting a restored data directory. The postmaster is a direct
//!   child of the test process, so a crash can be reaped at once (a `pg_ctl`-started server is
//!   not our child: its exit could only be polled).
//! * [`LoopFs`] is a real btrfs or XFS file system on a loop device (root only), for tests of
//!   storage snapshots; it skips a test visibly where that cannot run.
//! * [`LoadGenerator`] writes from several client threads and remembers which writes committed,
//!   so a test can prove that a crash-recovered or restored server lost none of them.
//! * [`Marks`] commit one row per transaction and record a recovery target of every kind (time,
//!   LSN, xid, restore point) that separates it from the next, so a point-in-time restore is
//!   checked by counting; [`PgbenchRun`] and [`pgbench_invariant`] are pgbench as a write load
//!   with its balance invariant; [`amcheck`] checks a restored server's indexes and heaps.
//!
//! Every cluster has its own short Unix socket directory and port and listens on no TCP address,
//! so tests (threads of one binary and several binaries at once) run in parallel without clashes.
//! When the test process runs as root (CI does; PostgreSQL refuses to run as root), servers run as
//! an unprivileged user that the harness finds or creates (`pgsafe-test`, or `$PGSAFE_TEST_USER`);
//! everything the harness creates for a server is owned by that user.
//!
//! Environment: `PGSAFE_PG_DIR` (install folder), `PGSAFE_CLIENT_BIN_DIR` (client tools),
//! `PGSAFE_TEST_USER` (server user when root), `PGSAFE_TEST_TMPDIR` (where cluster data goes;
//! default `/dev/shm` if it is a roomy tmpfs, else `$TMPDIR`), `PGSAFE_KEEP_CLUSTERS=1` (keep temp dirs of dropped
//! clusters for debugging), `PGSAFE_TEST_TIMEOUT_SECS` (start/stop timeouts, default 120),
//! `PGSAFE_REQUIRE_LOOP=1` (a test that needs loop devices fails instead of skipping).

mod amcheck;
mod cluster;
mod fsx;
mod install;
mod load;
mod loopfs;
mod pgbench;
mod pitr;
mod repo_archive;
pub mod s3;
mod tls;
mod user;
mod waltools;

pub use amcheck::amcheck;
pub use cluster::{Cluster, ClusterOptions, StopMode, TABLESPACE_NAME};
pub use fsx::{copy_tree, scratch_root, server_owned_tempdir};
pub use install::{PgInstall, client_bin_dir, repo_root};
pub use load::{Event, LoadGenerator, LoadOptions, LoadReport, Op};
pub use loopfs::{FsKind, LoopFs, shell_quote};
pub use pgbench::{PgbenchRun, history_rows, pgbench_command, pgbench_init, pgbench_invariant};
pub use pitr::{
    Mark, Marks, archive_settings, check_marks, give_to_server_user, wait_archived,
    wait_segment_archived,
};
pub use repo_archive::{archive_into_repo, push_command, repo_wal_objects, set_archive_command};
pub use tls::TestPki;
pub use user::{ServerUser, server_user};
pub use waltools::wal_tool;

/// The superuser role every harness cluster has (`initdb -U postgres`), whatever the OS user.
pub const SUPERUSER: &str = "postgres";

/// Generates one `#[test]` per major in a module named after the function, each calling
/// `$f(major)`: `per_major!(my_check);` with `fn my_check(major: u32)` runs on every supported
/// major (`pg10` … `pg18`), `per_major!(my_check: 12, 17);` on those listed (the majors where the
/// behaviour under test differs). Separate tests run in parallel and report per version.
#[macro_export]
macro_rules! per_major {
    ($f:ident) => {
        $crate::per_major!($f: 10, 11, 12, 13, 14, 15, 16, 17, 18);
    };
    ($f:ident: $($m:tt),+ $(,)?) => {
        mod $f {
            $(
                $crate::per_major!(@one $f, $m);
            )+
        }
    };
    (@one $f:ident, 10) => {
        #[test]
        fn pg10() {
            super::$f(10)
        }
    };
    (@one $f:ident, 11) => {
        #[test]
        fn pg11() {
            super::$f(11)
        }
    };
    (@one $f:ident, 12) => {
        #[test]
        fn pg12() {
            super::$f(12)
        }
    };
    (@one $f:ident, 13) => {
        #[test]
        fn pg13() {
            super::$f(13)
        }
    };
    (@one $f:ident, 14) => {
        #[test]
        fn pg14() {
            super::$f(14)
        }
    };
    (@one $f:ident, 15) => {
        #[test]
        fn pg15() {
            super::$f(15)
        }
    };
    (@one $f:ident, 16) => {
        #[test]
        fn pg16() {
            super::$f(16)
        }
    };
    (@one $f:ident, 17) => {
        #[test]
        fn pg17() {
            super::$f(17)
        }
    };
    (@one $f:ident, 18) => {
        #[test]
        fn pg18() {
            super::$f(18)
        }
    };
}
