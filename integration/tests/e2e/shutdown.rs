//! Graceful shutdown: SIGTERM stops accepting, lets in-flight requests finish within the drain
//! timeout, and exits 0.

use std::time::Duration;

use remora_integration::{Remora, Upstream, eventually};

use crate::sidecar_yaml;

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let up = Upstream::start("slow");
    // The slow route's timeout is 0.5 s; use the default route with a 300 ms delay.
    let mut remora = Remora::start(&sidecar_yaml("v1", &[&up], ""));
    let addr = remora.addr("out");
    let inflight = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        std::io::Write::write_all(
            &mut s,
            b"GET /delay/300 HTTP/1.1\r\nHost: orders.svc\r\n\r\n",
        )
        .expect("write");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    eventually("request in flight", Duration::from_secs(5), || {
        (up.requests() == 1).then_some(())
    });
    let code = remora.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let rsp = inflight.join().expect("client");
    assert!(
        rsp.starts_with("HTTP/1.1 200"),
        "in-flight request finished: {rsp}"
    );
    assert!(
        rsp.to_ascii_lowercase().contains("connection: close"),
        "keep-alive ended by the drain: {rsp}"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
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
