//! One accepted downstream connection: count it, detect its protocol (per the listener), and
//! hand it to the HTTP server or the TCP relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use remora_control_api::listener::Protocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::detect::{Detected, detect};
use crate::http::proxy::ConnInfo;
use crate::http::server::{self, HttpVersion};
use crate::io::PrefixedIo;
use crate::metrics::ListenerLabels;
use crate::state::Proxy;
use crate::tls::server::Inbound;

/// `REMORA_H1_FAST_PATH=0` serves every HTTP/1.1 connection with hyper (a diagnostic switch,
/// for side-by-side measurement of the fast path).
static H1_FAST_PATH: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("REMORA_H1_FAST_PATH").map_or(true, |v| v != "0"));

/// How long an HTTP listener waits for the first request bytes.
const HTTP_FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(
    proxy: Arc<Proxy>,
    listener: Arc<str>,
    mut stream: TcpStream,
    client: SocketAddr,
    drain: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let snapshot = proxy.snapshot.load_full();
    let Some(target) = snapshot.listeners.get(&listener).cloned() else {
        return;
    };
    let drain_timeout = snapshot.drain_timeout;
    let tls = snapshot.tls.get(&listener).cloned();
    drop(snapshot);
    let _slot = match &target.conn_limits {
        None => None,
        Some(limits) => match limits.admit(client.ip()) {
            Ok(slot) => Some(slot),
            Err(reason) => {
                proxy
                    .metrics
                    .connections_rejected
                    .get_or_create(&crate::metrics::ConnLimitLabels {
                        listener: target.label.clone(),
                        reason,
                    })
                    .inc();
                tracing::debug!(%listener, %client, reason, "connection over the listener's limits; closing");
                return;
            }
        },
    };
    let labels = ListenerLabels {
        direction: target.listener.direction.as_str(),
        listener: target.label.clone(),
    };
    proxy
        .metrics
        .downstream_connections
        .get_or_create(&labels)
        .inc();
    let active = proxy
        .metrics
        .downstream_active
        .get_or_create(&labels)
        .clone();
    active.inc();
    let closed = proxy
        .metrics
        .downstream_closed
        .get_or_create(&labels)
        .clone();
    let _closed = scopeguard(move || {
        closed.inc();
    });
    let mut info = ConnInfo::new(listener.clone(), client, target.listener.idle_timeout);
    if let Some(tls) = tls {
        // Boxed: the handshake's state would otherwise size every connection's task.
        let accepted = Box::pin(crate::tls::server::accept(
            &tls,
            &proxy.mesh_identity,
            stream,
            &listener,
            &proxy.metrics,
        ))
        .await;
        match accepted {
            Inbound::Tls(accepted) => {
                info.peer_identity = accepted.identity.as_deref().map(Arc::from);
                // Any TLS listener removes a client's own identity header (TERMINATE has
                // no identity to forward).
                info.mtls = Some(tls.settings.forward_peer_identity);
                let decrypted = Decrypted {
                    proxy: proxy.clone(),
                    target,
                    labels,
                    drain,
                    drain_timeout,
                };
                let conn = Arc::new(info);
                Box::pin(decrypted.serve(accepted.stream, accepted.protocol, conn)).await;
                active.dec();
                return;
            }
            Inbound::Plaintext(s) => {
                // A plaintext client on a permissive mTLS listener has no identity; any it
                // claims in a header is removed.
                stream = s;
                info.mtls = Some(tls.settings.forward_peer_identity);
            }
            Inbound::Refused => {
                active.dec();
                return;
            }
        }
    }

    let mut buf = BytesMut::new();
    let detected = match target.listener.protocol {
        Protocol::Tcp => Ok(Detected::Opaque),
        Protocol::Auto => detect(&mut stream, &mut buf, Some(target.listener.detect_timeout)).await,
        Protocol::Http => tokio::time::timeout(
            HTTP_FIRST_BYTES_TIMEOUT,
            detect(&mut stream, &mut buf, None),
        )
        .await
        .unwrap_or(Ok(Detected::Closed)),
    };
    if matches!(detected, Ok(Detected::Http2))
        && !crate::detect::settings_first(&mut stream, &mut buf, HTTP_FIRST_BYTES_TIMEOUT)
            .await
            .unwrap_or(false)
    {
        tracing::debug!(%listener, "HTTP/2 client's first frame is not SETTINGS; closing");
        let _ =
            tokio::io::AsyncWriteExt::write_all(&mut stream, &crate::detect::GOAWAY_PROTOCOL_ERROR)
                .await;
        active.dec();
        return;
    }
    let conn = Arc::new(info);
    if matches!(detected, Ok(Detected::Http1)) && *H1_FAST_PATH {
        // Boxed here (and below): the task's size is the future's, for the whole life of the
        // connection, and an idle connection should not carry the handler's state.
        Box::pin(crate::http::h1_server::serve(
            stream,
            buf,
            proxy.clone(),
            conn,
            drain,
        ))
        .await;
        active.dec();
        return;
    }
    let io = PrefixedIo::new(buf, stream);
    match detected {
        Ok(Detected::Http1) => {
            Box::pin(server::serve(
                io,
                HttpVersion::Http1,
                proxy.clone(),
                conn,
                drain,
            ))
            .await;
        }
        Ok(Detected::Http2) => {
            Box::pin(server::serve(
                io,
                HttpVersion::Http2,
                proxy.clone(),
                conn,
                drain,
            ))
            .await;
        }
        Ok(Detected::Opaque) => match target.cluster.clone() {
            Some(_) if !tcp_allowed(&proxy, &target, &conn) => {}
            Some(cluster) => {
                let bytes = proxy.metrics.tcp_bytes.get_or_create(&labels).clone();
                Box::pin(crate::tcp::relay(
                    io,
                    cluster,
                    client,
                    bytes,
                    drain,
                    drain_timeout,
                    target.listener.idle_timeout,
                ))
                .await;
            }
            None => tracing::debug!(%listener, "non-HTTP bytes on an HTTP-only listener; closing"),
        },
        Ok(Detected::Closed) => {}
        Err(e) => tracing::debug!(error = %e, "connection failed during protocol detection"),
    }
    active.dec();
}

