//! The control plane end to end: real `remora-control` and `remora` processes on 127.0.0.1.
//! Pushes reach exactly the affected proxies; bad policies are refused at `apply`; an update
//! a proxy cannot apply is NACKed and shown by `get proxies` while the old config serves; the
//! control plane can die and come back with no failed request; a proxy restarted during the
//! outage serves from its `--cache-dir`; endpoints churn under load with zero failures.

use std::time::Duration;

use remora_integration::control::text;
use remora_integration::load::Load;
use remora_integration::peers::curl;
use remora_integration::{ControlPlane, Remora, Upstream, eventually};

const WAIT: Duration = Duration::from_secs(15);
const ORDERS: &str = "outbound-orders";

/// Two services with sidecars: `web` calls `orders`, `billing` calls `users`.
fn mesh(orders: &[&Upstream], v2: &Upstream, users: &Upstream) -> String {
    format!(
        r#"services:
  - {{ name: orders, endpoints: [{}] }}
  - {{ name: orders-v2, endpoints: [{{ address: "{}" }}] }}
  - {{ name: users, endpoints: [{{ address: "{}" }}] }}
sidecars:
  - {{ service: web, upstreams: [{{ service: orders, address: "127.0.0.1:0" }}] }}
  - {{ service: billing, upstreams: [{{ service: users, address: "127.0.0.1:0" }}] }}
"#,
        endpoints(orders),
        v2.addr,
        users.addr
    )
}

