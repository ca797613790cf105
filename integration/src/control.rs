//! A `remora-control` process under test: serves a mesh directory on port-0 (or given)
//! addresses, parsed from its JSON start-up log line; the operator CLI run against it; killed
//! on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::remora::{http_get, workspace_binary};

pub struct ControlPlane {
    child: Child,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    /// The injection webhook, when started with `--webhook`.
    pub webhook: Option<SocketAddr>,
    pub mesh_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

/// The `remora-control` binary, built once per test process.
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("remora-control", "remora-control"))
        .clone()
}

impl ControlPlane {
    /// Serves `mesh_dir` with the gRPC server on `grpc` (port 0 when `None`).
    pub fn start(mesh_dir: &Path, grpc: Option<SocketAddr>) -> Self {
        Self::start_with(mesh_dir, grpc, &[])
    }

    /// Like [`Self::start`], with extra `serve` arguments (e.g. `--ca DIR`).
    pub fn start_with(mesh_dir: &Path, grpc: Option<SocketAddr>, extra: &[&str]) -> Self {
        Self::start_with_env(mesh_dir, grpc, extra, &[])
    }

    /// Like [`Self::start_with`], with environment variables set.
    pub fn start_with_env(
        mesh_dir: &Path,
        grpc: Option<SocketAddr>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let grpc_arg = grpc.map_or("127.0.0.1:0".to_owned(), |a| a.to_string());
        let mut child = Command::new(binary())
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--mesh")
            .arg(mesh_dir)
            .args(extra)
            .args([
                "--grpc",
                &grpc_arg,
                "--api",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn remora-control");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("control plane listening") {
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
                "remora-control did not start; logs:\n{}",
                logs.lock().expect("logs").join("\n")
            );
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let field = |name: &str| -> SocketAddr {
            v[name]
                .as_str()
                .or_else(|| v["fields"][name].as_str())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .parse()
                .expect("address")
        };
        let webhook = v["webhook"]
            .as_str()
            .or_else(|| v["fields"]["webhook"].as_str())
            .and_then(|w| w.parse().ok());
        Self {
            grpc: field("grpc"),
            api: field("api"),
            webhook,
            child,
            mesh_dir: mesh_dir.to_owned(),
            logs,
        }
    }

    /// The URL proxies use (`--control`).
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Runs `remora-control ARGS --server API_URL`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .args(["--server", &self.api_url()])
            .output()
            .expect("run remora-control")
    }

    /// `remora-control apply -f` with `yaml`: (succeeded, stdout + stderr).
    pub fn apply(&self, yaml: &str) -> (bool, String) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), yaml).expect("write");
        let path = file.path().to_str().expect("utf-8 path").to_owned();
        let out = self.cli(&["apply", "-f", &path]);
        (out.status.success(), text(&out))
    }

    /// `GET /v1/proxies` as JSON.
    pub fn proxies(&self) -> serde_json::Value {
        let (_, body) = http_get(self.api, "/v1/proxies").unwrap_or((0, String::new()));
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    pub fn metrics(&self) -> String {
        http_get(self.api, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Kills the process at once (an outage, not a shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- remora-control logs ----\n{}", self.logs());
        }
    }
}

/// stdout and stderr of a finished command, joined.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
