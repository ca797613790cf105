//! The control stream over a real gRPC connection on 127.0.0.1: Hello → CONFIG, ACK and NACK
//! recorded, only affected proxies get pushes, endpoint-only changes go out as deltas, a
//! proxy that already holds the current versions gets nothing, bad first messages are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use remora_control::registry::ProxyRecord;
use remora_control::serve::{self, Running};
use remora_control_api::proto::control::control_client::ControlClient;
use remora_control_api::proto::control::proxy_message::Kind;
use remora_control_api::proto::control::{Ack, Hello, Nack, ProxyMessage, ResourceType, Update};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const MESH: &str = r#"
services:
  - { name: a, endpoints: [{ address: "10.0.0.1:80" }] }
  - { name: b, endpoints: [{ address: "10.0.0.2:80" }] }
sidecars:
  - { service: client-a, upstreams: [{ service: a, address: "127.0.0.1:7001" }] }
  - { service: client-b, upstreams: [{ service: b, address: "127.0.0.1:7002" }] }
"#;

const WAIT: Duration = Duration::from_secs(10);

async fn start(name: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("remora-stream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    serve::start(serve::Options {
        mesh: dir,
        grpc: "127.0.0.1:0".parse().unwrap(),
        api: "127.0.0.1:0".parse().unwrap(),
        dns_server: Some("127.0.0.1:9".parse().unwrap()),
        watch: false,
        ca: None,
        cert_ttl: std::time::Duration::from_secs(3600),
        trust_domain: None,
        webhook: None,
        kubernetes: None,
        consul: "http://127.0.0.1:9".into(),
        eureka: "http://127.0.0.1:9/eureka".into(),
        eureka_refresh: std::time::Duration::from_secs(30),
        nomad: "http://127.0.0.1:9".into(),
        marathon: "http://127.0.0.1:9".into(),
    })
    .await
    .unwrap()
}

struct Proxy {
    tx: mpsc::Sender<ProxyMessage>,
    updates: Streaming<Update>,
}

async fn client(running: &Running) -> ControlClient<tonic::transport::Channel> {
    ControlClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap()
}

async fn open(running: &Running, hello: Hello) -> Result<Proxy, tonic::Status> {
    let mut c = client(running).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(ProxyMessage {
        kind: Some(Kind::Hello(hello)),
    })
    .await
    .unwrap();
    let updates = c.stream(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Proxy { tx, updates })
}

fn hello(node: &str, service: &str) -> Hello {
    Hello {
        node: node.into(),
        service: service.into(),
        versions: HashMap::new(),
        proxy_version: "test".into(),
    }
}

impl Proxy {
    async fn next(&mut self) -> Update {
        tokio::time::timeout(WAIT, self.updates.message())
            .await
            .expect("an update within the wait")
            .unwrap()
            .expect("stream open")
    }

    /// Asserts nothing arrives within a short, bounded wait.
    async fn nothing(&mut self) {
        if let Ok(m) =
            tokio::time::timeout(Duration::from_millis(300), self.updates.message()).await
        {
            panic!("expected no update, got {m:?}");
        }
    }

    async fn ack(&self, u: &Update) {
        let kind = Kind::Ack(Ack {
            r#type: u.r#type,
            version: u.version.clone(),
            nonce: u.nonce.clone(),
        });
        self.tx
            .send(ProxyMessage { kind: Some(kind) })
            .await
            .unwrap();
    }

    async fn nack(&self, u: &Update, error: &str) {
        let kind = Kind::Nack(Nack {
            r#type: u.r#type,
            version: u.version.clone(),
            nonce: u.nonce.clone(),
            error: error.into(),
        });
        self.tx
            .send(ProxyMessage { kind: Some(kind) })
            .await
            .unwrap();
    }
}

/// Polls the registry until `cond` holds for `node` (bounded).
async fn until(running: &Running, node: &str, cond: impl Fn(&ProxyRecord) -> bool) -> ProxyRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = running.registry.get(node).filter(|r| cond(r)) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held for {node}: {:?}",
            running.registry.get(node)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn apply(running: &Running, yaml: &str) {
    let mesh = remora_control::model::parse(yaml).unwrap();
    running.hub.apply(&mesh).unwrap();
}

