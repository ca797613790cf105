//! Credentials from the control plane: a fresh key and CSR sent to
//! `remora.control.v1.Identity/Certify` for this proxy's service; the certificate is renewed
//! at 70% of its lifetime, and a failure is retried with capped, jittered backoff while the
//! current certificate (if any) keeps serving.

use std::sync::Arc;
use std::time::Duration;

use remora_control_api::proto::control::CertifyRequest;
use remora_control_api::proto::control::identity_client::IdentityClient;
use remora_control_api::tls::Identity;

use super::{Credentials, IdentityStore};
use crate::state::Proxy;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Share of a certificate's lifetime after which it is renewed.
const RENEW_AT: f64 = 0.7;

pub async fn run(store: Arc<IdentityStore>, settings: Identity, proxy: Arc<Proxy>) {
    let Some(control) = proxy.control_options.get().cloned() else {
        tracing::error!(
            "identity.controlPlane is set but the proxy runs without --control; no certificate will come"
        );
        return;
    };
    let mut failures = 0u32;
    loop {
        match certify(&control, &settings).await {
            Ok(c) => {
                failures = 0;
                let wait = renew_in(&c);
                store.install(Arc::new(c), &settings, "control-plane", &proxy.metrics);
                tracing::debug!(
                    renew_in_s = wait.as_secs(),
                    "mesh certificate renewal scheduled"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                super::count(&proxy.metrics, "control-plane", "error");
                failures = failures.saturating_add(1);
                let cap = BACKOFF_BASE
                    .saturating_mul(1 << failures.min(8))
                    .min(BACKOFF_MAX);
                let wait = cap.mul_f64(fastrand::f64().max(0.1));
                tracing::warn!(server = %control.url, error = %e, retry_in_ms = wait.as_millis(), "cannot get a mesh certificate from the control plane");
                store.check_expiry(settings.expiry_warning);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// When to renew: at 70% of the lifetime left when it arrived (CAs backdate `notBefore`
/// for clock skew, which is no lifetime of ours), at least a second from now.
fn renew_in(c: &Credentials) -> Duration {
    let now = super::unix_now();
    let start = c.not_before.max(now);
    let life = (c.not_after - start).max(0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let at = start + (life as f64 * RENEW_AT) as i64;
    let secs = u64::try_from(at - now).unwrap_or(0);
    Duration::from_secs(secs).max(Duration::from_secs(1))
}

async fn certify(
    control: &crate::control::ControlOptions,
    settings: &Identity,
) -> Result<Credentials, String> {
    let (key, csr) = remora_certs::csr::request().map_err(|e| e.to_string())?;
    let channel = tonic::transport::Endpoint::from_shared(control.url.clone())
        .map_err(|e| format!("bad --control URL: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let reply = IdentityClient::new(channel)
        .certify(CertifyRequest {
            node: control.node.clone(),
            service: control.service.clone(),
            csr,
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let c = Credentials::build(
        &settings.trust_domain,
        reply.certificate_chain.as_bytes(),
        key.as_bytes(),
        reply.trust_bundle.as_bytes(),
    )
    .map_err(|e| {
        format!(
            "the control plane's certificate is unusable ({:?}): {}",
            e.part, e.message
        )
    })?;
    Ok(c)
}
