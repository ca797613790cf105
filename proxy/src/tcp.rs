//! Opaque TCP proxying: pick an endpoint of the listener's cluster, connect, and copy bytes both
//! ways with half-close (a FIN from one side is passed on while the other direction flows);
//! the relay ends after the listener's idle timeout with no byte either way.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use remora_filters::balance::PickContext;
use remora_filters::breaker::Limit;
use remora_filters::hash::hash64;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::snapshot::ClusterTarget;

pub async fn relay<I>(
    down: I,
    cluster: Arc<ClusterTarget>,
    client: SocketAddr,
    bytes: Counter,
    drain: CancellationToken,
    drain_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let hash = cluster.hash_key.as_ref().map(|_| match client.ip() {
        std::net::IpAddr::V4(ip) => hash64(&ip.octets()),
        std::net::IpAddr::V6(ip) => hash64(&ip.octets()),
    });
    let Some(idx) = cluster
        .balancer
        .pick_available(&cluster.endpoints, PickContext { hash }, None)
    else {
        tracing::info!(cluster = %cluster.cluster.name, "no endpoints for TCP connection; closing");
        return;
    };
    let endpoint = &cluster.endpoints[idx];
    let limits = cluster.cluster.resilience.breakers;
    let slot = match cluster
        .state
        .breakers
        .connections
        .try_acquire(Limit::Connections, limits.max_connections)
    {
        Ok(slot) => slot,
        Err(o) => {
            cluster.overflowed(o.limit);
            tracing::info!(cluster = %cluster.cluster.name, "{o}: closing TCP connection");
            return;
        }
    };
    let timeout = cluster.cluster.connect_timeout;
    let up = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            cluster.record_connect(idx, false);
            cluster.metrics.connect_error("refused");
            tracing::info!(endpoint = %endpoint.address, error = %e, "TCP connect failed");
            return;
        }
        Err(_) => {
            cluster.record_connect(idx, false);
            cluster.metrics.connect_error("timeout");
            tracing::info!(endpoint = %endpoint.address, ?timeout, "TCP connect timed out");
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let mut up = match &cluster.tls {
        None => crate::upstream::io::UpstreamIo::Plain(up),
        Some(tls) => {
            let handshake = crate::tls::client::connect(
                tls,
                endpoint.pool.identity(),
                up,
                endpoint.address,
                crate::tls::client::Alpn::None,
            );
            let result = tokio::time::timeout(timeout, handshake)
                .await
                .unwrap_or_else(|_| {
                    Err(crate::tls::client::HandshakeError {
                        reason: "timeout",
                        detail: format!("no handshake within {timeout:?}"),
                    })
                });
            match result {
                Ok(s) => {
                    cluster
                        .metrics
                        .count(cluster.metrics.tls_handshakes(), "ok");
                    crate::upstream::io::UpstreamIo::Tls(Box::new(s))
                }
                Err(e) => {
                    cluster.record_connect(idx, false);
                    cluster
                        .metrics
                        .count(cluster.metrics.tls_handshakes(), e.reason);
                    tracing::warn!(endpoint = %endpoint.address, reason = e.reason, error = %e.detail, "upstream TLS handshake failed; closing the TCP connection");
                    return;
                }
            }
        }
    };
    cluster.record_connect(idx, true);
    let _active = cluster.metrics.opened(slot);
    endpoint.load.start();
    let start = Instant::now();
    let activity = Activity::default();
    let mut down = Tracked {
        io: down,
        activity: &activity,
    };
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => r,
        () = async { drain.cancelled().await; tokio::time::sleep(drain_timeout).await } => Ok((0, 0)),
        () = activity.idle(idle_timeout) => {
            tracing::debug!(endpoint = %endpoint.address, ?idle_timeout, "closing an idle TCP relay");
            Ok((0, 0))
        }
    };
    endpoint.load.finish(start.elapsed(), Instant::now());
    match copied {
        Ok((a, b)) => {
            bytes.inc_by(a + b);
        }
        Err(e) => tracing::debug!(error = %e, "TCP relay ended with an error"),
    }
}

/// When bytes last moved through a relay (either way: the client side sees both).
#[derive(Debug)]
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `timeout`.
    async fn idle(&self, timeout: std::time::Duration) {
        loop {
            let last = std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= timeout {
                return;
            }
            tokio::time::sleep(timeout - quiet).await;
        }
    }
}

/// The client side of a relay, noting activity on every read and write.
struct Tracked<'a, I> {
    io: I,
    activity: &'a Activity,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<'_, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
