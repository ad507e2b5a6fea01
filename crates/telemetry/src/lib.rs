//! Logging: human-readable by default, JSON for log shippers; the level comes
//! from `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; call once, first thing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr (the log reader died) must not panic the task
        // that logs: tracing-subscriber reports a failed write with
        // `eprintln!`, which panics on the same closed pipe; a panic in
        // the signal task would leave SIGTERM unheeded.
        .log_internal_errors(false)
        // Colour codes only for a person at a terminal, not for log files.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// The operator commands print their own output: logs only for warnings
/// and errors (`RUST_LOG` still wins), on stderr.
pub fn init_for_commands() {
    // lapin logs a closing channel's late frames as errors; the commands
    // report broker errors themselves.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,lapin=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
