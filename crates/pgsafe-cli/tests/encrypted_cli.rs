//! An encrypted repository (docs/encryption.md) against real servers, through the real binary:
//! `init --encrypt age`, a backup by a host holding only the public key and the writer key,
//! which cannot restore (a clear error naming what is missing), and a restore by the host
//! holding the identity with every row there; objects in the repository are ciphertext.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use age::secrecy::ExposeSecret;
use pgsafe_testkit::{Cluster, ClusterOptions, PgInstall, per_major, server_owned_tempdir};

use common::{command, json, ok, text};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(args: &[&str], key_file: Option<&Path>) -> Output {
    let mut cmd = command(args);
    if let Some(k) = key_file {
        cmd.env("PGSAFE_KEY_FILE", k);
    }
    cmd.output().unwrap()
}

fn public_key_host_backs_up_identity_host_restores(major: u32) {
    let install = PgInstall::major(major);
    let c = Cluster::started(&install, ClusterOptions::new().fast_unsafe());
    c.execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let scratch = server_owned_tempdir();
    let repo = scratch.path().join("repo");
    let id = age::x25519::Identity::generate();
    let identity_file = scratch.path().join("identity.key");
    fs::write(
        &identity_file,
        format!("{}\n", id.to_string().expose_secret()),
    )
    .unwrap();
    let writer_file = scratch.path().join("writer.key");
    let recipient = id.to_public().to_string();
    let conn = c.conninfo();

    // init on the database host: public key only.
    let out = ok(
        run(
            &[
                "init",
                "--repo",
                s(&repo),
                "--cluster",
                "main",
                "-D",
                s(c.data_dir()),
                "-d",
                &conn,
                "--encrypt",
                "age",
                "--recipient",
                &recipient,
                "--writer-key-out",
                s(&writer_file),
                "--json",
            ],
            None,
        ),
        "init --encrypt age",
    );
    assert_eq!(json(&out)["repository_created"], true);

    // Without any key the repository is refused; with the writer key file it backs up.
    let backup_args = [
        "backup",
        "--repo",
        s(&repo),
        "--cluster",
        "main",
        "-D",
        s(c.data_dir()),
        "-d",
        &conn,
        "--progress",
        "none",
        "--json",
    ];
    let out = run(&backup_args, None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("holds no key"), "{}", text(&out));
    let v = json(&ok(
        run(&backup_args, Some(&writer_file)),
        "backup with the public key",
    ));
    let backup_id = v["backup_id"].as_str().unwrap().to_owned();

    // What is stored is ciphertext (the magic), except the catalog's pgsafe.json.
    let stored = repo.join("main/backups").join(&backup_id);
    let version = fs::read(stored.join("PG_VERSION")).unwrap();
    assert_eq!(&version[..8], b"\x89PGSAFE\n");
    let label = fs::read(stored.join("backup_label")).unwrap();
    assert!(!String::from_utf8_lossy(&label).contains("START WAL LOCATION"));
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(stored.join("pgsafe.json")).unwrap()).unwrap();
    assert!(
        doc.is_object(),
        "the catalog's pgsafe.json stays plain: {doc}"
    );

    // The public-key host cannot restore, and says what is missing; nothing is restored.
    let target = scratch.path().join("restored");
    let restore_args = [
        "restore",
        "--repo",
        s(&repo),
        "--cluster",
        "main",
        "--pgdata",
        s(&target),
        "--progress",
        "none",
        "--json",
    ];
    let out = run(&restore_args, Some(&writer_file));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("age identity file or the passphrase"),
        "{}",
        text(&out)
    );
    assert!(!target.join("PG_VERSION").exists());
    let _ = fs::remove_dir_all(&target);

    // The identity host restores it; every row is there.
    ok(
        run(&restore_args, Some(&identity_file)),
        "restore with the identity",
    );
    let mut restored = Cluster::adopt(&install, &target, ClusterOptions::new());
    restored.start();
    restored.wait_recovery_done();
    let n: i64 = restored.query_one("SELECT count(*) FROM t");
    assert_eq!(n, 20000);
    let sum: String = restored.query_one("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM t");
    let want: String = c.query_one("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM t");
    assert_eq!(sum, want);
    restored.stop();
}

per_major!(public_key_host_backs_up_identity_host_restores: 10, 18);
