//! Resilience wiring for a cluster: circuit-breaker slots, outlier results and events,
//! retry and timeout counts (the state machines are in `remora_filters`), the periodic tick
//! that returns ejected endpoints and judges success rates, and the active health checkers
//! ([`health_check`]).

pub mod health_check;

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use remora_filters::breaker::{Limit, Slot};
use remora_filters::outlier::{Event, Observed};
use remora_filters::retry::{RetryReason, grpc_status};
use tokio::time::Instant;

use crate::http::body::ProxyBody;
use crate::http::error::ProxyError;
use crate::metrics::{Name, TimeoutLabels};
use crate::snapshot::ClusterTarget;
use crate::state::Proxy;
use crate::upstream::pool::ConnectError;

/// How often ejections are checked for expiry and success rates for their interval.
pub const TICK: Duration = Duration::from_millis(500);

impl ClusterTarget {
    /// A slot of the cluster's `maxRequests` or `maxRetries`; the overflow is counted.
    pub fn acquire(&self, limit: Limit) -> Result<Slot, ProxyError> {
        let b = &self.cluster.resilience.breakers;
        let (counter, max) = match limit {
            Limit::Requests => (&self.state.breakers.requests, b.max_requests),
            Limit::Retries => (&self.state.breakers.retries, b.max_retries),
            Limit::PendingRequests => (&self.state.breakers.pending, b.max_pending_requests),
            Limit::Connections => (&self.state.breakers.connections, b.max_connections),
        };
        counter.try_acquire(limit, max).map_err(|o| {
            self.overflowed(limit);
            ProxyError::Overflow(self.cluster.name.clone(), o)
        })
    }

    pub fn overflowed(&self, limit: Limit) {
        self.metrics.count(&self.metrics.overflows, limit.as_str());
    }

    pub fn retried(&self, reason: RetryReason) {
        self.metrics.count(&self.metrics.retries, reason.as_str());
    }

    pub fn retry_refused(&self, why: &'static str) {
        self.metrics.count(&self.metrics.retries_refused, why);
    }

    pub fn timed_out(&self, route: &Name, kind: &'static str) {
        self.metrics
            .timeouts
            .get_or_create(&TimeoutLabels {
                route: route.clone(),
                cluster: self.metrics.cluster.clone(),
                kind,
            })
            .inc();
    }

    /// A try to endpoint `idx` ran out of its per-try timeout.
    pub fn try_timed_out(&self, idx: usize, route: &Name) {
        self.timed_out(route, "per-try");
        self.record(idx, Observed::GatewayError);
    }

    /// Feeds a try's result to the endpoint's outlier detector.
    pub fn observe(&self, idx: usize, result: &Result<Response<ProxyBody>, ProxyError>) {
        let observed = match result {
            Ok(r) => match Observed::from_status(r.status().as_u16()) {
                Observed::Success
                    if grpc_status(r.headers())
                        == Some(remora_filters::retry::grpc::UNAVAILABLE) =>
                {
                    Observed::GatewayError
                }
                o => o,
            },
            Err(ProxyError::Connect(ConnectError::Overflow(..))) => return,
            Err(ProxyError::Connect(_) | ProxyError::UpstreamReset(_)) => Observed::GatewayError,
            Err(_) => return,
        };
        self.record(idx, observed);
    }

    /// A TCP relay's connect to endpoint `idx` succeeded or failed.
    pub fn record_connect(&self, idx: usize, ok: bool) {
        self.record(
            idx,
            if ok {
                Observed::Success
            } else {
                Observed::GatewayError
            },
        );
    }

    fn record(&self, idx: usize, observed: Observed) {
        let Some(cfg) = &self.cluster.resilience.outlier else {
            return;
        };
        let Some(endpoint) = self.endpoints.get(idx) else {
            return;
        };
        if let Some(event) = endpoint.outlier.record(
            &self.state.outliers,
            cfg,
            self.endpoints.len(),
            observed,
            Instant::now,
        ) {
            self.outlier_event(idx, event);
        }
    }

    fn outlier_event(&self, idx: usize, event: Event) {
        let address = self.endpoints.get(idx).map(|e| e.address);
        let cluster = &self.cluster.name;
        match event {
            Event::Ejected { reason, for_ } => {
                self.metrics.count(&self.metrics.ejections, reason.as_str());
                tracing::info!(%cluster, endpoint = ?address, reason = reason.as_str(), ejected_for = ?for_, "endpoint ejected");
            }
            Event::EjectionCapped { reason } => {
                self.metrics.count(&self.metrics.ejections, "capped");
                tracing::info!(%cluster, endpoint = ?address, reason = reason.as_str(), "endpoint not ejected: the cluster is at maxEjectionPercent");
            }
            Event::Returned => {
                tracing::info!(%cluster, endpoint = ?address, "ejected endpoint returns (on probation)");
            }
        }
        #[allow(clippy::cast_possible_wrap)]
        self.metrics
            .ejected
            .set(self.state.outliers.ejected() as i64);
    }

    /// One tick of outlier detection over the cluster's endpoints.
    fn tick(&self, now: Instant) {
        let Some(cfg) = &self.cluster.resilience.outlier else {
            return;
        };
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Some(event) =
                e.outlier
                    .tick(&self.state.outliers, cfg, self.endpoints.len(), now)
            {
                self.outlier_event(i, event);
            }
        }
    }
}

/// Runs outlier ticks for every cluster of the current snapshot.
pub async fn run(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = proxy.snapshot.load_full();
        let now = Instant::now();
        for c in snap.clusters.values() {
            c.tick(now);
        }
    }
}

/// After a swap: endpoints of clusters whose outlier detection was turned off go back into
/// service, and the ejected gauges are brought up to date.
pub fn after_apply(proxy: &Proxy) {
    let snap = proxy.snapshot.load_full();
    for c in snap.clusters.values() {
        if c.cluster.resilience.outlier.is_none() {
            for e in &c.endpoints {
                e.outlier.reset(&c.state.outliers);
            }
        }
        #[allow(clippy::cast_possible_wrap)]
        c.metrics.ejected.set(c.state.outliers.ejected() as i64);
    }
}
