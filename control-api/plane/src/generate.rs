//! Per-proxy configuration: what one sidecar's proxy needs, derived from the model, and
//! never more. For sidecar S: an outbound listener, route table and the referenced clusters
//! per upstream, plus the inbound listener to the local app; versions are stable hashes.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use remora_control_api::proto::mesh::{Service, Sidecar, Upstream};
use remora_control_api::proto::route::Action;
use remora_control_api::proto::{
    Cluster, ClusterTls, ClusterTlsMode, Config, Direction, Endpoint, Forward, Identity, Listener,
    ListenerProtocol, ListenerTls, Route, RouteTable, TlsMode, VirtualHost, identity,
};

use crate::model::Model;

/// Endpoint sets by service name, as discovery last reported them.
pub type Resolved = BTreeMap<String, Vec<Endpoint>>;

pub const INBOUND_LISTENER: &str = "inbound";
pub const INBOUND_ROUTE_TABLE: &str = "inbound";
pub const INBOUND_CLUSTER: &str = "inbound-app";

/// The configuration one service's proxies should run, and its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Complete, with current endpoints; `version` is the config version.
    pub config: Config,
    /// Stable hash of the configuration without endpoints.
    pub config_version: String,
    /// Stable hash of the endpoint sets of the configuration's clusters.
    pub endpoints_version: String,
    /// Endpoints by cluster (the same as in `config`), for incremental updates.
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
}

/// Connected proxies per service.
pub type Connected = BTreeMap<String, usize>;

/// The configuration for the proxies of `service`: empty when it has no sidecar entry.
pub fn for_service(model: &Model, service: &str, resolved: &Resolved) -> ProxyConfig {
    for_service_with(model, service, resolved, &Connected::new())
}

/// [`for_service`], with each mesh-wide rate limit divided among the connected proxies that
/// enforce it.
pub fn for_service_with(
    model: &Model,
    service: &str,
    resolved: &Resolved,
    connected: &Connected,
) -> ProxyConfig {
    let config = match model.sidecars.get(service) {
        Some(entry) => sidecar_config(model, &entry.value, resolved, connected),
        None => Config::default(),
    };
    finish(config)
}

/// Whether any policy route has a mesh-wide rate limit (only then do proxy counts matter).
pub fn has_mesh_wide_limits(model: &Model) -> bool {
    model.policies.values().any(|p| {
        p.value
            .routes
            .iter()
            .any(|r| r.rate_limits.iter().any(|l| l.mesh_wide))
    })
}

