//! The runtime snapshot: a validated configuration compiled into what requests read (routers,
//! balancers, endpoint states), published with one `ArcSwap::store` and loaded once per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use remora_control_api::cluster::{Cluster, HashKey, LbPolicy};
use remora_control_api::listener::Listener;
use remora_control_api::{Config, proto};
use remora_filters::balance::Balancer;
use remora_filters::latency::LatencyEstimate;
use remora_filters::router::Router;

use crate::metrics::{Metrics, Name};
use crate::tls::client::UpstreamTls;
use crate::upstream::{ClusterState, EndpointState, Registry, Staged, UpstreamMetrics};

#[derive(Debug)]
pub struct Snapshot {
    pub version: String,
    pub loaded_at: SystemTime,
    /// What was applied, for `/config`.
    pub source: proto::Config,
    pub admin: SocketAddr,
    pub drain_timeout: Duration,
    pub listeners: HashMap<Arc<str>, Arc<ListenerTarget>>,
    pub clusters: HashMap<Arc<str>, Arc<ClusterTarget>>,
    /// Latency estimates of routes that hedge after their observed p95, by the route's
    /// address in its router (stable while the snapshot lives).
    pub route_latency: HashMap<usize, Arc<LatencyEstimate>>,
    /// Rate limiters and faults of the routes that have them, by route address.
    pub route_policy: HashMap<usize, Arc<crate::http::limit::RoutePolicy>>,
    /// Set by [`crate::apply`] when the configuration has `tracing`.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
    /// Listeners with an access log, set by [`crate::apply`].
    pub access_logs: HashMap<Arc<str>, crate::access_log::ListenerLog>,
    /// `admin.tap`.
    pub tap_enabled: bool,
    /// Listeners with mutual TLS, loaded by [`crate::apply`].
    pub tls: HashMap<Arc<str>, Arc<crate::tls::server::TlsServer>>,
}

#[derive(Debug)]
pub struct ListenerTarget {
    pub listener: Listener,
    pub label: Name,
    pub router: Option<Arc<Router>>,
    pub cluster: Option<Arc<ClusterTarget>>,
    pub conn_limits: Option<Arc<crate::conn_limit::ConnLimiter>>,
}

#[derive(Debug)]
pub struct ClusterTarget {
    pub cluster: Cluster,
    pub label: Name,
    pub endpoints: Vec<Arc<EndpointState>>,
    pub balancer: Balancer,
    pub hash_key: Option<HashKey>,
    pub metrics: UpstreamMetrics,
    /// Retry budget, breaker counters and ejection count (kept across swaps).
    pub state: Arc<ClusterState>,
    /// TLS to the endpoints (None: plaintext).
    pub tls: Option<UpstreamTls>,
}

impl Snapshot {
    /// The snapshot before any configuration: no listeners, nothing to route.
    pub fn empty() -> Self {
        Self {
            version: String::new(),
            loaded_at: SystemTime::now(),
            source: proto::Config::default(),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            drain_timeout: remora_control_api::config::DEFAULT_DRAIN_TIMEOUT,
            listeners: HashMap::new(),
            clusters: HashMap::new(),
            route_latency: HashMap::new(),
            route_policy: HashMap::new(),
            tracer: None,
            access_logs: HashMap::new(),
            tap_enabled: false,
            tls: HashMap::new(),
        }
    }

    /// Compiles a validated configuration. Endpoint states come from (and are staged in) the
    /// registry so unchanged endpoints keep their pools and estimates.
    pub fn compile(
        config: Config,
        source: proto::Config,
        version: String,
        registry: &Registry,
        metrics: &Metrics,
        upstream_tls: &HashMap<Arc<str>, UpstreamTls>,
    ) -> (Self, Staged) {
        let mut staged = Staged::default();
        let mut clusters = HashMap::with_capacity(config.clusters.len());
        for c in config.clusters {
            let endpoints = c
                .endpoints
                .iter()
                .map(|e| {
                    let transport = c.tls.as_ref().map_or(0, |t| {
                        remora_filters::hash::hash64(format!("{t:?}|{:?}", e.identity).as_bytes())
                    });
                    registry.stage(
                        &mut staged,
                        &c.name,
                        e.address,
                        transport,
                        e.identity.clone(),
                    )
                })
                .collect();
            let hash_key = match &c.lb {
                LbPolicy::RingHash { key, .. } => Some(key.clone()),
                _ => None,
            };
            let target = ClusterTarget {
                state: registry.stage_cluster(&mut staged, &c.name),
                label: (&c.name).into(),
                balancer: Balancer::new(&c.lb, &c.endpoints),
                metrics: UpstreamMetrics::new(metrics, &c.name),
                endpoints,
                hash_key,
                tls: upstream_tls.get(&c.name).cloned(),
                cluster: c,
            };
            clusters.insert(target.cluster.name.clone(), Arc::new(target));
        }
        let routers: HashMap<Arc<str>, Arc<Router>> = config
            .route_tables
            .into_iter()
            .map(|t| (t.name.clone(), Arc::new(Router::new(t))))
            .collect();
        let mut route_latency = HashMap::new();
        let mut route_policy = HashMap::new();
        for router in routers.values() {
            for vhost in &router.table().virtual_hosts {
                for route in &vhost.routes {
                    if !route.rate_limits.is_empty() || route.fault.is_some() {
                        let label = Name(route.name.clone());
                        let limiters: Vec<_> = route
                            .rate_limits
                            .iter()
                            .map(|l| {
                                let key = format!(
                                    "{}/{}/{}/{}",
                                    router.name(),
                                    vhost.name,
                                    route.name,
                                    l.name
                                );
                                registry.stage_limit(&mut staged, key, l, &label, metrics)
                            })
                            .collect();
                        route_policy.insert(
                            Arc::as_ptr(route) as usize,
                            Arc::new(crate::http::limit::RoutePolicy {
                                limiters: limiters.into(),
                                fault: route.fault.as_ref().map(|f| {
                                    crate::http::limit::FaultLayer::new(f, &label, metrics)
                                }),
                            }),
                        );
                    }
                    if route.hedge.is_some_and(|h| h.delay.is_none()) {
                        let key = format!("{}/{}/{}", router.name(), vhost.name, route.name);
                        route_latency.insert(
                            Arc::as_ptr(route) as usize,
                            registry.stage_route(&mut staged, key),
                        );
                    }
                }
            }
        }
        let listeners = config
            .listeners
            .into_iter()
            .map(|l| {
                let target = ListenerTarget {
                    conn_limits: l
                        .connection_limits
                        .map(|c| registry.stage_conn_limits(&mut staged, &l.name, c)),
                    label: (&l.name).into(),
                    router: l.route_table.as_ref().and_then(|t| routers.get(t).cloned()),
                    cluster: l.cluster.as_ref().and_then(|c| clusters.get(c).cloned()),
                    listener: l,
                };
                (target.listener.name.clone(), Arc::new(target))
            })
            .collect();
        let snapshot = Self {
            version,
            loaded_at: SystemTime::now(),
            source,
            admin: config.admin,
            drain_timeout: config.drain_timeout,
            listeners,
            clusters,
            route_latency,
            route_policy,
            tracer: None,
            access_logs: HashMap::new(),
            tap_enabled: config.tap,
            tls: HashMap::new(),
        };
        (snapshot, staged)
    }
}
