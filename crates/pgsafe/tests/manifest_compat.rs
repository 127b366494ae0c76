//! backup_manifest compatibility with the real PostgreSQL 15 tools: pg_verifybackup accepts what
//! `ManifestWriter` writes (and notices damage), and `Manifest` reads what pg_basebackup writes and
//! re-encodes it byte for byte.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::manifest::{Manifest, ManifestVersion, ManifestWriter};
use pgsafe::wal::WalRange;
use pgsafe::{Lsn, TimelineId};
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, client_bin_dir};

fn rel_path(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(rel))
}

fn verifybackup(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(client_bin_dir().join("pg_verifybackup"))
        .args(args)
        .arg(dir)
        .output()
        .expect("run pg_verifybackup");
    eprintln!(
        "pg_verifybackup {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The manifest of `files` (paths relative to `dir`) as pgsafe writes it.
fn write_manifest(dir: &Path, files: &[&[u8]], alg: ChecksumAlgorithm) -> Vec<u8> {
    let mut w = ManifestWriter::new(ManifestVersion::V1, None).unwrap();
    for rel in files {
        let path = rel_path(dir, rel);
        let data = fs::read(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        let sum = alg.of(&data).map(|h| (alg, h));
        w.add_file(rel, meta.len(), meta.mtime(), sum).unwrap();
    }
    let range = WalRange {
        tli: TimelineId(1),
        start_lsn: "0/2000028".parse().unwrap(),
        end_lsn: "0/2000100".parse().unwrap(),
    };
    let bytes = w.finish(&[range]);
    fs::write(dir.join("backup_manifest"), &bytes).unwrap();
    bytes
}

#[test]
fn pg_verifybackup_accepts_our_manifests_and_sees_damage() {
    let files: [(&[u8], Vec<u8>); 7] = [
        (
            b"backup_label",
            b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".to_vec(),
        ),
        (b"PG_VERSION", b"15\n".to_vec()),
        (
            b"base/1/1234",
            (0..8192u32).map(|i| (i * 31 % 251) as u8).collect(),
        ),
        (b"we ird \"name", b"space and quote".to_vec()),
        (b"base/1/back\\slash\ttab", b"escapes".to_vec()),
        ("données/été".as_bytes(), b"unicode".to_vec()),
        (b"caf\xe9", b"not UTF-8: Encoded-Path".to_vec()),
    ];
    for alg in [ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Sha256] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for (rel, data) in &files {
            let path = rel_path(dir, rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
        }
        let rels: Vec<&[u8]> = files.iter().map(|(r, _)| *r).collect();
        let bytes = write_manifest(dir, &rels, alg);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"Path\": \"we ird \\\"name\""), "{text}");
        assert!(text.contains("\"Encoded-Path\": \"636166e9\""), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap().files.len(), files.len());

        let out = verifybackup(dir, &["-n"]);
        assert!(
            out.status.success(),
            "{alg}: pg_verifybackup rejected our manifest"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("backup successfully verified"));

        // a damaged data file (same size) fails the checksum check
        let victim = dir.join("base/1/1234");
        let mut data = fs::read(&victim).unwrap();
        data[4000] ^= 1;
        fs::write(&victim, &data).unwrap();
        let out = verifybackup(dir, &["-n"]);
        assert!(!out.status.success(), "{alg}: damage not detected");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("checksum mismatch for file \"base/1/1234\""),
            "{err}"
        );
        data[4000] ^= 1;
        fs::write(&victim, &data).unwrap();
        assert!(verifybackup(dir, &["-n"]).status.success());

        // a damaged manifest is refused by both readers
        let mut edited = bytes.clone();
        let i = text.find("\"Size\": 3,").unwrap() + 8;
        edited[i] = b'4';
        fs::write(dir.join("backup_manifest"), &edited).unwrap();
        let out = verifybackup(dir, &["-n"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("manifest checksum mismatch"));
        assert_eq!(
            Manifest::parse(&edited).unwrap_err().to_string(),
            "backup_manifest: checksum mismatch: the manifest is damaged or was edited"
        );
    }
}

/// Every regular file under `dir` (relative, raw bytes), following no symlinks.
fn walk(dir: &Path, rel: &[u8], out: &mut Vec<Vec<u8>>) {
    for e in fs::read_dir(rel_path(dir, rel)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let child = if rel.is_empty() {
            name.as_bytes().to_vec()
        } else {
            [rel, b"/", name.as_bytes()].concat()
        };
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(dir, &child, out);
        } else if ft.is_file() {
            out.push(child);
        }
    }
}