fn endpoints(ups: &[&Upstream]) -> String {
    ups.iter()
        .map(|u| format!("{{ address: \"{}\" }}", u.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mesh_dir(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("write mesh");
    dir
}

fn sidecar(cp: &ControlPlane, node: &str, service: &str, extra: &[&str]) -> Remora {
    Remora::start_controlled(&cp.url(), node, service, None, extra, true)
}

/// Which upstream answered `GET /` through `listener` (the echo's `server` field).
fn served_by(proxy: &Remora, listener: &str) -> String {
    let (out, _, ok) = curl(&[&format!("{}/", proxy.url(listener))]);
    assert!(ok, "curl through {listener} failed: {out}");
    crate::json(&out)["server"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The control plane's record of `node` (from `/v1/proxies`).
fn record(cp: &ControlPlane, node: &str) -> serde_json::Value {
    cp.proxies()
        .as_array()
        .and_then(|a| a.iter().find(|p| p["node"] == node).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Polls until the control plane has seen `node` ACK what it wants it to run.
fn wait_in_sync(cp: &ControlPlane, node: &str) -> serde_json::Value {
    eventually(&format!("{node} in sync"), WAIT, || {
        let r = record(cp, node);
        (r["inSync"] == true && r["connected"] == true).then_some(r)
    })
}

fn updates(proxy: &Remora, resource: &str) -> f64 {
    proxy.metric_sum(
        "remora_control_updates_total",
        &[&format!("resource=\"{resource}\"")],
    )
}

#[test]
fn a_push_reaches_only_affected_proxies_and_a_bad_policy_is_refused() {
    let (v1, v2, users) = (
        Upstream::start("orders-v1"),
        Upstream::start("orders-v2"),
        Upstream::start("users"),
    );
    let dir = mesh_dir(&mesh(&[&v1], &v2, &users));
    let cp = ControlPlane::start(dir.path(), None);
    // web's local file adds a static part: a TCP listener of its own, beside the mesh's.
    let static_part = format!(
        "listeners:\n  - {{ name: static-tcp, address: \"127.0.0.1:0\", protocol: TCP, cluster: static-db }}\nclusters:\n  - {{ name: static-db, endpoints: [{{ address: \"{}\" }}] }}\n",
        users.addr
    );
    let web = Remora::start_controlled(&cp.url(), "web-1", "web", Some(&static_part), &[], true);
    let billing = sidecar(&cp, "billing-1", "billing", &[]);
    assert_eq!(served_by(&web, ORDERS), "orders-v1");
    assert_eq!(served_by(&web, "static-tcp"), "users");
    assert_eq!(served_by(&billing, "outbound-users"), "users");
    assert!(!web.listeners().contains_key("outbound-users"));
    wait_in_sync(&cp, "billing-1");
    let billing_version = billing.version();
    assert_eq!(updates(&billing, "config"), 1.0);

    // Shift all of orders to v2: web follows, billing receives nothing.
    let (ok, out) = cp.apply(
        "policies:\n  - service: orders\n    routes:\n      - name: canary\n        forward: { weightedClusters: [{ name: orders, weight: 0 }, { name: orders-v2, weight: 100 }] }\n",
    );
    assert!(ok, "apply failed: {out}");
    assert!(
        out.contains("web"),
        "apply should name the proxies it pushes to: {out}"
    );
    eventually("web routes to orders-v2", WAIT, || {
        (served_by(&web, ORDERS) == "orders-v2").then_some(())
    });
    let web_record = wait_in_sync(&cp, "web-1");
    eventually("billing's stream saw the new mesh state", WAIT, || {
        (record(&cp, "billing-1")["generation"] == web_record["generation"]).then_some(())
    });
    assert_eq!(updates(&billing, "config"), 1.0, "billing got a push");
    assert_eq!(updates(&billing, "endpoints"), 0.0, "billing got a push");
    assert_eq!(billing.version(), billing_version);
    assert_eq!(updates(&web, "config"), 2.0);
    assert_eq!(
        served_by(&web, "static-tcp"),
        "users",
        "the file's part stays"
    );
    // The version served is in /metrics too, labelled by where it came from.
    let acked = web_record["ackedConfigVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        web.metric_sum(
            "remora_control_applied_info",
            &[
                "resource=\"config\"",
                "source=\"control\"",
                &format!("version=\"{acked}\"")
            ]
        ),
        1.0,
        "{}",
        web.metrics()
    );

    // A policy naming a service that does not exist is refused by apply; nothing changes.
    let (ok, out) = cp.apply(
        "policies:\n  - service: orders\n    routes: [{ name: all, forward: { cluster: nope } }]\n",
    );
    assert!(!ok, "a bad policy was accepted: {out}");
    assert!(
        out.contains("policy \"orders\"") && out.contains("nope"),
        "the error should name the policy and the missing service: {out}"
    );
    assert_eq!(served_by(&web, ORDERS), "orders-v2");
    assert_eq!(updates(&web, "config"), 2.0);
}

#[test]
fn an_update_the_proxy_cannot_apply_is_nacked_and_the_old_config_serves() {
    let (v1, v2, users) = (
        Upstream::start("orders-v1"),
        Upstream::start("orders-v2"),
        Upstream::start("users"),
    );
    let dir = mesh_dir(&mesh(&[&v1], &v2, &users));
    let cp = ControlPlane::start(dir.path(), None);
    let web = sidecar(&cp, "web-1", "web", &[]);
    let good = web.version();

    // Valid for the control plane, but the port is taken on the proxy's machine: the proxy
    // cannot bind it, refuses the whole update and keeps what it had.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr");
    let (ok, out) = cp.apply(&format!(
        "sidecars:\n  - {{ service: web, upstreams: [{{ service: orders, address: \"127.0.0.1:0\" }}, {{ service: users, address: \"{port}\" }}] }}\n"
    ));
    assert!(ok, "apply failed: {out}");
    let nack = eventually("the NACK reaches the control plane", WAIT, || {
        let r = record(&cp, "web-1");
        r["lastNack"].is_object().then(|| r["lastNack"].clone())
    });
    let error = nack["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("outbound-users") && error.contains("cannot bind"),
        "{nack}"
    );
    assert_eq!(record(&cp, "web-1")["inSync"], false);
    let table = text(&cp.cli(&["get", "proxies"]));
    assert!(
        table.contains("web-1") && table.contains("cannot bind"),
        "get proxies should show the NACK: {table}"
    );
    let status = web.control_status();
    assert!(
        status["lastNack"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot bind"))
    );
    assert_eq!(web.version(), good);
    assert_eq!(served_by(&web, ORDERS), "orders-v1");
    assert!(!web.listeners().contains_key("outbound-users"));
    assert!(cp.metrics().contains("remora_control_nacks_total 1"));

    // Freed, and pushed again with a fix: applied.
    drop(taken);
    let (ok, out) = cp.apply(&format!(
        "sidecars:\n  - {{ service: web, upstreams: [{{ service: orders, address: \"127.0.0.1:0\" }}, {{ service: users, address: \"{port}\" }}] }}\npolicies: [{{ service: users, routes: [{{ name: all, forward: {{ cluster: users }} }}] }}]\n"
    ));
    assert!(ok, "apply failed: {out}");
    wait_in_sync(&cp, "web-1");
    assert_eq!(served_by(&web, "outbound-users"), "users");
}

#[test]
fn proxies_ride_out_a_control_plane_outage_and_restart_from_cache() {
    let (v1, v2, users) = (
        Upstream::start("orders-v1"),
        Upstream::start("orders-v2"),
        Upstream::start("users"),
    );
    let dir = mesh_dir(&mesh(&[&v1], &v2, &users));
    let mut cp = ControlPlane::start(dir.path(), None);
    let grpc = cp.grpc;
    let cache = tempfile::tempdir().expect("cache dir");
    let cache_arg = cache.path().to_str().expect("utf-8").to_owned();
    let web = sidecar(&cp, "web-1", "web", &[]);
    let mut cached = sidecar(&cp, "web-2", "web", &["--cache-dir", &cache_arg]);
    wait_in_sync(&cp, "web-2");
    let load = Load::start(format!("{}/", web.url(ORDERS)), "orders");
    load.wait_for(20);

    cp.kill();
    eventually("web-1 notices the outage", WAIT, || {
        (web.control_status()["connected"] == false).then_some(())
    });
    load.wait_for(50);

    // Restarted while the control plane is down: serves the cached configuration.
    cached.terminate(Duration::from_secs(10));
    let restarted = Remora::start_controlled(
        &format!("http://{grpc}"),
        "web-2",
        "web",
        None,
        &["--cache-dir", &cache_arg],
        false,
    );
    restarted.wait_ready();
    assert_eq!(restarted.control_status()["source"], "cache");
    assert_eq!(
        restarted.metric_sum(
            "remora_control_applied_info",
            &["resource=\"config\"", "source=\"cache\""]
        ),
        1.0
    );
    assert_eq!(served_by(&restarted, ORDERS), "orders-v1");

    // The control plane comes back on the same address: both reconnect and are in sync.
    let cp = ControlPlane::start(dir.path(), Some(grpc));
    for node in ["web-1", "web-2"] {
        wait_in_sync(&cp, node);
    }
    eventually("web-1 reconnected", WAIT, || {
        let s = web.control_status();
        (s["connected"] == true && s["connects"] == 2).then_some(())
    });
    // web-2 said in its Hello that it holds the current versions (from the cache), so the
    // control plane sends it nothing and counts it in sync.
    eventually("web-2 reconnected", WAIT, || {
        (restarted.control_status()["connected"] == true).then_some(())
    });
    assert_eq!(updates(&restarted, "config"), 0.0);
    load.wait_for(20);
    let (ok, failed) = load.stop();
    println!("control plane outage: {ok} requests succeeded, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
}

#[test]
fn endpoints_churn_under_load_with_zero_failures() {
    let (v1, v2, users) = (
        Upstream::start("orders-v1"),
        Upstream::start("orders-v2"),
        Upstream::start("users"),
    );
    let alt = Upstream::start("orders-v1b");
    let dir = mesh_dir(&mesh(&[&v1], &v2, &users));
    let cp = ControlPlane::start(dir.path(), None);
    let web = sidecar(&cp, "web-1", "web", &[]);
    let load = Load::start(format!("{}/", web.url(ORDERS)), "orders");
    load.wait_for(20);
    let mut last = wait_in_sync(&cp, "web-1")["ackedEndpointsVersion"].clone();
    let sets: [&[&Upstream]; 3] = [&[&v1, &alt], &[&alt], &[&v1]];
    for round in 0..10 {
        let set = sets[round % sets.len()];
        let (ok, out) = cp.apply(&format!(
            "services: [{{ name: orders, endpoints: [{}] }}]\n",
            endpoints(set)
        ));
        assert!(ok, "apply failed: {out}");
        last = eventually("the new endpoints are ACKed", WAIT, || {
            let r = wait_in_sync(&cp, "web-1");
            (r["ackedEndpointsVersion"] != last).then(|| r["ackedEndpointsVersion"].clone())
        });
        load.wait_for(20);
    }
    let (ok, failed) = load.stop();
    println!("endpoint churn: {ok} requests succeeded, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert!(v1.requests() > 0 && alt.requests() > 0);
    assert_eq!(
        updates(&web, "endpoints"),
        10.0,
        "each change went out as a delta"
    );
    assert_eq!(updates(&web, "config"), 1.0);
}

#[test]
fn reading_the_mesh_files_does_not_make_the_control_plane_reload() {
    let (v1, v2, users) = (
        Upstream::start("orders-v1"),
        Upstream::start("orders-v2"),
        Upstream::start("users"),
    );
    let dir = mesh_dir(&mesh(&[&v1], &v2, &users));
    let cp = ControlPlane::start(dir.path(), None);
    // A real change first, so the watcher has read the files at least once.
    let reloads = || {
        remora_integration::remora::metric_sum(
            &cp.metrics(),
            "remora_control_model_reloads_total",
            &["result=\"success\""],
        )
    };
    std::fs::write(
        dir.path().join("extra.yaml"),
        "services: [{ name: extra }]\n",
    )
    .expect("write");
    eventually("the new file is loaded", WAIT, || {
        (reloads() >= 2.0).then_some(())
    });
    let loaded = reloads();
    for _ in 0..5 {
        let _ = std::fs::read_to_string(dir.path().join("mesh.yaml")).expect("read");
    }
    let before = crate::reload::cpu_seconds(cp.pid());
    let wall = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let share = (crate::reload::cpu_seconds(cp.pid()) - before) / wall.elapsed().as_secs_f64();
    assert!(
        share < 0.25,
        "an idle control plane used {:.0}% of a core",
        share * 100.0
    );
    assert_eq!(reloads(), loaded, "reading files is not a change");
}

/// Sets the fake Kubernetes API's objects.
fn kube_put(api: &str, objects: &serde_json::Value) {
    let (out, err, ok) = curl(&[
        "-X",
        "PUT",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &objects.to_string(),
        &format!("http://{api}/_test/objects"),
    ]);
    assert!(ok, "{out}{err}");
}

fn slice(name: &str, endpoints: &[(&Upstream, bool, bool)]) -> serde_json::Value {
    serde_json::json!({
        "metadata": { "name": name, "namespace": "shop", "labels": { "kubernetes.io/service-name": "orders" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": endpoints.first().map_or(80, |e| e.0.addr.port()), "protocol": "TCP" }],
        "endpoints": endpoints.iter().map(|(u, ready, terminating)| serde_json::json!({
            "addresses": [u.addr.ip().to_string()],
            "conditions": { "ready": ready, "serving": ready, "terminating": terminating },
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn kubernetes_endpoint_slices_feed_the_mesh_and_survive_the_api_server_going_away() {
    use remora_integration::peers::PyServer;
    // Two upstreams on one port number is impossible on one IP, so each slice carries one
    // endpoint on its own port: the Service port `http` maps to each slice's target port.
    let a = Upstream::start("orders-a");
    let b = Upstream::start("orders-b");
    let api = PyServer::start("kube_api.py", &[]);
    let service = serde_json::json!({
        "metadata": { "name": "orders", "namespace": "shop" },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP" }] },
    });
    kube_put(
        &api.addr(),
        &serde_json::json!({ "services": [service], "endpointslices": [slice("orders-a", &[(&a, true, false)]), slice("orders-b", &[(&b, true, false)])] }),
    );
    let dir = mesh_dir(
        r#"services:
  - { name: orders, kubernetes: { namespace: shop, service: orders, port: http } }
sidecars:
  - { service: web, upstreams: [{ service: orders, address: "127.0.0.1:0" }] }
"#,
    );
    let cp = ControlPlane::start_with(
        dir.path(),
        None,
        &["--kubernetes-api", &format!("http://{}", api.addr())],
    );
    let web = sidecar(&cp, "web-1", "web", &[]);
    let seen = |n: usize| -> std::collections::BTreeSet<String> {
        (0..n).map(|_| served_by(&web, ORDERS)).collect()
    };
    eventually("both slices' endpoints", WAIT, || {
        (seen(10).len() == 2).then_some(())
    });
    // b's endpoint starts terminating: traffic leaves it, with no failed request.
    let load = Load::start(format!("{}/", web.url(ORDERS)), "orders");
    load.wait_for(20);
    kube_put(
        &api.addr(),
        &serde_json::json!({ "services": [service], "endpointslices": [slice("orders-a", &[(&a, true, false)]), slice("orders-b", &[(&b, false, true)])] }),
    );
    eventually("b drained", WAIT, || {
        (seen(10) == std::collections::BTreeSet::from(["orders-a".to_owned()])).then_some(())
    });
    // The API server goes away: the last known endpoints keep serving.
    let (out, err, ok) = curl(&["-X", "POST", &format!("http://{}/_test/down", api.addr())]);
    assert!(ok, "{out}{err}");
    let before = load.ok();
    load.wait_for(before + 50);
    let (ok_count, failed) = load.stop();
    assert_eq!(failed, 0, "{ok_count} ok");
    assert_eq!(
        seen(5),
        std::collections::BTreeSet::from(["orders-a".to_owned()])
    );
    // The control plane used list and watch, as a real client does.
    let (paths, _, _) = curl(&[&format!("http://{}/_test/requests", api.addr())]);
    assert!(
        paths.contains("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
            && paths.contains("watch=true")
            && paths.contains("labelSelector=kubernetes.io%2Fservice-name%3Dorders"),
        "{paths}"
    );
}

#[test]
fn injected_pods_annotations_become_sidecar_entries() {
    use remora_integration::peers::PyServer;
    let orders = Upstream::start("orders");
    let api = PyServer::start("kube_api.py", &[]);
    // The port the app will call, as `remora.io/upstreams` says, and the sidecar's inbound
    // port (free ones, so parallel tests never collide).
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    };
    let (port, listener) = (free(), free());
    let pod = serde_json::json!({
        "metadata": {
            "name": "web-5f7d9-abcde",
            "namespace": "shop",
            "creationTimestamp": "2026-12-04T07:00:00Z",
            "labels": { "remora.io/sidecar": "web", "app": "web" },
            "annotations": {
                "remora.io/upstreams": format!("orders:{port}, ghost:7009"),
                "remora.io/inbound-port": "8080",
                "remora.io/inbound-listener": listener.to_string(),
            },
        },
        "spec": { "containers": [{ "name": "web", "image": "registry.example/web:1" }] },
        "status": { "phase": "Running" },
    });
    kube_put(&api.addr(), &serde_json::json!({ "pods": [pod] }));
    let dir = mesh_dir(&format!(
        "services:\n  - {{ name: orders, endpoints: [{{ address: \"{}\" }}] }}\n",
        orders.addr
    ));
    let cp = ControlPlane::start_with(
        dir.path(),
        None,
        &["--kubernetes-api", &format!("http://{}", api.addr())],
    );
    // The model has no sidecar entry for web: it comes from the pod.
    let web = sidecar(&cp, "web-5f7d9-abcde", "web", &[]);
    eventually(
        "the outbound listener from the pod's annotation",
        WAIT,
        || {
            web.listeners()
                .get("outbound-orders")
                .filter(|a| a.port() == port)
                .map(|_| ())
        },
    );
    let (out, _, ok) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert!(ok && out.contains("orders"), "{out}");
    // The unknown upstream was dropped, and the inbound listener points at the app's port.
    let (_, config) = web.admin_get("/config");
    assert!(!config.contains("outbound-ghost"), "{config}");
    assert!(
        config.contains("127.0.0.1:8080") && config.contains(&format!("0.0.0.0:{listener}")),
        "{config}"
    );
}

/// On Kubernetes a pod's sidecar is not a ready endpoint before it has its certificate: the
/// control plane accepts its claim from the pod's address (labelled, not yet ready).
#[test]
fn a_pod_that_is_not_ready_yet_can_get_its_certificate() {
    use remora_integration::peers::PyServer;
    let pki = remora_integration::pki::Pki::new("mesh.local");
    let api = PyServer::start("kube_api.py", &[]);
    let pod = serde_json::json!({
        "metadata": {
            "name": "web-1", "namespace": "shop", "creationTimestamp": "2026-12-04T07:00:00Z",
            "labels": { "remora.io/sidecar": "web" },
        },
        "spec": { "containers": [{ "name": "web", "image": "registry.example/web:1" }] },
        "status": { "phase": "Pending", "podIP": "127.0.0.1" },
    });
    kube_put(&api.addr(), &serde_json::json!({ "pods": [pod] }));
    // The service's endpoints (from EndpointSlices) are empty: the pod is not ready.
    let dir = mesh_dir(
        "mtls: { trustDomain: mesh.local }\nservices:\n  - { name: web, kubernetes: { namespace: shop, service: web, port: http } }\nsidecars:\n  - { service: web }\n",
    );
    let ca = pki.root.display().to_string();
    let cp = ControlPlane::start_with(
        dir.path(),
        None,
        &[
            "--kubernetes-api",
            &format!("http://{}", api.addr()),
            "--ca",
            &ca,
        ],
    );
    let web = Remora::start_controlled(&cp.url(), "web-1", "web", None, &[], false);
    eventually("a certificate for the not-ready pod", WAIT, || {
        (web.metric_sum("remora_identity_updates_total", &["result=\"ok\""]) >= 1.0).then_some(())
    });
    web.wait_ready();
}
