//! Hostile file-system copies against `pgsafe restore --from-copy`, run as root as during an
//! incident. Whoever can write into the copy (a snapshot-mode `cp -a` of PGDATA) controls its
//! `pg_tblspc` links and every file in it: the restore follows a `pg_tblspc/<oid>` link by
//! design (that is where a copy's tablespace is), but nothing below it, and a FIFO where a file
//! is read must not make root's restore wait forever.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

use pgsafe::manifest::Manifest;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, server_owned_tempdir, server_user};

use common::{copy_of, files_containing, mkfifo, ok, refused};

const SECRET: &[u8] = b"root-only secret: pgsafe must never hand this to the database user\n";

/// `pgsafe restore --from-copy`, killed by `timeout` if it waits forever (a FIFO), so a hang
/// fails the test instead of blocking it (SIGKILL: pgsafe handles SIGTERM, and open(2) of a
/// FIFO restarts after it).
fn restore_copy(copy: &Path, target: &Path, extra: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-s", "KILL", "120"])
        .arg(common::bin())
        .args(["restore", "--from-copy", "--restore-command", "false"])
        .arg(copy)
        .arg("--pgdata")
        .arg(target)
        .args(["--progress", "none", "--owner", &server_user().name])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn hostile_copy(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let catversion: i32 = c.query_one("SELECT catalog_version_no FROM pg_control_system()");
    let version_dir = format!("PG_{major}_{catversion}");
    let scratch = server_owned_tempdir();
    let s = scratch.path();
    // A plain pgsafe backup is laid out as PGDATA with backup_label: a copy as --from-copy
    // reads it (its own files are left out by the plan).
    let plain = s.join("plain");
    ok(common::backup(&c, &plain, &[]), "plain backup");
    c.stop();
    // The unmodified copy restores (the attacks below are what makes them fail).
    let t = s.join("t-plain");
    ok(
        restore_copy(&plain, &t, &[]),
        "restore --from-copy of the plain copy",
    );
    fs::remove_dir_all(&t).unwrap();

    // A root-only directory holding a secret.
    let private = s.join("root-only");
    fs::create_dir(&private).unwrap();
    fs::write(private.join("id_rsa"), SECRET.repeat(4)).unwrap();
    fs::set_permissions(private.join("id_rsa"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();

    // 1. A tablespace link to the attacker's directory, whose version directory is a link to
    // the root-only directory; the copy's tablespace_map names it, and the operator maps it
    // to a new location as for any tablespace: its files would go there, owned by the
    // database user.
    let a = copy_of(&plain, "tblspc-version-link");
    let evil = s.join("evil");
    fs::create_dir(&evil).unwrap();
    symlink(&private, evil.join(&version_dir)).unwrap();
    fs::create_dir_all(a.join("pg_tblspc")).unwrap();
    symlink(&evil, a.join("pg_tblspc/99999")).unwrap();
    // The original location it names is not the link's (a copy of the tablespace's contents).
    fs::write(
        a.join("tablespace_map"),
        "99999 /srv/pgsafe-original-tablespace\n",
    )
    .unwrap();
    let t = s.join("t-version-link");
    let ts = s.join("ts-new");
    let map = format!("99999={}", ts.display());
    let out = restore_copy(&a, &t, &["--tablespace-map", &map]);
    refused(&out, &[&version_dir, "symbolic link"]);
    assert!(!t.exists() && !ts.exists(), "{m}: the target was created");
    assert_eq!(
        files_containing(s, SECRET),
        vec![private.join("id_rsa")],
        "{m}: the secret was copied"
    );

    // 2. FIFOs where the restore reads a file: it must fail, not wait for a writer.
    for name in ["PG_VERSION", "global/pg_control"] {
        let f = copy_of(&plain, &format!("fifo-{}", name.replace('/', "-")));
        mkfifo(&f.join(name));
        let t = s.join(format!("t-fifo-{}", name.replace('/', "-")));
        let out = restore_copy(&f, &t, &[]);
        refused(&out, &[name, "not a regular file"]);
        assert!(!t.exists(), "{m} {name}: the target was created");
    }
}

#[test]
fn hostile_copy_12() {
    hostile_copy(12);
}

#[test]
fn hostile_copy_17() {
    hostile_copy(17);
}

/// `pgsafe restore` of a backup folder, killed if it waits forever.
fn restore_backup(backup: &Path, target: &Path) -> Output {
    Command::new("timeout")
        .args(["-s", "KILL", "120"])
        .arg(common::bin())
        .arg("restore")
        .arg(backup)
        .arg("--pgdata")
        .arg(target)
        .args(["--progress", "none", "--owner", &server_user().name])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The backup's `postgresql.conf` (re-signed in the manifest) includes a FIFO: the restore
/// reads included files for stale recovery settings, and must not wait for a writer (nor open
/// a device: opening some, e.g. a watchdog, has effects) — it skips what is not a regular file.
fn hostile_include(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let scratch = server_owned_tempdir();
    let s = scratch.path();
    let b = s.join("backup");
    ok(common::backup(&c, &b, &[]), "backup");
    c.stop();
    let fifo = s.join("fifo.conf");
    mkfifo(&fifo);
    let conf = b.join("postgresql.conf");
    let mut text = fs::read(&conf).unwrap();
    text.extend_from_slice(format!("include_if_exists '{}'\n", fifo.display()).as_bytes());
    fs::write(&conf, &text).unwrap();
    let path = b.join("backup_manifest");
    let mut man = Manifest::parse(&fs::read(&path).unwrap()).unwrap();
    let e = man
        .files
        .iter_mut()
        .find(|f| f.path == b"postgresql.conf")
        .unwrap();
    e.size = text.len() as u64;
    if let Some((alg, sum)) = &mut e.checksum {
        *sum = alg.of(&text).unwrap();
    }
    fs::write(&path, man.encode().unwrap()).unwrap();
    let t = s.join("t");
    ok(restore_backup(&b, &t), &format!("{m}: restore"));
    // The restored server reads the include itself; the copy is what the backup said.
    assert_eq!(fs::read(t.join("postgresql.conf")).unwrap(), text, "{m}");
}

#[test]
fn hostile_include_13() {
    hostile_include(13);
}

#[test]
fn hostile_include_18() {
    hostile_include(18);
}

/// A hard link in a backup folder to a root-only file (possible where `fs.protected_hardlinks`
/// is 0), with the attacker's edits re-signed: `pgsafe.json` names no checksum algorithm and
/// the manifest has no checksums, so only the link count tells. pgsafe never stores a hard
/// link; verify reports it and restore (also without verification) refuses to read it.
fn hard_link(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let s = scratch.path();
    let b = s.join("backup");
    ok(common::backup(&c, &b, &[]), "backup");
    c.stop();
    let secret = s.join("secret");
    fs::write(&secret, SECRET).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(b.join("postgresql.auto.conf")).unwrap();
    fs::hard_link(&secret, b.join("postgresql.auto.conf")).unwrap();
    let info_path = b.join("pgsafe.json");
    let mut info: serde_json::Value =
        serde_json::from_slice(&fs::read(&info_path).unwrap()).unwrap();
    info["checksum"] = "none".into();
    let info_bytes = serde_json::to_vec(&info).unwrap();
    fs::write(&info_path, &info_bytes).unwrap();
    let path = b.join("backup_manifest");
    let mut man = Manifest::parse(&fs::read(&path).unwrap()).unwrap();
    for f in &mut man.files {
        f.checksum = None;
        if f.path == b"postgresql.auto.conf" {
            f.size = SECRET.len() as u64;
        }
        if f.path == b"pgsafe.json" {
            f.size = info_bytes.len() as u64;
        }
    }
    fs::write(&path, man.encode().unwrap()).unwrap();
    let out = common::pgsafe(&["verify", "--json", b.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{m}: {v}");
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| { p["problem"] == "hard_link" && p["path"] == "postgresql.auto.conf" }),
        "{m}: {v}"
    );
    for extra in [&[][..], &["--no-verify"][..]] {
        let t = s.join("t");
        let out = Command::new(common::bin())
            .arg("restore")
            .arg(&b)
            .arg("--pgdata")
            .arg(&t)
            .args(["--progress", "none", "--owner", &server_user().name])
            .args(extra)
            .output()
            .unwrap();
        refused(&out, &["postgresql.auto.conf", "hard link"]);
        let mut found = files_containing(s, SECRET);
        found.sort();
        let mut expected = vec![b.join("postgresql.auto.conf"), secret.clone()];
        expected.sort();
        assert_eq!(found, expected, "{m} {extra:?}: the secret was copied");
        let _ = fs::remove_dir_all(&t);
    }
}

#[test]
fn hard_link_13() {
    hard_link(13);
}

#[test]
fn hard_link_17() {
    hard_link(17);
}

/// The backup folder may not choose who owns a root-run restore: `pgdata_owner` in pgsafe.json
/// edited to another account (manifest re-signed) is used only when the target's own file
/// system agrees (the directory the target lies in belongs to that user); otherwise
/// the restore is refused before writing and asks for `--owner`. An honest backup restored
/// next to the server's other files (a parent the server user owns) needs no `--owner`.
fn edited_owner(major: u32) {
    let m = format!("PostgreSQL {major}");
    let install = PgInstall::major(major);
    let mut c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    let scratch = server_owned_tempdir();
    let s = scratch.path();
    let b = s.join("backup");
    ok(common::backup(&c, &b, &[]), "backup");
    c.stop();
    let run = |backup: &Path, target: &Path, extra: &[&str]| {
        Command::new(common::bin())
            .arg("restore")
            .arg(backup)
            .arg("--pgdata")
            .arg(target)
            .args(["--progress", "none"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Honest backup, parent owned by the server user: the recorded owner is confirmed.
    let t = s.join("honest");
    ok(run(&b, &t, &[]), "restore of the honest backup");
    assert_eq!(
        fs::metadata(&t).unwrap().uid(),
        server_user().uid.as_raw(),
        "{m}: owner"
    );
    // The attacker's edit: the data directory "belonged to" daemon (uid 1).
    let e = s.join("edited");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&b)
            .arg(&e)
            .status()
            .unwrap()
            .success()
    );
    let info_path = e.join("pgsafe.json");
    let mut info: serde_json::Value =
        serde_json::from_slice(&fs::read(&info_path).unwrap()).unwrap();
    info["pgdata_owner"] =
        serde_json::json!({"uid": 1, "gid": 1, "user": "daemon", "group": "daemon"});
    let info_bytes = serde_json::to_vec(&info).unwrap();
    fs::write(&info_path, &info_bytes).unwrap();
    let man_path = e.join("backup_manifest");
    let mut man = Manifest::parse(&fs::read(&man_path).unwrap()).unwrap();
    for f in &mut man.files {
        if f.path == b"pgsafe.json" {
            f.size = info_bytes.len() as u64;
            if let Some((alg, _)) = &f.checksum {
                let alg = *alg;
                f.checksum = Some((alg, alg.of(&info_bytes).unwrap()));
            }
        }
    }
    fs::write(&man_path, man.encode().unwrap()).unwrap();
    ok(
        common::pgsafe(&["verify", e.to_str().unwrap()]),
        "the re-signed backup verifies",
    );
    let t = s.join("t");
    let out = run(&e, &t, &[]);
    refused(&out, &["daemon", "uid 1", "--owner"]);
    assert!(
        !t.exists(),
        "{m}: the refused restore wrote {}",
        t.display()
    );
    // The operator decides.
    ok(
        run(&e, &t, &["--owner", &server_user().name]),
        "restore with --owner",
    );
    assert_eq!(
        fs::metadata(&t).unwrap().uid(),
        server_user().uid.as_raw(),
        "{m}"
    );
}

#[test]
fn edited_owner_12() {
    edited_owner(12);
}

#[test]
fn edited_owner_18() {
    edited_owner(18);
}
