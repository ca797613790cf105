//! Rate limits and fault injection on routes, connection limits on listeners: validated
//! settings. The token arithmetic is in `remora-filters` (`ratelimit`, `fault`).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::error::Errors;
use crate::proto;
use crate::util;

pub const DEFAULT_MAX_KEYS: u32 = 10_000;
pub const MAX_MAX_KEYS: u32 = 1_000_000;

/// What a limit's buckets are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One bucket for the route.
    Route,
    Header(HeaderName),
    ClientAddress,
    PeerIdentity,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub name: Arc<str>,
    pub requests: u32,
    pub interval: Duration,
    pub burst: u32,
    pub key: LimitKey,
    pub max_keys: u32,
    pub shadow: bool,
    pub mesh_wide: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultAbort {
    /// 0 to 100.
    pub percent: f64,
    pub http_status: http::StatusCode,
    pub grpc_status: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    pub percent: f64,
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub abort: Option<FaultAbort>,
    pub delay: Option<FaultDelay>,
    pub allow_header_faults: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionLimits {
    /// 0: none.
    pub per_second: u32,
    pub max_connections: u32,
    pub max_connections_per_client: u32,
}

fn percent(v: f64, field: String, errs: &mut Errors<'_>) -> f64 {
    if !(0.0..=100.0).contains(&v) {
        errs.push(field, "must be between 0 and 100");
    }
    v.clamp(0.0, 100.0)
}

pub(crate) fn rate_limits(
    limits: &[proto::RateLimit],
    errs: &mut Errors<'_>,
    at: &str,
) -> Vec<RateLimit> {
    let mut out = Vec::with_capacity(limits.len());
    let mut names = std::collections::HashSet::new();
    for (i, l) in limits.iter().enumerate() {
        let f = |name: &str| format!("{at}rateLimits[{i}].{name}");
        if errs.check(f("name"), util::name(&l.name)).is_some() && !names.insert(&l.name) {
            errs.push(f("name"), format!("duplicate rate limit {:?}", l.name));
        }
        if l.requests == 0 {
            errs.push(f("requests"), "must be at least 1");
        }
        let interval = errs.check(
            f("interval"),
            util::positive_duration(l.interval.as_ref(), Duration::from_secs(1)),
        );
        let burst = l.burst.map_or(l.requests, |b| b.value);
        if burst == 0 {
            errs.push(
                f("burst"),
                "must be at least 1 (leave it unset for `requests`)",
            );
        }
        let key = match &l.key {
            None => LimitKey::Route,
            Some(proto::rate_limit::Key::Header(h)) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => LimitKey::Header(h),
                Err(_) => {
                    errs.push(f("header"), format!("invalid header name {h:?}"));
                    LimitKey::Route
                }
            },
            Some(proto::rate_limit::Key::ClientAddress(true)) => LimitKey::ClientAddress,
            Some(proto::rate_limit::Key::PeerIdentity(true)) => LimitKey::PeerIdentity,
            Some(_) => LimitKey::Route,
        };
        let max_keys = l.max_keys.map_or(DEFAULT_MAX_KEYS, |m| m.value);
        if max_keys == 0 || max_keys > MAX_MAX_KEYS {
            errs.push(
                f("maxKeys"),
                format!("must be between 1 and {MAX_MAX_KEYS}"),
            );
        }
        if let Some(interval) = interval {
            out.push(RateLimit {
                name: l.name.as_str().into(),
                requests: l.requests.max(1),
                interval,
                burst: burst.max(1),
                key,
                max_keys: max_keys.clamp(1, MAX_MAX_KEYS),
                shadow: l.shadow,
                mesh_wide: l.mesh_wide,
            });
        }
    }
    out
}

pub(crate) fn fault(f: &proto::FaultInjection, at: &str, errs: &mut Errors<'_>) -> Fault {
    let abort = f.abort.as_ref().map(|a| {
        let percent = percent(a.percent, format!("{at}.fault.abort.percent"), errs);
        let http_status = match http::StatusCode::from_u16(u16::try_from(a.http_status).unwrap_or(0)) {
            Ok(s) if (200..=599).contains(&s.as_u16()) => s,
            _ if a.http_status == 0 && a.grpc_status != 0 => http::StatusCode::OK,
            _ => {
                errs.push(
                    format!("{at}.fault.abort.httpStatus"),
                    "an HTTP status between 200 and 599 is required (or grpcStatus for gRPC routes)",
                );
                http::StatusCode::SERVICE_UNAVAILABLE
            }
        };
        if a.grpc_status > 16 {
            errs.push(format!("{at}.fault.abort.grpcStatus"), "must be a gRPC code between 1 and 16");
        }
        FaultAbort {
            percent,
            http_status,
            grpc_status: (a.grpc_status != 0).then_some(a.grpc_status),
        }
    });
    let delay = f.delay.as_ref().and_then(|d| {
        let percent = percent(d.percent, format!("{at}.fault.delay.percent"), errs);
        if d.fixed_delay.is_none() {
            errs.push(format!("{at}.fault.delay.fixedDelay"), "required");
            return None;
        }
        let delay = errs.check(
            format!("{at}.fault.delay.fixedDelay"),
            util::positive_duration(d.fixed_delay.as_ref(), Duration::ZERO),
        )?;
        Some(FaultDelay { percent, delay })
    });
    Fault {
        abort,
        delay,
        allow_header_faults: f.allow_header_faults,
    }
}

pub(crate) fn connection_limits(c: &proto::ConnectionLimits) -> ConnectionLimits {
    ConnectionLimits {
        per_second: c.per_second,
        max_connections: c.max_connections,
        max_connections_per_client: c.max_connections_per_client,
    }
}
