//! TLS on listeners. Mesh modes (`STRICT`, `PERMISSIVE`) present the proxy's mesh
//! certificate and require a client certificate that chains to the mesh bundle and carries a
//! `spiffe://TRUST_DOMAIN/...` id, which is handed to the request path; `PERMISSIVE` also
//! serves plaintext clients (a TLS ClientHello is recognised by its first byte), counted
//! apart. `TERMINATE` (ingress) asks no client certificate and picks the certificate by SNI.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use remora_control_api::listener::{ListenerTls, ServerCertificate, TlsMode};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::http::server::HttpVersion;
use crate::identity::IdentityStore;
use crate::metrics::{Metrics, TlsLabels};

/// How long a client has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's compiled TLS settings.
#[derive(Clone)]
pub struct TlsServer {
    pub settings: ListenerTls,
    /// `TERMINATE`: the acceptor with the listener's certificates. Mesh modes build theirs
    /// from the current mesh credentials at each accept.
    terminate: Option<TlsAcceptor>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("mode", &self.settings.mode)
            .finish_non_exhaustive()
    }
}

/// Certificates by server name: exact names first, then "*.suffix" (one label), else the
/// first certificate.
#[derive(Debug)]
struct BySni {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        Some(
            parent
                .and_then(|p| self.wildcard.get(p))
                .unwrap_or(&self.default)
                .clone(),
        )
    }
}

fn certified(i: usize, c: &ServerCertificate) -> Result<Arc<CertifiedKey>, String> {
    let field = |f: &str| format!("tls.certificates[{i}].{f}");
    let chain = crate::tls::read(&c.cert_file)
        .and_then(|p| crate::tls::certs(&p))
        .map_err(|e| format!("{}: {:?}: {e}", field("certFile"), c.cert_file))?;
    let key = crate::tls::read(&c.key_file)
        .and_then(|p| crate::tls::key(&p))
        .map_err(|e| format!("{}: {:?}: {e}", field("keyFile"), c.key_file))?;
    CertifiedKey::from_der(chain, key, &crate::tls::provider())
        .map(Arc::new)
        .map_err(|e| format!("{}: does not fit the certificate: {e}", field("keyFile")))
}

impl TlsServer {
    /// Compiles the settings; `TERMINATE` certificates are read now (errors name the field
    /// and file).
    pub fn load(settings: &ListenerTls) -> Result<Self, String> {
        let terminate = if settings.mode == TlsMode::Terminate {
            let mut exact = HashMap::new();
            let mut wildcard = HashMap::new();
            let mut first = None;
            for (i, c) in settings.certificates.iter().enumerate() {
                let key = certified(i, c)?;
                first.get_or_insert_with(|| key.clone());
                for name in &c.server_names {
                    match name.strip_prefix("*.") {
                        Some(suffix) => wildcard.insert(suffix.to_owned(), key.clone()),
                        None => exact.insert(name.clone(), key.clone()),
                    };
                }
            }
            let default = first.ok_or("tls.certificates: required when tls.mode is TERMINATE")?;
            let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(BySni {
                    exact,
                    wildcard,
                    default,
                }));
            config.alpn_protocols = crate::tls::ALPN.iter().map(|p| p.to_vec()).collect();
            Some(TlsAcceptor::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Self {
            settings: settings.clone(),
            terminate,
        })
    }
}

/// What a TLS handshake gave the connection.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The HTTP version ALPN chose, if any.
    pub protocol: Option<HttpVersion>,
    /// The client's SPIFFE id (mesh modes).
    pub identity: Option<String>,
}

/// The outcome of the first look at an inbound TLS connection.
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

/// Handshakes (or, in permissive mode, lets plaintext through), checks the peer's identity,
/// and counts the result in `remora_tls_handshakes_total`.
pub async fn accept(
    tls: &TlsServer,
    identity: &IdentityStore,
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
        tracing::info!(%listener, "plaintext client on a TLS-only listener; closing");
        return Inbound::Refused;
    }
    let mesh = tls.settings.mode.is_mesh();
    let (acceptor, trust_domain) = match &tls.terminate {
        Some(a) => (a.clone(), None),
        None => {
            let Some(creds) = identity.current() else {
                count(metrics, listener, "no-identity");
                tracing::warn!(%listener, "mTLS client refused: this proxy has no mesh certificate yet");
                return Inbound::Refused;
            };
            (
                TlsAcceptor::from(creds.server.clone()),
                Some(creds.trust_domain.clone()),
            )
        }
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = crate::tls::failure_reason(&e);
            count(metrics, listener, reason);
            tracing::info!(%listener, reason, error = %e, "TLS handshake failed");
            return Inbound::Refused;
        }
        Err(_) => {
            count(metrics, listener, "timeout");
            tracing::info!(%listener, "TLS handshake timed out");
            return Inbound::Refused;
        }
    };
    let (_, conn) = stream.get_ref();
    let protocol = match conn.alpn_protocol() {
        Some(b"h2") => Some(HttpVersion::Http2),
        Some(b"http/1.1") => Some(HttpVersion::Http1),
        _ => None,
    };
    let peer = if mesh {
        let trust_domain = trust_domain.unwrap_or_default();
        match conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| crate::tls::spiffe_id(c.as_ref(), &trust_domain))
        {
            Some(Ok(id)) => Some(id),
            Some(Err(reason)) => {
                count(metrics, listener, reason.as_str());
                tracing::info!(%listener, reason = reason.as_str(), %trust_domain, "client certificate refused");
                return Inbound::Refused;
            }
            None => {
                count(metrics, listener, "no-client-certificate");
                return Inbound::Refused;
            }
        }
    } else {
        None
    };
    count(metrics, listener, "ok");
    Inbound::Tls(Box::new(Accepted {
        stream,
        protocol,
        identity: peer,
    }))
}
