//! Running the proxy: apply the file, start the admin server, watch for changes, and on
//! SIGTERM/SIGINT drain connections within the drain timeout and exit.

use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::apply::apply_text;
use crate::state::Proxy;

/// How often idle upstream connections are swept.
const EVICT_EVERY: Duration = Duration::from_secs(5);

pub async fn run(
    config_path: &Path,
    admin_override: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read configuration {}", config_path.display()))?;
    let proxy = Arc::new(Proxy::new());
    let version = apply_text(&proxy, &text).context("configuration rejected")?;
    tracing::info!(%version, path = %config_path.display(), "configuration applied");

    let admin_addr = admin_override.unwrap_or(proxy.snapshot.load().admin);
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

    let _watcher = crate::watch::spawn(proxy.clone(), config_path.to_owned(), text)
        .context("cannot watch the configuration file")?;
    tokio::spawn(evict_idle(proxy.clone()));

    shutdown_signal().await;
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
