//! Kubernetes discovery: a service with `kubernetes: {namespace, service, port}` gets the
//! ready endpoints of its Service's EndpointSlices on the named (or numbered) Service port;
//! terminating endpoints are dropped at once, so proxies drain them. The Service and its
//! EndpointSlices are watched with kube-rs (list, then watch, with backoff on errors); when
//! the API server goes away the watchers retry and the last known endpoints stay.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::{Inbound, Service, Sidecar, Upstream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::discovery::Source;
use crate::model::Model;

/// (namespace, Service name, port).
type Key = (String, String, String);

struct Watch {
    last: Vec<Endpoint>,
    task: AbortHandle,
}

/// The Kubernetes source; each watched Service has its own task, and one task watches the
/// injected pods for their sidecar annotations.
pub struct KubernetesSource {
    client: Option<kube::Client>,
    watches: Arc<Mutex<HashMap<Key, Watch>>>,
    changed: mpsc::Sender<()>,
    sidecars: Arc<Mutex<BTreeMap<String, Sidecar>>>,
    /// Pod addresses by the service their sidecar label names.
    pod_ips: Arc<Mutex<BTreeMap<String, Vec<IpAddr>>>>,
    pods: Mutex<Option<AbortHandle>>,
}

impl Drop for KubernetesSource {
    fn drop(&mut self) {
        if let Some(t) = self
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubernetesSource")
    }
}

/// A client for `api` (e.g. `http://127.0.0.1:8001`, no credentials) or, without it, the
/// in-cluster service account (or `KUBECONFIG`).
pub async fn client(api: Option<&str>) -> Result<kube::Client, String> {
    match api {
        Some(url) => {
            let uri = url
                .parse()
                .map_err(|e| format!("--kubernetes-api {url:?}: {e}"))?;
            kube::Client::try_from(kube::Config::new(uri))
                .map_err(|e| format!("--kubernetes-api {url:?}: {e}"))
        }
        None => kube::Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes credentials (in-cluster or KUBECONFIG): {e}")),
    }
}

fn key(s: &Service) -> Option<Key> {
    let k = s.kubernetes.as_ref()?;
    let ns = if k.namespace.is_empty() {
        "default"
    } else {
        k.namespace.as_str()
    };
    Some((ns.to_owned(), k.service.clone(), k.port.clone()))
}

impl KubernetesSource {
    /// Without a client, services that name Kubernetes get no endpoints (and a warning).
    pub fn new(client: Option<kube::Client>, changed: mpsc::Sender<()>) -> Self {
        Self {
            client,
            watches: Arc::new(Mutex::new(HashMap::new())),
            changed,
            sidecars: Arc::new(Mutex::new(BTreeMap::new())),
            pod_ips: Arc::new(Mutex::new(BTreeMap::new())),
            pods: Mutex::new(None),
        }
    }
}

impl Source for KubernetesSource {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn serves(&self, service: &Service) -> bool {
        service.kubernetes.is_some()
    }

    fn endpoints(&self, service: &Service) -> Vec<Endpoint> {
        let Some(k) = key(service) else {
            return Vec::new();
        };
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&k)
            .map(|w| w.last.clone())
            .unwrap_or_default()
    }

    fn sidecars(&self) -> Vec<Sidecar> {
        self.sidecars
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn claims(&self, service: &str) -> Vec<IpAddr> {
        self.pod_ips
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    fn reconcile(&self, model: &Model) {
        if let Some(client) = &self.client {
            let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
            if pods.is_none() {
                *pods = Some(
                    tokio::spawn(watch_pods(
                        client.clone(),
                        Arc::clone(&self.sidecars),
                        Arc::clone(&self.pod_ips),
                        self.changed.clone(),
                    ))
                    .abort_handle(),
                );
            }
        }
        let wanted: std::collections::BTreeSet<Key> = model
            .services
            .values()
            .filter_map(|e| key(&e.value))
            .collect();
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        watches.retain(|k, w| {
            let keep = wanted.contains(k);
            if !keep {
                w.task.abort();
            }
            keep
        });
        for k in wanted {
            if watches.contains_key(&k) {
                continue;
            }
            let Some(client) = self.client.clone() else {
                tracing::warn!(namespace = %k.0, service = %k.1, "a service names Kubernetes but the control plane runs without --kubernetes; it gets no endpoints");
                continue;
            };
            let task = tokio::spawn(watch(
                client,
                k.clone(),
                Arc::clone(&self.watches),
                self.changed.clone(),
            ))
            .abort_handle();
            watches.insert(
                k,
                Watch {
                    last: Vec::new(),
                    task,
                },
            );
        }
    }
}

enum Change {
    Service(Box<Event<KubeService>>),
    Slice(Box<Event<EndpointSlice>>),
}

/// What one watched kind holds: the objects by name, and the set being re-listed.
struct Objects<T> {
    current: BTreeMap<String, T>,
    relisting: Option<BTreeMap<String, T>>,
    synced: bool,
}

impl<T: kube::Resource> Objects<T> {
    fn new() -> Self {
        Self {
            current: BTreeMap::new(),
            relisting: None,
            synced: false,
        }
    }

    fn apply(&mut self, event: Event<T>) {
        let name = |o: &T| o.meta().name.clone().unwrap_or_default();
        match event {
            Event::Apply(o) => {
                self.current.insert(name(&o), o);
            }
            Event::Delete(o) => {
                self.current.remove(&name(&o));
            }
            Event::Init => self.relisting = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name(&o), o);
            }
            Event::InitDone => {
                self.current = self.relisting.take().unwrap_or_default();
                self.synced = true;
            }
        }
    }
}

