//! The proxies the control plane knows: who connected, from where, which versions they
//! acknowledged and which they should run, and their last NACK. What `get proxies` shows.
//!
//! A disconnected proxy's record is kept for [`KEEP_DISCONNECTED`] (so an operator sees it
//! went away), then dropped. Records are keyed by node id; a reconnect replaces the record,
//! and the old stream's late disconnect does not touch the new one.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

pub const KEEP_DISCONNECTED: Duration = Duration::from_secs(600);

/// The last update a proxy refused.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NackRecord {
    pub r#type: &'static str,
    pub version: String,
    pub error: String,
    /// Unix time, seconds.
    pub at: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRecord {
    pub node: String,
    pub service: String,
    pub connected: bool,
    pub peer: String,
    pub proxy_version: String,
    pub connected_at: f64,
    pub disconnected_at: Option<f64>,
    pub acked_config_version: String,
    pub acked_endpoints_version: String,
    pub wanted_config_version: String,
    pub wanted_endpoints_version: String,
    pub in_sync: bool,
    pub last_nack: Option<NackRecord>,
    /// The mesh generation this proxy's stream last looked at.
    pub generation: u64,
    #[serde(skip)]
    stream: u64,
    #[serde(skip)]
    gone_since: Option<Instant>,
}

impl ProxyRecord {
    fn refresh_sync(&mut self) {
        self.in_sync = self.connected
            && self.acked_config_version == self.wanted_config_version
            && self.acked_endpoints_version == self.wanted_endpoints_version;
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_stream: u64,
    proxies: BTreeMap<String, ProxyRecord>,
}

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// Notified whenever a proxy connects or disconnects (mesh-wide limits re-balance).
    pub changed: tokio::sync::Notify,
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new stream; returns its id.
    pub fn connect(&self, node: &str, service: &str, proxy_version: &str, peer: String) -> u64 {
        let mut inner = self.lock();
        prune(&mut inner);
        inner.next_stream += 1;
        let stream = inner.next_stream;
        inner.proxies.insert(
            node.to_owned(),
            ProxyRecord {
                node: node.to_owned(),
                service: service.to_owned(),
                connected: true,
                peer,
                proxy_version: proxy_version.to_owned(),
                connected_at: unix_now(),
                disconnected_at: None,
                acked_config_version: String::new(),
                acked_endpoints_version: String::new(),
                wanted_config_version: String::new(),
                wanted_endpoints_version: String::new(),
                in_sync: false,
                last_nack: None,
                generation: 0,
                stream,
                gone_since: None,
            },
        );
        drop(inner);
        self.changed.notify_one();
        stream
    }

    /// Changes the record of `node` if `stream` is still its current stream.
    pub fn update(&self, node: &str, stream: u64, f: impl FnOnce(&mut ProxyRecord)) {
        let mut inner = self.lock();
        if let Some(r) = inner.proxies.get_mut(node).filter(|r| r.stream == stream) {
            f(r);
            r.refresh_sync();
        }
    }

    pub fn disconnect(&self, node: &str, stream: u64) {
        self.update(node, stream, |r| {
            r.connected = false;
            r.disconnected_at = Some(unix_now());
            r.gone_since = Some(Instant::now());
        });
        self.changed.notify_one();
    }

    /// Connected proxies per service.
    pub fn connected_by_service(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for r in self.lock().proxies.values().filter(|r| r.connected) {
            *out.entry(r.service.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Every known proxy, by node id.
    pub fn list(&self) -> Vec<ProxyRecord> {
        let mut inner = self.lock();
        prune(&mut inner);
        inner.proxies.values().cloned().collect()
    }

    pub fn get(&self, node: &str) -> Option<ProxyRecord> {
        self.lock().proxies.get(node).cloned()
    }

    /// Node ids of the connected proxies of `service`.
    pub fn connected_nodes(&self, service: &str) -> Vec<String> {
        self.lock()
            .proxies
            .values()
            .filter(|r| r.connected && r.service == service)
            .map(|r| r.node.clone())
            .collect()
    }
}

fn prune(inner: &mut Inner) {
    inner
        .proxies
        .retain(|_, r| r.gone_since.is_none_or(|t| t.elapsed() < KEEP_DISCONNECTED));
}
