//! A `remora` process under test: started from YAML with port-0 listeners, ready when
//! `/ready` says so, addressed by listener name through `/listeners`, killed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::poll::eventually;

pub struct Remora {
    child: Child,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

/// The `remora` binary of this workspace, brought up to date once per test process (cargo
/// does not rebuild another package's binary for this package's tests).
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("remora-proxy", "remora"))
        .clone()
}

/// Builds `bin` of `package` (quietly, usually a no-op) and returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug/<bin>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--bin", bin])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building {bin} failed");
    dir.join(bin)
}

impl Remora {
    /// Starts remora with `yaml` (admin is forced to 127.0.0.1:0) and waits until ready.
    pub fn start(yaml: &str) -> Self {
        Self::launch(Some(yaml), &[], true)
    }

    /// Starts remora following a control plane (`--control URL --node NODE --service SVC`
    /// plus `extra` arguments, e.g. `--cache-dir`); `yaml` supplies static parts. Waits for
    /// `/ready` only when `wait_ready`.
    pub fn start_controlled(
        control: &str,
        node: &str,
        service: &str,
        yaml: Option<&str>,
        extra: &[&str],
        wait_ready: bool,
    ) -> Self {
        let mut args: Vec<String> = ["--control", control, "--node", node, "--service", service]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.extend(extra.iter().map(ToString::to_string));
        Self::launch(yaml, &args, wait_ready)
    }

    fn launch(yaml: Option<&str>, args: &[String], wait_ready: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("remora.yaml");
        let mut cmd = Command::new(binary());
        if let Some(yaml) = yaml {
            std::fs::write(&path, yaml).expect("write config");
            cmd.arg("--config").arg(&path);
        }
        let mut child = cmd
            .args(args)
            .args(["--admin", "127.0.0.1:0", "--log-format", "json"])
            .env("RUST_LOG", "info,remora_proxy=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn remora");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("admin listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("logs").push(line);
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!(
                "remora did not start; logs:\n{}",
                logs.lock().expect("logs").join("\n")
            );
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let admin = v["address"]
            .as_str()
            .expect("address field")
            .parse()
            .expect("admin address");
        let remora = Self {
            child,
            admin,
            dir,
            logs,
        };
        if wait_ready {
            remora.wait_ready();
        }
        remora
    }

    /// Polls `/ready` until 200 (bounded).
    pub fn wait_ready(&self) {
        eventually("remora /ready", Duration::from_secs(10), || {
            (self.admin_get("/ready").0 == 200).then_some(())
        });
    }

    /// The `control` section of `/config` (null without `--control`).
    pub fn control_status(&self) -> serde_json::Value {
        let (_, body) = self.admin_get("/config");
        serde_json::from_str::<serde_json::Value>(&body)
            .map_or(serde_json::Value::Null, |v| v["control"].clone())
    }

    /// Listener addresses by name (port 0 resolved).
    pub fn listeners(&self) -> HashMap<String, SocketAddr> {
        let (_, body) = self.admin_get("/listeners");
        let v: serde_json::Value = serde_json::from_str(&body).expect("listeners json");
        v.as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("str").parse().expect("addr")))
            .collect()
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners()
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    pub fn url(&self, listener: &str) -> String {
        format!("http://{}", self.addr(listener))
    }

    /// The admin server's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// GET on the admin port: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).unwrap_or((0, String::new()))
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").1
    }

    /// Sum of every sample of `name` whose labels contain all of `labels` (`k="v"` strings).
    pub fn metric_sum(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// The running config version (from `/config`).
    pub fn version(&self) -> String {
        let (_, body) = self.admin_get("/config");
        let v: serde_json::Value = serde_json::from_str(&body).expect("config json");
        v["version"].as_str().unwrap_or_default().to_owned()
    }

    /// Replaces the config file atomically (write + rename), as an operator or ConfigMap would.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".remora.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write");
        std::fs::rename(&tmp, self.config_path()).expect("rename");
    }

    /// Writes a config and waits until its version is running.
    pub fn reload(&self, yaml: &str, version: &str) {
        self.write_config(yaml);
        eventually(
            &format!("config version {version}"),
            Duration::from_secs(10),
            || (self.version() == version).then_some(()),
        );
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("remora.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. "TERM", "INT") without waiting.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits for exit (bounded); returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        eventually("remora to exit", within, || {
            self.child.try_wait().ok().flatten()
        })
        .code()
    }

    /// Sends SIGTERM and waits for exit (bounded); returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(within)
    }

    /// Peak resident memory (VmHWM) in KiB; panics if it cannot be read, so that a memory
    /// bound can never pass by default.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .filter(|kib| *kib > 0)
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for Remora {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- remora logs ----\n{}", self.logs());
        }
    }
}

/// Sums samples of a metric from Prometheus text.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A minimal HTTP/1.1 GET over a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
