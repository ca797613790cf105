//! Tracing end to end with a real OTLP/gRPC receiver (`integration/peers/otlp_collector.py`):
//! app → sidecar A (outbound) → sidecar B (inbound) → app B is one trace with parent/child
//! spans and HTTP attributes; a B3-only caller joins; retries become child spans; an unsampled
//! trace is still propagated; a dead collector slows nothing and its spans are counted.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use remora_integration::client::{Reply, gets, send_all};
use remora_integration::faulty::{Fault, Faulty};
use remora_integration::peers::PyServer;
use remora_integration::{Remora, Upstream, eventually};
use serde_json::Value;

fn tracing_block(collector: &str, service: &str, ratio: f64, queue: u32) -> String {
    format!(
        "tracing: {{ collector: \"http://{collector}\", sampleRatio: {ratio}, serviceName: {service}, maxQueue: {queue} }}\n"
    )
}

/// A sidecar with one listener `l` (direction `dir`) forwarding to `endpoints`.
fn sidecar(tracing: &str, dir: &str, endpoints: &[String], route_extra: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{{ address: \"{e}\" }}"))
        .collect();
    format!(
        r#"{tracing}listeners:
  - {{ name: l, address: "127.0.0.1:0", protocol: HTTP, routeTable: t, direction: {dir} }}
routeTables:
  - name: t
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - {{ name: r, forward: {{ cluster: c }}{route_extra} }}
clusters:
  - {{ name: c, lbPolicy: ROUND_ROBIN, endpoints: [{}] }}
"#,
        eps.join(", ")
    )
}

fn read_spans(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_spans(file: &Path, n: usize, what: &str) -> Vec<Value> {
    eventually(what, Duration::from_secs(20), || {
        let s = read_spans(file);
        (s.len() >= n).then_some(s)
    })
}

fn of_trace<'a>(spans: &'a [Value], trace: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["trace_id"] == trace).collect()
}

/// A GET of `url` with these headers.
fn get_with(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

fn echo_header(r: &Reply, name: &str) -> String {
    let v: Value = serde_json::from_slice(&r.body).expect("echo json");
    v["headers"][name].as_str().unwrap_or_default().to_owned()
}

struct Chain {
    a: Remora,
    _b: Remora,
    _app: Upstream,
}

fn chain(collector: &str) -> Chain {
    let app = Upstream::start("app-b");
    let b = Remora::start(&sidecar(
        &tracing_block(collector, "b", 1.0, 2048),
        "INBOUND",
        &[app.addr.to_string()],
        "",
    ));
    let a = Remora::start(&sidecar(
        &tracing_block(collector, "a", 1.0, 2048),
        "OUTBOUND",
        &[b.addr("l").to_string()],
        "",
    ));
    Chain {
        a,
        _b: b,
        _app: app,
    }
}

#[test]
fn a_request_through_two_sidecars_is_one_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spans.jsonl");
    let collector = PyServer::start(
        "otlp_collector.py",
        &["--out", file.to_str().expect("path")],
    );
    let c = chain(&collector.addr());
    let replies = send_all(gets(&format!("{}/hello", c.a.url("l")), 1), 1, false);
    let r = replies[0].as_ref().expect("reply");
    assert_eq!(r.status, 200);
    let spans = wait_spans(&file, 2, "two spans");
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let a = spans
        .iter()
        .find(|s| s["resource"]["service.name"] == "a")
        .expect("span from a");
    let b = spans
        .iter()
        .find(|s| s["resource"]["service.name"] == "b")
        .expect("span from b");
    assert_eq!(a["trace_id"], b["trace_id"]);
    assert_eq!(a["parent_span_id"], "", "a started the trace");
    assert_eq!(b["parent_span_id"], a["span_id"], "b's span is a's child");
    assert_eq!(a["kind"], 3, "client span on the outbound side");
    assert_eq!(b["kind"], 2, "server span on the inbound side");
    for s in [a, b] {
        let at = &s["attributes"];
        assert_eq!(at["http.request.method"], "GET", "{s}");
        assert_eq!(at["http.response.status_code"], 200, "{s}");
        assert_eq!(at["http.route"], "r", "{s}");
        assert_eq!(at["url.path"], "/hello", "{s}");
        assert_eq!(at["remora.cluster"], "c", "{s}");
        assert_eq!(at["remora.retries"], 0, "{s}");
        assert!(at["remora.upstream.address"].as_str().is_some(), "{s}");
        assert_eq!(s["name"], "GET r");
    }
    // The app behind b sees b's span as its parent.
    let tp = echo_header(r, "traceparent");
    let trace = b["trace_id"].as_str().expect("trace id");
    let span = b["span_id"].as_str().expect("span id");
    assert_eq!(tp, format!("00-{trace}-{span}-01"));
}

