//! Resilience end to end, against the fault-injecting upstream: retries with outlier
//! ejection, the retry budget, per-try timeouts, concurrency thresholds, body replay limits,
//! gRPC conditions and deadlines, active health checks with panic mode, hedging, and state
//! kept across a reload.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use remora_integration::client::{Reply, gets, send_all, statuses};
use remora_integration::faulty::{Fault, Faulty};
use remora_integration::{Remora, eventually};

/// One HTTP listener `out`, one route `r` (with `route`'s extra fields) to cluster `c`
/// (round robin over `endpoints`, with `cluster`'s extra fields).
fn config(endpoints: &[&Faulty], route: &str, cluster: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|f| format!("{{ address: \"{}\" }}", f.addr))
        .collect();
    format!(
        r#"listeners:
  - {{ name: out, address: "127.0.0.1:0", protocol: HTTP, routeTable: main }}
routeTables:
  - name: main
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            forward: {{ cluster: c }}
{route}
clusters:
  - name: c
    lbPolicy: ROUND_ROBIN
    endpoints: [{}]
{cluster}
"#,
        eps.join(", ")
    )
}

fn ok_count(replies: &[Result<Reply, String>]) -> usize {
    replies
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status == 200))
        .count()
}

#[test]
fn one_failing_endpoint_of_three_is_ejected_and_clients_see_no_errors() {
    let good = [Faulty::start("a", Fault::Ok), Faulty::start("b", Fault::Ok)];
    let bad = Faulty::start("bad", Fault::Status(503));
    let remora = Remora::start(&config(
        &[&good[0], &bad, &good[1]],
        "            retry: { retryOn: [gateway-error], maxRetries: 2, backoffBase: 0.001s, backoffMax: 0.005s }",
        "",
    ));
    let replies = send_all(gets(&remora.url("out"), 1000), 1, false);
    assert_eq!(ok_count(&replies), 1000, "{:?}", statuses(&replies));
    // Five failures in a row eject it; it gets nothing after that (30 s ejection).
    assert_eq!(bad.requests(), 5);
    // Each failed try was retried on another endpoint, never the same one.
    assert!(
        bad.attempts().iter().all(|a| a == "1"),
        "{:?}",
        bad.attempts()
    );
    let metric = |name: &str, labels: &[&str]| remora.metric_sum(name, labels);
    assert_eq!(
        metric(
            "remora_outlier_ejections_total",
            &["reason=\"consecutive-gateway-errors\""]
        ),
        1.0
    );
    assert_eq!(metric("remora_endpoints_ejected", &["cluster=\"c\""]), 1.0);
    assert_eq!(
        metric("remora_retries_total", &["reason=\"gateway-error\""]),
        5.0
    );
    assert!(
        remora.logs().contains("endpoint ejected"),
        "{}",
        remora.logs()
    );
    let clusters = remora.admin_get("/clusters").1;
    assert!(clusters.contains("\"ejected\": true"), "{clusters}");
    let text = remora.metrics();
    assert!(
        text.contains(&format!(
            "remora_endpoint_ejected{{cluster=\"c\",endpoint=\"{}\"}} 1",
            bad.addr
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "remora_endpoint_ejected{{cluster=\"c\",endpoint=\"{}\"}} 0",
        good[0].addr
    )));
    let (clean, out) = remora_integration::peers::promtool(&text);
    assert!(clean, "promtool after retries and an ejection: {out}");
}

#[test]
fn an_ejected_endpoint_returns_after_its_time_and_is_probed() {
    let good = Faulty::start("good", Fault::Ok);
    let bad = Faulty::start("bad", Fault::Status(503));
    let remora = Remora::start(&config(
        &[&good, &bad],
        "",
        "    outlierDetection: { consecutiveGatewayErrors: 3, baseEjectionTime: 1s }",
    ));
    let url = remora.url("out");
    send_all(gets(&url, 6), 1, false);
    assert_eq!(bad.requests(), 3);
    assert_eq!(remora.metric_sum("remora_endpoints_ejected", &[]), 1.0);
    // Still failing when it returns: the first request (the probe) ejects it again, for
    // twice as long.
    eventually("the endpoint returns", Duration::from_secs(10), || {
        remora
            .logs()
            .contains("ejected endpoint returns")
            .then_some(())
    });
    send_all(gets(&url, 4), 1, false);
    assert_eq!(bad.requests(), 4);
    assert_eq!(
        remora.metric_sum(
            "remora_outlier_ejections_total",
            &["reason=\"failed-probe\""]
        ),
        1.0
    );
    // Healthy when it returns: it stays.
    bad.set(Fault::Ok);
    eventually(
        "the endpoint returns again",
        Duration::from_secs(10),
        || (remora.metric_sum("remora_endpoints_ejected", &[]) == 0.0).then_some(()),
    );
    let replies = send_all(gets(&url, 20), 1, false);
    assert_eq!(ok_count(&replies), 20);
    assert!(bad.requests() >= 4 + 9, "{}", bad.requests());
}

