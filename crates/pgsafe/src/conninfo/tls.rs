//! TLS for the session, with libpq's settings and file rules (libpq "SSL Support";
//! fe-secure-openssl.c `initialize_SSL`; fe-connect.c `pqConnectOptions2`), on rustls.
//!
//! - Server certificate: `sslrootcert` names a PEM file of trusted roots, or `system` (the
//!   operating system's store; honours `SSL_CERT_FILE`/`SSL_CERT_DIR` like OpenSSL). Unset, it
//!   is `~/.postgresql/root.crt`. When that file exists the chain is checked in *every* sslmode
//!   that uses TLS (so `require` with a root file acts as verify-ca, as in libpq); when it does
//!   not, verify-ca and verify-full fail and the weaker modes do not check the certificate.
//!   verify-full also compares the host name with the certificate's `subjectAltName` (unlike
//!   OpenSSL in libpq, rustls never falls back to the Common Name).
//! - Revocation: `sslcrl` (PEM or DER file) and `sslcrldir` (every file in it), else
//!   `~/.postgresql/root.crl`; a missing file is ignored, as libpq does. Only with a root file.
//!   With lists given, every certificate of the chain must be covered by one (libpq sets
//!   OpenSSL's `X509_V_FLAG_CRL_CHECK_ALL`).
//! - Client certificate: `sslcert` (default `~/.postgresql/postgresql.crt`); a missing file
//!   means none is sent. Its key `sslkey` (default `~/.postgresql/postgresql.key`) must exist,
//!   be a regular file, and have no group or world access — except a root-owned key may be
//!   group-readable (0640) — or it is refused before connecting. `sslcertmode=disable` sends
//!   no certificate; `require` fails a session the server accepted without one. Encrypted
//!   keys (`sslpassword`) are not supported.
//! - `sslsni` (default 1): send the host name in the handshake, never an IP address.
//! - `sslnegotiation=direct` (PostgreSQL 17+ servers): TLS from the first byte, only with a
//!   mode that never falls back to plain text. ALPN `postgresql` is always offered, as libpq 17.
//! - `ssl_min_protocol_version` (default TLSv1.2) / `ssl_max_protocol_version`: rustls speaks
//!   TLS 1.2 and 1.3 only.
//!
//! The key file is read when a connection is set up (not when settings are resolved, so no key
//! travels to the snapshot-mode holder: it reads the file itself); the bytes read are wiped once
//! parsed, and no message quotes a file's contents, only its name.

mod verify;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

use super::SslMode;

/// libpq's `sslcertmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslCertMode {
    Disable,
    #[default]
    Allow,
    Require,
}

/// libpq's `channel_binding` (SCRAM-SHA-256-PLUS over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelBinding {
    Disable,
    #[default]
    Prefer,
    Require,
}

/// TLS settings, as resolved; files are absolute paths (the snapshot-mode holder runs in `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// `sslrootcert`: a file, or `system`; `None` = `root.crt` in [`TlsSettings::default_dir`].
    pub rootcert: Option<String>,
    pub crl: Option<PathBuf>,
    pub crldir: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `~/.postgresql`, where the default files are looked for (`None` without a home).
    pub default_dir: Option<PathBuf>,
    pub sni: bool,
    pub certmode: SslCertMode,
    /// `sslnegotiation=direct`.
    pub direct: bool,
    pub channel_binding: ChannelBinding,
    /// `ssl_min_protocol_version` / `ssl_max_protocol_version` as given (validated).
    pub min_protocol: Option<String>,
    pub max_protocol: Option<String>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            rootcert: None,
            crl: None,
            crldir: None,
            cert: None,
            key: None,
            default_dir: None,
            sni: true,
            certmode: SslCertMode::Allow,
            direct: false,
            channel_binding: ChannelBinding::Prefer,
            min_protocol: None,
            max_protocol: None,
        }
    }
}

