//! The control plane's Prometheus metrics (`remora_control_*`), written in the Prometheus
//! text format (prometheus-client writes OpenMetrics; the metadata is rewritten).

use std::fmt::Write as _;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub proxies_connected: Gauge,
    pub pushes: Family<TypeLabels, Counter>,
    pub push_ack_seconds: Histogram,
    pub nacks: Counter,
    pub model_reloads: Family<ResultLabels, Counter>,
    pub certificates: Family<ResultLabels, Counter>,
    pub injections: Family<ResultLabels, Counter>,
    pub discovery_stale: Family<ServiceLabels, Gauge>,
    pub discovery_errors: Family<SourceLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
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
        let mut registry = Registry::with_prefix("remora_control");
        let proxies_connected = Gauge::default();
        registry.register(
            "proxies_connected",
            "Proxies with an open control stream",
            proxies_connected.clone(),
        );
        let pushes: Family<TypeLabels, Counter> = Family::default();
        registry.register(
            "pushes",
            "Updates sent to proxies, by type (config, endpoints)",
            pushes.clone(),
        );
        let push_ack_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "push_ack_seconds",
            "Time from sending an update to its ACK",
            push_ack_seconds.clone(),
        );
        let nacks = Counter::default();
        registry.register("nacks", "Updates refused by proxies (NACK)", nacks.clone());
        let model_reloads: Family<ResultLabels, Counter> = Family::default();
        registry.register(
            "model_reloads",
            "Mesh model loads from the directory, by result (success, failure)",
            model_reloads.clone(),
        );
        let certificates: Family<ResultLabels, Counter> = Family::default();
        registry.register(
            "certificates",
            "Certificate requests from proxies by result: issued, denied (claim not accepted), invalid (bad CSR), unavailable (no CA or no mtls)",
            certificates.clone(),
        );
        let injections: Family<ResultLabels, Counter> = Family::default();
        registry.register(
            "injections",
            "Pods seen by the injection webhook, by result: injected, already-injected, opted-out, host-network, no-service, not-a-pod, error",
            injections.clone(),
        );
        let discovery_stale: Family<ServiceLabels, Gauge> = Family::default();
        registry.register(
            "discovery_stale",
            "1 while a service's last known endpoints are kept despite its registry (an error or an empty answer), within its grace period",
            discovery_stale.clone(),
        );
        let discovery_errors: Family<SourceLabels, Counter> = Family::default();
        registry.register(
            "discovery_errors",
            "Failed registry queries, by source",
            discovery_errors.clone(),
        );
        // Every series exists from the start, at zero.
        for t in ["config", "endpoints"] {
            let _ = pushes.get_or_create(&TypeLabels { r#type: t });
        }
        for r in ["success", "failure"] {
            let _ = model_reloads.get_or_create(&ResultLabels { result: r });
        }
        Self {
            registry,
            proxies_connected,
            pushes,
            push_ack_seconds,
            nacks,
            model_reloads,
            certificates,
            injections,
            discovery_stale,
            discovery_errors,
        }
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.model_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn push(&self, kind: &'static str) {
        self.pushes
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    /// Every metric in the Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding error");
        }
        to_prometheus_text(&out)
    }
}

/// OpenMetrics names a counter family `x` and its sample `x_total`; the Prometheus text
/// format wants HELP and TYPE on `x_total` and no `# EOF` or `# UNIT`.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters: Vec<String> = Vec::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
            && !name.ends_with("_total")
        {
            counters.push(name.to_owned());
        }
        out.push_str(line);
        out.push('\n');
    }
    let mut fixed = String::with_capacity(out.len());
    for line in out.lines() {
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        fixed.push_str(rewritten.as_deref().unwrap_or(line));
        fixed.push('\n');
    }
    fixed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_metadata_names_the_total_sample() {
        let m = Metrics::new();
        m.push("config");
        m.reload(true);
        let text = m.encode();
        assert!(
            text.contains("# TYPE remora_control_pushes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("remora_control_pushes_total{type=\"config\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE remora_control_nacks_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE remora_control_push_ack_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("remora_control_proxies_connected 0"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