/// A TLS connection after its handshake: served as HTTP in the protocol ALPN chose, else
/// as the listener's protocol says (detected on the decrypted bytes for AUTO).
struct Decrypted {
    proxy: Arc<Proxy>,
    target: Arc<crate::snapshot::ListenerTarget>,
    labels: ListenerLabels,
    drain: CancellationToken,
    drain_timeout: Duration,
}

impl Decrypted {
    async fn serve<I>(self, mut io: I, alpn: Option<HttpVersion>, conn: Arc<ConnInfo>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = self.target.listener.protocol;
        let detected = match (protocol, alpn) {
            (Protocol::Tcp, _) => Ok(Detected::Opaque),
            (_, Some(HttpVersion::Http2)) => Ok(Detected::Http2),
            (_, Some(HttpVersion::Http1)) => Ok(Detected::Http1),
            (Protocol::Http, None) => {
                let mut buf = BytesMut::new();
                let d =
                    tokio::time::timeout(HTTP_FIRST_BYTES_TIMEOUT, detect(&mut io, &mut buf, None))
                        .await
                        .unwrap_or(Ok(Detected::Closed));
                return self.proxy_or_relay(PrefixedIo::new(buf, io), d, conn).await;
            }
            (Protocol::Auto, None) => {
                let mut buf = BytesMut::new();
                let d = detect(&mut io, &mut buf, Some(self.target.listener.detect_timeout)).await;
                return self.proxy_or_relay(PrefixedIo::new(buf, io), d, conn).await;
            }
        };
        self.proxy_or_relay(PrefixedIo::new(BytesMut::new(), io), detected, conn)
            .await;
    }

    async fn proxy_or_relay<I>(
        self,
        io: I,
        detected: std::io::Result<Detected>,
        conn: Arc<ConnInfo>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let version = match detected {
            Ok(Detected::Http1) => HttpVersion::Http1,
            Ok(Detected::Http2) => HttpVersion::Http2,
            Ok(Detected::Opaque) => {
                let Some(cluster) = self.target.cluster.clone() else {
                    tracing::debug!(listener = %conn.listener, "non-HTTP bytes on an HTTP-only listener; closing");
                    return;
                };
                if !tcp_allowed(&self.proxy, &self.target, &conn) {
                    return;
                }
                let bytes = self
                    .proxy
                    .metrics
                    .tcp_bytes
                    .get_or_create(&self.labels)
                    .clone();
                Box::pin(crate::tcp::relay(
                    io,
                    cluster,
                    conn.client,
                    bytes,
                    self.drain,
                    self.drain_timeout,
                    self.target.listener.idle_timeout,
                ))
                .await;
                return;
            }
            Ok(Detected::Closed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection failed during protocol detection");
                return;
            }
        };
        Box::pin(server::serve(io, version, self.proxy, conn, self.drain)).await;
    }
}

/// Authorization for an opaque TCP connection (identity and source network only): a
/// denied connection is closed at once.
fn tcp_allowed(proxy: &Proxy, target: &crate::snapshot::ListenerTarget, conn: &ConnInfo) -> bool {
    let Some(authz) = &target.listener.authorization else {
        return true;
    };
    let caller = remora_filters::authz::Caller {
        identity: conn.peer_identity.as_deref(),
        source: conn.client.ip(),
        path: None,
        method: None,
    };
    let allowed = crate::http::authz::record(proxy, authz, &target.label, &caller);
    if !allowed {
        tracing::info!(listener = %conn.listener, client = %conn.client, identity = conn.peer_identity.as_deref().unwrap_or("-"), "TCP connection denied by authorization policy; closing");
    }
    allowed
}

/// Runs `f` when dropped (however the connection's task ends).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    fn future_size<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The task of every connection is as large as this future, for its whole life: an idle
    /// connection must stay small (perf/README.md: bytes per idle connection).
    #[test]
    fn a_connection_future_stays_small() {
        let size = future_size(super::serve);
        assert!(size <= 1024, "connection future is {size} bytes");
    }
}
