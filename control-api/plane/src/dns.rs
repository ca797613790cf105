//! DNS discovery: a service with `dns: {name, port, refresh, srv}` gets the A/AAAA records
//! of `name` with `port`, or with `srv` the SRV records of `name` (each target's addresses,
//! the record's port and weight, lowest priority only), re-resolved every `refresh` or, by
//! default, when the answer's TTL runs out (1 s to 300 s). On an error or an empty answer
//! the last known set is kept and a warning logged. The name server is explicit
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

use crate::discovery::{Source, endpoint, tidy};
use crate::model::Model;

/// Bounds on a TTL-driven refresh.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
pub const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Retry after a failed lookup when the refresh follows the TTL.
const RETRY: Duration = Duration::from_secs(5);
/// Upper bound on addresses kept from one answer.
pub const MAX_ADDRESSES: usize = 1024;

/// What is resolved: a host name, the port to pair its addresses with, and whether it is an
/// SRV name.
type Key = (String, u16, bool);

struct Watch {
    /// None: follow the answers' TTL.
    refresh: Option<Duration>,
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
    servers_in(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// The `nameserver` lines of a resolv.conf text.
pub fn servers_in(text: &str) -> Vec<SocketAddr> {
    text.lines()
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

fn key_of(service: &Service) -> Option<(Key, Option<Duration>)> {
    let dns = service.dns.as_ref()?;
    let port = if dns.srv {
        0
    } else {
        u16::try_from(dns.port).ok()?
    };
    let refresh = dns
        .refresh
        .as_ref()
        .and_then(|d| {
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok()?;
            Some(Duration::new(secs, nanos))
        })
        .filter(|d| !d.is_zero());
    Some(((dns.name.clone(), port, dns.srv), refresh))
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
        let mut wanted: HashMap<Key, Option<Duration>> = HashMap::new();
        for e in model.services.values() {
            if let Some((key, refresh)) = key_of(&e.value) {
                let r = wanted.entry(key).or_insert(refresh);
                *r = match (*r, refresh) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
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
    refresh: Option<Duration>,
    watches: Arc<Mutex<HashMap<Key, Watch>>>,
    changed: mpsc::Sender<()>,
) {
    let (name, port, srv) = &key;
    loop {
        let answer = if *srv {
            lookup_srv(&resolver, name).await
        } else {
            lookup_addresses(&resolver, name, *port).await
        };
        let next = match answer {
            Ok((endpoints, valid_until)) => {
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
                refresh.unwrap_or_else(|| {
                    valid_until
                        .saturating_duration_since(std::time::Instant::now())
                        .clamp(MIN_REFRESH, MAX_REFRESH)
                })
            }
            Err(e) => {
                tracing::warn!(%name, error = %e, "DNS lookup failed; keeping the last known endpoints");
                refresh.unwrap_or(RETRY)
            }
        };
        tokio::time::sleep(next).await;
    }
}

/// A/AAAA: the addresses with `port`, and when the answer expires.
async fn lookup_addresses(
    resolver: &TokioResolver,
    name: &str,
    port: u16,
) -> Result<(Vec<Endpoint>, std::time::Instant), String> {
    let answer = resolver.lookup_ip(name).await.map_err(|e| e.to_string())?;
    let eps = answer
        .iter()
        .take(MAX_ADDRESSES)
        .map(|ip| endpoint(ip, port, None))
        .collect();
    Ok((tidy(eps), answer.valid_until()))
}

/// SRV: the lowest-priority records' targets, each address with the record's port and
/// weight (0 counts as 1), and when the answers expire.
async fn lookup_srv(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<Endpoint>, std::time::Instant), String> {
    use hickory_resolver::proto::rr::RData;
    let answer = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut valid_until = answer.valid_until();
    let records: Vec<_> = answer
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let Some(lowest) = records.iter().map(|s| s.priority).min() else {
        return Ok((Vec::new(), valid_until));
    };
    let mut eps = Vec::new();
    for s in records.iter().filter(|s| s.priority == lowest).take(64) {
        let target = s.target.to_string();
        let ips = resolver
            .lookup_ip(target.as_str())
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        valid_until = valid_until.min(ips.valid_until());
        let weight = u32::from(s.weight).clamp(1, 10_000);
        eps.extend(
            ips.iter()
                .map(|ip| endpoint(ip, s.port, (weight != 1).then_some(weight))),
        );
    }
    Ok((tidy(eps), valid_until))
}

#[cfg(test)]
mod tests;