#[test]
fn the_retry_budget_holds_back_a_retry_storm() {
    let eps: Vec<Faulty> = (0..3)
        .map(|i| Faulty::start(&format!("e{i}"), Fault::Status(503)))
        .collect();
    let remora = Remora::start(&config(
        &[&eps[0], &eps[1], &eps[2]],
        "            retry: { retryOn: [gateway-error], maxRetries: 3, backoffBase: 0.001s, backoffMax: 0.001s }",
        "    retryBudget: { ratio: 0.2, minRetriesPerSecond: 1, window: 10s }
    outlierDetection: { enabled: false }",
    ));
    let requests = 500;
    let replies = send_all(gets(&remora.url("out"), requests), 1, false);
    assert!(statuses(&replies).iter().all(|s| *s == 503));
    let attempts: usize = eps.iter().map(Faulty::requests).sum();
    // (1 + ratio) × requests + floor × window.
    let bound = requests + requests / 5 + 10;
    assert!(
        (requests..=bound).contains(&attempts),
        "{attempts} upstream attempts for {requests} requests (bound {bound})"
    );
    assert!(
        remora.metric_sum("remora_retries_refused_total", &["reason=\"budget\""]) > 0.0,
        "{}",
        remora.metrics()
    );
}

#[test]
fn a_stalled_endpoint_is_cut_off_by_the_per_try_timeout_and_retried_elsewhere() {
    let stalled = Faulty::start("stalled", Fault::Stall);
    let good = Faulty::start("good", Fault::Ok);
    let remora = Remora::start(&config(
        &[&stalled, &good],
        "            timeout: 10s
            retry: { maxRetries: 1, perTryTimeout: 0.2s, backoffBase: 0.001s }",
        "",
    ));
    let replies = send_all(gets(&remora.url("out"), 10), 1, false);
    assert_eq!(ok_count(&replies), 10, "{:?}", statuses(&replies));
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r.header("x-upstream") == "good")
    );
    assert!(stalled.requests() >= 1);
    assert!(
        remora.metric_sum("remora_timeouts_total", &["kind=\"per-try\""]) >= 1.0,
        "{}",
        remora.metrics()
    );
    // Without a retry left, the per-try timeout answers 504.
    let only = Faulty::start("only", Fault::Stall);
    let remora = Remora::start(&config(
        &[&only],
        "            retry: { maxRetries: 0, perTryTimeout: 0.2s }",
        "",
    ));
    let r = send_all(gets(&remora.url("out"), 1), 1, false);
    let r = r[0].as_ref().expect("reply");
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-remora-error"), "per-try-timeout");
}

#[test]
fn requests_over_max_requests_fail_fast_with_overflow_and_none_hang() {
    let slow = Faulty::start("slow", Fault::Delay(1500));
    let remora = Remora::start(&config(
        &[&slow],
        "",
        "    circuitBreakers: { maxRequests: 50 }",
    ));
    let replies = send_all(gets(&remora.url("out"), 200), 200, false);
    assert_eq!(replies.len(), 200);
    let overflow: Vec<&Reply> = replies
        .iter()
        .flatten()
        .filter(|r| r.status == 503 && r.header("x-remora-error") == "overflow")
        .collect();
    assert_eq!(ok_count(&replies), 50, "{:?}", statuses(&replies));
    assert_eq!(overflow.len(), 150);
    // Failing fast: well before the upstream's 1.5 s.
    assert!(
        overflow.iter().all(|r| r.elapsed < Duration::from_secs(1)),
        "{:?}",
        overflow.iter().map(|r| r.elapsed).max()
    );
    assert_eq!(
        remora.metric_sum("remora_overflows_total", &["reason=\"max-requests\""]),
        150.0
    );
    assert_eq!(slow.requests(), 50);
}

