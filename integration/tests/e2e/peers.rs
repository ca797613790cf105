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

/// Cases where the h2 crate (hyper's HTTP/2) deviates from the RFC's error *code* or
/// leniency. Every one of them still ends the offending stream or connection; none lets a
/// malformed frame through to an upstream. The test fails if this list goes stale either way.
const H2_KNOWN_DEVIATIONS: &[(&str, &str)] = &[
    (
        "8.3/5",
        "h2 drops pseudo-header fields in trailers instead of resetting",
    ),
    (
        "8.5/1",
        "CONNECT without :authority is answered 400 and ended, not reset",
    ),
    // h2 reports every frame-decoding and HPACK error as GOAWAY PROTOCOL_ERROR and closes
    // (h2spec counts a close as a pass; the checker wants the exact code).
    ("4.3/1", "COMPRESSION_ERROR reported as PROTOCOL_ERROR"),
    ("5.4.1/1", "GOAWAY carries PROTOCOL_ERROR for a HPACK error"),
    (
        "5.1/6",
        "DATA on a half-closed stream: GOAWAY PROTOCOL_ERROR, not STREAM_CLOSED",
    ),
    (
        "6.1/2",
        "DATA after END_STREAM: GOAWAY PROTOCOL_ERROR, not STREAM_CLOSED",
    ),
    (
        "8.1/6",
        "DATA after trailers: GOAWAY PROTOCOL_ERROR, not STREAM_CLOSED",
    ),
    ("6.3/2", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.3/3", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.4/3", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.4/4", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.5/1", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.5/3", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.5/4", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.5.2/3", "FLOW_CONTROL_ERROR reported as PROTOCOL_ERROR"),
    ("6.7/4", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.7/5", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.8/2", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.9/3", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    ("6.9/4", "FRAME_SIZE_ERROR reported as PROTOCOL_ERROR"),
    (
        "hpack-2.3/1",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    (
        "hpack-2.3/2",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    (
        "hpack-4.2/1",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    (
        "hpack-4.2/2",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    (
        "hpack-5.1/1",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    (
        "hpack-5.2/1",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    (
        "hpack-5.2/2",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    (
        "hpack-5.2/3",
        "COMPRESSION_ERROR reported as PROTOCOL_ERROR",
    ),
    ("hpack-6/1", "COMPRESSION_ERROR reported as PROTOCOL_ERROR"),
];

#[test]
fn http2_conformance_rfc9113_and_hpack() {
    let up = remora_integration::Upstream::start("web");
    let mut remora = Remora::start(&yaml(&up.addr.to_string(), "SAME_AS_DOWNSTREAM"));
    // The checker exits non-zero when any case fails; the verdict is taken case by case.
    let target = remora.addr("out").to_string();
    let run = remora_integration::peers::run(
        std::process::Command::new(remora_integration::peers::python())
            .arg(remora_integration::peers::peer_script("h2_conformance.py"))
            .args(["--target", &target, "--authority", "web.svc"]),
    );
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let mut failed = Vec::new();
    let mut passed = 0;
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let case: serde_json::Value = serde_json::from_str(line).expect("checker prints JSON");
        let id = case["id"].as_str().unwrap_or_default().to_owned();
        if case["ok"] == true {
            passed += 1;
        } else {
            failed.push(id);
        }
    }
    assert!(passed >= 130, "too few cases ran ({passed} passed):\n{out}");
    let known: Vec<&str> = H2_KNOWN_DEVIATIONS.iter().map(|(id, _)| *id).collect();
    let new: Vec<&String> = failed
        .iter()
        .filter(|f| !known.contains(&f.as_str()))
        .collect();
    assert!(
        new.is_empty(),
        "new HTTP/2 conformance failures {new:?}:\n{out}"
    );
    let fixed: Vec<&&str> = known
        .iter()
        .filter(|k| !failed.iter().any(|f| f == *k))
        .collect();
    assert!(
        fixed.is_empty(),
        "now passing, remove from H2_KNOWN_DEVIATIONS: {fixed:?}"
    );
    assert!(remora.alive());
}

/// The conformance checker is only worth its verdicts if a known-good implementation passes
/// it in full: HAProxy, a strict HTTP/2 implementation, does (the checker exits 0).
#[test]
fn the_http2_checker_passes_haproxy_in_full() {
    let up = remora_integration::Upstream::start("web");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 1024\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\nfrontend fe\n    bind 127.0.0.1:{port} proto h2\n    default_backend be\nbackend be\n    server s1 {}\n",
            up.addr
        ),
    )
    .expect("write haproxy.cfg");
    let mut haproxy = std::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("haproxy (installed by .ci/install-tools)");
    remora_integration::eventually(
        "haproxy listening",
        std::time::Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    let run = remora_integration::peers::run(
        std::process::Command::new(remora_integration::peers::python())
            .arg(remora_integration::peers::peer_script("h2_conformance.py"))
            .args([
                "--target",
                &format!("127.0.0.1:{port}"),
                "--authority",
                "web.svc",
            ]),
    );
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let out = String::from_utf8_lossy(&run.stdout);
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        run.status.success(),
        "HAProxy should pass every case ({summary}):\n{out}"
    );
    assert!(summary.contains(" passed, 0 failed"), "{summary}");
}
