//! The pieces of `remora-demo`: the mesh it serves, the demo `web` app (which calls `orders`
//! through its own sidecar), child processes that are stopped on every exit path, and the
//! trickle of traffic whose tally shows a policy change taking effect.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Every fixed address the demo uses; all on 127.0.0.1.
pub struct Ports {
    pub control_grpc: u16,
    pub control_api: u16,
    /// (service, sidecar inbound, app, admin)
    pub sidecars: [(&'static str, u16, u16, u16); 3],
    /// web's outbound listener for `orders`.
    pub web_to_orders: u16,
}

pub const PORTS: Ports = Ports {
    control_grpc: 9090,
    control_api: 9902,
    sidecars: [
        ("web", 4140, 8080, 9901),
        ("orders", 4141, 8081, 9911),
        ("orders-v2", 4142, 8082, 9912),
    ],
    web_to_orders: 7001,
};

/// The mesh model the demo's control plane serves.
pub fn mesh_yaml() -> String {
    let mut services = String::new();
    let mut sidecars = String::new();
    for (service, inbound, app, _) in PORTS.sidecars {
        services.push_str(&format!(
            "  - {{ name: {service}, endpoints: [{{ address: \"127.0.0.1:{inbound}\" }}] }}\n"
        ));
        sidecars.push_str(&format!(
            "  - service: {service}\n    inbound: {{ address: \"127.0.0.1:{inbound}\", app: \"127.0.0.1:{app}\" }}\n"
        ));
        if service == "web" {
            sidecars.push_str(&format!(
                "    upstreams: [{{ service: orders, address: \"127.0.0.1:{}\" }}]\n",
                PORTS.web_to_orders
            ));
        }
    }
    format!(
        "# Written by remora-demo: the mesh remora-control serves. Edit and save, or push\n\
         # changes with `remora-control apply -f FILE`.\nservices:\n{services}sidecars:\n{sidecars}{}",
        canary_policy(90, 10)
    )
}

/// The `orders` policy: `x-canary: 1` pins v2, everything else is split by weight.
pub fn canary_policy(v1: u32, v2: u32) -> String {
    format!(
        "policies:\n  - service: orders\n    routes:\n      - name: canary-header\n        \
         match: {{ headers: [{{ name: x-canary, exact: \"1\" }}] }}\n        forward: {{ cluster: orders-v2 }}\n      \
         - name: split\n        forward: {{ weightedClusters: [{{ name: orders, weight: {v1} }}, {{ name: orders-v2, weight: {v2} }}] }}\n        \
         timeout: 5s\n"
    )
}

/// The demo `web` app: answers every request by calling `orders` through its sidecar's
/// outbound listener, and says which instance answered.
pub async fn web_app(listener: tokio::net::TcpListener, orders: SocketAddr) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                async move { Ok::<_, Infallible>(web_answer(&client, orders, &req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn web_answer(
    client: &Client<HttpConnector, Empty<Bytes>>,
    orders: SocketAddr,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut call = Request::get(format!("http://{orders}{path}"));
    if let Some(v) = req.headers().get("x-canary") {
        call = call.header("x-canary", v);
    }
    let (status, answer) = match call.body(Empty::new()) {
        Ok(call) => match client.request(call).await {
            Ok(rsp) => {
                let status = rsp.status().as_u16();
                let served = rsp
                    .headers()
                    .get("x-upstream")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                let _ = rsp.into_body().collect().await;
                let body = serde_json::json!({
                    "app": "web",
                    "orders": { "status": status, "servedBy": served },
                });
                (StatusCode::OK, body)
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                serde_json::json!({ "app": "web", "error": format!("calling orders: {e}") }),
            ),
        },
        Err(e) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "app": "web", "error": e.to_string() }),
        ),
    };
    let mut rsp = Response::new(Full::new(Bytes::from(format!("{answer}\n"))));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// Child processes, each logging to a file; all are sent SIGTERM and reaped on drop, so
/// Ctrl-C, an error and a panic all leave nothing running.
#[derive(Default)]
pub struct Children {
    running: Vec<(String, Child)>,
}

impl Children {
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<()> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
        self.running.push((name.to_owned(), child));
        Ok(())
    }

    /// The first child that has exited, if any, with its status.
    pub fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.running.iter_mut().find_map(|(name, child)| {
            child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| (name.clone(), status))
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.running.iter().map(|(_, c)| c.id()).collect()
    }

    /// SIGTERM to all (they drain and exit), SIGKILL to any still there after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for (_, child) in &self.running {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + grace;
        for (_, child) in &mut self.running {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.running.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// `remora` and `remora-control` beside this executable, built first (a no-op when fresh).
pub fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory"))?
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-q",
        "-p",
        "remora-proxy",
        "--bin",
        "remora",
        "-p",
        "remora-control",
        "--bin",
        "remora-control",
    ]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run cargo to build remora: {e}"))?;
    anyhow::ensure!(
        status.success(),
        "building remora and remora-control failed"
    );
    Ok((dir.join("remora"), dir.join("remora-control")))
}

/// Polls `GET /ready` on `admin` until 200, for at most `within`.
pub fn wait_ready(admin: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if crate::remora::http_get(admin, "/ready").is_ok_and(|(status, _)| status == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends `rate` requests a second to `url` forever, printing every `every` which `orders`
/// instance answered them, so a pushed policy is seen taking effect.
pub async fn traffic(url: String, rate: u32, every: Duration) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    let mut since = Instant::now();
    loop {
        tick.tick().await;
        let outcome = match Request::get(url.as_str()).body(Empty::new()) {
            Ok(req) => match client.request(req).await {
                Ok(rsp) => match rsp.into_body().collect().await {
                    Ok(body) => served_by(&body.to_bytes()),
                    Err(_) => "failed".to_owned(),
                },
                Err(_) => "failed".to_owned(),
            },
            Err(_) => "failed".to_owned(),
        };
        *tally.entry(outcome).or_default() += 1;
        if since.elapsed() >= every {
            let line: Vec<String> = tally.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "traffic, last {}s through web → orders: {}",
                every.as_secs(),
                line.join(" · ")
            );
            tally.clear();
            since = Instant::now();
        }
    }
}

fn served_by(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["orders"]["servedBy"].as_str().map(ToOwned::to_owned))
        .map_or_else(|| "failed".to_owned(), |s| format!("{s} answered"))
}
