//! The whole configuration of one proxy: top-level validation and cross-references.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
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

    check_references(&listeners, &route_tables, &clusters, &mut sink);

    match (admin, drain_timeout) {
        (Some(admin), Some(drain_timeout)) if sink.is_empty() => Ok(Config {
            version: c.version.clone(),
            admin,
            drain_timeout,
            listeners,
            route_tables,
            clusters,
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

fn check_references(
    listeners: &[Listener],
    route_tables: &[RouteTable],
    clusters: &[Cluster],
    sink: &mut Vec<ValidationError>,
) {
    let cluster_names: HashSet<&str> = clusters.iter().map(|c| &*c.name).collect();
    let table_names: HashSet<&str> = route_tables.iter().map(|t| &*t.name).collect();
    let mut addresses: HashMap<SocketAddr, &Arc<str>> = HashMap::new();
    for l in listeners {
        let mut errs = Errors::new(format!("listener {:?}", l.name), sink);
        if let Some(t) = &l.route_table {
            if !table_names.contains(&**t) {
                errs.push("routeTable", format!("unknown route table {t:?}"));
            }
        }
        if let Some(c) = &l.cluster {
            if !cluster_names.contains(&**c) {
                errs.push("cluster", format!("unknown cluster {c:?}"));
            }
        }
        if l.address.port() != 0 {
            if let Some(other) = addresses.insert(l.address, &l.name) {
                errs.push(
                    "address",
                    format!("{} is already used by listener {other:?}", l.address),
                );
            }
        }
    }
    for t in route_tables {
        let mut errs = Errors::new(format!("routeTable {:?}", t.name), sink);
        for (i, vh) in t.virtual_hosts.iter().enumerate() {
            for (j, r) in vh.routes.iter().enumerate() {
                for c in r.action.clusters() {
                    if !cluster_names.contains(&**c) {
                        errs.push(
                            format!("virtualHosts[{i}].routes[{j}].forward"),
                            format!("unknown cluster {c:?}"),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
