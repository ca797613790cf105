use crate::load::from_yaml;
use crate::validate;

const GOOD: &str = r#"
admin: { address: "127.0.0.1:9901" }
listeners:
  - name: orders-out
    address: 127.0.0.1:7001
    protocol: HTTP
    routeTable: orders
  - name: db
    address: 127.0.0.1:7002
    protocol: TCP
    cluster: db
routeTables:
  - name: orders
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - name: api
            match: { pathPrefix: /api, methods: [GET], headers: [{ name: x-canary, exact: "1" }] }
            forward:
              weightedClusters: [{ name: orders, weight: 90 }, { name: db, weight: 10 }]
            timeout: 1.5s
          - name: health
            match: { pathExact: /healthz }
            directResponse: { status: 200, body: ok }
clusters:
  - name: orders
    endpoints: [{ address: "127.0.0.1:8081" }, { address: "127.0.0.1:8082", weight: 3 }]
    lbPolicy: RING_HASH
    ringHash: { header: x-user }
  - name: db
    endpoints: [{ address: "127.0.0.1:5432" }]
"#;

fn errors_of(yaml: &str) -> Vec<String> {
    let proto = from_yaml(yaml).expect("parses");
    match validate(&proto) {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn good_config_validates() {
    let proto = from_yaml(GOOD).expect("parses");
    let c = validate(&proto).expect("valid");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.clusters[0].endpoints[1].weight, 3);
    assert_eq!(
        c.route_tables[0].virtual_hosts[0].routes[0].timeout,
        Some(std::time::Duration::from_millis(1500))
    );
}

#[test]
fn defaults_match_the_documentation() {
    let c = validate(&from_yaml(GOOD).expect("parses")).expect("valid");
    let db = &c.listeners[1];
    assert_eq!(
        db.detect_timeout,
        std::time::Duration::from_secs(1),
        "AUTO detection gives up after 1 s by default"
    );
    assert_eq!(c.admin, "127.0.0.1:9901".parse().expect("addr"));
    assert_eq!(c.drain_timeout, std::time::Duration::from_secs(10));
    let db_cluster = &c.clusters[1];
    assert_eq!(
        db_cluster.connect_timeout,
        std::time::Duration::from_secs(1)
    );
    assert_eq!(db_cluster.idle_timeout, std::time::Duration::from_secs(60));
    assert_eq!(db_cluster.max_idle_per_endpoint, 64);
    assert_eq!(db_cluster.endpoints[0].weight, 1);
}

#[test]
fn round_trips_through_canonical_json() {
    let proto = from_yaml(GOOD).expect("parses");
    let json = serde_json::to_string(&proto).expect("serializes");
    assert!(json.contains("\"pathPrefix\":\"/api\""), "{json}");
    assert!(json.contains("\"lbPolicy\":\"RING_HASH\""), "{json}");
    let back = from_yaml(&json).expect("json is yaml");
    assert_eq!(back, proto);
}

#[test]
fn invalid_address_names_cluster_and_field() {
    let errs = errors_of(
        "clusters:\n  - name: orders\n    endpoints: [{address: \"10.0.0.1:1\"}, {address: \"10.0.0.2:1\"}, {address: \"10.0.0.1:99999\"}]\n",
    );
    assert_eq!(
        errs,
        vec![
            r#"cluster "orders": endpoints[2].address: invalid socket address "10.0.0.1:99999" (expected "IP:PORT")"#
        ]
    );
}

#[test]
fn unknown_field_is_a_syntax_error_with_position() {
    let err = from_yaml("clusters:\n  - name: a\n    endpionts: []\n").expect_err("unknown field");
    let msg = err.to_string();
    assert!(msg.contains("endpionts"), "{msg}");
    assert!(msg.contains("line 3") || msg.contains("3:"), "{msg}");
}

#[test]
fn malformed_yaml_is_an_error() {
    assert!(from_yaml("listeners: [ {name: a\n").is_err());
    assert!(from_yaml("clusters:\n  - name: a\n    lbPolicy: FASTEST\n").is_err());
}

#[test]
fn bad_regex_is_reported() {
    let errs = errors_of(
        "routeTables:\n  - name: t\n    virtualHosts:\n      - name: v\n        domains: ['*']\n        routes:\n          - name: r\n            match: { pathRegex: '/(unclosed' }\n            directResponse: { status: 200 }\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            r#"routeTable "t": virtualHosts[0].routes[0].match.pathRegex: invalid regex"#
        ),
        "{errs:?}"
    );
}

#[test]
fn zero_weight_split_is_rejected() {
    let errs = errors_of(
        "clusters: [{name: a}, {name: b}]\nrouteTables:\n  - name: t\n    virtualHosts:\n      - name: v\n        domains: ['*']\n        routes:\n          - name: r\n            forward: { weightedClusters: [{name: a, weight: 0}, {name: b}] }\n",
    );
    assert_eq!(
        errs,
        vec![
            r#"routeTable "t": virtualHosts[0].routes[0].forward.weightedClusters: weights sum to zero; at least one must be positive"#
        ]
    );
}

