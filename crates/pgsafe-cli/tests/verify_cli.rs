//! `pgsafe verify` against real backups, through the real binary: good backups pass (both
//! layouts), and each kind of damage is reported with its own message and exit code 1.

mod common;

use std::fs;
use std::path::Path;

use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

use common::{copy_to, pgsafe, text, verify};

fn backup(c: &Cluster, target: &Path, extra: &[&str]) {
    let out = common::backup(c, target, extra);
    assert!(out.status.success(), "backup: {}", text(&out));
}

/// The one problem `verify` reports, as text (asserts exit 1 and exactly one problem).
fn one_problem(dir: &Path, what: &str) -> String {
    let (code, v, out) = verify(dir, &[]);
    assert_eq!(code, Some(1), "{what}: {}", text(&out));
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{what}: {}", text(&out));
    problems[0]["message"].as_str().unwrap().to_owned()
}

/// A flipped byte in a plain data file: the file's checksum problem (returned), plus the page
/// checksum problem naming the block (pages are re-checked too).
fn flipped_page(dir: &Path, rel: &str, block: u64, what: &str) -> String {
    let (code, v, out) = verify(dir, &[]);
    assert_eq!(code, Some(1), "{what}: {}", text(&out));
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{what}: {}", text(&out));
    assert_eq!(problems[1]["problem"], "page_checksum", "{what}");
    assert_eq!(problems[1]["path"], rel, "{what}");
    assert_eq!(problems[1]["block"], block, "{what}");
    problems[0]["message"].as_str().unwrap().to_owned()
}

