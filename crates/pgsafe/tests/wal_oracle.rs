//! The WAL formats of `pgsafe::wal::record` (and, 17+, `pgsafe::wal::summary`) against
//! PostgreSQL's own tools on real servers: every record of a stretch of WAL written under
//! pgbench, DDL (CREATE/DROP DATABASE, TRUNCATE, VACUUM FULL, index builds), compressed and
//! plain full-page images and large records crossing pages and segments must come out with the
//! same LSN, resource manager, length and block references as `pg_waldump -b` of the same major
//! prints. The tools come from `scripts/install-wal-tools` (14 and later; older majors' tools
//! are not packaged anywhere this project can install from).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use pgsafe::wal::record::decode::{Fork, ImageCompression, RecordFormat, decode_record, rmgr_name};
use pgsafe::wal::record::reader::{ReaderStats, WalReader};
use pgsafe::wal::summary::{BlockRefTable, SummaryFileName, encode_summary, parse_summary};
use pgsafe::{Lsn, TimelineId, WalSegSize, WalSegment};
use pgsafe_testkit::{
    Cluster, ClusterOptions, PgInstall, per_major, pgbench_command, pgbench_init, wal_tool,
};

/// One block reference as both sides describe it: id, `spc/db/rel`, fork, block, and for an
/// image (hole offset, hole length, compression method).
type Blk = (
    u8,
    String,
    &'static str,
    u32,
    Option<(u16, u16, &'static str)>,
);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    lsn: Lsn,
    rmgr: String,
    tot_len: u32,
    blocks: Vec<Blk>,
}

fn lsn(text: &str) -> Lsn {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn seg_of(l: Lsn, seg: u64) -> u64 {
    l.0 / seg
}

fn pgbench(c: &Cluster, clients: u32, transactions: u32) {
    let out = pgbench_command(c)
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-t",
            &transactions.to_string(),
            "postgres",
        ])
        .output()
        .expect("run pgbench");
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes WAL the ways that matter for block references; returns `[start, end)`: `start` a
/// segment's first byte, `end` the end of the segment holding the closing switch record.
fn workload(c: &Cluster, seg: u64) -> (Lsn, Lsn) {
    let major = c.major();
    // Keep every segment from now on (a checkpoint would otherwise recycle them).
    c.execute("SELECT pg_create_physical_replication_slot('walparse_keep', true)");
    c.execute("SELECT pg_switch_wal()");
    let insert = lsn(&c.query_one::<String>("SELECT pg_current_wal_insert_lsn()::text"));
    let start = Lsn(insert.0 / seg * seg);
    pgbench_init(c, 1);
    pgbench(c, 4, 150);
    // Compressed full-page images: pglz everywhere, lz4 too where the build has it (15+).
    c.execute("ALTER SYSTEM SET wal_compression = on");
    c.execute("SELECT pg_reload_conf()");
    c.execute("CHECKPOINT");
    pgbench(c, 4, 150);
    if major >= 15 {
        let mut client = c.connect();
        if client
            .batch_execute("ALTER SYSTEM SET wal_compression = lz4")
            .is_ok()
        {
            c.execute("SELECT pg_reload_conf()");
            c.execute("CHECKPOINT");
            pgbench(c, 2, 100);
        }
    }
    c.execute("ALTER SYSTEM RESET wal_compression");
    c.execute("SELECT pg_reload_conf()");
    c.execute("CREATE DATABASE walparse_a");
    if major >= 15 {
        c.execute("CREATE DATABASE walparse_b STRATEGY FILE_COPY");
        c.execute("DROP DATABASE walparse_b");
    }
    c.execute("CREATE TABLE big AS SELECT g, md5(g::text) AS t FROM generate_series(1, 40000) g");
    c.execute("CREATE INDEX big_t ON big (t)");
    c.execute("TRUNCATE pgbench_history");
    c.execute("VACUUM FULL pgbench_tellers");
    c.execute("DELETE FROM big WHERE g % 3 = 0");
    c.execute("VACUUM big");
    c.execute("DROP DATABASE walparse_a");
    // Records larger than a page, one after another over several segments.
    c.execute(
        "SELECT pg_logical_emit_message(false, 'walparse', repeat(md5(i::text), 4000)) \
         FROM generate_series(1, 40) i",
    );
    pgbench(c, 2, 50);
    let sw = lsn(&c.query_one::<String>("SELECT pg_switch_wal()::text"));
    (start, Lsn(sw.0.div_ceil(seg) * seg))
}

