//! Two sidecars over mutual TLS: the caller's sidecar originates TLS 1.3 and holds the peer
//! to the SPIFFE id expected of it; the callee's sidecar terminates it and hands the app the
//! caller's id. Bad peers (wrong identity, expired, foreign trust domain) are refused with a
//! reason in the log and the metrics; certificate files rotate under load without a failed
//! request; a certificate near expiry is flagged.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use remora_integration::load::Load;
use remora_integration::peers::curl;
use remora_integration::pki::{DAY, Pki, identity_yaml};
use remora_integration::{Remora, Upstream, eventually};

const ORDERS: &str = "spiffe://mesh.local/ns/default/sa/orders";
const WEB: &str = "spiffe://mesh.local/ns/default/sa/web";

/// The callee's sidecar: an HTTP and a TCP inbound listener in STRICT mTLS before `app`.
fn callee_yaml(certs: &Path, app: &Upstream) -> String {
    format!(
        r#"listeners:
  - name: inbound
    address: "127.0.0.1:0"
    direction: INBOUND
    protocol: HTTP
    routeTable: in
    tls: {{ mode: STRICT, forwardPeerIdentity: true }}
  - name: inbound-tcp
    address: "127.0.0.1:0"
    direction: INBOUND
    protocol: TCP
    cluster: app
    tls: {{ mode: STRICT }}
routeTables:
  - name: in
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: app, forward: {{ cluster: app }} }}] }}]
clusters:
  - {{ name: app, endpoints: [{{ address: "{}" }}] }}
{}"#,
        app.addr,
        identity_yaml(certs, "mesh.local", "")
    )
}

/// The caller's sidecar: outbound listeners to the callee over mesh mTLS, expecting the
/// right identity (`out`, `out-h2`, `out-tcp`) or a wrong one (`out-wrong`).
fn caller_yaml(certs: &Path, callee: &Remora, cluster_extra: &str) -> String {
    let http = callee.addr("inbound");
    let tcp = callee.addr("inbound-tcp");
    format!(
        r#"listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: out }}
  - {{ name: out-h2, address: "127.0.0.1:0", protocol: HTTP, routeTable: out-h2 }}
  - {{ name: out-wrong, address: "127.0.0.1:0", protocol: HTTP, routeTable: wrong }}
  - {{ name: out-tcp, address: "127.0.0.1:0", protocol: TCP, cluster: orders-tcp }}
routeTables:
  - name: out
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: orders, forward: {{ cluster: orders }} }}] }}]
  - name: out-h2
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: orders, forward: {{ cluster: orders-h2 }} }}] }}]
  - name: wrong
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: orders, forward: {{ cluster: orders-wrong }}, retry: {{ maxRetries: 0 }} }}] }}]
clusters:
  - name: orders
    endpoints: [{{ address: "{http}" }}]
    tls: {{ mode: MESH, identity: "{ORDERS}" }}
{cluster_extra}  - name: orders-h2
    protocol: HTTP2
    endpoints: [{{ address: "{http}" }}]
    tls: {{ mode: MESH, identity: "{ORDERS}" }}
  - name: orders-wrong
    endpoints: [{{ address: "{http}" }}]
    tls: {{ mode: MESH, identity: "spiffe://mesh.local/ns/default/sa/payments" }}
  - name: orders-tcp
    endpoints: [{{ address: "{tcp}", identity: "{ORDERS}" }}]
    tls: {{ mode: MESH }}
{}"#,
        identity_yaml(certs, "mesh.local", "")
    )
}

/// `curl -si URL`: (status, whole response text).
fn get(url: &str, extra: &[&str]) -> (u16, String) {
    let mut args = extra.to_vec();
    args.push(url);
    remora_integration::peers::curl_status(&args)
}

fn upstream_handshakes(remora: &Remora, cluster: &str, reason: &str) -> f64 {
    remora.metric_sum(
        "remora_upstream_tls_handshakes_total",
        &[
            &format!("cluster=\"{cluster}\""),
            &format!("reason=\"{reason}\""),
        ],
    )
}

