//! Hostile backup folders against `pgsafe verify` and `pgsafe restore`, through the real binary
//! and real backups: whoever can write into a backup folder plants links (to a root-only file,
//! to a directory elsewhere), traversal paths, decompression bombs and tablespace locations,
//! and re-signs `backup_manifest` (Manifest-Checksum recomputed) so that only the checks made
//! for these attacks can catch them. The restores run as root, as they do during an incident.
//! Also the unlucky DBA's target mistakes: a target inside the backup, relative and linked
//! paths, chown's "no change" owner, two restores into one directory, too little space.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};
use pgsafe::checksum::ChecksumAlgorithm;
use pgsafe::manifest::Manifest;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};
use serde_json::Value;

use common::{
    command, copy_of, files_containing, json, ok, owner_mode, pgsafe, refused, restore, text,
    verify,
};

/// The problems of a report as (kind, path or "").
fn problems(v: &Value) -> Vec<(String, String)> {
    v["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["problem"].as_str().unwrap_or("").to_owned(),
                        p["path"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_problem(v: &Value, kind: &str, path: &str) -> bool {
    problems(v).iter().any(|(k, p)| k == kind && p == path)
}

/// The attacker's edit of `backup_manifest`, re-signed by pgsafe's own encoder.
fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Manifest)) {
    let path = dir.join("backup_manifest");
    let mut m = Manifest::parse(&fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    fs::write(&path, m.encode().unwrap()).unwrap();
}

/// Re-signs a manifest edited as text: the Manifest-Checksum is the SHA-256 of everything
/// before its line (PostgreSQL's parse_manifest.c).
fn resign(text: &str) -> Vec<u8> {
    let body_end = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let body = &text[..body_end];
    let sum = ChecksumAlgorithm::Sha256.of(body.as_bytes()).unwrap();
    format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
}

const SECRET: &[u8] = b"root-only secret: pgsafe must never hand this to the database user\n";

/// Links, traversal paths and bombs: verify reports each, restore refuses each and writes
/// nothing outside what the manifest bounds.
fn hostile_files(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
    let rel: String = c.query_one("SELECT pg_relation_filepath('t')");
    let db_dir = Path::new(&rel)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let scratch = server_owned_tempdir();
    let s = scratch.path();
    let plain = s.join("plain");
    ok(common::backup(&c, &plain, &[]), "plain backup");

    // A root-only file the attacker cannot read but wants in the database user's hands.
    let secret = s.join("secret");
    fs::write(&secret, SECRET.repeat(4)).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let secret_len = fs::metadata(&secret).unwrap().len();

    // 1. A link at the relation file, its manifest entry without checksum (size of the secret).
    let a = copy_of(&plain, "link-nosum");
    fs::remove_file(a.join(&rel)).unwrap();
    symlink(&secret, a.join(&rel)).unwrap();
    edit_manifest(&a, |man| {
        let e = man
            .files
            .iter_mut()
            .find(|f| f.path == rel.as_bytes())
            .unwrap();
        e.checksum = None;
        e.size = secret_len;
    });
    let (code, v, out) = verify(&a, &[]);
    assert_eq!(code, Some(1), "{m}: {}", text(&out));
    assert!(has_problem(&v, "symlink", &rel), "{m}: {v}");
    assert!(has_problem(&v, "checksum_missing", &rel), "{m}: {v}");
    for extra in [&[][..], &["--no-verify"][..]] {
        let t = s.join("t-link-nosum");
        let out = restore(&a, &t, extra);
        refused(&out, &["symbolic link", &rel, "nothing was written"]);
        assert!(!t.exists(), "{m} {extra:?}: the target was created");
    }

    // 2. The same link with the entry's checksum kept (its size edited to the secret's):
    // without verification first, the checksum is only checked while writing — after the
    // secret would have been copied into the new data directory.
    let b = copy_of(&plain, "link-sum");
    fs::remove_file(b.join(&rel)).unwrap();
    symlink(&secret, b.join(&rel)).unwrap();
    edit_manifest(&b, |man| {
        let e = man
            .files
            .iter_mut()
            .find(|f| f.path == rel.as_bytes())
            .unwrap();
        e.size = secret_len;
    });
    let t = s.join("t-link-sum");
    let out = restore(&b, &t, &["--no-verify"]);
    refused(&out, &["symbolic link", "nothing was written"]);
    assert!(!t.exists(), "{m}: the target was created");
    assert_eq!(files_containing(s, SECRET), vec![secret.clone()], "{m}");

    // 3. A linked directory holding the very same files: every checksum matches.
    let d = copy_of(&plain, "link-dir");
    let elsewhere = s.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let moved = elsewhere.join("db");
    fs::rename(d.join(&db_dir), &moved).unwrap();
    symlink(&moved, d.join(&db_dir)).unwrap();
    let (code, v, out) = verify(&d, &[]);
    assert_eq!(code, Some(1), "{m}: {}", text(&out));
    assert!(has_problem(&v, "symlink", &db_dir), "{m}: {v}");
    assert_eq!(
        problems(&v).len(),
        1,
        "{m}: one problem, not one per file below the link: {v}"
    );
    let t = s.join("t-link-dir");
    for extra in [&[][..], &["--no-verify"][..]] {
        refused(&restore(&d, &t, extra), &["symbolic link", &db_dir]);
        assert!(!t.exists(), "{m} {extra:?}");
    }

    // 4. Traversal paths in a re-signed manifest.
    for (name, bad) in [
        ("dotdot", "../escaped"),
        ("absolute", "/tmp/pgsafe-escaped"),
    ] {
        let x = copy_of(&plain, &format!("traversal-{name}"));
        let man = fs::read_to_string(x.join("backup_manifest")).unwrap();
        let line = man
            .lines()
            .find(|l| l.contains("\"Path\": \"PG_VERSION\""))
            .unwrap();
        let evil = line.replace("\"PG_VERSION\"", &format!("\"{bad}\""));
        let edited = man.replacen(line, &format!("{line}\n{evil}"), 1);
        fs::write(x.join("backup_manifest"), resign(&edited)).unwrap();
        let (code, v, out) = verify(&x, &[]);
        assert_eq!(code, Some(1), "{m} {bad}: {}", text(&out));
        assert!(has_problem(&v, "manifest_invalid", ""), "{m} {bad}: {v}");
        let t = s.join(format!("t-traversal-{name}"));
        for extra in [&[][..], &["--no-verify"][..]] {
            refused(
                &restore(&x, &t, extra),
                &["backup_manifest", "nothing was written"],
            );
            assert!(!t.exists(), "{m} {bad} {extra:?}");
        }
        assert!(!s.join("escaped").exists() && !Path::new("/tmp/pgsafe-escaped").exists());
    }

    // 5. Decompression bombs: a small compressed file inflating to 256 MiB, the manifest
    // unchanged (it never lists compressed sizes).
    for (compress, tool, suffix) in [("zstd", "zstd", "zst"), ("lz4", "lz4", "lz4")] {
        let bk = s.join(format!("{compress}-bomb"));
        ok(
            common::backup(&c, &bk, &["--compress", compress]),
            "compressed backup",
        );
        let stored = bk.join(format!("{rel}.{suffix}"));
        let size = Manifest::parse(&fs::read(bk.join("backup_manifest")).unwrap())
            .unwrap()
            .files
            .iter()
            .find(|f| f.path == rel.as_bytes())
            .unwrap()
            .size;
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c 268435456 /dev/zero | {tool} -q -c > '{}'",
                stored.display()
            ))
            .status()
            .unwrap();
        assert!(st.success());
        let bomb_len = fs::metadata(&stored).unwrap().len();
        assert!(
            bomb_len < 2 << 20,
            "{compress}: the bomb is {bomb_len} bytes"
        );
        let (code, v, out) = verify(&bk, &[]);
        assert_eq!(code, Some(1), "{m} {compress}: {}", text(&out));
        let stored_rel = format!("{rel}.{suffix}");
        assert!(has_problem(&v, "inflates", &stored_rel), "{m}: {v}");
        assert!(
            v["bytes_checked"].as_u64().unwrap() < 64 << 20,
            "{m} {compress}: verify read past the manifest's size: {v}"
        );
        refused(
            &restore(&bk, &s.join("t-bomb-full"), &[]),
            &["oversized compressed file", "nothing was written"],
        );
        assert!(!s.join("t-bomb-full").exists());
        // Without verification first, writing stops at the manifest's size + 1.
        let t = s.join(format!("t-bomb-{compress}"));
        let out = restore(&bk, &t, &["--no-verify"]);
        refused(&out, &["more than the", "INCOMPLETE restore"]);
        let written = fs::metadata(t.join(&rel)).map_or(0, |m| m.len());
        assert!(
            written <= size + 1,
            "{m} {compress}: {written} bytes written for a {size}-byte file"
        );
        fs::remove_dir_all(&t).unwrap();
    }
}

