//! The control stream server (`remora.control.v1.Control/Stream`): one task per proxy. It
//! checks the Hello, registers the proxy, sends the full configuration unless the proxy
//! already holds it, records ACKs and NACKs, and on every published mesh state sends only what
//! changed for this proxy: a CONFIG when its configuration changed, an ENDPOINTS delta when
//! only endpoints did, nothing otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remora_control_api::proto::control::control_server::Control;
use remora_control_api::proto::control::proxy_message::Kind;
use remora_control_api::proto::control::{
    ClusterEndpoints, Hello, ProxyMessage, ResourceType, Update,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::generate::{ProxyConfig, endpoint_deltas};
use crate::metrics::Metrics;
use crate::registry::{NackRecord, Registry, unix_now};
use crate::state::MeshState;

/// A proxy must say Hello within this time.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest node id, service name or version accepted in a Hello.
pub const MAX_NAME_BYTES: usize = 253;
/// Most entries accepted in Hello.versions.
pub const MAX_VERSIONS: usize = 16;
/// Most unanswered updates remembered per stream (older ones are forgotten).
pub const MAX_PENDING: usize = 64;
/// Longest NACK error text kept.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

#[derive(Clone)]
pub struct ControlService {
    state: watch::Receiver<Arc<MeshState>>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlService")
    }
}

