//! Kubernetes without a cluster (there is no API server on this machine): the Helm chart
//! rendered with the Helm v4 SDK and every manifest validated with `kubernetes-validate
//! --strict` (`helm/tests/check_chart.py`), and the injection webhook served by a real
//! `remora-control` over HTTPS, fed an AdmissionReview as the API server sends it; the
//! patched pod is validated the same way.

use std::path::Path;
use std::process::Command;

use remora_integration::ControlPlane;
use remora_integration::peers::{curl, python, repo_root};

fn venv_path() -> String {
    let bin = python().parent().map(Path::to_path_buf).unwrap_or_default();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn the_chart_renders_validates_and_rejects_bad_values() {
    let root = repo_root();
    let out = Command::new(python())
        .arg(root.join("helm/tests/check_chart.py"))
        .args(["--chart", root.join("helm/remora").to_str().expect("path")])
        .env("PATH", venv_path())
        .output()
        .expect("check_chart.py");
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"ok\": false"))
        .collect();
    assert!(
        out.status.success() && failed.is_empty() && text.lines().count() > 20,
        "{failed:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kubernetes_validate(file: &Path) -> (bool, String) {
    let mut all = String::new();
    let mut ok = true;
    for k in ["1.29.0", "1.33.0"] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", k])
            .arg(file)
            .env("PATH", venv_path())
            .output()
            .expect("kubernetes-validate");
        ok &= out.status.success();
        all.push_str(&String::from_utf8_lossy(&out.stdout));
        all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (ok, all)
}

#[test]
fn the_webhook_injects_a_valid_native_sidecar_once() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The webhook's serving certificate, for the name the client uses.
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(d.join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(d.join("tls.key"), key.serialize_pem()).expect("write");
    std::fs::write(
        d.join("injection.json"),
        r#"{"image":"ghcr.io/remora-mesh/remora:0.1.0","pullPolicy":"IfNotPresent","controlUrl":"http://remora-control.remora-system.svc:9090","nativeSidecar":true,"inboundPort":4143,"adminPort":9901,"logFormat":"json","resources":{"requests":{"cpu":"50m","memory":"32Mi"},"limits":{"memory":"256Mi"}},"scrape":true,"label":"remora.io/inject"}"#,
    )
    .expect("write");
    let mesh = d.join("mesh");
    std::fs::create_dir(&mesh).expect("mkdir");
    std::fs::write(mesh.join("mesh.yaml"), "services: []\n").expect("write");
    let s = |p: &str| d.join(p).display().to_string();
    let cp = ControlPlane::start_with(
        &mesh,
        None,
        &[
            "--webhook",
            "127.0.0.1:0",
            "--webhook-cert",
            &s("tls.crt"),
            "--webhook-key",
            &s("tls.key"),
            "--injection",
            &s("injection.json"),
        ],
    );
    let port = cp.webhook.expect("webhook address").port();
    let post = |body: &Path| {
        let (out, err, ok) = curl(&[
            "--cacert",
            &s("tls.crt"),
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
            &format!("https://localhost:{port}/inject"),
        ]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("AdmissionReview answer")
    };
    let fixture = repo_root().join("control-api/plane/tests/fixtures/admission-review-pod.json");
    let answer = post(&fixture);
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(
        answer["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("JSON patch");
    let mut review: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).expect("fixture")).expect("json");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies");
    // The patched pod is a valid Pod for Kubernetes 1.29 and 1.33.
    let pod_file = d.join("pod.json");
    let mut named = pod.clone();
    named["metadata"]["name"] = serde_json::json!("orders-7d9f8c6b5-x2x4q");
    std::fs::write(
        &pod_file,
        serde_json::to_string_pretty(&named).expect("json"),
    )
    .expect("write");
    let (valid, why) = kubernetes_validate(&pod_file);
    assert!(valid, "{why}");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "remora-proxy");
    // The same pod again: allowed, no patch.
    review["request"]["object"] = pod;
    let again = d.join("again.json");
    std::fs::write(&again, serde_json::to_string(&review).expect("json")).expect("write");
    let answer = post(&again);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["patch"].is_null(), "{answer}");
    // Garbage is a 400, never a crash.
    let (out, _, _) = curl(&[
        "--cacert",
        &s("tls.crt"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        "not json",
        &format!("https://localhost:{port}/inject"),
    ]);
    assert_eq!(out, "400");
    let metrics = cp.metrics();
    let count = |result: &str| {
        remora_integration::remora::metric_sum(
            &metrics,
            "remora_control_injections_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(
        (count("injected"), count("already-injected"), count("error")),
        (1.0, 1.0, 1.0),
        "{metrics}"
    );
}
