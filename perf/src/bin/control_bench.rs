//! `perf-control`: control-plane benchmarks against real `remora-control` and `remora`
//! processes on 127.0.0.1.
//!
//! 1. Push latency: N simulated proxies (each its own gRPC connection and stream, answering
//!    every update with an ACK at once) follow one `remora-control`; each round POSTs a policy
//!    change to `/v1/apply` and times until the last proxy has ACKed the new version. Also the
//!    control plane's RSS per connected proxy.
//! 2. Proxy memory vs mesh size: a real `remora` sidecar that uses 5 services, in meshes of
//!    10 … 10,000 services; its RSS must stay flat because it only receives its 5.
//!
//! Usage: `perf-control [--proxies 1,100,1000] [--services 10,100,1000,10000] [--rounds 5]
//!         [--bin-dir target/release] [--out DIR]`; prints a markdown table, writes JSON.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use remora_control_api::proto::control::control_client::ControlClient;
use remora_control_api::proto::control::proxy_message::Kind;
use remora_control_api::proto::control::{Ack, Hello, ProxyMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(120);

struct Args {
    proxies: Vec<usize>,
    services: Vec<usize>,
    rounds: usize,
    bin_dir: PathBuf,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        proxies: vec![1, 100, 1000],
        services: vec![10, 100, 1000, 10_000],
        rounds: 5,
        bin_dir: PathBuf::from("target/release"),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let list = |v: &str| -> Result<Vec<usize>> {
            v.split(',')
                .map(|n| {
                    n.trim()
                        .parse::<usize>()
                        .map_err(|e| format!("{flag}: {e}").into())
                })
                .collect()
        };
        match flag.as_str() {
            "--proxies" => a.proxies = list(&value)?,
            "--services" => a.services = list(&value)?,
            "--rounds" => a.rounds = value.parse()?,
            "--bin-dir" => a.bin_dir = value.into(),
            "--out" => a.out = Some(value.into()),
            other => {
                return Err(
                    format!("unknown flag {other}; see the header of control_bench.rs").into(),
                );
            }
        }
    }
    Ok(a)
}

/// A child process killed on drop, with the address fields of its first matching JSON log line.
struct Proc {
    child: Child,
    fields: serde_json::Value,
}

impl Proc {
    fn start(mut cmd: Command, ready_message: &str) -> Result<Self> {
        let mut child = cmd
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let wanted = ready_message.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if line.contains(&wanted) {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("no {ready_message:?} log line"))?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let fields = if v.get("fields").is_some() {
            v["fields"].clone()
        } else {
            v
        };
        Ok(Self { child, fields })
    }

