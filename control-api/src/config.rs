//! The whole configuration of one proxy: top-level validation and cross-references.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::{self, Cluster};
use crate::error::{Errors, InvalidConfig, ValidationError};
use crate::listener::{self, Listener};
use crate::proto;
use crate::route::{self, RouteTable};
use crate::util;

pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated configuration: every reference resolves, every value is in range.
#[derive(Debug, Clone)]
pub struct Config {
    pub version: String,
    pub admin: SocketAddr,
    pub drain_timeout: Duration,
    pub listeners: Vec<Listener>,
    pub route_tables: Vec<RouteTable>,
    pub clusters: Vec<Cluster>,
    pub tracing: Option<Tracing>,
    /// `admin.tap`: serve `/tap`.
    pub tap: bool,
    pub identity: Option<crate::tls::Identity>,
}

pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;
pub const DEFAULT_TRACE_QUEUE: u32 = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    pub collector: String,
    pub sample_ratio: f64,
    /// Empty: the proxy's `--service`.
    pub service_name: String,
    pub max_queue: usize,
    pub force_sample_header: bool,
    pub protocol: TracingProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracingProtocol {
    Grpc,
    HttpProtobuf,
}

fn tracing(t: &proto::Tracing, errs: &mut Errors<'_>) -> Option<Tracing> {
    let before = errs.count();
    match t.collector.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
        _ => errs.push(
            "tracing.collector",
            format!(
                "invalid collector {:?}: use the OTLP/gRPC URL, e.g. \"http://127.0.0.1:4317\"",
                t.collector
            ),
        ),
    }
    let ratio = t.sample_ratio.map_or(DEFAULT_SAMPLE_RATIO, |v| v.value);
    if !(ratio.is_finite() && (0.0..=1.0).contains(&ratio)) {
        errs.push("tracing.sampleRatio", "must be between 0 and 1");
    }
    let queue = t.max_queue.map_or(DEFAULT_TRACE_QUEUE, |v| v.value);
    if !(1..=1_000_000).contains(&queue) {
        errs.push("tracing.maxQueue", "must be between 1 and 1000000");
    }
    let protocol = match proto::TracingProtocol::try_from(t.protocol) {
        Ok(proto::TracingProtocol::Unspecified | proto::TracingProtocol::Grpc) => {
            TracingProtocol::Grpc
        }
        Ok(proto::TracingProtocol::HttpProtobuf) => TracingProtocol::HttpProtobuf,
        Err(_) => {
            errs.push(
                "tracing.protocol",
                format!("unknown value {} (use GRPC or HTTP_PROTOBUF)", t.protocol),
            );
            TracingProtocol::Grpc
        }
    };
    if errs.count() > before {
        return None;
    }
    Some(Tracing {
        protocol,
        collector: t.collector.clone(),
        sample_ratio: ratio,
        service_name: t.service_name.clone(),
        max_queue: queue as usize,
        force_sample_header: t.force_sample_header,
    })
}

/// Validates a proto configuration, returning every problem found.
pub fn validate(c: &proto::Config) -> Result<Config, InvalidConfig> {
    let mut sink: Vec<ValidationError> = Vec::new();
    let mut top = Errors::new("config".into(), &mut sink);
    let admin_addr = c.admin.as_ref().map_or(DEFAULT_ADMIN_ADDRESS, |a| {
        if a.address.is_empty() {
            DEFAULT_ADMIN_ADDRESS
        } else {
            a.address.as_str()
        }
    });
    let admin = top.check("admin.address", util::socket_addr(admin_addr));
    let drain_timeout = top.check(
        "drainTimeout",
        util::duration(c.drain_timeout.as_ref(), DEFAULT_DRAIN_TIMEOUT),
    );
    let tracing = c.tracing.as_ref().and_then(|t| tracing(t, &mut top));
    let identity = c
        .identity
        .as_ref()
        .and_then(|i| crate::tls::identity(i, &mut top));

    let listeners = each(
        &c.listeners,
        "listener",
        |l| &l.name,
        &mut sink,
        listener::validate,
    );
    let route_tables = each(
        &c.route_tables,
        "routeTable",
        |t| &t.name,
        &mut sink,
        route::validate,
    );
    let clusters = each(
        &c.clusters,
        "cluster",
        |c| &c.name,
        &mut sink,
        cluster::validate,
    );

    check_references(c, &mut sink);

    match (admin, drain_timeout) {
        (Some(admin), Some(drain_timeout)) if sink.is_empty() => Ok(Config {
            version: c.version.clone(),
            admin,
            drain_timeout,
            listeners,
            route_tables,
            clusters,
            tracing,
            tap: c.admin.as_ref().is_some_and(|a| a.tap),
            identity,
        }),
        _ => Err(InvalidConfig { errors: sink }),
    }
}

