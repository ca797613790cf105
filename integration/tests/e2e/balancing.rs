//! Load balancing over real upstreams: round robin with weights, ring-hash affinity, P2C
//! steering away from a slow endpoint (with its estimate surviving a reload), and splits.

use std::time::Duration;

use remora_integration::peers::curl;
use remora_integration::{Remora, Upstream};

fn yaml(version: &str, policy: &str, ups: &[(&Upstream, u32)], other: &Upstream) -> String {
    let eps: Vec<String> = ups
        .iter()
        .map(|(u, w)| format!("{{ address: \"{}\", weight: {w} }}", u.addr))
        .collect();
    format!(
        r#"version: "{version}"
listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: main }}
routeTables:
  - name: main
    virtualHosts: [{{ name: all, domains: ["*"], routes: [
      {{ name: split, match: {{ pathPrefix: /split }}, forward: {{ weightedClusters: [{{ name: c, weight: 3 }}, {{ name: other, weight: 1 }}] }} }},
      {{ name: all, forward: {{ cluster: c }} }} ] }}]
clusters:
  - name: c
    endpoints: [{}]
    {policy}
  - {{ name: other, endpoints: [{{ address: "{}" }}] }}
"#,
        eps.join(", "),
        other.addr
    )
}

/// Sends n requests (one curl, keep-alive) and returns the x-upstream names.
fn servers(url: &str, n: usize, header: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "-s".to_owned(),
        "-o".into(),
        "/dev/null".into(),
        "-D".into(),
        "-".into(),
    ];
    if let Some(h) = header {
        args.push("-H".into());
        args.push(h.into());
    }
    for _ in 0..n {
        args.push(url.to_owned());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, _, _) = curl(&refs);
    out.lines()
        .filter_map(|l| l.strip_prefix("x-upstream: "))
        .map(|s| s.trim().to_owned())
        .collect()
}

fn count(v: &[String], name: &str) -> usize {
    v.iter().filter(|s| *s == name).count()
}

#[test]
fn round_robin_honours_weights() {
    let (a, b, o) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("o"),
    );
    let remora = Remora::start(&yaml(
        "v1",
        "lbPolicy: ROUND_ROBIN",
        &[(&a, 1), (&b, 3)],
        &o,
    ));
    let got = servers(&format!("{}/", remora.url("out")), 80, None);
    assert_eq!(got.len(), 80);
    assert_eq!((count(&got, "a"), count(&got, "b")), (20, 60), "{got:?}");
}

#[test]
fn ring_hash_keeps_a_key_on_one_endpoint() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(&format!("u{i}"))).collect();
    let o = Upstream::start("o");
    let refs: Vec<(&Upstream, u32)> = ups.iter().map(|u| (u, 1)).collect();
    let remora = Remora::start(&yaml(
        "v1",
        "lbPolicy: RING_HASH\n    ringHash: { header: x-user }",
        &refs,
        &o,
    ));
    let url = format!("{}/", remora.url("out"));
    let mut seen = std::collections::HashSet::new();
    for user in 0..12 {
        let got = servers(&url, 5, Some(&format!("x-user: user-{user}")));
        assert_eq!(got.len(), 5);
        assert!(
            got.iter().all(|s| *s == got[0]),
            "user-{user} moved: {got:?}"
        );
        seen.insert(got[0].clone());
    }
    assert!(seen.len() >= 2, "keys spread over endpoints: {seen:?}");
}

#[test]
fn ring_hash_on_the_client_address_keeps_each_client_on_one_endpoint() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(&format!("u{i}"))).collect();
    let o = Upstream::start("o");
    let refs: Vec<(&Upstream, u32)> = ups.iter().map(|u| (u, 1)).collect();
    let remora = Remora::start(&yaml(
        "v1",
        "lbPolicy: RING_HASH\n    ringHash: { sourceIp: true }",
        &refs,
        &o,
    ));
    // Every 127.0.0.0/8 address is local on Linux: each --interface is another client IP.
    let url = format!("{}/", remora.url("out"));
    let mut seen = std::collections::HashSet::new();
    for client in 2..14 {
        let ip = format!("127.0.0.{client}");
        let mut args = vec!["-s", "-o", "/dev/null", "-D", "-", "--interface", &ip];
        args.extend(std::iter::repeat_n(url.as_str(), 5));
        let got: Vec<String> = curl(&args)
            .0
            .lines()
            .filter_map(|l| l.strip_prefix("x-upstream: "))
            .map(|s| s.trim().to_owned())
            .collect();
        assert_eq!(got.len(), 5, "{ip}");
        assert!(got.iter().all(|s| *s == got[0]), "{ip} moved: {got:?}");
        seen.insert(got[0].clone());
    }
    assert!(seen.len() >= 2, "clients spread over endpoints: {seen:?}");
}

#[test]
fn p2c_peak_ewma_avoids_a_slow_endpoint_across_a_reload() {
    let slow = Upstream::slow("slow", Duration::from_millis(150));
    let fast = Upstream::start("fast");
    let o = Upstream::start("o");
    // First the cluster has only the slow endpoint: its latency estimate is learnt.
    let remora = Remora::start(&yaml("v1", "", &[(&slow, 1)], &o));
    let url = format!("{}/", remora.url("out"));
    assert_eq!(count(&servers(&url, 3, None), "slow"), 3);
    // Add the fast endpoint. The slow one keeps its estimate through the swap (same cluster
    // and address), so P2C sends (almost) everything to the fast one; round robin would send
    // half to each.
    remora.reload(&yaml("v2", "", &[(&slow, 1), (&fast, 1)], &o), "v2");
    let estimate = |addr: std::net::SocketAddr| {
        let (_, body) = remora.admin_get("/clusters");
        let v = crate::json(&body);
        v["c"]["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["address"] == addr.to_string()))
            .and_then(|e| e["ewmaMs"].as_f64())
            .expect("endpoint in /clusters")
    };
    // The estimate learnt before the swap is still there (a reset would show 30 ms).
    let kept = estimate(slow.addr);
    assert!(
        kept > 100.0,
        "slow endpoint estimate after the reload: {kept} ms"
    );
    let got = servers(&url, 20, None);
    assert_eq!(got.len(), 20);
    assert_eq!(
        count(&got, "slow"),
        0,
        "P2C over peak EWMA should avoid the slow endpoint: {got:?}"
    );
    assert!(estimate(fast.addr) < 30.0);
}

#[test]
fn weighted_split_between_clusters() {
    let (a, o) = (Upstream::start("a"), Upstream::start("o"));
    let remora = Remora::start(&yaml("v1", "", &[(&a, 1)], &o));
    let got = servers(&format!("{}/split", remora.url("out")), 400, None);
    assert_eq!(got.len(), 400);
    let other = count(&got, "o");
    // Expected 100 (1 in 4); binomial sd ≈ 8.7, so ±45 is over 5 sd.
    assert!(
        (55..=145).contains(&other),
        "other cluster got {other} of 400"
    );
}
