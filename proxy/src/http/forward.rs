//! The innermost service of a route: send the request to an endpoint of a cluster (picked by
//! the cluster's balancer among available endpoints, over a pooled connection; retried and
//! hedged by [`crate::http::retry`] when the route says so), or answer with the route's
//! direct response. HTTP/1.1 upgrades (WebSocket) are relayed as raw bytes once both sides
//! agree. Every request holds a slot of its cluster's `maxRequests`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper_util::rt::TokioIo;
use remora_control_api::cluster::{HashKey, UpstreamProtocol};
use remora_control_api::resilience::RetryPolicy;
use remora_control_api::route::DirectResponse;
use remora_filters::balance::PickContext;
use remora_filters::breaker::Limit;
use remora_filters::hash::hash64;
use remora_filters::latency::LatencyEstimate;

use crate::http::body::ProxyBody;
use crate::http::error::ProxyError;
use crate::http::headers;
use crate::metrics::Name;
use crate::snapshot::ClusterTarget;
use crate::upstream::EndpointState;
use crate::upstream::pool::ConnectParams;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

/// What a matched route does once its layers have run.
#[derive(Debug, Clone)]
pub enum Target {
    Forward(Forward),
    Direct(Arc<DirectResponse>),
}

#[derive(Debug, Clone)]
pub struct Forward {
    pub cluster: Arc<ClusterTarget>,
    pub client: SocketAddr,
    /// The route's retry policy, if it has one.
    pub retry: Option<Arc<RetryPolicy>>,
    /// The route's hedging delay, and the latency estimate to feed when the delay is the
    /// observed p95.
    pub hedge: Option<Duration>,
    pub latency: Option<Arc<LatencyEstimate>>,
    pub route: Name,
    /// The route's stream idle timeout (for response bodies).
    pub stream_idle: Duration,
    /// The request's trace, when tracing is on.
    pub trace: Option<Arc<crate::trace::RequestTrace>>,
    /// Where the tries went, when a span or an access-log line will say.
    pub tries: Option<Arc<Tries>>,
}

/// The endpoint of the last try and the number of tries of one request.
#[derive(Debug, Default)]
pub struct Tries {
    inner: std::sync::Mutex<(Option<SocketAddr>, u32)>,
}

impl Tries {
    pub fn tried(&self, endpoint: SocketAddr) {
        let mut t = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.0 = Some(endpoint);
        t.1 += 1;
    }

