//! Rate limits, fault injection and connection limits end to end: a 50/s route under a
//! 200/s client, keyed buckets, 100,000 keys in bounded memory, a limit pushed from the
//! control plane, 30% aborts hidden by the caller's retries, delays and header faults, and
//! connections closed at accept.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use remora_integration::client::{gets, send_all, send_paced, statuses};
use remora_integration::{ControlPlane, Remora, Upstream, eventually};

/// A proxy with one HTTP listener `l` whose route `r` carries `route_extra`.
fn yaml(app: &Upstream, route_extra: &str, listener_extra: &str) -> String {
    format!(
        r#"listeners:
  - {{ name: l, address: "127.0.0.1:0", protocol: HTTP, routeTable: t{listener_extra} }}
  - {{ name: tcp, address: "127.0.0.1:0", protocol: TCP, cluster: app, connectionLimits: {{ maxConnections: 2, maxConnectionsPerClient: 1 }} }}
routeTables:
  - name: t
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - {{ name: r, forward: {{ cluster: app }}{route_extra} }}
clusters:
  - {{ name: app, endpoints: [{{ address: "{}" }}] }}
"#,
        app.addr
    )
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

fn limited(remora: &Remora, limit: &str, result: &str) -> f64 {
    remora.metric_sum(
        "remora_rate_limited_total",
        &[
            &format!("limit=\"{limit}\""),
            &format!("result=\"{result}\""),
        ],
    )
}

#[test]
fn a_50_per_second_route_admits_the_rate_plus_the_burst_and_answers_429() {
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(
        &app,
        ", rateLimits: [{ name: per-route, requests: 50, interval: 1s, burst: 10 }]",
        "",
    ));
    // 200 requests/s for 5 s.
    let replies = send_paced(gets(&format!("{}/x", remora.url("l")), 1000), 200);
    let codes = statuses(&replies);
    let ok = codes.iter().filter(|&&c| c == 200).count();
    let refused = codes.iter().filter(|&&c| c == 429).count();
    assert_eq!(ok + refused, 1000, "{codes:?}");
    // 50/s over the ~5 s the client ran, plus the burst of 10: within 10%.
    let expected = 50.0 * 5.0 + 10.0;
    assert!(
        (ok as f64 - expected).abs() <= expected * 0.1,
        "{ok} accepted, expected about {expected}"
    );
    let r = replies
        .iter()
        .flatten()
        .find(|r| r.status == 429)
        .expect("a 429");
    assert_eq!(r.header("x-remora-error"), "rate-limited");
    assert_eq!(r.header("ratelimit-policy"), "\"per-route\";q=50;w=1");
    assert_eq!(r.header("ratelimit"), "\"per-route\";r=0;t=1");
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(limited(&remora, "per-route", "limited"), refused as f64);
    assert_eq!(app.requests(), ok);
}

#[test]
fn keyed_buckets_are_independent_and_grpc_gets_resource_exhausted() {
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(
        &app,
        ", rateLimits: [{ name: per-user, requests: 5, interval: 60s, header: x-user }]",
        "",
    ));
    let url = format!("{}/x", remora.url("l"));
    let count = |user: &str| {
        let reqs = (0..8)
            .map(|_| get_with(&url, &[("x-user", user)]))
            .collect();
        statuses(&send_all(reqs, 1, false))
            .iter()
            .filter(|&&c| c == 200)
            .count()
    };
    assert_eq!(count("alice"), 5);
    assert_eq!(count("bob"), 5, "bob has his own bucket");
    assert_eq!(count("alice"), 0, "alice's is still empty");
    // A gRPC caller over the limit gets a trailers-only RESOURCE_EXHAUSTED.
    let r = send_all(
        vec![get_with(
            &url,
            &[("x-user", "alice"), ("content-type", "application/grpc")],
        )],
        1,
        false,
    );
    let r = r[0].as_ref().expect("reply");
    assert_eq!((r.status, r.header("grpc-status")), (200, "8"), "{r:?}");
    assert_eq!(
        remora.metric_sum("remora_rate_limit_keys", &["limit=\"per-user\""]),
        2.0
    );
}

#[test]
fn a_hundred_thousand_keys_stay_within_the_cap() {
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(
        &app,
        ", rateLimits: [{ name: per-key, requests: 1, interval: 60s, header: x-key, maxKeys: 1000 }]",
        "",
    ));
    let url = format!("{}/x", remora.url("l"));
    for chunk in 0..10 {
        let reqs = (0..10_000)
            .map(|i| get_with(&url, &[("x-key", &format!("k{}", chunk * 10_000 + i))]))
            .collect();
        let replies = send_all(reqs, 32, true);
        assert!(
            statuses(&replies).iter().all(|&c| c == 200),
            "fresh keys are never limited"
        );
        let keys = remora.metric_sum("remora_rate_limit_keys", &["limit=\"per-key\""]);
        assert!(
            keys <= 1000.0,
            "{keys} keys after {} requests",
            (chunk + 1) * 10_000
        );
    }
    assert_eq!(
        remora.metric_sum("remora_rate_limit_keys", &["limit=\"per-key\""]),
        1000.0
    );
}

