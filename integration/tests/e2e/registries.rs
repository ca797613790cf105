//! Discovery from registries other than Kubernetes, end to end: one mesh whose `orders`
//! come from Consul (blocking queries, tag filter, ACL token) and whose `users` come from
//! Eureka (full fetch, then deltas checked by hash). A deregistered instance loses its
//! traffic with no failed request; a registry that goes down leaves the last known
//! endpoints serving, shown as stale; a missed Eureka delta is caught by the hash.

use std::collections::BTreeSet;
use std::time::Duration;

use remora_integration::load::Load;
use remora_integration::peers::{PyServer, curl};
use remora_integration::{ControlPlane, Remora, Upstream, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn put(server: &PyServer, state: &serde_json::Value) {
    let (out, err, ok) = curl(&[
        "-X",
        "PUT",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &state.to_string(),
        &format!("http://{}/_test/state", server.addr()),
    ]);
    assert!(ok, "{out}{err}");
}

fn post(server: &PyServer, path: &str) {
    let (out, err, ok) = curl(&["-X", "POST", &format!("http://{}{path}", server.addr())]);
    assert!(ok, "{out}{err}");
}

fn consul_entry(u: &Upstream, node: &str, passing: bool) -> serde_json::Value {
    json!({ "node": node, "address": u.addr.ip().to_string(), "port": u.addr.port(),
            "dc": "dc1", "tags": ["v1"], "passing": passing })
}

fn eureka_instance(u: &Upstream, id: &str) -> serde_json::Value {
    json!({ "id": id, "ip": u.addr.ip().to_string(), "port": u.addr.port(), "status": "UP", "zone": "a" })
}

/// Which upstreams answer `n` requests through `listener`.
fn seen(proxy: &Remora, listener: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| {
            let (out, _, ok) = curl(&[&format!("{}/", proxy.url(listener))]);
            ok.then(|| serde_json::from_str::<serde_json::Value>(&out).ok())
                .flatten()
                .and_then(|v| v["server"].as_str().map(str::to_owned))
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn consul_and_eureka_feed_one_mesh_and_registry_failures_lose_nothing() {
    let (c1, c2, other_tag) = (
        Upstream::start("c1"),
        Upstream::start("c2"),
        Upstream::start("c-v2"),
    );
    let (e1, e2) = (Upstream::start("e1"), Upstream::start("e2"));
    let consul = PyServer::start("registries.py", &["consul", "--token", "s3cret"]);
    let eureka = PyServer::start("registries.py", &["eureka"]);
    let mut v2 = consul_entry(&other_tag, "n3", true);
    v2["tags"] = json!(["v2"]);
    put(
        &consul,
        &json!({ "orders": [consul_entry(&c1, "n1", true), consul_entry(&c2, "n2", true), v2] }),
    );
    put(&eureka, &json!({ "USERS": [eureka_instance(&e1, "e1")] }));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mesh.yaml"),
        r#"services:
  - { name: orders, consul: { service: orders, datacenter: dc1, tags: [v1] }, gracePeriod: 60s, lbPolicy: ROUND_ROBIN }
  - { name: users, eureka: { app: users }, lbPolicy: ROUND_ROBIN }
sidecars:
  - { service: web, upstreams: [{ service: orders, address: "127.0.0.1:0" }, { service: users, address: "127.0.0.1:0" }] }
"#,
    )
    .expect("write");
    let cp = ControlPlane::start_with_env(
        dir.path(),
        None,
        &[
            "--consul",
            &format!("http://{}", consul.addr()),
            "--eureka",
            &format!("http://{}/eureka", eureka.addr()),
            "--eureka-refresh",
            "1s",
        ],
        &[("CONSUL_HTTP_TOKEN", "s3cret")],
    );
    let web = Remora::start_controlled(&cp.url(), "web-1", "web", None, &[], true);
    eventually("orders from Consul (tag v1 only)", WAIT, || {
        (seen(&web, "outbound-orders", 10) == set(&["c1", "c2"])).then_some(())
    });
    eventually("users from Eureka", WAIT, || {
        (seen(&web, "outbound-users", 3) == set(&["e1"])).then_some(())
    });

    // c2 fails its health check (deregistered from passing): traffic leaves it under load.
    let load = Load::start(format!("{}/", web.url("outbound-orders")), "orders");
    load.wait_for(20);
    put(
        &consul,
        &json!({ "orders": [consul_entry(&c1, "n1", true), consul_entry(&c2, "n2", false)] }),
    );
    eventually("c2 gone", WAIT, || {
        (seen(&web, "outbound-orders", 10) == set(&["c1"])).then_some(())
    });
    // Consul goes down: the last known endpoints keep serving, shown as stale.
    post(&consul, "/_test/down");
    eventually("orders marked stale", WAIT, || {
        let m = cp.metrics();
        (remora_integration::remora::metric_sum(
            &m,
            "remora_control_discovery_stale",
            &["service=\"orders\""],
        ) == 1.0)
            .then_some(())
    });
    let before = load.ok();
    load.wait_for(before + 50);
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "{ok} ok");
    let (services, _, _) = curl(&[&format!("{}/v1/services", cp.api_url())]);
    let services: serde_json::Value = serde_json::from_str(&services).expect("json");
    let orders = services
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "orders")
        .cloned()
        .unwrap_or_default();
    assert_eq!(orders["source"], "consul");
    assert!(
        orders["stale"]
            .as_str()
            .is_some_and(|s| s.contains("grace")),
        "{orders}"
    );
    let table = cp.cli(&["get", "services"]);
    assert!(remora_integration::control::text(&table).contains("keeping the last 1 endpoints"));

    // Eureka: a new instance arrives by delta; a change the delta misses is caught by the
    // hash check and a full fetch.
    put(
        &eureka,
        &json!({ "USERS": [eureka_instance(&e1, "e1"), eureka_instance(&e2, "e2")] }),
    );
    eventually("e2 from a delta", WAIT, || {
        (seen(&web, "outbound-users", 10) == set(&["e1", "e2"])).then_some(())
    });
    post(&eureka, "/_test/lose-delta");
    put(&eureka, &json!({ "USERS": [eureka_instance(&e2, "e2")] }));
    eventually("e1 gone despite the lost delta", WAIT, || {
        (seen(&web, "outbound-users", 10) == set(&["e2"])).then_some(())
    });
    let (paths, _, _) = curl(&[&format!("http://{}/_test/requests", eureka.addr())]);
    let full = paths.matches("\"/eureka/apps\"").count();
    assert!(full >= 2 && paths.contains("/eureka/apps/delta"), "{paths}");
    // Consul was asked with the token, blocking queries and the filters.
    let (paths, _, _) = curl(&[&format!("http://{}/_test/requests", consul.addr())]);
    assert!(
        paths.contains("passing=1&dc=dc1&tag=v1") && paths.contains("&index="),
        "{paths}"
    );
}