/// The proxies that enforce `destination`'s policy: every connected proxy of a service whose
/// sidecar calls it (at least 1).
fn enforcers(model: &Model, destination: &str, connected: &Connected) -> u32 {
    let n: usize = model
        .sidecars
        .values()
        .filter(|s| s.value.upstreams.iter().any(|u| u.service == destination))
        .map(|s| connected.get(&s.value.service).copied().unwrap_or(0))
        .sum();
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// This proxy's share of a mesh-wide limit: `requests` and `burst` divided by `n`, rounded
/// up, at least 1.
fn share(limit: &mut remora_control_api::proto::RateLimit, n: u32) {
    let div = |v: u32| v.div_ceil(n).max(1);
    let burst = limit.burst.map_or(limit.requests, |b| b.value);
    limit.requests = div(limit.requests);
    limit.burst = Some(pbjson_types::UInt32Value { value: div(burst) });
}

/// The SPIFFE id of `service`'s sidecars under `mtls`.
pub fn service_identity(service: &Service, trust_domain: &str) -> String {
    if service.identity.is_empty() {
        format!("spiffe://{trust_domain}/ns/default/sa/{}", service.name)
    } else {
        service.identity.clone()
    }
}

fn sidecar_config(
    model: &Model,
    sidecar: &Sidecar,
    resolved: &Resolved,
    connected: &Connected,
) -> Config {
    let mut config = Config::default();
    let mut clusters: BTreeSet<String> = BTreeSet::new();
    let mtls = model.mtls.as_ref().map(|e| &e.value);
    if let Some(m) = mtls {
        config.identity = Some(Identity {
            trust_domain: m.trust_domain.clone(),
            source: Some(identity::Source::ControlPlane(true)),
            expiry_warning: None,
        });
    }
    if let Some(inbound) = &sidecar.inbound {
        let protocol = protocol_or(inbound.protocol, ListenerProtocol::Auto);
        let mut l = listener(
            INBOUND_LISTENER,
            &inbound.address,
            Direction::Inbound,
            protocol,
            INBOUND_ROUTE_TABLE,
            INBOUND_CLUSTER,
        );
        l.authorization.clone_from(&inbound.authorization);
        if let Some(m) = mtls {
            l.tls = Some(ListenerTls {
                mode: if m.mode == 0 {
                    TlsMode::Strict as i32
                } else {
                    m.mode
                },
                forward_peer_identity: inbound.forward_peer_identity,
                certificates: Vec::new(),
            });
        }
        config.listeners.push(l);
        if protocol != ListenerProtocol::Tcp {
            config.route_tables.push(route_table(
                INBOUND_ROUTE_TABLE,
                vec![forward_route(INBOUND_LISTENER, INBOUND_CLUSTER)],
            ));
        }
        config.clusters.push(Cluster {
            name: INBOUND_CLUSTER.to_owned(),
            endpoints: vec![Endpoint {
                address: inbound.app.clone(),
                weight: None,
                identity: String::new(),
            }],
            ..Cluster::default()
        });
    }
    for upstream in &sidecar.upstreams {
        outbound(model, upstream, &mut config, &mut clusters, connected);
    }
    for name in clusters {
        if let Some(entry) = model.services.get(&name) {
            let mut c = cluster(&entry.value, resolved);
            // Services whose sidecars accept inbound traffic are called over mTLS, holding
            // them to their identity.
            if let Some(m) = mtls
                && model
                    .sidecars
                    .get(&name)
                    .is_some_and(|s| s.value.inbound.is_some())
            {
                c.tls = Some(ClusterTls {
                    mode: ClusterTlsMode::Mesh as i32,
                    identity: service_identity(&entry.value, &m.trust_domain),
                    ..ClusterTls::default()
                });
            }
            config.clusters.push(c);
        }
    }
    config.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    config
}

fn outbound(
    model: &Model,
    u: &Upstream,
    config: &mut Config,
    clusters: &mut BTreeSet<String>,
    connected: &Connected,
) {
    let protocol = protocol_or(u.protocol, ListenerProtocol::Http);
    let name = &u.service;
    config.listeners.push(listener(
        &format!("outbound-{name}"),
        &u.address,
        Direction::Outbound,
        protocol,
        name,
        name,
    ));
    if protocol != ListenerProtocol::Http {
        clusters.insert(name.clone());
    }
    if protocol == ListenerProtocol::Tcp {
        return;
    }
    let mut routes = match model.policies.get(name) {
        Some(policy) => policy.value.routes.clone(),
        None => vec![forward_route("default", name)],
    };
    for limit in routes
        .iter_mut()
        .flat_map(|r| r.rate_limits.iter_mut())
        .filter(|l| l.mesh_wide)
    {
        share(limit, enforcers(model, name, connected));
    }
    for route in &routes {
        if let Some(Action::Forward(f)) = &route.action {
            clusters.extend(
                std::iter::once(&f.cluster)
                    .chain(f.weighted_clusters.iter().map(|w| &w.name))
                    .filter(|n| !n.is_empty())
                    .cloned(),
            );
        }
    }
    config.route_tables.push(route_table(name, routes));
}

fn protocol_or(value: i32, default: ListenerProtocol) -> ListenerProtocol {
    match ListenerProtocol::try_from(value) {
        Ok(ListenerProtocol::Unspecified) => default,
        Ok(p) => p,
        // Left as is: the proxy's validation names the bad value.
        Err(_) => ListenerProtocol::Unspecified,
    }
}

fn listener(
    name: &str,
    address: &str,
    direction: Direction,
    protocol: ListenerProtocol,
    route_table: &str,
    cluster: &str,
) -> Listener {
    let uses_routes = protocol != ListenerProtocol::Tcp;
    let uses_cluster = matches!(protocol, ListenerProtocol::Tcp | ListenerProtocol::Auto);
    Listener {
        name: name.to_owned(),
        address: address.to_owned(),
        direction: direction.into(),
        protocol: protocol.into(),
        route_table: if uses_routes {
            route_table.to_owned()
        } else {
            String::new()
        },
        cluster: if uses_cluster {
            cluster.to_owned()
        } else {
            String::new()
        },
        detect_timeout: None,
        idle_timeout: None,
        access_log: None,
        tls: None,
        authorization: None,
        connection_limits: None,
    }
}

fn route_table(name: &str, routes: Vec<Route>) -> RouteTable {
    RouteTable {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes,
        }],
    }
}

