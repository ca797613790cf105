//! Upstream protocol per cluster (HTTP1, HTTP2, SAME_AS_DOWNSTREAM), request trailers in both
//! HTTP versions, HTTP/2 multiplexing over one pooled connection, and idle-connection expiry.

use std::io::{Read, Write};
use std::time::Duration;

use remora_integration::peers::curl;
use remora_integration::{Remora, Upstream, eventually};

use crate::json;

/// Listener `out` with three hosts, one per upstream protocol, all to the same upstream.
fn yaml(up: &Upstream, idle: &str) -> String {
    let cluster = |name: &str, protocol: &str| {
        format!(
            "  - {{ name: {name}, endpoints: [{{ address: \"{}\" }}], protocol: {protocol}{idle} }}\n",
            up.addr
        )
    };
    format!(
        r#"listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: main }}
routeTables:
  - name: main
    virtualHosts:
      - {{ name: h1, domains: [h1], routes: [{{ name: h1, forward: {{ cluster: h1 }} }}] }}
      - {{ name: h2, domains: [h2], routes: [{{ name: h2, forward: {{ cluster: h2 }} }}] }}
      - {{ name: same, domains: [same], routes: [{{ name: same, forward: {{ cluster: same }} }}] }}
clusters:
{}{}{}"#,
        cluster("h1", "HTTP1"),
        cluster("h2", "HTTP2"),
        cluster("same", "SAME_AS_DOWNSTREAM")
    )
}

#[test]
fn each_cluster_speaks_its_configured_upstream_protocol() {
    let up = Upstream::start("echo");
    let remora = Remora::start(&yaml(&up, ""));
    let url = format!("{}/echo", remora.url("out"));
    for (downstream, host, expected) in [
        ("--http1.1", "h1", "HTTP/1.1"),
        ("--http1.1", "h2", "HTTP/2.0"),
        ("--http1.1", "same", "HTTP/1.1"),
        ("--http2-prior-knowledge", "h1", "HTTP/1.1"),
        ("--http2-prior-knowledge", "h2", "HTTP/2.0"),
        ("--http2-prior-knowledge", "same", "HTTP/2.0"),
    ] {
        let (out, err, ok) = curl(&[downstream, "-H", &format!("Host: {host}"), &url]);
        assert!(ok, "{downstream} {host}: {err}");
        assert_eq!(
            json(&out)["version"],
            expected,
            "{downstream} to cluster {host}"
        );
    }
}

#[test]
fn request_trailers_reach_the_upstream_over_http1_and_http2() {
    let up = Upstream::start("echo");
    let remora = Remora::start(&yaml(&up, ""));
    let addr = remora.addr("out");
    // HTTP/1.1 chunked with a trailer section, to an HTTP/1.1 and to an HTTP/2 upstream. The
    // client declares it in `Trailer` (RFC 9110 6.6.2): an HTTP/1.1 hop sends only declared
    // trailer fields.
    for host in ["h1", "h2"] {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\nTE: trailers\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n"
        )
        .expect("write");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut rsp = String::new();
        let _ = s.read_to_string(&mut rsp);
        let body = rsp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // The response itself may be chunked: take the JSON object out of it.
        let start = body.find('{').unwrap_or(0);
        let end = body.rfind('}').map_or(body.len(), |e| e + 1);
        let v = json(&body[start..end]);
        assert_eq!(v["bodyLength"], 5, "{host}: {rsp}");
        assert_eq!(
            v["trailers"]["x-checksum"], "abc123",
            "{host}: the request trailer was lost: {rsp}"
        );
    }
    // HTTP/2 with trailers (hyper-h2 peer), to an HTTP/2 upstream.
    let out = remora_integration::peers::run(
        std::process::Command::new(remora_integration::peers::python())
            .arg(remora_integration::peers::peer_script(
                "h2_request_trailers.py",
            ))
            .args(["--target", &addr.to_string(), "--authority", "h2"]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(text.trim());
    assert_eq!(v["trailers"]["x-checksum"], "abc123", "{text}");
}

#[test]
fn http2_upstream_requests_share_one_connection() {
    let up = Upstream::start("echo");
    let remora = Remora::start(&yaml(&up, ""));
    // 20 concurrent streams on one downstream connection, to the HTTP/2 cluster.
    let url = format!("{}/delay/200", remora.url("out"));
    let args = vec!["-n", "-H", ":authority: h2", "-m", "20", url.as_str()];
    let out = remora_integration::peers::run(std::process::Command::new("nghttp").args(&args));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(up.requests(), 20);
    assert_eq!(
        up.connections(),
        1,
        "HTTP/2 streams multiplex on one connection"
    );
}

#[test]
fn idle_upstream_connections_are_closed_after_idle_timeout() {
    let up = Upstream::start("echo");
    let remora = Remora::start(&yaml(&up, ", idleTimeout: 0.5s"));
    let url = format!("{}/echo", remora.url("out"));
    let (_, err, ok) = curl(&["-H", "Host: h1", &url]);
    assert!(ok, "{err}");
    let idle = || {
        let v = json(&remora.admin_get("/clusters").1);
        v["h1"]["endpoints"][0]["idleConnections"].as_u64()
    };
    eventually("the connection is pooled", Duration::from_secs(5), || {
        (idle() == Some(1)).then_some(())
    });
    eventually(
        "the idle connection expires",
        Duration::from_secs(15),
        || (idle() == Some(0)).then_some(()),
    );
    // A new request opens a fresh connection and succeeds.
    let (_, err, ok) = curl(&["-H", "Host: h1", &url]);
    assert!(ok, "{err}");
    assert_eq!(up.connections(), 2);
}
