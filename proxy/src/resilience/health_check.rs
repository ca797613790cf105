//! Active health checks: one task per endpoint of each cluster that has `healthCheck`,
//! probing with a TCP connect or an HTTP/1.1 `GET path` every interval (with ±10% jitter so
//! proxies do not probe in step). Checkers are kept across configuration swaps while their
//! endpoint and settings stay, restarted when the settings change, and stopped with their
//! endpoint; a cluster that drops health checking puts its endpoints back in service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use remora_control_api::resilience::{HealthCheck, HealthCheckKind};
use remora_filters::health::Transition;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::state::Proxy;
use crate::upstream::{EndpointState, UpstreamMetrics};

type Key = (Arc<str>, SocketAddr);

struct Running {
    config: HealthCheck,
    endpoint: Arc<EndpointState>,
    stop: CancellationToken,
}

/// The health checkers running now.
#[derive(Default)]
pub struct Checkers {
    running: Mutex<HashMap<Key, Running>>,
}

impl std::fmt::Debug for Checkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkers").finish_non_exhaustive()
    }
}

impl Checkers {
    /// Brings the checkers in line with the current snapshot.
    pub fn sync(&self, proxy: &Proxy) {
        let snap = proxy.snapshot.load_full();
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wanted: HashMap<Key, (HealthCheck, Arc<EndpointState>, UpstreamMetrics)> =
            HashMap::new();
        for c in snap.clusters.values() {
            match &c.cluster.resilience.health_check {
                Some(hc) => {
                    for e in &c.endpoints {
                        wanted.insert(
                            (c.cluster.name.clone(), e.address),
                            (hc.clone(), e.clone(), c.metrics.clone()),
                        );
                    }
                }
                None => {
                    for e in &c.endpoints {
                        e.health.reset();
                    }
                }
            }
        }
        running.retain(|k, r| {
            let keep = wanted
                .get(k)
                .is_some_and(|(cfg, ep, _)| *cfg == r.config && Arc::ptr_eq(ep, &r.endpoint));
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for (k, (config, endpoint, metrics)) in wanted {
            if running.contains_key(&k) {
                continue;
            }
            let stop = CancellationToken::new();
            rt.spawn(check_loop(
                config.clone(),
                endpoint.clone(),
                metrics,
                stop.clone(),
            ));
            running.insert(
                k,
                Running {
                    config,
                    endpoint,
                    stop,
                },
            );
        }
        for c in snap.clusters.values() {
            let unhealthy = c
                .endpoints
                .iter()
                .filter(|e| !e.health.is_healthy())
                .count();
            #[allow(clippy::cast_possible_wrap)]
            c.metrics.unhealthy.set(unhealthy as i64);
        }
    }
}

fn jittered(interval: Duration) -> Duration {
    let tenth = interval / 10;
    interval - tenth + tenth.mul_f64(2.0 * fastrand::f64())
}

async fn check_loop(
    cfg: HealthCheck,
    endpoint: Arc<EndpointState>,
    metrics: UpstreamMetrics,
    stop: CancellationToken,
) {
    // The first check comes after a random part of the interval: checkers started by one
    // swap spread out.
    let first = cfg.interval.mul_f64(fastrand::f64());
    tokio::select! {
        () = tokio::time::sleep(first) => {}
        () = stop.cancelled() => return,
    }
    loop {
        let passed = tokio::select! {
            r = tokio::time::timeout(cfg.timeout, check(&cfg.kind, endpoint.address)) => {
                matches!(r, Ok(Ok(true)))
            }
            () = stop.cancelled() => return,
        };
        metrics.count(&metrics.health_checks, if passed { "pass" } else { "fail" });
        if let Some(t) = endpoint.health.record(passed, &cfg) {
            let cluster = &metrics.cluster.0;
            match t {
                Transition::BecameUnhealthy => {
                    metrics.unhealthy.inc();
                    tracing::info!(%cluster, endpoint = %endpoint.address, "endpoint failed its health checks; out of the balancer");
                }
                Transition::BecameHealthy => {
                    metrics.unhealthy.dec();
                    tracing::info!(%cluster, endpoint = %endpoint.address, "endpoint passes its health checks again");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(jittered(cfg.interval)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One probe: `Ok(true)` when it passed.
async fn check(kind: &HealthCheckKind, addr: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(addr).await?;
    let HealthCheckKind::Http { path } = kind else {
        return Ok(true);
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nuser-agent: remora-health-check\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    // The status line is all that matters: "HTTP/1.x NNN".
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    Ok(head.starts_with(b"HTTP/1.") && status.is_some_and(|s| (200..400).contains(&s)))
}
