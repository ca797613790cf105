//! DNS discovery: a service with `dns: {name, port, refresh, srv}` gets the A/AAAA records
//! of `name` with `port`, or with `srv` the SRV records of `name` (each target's addresses,
//! the record's port and weight, lowest priority only), re-resolved every `refresh` or, by
//! default, when the answer's TTL runs out (1 s to 300 s). Errors and empty answers follow
//! the shared rule of [`crate::polled`]: the last known set is kept for the service's grace
//! period, and shown as stale. The name server is explicit
//! (`serve --dns-server IP:PORT`, else the `nameserver` lines of /etc/resolv.conf).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;
use tokio::sync::mpsc;

use crate::discovery::{endpoint, tidy};
use crate::metrics::Metrics;
use crate::polled::{Answer, BoxFuture, PolledSource, Registry};

/// Bounds on a TTL-driven refresh.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
pub const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Upper bound on addresses kept from one answer.
pub const MAX_ADDRESSES: usize = 1024;

/// The DNS registry: lookups with one resolver (None: no name server configured).
pub struct Dns {
    resolver: Option<TokioResolver>,
}

/// The DNS source: `resolver` is `None` when no name server is configured (DNS services then
/// have no endpoints and an error is logged); `changed` is signalled when an answer changes.
pub fn source(
    resolver: Option<TokioResolver>,
    changed: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
) -> PolledSource<Dns> {
    PolledSource::new(Dns { resolver }, changed, metrics)
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

fn refresh_of(dns: &remora_control_api::proto::mesh::DnsSource) -> Option<Duration> {
    dns.refresh
        .as_ref()
        .and_then(|d| {
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok()?;
            Some(Duration::new(secs, nanos))
        })
        .filter(|d| !d.is_zero())
}

impl Registry for Dns {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn key(&self, service: &Service) -> Option<String> {
        let dns = service.dns.as_ref()?;
        let port = if dns.srv {
            0
        } else {
            u16::try_from(dns.port).ok()?
        };
        let refresh = refresh_of(dns).map_or(0, |d| d.as_millis());
        Some(format!(
            "{}\u{1}{port}\u{1}{}\u{1}{refresh}",
            dns.name, dns.srv
        ))
    }

    /// The index carries how long to wait before the next lookup (ms): the fixed refresh,
    /// or what is left of the last answer's TTL.
    fn fetch<'a>(
        &'a self,
        key: &'a str,
        index: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            if let Some(ms) = index.and_then(|i| i.parse::<u64>().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mut parts = key.split('\u{1}');
            let name = parts.next().unwrap_or_default();
            let port: u16 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let srv = parts.next() == Some("true");
            let refresh: u64 = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            let Some(resolver) = &self.resolver else {
                return Err("no DNS server configured (pass --dns-server IP:PORT)".into());
            };
            let (endpoints, valid_until) = if srv {
                lookup_srv(resolver, name).await?
            } else {
                lookup_addresses(resolver, name, port).await?
            };
            let wait = if refresh > 0 {
                Duration::from_millis(refresh)
            } else {
                valid_until
                    .saturating_duration_since(std::time::Instant::now())
                    .clamp(MIN_REFRESH, MAX_REFRESH)
            };
            Ok(Answer {
                endpoints,
                index: Some(wait.as_millis().to_string()),
            })
        })
    }

    fn min_interval(&self) -> Duration {
        Duration::ZERO
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