#[test]
fn max_pending_requests_bounds_connects_in_progress() {
    let (_held, addr) = remora_integration::peers::unaccepting_listener();
    let placeholder = Faulty::start("placeholder", Fault::Ok);
    let yaml = config(
        &[&placeholder],
        "",
        "    connectTimeout: 1s\n    circuitBreakers: { maxPendingRequests: 5 }",
    )
    .replace(&placeholder.addr.to_string(), &addr.to_string());
    let remora = Remora::start(&yaml);
    let replies = send_all(gets(&remora.url("out"), 20), 20, false);
    let reasons: Vec<String> = replies
        .iter()
        .flatten()
        .map(|r| r.header("x-remora-error").to_owned())
        .collect();
    let count = |what: &str| reasons.iter().filter(|r| *r == what).count();
    assert_eq!(count("connect-timeout"), 5, "{reasons:?}");
    assert_eq!(count("overflow"), 15, "{reasons:?}");
    assert_eq!(
        remora.metric_sum(
            "remora_overflows_total",
            &["reason=\"max-pending-requests\""]
        ),
        15.0
    );
}

#[test]
fn max_connections_bounds_upstream_connections() {
    let slow = Faulty::start("slow", Fault::Delay(1000));
    let remora = Remora::start(&config(
        &[&slow],
        "",
        "    circuitBreakers: { maxConnections: 10 }",
    ));
    let replies = send_all(gets(&remora.url("out"), 40), 40, false);
    assert_eq!(ok_count(&replies), 10, "{:?}", statuses(&replies));
    assert_eq!(
        remora.metric_sum("remora_overflows_total", &["reason=\"max-connections\""]),
        30.0
    );
}

fn post(url: &str, len: usize) -> Request<Full<Bytes>> {
    Request::post(url)
        .body(Full::new(Bytes::from(vec![b'x'; len])))
        .expect("request")
}

#[test]
fn a_small_post_is_replayed_when_allowed_and_a_large_one_is_not_retried() {
    let bad = Faulty::start("bad", Fault::Status(503));
    let good = Faulty::start("good", Fault::Ok);
    let retry = |extra: &str| {
        format!(
            "            retry: {{ retryOn: [gateway-error], maxRetries: 1, backoffBase: 0.001s{extra} }}"
        )
    };
    let no_outlier = "    outlierDetection: { enabled: false }";
    let remora = Remora::start(&config(
        &[&bad, &good],
        &retry(", retryNonIdempotent: true"),
        no_outlier,
    ));
    let url = remora.url("out");
    for http2 in [false, true] {
        let before = good.body_sizes().len();
        let replies = send_all((0..4).map(|_| post(&url, 1024)).collect(), 1, http2);
        assert_eq!(
            ok_count(&replies),
            4,
            "h2 {http2}: {:?}",
            statuses(&replies)
        );
        // The retried bodies arrived whole.
        assert!(
            good.body_sizes()[before..].iter().all(|n| *n == 1024),
            "{:?}",
            good.body_sizes()
        );
        // 1 MiB: over the 64 KiB copy, so sent once; the ones that met `bad` fail.
        let replies = send_all((0..4).map(|_| post(&url, 1 << 20)).collect(), 1, http2);
        assert_eq!(
            ok_count(&replies),
            2,
            "h2 {http2}: {:?}",
            statuses(&replies)
        );
    }
    assert_eq!(
        remora.metric_sum(
            "remora_retries_refused_total",
            &["reason=\"body-too-large\""]
        ),
        4.0
    );
    // A POST is not retried unless the policy says so.
    let remora = Remora::start(&config(&[&bad, &good], &retry(""), no_outlier));
    let replies = send_all(
        (0..4).map(|_| post(&remora.url("out"), 10)).collect(),
        1,
        false,
    );
    assert_eq!(ok_count(&replies), 2);
    assert_eq!(
        remora.metric_sum(
            "remora_retries_refused_total",
            &["reason=\"not-idempotent\""]
        ),
        2.0
    );
}