#[tokio::test]
async fn pushes_go_only_to_affected_proxies_with_acks_nacks_and_deltas() {
    let running = start("main").await;

    // Hello → full CONFIG; ACK recorded.
    let mut a = open(&running, hello("a-1", "client-a")).await.unwrap();
    let first = a.next().await;
    assert_eq!(first.r#type, i32::from(ResourceType::Config));
    let config = first.config.as_ref().unwrap();
    assert_eq!(config.version, first.version);
    assert_eq!(
        config
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a"]
    );
    assert!(!first.endpoints_version.is_empty());
    a.ack(&first).await;
    let rec = until(&running, "a-1", |r| r.in_sync).await;
    assert_eq!(rec.acked_config_version, first.version);
    assert_eq!(rec.acked_endpoints_version, first.endpoints_version);
    assert_eq!(rec.service, "client-a");
    assert!(rec.peer.starts_with("127.0.0.1:"));

    let mut b = open(&running, hello("b-1", "client-b")).await.unwrap();
    let b_first = b.next().await;
    b.ack(&b_first).await;
    until(&running, "b-1", |r| r.in_sync).await;

    // A policy change for service a: client-a gets a CONFIG, client-b nothing.
    apply(
        &running,
        r#"policies: [{ service: a, routes: [{ name: api, match: { pathPrefix: /api }, forward: { cluster: a } }] }]"#,
    );
    let second = a.next().await;
    assert_eq!(second.r#type, i32::from(ResourceType::Config));
    assert_ne!(second.version, first.version);
    a.ack(&second).await;
    until(&running, "a-1", |r| {
        r.in_sync && r.acked_config_version == second.version
    })
    .await;
    let generation = running.hub.current().generation;
    until(&running, "b-1", |r| r.generation == generation).await;
    b.nothing().await;

    // Endpoint-only change: an ENDPOINTS delta with the new endpoints version.
    apply(
        &running,
        r#"services: [{ name: a, endpoints: [{ address: "10.0.0.9:80", weight: 2 }] }]"#,
    );
    let delta = a.next().await;
    assert_eq!(delta.r#type, i32::from(ResourceType::Endpoints));
    assert!(delta.config.is_none());
    assert_eq!(delta.endpoints.len(), 1);
    assert_eq!(delta.endpoints[0].cluster, "a");
    assert_eq!(delta.endpoints[0].upserted[0].address, "10.0.0.9:80");
    assert_eq!(delta.endpoints[0].removed, vec!["10.0.0.1:80"]);
    assert_eq!(
        delta.version,
        running
            .hub
            .current()
            .config_for("client-a")
            .endpoints_version
    );
    a.ack(&delta).await;
    let rec = until(&running, "a-1", |r| r.in_sync).await;
    assert_eq!(rec.acked_endpoints_version, delta.version);
    assert_eq!(rec.acked_config_version, second.version);
    let generation = running.hub.current().generation;
    until(&running, "b-1", |r| r.generation == generation).await;
    b.nothing().await;

    // NACK: recorded with its error, counted; the proxy is out of sync.
    apply(
        &running,
        r#"policies: [{ service: a, routes: [{ name: all, forward: { cluster: a } }] }]"#,
    );
    let third = a.next().await;
    a.nack(&third, "routeTable \"a\": boom").await;
    let rec = until(&running, "a-1", |r| r.last_nack.is_some()).await;
    let nack = rec.last_nack.unwrap();
    assert_eq!(nack.error, "routeTable \"a\": boom");
    assert_eq!(nack.version, third.version);
    assert!(!rec.in_sync);
    assert_eq!(running.metrics.nacks.get(), 1);

    // A Hello with the current versions receives nothing.
    let wanted = running.hub.current().config_for("client-b");
    let mut h = hello("b-2", "client-b");
    h.versions
        .insert("config".into(), wanted.config_version.clone());
    h.versions
        .insert("endpoints".into(), wanted.endpoints_version.clone());
    let mut b2 = open(&running, h).await.unwrap();
    let rec = until(&running, "b-2", |r| r.in_sync).await;
    assert_eq!(rec.acked_config_version, wanted.config_version);
    b2.nothing().await;

    // A proxy whose service has no sidecar gets an empty config.
    let mut lonely = open(&running, hello("x-1", "nobody")).await.unwrap();
    let empty = lonely.next().await;
    assert!(empty.config.unwrap().listeners.is_empty());

    // Disconnect is recorded.
    drop(b2);
    let rec = until(&running, "b-2", |r| !r.connected).await;
    assert!(rec.disconnected_at.is_some());
    assert!(
        running
            .metrics
            .encode()
            .contains("remora_control_pushes_total{type=\"endpoints\"} 1")
    );
}

#[tokio::test]
async fn a_first_message_other_than_hello_and_garbage_are_refused_without_harm() {
    let running = start("bad").await;

    // First message is an ACK.
    let mut c = client(&running).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(ProxyMessage {
        kind: Some(Kind::Ack(Ack::default())),
    })
    .await
    .unwrap();
    let err = c.stream(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("Hello"), "{}", err.message());

    // An empty message, then a Hello without a node.
    let (tx, rx) = mpsc::channel(4);
    tx.send(ProxyMessage { kind: None }).await.unwrap();
    let err = c.stream(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = open(&running, hello("", "client-a")).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("hello.node"), "{}", err.message());
    let err = open(&running, hello(&"n".repeat(10_000), "client-a"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A second Hello on an open stream ends it with an error.
    let mut p = open(&running, hello("twice", "client-a")).await.unwrap();
    let _ = p.next().await;
    p.tx.send(ProxyMessage {
        kind: Some(Kind::Hello(hello("twice", "client-a"))),
    })
    .await
    .unwrap();
    let end = tokio::time::timeout(WAIT, p.updates.message())
        .await
        .unwrap();
    assert_eq!(end.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Raw garbage on the gRPC port.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(running.grpc).await.unwrap();
    raw.write_all(b"\x00\xffGET / HTTP/1.1\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff\xff").await.unwrap();
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(WAIT, raw.read(&mut buf)).await;
    drop(raw);

    // The server still serves.
    let mut ok = open(&running, hello("after", "client-b")).await.unwrap();
    assert_eq!(ok.next().await.r#type, i32::from(ResourceType::Config));
    let _ = Arc::clone(&running.hub);
}