#[test]
fn hostile_files_12() {
    hostile_files(12);
}

#[test]
fn hostile_files_17() {
    hostile_files(17);
}

/// A copy of `backup` whose tablespace_map names `location` for tablespace `oid`, with the
/// manifest entry and Manifest-Checksum recomputed.
fn with_location(backup: &Path, name: &str, oid: &str, location: &str) -> PathBuf {
    let d = copy_of(backup, name);
    let map = format!("{oid} {location}\n");
    fs::write(d.join("tablespace_map"), &map).unwrap();
    edit_manifest(&d, |man| {
        let e = man
            .files
            .iter_mut()
            .find(|f| f.path == b"tablespace_map")
            .unwrap();
        e.size = map.len() as u64;
        e.checksum = Some((
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc32c.of(map.as_bytes()).unwrap(),
        ));
    });
    d
}

/// tablespace_map decides where root creates directories: an existing empty directory is
/// never chmod/chowned, a location only the backup names needs the operator's confirmation,
/// `..` and relative locations are refused, links cannot hide an overlap with the target.
fn hostile_tablespace_locations(major: u32) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these attacks are on a root-run restore"
    );
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let c = Cluster::started(
        &install,
        ClusterOptions::new().fast_unsafe().with_tablespace(true),
    );
    c.execute("CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g FROM generate_series(1, 3000) g");
    let scratch = server_owned_tempdir();
    let s = scratch.path();
    let b = s.join("backup");
    ok(common::backup(&c, &b, &[]), "backup");
    let map = fs::read_to_string(b.join("tablespace_map")).unwrap();
    let oid = map.split_whitespace().next().unwrap().to_owned();

    // An existing, empty, root-owned directory (think /opt/x).
    let victim = s.join("victim");
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
    let d = with_location(&b, "to-victim", &oid, victim.to_str().unwrap());
    let (code, v, out) = verify(&d, &[]);
    assert_eq!(code, Some(0), "{m}: {}", text(&out));
    assert_eq!(v["tablespaces"][0]["location"], victim.to_str().unwrap());
    let human = pgsafe(&["verify", d.to_str().unwrap(), "--progress", "none"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains(victim.to_str().unwrap()),
        "{m}: verify lists the location: {}",
        text(&human)
    );
    let t = s.join("t-victim");
    let out = restore(&d, &t, &[]);
    refused(
        &out,
        &[
            "taken only from the backup",
            victim.to_str().unwrap(),
            "--trust-backup-tablespace-locations",
            "nothing was written",
        ],
    );
    assert!(!t.exists());
    assert_eq!(owner_mode(&victim), (0, 0, 0o755), "{m}");
    // Confirmed: restored into it, which keeps its owner and mode; the server starts on it.
    let out = ok(
        restore(&d, &t, &["--trust-backup-tablespace-locations", "--json"]),
        "confirmed restore",
    );
    let r = json(&out);
    assert_eq!(r["tablespaces"][0]["location_source"], "backup", "{r}");
    assert_eq!(r["tablespaces"][0]["existed"], true, "{r}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "tablespace {oid} will be restored at {}",
            victim.display()
        )),
        "{m}: the location is shown before writing: {err}"
    );
    assert_eq!(
        owner_mode(&victim),
        (0, 0, 0o755),
        "{m}: a directory pgsafe did not create keeps its owner and mode"
    );
    let mut restored = Cluster::adopt(&install, &t, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    assert_eq!(
        restored.query_one::<i64>("SELECT count(*) FROM in_ts"),
        3000
    );
    restored.stop();
    drop(restored);

    // `..` and relative locations: verify reports them, restore refuses, nothing is created.
    for (name, loc) in [
        ("dotdot", format!("{}/a/../victim2", s.display())),
        ("relative", "relative/ts".to_owned()),
    ] {
        let d = with_location(&b, name, &oid, &loc);
        let (code, v, out) = verify(&d, &[]);
        assert_eq!(code, Some(1), "{m} {loc}: {}", text(&out));
        assert!(has_problem(&v, "map_invalid", ""), "{m} {loc}: {v}");
        let t = s.join(format!("t-{name}"));
        refused(
            &restore(&d, &t, &["--trust-backup-tablespace-locations"]),
            &["nothing was written"],
        );
        assert!(!t.exists() && !s.join("a").exists() && !s.join("victim2").exists());
    }

    // A mapping through a link into the (existing, empty) target.
    let t = s.join("t-overlap");
    fs::create_dir(&t).unwrap();
    symlink(&t, s.join("tlink")).unwrap();
    let mapping = format!("{oid}={}/ts", s.join("tlink").display());
    refused(
        &restore(&b, &t, &["--tablespace-map", &mapping]),
        &["overlaps the target data directory", "nothing was written"],
    );
    assert_eq!(fs::read_dir(&t).unwrap().count(), 0, "{m}");
}

