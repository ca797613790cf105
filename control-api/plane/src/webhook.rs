//! The sidecar-injection webhook (`serve --webhook ADDR`): HTTPS (rustls), `POST /inject`
//! with an `AdmissionReview`, answered by [`crate::inject`]; `GET /live`. A body that is not
//! an AdmissionReview gets 400 (the API server then applies `failurePolicy: Ignore`).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::inject::{Outcome, Settings};
use crate::metrics::{Metrics, ResultLabels};

/// Largest AdmissionReview accepted (a pod with its status is far smaller).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The TLS acceptor for the webhook's certificate and key (PEM files).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("--webhook-cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--webhook-key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--webhook-cert/--webhook-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub struct Webhook {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
}

/// Serves the webhook until the task is dropped.
pub async fn run(listener: TcpListener, tls: TlsAcceptor, webhook: Arc<Webhook>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, webhook) = (tls.clone(), webhook.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |req| {
                let webhook = webhook.clone();
                async move { Ok::<_, Infallible>(webhook.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

impl Webhook {
    fn count(&self, result: &'static str) {
        self.metrics
            .injections
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/live") => reply(StatusCode::OK, "text/plain", b"live\n".to_vec()),
            (&Method::POST, "/inject") => {
                let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        self.count("error");
                        return reply(
                            StatusCode::BAD_REQUEST,
                            "text/plain",
                            format!("cannot read the body: {e}\n").into_bytes(),
                        );
                    }
                };
                match crate::inject::review(&body, &self.settings) {
                    Ok((answer, outcome)) => {
                        match &outcome {
                            Outcome::Injected(_) => self.count("injected"),
                            Outcome::Skipped(why) => self.count(why),
                        }
                        tracing::debug!(?outcome, "admission review answered");
                        reply(
                            StatusCode::OK,
                            "application/json",
                            serde_json::to_vec(&answer).unwrap_or_default(),
                        )
                    }
                    Err(e) => {
                        self.count("error");
                        tracing::warn!(error = %e, "bad admission review; the pod is created without a sidecar");
                        reply(
                            StatusCode::BAD_REQUEST,
                            "text/plain",
                            format!("{e}\n").into_bytes(),
                        )
                    }
                }
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found; POST /inject (AdmissionReview), GET /live\n".to_vec(),
            ),
        }
    }
}
