//! Remora end to end: real `remora` processes, real sockets on 127.0.0.1, real clients (curl,
//! nghttp, grpcio, websockets, raw sockets) and upstreams.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod authz;
mod bad_input;
mod balancing;
mod cli;
mod control;
mod demo;
mod errors;
mod helm;
mod http_proxy;
mod idle;
mod limits;
mod mesh_tls;
mod mtls;
mod peers;
mod protocols;
mod registries;
mod reload;
mod resilience;
mod shutdown;
mod tcp;
mod tls_edge;
mod tracing;

use remora_integration::Upstream;

/// A sidecar config: an HTTP listener `out`, an AUTO listener `auto` (opaque fallback to
/// `tcp-app`), routes to `web` (the given upstreams) and a few fixed routes.
pub fn sidecar_yaml(version: &str, web: &[&Upstream], extra_routes: &str) -> String {
    let endpoints: Vec<String> = web
        .iter()
        .map(|u| format!("{{ address: \"{}\" }}", u.addr))
        .collect();
    format!(
        r#"version: "{version}"
listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: main }}
  - {{ name: auto, address: "127.0.0.1:0", protocol: AUTO, routeTable: main, cluster: web, detectTimeout: 0.3s }}
routeTables:
  - name: main
    virtualHosts:
      - name: orders
        domains: ["orders.svc"]
        routes:
          - name: health
            match: {{ pathExact: /healthz }}
            directResponse: {{ status: 200, body: "ok\n", headers: [{{ name: x-direct, value: "1" }}] }}
{extra_routes}          - name: slow
            match: {{ pathPrefix: /delay/ }}
            forward: {{ cluster: web }}
            timeout: 0.5s
          - name: web
            forward: {{ cluster: web }}
            requestHeaders: {{ set: [{{ name: x-env, value: test }}], remove: [x-secret] }}
            responseHeaders: {{ add: [{{ name: x-route, value: web }}] }}
clusters:
  - name: web
    endpoints: [{}]
    lbPolicy: ROUND_ROBIN
"#,
        endpoints.join(", ")
    )
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}
