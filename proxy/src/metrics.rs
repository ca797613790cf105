//! The proxy's Prometheus metrics (`remora_*`). Label values are bounded: listener, route and
//! cluster names from the configuration, directions, and status codes; never paths or hosts.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod series;

/// A label value shared with the configuration (no copy per request).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(&self.0)
    }
}

impl From<&Arc<str>> for Name {
    fn from(s: &Arc<str>) -> Self {
        Name(s.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    pub listener: Name,
    pub route: Name,
    pub cluster: Name,
    pub status: u16,
}

/// Labels of the byte counters: a request's series without its status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BytesLabels {
    pub direction: &'static str,
    pub listener: Name,
    pub route: Name,
    pub cluster: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsLabels {
    pub listener: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IdentityLabels {
    pub source: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub route: Name,
    pub limit: Name,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FaultLabels {
    pub route: Name,
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnLimitLabels {
    pub listener: Name,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    pub listener: Name,
    pub policy: Name,
    pub decision: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub direction: &'static str,
    pub listener: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: Name,
}

/// Per-cluster events by kind (retry reason, overflowed limit, ejection reason, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClusterReasonLabels {
    pub cluster: Name,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub route: Name,
    pub cluster: Name,
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ControlUpdateLabels {
    pub resource: &'static str,
    pub result: &'static str,
}

/// The versions being served (one series per resource: the old one is removed on change).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AppliedLabels {
    pub resource: &'static str,
    pub source: &'static str,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    pub direction: &'static str,
    pub listener: Name,
    pub error: &'static str,
}

fn duration_histogram() -> Histogram {
    // 100 µs to 30 s: sub-millisecond loopback hops up to long polls.
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ])
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub proxy_errors: Family<ErrorLabels, Counter>,
    pub downstream_connections: Family<ListenerLabels, Counter>,
    pub downstream_active: Family<ListenerLabels, Gauge>,
    pub downstream_closed: Family<ListenerLabels, Counter>,
    pub upstream_closed: Family<ClusterLabels, Counter>,
    pub upstream_connections: Family<ClusterLabels, Counter>,
    pub upstream_active: Family<ClusterLabels, Gauge>,
    pub upstream_connect_errors: Family<ClusterReasonLabels, Counter>,
    pub tcp_bytes: Family<ListenerLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub control_connected: Gauge,
    pub control_updates: Family<ControlUpdateLabels, Counter>,
    pub control_applied: Family<AppliedLabels, Gauge>,
    pub retries: Family<ClusterReasonLabels, Counter>,
    pub retries_refused: Family<ClusterReasonLabels, Counter>,
    pub overflows: Family<ClusterReasonLabels, Counter>,
    pub ejections: Family<ClusterReasonLabels, Counter>,
    pub endpoints_ejected: Family<ClusterLabels, Gauge>,
    pub health_checks: Family<ClusterReasonLabels, Counter>,
    pub endpoints_unhealthy: Family<ClusterLabels, Gauge>,
    pub timeouts: Family<TimeoutLabels, Counter>,
    pub trace_spans: Family<ResultLabels, Counter>,
    pub access_log_lines: Family<ResultLabels, Counter>,
    pub tls_handshakes: Family<TlsLabels, Counter>,
    pub upstream_tls_handshakes: Family<ClusterReasonLabels, Counter>,
    pub identity_updates: Family<IdentityLabels, Counter>,
    pub authz_decisions: Family<AuthzLabels, Counter>,
    pub rate_limited: Family<RateLimitLabels, Counter>,
    pub connections_rejected: Family<ConnLimitLabels, Counter>,
    pub faults: Family<FaultLabels, Counter>,
    pub request_bytes: Family<BytesLabels, Counter>,
    pub response_bytes: Family<BytesLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("remora");
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests handled, by final status",
            requests.clone(),
        );
        let request_duration: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request received to response headers sent",
            request_duration.clone(),
        );
        let proxy_errors = Family::default();
        registry.register(
            "proxy_errors",
            "Responses the proxy produced itself, by x-remora-error reason",
            proxy_errors.clone(),
        );
        let downstream_connections = Family::default();
        registry.register(
            "downstream_connections",
            "Connections accepted",
            downstream_connections.clone(),
        );
        let downstream_active = Family::default();
        registry.register(
            "downstream_connections_active",
            "Connections open now",
            downstream_active.clone(),
        );
        let upstream_connections = Family::default();
        registry.register(
            "upstream_connections",
            "Upstream connections opened",
            upstream_connections.clone(),
        );
        let downstream_closed = Family::default();
        registry.register(
            "downstream_connections_closed",
            "Connections that ended",
            downstream_closed.clone(),
        );
        let upstream_closed = Family::default();
        registry.register(
            "upstream_connections_closed",
            "Upstream connections that ended",
            upstream_closed.clone(),
        );
        let upstream_active = Family::default();
        registry.register(
            "upstream_connections_active",
            "Upstream connections open now",
            upstream_active.clone(),
        );
        let upstream_connect_errors = Family::default();
        registry.register(
            "upstream_connect_errors",
            "Failed upstream connection attempts",
            upstream_connect_errors.clone(),
        );
        let tcp_bytes = Family::default();
        registry.register(
            "tcp_relayed_bytes",
            "Bytes relayed by opaque TCP proxying",
            tcp_bytes.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Configuration updates by result",
            config_reloads.clone(),
        );
        let config_last_success = Gauge::default();
        registry.register(
            "config_last_success_timestamp_seconds",
            "Unix time of the last applied configuration",
            config_last_success.clone(),
        );
        let control_connected = Gauge::default();
        registry.register(
            "control_connected",
            "1 while the control stream is connected",
            control_connected.clone(),
        );
        let control_updates = Family::default();
        registry.register(
            "control_updates",
            "Control-stream updates by resource and result (ack, nack)",
            control_updates.clone(),
        );
        let control_applied = Family::default();
        registry.register(
            "control_applied_info",
            "The control-plane versions being served (1), by resource and where they came from (control, cache)",
            control_applied.clone(),
        );
        let retries = Family::default();
        registry.register(
            "retries",
            "Retries and hedges sent, by reason (the condition that fired, or hedge)",
            retries.clone(),
        );
        let retries_refused = Family::default();
        registry.register(
            "retries_refused",
            "Retries not sent although the policy asked for one, by reason (budget, max-retries, body-too-large, not-idempotent)",
            retries_refused.clone(),
        );
        let overflows = Family::default();
        registry.register(
            "overflows",
            "Requests failed fast by a circuit-breaker threshold, by limit",
            overflows.clone(),
        );
        let ejections = Family::default();
        registry.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection, by reason (capped: due but over maxEjectionPercent)",
            ejections.clone(),
        );
        let endpoints_ejected = Family::default();
        registry.register(
            "endpoints_ejected",
            "Endpoints ejected now",
            endpoints_ejected.clone(),
        );
        let health_checks = Family::default();
        registry.register(
            "health_checks",
            "Active health checks, by result (pass, fail)",
            health_checks.clone(),
        );
        let endpoints_unhealthy = Family::default();
        registry.register(
            "endpoints_unhealthy",
            "Endpoints failing active health checks now",
            endpoints_unhealthy.clone(),
        );
        let timeouts = Family::default();
        registry.register(
            "timeouts",
            "Timeouts that fired, by kind (request, per-try)",
            timeouts.clone(),
        );
        let trace_spans = Family::default();
        registry.register(
            "trace_spans",
            "Spans by result: sampled, exported, dropped (export queue full), failed (export error)",
            trace_spans.clone(),
        );
        let access_log_lines = Family::default();
        registry.register(
            "access_log_lines",
            "Access-log lines by result: written, dropped (queue full)",
            access_log_lines.clone(),
        );
        let request_bytes = Family::default();
        registry.register(
            "request_bytes",
            "Request body bytes received from clients",
            request_bytes.clone(),
        );
        let response_bytes = Family::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent to clients",
            response_bytes.clone(),
        );
        let tls_handshakes = Family::default();
        registry.register(
            "tls_handshakes",
            "Inbound TLS handshakes by listener and result: ok, plaintext (permissive), refused-plaintext, no-client-certificate, expired, unknown-issuer, wrong-trust-domain, no-spiffe-id, no-identity, timeout, failed, ...",
            tls_handshakes.clone(),
        );
        let upstream_tls_handshakes = Family::default();
        registry.register(
            "upstream_tls_handshakes",
            "TLS handshakes with upstream endpoints by result (`reason`): ok, expired, unknown-issuer, wrong-trust-domain, wrong-identity, no-spiffe-id, peer-refused-certificate, timeout, failed, ...",
            upstream_tls_handshakes.clone(),
        );
        let identity_updates = Family::default();
        registry.register(
            "identity_updates",
            "Mesh certificates loaded (result ok) or refused (error), by source: files, control-plane",
            identity_updates.clone(),
        );
        let authz_decisions = Family::default();
        registry.register(
            "authz_decisions",
            "Inbound authorization decisions by listener, policy (or default-deny) and decision: allow, deny, would-deny (dry run)",
            authz_decisions.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Requests over a route's rate limit, by route, limit and result: limited (answered 429), shadow (counted, let through)",
            rate_limited.clone(),
        );
        let connections_rejected = Family::default();
        registry.register(
            "connections_rejected",
            "Connections closed at accept by a listener's connection limits, by reason: per-second, max-connections, max-connections-per-client",
            connections_rejected.clone(),
        );
        let faults = Family::default();
        registry.register(
            "faults_injected",
            "Faults injected by routes, by kind: abort, delay",
            faults.clone(),
        );
        Self {
            registry,
            rate_limited,
            connections_rejected,
            faults,
            tls_handshakes,
            upstream_tls_handshakes,
            identity_updates,
            authz_decisions,
            request_bytes,
            response_bytes,
            access_log_lines,
            trace_spans,
            retries,
            retries_refused,
            overflows,
            ejections,
            endpoints_ejected,
            health_checks,
            endpoints_unhealthy,
            timeouts,
            requests,
            request_duration,
            proxy_errors,
            downstream_connections,
            downstream_active,
            downstream_closed,
            upstream_closed,
            upstream_connections,
            upstream_active,
            upstream_connect_errors,
            tcp_bytes,
            config_reloads,
            config_last_success,
            control_connected,
            control_updates,
            control_applied,
        }
    }

    /// Records the versions now served from the control plane or its cache.
    pub fn set_applied(&self, source: &'static str, config: &str, endpoints: &str) {
        self.control_applied.clear();
        for (resource, version) in [("config", config), ("endpoints", endpoints)] {
            self.control_applied
                .get_or_create(&AppliedLabels {
                    resource,
                    source,
                    version: version.to_owned(),
                })
                .set(1);
        }
    }

    /// Every metric in the Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding error");
        }
        openmetrics_to_prometheus(&out)
    }
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has samples `x_total`;
/// the Prometheus text format names HELP and TYPE after the sample (`x_total`), and has no
/// `# EOF`. Rewrites the metadata lines accordingly.
fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut help: Option<&str> = None;
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" && !name.ends_with("_total") {
                "_total"
            } else {
                ""
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.split_once(' '))
                    .map_or("", |(_, t)| t);
                let _ = writeln!(out, "# HELP {name}{suffix} {text}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_metadata() {
        let om = "# HELP remora_requests Requests.\n# TYPE remora_requests counter\nremora_requests_total{a=\"b\"} 1\n# HELP remora_up Up.\n# TYPE remora_up gauge\nremora_up 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP remora_requests_total Requests.\n# TYPE remora_requests_total counter\nremora_requests_total{a=\"b\"} 1\n# HELP remora_up Up.\n# TYPE remora_up gauge\nremora_up 1\n"
        );
    }
}