#[test]
fn duplicates_and_dangling_references_are_all_reported() {
    let errs = errors_of(
        "listeners:\n  - {name: l, address: '127.0.0.1:1', protocol: TCP, cluster: nope}\n  - {name: l, address: '127.0.0.1:1', protocol: HTTP, routeTable: missing}\nclusters: [{name: c}, {name: c}]\n",
    );
    let joined = errs.join("\n");
    for needle in [
        r#"listener "l": name: duplicate listener name "l""#,
        r#"cluster "c": name: duplicate cluster name "c""#,
        r#"listener "l": cluster: unknown cluster "nope""#,
        r#"listener "l": routeTable: unknown route table "missing""#,
        r#"listener "l": address: 127.0.0.1:1 is already used by listener "l""#,
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn listener_protocol_requirements() {
    let errs = errors_of(
        "listeners:\n  - {name: a, address: '127.0.0.1:1'}\n  - {name: b, address: '127.0.0.1:2', protocol: AUTO}\n",
    );
    let joined = errs.join("\n");
    assert!(
        joined.contains(r#"listener "a": protocol: required: one of TCP, HTTP, AUTO"#),
        "{joined}"
    );
    assert!(
        joined.contains(r#"listener "b": routeTable: required for HTTP and AUTO listeners"#),
        "{joined}"
    );
    assert!(
        joined.contains(r#"listener "b": cluster: required for TCP and AUTO listeners"#),
        "{joined}"
    );
}

const RESILIENT: &str = r#"
listeners:
  - { name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: t }
routeTables:
  - name: t
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            forward: { cluster: c }
            timeout: 5s
            retry:
              retryOn: [5xx, reset, retriable-status-codes, unavailable]
              retriableStatusCodes: [409]
              maxRetries: 3
              perTryTimeout: 0.5s
              backoffBase: 0.01s
              backoffMax: 1s
              retryNonIdempotent: true
              maxBodyBytes: 1024
            hedge: { delay: 0.02s }
clusters:
  - name: c
    endpoints: [{ address: "127.0.0.1:8081" }]
    circuitBreakers: { maxConnections: 10, maxPendingRequests: 5, maxRequests: 50, maxRetries: 2 }
    retryBudget: { ratio: 0.5, minRetriesPerSecond: 3, window: 5s }
    outlierDetection:
      consecutive5xx: 7
      consecutiveGatewayErrors: 0
      successRateThreshold: 0.9
      successRateMinRequests: 20
      interval: 2s
      baseEjectionTime: 10s
      maxEjectionTime: 60s
      maxEjectionPercent: 30
    healthCheck: { httpPath: /health, interval: 2s, timeout: 0.5s, healthyThreshold: 1, unhealthyThreshold: 4 }
"#;

#[test]
fn resilience_settings_validate_with_their_values() {
    use crate::resilience::HealthCheckKind;
    use std::time::Duration;
    let c = validate(&from_yaml(RESILIENT).expect("parses")).expect("valid");
    let route = &c.route_tables[0].virtual_hosts[0].routes[0];
    let retry = route.retry.as_deref().expect("retry");
    assert!(retry.retry_on.status_5xx && retry.retry_on.reset && retry.retry_on.grpc_unavailable);
    assert!(!retry.retry_on.gateway_error && !retry.retry_on.connect_failure);
    assert_eq!(retry.retriable_status_codes, [409]);
    assert_eq!(retry.max_retries, 3);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_millis(500)));
    assert_eq!(retry.backoff_base, Duration::from_millis(10));
    assert_eq!(retry.backoff_max, Duration::from_secs(1));
    assert!(retry.retry_non_idempotent);
    assert_eq!(retry.max_body_bytes, 1024);
    assert_eq!(
        route.hedge.and_then(|h| h.delay),
        Some(Duration::from_millis(20))
    );
    let r = &c.clusters[0].resilience;
    assert_eq!(
        (r.breakers.max_connections, r.breakers.max_pending_requests),
        (10, 5)
    );
    assert_eq!((r.breakers.max_requests, r.breakers.max_retries), (50, 2));
    assert_eq!(r.budget.ratio, 0.5);
    assert_eq!(r.budget.min_retries_per_second, 3);
    assert_eq!(r.budget.window, Duration::from_secs(5));
    let o = r.outlier.expect("outlier");
    assert_eq!((o.consecutive_5xx, o.consecutive_gateway_errors), (7, 0));
    assert_eq!(o.success_rate_threshold, Some(0.9));
    assert_eq!(o.success_rate_min_requests, 20);
    assert_eq!(o.interval, Duration::from_secs(2));
    assert_eq!(o.base_ejection_time, Duration::from_secs(10));
    assert_eq!(o.max_ejection_time, Duration::from_secs(60));
    assert_eq!(o.max_ejection_percent, 30);
    let h = r.health_check.as_ref().expect("health check");
    assert_eq!(
        h.kind,
        HealthCheckKind::Http {
            path: "/health".into()
        }
    );
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (1, 4));
}

#[test]
fn resilience_defaults_are_safe() {
    use crate::resilience::*;
    let c = validate(&from_yaml(GOOD).expect("parses")).expect("valid");
    let r = &c.clusters[0].resilience;
    assert_eq!(r.breakers, CircuitBreakers::default());
    assert_eq!(r.breakers.max_requests, 1024);
    assert_eq!(r.budget.ratio, 0.2);
    assert_eq!(r.budget.min_retries_per_second, 10);
    let o = r.outlier.expect("outlier detection is on by default");
    assert_eq!(o.consecutive_5xx, 5);
    assert_eq!(o.base_ejection_time, std::time::Duration::from_secs(30));
    assert!(r.health_check.is_none());
    let route = &c.route_tables[0].virtual_hosts[0].routes[0];
    assert!(route.retry.is_none() && route.hedge.is_none());
    // An empty retry policy: the documented default conditions and backoff.
    let minimal = GOOD.replace("timeout: 1.5s", "timeout: 1.5s\n            retry: {}");
    let c = validate(&from_yaml(&minimal).expect("parses")).expect("valid");
    let retry = c.route_tables[0].virtual_hosts[0].routes[0]
        .retry
        .clone()
        .expect("retry");
    assert_eq!(retry.retry_on, RetryOn::DEFAULT);
    assert_eq!(retry.max_retries, 2);
    assert_eq!(retry.backoff_base, std::time::Duration::from_millis(25));
    assert_eq!(retry.backoff_max, std::time::Duration::from_millis(250));
    assert_eq!(retry.max_body_bytes, 65536);
    assert!(!retry.retry_non_idempotent);
    let off = GOOD.replace(
        "    ringHash: { header: x-user }",
        "    ringHash: { header: x-user }\n    outlierDetection: { enabled: false }",
    );
    let c = validate(&from_yaml(&off).expect("parses")).expect("valid");
    assert!(c.clusters[0].resilience.outlier.is_none());
}

#[test]
fn bad_resilience_settings_name_their_fields() {
    let bad = RESILIENT
        .replace(
            "retryOn: [5xx, reset, retriable-status-codes, unavailable]",
            "retryOn: [5xx, sometimes]",
        )
        .replace("maxRetries: 3", "maxRetries: 11")
        .replace("backoffMax: 1s", "backoffMax: 0.001s")
        .replace(
            "retriableStatusCodes: [409]",
            "retriableStatusCodes: [409, 700]",
        )
        .replace("maxRequests: 50", "maxRequests: 0")
        .replace("ratio: 0.5", "ratio: -1")
        .replace("window: 5s", "window: 120s")
        .replace("successRateThreshold: 0.9", "successRateThreshold: 1.5")
        .replace("maxEjectionPercent: 30", "maxEjectionPercent: 101")
        .replace("maxEjectionTime: 60s", "maxEjectionTime: 1s")
        .replace("httpPath: /health", "httpPath: health")
        .replace("perTryTimeout: 0.5s", "perTryTimeout: 0s");
    let errors = errors_of(&bad);
    let expect = [
        "routeTable \"t\": virtualHosts[0].routes[0].retry.retryOn[1]: unknown condition \"sometimes\"",
        "retry.maxRetries: must be between 0 and 10",
        "retry.backoffMax: must be at least backoffBase",
        "retry.retriableStatusCodes[1]: 700 is not an HTTP status code",
        "retry.retriableStatusCodes: only used when retryOn has \"retriable-status-codes\"",
        "retry.perTryTimeout: must be greater than zero",
        "cluster \"c\": circuitBreakers.maxRequests: must be between 1 and 1000000",
        "cluster \"c\": retryBudget.ratio: must be between 0 and 10",
        "cluster \"c\": retryBudget.window: must be between 1s and 60s",
        "cluster \"c\": outlierDetection.successRateThreshold: must be between 0 and 1",
        "cluster \"c\": outlierDetection.maxEjectionPercent: must be between 0 and 100",
        "cluster \"c\": outlierDetection.maxEjectionTime: must be at least baseEjectionTime",
        "cluster \"c\": healthCheck.httpPath: invalid path \"health\"",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.contains(e)),
            "missing {e:?} in:\n{}",
            errors.join("\n")
        );
    }
    // Retries and hedging only make sense where a request is forwarded.
    let direct = GOOD.replace(
        "directResponse: { status: 200, body: ok }",
        "directResponse: { status: 200, body: ok }\n            retry: {}",
    );
    let errors = errors_of(&direct);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("retry: only applies to routes that forward")),
        "{errors:?}"
    );
    let empty_hc = RESILIENT.replace(
        "healthCheck: { httpPath: /health, interval: 2s, timeout: 0.5s, healthyThreshold: 1, unhealthyThreshold: 4 }",
        "healthCheck: { interval: 2s }",
    );
    assert!(
        errors_of(&empty_hc)
            .iter()
            .any(|e| e.contains("set `httpPath: /PATH` or `tcp: true`"))
    );
}