fn forward_route(name: &str, cluster: &str) -> Route {
    Route {
        name: name.to_owned(),
        action: Some(Action::Forward(Forward {
            cluster: cluster.to_owned(),
            weighted_clusters: Vec::new(),
        })),
        ..Route::default()
    }
}

fn cluster(service: &Service, resolved: &Resolved) -> Cluster {
    let mut endpoints = resolved.get(&service.name).cloned().unwrap_or_default();
    endpoints.sort_by(|a, b| a.address.cmp(&b.address));
    Cluster {
        name: service.name.clone(),
        endpoints,
        lb_policy: service.lb_policy,
        protocol: service.protocol,
        connect_timeout: service.connect_timeout,
        circuit_breakers: service.circuit_breakers,
        retry_budget: service.retry_budget,
        outlier_detection: service.outlier_detection,
        health_check: service.health_check.clone(),
        ..Cluster::default()
    }
}

/// Computes the versions and stamps the config version into the config.
fn finish(mut config: Config) -> ProxyConfig {
    let endpoints: BTreeMap<String, Vec<Endpoint>> = config
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.endpoints.clone()))
        .collect();
    let mut shape = config.clone();
    for c in &mut shape.clusters {
        c.endpoints.clear();
    }
    let config_version = stable_hash(&shape.encode_to_vec());
    let mut bytes = Vec::new();
    for (name, eps) in &endpoints {
        let set = Cluster {
            name: name.clone(),
            endpoints: eps.clone(),
            ..Cluster::default()
        };
        // Encoding into a Vec cannot fail (it grows as needed).
        let _ = set.encode_length_delimited(&mut bytes);
    }
    let endpoints_version = stable_hash(&bytes);
    config.version.clone_from(&config_version);
    ProxyConfig {
        config,
        config_version,
        endpoints_version,
        endpoints,
    }
}

/// FNV-1a (64 bit) as 16 hex digits: stable across processes, platforms and releases
/// (prost encodes fields in order and the config has no maps, so equal configs hash equal).
pub fn stable_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What changed in the endpoints of one cluster between two sets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    pub upserted: Vec<Endpoint>,
    pub removed: Vec<String>,
}

/// Per-cluster deltas from `old` to `new` (clusters without changes are left out).
pub fn endpoint_deltas(
    old: &BTreeMap<String, Vec<Endpoint>>,
    new: &BTreeMap<String, Vec<Endpoint>>,
) -> BTreeMap<String, Delta> {
    let mut out = BTreeMap::new();
    let empty = Vec::new();
    for (cluster, now) in new {
        let before = old.get(cluster).unwrap_or(&empty);
        let upserted: Vec<Endpoint> = now
            .iter()
            .filter(|e| !before.contains(e))
            .cloned()
            .collect();
        let removed: Vec<String> = before
            .iter()
            .filter(|b| !now.iter().any(|e| e.address == b.address))
            .map(|b| b.address.clone())
            .collect();
        if !upserted.is_empty() || !removed.is_empty() {
            out.insert(cluster.clone(), Delta { upserted, removed });
        }
    }
    out
}

#[cfg(test)]
mod tests;
