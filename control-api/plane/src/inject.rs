//! Sidecar injection: from a pod (as the API server sends it in an `AdmissionReview`), the
//! JSON patch that adds the Remora proxy. A native sidecar (an init container with
//! `restartPolicy: Always` and a startup probe on `/ready`, Kubernetes ≥ 1.29) or, before
//! that, the first container with a `postStart` hook that waits for `/ready`. Idempotent
//! (a pod that has the proxy is left alone) and never refusing: whatever goes wrong, the pod
//! is allowed unchanged and the reason counted.

use serde::Deserialize;
use serde_json::{Value, json};

/// The injected container's name.
pub const CONTAINER: &str = "remora-proxy";
/// Set on injected pods.
pub const INJECTED: &str = "remora.io/injected";
/// `remora.io/upstreams: "orders:7001,payments:7002"`.
pub const UPSTREAMS: &str = "remora.io/upstreams";
/// `remora.io/inbound-port: "8080"`: the app's port behind the inbound listener.
pub const INBOUND_PORT: &str = "remora.io/inbound-port";
/// `remora.io/service`: the mesh service (default: the `app.kubernetes.io/name` or `app`
/// label, then the service account).
pub const SERVICE: &str = "remora.io/service";
/// Resource annotations for the proxy container.
pub const CPU_REQUEST: &str = "remora.io/proxy-cpu-request";
pub const MEMORY_REQUEST: &str = "remora.io/proxy-memory-request";
pub const MEMORY_LIMIT: &str = "remora.io/proxy-memory-limit";

/// What the chart's `injection.json` says to inject.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    pub image: String,
    #[serde(default = "if_not_present")]
    pub pull_policy: String,
    /// `http://remora-control.NS.svc:9090`.
    pub control_url: String,
    pub native_sidecar: bool,
    pub inbound_port: u16,
    pub admin_port: u16,
    #[serde(default = "json_format")]
    pub log_format: String,
    #[serde(default)]
    pub resources: Value,
    #[serde(default)]
    pub scrape: bool,
    /// The opt-in/opt-out label (`remora.io/inject`).
    pub label: String,
}

fn if_not_present() -> String {
    "IfNotPresent".into()
}

fn json_format() -> String {
    "json".into()
}

impl Settings {
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--injection {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("--injection {}: {e}", path.display()))
    }
}

