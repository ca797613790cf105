//! HTTP/1.1 and HTTP/2 proxying with curl and nghttp: headers, routing, errors, bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use remora_integration::peers::curl;
use remora_integration::{Remora, Upstream, eventually};

use crate::{json, sidecar_yaml};

fn start() -> (Remora, Upstream) {
    let up = Upstream::start("web-1");
    let remora = Remora::start(&sidecar_yaml("v1", &[&up], ""));
    (remora, up)
}

#[test]
fn http1_and_h2c_with_curl_preserve_host_and_strip_hop_by_hop() {
    let (remora, _up) = start();
    let url = format!("{}/echo?q=1", remora.url("out"));
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let (out, err, ok) = curl(&[
            version,
            "-i",
            "-H",
            "Host: orders.svc",
            "-H",
            "x-secret: leak",
            "-H",
            "x-custom: kept",
            "-H",
            "Connection: x-hop",
            "-H",
            "x-hop: gone",
            &url,
        ]);
        assert!(ok, "{version}: {err}");
        let (head, body) = out.split_once("\r\n\r\n").expect("head and body");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("x-route: web"), "{version}: {head}");
        assert!(head.contains("x-upstream: web-1"), "{head}");
        let v = json(body);
        let h = &v["headers"];
        let authority = h["host"].as_str().or(v["authority"].as_str());
        assert_eq!(authority, Some("orders.svc"), "{version}: {v}");
        assert_eq!(h["x-custom"], "kept");
        assert_eq!(h["x-env"], "test", "route request header set");
        assert!(h.get("x-secret").is_none(), "route removes x-secret: {v}");
        if version == "--http1.1" {
            // (curl drops the Connection header itself on HTTP/2, where it is forbidden.)
            assert!(
                h.get("x-hop").is_none(),
                "Connection-named header is hop-by-hop: {v}"
            );
        }
        assert!(h.get("connection").is_none());
        assert_eq!(
            h["x-request-id"].as_str().map(str::len),
            Some(36),
            "x-request-id added: {v}"
        );
        assert_eq!(v["path"], "/echo?q=1");
    }
    // An incoming x-request-id is kept.
    let (out, _, _) = curl(&["-H", "Host: orders.svc", "-H", "x-request-id: abc", &url]);
    assert_eq!(json(&out)["headers"]["x-request-id"], "abc");
}

#[test]
fn nghttp_client_through_the_proxy() {
    let (remora, _up) = start();
    let out = remora_integration::peers::run(std::process::Command::new("nghttp").args([
        "-n",
        "-s",
        "-H",
        ":authority: orders.svc",
        &format!("{}/echo", remora.url("out")),
    ]));
    assert!(
        out.status.success(),
        "nghttp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(stats.contains("/echo"), "{stats}");
}

#[test]
fn direct_response_no_route_and_timeout_errors_say_why() {
    let (remora, _up) = start();
    let base = remora.url("out");
    let (out, _, _) = curl(&["-i", "-H", "Host: orders.svc", &format!("{base}/healthz")]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-direct: 1"), "{out}");
    assert!(out.ends_with("ok\n"), "{out}");

    let (out, _, _) = curl(&["-i", "-H", "Host: unknown.svc", &format!("{base}/")]);
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.contains("x-remora-error: no-route"), "{out}");
    assert!(
        out.contains("\"unknown.svc\""),
        "404 names the authority tried: {out}"
    );

    let (out, _, _) = curl(&[
        "-i",
        "--http2-prior-knowledge",
        "-H",
        "Host: orders.svc",
        &format!("{base}/delay/3000"),
    ]);
    assert!(out.starts_with("HTTP/2 504"), "{out}");
    assert!(out.contains("x-remora-error: request-timeout"), "{out}");
}

#[test]
fn upstream_down_gives_503_connect_failure() {
    let up = Upstream::start("gone");
    let yaml = sidecar_yaml("v1", &[&up], "");
    drop(up);
    let remora = Remora::start(&yaml);
    let (out, _, _) = curl(&["-i", "-H", "Host: orders.svc", &remora.url("out")]);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("x-remora-error: connect-failure"), "{out}");
}

