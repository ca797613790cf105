//! Upstream state that outlives configuration swaps: per-endpoint load statistics,
//! outlier and health state and connection pools, keyed by (cluster, address); per-cluster
//! retry budget, circuit-breaker counters and ejection count, keyed by cluster.

pub mod h1;
pub mod io;
pub mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use remora_filters::balance::{EndpointLoad, HasLoad};
use remora_filters::breaker::{Breakers, Slot};
use remora_filters::budget::Budget;
use remora_filters::health::EndpointHealth;
use remora_filters::latency::LatencyEstimate;
use remora_filters::outlier::{ClusterOutliers, EndpointOutlier};

use prometheus_client::metrics::family::Family;

use crate::metrics::{ClusterLabels, ClusterReasonLabels, Metrics, Name, TimeoutLabels};
use pool::Pool;

/// One upstream endpoint: its load (for the balancer) and its connections.
#[derive(Debug)]
pub struct EndpointState {
    pub address: SocketAddr,
    pub load: EndpointLoad,
    pub outlier: EndpointOutlier,
    pub health: EndpointHealth,
    pub pool: Arc<Pool>,
}

impl HasLoad for EndpointState {
    fn load(&self) -> &EndpointLoad {
        &self.load
    }

    fn available(&self) -> bool {
        !self.outlier.is_ejected() && self.health.is_healthy()
    }
}

/// A cluster's resilience state: kept while the cluster exists, whatever its settings do.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub budget: Budget,
    pub breakers: Breakers,
    pub outliers: ClusterOutliers,
}

/// A cluster's upstream connection metrics, resolved once per snapshot.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub cluster: Name,
    opened: Counter,
    closed: Counter,
    active: Gauge,
    errors: Family<ClusterReasonLabels, Counter>,
    pub retries: Family<ClusterReasonLabels, Counter>,
    pub retries_refused: Family<ClusterReasonLabels, Counter>,
    pub overflows: Family<ClusterReasonLabels, Counter>,
    pub ejections: Family<ClusterReasonLabels, Counter>,
    pub health_checks: Family<ClusterReasonLabels, Counter>,
    pub timeouts: Family<TimeoutLabels, Counter>,
    tls_handshakes: Family<ClusterReasonLabels, Counter>,
    pub ejected: Gauge,
    pub unhealthy: Gauge,
}

/// Decrements the active-connection gauge, and gives back the connection's slot of
/// `maxConnections`, when the connection ends.
#[derive(Debug)]
pub struct ActiveGuard(Gauge, Counter, #[allow(dead_code)] Slot);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
        self.1.inc();
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
            closed: metrics.upstream_closed.get_or_create(&labels).clone(),
            active: metrics.upstream_active.get_or_create(&labels).clone(),
            errors: metrics.upstream_connect_errors.clone(),
            retries: metrics.retries.clone(),
            retries_refused: metrics.retries_refused.clone(),
            overflows: metrics.overflows.clone(),
            ejections: metrics.ejections.clone(),
            health_checks: metrics.health_checks.clone(),
            timeouts: metrics.timeouts.clone(),
            tls_handshakes: metrics.upstream_tls_handshakes.clone(),
            ejected: metrics.endpoints_ejected.get_or_create(&labels).clone(),
            unhealthy: metrics.endpoints_unhealthy.get_or_create(&labels).clone(),
        }
    }

    /// Counts one event of `family` for this cluster.
    pub fn count(&self, family: &Family<ClusterReasonLabels, Counter>, reason: &'static str) {
        family
            .get_or_create(&ClusterReasonLabels {
                cluster: self.cluster.clone(),
                reason,
            })
            .inc();
    }

    /// `remora_upstream_tls_handshakes_total`.
    pub fn tls_handshakes(&self) -> &Family<ClusterReasonLabels, Counter> {
        &self.tls_handshakes
    }

    pub fn opened(&self, slot: Slot) -> ActiveGuard {
        self.opened.inc();
        self.active.inc();
        ActiveGuard(self.active.clone(), self.closed.clone(), slot)
    }

    pub fn connect_error(&self, reason: &'static str) {
        self.errors
            .get_or_create(&ClusterReasonLabels {
                cluster: self.cluster.clone(),
                reason,
            })
            .inc();
    }
}

/// (cluster, address, transport): the transport is 0 for plaintext, else a hash of the
/// cluster's TLS settings and the endpoint's expected identity, so that a TLS change never
/// reuses a connection made under the old settings.
type Key = (Arc<str>, SocketAddr, u64);