// --- identity, TLS and authorization -------------------------------------------------------

/// A TCP listener in front of one cluster; `LISTENER_TLS`, `CLUSTER_TLS` and `IDENTITY` are
/// replaced by each test.
const TLS_BASE: &str = r#"
IDENTITY
listeners:
  - name: in
    address: 127.0.0.1:7001
    protocol: TCP
    cluster: app
    LISTENER_TLS
clusters:
  - name: app
    endpoints: [{ address: "127.0.0.1:8080" }]
    CLUSTER_TLS
"#;

const FILES_IDENTITY: &str = "identity: { trustDomain: mesh.local, files: { certFile: c.pem, keyFile: k.pem, bundleFile: b.pem } }";

fn tls_config(identity: &str, listener_tls: &str, cluster_tls: &str) -> String {
    TLS_BASE
        .replace("IDENTITY", identity)
        .replace("LISTENER_TLS", listener_tls)
        .replace("CLUSTER_TLS", cluster_tls)
}

#[test]
fn mesh_tls_without_identity_is_rejected_for_listeners_and_clusters() {
    for mode in ["STRICT", "PERMISSIVE"] {
        let errs = errors_of(&tls_config("", &format!("tls: {{ mode: {mode} }}"), ""));
        assert_eq!(
            errs,
            vec![
                r#"listener "in": tls.mode: mesh mTLS needs the proxy's identity: set top-level `identity` (files or controlPlane)"#
            ],
            "mode {mode}"
        );
    }
    let errs = errors_of(&tls_config("", "", "tls: { mode: MESH }"));
    assert_eq!(
        errs,
        vec![
            r#"cluster "app": tls.mode: MESH needs the proxy's identity: set top-level `identity` (files or controlPlane)"#
        ]
    );
    // With an identity both are accepted; without TLS (or DISABLED, PLAINTEXT) none is needed.
    let c = validate(
        &from_yaml(&tls_config(
            FILES_IDENTITY,
            "tls: { mode: STRICT }",
            "tls: { mode: MESH }",
        ))
        .expect("parses"),
    )
    .expect("valid");
    assert_eq!(
        c.listeners[0].tls.as_ref().map(|t| t.mode),
        Some(crate::tls::TlsMode::Strict)
    );
    assert_eq!(
        c.clusters[0].tls,
        Some(crate::tls::ClusterTls::Mesh { identity: None })
    );
    let c = validate(
        &from_yaml(&tls_config(
            "",
            "tls: { mode: DISABLED }",
            "tls: { mode: PLAINTEXT }",
        ))
        .expect("parses"),
    )
    .expect("valid");
    assert!(c.identity.is_none());
    assert!(c.listeners[0].tls.is_none());
    assert!(c.clusters[0].tls.is_none());
}

