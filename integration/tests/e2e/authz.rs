//! Inbound authorization: callers allowed by SPIFFE id (exact and namespace wildcard),
//! method and path; DENY policies first; default deny; dry run counts and logs but serves;
//! source networks for plaintext HTTP and for TCP connections (closed when denied).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use remora_integration::peers::curl;
use remora_integration::pki::{DAY, Pki, identity_yaml};
use remora_integration::{Remora, Upstream, eventually};

const POLICIES: &str = r#"      policies:
        - name: payments-ns
          rules: [{ identities: ["spiffe://mesh.local/ns/payments/*"] }]
        - name: web-reads
          rules: [{ identities: ["spiffe://mesh.local/ns/default/sa/web"], methods: [GET], paths: ["/orders/*"] }]
        - name: no-admin
          action: DENY
          rules: [{ paths: ["/admin/*"] }]
"#;

fn yaml(certs: &Path, app: &Upstream, dry_run: bool) -> String {
    format!(
        r#"listeners:
  - name: inbound
    address: "127.0.0.1:0"
    direction: INBOUND
    protocol: HTTP
    routeTable: in
    accessLog: {{ format: JSON }}
    tls: {{ mode: STRICT }}
    authorization:
      dryRun: {dry_run}
{POLICIES}routeTables:
  - name: in
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: app, forward: {{ cluster: app }} }}] }}]
clusters:
  - {{ name: app, endpoints: [{{ address: "{}" }}] }}
{}"#,
        app.addr,
        identity_yaml(certs, "mesh.local", "")
    )
}

struct Callers {
    pki: Pki,
}

impl Callers {
    /// (status, response text) for `method path` as `identity`.
    fn call(&self, remora: &Remora, identity: &str, method: &str, path: &str) -> (u16, String) {
        let name = identity.replace(['/', ':'], "_");
        let dir = self.pki.dir.path().join(&name);
        if !dir.exists() {
            self.pki.issue(&name, identity, DAY);
        }
        let cert = dir.join("cert.pem").display().to_string();
        let key = dir.join("key.pem").display().to_string();
        let url = format!("https://{}{path}", remora.addr("inbound"));
        remora_integration::peers::curl_status(&[
            "-k", "-X", method, "--cert", &cert, "--key", &key, &url,
        ])
    }
}

fn decisions(remora: &Remora, policy: &str, decision: &str) -> f64 {
    remora.metric_sum(
        "remora_authz_decisions_total",
        &[
            &format!("policy=\"{policy}\""),
            &format!("decision=\"{decision}\""),
        ],
    )
}

#[test]
fn allowed_identities_pass_and_others_get_403() {
    let pki = Pki::new("mesh.local");
    let server = pki.issue("orders", "spiffe://mesh.local/ns/default/sa/orders", DAY);
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(&server, &app, false));
    let callers = Callers { pki };
    let api = "spiffe://mesh.local/ns/payments/sa/api";
    let batch = "spiffe://mesh.local/ns/payments/sa/batch";
    let web = "spiffe://mesh.local/ns/default/sa/web";
    let evil = "spiffe://mesh.local/ns/payments-evil/sa/api";
    for (who, method, path, want) in [
        (api, "GET", "/x", 200),
        (batch, "POST", "/x", 200),
        (web, "GET", "/orders/1", 200),
        (web, "POST", "/orders/1", 403),
        (web, "GET", "/other", 403),
        // The wildcard is a whole path segment.
        (evil, "GET", "/x", 403),
        // DENY wins over an ALLOW that matches.
        (api, "GET", "/admin/users", 403),
    ] {
        let (status, text) = callers.call(&remora, who, method, path);
        assert_eq!(status, want, "{who} {method} {path}: {text}");
        if want == 403 {
            assert!(text.contains("x-remora-error: unauthorized"), "{text}");
        }
    }
    assert_eq!(app.requests(), 3);
    assert_eq!(decisions(&remora, "payments-ns", "allow"), 2.0);
    assert_eq!(decisions(&remora, "web-reads", "allow"), 1.0);
    assert_eq!(decisions(&remora, "default-deny", "deny"), 3.0);
    assert_eq!(decisions(&remora, "no-admin", "deny"), 1.0);
    // Denials are flagged in the access log, with who was denied.
    let line = eventually("a denied access-log line", Duration::from_secs(10), || {
        remora
            .logs()
            .lines()
            .find(|l| l.contains("\"unauthorized\"") && l.contains("/admin/users"))
            .map(str::to_owned)
    });
    assert!(
        line.contains(api) && line.contains("\"status\":403"),
        "{line}"
    );
}

