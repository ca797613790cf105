//! TLS towards a cluster's endpoints. `MESH`: TLS 1.3 with this proxy's mesh certificate,
//! the peer verified against the mesh bundle and then held to the SPIFFE id expected of that
//! endpoint, before any request byte goes out. `EXTERNAL`: origination to a service outside
//! the mesh, the server verified for the configured SNI name against a CA bundle or the
//! system's roots, optionally with a client certificate. ALPN offers the one protocol the
//! pool is about to speak.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use remora_control_api::tls::ClusterTls;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::identity::IdentityStore;

/// A cluster's compiled TLS settings.
#[derive(Clone)]
pub enum UpstreamTls {
    Mesh {
        store: Arc<IdentityStore>,
        /// For endpoints that name none.
        identity: Option<Arc<str>>,
    },
    External(Arc<External>),
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamTls::Mesh { identity, .. } => {
                f.debug_struct("Mesh").field("identity", identity).finish()
            }
            UpstreamTls::External(e) => f.debug_struct("External").field("sni", &e.sni).finish(),
        }
    }
}

pub struct External {
    sni: ServerName<'static>,
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
    opaque: Arc<rustls::ClientConfig>,
}

/// What ALPN offers: the pool's protocol, or nothing for an opaque TCP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
    None,
}

/// The system's trust store, read once.
static SYSTEM_ROOTS: LazyLock<Result<Arc<rustls::RootCertStore>, String>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no usable certificate in the system's trust store ({} errors); set tls.bundleFile",
            found.errors.len()
        ));
    }
    Ok(Arc::new(roots))
});

impl UpstreamTls {
    /// Compiles the settings; files are read now and errors name the field and file.
    pub fn compile(tls: &ClusterTls, store: &Arc<IdentityStore>) -> Result<Self, String> {
        match tls {
            ClusterTls::Mesh { identity } => Ok(UpstreamTls::Mesh {
                store: store.clone(),
                identity: identity.as_deref().map(Arc::from),
            }),
            ClusterTls::External {
                sni,
                bundle_file,
                client_cert,
            } => {
                let roots = match bundle_file {
                    Some(path) => Arc::new(
                        crate::tls::read(path)
                            .and_then(|p| crate::tls::roots(&p))
                            .map_err(|e| format!("tls.bundleFile: {path:?}: {e}"))?,
                    ),
                    None => SYSTEM_ROOTS.clone()?,
                };
                let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots);
                let config = match client_cert {
                    None => builder.with_no_client_auth(),
                    Some((cert, key)) => {
                        let chain = crate::tls::read(cert)
                            .and_then(|p| crate::tls::certs(&p))
                            .map_err(|e| format!("tls.certFile: {cert:?}: {e}"))?;
                        let key_der = crate::tls::read(key)
                            .and_then(|p| crate::tls::key(&p))
                            .map_err(|e| format!("tls.keyFile: {key:?}: {e}"))?;
                        builder
                            .with_client_auth_cert(chain, key_der)
                            .map_err(|e| format!("tls.keyFile: {key:?}: {e}"))?
                    }
                };
                let sni = ServerName::try_from(sni.clone())
                    .map_err(|e| format!("tls.sni: {sni:?}: {e}"))?;
                let with_alpn = |alpn: &[&[u8]]| {
                    let mut c = config.clone();
                    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                    Arc::new(c)
                };
                Ok(UpstreamTls::External(Arc::new(External {
                    sni,
                    h1: with_alpn(&[b"http/1.1"]),
                    h2: with_alpn(&[b"h2"]),
                    opaque: with_alpn(&[]),
                })))
            }
        }
    }
}

/// Why an upstream handshake failed, for the metric and the error.
#[derive(Debug)]
pub struct HandshakeError {
    pub reason: &'static str,
    pub detail: String,
}

/// Handshakes on a connected socket; for `MESH`, `expected` (the endpoint's SPIFFE id, or
/// the cluster's) must be the id the peer presented.
pub async fn connect(
    tls: &UpstreamTls,
    expected: Option<&str>,
    stream: TcpStream,
    addr: SocketAddr,
    alpn: Alpn,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let (config, name, mesh) = match tls {
        UpstreamTls::Mesh { store, identity } => {
            let Some(creds) = store.current() else {
                return Err(HandshakeError {
                    reason: "no-identity",
                    detail: "this proxy has no mesh certificate yet".into(),
                });
            };
            let config = match alpn {
                Alpn::H2 => creds.client_h2.clone(),
                Alpn::Http1 => creds.client_h1.clone(),
                Alpn::None => creds.client_opaque.clone(),
            };
            let expected = expected.or(identity.as_deref()).map(str::to_owned);
            (
                config,
                ServerName::IpAddress(addr.ip().into()),
                Some((creds.trust_domain.clone(), expected)),
            )
        }
        UpstreamTls::External(e) => (
            match alpn {
                Alpn::H2 => e.h2.clone(),
                Alpn::Http1 => e.h1.clone(),
                Alpn::None => e.opaque.clone(),
            },
            e.sni.clone(),
            None,
        ),
    };
    let stream = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| HandshakeError {
            reason: crate::tls::failure_reason(&e),
            detail: e.to_string(),
        })?;
    if let Some((trust_domain, Some(expected))) = mesh {
        let (_, conn) = stream.get_ref();
        let presented = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| crate::tls::spiffe_id(c.as_ref(), &trust_domain));
        match presented {
            Some(Ok(id)) if id == expected => {}
            Some(Ok(id)) => {
                return Err(HandshakeError {
                    reason: crate::tls::IdError::WrongIdentity.as_str(),
                    detail: format!("the peer is {id}, expected {expected}"),
                });
            }
            Some(Err(e)) => {
                return Err(HandshakeError {
                    reason: e.as_str(),
                    detail: format!("expected {expected}"),
                });
            }
            None => {
                return Err(HandshakeError {
                    reason: "no-spiffe-id",
                    detail: "the peer presented no certificate".into(),
                });
            }
        }
    }
    Ok(stream)
}
