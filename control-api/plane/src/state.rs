//! The running mesh: the last good model, the endpoints discovery reported, and every
//! sidecar's generated configuration, published as one immutable [`MeshState`] on a
//! `tokio::sync::watch` channel. The [`Hub`] is the only writer: file reloads, `apply` and
//! discovery changes all rebuild the state here, validated whole before it is published.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use remora_control_api::proto::mesh::Mesh;
use serde::Serialize;
use tokio::sync::watch;

use crate::discovery::{self, Source};
use crate::generate::{self, ProxyConfig, Resolved};
use crate::metrics::Metrics;
use crate::model::{self, Document, Model, ModelError, ModelErrors};

/// One consistent view of the mesh, shared by every stream task.
#[derive(Debug)]
pub struct MeshState {
    /// Increases with every publish.
    pub generation: u64,
    pub model: Arc<Model>,
    pub resolved: Resolved,
    /// The configuration of each service that has a sidecar entry, computed once.
    pub configs: BTreeMap<String, Arc<ProxyConfig>>,
    /// For proxies whose service has no sidecar entry.
    pub empty: Arc<ProxyConfig>,
    /// Connected proxies per service, which mesh-wide rate limits are divided by.
    pub connected: generate::Connected,
}

impl MeshState {
    /// Compiles every sidecar's configuration and validates it as the proxies will.
    pub fn compile(
        model: Arc<Model>,
        resolved: Resolved,
        generation: u64,
    ) -> Result<Self, ModelErrors> {
        Self::compile_with(model, resolved, generate::Connected::new(), generation)
    }

    /// [`Self::compile`] with mesh-wide rate limits shared among `connected` proxies.
    pub fn compile_with(
        model: Arc<Model>,
        resolved: Resolved,
        connected: generate::Connected,
        generation: u64,
    ) -> Result<Self, ModelErrors> {
        let mut configs = BTreeMap::new();
        let mut errors = BTreeSet::new();
        for service in model.sidecars.keys() {
            let pc = generate::for_service_with(&model, service, &resolved, &connected);
            if let Err(invalid) = remora_control_api::validate(&pc.config) {
                for e in invalid.errors {
                    errors.insert(attribute(&model, service, &e));
                }
            }
            configs.insert(service.clone(), Arc::new(pc));
        }
        if !errors.is_empty() {
            return Err(ModelErrors(errors.into_iter().collect()));
        }
        Ok(Self {
            generation,
            model,
            resolved,
            configs,
            empty: Arc::new(generate::for_service(
                &Model::default(),
                "",
                &Resolved::new(),
            )),
            connected,
        })
    }

    /// What the proxies of `service` should run.
    pub fn config_for(&self, service: &str) -> Arc<ProxyConfig> {
        self.configs
            .get(service)
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.empty))
    }
}

/// Maps an error in a generated configuration back to the model resource it came from:
/// a route table to its policy, a cluster to its service, anything else to the sidecar.
fn attribute(model: &Model, sidecar: &str, e: &remora_control_api::ValidationError) -> ModelError {
    let quoted = |prefix: &str| {
        e.resource
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('"'))
            .and_then(|r| r.strip_suffix('"'))
            .map(ToOwned::to_owned)
    };
    if let Some(table) = quoted("routeTable ")
        && let Some(policy) = model.policies.get(&table)
    {
        let field = e
            .field
            .strip_prefix("virtualHosts[0].")
            .unwrap_or(&e.field)
            .to_owned();
        return ModelError {
            file: policy.origin.clone(),
            resource: format!("policy {table:?}"),
            field,
            message: e.message.clone(),
        };
    }
    if let Some(cluster) = quoted("cluster ")
        && let Some(service) = model.services.get(&cluster)
    {
        return ModelError {
            file: service.origin.clone(),
            resource: format!("service {cluster:?}"),
            field: e.field.clone(),
            message: e.message.clone(),
        };
    }
    let file = model
        .sidecars
        .get(sidecar)
        .map(|s| s.origin.clone())
        .unwrap_or_default();
    ModelError {
        file,
        resource: format!("sidecar {sidecar:?}"),
        field: String::new(),
        message: format!("generated configuration: {e}"),
    }
}

/// Which resources a change adds, changes or removes, and whose proxies get a push.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChangeReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Services whose proxies receive an update, with its type.
    pub pushes: Vec<Push>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Push {
    pub service: String,
    /// "config" or "endpoints".
    pub r#type: &'static str,
    /// Connected proxies (node ids) of that service; filled in by the API.
    pub proxies: Vec<String>,
}

