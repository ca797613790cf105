//! The mesh model: services, policies and sidecars read from a directory of `Mesh` documents
//! plus the applied overlay, merged by name and validated with errors that name the file, the
//! resource and the field path.
//!
//! Overlay rule: resources pushed with `apply` live in `DIR/.remora-applied.json` (a `Mesh`
//! document, hidden so the directory loader skips it) and replace same-named resources from
//! the files: a service by `name`, a policy by `service`, a sidecar by `service`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use remora_control_api::proto::mesh::{Mesh, Policy, Service, Sidecar};
use remora_control_api::proto::route::Action;

/// The overlay file inside the mesh directory.
pub const OVERLAY_FILE: &str = ".remora-applied.json";
/// How the overlay is named in errors and listings.
pub const OVERLAY_ORIGIN: &str = "applied";
/// Names the generated configuration uses for the inbound side; no service may take them.
pub const RESERVED_NAMES: [&str; 2] = ["inbound", "inbound-app"];

/// The origin of sidecar entries discovered from pods.
pub const DISCOVERED_ORIGIN: &str = "kubernetes pods";

/// One problem in the mesh model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelError {
    /// The file the resource came from (or `applied` for the overlay).
    pub file: String,
    /// e.g. `service "orders"`.
    pub resource: String,
    /// e.g. `endpoints[2].address`; empty for the whole resource.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in [&self.file, &self.resource, &self.field] {
            if !part.is_empty() {
                write!(f, "{part}: ")?;
            }
        }
        f.write_str(&self.message)
    }
}

/// A model rejected whole, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelErrors(pub Vec<ModelError>);

impl fmt::Display for ModelErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid mesh model ({n} error{})",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ModelErrors {
    /// One error that is not about a resource (e.g. an unreadable directory).
    pub fn single(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ModelError {
            file: file.into(),
            resource: String::new(),
            field: String::new(),
            message: message.into(),
        }])
    }

    /// The errors as lines, for API answers.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// A resource and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    pub origin: String,
    pub value: T,
}

/// One parsed `Mesh` document and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub origin: String,
    pub mesh: Mesh,
}

/// The merged model, keyed by name (services) or destination/fronted service (policies,
/// sidecars). Ordered maps keep every derived output deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub services: BTreeMap<String, Entry<Service>>,
    pub policies: BTreeMap<String, Entry<Policy>>,
    pub sidecars: BTreeMap<String, Entry<Sidecar>>,
    pub mtls: Option<Entry<remora_control_api::proto::mesh::MeshTls>>,
}

/// Lists the model files of `dir`: `*.yaml`, `*.yml`, `*.json`, not hidden, sorted by name.
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>, ModelErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ModelErrors::single(
            dir.display().to_string(),
            format!("cannot read the mesh directory: {e} (pass an existing directory with --mesh)"),
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_model_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `path` names a model file (used by the watcher too).
pub fn is_model_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Reads and parses every model file of `dir`; all parse errors are collected.
pub fn read_dir(dir: &Path) -> Result<Vec<Document>, ModelErrors> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in model_files(dir)? {
        let origin = path.display().to_string();
        match read_document(&path) {
            Ok(mesh) => docs.push(Document { origin, mesh }),
            Err(message) => errors.push(ModelError {
                file: origin,
                resource: String::new(),
                field: String::new(),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(ModelErrors(errors))
    }
}

fn read_document(path: &Path) -> Result<Mesh, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse(&text)
}

/// Parses one `Mesh` document (YAML or JSON).
pub fn parse(text: &str) -> Result<Mesh, String> {
    remora_control_api::load::document::<Mesh>(text).map_err(|e| e.to_string())
}

/// Reads the overlay of `dir` (empty when there is none).
pub fn read_overlay(dir: &Path) -> Result<Mesh, ModelErrors> {
    let path = dir.join(OVERLAY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).map_err(|m| ModelErrors::single(path.display().to_string(), m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mesh::default()),
        Err(e) => Err(ModelErrors::single(
            path.display().to_string(),
            format!("cannot read the applied overlay: {e}"),
        )),
    }
}

/// Writes the overlay atomically (a hidden temporary file, then rename).
pub fn write_overlay(dir: &Path, overlay: &Mesh) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(overlay).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{OVERLAY_FILE}.tmp"));
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, dir.join(OVERLAY_FILE))
}