/// Endpoint states by (cluster, address, transport). Touched only when a configuration is applied, so
/// a route change keeps every pool and latency estimate of unchanged clusters.
#[derive(Debug, Default)]
pub struct Registry {
    endpoints: Mutex<HashMap<Key, Arc<EndpointState>>>,
    clusters: Mutex<HashMap<Arc<str>, Arc<ClusterState>>>,
    routes: Mutex<HashMap<String, Arc<LatencyEstimate>>>,
    limits: Mutex<HashMap<String, Arc<crate::http::limit::Limiter>>>,
    conn_limits: Mutex<HashMap<Arc<str>, Arc<crate::conn_limit::ConnLimiter>>>,
}

/// The endpoint set a new snapshot will use; committed only if the snapshot is applied.
#[derive(Debug, Default)]
pub struct Staged {
    endpoints: HashMap<Key, Arc<EndpointState>>,
    clusters: HashMap<Arc<str>, Arc<ClusterState>>,
    routes: HashMap<String, Arc<LatencyEstimate>>,
    limits: HashMap<String, Arc<crate::http::limit::Limiter>>,
    conn_limits: HashMap<Arc<str>, Arc<crate::conn_limit::ConnLimiter>>,
}

impl Registry {
    /// The state for an endpoint in the staged set: reused if it exists, else new.
    pub fn stage(
        &self,
        staged: &mut Staged,
        cluster: &Arc<str>,
        address: SocketAddr,
        transport: u64,
        identity: Option<Arc<str>>,
    ) -> Arc<EndpointState> {
        let key = (cluster.clone(), address, transport);
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
                outlier: EndpointOutlier::default(),
                health: EndpointHealth::default(),
                pool: Arc::new(Pool::new(address, identity)),
            })
        });
        staged.endpoints.insert(key, state.clone());
        state
    }

    /// The cluster's resilience state in the staged set: reused if it exists, else new.
    pub fn stage_cluster(&self, staged: &mut Staged, cluster: &Arc<str>) -> Arc<ClusterState> {
        if let Some(s) = staged.clusters.get(cluster) {
            return s.clone();
        }
        let existing = self
            .clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(cluster)
            .cloned();
        let state = existing.unwrap_or_default();
        staged.clusters.insert(cluster.clone(), state.clone());
        state
    }

    /// The latency estimate of a hedging route ("table/vhost/route"), reused if it exists.
    pub fn stage_route(&self, staged: &mut Staged, key: String) -> Arc<LatencyEstimate> {
        let existing = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        staged
            .routes
            .entry(key)
            .or_insert_with(|| existing.unwrap_or_default())
            .clone()
    }

    /// A route's rate limiter ("table/vhost/route/limit"): the running one while its
    /// settings are unchanged (its buckets keep their levels), else a new one that keeps the
    /// buckets when only the numbers changed.
    pub fn stage_limit(
        &self,
        staged: &mut Staged,
        key: String,
        settings: &remora_control_api::limits::RateLimit,
        route: &crate::metrics::Name,
        metrics: &Metrics,
    ) -> Arc<crate::http::limit::Limiter> {
        let existing = self
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let limiter = match existing {
            Some(l) if l.settings == *settings => l,
            previous => Arc::new(crate::http::limit::Limiter::new(
                settings,
                previous.as_deref(),
                route,
                metrics,
            )),
        };
        staged.limits.insert(key, limiter.clone());
        limiter
    }

    /// A listener's connection limiter: the running one while its settings are unchanged.
    pub fn stage_conn_limits(
        &self,
        staged: &mut Staged,
        listener: &Arc<str>,
        settings: remora_control_api::limits::ConnectionLimits,
    ) -> Arc<crate::conn_limit::ConnLimiter> {
        let existing = self
            .conn_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(listener)
            .cloned()
            .filter(|l| l.settings == settings);
        let limiter =
            existing.unwrap_or_else(|| Arc::new(crate::conn_limit::ConnLimiter::new(settings)));
        staged.conn_limits.insert(listener.clone(), limiter.clone());
        limiter
    }

    /// Makes the staged set current; endpoints not in it are dropped (their pools close once
    /// in-flight requests finish), and an ejected one gives its cluster's ejection slot back.
    pub fn commit(&self, staged: Staged) {
        let old = std::mem::replace(
            &mut *self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            staged.endpoints.clone(),
        );
        for ((cluster, _, _), state) in old
            .into_iter()
            .filter(|(k, _)| !staged.endpoints.contains_key(k))
        {
            if let Some(c) = staged.clusters.get(&cluster) {
                state.outlier.reset(&c.outliers);
            }
        }
        *self.clusters.lock().unwrap_or_else(PoisonError::into_inner) = staged.clusters;
        *self.routes.lock().unwrap_or_else(PoisonError::into_inner) = staged.routes;
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = staged.limits;
        *self
            .conn_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = staged.conn_limits;
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
        for ((cluster, _, _), state) in endpoints {
            if let Some(t) = idle_timeout_of(&cluster) {
                state.pool.evict_idle(now, t);
            }
        }
    }
}
