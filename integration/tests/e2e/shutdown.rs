//! Graceful shutdown: SIGTERM stops accepting, lets in-flight requests finish within the drain
//! timeout, and exits 0.

use std::time::Duration;

use remora_integration::{Remora, Upstream, eventually};

use crate::sidecar_yaml;

/// Sends `GET path` on a fresh connection and returns everything read until it closes.
fn request_in_thread(addr: std::net::SocketAddr, path: &str) -> std::thread::JoinHandle<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: orders.svc\r\n\r\n");
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        std::io::Write::write_all(&mut s, request.as_bytes()).expect("write");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let up = Upstream::start("slow");
    // The default route has no timeout; /delay/1500 holds the request while we look.
    let yaml = sidecar_yaml("v1", &[&up], "").replace(
        "          - name: slow\n            match: { pathPrefix: /delay/ }\n            forward: { cluster: web }\n            timeout: 0.5s\n",
        "",
    );
    let mut remora = Remora::start(&yaml);
    let addr = remora.addr("out");
    let inflight = request_in_thread(addr, "/delay/1500");
    eventually("request in flight", Duration::from_secs(5), || {
        (up.requests() == 1).then_some(())
    });
    remora.signal("TERM");
    // While it drains: not ready, and the listener no longer accepts.
    eventually(
        "/ready turns 503 during the drain",
        Duration::from_secs(5),
        || (remora.admin_get("/ready").0 == 503).then_some(()),
    );
    eventually(
        "the listener stops accepting",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(addr).is_err().then_some(()),
    );
    assert!(
        remora.alive(),
        "exited before the in-flight request finished"
    );
    assert_eq!(remora.wait_exit(Duration::from_secs(15)), Some(0));
    let rsp = inflight.join().expect("client");
    assert!(
        rsp.starts_with("HTTP/1.1 200"),
        "in-flight request finished: {rsp}"
    );
    assert!(
        rsp.to_ascii_lowercase().contains("connection: close"),
        "keep-alive ended by the drain: {rsp}"
    );
}

#[test]
fn sigint_drains_too_and_the_drain_timeout_bounds_the_wait() {
    let up = Upstream::start("slow");
    let yaml = format!(
        "drainTimeout: 0.5s\n{}",
        sidecar_yaml("v1", &[&up], "").replace("timeout: 0.5s", "timeout: 60s")
    );
    let mut remora = Remora::start(&yaml);
    let inflight = request_in_thread(remora.addr("out"), "/delay/20000");
    eventually("request in flight", Duration::from_secs(5), || {
        (up.requests() == 1).then_some(())
    });
    let asked = std::time::Instant::now();
    remora.signal("INT");
    // The request would take 20 s; the drain gives up after 0.5 s and the exit is clean.
    assert_eq!(remora.wait_exit(Duration::from_secs(10)), Some(0));
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    let rsp = inflight.join().expect("client");
    assert!(
        !rsp.contains(" 200 "),
        "the 20 s request cannot have completed: {rsp}"
    );
    assert!(
        remora.logs().contains("drain timeout elapsed"),
        "{}",
        remora.logs()
    );
}

#[test]
fn sigterm_sends_http2_goaway_and_finishes_the_stream() {
    let up = Upstream::start("slow");
    let mut remora = Remora::start(&sidecar_yaml("v1", &[&up], ""));
    let url = format!("{}/delay/400", remora.url("out"));
    let client = std::thread::spawn(move || {
        remora_integration::peers::run(std::process::Command::new("nghttp").args([
            "-v",
            "-H",
            ":authority: orders.svc",
            &url,
        ]))
    });
    eventually("h2 request in flight", Duration::from_secs(5), || {
        (up.requests() == 1).then_some(())
    });
    assert_eq!(remora.terminate(Duration::from_secs(15)), Some(0));
    let out = client.join().expect("nghttp");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("recv GOAWAY frame"),
        "GOAWAY sent on drain:\n{text}"
    );
    assert!(
        text.contains(":status: 200"),
        "the in-flight stream completed:\n{text}"
    );
}