/// Adds `update`'s resources to `overlay`, replacing same-named ones.
pub fn merge_overlay(overlay: &mut Mesh, update: &Mesh) {
    for s in &update.services {
        overlay.services.retain(|o| o.name != s.name);
        overlay.services.push(s.clone());
    }
    for p in &update.policies {
        overlay.policies.retain(|o| o.service != p.service);
        overlay.policies.push(p.clone());
    }
    for s in &update.sidecars {
        overlay.sidecars.retain(|o| o.service != s.service);
        overlay.sidecars.push(s.clone());
    }
    if update.mtls.is_some() {
        overlay.mtls.clone_from(&update.mtls);
    }
}

/// Merges documents and the overlay, then validates the result.
pub fn build(docs: &[Document], overlay: &Mesh) -> Result<Model, ModelErrors> {
    let mut errors = Vec::new();
    let mut model = Model::default();
    for doc in docs {
        model.add(doc, &mut errors);
    }
    model.overlay(overlay);
    errors.extend(model.validate());
    if errors.is_empty() {
        Ok(model)
    } else {
        errors.sort();
        errors.dedup();
        Err(ModelErrors(errors))
    }
}

fn insert<T>(
    map: &mut BTreeMap<String, Entry<T>>,
    kind: &str,
    field: &str,
    key: &str,
    origin: &str,
    value: &T,
    errors: &mut Vec<ModelError>,
) where
    T: Clone,
{
    if key.is_empty() {
        // Reported by validation, under a positional name.
        let n = map.keys().filter(|k| k.starts_with('#')).count();
        map.insert(
            format!("#{n}"),
            Entry {
                origin: origin.to_owned(),
                value: value.clone(),
            },
        );
        return;
    }
    if let Some(first) = map.get(key) {
        errors.push(ModelError {
            file: origin.to_owned(),
            resource: format!("{kind} {key:?}"),
            field: field.to_owned(),
            message: format!("defined twice: also in {}", first.origin),
        });
        return;
    }
    map.insert(
        key.to_owned(),
        Entry {
            origin: origin.to_owned(),
            value: value.clone(),
        },
    );
}

impl Model {
    fn add(&mut self, doc: &Document, errors: &mut Vec<ModelError>) {
        let o = doc.origin.as_str();
        for s in &doc.mesh.services {
            insert(&mut self.services, "service", "name", &s.name, o, s, errors);
        }
        for p in &doc.mesh.policies {
            insert(
                &mut self.policies,
                "policy",
                "service",
                &p.service,
                o,
                p,
                errors,
            );
        }
        for s in &doc.mesh.sidecars {
            insert(
                &mut self.sidecars,
                "sidecar",
                "service",
                &s.service,
                o,
                s,
                errors,
            );
        }
        if let Some(m) = &doc.mesh.mtls {
            match &self.mtls {
                Some(first) => errors.push(ModelError {
                    file: o.to_owned(),
                    resource: "mtls".into(),
                    field: String::new(),
                    message: format!("defined twice: also in {}", first.origin),
                }),
                None => {
                    self.mtls = Some(Entry {
                        origin: o.to_owned(),
                        value: m.clone(),
                    });
                }
            }
        }
    }

    /// Adds sidecars discovered at runtime (from pods) for services the documents give no
    /// sidecar entry; upstreams naming unknown services are dropped, so a pod's annotation
    /// can never make the model invalid.
    pub fn add_discovered(&mut self, discovered: &std::collections::BTreeMap<String, Sidecar>) {
        for (service, s) in discovered {
            let plain = !service.is_empty()
                && service.len() <= 63
                && service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if self.sidecars.contains_key(service) || !plain {
                continue;
            }
            let mut s = s.clone();
            let mut seen = BTreeSet::new();
            s.upstreams.retain(|u| {
                let known = self.services.contains_key(&u.service);
                if !known {
                    tracing::warn!(sidecar = %service, upstream = %u.service, "a pod names an unknown upstream service; ignored");
                }
                known && seen.insert(u.service.clone())
            });
            let mut problems = Vec::new();
            self.validate_sidecar(
                &s,
                &mut Reporter::new(DISCOVERED_ORIGIN, "sidecar", service, &mut problems),
            );
            if !problems.is_empty() {
                tracing::warn!(sidecar = %service, problems = ?problems, "a sidecar discovered from pods is not usable; ignored");
                continue;
            }
            self.sidecars.insert(
                service.clone(),
                Entry {
                    origin: DISCOVERED_ORIGIN.to_owned(),
                    value: s,
                },
            );
        }
    }

