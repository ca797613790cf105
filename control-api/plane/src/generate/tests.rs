//! Tests for `generate.rs`: a proxy gets only what its sidecar uses, valid and versioned.

use super::*;
use crate::discovery::{StaticSource, resolve_all};
use crate::model::{Document, build, parse};
use remora_control_api::proto::mesh::Mesh;
use std::sync::Arc;

fn model(yaml: &str) -> Model {
    build(
        &[Document {
            origin: "mesh.yaml".into(),
            mesh: parse(yaml).unwrap(),
        }],
        &Mesh::default(),
    )
    .unwrap()
}

fn generate(m: &Model, service: &str) -> ProxyConfig {
    let sources: Vec<Arc<dyn crate::discovery::Source>> = vec![Arc::new(StaticSource)];
    let pc = for_service(m, service, &resolve_all(&sources, m));
    remora_control_api::validate(&pc.config).unwrap();
    pc
}

const MESH: &str = r#"
services:
  - { name: orders, endpoints: [{ address: "10.0.1.1:80" }, { address: "10.0.1.2:80", weight: 3 }], lbPolicy: ROUND_ROBIN, connectTimeout: 2s }
  - { name: orders-v2, endpoints: [{ address: "10.0.2.1:80" }], protocol: HTTP2 }
  - { name: users, endpoints: [{ address: "10.0.3.1:80" }] }
  - { name: db, endpoints: [{ address: "10.0.4.1:5432" }] }
  - { name: unrelated, endpoints: [{ address: "10.0.9.1:80" }] }
policies:
  - service: orders
    routes:
      - name: canary
        match: { headers: [{ name: x-canary, present: true }] }
        forward: { cluster: orders-v2 }
      - name: split
        forward: { weightedClusters: [{ name: orders, weight: 90 }, { name: orders-v2, weight: 10 }] }
sidecars:
  - service: web
    inbound: { address: "0.0.0.0:4143", app: "127.0.0.1:8080" }
    upstreams:
      - { service: orders, address: "127.0.0.1:7001" }
      - { service: users, address: "127.0.0.1:7002" }
      - { service: db, address: "127.0.0.1:7003", protocol: TCP }
"#;

#[test]
fn a_sidecar_gets_only_the_services_it_uses() {
    let m = model(MESH);
    let pc = generate(&m, "web");
    let c = &pc.config;
    let names = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        c.clusters
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>(),
        names(vec!["db", "inbound-app", "orders", "orders-v2", "users"])
    );
    assert_eq!(
        c.listeners
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>(),
        names(vec![
            "inbound",
            "outbound-orders",
            "outbound-users",
            "outbound-db"
        ])
    );
    let inbound = &c.listeners[0];
    assert_eq!(inbound.direction, i32::from(Direction::Inbound));
    assert_eq!(inbound.protocol, i32::from(ListenerProtocol::Auto));
    assert_eq!(
        (inbound.route_table.as_str(), inbound.cluster.as_str()),
        ("inbound", "inbound-app")
    );
    let orders = &c.listeners[1];
    assert_eq!(orders.protocol, i32::from(ListenerProtocol::Http));
    assert_eq!(orders.direction, i32::from(Direction::Outbound));
    assert_eq!(orders.address, "127.0.0.1:7001");
    assert_eq!(orders.route_table, "orders");
    let db = &c.listeners[3];
    assert_eq!((db.route_table.as_str(), db.cluster.as_str()), ("", "db"));

    let table = c.route_tables.iter().find(|t| t.name == "orders").unwrap();
    assert_eq!(table.virtual_hosts[0].domains, vec!["*"]);
    assert_eq!(
        table.virtual_hosts[0].routes.len(),
        2,
        "the policy's routes"
    );
    let users = c.route_tables.iter().find(|t| t.name == "users").unwrap();
    assert_eq!(users.virtual_hosts[0].routes[0].name, "default");
    assert!(
        c.route_tables.iter().all(|t| t.name != "db"),
        "TCP listeners have no routes"
    );

    let orders = c.clusters.iter().find(|c| c.name == "orders").unwrap();
    assert_eq!(
        orders.lb_policy,
        i32::from(remora_control_api::proto::LbPolicy::RoundRobin)
    );
    assert_eq!(orders.connect_timeout.as_ref().map(|d| d.seconds), Some(2));
    assert_eq!(orders.endpoints.len(), 2);
    let app = c.clusters.iter().find(|c| c.name == "inbound-app").unwrap();
    assert_eq!(app.endpoints[0].address, "127.0.0.1:8080");
    assert!(c.admin.is_none() && c.drain_timeout.is_none());
    assert_eq!(c.version, pc.config_version);
}

