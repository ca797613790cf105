//! TLS with rustls on aws-lc-rs: the process's crypto provider, PEM loading, SPIFFE ids in
//! certificates, and handshake errors named for operators. [`server`] terminates (mesh mTLS
//! or ingress by SNI), [`client`] originates (mesh mTLS or to external services),
//! [`verify`] checks mesh peers' certificates.

pub mod client;
pub mod server;
pub mod verify;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Installs the process's one crypto provider (aws-lc-rs); later calls are no-ops.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The provider handshakes use.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_provider();
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The ALPN ids the mesh speaks, in preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// PEM certificates (at least one).
pub(crate) fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("not a PEM private key: {e}"))
}

/// A root store from PEM (at least one certificate).
pub(crate) fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(pem)? {
        roots
            .add(c)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

pub(crate) fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))
}

/// Why a certificate's SPIFFE id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    BadCertificate,
    NoSpiffeId,
    WrongTrustDomain,
    /// In the trust domain, but not the id expected of the endpoint.
    WrongIdentity,
}

impl IdError {
    pub fn as_str(self) -> &'static str {
        match self {
            IdError::BadCertificate => "bad-certificate",
            IdError::NoSpiffeId => "no-spiffe-id",
            IdError::WrongTrustDomain => "wrong-trust-domain",
            IdError::WrongIdentity => "wrong-identity",
        }
    }
}

/// The SPIFFE id in a certificate's URI SANs, if one is in `trust_domain`.
pub fn spiffe_id(cert: &[u8], trust_domain: &str) -> Result<String, IdError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|_| IdError::BadCertificate)?;
    let san = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or(IdError::NoSpiffeId)?;
    let mut any = false;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(u) = name
            && let Some(rest) = u.strip_prefix("spiffe://")
        {
            if rest
                .strip_prefix(trust_domain)
                .is_some_and(|p| p.starts_with('/'))
            {
                return Ok((*u).to_owned());
            }
            any = true;
        }
    }
    Err(if any {
        IdError::WrongTrustDomain
    } else {
        IdError::NoSpiffeId
    })
}

/// A certificate's validity end, as Unix seconds.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// A short, stable name for a failed handshake (a metric label and log field).
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let Some(e) = e.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "peer-closed"
            }
            _ => "failed",
        };
    };
    match e {
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not-yet-valid",
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown-issuer",
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "wrong-server-name"
        }
        E::InvalidCertificate(C::Other(o)) => {
            o.0.downcast_ref::<verify::PeerError>()
                .map_or("bad-certificate", |p| p.0.as_str())
        }
        E::InvalidCertificate(_) => "bad-certificate",
        E::NoCertificatesPresented => "no-client-certificate",
        E::AlertReceived(A::CertificateExpired) => "peer-refused-expired",
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown) => {
            "peer-refused-certificate"
        }
        E::AlertReceived(A::CertificateRequired) => "peer-requires-client-certificate",
        E::AlertReceived(_) => "peer-alert",
        E::NoApplicationProtocol => "no-common-alpn",
        E::PeerIncompatible(_) => "incompatible",
        _ => "failed",
    }
}
