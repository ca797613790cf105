//! The per-request path: load the snapshot once, route, compose the route's layers, forward,
//! and record metrics.
//!
//! Layer order (outermost first) — the lifecycle of a routed request:
//! 1. header rewrite (request headers on the way in, response headers on the way out)
//! 2. route timeout over all tries (504 `request-timeout` if response headers do not arrive
//!    in time); a gRPC request's `grpc-timeout` shortens it
//! 3. target: forward to a cluster endpoint (breakers, balancer, tries with retries and
//!    hedging, pool), or the direct response
//!
//! Errors the proxy answers itself go to gRPC clients as trailers-only gRPC responses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use http::{Request, Response};
use remora_control_api::route::RouteAction;
use remora_filters::rewrite::{RewriteLayer, RewriteParams};
use remora_filters::router::RequestInfo;
use remora_filters::timeout::TimeoutLayer;
use tower::{ServiceBuilder, ServiceExt};

use crate::http::body::ProxyBody;
use crate::http::error::ProxyError;
use crate::http::forward::{Forward, Target, Tries};
use crate::http::headers;
use crate::metrics::{BytesLabels, ErrorLabels, Name, RequestLabels};
use crate::state::Proxy;

static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// The header that tells the app who called, on mTLS listeners that forward it.
pub const PEER_IDENTITY: &str = "x-remora-peer-identity";

/// The hedging delay of a route that hedges after its observed p95, until it has seen
/// enough requests to know it.
pub const DEFAULT_HEDGE_DELAY: std::time::Duration = std::time::Duration::from_millis(25);

/// What a downstream connection knows about itself.
#[derive(Debug)]
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub client: SocketAddr,
    /// The listener's `idleTimeout`.
    pub idle_timeout: std::time::Duration,
    /// Requests in flight (hyper-served connections; see [`crate::http::idle`]).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `opened` to the last request's end.
    last_active_ms: std::sync::atomic::AtomicU64,
    opened: tokio::time::Instant,
    /// The caller's SPIFFE id, on an mTLS connection.
    pub peer_identity: Option<Arc<str>>,
    /// Whether to pass `peer_identity` to the app (`x-remora-peer-identity`); set on mTLS
    /// listeners, whose clients' own such header is always removed.
    pub mtls: Option<bool>,
}

impl ConnInfo {
    pub fn new(listener: Arc<str>, client: SocketAddr, idle_timeout: std::time::Duration) -> Self {
        Self {
            listener,
            client,
            idle_timeout,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_active_ms: std::sync::atomic::AtomicU64::new(0),
            opened: tokio::time::Instant::now(),
            peer_identity: None,
            mtls: None,
        }
    }

    /// Marks activity now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms
            .store(ms, std::sync::atomic::Ordering::Release);
    }

    /// How long the connection has had no request in flight; `None` while one is.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        use std::sync::atomic::Ordering;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Acquire));
        Some(self.opened.elapsed().saturating_sub(last))
    }
}

