//! Applying a configuration: parse → validate → compile → bind → one snapshot swap. A bad
//! update is rejected whole with an error naming resource and field; the running snapshot
//! stays. Callers serialise applies ([`crate::sources::Sources`] holds the lock).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use remora_control_api::load::LoadError;
use remora_control_api::{InvalidConfig, proto, validate};

use crate::listeners::BindError;
use crate::snapshot::Snapshot;
use crate::state::Proxy;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Invalid(#[from] InvalidConfig),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("listener {listener:?}: {message}")]
    Tls { listener: String, message: String },
    #[error("cluster {cluster:?}: {message}")]
    ClusterTls { cluster: String, message: String },
    #[error("config: {0}")]
    Identity(String),
}

/// Validates, compiles and swaps in a configuration.
pub fn apply(proxy: &Arc<Proxy>, source: proto::Config) -> Result<String, ApplyError> {
    let config = validate(&source)?;
    let version = if config.version.is_empty() {
        let canonical = serde_json::to_vec(&source).unwrap_or_default();
        format!("{:016x}", remora_filters::hash::hash64(&canonical))
    } else {
        config.version.clone()
    };
    let current_admin = proxy.snapshot.load().admin;
    let tracing_config = config.tracing.clone();
    let identity = proxy
        .mesh_identity
        .prepare(config.identity.as_ref())
        .map_err(ApplyError::Identity)?;
    if matches!(identity, crate::identity::Prepared::ControlPlane(_))
        && proxy.control_options.get().is_none()
    {
        return Err(ApplyError::Identity(
            "identity.controlPlane: needs a control plane; run with --control URL or use identity.files".into(),
        ));
    }
    let mut upstream_tls = std::collections::HashMap::new();
    for c in &config.clusters {
        if let Some(t) = &c.tls {
            let compiled = crate::tls::client::UpstreamTls::compile(t, &proxy.mesh_identity)
                .map_err(|message| ApplyError::ClusterTls {
                    cluster: c.name.to_string(),
                    message,
                })?;
            upstream_tls.insert(c.name.clone(), compiled);
        }
    }
    let (mut snapshot, staged) = Snapshot::compile(
        config,
        source,
        version.clone(),
        &proxy.registry,
        &proxy.metrics,
        &upstream_tls,
    );
    if proxy.ready.load(Ordering::Acquire) && snapshot.admin != current_admin {
        tracing::warn!(running = %current_admin, configured = %snapshot.admin, "admin address changes take effect on restart");
    }
    let mut listeners = proxy
        .listeners
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for (name, l) in &snapshot.listeners {
        if let Some(settings) = &l.listener.tls {
            let server = crate::tls::server::TlsServer::load(settings).map_err(|message| {
                ApplyError::Tls {
                    listener: name.to_string(),
                    message,
                }
            })?;
            snapshot.tls.insert(name.clone(), Arc::new(server));
        }
    }
    let plan = listeners.prepare(&snapshot)?;
    snapshot.tracer = tracer_for(proxy, tracing_config);
    let mut paths = Vec::new();
    for (name, l) in &snapshot.listeners {
        if let Some(cfg) = &l.listener.access_log {
            paths.push(cfg.path.clone());
            snapshot.access_logs.insert(
                name.clone(),
                crate::access_log::ListenerLog::new(cfg, &proxy.access_logs, &proxy.metrics),
            );
        }
    }
    proxy
        .access_logs
        .retain(&paths.iter().map(String::as_str).collect::<Vec<_>>());
    proxy.mesh_identity.commit(identity, proxy);
    proxy.snapshot.store(Arc::new(snapshot));
    proxy.registry.commit(staged);
    listeners.commit(plan, proxy);
    drop(listeners);
    crate::resilience::after_apply(proxy);
    proxy.checkers.sync(proxy);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    proxy.metrics.config_last_success.set(now);
    Ok(version)
}

/// The tracer for a configuration: the running one when its settings are unchanged, a new
/// one (and exporter task) when they changed, none without `tracing`.
fn tracer_for(
    proxy: &Proxy,
    config: Option<remora_control_api::config::Tracing>,
) -> Option<Arc<crate::trace::Tracer>> {
    let mut current = proxy.tracer.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(config) = config else {
        *current = None;
        return None;
    };
    if let Some(t) = current.as_ref()
        && t.config == config
    {
        return Some(t.clone());
    }
    let identity = proxy
        .identity
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match crate::trace::Tracer::start(
        config,
        &identity,
        proxy.mesh_identity.clone(),
        &proxy.metrics,
    ) {
        Ok(t) => {
            *current = Some(t.clone());
            Some(t)
        }
        Err(e) => {
            tracing::warn!(error = %e, "tracing disabled: cannot start the exporter");
            *current = None;
            None
        }
    }
}
