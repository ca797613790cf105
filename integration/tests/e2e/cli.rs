//! The command line's logging contract: `--log-format text` is human lines, `json` is one JSON
//! object per line, and `RUST_LOG` filters by level.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use remora_integration::eventually;
use remora_integration::remora::{binary, http_get};

const CONFIG: &str = "listeners:\n  - { name: t, address: \"127.0.0.1:0\", protocol: TCP, cluster: c }\nclusters:\n  - { name: c, endpoints: [{ address: \"127.0.0.1:9\" }] }\n";

/// Runs remora until ready, stops it, and returns everything it logged.
fn logs_of(format: &str, rust_log: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, CONFIG).expect("write");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .args(["--admin", &admin.to_string(), "--log-format", format])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start remora");
    eventually("remora ready", Duration::from_secs(10), || {
        http_get(admin, "/ready")
            .ok()
            .filter(|(s, _)| *s == 200)
            .map(|_| ())
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = eventually("remora exits", Duration::from_secs(10), || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
    let mut text = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut text);
    text
}

#[test]
fn log_formats_and_rust_log_levels() {
    let text = logs_of("text", "info");
    let line = text
        .lines()
        .find(|l| l.contains("admin listening"))
        .unwrap_or_else(|| panic!("no start-up line in:\n{text}"));
    assert!(line.contains("INFO") && !line.starts_with('{'), "{line}");

    let json = logs_of("json", "info");
    let line = json
        .lines()
        .find(|l| l.contains("admin listening"))
        .unwrap_or_else(|| panic!("no start-up line in:\n{json}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
    assert_eq!(v["level"], "INFO");

    let quiet = logs_of("text", "warn");
    assert!(
        !quiet.contains("admin listening") && !quiet.contains("INFO"),
        "RUST_LOG=warn still logged info:\n{quiet}"
    );
}