/// What injection did with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The JSON patch (RFC 6902) to apply.
    Injected(Vec<Value>),
    /// Left alone, and why (`remora_control_injections_total{result}`).
    Skipped(&'static str),
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `/` and `~` escaped for a JSON pointer (RFC 6901).
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The mesh service a pod belongs to.
pub fn service_of(pod: &Value) -> Option<String> {
    let meta = |k: &str| {
        str_at(pod, &["metadata", "annotations", k])
            .or_else(|| str_at(pod, &["metadata", "labels", k]))
    };
    meta(SERVICE)
        .or_else(|| meta("app.kubernetes.io/name"))
        .or_else(|| meta("app"))
        .or_else(|| str_at(pod, &["spec", "serviceAccountName"]).filter(|s| *s != "default"))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `service:port` pairs from `remora.io/upstreams`; bad entries are dropped.
pub fn upstreams(value: &str) -> Vec<(String, u16)> {
    value
        .split(',')
        .filter_map(|e| {
            let (svc, port) = e.trim().split_once(':')?;
            let port: u16 = port.trim().parse().ok().filter(|p| *p != 0)?;
            let svc = svc.trim();
            let ok = !svc.is_empty()
                && svc
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            ok.then(|| (svc.to_owned(), port))
        })
        .collect()
}

fn resources(settings: &Settings, pod: &Value) -> Value {
    let mut r = if settings.resources.is_object() {
        settings.resources.clone()
    } else {
        json!({})
    };
    let ann = |k: &str| str_at(pod, &["metadata", "annotations", k]).map(str::to_owned);
    for (annotation, section, key) in [
        (CPU_REQUEST, "requests", "cpu"),
        (MEMORY_REQUEST, "requests", "memory"),
        (MEMORY_LIMIT, "limits", "memory"),
    ] {
        if let Some(v) = ann(annotation).filter(|v| quantity(v)) {
            if !r[section].is_object() {
                r[section] = json!({});
            }
            r[section][key] = Value::String(v);
        }
    }
    r
}

/// A Kubernetes quantity such as `100m`, `64Mi`, `1.5`.
fn quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

/// The proxy container for `pod`.
fn container(settings: &Settings, pod: &Value, service: &str) -> Value {
    let admin = settings.admin_port;
    let mut env = vec![
        json!({ "name": "REMORA_CONTROL", "value": settings.control_url }),
        json!({ "name": "REMORA_NODE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        json!({ "name": "REMORA_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }),
        json!({ "name": "REMORA_SERVICE", "value": service }),
        json!({ "name": "REMORA_ADMIN", "value": format!("0.0.0.0:{admin}") }),
        json!({ "name": "REMORA_LOG_FORMAT", "value": settings.log_format }),
    ];
    if let Some(u) = str_at(pod, &["metadata", "annotations", UPSTREAMS]) {
        let list: Vec<String> = upstreams(u)
            .into_iter()
            .map(|(s, p)| format!("{s}:{p}"))
            .collect();
        if !list.is_empty() {
            env.push(json!({ "name": "REMORA_UPSTREAMS", "value": list.join(",") }));
        }
    }
    let mut c = json!({
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.pull_policy,
        "command": ["remora"],
        "env": env,
        "ports": [
            { "name": "remora-inbound", "containerPort": settings.inbound_port, "protocol": "TCP" },
            { "name": "remora-admin", "containerPort": admin, "protocol": "TCP" },
        ],
        "readinessProbe": { "httpGet": { "path": "/ready", "port": admin }, "periodSeconds": 5 },
        "livenessProbe": { "httpGet": { "path": "/live", "port": admin }, "periodSeconds": 10, "failureThreshold": 6 },
        "resources": resources(settings, pod),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
    });
    if settings.native_sidecar {
        // The kubelet starts the app containers only once this probe passes.
        c["restartPolicy"] = json!("Always");
        c["startupProbe"] = json!({
            "httpGet": { "path": "/ready", "port": admin },
            "periodSeconds": 1,
            "failureThreshold": 120,
        });
    } else {
        // The kubelet starts the next container only once this hook returns.
        c["lifecycle"] = json!({ "postStart": { "exec": { "command": [
            "remora", "wait-ready", "--admin", format!("127.0.0.1:{admin}"), "--timeout", "60s"
        ] } } });
    }
    c
}

/// Decides for one pod.
pub fn patch(pod: &Value, settings: &Settings) -> Outcome {
    let named_proxy = |list: &str| {
        pod["spec"][list]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == CONTAINER))
    };
    if named_proxy("containers")
        || named_proxy("initContainers")
        || str_at(pod, &["metadata", "annotations", INJECTED]).is_some()
    {
        return Outcome::Skipped("already-injected");
    }
    let opt = |k: &str| {
        str_at(pod, &["metadata", "labels", k])
            .or_else(|| str_at(pod, &["metadata", "annotations", k]))
    };
    if opt(&settings.label) == Some("disabled") {
        return Outcome::Skipped("opted-out");
    }
    if pod["spec"]["hostNetwork"] == json!(true) {
        return Outcome::Skipped("host-network");
    }
    if !pod["spec"]["containers"].is_array() {
        return Outcome::Skipped("not-a-pod");
    }
    let Some(service) = service_of(pod) else {
        return Outcome::Skipped("no-service");
    };
    let c = container(settings, pod, &service);
    let mut ops = Vec::new();
    if settings.native_sidecar {
        if pod["spec"]["initContainers"].is_array() {
            ops.push(json!({ "op": "add", "path": "/spec/initContainers/0", "value": c }));
        } else {
            ops.push(json!({ "op": "add", "path": "/spec/initContainers", "value": [c] }));
        }
    } else {
        ops.push(json!({ "op": "add", "path": "/spec/containers/0", "value": c }));
    }
    let mut annotations = vec![
        (INJECTED.to_owned(), "true".to_owned()),
        (
            crate::kubernetes::LISTENER_ANNOTATION.to_owned(),
            settings.inbound_port.to_string(),
        ),
    ];
    // The control plane finds injected pods by this label (its value: their service).
    let label_ok = service.len() <= 63
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if label_ok {
        let path = format!(
            "/metadata/labels{}",
            if pod["metadata"]["labels"].is_object() {
                format!("/{}", pointer_token(crate::kubernetes::SIDECAR_LABEL))
            } else {
                String::new()
            }
        );
        let value = if pod["metadata"]["labels"].is_object() {
            json!(service)
        } else {
            json!({ crate::kubernetes::SIDECAR_LABEL: service })
        };
        ops.push(json!({ "op": "add", "path": path, "value": value }));
    }
    if settings.scrape
        && str_at(pod, &["metadata", "annotations", "prometheus.io/scrape"]).is_none()
    {
        annotations.push(("prometheus.io/scrape".into(), "true".into()));
        annotations.push(("prometheus.io/port".into(), settings.admin_port.to_string()));
        annotations.push(("prometheus.io/path".into(), "/metrics".into()));
    }
    if pod["metadata"]["annotations"].is_object() {
        for (k, v) in annotations {
            ops.push(json!({ "op": "add", "path": format!("/metadata/annotations/{}", pointer_token(&k)), "value": v }));
        }
    } else {
        let map: serde_json::Map<String, Value> = annotations
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        ops.push(json!({ "op": "add", "path": "/metadata/annotations", "value": map }));
    }
    Outcome::Injected(ops)
}

/// Answers an `AdmissionReview` request body: always `allowed`, with the patch when the
/// pod is injected. Returns the response body and what was done (or why not).
pub fn review(body: &[u8], settings: &Settings) -> Result<(Value, Outcome), String> {
    use base64::Engine as _;
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request = &review["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or("AdmissionReview without request.uid")?;
    let api_version = review["apiVersion"]
        .as_str()
        .unwrap_or("admission.k8s.io/v1");
    let outcome = if request["kind"]["kind"] == "Pod" && request["operation"] == "CREATE" {
        patch(&request["object"], settings)
    } else {
        Outcome::Skipped("not-a-pod")
    };
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Outcome::Injected(ops) = &outcome {
        let patch = serde_json::to_vec(ops).map_err(|e| e.to_string())?;
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    Ok((
        json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response }),
        outcome,
    ))
}

#[cfg(test)]
mod tests;
