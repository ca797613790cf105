use proptest::prelude::*;
use prost::Message;
use remora_control_api::proto::Endpoint;
use remora_control_api::proto::control::ClusterEndpoints;

use super::*;

const BASE: &str = r#"
listeners:
  - { name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: main }
routeTables:
  - name: main
    virtualHosts: [{ name: all, domains: ["*"], routes: [{ name: r, forward: { cluster: orders } }] }]
clusters:
  - { name: orders, endpoints: [{ address: "127.0.0.1:8001" }, { address: "127.0.0.1:8002" }] }
"#;

fn base() -> Dynamic {
    let update = config_update("v1");
    prepare(&update, None).unwrap()
}

fn config_update(version: &str) -> Update {
    Update {
        r#type: ResourceType::Config as i32,
        version: version.into(),
        nonce: "n1".into(),
        config: Some(remora_control_api::load::from_yaml(BASE).unwrap()),
        endpoints: vec![],
        endpoints_version: "e1".into(),
    }
}

fn endpoint(address: &str, weight: Option<u32>) -> Endpoint {
    Endpoint {
        address: address.into(),
        weight: weight.map(|value| pbjson_types::UInt32Value { value }),
        identity: String::new(),
    }
}

fn endpoints_update(version: &str, changes: Vec<ClusterEndpoints>) -> Update {
    Update {
        r#type: ResourceType::Endpoints as i32,
        version: version.into(),
        nonce: "n2".into(),
        config: None,
        endpoints: changes,
        endpoints_version: String::new(),
    }
}

fn addresses(d: &Dynamic) -> Vec<String> {
    d.config.clusters[0]
        .endpoints
        .iter()
        .map(|e| e.address.clone())
        .collect()
}

#[test]
fn config_update_carries_both_versions() {
    let d = base();
    assert_eq!(d.config_version, "v1");
    assert_eq!(d.endpoints_version, "e1");
    assert_eq!(d.config.version, "v1");
}

#[test]
fn endpoint_delta_adds_replaces_and_removes() {
    let d = base();
    let next = prepare(
        &endpoints_update(
            "e2",
            vec![ClusterEndpoints {
                cluster: "orders".into(),
                upserted: vec![
                    endpoint("127.0.0.1:8003", None),
                    endpoint("127.0.0.1:8002", Some(5)),
                ],
                removed: vec!["127.0.0.1:8001".into()],
            }],
        ),
        Some(&d),
    )
    .unwrap();
    assert_eq!(addresses(&next), ["127.0.0.1:8002", "127.0.0.1:8003"]);
    assert_eq!(
        next.config.clusters[0].endpoints[0].weight.map(|w| w.value),
        Some(5)
    );
    assert_eq!(next.config_version, "v1");
    assert_eq!(next.endpoints_version, "e2");
}

#[test]
fn contradictory_and_unknown_updates_name_the_field() {
    let d = base();
    let unknown = endpoints_update(
        "e2",
        vec![ClusterEndpoints {
            cluster: "payments".into(),
            ..Default::default()
        }],
    );
    let err = prepare(&unknown, Some(&d)).unwrap_err();
    assert!(
        err.contains("endpoints[0].cluster") && err.contains("payments"),
        "{err}"
    );

    let both = endpoints_update(
        "e2",
        vec![ClusterEndpoints {
            cluster: "orders".into(),
            upserted: vec![endpoint("127.0.0.1:9", None)],
            removed: vec!["127.0.0.1:9".into()],
        }],
    );
    let err = prepare(&both, Some(&d)).unwrap_err();
    assert!(err.contains("also removed"), "{err}");

    let bad_address = endpoints_update(
        "e2",
        vec![ClusterEndpoints {
            cluster: "orders".into(),
            upserted: vec![endpoint("10.0.0.1:99999", None)],
            removed: vec![],
        }],
    );
    let err = prepare(&bad_address, Some(&d)).unwrap_err();
    assert!(
        err.contains("cluster \"orders\"") && err.contains("99999"),
        "{err}"
    );

    let err = prepare(&endpoints_update("e2", vec![]), None).unwrap_err();
    assert!(err.contains("no configuration"), "{err}");

    let mut no_config = config_update("v2");
    no_config.config = None;
    assert!(
        prepare(&no_config, Some(&d))
            .unwrap_err()
            .contains("config:")
    );

    let mut bad_type = config_update("v2");
    bad_type.r#type = 42;
    assert!(prepare(&bad_type, Some(&d)).unwrap_err().contains("type:"));

    let mut no_version = config_update("");
    no_version.version.clear();
    assert!(
        prepare(&no_version, Some(&d))
            .unwrap_err()
            .contains("version:")
    );
}

/// Cases per property: 4,000 in the test suite; `PROPTEST_CASES=N` runs a longer fuzz.
fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Any bytes on the wire: decoding may fail, but decode-and-prepare never panics.
    #[test]
    fn garbage_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(update) = Update::decode(bytes.as_slice()) {
            let _ = prepare(&update, Some(&base()));
            let _ = prepare(&update, None);
        }
    }

    /// A valid CONFIG update with bytes flipped, inserted or cut off (what a buggy or
    /// hostile control plane could send): never a panic; whatever is accepted validates.
    #[test]
    fn mutated_config_updates_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = config_update("v2").encode_to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
            if bytes.is_empty() { break; }
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep.max(bytes.len() / 2));
        if let Ok(update) = Update::decode(bytes.as_slice()) {
            for current in [Some(&base()), None] {
                if let Ok(next) = prepare(&update, current) {
                    prop_assert!(remora_control_api::validate(&next.config).is_ok());
                }
            }
        }
    }

    /// Well-formed but hostile endpoint updates: never a panic, and an accepted result is
    /// always a configuration that validates.
    #[test]
    fn hostile_endpoint_updates_never_panic(
        changes in proptest::collection::vec(
            (
                prop_oneof![Just("orders".to_string()), "[a-z]{0,8}"],
                proptest::collection::vec(("[0-9.:a-z\\[\\]]{0,24}", proptest::option::of(any::<u32>())), 0..6),
                proptest::collection::vec("[0-9.:]{0,24}", 0..4),
            ),
            0..4,
        ),
        version in "[a-z0-9]{0,6}",
    ) {
        let changes = changes
            .into_iter()
            .map(|(cluster, up, removed)| ClusterEndpoints {
                cluster,
                upserted: up.into_iter().map(|(a, w)| endpoint(&a, w)).collect(),
                removed,
            })
            .collect();
        let update = endpoints_update(&version, changes);
        if let Ok(next) = prepare(&update, Some(&base())) {
            prop_assert!(remora_control_api::validate(&next.config).is_ok());
        }
    }
}