fn segment_bytes(c: &Cluster, segno: u64, seg_size: WalSegSize) -> Vec<u8> {
    let name = WalSegment::from_segno(TimelineId(1), segno, seg_size).to_string();
    std::fs::read(c.data_dir().join("pg_wal").join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// pgsafe's reading of `[start, end)`: the records, where each ends, and the reader's counts.
fn ours(
    c: &Cluster,
    start: Lsn,
    end: Lsn,
    seg_size: WalSegSize,
) -> (Vec<Rec>, Vec<Lsn>, ReaderStats) {
    let seg = seg_size.bytes();
    let format = RecordFormat::new(c.major(), 8192);
    let mut reader = WalReader::new(start, seg_size, 8192).with_stop(end);
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    for segno in seg_of(start, seg)..seg_of(end, seg) {
        let bytes = segment_bytes(c, segno, seg_size);
        reader
            .feed_segment(Lsn(segno * seg), &bytes, TimelineId(1), &mut |raw| {
                let r = decode_record(raw.lsn, raw.bytes, format)
                    .unwrap_or_else(|e| panic!("PostgreSQL {}: {e}", c.major()));
                out.push(to_rec(&r));
                ends.push(raw.end);
            })
            .unwrap_or_else(|e| panic!("PostgreSQL {}: {e}", c.major()));
    }
    assert!(!reader.in_record(), "the WAL ended inside a record");
    (out, ends, reader.stats())
}

fn to_rec(r: &pgsafe::wal::record::decode::DecodedRecord<'_>) -> Rec {
    let blocks = r
        .blocks
        .iter()
        .map(|b| {
            let image = b.image.map(|i| {
                let method = match i.compression {
                    ImageCompression::None => "none",
                    ImageCompression::Pglz => "pglz",
                    ImageCompression::Lz4 => "lz4",
                    ImageCompression::Zstd => "zstd",
                };
                (i.hole_offset, i.hole_length, method)
            });
            (b.id, b.rel.to_string(), b.fork.name(), b.block, image)
        })
        .collect();
    Rec {
        lsn: r.lsn,
        rmgr: rmgr_name(r.rmid).unwrap_or("custom").to_string(),
        tot_len: r.tot_len,
        blocks,
    }
}

/// `pg_waldump -b` of the server's major over `[start, end)`, parsed.
fn waldump(c: &Cluster, start: Lsn, end: Lsn) -> Vec<Rec> {
    let tool = wal_tool(c.major(), "pg_waldump");
    let out = Command::new(&tool)
        .arg("-b")
        .arg("-p")
        .arg(c.data_dir().join("pg_wal"))
        .args(["-s", &start.to_string(), "-e", &end.to_string()])
        .output()
        .expect("run pg_waldump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_waldump(&text, c.major())
}

fn after<'a>(line: &'a str, key: &str) -> &'a str {
    let i = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"));
    line[i + key.len()..].trim_start()
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    let end = s.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(s.len());
    s[..end]
        .parse()
        .unwrap_or_else(|_| panic!("no number at {s:?}"))
}

fn parse_waldump(text: &str, major: u32) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("rmgr: ") {
            let rmgr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let tot = after(after(line, "len (rec/tot):"), "/");
            let at = after(line, "lsn: ");
            let at = &at[..at.find(',').unwrap_or(at.len())];
            out.push(Rec {
                lsn: lsn(at),
                rmgr,
                tot_len: num(tot),
                blocks: Vec::new(),
            });
        } else if let Some(rest) = line.trim_start().strip_prefix("blkref #") {
            let id: u8 = num(rest);
            let rel = after(rest, "rel ");
            let rel = rel[..rel.find(' ').unwrap_or(rel.len())].to_string();
            let fork_name = after(rest, " fork ");
            let fork_name = &fork_name[..fork_name.find(' ').unwrap_or(fork_name.len())];
            let fork = Fork::from_name(fork_name).unwrap_or_else(|| panic!("fork in {line:?}"));
            let blk: u32 = num(after(rest, " blk "));
            let image = rest.contains("FPW").then(|| {
                let hole = after(rest, "hole: offset: ");
                let method = if let Some(i) = rest.find("method: ") {
                    match rest[i + 8..].split_whitespace().next().unwrap_or_default() {
                        "pglz" => "pglz",
                        "lz4" => "lz4",
                        "zstd" => "zstd",
                        m => panic!("method {m:?}"),
                    }
                } else if major < 15 && rest.contains("compression saved") {
                    "pglz"
                } else {
                    "none"
                };
                (num(hole), num(after(hole, "length: ")), method)
            });
            let last = out
                .last_mut()
                .unwrap_or_else(|| panic!("blkref first: {line:?}"));
            last.blocks.push((id, rel, fork.name(), blk, image));
        }
    }
    out
}

