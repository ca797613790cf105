//! OpenTelemetry tracing: each proxied request joins the caller's trace (or starts one),
//! passes the context upstream ([`context`]), and, when sampled, becomes a span (server span
//! on an inbound listener, client span on an outbound one; one child span per try when the
//! route retries). Finished spans go to a bounded queue that a task exports with OTLP/gRPC;
//! when the queue is full (a slow or dead collector) spans are dropped and counted, and a
//! request never waits for tracing. OTLP/gRPC by default, OTLP/HTTP with protobuf bodies as
//! an option.

pub mod context;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use prometheus_client::metrics::counter::Counter;
use remora_control_api::config::Tracing;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ResultLabels};
use context::{Format, Incoming, Outgoing};

/// Spans sent to the collector in one export call, at most.
const BATCH: usize = 512;
/// How long a first span waits for company before its batch goes.
const LINGER: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header that forces sampling when the configuration allows it.
pub const FORCE_HEADER: &str = "x-remora-sample";

/// The exporter side of tracing for one configuration.
#[derive(Debug)]
pub struct Tracer {
    pub config: Tracing,
    tx: mpsc::Sender<SpanData>,
    dropped: Counter,
    sampled: Counter,
}

/// Who the proxy is, for the spans' resource.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub service: Option<String>,
    pub node: Option<String>,
}