    /// Applies the overlay: its resources replace same-named ones.
    pub fn overlay(&mut self, overlay: &Mesh) {
        for s in &overlay.services {
            self.services.insert(s.name.clone(), entry(s.clone()));
        }
        for p in &overlay.policies {
            self.policies.insert(p.service.clone(), entry(p.clone()));
        }
        for s in &overlay.sidecars {
            self.sidecars.insert(s.service.clone(), entry(s.clone()));
        }
        if let Some(m) = &overlay.mtls {
            self.mtls = Some(entry(m.clone()));
        }
    }

    /// Checks names, addresses and references; returns every problem.
    pub fn validate(&self) -> Vec<ModelError> {
        let mut errors = Vec::new();
        for (key, e) in &self.services {
            let mut r = Reporter::new(&e.origin, "service", key, &mut errors);
            self.validate_service(&e.value, &mut r);
        }
        for (key, e) in &self.policies {
            let mut r = Reporter::new(&e.origin, "policy", key, &mut errors);
            self.validate_policy(&e.value, &mut r);
        }
        for (key, e) in &self.sidecars {
            let mut r = Reporter::new(&e.origin, "sidecar", key, &mut errors);
            self.validate_sidecar(&e.value, &mut r);
        }
        if let Some(e) = &self.mtls {
            let mut r = Reporter::new(&e.origin, "mtls", "", &mut errors);
            let td = &e.value.trust_domain;
            if td.is_empty() {
                r.push("trustDomain", "required, e.g. \"mesh.local\"");
            } else if remora_certs::SpiffeId::parse(&format!("spiffe://{td}/x"))
                .map_or(true, |id| id.trust_domain() != td)
            {
                r.push(
                    "trustDomain",
                    format!(
                        "invalid trust domain {td:?}: use lower-case letters, digits, '.', '-' and '_'"
                    ),
                );
            }
            let mode = e.value.mode;
            if mode != 0
                && mode != remora_control_api::proto::TlsMode::Strict as i32
                && mode != remora_control_api::proto::TlsMode::Permissive as i32
            {
                r.push(
                    "mode",
                    "use STRICT or PERMISSIVE (remove `mtls` for plaintext)",
                );
            }
            for (key, s) in &self.services {
                let id = &s.value.identity;
                if id.is_empty() {
                    continue;
                }
                let problem = match remora_certs::SpiffeId::parse(id) {
                    Err(e) => Some(e.to_string()),
                    Ok(parsed) if parsed.trust_domain() != td => {
                        Some(format!("{id:?} is not in the mesh's trust domain {td:?}"))
                    }
                    Ok(_) => None,
                };
                if let Some(p) = problem {
                    Reporter::new(&s.origin, "service", key, &mut errors).push("identity", p);
                }
            }
        }
        errors
    }

