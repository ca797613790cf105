//! `remora.control.v1.Identity/Certify`: the mesh CA signs a proxy's CSR for the SPIFFE id
//! of the service it claims, after checking the claim against the mesh: the service must
//! have a sidecar entry and the caller's address must be one of that service's endpoints as
//! discovery reports them, or (Kubernetes) the address of a pod labelled as running that
//! service's sidecar, ready or not (a pod cannot be ready before it has its certificate).
//! The claim is only as strong as the network's addresses and who may label pods; a
//! service-account token review would be stronger (not done yet). Only the CSR's public key
//! is used.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use remora_certs::SpiffeId;
use remora_certs::ca::Ca;
use remora_control_api::proto::control::identity_server::Identity;
use remora_control_api::proto::control::{CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

use crate::metrics::{Metrics, ResultLabels};
use crate::state::Hub;

/// Largest CSR accepted (a P-256 CSR is under 1 KiB).
const MAX_CSR_BYTES: usize = 16 * 1024;

pub struct IdentityService {
    hub: Arc<Hub>,
    ca: Option<Arc<Ca>>,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl IdentityService {
    pub fn new(hub: Arc<Hub>, ca: Option<Arc<Ca>>, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            hub,
            ca,
            ttl,
            metrics,
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .certificates
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    fn decide(
        &self,
        caller: Option<IpAddr>,
        r: &CertifyRequest,
    ) -> Result<CertifyResponse, Status> {
        let unavailable = |m: String| {
            self.count("unavailable");
            Status::failed_precondition(m)
        };
        let denied = |m: String| {
            self.count("denied");
            Status::permission_denied(m)
        };
        let Some(ca) = &self.ca else {
            return Err(unavailable(
                "this control plane has no CA: start it with `remora-control serve --ca DIR`"
                    .into(),
            ));
        };
        let state = self.hub.current();
        let Some(mtls) = &state.model.mtls else {
            return Err(unavailable(
                "the mesh model has no `mtls` section; add one to turn mutual TLS on".into(),
            ));
        };
        if mtls.value.trust_domain != ca.trust_domain {
            return Err(unavailable(format!(
                "the mesh's trust domain is {:?} but the CA's is {:?}; use a CA of the mesh's trust domain",
                mtls.value.trust_domain, ca.trust_domain
            )));
        }
        let Some(service) = state.model.services.get(&r.service) else {
            return Err(denied(format!("unknown service {:?}", r.service)));
        };
        if !state.model.sidecars.contains_key(&r.service) {
            return Err(denied(format!(
                "service {:?} has no sidecar entry in the mesh",
                r.service
            )));
        }
        let endpoints = state
            .resolved
            .get(&r.service)
            .map_or(&[][..], Vec::as_slice);
        // A ready endpoint of the service, or (Kubernetes) a pod that runs its sidecar and
        // is not ready yet: it cannot be ready before it has its certificate.
        let claimed: Vec<IpAddr> = self
            .hub
            .sources()
            .iter()
            .flat_map(|s| s.claims(&r.service))
            .collect();
        let known = caller.is_some_and(|ip| {
            endpoints.iter().any(|e| {
                e.address
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.ip().to_canonical() == ip.to_canonical())
            }) || claimed
                .iter()
                .any(|c| c.to_canonical() == ip.to_canonical())
        });
        if !known {
            return Err(denied(format!(
                "node {:?} at {} is not an endpoint of service {:?}",
                r.node,
                caller.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string()),
                r.service
            )));
        }
        if r.csr.len() > MAX_CSR_BYTES {
            self.count("invalid");
            return Err(Status::invalid_argument("csr: larger than 16 KiB"));
        }
        let id = crate::generate::service_identity(&service.value, &ca.trust_domain);
        let identity = SpiffeId::parse(&id).map_err(|e| {
            self.count("invalid");
            Status::internal(format!("service identity {id:?}: {e}"))
        })?;
        let chain = remora_certs::csr::sign(ca, &r.csr, &identity, self.ttl).map_err(|e| {
            self.count("invalid");
            Status::invalid_argument(format!("csr: {e}"))
        })?;
        self.count("issued");
        tracing::info!(node = %r.node, service = %r.service, %identity, ttl_s = self.ttl.as_secs(), "certificate issued");
        Ok(CertifyResponse {
            identity: id,
            certificate_chain: chain,
            trust_bundle: ca.bundle().to_owned(),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let caller = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        match self.decide(caller, &r) {
            Ok(rsp) => Ok(Response::new(rsp)),
            Err(status) => {
                tracing::warn!(node = %r.node, service = %r.service, code = ?status.code(), message = status.message(), "certificate request refused");
                Err(status)
            }
        }
    }
}