    fn addr(&self, field: &str) -> Result<SocketAddr> {
        Ok(self.fields[field]
            .as_str()
            .ok_or(format!("no {field} in the log line"))?
            .parse()?)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control_plane(bin_dir: &Path, mesh: &Path) -> Result<Proc> {
    let mut cmd = Command::new(bin_dir.join("remora-control"));
    cmd.arg("serve").arg("--mesh").arg(mesh).args([
        "--grpc",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ]);
    Proc::start(cmd, "control plane listening")
}

/// A plain HTTP/1.1 request; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/yaml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

fn policy(weight: u32) -> String {
    format!(
        "policies: [{{ service: a, routes: [{{ name: split, forward: {{ weightedClusters: [{{ name: a, weight: {weight} }}, {{ name: b, weight: 1 }}] }} }}] }}]\n"
    )
}

/// One simulated proxy: Hello, then ACK every update, reporting each ACKed version.
async fn simulated_proxy(
    url: String,
    node: String,
    acked: mpsc::UnboundedSender<(usize, String)>,
    id: usize,
) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let mut client = ControlClient::new(channel).max_decoding_message_size(16 << 20);
    let (tx, rx) = mpsc::channel(4);
    tx.send(ProxyMessage {
        kind: Some(Kind::Hello(Hello {
            node,
            service: "client".into(),
            ..Hello::default()
        })),
    })
    .await?;
    let mut updates = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(u) = updates.message().await? {
        tx.send(ProxyMessage {
            kind: Some(Kind::Ack(Ack {
                r#type: u.r#type,
                version: u.version.clone(),
                nonce: u.nonce,
            })),
        })
        .await?;
        let _ = acked.send((id, u.version));
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct PushResult {
    proxies: usize,
    connect_all_s: f64,
    apply_to_all_acked_ms: Vec<f64>,
    median_ms: f64,
    max_ms: f64,
    cp_rss_idle_kib: u64,
    cp_rss_connected_kib: u64,
    cp_kib_per_proxy: f64,
}

async fn push_latency(bin_dir: &Path, proxies: usize, rounds: usize) -> Result<PushResult> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "services:\n  - { name: a, endpoints: [{ address: \"10.0.0.1:80\" }] }\n  - { name: b, endpoints: [{ address: \"10.0.0.2:80\" }] }\nsidecars:\n  - { service: client, upstreams: [{ service: a, address: \"127.0.0.1:7001\" }] }\n",
    )?;
    let cp = control_plane(bin_dir, dir.path())?;
    let (grpc, api) = (cp.addr("grpc")?, cp.addr("api")?);
    let idle = cp.rss_kib();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Set before the control plane is stopped: streams breaking after that are expected.
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let mut latest: Vec<String> = vec![String::new(); proxies];
    for id in 0..proxies {
        let (tx, finished) = (tx.clone(), finished.clone());
        tokio::spawn(async move {
            let result =
                simulated_proxy(format!("http://{grpc}"), format!("sim-{id}"), tx, id).await;
            if let Err(e) = result
                && !finished.load(std::sync::atomic::Ordering::SeqCst)
            {
                eprintln!("sim-{id}: {e}");
            }
        });
    }
    wait_all(&mut rx, &mut latest, |v| !v.is_empty()).await?;
    let connect_all_s = started.elapsed().as_secs_f64();
    let connected = cp.rss_kib();
    let mut times = Vec::new();
    for round in 0..rounds {
        let before = latest[0].clone();
        let t0 = Instant::now();
        let (status, body) = http(api, "POST", "/v1/apply", &policy(10 + round as u32))?;
        if status != 200 {
            return Err(format!("apply answered {status}: {body}").into());
        }
        wait_all(&mut rx, &mut latest, |v| *v != before).await?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(PushResult {
        proxies,
        connect_all_s,
        median_ms: sorted[sorted.len() / 2],
        max_ms: sorted[sorted.len() - 1],
        apply_to_all_acked_ms: times,
        cp_rss_idle_kib: idle,
        cp_rss_connected_kib: connected,
        cp_kib_per_proxy: connected.saturating_sub(idle) as f64 / proxies as f64,
    })
}

/// Receives ACK reports until every proxy's latest version satisfies `done`.
async fn wait_all(
    rx: &mut mpsc::UnboundedReceiver<(usize, String)>,
    latest: &mut [String],
    done: impl Fn(&String) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !latest.iter().all(&done) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((id, version))) => latest[id] = version,
            Ok(None) => return Err("all simulated proxies stopped".into()),
            Err(_) => return Err("timed out waiting for ACKs".into()),
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct MeshSizeResult {
    services: usize,
    proxy_rss_kib: u64,
    proxy_clusters: usize,
    cp_rss_kib: u64,
}

fn mesh_of(services: usize) -> String {
    let mut s = String::from("services:\n");
    for i in 0..services {
        s.push_str(&format!(
            "  - {{ name: svc{i}, endpoints: [{{ address: \"10.{}.{}.{}:8080\" }}] }}\n",
            i / 65_536 % 256,
            i / 256 % 256,
            i % 256
        ));
    }
    s.push_str("sidecars:\n  - service: app\n    upstreams:\n");
    for i in 0..5 {
        s.push_str(&format!(
            "      - {{ service: svc{i}, address: \"127.0.0.1:0\" }}\n"
        ));
    }
    s
}

fn proxy_memory(bin_dir: &Path, services: usize) -> Result<MeshSizeResult> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("mesh.yaml"), mesh_of(services))?;
    let cp = control_plane(bin_dir, dir.path())?;
    let mut cmd = Command::new(bin_dir.join("remora"));
    cmd.args([
        "--control",
        &format!("http://{}", cp.addr("grpc")?),
        "--node",
        "app-1",
        "--service",
        "app",
        "--admin",
        "127.0.0.1:0",
        "--threads",
        "1",
    ]);
    let proxy = Proc::start(cmd, "admin listening")?;
    let admin = proxy.addr("address")?;
    let deadline = Instant::now() + WAIT;
    while http(admin, "GET", "/ready", "").map(|r| r.0).unwrap_or(0) != 200 {
        if Instant::now() > deadline {
            return Err("the proxy never became ready".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, config) = http(admin, "GET", "/config", "")?;
    let config: serde_json::Value = serde_json::from_str(&config)?;
    let clusters = config["config"]["clusters"]
        .as_array()
        .or_else(|| config["clusters"].as_array())
        .map_or(0, Vec::len);
    Ok(MeshSizeResult {
        services,
        proxy_rss_kib: proxy.rss_kib(),
        proxy_clusters: clusters,
        cp_rss_kib: cp.rss_kib(),
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut push = Vec::new();
    for &n in &args.proxies {
        let r = rt.block_on(push_latency(&args.bin_dir, n, args.rounds))?;
        eprintln!(
            "{n} proxies: apply → all ACKed median {:.1} ms, max {:.1} ms; control plane {:.1} KiB per proxy",
            r.median_ms, r.max_ms, r.cp_kib_per_proxy
        );
        push.push(r);
    }
    let mut sizes = Vec::new();
    for &s in &args.services {
        let r = proxy_memory(&args.bin_dir, s)?;
        eprintln!(
            "{s} services: proxy RSS {} KiB ({} clusters), control plane {} KiB",
            r.proxy_rss_kib, r.proxy_clusters, r.cp_rss_kib
        );
        sizes.push(r);
    }
    println!("| proxies | apply → all ACKed, median | max | control-plane RSS per proxy |");
    println!("|---:|---:|---:|---:|");
    for r in &push {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} KiB |",
            r.proxies, r.median_ms, r.max_ms, r.cp_kib_per_proxy
        );
    }
    println!(
        "\n| services in the mesh | proxy RSS (uses 5) | clusters it holds | control-plane RSS |"
    );
    println!("|---:|---:|---:|---:|");
    for r in &sizes {
        println!(
            "| {} | {:.1} MiB | {} | {:.1} MiB |",
            r.services,
            r.proxy_rss_kib as f64 / 1024.0,
            r.proxy_clusters,
            r.cp_rss_kib as f64 / 1024.0
        );
    }
    if let Some(out) = args.out {
        std::fs::create_dir_all(&out)?;
        let doc = serde_json::json!({ "push": push, "meshSize": sizes });
        std::fs::write(
            out.join("control.json"),
            serde_json::to_string_pretty(&doc)?,
        )?;
    }
    Ok(())
}