fn label_start_lsn(label: &str) -> Lsn {
    let line = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .expect("START WAL LOCATION in backup_label");
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn reads_and_reencodes_pg_basebackup_manifests() {
    let cluster = Cluster::started(&PgInstall::major(15), ClusterOptions::new().fast_unsafe());
    cluster.execute(
        "CREATE TABLE t AS SELECT g, repeat('x', 100) AS s FROM generate_series(1, 1000) g",
    );
    for (opt, alg) in [
        ("CRC32C", ChecksumAlgorithm::Crc32c),
        ("SHA256", ChecksumAlgorithm::Sha256),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("backup");
        let out = Command::new(client_bin_dir().join("pg_basebackup"))
            .arg("-d")
            .arg(cluster.conninfo())
            .arg("-D")
            .arg(&dir)
            .args(["-Fp", "-X", "fetch", "-c", "fast"])
            .arg(format!("--manifest-checksums={opt}"))
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = fs::read(dir.join("backup_manifest")).unwrap();
        let m = Manifest::parse(&bytes).unwrap();
        assert_eq!(m.version, ManifestVersion::V1);
        assert_eq!(m.system_id, None);
        assert!(m.files.len() > 500, "only {} files", m.files.len());

        // every entry matches the file on disk
        let mut listed = HashSet::new();
        for f in &m.files {
            let path = rel_path(&dir, &f.path);
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", f.path_lossy()));
            assert_eq!(data.len() as u64, f.size, "{}", f.path_lossy());
            let (a, hex) = f.checksum.clone().expect("pg_basebackup writes checksums");
            assert_eq!(a, alg);
            assert_eq!(alg.of(&data).unwrap(), hex, "{}", f.path_lossy());
            let lm = f
                .last_modified_unix()
                .expect("Last-Modified in server format");
            assert!(
                lm > 1_000_000_000,
                "{}: {:?}",
                f.path_lossy(),
                f.last_modified
            );
            listed.insert(f.path.clone());
        }
        assert!(listed.contains(&b"backup_label"[..]));
        assert!(listed.contains(&b"global/pg_control"[..]));
        // and every file on disk is listed, except the manifest and WAL
        let mut on_disk = Vec::new();
        walk(&dir, b"", &mut on_disk);
        for p in &on_disk {
            if p == b"backup_manifest" || p.starts_with(b"pg_wal/") {
                continue;
            }
            assert!(
                listed.contains(p),
                "{} not in the manifest",
                String::from_utf8_lossy(p)
            );
        }

        // WAL range: from the label's start to the backup end, on timeline 1
        let label = fs::read_to_string(dir.join("backup_label")).unwrap();
        assert_eq!(m.wal_ranges.len(), 1);
        let r = m.wal_ranges[0];
        assert_eq!(r.tli, TimelineId(1));
        assert_eq!(r.start_lsn, label_start_lsn(&label));
        assert!(r.end_lsn > r.start_lsn);

        // re-encoded byte for byte, and pg_verifybackup (with WAL parsing) accepts the re-encoding
        let again = m.encode().unwrap();
        assert!(again == bytes, "re-encoded manifest differs");
        fs::write(dir.join("backup_manifest"), &again).unwrap();
        let out = verifybackup(&dir, &[]);
        assert!(
            out.status.success(),
            "pg_verifybackup rejected the re-encoded manifest"
        );
    }
}
