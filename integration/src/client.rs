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
                async move { fetch(&client, req).await }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await
    })
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// One request, its whole body read, within [`REQUEST_TIMEOUT`].
async fn fetch(client: &Client, req: Request<Full<Bytes>>) -> Result<Reply, String> {
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

/// Sends `requests` at `per_second` (one every 1/rate, each on its own task so a slow answer
/// does not hold back the schedule), over pooled HTTP/1.1 connections.
pub fn send_paced(
    requests: Vec<Request<Full<Bytes>>>,
    per_second: u32,
) -> Vec<Result<Reply, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build_http::<Full<Bytes>>();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::with_capacity(requests.len());
        for req in requests {
            tick.tick().await;
            let client = client.clone();
            tasks.push(tokio::spawn(async move { fetch(&client, req).await }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
        }
        out
    })
}