#[test]
fn a_service_without_a_sidecar_gets_an_empty_valid_config() {
    let m = model(MESH);
    let pc = generate(&m, "unrelated");
    assert!(pc.config.listeners.is_empty() && pc.config.clusters.is_empty());
    assert_eq!(pc.config_version, generate(&m, "nobody").config_version);
}

#[test]
fn ten_thousand_services_and_a_sidecar_that_uses_five() {
    let mut mesh = Mesh::default();
    for i in 0..10_000 {
        mesh.services
            .push(remora_control_api::proto::mesh::Service {
                name: format!("svc-{i}"),
                endpoints: vec![Endpoint {
                    address: format!("10.{}.{}.1:80", i / 256, i % 256),
                    weight: None,
                    identity: String::new(),
                }],
                ..Default::default()
            });
    }
    let upstreams = (0..5)
        .map(|i| remora_control_api::proto::mesh::Upstream {
            service: format!("svc-{}", i * 1000),
            address: format!("127.0.0.1:{}", 7000 + i),
            protocol: 0,
        })
        .collect();
    mesh.sidecars.push(Sidecar {
        service: "client".into(),
        inbound: None,
        upstreams,
    });
    let m = build(
        &[Document {
            origin: "big.yaml".into(),
            mesh,
        }],
        &Mesh::default(),
    )
    .unwrap();
    let pc = generate(&m, "client");
    let names: Vec<_> = pc.config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["svc-0", "svc-1000", "svc-2000", "svc-3000", "svc-4000"]
    );
    assert_eq!(pc.config.listeners.len(), 5);
    assert_eq!(pc.config.route_tables.len(), 5);
}

#[test]
fn versions_are_stable_and_split_config_from_endpoints() {
    let m = model(MESH);
    let a = generate(&m, "web");
    let b = generate(&model(MESH), "web");
    assert_eq!(
        (&a.config_version, &a.endpoints_version),
        (&b.config_version, &b.endpoints_version)
    );
    assert_eq!(a.config_version.len(), 16);

    // Endpoint change only: same config version, new endpoints version.
    let moved = MESH.replace("10.0.3.1:80", "10.0.3.9:80");
    let c = generate(&model(&moved), "web");
    assert_eq!(c.config_version, a.config_version);
    assert_ne!(c.endpoints_version, a.endpoints_version);

    // A route change: new config version.
    let rerouted = MESH.replace("weight: 90", "weight: 80");
    let d = generate(&model(&rerouted), "web");
    assert_ne!(d.config_version, a.config_version);
    assert_eq!(d.endpoints_version, a.endpoints_version);

    // A change to a service the sidecar does not use changes nothing.
    let other = MESH.replace("10.0.9.1:80", "10.0.9.2:80");
    assert_eq!(generate(&model(&other), "web"), a);
    assert_eq!(stable_hash(b""), "cbf29ce484222325");
}

