//! The `remora-control` binary end to end: `serve` on port 0 logs its bound addresses as
//! JSON, `apply`/`diff`/`get`/`validate` talk to it, `/metrics` passes `promtool check
//! metrics`, a bad file change is counted and the last good model stays, SIGTERM exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_remora-control");
const WAIT: Duration = Duration::from_secs(20);

const MESH: &str = r#"
services:
  - { name: orders, endpoints: [{ address: "10.0.0.1:80" }] }
sidecars:
  - service: web
    inbound: { address: "127.0.0.1:4143", app: "127.0.0.1:8080" }
    upstreams: [{ service: orders, address: "127.0.0.1:7001" }]
"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("remora-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Server {
    child: Child,
    api: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--mesh"])
        .arg(dir)
        .args([
            "--grpc",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(["--dns-server", "127.0.0.1:9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut api = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["message"] == "control plane listening" {
            assert!(v["grpc"].as_str().unwrap().starts_with("127.0.0.1:"));
            api = Some(v["api"].as_str().unwrap().to_owned());
            break;
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        api: format!("http://{}", api.expect("the listening line")),
    }
}

fn http_get(server: &str, path: &str) -> (u16, String) {
    let authority = server.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("REMORA_CONTROL_SERVER", &server.api)
        .output()
        .unwrap()
}

fn poll(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_apply_get_metrics_reload_and_sigterm() {
    let dir = temp_dir("serve");
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    let mut server = serve(&dir);
    assert_eq!(http_get(&server.api, "/ready").0, 200);
    assert_eq!(http_get(&server.api, "/live").0, 200);

    // A refused apply: non-zero exit, every error, nothing changed.
    let bad = dir.join("bad-apply.txt");
    std::fs::write(&bad, r#"policies: [{ service: ghost }, { service: orders, routes: [{ name: r, forward: { cluster: nope } }] }]"#).unwrap();
    let out = cli(&server, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"applied: policy "ghost": service: unknown service "ghost""#),
        "{err}"
    );
    assert!(
        err.contains(
            r#"applied: policy "orders": routes[0].forward.cluster: unknown service "nope""#
        ),
        "{err}"
    );

    // diff, then apply.
    let good = dir.join("good-apply.txt");
    std::fs::write(
        &good,
        r#"services: [{ name: orders, endpoints: [{ address: "10.0.0.2:80" }] }]"#,
    )
    .unwrap();
    let out = cli(&server, &["diff", "-f", good.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#"~ service "orders" (changed)"#), "{text}");
    assert!(
        text.contains(r#"would apply: proxies of "web" receive ENDPOINTS (0 connected)"#),
        "{text}"
    );
    let out = cli(&server, &["apply", "-f", good.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join(".remora-applied.json").exists());

    let out = cli(&server, &["get", "services"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.contains("orders") && text.contains("applied"),
        "{text}"
    );
    let out = cli(&server, &["get", "proxies", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
    let out = cli(&server, &["get", "policies", "--server", &server.api]);
    assert!(out.status.success());

    // A bad file while serving: counted, the last good model stays.
    std::fs::write(dir.join("broken.yaml"), "services: [{ name: orders }]").unwrap();
    poll("a failed reload", || {
        http_get(&server.api, "/metrics")
            .1
            .contains("remora_control_model_reloads_total{result=\"failure\"} 1")
    });
    let (_, services) = http_get(&server.api, "/v1/services");
    assert!(services.contains("10.0.0.2:80"), "{services}");

    // /metrics passes promtool.
    let (status, metrics) = http_get(&server.api, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "remora_control_proxies_connected",
        "remora_control_pushes_total",
        "remora_control_push_ack_seconds",
        "remora_control_nacks_total",
        "remora_control_model_reloads_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{metrics}"
        );
    }
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            p.stdin
                .take()
                .unwrap()
                .write_all(metrics.as_bytes())
                .unwrap();
            let out = p.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}\n{metrics}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => eprintln!("promtool not installed ({e}); skipped (run .ci/install-tools)"),
    }

    // SIGTERM: exit 0 promptly.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut code = None;
    poll("exit after SIGTERM", || {
        code = server.child.try_wait().unwrap();
        code.is_some()
    });
    assert!(code.unwrap().success(), "{code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_is_offline_and_lists_every_error() {
    let dir = temp_dir("validate");
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--mesh"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(
        dir.join("more.yaml"),
        r#"services: [{ name: orders }, { name: x, endpoints: [{ address: "10.0.0.1:99999" }] }]"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--mesh"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = dir.join("more.yaml").display().to_string();
    assert!(err.contains("(2 errors)"), "{err}");
    assert!(
        err.contains(&format!(
            r#"{file}: service "orders": name: defined twice: also in "#
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            r#"{file}: service "x": endpoints[0].address: invalid socket address "10.0.0.1:99999""#
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