#[test]
fn dry_run_counts_and_logs_what_it_would_deny_but_serves() {
    let pki = Pki::new("mesh.local");
    let server = pki.issue("orders", "spiffe://mesh.local/ns/default/sa/orders", DAY);
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(&server, &app, true));
    let callers = Callers { pki };
    let web = "spiffe://mesh.local/ns/default/sa/web";
    for (method, path) in [
        ("POST", "/orders/1"),
        ("GET", "/admin/x"),
        ("GET", "/orders/2"),
    ] {
        let (status, text) = callers.call(&remora, web, method, path);
        assert_eq!(status, 200, "{method} {path}: {text}");
    }
    assert_eq!(app.requests(), 3);
    assert_eq!(decisions(&remora, "default-deny", "would-deny"), 1.0);
    assert_eq!(decisions(&remora, "no-admin", "would-deny"), 1.0);
    assert_eq!(decisions(&remora, "web-reads", "allow"), 1.0);
    assert_eq!(
        remora.metric_sum("remora_authz_decisions_total", &["decision=\"deny\""]),
        0.0
    );
    assert!(
        remora
            .logs()
            .lines()
            .any(|l| l.contains("authorization: request not allowed") && l.contains("would-deny")),
        "{}",
        remora.logs()
    );
    eventually("a dry-run access-log flag", Duration::from_secs(10), || {
        remora
            .logs()
            .lines()
            .find(|l| l.contains("authz-dry-run-deny") && l.contains("/admin/x"))
            .map(|_| ())
    });
}

/// Connects from `source` (any 127.0.0.0/8 address is local).
fn connect_from(source: [u8; 4], to: SocketAddr) -> std::net::TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from((source, 0)).into()).expect("bind");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

#[test]
fn source_networks_gate_plaintext_http_and_tcp() {
    let app = Upstream::start("app");
    let remora = Remora::start(&format!(
        r#"listeners:
  - name: inbound
    address: "127.0.0.1:0"
    direction: INBOUND
    protocol: HTTP
    routeTable: in
    authorization:
      policies: [{{ name: local-two, rules: [{{ sourceNetworks: ["127.0.0.2/32"] }}] }}]
  - name: tcp
    address: "127.0.0.1:0"
    direction: INBOUND
    protocol: TCP
    cluster: app
    authorization:
      policies: [{{ name: local-two, rules: [{{ sourceNetworks: ["127.0.0.2/32"] }}] }}]
routeTables:
  - name: in
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: app, forward: {{ cluster: app }} }}] }}]
clusters:
  - {{ name: app, endpoints: [{{ address: "{}" }}] }}
"#,
        app.addr
    ));
    let url = format!("{}/x", remora.url("inbound"));
    let (out, _, _) = curl(&["-i", &url]);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let (out, _, _) = curl(&["-i", "--interface", "127.0.0.2", &url]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // TCP: a denied connection is closed without a byte relayed; an allowed one is served.
    let request = b"GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut denied = connect_from([127, 0, 0, 1], remora.addr("tcp"));
    let _ = denied.write_all(request);
    let mut raw = Vec::new();
    let _ = denied.read_to_end(&mut raw);
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    let mut allowed = connect_from([127, 0, 0, 2], remora.addr("tcp"));
    allowed.write_all(request).expect("write");
    let mut raw = String::new();
    let _ = allowed.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(
        remora.metric_sum(
            "remora_authz_decisions_total",
            &["listener=\"tcp\"", "decision=\"deny\""]
        ),
        1.0
    );
    assert_eq!(app.requests(), 2);
}