#[test]
fn deltas_list_new_and_reweighted_endpoints_and_removed_addresses() {
    let ep = |a: &str, w: Option<u32>| Endpoint {
        address: a.into(),
        weight: w.map(|value| pbjson_types::UInt32Value { value }),
        identity: String::new(),
    };
    let old = BTreeMap::from([
        (
            "a".to_owned(),
            vec![ep("1.1.1.1:80", None), ep("1.1.1.2:80", None)],
        ),
        ("b".to_owned(), vec![ep("2.2.2.2:80", None)]),
    ]);
    let new = BTreeMap::from([
        (
            "a".to_owned(),
            vec![ep("1.1.1.2:80", Some(5)), ep("1.1.1.3:80", None)],
        ),
        ("b".to_owned(), vec![ep("2.2.2.2:80", None)]),
    ]);
    let d = endpoint_deltas(&old, &new);
    assert_eq!(d.len(), 1);
    assert_eq!(
        d["a"].upserted,
        vec![ep("1.1.1.2:80", Some(5)), ep("1.1.1.3:80", None)]
    );
    assert_eq!(d["a"].removed, vec!["1.1.1.1:80".to_owned()]);
}

#[test]
fn resilience_settings_reach_the_proxies_from_services_and_policies() {
    let mesh = r#"
services:
  - name: orders
    endpoints: [{ address: "10.0.1.1:80" }]
    circuitBreakers: { maxRequests: 50 }
    retryBudget: { ratio: 0.1 }
    outlierDetection: { consecutive5xx: 3, baseEjectionTime: 10s }
    healthCheck: { httpPath: /healthz, interval: 2s }
policies:
  - service: orders
    routes:
      - name: api
        forward: { cluster: orders }
        timeout: 2s
        retry: { retryOn: [5xx], maxRetries: 3, perTryTimeout: 0.5s }
        hedge: { delay: 0.05s }
sidecars:
  - service: web
    upstreams: [{ service: orders, address: "127.0.0.1:7001" }]
"#;
    let m = model(mesh);
    let pc = generate(&m, "web");
    let config = remora_control_api::validate(&pc.config).unwrap();
    let orders = config
        .clusters
        .iter()
        .find(|c| &*c.name == "orders")
        .unwrap();
    let r = &orders.resilience;
    assert_eq!(r.breakers.max_requests, 50);
    assert_eq!(r.budget.ratio, 0.1);
    let o = r.outlier.unwrap();
    assert_eq!(o.consecutive_5xx, 3);
    assert_eq!(o.base_ejection_time, std::time::Duration::from_secs(10));
    assert!(r.health_check.is_some());
    let route = config
        .route_tables
        .iter()
        .flat_map(|t| &t.virtual_hosts)
        .flat_map(|v| &v.routes)
        .find(|r| &*r.name == "api")
        .unwrap();
    let retry = route.retry.as_deref().unwrap();
    assert!(retry.retry_on.status_5xx);
    assert_eq!(retry.max_retries, 3);
    assert!(route.hedge.is_some());
}

#[test]
fn a_bad_resilience_setting_is_refused_by_the_control_plane() {
    let mesh = MESH.replace(
        "lbPolicy: ROUND_ROBIN, connectTimeout: 2s }",
        "lbPolicy: ROUND_ROBIN, connectTimeout: 2s, outlierDetection: { maxEjectionPercent: 150 } }",
    );
    let m = model(&mesh);
    let sources: Vec<Arc<dyn crate::discovery::Source>> = vec![Arc::new(StaticSource)];
    let resolved = resolve_all(&sources, &m);
    let Err(errors) = crate::state::MeshState::compile(Arc::new(m), resolved, 1) else {
        panic!("a bad outlier setting was accepted");
    };
    let text = errors.to_string();
    assert!(
        text.contains("outlierDetection.maxEjectionPercent: must be between 0 and 100"),
        "{text}"
    );
}

const MTLS_MESH: &str = r#"
mtls: { trustDomain: mesh.local }
services:
  - { name: web, endpoints: [{ address: "10.0.0.1:4143" }] }
  - { name: orders, endpoints: [{ address: "10.0.1.1:4143" }] }
  - { name: users, endpoints: [{ address: "10.0.3.1:4143" }], identity: "spiffe://mesh.local/ns/accounts/sa/users-api" }
  - { name: legacy, endpoints: [{ address: "10.0.9.1:80" }] }
