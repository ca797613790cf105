//! Tests for `model.rs`: each error class names file, resource and field.

use super::*;

fn doc(origin: &str, yaml: &str) -> Document {
    Document {
        origin: origin.to_owned(),
        mesh: parse(yaml).unwrap(),
    }
}

fn errors(docs: &[Document]) -> Vec<String> {
    build(docs, &Mesh::default()).unwrap_err().lines()
}

const BASE: &str = r#"
services:
  - name: orders
    endpoints: [{ address: "10.0.0.1:80" }]
  - name: users
    dns: { name: users.svc, port: 8080 }
"#;

#[test]
fn a_valid_model_merges_files() {
    let m = build(
        &[
            doc("mesh/a.yaml", BASE),
            doc(
                "mesh/b.yaml",
                r#"
sidecars:
  - service: web
    upstreams: [{ service: orders, address: "127.0.0.1:7001" }]
policies:
  - service: orders
    routes: [{ name: all, forward: { cluster: orders } }]
"#,
            ),
        ],
        &Mesh::default(),
    )
    .unwrap();
    assert_eq!(m.services.len(), 2);
    assert_eq!(m.sidecars["web"].origin, "mesh/b.yaml");
    assert_eq!(m.policies["orders"].origin, "mesh/b.yaml");
}

