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
