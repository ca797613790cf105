//! Tests for `state.rs`: generated configs are validated as the proxy will, errors point at
//! the model resource, apply/diff report what changes.

use super::*;
use crate::discovery::StaticSource;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("remora-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const MESH: &str = r#"
services:
  - { name: a, endpoints: [{ address: "10.0.0.1:80" }] }
  - { name: b, endpoints: [{ address: "10.0.0.2:80" }] }
sidecars:
  - { service: client-a, upstreams: [{ service: a, address: "127.0.0.1:7001" }] }
  - { service: client-b, upstreams: [{ service: b, address: "127.0.0.1:7002" }] }
"#;

fn hub(name: &str) -> Arc<Hub> {
    let dir = temp_dir(name);
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    Hub::load(&dir, vec![Arc::new(StaticSource)], Arc::new(Metrics::new())).unwrap()
}

fn mesh(yaml: &str) -> Mesh {
    model::parse(yaml).unwrap()
}

#[test]
fn a_policy_the_proxy_would_reject_is_refused_naming_the_policy() {
    let hub = hub("reject");
    let before = hub.current();
    let e = hub
        .apply(&mesh(
            r#"policies: [{ service: a, routes: [{ name: r, match: { pathRegex: "/(x" }, forward: { cluster: a } }] }]"#,
        ))
        .unwrap_err()
        .lines();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(r#"applied: policy "a": routes[0].match.pathRegex: "#),
        "{e:?}"
    );
    assert_eq!(
        hub.current().generation,
        before.generation,
        "nothing changed"
    );
    assert!(!hub.dir().join(model::OVERLAY_FILE).exists());
}

#[test]
fn bad_endpoint_weight_is_attributed_to_the_service() {
    let hub = hub("weight");
    let e = hub
        .apply(&mesh(
            r#"services: [{ name: a, endpoints: [{ address: "10.0.0.1:80", weight: 0 }] }]"#,
        ))
        .unwrap_err()
        .lines();
    assert!(
        e[0].starts_with(r#"applied: service "a": endpoints[0].weight: "#),
        "{e:?}"
    );
}

#[test]
fn apply_persists_the_overlay_and_reports_affected_services() {
    let hub = hub("apply");
    let diff = hub
        .diff(&mesh(
            r#"services: [{ name: a, endpoints: [{ address: "10.0.0.9:80" }] }]"#,
        ))
        .unwrap();
    assert_eq!(diff.changed, vec![r#"service "a""#]);
    assert_eq!(diff.pushes.len(), 1);
    assert_eq!(
        (diff.pushes[0].service.as_str(), diff.pushes[0].r#type),
        ("client-a", "endpoints")
    );
    assert_eq!(hub.current().generation, 1, "diff changes nothing");

    let report = hub
        .apply(&mesh(
            r#"policies: [{ service: b, routes: [{ name: r, forward: { cluster: b } }] }]"#,
        ))
        .unwrap();
    assert_eq!(report.added, vec![r#"policy "b""#]);
    assert_eq!(report.pushes.len(), 1);
    assert_eq!(
        (report.pushes[0].service.as_str(), report.pushes[0].r#type),
        ("client-b", "config")
    );
    assert!(hub.dir().join(model::OVERLAY_FILE).exists());

    // A restart reads the overlay back; versions are the same.
    let again = Hub::load(
        hub.dir(),
        vec![Arc::new(StaticSource)],
        Arc::new(Metrics::new()),
    )
    .unwrap();
    assert_eq!(
        again.current().config_for("client-b").config_version,
        hub.current().config_for("client-b").config_version
    );
    assert_eq!(
        again.current().model.policies["b"].origin,
        model::OVERLAY_ORIGIN
    );
    // Re-applying the same thing changes nothing.
    let same = hub
        .apply(&mesh(
            r#"policies: [{ service: b, routes: [{ name: r, forward: { cluster: b } }] }]"#,
        ))
        .unwrap();
    assert!(same.is_empty(), "{same:?}");
}

#[test]
fn a_bad_file_keeps_the_last_good_model() {
    let hub = hub("reload");
    std::fs::write(hub.dir().join("broken.yaml"), "services: [{ name: a }]").unwrap();
    let e = hub.reload_files().unwrap_err().lines();
    assert!(e[0].contains("defined twice"), "{e:?}");
    assert_eq!(hub.current().generation, 1);
    std::fs::remove_file(hub.dir().join("broken.yaml")).unwrap();
    std::fs::write(
        hub.dir().join("c.yaml"),
        r#"services: [{ name: c, endpoints: [{ address: "10.0.0.3:80" }] }]"#,
    )
    .unwrap();
    let report = hub.reload_files().unwrap();
    assert_eq!(report.added, vec![r#"service "c""#]);
    assert!(report.pushes.is_empty(), "no sidecar uses c");
}