#[test]
fn two_sidecars_talk_mtls_and_check_each_others_identity() {
    let pki = Pki::new("mesh.local");
    let orders_certs = pki.issue("orders", ORDERS, DAY);
    let web_certs = pki.issue("web", WEB, DAY);
    let app = Upstream::start("orders-app");
    let callee = Remora::start(&callee_yaml(&orders_certs, &app));
    let caller = Remora::start(&caller_yaml(&web_certs, &callee, ""));

    // HTTP/1.1 (ALPN http/1.1) and HTTP/2 (ALPN h2) hops: the app learns who called.
    for listener in ["out", "out-h2"] {
        let (status, text) = get(&format!("{}/orders", caller.url(listener)), &[]);
        assert_eq!(status, 200, "{listener}: {text}");
        assert!(
            text.contains(&format!("\"x-remora-peer-identity\":\"{WEB}\"")),
            "{listener}: {text}"
        );
    }
    assert_eq!(upstream_handshakes(&caller, "orders", "ok"), 1.0);
    assert_eq!(upstream_handshakes(&caller, "orders-h2", "ok"), 1.0);

    // The callee presents `orders`; a cluster expecting `payments` refuses it before sending
    // the request, and says so.
    let (status, text) = get(&format!("{}/orders", caller.url("out-wrong")), &[]);
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("x-remora-error: upstream-tls-failure"),
        "{text}"
    );
    assert_eq!(
        upstream_handshakes(&caller, "orders-wrong", "wrong-identity"),
        1.0,
        "{}",
        caller.metrics()
    );
    assert!(
        caller.logs().lines().any(|l| l.contains("wrong-identity")
            && l.contains("expected spiffe://mesh.local/ns/default/sa/payments")),
        "{}",
        caller.logs()
    );
    assert_eq!(
        app.requests(),
        2,
        "the refused request must not reach the app"
    );

    // Opaque TCP over mTLS (no ALPN), the endpoint's own identity checked.
    let mut s = std::net::TcpStream::connect(caller.addr("out-tcp")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /over-tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(upstream_handshakes(&caller, "orders-tcp", "ok"), 1.0);
    assert_eq!(
        callee.metric_sum(
            "remora_tls_handshakes_total",
            &["listener=\"inbound-tcp\"", "result=\"ok\""]
        ),
        1.0
    );
}

#[test]
fn expired_and_foreign_trust_domain_peers_are_refused_and_named() {
    let pki = Pki::new("mesh.local");
    // The callee's certificate lives two seconds; wait (on the clock) until it has expired.
    let orders_certs = pki.issue("orders", ORDERS, Duration::from_secs(2));
    let expires = SystemTime::now() + Duration::from_secs(2);
    let web_certs = pki.issue("web", WEB, DAY);
    let app = Upstream::start("orders-app");
    let callee = Remora::start(&callee_yaml(&orders_certs, &app));
    let caller = Remora::start(&caller_yaml(&web_certs, &callee, ""));
    eventually("the certificate to expire", Duration::from_secs(10), || {
        (SystemTime::now() > expires + Duration::from_secs(1)).then_some(())
    });
    let (status, text) = get(&format!("{}/orders", caller.url("out")), &[]);
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("x-remora-error: upstream-tls-failure"),
        "{text}"
    );
    assert!(
        upstream_handshakes(&caller, "orders", "expired") >= 1.0,
        "{}",
        caller.metrics()
    );
    assert!(
        caller
            .logs()
            .lines()
            .any(|l| l.contains("upstream TLS handshake failed") && l.contains("expired")),
        "{}",
        caller.logs()
    );

    // A client certificate that chains to a trusted root but carries another trust
    // domain's id: refused as wrong-trust-domain.
    let other = Pki::new("other.local");
    let stranger = other.issue("stranger", "spiffe://other.local/ns/default/sa/web", DAY);
    let fresh = pki.issue("orders2", ORDERS, DAY);
    let both = pki.dir.path().join("both.pem");
    let bundle = |p: &Path| std::fs::read_to_string(p.join("bundle.pem")).expect("bundle");
    std::fs::write(&both, bundle(&fresh) + &bundle(&stranger)).expect("write");
    let yaml = callee_yaml(&fresh, &app).replace(
        &fresh.join("bundle.pem").display().to_string(),
        &both.display().to_string(),
    );
    let callee2 = Remora::start(&yaml);
    let cert = stranger.join("cert.pem").display().to_string();
    let key = stranger.join("key.pem").display().to_string();
    let (out, _, ok) = curl(&[
        "-k",
        "--cert",
        &cert,
        "--key",
        &key,
        &format!("https://{}/", callee2.addr("inbound")),
    ]);
    assert!(!ok, "served a foreign trust domain: {out}");
    assert_eq!(
        callee2.metric_sum(
            "remora_tls_handshakes_total",
            &["result=\"wrong-trust-domain\""]
        ),
        1.0,
        "{}",
        callee2.metrics()
    );
    assert!(
        callee2
            .logs()
            .lines()
            .any(|l| l.contains("client certificate refused") && l.contains("wrong-trust-domain")),
        "{}",
        callee2.logs()
    );
}

