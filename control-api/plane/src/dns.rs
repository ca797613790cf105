//! DNS discovery: a service with `dns: {name, port, refresh}` gets the A/AAAA records of
//! `name` with `port`, re-resolved every `refresh` (default 30s). On an error or an empty
//! answer the last known set is kept and a warning logged. The name server is explicit
//! (`serve --dns-server IP:PORT`, else the `nameserver` lines of /etc/resolv.conf).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::discovery::Source;
use crate::model::Model;

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// Upper bound on addresses kept from one answer.
pub const MAX_ADDRESSES: usize = 1024;

/// What is resolved: a host name and the port to pair its addresses with.
type Key = (String, u16);

struct Watch {
    refresh: Duration,
    last: Vec<Endpoint>,
    task: AbortHandle,
}

/// The DNS source; each (name, port) is resolved by its own task.
pub struct DnsSource {
    resolver: Option<TokioResolver>,
    watches: Arc<Mutex<HashMap<Key, Watch>>>,
    changed: mpsc::Sender<()>,
}

impl std::fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsSource")
    }
}

/// Builds a resolver that asks only `servers` (UDP and TCP), with no cache, so every refresh
/// sees the current answer.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            ns
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// The `nameserver` lines of /etc/resolv.conf, port 53.
pub fn system_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl DnsSource {
    /// `resolver` is `None` when no name server is configured: DNS services then have no
    /// endpoints and an error is logged. `changed` is signalled when an answer changes.
    pub fn new(resolver: Option<TokioResolver>, changed: mpsc::Sender<()>) -> Self {
        Self {
            resolver,
            watches: Arc::default(),
            changed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Watch>> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for DnsSource {
    fn drop(&mut self) {
        for w in self.lock().values() {
            w.task.abort();
        }
    }
}

fn key_of(service: &Service) -> Option<(Key, Duration)> {
    let dns = service.dns.as_ref()?;
    let port = u16::try_from(dns.port).ok()?;
    let refresh = dns
        .refresh
        .as_ref()
        .and_then(|d| {
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok()?;
            Some(Duration::new(secs, nanos))
        })
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_REFRESH);
    Some(((dns.name.clone(), port), refresh))
}

impl Source for DnsSource {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn serves(&self, service: &Service) -> bool {
        service.dns.is_some()
    }

    fn endpoints(&self, service: &Service) -> Vec<Endpoint> {
        let Some((key, _)) = key_of(service) else {
            return Vec::new();
        };
        self.lock()
            .get(&key)
            .map(|w| w.last.clone())
            .unwrap_or_default()
    }

    fn reconcile(&self, model: &Model) {
        let mut wanted: HashMap<Key, Duration> = HashMap::new();
        for e in model.services.values() {
            if let Some((key, refresh)) = key_of(&e.value) {
                let r = wanted.entry(key).or_insert(refresh);
                *r = (*r).min(refresh);
            }
        }
        let mut watches = self.lock();
        watches.retain(|key, w| {
            let keep = wanted.get(key) == Some(&w.refresh);
            if !keep {
                w.task.abort();
            }
            keep
        });
        for (key, refresh) in wanted {
            if watches.contains_key(&key) {
                continue;
            }
            let Some(resolver) = self.resolver.clone() else {
                tracing::error!(name = %key.0, "no DNS server configured (pass --dns-server IP:PORT); the service has no endpoints");
                continue;
            };
            let task = tokio::spawn(resolve_loop(
                resolver,
                key.clone(),
                refresh,
                Arc::clone(&self.watches),
                self.changed.clone(),
            ))
            .abort_handle();
            watches.insert(
                key,
                Watch {
                    refresh,
                    last: Vec::new(),
                    task,
                },
            );
        }
    }
}

async fn resolve_loop(
    resolver: TokioResolver,
    key: Key,
    refresh: Duration,
    watches: Arc<Mutex<HashMap<Key, Watch>>>,
    changed: mpsc::Sender<()>,
) {
    let (name, port) = &key;
    loop {
        match resolver.lookup_ip(name.as_str()).await {
            Ok(answer) => {
                let mut endpoints: Vec<Endpoint> = answer
                    .iter()
                    .take(MAX_ADDRESSES)
                    .map(|ip| Endpoint {
                        address: SocketAddr::new(ip, *port).to_string(),
                        weight: None,
                        identity: String::new(),
                    })
                    .collect();
                endpoints.sort_by(|a, b| a.address.cmp(&b.address));
                endpoints.dedup();
                if endpoints.is_empty() {
                    tracing::warn!(%name, "DNS answer is empty; keeping the last known endpoints");
                } else {
                    let updated = {
                        let mut w = watches.lock().unwrap_or_else(PoisonError::into_inner);
                        match w.get_mut(&key) {
                            Some(watch) if watch.last != endpoints => {
                                watch.last = endpoints;
                                true
                            }
                            _ => false,
                        }
                    };
                    if updated {
                        tracing::info!(%name, "DNS endpoints changed");
                        // A full channel already holds a pending refresh.
                        let _ = changed.try_send(());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%name, error = %e, "DNS lookup failed; keeping the last known endpoints");
            }
        }
        tokio::time::sleep(refresh).await;
    }
}

#[cfg(test)]
mod tests;
