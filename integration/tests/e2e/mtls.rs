//! Mutual TLS on an inbound listener, with real TLS clients (curl, openssl s_client) and
//! certificates from `remora-certs`: strict mode serves only clients with a mesh
//! certificate and hands the app their SPIFFE id; permissive mode also serves plaintext.

use std::path::{Path, PathBuf};
use std::process::Command;

use remora_certs::ca;
use remora_integration::peers::curl;
use remora_integration::{Remora, Upstream};

struct Pki {
    _dir: tempfile::TempDir,
    server: PathBuf,
    client: PathBuf,
    foreign: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let day = std::time::Duration::from_secs(86_400);
    let root = dir.path().join("root");
    ca::init("mesh.local", &root, None, None, false).expect("ca");
    let server = dir.path().join("server");
    ca::issue(
        &root,
        "spiffe://mesh.local/ns/default/sa/orders",
        day,
        &server,
        false,
    )
    .expect("server");
    let client = dir.path().join("client");
    ca::issue(
        &root,
        "spiffe://mesh.local/ns/default/sa/web",
        day,
        &client,
        false,
    )
    .expect("client");
    let other = dir.path().join("other-root");
    ca::init("mesh.local", &other, None, None, false).expect("other ca");
    let foreign = dir.path().join("foreign");
    ca::issue(
        &other,
        "spiffe://mesh.local/ns/default/sa/web",
        day,
        &foreign,
        false,
    )
    .expect("foreign");
    Pki {
        server,
        client,
        foreign,
        _dir: dir,
    }
}

fn yaml(pki: &Pki, mode: &str, app: &Upstream) -> String {
    let f = |p: &Path, n: &str| p.join(n).display().to_string();
    format!(
        r#"listeners:
  - name: inbound
    address: "127.0.0.1:0"
    direction: INBOUND
    protocol: HTTP
    routeTable: t
    accessLog: {{ format: JSON }}
    tls: {{ mode: {mode}, forwardPeerIdentity: true }}
identity:
  trustDomain: mesh.local
  files: {{ certFile: "{}", keyFile: "{}", bundleFile: "{}" }}
routeTables:
  - name: t
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: app, forward: {{ cluster: app }} }}] }}]
clusters:
  - {{ name: app, endpoints: [{{ address: "{}" }}] }}
"#,
        f(&pki.server, "cert.pem"),
        f(&pki.server, "key.pem"),
        f(&pki.server, "bundle.pem"),
        app.addr
    )
}

/// curl over TLS (server name not checked: workload certificates carry no DNS name).
fn tls_get(remora: &Remora, cert: Option<&Path>, extra: &[&str]) -> (String, bool) {
    let url = format!("https://{}/who", remora.addr("inbound"));
    let (cert_file, key_file);
    let mut args = vec!["-sk", "--max-time", "10"];
    if let Some(dir) = cert {
        cert_file = dir.join("cert.pem").display().to_string();
        key_file = dir.join("key.pem").display().to_string();
        args.extend(["--cert", &cert_file, "--key", &key_file]);
    }
    args.extend_from_slice(extra);
    args.push(&url);
    let (out, _, ok) = curl(&args);
    (out, ok)
}

fn handshakes(remora: &Remora, result: &str) -> f64 {
    remora.metric_sum(
        "remora_tls_handshakes_total",
        &[&format!("result=\"{result}\"")],
    )
}

#[test]
fn strict_mtls_serves_mesh_clients_only_and_passes_their_identity() {
    let pki = pki();
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(&pki, "STRICT", &app));
    // A mesh client, over HTTP/1.1 and HTTP/2 (ALPN); a forged identity header is replaced.
    for extra in [&["--http1.1"][..], &["--http2"][..]] {
        let mut args = extra.to_vec();
        args.extend([
            "-H",
            "x-remora-peer-identity: spiffe://mesh.local/ns/admin/sa/root",
        ]);
        let (out, ok) = tls_get(&remora, Some(&pki.client), &args);
        assert!(ok, "{out}");
        let echo: serde_json::Value = serde_json::from_str(&out).expect("echo JSON");
        assert_eq!(
            echo["headers"]["x-remora-peer-identity"], "spiffe://mesh.local/ns/default/sa/web",
            "{out}"
        );
    }
    assert_eq!(handshakes(&remora, "ok"), 2.0);
    let line = remora_integration::eventually(
        "an access-log line",
        std::time::Duration::from_secs(10),
        || {
            remora
                .logs()
                .lines()
                .find(|l| l.contains("\"peer_identity\""))
                .map(str::to_owned)
        },
    );
    assert!(
        line.contains("\"peer_identity\":\"spiffe://mesh.local/ns/default/sa/web\""),
        "{line}"
    );
    // No client certificate: the handshake fails.
    let (out, ok) = tls_get(&remora, None, &[]);
    assert!(!ok, "served without a client certificate: {out}");
    let s_client = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 10 openssl s_client -connect {} -tls1_3 -ign_eof < /dev/null 2>&1",
            remora.addr("inbound")
        ))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&s_client.stdout);
    assert!(
        text.contains("certificate required") || text.contains("alert number 116"),
        "openssl s_client without a certificate: {text}"
    );
    // A certificate from another CA: refused.
    let (out, ok) = tls_get(&remora, Some(&pki.foreign), &[]);
    assert!(!ok, "served a foreign certificate: {out}");
    // Plaintext: closed.
    let (out, _, ok) = curl(&[
        "-s",
        "--max-time",
        "5",
        &format!("http://{}/", remora.addr("inbound")),
    ]);
    assert!(!ok, "served plaintext in strict mode: {out}");
    // Each refusal is counted under what went wrong.
    assert_eq!(
        handshakes(&remora, "no-client-certificate"),
        2.0,
        "{}",
        remora.metrics()
    );
    assert_eq!(
        handshakes(&remora, "unknown-issuer"),
        1.0,
        "{}",
        remora.metrics()
    );
    assert_eq!(handshakes(&remora, "refused-plaintext"), 1.0);
}

#[test]
fn permissive_mtls_also_serves_plaintext_without_an_identity() {
    let pki = pki();
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(&pki, "PERMISSIVE", &app));
    let (out, _, ok) = curl(&[
        "-s",
        "-H",
        "x-remora-peer-identity: spiffe://mesh.local/ns/admin/sa/root",
        &format!("http://{}/", remora.addr("inbound")),
    ]);
    assert!(ok, "{out}");
    let echo: serde_json::Value = serde_json::from_str(&out).expect("echo JSON");
    assert!(echo["headers"]["x-remora-peer-identity"].is_null(), "{out}");
    let (out, ok) = tls_get(&remora, Some(&pki.client), &[]);
    assert!(
        ok && out.contains("spiffe://mesh.local/ns/default/sa/web"),
        "{out}"
    );
    assert_eq!(handshakes(&remora, "plaintext"), 1.0);
    assert_eq!(handshakes(&remora, "ok"), 1.0);
}

#[test]
fn a_missing_certificate_file_is_refused_with_its_name() {
    let pki = pki();
    let app = Upstream::start("app");
    let yaml = yaml(&pki, "STRICT", &app).replace("server/cert.pem", "server/nope.pem");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("remora.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new(remora_integration::remora::binary())
        .args([
            "--config",
            file.to_str().expect("path"),
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .expect("remora");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("identity.files.certFile: cannot read") && err.contains("nope.pem"),
        "{err}"
    );
}