#[test]
fn shadow_mode_counts_and_lets_through() {
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(
        &app,
        ", rateLimits: [{ name: trial, requests: 2, interval: 60s, shadow: true }]",
        "",
    ));
    let replies = send_all(gets(&format!("{}/x", remora.url("l")), 6), 1, false);
    assert!(statuses(&replies).iter().all(|&c| c == 200));
    assert_eq!(limited(&remora, "trial", "shadow"), 4.0);
    assert_eq!(limited(&remora, "trial", "limited"), 0.0);
}

#[test]
fn a_changed_limit_applies_live_and_an_unchanged_one_keeps_its_level() {
    let app = Upstream::start("app");
    let limits = |a: u32| {
        format!(
            ", rateLimits: [{{ name: changed, requests: {a}, interval: 60s }}, {{ name: kept, requests: 4, interval: 60s }}]"
        )
    };
    let remora = Remora::start(&yaml(&app, &limits(2), ""));
    let url = format!("{}/x", remora.url("l"));
    let ok = |n| {
        statuses(&send_all(gets(&url, n), 1, false))
            .iter()
            .filter(|&&c| c == 200)
            .count()
    };
    assert_eq!(ok(3), 2, "`changed` admits 2");
    remora.reload(
        &format!("version: v2\n{}", yaml(&app, &limits(100), "")),
        "v2",
    );
    // `changed` has a new bucket; `kept` remembers the 2 it admitted (2 of 4 left).
    assert_eq!(ok(5), 2);
    assert_eq!(limited(&remora, "kept", "limited"), 3.0);
}

#[test]
fn a_limit_pushed_from_the_control_plane_applies_without_a_restart() {
    let app = Upstream::start("app");
    let mesh = |n: u32| {
        format!(
            r#"services: [{{ name: orders, endpoints: [{{ address: "{}" }}] }}]
policies:
  - service: orders
    routes: [{{ name: all, forward: {{ cluster: orders }}, rateLimits: [{{ name: orders-rate, requests: {n}, interval: 60s }}] }}]
sidecars: [{{ service: web, upstreams: [{{ service: orders, address: "127.0.0.1:0" }}] }}]
"#,
            app.addr
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mesh.yaml"), mesh(2)).expect("write");
    let cp = ControlPlane::start(dir.path(), None);
    let web = Remora::start_controlled(&cp.url(), "web-1", "web", None, &[], true);
    let url = format!("{}/x", web.url("outbound-orders"));
    let ok = |n| {
        statuses(&send_all(gets(&url, n), 1, false))
            .iter()
            .filter(|&&c| c == 200)
            .count()
    };
    assert_eq!(ok(4), 2);
    let (applied, out) = cp.apply(&mesh(50));
    assert!(applied, "{out}");
    eventually("the new limit", Duration::from_secs(15), || {
        (ok(1) == 1).then_some(())
    });
    assert!(ok(10) >= 9);
}

#[test]
fn thirty_percent_aborts_are_hidden_by_the_callers_retries() {
    let app = Upstream::start("app");
    let callee = Remora::start(&yaml(
        &app,
        ", fault: { abort: { percent: 30, httpStatus: 503 } }",
        "",
    ));
    let replies = send_all(gets(&format!("{}/x", callee.url("l")), 2000), 8, false);
    let aborted = statuses(&replies).iter().filter(|&&c| c == 503).count();
    assert!((500..=700).contains(&aborted), "{aborted} of 2000 aborted");
    assert_eq!(
        replies
            .iter()
            .flatten()
            .find(|r| r.status == 503)
            .map(|r| r.header("x-remora-error").to_owned()),
        Some("fault-injected".into())
    );
    // The caller's sidecar retries 503s (budget large enough): no failure reaches the app.
    let caller = Remora::start(&format!(
        r#"listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: t }}
routeTables:
  - name: t
    virtualHosts: [{{ name: all, domains: ["*"], routes: [{{ name: r, forward: {{ cluster: callee }}, retry: {{ retryOn: [gateway-error], maxRetries: 10, backoffBase: 0.001s, backoffMax: 0.002s }} }}] }}]
clusters:
  - {{ name: callee, endpoints: [{{ address: "{}" }}], retryBudget: {{ ratio: 10 }}, circuitBreakers: {{ maxRetries: 1000 }}, outlierDetection: {{ enabled: false }} }}
"#,
        callee.addr("l")
    ));
    let replies = send_all(gets(&format!("{}/y", caller.url("out")), 2000), 8, false);
    let failed = statuses(&replies).iter().filter(|&&c| c != 200).count();
    // Eleven tries all aborted at 30% each happens to one request in 0.3^-11 ≈ 560,000:
    // 2,000 requests expect 0.004 failures. One is chance; two would mean retries fail.
    assert!(failed <= 1, "{failed} of 2000 failed despite retries");
    assert!(caller.metric_sum("remora_retries_total", &[]) >= 400.0);
}

#[test]
fn delays_and_header_faults() {
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(
        &app,
        ", fault: { delay: { percent: 100, fixedDelay: 0.2s }, allowHeaderFaults: true }",
        "",
    ));
    let url = format!("{}/x", remora.url("l"));
    let r = send_all(vec![get_with(&url, &[])], 1, false);
    let r = r[0].as_ref().expect("reply");
    assert_eq!(r.status, 200);
    assert!(r.elapsed >= Duration::from_millis(200), "{:?}", r.elapsed);
    let r = send_all(
        vec![get_with(
            &url,
            &[
                ("x-remora-fault-abort", "418"),
                ("x-remora-fault-delay", "0"),
            ],
        )],
        1,
        false,
    );
    assert_eq!(r[0].as_ref().expect("reply").status, 418);
    assert_eq!(
        remora.metric_sum("remora_faults_injected_total", &["kind=\"abort\""]),
        1.0
    );
}

#[test]
fn connections_over_the_listener_limits_are_closed_at_once() {
    let app = Upstream::start("app");
    let remora = Remora::start(&yaml(&app, "", ""));
    let addr = remora.addr("tcp");
    let request = b"GET /tcp HTTP/1.1\r\nHost: x\r\n\r\n";
    let open = |n: usize| -> Vec<std::net::TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let _ = s.write_all(request);
                s
            })
            .collect()
    };
    // One per client address: of two connections from 127.0.0.1 (accepted on whichever
    // worker), one is served and the other closed unanswered (a reset, as its request bytes
    // were never read).
    let mut conns = open(2);
    let mut buf = [0u8; 512];
    let served: Vec<bool> = conns
        .iter_mut()
        .map(|c| {
            let n = c.read(&mut buf).unwrap_or(0);
            buf[..n].starts_with(b"HTTP/1.1 200")
        })
        .collect();
    assert_eq!(served.iter().filter(|s| **s).count(), 1, "{served:?}");
    assert_eq!(
        remora.metric_sum(
            "remora_connections_rejected_total",
            &["reason=\"max-connections-per-client\""]
        ),
        1.0
    );
    let served_at = served.iter().position(|s| *s).unwrap_or(0);
    let _refused = conns.remove(1 - served_at);
    // The slot comes back when the served connection closes.
    drop(conns.remove(0));
    eventually("the slot back", Duration::from_secs(10), || {
        let mut c = open(1).remove(0);
        let n = c.read(&mut buf).unwrap_or(0);
        buf[..n].starts_with(b"HTTP/1.1 200").then_some(())
    });
}

