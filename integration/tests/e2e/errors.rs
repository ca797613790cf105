//! Every error the proxy answers itself says why, in `x-remora-error` and the body, and is
//! counted by reason: no endpoints, refused, connect timeout, upstream reset, CONNECT.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use remora_integration::Remora;
use remora_integration::peers::curl;

/// One HTTP listener `out` routing everything to cluster `c`, whose endpoints are `endpoints`.
fn one_cluster(endpoints: &str, extra: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: main }}
routeTables:
  - name: main
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: all, forward: {{ cluster: c }} }}] }}]
clusters:
  - {{ name: c, endpoints: [{endpoints}]{extra} }}
"#
    )
}

fn get(remora: &Remora, extra: &[&str]) -> String {
    let url = remora.url("out");
    let mut args = vec!["-i"];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).0
}

fn counted(remora: &Remora, reason: &str) -> f64 {
    remora.metric_sum(
        "remora_proxy_errors_total",
        &[&format!("error=\"{reason}\"")],
    )
}

#[test]
fn a_cluster_without_endpoints_answers_503_no_healthy_endpoints() {
    let remora = Remora::start(&one_cluster("", ""));
    let out = get(&remora, &[]);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(
        out.contains("x-remora-error: no-healthy-endpoints"),
        "{out}"
    );
    assert!(out.contains("cluster \"c\" has no endpoints"), "{out}");
    assert_eq!(counted(&remora, "no-healthy-endpoints"), 1.0);
}

#[test]
fn an_upstream_that_closes_without_answering_gives_502_upstream_reset() {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = upstream.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        // Read the request, then close without a byte of response.
        for _ in 0..2 {
            let (mut s, _) = upstream.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
        }
    });
    let remora = Remora::start(&one_cluster(&format!("{{ address: \"{addr}\" }}"), ""));
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let out = get(&remora, &[version]);
        assert!(out.contains(" 502"), "{version}: {out}");
        assert!(
            out.contains("x-remora-error: upstream-reset"),
            "{version}: {out}"
        );
    }
    peer.join().expect("peer");
    assert_eq!(counted(&remora, "upstream-reset"), 2.0);
}

#[test]
fn an_endpoint_that_never_completes_the_handshake_gives_503_connect_timeout() {
    let (_held, addr) = remora_integration::peers::unaccepting_listener();
    let remora = Remora::start(&one_cluster(
        &format!("{{ address: \"{addr}\" }}"),
        ", connectTimeout: 0.3s",
    ));
    let out = get(&remora, &[]);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("x-remora-error: connect-timeout"), "{out}");
    assert!(out.contains("timed out after 300ms"), "{out}");
    assert_eq!(counted(&remora, "connect-timeout"), 1.0);
    assert_eq!(
        remora.metric_sum(
            "remora_upstream_connect_errors_total",
            &["reason=\"timeout\""]
        ),
        1.0
    );
    drop(_held);
}

#[test]
fn connect_requests_are_refused_not_forwarded() {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    upstream.set_nonblocking(true).expect("nonblocking");
    let addr = upstream.local_addr().expect("addr");
    let remora = Remora::start(&one_cluster(
        &format!("{{ address: \"{addr}\" }}"),
        ", protocol: HTTP1",
    ));
    let target = remora.addr("out");
    let mut s = std::net::TcpStream::connect(target).expect("connect");
    std::io::Write::write_all(
        &mut s,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("read");
    let out = String::from_utf8_lossy(&buf[..n]);
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(
        out.contains("x-remora-error: connect-not-supported"),
        "{out}"
    );
    assert!(
        upstream.accept().is_err(),
        "a CONNECT must never reach the upstream"
    );
}
