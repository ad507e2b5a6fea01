use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zoom_dept_sync::config::Settings;
use zoom_dept_sync::telemetry::{self, LogFormat};
use zoom_dept_sync::{shutdown, startup};

/// Keeps Zoom group membership in step with HR department changes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format: human-readable text or JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Start-up errors (bad configuration) exit with 2, as clap does for bad
/// arguments; 1 is left for failures while running.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Run { config } = cli.command;
    let settings = match Settings::load(&config, &|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("zoom-dept-sync: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("zoom-dept-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown::on_signals();
        startup::run(settings, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "zoom-dept-sync failed");
            ExitCode::FAILURE
        }
    }
}
