//! Live reconfiguration: reloads under load lose nothing; bad files are rejected whole and the
//! old configuration keeps serving; listeners come and go; pools survive route changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use remora_integration::peers::curl;
use remora_integration::{Remora, Upstream, eventually};

use crate::sidecar_yaml;

/// A client that sends requests on fresh and kept-alive connections until stopped, counting
/// failures (anything but a 200 from an upstream).
fn load(
    url: String,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let req = http::Request::get(url.as_str())
                    .header("host", "orders.svc")
                    .body(http_body_util::Empty::new())
                    .expect("request");
                match client.request(req).await {
                    Ok(r) if r.status() == 200 && r.headers().contains_key("x-upstream") => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        eprintln!("failed request: {} {:?}", r.status(), r.headers());
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("failed request: {e:?}");
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    });
    (stop, ok, failed, t)
}

#[test]
fn hundred_reloads_under_load_fail_no_request() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let remora = Remora::start(&sidecar_yaml("v0", &[&a], ""));
    let url = format!("{}/echo", remora.url("out"));
    let (stop, ok, failed, t) = load(url);
    eventually("first requests", Duration::from_secs(10), || {
        (ok.load(Ordering::SeqCst) > 10).then_some(())
    });
    for i in 1..=100 {
        let ups: Vec<&Upstream> = if i % 2 == 0 { vec![&a, &b] } else { vec![&b] };
        remora.reload(&sidecar_yaml(&format!("v{i}"), &ups, ""), &format!("v{i}"));
    }
    let before = ok.load(Ordering::SeqCst);
    eventually(
        "requests after the last reload",
        Duration::from_secs(10),
        || (ok.load(Ordering::SeqCst) > before + 10).then_some(()),
    );
    stop.store(true, Ordering::SeqCst);
    t.join().expect("load thread");
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!("100 reloads: {ok} requests succeeded, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert!(a.requests() > 0 && b.requests() > 0);
    assert_eq!(
        remora.metric_sum("remora_config_reloads_total", &["result=\"success\""]),
        101.0
    );
}

#[test]
fn bad_file_is_rejected_whole_and_old_config_serves() {
    let a = Upstream::start("a");
    let remora = Remora::start(&sidecar_yaml("good", &[&a], ""));
    let url = format!("{}/echo", remora.url("out"));
    let bad = [
        "listeners: [ {name: a\n".to_owned(),
        "listeners:\n  - {name: x, adress: '127.0.0.1:0', protocol: TCP, cluster: c}\n".to_owned(),
        sidecar_yaml("bad", &[&a], "").replace(&a.addr.to_string(), "10.0.0.1:99999"),
        sidecar_yaml(
            "bad",
            &[&a],
            "          - { name: r, match: { pathRegex: '(' }, forward: { cluster: web } }\n",
        ),
    ];
    for (i, text) in bad.iter().enumerate() {
        remora.write_config(text);
        eventually("rejection counted", Duration::from_secs(10), || {
            (remora.metric_sum("remora_config_reloads_total", &["result=\"failure\""])
                >= (i + 1) as f64)
                .then_some(())
        });
        assert_eq!(remora.version(), "good");
        let (out, _, ok) = curl(&["-H", "Host: orders.svc", &url]);
        assert!(ok && out.contains("\"server\":\"a\""), "{out}");
    }
    let logs = remora.logs();
    assert!(
        logs.contains("invalid socket address \\\"10.0.0.1:99999\\\""),
        "{logs}"
    );
    assert!(logs.contains("configuration rejected"), "{logs}");
}

#[test]
fn listeners_are_added_and_removed_and_pools_survive_route_changes() {
    let a = Upstream::start("a");
    let remora = Remora::start(&sidecar_yaml("v1", &[&a], ""));
    let url = format!("{}/echo", remora.url("out"));
    for _ in 0..5 {
        curl(&["-H", "Host: orders.svc", &url]);
    }
    let conns = a.connections();
    // A route change (new route) keeps the cluster's pooled connection.
    let extra = "          - { name: extra, match: { pathPrefix: /extra }, directResponse: { status: 204 } }\n";
    remora.reload(&sidecar_yaml("v2", &[&a], extra), "v2");
    for _ in 0..5 {
        let (out, _, ok) = curl(&["-H", "Host: orders.svc", &url]);
        assert!(ok, "{out}");
    }
    assert_eq!(
        a.connections(),
        conns,
        "upstream connections were reused across the reload"
    );
    // Remove the AUTO listener: its port stops accepting; `out` keeps serving.
    let auto = remora.addr("auto");
    let without_auto = sidecar_yaml("v3", &[&a], "")
        .lines()
        .filter(|l| !l.contains("name: auto"))
        .collect::<Vec<_>>()
        .join("\n");
    remora.reload(&without_auto, "v3");
    eventually("auto listener closed", Duration::from_secs(5), || {
        std::net::TcpStream::connect(auto).is_err().then_some(())
    });
    assert!(!remora.listeners().contains_key("auto"));
    let (_, _, ok) = curl(&["-H", "Host: orders.svc", &url]);
    assert!(ok);
}
