use super::*;

fn review_fixture() -> Value {
    let text = include_str!("../../tests/fixtures/admission-review-pod.json");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture: {e}"))
}

fn settings(native: bool) -> Settings {
    Settings {
        image: "ghcr.io/remora-mesh/remora:0.1.0".into(),
        pull_policy: "IfNotPresent".into(),
        control_url: "http://remora-control.remora-system.svc:9090".into(),
        native_sidecar: native,
        inbound_port: 4143,
        admin_port: 9901,
        log_format: "json".into(),
        resources: json!({ "requests": { "cpu": "50m", "memory": "32Mi" }, "limits": { "memory": "256Mi" } }),
        scrape: true,
        label: "remora.io/inject".into(),
    }
}

/// The pod after the webhook's answer is applied, as the API server would.
fn apply(review: &Value, settings: &Settings) -> (Value, Outcome) {
    use base64::Engine as _;
    let body = serde_json::to_vec(review).unwrap_or_default();
    let (answer, outcome) = super::review(&body, settings).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
    let mut pod = review["request"]["object"].clone();
    if let Some(p) = answer["response"]["patch"].as_str() {
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(p)
            .unwrap_or_else(|e| panic!("{e}"));
        let patch: json_patch::Patch =
            serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{e}"));
        json_patch::patch(&mut pod, &patch)
            .unwrap_or_else(|e| panic!("the patch does not apply: {e}"));
    }
    (pod, outcome)
}

fn proxy(pod: &Value, list: &str) -> Vec<Value> {
    pod["spec"][list]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["name"] == CONTAINER)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn env(c: &Value, name: &str) -> Value {
    c["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_pod_gets_a_native_sidecar_once() {
    let review = review_fixture();
    let (pod, outcome) = apply(&review, &settings(true));
    assert!(matches!(outcome, Outcome::Injected(_)), "{outcome:?}");
    let sidecars = proxy(&pod, "initContainers");
    assert_eq!(sidecars.len(), 1);
    let c = &sidecars[0];
    assert_eq!(c["restartPolicy"], "Always");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(env(c, "REMORA_SERVICE")["value"], "orders");
    assert_eq!(
        env(c, "REMORA_NODE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(c, "REMORA_CONTROL")["value"],
        "http://remora-control.remora-system.svc:9090"
    );
    // Bad entries of the annotation are dropped, good ones kept.
    assert_eq!(
        env(c, "REMORA_UPSTREAMS")["value"],
        "payments:7002,users:7003"
    );
    // Annotations override resources only with valid quantities.
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(c["resources"]["requests"]["cpu"], "50m");
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(proxy(&pod, "containers").is_empty());
    assert_eq!(
        pod["spec"]["containers"][0]["name"], "orders",
        "the app is untouched"
    );
    assert_eq!(pod["metadata"]["annotations"][INJECTED], "true");
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9901");
    assert_eq!(
        pod["metadata"]["annotations"]["remora.io/inbound-listener"],
        "4143"
    );
    // The control plane finds injected pods by this label.
    assert_eq!(pod["metadata"]["labels"]["remora.io/sidecar"], "orders");
    assert_eq!(
        pod["metadata"]["labels"]["app"], "orders",
        "existing labels kept"
    );

    // Injecting the injected pod again changes nothing.
    let mut again = review;
    again["request"]["object"] = pod.clone();
    let (pod2, outcome) = apply(&again, &settings(true));
    assert_eq!(outcome, Outcome::Skipped("already-injected"));
    assert_eq!(pod2, pod);
}

#[test]
fn before_native_sidecars_the_proxy_is_the_first_container_with_a_wait_hook() {
    let (pod, _) = apply(&review_fixture(), &settings(false));
    assert_eq!(pod["spec"]["containers"][0]["name"], CONTAINER);
    assert_eq!(pod["spec"]["containers"][1]["name"], "orders");
    let hook = &pod["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"];
    assert_eq!(hook[0], "remora");
    assert_eq!(hook[1], "wait-ready");
    assert!(pod["spec"]["initContainers"].is_null());
}

#[test]
fn existing_init_containers_and_annotations_are_kept() {
    let mut review = review_fixture();
    review["request"]["object"]["spec"]["initContainers"] =
        json!([{ "name": "migrate", "image": "registry.example/shop/migrate:1" }]);
    review["request"]["object"]["metadata"]["annotations"]["prometheus.io/scrape"] = json!("false");
    let (pod, _) = apply(&review, &settings(true));
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec![CONTAINER, "migrate"], "the proxy starts first");
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "false"
    );
    assert!(pod["metadata"]["annotations"]["prometheus.io/port"].is_null());
}

#[test]
fn opted_out_host_network_and_other_objects_are_left_alone() {
    let mut opted = review_fixture();
    opted["request"]["object"]["metadata"]["labels"]["remora.io/inject"] = json!("disabled");
    assert_eq!(
        apply(&opted, &settings(true)).1,
        Outcome::Skipped("opted-out")
    );
    let mut host = review_fixture();
    host["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    assert_eq!(
        apply(&host, &settings(true)).1,
        Outcome::Skipped("host-network")
    );
    let mut update = review_fixture();
    update["request"]["operation"] = json!("UPDATE");
    assert_eq!(
        apply(&update, &settings(true)).1,
        Outcome::Skipped("not-a-pod")
    );
    let mut nameless = review_fixture();
    nameless["request"]["object"]["metadata"]["labels"] = json!({});
    nameless["request"]["object"]["spec"]["serviceAccountName"] = json!("default");
    assert_eq!(
        apply(&nameless, &settings(true)).1,
        Outcome::Skipped("no-service")
    );
}

#[test]
fn annotations_without_a_map_and_pointer_escaping() {
    let mut review = review_fixture();
    review["request"]["object"]["metadata"]
        .as_object_mut()
        .map(|m| m.remove("annotations"));
    let (pod, _) = apply(&review, &settings(true));
    assert_eq!(pod["metadata"]["annotations"][INJECTED], "true");
    let mut with = review_fixture();
    with["request"]["object"]["metadata"]["annotations"] = json!({ "x": "y" });
    let (pod, _) = apply(&with, &settings(true));
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/path"],
        "/metrics"
    );
    assert_eq!(pod["metadata"]["annotations"]["x"], "y");
}

#[test]
fn bad_reviews_are_errors_not_panics() {
    for body in [&b"not json"[..], b"{}", b"{\"request\": {}}", b"[]"] {
        assert!(super::review(body, &settings(true)).is_err());
    }
    assert_eq!(upstreams(""), vec![]);
    assert_eq!(
        upstreams("a:1,b:65536,c:x, d : 2"),
        vec![("a".into(), 1), ("d".into(), 2)]
    );
}
