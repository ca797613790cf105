//! Upstream state that outlives configuration swaps: per-endpoint load statistics and
//! connection pools, kept in a registry keyed by (cluster, address).

pub mod h1;
pub mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use remora_filters::balance::{EndpointLoad, HasLoad};

use crate::metrics::{ClusterLabels, ConnectErrorLabels, Metrics, Name};
use pool::Pool;

/// One upstream endpoint: its load (for the balancer) and its connections.
#[derive(Debug)]
pub struct EndpointState {
    pub address: SocketAddr,
    pub load: EndpointLoad,
    pub pool: Arc<Pool>,
}

impl HasLoad for EndpointState {
    fn load(&self) -> &EndpointLoad {
        &self.load
    }
}

/// A cluster's upstream connection metrics, resolved once per snapshot.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    cluster: Name,
    opened: Counter,
    active: Gauge,
    errors: prometheus_client::metrics::family::Family<ConnectErrorLabels, Counter>,
}

/// Decrements the active-connection gauge when the connection task ends.
#[derive(Debug)]
pub struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl UpstreamMetrics {
    pub fn new(metrics: &Metrics, cluster: &Arc<str>) -> Self {
        let labels = ClusterLabels {
            cluster: cluster.into(),
        };
        Self {
            cluster: cluster.into(),
            opened: metrics.upstream_connections.get_or_create(&labels).clone(),
            active: metrics.upstream_active.get_or_create(&labels).clone(),
            errors: metrics.upstream_connect_errors.clone(),
        }
    }

    pub fn opened(&self) -> ActiveGuard {
        self.opened.inc();
        self.active.inc();
        ActiveGuard(self.active.clone())
    }

    pub fn connect_error(&self, reason: &'static str) {
        self.errors
            .get_or_create(&ConnectErrorLabels {
                cluster: self.cluster.clone(),
                reason,
            })
            .inc();
    }
}

type Key = (Arc<str>, SocketAddr);

/// Endpoint states by (cluster, address). Touched only when a configuration is applied, so
/// a route change keeps every pool and latency estimate of unchanged clusters.
#[derive(Debug, Default)]
pub struct Registry {
    endpoints: Mutex<HashMap<Key, Arc<EndpointState>>>,
}

/// The endpoint set a new snapshot will use; committed only if the snapshot is applied.
#[derive(Debug, Default)]
pub struct Staged {
    endpoints: HashMap<Key, Arc<EndpointState>>,
}

impl Registry {
    /// The state for an endpoint in the staged set: reused if it exists, else new.
    pub fn stage(
        &self,
        staged: &mut Staged,
        cluster: &Arc<str>,
        address: SocketAddr,
    ) -> Arc<EndpointState> {
        let key = (cluster.clone(), address);
        if let Some(s) = staged.endpoints.get(&key) {
            return s.clone();
        }
        let existing = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let state = existing.unwrap_or_else(|| {
            Arc::new(EndpointState {
                address,
                load: EndpointLoad::default(),
                pool: Arc::new(Pool::new(address)),
            })
        });
        staged.endpoints.insert(key, state.clone());
        state
    }

    /// Makes the staged set current; endpoints not in it are dropped (their pools close once
    /// in-flight requests finish).
    pub fn commit(&self, staged: Staged) {
        *self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = staged.endpoints;
    }

    pub fn evict_idle(
        &self,
        now: Instant,
        idle_timeout_of: impl Fn(&str) -> Option<std::time::Duration>,
    ) {
        let endpoints: Vec<(Key, Arc<EndpointState>)> = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((cluster, _), state) in endpoints {
            if let Some(t) = idle_timeout_of(&cluster) {
                state.pool.evict_idle(now, t);
            }
        }
    }
}
