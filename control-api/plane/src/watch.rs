//! Reloads the model when the mesh directory changes: a `notify` watcher on the directory
//! (editors and ConfigMaps replace files) plus SIGHUP. A bad change is logged and counted and
//! the last good model keeps serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::model::{OVERLAY_FILE, is_model_file};
use crate::state::Hub;

/// Changes closer together than this are read once.
const SETTLE: Duration = Duration::from_millis(100);

/// Starts watching the hub's directory; the returned watcher must be kept alive.
pub fn spawn(hub: Arc<Hub>) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let notify_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // Reading the files (our own reload among them) is not a change: reacting to
            // it would reload for ever.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => false,
            Ok(e) => e.paths.is_empty() || e.paths.iter().any(|p| relevant(p)),
            Err(_) => true,
        };
        if relevant {
            // A full channel already holds a pending reload.
            let _ = notify_tx.try_send(());
        }
    })?;
    watcher.watch(hub.dir(), RecursiveMode::NonRecursive)?;
    tokio::spawn(sighup(tx));
    tokio::spawn(reload_loop(hub, rx));
    Ok(watcher)
}

fn relevant(p: &Path) -> bool {
    is_model_file(p) || p.file_name().is_some_and(|n| n == OVERLAY_FILE)
}

async fn sighup(tx: mpsc::Sender<()>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let _ = tx.try_send(());
    }
}

async fn reload_loop(hub: Arc<Hub>, mut rx: mpsc::Receiver<()>) {
    while rx.recv().await.is_some() {
        tokio::time::sleep(SETTLE).await;
        while rx.try_recv().is_ok() {}
        let h = Arc::clone(&hub);
        match tokio::task::spawn_blocking(move || h.reload_files()).await {
            Ok(Ok(report)) if report.is_empty() => {
                tracing::debug!("mesh directory changed; nothing to update");
            }
            Ok(Ok(report)) => tracing::info!(
                added = report.added.len(),
                changed = report.changed.len(),
                removed = report.removed.len(),
                pushes = report.pushes.len(),
                "mesh model reloaded"
            ),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "mesh model rejected; keeping the last good one");
            }
            Err(e) => tracing::error!(error = %e, "mesh reload task failed"),
        }
    }
}
