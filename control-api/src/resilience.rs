//! Resilience settings: per route (retries, hedging) and per cluster (circuit breakers,
//! retry budget, outlier detection, active health checks), validated from the schema with
//! their defaults filled in.

use std::time::Duration;

use crate::error::Errors;
use crate::proto;
use crate::util;

pub const DEFAULT_MAX_RETRIES: u32 = 2;
pub const MAX_MAX_RETRIES: u32 = 10;
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
pub const DEFAULT_MAX_BODY_BYTES: u32 = 64 * 1024;
pub const MAX_MAX_BODY_BYTES: u32 = 16 * 1024 * 1024;
pub const DEFAULT_LIMIT: u32 = 1024;
pub const DEFAULT_MAX_ACTIVE_RETRIES: u32 = 3;
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
pub const DEFAULT_CONSECUTIVE: u32 = 5;
pub const DEFAULT_SUCCESS_RATE_MIN_REQUESTS: u32 = 100;
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;
pub const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HC_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// What makes a failed try worth another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct RetryOn {
    pub status_5xx: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub retriable_status_codes: bool,
    pub grpc_cancelled: bool,
    pub grpc_deadline_exceeded: bool,
    pub grpc_resource_exhausted: bool,
    pub grpc_unavailable: bool,
}

impl RetryOn {
    /// The default set: failures where the request most likely did no work upstream.
    pub const DEFAULT: RetryOn = RetryOn {
        status_5xx: false,
        gateway_error: true,
        connect_failure: true,
        reset: true,
        retriable_status_codes: false,
        grpc_cancelled: false,
        grpc_deadline_exceeded: false,
        grpc_resource_exhausted: false,
        grpc_unavailable: true,
    };

