//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, clap::Parser)]
#[command(
    name = "remora",
    version,
    about = "Remora: a sidecar data-plane proxy for service meshes"
)]
pub struct Args {
    /// Configuration file (YAML or JSON); watched and hot-reloaded. With --control it holds
    /// the static parts (admin address, extra listeners and clusters).
    #[arg(long, short = 'c', env = "REMORA_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Control plane gRPC URL, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "REMORA_CONTROL")]
    pub control: Option<String>,

    /// This proxy's node id, unique in the mesh (the pod name on Kubernetes).
    #[arg(long, env = "REMORA_NODE")]
    pub node: Option<String>,

    /// The mesh service this proxy runs beside.
    #[arg(long, env = "REMORA_SERVICE")]
    pub service: Option<String>,

    /// Directory for the last good control-plane configuration, served at start when the
    /// control plane is unreachable.
    #[arg(long, env = "REMORA_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Admin server address; overrides `admin.address` in the file.
    #[arg(long, env = "REMORA_ADMIN")]
    pub admin: Option<SocketAddr>,

    /// Log format; the level comes from RUST_LOG (default "info").
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "REMORA_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,

    /// Worker threads (default: one per core).
    #[arg(long, env = "REMORA_THREADS")]
    pub threads: Option<usize>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check a configuration file: exit 0 if valid, else print every error and exit 1.
    Validate,
    /// Wait until the proxy at `--admin` answers /ready with 200 (exit 0), or time out
    /// (exit 1): the start-up hook that holds an app until its sidecar is ready.
    WaitReady {
        /// Where the proxy's admin server listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// How long to wait (`90s`, `2m`).
        #[arg(long, default_value = "60s", value_parser = remora_certs::ttl::parse)]
        timeout: std::time::Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
