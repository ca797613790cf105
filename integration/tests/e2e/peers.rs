//! Real protocol peers through the proxy: a Python gRPC server and client (unary, streaming,
//! trailers, errors), a WebSocket echo over an HTTP/1.1 upgrade, and hostile HTTP/2 peers.

use remora_integration::Remora;
use remora_integration::peers::{PyServer, py_client};

fn yaml(cluster_addr: &str, protocol: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: main }}
routeTables:
  - name: main
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: app, forward: {{ cluster: app }} }}] }}]
clusters:
  - {{ name: app, protocol: {protocol}, endpoints: [{{ address: "{cluster_addr}" }}] }}
"#
    )
}

#[test]
fn grpc_unary_streaming_trailers_and_errors() {
    let server = PyServer::start("grpc_echo_server.py", &[]);
    let remora = Remora::start(&yaml(&server.addr(), "HTTP2"));
    let out = py_client(
        "grpc_echo_client.py",
        &["--target", &remora.addr("out").to_string()],
    );
    assert!(!out.contains("\"ok\": false"), "{out}");
    assert!(out.matches("\"ok\": true").count() >= 7, "{out}");
}

#[test]
fn websocket_upgrade_is_relayed() {
    let server = PyServer::start("ws_echo_server.py", &[]);
    let remora = Remora::start(&yaml(&server.addr(), "SAME_AS_DOWNSTREAM"));
    let out = py_client(
        "ws_echo_client.py",
        &["--url", &format!("ws://{}/chat", remora.addr("out"))],
    );
    assert!(
        !out.contains("\"ok\": false") && out.contains("\"ok\": true"),
        "{out}"
    );
}

#[test]
fn hostile_http2_peers_do_not_take_the_proxy_down() {
    let up = remora_integration::Upstream::start("web");
    let mut remora = Remora::start(&yaml(&up.addr.to_string(), "SAME_AS_DOWNSTREAM"));
    let out = py_client("h2_edge.py", &["--target", &remora.addr("out").to_string()]);
    assert!(!out.contains("\"ok\": false"), "{out}");
    assert!(out.contains("rst_stream_storm_then_healthy"), "{out}");
    assert!(remora.alive());
}
