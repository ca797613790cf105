//! Running the proxy: apply the file and/or the cached control-plane config, start the admin
//! server, the file watcher and the control stream, and on
//! SIGTERM/SIGINT drain connections within the drain timeout and exit.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::control::ControlOptions;
use crate::sources::Sources;
use crate::state::Proxy;

/// How often idle upstream connections are swept.
const EVICT_EVERY: Duration = Duration::from_secs(5);

/// What `remora` runs from: a file, a control plane, or both.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub admin: Option<std::net::SocketAddr>,
    /// Service and node, for trace resources.
    pub identity: crate::trace::Identity,
    pub control: Option<ControlOptions>,
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let proxy = Arc::new(Proxy::new());
    *proxy
        .identity
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = options.identity.clone();
    if let Some(control) = &options.control {
        let _ = proxy.control_options.set(control.clone());
    }
    let sources = Arc::new(Sources::new(proxy.clone(), options.control.is_some()));

    let mut file_text = None;
    if let Some(path) = &options.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration {}", path.display()))?;
        let version = sources
            .set_file_text(&text)
            .context("configuration rejected")?;
        tracing::info!(%version, path = %path.display(), "configuration applied");
        file_text = Some(text);
    }
    if let Some(control) = &options.control {
        start_from_cache(&sources, control);
    }

    // Watch before the admin server answers /ready, so that whoever waits for readiness and
    // then edits the file is never missed.
    let _watcher = match (&options.config, file_text) {
        (Some(path), Some(text)) => Some(
            crate::watch::spawn(sources.clone(), path.clone(), text)
                .context("cannot watch the configuration file")?,
        ),
        _ => None,
    };

    let admin_addr = options.admin.unwrap_or(proxy.snapshot.load().admin);
    let admin = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot bind admin address {admin_addr}"))?;
    tracing::info!(address = %admin.local_addr().unwrap_or(admin_addr), "admin listening");
    let stop_admin = CancellationToken::new();
    tokio::spawn(crate::admin::serve(
        admin,
        proxy.clone(),
        stop_admin.clone(),
    ));

    if let Some(control) = options.control.clone() {
        tokio::spawn(crate::control::client::run(sources.clone(), control));
    }
    tokio::spawn(evict_idle(proxy.clone()));
    tokio::spawn(crate::resilience::run(proxy.clone()));

    shutdown_signal().await;
    proxy
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    let drain_timeout = proxy.snapshot.load().drain_timeout;
    tracing::info!(?drain_timeout, "shutting down: draining connections");
    proxy
        .listeners
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain_all();
    proxy.tracker.close();
    if tokio::time::timeout(drain_timeout, proxy.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = proxy.tracker.len(),
            "drain timeout elapsed; closing remaining connections"
        );
    }
    stop_admin.cancel();
    tracing::info!("stopped");
    Ok(())
}

/// With `--cache-dir`, serve the last configuration the control plane gave before it answers.
fn start_from_cache(sources: &Sources, control: &ControlOptions) {
    crate::control::client::set_status(sources, |s| {
        s.server.clone_from(&control.url);
        s.node.clone_from(&control.node);
        s.service.clone_from(&control.service);
        s.source = "none";
    });
    let Some(dir) = &control.cache_dir else {
        return;
    };
    match crate::control::cache::load(dir, &control.service) {
        Ok(None) => tracing::info!(dir = %dir.display(), "no cached configuration yet"),
        Ok(Some(cached)) => {
            let (config_version, endpoints_version) = (
                cached.config_version.clone(),
                cached.endpoints_version.clone(),
            );
            match sources.set_dynamic(cached) {
                Ok(version) => {
                    tracing::info!(%version, dir = %dir.display(), "serving the cached configuration until the control plane answers");
                    sources.proxy().metrics.set_applied(
                        "cache",
                        &config_version,
                        &endpoints_version,
                    );
                    crate::control::client::set_status(sources, |s| {
                        s.source = "cache";
                        s.config_version = config_version;
                        s.endpoints_version = endpoints_version;
                    });
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cached configuration rejected; waiting for the control plane");
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot use the configuration cache; waiting for the control plane");
        }
    }
}

async fn evict_idle(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(EVICT_EVERY);
    loop {
        tick.tick().await;
        let snap = proxy.snapshot.load_full();
        proxy.registry.evict_idle(Instant::now(), |cluster| {
            snap.clusters.get(cluster).map(|c| c.cluster.idle_timeout)
        });
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => {}
        r = tokio::signal::ctrl_c() => { let _ = r; }
    }
}