#[test]
fn a_b3_only_caller_joins_and_an_unsampled_trace_is_still_propagated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spans.jsonl");
    let collector = PyServer::start(
        "otlp_collector.py",
        &["--out", file.to_str().expect("path")],
    );
    let c = chain(&collector.addr());
    let url = c.a.url("l");
    let b3 = get_with(
        &url,
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    );
    let replies = send_all(vec![b3], 1, false);
    assert_eq!(replies[0].as_ref().expect("reply").status, 200);
    let spans = wait_spans(&file, 2, "two spans");
    let joined = of_trace(&spans, "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(joined.len(), 2, "{spans:#?}");
    let a = joined
        .iter()
        .find(|s| s["resource"]["service.name"] == "a")
        .expect("a");
    assert_eq!(a["parent_span_id"], "a2fb4a1d1a96d312");
    // A single-header b3 caller joins too.
    let single = get_with(
        &url,
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    );
    send_all(vec![single], 1, false);
    let spans = wait_spans(&file, 4, "four spans");
    assert_eq!(
        of_trace(&spans, "80f198ee56343ba864fe8b2a57d3eff7").len(),
        2
    );
    // A caller that decided not to sample: no spans, but the decision travels on.
    let unsampled = get_with(
        &url,
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )],
    );
    let replies = send_all(vec![unsampled], 1, false);
    let tp = echo_header(replies[0].as_ref().expect("reply"), "traceparent");
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && tp.ends_with("-00"),
        "{tp}"
    );
    // Spans are exported in order: once a later sampled request's spans are in, any span
    // of the unsampled one would be too.
    let later = get_with(
        &url,
        &[("b3", "11111111111111111111111111111111-2222222222222222-1")],
    );
    send_all(vec![later], 1, false);
    let all = eventually("the later trace", Duration::from_secs(20), || {
        let s = read_spans(&file);
        (of_trace(&s, "11111111111111111111111111111111").len() == 2).then_some(s)
    });
    assert!(of_trace(&all, "0af7651916cd43dd8448eb211c80319c").is_empty());
}

#[test]
fn each_try_of_a_retried_request_is_a_child_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spans.jsonl");
    let collector = PyServer::start(
        "otlp_collector.py",
        &["--out", file.to_str().expect("path")],
    );
    let bad = Faulty::start("bad", Fault::Status(503));
    let good = Faulty::start("good", Fault::Ok);
    let remora = Remora::start(&sidecar(
        &tracing_block(&collector.addr(), "a", 1.0, 2048),
        "OUTBOUND",
        &[bad.addr.to_string(), good.addr.to_string()],
        ", retry: { backoffBase: 0.001s }",
    ));
    // Round robin: of two requests, one meets `bad` first and is retried.
    let replies = send_all(gets(&remora.url("l"), 2), 1, false);
    assert!(replies.iter().flatten().all(|r| r.status == 200));
    let spans = wait_spans(&file, 5, "2 request spans and 3 try spans");
    let retried = spans
        .iter()
        .find(|s| s["attributes"]["remora.retries"] == 1)
        .expect("a retried request span");
    let tries: Vec<&Value> = spans
        .iter()
        .filter(|s| s["parent_span_id"] == retried["span_id"])
        .collect();
    assert_eq!(tries.len(), 2, "{spans:#?}");
    let codes: Vec<i64> = tries
        .iter()
        .filter_map(|t| t["attributes"]["http.response.status_code"].as_i64())
        .collect();
    assert!(codes.contains(&503) && codes.contains(&200), "{codes:?}");
    assert!(tries.iter().all(|t| t["trace_id"] == retried["trace_id"]));
}

