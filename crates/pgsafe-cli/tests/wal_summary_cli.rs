//! pgsafe's own WAL summaries, written by `archive-push` as PostgreSQL's archiver runs it,
//! against an oracle that does not read them: after pgbench and DDL (TRUNCATE, DROP, CREATE
//! DATABASE — both strategies on 15+ —, VACUUM FULL, ALTER TABLE SET TABLESPACE, a relation
//! created and filled), every page of the data directory whose LSN lies after the prior start
//! and before the end of the summarized WAL (read after a checkpoint) must be in the changed
//! set the summaries give. Every archived segment has its summary.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pgsafe::changed::source::from_archive_summaries;
use pgsafe::changed::{ChangedBlocks, FilePlan};
use pgsafe::page::page_lsn;
use pgsafe::storage::Ident;
use pgsafe::wal::record::decode::{Fork, RelFileLocator};
use pgsafe::{Lsn, TimelineId, WalSegSize, WalSegment};
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, give_to_server_user, per_major, pgbench_command,
    pgbench_init, push_command, server_owned_tempdir, set_archive_command,
};

use common::{bin, ok, repo_init};

const BLCKSZ: usize = 8192;
const RELSEG: u32 = 131072;

fn lsn(c: &Cluster, sql: &str) -> Lsn {
    c.query_one::<String>(sql).parse().expect("an LSN")
}

