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