/// Handles one request; never fails (errors become responses).
pub async fn handle(
    mut req: Request<ProxyBody>,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let snapshot = proxy.snapshot.load_full();
    headers::ensure_request_id(req.headers_mut());
    // A client's own identity header is never passed on, on any listener; only an mTLS
    // listener with forwardPeerIdentity sets it, from the verified certificate.
    let h = req.headers_mut();
    h.remove(PEER_IDENTITY);
    if conn.mtls == Some(true)
        && let Some(id) = &conn.peer_identity
        && let Ok(v) = http::HeaderValue::from_str(id)
    {
        h.insert(PEER_IDENTITY, v);
    }
    let none = Name(EMPTY.clone());
    let (direction, listener_label) = match snapshot.listeners.get(&conn.listener) {
        Some(l) => (l.listener.direction.as_str(), l.label.clone()),
        None => ("unknown", Name(conn.listener.clone())),
    };
    let mut route_label = none.clone();
    let mut cluster_label = none;
    let is_grpc = headers::is_grpc(req.headers());
    let mut timed_cluster = None;
    let trace = snapshot.tracer.as_ref().map(|t| {
        let kind = if direction == "inbound" {
            opentelemetry::trace::SpanKind::Server
        } else {
            opentelemetry::trace::SpanKind::Client
        };
        let trace = Arc::new(t.begin(req.headers(), kind));
        trace.inject(req.headers_mut(), trace.span_id);
        trace
    });
    let log = snapshot.access_logs.get(&conn.listener).cloned();
    let tap = (snapshot.tap_enabled && proxy.tap.active()).then(|| proxy.tap.clone());
    let sampled = trace.as_ref().is_some_and(|t| t.sampled());
    let recorded = sampled || log.is_some() || tap.is_some();
    let mut tries = recorded.then(|| Arc::new(Tries::default()));
    // What a span or log line needs from the request, copied only when one will be written.
    let request_info = |req: &Request<ProxyBody>| {
        (
            req.method().as_str().to_owned(),
            req.uri().path().to_owned(),
            headers::authority(req).unwrap_or("").to_owned(),
            req.version(),
            req.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            http_body::Body::size_hint(req.body()).exact().unwrap_or(0),
        )
    };
    let mut traced = recorded.then(|| request_info(&req));
    let mut flag = None;
    let mut counted_response = None;

    let result = async {
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::ConnectNotSupported);
        }
        let listener = snapshot
            .listeners
            .get(&conn.listener)
            .ok_or_else(|| ProxyError::ListenerGone(conn.listener.clone()))?;
        if let Some(authz) = &listener.listener.authorization {
            let caller = remora_filters::authz::Caller {
                identity: conn.peer_identity.as_deref(),
                source: conn.client.ip(),
                path: Some(req.uri().path()),
                method: Some(req.method()),
            };
            match crate::http::authz::check(&proxy, authz, &listener.label, &caller) {
                crate::http::authz::Outcome::Allow => {}
                crate::http::authz::Outcome::WouldDeny => flag = Some("authz-dry-run-deny"),
                crate::http::authz::Outcome::Deny(policy) => {
                    return Err(ProxyError::Unauthorized(policy));
                }
            }
        }
        let router = listener
            .router
            .as_ref()
            .ok_or(ProxyError::BadRequest("listener has no routes"))?;
        let (path, query) = (req.uri().path(), req.uri().query());
        let info = RequestInfo {
            authority: headers::authority(&req).unwrap_or(""),
            method: req.method(),
            path,
            query,
            headers: req.headers(),
        };
        let (_vhost, route) = router.route(&info)?;
        route_label = Name(route.name.clone());
        if route.force_trace
            && let Some(t) = &trace
            && !t.sampled()
        {
            t.force();
            t.inject(req.headers_mut(), t.span_id);
            traced.get_or_insert_with(|| request_info(&req));
            tries.get_or_insert_with(|| Arc::new(Tries::default()));
        }
        let target = match &route.action {
            RouteAction::Direct(d) => Target::Direct(d.clone()),
            RouteAction::Forward(split) => {
                let name = remora_filters::split::pick(split)
                    .ok_or_else(|| ProxyError::NoHealthyEndpoints(route.name.clone()))?;
                let cluster = snapshot
                    .clusters
                    .get(name)
                    .ok_or_else(|| ProxyError::NoHealthyEndpoints(name.clone()))?;
                cluster_label = cluster.label.clone();
                timed_cluster = Some(cluster.clone());
                let latency = snapshot
                    .route_latency
                    .get(&(Arc::as_ptr(route) as usize))
                    .cloned();
                let hedge = route.hedge.map(|h| {
                    h.delay.unwrap_or_else(|| {
                        latency
                            .as_ref()
                            .and_then(|l| l.p95())
                            .unwrap_or(DEFAULT_HEDGE_DELAY)
                    })
                });
                Target::Forward(Forward {
                    trace: trace.clone(),
                    tries: tries.clone(),
                    stream_idle: route.stream_idle_timeout,
                    cluster: cluster.clone(),
                    client: conn.client,
                    retry: route.retry.clone(),
                    hedge,
                    latency,
                    route: route_label.clone(),
                })
            }
        };
        let timeout = match (
            route.timeout,
            is_grpc
                .then(|| headers::grpc_timeout(req.headers()))
                .flatten(),
        ) {
            (Some(r), Some(g)) => Some(r.min(g)),
            (r, g) => r.or(g),
        };
        let (request_bytes, response_bytes) = proxy.metrics.byte_counters(&BytesLabels {
            direction,
            listener: listener_label.clone(),
            route: route_label.clone(),
            cluster: cluster_label.clone(),
        });
        req.body_mut().count_bytes(&request_bytes);
        counted_response = Some(response_bytes);
        let policy = snapshot.route_policy.get(&(Arc::as_ptr(route) as usize));
        let rate_limit = policy.filter(|p| !p.limiters.is_empty()).map(|p| {
            crate::http::limit::RateLimitLayer::new(
                p.limiters.clone(),
                crate::http::limit::Caller {
                    client: conn.client.ip(),
                    identity: conn.peer_identity.clone(),
                },
            )
        });
        let fault = policy.and_then(|p| p.fault.clone());
        let svc = ServiceBuilder::new()
            .option_layer(rate_limit)
            .option_layer(fault)
            .layer(RewriteLayer::new(RewriteParams {
                request: route.request_headers.clone(),
                response: route.response_headers.clone(),
            }))
            .layer(TimeoutLayer::new(timeout))
            .service(target);
        svc.oneshot(req).await
    }
    .await;

    let rsp = result.unwrap_or_else(|e| {
        tracing::debug!(error = %e, listener = %conn.listener, "request failed");
        flag = Some(e.reason());
        proxy
            .metrics
            .proxy_errors
            .get_or_create(&ErrorLabels {
                direction,
                listener: listener_label.clone(),
                error: e.reason(),
            })
            .inc();
        if let (ProxyError::Timeout(_), Some(c)) = (&e, &timed_cluster) {
            c.timed_out(&route_label, "request");
        }
        if is_grpc {
            e.into_grpc_response()
        } else {
            e.into_response()
        }
    });
    let mut rsp = rsp;
    let response_bytes = counted_response.unwrap_or_else(|| {
        proxy
            .metrics
            .byte_counters(&BytesLabels {
                direction,
                listener: listener_label.clone(),
                route: route_label.clone(),
                cluster: cluster_label.clone(),
            })
            .1
    });
    rsp.body_mut().count_bytes(&response_bytes);
    let (endpoint, tried) = tries.as_ref().map_or((None, 0), |t| t.get());
    if let (Some(t), Some((method, path, authority, version, ..))) = (&trace, &traced) {
        t.finish(&crate::trace::Finished {
            endpoint,
            tries: tried,
            method,
            path,
            authority,
            version: *version,
            status: rsp.status().as_u16(),
            route: &route_label.0,
            cluster: &cluster_label.0,
            listener: &listener_label.0,
            direction,
            client: conn.client,
            flags: flag,
            peer_identity: conn.peer_identity.as_deref(),
        });
    }
    let labels = RequestLabels {
        direction,
        listener: listener_label,
        route: route_label,
        cluster: cluster_label,
        status: rsp.status().as_u16(),
    };
    let rsp = match (log.is_some() || tap.is_some(), traced) {
        (true, Some((method, path, authority, version, request_id, bytes_received))) => {
            let entry = crate::access_log::Entry {
                start: Some(std::time::SystemTime::now() - start.elapsed()),
                trace_id: trace.as_ref().map(|t| t.trace_id),
                request_id,
                method,
                authority,
                path,
                protocol: match version {
                    http::Version::HTTP_2 => "HTTP/2",
                    http::Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
                status: rsp.status().as_u16(),
                flags: flag,
                upstream: endpoint,
                attempts: tried,
                bytes_received,
                listener: labels.listener.0.to_string(),
                route: labels.route.0.to_string(),
                cluster: labels.cluster.0.to_string(),
                client: Some(conn.client),
                peer_identity: conn.peer_identity.clone(),
                ..crate::access_log::Entry::default()
            };
            rsp.map(|body| ProxyBody::Logged {
                body: Box::pin(body),
                log: Box::new(crate::access_log::PendingLog {
                    entry,
                    started: start,
                    log,
                    tap,
                    bytes: 0,
                }),
            })
        }
        _ => rsp,
    };
    proxy
        .metrics
        .record_request(&labels, start.elapsed().as_secs_f64());
    Ok(rsp)
}
