//! Listener reconciliation. Applying a configuration is two-phase: `prepare` binds every new
//! address (failing the whole update if one cannot be bound, with nothing changed), and after
//! the snapshot swap `commit` starts the new accept loops and drains the removed listeners.
//! A listener kept under the same name and address keeps its socket; an address moving to a
//! new name is handed over without re-binding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::snapshot::Snapshot;
use crate::state::Proxy;

#[derive(Debug)]
struct Active {
    configured: SocketAddr,
    socket: Arc<TcpListener>,
    /// Stops the accept loop (closes the listening socket once dropped).
    stop: CancellationToken,
    /// Asks this listener's connections to finish gracefully.
    drain: CancellationToken,
}

#[derive(Debug, Default)]
pub struct ListenerManager {
    active: HashMap<Arc<str>, Active>,
}

/// New sockets for a snapshot, not yet serving.
#[derive(Debug)]
pub struct Plan {
    start: Vec<(Arc<str>, SocketAddr, Arc<TcpListener>)>,
    remove: Vec<Arc<str>>,
}

#[derive(Debug, thiserror::Error)]
#[error("listener {name:?}: cannot bind {address}: {error}")]
pub struct BindError {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub error: std::io::Error,
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

impl ListenerManager {
    /// Binds what `next` needs that is not already bound. Changes nothing running.
    pub fn prepare(&self, next: &Snapshot) -> Result<Plan, BindError> {
        let mut start = Vec::new();
        for (name, target) in &next.listeners {
            let address = target.listener.address;
            if self
                .active
                .get(name)
                .is_some_and(|a| a.configured == address)
            {
                continue;
            }
            // An address leaving another listener (removed or moved) is handed over.
            let handover = self.active.iter().find(|(other, a)| {
                a.configured == address
                    && address.port() != 0
                    && next
                        .listeners
                        .get(*other)
                        .is_none_or(|t| t.listener.address != address)
            });
            let socket = match handover {
                Some((_, a)) => a.socket.clone(),
                None => Arc::new(bind(address).map_err(|error| BindError {
                    name: name.clone(),
                    address,
                    error,
                })?),
            };
            start.push((name.clone(), address, socket));
        }
        let remove = self
            .active
            .iter()
            .filter(|(name, a)| {
                next.listeners
                    .get(*name)
                    .is_none_or(|t| t.listener.address != a.configured)
            })
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Plan { start, remove })
    }

    /// Runs a prepared plan: drains removed listeners, starts new ones.
    pub fn commit(&mut self, plan: Plan, proxy: &Arc<Proxy>) {
        for name in plan.remove {
            if let Some(a) = self.active.remove(&name) {
                tracing::info!(listener = %name, address = %a.configured, "listener removed; draining");
                a.stop.cancel();
                a.drain.cancel();
            }
        }
        for (name, configured, socket) in plan.start {
            let stop = CancellationToken::new();
            let drain = CancellationToken::new();
            let bound = socket.local_addr().unwrap_or(configured);
            tracing::info!(listener = %name, address = %bound, "listening");
            tokio::spawn(accept_loop(
                proxy.clone(),
                name.clone(),
                socket.clone(),
                stop.clone(),
                drain.clone(),
            ));
            self.active.insert(
                name,
                Active {
                    configured,
                    socket,
                    stop,
                    drain,
                },
            );
        }
    }

    /// Bound addresses by listener name (for `/listeners`; resolves port 0).
    pub fn bound(&self) -> Vec<(Arc<str>, SocketAddr)> {
        let mut v: Vec<_> = self
            .active
            .iter()
            .map(|(n, a)| (n.clone(), a.socket.local_addr().unwrap_or(a.configured)))
            .collect();
        v.sort();
        v
    }

    /// Stops accepting everywhere and asks every connection to finish (shutdown).
    pub fn drain_all(&mut self) {
        for (_, a) in self.active.drain() {
            a.stop.cancel();
            a.drain.cancel();
        }
    }
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    name: Arc<str>,
    socket: Arc<TcpListener>,
    stop: CancellationToken,
    drain: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = socket.accept() => match accepted {
                Ok((stream, client)) => {
                    let (proxy, name, drain) = (proxy.clone(), name.clone(), drain.clone());
                    // Tracked from the accept on, so shutdown waits for it even before a
                    // worker picks it up.
                    let token = proxy.tracker.token();
                    crate::workers::spawn_connection(stream, move |stream| async move {
                        let _token = token;
                        crate::connection::serve(proxy, name, stream, client, drain).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
