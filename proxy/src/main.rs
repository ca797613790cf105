//! `remora`: parse arguments, initialise logging, run (or validate a file).

use std::process::ExitCode;

use clap::Parser;
use remora_proxy::app::RunOptions;
use remora_proxy::cli::{Args, Command};
use remora_proxy::control::ControlOptions;

/// mimalloc: measured ~15% more requests per core than glibc malloc or jemalloc here
/// (perf/README.md). Built to commit arena memory on use (`.cargo/config.toml`), which keeps
/// an idle sidecar's RSS small.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    remora_proxy::logging::init(args.log_format);
    remora_proxy::tls::install_provider();
    if let Some(Command::WaitReady { admin, timeout }) = args.command {
        return wait_ready(admin, timeout);
    }
    if let Some(Command::Validate) = args.command {
        let Some(config) = args.config.as_deref() else {
            eprintln!("error: validate needs --config FILE");
            return ExitCode::from(2);
        };
        return validate(config);
    }
    let options = match run_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Connections run on one single-threaded runtime per worker (no work stealing); the
    // main runtime, single-threaded too, keeps listeners, admin, watcher and control stream.
    // With one worker, connections stay on the main runtime.
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if let Err(e) = remora_proxy::workers::start(threads) {
        eprintln!("error: cannot start {threads} worker threads: {e}");
        return ExitCode::FAILURE;
    }
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(remora_proxy::app::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_options(args: &Args) -> Result<RunOptions, String> {
    let control = match &args.control {
        None => {
            if args.config.is_none() {
                return Err("--config FILE or --control URL is required (or set REMORA_CONFIG / REMORA_CONTROL)".into());
            }
            None
        }
        Some(url) => {
            let service = args.service.clone().ok_or(
                "--control needs --service NAME (or REMORA_SERVICE): the mesh service this proxy runs beside",
            )?;
            let node = args.node.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| format!("{service}-{}", std::process::id()))
            });
            Some(ControlOptions {
                url: url.clone(),
                node,
                service,
                cache_dir: args.cache_dir.clone(),
            })
        }
    };
    Ok(RunOptions {
        config: args.config.clone(),
        admin: args.admin,
        identity: remora_proxy::trace::Identity {
            service: args.service.clone(),
            node: args.node.clone(),
        },
        control,
    })
}

fn validate(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let proto = match remora_control_api::load::from_yaml(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    match remora_control_api::validate(&proto) {
        Ok(c) => {
            println!(
                "{}: valid ({} listeners, {} route tables, {} clusters)",
                path.display(),
                c.listeners.len(),
                c.route_tables.len(),
                c.clusters.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Polls `GET /ready` on the admin address until 200 or `timeout`.
fn wait_ready(admin: std::net::SocketAddr, timeout: std::time::Duration) -> ExitCode {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while std::time::Instant::now() < deadline {
        let attempt = (|| -> std::io::Result<String> {
            let mut s =
                std::net::TcpStream::connect_timeout(&admin, std::time::Duration::from_secs(1))?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
            s.write_all(b"GET /ready HTTP/1.1\r\nHost: remora\r\nConnection: close\r\n\r\n")?;
            let mut head = [0u8; 64];
            let n = s.read(&mut head)?;
            Ok(String::from_utf8_lossy(&head[..n]).into_owned())
        })();
        match attempt {
            Ok(head) if head.starts_with("HTTP/1.1 200") => return ExitCode::SUCCESS,
            Ok(head) => last = head.lines().next().unwrap_or_default().to_owned(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!("error: {admin} was not ready within {timeout:?} (last: {last})");
    ExitCode::FAILURE
}
