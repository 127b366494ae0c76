//! Server-certificate verifiers for the three levels libpq knows (fe-secure-openssl.c
//! `initialize_SSL`, `verify_cb`, `pq_verify_peer_name_matches_certificate`):
//!
//! - no root certificate (and `sslmode` below verify-ca): the certificate is not checked at
//!   all, but the handshake signatures still are, so the session is bound to the key of the
//!   certificate the server showed (what channel binding relies on);
//! - a root certificate and verify-ca (or a weaker mode — libpq checks the chain whenever a
//!   root file is there): the chain must lead to a trusted root (with revocation lists when
//!   given), the host name is not compared;
//! - verify-full: chain and host name (`subjectAltName` DNS names and IP addresses).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

/// Accepts any certificate; checks the handshake signatures (sslmode=require, prefer, allow
/// without a root certificate).
#[derive(Debug)]
pub(super) struct NoCertCheck(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The full check (chain, validity, revocation, usage) except the host name: libpq's
/// verify-ca. webpki checks the chain before the name, so a `NotValidForName` error means
/// everything else passed.
#[derive(Debug)]
pub(super) struct ChainOnly(pub Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Records whether a client certificate was sent (libpq `sslcertmode=require` fails a session
/// the server accepted without one).
#[derive(Debug)]
pub(super) struct RecordingResolver {
    pub inner: Arc<dyn rustls::client::ResolvesClientCert>,
    pub sent: Arc<std::sync::atomic::AtomicBool>,
}

impl rustls::client::ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let key = self.inner.resolve(root_hint_subjects, sigschemes);
        if key.is_some() {
            self.sent.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        key
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}
