//! `remora-demo`: Remora doing its job on this machine with nothing else installed. Starts two
//! demo upstream instances, writes a sidecar config that splits traffic 90/10 between them,
//! runs the proxy in this process, and prints what to try. Ctrl-C stops everything.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

const CONFIG: &str = r#"# Written by remora-demo. Edit and save: Remora reloads it live.
admin: { address: "127.0.0.1:9901" }
listeners:
  - name: orders-outbound
    address: "127.0.0.1:7001"
    protocol: HTTP
    routeTable: orders
routeTables:
  - name: orders
    virtualHosts:
      - name: orders
        domains: ["*"]
        routes:
          - name: health
            match: { pathExact: /healthz }
            directResponse: { status: 200, body: "ok\n" }
          - name: canary-header
            match: { headers: [{ name: x-canary, exact: "1" }] }
            forward: { cluster: orders-v2 }
          - name: default
            forward:
              weightedClusters: [{ name: orders-v1, weight: 90 }, { name: orders-v2, weight: 10 }]
            timeout: 5s
            responseHeaders: { set: [{ name: x-served-by, value: remora }] }
clusters:
  - name: orders-v1
    endpoints: [{ address: "UPSTREAM_V1" }]
  - name: orders-v2
    endpoints: [{ address: "UPSTREAM_V2" }]
"#;

async fn run() -> anyhow::Result<()> {
    remora_proxy::logging::init(remora_proxy::cli::LogFormat::Text);
    let mut addrs = Vec::new();
    for name in ["orders-v1", "orders-v2"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        tokio::spawn(remora_integration::upstream::serve(
            listener,
            name.to_owned(),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        ));
    }
    let dir = std::env::temp_dir().join(format!("remora-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("remora.yaml");
    let config = CONFIG
        .replace("UPSTREAM_V1", &addrs[0].to_string())
        .replace("UPSTREAM_V2", &addrs[1].to_string());
    std::fs::write(&path, config)?;
    println!(
        "\nRemora demo: a sidecar on 127.0.0.1:7001 in front of orders-v1 ({}) and orders-v2 ({}).\n\
         Config: {path}\n\n\
         Try:\n  curl -s localhost:7001/hello                 # 90% orders-v1, 10% orders-v2 (see \"server\")\n  \
         curl -s -H 'x-canary: 1' localhost:7001/      # always orders-v2\n  \
         curl -s --http2-prior-knowledge localhost:7001/ # HTTP/2 too\n  \
         curl -s localhost:9901/metrics | grep remora_requests_total\n  \
         curl -s localhost:9901/config\n\
         Edit {path} (e.g. weights 50/50) and save: the change applies live.\nCtrl-C to stop.\n",
        addrs[0],
        addrs[1],
        path = path.display()
    );
    let result = remora_proxy::app::run(remora_proxy::app::RunOptions {
        config: Some(path.clone()),
        admin: None,
        control: None,
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