fn marathon_app(id: &str, tasks: &[(&Upstream, bool)]) -> serde_json::Value {
    json!({
        "id": id,
        "portDefinitions": [{ "port": 10000, "name": "http" }],
        "healthChecks": [{ "protocol": "HTTP", "path": "/health" }],
        "tasks": tasks.iter().enumerate().map(|(i, (u, alive))| json!({
            "id": format!("{id}.{i}"), "host": u.addr.ip().to_string(), "ports": [u.addr.port()],
            "state": "TASK_RUNNING", "healthCheckResults": [{ "alive": alive }],
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn nomad_and_marathon_feed_the_mesh() {
    let (n1, n2) = (Upstream::start("n1"), Upstream::start("n2"));
    let (m1, m2) = (Upstream::start("m1"), Upstream::start("m2"));
    let nomad = PyServer::start("registries.py", &["nomad"]);
    let marathon = PyServer::start("registries.py", &["marathon"]);
    let reg = |u: &Upstream| json!({ "address": u.addr.ip().to_string(), "port": u.addr.port(), "tags": ["http"] });
    put(&nomad, &json!({ "orders": [reg(&n1), reg(&n2)] }));
    put(
        &marathon,
        &json!({ "apps": [marathon_app("/shop/users", &[(&m1, true), (&m2, true)])] }),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mesh.yaml"),
        r#"services:
  - { name: orders, nomad: { service: orders, tags: [http] }, lbPolicy: ROUND_ROBIN }
  - { name: users, marathon: { app: /shop/users, portName: http }, lbPolicy: ROUND_ROBIN }
sidecars:
  - { service: web, upstreams: [{ service: orders, address: "127.0.0.1:0" }, { service: users, address: "127.0.0.1:0" }] }
"#,
    )
    .expect("write");
    let cp = ControlPlane::start_with(
        dir.path(),
        None,
        &[
            "--nomad",
            &format!("http://{}", nomad.addr()),
            "--marathon",
            &format!("http://{}", marathon.addr()),
        ],
    );
    let web = Remora::start_controlled(&cp.url(), "web-1", "web", None, &[], true);
    eventually("orders from Nomad", WAIT, || {
        (seen(&web, "outbound-orders", 10) == set(&["n1", "n2"])).then_some(())
    });
    eventually("users from Marathon", WAIT, || {
        (seen(&web, "outbound-users", 10) == set(&["m1", "m2"])).then_some(())
    });
    // A blocking query returns on the change; an event brings Marathon's (well before its
    // 30 s re-read).
    put(&nomad, &json!({ "orders": [reg(&n1)] }));
    put(
        &marathon,
        &json!({ "apps": [marathon_app("/shop/users", &[(&m1, true), (&m2, false)])] }),
    );
    eventually("n2 gone", WAIT, || {
        (seen(&web, "outbound-orders", 10) == set(&["n1"])).then_some(())
    });
    eventually("m2 failing its health check is gone", WAIT, || {
        (seen(&web, "outbound-users", 10) == set(&["m1"])).then_some(())
    });
    let (paths, _, _) = curl(&[&format!("http://{}/_test/requests", marathon.addr())]);
    assert!(
        paths.contains("/v2/events") && paths.contains("embed=apps.tasks"),
        "{paths}"
    );
}
