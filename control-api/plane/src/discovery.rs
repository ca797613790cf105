//! Where a service's endpoints come from: the [`Source`] trait and the static source (the
//! endpoints written in the model). DNS lives in [`crate::dns`]; Kubernetes, Consul and
//! Eureka plug in behind the same trait.

use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;

use crate::generate::Resolved;
use crate::model::Model;

/// A discovery source. The hub asks each source, in order, whether it serves a service and
/// what its endpoints are; dynamic sources signal changes on the channel they were built with.
pub trait Source: Send + Sync {
    /// Short name for logs and listings ("static", "dns").
    fn kind(&self) -> &'static str;
    /// Whether this source is where `service`'s endpoints come from.
    fn serves(&self, service: &Service) -> bool;
    /// The last known endpoints of `service` (empty while not yet known).
    fn endpoints(&self, service: &Service) -> Vec<Endpoint>;
    /// Called after every model change: start watching new services, stop removed ones.
    fn reconcile(&self, model: &Model);
    /// Sidecar entries this source discovered (Kubernetes: from annotated pods); a model
    /// entry of the same service takes precedence.
    fn sidecars(&self) -> Vec<remora_control_api::proto::mesh::Sidecar> {
        Vec::new()
    }
    /// Addresses known to run `service`'s sidecars even before they are ready endpoints
    /// (Kubernetes: injected pods), for certificate claims.
    fn claims(&self, _service: &str) -> Vec<std::net::IpAddr> {
        Vec::new()
    }
    /// How the service's endpoints stand with this source (`get services`).
    fn status(&self, _service: &Service) -> Option<SourceStatus> {
        None
    }
}

/// A source's word on one service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceStatus {
    pub source: &'static str,
    /// Why the last known endpoints are kept despite the registry, when they are.
    pub stale: Option<String>,
}

/// Every source's discovered sidecars, by service.
pub fn discovered_sidecars(
    sources: &[std::sync::Arc<dyn Source>],
) -> std::collections::BTreeMap<String, remora_control_api::proto::mesh::Sidecar> {
    sources
        .iter()
        .flat_map(|s| s.sidecars())
        .map(|s| (s.service.clone(), s))
        .collect()
}

/// An endpoint at `ip:port` (weight 1 unless given).
pub fn endpoint(ip: std::net::IpAddr, port: u16, weight: Option<u32>) -> Endpoint {
    Endpoint {
        address: std::net::SocketAddr::new(ip, port).to_string(),
        weight: weight
            .filter(|w| *w != 1)
            .map(|value| pbjson_types::UInt32Value { value }),
        identity: String::new(),
    }
}

/// Sorted by address, one per address, at most `MAX_ENDPOINTS`.
pub fn tidy(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    endpoints.sort_by(|a, b| a.address.cmp(&b.address));
    endpoints.dedup_by(|a, b| a.address == b.address);
    endpoints.truncate(MAX_ENDPOINTS);
    endpoints
}

/// Upper bound on the endpoints a source reports for one service.
pub const MAX_ENDPOINTS: usize = 4096;

/// The endpoints written in the model.
#[derive(Debug, Default)]
pub struct StaticSource;

impl Source for StaticSource {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn serves(&self, service: &Service) -> bool {
        service.dns.is_none()
            && service.kubernetes.is_none()
            && service.consul.is_none()
            && service.eureka.is_none()
            && service.nomad.is_none()
            && service.marathon.is_none()
    }

    fn endpoints(&self, service: &Service) -> Vec<Endpoint> {
        service.endpoints.clone()
    }

    fn reconcile(&self, _model: &Model) {}
}

/// The source that serves `service`, if any.
pub fn source_of<'a>(
    sources: &'a [std::sync::Arc<dyn Source>],
    service: &Service,
) -> Option<&'a dyn Source> {
    sources
        .iter()
        .find(|s| s.serves(service))
        .map(AsRef::as_ref)
}

/// Every service's current endpoints, asking the first source that serves it.
pub fn resolve_all(sources: &[std::sync::Arc<dyn Source>], model: &Model) -> Resolved {
    model
        .services
        .iter()
        .map(|(name, e)| {
            let endpoints = source_of(sources, &e.value)
                .map(|s| s.endpoints(&e.value))
                .unwrap_or_default();
            (name.clone(), endpoints)
        })
        .collect()
}