fn pgbench(c: &Cluster, db: &str) {
    let out = pgbench_command(c)
        .args(["-n", "-c", "2", "-t", "200", db])
        .output()
        .expect("pgbench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the archiver reports `seg` archived.
fn wait_archived(c: &Cluster, seg: &str) {
    for _ in 0..600 {
        let last: Option<String> = c.query_one("SELECT last_archived_wal FROM pg_stat_archiver");
        if last.as_deref().is_some_and(|l| l >= seg) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{seg} not archived: {}", c.server_log_tail(30));
}

/// The relation file at `rel` (relative to PGDATA): its locator, fork and segment number.
fn relation_file(rel: &Path) -> Option<(RelFileLocator, Fork, u32)> {
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap_or("")).collect();
    let (spc, db, name) = match parts.as_slice() {
        ["base", db, name] => (1663, db.parse().ok()?, *name),
        ["global", name] => (1664, 0, *name),
        ["pg_tblspc", spc, _, db, name] => (spc.parse().ok()?, db.parse().ok()?, *name),
        _ => return None,
    };
    let (base, segno) = match name.split_once('.') {
        Some((b, s)) => (b, s.parse().ok()?),
        None => (name, 0),
    };
    let (num, fork) = match base.split_once('_') {
        Some((n, f)) => (n, Fork::from_name(f)?),
        None => (base, Fork::Main),
    };
    let rel_number = num.parse().ok()?;
    Some((
        RelFileLocator {
            spc_oid: spc,
            db_oid: db,
            rel_number,
        },
        fork,
        segno,
    ))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let ft = e.file_type().expect("type");
        if ft.is_dir() || (ft.is_symlink() && p.is_dir()) {
            walk(root, &p, out);
        } else if ft.is_file() {
            out.push(p.strip_prefix(root).expect("below").to_owned());
        }
    }
}

/// Every page with `since < LSN < until` of every WAL-logged relation file is in `set`;
/// returns how many such pages were checked.
fn pages_covered(pgdata: &Path, set: &ChangedBlocks, since: Lsn, until: Lsn, m: &str) -> u64 {
    let mut files = Vec::new();
    for top in ["base", "global", "pg_tblspc"] {
        walk(pgdata, &pgdata.join(top), &mut files);
    }
    let parsed: BTreeMap<_, _> = files
        .iter()
        .filter_map(|f| relation_file(f).map(|r| (f.clone(), r)))
        .collect();
    // Unlogged relations (an init fork) are not WAL-logged.
    let unlogged: Vec<RelFileLocator> = parsed
        .values()
        .filter(|(_, fork, _)| *fork == Fork::Init)
        .map(|(r, _, _)| *r)
        .collect();
    let mut checked = 0;
    for (path, (rel, fork, segno)) in &parsed {
        if unlogged.contains(rel) || *fork == Fork::Init {
            continue;
        }
        let bytes = fs::read(pgdata.join(path)).expect("read relation file");
        let nblocks = (bytes.len() / BLCKSZ) as u32;
        let plan = set.plan_segment(*rel, *fork, *segno, RELSEG, nblocks);
        for (b, page) in bytes.chunks_exact(BLCKSZ).enumerate() {
            let l = page_lsn(page.try_into().expect("a page"));
            if l <= since || l >= until {
                continue;
            }
            checked += 1;
            let ok = match &plan {
                FilePlan::Whole { .. } => true,
                FilePlan::Blocks { blocks } => blocks.contains(&(b as u32)),
            };
            assert!(
                ok,
                "{m}: {} block {b} has LSN {l} after {since}, but the summaries do not list it",
                path.display()
            );
        }
    }
    checked
}

fn summaries_cover_every_changed_page(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new()
            .fast_unsafe()
            .with_tablespace(true)
            .conf("archive_mode = on")
            .conf("autovacuum = off"),
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    ok(repo_init(&c, &repo, "main"), "init");
    give_to_server_user(&repo);
    set_archive_command(&c, &push_command(&bin(), &repo, "main"));
    pgbench_init(&c, 2);
    c.execute("CREATE TABLE gone AS SELECT g FROM generate_series(1, 20000) g");
    c.execute("CREATE TABLE moved AS SELECT g FROM generate_series(1, 20000) g");
    c.execute("CHECKPOINT");
    let since = lsn(&c, "SELECT redo_lsn::text FROM pg_control_checkpoint()");

    pgbench(&c, "postgres");
    c.execute("TRUNCATE pgbench_history");
    c.execute("DELETE FROM pgbench_tellers WHERE tid > 5");
    c.execute("VACUUM pgbench_tellers");
    c.execute("VACUUM FULL pgbench_branches");
    c.execute("DROP TABLE gone");
    let spc = c.tablespace_dir().is_some();
    if spc {
        c.execute("ALTER TABLE moved SET TABLESPACE ts1");
    }
    c.execute(
        "CREATE TABLE fresh AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 30000) g",
    );
    c.execute("CREATE DATABASE copied TEMPLATE template1");
    if major >= 15 {
        c.execute("CREATE DATABASE logged TEMPLATE template1 STRATEGY wal_log");
        c.execute("CREATE DATABASE filecopy TEMPLATE template1 STRATEGY file_copy");
        c.execute("DROP DATABASE logged");
    }
    pgbench(&c, "postgres");
    c.execute("CHECKPOINT");
    let seg: String = c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.execute("SELECT pg_switch_wal()");
    let until = lsn(&c, "SELECT pg_current_wal_lsn()::text");
    wait_archived(&c, &seg);

    let repository = pgsafe::repo::Repository::open(repo.as_path()).expect("open repository");
    let cluster = Ident::new("main").unwrap();
    let seg_size = WalSegSize::new(16 << 20).unwrap();
    let set = from_archive_summaries(
        repository.backend().as_ref(),
        &cluster,
        TimelineId(1),
        (since, until),
        seg_size,
    )
    .unwrap_or_else(|why| panic!("{m}: no changed set from the summaries: {why}"));
    let checked = pages_covered(c.data_dir(), &set, since, until, &m);
    assert!(checked > 100, "{m}: only {checked} pages changed");
    // Every segment archived since the prior start has its summary.
    let size = seg_size.bytes();
    for segno in since.0 / size..=(until.0 - 1) / size {
        let seg = WalSegment::containing(Lsn(segno * size), TimelineId(1), seg_size).to_string();
        let object = repo
            .join("main/wal-summaries")
            .join(&seg[..8])
            .join(&seg[8..16])
            .join(format!("{seg}.json"));
        assert!(object.is_file(), "{m}: no summary of {seg}");
    }
}

per_major!(summaries_cover_every_changed_page: 10, 14, 16, 18);