impl Tracer {
    /// Starts the exporter task for `config`. Must run inside the runtime.
    pub fn start(
        config: Tracing,
        identity: &Identity,
        mesh: Arc<crate::identity::IdentityStore>,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, String> {
        use opentelemetry_otlp::WithExportConfig;
        use remora_control_api::config::TracingProtocol;
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let built = match config.protocol {
            TracingProtocol::Grpc => builder
                .with_tonic()
                .with_endpoint(config.collector.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            TracingProtocol::HttpProtobuf => builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(config.collector.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
        };
        let mut exporter = built.map_err(|e| format!("tracing.collector: {e}"))?;
        let service = if config.service_name.is_empty() {
            identity
                .service
                .clone()
                .unwrap_or_else(|| "remora".to_owned())
        } else {
            config.service_name.clone()
        };
        let mut attributes = vec![KeyValue::new("remora.proxy", "remora")];
        if let Some(node) = &identity.node {
            attributes.push(KeyValue::new("service.instance.id", node.clone()));
        }
        let resource = ResourceParts {
            service,
            attributes,
            mesh,
        };
        let mesh_id = resource.set(&mut exporter);
        let (tx, rx) = mpsc::channel(config.max_queue);
        let counter = |result| {
            metrics
                .trace_spans
                .get_or_create(&ResultLabels { result })
                .clone()
        };
        tokio::spawn(export(
            rx,
            exporter,
            resource,
            mesh_id,
            counter("exported"),
            counter("failed"),
        ));
        Ok(Arc::new(Self {
            dropped: counter("dropped"),
            sampled: counter("sampled"),
            tx,
            config,
        }))
    }

    fn submit(&self, span: SpanData) {
        self.sampled.inc();
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Joins or starts the trace of a request and decides sampling.
    pub fn begin(self: &Arc<Self>, headers: &HeaderMap, kind: SpanKind) -> RequestTrace {
        let incoming = context::extract(headers);
        let forced = self.config.force_sample_header
            && headers
                .get(FORCE_HEADER)
                .is_some_and(|v| v.as_bytes() == b"1");
        let trace_id = incoming
            .as_ref()
            .map_or_else(context::new_trace_id, |c| c.trace_id);
        let sampled = forced
            || match &incoming {
                Some(Incoming { debug: true, .. }) => true,
                Some(Incoming {
                    sampled: Some(s), ..
                }) => *s,
                _ => context::ratio_sampled(trace_id, self.config.sample_ratio),
            };
        RequestTrace {
            tracer: Arc::clone(self),
            trace_id,
            span_id: context::new_span_id(),
            parent: incoming.as_ref().map(|c| c.span_id),
            format: incoming.as_ref().map(|c| c.format),
            tracestate: incoming.and_then(|c| c.tracestate),
            sampled: std::sync::atomic::AtomicBool::new(sampled),
            kind,
            start: SystemTime::now(),
        }
    }
}

/// One request's place in its trace.
#[derive(Debug)]
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    pub trace_id: u128,
    pub span_id: u64,
    parent: Option<u64>,
    format: Option<Format>,
    tracestate: Option<http::HeaderValue>,
    sampled: std::sync::atomic::AtomicBool,
    kind: SpanKind,
    start: SystemTime,
}

/// What a finished request contributes to its span.
#[derive(Debug)]
pub struct Finished<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub version: http::Version,
    pub status: u16,
    pub route: &'a str,
    pub cluster: &'a str,
    pub listener: &'a str,
    pub direction: &'static str,
    pub client: SocketAddr,
    /// The `x-remora-error` reason when the proxy answered itself.
    pub flags: Option<&'static str>,
    /// The endpoint of the last try, and how many tries there were.
    pub endpoint: Option<SocketAddr>,
    pub tries: u32,
    /// The caller's SPIFFE id on an mTLS connection.
    pub peer_identity: Option<&'a str>,
}

impl RequestTrace {
    /// Will this request's spans be recorded.
    pub fn sampled(&self) -> bool {
        self.sampled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Samples the request whatever was decided (a route with `forceTrace`).
    pub fn force(&self) {
        self.sampled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes the context the upstream should see, with `span_id` (this request's span, or
    /// a try's) as the parent.
    pub fn inject(&self, headers: &mut HeaderMap, span_id: u64) {
        let out = Outgoing {
            trace_id: self.trace_id,
            span_id,
            parent_span_id: Some(self.span_id).filter(|s| *s != span_id).or(self.parent),
            sampled: self.sampled(),
        };
        context::inject(headers, &out, self.format, self.tracestate.as_ref());
    }

    fn context(&self, span_id: u64) -> SpanContext {
        SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(span_id),
            if self.sampled() {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            false,
            TraceState::default(),
        )
    }

    /// Records one try as a child span (only when sampled).
    pub fn record_try(
        &self,
        span_id: u64,
        attempt: u32,
        start: SystemTime,
        endpoint: SocketAddr,
        outcome: Result<u16, &'static str>,
    ) {
        if !self.sampled() {
            return;
        }
        let mut attributes = vec![
            KeyValue::new("remora.attempt", i64::from(attempt)),
            KeyValue::new("network.peer.address", endpoint.ip().to_string()),
            KeyValue::new("network.peer.port", i64::from(endpoint.port())),
        ];
        let status = match outcome {
            Ok(code) => {
                attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
                if code >= 500 {
                    Status::error(code.to_string())
                } else {
                    Status::Unset
                }
            }
            Err(reason) => {
                attributes.push(KeyValue::new("error.type", reason));
                Status::error(reason)
            }
        };
        self.tracer.submit(self.span(
            span_id,
            Some(self.span_id),
            SpanKind::Client,
            format!("try {attempt}").into(),
            start,
            attributes,
            status,
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        span_id: u64,
        parent: Option<u64>,
        kind: SpanKind,
        name: Cow<'static, str>,
        start: SystemTime,
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: self.context(span_id),
            parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: parent == self.parent,
            span_kind: kind,
            name,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder("remora").build(),
        }
    }

    /// Ends the request's span (only when sampled).
    pub fn finish(&self, f: &Finished<'_>) {
        if !self.sampled() {
            return;
        }
        let version = match f.version {
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_10 => "1.0",
            _ => "1.1",
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", f.method.to_owned()),
            KeyValue::new("url.path", f.path.to_owned()),
            KeyValue::new("server.address", f.authority.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(f.status)),
            KeyValue::new("network.protocol.version", version),
            KeyValue::new("client.address", f.client.ip().to_string()),
            KeyValue::new("remora.listener", f.listener.to_owned()),
            KeyValue::new("remora.direction", f.direction),
            KeyValue::new("remora.retries", i64::from(f.tries.saturating_sub(1))),
        ];
        if !f.route.is_empty() {
            attributes.push(KeyValue::new("http.route", f.route.to_owned()));
        }
        if !f.cluster.is_empty() {
            attributes.push(KeyValue::new("remora.cluster", f.cluster.to_owned()));
        }
        if let Some(e) = f.endpoint {
            attributes.push(KeyValue::new("remora.upstream.address", e.to_string()));
        }
        if let Some(id) = f.peer_identity {
            attributes.push(KeyValue::new("remora.peer.identity", id.to_owned()));
        }
        if let Some(flag) = f.flags {
            attributes.push(KeyValue::new("remora.response_flags", flag));
        }
        let status = if f.status >= 500 {
            attributes.push(KeyValue::new("error.type", f.status.to_string()));
            Status::error(f.flags.unwrap_or("server error"))
        } else {
            Status::Unset
        };
        let name = if f.route.is_empty() {
            f.method.to_owned()
        } else {
            format!("{} {}", f.method, f.route)
        };
        self.tracer.submit(self.span(
            self.span_id,
            self.parent,
            self.kind.clone(),
            name.into(),
            self.start,
            attributes,
            status,
        ));
    }
}

/// Drains the queue into export calls of up to [`BATCH`] spans; ends when the tracer is
/// dropped (a configuration without it, or a new collector) after a last export.
/// The spans' resource: service name, node, and the proxy's mesh identity (its SPIFFE id,
/// which arrives or changes with the certificate, so it is re-read before each export).
struct ResourceParts {
    service: String,
    attributes: Vec<KeyValue>,
    mesh: Arc<crate::identity::IdentityStore>,
}

impl ResourceParts {
    /// Sets the exporter's resource; returns the mesh id it carries.
    fn set(&self, exporter: &mut opentelemetry_otlp::SpanExporter) -> Option<String> {
        let id = self.mesh.current().map(|c| c.id.clone());
        let mut attributes = self.attributes.clone();
        if let Some(id) = &id {
            attributes.push(KeyValue::new("remora.mesh.identity", id.clone()));
        }
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(self.service.clone())
                .with_attributes(attributes)
                .build(),
        );
        id
    }
}

async fn export(
    mut rx: mpsc::Receiver<SpanData>,
    mut exporter: opentelemetry_otlp::SpanExporter,
    resource: ResourceParts,
    mut mesh_id: Option<String>,
    exported: Counter,
    failed: Counter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        if resource.mesh.current().map(|c| c.id.clone()) != mesh_id {
            mesh_id = resource.set(&mut exporter);
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len() as u64;
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(std::mem::take(&mut batch)))
            .await
        {
            Ok(Ok(())) => {
                exported.inc_by(n);
            }
            Ok(Err(e)) => {
                failed.inc_by(n);
                tracing::debug!(error = %e, spans = n, "span export failed");
            }
            Err(_) => {
                failed.inc_by(n);
                tracing::debug!(spans = n, "span export timed out");
            }
        }
    }
}