impl ControlService {
    pub fn new(
        state: watch::Receiver<Arc<MeshState>>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            state,
            registry,
            metrics,
        }
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    type StreamStream = ReceiverStream<Result<Update, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(String::new, |a| a.to_string());
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10s of opening the stream"))?;
        let hello = match first {
            Ok(Some(ProxyMessage {
                kind: Some(Kind::Hello(h)),
            })) => h,
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "the first message on a stream must be Hello {node, service}",
                ));
            }
            Err(status) => return Err(status),
        };
        check_hello(&hello)?;
        let (tx, rx) = mpsc::channel(16);
        let stream = self.registry.connect(
            &hello.node,
            &hello.service,
            &hello.proxy_version,
            peer.clone(),
        );
        tracing::info!(node = %hello.node, service = %hello.service, %peer, "proxy connected");
        let session = Session {
            node: hello.node.clone(),
            service: hello.service.clone(),
            stream,
            registry: Arc::clone(&self.registry),
            metrics: Arc::clone(&self.metrics),
            tx,
            sent: None,
            force_full: false,
            pending: HashMap::new(),
            counter: 0,
        };
        tokio::spawn(session.run(hello, inbound, self.state.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn check_hello(h: &Hello) -> Result<(), Status> {
    let bad =
        |field: &str, what: &str| Err(Status::invalid_argument(format!("hello.{field}: {what}")));
    if h.node.is_empty() {
        return bad("node", "required (unique per proxy, e.g. the pod name)");
    }
    if h.service.is_empty() {
        return bad(
            "service",
            "required (the mesh service this proxy runs beside)",
        );
    }
    if h.node.len() > MAX_NAME_BYTES || h.service.len() > MAX_NAME_BYTES {
        return bad("node", "node and service must be at most 253 bytes");
    }
    if h.proxy_version.len() > MAX_NAME_BYTES {
        return bad("proxyVersion", "must be at most 253 bytes");
    }
    if h.versions.len() > MAX_VERSIONS
        || h.versions
            .iter()
            .any(|(k, v)| k.len() > MAX_NAME_BYTES || v.len() > MAX_NAME_BYTES)
    {
        return bad("versions", "at most 16 entries of at most 253 bytes");
    }
    Ok(())
}

struct Pending {
    kind: ResourceType,
    config_version: String,
    endpoints_version: String,
    sent_at: Instant,
}

struct Session {
    node: String,
    service: String,
    stream: u64,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Result<Update, Status>>,
    /// What was last sent (or what the proxy said it holds).
    sent: Option<Arc<ProxyConfig>>,
    /// After a NACK the proxy's state is uncertain: the next change goes out whole.
    force_full: bool,
    pending: HashMap<String, Pending>,
    counter: u64,
}

impl Session {
    async fn run(
        mut self,
        hello: Hello,
        mut inbound: Streaming<ProxyMessage>,
        mut state: watch::Receiver<Arc<MeshState>>,
    ) {
        self.metrics.proxies_connected.inc();
        let current = Arc::clone(&state.borrow_and_update());
        let wanted = current.config_for(&self.service);
        let held = |k: &str| hello.versions.get(k).map_or("", String::as_str);
        if held("config") == wanted.config_version && held("endpoints") == wanted.endpoints_version
        {
            self.registry.update(&self.node, self.stream, |r| {
                r.acked_config_version.clone_from(&wanted.config_version);
                r.acked_endpoints_version
                    .clone_from(&wanted.endpoints_version);
                r.wanted_config_version.clone_from(&wanted.config_version);
                r.wanted_endpoints_version
                    .clone_from(&wanted.endpoints_version);
            });
            self.sent = Some(wanted);
            self.mark(current.generation);
        } else {
            self.on_state(&current).await;
        }
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if let Err(status) = self.on_message(m) {
                            let _ = self.tx.send(Err(status)).await;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node = %self.node, error = %status.message(), "control stream read failed");
                        break;
                    }
                },
                changed = state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = Arc::clone(&state.borrow_and_update());
                    self.on_state(&current).await;
                }
                () = self.tx.closed() => break,
            }
        }
        self.metrics.proxies_connected.dec();
        self.registry.disconnect(&self.node, self.stream);
        tracing::info!(node = %self.node, service = %self.service, "proxy disconnected");
    }

    fn mark(&self, generation: u64) {
        self.registry
            .update(&self.node, self.stream, |r| r.generation = generation);
    }

    /// Sends what changed for this proxy in `state`, if anything.
    async fn on_state(&mut self, state: &MeshState) {
        let wanted = state.config_for(&self.service);
        self.registry.update(&self.node, self.stream, |r| {
            r.wanted_config_version.clone_from(&wanted.config_version);
            r.wanted_endpoints_version
                .clone_from(&wanted.endpoints_version);
        });
        let sent = self.sent.clone();
        let update = match &sent {
            Some(sent)
                if sent.config_version == wanted.config_version
                    && sent.endpoints_version == wanted.endpoints_version =>
            {
                None
            }
            Some(sent) if sent.config_version == wanted.config_version && !self.force_full => {
                Some(self.endpoints_update(sent, &wanted))
            }
            _ => Some(self.config_update(&wanted)),
        };
        if let Some(update) = update {
            let kind = if update.r#type == i32::from(ResourceType::Config) {
                "config"
            } else {
                "endpoints"
            };
            if self.tx.send(Ok(update)).await.is_ok() {
                self.metrics.push(kind);
                tracing::debug!(node = %self.node, kind, version = %wanted.config_version, "update sent");
            }
            self.sent = Some(wanted);
            self.force_full = false;
        }
        self.mark(state.generation);
    }

    fn nonce(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.stream, self.counter)
    }

    fn remember(&mut self, nonce: &str, kind: ResourceType, pc: &ProxyConfig) {
        if self.pending.len() >= MAX_PENDING {
            // Forget the oldest unanswered update.
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.sent_at)
                .map(|(k, _)| k.clone())
            {
                self.pending.remove(&oldest);
            }
        }
        self.pending.insert(
            nonce.to_owned(),
            Pending {
                kind,
                config_version: pc.config_version.clone(),
                endpoints_version: pc.endpoints_version.clone(),
                sent_at: Instant::now(),
            },
        );
    }

    fn config_update(&mut self, wanted: &ProxyConfig) -> Update {
        let nonce = self.nonce();
        self.remember(&nonce, ResourceType::Config, wanted);
        Update {
            r#type: ResourceType::Config.into(),
            version: wanted.config_version.clone(),
            nonce,
            config: Some(wanted.config.clone()),
            endpoints: Vec::new(),
            endpoints_version: wanted.endpoints_version.clone(),
        }
    }

    fn endpoints_update(&mut self, sent: &ProxyConfig, wanted: &ProxyConfig) -> Update {
        let nonce = self.nonce();
        self.remember(&nonce, ResourceType::Endpoints, wanted);
        let endpoints = endpoint_deltas(&sent.endpoints, &wanted.endpoints)
            .into_iter()
            .map(|(cluster, d)| ClusterEndpoints {
                cluster,
                upserted: d.upserted,
                removed: d.removed,
            })
            .collect();
        Update {
            r#type: ResourceType::Endpoints.into(),
            version: wanted.endpoints_version.clone(),
            nonce,
            config: None,
            endpoints,
            endpoints_version: String::new(),
        }
    }

    /// Handles an ACK or NACK; an error status ends the stream.
    fn on_message(&mut self, m: ProxyMessage) -> Result<(), Status> {
        match m.kind {
            Some(Kind::Ack(ack)) => {
                let Some(p) = self.pending.remove(&ack.nonce) else {
                    tracing::debug!(node = %self.node, nonce = %ack.nonce, "ACK for an unknown nonce; ignored");
                    return Ok(());
                };
                self.metrics
                    .push_ack_seconds
                    .observe(p.sent_at.elapsed().as_secs_f64());
                self.registry.update(&self.node, self.stream, |r| {
                    if p.kind == ResourceType::Config {
                        r.acked_config_version = p.config_version;
                    }
                    r.acked_endpoints_version = p.endpoints_version;
                });
                Ok(())
            }
            Some(Kind::Nack(nack)) => {
                let Some(p) = self.pending.remove(&nack.nonce) else {
                    tracing::debug!(node = %self.node, nonce = %nack.nonce, "NACK for an unknown nonce; ignored");
                    return Ok(());
                };
                self.metrics.nacks.inc();
                self.force_full = true;
                let error = truncate(&nack.error, MAX_ERROR_BYTES);
                tracing::warn!(node = %self.node, service = %self.service, version = %nack.version, %error, "proxy refused an update (NACK)");
                self.registry.update(&self.node, self.stream, |r| {
                    r.last_nack = Some(NackRecord {
                        r#type: if p.kind == ResourceType::Config {
                            "config"
                        } else {
                            "endpoints"
                        },
                        version: if p.kind == ResourceType::Config {
                            p.config_version
                        } else {
                            p.endpoints_version
                        },
                        error,
                        at: unix_now(),
                    });
                });
                Ok(())
            }
            Some(Kind::Hello(_)) => Err(Status::invalid_argument(
                "Hello is only valid as the first message of a stream",
            )),
            None => {
                tracing::debug!(node = %self.node, "empty message on the control stream; ignored");
                Ok(())
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