sidecars:
  - service: web
    inbound: { address: "0.0.0.0:4143", app: "127.0.0.1:8080", forwardPeerIdentity: true }
    upstreams:
      - { service: orders, address: "127.0.0.1:7001" }
      - { service: users, address: "127.0.0.1:7002", protocol: TCP }
      - { service: legacy, address: "127.0.0.1:7003" }
  - service: orders
    inbound:
      address: "0.0.0.0:4143"
      app: "127.0.0.1:8080"
      authorization:
        dryRun: true
        policies:
          - name: web-only
            rules: [{ identities: ["spiffe://mesh.local/ns/default/sa/web"], methods: [GET] }]
  - service: users
    inbound: { address: "0.0.0.0:4143", app: "127.0.0.1:8081" }
"#;

fn cluster_tls<'a>(c: &'a Config, name: &str) -> Option<&'a ClusterTls> {
    c.clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name:?}"))
        .tls
        .as_ref()
}

fn inbound_listener(c: &Config) -> &Listener {
    c.listeners
        .iter()
        .find(|l| l.name == INBOUND_LISTENER)
        .unwrap()
}

#[test]
fn mtls_gives_identity_inbound_tls_and_mesh_clusters_for_sidecars() {
    let m = model(MTLS_MESH);
    let pc = generate(&m, "web");
    let c = &pc.config;
    assert_eq!(
        c.identity,
        Some(Identity {
            trust_domain: "mesh.local".into(),
            source: Some(identity::Source::ControlPlane(true)),
            expiry_warning: None,
        })
    );
    assert_eq!(
        inbound_listener(c).tls,
        Some(ListenerTls {
            mode: TlsMode::Strict as i32,
            forward_peer_identity: true,
            certificates: vec![],
        })
    );
    assert!(
        c.listeners
            .iter()
            .filter(|l| l.name != INBOUND_LISTENER)
            .all(|l| l.tls.is_none()),
        "outbound listeners take the app's plaintext"
    );
    assert_eq!(
        cluster_tls(c, "orders"),
        Some(&ClusterTls {
            mode: ClusterTlsMode::Mesh as i32,
            identity: "spiffe://mesh.local/ns/default/sa/orders".into(),
            ..ClusterTls::default()
        })
    );
    assert_eq!(
        cluster_tls(c, "users"),
        Some(&ClusterTls {
            mode: ClusterTlsMode::Mesh as i32,
            identity: "spiffe://mesh.local/ns/accounts/sa/users-api".into(),
            ..ClusterTls::default()
        }),
        "an explicit service identity (and a TCP upstream is meshed too)"
    );
    assert_eq!(
        cluster_tls(c, "legacy"),
        None,
        "no sidecar entry: stays plaintext"
    );
    assert_eq!(
        cluster_tls(c, INBOUND_CLUSTER),
        None,
        "the local app is plaintext"
    );

    // As the proxy will read it.
    let v = remora_control_api::validate(c).unwrap();
    let id = v.identity.as_ref().unwrap();
    assert_eq!(id.trust_domain, "mesh.local");
    assert_eq!(
        id.source,
        remora_control_api::tls::IdentitySource::ControlPlane
    );
    let orders = v.clusters.iter().find(|c| &*c.name == "orders").unwrap();
    assert_eq!(
        orders.tls,
        Some(remora_control_api::tls::ClusterTls::Mesh {
            identity: Some("spiffe://mesh.local/ns/default/sa/orders".into())
        })
    );
    let inbound = v
        .listeners
        .iter()
        .find(|l| &*l.name == INBOUND_LISTENER)
        .unwrap();
    assert_eq!(
        inbound
            .tls
            .as_ref()
            .map(|t| (t.mode, t.forward_peer_identity)),
        Some((remora_control_api::tls::TlsMode::Strict, true))
    );
}