    fn validate_service(&self, s: &Service, r: &mut Reporter<'_>) {
        if s.name.is_empty() {
            r.push("name", "required");
        } else if RESERVED_NAMES.contains(&s.name.as_str()) {
            r.push(
                "name",
                format!(
                    "{:?} is reserved for the sidecar's inbound side; rename the service",
                    s.name
                ),
            );
        }
        for (i, e) in s.endpoints.iter().enumerate() {
            check_addr(r, &format!("endpoints[{i}].address"), &e.address);
        }
        if let Some(dns) = &s.dns {
            if dns.name.is_empty() {
                r.push("dns.name", "required (a host name to resolve)");
            }
            if !dns.srv && (dns.port == 0 || dns.port > u32::from(u16::MAX)) {
                r.push(
                    "dns.port",
                    "must be between 1 and 65535 (or set srv: true to take ports from SRV records)",
                );
            }
            if let Some(d) = &dns.refresh
                && (d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0))
            {
                r.push("dns.refresh", "must be greater than zero (default 30s)");
            }
        }
        let sources = usize::from(!s.endpoints.is_empty())
            + usize::from(s.dns.is_some())
            + usize::from(s.kubernetes.is_some())
            + usize::from(s.consul.is_some())
            + usize::from(s.eureka.is_some())
            + usize::from(s.nomad.is_some())
            + usize::from(s.marathon.is_some());
        if sources > 1 {
            r.push(
                "endpoints",
                "a service's endpoints come from one place: endpoints, dns, kubernetes, consul, eureka, nomad or marathon; keep one",
            );
        }
        if let Some(g) = &s.grace_period
            && (g.seconds < 0 || g.nanos < 0 || g.seconds > 7 * 86_400)
        {
            r.push("gracePeriod", "must be between 0s and 7 days");
        }
        if let Some(m) = &s.marathon
            && m.app.trim_start_matches('/').is_empty()
        {
            r.push(
                "marathon.app",
                "required: the app id, e.g. \"/shop/orders\"",
            );
        }
        if let Some(k) = &s.kubernetes {
            let dns_label = |v: &str| {
                !v.is_empty()
                    && v.len() <= 63
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !v.starts_with('-')
                    && !v.ends_with('-')
            };
            if !dns_label(&k.service) {
                r.push(
                    "kubernetes.service",
                    "required: the Service's name (a DNS label: lower-case letters, digits, '-')",
                );
            }
            if !k.namespace.is_empty() && !dns_label(&k.namespace) {
                r.push("kubernetes.namespace", "a namespace name (a DNS label)");
            }
            if k.port.parse::<u32>().is_ok_and(|p| p == 0 || p > 65_535) {
                r.push(
                    "kubernetes.port",
                    "a port name or a number between 1 and 65535",
                );
            }
        }
    }

    fn validate_policy(&self, p: &Policy, r: &mut Reporter<'_>) {
        if p.service.is_empty() {
            r.push("service", "required");
        } else if !self.services.contains_key(&p.service) {
            r.push("service", format!("unknown service {:?}", p.service));
        }
        for (i, route) in p.routes.iter().enumerate() {
            let Some(Action::Forward(f)) = &route.action else {
                continue;
            };
            if !f.cluster.is_empty() && !self.services.contains_key(&f.cluster) {
                r.push(
                    format!("routes[{i}].forward.cluster"),
                    format!(
                        "unknown service {:?} (a route's cluster names a service)",
                        f.cluster
                    ),
                );
            }
            for (j, w) in f.weighted_clusters.iter().enumerate() {
                if !w.name.is_empty() && !self.services.contains_key(&w.name) {
                    r.push(
                        format!("routes[{i}].forward.weightedClusters[{j}].name"),
                        format!(
                            "unknown service {:?} (a route's cluster names a service)",
                            w.name
                        ),
                    );
                }
            }
        }
    }

    fn validate_sidecar(&self, s: &Sidecar, r: &mut Reporter<'_>) {
        if s.service.is_empty() {
            r.push("service", "required");
        }
        if let Some(inbound) = &s.inbound {
            check_addr(r, "inbound.address", &inbound.address);
            check_addr(r, "inbound.app", &inbound.app);
        }
        let mut seen = BTreeSet::new();
        for (i, u) in s.upstreams.iter().enumerate() {
            if u.service.is_empty() {
                r.push(format!("upstreams[{i}].service"), "required");
            } else if !self.services.contains_key(&u.service) {
                r.push(
                    format!("upstreams[{i}].service"),
                    format!("unknown service {:?}", u.service),
                );
            } else if !seen.insert(u.service.as_str()) {
                r.push(
                    format!("upstreams[{i}].service"),
                    format!(
                        "{:?} is listed twice; keep one upstream per service",
                        u.service
                    ),
                );
            }
            check_addr(r, &format!("upstreams[{i}].address"), &u.address);
        }
    }
}

fn check_addr(r: &mut Reporter<'_>, field: &str, value: &str) {
    if value.is_empty() {
        r.push(field, "required (\"IP:PORT\")");
    } else if value.parse::<SocketAddr>().is_err() {
        r.push(
            field,
            format!("invalid socket address {value:?} (expected \"IP:PORT\")"),
        );
    }
}

/// Collects errors for one resource.
struct Reporter<'a> {
    file: &'a str,
    resource: String,
    sink: &'a mut Vec<ModelError>,
}

impl<'a> Reporter<'a> {
    fn new(file: &'a str, kind: &str, key: &str, sink: &'a mut Vec<ModelError>) -> Self {
        let resource = if key.is_empty() {
            kind.to_owned()
        } else if let Some(index) = key.strip_prefix('#') {
            format!("{kind}[{index}]")
        } else {
            format!("{kind} {key:?}")
        };
        Self {
            file,
            resource,
            sink,
        }
    }

    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.sink.push(ModelError {
            file: self.file.to_owned(),
            resource: self.resource.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn entry<T>(value: T) -> Entry<T> {
    Entry {
        origin: OVERLAY_ORIGIN.to_owned(),
        value,
    }
}

#[cfg(test)]
mod tests;
