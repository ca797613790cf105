//! Hot reload of the configuration file: a `notify` watcher on the file's directory (editors
//! and Kubernetes ConfigMaps replace files rather than write them) plus SIGHUP. Each change is
//! read and applied; unchanged content is skipped, bad content is rejected and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::sources::Sources;

/// Starts watching `path`; the returned watcher must be kept alive.
pub fn spawn(
    sources: Arc<Sources>,
    path: PathBuf,
    applied: String,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let file_name = path.file_name().map(ToOwned::to_owned);
    let notify_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // Opening and reading the file (our own reload among them) is not a change:
            // reacting to it would re-read the file for ever.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => false,
            Ok(e) => {
                e.paths
                    .iter()
                    .any(|p| p.file_name() == file_name.as_deref())
                    || e.paths.is_empty()
            }
            Err(_) => true,
        };
        if relevant {
            // A full channel already holds a pending reload: coalesce.
            let _ = notify_tx.try_send(());
        }
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    // One look now: a change made between the first read and the watch is not lost (the
    // loop skips content equal to what is applied).
    let _ = tx.try_send(());
    tokio::spawn(sighup(tx));
    tokio::spawn(reload_loop(sources, path, applied, rx));
    Ok(watcher)
}

async fn sighup(tx: mpsc::Sender<()>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let _ = tx.try_send(());
    }
}

async fn reload_loop(
    sources: Arc<Sources>,
    path: PathBuf,
    mut last: String,
    mut rx: mpsc::Receiver<()>,
) {
    while rx.recv().await.is_some() {
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read configuration; keeping the running one");
                continue;
            }
        };
        if text == last {
            continue;
        }
        match sources.set_file_text(&text) {
            Ok(version) => tracing::info!(%version, "configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "configuration rejected; keeping the running one");
            }
        }
        last = text;
    }
}