fn expiry(remora: &Remora) -> f64 {
    remora.metric_sum("remora_identity_certificate_expiry_timestamp_seconds", &[])
}

#[test]
fn rotating_certificate_files_under_load_fails_no_request() {
    let pki = Pki::new("mesh.local");
    let orders_certs = pki.issue("orders", ORDERS, DAY);
    let web_certs = pki.issue("web", WEB, DAY);
    let app = Upstream::start("orders-app");
    let callee = Remora::start(&callee_yaml(&orders_certs, &app));
    // No idle connections kept: every request makes a new mTLS handshake, so each one
    // proves the certificates in use at that moment.
    let caller = Remora::start(&caller_yaml(
        &web_certs,
        &callee,
        &format!(
            "  - name: orders-fresh\n    maxIdlePerEndpoint: 0\n    endpoints: [{{ address: \"{}\" }}]\n    tls: {{ mode: MESH, identity: \"{ORDERS}\" }}\n",
            callee.addr("inbound")
        ),
    )
    .replace("forward: { cluster: orders } }", "forward: { cluster: orders-fresh } }"));
    let load = Load::start(format!("{}/rotate", caller.url("out")), "orders");
    load.wait_for(20);
    for (i, days) in [2u64, 3, 4].into_iter().enumerate() {
        let before = expiry(&callee);
        pki.issue("orders", ORDERS, DAY * u32::try_from(days).expect("days"));
        eventually(
            "the callee to load its new certificate",
            Duration::from_secs(15),
            || (expiry(&callee) > before).then_some(()),
        );
        if i < 2 {
            let before = expiry(&caller);
            pki.issue("web", WEB, DAY * u32::try_from(days).expect("days"));
            eventually(
                "the caller to load its new certificate",
                Duration::from_secs(15),
                || (expiry(&caller) > before).then_some(()),
            );
        }
        let seen = load.ok();
        load.wait_for(seen + 20);
    }
    let (ok, failed) = load.stop();
    assert_eq!(failed, 0, "{ok} ok, {failed} failed during rotation");
    assert!(ok > 100, "{ok}");
    let loaded = |r: &Remora| {
        r.metric_sum(
            "remora_identity_updates_total",
            &["source=\"files\"", "result=\"ok\""],
        )
    };
    assert_eq!(loaded(&callee), 4.0, "{}", callee.metrics());
    assert_eq!(loaded(&caller), 3.0, "{}", caller.metrics());
    // The handshakes after the last rotation used the four-day certificate.
    let (status, _) = get(&format!("{}/after", caller.url("out")), &[]);
    assert_eq!(status, 200);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(expiry(&callee) > now + 3.5 * 86_400.0);
}

#[test]
fn a_certificate_near_expiry_is_flagged_and_warned() {
    let pki = Pki::new("mesh.local");
    let soon = pki.issue("orders", ORDERS, Duration::from_secs(3600));
    let app = Upstream::start("orders-app");
    let remora = Remora::start(&callee_yaml(&soon, &app));
    assert_eq!(
        remora.metric_sum("remora_identity_certificate_expiring", &[]),
        1.0,
        "{}",
        remora.metrics()
    );
    assert!(
        remora
            .logs()
            .lines()
            .any(|l| l.contains("mesh certificate expires soon") && l.contains(ORDERS)),
        "{}",
        remora.logs()
    );
    let later = pki.issue("web", WEB, DAY * 2);
    let fine = Remora::start(&callee_yaml(&later, &app));
    assert_eq!(
        fine.metric_sum("remora_identity_certificate_expiring", &[]),
        0.0
    );
}

