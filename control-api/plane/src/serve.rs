//! `remora-control serve`: loads the mesh, starts discovery, the directory watcher, the gRPC
//! control stream server and the operator API, and logs the bound addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use remora_control_api::proto::control::control_server::ControlServer;
use remora_control_api::proto::control::identity_server::IdentityServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::{self, Api};
use crate::discovery::{Source, StaticSource};
use crate::dns;
use crate::identity::IdentityService;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::state::Hub;
use crate::stream::ControlService;

/// Largest message accepted from a proxy (ACK/NACK are small; NACK errors are bounded).
pub const MAX_PROXY_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest update sent.
pub const MAX_UPDATE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Options {
    pub mesh: PathBuf,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub dns_server: Option<SocketAddr>,
    /// Watch the directory for changes (off in some tests).
    pub watch: bool,
    /// The mesh CA that signs proxies' certificates.
    pub ca: Option<PathBuf>,
    pub cert_ttl: std::time::Duration,
    /// For a CA certificate that names no trust domain.
    pub trust_domain: Option<String>,
    pub webhook: Option<WebhookOptions>,
    /// Kubernetes discovery: `Some(None)` in-cluster, `Some(Some(url))` an API at `url`.
    pub kubernetes: Option<Option<String>>,
    /// Consul's and Eureka's HTTP APIs.
    pub consul: String,
    pub eureka: String,
    pub eureka_refresh: std::time::Duration,
    /// Nomad's and Marathon's HTTP APIs.
    pub nomad: String,
    pub marathon: String,
}

/// The injection webhook's address, certificate and what it injects.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub injection: PathBuf,
}

/// A running control plane; dropping it stops the servers.
pub struct Running {
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub hub: Arc<Hub>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("grpc", &self.grpc)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts everything; errors say what to fix (a bad model lists every problem).
pub async fn start(opts: Options) -> anyhow::Result<Running> {
    let grpc_listener = TcpListener::bind(opts.grpc)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind --grpc {}: {e}", opts.grpc))?;
    let api_listener = TcpListener::bind(opts.api)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind --api {}: {e}", opts.api))?;
    let grpc = grpc_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;

    let ca = match &opts.ca {
        Some(dir) => Some(Arc::new(
            remora_certs::ca::Ca::load_for(dir, opts.trust_domain.as_deref()).map_err(|e| {
                anyhow::anyhow!(
                    "--ca {}: {e} (create one with `remora-certs ca init`)",
                    dir.display()
                )
            })?,
        )),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(Registry::default());
    let (changed_tx, mut changed_rx) = mpsc::channel::<()>(1);
    let servers = match opts.dns_server {
        Some(s) => vec![s],
        None => dns::system_servers(),
    };
    let resolver = if servers.is_empty() {
        None
    } else {
        match dns::resolver(&servers) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "DNS discovery disabled");
                None
            }
        }
    };
    let kube = match &opts.kubernetes {
        Some(api) => Some(
            crate::kubernetes::client(api.as_deref())
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let sources: Vec<Arc<dyn Source>> = vec![
        Arc::new(StaticSource),
        Arc::new(dns::source(
            resolver,
            changed_tx.clone(),
            Arc::clone(&metrics),
        )),
        Arc::new(crate::kubernetes::KubernetesSource::new(
            kube,
            changed_tx.clone(),
        )),
        Arc::new(crate::polled::PolledSource::new(
            crate::consul::Consul::new(&opts.consul, std::env::var("CONSUL_HTTP_TOKEN").ok()),
            changed_tx.clone(),
            Arc::clone(&metrics),
        )),
        Arc::new(crate::polled::PolledSource::new(
            crate::eureka::Eureka::new(&opts.eureka, opts.eureka_refresh),
            changed_tx.clone(),
            Arc::clone(&metrics),
        )),
        Arc::new(crate::polled::PolledSource::new(
            crate::nomad::Nomad::new(&opts.nomad, std::env::var("NOMAD_TOKEN").ok()),
            changed_tx.clone(),
            Arc::clone(&metrics),
        )),
        Arc::new(crate::polled::PolledSource::new(
            crate::marathon::Marathon::new(&opts.marathon),
            changed_tx,
            Arc::clone(&metrics),
        )),
    ];
    let mesh = opts.mesh.clone();
    let hub = Hub::load(&mesh, sources, Arc::clone(&metrics))
        .map_err(|e| anyhow::anyhow!("{}: {e}", mesh.display()))?;

    let mut tasks = Vec::new();
    let h = Arc::clone(&hub);
    tasks.push(tokio::spawn(async move {
        while changed_rx.recv().await.is_some() {
            let h = Arc::clone(&h);
            let _ = tokio::task::spawn_blocking(move || h.refresh_endpoints()).await;
        }
    }));
    let watcher = if opts.watch {
        Some(crate::watch::spawn(Arc::clone(&hub))?)
    } else {
        None
    };

    if let (Some(ca), Some(m)) = (&ca, &hub.current().model.mtls)
        && ca.trust_domain != m.value.trust_domain
    {
        tracing::warn!(ca = %ca.trust_domain, mesh = %m.value.trust_domain, "the CA's trust domain is not the mesh's; certificate requests will be refused");
    }
    // Mesh-wide rate limits are re-divided as proxies come and go.
    let (h, r) = (Arc::clone(&hub), Arc::clone(&registry));
    tasks.push(tokio::spawn(async move {
        loop {
            r.changed.notified().await;
            let counts = r.connected_by_service();
            let h = Arc::clone(&h);
            let _ = tokio::task::spawn_blocking(move || h.set_connected(counts)).await;
        }
    }));
    let service = ControlService::new(hub.subscribe(), Arc::clone(&registry), Arc::clone(&metrics));
    let identity = IdentityService::new(Arc::clone(&hub), ca, opts.cert_ttl, Arc::clone(&metrics));
    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(
            ControlServer::new(service)
                .max_decoding_message_size(MAX_PROXY_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_UPDATE_BYTES),
        )
        .add_service(IdentityServer::new(identity).max_decoding_message_size(64 * 1024));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = grpc_server
            .serve_with_incoming(TcpListenerStream::new(grpc_listener))
            .await
        {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));
    tasks.push(tokio::spawn(api::run(
        api_listener,
        Api {
            hub: Arc::clone(&hub),
            registry: Arc::clone(&registry),
            metrics: Arc::clone(&metrics),
        },
    )));
    let mut webhook_addr = None;
    if let Some(w) = &opts.webhook {
        let tls = crate::webhook::acceptor(&w.cert, &w.key).map_err(anyhow::Error::msg)?;
        let settings = crate::inject::Settings::load(&w.injection).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(w.addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind --webhook {}: {e}", w.addr))?;
        webhook_addr = Some(listener.local_addr()?);
        tasks.push(tokio::spawn(crate::webhook::run(
            listener,
            tls,
            Arc::new(crate::webhook::Webhook {
                settings,
                metrics: Arc::clone(&metrics),
            }),
        )));
    }
    let webhook_field = webhook_addr.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(grpc = %grpc, api = %api_addr, webhook = %webhook_field, "control plane listening");
    Ok(Running {
        grpc,
        api: api_addr,
        hub,
        registry,
        metrics,
        tasks,
        _watcher: watcher,
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