#[test]
fn mtls_copies_the_inbound_authorization() {
    let m = model(MTLS_MESH);
    let pc = generate(&m, "orders");
    let inbound = inbound_listener(&pc.config);
    let from_model = m.sidecars["orders"]
        .value
        .inbound
        .as_ref()
        .unwrap()
        .authorization
        .clone();
    assert!(from_model.is_some());
    assert_eq!(inbound.authorization, from_model);
    let a = inbound.authorization.as_ref().unwrap();
    assert!(a.dry_run);
    assert_eq!(a.policies.len(), 1);
    assert_eq!(a.policies[0].name, "web-only");
    assert_eq!(
        a.policies[0].rules[0].identities,
        vec!["spiffe://mesh.local/ns/default/sa/web".to_owned()]
    );
    assert_eq!(
        inbound
            .tls
            .as_ref()
            .map(|t| (t.mode, t.forward_peer_identity)),
        Some((TlsMode::Strict as i32, false))
    );
    // The proxy reads the same policy.
    let v = remora_control_api::validate(&pc.config).unwrap();
    let a = v
        .listeners
        .iter()
        .find(|l| &*l.name == INBOUND_LISTENER)
        .unwrap()
        .authorization
        .as_ref()
        .unwrap();
    assert!(a.dry_run);
    assert_eq!(&*a.policies[0].name, "web-only");
    assert_eq!(
        a.policies[0].action,
        remora_control_api::authz::Action::Allow
    );
    assert_eq!(a.policies[0].rules[0].methods, vec![http::Method::GET]);
    // A sidecar without a policy gets none.
    assert!(
        inbound_listener(&generate(&m, "users").config)
            .authorization
            .is_none()
    );
}

#[test]
fn mtls_mode_sets_the_inbound_listener_mode() {
    for (mtls, want) in [
        (
            "{ trustDomain: mesh.local, mode: PERMISSIVE }",
            TlsMode::Permissive,
        ),
        ("{ trustDomain: mesh.local, mode: STRICT }", TlsMode::Strict),
        ("{ trustDomain: mesh.local }", TlsMode::Strict),
    ] {
        let mesh = MTLS_MESH.replace("{ trustDomain: mesh.local }", mtls);
        let pc = generate(&model(&mesh), "web");
        assert_eq!(
            inbound_listener(&pc.config).tls.as_ref().map(|t| t.mode),
            Some(want as i32),
            "{mtls}"
        );
        // The mode is the inbound side's only; callers always use MESH.
        assert_eq!(
            cluster_tls(&pc.config, "orders").map(|t| t.mode),
            Some(ClusterTlsMode::Mesh as i32),
            "{mtls}"
        );
    }
}

#[test]
fn without_mtls_nothing_has_tls_or_identity() {
    let mesh = MTLS_MESH.replace("mtls: { trustDomain: mesh.local }\n", "");
    assert_ne!(mesh, MTLS_MESH);
    let m = model(&mesh);
    for service in ["web", "orders", "users"] {
        let pc = generate(&m, service);
        let c = &pc.config;
        assert!(c.identity.is_none(), "{service}");
        assert!(c.listeners.iter().all(|l| l.tls.is_none()), "{service}");
        assert!(c.clusters.iter().all(|c| c.tls.is_none()), "{service}");
        assert_ne!(
            pc.config_version,
            generate(&model(MTLS_MESH), service).config_version,
            "turning mTLS on is a config change ({service})"
        );
    }
    // The policy is still sent (source networks work without mTLS).
    assert_eq!(
        inbound_listener(&generate(&m, "orders").config)
            .authorization
            .as_ref()
            .map(|a| a.policies[0].name.as_str()),
        Some("web-only")
    );
}

// --- mesh-wide rate limits -----------------------------------------------------------------

/// `orders` has a policy with a mesh-wide limit (burst unset), one with a burst, and a local
/// one; web and billing call orders, reports only users.
const LIMITS_MESH: &str = r#"
services:
  - { name: orders, endpoints: [{ address: "10.0.1.1:80" }] }
  - { name: users, endpoints: [{ address: "10.0.3.1:80" }] }