/// Why TLS could not be set up for a connection. Messages follow libpq's and never contain
/// the contents of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error(
        "root certificate file \"{}\" does not exist: either provide the file, use the \
         system's trusted roots with sslrootcert=system, or choose an sslmode that does not \
         verify the server certificate", .0.display()
    )]
    RootCertMissing(PathBuf),
    #[error(
        "could not get the home directory to locate the root certificate file: give \
         sslrootcert, or choose an sslmode that does not verify the server certificate"
    )]
    NoHomeForRootCert,
    #[error("could not read {what} \"{}\": {why}", .path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("could not load system root certificates: {0}")]
    SystemRoots(String),
    #[error("certificate present, but not private key file \"{}\"", .0.display())]
    KeyMissing(PathBuf),
    #[error("private key file \"{}\" is not a regular file", .0.display())]
    KeyNotRegular(PathBuf),
    #[error(
        "private key file \"{}\" has group or world access; file must have permissions u=rw \
         (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) or less \
         if owned by root", .0.display()
    )]
    KeyPermissions(PathBuf),
    #[error(
        "private key file \"{}\" is encrypted, which pgsafe cannot use: decrypt it into a \
         file only its owner can read (for example openssl pkey -in KEY -out KEY.plain)",
        .0.display()
    )]
    KeyEncrypted(PathBuf),
    #[error(
        "could not load private key file \"{}\": not a PEM or DER private key (PKCS#8, \
         PKCS#1 or SEC1)", .0.display()
    )]
    KeyUnreadable(PathBuf),
    #[error("certificate does not match private key file \"{}\"", .0.display())]
    KeyMismatch(PathBuf),
    #[error(
        "no TLS protocol version pgsafe supports (TLSv1.2, TLSv1.3) lies within \
         ssl_min_protocol_version and ssl_max_protocol_version"
    )]
    NoProtocolVersion,
    #[error("could not set up TLS: {0}")]
    Setup(String),
}

/// A protocol version name as libpq accepts it (case-insensitive), as a comparable number.
pub(crate) fn protocol_version(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "tlsv1" => Some(10),
        "tlsv1.1" => Some(11),
        "tlsv1.2" => Some(12),
        "tlsv1.3" => Some(13),
        _ => None,
    }
}

/// libpq's key-file rule: `true` if a key with this owner and `st_mode` may be used.
pub fn key_mode_allowed(uid: u32, mode: u32) -> bool {
    if uid == 0 {
        // Root-owned: group may read (S_IWGRP | S_IXGRP | S_IRWXO must be clear).
        mode & 0o037 == 0
    } else {
        mode & 0o077 == 0
    }
}

/// A rustls client configuration for one connection attempt, and the flag telling whether a
/// client certificate was sent (`Some` only with `sslcertmode=require`).
pub(crate) struct Prepared {
    pub config: ClientConfig,
    pub cert_sent: Option<Arc<AtomicBool>>,
}

impl TlsSettings {
    fn default_file(&self, name: &str) -> Option<PathBuf> {
        self.default_dir.as_ref().map(|d| d.join(name))
    }

    fn versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        let min = self
            .min_protocol
            .as_deref()
            .and_then(protocol_version)
            .unwrap_or(12);
        let max = self
            .max_protocol
            .as_deref()
            .and_then(protocol_version)
            .unwrap_or(13);
        let mut v = Vec::new();
        if min <= 12 && max >= 12 {
            v.push(&rustls::version::TLS12);
        }
        if max >= 13 {
            v.push(&rustls::version::TLS13);
        }
        v
    }

    /// Builds the rustls configuration for `mode`: reads the root certificates, revocation
    /// lists, client certificate and key.
    pub(crate) fn prepare(&self, mode: SslMode) -> Result<Prepared, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = self.versions();
        if versions.is_empty() {
            return Err(TlsError::NoProtocolVersion);
        }
        let verifier = self.verifier(mode, &provider)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.client_cert()? {
            Some((chain, key, key_path)) => {
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch(key_path),
                        other => TlsError::Setup(format!(
                            "client certificate and key \"{}\": {other}",
                            key_path.display()
                        )),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = self.sni;
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        let cert_sent = (self.certmode == SslCertMode::Require).then(|| {
            let sent = Arc::new(AtomicBool::new(false));
            config.client_auth_cert_resolver = Arc::new(verify::RecordingResolver {
                inner: config.client_auth_cert_resolver.clone(),
                sent: sent.clone(),
            });
            sent
        });
        Ok(Prepared { config, cert_sent })
    }

    fn verifier(
        &self,
        mode: SslMode,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
        let verifies = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        let (roots, crls) = if self.rootcert.as_deref() == Some("system") {
            (system_roots()?, Vec::new())
        } else {
            let path = match &self.rootcert {
                Some(p) => Some(PathBuf::from(p)),
                None => self.default_file("root.crt"),
            };
            match path {
                Some(p) if std::fs::metadata(&p).is_ok() => (file_roots(&p)?, self.crls()?),
                Some(p) if verifies => return Err(TlsError::RootCertMissing(p)),
                None if verifies => return Err(TlsError::NoHomeForRootCert),
                _ => return Ok(Arc::new(verify::NoCertCheck(provider.clone()))),
            }
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            .build()
            .map_err(|e| TlsError::Setup(format!("server certificate verification: {e}")))?;
        Ok(if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(verify::ChainOnly(webpki))
        })
    }

    fn crls(&self) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
        let mut crls = Vec::new();
        let file = match (&self.crl, &self.crldir) {
            (None, None) => self.default_file("root.crl"),
            (f, _) => f.clone(),
        };
        if let Some(path) = file {
            if let Some(bytes) = read_file(&path, "certificate revocation list file")? {
                crls.extend(parse_crls(&path, &bytes)?);
            }
        }
        if let Some(dir) = &self.crldir {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(crls),
                Err(e) => {
                    return Err(TlsError::ReadFile {
                        what: "certificate revocation list directory",
                        path: dir.clone(),
                        why: e.to_string(),
                    });
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_file() {
                    continue;
                }
                if let Some(bytes) = read_file(&path, "certificate revocation list file")? {
                    crls.extend(parse_crls(&path, &bytes)?);
                }
            }
        }
        Ok(crls)
    }

    /// The client certificate chain and key, unless none is to be sent.
    #[allow(clippy::type_complexity)]
    fn client_cert(
        &self,
    ) -> Result<
        Option<(
            Vec<CertificateDer<'static>>,
            PrivateKeyDer<'static>,
            PathBuf,
        )>,
        TlsError,
    > {
        if self.certmode == SslCertMode::Disable {
            return Ok(None);
        }
        let Some(cert_path) = self
            .cert
            .clone()
            .or_else(|| self.default_file("postgresql.crt"))
        else {
            return Ok(None);
        };
        let Some(bytes) = read_file(&cert_path, "certificate file")? else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| TlsError::ReadFile {
                what: "certificate file",
                path: cert_path.clone(),
                why: "no PEM certificate in it".into(),
            })?;
        let Some(key_path) = self
            .key
            .clone()
            .or_else(|| self.default_file("postgresql.key"))
        else {
            return Ok(None);
        };
        let key = load_key(&key_path)?;
        Ok(Some((chain, key, key_path)))
    }
}