#[test]
fn a_name_defined_twice_names_both_files() {
    let e = errors(&[
        doc("mesh/a.yaml", BASE),
        doc("mesh/b.yaml", "services: [{ name: orders }]"),
    ]);
    assert_eq!(
        e,
        vec![r#"mesh/b.yaml: service "orders": name: defined twice: also in mesh/a.yaml"#]
    );
    let twice = "policies: [{ service: orders }]\nsidecars: [{ service: web }]";
    let e = errors(&[
        doc("mesh/a.yaml", BASE),
        doc("mesh/p1.yaml", twice),
        doc("mesh/p2.yaml", twice),
    ]);
    assert!(
        e.contains(
            &r#"mesh/p2.yaml: policy "orders": service: defined twice: also in mesh/p1.yaml"#
                .to_owned()
        ),
        "{e:?}"
    );
    assert!(
        e.contains(
            &r#"mesh/p2.yaml: sidecar "web": service: defined twice: also in mesh/p1.yaml"#
                .to_owned()
        ),
        "{e:?}"
    );
}

#[test]
fn bad_endpoint_address_names_file_resource_and_field() {
    let e = errors(&[doc(
        "mesh/orders.yaml",
        r#"services: [{ name: orders, endpoints: [{address: "10.0.0.1:80"}, {address: "10.0.0.2:80"}, {address: "10.0.0.1:99999"}] }]"#,
    )]);
    assert_eq!(
        e,
        vec![
            r#"mesh/orders.yaml: service "orders": endpoints[2].address: invalid socket address "10.0.0.1:99999" (expected "IP:PORT")"#
        ]
    );
}

#[test]
fn static_and_dns_together_is_an_error() {
    let e = errors(&[doc(
        "m.yaml",
        r#"services: [{ name: a, endpoints: [{address: "10.0.0.1:80"}], dns: { name: a.svc, port: 0 } }]"#,
    )]);
    assert!(
        e.iter().any(|l| l.starts_with(
            r#"m.yaml: service "a": endpoints: a service's endpoints come from one place"#
        )),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with(r#"m.yaml: service "a": dns.port: "#)),
        "{e:?}"
    );
}

#[test]
fn empty_and_reserved_names_are_errors() {
    let e = errors(&[doc(
        "m.yaml",
        "services: [{ name: '' }, { name: inbound-app }]",
    )]);
    assert!(
        e.iter()
            .any(|l| l == r#"m.yaml: service[0]: name: required"#),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l
                .starts_with(r#"m.yaml: service "inbound-app": name: "inbound-app" is reserved"#)),
        "{e:?}"
    );
}

#[test]
fn policy_references_are_checked() {
    let e = errors(&[
        doc("mesh/a.yaml", BASE),
        doc(
            "mesh/p.yaml",
            r#"
policies:
  - service: ghost
  - service: orders
    routes:
      - name: one
        forward: { cluster: nowhere }
      - name: split
        forward: { weightedClusters: [{ name: orders, weight: 1 }, { name: gone, weight: 1 }] }
"#,
        ),
    ]);
    assert!(
        e.contains(&r#"mesh/p.yaml: policy "ghost": service: unknown service "ghost""#.to_owned()),
        "{e:?}"
    );
    assert!(
        e.iter().any(|l| l.starts_with(
            r#"mesh/p.yaml: policy "orders": routes[0].forward.cluster: unknown service "nowhere""#
        )),
        "{e:?}"
    );
    assert!(e.iter().any(|l| l.starts_with(r#"mesh/p.yaml: policy "orders": routes[1].forward.weightedClusters[1].name: unknown service "gone""#)), "{e:?}");
}

#[test]
fn sidecar_addresses_and_upstreams_are_checked() {
    let e = errors(&[
        doc("mesh/a.yaml", BASE),
        doc(
            "mesh/web.yaml",
            r#"
sidecars:
  - service: web
    inbound: { address: "0.0.0.0", app: "localhost:8080" }
    upstreams:
      - { service: missing, address: "127.0.0.1:7001" }
      - { service: orders, address: "nope" }
      - { service: orders, address: "127.0.0.1:7003" }
"#,
        ),
    ]);
    let want = [
        r#"mesh/web.yaml: sidecar "web": inbound.address: invalid socket address "0.0.0.0" (expected "IP:PORT")"#,
        r#"mesh/web.yaml: sidecar "web": inbound.app: invalid socket address "localhost:8080" (expected "IP:PORT")"#,
        r#"mesh/web.yaml: sidecar "web": upstreams[0].service: unknown service "missing""#,
        r#"mesh/web.yaml: sidecar "web": upstreams[1].address: invalid socket address "nope" (expected "IP:PORT")"#,
    ];
    for w in want {
        assert!(e.contains(&w.to_owned()), "missing {w}\n{e:#?}");
    }
    assert!(
        e.iter().any(|l| l.starts_with(
            r#"mesh/web.yaml: sidecar "web": upstreams[2].service: "orders" is listed twice"#
        )),
        "{e:?}"
    );
}

#[test]
fn the_overlay_replaces_same_named_resources() {
    let overlay =
        parse(r#"services: [{ name: orders, endpoints: [{ address: "10.9.9.9:80" }] }]"#).unwrap();
    let m = build(&[doc("mesh/a.yaml", BASE)], &overlay).unwrap();
    assert_eq!(m.services["orders"].origin, OVERLAY_ORIGIN);
    assert_eq!(
        m.services["orders"].value.endpoints[0].address,
        "10.9.9.9:80"
    );
    assert_eq!(m.services["users"].origin, "mesh/a.yaml");

    let mut acc = Mesh::default();
    merge_overlay(&mut acc, &overlay);
    merge_overlay(&mut acc, &overlay);
    assert_eq!(
        acc.services.len(),
        1,
        "same name replaces, never duplicates"
    );
}

#[test]
fn directory_loading_skips_hidden_and_other_files_and_reports_parse_errors() {
    let dir = std::env::temp_dir().join(format!("remora-model-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), BASE).unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "garbage: [").unwrap();
    std::fs::write(dir.join("notes.txt"), "garbage: [").unwrap();
    let docs = read_dir(&dir).unwrap();
    assert_eq!(docs.len(), 1);
    std::fs::write(dir.join("b.yml"), "servces: []").unwrap();
    let e = read_dir(&dir).unwrap_err().lines();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(&format!("{}: ", dir.join("b.yml").display())),
        "{e:?}"
    );
    assert!(e[0].contains("servces"), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

const MTLS_SERVICES: &str = r#"
services:
  - { name: orders, endpoints: [{ address: "10.0.0.1:80" }] }
  - { name: users, endpoints: [{ address: "10.0.0.2:80" }], identity: "spiffe://mesh.local/ns/accounts/sa/users" }
"#;

#[test]
fn a_valid_mtls_section_is_kept_with_its_origin() {
    let m = build(
        &[
            doc("mesh/a.yaml", MTLS_SERVICES),
            doc(
                "mesh/mtls.yaml",
                "mtls: { trustDomain: mesh.local, mode: PERMISSIVE }",
            ),
        ],
        &Mesh::default(),
    )
    .unwrap();
    let mtls = m.mtls.as_ref().unwrap();
    assert_eq!(mtls.origin, "mesh/mtls.yaml");
    assert_eq!(mtls.value.trust_domain, "mesh.local");
    assert_eq!(
        mtls.value.mode,
        remora_control_api::proto::TlsMode::Permissive as i32
    );
    let m = build(&[doc("mesh/a.yaml", MTLS_SERVICES)], &Mesh::default()).unwrap();
    assert!(m.mtls.is_none());
}

#[test]
fn mtls_needs_a_valid_trust_domain() {
    let e = errors(&[doc("m.yaml", "mtls: { mode: STRICT }")]);
    assert_eq!(
        e,
        vec![r#"m.yaml: mtls: trustDomain: required, e.g. "mesh.local""#]
    );
    let e = errors(&[doc("m.yaml", "mtls: { trustDomain: Mesh.Local }")]);
    assert_eq!(
        e,
        vec![
            r#"m.yaml: mtls: trustDomain: invalid trust domain "Mesh.Local": use lower-case letters, digits, '.', '-' and '_'"#
        ]
    );
}

/// A `/` in the trust domain must not slip into the path of the id built to check it.
#[test]
fn mtls_trust_domain_with_a_slash_is_rejected() {
    let e = build(
        &[doc("m.yaml", "mtls: { trustDomain: 'mesh.local/x' }")],
        &Mesh::default(),
    )
    .map(|_| ())
    .map_err(|e| e.lines());
    assert_eq!(
        e,
        Err(vec![
            r#"m.yaml: mtls: trustDomain: invalid trust domain "mesh.local/x": use lower-case letters, digits, '.', '-' and '_'"#.to_owned()
        ])
    );
}

#[test]
fn mtls_mode_is_strict_or_permissive() {
    for mode in ["TERMINATE", "DISABLED"] {
        let e = errors(&[doc(
            "m.yaml",
            &format!("mtls: {{ trustDomain: mesh.local, mode: {mode} }}"),
        )]);
        assert_eq!(
            e,
            vec!["m.yaml: mtls: mode: use STRICT or PERMISSIVE (remove `mtls` for plaintext)"],
            "{mode}"
        );
    }
}

#[test]
fn mtls_defined_in_two_documents_names_both() {
    let e = errors(&[
        doc("mesh/a.yaml", "mtls: { trustDomain: mesh.local }"),
        doc("mesh/b.yaml", "mtls: { trustDomain: mesh.local }"),
    ]);
    assert_eq!(
        e,
        vec!["mesh/b.yaml: mtls: defined twice: also in mesh/a.yaml"]
    );
    // The overlay replaces it instead.
    let overlay = parse("mtls: { trustDomain: other.local }").unwrap();
    let m = build(
        &[doc("mesh/a.yaml", "mtls: { trustDomain: mesh.local }")],
        &overlay,
    )
    .unwrap();
    let mtls = m.mtls.unwrap();
    assert_eq!(
        (mtls.origin.as_str(), mtls.value.trust_domain.as_str()),
        (OVERLAY_ORIGIN, "other.local")
    );
}

#[test]
fn a_service_identity_must_be_in_the_trust_domain() {
    for bad in [
        "spiffe://other.org/ns/default/sa/orders",
        "spiffe://mesh.local.evil/ns/default/sa/orders",
        "orders",
    ] {
        let e = errors(&[
            doc("mesh/mtls.yaml", "mtls: { trustDomain: mesh.local }"),
            doc(
                "mesh/orders.yaml",
                &format!("services: [{{ name: orders, identity: '{bad}' }}]"),
            ),
        ]);
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        let (prefix, why) = (r#"mesh/orders.yaml: service "orders": identity: "#, &e[0]);
        assert!(
            why.starts_with(prefix)
                && (why.contains(r#"is not in the mesh's trust domain "mesh.local""#)
                    || why.contains("invalid SPIFFE id")),
            "{bad}: {why}"
        );
    }
}

/// A service identity must be a whole SPIFFE id (the CA could not sign a bad one).
#[test]
fn a_service_identity_must_be_a_valid_spiffe_id() {
    let accepted: Vec<&str> = [
        "spiffe://mesh.local/ns//sa/orders",
        "spiffe://mesh.local/ns/default/sa/orders v2",
    ]
    .into_iter()
    .filter(|bad| {
        let e = build(
            &[
                doc("mesh/mtls.yaml", "mtls: { trustDomain: mesh.local }"),
                doc(
                    "mesh/orders.yaml",
                    &format!("services: [{{ name: orders, identity: '{bad}' }}]"),
                ),
            ],
            &Mesh::default(),
        );
        !matches!(e, Err(e) if e.lines().iter().any(|l| l.starts_with(r#"mesh/orders.yaml: service "orders": identity: "#)))
    })
    .collect();
    assert!(
        accepted.is_empty(),
        "invalid SPIFFE ids accepted as service identities: {accepted:?}"
    );
}