/// The text output: a verdict line and one line per problem.
fn human_lists(dir: &Path, line: &str) {
    let out = pgsafe(&["verify", dir.to_str().unwrap(), "--progress", "none"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(s.contains("has 1 problem(s):"), "{s}");
    assert!(s.contains(&format!("  - {line}\n")), "{s}");
}

fn flip_byte(path: &Path, at: u64) {
    let mut b = fs::read(path).unwrap();
    let i = (at as usize).min(b.len() - 1);
    b[i] ^= 0x55;
    fs::write(path, b).unwrap();
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn damage_matrix(major: u32, compress: &str) {
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
    c.execute("CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g FROM generate_series(1, 1000) g");
    let rel: String = c.query_one("SELECT pg_relation_filepath('t')");
    let scratch = tempfile::tempdir().unwrap();
    let good = scratch.path().join("good");
    backup(&c, &good, &["--compress", compress, "--jobs", "2"]);
    let suffix = match compress {
        "none" => "",
        "lz4" => ".lz4",
        _ => ".zst",
    };
    let m = format!("PostgreSQL {major} --compress {compress}");

    let (code, v, out) = verify(&good, &[]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));
    assert_eq!(v["ok"], true);
    assert!(v["files_checked"].as_u64().unwrap() > 100, "{v}");
    assert!(v["wal_segments_checked"].as_u64().unwrap() >= 1, "{v}");
    let (code, _, out) = verify(&good, &["--quick", "--jobs", "1"]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));

    // One flipped byte in a data file.
    let d = copy_to(&good, &scratch.path().join("flip"));
    flip_byte(&d.join(format!("{rel}{suffix}")), 5000);
    if suffix.is_empty() {
        let p = flipped_page(&d, &rel, 0, "flipped byte");
        assert!(
            p.starts_with(&format!("checksum mismatch: {rel} has crc32c ")),
            "{m}: {p}"
        );
        // --quick looks at sizes only: it cannot see a flipped byte.
        assert_eq!(verify(&d, &["--quick"]).0, Some(0));
    } else {
        let p = one_problem(&d, "flipped byte");
        assert!(
            p.starts_with(&format!("corrupt compressed file: {rel}{suffix}"))
                || p.starts_with(&format!("checksum mismatch: {rel} ")),
            "{m}: {p}"
        );
    }

    // A truncated file.
    let d = copy_to(&good, &scratch.path().join("trunc"));
    let f = d.join(format!("{rel}{suffix}"));
    let len = fs::metadata(&f).unwrap().len();
    truncate(&f, len / 2);
    let p = one_problem(&d, "truncated file");
    if suffix.is_empty() {
        assert_eq!(
            p,
            format!(
                "wrong size: {rel} is {} bytes, backup_manifest says {len} (truncated)",
                len / 2
            ),
            "{m}"
        );
        let (code, v, _) = verify(&d, &["--quick"]);
        assert_eq!(code, Some(1), "--quick sees sizes");
        assert_eq!(v["problems"][0]["problem"], "size");
    } else {
        assert!(
            p.starts_with(&format!(
                "corrupt compressed file: {rel}{suffix} does not decompress"
            )),
            "{m}: {p}"
        );
    }

    // A deleted file.
    let d = copy_to(&good, &scratch.path().join("deleted"));
    fs::remove_file(d.join(format!("{rel}{suffix}"))).unwrap();
    let p = one_problem(&d, "deleted file");
    human_lists(&d, &p);
    if suffix.is_empty() {
        assert_eq!(
            p,
            format!("missing file: {rel} is listed in backup_manifest but is not in the backup")
        );
    } else {
        assert_eq!(
            p,
            format!(
                "missing file: {rel} is listed in backup_manifest but {rel}{suffix} is not in \
                 the backup"
            )
        );
    }

    // An extra file.
    let d = copy_to(&good, &scratch.path().join("extra"));
    fs::write(d.join("base/1/extra_file"), b"x").unwrap();
    let p = one_problem(&d, "extra file");
    assert_eq!(
        p,
        "unexpected file: base/1/extra_file is in the backup but not in backup_manifest"
    );

    // A changed manifest (one size edited).
    let d = copy_to(&good, &scratch.path().join("manifest"));
    let mf = d.join("backup_manifest");
    let text_m = fs::read_to_string(&mf).unwrap();
    let changed = text_m.replacen("\"Size\": 3,", "\"Size\": 4,", 1);
    assert_ne!(changed, text_m, "PG_VERSION entry has Size 3");
    fs::write(&mf, changed).unwrap();
    let p = one_problem(&d, "changed manifest");
    assert_eq!(
        p,
        "backup_manifest is invalid: backup_manifest: checksum mismatch: the manifest is damaged \
         or was edited"
    );

    // A missing WAL segment.
    let info: Value = serde_json::from_slice(&fs::read(good.join("pgsafe.json")).unwrap()).unwrap();
    let seg = info["wal"]["segments"][0].as_str().unwrap().to_owned();
    let d = copy_to(&good, &scratch.path().join("wal"));
    fs::remove_file(d.join("pg_wal").join(&seg)).unwrap();
    let p = one_problem(&d, "missing WAL");
    assert_eq!(
        p,
        format!(
            "missing WAL segment: pg_wal/{seg}, needed to recover the backup, is not in the backup"
        )
    );

    // A WAL segment with a damaged page header (the first page's address).
    let d = copy_to(&good, &scratch.path().join("walpage"));
    flip_byte(&d.join("pg_wal").join(&seg), 9);
    let p = one_problem(&d, "damaged WAL page");
    assert!(
        p.starts_with(&format!("invalid WAL segment pg_wal/{seg}: ")) && p.contains("page address"),
        "{m}: {p}"
    );

    // A missing backup_label.
    let d = copy_to(&good, &scratch.path().join("label"));
    fs::remove_file(d.join("backup_label")).unwrap();
    let p = one_problem(&d, "missing label");
    assert!(p.starts_with("backup_label is missing"), "{p}");

    // A missing pgsafe.json.
    let d = copy_to(&good, &scratch.path().join("info"));
    fs::remove_file(d.join("pgsafe.json")).unwrap();
    let p = one_problem(&d, "missing pgsafe.json");
    assert!(
        p.starts_with("incomplete backup: pgsafe.json is missing"),
        "{p}"
    );

    // Not a backup at all: exit 2.
    let out = pgsafe(&["verify", scratch.path().join("nope").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn damage_is_reported_plain_15() {
    damage_matrix(15, "none");
}

#[test]
fn damage_is_reported_zstd_17() {
    damage_matrix(17, "zstd");
}

#[test]
fn damage_is_reported_lz4_11() {
    damage_matrix(11, "lz4");
}

/// A relation file larger than the range size is checked by several workers in ranges whose
/// CRCs are combined: a byte flipped in a later range is found, and the good file passes.
#[test]
fn large_files_are_checked_in_ranges() {
    let c = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE big AS SELECT g, repeat(md5(g::text), 10) AS v \
         FROM generate_series(1, 130000) g",
    );
    let rel: String = c.query_one("SELECT pg_relation_filepath('big')");
    let scratch = tempfile::tempdir().unwrap();
    let good = scratch.path().join("good");
    backup(&c, &good, &["--jobs", "2"]);
    let f = good.join(&rel);
    let len = fs::metadata(&f).unwrap().len();
    assert!(len > 40 << 20, "{len} bytes: more than one 32 MiB range");
    let (code, _, out) = verify(&good, &["--jobs", "3"]);
    assert_eq!(code, Some(0), "{}", text(&out));
    let d = copy_to(&good, &scratch.path().join("flip"));
    flip_byte(&d.join(&rel), len - 1000);
    let p = flipped_page(
        &d,
        &rel,
        (len - 1000) / 8192,
        "flipped byte in the last range",
    );
    assert!(
        p.starts_with(&format!("checksum mismatch: {rel} has crc32c ")),
        "{p}"
    );
}

/// A backup taken with --wal archive: verify says where the WAL must come from and passes.
#[test]
fn archive_mode_backup_names_its_wal_source() {
    let c = Cluster::started(
        &PgInstall::major(16),
        ClusterOptions::new().fast_unsafe().with_archive(true),
    );
    let scratch = tempfile::tempdir().unwrap();
    let b = scratch.path().join("b");
    backup(&c, &b, &["--wal", "archive"]);
    let (code, v, out) = verify(&b, &[]);
    assert_eq!(code, Some(0), "{}", text(&out));
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("WAL mode archive") && notes.contains("must come from"),
        "{notes}"
    );
}

/// The unlucky DBA's backup: a folder whose permissions went wrong for some files and one
/// directory, plus one damaged file and a FIFO. verify reports every one of them (exit 1), not
/// only the first unreadable file (as pg_verifybackup does), and the FIFO does not block it.
#[test]
fn verify_reports_every_problem() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let install = PgInstall::major(14);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t1 AS SELECT g FROM generate_series(1, 20000) g");
    c.execute("CREATE TABLE t2 AS SELECT g FROM generate_series(1, 20000) g");
    c.execute("CREATE TABLE t3 AS SELECT g FROM generate_series(1, 20000) g");
    let rels: Vec<String> = ["t1", "t2", "t3"]
        .iter()
        .map(|t| c.query_one(&format!("SELECT pg_relation_filepath('{t}')")))
        .collect();
    let scratch = pgsafe_testkit::server_owned_tempdir();
    let good = scratch.path().join("good");
    backup(&c, &good, &[]);
    let user = pgsafe_testkit::server_user();
    let d = scratch.path().join("bad");
    pgsafe_testkit::copy_tree(&good, &d, Some(user)).unwrap();
    for r in &rels[..2] {
        fs::set_permissions(d.join(r), fs::Permissions::from_mode(0o000)).unwrap();
    }
    flip_byte(&d.join(&rels[2]), 100);
    fs::set_permissions(d.join("global"), fs::Permissions::from_mode(0o000)).unwrap();
    nix::unistd::mkfifo(
        &d.join("base/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut cmd = common::command(&["verify", "--json", d.to_str().unwrap()]);
    if nix::unistd::geteuid().is_root() {
        // Root reads everything: check as the user the files belong to.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap().to_owned(),
                p["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want = [
        ("unreadable", rels[0].as_str()),
        ("unreadable", rels[1].as_str()),
        ("checksum", rels[2].as_str()),
        ("unreadable", "global"),
        ("not_a_file", "base/fifo"),
    ];
    for (kind, path) in want {
        assert!(
            found.iter().any(|(k, p)| k == kind && p == path),
            "{kind} {path} not reported: {found:?}"
        );
    }
    // The rest of the backup was checked.
    assert!(v["files_checked"].as_u64().unwrap() > 100, "{v}");
}
