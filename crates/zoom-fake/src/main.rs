//! `zoom-fake`: the stand-in Zoom as a program (see the `zoom_fake` library
//! and `demo/zoom-fake.seed.toml`). Serves until SIGINT / SIGTERM; exits 2
//! with one line when the seed file or the address is unusable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use zds_telemetry::{self as telemetry, LogFormat};
use zoom_fake::{self as fake, FakeConfig};

/// A stateful stand-in for Zoom's group-member APIs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The seed file (.toml or .json): groups, users, limits, faults.
    #[arg(long)]
    seed: PathBuf,
    /// Address to serve on.
    #[arg(long, env = "ZOOM_FAKE_LISTEN", default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// Log format: human-readable text or JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let config = match FakeConfig::from_file(&cli.seed) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("zoom-fake: bad seed file: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("zoom-fake: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, cli.listen))
}

async fn serve(config: FakeConfig, listen: SocketAddr) -> ExitCode {
    let (groups, users) = (config.groups.len(), config.users.len());
    let handle = match fake::spawn(config, listen).await {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("zoom-fake: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        api = %handle.api_base_url(),
        token = %handle.token_url(),
        groups,
        users,
        "zoom-fake serving; GET /_state shows groups, users and counters"
    );
    wait_for_signal().await;
    tracing::info!("zoom-fake stopping");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
