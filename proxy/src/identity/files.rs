//! Credentials from PEM files, watched: a `notify` watcher on the files' directories (secret
//! mounts replace files through symlinks) plus a slow poll. A changed set is built and
//! swapped in; a set that does not build (a key written before its certificate, a bad file)
//! is refused, counted and logged, and the last good credentials stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use remora_control_api::tls::{Identity, IdentitySource};
use tokio::sync::mpsc;

use super::{BuildError, Credentials, IdentityStore, Part};
use crate::state::Proxy;

/// How often the files are read even without a change event.
const POLL: Duration = Duration::from_secs(30);

/// The three files' contents as last read.
#[derive(PartialEq, Eq)]
pub struct Loaded {
    paths: [String; 3],
    cert: Vec<u8>,
    key: Vec<u8>,
    bundle: Vec<u8>,
}

fn paths(settings: &Identity) -> [String; 3] {
    match &settings.source {
        IdentitySource::Files {
            cert_file,
            key_file,
            bundle_file,
        } => [cert_file.clone(), key_file.clone(), bundle_file.clone()],
        IdentitySource::ControlPlane => Default::default(),
    }
}

const FIELDS: [&str; 3] = [
    "identity.files.certFile",
    "identity.files.keyFile",
    "identity.files.bundleFile",
];

impl Loaded {
    pub fn read(settings: &Identity) -> Result<Self, String> {
        let paths = paths(settings);
        let mut contents = Vec::with_capacity(3);
        for (path, field) in paths.iter().zip(FIELDS) {
            contents.push(crate::tls::read(path).map_err(|e| format!("{field}: {e}"))?);
        }
        let bundle = contents.pop().unwrap_or_default();
        let key = contents.pop().unwrap_or_default();
        let cert = contents.pop().unwrap_or_default();
        Ok(Self {
            paths,
            cert,
            key,
            bundle,
        })
    }

    pub fn build(&self, settings: &Identity) -> Result<Credentials, BuildError> {
        Credentials::build(&settings.trust_domain, &self.cert, &self.key, &self.bundle)
    }

    /// The error with its field and file.
    pub fn describe(&self, e: &BuildError) -> String {
        let i = match e.part {
            Part::Cert => 0,
            Part::Key => 1,
            Part::Bundle => 2,
        };
        format!("{}: {:?}: {}", FIELDS[i], self.paths[i], e.message)
    }
}

/// Starts the watcher and the reload task.
pub fn watch(
    store: Arc<IdentityStore>,
    settings: Identity,
    loaded: Loaded,
    proxy: Arc<Proxy>,
) -> notify::Result<(tokio::task::AbortHandle, notify::RecommendedWatcher)> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let names: Vec<_> = loaded
        .paths
        .iter()
        .filter_map(|p| Path::new(p).file_name().map(ToOwned::to_owned))
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // Our own reads are not changes.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => false,
            // Kubernetes secret volumes swap a `..data` symlink: any other name in the
            // directory may be the change.
            Ok(e) => {
                e.paths.iter().any(|p| {
                    p.file_name().is_some_and(|n| {
                        names.iter().any(|m| m == n) || n.to_string_lossy().starts_with("..")
                    })
                }) || e.paths.is_empty()
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.try_send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = loaded
        .paths
        .iter()
        .map(|p| {
            Path::new(p)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned()
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    let task = tokio::spawn(reload_loop(store, settings, loaded, proxy, rx)).abort_handle();
    Ok((task, watcher))
}

async fn reload_loop(
    store: Arc<IdentityStore>,
    settings: Identity,
    mut last: Loaded,
    proxy: Arc<Proxy>,
    mut rx: mpsc::Receiver<()>,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    // The last set refused, so a half-written set is reported once, not on every event.
    let mut refused: Option<Loaded> = None;
    loop {
        tokio::select! {
            r = rx.recv() => if r.is_none() { return },
            _ = poll.tick() => store.check_expiry(settings.expiry_warning),
        }
        let next = match Loaded::read(&settings) {
            Ok(n) => n,
            Err(e) => {
                // A file replaced by rename may be briefly missing; the next event retries.
                tracing::debug!(error = %e, "identity files not readable yet");
                continue;
            }
        };
        if next == last || refused.as_ref() == Some(&next) {
            continue;
        }
        match next.build(&settings) {
            Ok(c) => {
                store.install(Arc::new(c), &settings, "files", &proxy.metrics);
                last = next;
                refused = None;
            }
            Err(e) => {
                super::count(&proxy.metrics, "files", "error");
                tracing::warn!(error = %next.describe(&e), "new identity files refused; keeping the current certificate");
                refused = Some(next);
            }
        }
    }
}