    /// (last endpoint, tries).
    pub fn get(&self) -> (Option<SocketAddr>, u32) {
        *self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl tower::Service<Request<ProxyBody>> for Target {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> BoxFuture {
        match self {
            Target::Forward(f) => Box::pin(forward(f.clone(), req)),
            Target::Direct(d) => {
                let rsp = direct_response(d);
                Box::pin(async move { Ok(rsp) })
            }
        }
    }
}

fn direct_response(d: &DirectResponse) -> Response<ProxyBody> {
    let mut rsp = Response::new(ProxyBody::full(d.body.clone()));
    *rsp.status_mut() = d.status;
    let h = rsp.headers_mut();
    for (k, v) in &d.headers {
        h.append(k.clone(), v.clone());
    }
    if !d.body.is_empty() && !h.contains_key(header::CONTENT_TYPE) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    rsp
}

/// Latency recorded for a request whose connection could not be had (refused, timed out,
/// handshake failed): the balancer then steers around the endpoint, and the estimate decays
/// back so that it is tried again later (outlier ejection is the stronger tool).
pub const FAILED_CONNECT_RTT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ends the endpoint's in-flight count and records latency when dropped, whatever happened.
struct InFlight {
    endpoint: Arc<EndpointState>,
    start: Instant,
    connect_failed: bool,
}

impl InFlight {
    fn new(endpoint: Arc<EndpointState>) -> Self {
        endpoint.load.start();
        Self {
            endpoint,
            start: Instant::now(),
            connect_failed: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut rtt = now.duration_since(self.start);
        if self.connect_failed {
            rtt = rtt.max(FAILED_CONNECT_RTT);
        }
        self.endpoint.load.finish(rtt, now);
    }
}

fn pick_context(
    cluster: &ClusterTarget,
    req: &Request<ProxyBody>,
    client: SocketAddr,
) -> PickContext {
    let hash = cluster.hash_key.as_ref().map(|key| {
        let header = match key {
            HashKey::Header(name) => req.headers().get(name),
            HashKey::SourceIp => None,
        };
        match header {
            Some(v) => hash64(v.as_bytes()),
            None => match client.ip() {
                std::net::IpAddr::V4(ip) => hash64(&ip.octets()),
                std::net::IpAddr::V6(ip) => hash64(&ip.octets()),
            },
        }
    });
    PickContext { hash }
}

async fn forward(
    f: Forward,
    mut req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let start = Instant::now();
    let cluster = &f.cluster;
    let _request = cluster.acquire(Limit::Requests)?;
    cluster.state.budget.deposit(
        &cluster.cluster.resilience.budget,
        tokio::time::Instant::now(),
    );
    let downstream = req.version();
    let upgrade = headers::is_upgrade(&req);
    let version = match (cluster.cluster.protocol, upgrade) {
        (_, true) | (UpstreamProtocol::Http1, _) => Version::HTTP_11,
        (UpstreamProtocol::Http2, _) => Version::HTTP_2,
        (UpstreamProtocol::SameAsDownstream, _) if downstream == Version::HTTP_2 => Version::HTTP_2,
        (UpstreamProtocol::SameAsDownstream, _) => Version::HTTP_11,
    };
    if upgrade && cluster.cluster.protocol == UpstreamProtocol::Http2 {
        return Err(ProxyError::BadRequest(
            "upgrade requests need an HTTP/1.1 upstream",
        ));
    }
    let ctx = pick_context(cluster, &req, f.client);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    headers::prepare_request(&mut req, version, upgrade)?;
    // A route that hedges without a retry policy runs its tries with no retries.
    let policy = f
        .retry
        .as_deref()
        .or_else(|| f.hedge.map(|_| &*crate::http::retry::NO_RETRIES));
    let mut rsp = match policy {
        Some(policy) if !upgrade => crate::http::retry::send(&f, policy, ctx, req).await?,
        _ => {
            let idx = pick(cluster, ctx, None)?;
            if let Some(t) = &f.tries {
                t.tried(cluster.endpoints[idx].address);
            }
            send_once(cluster, idx, req, upgrade, f.stream_idle).await?
        }
    };
    if let Some(latency) = &f.latency {
        latency.record(start.elapsed());
    }
    if let Some(down) = downstream_upgrade
        && rsp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let up = hyper::upgrade::on(&mut rsp);
        tokio::spawn(relay_upgraded(down, up));
    }
    headers::prepare_response(&mut rsp, downstream);
    Ok(rsp)
}

/// An endpoint for the next try: available (not ejected, not failing health checks) and,
/// for a retry, not the one that just failed.
pub(crate) fn pick(
    cluster: &ClusterTarget,
    ctx: PickContext,
    avoid: Option<usize>,
) -> Result<usize, ProxyError> {
    cluster
        .balancer
        .pick_available(&cluster.endpoints, ctx, avoid)
        .ok_or_else(|| ProxyError::NoHealthyEndpoints(cluster.cluster.name.clone()))
}

/// One try: `req` (prepared for its upstream hop) to endpoint `idx` of the cluster, over a
/// pooled or new connection. Records the endpoint's load and its result for outlier
/// detection.
pub(crate) async fn send_once(
    cluster: &ClusterTarget,
    idx: usize,
    req: Request<ProxyBody>,
    upgrade: bool,
    stream_idle: Duration,
) -> Result<Response<ProxyBody>, ProxyError> {
    let endpoint = &cluster.endpoints[idx];
    let c = &cluster.cluster;
    let params = ConnectParams {
        connect_timeout: c.connect_timeout,
        idle_timeout: c.idle_timeout,
        max_idle: c.max_idle_per_endpoint as usize,
        metrics: &cluster.metrics,
        breakers: &cluster.state.breakers,
        limits: c.resilience.breakers,
        cluster: &c.name,
        stream_idle,
        tls: cluster.tls.as_ref(),
    };
    let mut in_flight = InFlight::new(endpoint.clone());
    let result = async {
        if req.version() == Version::HTTP_2 {
            let mut sender = endpoint
                .pool
                .http2(params)
                .await
                .inspect_err(|_| in_flight.connect_failed = true)?;
            Ok(sender
                .send_request(req)
                .await
                .map_err(|e| ProxyError::UpstreamReset(e.into()))?
                .map(|b| ProxyBody::streamed_with_idle(b, stream_idle)))
        } else if upgrade {
            let mut sender = endpoint
                .pool
                .http1_upgrade(params)
                .await
                .inspect_err(|_| in_flight.connect_failed = true)?;
            Ok(sender
                .send_request(req)
                .await
                .map_err(|e| ProxyError::UpstreamReset(e.into()))?
                .map(ProxyBody::from))
        } else {
            crate::upstream::h1::send(&endpoint.pool, params, req)
                .await
                .map_err(|e| match e {
                    crate::upstream::h1::H1Error::Connect(c) => {
                        in_flight.connect_failed = true;
                        ProxyError::Connect(c)
                    }
                    other => ProxyError::UpstreamReset(other.into()),
                })
        }
    }
    .await;
    drop(in_flight);
    cluster.observe(idx, &result);
    result
}

async fn relay_upgraded(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(down, up) {
        Ok((down, up)) => {
            let mut down = TokioIo::new(down);
            let mut up = TokioIo::new(up);
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
    }
}