impl ChangeReport {
    pub fn between(old: &MeshState, new: &MeshState) -> Self {
        let mut r = Self::default();
        compare(&mut r, "service", &old.model.services, &new.model.services);
        compare(&mut r, "policy", &old.model.policies, &new.model.policies);
        compare(&mut r, "sidecar", &old.model.sidecars, &new.model.sidecars);
        let services: BTreeSet<&String> = old.configs.keys().chain(new.configs.keys()).collect();
        for service in services {
            let (a, b) = (old.config_for(service), new.config_for(service));
            let kind = if a.config_version != b.config_version {
                "config"
            } else if a.endpoints_version != b.endpoints_version {
                "endpoints"
            } else {
                continue;
            };
            r.pushes.push(Push {
                service: service.clone(),
                r#type: kind,
                proxies: Vec::new(),
            });
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.pushes.is_empty()
    }
}

fn compare<T: PartialEq>(
    r: &mut ChangeReport,
    kind: &str,
    old: &BTreeMap<String, model::Entry<T>>,
    new: &BTreeMap<String, model::Entry<T>>,
) {
    for (name, e) in new {
        match old.get(name) {
            None => r.added.push(format!("{kind} {name:?}")),
            Some(o) if o.value != e.value => r.changed.push(format!("{kind} {name:?}")),
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        r.removed.push(format!("{kind} {name:?}"));
    }
}

struct Inner {
    docs: Vec<Document>,
    overlay: Mesh,
    generation: u64,
    /// Connected proxies per service (from the registry).
    connected: generate::Connected,
    /// Sidecar entries the sources discovered (pods), merged under the documents' own.
    discovered: BTreeMap<String, remora_control_api::proto::mesh::Sidecar>,
}

/// Owns the model and publishes every new state.
pub struct Hub {
    dir: PathBuf,
    inner: Mutex<Inner>,
    tx: watch::Sender<Arc<MeshState>>,
    sources: Vec<Arc<dyn Source>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Loads `dir` (files and overlay); fails with every error if the model is invalid.
    pub fn load(
        dir: &Path,
        sources: Vec<Arc<dyn Source>>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ModelErrors> {
        let loaded = model::read_dir(dir).and_then(|docs| Ok((docs, model::read_overlay(dir)?)));
        let (docs, overlay) = match loaded {
            Ok(l) => l,
            Err(e) => {
                metrics.reload(false);
                return Err(e);
            }
        };
        let state = match candidate(&sources, &docs, &overlay, &generate::Connected::new(), 1) {
            Ok(s) => s,
            Err(e) => {
                metrics.reload(false);
                return Err(e);
            }
        };
        metrics.reload(true);
        for s in &sources {
            s.reconcile(&state.model);
        }
        let (tx, _) = watch::channel(Arc::new(state));
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                docs,
                overlay,
                generation: 1,
                connected: generate::Connected::new(),
                discovered: BTreeMap::new(),
            }),
            tx,
            sources,
            metrics,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshState>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<MeshState> {
        Arc::clone(&self.tx.borrow())
    }

    pub fn sources(&self) -> &[Arc<dyn Source>] {
        &self.sources
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-reads the directory and the overlay. On error the running model stays.
    pub fn reload_files(&self) -> Result<ChangeReport, ModelErrors> {
        let mut inner = self.lock();
        let result = model::read_dir(&self.dir)
            .and_then(|docs| Ok((docs, model::read_overlay(&self.dir)?)))
            .and_then(|(docs, overlay)| {
                let state = candidate(
                    &self.sources,
                    &docs,
                    &overlay,
                    &inner.connected,
                    inner.generation + 1,
                )?;
                Ok((docs, overlay, state))
            });
        match result {
            Ok((docs, overlay, state)) => {
                self.metrics.reload(true);
                inner.docs = docs;
                inner.overlay = overlay;
                Ok(self.publish(&mut inner, state))
            }
            Err(e) => {
                self.metrics.reload(false);
                Err(e)
            }
        }
    }

    /// Merges `update` into the overlay, validates the whole model, writes the overlay file
    /// and publishes. Refused whole, changing nothing, if anything is invalid.
    pub fn apply(&self, update: &Mesh) -> Result<ChangeReport, ModelErrors> {
        let mut inner = self.lock();
        let mut overlay = inner.overlay.clone();
        model::merge_overlay(&mut overlay, update);
        let state = candidate(
            &self.sources,
            &inner.docs,
            &overlay,
            &inner.connected,
            inner.generation + 1,
        )?;
        model::write_overlay(&self.dir, &overlay).map_err(|e| {
            ModelErrors::single(
                self.dir.join(model::OVERLAY_FILE).display().to_string(),
                format!("cannot write the applied overlay: {e}; nothing was changed"),
            )
        })?;
        inner.overlay = overlay;
        Ok(self.publish(&mut inner, state))
    }

    /// What `apply` of `update` would change; changes nothing.
    pub fn diff(&self, update: &Mesh) -> Result<ChangeReport, ModelErrors> {
        let inner = self.lock();
        let mut overlay = inner.overlay.clone();
        model::merge_overlay(&mut overlay, update);
        let state = candidate(
            &self.sources,
            &inner.docs,
            &overlay,
            &inner.connected,
            inner.generation + 1,
        )?;
        Ok(ChangeReport::between(&self.current(), &state))
    }

    /// Regenerates with the endpoints discovery now reports (the model is unchanged).
    pub fn refresh_endpoints(&self) {
        let mut inner = self.lock();
        let discovered = discovery::discovered_sidecars(&self.sources);
        if discovered != inner.discovered {
            inner.discovered = discovered;
            let rebuilt = candidate(
                &self.sources,
                &inner.docs,
                &inner.overlay,
                &inner.connected,
                inner.generation + 1,
            );
            match rebuilt {
                Ok(state) => {
                    self.publish(&mut inner, state);
                }
                Err(e) => {
                    tracing::error!(error = %e, "sidecars discovered from pods make the mesh invalid; keeping the previous model");
                }
            }
            return;
        }
        let current = self.current();
        let resolved = discovery::resolve_all(&self.sources, &current.model);
        if resolved == current.resolved {
            return;
        }
        match MeshState::compile_with(
            Arc::clone(&current.model),
            resolved,
            inner.connected.clone(),
            inner.generation + 1,
        ) {
            Ok(state) => {
                self.publish(&mut inner, state);
            }
            Err(e) => {
                tracing::error!(error = %e, "discovered endpoints make the mesh invalid; keeping the previous ones");
            }
        }
    }

    /// Re-divides mesh-wide rate limits when the connected proxies change (a model without
    /// such limits only records the counts, for later compiles).
    pub fn set_connected(&self, connected: generate::Connected) {
        let mut inner = self.lock();
        if inner.connected == connected {
            return;
        }
        inner.connected.clone_from(&connected);
        let current = self.current();
        if !generate::has_mesh_wide_limits(&current.model) {
            return;
        }
        let state = MeshState::compile_with(
            Arc::clone(&current.model),
            current.resolved.clone(),
            connected,
            inner.generation + 1,
        );
        match state {
            Ok(state) => {
                self.publish(&mut inner, state);
            }
            Err(e) => {
                tracing::error!(error = %e, "re-balancing mesh-wide limits failed; keeping the previous shares");
            }
        }
    }

    /// Publishes `state` unless it changes nothing, and lets sources follow the model.
    fn publish(&self, inner: &mut Inner, state: MeshState) -> ChangeReport {
        let current = self.current();
        let report = ChangeReport::between(&current, &state);
        if state.model == current.model
            && state.resolved == current.resolved
            && state.connected == current.connected
        {
            return report;
        }
        for s in &self.sources {
            s.reconcile(&state.model);
        }
        inner.generation = state.generation;
        self.tx.send_replace(Arc::new(state));
        report
    }
}

/// Builds and validates the state a model would produce.
fn candidate(
    sources: &[Arc<dyn Source>],
    docs: &[Document],
    overlay: &Mesh,
    connected: &generate::Connected,
    generation: u64,
) -> Result<MeshState, ModelErrors> {
    let mut model = model::build(docs, overlay)?;
    model.add_discovered(&discovery::discovered_sidecars(sources));
    let resolved = discovery::resolve_all(sources, &model);
    MeshState::compile_with(Arc::new(model), resolved, connected.clone(), generation)
}

/// Validates a directory offline (`remora-control validate`): every error, none skipped.
pub fn validate_dir(dir: &Path) -> Result<MeshState, ModelErrors> {
    let sources: Vec<Arc<dyn Source>> = vec![Arc::new(discovery::StaticSource)];
    let docs = model::read_dir(dir)?;
    let overlay = model::read_overlay(dir)?;
    candidate(&sources, &docs, &overlay, &generate::Connected::new(), 1)
}

#[cfg(test)]
mod tests;