/// A port free right now (for addresses the mesh model must name before anything binds).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn sidecars_get_certificates_from_the_control_plane_and_talk_mtls() {
    use remora_integration::ControlPlane;
    let pki = Pki::new("mesh.local");
    let app = Upstream::start("orders-app");
    let web_app = Upstream::start("web-app");
    let (orders_in, web_in, web_out) = (free_port(), free_port(), free_port());
    let mesh = format!(
        r#"mtls: {{ trustDomain: mesh.local }}
services:
  - {{ name: orders, endpoints: [{{ address: "127.0.0.1:{orders_in}" }}] }}
  - {{ name: web, endpoints: [{{ address: "127.0.0.1:{web_in}" }}] }}
  - {{ name: ghost, endpoints: [{{ address: "10.9.9.9:80" }}] }}
sidecars:
  - service: orders
    inbound:
      address: "127.0.0.1:{orders_in}"
      app: "{}"
      protocol: HTTP
      forwardPeerIdentity: true
      authorization:
        policies: [{{ name: web-only, rules: [{{ identities: ["{WEB}"] }}] }}]
  - service: web
    inbound: {{ address: "127.0.0.1:{web_in}", app: "{}", protocol: HTTP }}
    upstreams: [{{ service: orders, address: "127.0.0.1:{web_out}" }}]
  - service: ghost
"#,
        app.addr, web_app.addr
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mesh.yaml"), mesh).expect("write");
    let ca = pki.root.display().to_string();
    let cp = ControlPlane::start_with(dir.path(), None, &["--ca", &ca, "--cert-ttl", "1h"]);

    let orders = Remora::start_controlled(&cp.url(), "orders-1", "orders", None, &[], true);
    let web = Remora::start_controlled(&cp.url(), "web-1", "web", None, &[], true);
    // web → (mTLS, orders' identity checked) → orders → app, which sees web's identity.
    let (status, text) = get(&format!("http://127.0.0.1:{web_out}/from-web"), &[]);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(&format!("\"x-remora-peer-identity\":\"{WEB}\"")),
        "{text}"
    );
    // orders only admits web: a plaintext caller is refused at the handshake, and a mesh
    // caller with another identity gets 403 from the policy pushed by the control plane.
    let (status, _) = get(&format!("http://127.0.0.1:{orders_in}/"), &[]);
    assert_eq!(status, 0, "plaintext served on a STRICT listener");
    let stranger = pki.issue("batch", "spiffe://mesh.local/ns/default/sa/batch", DAY);
    let cert = stranger.join("cert.pem").display().to_string();
    let key = stranger.join("key.pem").display().to_string();
    let (status, text) = get(
        &format!("https://127.0.0.1:{orders_in}/"),
        &["-k", "--cert", &cert, "--key", &key],
    );
    assert_eq!(status, 403, "{text}");
    for proxy in [&orders, &web] {
        assert!(
            proxy.metric_sum("remora_identity_certificate_expiry_timestamp_seconds", &[]) > 0.0
        );
        assert_eq!(
            proxy.metric_sum(
                "remora_identity_updates_total",
                &["source=\"control-plane\"", "result=\"ok\""]
            ),
            1.0
        );
    }
    let issued = |cp: &ControlPlane, result: &str| {
        remora_integration::remora::metric_sum(
            &cp.metrics(),
            "remora_control_certificates_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(issued(&cp, "issued"), 2.0, "{}", cp.metrics());

    // A proxy claiming a service whose endpoints it is not: refused, and not ready.
    let ghost = Remora::start_controlled(&cp.url(), "ghost-1", "ghost", None, &[], false);
    eventually("the refusal", Duration::from_secs(15), || {
        (issued(&cp, "denied") >= 1.0).then_some(())
    });
    let (code, body) = ghost.admin_get("/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("waiting for the mesh certificate"), "{body}");
    // The proxy logs the refusal once the answer reaches it.
    eventually(
        "the proxy's log of the refusal",
        Duration::from_secs(15),
        || {
            ghost
                .logs()
                .lines()
                .any(|l| {
                    l.contains("cannot get a mesh certificate") && l.contains("not an endpoint")
                })
                .then_some(())
        },
    );
}

#[test]
fn a_control_plane_certificate_is_renewed_before_it_expires() {
    use remora_integration::ControlPlane;
    let pki = Pki::new("mesh.local");
    let app = Upstream::start("orders-app");
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mesh.yaml"),
        format!(
            "mtls: {{ trustDomain: mesh.local }}\nservices: [{{ name: orders, endpoints: [{{ address: \"127.0.0.1:{port}\" }}] }}]\nsidecars: [{{ service: orders, inbound: {{ address: \"127.0.0.1:{port}\", app: \"{}\" }} }}]\n",
            app.addr
        ),
    )
    .expect("write");
    let ca = pki.root.display().to_string();
    // Four-second certificates: renewed after about 2.8 s (70%), long before they expire.
    let cp = ControlPlane::start_with(dir.path(), None, &["--ca", &ca, "--cert-ttl", "4s"]);
    let orders = Remora::start_controlled(&cp.url(), "orders-1", "orders", None, &[], true);
    let first = expiry(&orders);
    eventually("two renewals", Duration::from_secs(20), || {
        let n = orders.metric_sum(
            "remora_identity_updates_total",
            &["source=\"control-plane\"", "result=\"ok\""],
        );
        (n >= 3.0).then_some(())
    });
    assert!(expiry(&orders) > first);
    let (code, _) = orders.admin_get("/ready");
    assert_eq!(code, 200);
}
