//! Opaque TCP proxying: pick an endpoint of the listener's cluster, connect, and copy bytes both
//! ways with half-close (a FIN from one side is passed on while the other direction flows).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use remora_filters::balance::PickContext;
use remora_filters::breaker::Limit;
use remora_filters::hash::hash64;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::snapshot::ClusterTarget;

pub async fn relay<I>(
    mut down: I,
    cluster: Arc<ClusterTarget>,
    client: SocketAddr,
    bytes: Counter,
    drain: CancellationToken,
    drain_timeout: std::time::Duration,
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
    let mut up = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            cluster.metrics.connect_error("refused");
            tracing::info!(endpoint = %endpoint.address, error = %e, "TCP connect failed");
            return;
        }
        Err(_) => {
            cluster.metrics.connect_error("timeout");
            tracing::info!(endpoint = %endpoint.address, ?timeout, "TCP connect timed out");
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let _active = cluster.metrics.opened(slot);
    endpoint.load.start();
    let start = Instant::now();
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => r,
        () = async { drain.cancelled().await; tokio::time::sleep(drain_timeout).await } => Ok((0, 0)),
    };
    endpoint.load.finish(start.elapsed(), Instant::now());
    match copied {
        Ok((a, b)) => {
            bytes.inc_by(a + b);
        }
        Err(e) => tracing::debug!(error = %e, "TCP relay ended with an error"),
    }
}
