//! The operator HTTP API (`serve --api ADDR`): apply and diff a `Mesh` document, list
//! services, policies and proxies as JSON, `/metrics` in the Prometheus text format, and
//! `/live`, `/ready`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::model::{self, ModelErrors};
use crate::registry::Registry;
use crate::state::{ChangeReport, Hub};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = remora_control_api::load::MAX_CONFIG_BYTES;

#[derive(Clone)]
pub struct Api {
    pub hub: Arc<Hub>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Api")
    }
}

/// Serves the API on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, api: Api) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    text(status, "application/json", body)
}

fn errors_response(status: StatusCode, errors: &[String]) -> Response<Body> {
    json_response(status, &json!({ "errors": errors }))
}

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::GET, "/live") => text(StatusCode::OK, "text/plain", "ok\n"),
            (Method::GET, "/ready") => text(StatusCode::OK, "text/plain", "ready\n"),
            (Method::GET, "/metrics") => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.encode(),
            ),
            (Method::GET, "/v1/services") => json_response(StatusCode::OK, &self.services()),
            (Method::GET, "/v1/policies") => json_response(StatusCode::OK, &self.policies()),
            (Method::GET, "/v1/proxies") => json_response(
                StatusCode::OK,
                &serde_json::to_value(self.registry.list()).unwrap_or(Value::Null),
            ),
            (Method::POST, "/v1/apply") => self.change(req, true).await,
            (Method::POST, "/v1/diff") => self.change(req, false).await,
            (
                _,
                "/live" | "/ready" | "/metrics" | "/v1/services" | "/v1/policies" | "/v1/proxies",
            ) => errors_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &[format!("{path}: use GET")],
            ),
            (_, "/v1/apply" | "/v1/diff") => errors_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &[format!("{path}: use POST with a Mesh document")],
            ),
            _ => errors_response(
                StatusCode::NOT_FOUND,
                &[format!(
                    "no such path {path}; try /v1/services, /v1/policies, /v1/proxies, /v1/apply, /v1/diff, /metrics"
                )],
            ),
        }
    }

    async fn change(&self, req: Request<Incoming>, apply: bool) -> Response<Body> {
        let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return errors_response(
                    StatusCode::BAD_REQUEST,
                    &[format!(
                        "cannot read the request body (limit {MAX_BODY_BYTES} bytes): {e}"
                    )],
                );
            }
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return errors_response(
                StatusCode::BAD_REQUEST,
                &["the body must be UTF-8 YAML or JSON".into()],
            );
        };
        let mesh = match model::parse(text) {
            Ok(m) => m,
            Err(e) => {
                return errors_response(StatusCode::BAD_REQUEST, &[format!("request: {e}")]);
            }
        };
        let hub = Arc::clone(&self.hub);
        // Validation generates every sidecar's configuration: keep it off the I/O threads.
        let result = tokio::task::spawn_blocking(move || {
            if apply {
                hub.apply(&mesh)
            } else {
                hub.diff(&mesh)
            }
        })
        .await
        .unwrap_or_else(|e| Err(ModelErrors::single("", format!("internal error: {e}"))));
        match result {
            Ok(mut report) => {
                self.fill_proxies(&mut report);
                if apply {
                    tracing::info!(
                        added = report.added.len(),
                        changed = report.changed.len(),
                        pushes = report.pushes.len(),
                        "mesh applied"
                    );
                }
                let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut v {
                    o.insert("applied".into(), Value::Bool(apply));
                }
                json_response(StatusCode::OK, &v)
            }
            Err(e) => errors_response(StatusCode::BAD_REQUEST, &e.lines()),
        }
    }

    fn fill_proxies(&self, report: &mut ChangeReport) {
        for p in &mut report.pushes {
            p.proxies = self.registry.connected_nodes(&p.service);
        }
    }

    fn services(&self) -> Value {
        let state = self.hub.current();
        let list: Vec<Value> = state
            .model
            .services
            .iter()
            .map(|(name, e)| {
                let found = crate::discovery::source_of(self.hub.sources(), &e.value);
                let source = found.map_or("none", |s| s.kind());
                let stale = found
                    .and_then(|s| s.status(&e.value))
                    .and_then(|st| st.stale);
                json!({
                    "name": name,
                    "origin": e.origin,
                    "source": source,
                    "stale": stale,
                    "endpoints": state.resolved.get(name).cloned().unwrap_or_default(),
                    "spec": e.value,
                })
            })
            .collect();
        Value::Array(list)
    }

    fn policies(&self) -> Value {
        let state = self.hub.current();
        let list: Vec<Value> = state
            .model
            .policies
            .iter()
            .map(|(service, e)| {
                json!({
                    "service": service,
                    "origin": e.origin,
                    "routes": e.value.routes.len(),
                    "spec": e.value,
                })
            })
            .collect();
        Value::Array(list)
    }
}
