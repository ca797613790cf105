//! A blocking HTTP client for tests: sends a batch of requests (HTTP/1.1 keep-alive, or
//! HTTP/2 prior knowledge) with a given concurrency and returns every answer with its
//! latency. Each request is bounded by [`REQUEST_TIMEOUT`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends `requests` (absolute URLs) over at most `concurrency` at a time; `http2` uses h2c
/// with prior knowledge. An error is the transport error's text.
pub fn send_all(
    requests: Vec<Request<Full<Bytes>>>,
    concurrency: usize,
    http2: bool,
) -> Vec<Result<Reply, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(http2)
                .pool_max_idle_per_host(concurrency)
                .build_http::<Full<Bytes>>();
        futures::stream::iter(requests)
            .map(|req| {
                let client = client.clone();
                async move {
                    let start = Instant::now();
                    let send = async {
                        let rsp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
                        let (parts, body) = rsp.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map_err(|e| format!("body: {e:?}"))?
                            .to_bytes();
                        Ok(Reply {
                            status: parts.status.as_u16(),
                            headers: parts.headers,
                            body,
                            elapsed: start.elapsed(),
                        })
                    };
                    tokio::time::timeout(REQUEST_TIMEOUT, send)
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()))
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await
    })
}

/// `n` GETs of `url`.
pub fn gets(url: &str, n: usize) -> Vec<Request<Full<Bytes>>> {
    (0..n)
        .map(|_| {
            Request::get(url)
                .body(Full::new(Bytes::new()))
                .expect("request")
        })
        .collect()
}

/// Statuses of replies, with transport errors as 0.
pub fn statuses(replies: &[Result<Reply, String>]) -> Vec<u16> {
    replies
        .iter()
        .map(|r| r.as_ref().map_or(0, |r| r.status))
        .collect()
}
