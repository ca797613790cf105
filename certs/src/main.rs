//! `remora-certs`: the mesh CA on the command line.
//!
//! ```text
//! remora-certs ca init --trust-domain mesh.local --out DIR [--ttl 3650d] [--parent CA_DIR]
//! remora-certs issue --ca DIR --identity spiffe://mesh.local/ns/default/sa/orders --ttl 24h --out DIR
//! remora-certs inspect FILE
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "remora-certs",
    version,
    about = "Remora's mesh CA: make a CA, issue SPIFFE workload certificates, inspect certificates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The mesh CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Issue a workload certificate (ECDSA P-256) whose only URI SAN is the identity.
    Issue {
        /// The CA directory (from `ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// spiffe://TRUST_DOMAIN/PATH, in the CA's trust domain.
        #[arg(long)]
        identity: String,
        /// Lifetime: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Where cert.pem, key.pem (0600) and bundle.pem go.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
    /// Print what a PEM file holds: subjects, SANs, validity, chain.
    Inspect { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Make a root CA, or an intermediate under an existing CA (`--parent`).
    Init {
        #[arg(long)]
        trust_domain: String,
        #[arg(long)]
        out: PathBuf,
        /// Lifetime (default 3650d for a root, 365d for an intermediate).
        #[arg(long)]
        ttl: Option<String>,
        /// The CA directory that signs this one as an intermediate.
        #[arg(long)]
        parent: Option<PathBuf>,
        /// Replace an existing CA key.
        #[arg(long)]
        force: bool,
    },
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Ca {
            command:
                CaCommand::Init {
                    trust_domain,
                    out,
                    ttl,
                    parent,
                    force,
                },
        } => {
            let ttl = ttl.as_deref().map(remora_certs::ttl::parse).transpose()?;
            let r = remora_certs::ca::init(&trust_domain, &out, ttl, parent.as_deref(), force)
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "{} CA for trust domain {trust_domain} in {} (ca.crt, ca.key, chain.crt, bundle.crt)\n",
                if r.intermediate {
                    "intermediate"
                } else {
                    "root"
                },
                r.dir.display()
            ))
        }
        Command::Issue {
            ca,
            identity,
            ttl,
            out,
            force,
        } => {
            let ttl = remora_certs::ttl::parse(&ttl)?;
            let r = remora_certs::ca::issue(&ca, &identity, ttl, &out, force)
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "issued {} in {} (cert.pem, key.pem, bundle.pem)\n",
                r.identity,
                r.dir.display()
            ))
        }
        Command::Inspect { file } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            remora_certs::inspect::report(&text, now)
                .map_err(|e| format!("{}: {e}", file.display()))
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora-certs: {e}");
            ExitCode::FAILURE
        }
    }
}