/// Validates each resource of one kind and rejects duplicate names.
fn each<P, T>(
    items: &[P],
    kind: &str,
    name_of: impl Fn(&P) -> &String,
    sink: &mut Vec<ValidationError>,
    validate_one: impl Fn(&P, &mut Errors<'_>) -> Option<T>,
) -> Vec<T> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = name_of(item);
        let label = if name.is_empty() {
            format!("{kind}[{i}]")
        } else {
            format!("{kind} {name:?}")
        };
        let mut errs = Errors::new(label, sink);
        if !name.is_empty() && !names.insert(name.clone()) {
            errs.push("name", format!("duplicate {kind} name {name:?}"));
        }
        if let Some(v) = validate_one(item, &mut errs) {
            out.push(v);
        }
    }
    out
}

/// Checks names that resources use to refer to each other. Works on the proto so that a
/// resource with its own errors still counts as existing (no cascade of "unknown" errors).
fn check_references(c: &proto::Config, sink: &mut Vec<ValidationError>) {
    let cluster_names: HashSet<&str> = c.clusters.iter().map(|c| c.name.as_str()).collect();
    let table_names: HashSet<&str> = c.route_tables.iter().map(|t| t.name.as_str()).collect();
    let mut addresses: HashMap<SocketAddr, &str> = HashMap::new();
    let mesh_tls = |mode: i32| {
        mode == proto::TlsMode::Strict as i32 || mode == proto::TlsMode::Permissive as i32
    };
    for l in &c.listeners {
        let mut errs = Errors::new(format!("listener {:?}", l.name), sink);
        if c.identity.is_none() && l.tls.as_ref().is_some_and(|t| mesh_tls(t.mode)) {
            errs.push(
                "tls.mode",
                "mesh mTLS needs the proxy's identity: set top-level `identity` (files or controlPlane)",
            );
        }
        if !l.route_table.is_empty() && !table_names.contains(l.route_table.as_str()) {
            errs.push(
                "routeTable",
                format!("unknown route table {:?}", l.route_table),
            );
        }
        if !l.cluster.is_empty() && !cluster_names.contains(l.cluster.as_str()) {
            errs.push("cluster", format!("unknown cluster {:?}", l.cluster));
        }
        let address = l
            .address
            .parse::<SocketAddr>()
            .ok()
            .filter(|a| a.port() != 0);
        if let Some(other) = address.and_then(|a| addresses.insert(a, &l.name)) {
            let address = &l.address;
            errs.push(
                "address",
                format!("{address} is already used by listener {other:?}"),
            );
        }
    }
    for cl in &c.clusters {
        if c.identity.is_none()
            && cl
                .tls
                .as_ref()
                .is_some_and(|t| t.mode == proto::ClusterTlsMode::Mesh as i32)
        {
            Errors::new(format!("cluster {:?}", cl.name), sink).push(
                "tls.mode",
                "MESH needs the proxy's identity: set top-level `identity` (files or controlPlane)",
            );
        }
    }
    for t in &c.route_tables {
        let mut errs = Errors::new(format!("routeTable {:?}", t.name), sink);
        for (i, vh) in t.virtual_hosts.iter().enumerate() {
            for (j, r) in vh.routes.iter().enumerate() {
                let Some(proto::route::Action::Forward(f)) = &r.action else {
                    continue;
                };
                let names = std::iter::once(f.cluster.as_str())
                    .filter(|n| !n.is_empty())
                    .chain(
                        f.weighted_clusters
                            .iter()
                            .map(|w| w.name.as_str())
                            .filter(|n| !n.is_empty()),
                    );
                for name in names {
                    if !cluster_names.contains(name) {
                        errs.push(
                            format!("virtualHosts[{i}].routes[{j}].forward"),
                            format!("unknown cluster {name:?}"),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
