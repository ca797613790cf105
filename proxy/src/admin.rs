//! The admin HTTP server: `/live`, `/ready`, `/metrics` (Prometheus text), `/config` (the
//! running configuration as canonical JSON with version and load time), `/listeners`
//! (bound addresses, resolving port 0), `/clusters` (live balancing, breaker, ejection and
//! health state) and `/tap` (a live stream of requests, when enabled).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::Proxy;

/// Serves the admin endpoints on an already bound socket until `stop`.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(route(&req, &proxy)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

/// Every admin answer: whole, or streamed (`/tap`).
type Body = BoxBody<Bytes, Infallible>;

fn route(req: &Request<Incoming>, proxy: &Proxy) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            if proxy.draining.load(Ordering::Acquire) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: shutting down, draining connections\n",
                )
            } else if proxy.ready.load(Ordering::Acquire) && proxy.mesh_identity.waiting() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: waiting for the mesh certificate (see the log: identity files or the control plane's CA)\n",
                )
            } else if proxy.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no configuration applied yet (from the file, the control plane or its cache)\n",
                )
            }
        }
        "/tap" => tap(req, proxy),
        "/metrics" => {
            let mut text = proxy.metrics.encode();
            endpoint_metrics(proxy, &mut text);
            crate::identity::write_metrics(&proxy.mesh_identity, &mut text);
            rate_limit_metrics(proxy, &mut text);
            let mut rsp = Response::new(Full::new(Bytes::from(text)).boxed());
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            rsp
        }
        "/config" => {
            let snap = proxy.snapshot.load();
            let loaded = snap
                .loaded_at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let control = proxy
                .control
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .and_then(|c| serde_json::to_value(c).ok());
            let mut doc = serde_json::json!({
                "version": snap.version,
                "loadedAt": loaded,
                "config": remora_control_api::load::to_json(&snap.source),
            });
            if let (Some(c), Some(map)) = (control, doc.as_object_mut()) {
                map.insert("control".into(), c);
            }
            json(&doc)
        }
        "/listeners" => {
            let bound = proxy
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .bound();
            let map: serde_json::Map<String, serde_json::Value> = bound
                .into_iter()
                .map(|(n, a)| (n.to_string(), a.to_string().into()))
                .collect();
            json(&serde_json::Value::Object(map))
        }
        "/clusters" => json(&clusters(proxy)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live /ready /metrics /config /listeners /clusters /tap\n",
        ),
    }
}

/// Every cluster's live state: breaker counts, and per endpoint the weight, requests in
/// flight, the peak-EWMA latency estimate, idle pooled connections, ejection and health.
fn clusters(proxy: &Proxy) -> serde_json::Value {
    let snap = proxy.snapshot.load();
    let now = std::time::Instant::now();
    let mut names: Vec<_> = snap.clusters.keys().collect();
    names.sort();
    let map: serde_json::Map<String, serde_json::Value> = names
        .into_iter()
        .filter_map(|name| snap.clusters.get(name).map(|c| (name, c)))
        .map(|(name, c)| {
            let endpoints: Vec<serde_json::Value> = c
                .endpoints
                .iter()
                .zip(&c.cluster.endpoints)
                .map(|(state, configured)| {
                    serde_json::json!({
                        "address": state.address.to_string(),
                        "weight": configured.weight,
                        "pending": state.load.pending(),
                        "ewmaMs": state.load.rtt_estimate(now) / 1e6,
                        "idleConnections": state.pool.idle_count(),
                        "ejected": state.outlier.is_ejected(),
                        "ejectionMultiplier": state.outlier.multiplier(),
                        "healthy": state.health.is_healthy(),
                    })
                })
                .collect();
            (
                name.to_string(),
                serde_json::json!({
                    "lbPolicy": format!("{:?}", c.cluster.lb),
                    "activeRequests": c.state.breakers.requests.current(),
                    "activeRetries": c.state.breakers.retries.current(),
                    "pendingConnects": c.state.breakers.pending.current(),
                    "connections": c.state.breakers.connections.current(),
                    "endpoints": endpoints,
                }),
            )
        })
        .collect();
    serde_json::Value::Object(map)
}

/// How a per-endpoint gauge reads its value.
/// Buckets held per keyed rate limit, read at scrape time (never above the limit's
/// `maxKeys`).
fn rate_limit_metrics(proxy: &Proxy, out: &mut String) {
    use std::fmt::Write as _;
    let snap = proxy.snapshot.load();
    // Same-named routes of different tables share a series (as in the other route metrics).
    let mut rows: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for l in snap.route_policy.values().flat_map(|p| p.limiters.iter()) {
        *rows
            .entry((l.route.0.to_string(), l.settings.name.to_string()))
            .or_default() += l.keys();
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP remora_rate_limit_keys Buckets held by a route's rate limit (one per key; at most its maxKeys)
# TYPE remora_rate_limit_keys gauge"
    );
    for ((route, limit), n) in rows {
        let _ = writeln!(
            out,
            "remora_rate_limit_keys{{route=\"{route}\",limit=\"{limit}\"}} {n}"
        );
    }
}

type EndpointValue = fn(&crate::upstream::EndpointState, std::time::Instant) -> f64;

/// Per-endpoint gauges, read from the live state at scrape time (nothing is updated per
/// request for them): requests in flight, the peak-EWMA latency estimate, ejection and
/// health. One series per configured endpoint, so cardinality is the configuration's.
fn endpoint_metrics(proxy: &Proxy, out: &mut String) {
    use std::fmt::Write as _;
    let snap = proxy.snapshot.load();
    let now = std::time::Instant::now();
    let mut names: Vec<_> = snap.clusters.keys().collect();
    names.sort();
    let families: [(&str, &str, EndpointValue); 4] = [
        (
            "remora_endpoint_active_requests",
            "Requests in flight to the endpoint",
            |e, _| f64::from(e.load.pending()),
        ),
        (
            "remora_endpoint_latency_ewma_seconds",
            "The endpoint's peak-EWMA latency estimate (what P2C balances on)",
            |e, now| e.load.rtt_estimate(now) / 1e9,
        ),
        (
            "remora_endpoint_ejected",
            "1 while outlier detection has the endpoint ejected",
            |e, _| f64::from(u8::from(e.outlier.is_ejected())),
        ),
        (
            "remora_endpoint_healthy",
            "0 while the endpoint fails its active health checks",
            |e, _| f64::from(u8::from(e.health.is_healthy())),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for cluster in &names {
            let Some(c) = snap.clusters.get(*cluster) else {
                continue;
            };
            for e in &c.endpoints {
                let _ = writeln!(
                    out,
                    "{name}{{cluster=\"{}\",endpoint=\"{}\"}} {}",
                    escape(cluster),
                    e.address,
                    value(e, now)
                );
            }
        }
    }
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn tap(req: &Request<Incoming>, proxy: &Proxy) -> Response<Body> {
    if !proxy.snapshot.load().tap_enabled {
        return text(
            StatusCode::NOT_FOUND,
            "/tap is off; set `admin: { tap: true }` in the configuration to turn it on\n",
        );
    }
    let query = match crate::tap::Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => {
            let mut rsp =
                Response::new(Full::new(Bytes::from(format!("bad /tap query: {e}\n"))).boxed());
            *rsp.status_mut() = StatusCode::BAD_REQUEST;
            return rsp;
        }
    };
    let frames = crate::tap::start(&proxy.tap, query);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(frames));
    let mut rsp = Response::new(BodyExt::boxed(body));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    rsp
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

fn json(v: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut rsp = Response::new(Full::new(Bytes::from(body)).boxed());
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}
