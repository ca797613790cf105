//! Pooled upstream connections to one endpoint: a stack of idle HTTP/1.1 connections for
//! the in-task client ([`super::h1`]), reused once the previous response was read whole, and
//! one shared HTTP/2 connection (multiplexed, hyper). Upgrades (WebSocket) get a fresh hyper
//! HTTP/1.1 connection each, never pooled. Locks are held only to push or pop, never across
//! `.await`.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use remora_control_api::resilience::CircuitBreakers;
use remora_filters::breaker::{Breakers, Limit, Overflow, Slot};

use crate::http::body::ProxyBody;
use crate::upstream::UpstreamMetrics;
use crate::upstream::h1;
use crate::upstream::io::UpstreamIo;

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out after {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("handshake with {0} failed: {1}")]
    Handshake(SocketAddr, hyper::Error),
    #[error("cluster {0:?}: {1}")]
    Overflow(std::sync::Arc<str>, Overflow),
    #[error("TLS with {0} failed ({reason}): {detail}", reason = .1.reason, detail = .1.detail)]
    Tls(SocketAddr, crate::tls::client::HandshakeError),
}

/// How to open a connection (from the cluster's settings).
#[derive(Debug, Clone, Copy)]
pub struct ConnectParams<'a> {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub metrics: &'a UpstreamMetrics,
    /// The cluster's counters and thresholds for connections and pending connects.
    pub breakers: &'a Breakers,
    pub limits: CircuitBreakers,
    pub cluster: &'a std::sync::Arc<str>,
    /// Response bodies end with an error after this long without bytes.
    pub stream_idle: Duration,
    /// TLS to the endpoint (the cluster's `tls`), None for plaintext.
    pub tls: Option<&'a crate::tls::client::UpstreamTls>,
}

struct Idle {
    conn: h1::Conn,
    since: Instant,
}

struct Shared {
    sender: http2::SendRequest<ProxyBody>,
    last_used: Instant,
}