#[test]
fn a_dead_collector_slows_nothing_and_its_spans_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spans.jsonl");
    let live = PyServer::start(
        "otlp_collector.py",
        &["--out", file.to_str().expect("path")],
    );
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let app = Upstream::start("app");
    let run = |collector: &str| {
        let remora = Remora::start(&sidecar(
            &tracing_block(collector, "a", 1.0, 64),
            "OUTBOUND",
            &[app.addr.to_string()],
            "",
        ));
        let started = Instant::now();
        let replies = send_all(gets(&remora.url("l"), 2000), 8, false);
        let took = started.elapsed();
        assert!(replies.iter().flatten().all(|r| r.status == 200));
        #[allow(clippy::cast_precision_loss)]
        let rate = 2000.0 / took.as_secs_f64();
        (remora, rate)
    };
    let (with_live, live_rate) = run(&live.addr());
    let (with_dead, dead_rate) = run(&dead.to_string());
    println!("requests/s with the collector up: {live_rate:.0}; down: {dead_rate:.0}");
    assert!(
        dead_rate > live_rate * 0.5,
        "a dead collector slowed requests: {dead_rate:.0}/s vs {live_rate:.0}/s"
    );
    let count = |r: &Remora, result: &str| {
        r.metric_sum(
            "remora_trace_spans_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(count(&with_live, "sampled"), 2000.0);
    eventually(
        "the live collector got them",
        Duration::from_secs(20),
        || (count(&with_live, "exported") + count(&with_live, "dropped") == 2000.0).then_some(()),
    );
    assert_eq!(count(&with_dead, "sampled"), 2000.0);
    eventually("every span accounted for", Duration::from_secs(30), || {
        let lost = count(&with_dead, "dropped") + count(&with_dead, "failed");
        (lost == 2000.0).then_some(())
    });
    assert!(
        count(&with_dead, "dropped") > 0.0,
        "{}",
        with_dead.metrics()
    );
    drop(live);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn access_log_lines_parse_as_json_and_carry_the_trace_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spans_file = dir.path().join("spans.jsonl");
    let log_file = dir.path().join("access.log");
    let collector = PyServer::start(
        "otlp_collector.py",
        &["--out", spans_file.to_str().expect("path")],
    );
    let app = Upstream::start("app");
    let yaml = sidecar(
        &tracing_block(&collector.addr(), "a", 1.0, 2048),
        "OUTBOUND",
        &[app.addr.to_string()],
        "",
    )
    .replace(
        "direction: OUTBOUND }",
        &format!(
            "direction: OUTBOUND, accessLog: {{ path: \"{}\" }} }}",
            log_file.display()
        ),
    );
    let remora = Remora::start(&yaml);
    let req = get_with(
        &format!("{}/bytes/1000", remora.url("l")),
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-request-id", "req-42"),
        ],
    );
    let replies = send_all(vec![req], 1, false);
    assert_eq!(replies[0].as_ref().expect("reply").body.len(), 1000);
    let line: Value = eventually("an access-log line", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log_file).ok()?;
        let first = text.lines().next()?;
        Some(serde_json::from_str(first).expect("the line is JSON"))
    });
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    assert_eq!(line["request_id"], "req-42");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/bytes/1000");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_sent"], 1000);
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["upstream"], app.addr.to_string());
    assert_eq!(line["route"], "r");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{line}"
    );
    assert!(
        line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
    assert!(line["response_flags"].is_null());
    // The proxy's own answers carry their reason; TEXT lines go to stdout.
    let text = sidecar("", "OUTBOUND", &[], "").replace(
        "direction: OUTBOUND }",
        "direction: OUTBOUND, accessLog: { format: TEXT } }",
    );
    let remora = Remora::start(&text);
    send_all(gets(&format!("{}/nothing", remora.url("l")), 1), 1, false);
    let line = eventually("a text line", Duration::from_secs(10), || {
        remora
            .logs()
            .lines()
            .find(|l| l.contains("\"GET /nothing HTTP/1.1\""))
            .map(str::to_owned)
    });
    assert!(line.contains(" 503 no-healthy-endpoints "), "{line}");
    eventually("the line counted written", Duration::from_secs(10), || {
        let n = remora.metric_sum("remora_access_log_lines_total", &["result=\"written\""]);
        (n == 1.0).then_some(())
    });
}

#[test]
fn tap_streams_matching_live_requests_when_enabled() {
    let app = Upstream::start("app");
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\", tap: true }}\n{}",
        sidecar("", "OUTBOUND", &[app.addr.to_string()], "")
    );
    let remora = Remora::start(&yaml);
    let tap_url = format!(
        "http://{}/tap?max=3&pathPrefix=/tapped",
        remora.admin_addr()
    );
    let watcher = std::thread::spawn(move || {
        remora_integration::peers::curl(&["-sN", "--max-time", "20", &tap_url])
    });
    let url = remora.url("l");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watcher.is_finished() && Instant::now() < deadline {
        send_all(gets(&format!("{url}/other"), 1), 1, false);
        send_all(gets(&format!("{url}/tapped/x"), 1), 1, false);
    }
    let (out, _, ok) = watcher.join().expect("tap thread");
    assert!(ok, "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l["path"] == "/tapped/x" && l["status"] == 200)
    );
    // A bad query says why; with tap off the endpoint says how to turn it on.
    let (code, body) = remora.admin_get("/tap?max=0");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("max: must be a number from 1 to 10000"),
        "{body}"
    );
    let off = Remora::start(&sidecar("", "OUTBOUND", &[app.addr.to_string()], ""));
    let (code, body) = off.admin_get("/tap");
    assert_eq!(code, 404);
    assert!(body.contains("admin: { tap: true }"), "{body}");
}

