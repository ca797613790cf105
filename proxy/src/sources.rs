//! Where the running configuration comes from: a local file (static parts), the control
//! stream (dynamic parts), or both merged. Every change goes through [`Sources`], which merges,
//! applies, and keeps the last good input of each kind; a rejected change leaves everything
//! as it was.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use remora_control_api::proto;

use crate::apply::{ApplyError, apply};
use crate::metrics::ResultLabels;
use crate::state::Proxy;

/// The configuration last received from the control plane (or its cache).
#[derive(Debug, Clone, PartialEq)]
pub struct Dynamic {
    pub config: proto::Config,
    pub config_version: String,
    pub endpoints_version: String,
}

#[derive(Debug, Default)]
struct Inputs {
    file: Option<proto::Config>,
    dynamic: Option<Dynamic>,
}

/// Owns the inputs and serialises applies (the file watcher and the control stream both call
/// in here).
#[derive(Debug)]
pub struct Sources {
    proxy: Arc<Proxy>,
    inputs: Mutex<Inputs>,
    /// With a control plane, `/ready` waits for the first dynamic configuration.
    controlled: bool,
}

impl Sources {
    pub fn new(proxy: Arc<Proxy>, controlled: bool) -> Self {
        Self {
            proxy,
            inputs: Mutex::new(Inputs::default()),
            controlled,
        }
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Parses and applies new file contents (merged with the dynamic part, if any).
    pub fn set_file_text(&self, text: &str) -> Result<String, ApplyError> {
        let parsed = remora_control_api::load::from_yaml(text).map_err(ApplyError::from);
        let result = parsed.and_then(|file| {
            let mut inputs = self.lock();
            let version = self.apply_merged(Some(&file), inputs.dynamic.as_ref())?;
            inputs.file = Some(file);
            Ok(version)
        });
        self.count(result.is_ok());
        result
    }

    /// Applies a new dynamic configuration (merged with the file's static part, if any).
    pub fn set_dynamic(&self, dynamic: Dynamic) -> Result<String, ApplyError> {
        let mut inputs = self.lock();
        let result = self.apply_merged(inputs.file.as_ref(), Some(&dynamic));
        if result.is_ok() {
            inputs.dynamic = Some(dynamic);
            self.proxy.ready.store(true, Ordering::Release);
        }
        drop(inputs);
        self.count(result.is_ok());
        result
    }

    /// The dynamic configuration being served, if any.
    pub fn dynamic(&self) -> Option<Dynamic> {
        self.lock().dynamic.clone()
    }

    fn apply_merged(
        &self,
        file: Option<&proto::Config>,
        dynamic: Option<&Dynamic>,
    ) -> Result<String, ApplyError> {
        let merged = match (file, dynamic) {
            (Some(f), Some(d)) => merge(f, &d.config),
            (Some(f), None) => f.clone(),
            (None, Some(d)) => d.config.clone(),
            (None, None) => proto::Config::default(),
        };
        let version = apply(&self.proxy, merged)?;
        if !self.controlled || dynamic.is_some() {
            self.proxy.ready.store(true, Ordering::Release);
        }
        Ok(version)
    }

    fn count(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.proxy
            .metrics
            .config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The file's listeners, route tables and clusters plus the control plane's; admin address
/// and drain timeout come from the file. A name defined by both is left duplicated, so that
/// validation rejects it naming the resource.
pub fn merge(file: &proto::Config, dynamic: &proto::Config) -> proto::Config {
    let version = match (file.version.is_empty(), dynamic.version.is_empty()) {
        (true, _) => dynamic.version.clone(),
        (false, true) => file.version.clone(),
        (false, false) => format!("{}+{}", dynamic.version, file.version),
    };
    let mut merged = file.clone();
    merged.version = version;
    merged.listeners.extend(dynamic.listeners.iter().cloned());
    merged
        .route_tables
        .extend(dynamic.route_tables.iter().cloned());
    merged.clusters.extend(dynamic.clusters.iter().cloned());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_file_admin_and_concatenates_resources() {
        let file = remora_control_api::load::from_yaml(
            "version: f1\nadmin: { address: \"127.0.0.1:9999\" }\nclusters: [{ name: db, endpoints: [{ address: \"127.0.0.1:5432\" }] }]\n",
        )
        .unwrap();
        let dynamic = remora_control_api::load::from_yaml(
            "version: d7\nclusters: [{ name: orders, endpoints: [{ address: \"127.0.0.1:80\" }] }]\n",
        )
        .unwrap();
        let m = merge(&file, &dynamic);
        assert_eq!(m.version, "d7+f1");
        assert_eq!(m.admin, file.admin);
        let names: Vec<_> = m.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "orders"]);
    }

    #[test]
    fn a_name_in_both_is_rejected_by_validation() {
        let both = remora_control_api::load::from_yaml(
            "clusters: [{ name: db, endpoints: [{ address: \"127.0.0.1:5432\" }] }]\n",
        )
        .unwrap();
        let err = remora_control_api::validate(&merge(&both, &both)).unwrap_err();
        assert!(err.to_string().contains("db"), "{err}");
    }
}
