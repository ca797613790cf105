//! Serving one downstream HTTP connection (HTTP/1.1 with upgrades, or HTTP/2) with hyper,
//! with graceful shutdown on drain or after the listener's idle timeout with no request in
//! flight: HTTP/2 GOAWAY, HTTP/1.1 close after the current request.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::http::body::ProxyBody;
use crate::http::idle::{ActiveRequest, idle};
use crate::http::proxy::{ConnInfo, handle};
use crate::state::Proxy;

/// Per-connection limits. HTTP/2 limits guard against floods (RFC 9113 §10.5).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONCURRENT_STREAMS: u32 = 1024;
const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
const MAX_H1_BUF: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

pub async fn serve<I>(
    io: I,
    version: HttpVersion,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    drain: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = conn.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let active = ActiveRequest::new(conn.clone());
        let rsp = handle(req.map(ProxyBody::from), proxy.clone(), conn.clone());
        async move {
            let Ok(rsp) = rsp.await;
            Ok::<_, std::convert::Infallible>(rsp.map(|body| ProxyBody::Tracked {
                body: Box::pin(body),
                active,
            }))
        }
    });
    let io = TokioIo::new(io);
    let result = match version {
        HttpVersion::Http1 => {
            let c = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_H1_BUF)
                .serve_connection(io, svc)
                .with_upgrades();
            tokio::pin!(c);
            tokio::select! {
                r = c.as_mut() => r,
                () = drain.cancelled() => {
                    c.as_mut().graceful_shutdown();
                    c.await
                }
                () = idle(&watch) => {
                    c.as_mut().graceful_shutdown();
                    c.await
                }
            }
        }
        HttpVersion::Http2 => {
            let c = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .max_header_list_size(MAX_HEADER_LIST_SIZE)
                .keep_alive_interval(Duration::from_secs(60))
                .keep_alive_timeout(Duration::from_secs(20))
                .serve_connection(io, svc);
            tokio::pin!(c);
            tokio::select! {
                r = c.as_mut() => r,
                () = drain.cancelled() => {
                    c.as_mut().graceful_shutdown();
                    c.await
                }
                () = idle(&watch) => {
                    tracing::debug!("closing an idle HTTP/2 connection (GOAWAY)");
                    c.as_mut().graceful_shutdown();
                    c.await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}