#[test]
fn spans_can_go_over_otlp_http_protobuf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spans.jsonl");
    let collector = PyServer::start(
        "otlp_collector.py",
        &["--out", file.to_str().expect("path"), "--http"],
    );
    let app = Upstream::start("app");
    let tracing = format!(
        "tracing: {{ collector: \"http://{}/v1/traces\", protocol: HTTP_PROTOBUF, sampleRatio: 1.0, serviceName: h }}\n",
        collector.addr()
    );
    let remora = Remora::start(&sidecar(&tracing, "OUTBOUND", &[app.addr.to_string()], ""));
    send_all(gets(&remora.url("l"), 3), 1, false);
    let spans = wait_spans(&file, 3, "three spans over HTTP");
    assert!(spans.iter().all(|s| s["resource"]["service.name"] == "h"));
    // Counted once the collector's answer is in.
    eventually(
        "three spans counted exported",
        Duration::from_secs(10),
        || {
            let n = remora.metric_sum("remora_trace_spans_total", &["result=\"exported\""]);
            (n == 3.0).then_some(())
        },
    );
}

#[test]
fn request_and_response_bytes_are_counted_per_route() {
    let app = Upstream::start("app");
    let remora = Remora::start(&sidecar("", "OUTBOUND", &[app.addr.to_string()], ""));
    let url = remora.url("l");
    send_all(gets(&format!("{url}/bytes/1000"), 2), 1, false);
    send_all(gets(&format!("{url}/bytes/3000"), 1), 1, true);
    let post = |n: usize| {
        Request::post(format!("{url}/echo"))
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .expect("request")
    };
    // Small whole bodies (HTTP/1.1 fast path), a streamed one (HTTP/2), a large one.
    send_all(vec![post(500)], 1, false);
    send_all(vec![post(700)], 1, true);
    send_all(vec![post(200_000)], 1, false);
    let m = |name: &str| remora.metric_sum(name, &["route=\"r\"", "cluster=\"c\""]);
    assert_eq!(m("remora_request_bytes_total"), 201_200.0);
    assert!(
        m("remora_response_bytes_total") >= 5000.0,
        "{}",
        remora.metrics()
    );
}

#[test]
fn a_route_can_force_sampling_and_connections_are_counted_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spans.jsonl");
    let collector = PyServer::start(
        "otlp_collector.py",
        &["--out", file.to_str().expect("path")],
    );
    let app = Upstream::start("app");
    // Ratio 0 and an unsampled caller, but the route says always.
    let remora = Remora::start(&sidecar(
        &tracing_block(&collector.addr(), "a", 0.0, 2048),
        "OUTBOUND",
        &[app.addr.to_string()],
        ", forceTrace: true",
    ));
    let req = get_with(
        &remora.url("l"),
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )],
    );
    let replies = send_all(vec![req], 1, false);
    let tp = echo_header(replies[0].as_ref().expect("reply"), "traceparent");
    assert!(
        tp.ends_with("-01"),
        "the upstream learns it is sampled: {tp}"
    );
    let spans = wait_spans(&file, 1, "the forced span");
    assert_eq!(spans[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    // The client's connection and the pooled upstream one end with the proxy's peers.
    drop(replies);
    eventually(
        "the client connection is counted closed",
        Duration::from_secs(10),
        || {
            (remora.metric_sum("remora_downstream_connections_closed_total", &[]) >= 1.0)
                .then_some(())
        },
    );
}

#[test]
fn spans_carry_the_proxys_mesh_identity_in_their_resource() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spans.jsonl");
    let collector = PyServer::start(
        "otlp_collector.py",
        &["--out", file.to_str().expect("path")],
    );
    let pki = remora_integration::pki::Pki::new("mesh.local");
    let id = "spiffe://mesh.local/ns/default/sa/orders";
    let certs = pki.issue("orders", id, remora_integration::pki::DAY);
    let app = Upstream::start("app");
    let mut yaml = sidecar(
        &tracing_block(&collector.addr(), "orders", 1.0, 2048),
        "INBOUND",
        &[app.addr.to_string()],
        "",
    );
    yaml.push_str(&remora_integration::pki::identity_yaml(
        &certs,
        "mesh.local",
        "",
    ));
    let remora = Remora::start(&yaml);
    let replies = send_all(gets(&format!("{}/who", remora.url("l")), 1), 1, false);
    assert_eq!(replies[0].as_ref().expect("reply").status, 200);
    let spans = wait_spans(&file, 1, "a span");
    assert_eq!(
        spans[0]["resource"]["remora.mesh.identity"], id,
        "{spans:#?}"
    );
    assert_eq!(spans[0]["resource"]["service.name"], "orders");
}
