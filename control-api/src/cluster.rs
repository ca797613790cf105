//! Cluster: a named set of upstream endpoints, how to balance over them and how to talk to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::error::Errors;
use crate::proto;
use crate::resilience::{self, ClusterResilience};
use crate::util;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_IDLE_PER_ENDPOINT: u32 = 64;
pub const DEFAULT_RING_SIZE: u32 = 1024;
pub const MAX_RING_SIZE: u32 = 65_536;
pub const MAX_ENDPOINT_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    pub lb: LbPolicy,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: u32,
    pub resilience: ClusterResilience,
    pub tls: Option<crate::tls::ClusterTls>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    /// The SPIFFE id the endpoint must present (cluster `tls.mode` MESH).
    pub identity: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    P2cPeakEwma,
    RoundRobin,
    Random,
    RingHash { key: HashKey, ring_size: u32 },
}

/// What a ring-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header; requests without it hash the client address.
    Header(HeaderName),
    SourceIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    SameAsDownstream,
    Http1,
    Http2,
}

pub(crate) fn validate(c: &proto::Cluster, errs: &mut Errors<'_>) -> Option<Cluster> {
    let name_ok = errs.check("name", util::name(&c.name)).is_some();
    let mut endpoints = Vec::with_capacity(c.endpoints.len());
    let mut seen = std::collections::HashSet::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        let address = errs.check(
            format!("endpoints[{i}].address"),
            util::socket_addr(&e.address),
        );
        let weight = e.weight.map_or(1, |w| w.value);
        if weight == 0 || weight > MAX_ENDPOINT_WEIGHT {
            errs.push(
                format!("endpoints[{i}].weight"),
                format!(
                    "must be between 1 and {MAX_ENDPOINT_WEIGHT} (remove an endpoint to drain it)"
                ),
            );
        }
        if let Some(address) = address {
            if address.port() == 0 {
                errs.push(
                    format!("endpoints[{i}].address"),
                    "port 0 is not a valid destination",
                );
            } else if !seen.insert(address) {
                errs.push(
                    format!("endpoints[{i}].address"),
                    format!("duplicate endpoint {address}"),
                );
            }
            let identity = if e.identity.is_empty() {
                None
            } else {
                errs.check(
                    format!("endpoints[{i}].identity"),
                    crate::tls::spiffe_id(&e.identity),
                )
                .map(|()| Arc::from(e.identity.as_str()))
            };
            endpoints.push(Endpoint {
                address,
                weight: weight.clamp(1, MAX_ENDPOINT_WEIGHT),
                identity,
            });
        }
    }
    let lb = lb_policy(c, errs);
    let protocol = match proto::UpstreamProtocol::try_from(c.protocol) {
        Ok(proto::UpstreamProtocol::Unspecified | proto::UpstreamProtocol::SameAsDownstream) => {
            Some(UpstreamProtocol::SameAsDownstream)
        }
        Ok(proto::UpstreamProtocol::Http1) => Some(UpstreamProtocol::Http1),
        Ok(proto::UpstreamProtocol::Http2) => Some(UpstreamProtocol::Http2),
        Err(_) => {
            errs.push("protocol", format!("unknown value {}", c.protocol));
            None
        }
    };
    let connect_timeout = errs.check(
        "connectTimeout",
        util::positive_duration(c.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT),
    );
    let idle_timeout = errs.check(
        "idleTimeout",
        util::positive_duration(c.idle_timeout.as_ref(), DEFAULT_IDLE_TIMEOUT),
    );
    let max_idle = c
        .max_idle_per_endpoint
        .map_or(DEFAULT_MAX_IDLE_PER_ENDPOINT, |w| w.value);
    if max_idle > 10_000 {
        errs.push("maxIdlePerEndpoint", "must be at most 10000");
    }
    let resilience = resilience::cluster(c, errs);
    let tls = c.tls.as_ref().and_then(|t| crate::tls::cluster(t, errs));
    if !name_ok {
        return None;
    }
    Some(Cluster {
        name: c.name.as_str().into(),
        endpoints,
        lb: lb?,
        protocol: protocol?,
        connect_timeout: connect_timeout?,
        idle_timeout: idle_timeout?,
        max_idle_per_endpoint: max_idle,
        resilience: resilience?,
        tls,
    })
}

fn lb_policy(c: &proto::Cluster, errs: &mut Errors<'_>) -> Option<LbPolicy> {
    let Ok(policy) = proto::LbPolicy::try_from(c.lb_policy) else {
        errs.push("lbPolicy", format!("unknown value {}", c.lb_policy));
        return None;
    };
    if policy != proto::LbPolicy::RingHash && c.ring_hash.is_some() {
        errs.push(
            "ringHash",
            "only used with lbPolicy RING_HASH; remove it or set lbPolicy",
        );
    }
    Some(match policy {
        proto::LbPolicy::Unspecified | proto::LbPolicy::P2cPeakEwma => LbPolicy::P2cPeakEwma,
        proto::LbPolicy::RoundRobin => LbPolicy::RoundRobin,
        proto::LbPolicy::Random => LbPolicy::Random,
        proto::LbPolicy::RingHash => {
            let rh = c.ring_hash.clone().unwrap_or_default();
            let key = match rh.key {
                Some(proto::ring_hash::Key::Header(h)) => {
                    match HeaderName::from_bytes(h.as_bytes()) {
                        Ok(h) => HashKey::Header(h),
                        Err(_) => {
                            errs.push("ringHash.header", format!("invalid header name {h:?}"));
                            return None;
                        }
                    }
                }
                Some(proto::ring_hash::Key::SourceIp(true)) => HashKey::SourceIp,
                Some(proto::ring_hash::Key::SourceIp(false)) | None => {
                    errs.push("ringHash", "set `header: NAME` or `sourceIp: true`");
                    return None;
                }
            };
            let ring_size = if rh.min_ring_size == 0 {
                DEFAULT_RING_SIZE
            } else {
                rh.min_ring_size
            };
            if ring_size > MAX_RING_SIZE {
                errs.push(
                    "ringHash.minRingSize",
                    format!("must be at most {MAX_RING_SIZE}"),
                );
                return None;
            }
            LbPolicy::RingHash { key, ring_size }
        }
    })
}
