//! Idle timeouts: a listener closes connections idle past its `idleTimeout` (HTTP/1.1 between
//! requests, HTTP/2 with a GOAWAY, opaque TCP with no byte either way), never earlier; a
//! route's `streamIdleTimeout` ends a response body whose upstream stalls.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use remora_integration::client::{gets, send_all};
use remora_integration::peers::PyServer;
use remora_integration::{Remora, Upstream};

const IDLE: Duration = Duration::from_millis(500);

fn yaml(http_upstream: &str, tcp_backend: &str, route_extra: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: http, address: "127.0.0.1:0", protocol: HTTP, routeTable: main, idleTimeout: 0.5s }}
  - {{ name: tcp, address: "127.0.0.1:0", protocol: TCP, cluster: backend, idleTimeout: 0.5s }}
routeTables:
  - name: main
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - {{ name: web, forward: {{ cluster: web }}{route_extra} }}
clusters:
  - {{ name: web, endpoints: [{{ address: "{http_upstream}" }}] }}
  - {{ name: backend, endpoints: [{{ address: "{tcp_backend}" }}] }}
"#
    )
}

/// Reads until EOF (or 10 s); returns the bytes and when the EOF came.
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (all, Instant::now()),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (all, Instant::now());
            }
            Err(e) => panic!("connection not closed: {e} after {} bytes", all.len()),
        }
    }
}

/// Reads HTTP/2 frames until EOF, acknowledging SETTINGS and PINGs; returns the frame types.
fn h2_frames_until_close(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut types = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            types.push(kind);
            if kind == 0x6 && flags & 0x1 == 0 {
                let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                ack.extend_from_slice(&buf[9..9 + len]);
                let _ = s.write_all(&ack);
            } else if kind == 0x4 && flags & 0x1 == 0 {
                let _ = s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
            }
            buf.drain(..9 + len);
        }
        match s.read(&mut chunk) {
            Ok(0) => return (types, Instant::now()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (types, Instant::now());
            }
            Err(e) => panic!("HTTP/2 connection not closed: {e}; frames {types:?}"),
        }
    }
}

#[test]
fn idle_connections_are_closed_after_the_listener_idle_timeout() {
    let web = Upstream::start("web");
    let echo = PyServer::start("tcp_peers.py", &["banner-server"]);
    let remora = Remora::start(&yaml(&web.addr.to_string(), &echo.addr(), ""));

    // HTTP/1.1 keep-alive: one request, then silence.
    let mut s = TcpStream::connect(remora.addr("http")).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let sent = Instant::now();
    let (bytes, closed) = read_to_close(&mut s);
    assert!(bytes.starts_with(b"HTTP/1.1 200"), "{bytes:?}");
    assert!(closed - sent >= IDLE, "closed after {:?}", closed - sent);

    // HTTP/2: a connection with no stream gets a GOAWAY, then the close (the client answers
    // the PING that a graceful HTTP/2 shutdown sends, as every client does).
    let mut s = TcpStream::connect(remora.addr("http")).expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("write");
    let opened = Instant::now();
    let (frames, closed) = h2_frames_until_close(&mut s);
    assert!(
        closed - opened >= IDLE,
        "closed after {:?}",
        closed - opened
    );
    assert!(
        frames.contains(&0x7),
        "no GOAWAY among frame types {frames:?}"
    );

    // Opaque TCP (a server-speaks-first peer): bytes flow both ways, then nothing.
    let mut s = TcpStream::connect(remora.addr("tcp")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut banner = [0u8; 23];
    s.read_exact(&mut banner).expect("banner");
    assert_eq!(&banner, b"220 remora-test ready\r\n");
    s.write_all(b"HELO x\r\n").expect("write");
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).expect("reply");
    assert_eq!(&reply, b"250 HELO x\r\n");
    let quiet = Instant::now();
    let (_, closed) = read_to_close(&mut s);
    assert!(closed - quiet >= IDLE, "closed after {:?}", closed - quiet);
}

#[test]
fn a_busy_connection_is_not_idle() {
    let web = Upstream::start("web");
    let echo = PyServer::start("tcp_peers.py", &["echo-server"]);
    let remora = Remora::start(&yaml(&web.addr.to_string(), &echo.addr(), ""));
    // A response that takes longer than the idle timeout still arrives (the request is in
    // flight, so the connection is not idle), over HTTP/1.1 and HTTP/2.
    let url = format!("{}/delay/1200", remora.url("http"));
    for http2 in [false, true] {
        let replies = send_all(gets(&url, 1), 1, http2);
        let r = replies[0].as_ref().expect("reply");
        assert_eq!(r.status, 200, "h2 {http2}: {r:?}");
    }
}

#[test]
fn a_stalled_response_body_ends_after_the_stream_idle_timeout() {
    // An upstream that sends its head and three bytes of a 100-byte body, then stalls.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = upstream.local_addr().expect("addr");
    let stalled = std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc");
        std::thread::sleep(Duration::from_secs(5));
    });
    let echo = PyServer::start("tcp_peers.py", &["echo-server"]);
    let remora = Remora::start(&yaml(
        &addr.to_string(),
        &echo.addr(),
        ", streamIdleTimeout: 0.5s",
    ));
    let started = Instant::now();
    let replies = send_all(gets(&remora.url("http"), 1), 1, false);
    let err = replies[0].as_ref().expect_err("the body must fail");
    assert!(err.contains("body"), "{err}");
    let took = started.elapsed();
    assert!(took >= IDLE && took < Duration::from_secs(4), "{took:?}");
    drop(stalled);
}