#[test]
fn identity_needs_a_source_a_valid_trust_domain_and_every_file() {
    for source in ["", ", controlPlane: false"] {
        let errs = errors_of(&format!("identity: {{ trustDomain: mesh.local{source} }}"));
        assert_eq!(
            errs,
            vec![
                "config: identity: set `files: {certFile, keyFile, bundleFile}` or `controlPlane: true`"
            ],
            "source {source:?}"
        );
    }
    let errs = errors_of("identity: { trustDomain: Mesh.Local, controlPlane: true }");
    assert_eq!(
        errs,
        vec![
            r#"config: identity.trustDomain: invalid trust domain "Mesh.Local": use lower-case letters, digits, '.', '-' and '_'"#
        ]
    );
    let errs = errors_of("identity: { controlPlane: true }");
    assert_eq!(
        errs,
        vec![r#"config: identity.trustDomain: required, e.g. "mesh.local""#]
    );
    let errs = errors_of(
        "identity: { trustDomain: mesh.local, files: { certFile: c.pem, bundleFile: b.pem } }",
    );
    assert_eq!(errs, vec!["config: identity.files.keyFile: required"]);
    let errs = errors_of("identity: { trustDomain: mesh.local, files: {} }");
    assert_eq!(
        errs,
        vec![
            "config: identity.files.certFile: required",
            "config: identity.files.keyFile: required",
            "config: identity.files.bundleFile: required",
        ]
    );
}

#[test]
fn control_plane_identity_uses_the_default_expiry_warning() {
    let c = validate(
        &from_yaml("identity: { trustDomain: mesh.local, controlPlane: true }").expect("parses"),
    )
    .expect("valid");
    assert_eq!(
        c.identity,
        Some(crate::tls::Identity {
            trust_domain: "mesh.local".into(),
            source: crate::tls::IdentitySource::ControlPlane,
            expiry_warning: std::time::Duration::from_secs(24 * 3600),
        })
    );
}

#[test]
fn external_cluster_tls_needs_one_sni_and_a_whole_client_certificate() {
    let errs = errors_of(&tls_config("", "", "tls: { mode: EXTERNAL }"));
    assert_eq!(
        errs,
        vec![
            r#"cluster "app": tls.sni: required with tls.mode EXTERNAL (the name the server's certificate is for)"#
        ]
    );
    let errs = errors_of(&tls_config(
        "",
        "",
        "tls: { mode: EXTERNAL, sni: '*.example.com' }",
    ));
    assert_eq!(
        errs,
        vec![r#"cluster "app": tls.sni: must be one name, not a wildcard"#]
    );
    let errs = errors_of(&tls_config(
        "",
        "",
        "tls: { mode: EXTERNAL, sni: 'a b.com' }",
    ));
    assert_eq!(
        errs,
        vec![
            r#"cluster "app": tls.sni: invalid server name "a b.com" (a DNS name, or "*." and a DNS name)"#
        ]
    );
    for half in ["certFile: c.pem", "keyFile: k.pem"] {
        let errs = errors_of(&tls_config(
            "",
            "",
            &format!("tls: {{ mode: EXTERNAL, sni: api.example.com, {half} }}"),
        ));
        assert_eq!(
            errs,
            vec![r#"cluster "app": tls.certFile: certFile and keyFile go together"#],
            "{half}"
        );
    }
    let errs = errors_of(&tls_config(
        "",
        "",
        "tls: { mode: EXTERNAL, sni: api.example.com, identity: 'spiffe://mesh.local/x' }",
    ));
    assert_eq!(
        errs,
        vec![r#"cluster "app": tls.identity: only used with tls.mode MESH"#]
    );
    // A good one: the name lower-cased, files kept, no identity needed.
    let c = validate(
        &from_yaml(&tls_config(
            "",
            "",
            "tls: { mode: EXTERNAL, sni: API.Example.com, bundleFile: ca.pem, certFile: c.pem, keyFile: k.pem }",
        ))
        .expect("parses"),
    )
    .expect("valid");
    assert_eq!(
        c.clusters[0].tls,
        Some(crate::tls::ClusterTls::External {
            sni: "api.example.com".into(),
            bundle_file: Some("ca.pem".into()),
            client_cert: Some(("c.pem".into(), "k.pem".into())),
        })
    );
    let c = validate(
        &from_yaml(&tls_config(
            "",
            "",
            "tls: { mode: EXTERNAL, sni: api.example.com }",
        ))
        .expect("parses"),
    )
    .expect("valid");
    assert_eq!(
        c.clusters[0].tls,
        Some(crate::tls::ClusterTls::External {
            sni: "api.example.com".into(),
            bundle_file: None,
            client_cert: None,
        }),
        "no bundle: the system's roots; no client certificate"
    );
}

#[test]
fn mesh_cluster_tls_takes_only_spiffe_identities() {
    for (field, value) in [
        ("sni", "api.example.com"),
        ("bundleFile", "ca.pem"),
        ("certFile", "c.pem"),
        ("keyFile", "k.pem"),
    ] {
        let errs = errors_of(&tls_config(
            FILES_IDENTITY,
            "",
            &format!("tls: {{ mode: MESH, {field}: {value} }}"),
        ));
        assert_eq!(
            errs,
            vec![format!(
                r#"cluster "app": tls.{field}: only used with tls.mode EXTERNAL"#
            )]
        );
    }
    let errs = errors_of(&tls_config(
        FILES_IDENTITY,
        "",
        "tls: { mode: MESH, identity: orders }",
    ));
    assert_eq!(
        errs,
        vec![
            r#"cluster "app": tls.identity: "orders" is not a SPIFFE id (spiffe://TRUST_DOMAIN/PATH)"#
        ]
    );
    let errs = errors_of(&tls_config(
        FILES_IDENTITY,
        "",
        "tls: { mode: MESH, identity: 'spiffe://mesh.local' }",
    ));
    assert_eq!(
        errs,
        vec![
            r#"cluster "app": tls.identity: "spiffe://mesh.local" is not a SPIFFE id (spiffe://TRUST_DOMAIN/PATH)"#
        ]
    );
    let errs = errors_of(&format!(
        "{FILES_IDENTITY}\nclusters:\n  - name: app\n    endpoints: [{{ address: '127.0.0.1:8080', identity: orders }}, {{ address: '127.0.0.1:8081', identity: 'spiffe://Mesh/x' }}]\n    tls: {{ mode: MESH }}\n"
    ));
    assert_eq!(
        errs,
        vec![
            r#"cluster "app": endpoints[0].identity: "orders" is not a SPIFFE id (spiffe://TRUST_DOMAIN/PATH)"#,
            r#"cluster "app": endpoints[1].identity: invalid trust domain "Mesh": use lower-case letters, digits, '.', '-' and '_'"#,
        ]
    );
}

#[test]
fn terminate_needs_certificates_with_valid_names_and_forwards_no_identity() {
    let errs = errors_of(&tls_config("", "tls: { mode: TERMINATE }", ""));
    assert_eq!(
        errs,
        vec![r#"listener "in": tls.certificates: required when tls.mode is TERMINATE"#]
    );
    let errs = errors_of(&tls_config(
        "",
        "tls: { mode: TERMINATE, certificates: [{ serverNames: ['a b.com'], certFile: c.pem, keyFile: k.pem }] }",
        "",
    ));
    assert_eq!(
        errs,
        vec![
            r#"listener "in": tls.certificates[0].serverNames[0]: invalid server name "a b.com" (a DNS name, or "*." and a DNS name)"#
        ]
    );
    let errs = errors_of(&tls_config(
        "",
        "tls: { mode: TERMINATE, certificates: [{ serverNames: [shop.example.com] }] }",
        "",
    ));
    assert_eq!(
        errs,
        vec![
            r#"listener "in": tls.certificates[0].certFile: required"#,
            r#"listener "in": tls.certificates[0].keyFile: required"#,
        ]
    );
    let errs = errors_of(&tls_config(
        "",
        "tls: { mode: TERMINATE, forwardPeerIdentity: true, certificates: [{ serverNames: [shop.example.com], certFile: c.pem, keyFile: k.pem }] }",
        "",
    ));
    assert_eq!(
        errs,
        vec![
            r#"listener "in": tls.forwardPeerIdentity: TERMINATE asks no client certificate, so there is no identity to forward"#
        ]
    );
    let errs = errors_of(&tls_config(
        FILES_IDENTITY,
        "tls: { mode: STRICT, certificates: [{ serverNames: [shop.example.com], certFile: c.pem, keyFile: k.pem }] }",
        "",
    ));
    assert_eq!(
        errs,
        vec![
            r#"listener "in": tls.certificates: only used with tls.mode TERMINATE (mesh mTLS uses the proxy's identity)"#
        ]
    );
    // A good one needs no identity; names are lower-cased, wildcards kept, order kept.
    let c = validate(
        &from_yaml(&tls_config(
            "",
            "tls: { mode: TERMINATE, certificates: [{ serverNames: [Shop.Example.com, '*.example.com'], certFile: c.pem, keyFile: k.pem }, { serverNames: [other.org], certFile: o.pem, keyFile: ok.pem }] }",
            "",
        ))
        .expect("parses"),
    )
    .expect("valid");
    assert_eq!(
        c.listeners[0].tls,
        Some(crate::tls::ListenerTls {
            mode: crate::tls::TlsMode::Terminate,
            forward_peer_identity: false,
            certificates: vec![
                crate::tls::ServerCertificate {
                    server_names: vec!["shop.example.com".into(), "*.example.com".into()],
                    cert_file: "c.pem".into(),
                    key_file: "k.pem".into(),
                },
                crate::tls::ServerCertificate {
                    server_names: vec!["other.org".into()],
                    cert_file: "o.pem".into(),
                    key_file: "ok.pem".into(),
                },
            ],
        })
    );
}

const MESH_TLS: &str = r#"
identity:
  trustDomain: mesh.local
  files: { certFile: /etc/remora/cert.pem, keyFile: /etc/remora/key.pem, bundleFile: /etc/remora/bundle.pem }
  expiryWarning: 3600s
listeners:
  - name: inbound
    address: 0.0.0.0:4143
    direction: INBOUND
    protocol: HTTP
    routeTable: inbound
    tls: { mode: STRICT, forwardPeerIdentity: true }
    authorization:
      dryRun: true
      policies:
        - name: deny-legacy
          action: DENY
          rules: [{ identities: ["spiffe://mesh.local/ns/legacy/*"] }]
        - name: allow-web
          rules:
            - identities: ["spiffe://mesh.local/ns/default/sa/web"]
              sourceNetworks: ["10.1.2.3/8", "::1"]
              paths: ["/api/*", /healthz]
              methods: [get, POST]
        - name: any-mesh
          action: ALLOW
          rules: [{ identities: ["*"] }]
routeTables:
  - name: inbound
    virtualHosts:
      - name: all
        domains: ["*"]
        routes: [{ name: r, forward: { cluster: orders } }]
clusters:
  - name: orders
    endpoints:
      - { address: "10.0.1.1:80", identity: "spiffe://mesh.local/ns/default/sa/orders-canary" }
      - { address: "10.0.1.2:80" }
    tls: { mode: MESH, identity: "spiffe://mesh.local/ns/default/sa/orders" }
"#;

#[test]
fn a_mesh_tls_config_validates_with_its_values() {
    use crate::authz::{Action, IdentityPattern, PathPattern};
    use crate::tls::{ClusterTls, Identity, IdentitySource, ListenerTls, TlsMode};
    let c = validate(&from_yaml(MESH_TLS).expect("parses")).expect("valid");
    assert_eq!(
        c.identity,
        Some(Identity {
            trust_domain: "mesh.local".into(),
            source: IdentitySource::Files {
                cert_file: "/etc/remora/cert.pem".into(),
                key_file: "/etc/remora/key.pem".into(),
                bundle_file: "/etc/remora/bundle.pem".into(),
            },
            expiry_warning: std::time::Duration::from_secs(3600),
        })
    );
    let l = &c.listeners[0];
    assert_eq!(
        l.tls,
        Some(ListenerTls {
            mode: TlsMode::Strict,
            forward_peer_identity: true,
            certificates: vec![],
        })
    );
    assert!(l.tls.as_ref().is_some_and(|t| t.mode.is_mesh()));

    let a = l.authorization.as_ref().expect("authorization");
    assert!(a.dry_run);
    assert_eq!(
        a.policies
            .iter()
            .map(|p| (&*p.name, p.action))
            .collect::<Vec<_>>(),
        vec![
            ("deny-legacy", Action::Deny),
            ("allow-web", Action::Allow),
            ("any-mesh", Action::Allow),
        ]
    );
    assert_eq!(
        a.policies[0].rules[0].identities,
        vec![IdentityPattern::Prefix(
            "spiffe://mesh.local/ns/legacy/".into()
        )]
    );
    let rule = &a.policies[1].rules[0];
    assert_eq!(
        rule.identities,
        vec![IdentityPattern::Exact(
            "spiffe://mesh.local/ns/default/sa/web".into()
        )]
    );
    assert_eq!(
        rule.source_networks,
        vec![
            "10.0.0.0/8".parse::<ipnet::IpNet>().expect("net"),
            "::1/128".parse().expect("net"),
        ],
        "networks are truncated to their prefix; a bare address is a host"
    );
    assert_eq!(
        rule.paths,
        vec![
            PathPattern::Prefix("/api/".into()),
            PathPattern::Exact("/healthz".into())
        ]
    );
    assert_eq!(rule.methods, vec![http::Method::GET, http::Method::POST]);
    assert_eq!(
        a.policies[2].rules[0].identities,
        vec![IdentityPattern::Any]
    );

    let orders = &c.clusters[0];
    assert_eq!(
        orders.tls,
        Some(ClusterTls::Mesh {
            identity: Some("spiffe://mesh.local/ns/default/sa/orders".into())
        })
    );
    assert_eq!(
        orders.endpoints[0].identity.as_deref(),
        Some("spiffe://mesh.local/ns/default/sa/orders-canary")
    );
    assert_eq!(orders.endpoints[1].identity, None);

    // Not a dry run unless asked.
    let enforcing = MESH_TLS.replace("dryRun: true", "dryRun: false");
    let c = validate(&from_yaml(&enforcing).expect("parses")).expect("valid");
    assert!(
        !c.listeners[0]
            .authorization
            .as_ref()
            .expect("authorization")
            .dry_run
    );
}

#[test]
fn bad_authorization_rules_name_their_fields() {
    let bad = MESH_TLS
        .replace(
            r#""spiffe://mesh.local/ns/legacy/*""#,
            r#""spiffe://mesh.local/ns/leg*""#,
        )
        .replace("name: any-mesh", "name: allow-web")
        .replace(r#""10.1.2.3/8""#, r#""10.1.2.3/33""#)
        .replace("/healthz]", "healthz]")
        .replace("[get, POST]", "[get, 'PO ST']");
    let errs = errors_of(&bad);
    let at = r#"listener "inbound": authorization.policies"#;
    for want in [
        format!(
            r#"{at}[0].rules[0].identities[0]: "spiffe://mesh.local/ns/leg*": a wildcard must be a whole last segment"#
        ),
        format!(r#"{at}[1].rules[0].sourceNetworks[0]: invalid network "10.1.2.3/33""#),
        format!(r#"{at}[1].rules[0].paths[1]: "healthz" must start with '/'"#),
        format!(r#"{at}[1].rules[0].methods[1]: invalid method "PO ST""#),
        format!(r#"{at}[2].name: duplicate policy "allow-web""#),
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(&want)),
            "missing {want:?} in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(errs.len(), 5, "{errs:#?}");
}

// --- rate limits, fault injection and connection limits ------------------------------------

/// A route with two rate limits and a fault, and listeners with and without connection
/// limits; the tests below change one thing at a time.
const LIMITS: &str = r#"
listeners:
  - name: out
    address: 127.0.0.1:7001
    protocol: HTTP
    routeTable: t
    connectionLimits: { perSecond: 100, maxConnections: 1000, maxConnectionsPerClient: 10 }
  - name: zero
    address: 127.0.0.1:7002
    protocol: HTTP
    routeTable: t
    connectionLimits: { perSecond: 0, maxConnections: 0, maxConnectionsPerClient: 0 }
  - name: plain
    address: 127.0.0.1:7003
    protocol: HTTP
    routeTable: t
routeTables:
  - name: t
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            forward: { cluster: c }
            rateLimits:
              - { name: per-user, requests: 100, interval: 60s, burst: 150, header: x-user, maxKeys: 500, shadow: true }
              - { name: global, requests: 20 }
            fault:
              abort: { percent: 12.5, httpStatus: 503, grpcStatus: 14 }
              delay: { percent: 50, fixedDelay: 0.2s }
              allowHeaderFaults: true
clusters:
  - name: c
    endpoints: [{ address: "127.0.0.1:8081" }]
"#;

#[test]
fn rate_limits_and_faults_validate_with_their_values() {
    use crate::limits::{Fault, FaultAbort, FaultDelay, LimitKey, RateLimit};
    use std::time::Duration;
    let c = validate(&from_yaml(LIMITS).expect("parses")).expect("valid");
    let route = &c.route_tables[0].virtual_hosts[0].routes[0];
    assert_eq!(
        route.rate_limits,
        vec![
            RateLimit {
                name: "per-user".into(),
                requests: 100,
                interval: Duration::from_secs(60),
                burst: 150,
                key: LimitKey::Header(http::HeaderName::from_static("x-user")),
                max_keys: 500,
                shadow: true,
                mesh_wide: false,
            },
            RateLimit {
                name: "global".into(),
                requests: 20,
                interval: Duration::from_secs(1),
                burst: 20,
                key: LimitKey::Route,
                max_keys: 10_000,
                shadow: false,
                mesh_wide: false,
            },
        ],
        "unset: interval 1s, burst = requests, one bucket for the route, 10000 keys"
    );
    assert_eq!(
        route.fault,
        Some(Fault {
            abort: Some(FaultAbort {
                percent: 12.5,
                http_status: http::StatusCode::SERVICE_UNAVAILABLE,
                grpc_status: Some(14),
            }),
            delay: Some(FaultDelay {
                percent: 50.0,
                delay: Duration::from_millis(200),
            }),
            allow_header_faults: true,
        })
    );
    // A route without any has none.
    let good = validate(&from_yaml(GOOD).expect("parses")).expect("valid");
    let plain = &good.route_tables[0].virtual_hosts[0].routes[0];
    assert!(plain.rate_limits.is_empty() && plain.fault.is_none());
}

#[test]
fn rate_limit_keys_and_mesh_wide_are_read() {
    use crate::limits::LimitKey;
    let keyed = LIMITS
        .replace(
            "header: x-user, maxKeys: 500, shadow: true",
            "clientAddress: true",
        )
        .replace(
            "{ name: global, requests: 20 }",
            "{ name: global, requests: 20, peerIdentity: true, meshWide: true }",
        );
    let c = validate(&from_yaml(&keyed).expect("parses")).expect("valid");
    let limits = &c.route_tables[0].virtual_hosts[0].routes[0].rate_limits;
    assert_eq!(
        limits
            .iter()
            .map(|l| (&*l.name, l.key.clone(), l.max_keys, l.shadow, l.mesh_wide))
            .collect::<Vec<_>>(),
        vec![
            ("per-user", LimitKey::ClientAddress, 10_000, false, false),
            ("global", LimitKey::PeerIdentity, 10_000, false, true),
        ]
    );
    // The bounds of maxKeys are accepted.
    for max in [1, 1_000_000] {
        let edge = LIMITS.replace("maxKeys: 500", &format!("maxKeys: {max}"));
        let c = validate(&from_yaml(&edge).expect("parses")).expect("valid");
        assert_eq!(
            c.route_tables[0].virtual_hosts[0].routes[0].rate_limits[0].max_keys,
            max
        );
    }
}

#[test]
fn a_fault_may_abort_or_delay_alone() {
    use std::time::Duration;
    let abort_only = LIMITS.replace(
        "              delay: { percent: 50, fixedDelay: 0.2s }\n",
        "",
    );
    assert_ne!(abort_only, LIMITS);
    let c = validate(&from_yaml(&abort_only).expect("parses")).expect("valid");
    let fault = c.route_tables[0].virtual_hosts[0].routes[0]
        .fault
        .clone()
        .expect("fault");
    assert!(fault.delay.is_none());
    assert_eq!(fault.abort.map(|a| a.http_status.as_u16()), Some(503));

    let delay_only = LIMITS.replace(
        "              abort: { percent: 12.5, httpStatus: 503, grpcStatus: 14 }\n",
        "",
    );
    assert_ne!(delay_only, LIMITS);
    let c = validate(&from_yaml(&delay_only).expect("parses")).expect("valid");
    let fault = c.route_tables[0].virtual_hosts[0].routes[0]
        .fault
        .clone()
        .expect("fault");
    assert!(fault.abort.is_none());
    assert_eq!(
        fault.delay.map(|d| (d.percent, d.delay)),
        Some((50.0, Duration::from_millis(200)))
    );
}

#[test]
fn bad_rate_limits_name_their_fields() {
    let at = r#"routeTable "t": virtualHosts[0].routes[0].rateLimits"#;
    for (from, to, want) in [
        (
            "requests: 100,",
            "requests: 0,",
            format!("{at}[0].requests: must be at least 1"),
        ),
        (
            "burst: 150,",
            "burst: 0,",
            format!("{at}[0].burst: must be at least 1 (leave it unset for `requests`)"),
        ),
        (
            "interval: 60s,",
            "interval: 0s,",
            format!("{at}[0].interval: must be greater than zero"),
        ),
        (
            "name: global,",
            "name: per-user,",
            format!(r#"{at}[1].name: duplicate rate limit "per-user""#),
        ),
        (
            "header: x-user,",
            "header: 'x user',",
            format!(r#"{at}[0].header: invalid header name "x user""#),
        ),
        (
            "maxKeys: 500,",
            "maxKeys: 0,",
            format!("{at}[0].maxKeys: must be between 1 and 1000000"),
        ),
        (
            "maxKeys: 500,",
            "maxKeys: 2000000,",
            format!("{at}[0].maxKeys: must be between 1 and 1000000"),
        ),
    ] {
        let bad = LIMITS.replace(from, to);
        assert_ne!(bad, LIMITS, "{from:?} is not in LIMITS");
        assert_eq!(errors_of(&bad), vec![want], "{from:?} -> {to:?}");
    }
    // Unset requests is zero, and so is the burst that defaults to it: both are named.
    let unset = LIMITS.replace("{ name: global, requests: 20 }", "{ name: global }");
    assert_eq!(
        errors_of(&unset),
        vec![
            format!("{at}[1].requests: must be at least 1"),
            format!("{at}[1].burst: must be at least 1 (leave it unset for `requests`)"),
        ]
    );
}

#[test]
fn bad_faults_name_their_fields() {
    let at = r#"routeTable "t": virtualHosts[0].routes[0].fault"#;
    for (from, to, want) in [
        (
            "percent: 12.5,",
            "percent: 101,",
            format!("{at}.abort.percent: must be between 0 and 100"),
        ),
        (
            "percent: 50,",
            "percent: -1,",
            format!("{at}.delay.percent: must be between 0 and 100"),
        ),
        (
            "httpStatus: 503,",
            "httpStatus: 99,",
            format!(
                "{at}.abort.httpStatus: an HTTP status between 200 and 599 is required (or grpcStatus for gRPC routes)"
            ),
        ),
        (
            "httpStatus: 503,",
            "httpStatus: 600,",
            format!(
                "{at}.abort.httpStatus: an HTTP status between 200 and 599 is required (or grpcStatus for gRPC routes)"
            ),
        ),
        (
            "grpcStatus: 14 }",
            "grpcStatus: 17 }",
            format!("{at}.abort.grpcStatus: must be a gRPC code between 1 and 16"),
        ),
        (
            "{ percent: 50, fixedDelay: 0.2s }",
            "{ percent: 50 }",
            format!("{at}.delay.fixedDelay: required"),
        ),
        (
            "fixedDelay: 0.2s",
            "fixedDelay: 0s",
            format!("{at}.delay.fixedDelay: must be greater than zero"),
        ),
    ] {
        let bad = LIMITS.replace(from, to);
        assert_ne!(bad, LIMITS, "{from:?} is not in LIMITS");
        assert_eq!(errors_of(&bad), vec![want], "{from:?} -> {to:?}");
    }
    // A gRPC status alone is enough (the HTTP status answered is then 200).
    let grpc_only = LIMITS.replace("httpStatus: 503, ", "");
    assert_ne!(grpc_only, LIMITS);
    let c = validate(&from_yaml(&grpc_only).expect("parses")).expect("valid");
    let abort = c.route_tables[0].virtual_hosts[0].routes[0]
        .fault
        .as_ref()
        .and_then(|f| f.abort.clone())
        .expect("abort");
    assert_eq!(
        (abort.http_status, abort.grpc_status),
        (http::StatusCode::OK, Some(14))
    );
    // Neither: an HTTP status is required.
    let neither = LIMITS.replace("httpStatus: 503, grpcStatus: 14", "grpcStatus: 0");
    assert_eq!(
        errors_of(&neither),
        vec![format!(
            "{at}.abort.httpStatus: an HTTP status between 200 and 599 is required (or grpcStatus for gRPC routes)"
        )]
    );
}

#[test]
fn connection_limits_of_zero_are_no_limits() {
    use crate::limits::ConnectionLimits;
    let c = validate(&from_yaml(LIMITS).expect("parses")).expect("valid");
    let by_name = |name: &str| {
        c.listeners
            .iter()
            .find(|l| &*l.name == name)
            .unwrap_or_else(|| panic!("no listener {name:?}"))
            .connection_limits
    };
    assert_eq!(
        by_name("out"),
        Some(ConnectionLimits {
            per_second: 100,
            max_connections: 1000,
            max_connections_per_client: 10,
        })
    );
    assert_eq!(by_name("zero"), None, "all zero: treated as unset");
    assert_eq!(by_name("plain"), None);
    // One non-zero setting is kept, the others stay 0 (no limit).
    let one = LIMITS.replace(
        "{ perSecond: 0, maxConnections: 0, maxConnectionsPerClient: 0 }",
        "{ maxConnectionsPerClient: 3 }",
    );
    let c = validate(&from_yaml(&one).expect("parses")).expect("valid");
    assert_eq!(
        c.listeners[1].connection_limits,
        Some(ConnectionLimits {
            per_second: 0,
            max_connections: 0,
            max_connections_per_client: 3,
        })
    );
    let empty = LIMITS.replace(
        "{ perSecond: 0, maxConnections: 0, maxConnectionsPerClient: 0 }",
        "{}",
    );
    let c = validate(&from_yaml(&empty).expect("parses")).expect("valid");
    assert_eq!(c.listeners[1].connection_limits, None);
}
