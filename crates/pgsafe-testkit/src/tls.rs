//! TLS for test servers: a throw-away certificate authority made with the `openssl` command,
//! server and client certificates signed by it (and by a second, untrusted one), and a
//! [`Cluster`] set up to listen on 127.0.0.1 with `ssl = on` and a `pg_hba.conf` of the test's
//! choosing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::{Cluster, ClusterOptions};

/// Certificates in a private folder: `ca.crt` (trusted by servers for client certificates and
/// meant to be trusted by clients), `other-ca.crt` (a second CA nobody trusts), and for the
/// server `server.crt`/`server.key` (for `localhost` and `127.0.0.1`, signed by `ca`) and
/// `rogue.crt`/`rogue.key` (same names, signed by `other-ca`).
pub struct TestPki {
    dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("pgsafe-pki")
            .tempdir()
            .expect("temp folder for certificates");
        let pki = TestPki { dir };
        pki.make_ca("ca", "pgsafe test CA");
        pki.make_ca("other-ca", "pgsafe untrusted CA");
        let server_ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                          keyUsage=critical,digitalSignature,keyEncipherment\n\
                          extendedKeyUsage=serverAuth\n";
        pki.make_leaf("server", "localhost", "ca", server_ext);
        pki.make_leaf("rogue", "localhost", "other-ca", server_ext);
        pki
    }

    /// The path of a file in the folder (`ca.crt`, `server.key`...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn make_ca(&self, name: &str, cn: &str) {
        let subj = format!("/CN={cn}");
        openssl(
            self.dir(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "3",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }

    /// `name.crt` and `name.key` (mode 0600) for Common Name `cn`, signed by `ca`.
    fn make_leaf(&self, name: &str, cn: &str, ca: &str, ext: &str) {
        let ext_file = format!("{name}.ext");
        fs::write(self.path(&ext_file), ext).unwrap();
        let subj = format!("/CN={cn}");
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            self.dir(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subj,
            ],
        );
        openssl(
            self.dir(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext_file,
            ],
        );
        fs::set_permissions(self.path(&key), fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// A client certificate for user `cn` signed by `ca` (`"ca"` or `"other-ca"`): the paths
    /// of `<file>.crt` and `<file>.key` (mode 0600).
    pub fn client(&self, file: &str, cn: &str, ca: &str) -> (PathBuf, PathBuf) {
        let ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                   extendedKeyUsage=clientAuth\n";
        self.make_leaf(file, cn, ca, ext);
        (
            self.path(&format!("{file}.crt")),
            self.path(&format!("{file}.key")),
        )
    }

    /// A revocation list of `ca`, in PEM, written to `file`, listing the certificates revoked
    /// so far plus `revoke` (names such as `"server"`); earlier revocations stay listed.
    pub fn crl(&self, file: &str, revoke: &[&str]) -> PathBuf {
        let cnf = self.path("ca.cnf");
        if !cnf.exists() {
            fs::write(
                &cnf,
                "[ca]\ndefault_ca = tca\n[tca]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
                 default_md = sha256\ndefault_crl_days = 2\n",
            )
            .unwrap();
            fs::write(self.path("index.txt"), "").unwrap();
            fs::write(self.path("crlnumber"), "01\n").unwrap();
        }
        let ca = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt"];
        for name in revoke {
            let crt = format!("{name}.crt");
            let mut args = vec!["ca"];
            args.extend_from_slice(&ca);
            args.extend_from_slice(&["-revoke", &crt]);
            openssl(self.dir(), &args);
        }
        let mut args = vec!["ca"];
        args.extend_from_slice(&ca);
        args.extend_from_slice(&["-gencrl", "-out", file]);
        openssl(self.dir(), &args);
        self.path(file)
    }

    /// `opts` plus TCP on 127.0.0.1 and `ssl = on` with `server.crt`/`server.key` (or the
    /// `rogue` pair) and `ca.crt` for client certificates; see [`TestPki::install`].
    pub fn cluster_options(opts: ClusterOptions) -> ClusterOptions {
        opts.listen_addresses("127.0.0.1")
            .conf("ssl = on")
            .conf("ssl_cert_file = 'server.crt'")
            .conf("ssl_key_file = 'server.key'")
            .conf("ssl_ca_file = 'ca.crt'")
    }

    /// Copies the server's files into `c`'s data directory (`server` = `"server"` or
    /// `"rogue"`) and replaces its pg_hba.conf by `local all all trust` plus `hba` lines.
    /// Call before starting the cluster (or reload after).
    pub fn install(&self, c: &Cluster, server: &str, hba: &str) {
        let read = |name: &str| fs::read(self.path(name)).unwrap();
        c.write_data_file("server.crt", &read(&format!("{server}.crt")));
        c.write_data_file("server.key", &read(&format!("{server}.key")));
        c.write_data_file("ca.crt", &read("ca.crt"));
        c.write_data_file(
            "pg_hba.conf",
            format!("local all all trust\n{hba}\n").as_bytes(),
        );
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
