//! `remora validate` and start-up on bad files: every error reported with resource and field,
//! non-zero exit, no panic.

use std::process::Command;

use remora_integration::remora::binary;

fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(binary())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.success(), text)
}

const ROUTES: &str = "routeTables:\n  - name: t\n    virtualHosts:\n      - name: v\n        domains: ['*']\n        routes:\n";

#[test]
fn validate_accepts_the_readme_example() {
    let example = remora_integration::peers::repo_root().join("proxy/examples/sidecar.yaml");
    let yaml = std::fs::read_to_string(&example).expect("proxy/examples/sidecar.yaml");
    let (ok, text) = validate(&yaml);
    assert!(ok, "{text}");
    assert!(text.contains("valid"), "{text}");
}

#[test]
fn each_bad_input_is_named() {
    let cases: Vec<(String, &str)> = vec![
        ("listeners: [ {name: a\n".into(), "malformed configuration"),
        ("clusters:\n  - name: c\n    endpionts: []\n".into(), "endpionts"),
        ("clusters:\n  - name: c\n    lbPolicy: FASTEST\n".into(), "FASTEST"),
        (
            "clusters:\n  - name: orders\n    endpoints: [{address: '10.0.0.1:1'}, {address: '10.0.0.2:1'}, {address: '10.0.0.1:99999'}]\n".into(),
            r#"cluster "orders": endpoints[2].address: invalid socket address "10.0.0.1:99999""#,
        ),
        (
            format!("clusters: [{{name: c}}]\n{ROUTES}          - {{ name: r, match: {{ pathRegex: '/(x' }}, forward: {{ cluster: c }} }}\n"),
            r#"routeTable "t": virtualHosts[0].routes[0].match.pathRegex: invalid regex"#,
        ),
        (
            format!("clusters: [{{name: a}}, {{name: b}}]\n{ROUTES}          - {{ name: r, forward: {{ weightedClusters: [{{name: a, weight: 0}}, {{name: b, weight: 0}}] }} }}\n"),
            "weights sum to zero",
        ),
        ("clusters: [{name: c}, {name: c}]\n".into(), r#"cluster "c": name: duplicate cluster name "c""#),
    ];
    for (yaml, needle) in cases {
        let (ok, text) = validate(&yaml);
        assert!(!ok, "accepted:\n{yaml}");
        assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    }
}

#[test]
fn validate_reports_every_error_at_once() {
    let yaml = "listeners:\n  - {name: l, address: 'nope', protocol: TCP, cluster: missing}\nclusters:\n  - {name: c, endpoints: [{address: '1.2.3.4:0'}], connectTimeout: 0s}\n";
    let (ok, text) = validate(yaml);
    assert!(!ok);
    for needle in [
        r#"listener "l": address: invalid socket address "nope""#,
        r#"listener "l": cluster: unknown cluster "missing""#,
        r#"cluster "c": endpoints[0].address: port 0 is not a valid destination"#,
        r#"cluster "c": connectTimeout: must be greater than zero"#,
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(text.contains("4 errors"), "{text}");
}

#[test]
fn start_with_a_bad_file_exits_non_zero_with_the_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "clusters: [{name: c, endpoints: [{address: x}]}]\n").expect("write");
    let out = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"cluster "c": endpoints[0].address"#),
        "{err}"
    );
}