async fn watch(
    client: kube::Client,
    key: Key,
    watches: Arc<Mutex<HashMap<Key, Watch>>>,
    changed: mpsc::Sender<()>,
) {
    let (ns, name, port) = &key;
    let services = watcher::watcher(
        Api::<KubeService>::namespaced(client.clone(), ns),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Service(Box::new(e))));
    let slices = watcher::watcher(
        Api::<EndpointSlice>::namespaced(client, ns),
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}")),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Slice(Box::new(e))));
    let mut changes = std::pin::pin!(futures::stream::select(services, slices));
    let mut service = Objects::<KubeService>::new();
    let mut slice = Objects::<EndpointSlice>::new();
    let mut failing = false;
    while let Some(change) = changes.next().await {
        match change {
            Ok(Change::Service(e)) => service.apply(*e),
            Ok(Change::Slice(e)) => slice.apply(*e),
            Err(e) => {
                if !failing {
                    tracing::warn!(namespace = %ns, service = %name, error = %e, "Kubernetes API unavailable; keeping the last known endpoints and retrying");
                }
                failing = true;
                continue;
            }
        }
        if failing {
            tracing::info!(namespace = %ns, service = %name, "Kubernetes API reachable again");
            failing = false;
        }
        if !(service.synced && slice.synced) {
            continue;
        }
        let endpoints = endpoints_of(service.current.get(name), slice.current.values(), port);
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
            let _ = changed.try_send(());
        }
    }
}

/// Pods the webhook injected carry this label (value: their mesh service).
pub const SIDECAR_LABEL: &str = "remora.io/sidecar";
/// The sidecar's inbound (mesh) port, set by the webhook.
pub const LISTENER_ANNOTATION: &str = "remora.io/inbound-listener";

/// Watches injected pods (all namespaces) and keeps one sidecar entry per service, from the
/// newest running pod's annotations.
async fn watch_pods(
    client: kube::Client,
    sidecars: Arc<Mutex<BTreeMap<String, Sidecar>>>,
    pod_ips: Arc<Mutex<BTreeMap<String, Vec<IpAddr>>>>,
    changed: mpsc::Sender<()>,
) {
    let pods = watcher::watcher(
        Api::<Pod>::all(client),
        watcher::Config::default().labels(SIDECAR_LABEL),
    )
    .default_backoff();
    let mut pods = std::pin::pin!(pods);
    let mut objects = Objects::<Pod>::new();
    let mut failing = false;
    while let Some(event) = pods.next().await {
        match event {
            Ok(e) => objects.apply(e),
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "Kubernetes API unavailable for pods; keeping the sidecars known");
                }
                failing = true;
                continue;
            }
        }
        failing = false;
        if !objects.synced {
            continue;
        }
        let mut ips: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for p in objects.current.values() {
            let service = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SIDECAR_LABEL));
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            if let (Some(service), Some(ip), None) = (service, ip, &p.metadata.deletion_timestamp) {
                ips.entry(service.clone()).or_default().push(ip);
            }
        }
        *pod_ips.lock().unwrap_or_else(PoisonError::into_inner) = ips;
        let found = sidecars_of(objects.current.values());
        let updated = {
            let mut s = sidecars.lock().unwrap_or_else(PoisonError::into_inner);
            (*s != found).then(|| *s = found).is_some()
        };
        if updated {
            let _ = changed.try_send(());
        }
    }
}