fn first_difference(a: &[Rec], b: &[Rec]) -> String {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            return format!("record {i}:\n  pgsafe:     {x:?}\n  pg_waldump: {y:?}");
        }
    }
    format!("lengths {} (pgsafe) and {} (pg_waldump)", a.len(), b.len())
}

/// Every record and block reference equals pg_waldump's; large records crossed pages and
/// segments; reading each segment on its own finds the same records but those crossing into it.
fn records_match_pg_waldump(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .wal_segsize_mb(1)
            .conf("wal_level = logical")
            .conf("max_wal_size = 64MB")
            .fast_unsafe(),
    );
    let seg_size = WalSegSize::new(1 << 20).expect("1 MiB");
    let (start, end) = workload(&c, seg_size.bytes());
    let (mine, ends, stats) = ours(&c, start, end, seg_size);
    let theirs = waldump(&c, start, end);
    assert!(
        mine == theirs,
        "PostgreSQL {major}: {}",
        first_difference(&mine, &theirs)
    );
    let images = mine
        .iter()
        .flat_map(|r| &r.blocks)
        .filter(|b| b.4.is_some())
        .count();
    let compressed = mine
        .iter()
        .flat_map(|r| &r.blocks)
        .filter(|b| b.4.is_some_and(|i| i.2 != "none"))
        .count();
    let mut rmgrs: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &mine {
        *rmgrs.entry(r.rmgr.as_str()).or_default() += 1;
    }
    eprintln!(
        "PostgreSQL {major}: {} records, {images} images ({compressed} compressed), {stats:?}, {rmgrs:?}",
        mine.len()
    );
    assert!(
        stats.across_pages > 100 && stats.across_segments >= 3,
        "{stats:?}"
    );
    assert!(
        stats.switches == 1 && compressed > 0 && images > compressed,
        "{stats:?}"
    );
    for rm in [
        "Database",
        "Storage",
        "Heap",
        "Btree",
        "XLOG",
        "LogicalMessage",
    ] {
        assert!(rmgrs.contains_key(rm), "no {rm} record in {rmgrs:?}");
    }

    // Each segment on its own (as archive-push sees them).
    let seg = seg_size.bytes();
    let format = RecordFormat::new(major, 8192);
    let mut alone = Vec::new();
    let mut skipped = 0;
    for segno in seg_of(start, seg)..seg_of(end, seg) {
        let first = Lsn(segno * seg);
        let mut r = WalReader::new(first, seg_size, 8192).with_stop(Lsn(first.0 + seg));
        r.feed_segment(
            first,
            &segment_bytes(&c, segno, seg_size),
            TimelineId(1),
            &mut |raw| {
                alone.push(to_rec(
                    &decode_record(raw.lsn, raw.bytes, format).expect("decodes"),
                ));
            },
        )
        .expect("reads");
        skipped += r.stats().skipped_continuations;
    }
    let whole_segment_records: Vec<Rec> = mine
        .iter()
        .zip(&ends)
        .filter(|(r, e)| seg_of(r.lsn, seg) == seg_of(Lsn(e.0 - 1), seg))
        .map(|(r, _)| r.clone())
        .collect();
    let crossing = mine.len() - whole_segment_records.len();
    assert_eq!(skipped as usize, crossing);
    assert!(
        alone == whole_segment_records,
        "{}",
        first_difference(&alone, &whole_segment_records)
    );
}

