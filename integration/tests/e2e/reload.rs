//! Live reconfiguration: reloads under load lose nothing; bad files are rejected whole and the
//! old configuration keeps serving; listeners come and go; pools survive route changes.

use std::time::Duration;

use remora_integration::load::Load;
use remora_integration::peers::curl;
use remora_integration::{Remora, Upstream, eventually};

use crate::sidecar_yaml;

#[test]
fn hundred_reloads_under_load_fail_no_request() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let remora = Remora::start(&sidecar_yaml("v0", &[&a], ""));
    let url = format!("{}/echo", remora.url("out"));
    let load = Load::start(url, "orders.svc");
    load.wait_for(10);
    for i in 1..=100 {
        let ups: Vec<&Upstream> = if i % 2 == 0 { vec![&a, &b] } else { vec![&b] };
        remora.reload(&sidecar_yaml(&format!("v{i}"), &ups, ""), &format!("v{i}"));
    }
    load.wait_for(10);
    let (ok, failed) = load.stop();
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
    // Add a listener: bound and serving after the reload, with a newer load time.
    let loaded = |r: &Remora| crate::json(&r.admin_get("/config").1)["loadedAt"].as_f64();
    let before = loaded(&remora).expect("loadedAt");
    let with_extra = sidecar_yaml("v3", &[&a], extra)
        .replace("timeout: 0.5s", "timeout: 5s")
        .replace(
        "listeners:\n",
        "listeners:\n  - { name: extra, address: \"127.0.0.1:0\", protocol: HTTP, routeTable: main }\n",
    );
    remora.reload(&with_extra, "v3");
    assert!(loaded(&remora).expect("loadedAt") > before);
    let (out, _, ok) = curl(&[
        "-H",
        "Host: orders.svc",
        &format!("{}/echo", remora.url("extra")),
    ]);
    assert!(ok && out.contains("\"server\":\"a\""), "{out}");
    // Remove the AUTO listener while a request on it is in flight: the request completes,
    // the port stops accepting, `out` keeps serving.
    let auto = remora.addr("auto");
    let served = a.requests();
    let inflight = std::thread::spawn(move || {
        curl(&[
            "-H",
            "Host: orders.svc",
            &format!("http://{auto}/delay/800"),
        ])
    });
    eventually("request in flight on auto", Duration::from_secs(5), || {
        (a.requests() > served).then_some(())
    });
    let without_auto = sidecar_yaml("v4", &[&a], "")
        .lines()
        .filter(|l| !l.contains("name: auto"))
        .collect::<Vec<_>>()
        .join("\n");
    remora.reload(&without_auto, "v4");
    eventually("auto listener closed", Duration::from_secs(5), || {
        std::net::TcpStream::connect(auto).is_err().then_some(())
    });
    assert!(!remora.listeners().contains_key("auto"));
    let (out, err, ok) = inflight.join().expect("in-flight client");
    assert!(
        ok && out.contains("delayed"),
        "the drained request completes: {out}{err}"
    );
    let (_, _, ok) = curl(&["-H", "Host: orders.svc", &url]);
    assert!(ok);
}

/// CPU seconds (user + system) used so far by process `pid`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[test]
fn reading_the_watched_file_does_not_trigger_reloads() {
    // Opening and reading the config file (editors, `cat`, our own reload) are not changes;
    // a watcher that reacted to them would re-read the file in a loop and burn a core.
    let a = Upstream::start("a");
    let remora = Remora::start(&sidecar_yaml("v1", &[&a], ""));
    for _ in 0..5 {
        let _ = std::fs::read_to_string(remora.config_path()).expect("read");
    }
    let before = cpu_seconds(remora.pid());
    let wall = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(remora.pid()) - before;
    let share = used / wall.elapsed().as_secs_f64();
    assert!(
        share < 0.25,
        "an idle proxy used {:.0}% of a core",
        share * 100.0
    );
    assert_eq!(
        remora.metric_sum("remora_config_reloads_total", &[]),
        1.0,
        "only the initial load"
    );
}
