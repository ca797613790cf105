//! One long-lived task: connect, say Hello, apply updates and answer ACK/NACK, and on any
//! failure keep serving and reconnect after a capped, fully jittered exponential backoff.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use remora_control_api::proto::control::{
    Ack, Hello, Nack, ProxyMessage, ResourceType, Update, control_client::ControlClient,
    proxy_message::Kind,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{ControlOptions, ControlStatus, NackInfo, cache, unix_now, update::prepare};
use crate::metrics::ControlUpdateLabels;
use crate::sources::{Dynamic, Sources};

/// Largest update accepted from the control plane.
pub const MAX_UPDATE_BYTES: usize = 16 * 1024 * 1024;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs forever (until the runtime stops).
pub async fn run(sources: Arc<Sources>, opts: ControlOptions) {
    let mut failures: u32 = 0;
    loop {
        let applied = match session(&sources, &opts).await {
            Ok(applied) => {
                tracing::warn!(server = %opts.url, "control stream ended; reconnecting");
                applied
            }
            Err((applied, e)) => {
                tracing::warn!(server = %opts.url, error = %e, "control stream failed; serving the last good configuration");
                set_status(&sources, |s| s.last_error = Some(e.clone()));
                applied
            }
        };
        set_status(&sources, |s| s.connected = false);
        sources.proxy().metrics.control_connected.set(0);
        failures = if applied {
            1
        } else {
            failures.saturating_add(1)
        };
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// Full jitter: a uniform pick in [0, min(cap, base * 2^(n-1))].
pub fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    ceiling.mul_f64(fastrand::f64())
}

/// One connection. Returns whether any update was applied, and the error that ended it.
async fn session(sources: &Sources, opts: &ControlOptions) -> Result<bool, (bool, String)> {
    let endpoint = tonic::transport::Endpoint::from_shared(opts.url.clone())
        .map_err(|e| (false, format!("--control {:?}: {e}", opts.url)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (false, format!("cannot connect: {e}")))?;
    let mut client = ControlClient::new(channel).max_decoding_message_size(MAX_UPDATE_BYTES);
    let (tx, rx) = mpsc::channel::<ProxyMessage>(16);
    let held = sources.dynamic();
    let mut versions = HashMap::new();
    if let Some(d) = &held {
        versions.insert("config".to_owned(), d.config_version.clone());
        versions.insert("endpoints".to_owned(), d.endpoints_version.clone());
    }
    let hello = ProxyMessage {
        kind: Some(Kind::Hello(Hello {
            node: opts.node.clone(),
            service: opts.service.clone(),
            versions,
            proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
        })),
    };
    let _ = tx.send(hello).await;
    let mut updates = client
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|e| (false, format!("stream refused: {}", e.message())))?
        .into_inner();
    tracing::info!(server = %opts.url, node = %opts.node, service = %opts.service, "control stream connected");
    set_status(sources, |s| {
        s.connected = true;
        s.connects += 1;
        s.last_error = None;
    });
    sources.proxy().metrics.control_connected.set(1);

    let mut applied = false;
    loop {
        let update = match updates.message().await {
            Ok(Some(u)) => u,
            Ok(None) => return Ok(applied),
            Err(status) => return Err((applied, format!("stream error: {}", status.message()))),
        };
        let reply = handle(sources, opts, &update).await;
        applied |= matches!(reply.kind, Some(Kind::Ack(_)));
        if tx.send(reply).await.is_err() {
            return Err((applied, "stream closed while answering".into()));
        }
    }
}

async fn handle(sources: &Sources, opts: &ControlOptions, update: &Update) -> ProxyMessage {
    let kind = ResourceType::try_from(update.r#type).unwrap_or(ResourceType::Unspecified);
    let current = sources.dynamic();
    let result = prepare(update, current.as_ref()).and_then(|next| {
        match sources.set_dynamic(next.clone()) {
            Ok(_) => Ok(next),
            Err(e) => Err(e.to_string()),
        }
    });
    let resource = match kind {
        ResourceType::Config => "config",
        ResourceType::Endpoints => "endpoints",
        ResourceType::Unspecified => "unknown",
    };
    let outcome = if result.is_ok() { "ack" } else { "nack" };
    sources
        .proxy()
        .metrics
        .control_updates
        .get_or_create(&ControlUpdateLabels {
            resource,
            result: outcome,
        })
        .inc();
    match result {
        Ok(next) => {
            tracing::info!(resource, version = %update.version, "control update applied");
            set_status(sources, |s| {
                s.source = "control";
                s.config_version.clone_from(&next.config_version);
                s.endpoints_version.clone_from(&next.endpoints_version);
                s.last_applied = unix_now();
            });
            sources.proxy().metrics.set_applied(
                "control",
                &next.config_version,
                &next.endpoints_version,
            );
            if let Some(dir) = &opts.cache_dir {
                write_cache(dir.clone(), opts.service.clone(), next).await;
            }
            ProxyMessage {
                kind: Some(Kind::Ack(Ack {
                    r#type: update.r#type,
                    version: update.version.clone(),
                    nonce: update.nonce.clone(),
                })),
            }
        }
        Err(error) => {
            tracing::error!(resource, version = %update.version, %error, "control update rejected (NACK); keeping the running configuration");
            set_status(sources, |s| {
                s.last_nack = Some(NackInfo {
                    version: update.version.clone(),
                    error: error.clone(),
                    at: unix_now(),
                });
            });
            ProxyMessage {
                kind: Some(Kind::Nack(Nack {
                    r#type: update.r#type,
                    version: update.version.clone(),
                    nonce: update.nonce.clone(),
                    error,
                })),
            }
        }
    }
}

async fn write_cache(dir: std::path::PathBuf, service: String, next: Dynamic) {
    let result = tokio::task::spawn_blocking(move || {
        let r = cache::store(&dir, &service, &next);
        (dir, r)
    })
    .await;
    if let Ok((dir, Err(e))) = result {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the configuration cache");
    }
}

pub(crate) fn set_status(sources: &Sources, f: impl FnOnce(&mut ControlStatus)) {
    let mut guard = sources
        .proxy()
        .control
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(ControlStatus::default));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for n in 0..40 {
            let d = backoff(n);
            assert!(d <= BACKOFF_CAP, "{n}: {d:?}");
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