policies:
  - service: orders
    routes:
      - name: api
        forward: { cluster: orders }
        rateLimits:
          - { name: shared, requests: 10, meshWide: true }
          - { name: local, requests: 7, burst: 9, clientAddress: true }
          - { name: shared-burst, requests: 30, burst: 25, interval: 60s, meshWide: true }
  - service: users
    routes:
      - name: all
        forward: { cluster: users }
        rateLimits: [{ name: users-local, requests: 5 }]
sidecars:
  - service: web
    upstreams:
      - { service: orders, address: "127.0.0.1:7001" }
      - { service: users, address: "127.0.0.1:7002" }
  - service: billing
    upstreams: [{ service: orders, address: "127.0.0.1:7001" }]
  - service: reports
    upstreams: [{ service: users, address: "127.0.0.1:7002" }]
"#;

fn generate_with(m: &Model, service: &str, connected: &[(&str, usize)]) -> ProxyConfig {
    let sources: Vec<Arc<dyn crate::discovery::Source>> = vec![Arc::new(StaticSource)];
    let connected: Connected = connected
        .iter()
        .map(|(s, n)| ((*s).to_owned(), *n))
        .collect();
    let pc = for_service_with(m, service, &resolve_all(&sources, m), &connected);
    remora_control_api::validate(&pc.config).unwrap();
    pc
}

/// (name, requests, burst as sent) of the limits in route table `table`.
fn limits_of(c: &Config, table: &str) -> Vec<(String, u32, Option<u32>)> {
    c.route_tables
        .iter()
        .find(|t| t.name == table)
        .unwrap_or_else(|| panic!("no route table {table:?}"))
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.routes)
        .flat_map(|r| &r.rate_limits)
        .map(|l| (l.name.clone(), l.requests, l.burst.map(|b| b.value)))
        .collect()
}

fn limit(name: &str, requests: u32, burst: Option<u32>) -> (String, u32, Option<u32>) {
    (name.to_owned(), requests, burst)
}

#[test]
fn a_mesh_wide_limit_is_divided_among_the_callers_proxies() {
    let m = model(LIMITS_MESH);
    let pc = generate_with(&m, "web", &[("web", 2), ("billing", 1)]);
    assert_eq!(
        limits_of(&pc.config, "orders"),
        vec![
            limit("shared", 4, Some(4)),
            limit("local", 7, Some(9)),
            limit("shared-burst", 10, Some(9)),
        ],
        "3 proxies: 10/3 and 30/3 and 25/3 rounded up; the burst defaults to requests first"
    );
    // Every caller gets the same share.
    assert_eq!(
        limits_of(
            &generate_with(&m, "billing", &[("web", 2), ("billing", 1)]).config,
            "orders"
        ),
        limits_of(&pc.config, "orders")
    );
    // A policy without mesh-wide limits is sent as written.
    assert_eq!(
        limits_of(&pc.config, "users"),
        vec![limit("users-local", 5, None)]
    );
    // As the proxy reads it.
    let v = remora_control_api::validate(&pc.config).unwrap();
    let route = v
        .route_tables
        .iter()
        .find(|t| &*t.name == "orders")
        .unwrap()
        .virtual_hosts[0]
        .routes[0]
        .clone();
    assert_eq!(
        route
            .rate_limits
            .iter()
            .map(|l| (
                &*l.name,
                l.requests,
                l.burst,
                l.interval.as_secs(),
                l.mesh_wide
            ))
            .collect::<Vec<_>>(),
        vec![
            ("shared", 4, 4, 1, true),
            ("local", 7, 9, 1, false),
            ("shared-burst", 10, 9, 60, true),
        ]
    );
}