fn grpc_call(url: &str, timeout: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(format!("{url}/pkg.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        b = b.header("grpc-timeout", t);
    }
    b.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request")
}

#[test]
fn grpc_unavailable_is_retried_and_invalid_argument_is_not() {
    let unavailable = Faulty::start("unavailable", Fault::Grpc(14));
    let good = Faulty::start("good", Fault::Ok);
    let remora = Remora::start(&config(
        &[&unavailable, &good],
        "            retry: { backoffBase: 0.001s }",
        "    outlierDetection: { enabled: false }",
    ));
    let url = remora.url("out");
    let replies = send_all((0..10).map(|_| grpc_call(&url, None)).collect(), 1, true);
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r.header("grpc-status") == "0"),
        "{replies:?}"
    );
    assert_eq!(replies.iter().flatten().count(), 10);
    // Round robin: at least every other call met the failing endpoint first.
    let failed = unavailable.requests();
    assert!(failed >= 5, "{failed}");
    #[allow(clippy::cast_precision_loss)]
    let retried = failed as f64;
    assert_eq!(
        remora.metric_sum("remora_retries_total", &["reason=\"unavailable\""]),
        retried
    );
    unavailable.set(Fault::Grpc(3));
    let replies = send_all((0..10).map(|_| grpc_call(&url, None)).collect(), 1, true);
    let invalid = replies
        .iter()
        .flatten()
        .filter(|r| r.header("grpc-status") == "3")
        .count();
    assert_eq!(invalid, 5, "{replies:?}");
    assert_eq!(unavailable.requests(), failed + 5);
}

#[test]
fn grpc_timeout_sets_the_deadline_and_proxy_errors_are_grpc_statuses() {
    let slow = Faulty::start("slow", Fault::Delay(5000));
    let remora = Remora::start(&config(&[&slow], "", ""));
    let url = remora.url("out");
    let replies = send_all(vec![grpc_call(&url, Some("200m"))], 1, true);
    let r = replies[0].as_ref().expect("reply");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("grpc-status"), "4", "{r:?}");
    assert_eq!(r.header("x-remora-error"), "request-timeout");
    assert!(r.elapsed < Duration::from_secs(3), "{:?}", r.elapsed);
    // No route: UNIMPLEMENTED, as a trailers-only answer.
    let replies = send_all(
        vec![
            Request::post(format!("http://{}/x", remora.addr("out")))
                .header("content-type", "application/grpc")
                .header("host", "nowhere.example")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        ],
        1,
        true,
    );
    let r = replies[0].as_ref().expect("reply");
    assert_eq!(r.header("content-type"), "application/grpc", "{r:?}");
}

#[test]
fn health_checks_take_failing_endpoints_out_and_all_failing_means_panic_mode() {
    let a = Faulty::start("a", Fault::Status(503));
    let b = Faulty::start("b", Fault::Ok);
    let remora = Remora::start(&config(
        &[&a, &b],
        "",
        "    outlierDetection: { enabled: false }
    healthCheck: { httpPath: /health, interval: 0.1s, timeout: 1s, unhealthyThreshold: 2, healthyThreshold: 2 }",
    ));
    eventually("a is unhealthy", Duration::from_secs(10), || {
        (remora.metric_sum("remora_endpoints_unhealthy", &["cluster=\"c\""]) == 1.0).then_some(())
    });
    assert!(remora.logs().contains("failed its health checks"));
    let url = remora.url("out");
    let replies = send_all(gets(&url, 20), 1, false);
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r.header("x-upstream") == "b"),
        "{:?}",
        statuses(&replies)
    );
    // Both unhealthy: traffic goes to both rather than nowhere.
    b.set(Fault::Status(503));
    eventually("both unhealthy", Duration::from_secs(10), || {
        (remora.metric_sum("remora_endpoints_unhealthy", &[]) == 2.0).then_some(())
    });
    let replies = send_all(gets(&url, 10), 1, false);
    assert!(statuses(&replies).iter().all(|s| *s == 503));
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r.header("x-remora-error").is_empty()),
        "answers come from the endpoints, not the proxy"
    );
    // Recovery.
    a.set(Fault::Ok);
    b.set(Fault::Ok);
    eventually("both healthy", Duration::from_secs(10), || {
        (remora.metric_sum("remora_endpoints_unhealthy", &[]) == 0.0).then_some(())
    });
    assert!(remora.metric_sum("remora_health_checks_total", &["reason=\"pass\""]) > 0.0);
    // A TCP check on a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let yaml = config(
        &[&b],
        "",
        "    healthCheck: { tcp: true, interval: 0.1s, unhealthyThreshold: 1 }",
    )
    .replace(
        &format!("{{ address: \"{}\" }}", b.addr),
        &format!(
            "{{ address: \"{}\" }}, {{ address: \"{closed_addr}\" }}",
            b.addr
        ),
    );
    let remora = Remora::start(&yaml);
    eventually(
        "the closed port is unhealthy",
        Duration::from_secs(10),
        || (remora.metric_sum("remora_endpoints_unhealthy", &[]) == 1.0).then_some(()),
    );
    let replies = send_all(gets(&remora.url("out"), 10), 1, false);
    assert_eq!(ok_count(&replies), 10);
}

