//! The in-task HTTP/1.1 client against hand-written upstreams on 127.0.0.1: framing both
//! ways, connection reuse, stale pooled connections, early answers, truncation, 1xx.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::metrics::Metrics;
use crate::upstream::UpstreamMetrics;

/// An upstream that, per connection, reads one request head (and `body` bytes) at a time
/// and answers with the next scripted response; `close_after` responses per connection.
struct Script {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn upstream(responses: Vec<&'static str>, close_after: usize) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (a, s) = (accepted.clone(), seen.clone());
    tokio::spawn(async move {
        let responses = Arc::new(std::sync::Mutex::new(responses.into_iter()));
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let (responses, seen) = (responses.clone(), s.clone());
            tokio::spawn(async move {
                for _ in 0..close_after {
                    let mut req = Vec::new();
                    let mut byte = [0u8; 4096];
                    // Read until the head (and, for these tests, any body) has arrived.
                    loop {
                        let Ok(Ok(n)) =
                            tokio::time::timeout(Duration::from_millis(200), sock.read(&mut byte))
                                .await
                        else {
                            break;
                        };
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&byte[..n]);
                        if req.windows(4).any(|w| w == b"\r\n\r\n") && !wants_more(&req) {
                            break;
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&req).into_owned());
                    let Some(rsp) = responses.lock().unwrap().next() else {
                        return;
                    };
                    if sock.write_all(rsp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Script {
        addr,
        accepted,
        seen,
    }
}

/// A chunked request is complete at its last chunk; a content-length one at its length.
fn wants_more(req: &[u8]) -> bool {
    let text = String::from_utf8_lossy(req);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.contains("transfer-encoding: chunked") {
        return !body.ends_with("0\r\n\r\n");
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() < n)
}

static BREAKERS: std::sync::LazyLock<remora_filters::breaker::Breakers> =
    std::sync::LazyLock::new(Default::default);
static CLUSTER: std::sync::LazyLock<std::sync::Arc<str>> =
    std::sync::LazyLock::new(|| std::sync::Arc::from("up"));

fn params(metrics: &UpstreamMetrics) -> ConnectParams<'_> {
    ConnectParams {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
        max_idle: 8,
        metrics,
        breakers: &BREAKERS,
        limits: remora_control_api::resilience::CircuitBreakers::default(),
        cluster: &CLUSTER,
        stream_idle: Duration::from_secs(300),
        tls: None,
    }
}

fn get(path: &str) -> Request<ProxyBody> {
    Request::get(path)
        .header("host", "up")
        .body(ProxyBody::empty())
        .unwrap()
}

async fn body_of(rsp: Response<ProxyBody>) -> (Bytes, Option<http::HeaderMap>) {
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

fn setup() -> (Arc<Pool>, UpstreamMetrics) {
    let m = Metrics::new();
    let um = UpstreamMetrics::new(&m, &Arc::from("c"));
    (
        Arc::new(Pool::new("127.0.0.1:9".parse().unwrap(), None)),
        um,
    )
}

#[tokio::test]
async fn lengths_chunks_and_trailers_and_the_connection_is_reused() {
    let up = upstream(
        vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 9\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ],
        10,
    )
    .await;
    let (_, um) = setup();
    let pool = Arc::new(Pool::new(up.addr, None));
    let rsp = send(&pool, params(&um), get("/a")).await.unwrap();
    assert_eq!(rsp.headers()["content-length"], "5");
    assert_eq!(body_of(rsp).await.0, "hello");
    let rsp = send(&pool, params(&um), get("/b")).await.unwrap();
    let (body, trailers) = body_of(rsp).await;
    assert_eq!(body, "abcde");
    assert_eq!(trailers.unwrap()["x-sum"], "9");
    let rsp = send(&pool, params(&um), get("/c")).await.unwrap();
    assert_eq!(rsp.status(), 204);
    assert!(rsp.body().is_end_stream());
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one connection for all three"
    );
    assert_eq!(pool.idle_count(), 1);
    let seen = up.seen.lock().unwrap();
    assert!(
        seen[0].starts_with("GET /a HTTP/1.1\r\nhost: up\r\n\r\n"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_retried_fresh() {
    // Each connection serves one response, then the upstream closes it while it idles.
    let up = upstream(
        vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ],
        1,
    )
    .await;
    let (_, um) = setup();
    let pool = Arc::new(Pool::new(up.addr, None));
    for _ in 0..2 {
        let rsp = send(&pool, params(&um), get("/")).await.unwrap();
        assert_eq!(body_of(rsp).await.0, "ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn streamed_request_bodies_go_chunked_and_known_ones_with_a_length() {
    let up = upstream(
        vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ],
        10,
    )
    .await;
    let (_, um) = setup();
    let pool = Arc::new(Pool::new(up.addr, None));
    let req = Request::post("/full")
        .header("host", "up")
        .body(ProxyBody::full("abc"))
        .unwrap();
    send(&pool, params(&um), req).await.unwrap();
    // An unknown-length body, with trailers: another upstream's chunked response body.
    let source = upstream(
        vec!["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\npart1\r\n5\r\npart2\r\n0\r\nx-t: 1\r\n\r\n"],
        1,
    )
    .await;
    let from = Arc::new(Pool::new(source.addr, None));
    let streamed = send(&from, params(&um), get("/src"))
        .await
        .unwrap()
        .into_body();
    assert!(streamed.size_hint().exact().is_none());
    let req = Request::post("/stream")
        .header("host", "up")
        .body(streamed)
        .unwrap();
    send(&pool, params(&um), req).await.unwrap();
    let seen = up.seen.lock().unwrap();
    assert!(seen[0].contains("content-length: 3\r\n\r\nabc"), "{seen:?}");
    assert!(
        seen[1].contains("transfer-encoding: chunked\r\n"),
        "{seen:?}"
    );
    assert!(
        seen[1].ends_with("5\r\npart1\r\n5\r\npart2\r\n0\r\nx-t: 1\r\n\r\n"),
        "chunks and trailers pass through: {seen:?}"
    );
}

#[tokio::test]
async fn informational_responses_are_skipped_and_close_delimited_bodies_end_the_connection() {
    let up = upstream(
        vec![
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close",
        ],
        1,
    )
    .await;
    let (_, um) = setup();
    let pool = Arc::new(Pool::new(up.addr, None));
    let rsp = send(&pool, params(&um), get("/")).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(body_of(rsp).await.0, "until close");
    assert_eq!(
        pool.idle_count(),
        0,
        "a close-delimited connection is not pooled"
    );
}

#[tokio::test]
async fn a_truncated_body_is_an_error_and_a_bad_head_is_malformed() {
    let up = upstream(
        vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
        1,
    )
    .await;
    let (_, um) = setup();
    let pool = Arc::new(Pool::new(up.addr, None));
    let rsp = send(&pool, params(&um), get("/")).await.unwrap();
    assert!(rsp.into_body().collect().await.is_err());
    assert_eq!(pool.idle_count(), 0);

    let up = upstream(vec!["HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"], 1).await;
    let pool = Arc::new(Pool::new(up.addr, None));
    let err = send(&pool, params(&um), get("/")).await.unwrap_err();
    assert!(matches!(err, H1Error::Malformed(_)), "{err}");

    let up = upstream(vec![], 1).await;
    let pool = Arc::new(Pool::new(up.addr, None));
    let err = send(&pool, params(&um), get("/")).await.unwrap_err();
    assert!(matches!(err, H1Error::Closed), "{err}");
}