/// The `requests` of the first rate limit in a proxy's running configuration.
fn running_share(proxy: &Remora) -> u64 {
    let (_, body) = proxy.admin_get("/config");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["config"]["routeTables"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["virtualHosts"].as_array().into_iter().flatten())
        .flat_map(|vh| vh["routes"].as_array().into_iter().flatten())
        .find_map(|r| r["rateLimits"][0]["requests"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_mesh_wide_limit_is_shared_among_the_callers_proxies_and_rebalanced() {
    let app = Upstream::start("app");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mesh.yaml"),
        format!(
            r#"services: [{{ name: orders, endpoints: [{{ address: "{}" }}] }}]
policies:
  - service: orders
    routes: [{{ name: all, forward: {{ cluster: orders }}, rateLimits: [{{ name: orders-mesh, requests: 12, interval: 60s, meshWide: true }}] }}]
sidecars: [{{ service: web, upstreams: [{{ service: orders, address: "127.0.0.1:0" }}] }}]
"#,
            app.addr
        ),
    )
    .expect("write");
    let cp = ControlPlane::start(dir.path(), None);
    let wait_share = |p: &Remora, want: u64| {
        eventually(
            &format!("a share of {want}"),
            Duration::from_secs(15),
            || (running_share(p) == want).then_some(()),
        );
    };
    let web1 = Remora::start_controlled(&cp.url(), "web-1", "web", None, &[], true);
    wait_share(&web1, 12);
    let mut web2 = Remora::start_controlled(&cp.url(), "web-2", "web", None, &[], true);
    let web3 = Remora::start_controlled(&cp.url(), "web-3", "web", None, &[], true);
    for p in [&web1, &web2, &web3] {
        wait_share(p, 4);
    }
    // Three proxies of 4 each: 12 across the mesh.
    let admitted: usize = [&web1, &web2, &web3]
        .iter()
        .map(|p| {
            statuses(&send_all(
                gets(&format!("{}/x", p.url("outbound-orders")), 6),
                1,
                false,
            ))
            .iter()
            .filter(|&&c| c == 200)
            .count()
        })
        .sum();
    assert_eq!(admitted, 12);
    // One goes away: the others get half each.
    web2.terminate(Duration::from_secs(10));
    wait_share(&web1, 6);
    wait_share(&web3, 6);
}