#[test]
fn hostile_tablespace_locations_16() {
    hostile_tablespace_locations(16);
}

/// Unmounts a small tmpfs when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs (needs root)");
        SmallFs(at.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The unlucky DBA's targets: inside the backup (directly, relative, through a link), the
/// owner chown(2) reads as "no change", a target another restore holds, too little space.
#[test]
fn target_checks() {
    let install = PgInstall::major(15);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
    let scratch = server_owned_tempdir();
    let s = scratch.path();
    let b = s.join("backup");
    ok(common::backup(&c, &b, &[]), "backup");
    let listing = |d: &Path| {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing(&b);

    // Inside the backup: directly, relative to it, and through a link to it.
    refused(
        &restore(&b, &b.join("inside"), &[]),
        &["overlaps the backup", "nothing was written"],
    );
    let out = command(&[
        "restore",
        b.to_str().unwrap(),
        "--pgdata",
        "restored",
        "--progress",
        "none",
    ])
    .current_dir(&b)
    .output()
    .unwrap();
    refused(&out, &["overlaps the backup"]);
    symlink(&b, s.join("blink")).unwrap();
    refused(
        &restore(&b, &s.join("blink/sub"), &[]),
        &["overlaps the backup"],
    );
    assert_eq!(listing(&b), before, "the backup folder was written into");

    // chown(2)'s "no change" owner would leave the files root's.
    for owner in ["4294967295:4294967295", "4294967295"] {
        let t = s.join("t-owner");
        refused(
            &restore(&b, &t, &["--owner", owner]),
            &["leave unchanged", "nothing was written"],
        );
        assert!(!t.exists());
    }

    // A target another restore holds (its lock): refused, and nothing is written into it.
    let t = s.join("t-locked");
    fs::create_dir(&t).unwrap();
    server_user().chown(&t);
    let held = Flock::lock(fs::File::open(&t).unwrap(), FlockArg::LockExclusive).unwrap();
    let out = restore(&b, &t, &[]);
    refused(
        &out,
        &["another restore is writing into", "nothing was written"],
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("INCOMPLETE"),
        "{}",
        text(&out)
    );
    assert_eq!(listing(&t).len(), 0);
    drop(held);
    ok(restore(&b, &t, &[]), "restore once the lock is free");
    // Two restores at once into one empty directory: one restores, the other is refused.
    let t2 = s.join("t-twice");
    fs::create_dir(&t2).unwrap();
    let spawn = || {
        command(&[
            "restore",
            b.to_str().unwrap(),
            "--pgdata",
            t2.to_str().unwrap(),
            "--progress",
            "none",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (one, two) = (spawn(), spawn());
    let outs = [
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    ];
    let wins = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "{}\n{}", text(&outs[0]), text(&outs[1]));
    let mut r = Cluster::adopt(&install, &t2, ClusterOptions::new());
    r.start();
    r.wait_recovery_done();
    assert_eq!(r.query_one::<i64>("SELECT count(*) FROM t"), 10000);
    r.stop();
    drop(r);

    // Too little space: refused before writing.
    let small = SmallFs::mount(&s.join("small"), "2m");
    let t = small.0.join("target");
    // The tmpfs is root's: the owner is the operator's to name.
    let user = server_user().name.clone();
    refused(
        &restore(&b, &t, &["--owner", &user]),
        &[
            "not enough free space",
            "--skip-space-check",
            "nothing was written",
        ],
    );
    assert!(!t.exists());
    drop(small);
}