pub struct Pool {
    addr: SocketAddr,
    /// The SPIFFE id the endpoint must present over mesh mTLS (its pool is keyed by it).
    identity: Option<std::sync::Arc<str>>,
    /// Idle HTTP/1.1 connections, one list per worker thread (see [`crate::workers`]): a
    /// connection is used by the worker whose reactor it is registered with.
    idle: Vec<Mutex<Vec<Idle>>>,
    h2: Mutex<Option<Shared>>,
    /// Serialises HTTP/2 connection set-up so a burst opens one connection, not hundreds.
    h2_connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new(addr: SocketAddr, identity: Option<std::sync::Arc<str>>) -> Self {
        Self {
            addr,
            identity,
            idle: (0..crate::workers::slots())
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The SPIFFE id this endpoint must present (mesh mTLS), if it names one.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// An idle HTTP/1.1 connection that is still usable, if any; stale ones are closed.
    pub fn checkout_h1(&self) -> Option<h1::Conn> {
        let mut idle = self.local().lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut i) = idle.pop() {
            if i.conn.idle_usable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// This worker's idle list.
    fn local(&self) -> &Mutex<Vec<Idle>> {
        let i = crate::workers::current().min(self.idle.len() - 1);
        &self.idle[i]
    }

    /// A new HTTP/1.1 connection for the in-task client.
    pub async fn connect_h1(&self, p: ConnectParams<'_>) -> Result<h1::Conn, ConnectError> {
        let (io, slot) = self.connect(p, false).await?;
        Ok(h1::Conn::new(io.into_inner(), p.metrics.opened(slot)))
    }

    /// Returns an HTTP/1.1 connection whose exchange completed cleanly.
    pub fn checkin_h1(&self, conn: h1::Conn, max_idle: usize) {
        let mut idle = self.local().lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// A fresh hyper HTTP/1.1 connection, for a request that upgrades (never pooled).
    pub async fn http1_upgrade(
        &self,
        p: ConnectParams<'_>,
    ) -> Result<http1::SendRequest<ProxyBody>, ConnectError> {
        let (io, slot) = self.connect(p, false).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| ConnectError::Handshake(self.addr, e))?;
        let active = p.metrics.opened(slot);
        tokio::spawn(async move {
            let _active = active;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The shared HTTP/2 connection, opened on first use or after it closed.
    pub async fn http2(
        &self,
        p: ConnectParams<'_>,
    ) -> Result<http2::SendRequest<ProxyBody>, ConnectError> {
        if let Some(s) = self.shared_h2() {
            return Ok(s);
        }
        let _connecting = self.h2_connecting.lock().await;
        if let Some(s) = self.shared_h2() {
            return Ok(s);
        }
        let (io, slot) = self.connect(p, true).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(io)
            .await
            .map_err(|e| ConnectError::Handshake(self.addr, e))?;
        let active = p.metrics.opened(slot);
        tokio::spawn(async move {
            let _active = active;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        *self.h2.lock().unwrap_or_else(PoisonError::into_inner) = Some(Shared {
            sender: sender.clone(),
            last_used: Instant::now(),
        });
        Ok(sender)
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        match h2.as_mut() {
            Some(s) if !s.sender.is_closed() => {
                s.last_used = Instant::now();
                Some(s.sender.clone())
            }
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    /// A new connection, within the cluster's `maxConnections` and `maxPendingRequests`;
    /// the returned slot is held for the connection's life.
    async fn connect(
        &self,
        p: ConnectParams<'_>,
        http2: bool,
    ) -> Result<(TokioIo<UpstreamIo>, Slot), ConnectError> {
        let overflow = |o: Overflow| {
            p.metrics.count(&p.metrics.overflows, o.limit.as_str());
            ConnectError::Overflow(p.cluster.clone(), o)
        };
        let slot = p
            .breakers
            .connections
            .try_acquire(Limit::Connections, p.limits.max_connections)
            .map_err(overflow)?;
        let _pending = p
            .breakers
            .pending
            .try_acquire(Limit::PendingRequests, p.limits.max_pending_requests)
            .map_err(overflow)?;
        let stream =
            match tokio::time::timeout(p.connect_timeout, TcpStream::connect(self.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    p.metrics.connect_error("refused");
                    return Err(ConnectError::Io(self.addr, e));
                }
                Err(_) => {
                    p.metrics.connect_error("timeout");
                    return Err(ConnectError::Timeout(self.addr, p.connect_timeout));
                }
            };
        let _ = stream.set_nodelay(true);
        let Some(tls) = p.tls else {
            return Ok((TokioIo::new(UpstreamIo::Plain(stream)), slot));
        };
        let handshake = crate::tls::client::connect(
            tls,
            self.identity.as_deref(),
            stream,
            self.addr,
            if http2 {
                crate::tls::client::Alpn::H2
            } else {
                crate::tls::client::Alpn::Http1
            },
        );
        let result = match tokio::time::timeout(p.connect_timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(crate::tls::client::HandshakeError {
                reason: "timeout",
                detail: format!("no handshake within {:?}", p.connect_timeout),
            }),
        };
        match result {
            Ok(s) => {
                p.metrics.count(p.metrics.tls_handshakes(), "ok");
                Ok((TokioIo::new(UpstreamIo::Tls(Box::new(s))), slot))
            }
            Err(e) => {
                p.metrics.count(p.metrics.tls_handshakes(), e.reason);
                tracing::warn!(cluster = %p.cluster, endpoint = %self.addr, reason = e.reason, error = %e.detail, "upstream TLS handshake failed");
                Err(ConnectError::Tls(self.addr, e))
            }
        }
    }

    /// Closes connections idle for longer than `idle_timeout`.
    pub fn evict_idle(&self, now: Instant, idle_timeout: Duration) {
        for idle in &self.idle {
            idle.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain_mut(|i| now.duration_since(i.since) < idle_timeout && i.conn.idle_usable());
        }
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if h2.as_ref().is_some_and(|s| {
            s.sender.is_closed() || now.duration_since(s.last_used) >= idle_timeout
        }) {
            *h2 = None;
        }
    }

    /// Idle HTTP/1.1 connections held now (for /clusters and tests).
    pub fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|i| i.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}