#[test]
fn trailers_and_large_bodies_stream_both_ways() {
    let (remora, _up) = start();
    let base = remora.url("out");
    // Trailers over HTTP/2 end to end (downstream h2 → upstream h2).
    let out = remora_integration::peers::run(std::process::Command::new("nghttp").args([
        "-v",
        "-H",
        ":authority: orders.svc",
        &format!("{base}/trailers"),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("x-trailer: yes"),
        "trailer passed through:\n{text}"
    );

    // 100 MiB upload streams through with bounded proxy memory.
    let before = remora.peak_rss_kib();
    let path = std::env::temp_dir().join(format!("remora-upload-{}", std::process::id()));
    let f = std::fs::File::create(&path).expect("create");
    f.set_len(100 * 1024 * 1024).expect("size");
    let (out, err, ok) = curl(&[
        "-H",
        "Host: orders.svc",
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &format!("@{}", path.display()),
        &format!("{base}/upload"),
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["bodyLength"], 100 * 1024 * 1024);
    let after = remora.peak_rss_kib();
    assert!(
        after < 96 * 1024,
        "peak RSS {after} KiB (was {before} KiB) for a 100 MiB upload: not streaming"
    );

    // A 10 MiB download, over both versions.
    for v in ["--http1.1", "--http2-prior-knowledge"] {
        let (out, err, ok) = curl(&[
            v,
            "-H",
            "Host: orders.svc",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &format!("{base}/bytes/10485760"),
        ]);
        assert!(ok, "{err}");
        assert_eq!(out, "10485760");
    }
}

#[test]
fn malformed_request_gets_400_and_proxy_keeps_serving() {
    let (remora, _up) = start();
    let addr = remora.addr("out");
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost orders.svc\r\n\r\n"[..],
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"\0\0\0\0\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(garbage).expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{:?} got {text:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    let (out, _, ok) = curl(&[
        "-H",
        "Host: orders.svc",
        &format!("{}/echo", remora.url("out")),
    ]);
    assert!(ok && out.contains("\"server\":\"web-1\""), "{out}");
}

#[test]
fn client_disconnect_mid_body_and_upstream_reset_mid_response() {
    let (mut remora, _up) = start();
    let addr = remora.addr("out");
    // Promise 1 MiB, send 10 KiB, vanish.
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(
            b"POST /upload HTTP/1.1\r\nHost: orders.svc\r\nContent-Length: 1048576\r\n\r\n",
        )
        .expect("w");
        s.write_all(&[b'z'; 10 * 1024]).expect("w");
        drop(s);
    }
    // The upstream breaks its response body part way: the client sees a truncated response
    // (HTTP/1.1: connection closed early; HTTP/2: stream reset), never a hang.
    for v in ["--http1.1", "--http2-prior-knowledge"] {
        let (_, err, ok) = curl(&[
            v,
            "-H",
            "Host: orders.svc",
            "-o",
            "/dev/null",
            &format!("{}/reset", remora.url("out")),
        ]);
        assert!(!ok, "{v}: a truncated body must be an error for the client");
        assert!(!err.is_empty());
    }
    assert!(remora.alive());
    // Every aborted exchange was cleaned up: no downstream connection is left open.
    eventually(
        "downstream connections closed",
        Duration::from_secs(10),
        || {
            (remora.metric_sum(
                "remora_downstream_connections_active",
                &["listener=\"out\""],
            ) == 0.0)
                .then_some(())
        },
    );
    assert_eq!(
        remora.metric_sum("remora_downstream_connections_total", &["listener=\"out\""]),
        22.0
    );
    let (out, _, ok) = curl(&[
        "-H",
        "Host: orders.svc",
        &format!("{}/echo", remora.url("out")),
    ]);
    assert!(ok && out.contains("web-1"), "{out}");
}

#[test]
fn metrics_pass_promtool_and_count_requests() {
    let (remora, _up) = start();
    for path in ["/echo", "/healthz", "/status/503"] {
        curl(&[
            "-H",
            "Host: orders.svc",
            &format!("{}{path}", remora.url("out")),
        ]);
    }
    let text = remora.metrics();
    let path = std::env::temp_dir().join(format!("remora-metrics-{}", std::process::id()));
    std::fs::write(&path, &text).expect("write");
    let out = remora_integration::peers::run(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("promtool check metrics < {}", path.display())),
    );
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = |labels: &[&str]| {
        remora_integration::remora::metric_sum(&text, "remora_requests_total", labels)
    };
    assert_eq!(
        m(&[
            "route=\"web\"",
            "status=\"200\"",
            "cluster=\"web\"",
            "listener=\"out\"",
            "direction=\"outbound\""
        ]),
        1.0,
        "{text}"
    );
    assert_eq!(m(&["route=\"health\"", "status=\"200\""]), 1.0);
    assert_eq!(m(&["route=\"web\"", "status=\"503\""]), 1.0);
    assert!(
        text.contains("remora_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(!text.contains("/echo"), "paths never become labels");
}
