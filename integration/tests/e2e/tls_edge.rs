//! TLS at the mesh's edges: origination to a service outside the mesh (Python's OpenSSL
//! server; the name verified against a CA bundle or the system's roots, with a client
//! certificate), and ingress termination with a certificate per SNI name (checked by curl's
//! own verification).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use remora_integration::peers::{PyServer, curl};
use remora_integration::{Remora, Upstream};

/// A CA and certificates for DNS names, written as PEM files.
struct WebPki {
    dir: tempfile::TempDir,
    ca_pem: String,
    ca_key: KeyPair,
}

impl WebPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "Test Web CA");
        let ca_pem = p.self_signed(&ca_key).expect("ca").pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write");
        Self {
            dir,
            ca_pem,
            ca_key,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// (cert file, key file) for `names`, with common name `cn`.
    fn issue(&self, file: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let mut p =
            CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>())
                .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, &self.ca_key).expect("issuer");
        let cert = p.signed_by(&key, &issuer).expect("sign");
        let (c, k) = (
            self.dir.path().join(format!("{file}.pem")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn tls_origination_to_an_external_service_verifies_its_name() {
    let pki = WebPki::new();
    let (server_cert, server_key) = pki.issue("server", "api", &["api.external.test"]);
    let (client_cert, client_key) = pki.issue("client", "remora-client", &[]);
    let server = PyServer::start(
        "tls_server.py",
        &[
            "--cert",
            &s(&server_cert),
            "--key",
            &s(&server_key),
            "--client-ca",
            &s(&pki.ca_file()),
        ],
    );
    let cluster = |name: &str, tls: &str| {
        format!(
            "  - {{ name: {name}, endpoints: [{{ address: \"{}\" }}], tls: {{ mode: EXTERNAL, {tls} }} }}\n",
            server.addr()
        )
    };
    let client = format!(
        "certFile: \"{}\", keyFile: \"{}\"",
        s(&client_cert),
        s(&client_key)
    );
    let bundle = format!("bundleFile: \"{}\"", s(&pki.ca_file()));
    let mut yaml = String::from("listeners:\n");
    for l in ["ext", "wrong-name", "system-roots"] {
        yaml.push_str(&format!(
            "  - {{ name: {l}, address: \"127.0.0.1:0\", protocol: HTTP, routeTable: {l} }}\n"
        ));
    }
    yaml.push_str("routeTables:\n");
    for l in ["ext", "wrong-name", "system-roots"] {
        yaml.push_str(&format!(
            "  - {{ name: {l}, virtualHosts: [{{ name: all, domains: [\"*\"], routes: [{{ name: r, forward: {{ cluster: {l} }} }}] }}] }}\n"
        ));
    }
    yaml.push_str("clusters:\n");
    yaml.push_str(&cluster(
        "ext",
        &format!("sni: api.external.test, {bundle}, {client}"),
    ));
    yaml.push_str(&cluster(
        "wrong-name",
        &format!("sni: other.external.test, {bundle}, {client}"),
    ));
    yaml.push_str(&cluster(
        "system-roots",
        &format!("sni: api.external.test, {client}"),
    ));
    let remora = Remora::start(&yaml);

    let (out, err, ok) = curl(&[&format!("{}/v1/things", remora.url("ext"))]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["sni"], "api.external.test", "{out}");
    assert_eq!(v["alpn"], "http/1.1", "{out}");
    assert_eq!(v["path"], "/v1/things", "{out}");
    assert_eq!(v["client"][0], "remora-client", "{out}");

    let reason = |cluster: &str, reason: &str| {
        remora.metric_sum(
            "remora_upstream_tls_handshakes_total",
            &[
                &format!("cluster=\"{cluster}\""),
                &format!("reason=\"{reason}\""),
            ],
        )
    };
    assert_eq!(reason("ext", "ok"), 1.0);
    for (listener, why) in [
        ("wrong-name", "wrong-server-name"),
        ("system-roots", "unknown-issuer"),
    ] {
        let (out, _, _) = curl(&["-i", &format!("{}/", remora.url(listener))]);
        assert!(out.starts_with("HTTP/1.1 503"), "{listener}: {out}");
        assert!(
            out.contains("x-remora-error: upstream-tls-failure"),
            "{out}"
        );
        assert_eq!(
            reason(listener, why),
            1.0,
            "{listener}: {}",
            remora.metrics()
        );
    }
}

#[test]
fn ingress_termination_serves_the_certificate_for_each_name() {
    let pki = WebPki::new();
    let (shop_cert, shop_key) = pki.issue("shop", "shop", &["shop.example.test"]);
    let (api_cert, api_key) = pki.issue("api", "api", &["*.api.example.test"]);
    let app = Upstream::start("app");
    let remora = Remora::start(&format!(
        r#"listeners:
  - name: ingress
    address: "127.0.0.1:0"
    protocol: HTTP
    routeTable: in
    tls:
      mode: TERMINATE
      certificates:
        - {{ serverNames: [shop.example.test], certFile: "{}", keyFile: "{}" }}
        - {{ serverNames: ["*.api.example.test"], certFile: "{}", keyFile: "{}" }}
routeTables:
  - name: in
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: app, forward: {{ cluster: app }} }}] }}]
clusters:
  - {{ name: app, endpoints: [{{ address: "{}" }}] }}
"#,
        s(&shop_cert),
        s(&shop_key),
        s(&api_cert),
        s(&api_key),
        app.addr
    ));
    let port = remora.addr("ingress").port();
    let ca = s(&pki.ca_file());
    let fetch = |host: &str, extra: &[&str]| {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}/");
        let mut args = vec!["--cacert", ca.as_str(), "--resolve", resolve.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    // curl verifies the certificate for the name it asked: success means the right one.
    for (host, extra) in [
        ("shop.example.test", &["--http1.1"][..]),
        ("shop.example.test", &["--http2"][..]),
        ("v1.api.example.test", &[][..]),
    ] {
        let (out, err, ok) = fetch(host, extra);
        assert!(ok, "{host} {extra:?}: {out}{err}");
        assert!(
            out.contains("\"x-upstream\"") || out.contains("app"),
            "{out}"
        );
    }
    // An unknown name gets the first certificate, which curl refuses for that name.
    let (out, err, ok) = fetch("unknown.test", &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("SSL") || err.contains("certificate"), "{err}");
    // Plaintext on a TLS listener is refused.
    let (out, _, ok) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert!(!ok, "{out}");
    assert!(
        remora.metric_sum("remora_tls_handshakes_total", &["result=\"ok\""]) >= 3.0,
        "{}",
        remora.metrics()
    );
    assert_eq!(
        remora.metric_sum(
            "remora_tls_handshakes_total",
            &["result=\"refused-plaintext\""]
        ),
        1.0
    );
}
