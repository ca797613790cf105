//! Opaque TCP: a TCP listener relays with half-close; an AUTO listener sends non-HTTP bytes and
//! silent (server-speaks-first) clients to the TCP cluster, and HTTP to the routes.

use remora_integration::peers::{PyServer, curl, py_client};
use remora_integration::{Remora, Upstream};

fn yaml(tcp_backend: &str, http: &Upstream) -> String {
    format!(
        r#"listeners:
  - {{ name: tcp, address: "127.0.0.1:0", protocol: TCP, cluster: backend }}
  - {{ name: auto, address: "127.0.0.1:0", protocol: AUTO, routeTable: main, cluster: backend, detectTimeout: 0.5s }}
routeTables:
  - name: main
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: web, forward: {{ cluster: web }} }}] }}]
clusters:
  - {{ name: backend, endpoints: [{{ address: "{tcp_backend}" }}] }}
  - {{ name: web, endpoints: [{{ address: "{}" }}] }}
"#,
        http.addr
    )
}

#[test]
fn tcp_relay_passes_half_close() {
    let echo = PyServer::start("tcp_peers.py", &["echo-server"]);
    let web = Upstream::start("web");
    let remora = Remora::start(&yaml(&echo.addr(), &web));
    for listener in ["tcp", "auto"] {
        let out = py_client(
            "tcp_peers.py",
            &[
                "halfclose-client",
                "--target",
                &remora.addr(listener).to_string(),
                "--size",
                "300000",
            ],
        );
        assert!(out.contains("\"ok\": true"), "{listener}: {out}");
    }
    assert!(
        remora.metric_sum("remora_tcp_relayed_bytes_total", &["listener=\"tcp\""]) >= 600_000.0
    );
}

#[test]
fn auto_listener_detects_server_speaks_first_and_http() {
    let banner = PyServer::start("tcp_peers.py", &["banner-server"]);
    let web = Upstream::start("web");
    let remora = Remora::start(&yaml(&banner.addr(), &web));
    let auto = remora.addr("auto").to_string();
    let started = std::time::Instant::now();
    let out = py_client("tcp_peers.py", &["banner-client", "--target", &auto]);
    assert!(
        out.contains("\"ok\": true") && !out.contains("\"ok\": false"),
        "{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "banner must not wait for a long detect timeout"
    );
    // HTTP/1.1 and HTTP/2 on the same AUTO port still go to the routes.
    for v in ["--http1.1", "--http2-prior-knowledge"] {
        let (out, err, ok) = curl(&[v, &format!("http://{auto}/x")]);
        assert!(ok && out.contains("\"server\":\"web\""), "{v}: {out} {err}");
    }
}
