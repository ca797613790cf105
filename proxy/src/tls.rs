//! Mutual TLS on inbound listeners (rustls, aws-lc-rs): TLS 1.3/1.2 with ALPN `h2` and
//! `http/1.1`, a client certificate required that chains to the mesh bundle and carries a
//! `spiffe://TRUST_DOMAIN/...` URI SAN. The caller's SPIFFE id is handed to the request path.
//! In `PERMISSIVE` mode plaintext clients are served too (a TLS ClientHello is recognised by
//! its first byte), and counted apart.

use std::sync::Arc;
use std::time::Duration;

use remora_control_api::listener::{ListenerTls, TlsMode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::metrics::{Metrics, TlsLabels};

/// How long a client has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the process's one crypto provider (aws-lc-rs); later calls are no-ops.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A listener's compiled TLS settings.
#[derive(Clone)]
pub struct TlsServer {
    pub settings: ListenerTls,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("mode", &self.settings.mode)
            .finish_non_exhaustive()
    }
}

fn read(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls.{what}: cannot read {path:?}: {e}"))
}

impl TlsServer {
    /// Loads the certificate, key and bundle files; errors name the field and file.
    pub fn load(settings: &ListenerTls) -> Result<Self, String> {
        install_provider();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&settings.cert_file, "certFile")?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls.certFile: {:?}: {e}", settings.cert_file))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.certFile: {:?} holds no certificate",
                settings.cert_file
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&settings.key_file, "keyFile")?)
            .map_err(|e| format!("tls.keyFile: {:?}: {e}", settings.key_file))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read(&settings.bundle_file, "bundleFile")?) {
            let c = c.map_err(|e| format!("tls.bundleFile: {:?}: {e}", settings.bundle_file))?;
            roots
                .add(c)
                .map_err(|e| format!("tls.bundleFile: {:?}: {e}", settings.bundle_file))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "tls.bundleFile: {:?} holds no certificate",
                settings.bundle_file
            ));
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| format!("tls.bundleFile: {e}"))?;
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| format!("tls.certFile/keyFile: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            settings: settings.clone(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// What a TLS handshake gave the connection.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub http2: bool,
    pub identity: String,
}

/// The outcome of the first look at an inbound mTLS connection.
pub enum Inbound {
    Tls(Box<Accepted>),
    /// A plaintext client on a permissive listener.
    Plaintext(TcpStream),
    Refused,
}

fn count(metrics: &Metrics, listener: &str, result: &'static str) {
    metrics
        .tls_handshakes
        .get_or_create(&TlsLabels {
            listener: listener.to_owned(),
            result,
        })
        .inc();
}

/// The SPIFFE id in a certificate's URI SANs, if one is in `trust_domain`.
fn spiffe_id(cert: &CertificateDer<'_>, trust_domain: &str) -> Result<String, &'static str> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| "bad-certificate")?;
    let san = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or("no-spiffe-id")?;
    let prefix = format!("spiffe://{trust_domain}/");
    let mut any = false;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(u) = name {
            if u.starts_with(&prefix) {
                return Ok((*u).to_owned());
            }
            any |= u.starts_with("spiffe://");
        }
    }
    Err(if any {
        "wrong-trust-domain"
    } else {
        "no-spiffe-id"
    })
}

/// Handshakes (or, in permissive mode, lets plaintext through), checks the peer's identity,
/// and counts the result in `remora_tls_handshakes_total`.
pub async fn accept(
    tls: &TlsServer,
    stream: TcpStream,
    listener: &str,
    metrics: &Metrics,
) -> Inbound {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    let is_tls = matches!(peeked, Ok(Ok(1))) && first[0] == 0x16;
    if !is_tls {
        if tls.settings.mode == TlsMode::Permissive && matches!(peeked, Ok(Ok(1))) {
            count(metrics, listener, "plaintext");
            return Inbound::Plaintext(stream);
        }
        count(metrics, listener, "refused-plaintext");
        tracing::info!(%listener, "plaintext client on a STRICT mTLS listener; closing");
        return Inbound::Refused;
    }
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            count(metrics, listener, "failed");
            tracing::info!(%listener, error = %e, "mTLS handshake failed");
            return Inbound::Refused;
        }
        Err(_) => {
            count(metrics, listener, "timeout");
            tracing::info!(%listener, "mTLS handshake timed out");
            return Inbound::Refused;
        }
    };
    let (_, conn) = stream.get_ref();
    let http2 = conn.alpn_protocol() == Some(b"h2");
    let identity = match conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| spiffe_id(c, &tls.settings.trust_domain))
    {
        Some(Ok(id)) => id,
        Some(Err(reason)) => {
            count(metrics, listener, reason);
            tracing::info!(%listener, reason, trust_domain = %tls.settings.trust_domain, "client certificate refused");
            return Inbound::Refused;
        }
        None => {
            count(metrics, listener, "no-client-certificate");
            return Inbound::Refused;
        }
    };
    count(metrics, listener, "ok");
    Inbound::Tls(Box::new(Accepted {
        stream,
        http2,
        identity,
    }))
}
