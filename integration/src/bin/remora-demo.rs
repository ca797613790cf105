//! `remora-demo`: a working mesh on this machine with nothing else installed. Starts the
//! control plane, three demo apps (`web`, `orders` v1 and v2) each with its own `remora`
//! sidecar following the control plane, sends a trickle of traffic through them, and prints
//! what to `curl` and how to push a policy change. Ctrl-C stops everything it started.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use remora_integration::demo::{self, Children, PORTS};

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn bind(port: u16, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(local(port)).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on 127.0.0.1:{port} for {what}: {e} (is another remora-demo running? stop it first)"
        )
    })
}

async fn run() -> anyhow::Result<()> {
    println!("building remora and remora-control (a no-op when up to date) ...");
    let (remora, control) = demo::binaries()?;
    let dir = tempfile::Builder::new().prefix("remora-demo-").tempdir()?;
    let mesh = dir.path().join("mesh");
    std::fs::create_dir_all(&mesh)?;
    std::fs::write(mesh.join("mesh.yaml"), demo::mesh_yaml())?;
    for (name, v1, v2) in [
        ("canary-50.yaml", 50, 50),
        ("canary-100.yaml", 0, 100),
        ("rollback.yaml", 100, 0),
    ] {
        std::fs::write(dir.path().join(name), demo::canary_policy(v1, v2))?;
    }

    // The apps: web (calls orders through its sidecar) and two versions of orders.
    let [(_, _, web_port, _), (_, _, v1_port, _), (_, _, v2_port, _)] = PORTS.sidecars;
    tokio::spawn(demo::web_app(
        bind(web_port, "the web app").await?,
        local(PORTS.web_to_orders),
    ));
    for (port, name) in [(v1_port, "orders-v1"), (v2_port, "orders-v2")] {
        tokio::spawn(remora_integration::upstream::serve(
            bind(port, name).await?,
            name.to_owned(),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        ));
    }

    let mut children = Children::default();
    let logs = dir.path();
    let mut cmd = Command::new(&control);
    cmd.arg("serve").arg("--mesh").arg(&mesh).args([
        "--grpc",
        &local(PORTS.control_grpc).to_string(),
        "--api",
        &local(PORTS.control_api).to_string(),
    ]);
    children.spawn("remora-control", cmd, &logs.join("remora-control.log"))?;
    for (service, _, _, admin) in PORTS.sidecars {
        let mut cmd = Command::new(&remora);
        cmd.args([
            "--control",
            &format!("http://{}", local(PORTS.control_grpc)),
            "--node",
            &format!("{service}-1"),
            "--service",
            service,
            "--admin",
            &local(admin).to_string(),
        ])
        .arg("--cache-dir")
        .arg(dir.path().join(format!("cache-{service}")));
        children.spawn(service, cmd, &logs.join(format!("sidecar-{service}.log")))?;
    }
    for (service, _, _, admin) in PORTS.sidecars {
        let ready = tokio::task::spawn_blocking(move || {
            demo::wait_ready(local(admin), Duration::from_secs(20))
        })
        .await?;
        if let Some((name, status)) = children.exited() {
            anyhow::bail!(
                "{name} exited ({status}); see its log in {}",
                logs.display()
            );
        }
        anyhow::ensure!(
            ready,
            "the {service} sidecar did not become ready; see {}",
            logs.join(format!("sidecar-{service}.log")).display()
        );
    }

    let (web_in, dir_s) = (PORTS.sidecars[0].1, dir.path().display());
    println!(
        "\nRemora demo: a mesh on this machine (logs and files in {dir_s})\n\
         \n  remora-control   gRPC 127.0.0.1:{grpc}, operator API http://127.0.0.1:{api}\n  \
         web        app :{web_port}   sidecar inbound :{web_in}, outbound to orders :{out}, admin :9901\n  \
         orders     app :{v1_port}   sidecar inbound :4141, admin :9911   (v1)\n  \
         orders-v2  app :{v2_port}   sidecar inbound :4142, admin :9912   (the canary)\n\
         \nEvery request: web's sidecar → web → web's sidecar → orders' sidecar → orders. The policy\n\
         sends 90% to orders, 10% to orders-v2.\n\
         \nTry:\n  curl -s localhost:{web_in}/                      # through the mesh; see \"servedBy\"\n  \
         curl -s -H 'x-canary: 1' localhost:{web_in}/     # pinned to orders-v2 by a route\n  \
         curl -s localhost:{out}/hello                   # web's outbound sidecar directly\n\
         \nPush a policy change and watch the traffic lines below follow within a second:\n  \
         {ctl} apply -f {dir_s}/canary-50.yaml --server http://127.0.0.1:{api}\n  \
         {ctl} apply -f {dir_s}/canary-100.yaml --server http://127.0.0.1:{api}\n  \
         {ctl} apply -f {dir_s}/rollback.yaml --server http://127.0.0.1:{api}\n  \
         {ctl} get proxies --server http://127.0.0.1:{api}      # who runs which version\n  \
         curl -s localhost:9901/metrics | grep remora_requests_total\n  \
         curl -s localhost:9901/config                     # what web's sidecar runs\n\
         \nCtrl-C stops everything.\n",
        grpc = PORTS.control_grpc,
        api = PORTS.control_api,
        out = PORTS.web_to_orders,
        ctl = control.display(),
    );
    tokio::spawn(demo::traffic(
        format!("http://127.0.0.1:{web_in}/"),
        10,
        Duration::from_secs(5),
    ));

    let mut watch = tokio::time::interval(Duration::from_millis(500));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = watch.tick() => {
                if let Some((name, status)) = children.exited() {
                    break Err(anyhow::anyhow!("{name} exited ({status}); see its log in {}", logs.display()));
                }
            }
        }
    };
    println!("stopping the control plane and the sidecars ...");
    tokio::task::spawn_blocking(move || children.stop(Duration::from_secs(12))).await?;
    println!("stopped.");
    outcome
}