/// One sidecar entry per service, from the newest live pod of each: its inbound listener
/// (`remora.io/inbound-listener`, default 4143) before the app port
/// (`remora.io/inbound-port`), and its upstreams (`remora.io/upstreams`).
pub fn sidecars_of<'a>(pods: impl Iterator<Item = &'a Pod>) -> BTreeMap<String, Sidecar> {
    let mut newest: BTreeMap<String, &Pod> = BTreeMap::new();
    for p in pods {
        let meta = &p.metadata;
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if meta.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(service) = meta.labels.as_ref().and_then(|l| l.get(SIDECAR_LABEL)) else {
            continue;
        };
        let created = |p: &Pod| p.metadata.creation_timestamp.clone();
        match newest.get(service) {
            Some(q) if created(q) >= created(p) => {}
            _ => {
                newest.insert(service.clone(), p);
            }
        }
    }
    newest
        .into_iter()
        .map(|(service, p)| {
            let ann = |k: &str| {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(k))
                    .map(String::as_str)
            };
            let port = |k: &str| {
                ann(k)
                    .and_then(|v| v.trim().parse::<u16>().ok())
                    .filter(|p| *p != 0)
            };
            let inbound = port(crate::inject::INBOUND_PORT).map(|app| Inbound {
                address: format!("0.0.0.0:{}", port(LISTENER_ANNOTATION).unwrap_or(4143)),
                app: format!("127.0.0.1:{app}"),
                ..Inbound::default()
            });
            let upstreams = ann(crate::inject::UPSTREAMS)
                .map(crate::inject::upstreams)
                .unwrap_or_default()
                .into_iter()
                .map(|(service, port)| Upstream {
                    service,
                    address: format!("127.0.0.1:{port}"),
                    protocol: 0,
                })
                .collect();
            (
                service.clone(),
                Sidecar {
                    service,
                    inbound,
                    upstreams,
                },
            )
        })
        .collect()
}

/// The Service port's name for `port` (a name, a number, or empty for the only port).
fn port_name(service: Option<&KubeService>, port: &str) -> Option<String> {
    let ports = service
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref());
    if port.is_empty() {
        let ports = ports?;
        return (ports.len() == 1).then(|| ports[0].name.clone().unwrap_or_default());
    }
    if let Ok(n) = port.parse::<i32>() {
        return ports?
            .iter()
            .find(|p| p.port == n)
            .map(|p| p.name.clone().unwrap_or_default());
    }
    Some(port.to_owned())
}

/// Ready, non-terminating endpoints of `slices` on the port named for `port`.
pub fn endpoints_of<'a>(
    service: Option<&KubeService>,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    port: &str,
) -> Vec<Endpoint> {
    let Some(wanted) = port_name(service, port) else {
        return Vec::new();
    };
    let mut out: Vec<Endpoint> = Vec::new();
    for s in slices {
        if s.address_type != "IPv4" && s.address_type != "IPv6" {
            continue;
        }
        let Some(number) = s.ports.iter().flatten().find_map(|p| {
            (p.name.clone().unwrap_or_default() == wanted)
                .then_some(p.port)
                .flatten()
        }) else {
            continue;
        };
        let Ok(number) = u16::try_from(number) else {
            continue;
        };
        for e in &s.endpoints {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            if let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                out.push(crate::discovery::endpoint(ip, number, None));
            }
        }
    }
    crate::discovery::tidy(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: &serde_json::Value) -> KubeService {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "orders", "namespace": "shop" },
            "spec": { "ports": ports },
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn addresses(eps: &[Endpoint]) -> Vec<&str> {
        eps.iter().map(|e| e.address.as_str()).collect()
    }

    #[test]
    fn ready_endpoints_on_the_service_port_by_name_number_or_the_only_one() {
        let svc = service(&serde_json::json!([
            { "name": "http", "port": 80, "targetPort": 8080 },
            { "name": "admin", "port": 9000, "targetPort": 9000 }
        ]));
        let s = slice(serde_json::json!({
            "metadata": { "name": "orders-x" },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080 }, { "name": "admin", "port": 9000 }],
            "endpoints": [
                { "addresses": ["10.0.0.1"], "conditions": { "ready": true } },
                { "addresses": ["10.0.0.2"] },
                { "addresses": ["10.0.0.3"], "conditions": { "ready": false } },
                { "addresses": ["10.0.0.4"], "conditions": { "ready": true, "terminating": true } },
                { "addresses": ["not an ip"] }
            ]
        }));
        let by_name = endpoints_of(Some(&svc), [&s].into_iter(), "http");
        assert_eq!(addresses(&by_name), vec!["10.0.0.1:8080", "10.0.0.2:8080"]);
        let by_number = endpoints_of(Some(&svc), [&s].into_iter(), "9000");
        assert_eq!(
            addresses(&by_number),
            vec!["10.0.0.1:9000", "10.0.0.2:9000"]
        );
        assert!(
            endpoints_of(Some(&svc), [&s].into_iter(), "").is_empty(),
            "two ports: name one"
        );
        assert!(endpoints_of(Some(&svc), [&s].into_iter(), "81").is_empty());
        let single = service(&serde_json::json!([{ "port": 80, "targetPort": 8080 }]));
        let unnamed = slice(serde_json::json!({
            "metadata": { "name": "orders-y" },
            "addressType": "IPv6",
            "ports": [{ "port": 8080 }],
            "endpoints": [{ "addresses": ["fd00::1"] }]
        }));
        assert_eq!(
            addresses(&endpoints_of(Some(&single), [&unnamed].into_iter(), "")),
            vec!["[fd00::1]:8080"]
        );
        let fqdn = slice(serde_json::json!({
            "metadata": { "name": "orders-z" },
            "addressType": "FQDN",
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": [{ "addresses": ["orders.example.com"] }]
        }));
        assert!(endpoints_of(Some(&svc), [&fqdn].into_iter(), "http").is_empty());
    }
}
