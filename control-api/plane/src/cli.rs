//! Command-line interface: `serve`, `validate`, and the operator commands `apply`, `diff`,
//! `get` that talk to a running control plane's API.

use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9902";

#[derive(Debug, clap::Parser)]
#[command(
    name = "remora-control",
    version,
    about = "Remora's reference control plane: serves each proxy the part of the mesh it needs"
)]
pub struct Args {
    /// Log format; the level comes from RUST_LOG (default "info").
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "REMORA_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the mesh in DIR (watched) to proxies over gRPC, with the operator API.
    Serve(Box<ServeArgs>),
    /// Check a mesh directory offline: exit 0 if valid, else print every error and exit 1.
    Validate {
        /// Directory of Mesh documents (*.yaml, *.yml, *.json).
        #[arg(long, env = "REMORA_MESH")]
        mesh: PathBuf,
    },
    /// Push a Mesh document to a running control plane (merged into its applied overlay).
    Apply {
        /// The Mesh document (YAML or JSON); "-" reads standard input.
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show what applying a Mesh document would change, changing nothing.
    Diff {
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List services, policies or proxies of a running control plane.
    Get {
        #[arg(value_enum)]
        what: GetKind,
        #[command(flatten)]
        server: ServerArg,
        /// Output: a human table (default) or JSON.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory of Mesh documents (*.yaml, *.yml, *.json), watched for changes.
    #[arg(long, env = "REMORA_MESH")]
    pub mesh: PathBuf,
    /// gRPC address proxies connect to (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9090", env = "REMORA_CONTROL_GRPC")]
    pub grpc: SocketAddr,
    /// Operator API and /metrics address.
    #[arg(long, default_value = "127.0.0.1:9902", env = "REMORA_CONTROL_API")]
    pub api: SocketAddr,
    /// DNS server for services with `dns` (default: the nameservers of /etc/resolv.conf).
    #[arg(long, env = "REMORA_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,
    /// Mesh CA directory (`remora-certs ca init`): sign proxies' certificate requests when
    /// the mesh has `mtls`.
    #[arg(long, env = "REMORA_CA")]
    pub ca: Option<PathBuf>,
    /// Lifetime of the certificates issued to proxies (they renew at 70%).
    #[arg(long, default_value = "24h", value_parser = remora_certs::ttl::parse, env = "REMORA_CERT_TTL")]
    pub cert_ttl: std::time::Duration,
    /// The mesh's trust domain, for a CA certificate that names none (the Helm chart's).
    #[arg(long, env = "REMORA_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// Serve the sidecar-injection webhook (HTTPS) on this address.
    #[arg(long, env = "REMORA_WEBHOOK", requires_all = ["webhook_cert", "webhook_key", "injection"])]
    pub webhook: Option<SocketAddr>,
    /// The webhook's certificate chain and key (PEM).
    #[arg(long, env = "REMORA_WEBHOOK_CERT")]
    pub webhook_cert: Option<PathBuf>,
    #[arg(long, env = "REMORA_WEBHOOK_KEY")]
    pub webhook_key: Option<PathBuf>,
    /// What the webhook injects (JSON: image, controlUrl, nativeSidecar, ports, resources).
    #[arg(long, env = "REMORA_INJECTION")]
    pub injection: Option<PathBuf>,
    /// Discover endpoints of services with `kubernetes:` from the cluster's API (in-cluster
    /// service account, or KUBECONFIG).
    #[arg(long, env = "REMORA_KUBERNETES")]
    pub kubernetes: bool,
    /// The Kubernetes API at this URL instead, without credentials (tests, `kubectl proxy`).
    #[arg(long, env = "REMORA_KUBERNETES_API")]
    pub kubernetes_api: Option<String>,
    /// Consul's HTTP API, for services with `consul:` (ACL token from CONSUL_HTTP_TOKEN).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8500",
        env = "CONSUL_HTTP_ADDR"
    )]
    pub consul: String,
    /// Eureka's REST API, for services with `eureka:`.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8761/eureka",
        env = "REMORA_EUREKA"
    )]
    pub eureka: String,
    /// Nomad's HTTP API, for services with `nomad:` (ACL token from NOMAD_TOKEN).
    #[arg(long, default_value = "http://127.0.0.1:4646", env = "NOMAD_ADDR")]
    pub nomad: String,
    /// Marathon's REST API, for services with `marathon:`.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "REMORA_MARATHON")]
    pub marathon: String,
    /// How often the Eureka registry's changes are fetched.
    #[arg(long, default_value = "30s", value_parser = remora_certs::ttl::parse, env = "REMORA_EUREKA_REFRESH")]
    pub eureka_refresh: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct ServerArg {
    /// The control plane's API URL.
    #[arg(long, default_value = DEFAULT_SERVER, env = "REMORA_CONTROL_SERVER")]
    pub server: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GetKind {
    Services,
    Policies,
    Proxies,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}
