//! `remora-control`: the reference control plane's entry point (see `cli.rs` for commands).

use std::process::ExitCode;

use clap::Parser as _;
use remora_control::cli::{Args, Command};
use remora_control::{client, logging, serve, state};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Serve(s) => {
            logging::init(args.log_format);
            run_serve(*s).await
        }
        Command::Validate { mesh } => match state::validate_dir(&mesh) {
            Ok(state) => {
                println!(
                    "{}: valid ({} services, {} policies, {} sidecars)",
                    mesh.display(),
                    state.model.services.len(),
                    state.model.policies.len(),
                    state.model.sidecars.len()
                );
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("{}: {e}", mesh.display())),
        },
        Command::Apply { file, server } => client::change(&server.server, &file, true).await,
        Command::Diff { file, server } => client::change(&server.server, &file, false).await,
        Command::Get {
            what,
            server,
            output,
        } => client::get(&server.server, what, output).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remora-control: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_serve(s: remora_control::cli::ServeArgs) -> anyhow::Result<()> {
    let running = serve::start(serve::Options {
        mesh: s.mesh,
        grpc: s.grpc,
        api: s.api,
        dns_server: s.dns_server,
        watch: true,
        ca: s.ca,
        cert_ttl: s.cert_ttl,
        trust_domain: s.trust_domain,
        kubernetes: (s.kubernetes || s.kubernetes_api.is_some()).then_some(s.kubernetes_api),
        consul: s.consul,
        eureka: s.eureka,
        eureka_refresh: s.eureka_refresh,
        nomad: s.nomad,
        marathon: s.marathon,
        webhook: match (s.webhook, s.webhook_cert, s.webhook_key, s.injection) {
            (Some(addr), Some(cert), Some(key), Some(injection)) => Some(serve::WebhookOptions {
                addr,
                cert,
                key,
                injection,
            }),
            _ => None,
        },
    })
    .await?;
    serve::shutdown_signal().await;
    tracing::info!("shutting down");
    drop(running);
    Ok(())
}