    fn set(&mut self, name: &str) -> Result<(), String> {
        match name {
            "5xx" => self.status_5xx = true,
            "gateway-error" => self.gateway_error = true,
            "connect-failure" => self.connect_failure = true,
            "reset" => self.reset = true,
            "retriable-status-codes" => self.retriable_status_codes = true,
            "cancelled" => self.grpc_cancelled = true,
            "deadline-exceeded" => self.grpc_deadline_exceeded = true,
            "resource-exhausted" => self.grpc_resource_exhausted = true,
            "unavailable" => self.grpc_unavailable = true,
            other => {
                return Err(format!(
                    "unknown condition {other:?} (use 5xx, gateway-error, connect-failure, reset, \
                     retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, \
                     unavailable)"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    pub max_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub retriable_status_codes: Vec<u16>,
    pub retry_non_idempotent: bool,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgePolicy {
    /// `None`: the route's observed p95.
    pub delay: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_LIMIT,
            max_pending_requests: DEFAULT_LIMIT,
            max_requests: DEFAULT_LIMIT,
            max_retries: DEFAULT_MAX_ACTIVE_RETRIES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_retries_per_second: u32,
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_BUDGET_RATIO,
            min_retries_per_second: DEFAULT_MIN_RETRIES_PER_SECOND,
            window: DEFAULT_BUDGET_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierDetection {
    /// 0: off.
    pub consecutive_5xx: u32,
    /// 0: off.
    pub consecutive_gateway_errors: u32,
    pub success_rate_threshold: Option<f64>,
    pub success_rate_min_requests: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: DEFAULT_CONSECUTIVE,
            consecutive_gateway_errors: DEFAULT_CONSECUTIVE,
            success_rate_threshold: None,
            success_rate_min_requests: DEFAULT_SUCCESS_RATE_MIN_REQUESTS,
            interval: DEFAULT_OUTLIER_INTERVAL,
            base_ejection_time: DEFAULT_BASE_EJECTION,
            max_ejection_time: DEFAULT_MAX_EJECTION,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    Http { path: String },
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// A cluster's resilience settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterResilience {
    pub breakers: CircuitBreakers,
    pub budget: RetryBudget,
    /// `None`: disabled.
    pub outlier: Option<OutlierDetection>,
    pub health_check: Option<HealthCheck>,
}

fn dur(
    errs: &mut Errors<'_>,
    field: String,
    d: Option<&pbjson_types::Duration>,
    default: Duration,
) -> Option<Duration> {
    errs.check(field, util::positive_duration(d, default))
}

fn in_range(
    errs: &mut Errors<'_>,
    field: String,
    v: Option<u32>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> u32 {
    let v = v.unwrap_or(default);
    if !range.contains(&v) {
        errs.push(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        );
        return default;
    }
    v
}

pub(crate) fn retry(
    r: &proto::RetryPolicy,
    at: &str,
    errs: &mut Errors<'_>,
) -> Option<RetryPolicy> {
    let mut ok = true;
    let mut retry_on = RetryOn::default();
    if r.retry_on.is_empty() {
        retry_on = RetryOn::DEFAULT;
    }
    for (i, c) in r.retry_on.iter().enumerate() {
        if let Err(e) = retry_on.set(c) {
            errs.push(format!("{at}.retryOn[{i}]"), e);
            ok = false;
        }
    }
    let mut codes = Vec::with_capacity(r.retriable_status_codes.len());
    for (i, c) in r.retriable_status_codes.iter().enumerate() {
        if (100..=599).contains(c) {
            #[allow(clippy::cast_possible_truncation)]
            codes.push(*c as u16);
        } else {
            errs.push(
                format!("{at}.retriableStatusCodes[{i}]"),
                format!("{c} is not an HTTP status code (100 to 599)"),
            );
            ok = false;
        }
    }
    if retry_on.retriable_status_codes && codes.is_empty() {
        errs.push(
            format!("{at}.retriableStatusCodes"),
            "required when retryOn has \"retriable-status-codes\"",
        );
        ok = false;
    }
    if !retry_on.retriable_status_codes && !codes.is_empty() {
        errs.push(
            format!("{at}.retriableStatusCodes"),
            "only used when retryOn has \"retriable-status-codes\"; add it or remove the codes",
        );
        ok = false;
    }
    let max_retries = in_range(
        errs,
        format!("{at}.maxRetries"),
        r.max_retries.map(|v| v.value),
        DEFAULT_MAX_RETRIES,
        0..=MAX_MAX_RETRIES,
    );
    let per_try_timeout = errs.check(
        format!("{at}.perTryTimeout"),
        util::opt_positive_duration(r.per_try_timeout.as_ref()),
    );
    let base = dur(
        errs,
        format!("{at}.backoffBase"),
        r.backoff_base.as_ref(),
        DEFAULT_BACKOFF_BASE,
    );
    let max = dur(
        errs,
        format!("{at}.backoffMax"),
        r.backoff_max.as_ref(),
        DEFAULT_BACKOFF_MAX.max(base.unwrap_or_default()),
    );
    if let (Some(b), Some(m)) = (base, max)
        && m < b
    {
        errs.push(
            format!("{at}.backoffMax"),
            format!("must be at least backoffBase ({b:?})"),
        );
        ok = false;
    }
    let max_body = in_range(
        errs,
        format!("{at}.maxBodyBytes"),
        r.max_body_bytes.map(|v| v.value),
        DEFAULT_MAX_BODY_BYTES,
        0..=MAX_MAX_BODY_BYTES,
    );
    if !ok {
        return None;
    }
    Some(RetryPolicy {
        retry_on,
        max_retries,
        per_try_timeout: per_try_timeout?,
        backoff_base: base?,
        backoff_max: max?,
        retriable_status_codes: codes,
        retry_non_idempotent: r.retry_non_idempotent,
        max_body_bytes: max_body as usize,
    })
}

pub(crate) fn hedge(
    h: &proto::HedgePolicy,
    at: &str,
    errs: &mut Errors<'_>,
) -> Option<HedgePolicy> {
    let delay = errs.check(
        format!("{at}.delay"),
        util::opt_positive_duration(h.delay.as_ref()),
    )?;
    Some(HedgePolicy { delay })
}

pub(crate) fn cluster(c: &proto::Cluster, errs: &mut Errors<'_>) -> Option<ClusterResilience> {
    let before = errs.count();
    let breakers = c
        .circuit_breakers
        .as_ref()
        .map_or_else(CircuitBreakers::default, |b| {
            let limit = |errs: &mut Errors<'_>, f: &str, v: Option<u32>, d: u32| {
                in_range(errs, format!("circuitBreakers.{f}"), v, d, 1..=1_000_000)
            };
            CircuitBreakers {
                max_connections: limit(
                    errs,
                    "maxConnections",
                    b.max_connections.map(|v| v.value),
                    DEFAULT_LIMIT,
                ),
                max_pending_requests: limit(
                    errs,
                    "maxPendingRequests",
                    b.max_pending_requests.map(|v| v.value),
                    DEFAULT_LIMIT,
                ),
                max_requests: limit(
                    errs,
                    "maxRequests",
                    b.max_requests.map(|v| v.value),
                    DEFAULT_LIMIT,
                ),
                max_retries: in_range(
                    errs,
                    "circuitBreakers.maxRetries".into(),
                    b.max_retries.map(|v| v.value),
                    DEFAULT_MAX_ACTIVE_RETRIES,
                    0..=1_000_000,
                ),
            }
        });
    let budget = c
        .retry_budget
        .as_ref()
        .map_or_else(RetryBudget::default, |b| {
            let ratio = b.ratio.map_or(DEFAULT_BUDGET_RATIO, |v| v.value);
            let ratio = if ratio.is_finite() && (0.0..=10.0).contains(&ratio) {
                ratio
            } else {
                errs.push("retryBudget.ratio", "must be between 0 and 10");
                DEFAULT_BUDGET_RATIO
            };
            let min = in_range(
                errs,
                "retryBudget.minRetriesPerSecond".into(),
                b.min_retries_per_second.map(|v| v.value),
                DEFAULT_MIN_RETRIES_PER_SECOND,
                0..=100_000,
            );
            let window = dur(
                errs,
                "retryBudget.window".into(),
                b.window.as_ref(),
                DEFAULT_BUDGET_WINDOW,
            )
            .unwrap_or(DEFAULT_BUDGET_WINDOW);
            if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&window) {
                errs.push("retryBudget.window", "must be between 1s and 60s");
            }
            RetryBudget {
                ratio,
                min_retries_per_second: min,
                window,
            }
        });
    let outlier = match &c.outlier_detection {
        None => Some(OutlierDetection::default()),
        Some(o) if o.enabled.is_some_and(|e| !e.value) => None,
        Some(o) => Some(outlier(o, errs)),
    };
    let health_check = c.health_check.as_ref().and_then(|h| health_check(h, errs));
    if errs.count() > before {
        return None;
    }
    Some(ClusterResilience {
        breakers,
        budget,
        outlier,
        health_check,
    })
}

fn outlier(o: &proto::OutlierDetection, errs: &mut Errors<'_>) -> OutlierDetection {
    let d = OutlierDetection::default();
    let threshold = o.success_rate_threshold.map(|v| v.value);
    if let Some(t) = threshold
        && !(t.is_finite() && (0.0..=1.0).contains(&t))
    {
        errs.push(
            "outlierDetection.successRateThreshold",
            "must be between 0 and 1 (e.g. 0.8 for 80%)",
        );
    }
    let consecutive = |errs: &mut Errors<'_>, f: &str, v: Option<u32>| {
        in_range(
            errs,
            format!("outlierDetection.{f}"),
            v,
            DEFAULT_CONSECUTIVE,
            0..=10_000,
        )
    };
    let base = dur(
        errs,
        "outlierDetection.baseEjectionTime".into(),
        o.base_ejection_time.as_ref(),
        d.base_ejection_time,
    )
    .unwrap_or(d.base_ejection_time);
    let max = dur(
        errs,
        "outlierDetection.maxEjectionTime".into(),
        o.max_ejection_time.as_ref(),
        d.max_ejection_time.max(base),
    )
    .unwrap_or(d.max_ejection_time);
    if max < base {
        errs.push(
            "outlierDetection.maxEjectionTime",
            format!("must be at least baseEjectionTime ({base:?})"),
        );
    }
    OutlierDetection {
        consecutive_5xx: consecutive(errs, "consecutive5xx", o.consecutive_5xx.map(|v| v.value)),
        consecutive_gateway_errors: consecutive(
            errs,
            "consecutiveGatewayErrors",
            o.consecutive_gateway_errors.map(|v| v.value),
        ),
        success_rate_threshold: threshold,
        success_rate_min_requests: in_range(
            errs,
            "outlierDetection.successRateMinRequests".into(),
            o.success_rate_min_requests.map(|v| v.value),
            DEFAULT_SUCCESS_RATE_MIN_REQUESTS,
            1..=1_000_000,
        ),
        interval: dur(
            errs,
            "outlierDetection.interval".into(),
            o.interval.as_ref(),
            d.interval,
        )
        .unwrap_or(d.interval),
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: in_range(
            errs,
            "outlierDetection.maxEjectionPercent".into(),
            o.max_ejection_percent.map(|v| v.value),
            DEFAULT_MAX_EJECTION_PERCENT,
            0..=100,
        ),
    }
}

fn health_check(h: &proto::HealthCheck, errs: &mut Errors<'_>) -> Option<HealthCheck> {
    let kind = match &h.check {
        Some(proto::health_check::Check::HttpPath(p)) => {
            if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                errs.push(
                    "healthCheck.httpPath",
                    format!("invalid path {p:?}: must start with / and have no spaces"),
                );
                return None;
            }
            HealthCheckKind::Http { path: p.clone() }
        }
        Some(proto::health_check::Check::Tcp(true)) => HealthCheckKind::Tcp,
        Some(proto::health_check::Check::Tcp(false)) | None => {
            errs.push("healthCheck", "set `httpPath: /PATH` or `tcp: true`");
            return None;
        }
    };
    let interval = dur(
        errs,
        "healthCheck.interval".into(),
        h.interval.as_ref(),
        DEFAULT_HC_INTERVAL,
    )?;
    let timeout = dur(
        errs,
        "healthCheck.timeout".into(),
        h.timeout.as_ref(),
        DEFAULT_HC_TIMEOUT,
    )?;
    let threshold = |errs: &mut Errors<'_>, f: &str, v: Option<u32>, d: u32| {
        in_range(errs, format!("healthCheck.{f}"), v, d, 1..=100)
    };
    Some(HealthCheck {
        kind,
        interval,
        timeout,
        healthy_threshold: threshold(
            errs,
            "healthyThreshold",
            h.healthy_threshold.map(|v| v.value),
            DEFAULT_HEALTHY_THRESHOLD,
        ),
        unhealthy_threshold: threshold(
            errs,
            "unhealthyThreshold",
            h.unhealthy_threshold.map(|v| v.value),
            DEFAULT_UNHEALTHY_THRESHOLD,
        ),
    })
}