#[test]
fn a_slow_try_is_hedged_to_another_endpoint() {
    let slow = Faulty::start("slow", Fault::Delay(2000));
    let fast = Faulty::start("fast", Fault::Ok);
    let remora = Remora::start(&config(
        &[&slow, &fast],
        "            hedge: { delay: 0.05s }",
        "",
    ));
    let replies = send_all(gets(&remora.url("out"), 6), 1, false);
    assert_eq!(ok_count(&replies), 6);
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r.header("x-upstream") == "fast" && r.elapsed < Duration::from_secs(1)),
        "{replies:?}"
    );
    // Round robin sends at least every other request to the slow one first.
    assert!(remora.metric_sum("remora_retries_total", &["reason=\"hedge\""]) >= 3.0);
    assert!(slow.requests() >= 3);
    // Without a delay: the route's observed p95 (25 ms until it has seen 100 requests).
    let remora = Remora::start(&config(&[&slow, &fast], "            hedge: {}", ""));
    let replies = send_all(gets(&remora.url("out"), 6), 1, false);
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r.header("x-upstream") == "fast" && r.elapsed < Duration::from_secs(1)),
        "{replies:?}"
    );
}

#[test]
fn a_reload_keeps_ejections_and_breaker_state_of_unchanged_clusters() {
    let good = Faulty::start("good", Fault::Ok);
    let bad = Faulty::start("bad", Fault::Status(503));
    let yaml = format!("version: v1\n{}", config(&[&good, &bad], "", ""));
    let remora = Remora::start(&yaml);
    let url = remora.url("out");
    send_all(gets(&url, 10), 1, false);
    assert_eq!(bad.requests(), 5);
    assert_eq!(remora.metric_sum("remora_endpoints_ejected", &[]), 1.0);
    // A route change (a timeout added) reloads everything but the cluster.
    let changed = yaml.replace("version: v1", "version: v2").replace(
        "forward: { cluster: c }",
        "forward: { cluster: c }\n            timeout: 5s",
    );
    remora.reload(&changed, "v2");
    let replies = send_all(gets(&url, 20), 1, false);
    assert_eq!(ok_count(&replies), 20);
    assert_eq!(bad.requests(), 5, "the ejection survived the reload");
    assert_eq!(remora.metric_sum("remora_endpoints_ejected", &[]), 1.0);
}

#[test]
fn resets_closed_connections_and_occasional_503s_are_retried_away() {
    let reset = Faulty::start("reset", Fault::Reset);
    let closes = Faulty::start("closes", Fault::CloseOnConnect);
    let flaky = Faulty::start(
        "flaky",
        Fault::StatusEvery {
            status: 503,
            every: 4,
        },
    );
    let remora = Remora::start(&config(
        &[&reset, &closes, &flaky],
        "            retry: { maxRetries: 10, backoffBase: 0.001s, backoffMax: 0.005s }",
        "    outlierDetection: { enabled: false }
    retryBudget: { minRetriesPerSecond: 1000 }",
    ));
    let replies = send_all(gets(&remora.url("out"), 200), 1, false);
    assert_eq!(ok_count(&replies), 200, "{:?}", statuses(&replies));
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r.header("x-upstream") == "flaky")
    );
    let retried = |reason: &str| {
        remora.metric_sum("remora_retries_total", &[&format!("reason=\"{reason}\"")])
    };
    assert!(retried("reset") > 0.0, "{}", remora.metrics());
    assert!(retried("gateway-error") > 0.0, "{}", remora.metrics());
    assert!(reset.requests() > 0);
    // The one that closes on connect saw connections but never a request.
    assert_eq!(closes.requests(), 0);
}