/// Reads a certificate or list file; `None` if it does not exist (libpq: go on without it).
fn read_file(path: &Path, what: &'static str) -> Result<Option<Vec<u8>>, TlsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(TlsError::ReadFile {
            what,
            path: path.to_owned(),
            why: e.to_string(),
        }),
    }
}

fn file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let what = "root certificate file";
    let bytes = read_file(path, what)?.ok_or_else(|| TlsError::RootCertMissing(path.into()))?;
    let bad = |why: &str| TlsError::ReadFile {
        what,
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("not a PEM file of certificates"))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable certificate in it"));
    }
    Ok(store)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = if found.errors.is_empty() {
            "none found".to_owned()
        } else {
            found
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(TlsError::SystemRoots(why));
    }
    Ok(store)
}

fn parse_crls(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = CertificateRevocationListDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>();
    match pem {
        Ok(list) if !list.is_empty() => Ok(list),
        // DER: one list, the file as is.
        _ if bytes.first() == Some(&0x30) => {
            Ok(vec![CertificateRevocationListDer::from(bytes.to_vec())])
        }
        _ => Err(TlsError::ReadFile {
            what: "certificate revocation list file",
            path: path.to_owned(),
            why: "no PEM or DER revocation list in it".into(),
        }),
    }
}

/// libpq's key checks, then the key (PEM, else DER). The file's bytes are wiped after use.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let unreadable = |e: std::io::Error| TlsError::ReadFile {
        what: "private key file",
        path: path.to_owned(),
        why: e.to_string(),
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(TlsError::KeyMissing(path.to_owned()));
        }
        Err(e) => return Err(unreadable(e)),
    };
    // The checks look at the file that is read (fstat), not at a name that could change.
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(TlsError::KeyNotRegular(path.to_owned()));
    }
    if !key_mode_allowed(meta.uid(), meta.mode()) {
        return Err(TlsError::KeyPermissions(path.to_owned()));
    }
    let mut bytes = Vec::new();
    let read = file.read_to_end(&mut bytes).map_err(unreadable);
    let key = read.and_then(|_| parse_key(path, &bytes));
    bytes.fill(0);
    std::hint::black_box(&bytes);
    key
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    if let Ok(key) = PrivateKeyDer::from_pem_slice(bytes) {
        return Ok(key);
    }
    if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(TlsError::KeyEncrypted(path.to_owned()));
    }
    PrivateKeyDer::try_from(bytes.to_vec()).map_err(|_| TlsError::KeyUnreadable(path.to_owned()))
}

#[cfg(test)]
mod tests;