#[test]
fn a_mesh_wide_share_is_whole_without_proxies_and_never_zero() {
    let m = model(LIMITS_MESH);
    assert_eq!(
        limits_of(&generate_with(&m, "web", &[]).config, "orders"),
        vec![
            limit("shared", 10, Some(10)),
            limit("local", 7, Some(9)),
            limit("shared-burst", 30, Some(25)),
        ],
        "no proxy connected: counted as 1"
    );
    assert_eq!(
        generate(&m, "web").config,
        generate_with(&m, "web", &[]).config,
        "for_service is for_service_with and nobody connected"
    );
    assert_eq!(
        limits_of(&generate_with(&m, "web", &[("web", 1)]).config, "orders"),
        limits_of(&generate_with(&m, "web", &[]).config, "orders"),
        "one proxy gets the whole limit"
    );
    assert_eq!(
        limits_of(&generate_with(&m, "web", &[("web", 20)]).config, "orders"),
        vec![
            limit("shared", 1, Some(1)),
            limit("local", 7, Some(9)),
            limit("shared-burst", 2, Some(2)),
        ],
        "20 proxies: 10/20 is at least 1; 30/20 and 25/20 round up"
    );
}

#[test]
fn only_the_callers_of_the_service_count_as_enforcers() {
    let m = model(LIMITS_MESH);
    // reports has no upstream to orders, and a service without a sidecar calls nothing.
    let with_others = generate_with(
        &m,
        "web",
        &[("web", 2), ("billing", 1), ("reports", 50), ("orders", 9)],
    );
    assert_eq!(
        limits_of(&with_others.config, "orders"),
        vec![
            limit("shared", 4, Some(4)),
            limit("local", 7, Some(9)),
            limit("shared-burst", 10, Some(9)),
        ]
    );
    assert_eq!(
        with_others.config_version,
        generate_with(&m, "web", &[("web", 2), ("billing", 1)]).config_version,
        "proxies that do not call orders change nothing"
    );
    // reports's own config has no mesh-wide limit to divide.
    assert_eq!(
        generate_with(&m, "reports", &[("reports", 50)]),
        generate_with(&m, "reports", &[])
    );
}

#[test]
fn the_config_version_follows_the_share() {
    let m = model(LIMITS_MESH);
    let three = generate_with(&m, "web", &[("web", 2), ("billing", 1)]);
    let four = generate_with(&m, "web", &[("web", 3), ("billing", 1)]);
    assert_ne!(
        limits_of(&three.config, "orders"),
        limits_of(&four.config, "orders")
    );
    assert_ne!(three.config_version, four.config_version);
    assert_eq!(three.config.version, three.config_version);
    assert_eq!(
        three.endpoints_version, four.endpoints_version,
        "endpoints did not change"
    );
    // Same share, same version: 10/3 and 10/3, whoever the proxies are.
    let same = generate_with(&m, "web", &[("web", 1), ("billing", 2)]);
    assert_eq!(same.config_version, three.config_version);
    assert_eq!(
        generate_with(&m, "web", &[("web", 2), ("billing", 1)]),
        three,
        "stable"
    );
}

#[test]
fn has_mesh_wide_limits_looks_at_every_policy() {
    assert!(has_mesh_wide_limits(&model(LIMITS_MESH)));
    let local_only = LIMITS_MESH
        .replace("requests: 10, meshWide: true", "requests: 10")
        .replace("interval: 60s, meshWide: true", "interval: 60s");
    assert_ne!(local_only, LIMITS_MESH);
    assert!(!has_mesh_wide_limits(&model(&local_only)));
    let explicit_false = LIMITS_MESH.replace("meshWide: true", "meshWide: false");
    assert!(!has_mesh_wide_limits(&model(&explicit_false)));
    // Only in the second policy.
    let in_users = local_only.replace(
        "{ name: users-local, requests: 5 }",
        "{ name: users-local, requests: 5, meshWide: true }",
    );
    assert!(has_mesh_wide_limits(&model(&in_users)));
    assert!(!has_mesh_wide_limits(&model(MESH)), "no limits at all");
    // Without mesh-wide limits the proxy counts change nothing.
    let m = model(&local_only);
    assert_eq!(
        generate_with(&m, "web", &[("web", 7), ("billing", 3)]),
        generate_with(&m, "web", &[])
    );
}