per_major!(records_match_pg_waldump: 14, 15, 16, 17, 18);

/// `pg_walsummary -i` lines for a table, as the tool prints them.
fn walsummary_lines(t: &BlockRefTable) -> Vec<String> {
    let mut out = Vec::new();
    for ((rel, fork), s) in &t.forks {
        let head = format!(
            "TS {}, DB {}, REL {}, FORK {}",
            rel.spc_oid,
            rel.db_oid,
            rel.rel_number,
            fork.name()
        );
        if let Some(l) = s.limit_block {
            out.push(format!("{head}: limit {l}"));
        }
        out.extend(s.blocks.iter().map(|b| format!("{head}: block {b}")));
    }
    out
}

fn pg_walsummary(major: u32, file: &Path) -> Vec<String> {
    let tool = wal_tool(major, "pg_walsummary");
    let out = Command::new(&tool)
        .arg("-i")
        .arg(file)
        .output()
        .expect("run pg_walsummary");
    assert!(
        out.status.success(),
        "{} {}: {}",
        tool.display(),
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every WAL summary a server wrote under pgbench and DDL parses to what pg_walsummary prints;
/// written back by pgsafe, pg_walsummary reads the same from it.
fn summaries_match_pg_walsummary(major: u32) {
    let c = Cluster::started(
        &PgInstall::major(major),
        ClusterOptions::new()
            .conf("summarize_wal = on")
            .fast_unsafe(),
    );
    pgbench_init(&c, 1);
    c.execute("CHECKPOINT");
    pgbench(&c, 4, 200);
    // More than 4096 blocks of one chunk changed in one stretch: a bitmap chunk.
    c.execute(
        "CREATE TABLE wide AS SELECT g, repeat('x', 300) AS t FROM generate_series(1, 150000) g",
    );
    c.execute("CHECKPOINT");
    c.execute("DELETE FROM wide WHERE g > 1000");
    c.execute("VACUUM wide");
    c.execute("TRUNCATE pgbench_history");
    c.execute("CREATE DATABASE walparse_s");
    c.execute("DROP TABLE pgbench_branches");
    pgbench_init(&c, 1);
    c.execute("CHECKPOINT");
    // Summaries end where checkpoints' redo records are: wait for the last one's.
    let target = lsn(&c.query_one::<String>("SELECT redo_lsn::text FROM pg_control_checkpoint()"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = lsn(&c
            .query_one::<String>("SELECT summarized_lsn::text FROM pg_get_wal_summarizer_state()"));
        if done >= target {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "summarizer stuck at {done}, target {target}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let dir = c.data_dir().join("pg_wal").join("summaries");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("summaries folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".summary"))
        .collect();
    names.sort();
    let scratch = tempfile::tempdir().expect("tempdir");
    let (mut limits, mut bitmaps, mut blocks) = (0, 0, 0);
    for name in &names {
        let n = SummaryFileName::parse(name).unwrap_or_else(|| panic!("name {name}"));
        assert!(n.start < n.end && n.tli == TimelineId(1), "{name}");
        let path = dir.join(name);
        let bytes = std::fs::read(&path).expect("read summary");
        let t = parse_summary(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = pg_walsummary(major, &path);
        assert_eq!(walsummary_lines(&t), theirs, "{name}");
        let ours = scratch.path().join(name);
        std::fs::write(&ours, encode_summary(&t)).expect("write");
        assert_eq!(
            pg_walsummary(major, &ours),
            theirs,
            "{name} written by pgsafe"
        );
        for s in t.forks.values() {
            limits += usize::from(s.limit_block.is_some());
            blocks += s.blocks.len();
            let mut per_chunk: BTreeMap<u32, usize> = BTreeMap::new();
            for b in &s.blocks {
                *per_chunk.entry(b >> 16).or_default() += 1;
            }
            bitmaps += per_chunk.values().filter(|&&n| n >= 4096).count();
        }
    }
    eprintln!(
        "PostgreSQL {major}: {} summaries, {blocks} blocks, {limits} limits, {bitmaps} bitmap chunks",
        names.len()
    );
    assert!(names.len() >= 3 && limits > 0 && bitmaps > 0 && blocks > 5000);
}

per_major!(summaries_match_pg_walsummary: 17, 18);
