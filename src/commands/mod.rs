//! The command line: `run` starts the daemon; the rest is the operator's
//! toolbox (triage, replay and purge dead letters, status, a preflight
//! check, publishing events, resuming after a quarantine). Every command
//! reads the same config file and exits 0 (ok), 1 (problems found) or 2
//! (usage or configuration error).

// Shadow std's `println!`/`eprintln!` in every command module (declared
// below, so in their textual scope): std's panic when the reader of a pipe
// has left; these stop printing quietly (see `console`).
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::commands::console::out(format_args!($($arg)*))
    };
}
macro_rules! eprintln {
    ($($arg:tt)*) => {
        $crate::commands::console::err(format_args!($($arg)*))
    };
}
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::commands::console::err_part(format_args!($($arg)*))
    };
}

mod brake;
mod check;
mod console;
mod dead_letters;
mod explain;
mod history;
mod ingest;
mod input_file;
mod output;
mod output_file;
/// [`crate::printable`], under the name the print sites use.
mod printable {
    pub use crate::printable::*;
}
mod publish;
mod reconcile;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, EnvLookup, Settings};
use crate::systemd::Systemd;
use crate::telemetry::{self, LogFormat};
use crate::{shutdown, startup};

/// Keeps Zoom group membership in step with HR department changes.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log format: human-readable text or JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// The TOML configuration file (the daemon's own).
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also receive webhooks on `ingest.listen`, in this process (same
    /// shutdown); needs ZDS_INGEST_SECRET.
    #[arg(long)]
    with_ingest: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(RunArgs),
    /// Receive signed webhooks (POST /v1/events) and publish them as events.
    Ingest(ConfigArg),
    /// Triage, replay and purge the dead-letter queue.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLetterCommand),
    /// Queue depths, consumers, dead letters by reason, the daemon's readiness.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Preflight: config, broker, queues, token, scopes, mapped groups.
    Check(ConfigArg),
    /// Validate events (JSON lines) and publish them to the input queue.
    Publish(publish::PublishArgs),
    /// Ask the running daemon to resume after a quarantine, or to let the
    /// burst the brake holds through.
    Resume(ConfigArg),
    /// What to do with the burst the brake holds instead of letting it through.
    #[command(subcommand)]
    Brake(brake::BrakeCommand),
    /// What happened to one person: their outcomes from the audit trail.
    History(history::HistoryArgs),
    /// Compare an HR export with Zoom's managed groups; print the plan,
    /// publish the changes with --apply.
    Reconcile(reconcile::ReconcileArgs),
    /// What the daemon would do for one person, without writing anything;
    /// --apply publishes that one event.
    Explain(explain::ExplainArgs),
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// The command ran and found problems (a failed check, a missing event).
    Problems,
    /// Bad usage or configuration.
    Usage,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Ok => ExitCode::SUCCESS,
            Exit::Problems => ExitCode::from(1),
            Exit::Usage => ExitCode::from(2),
        }
    }
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("zoom-dept-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run(args) => run(&args, cli.log_format, &runtime),
        Command::Ingest(ConfigArg { config }) => ingest::main(&config, cli.log_format, &runtime),
        command => {
            telemetry::init_for_commands();
            runtime.block_on(dispatch(command)).into()
        }
    }
}

async fn dispatch(command: Command) -> Exit {
    match command {
        Command::Run(_) | Command::Ingest(_) => unreachable!("run and ingest are handled before"),
        Command::DeadLetters(command) => dead_letters::run(command).await,
        Command::Status { config, json } => status::run(&config.config, json).await,
        Command::Check(ConfigArg { config }) => check::run(&config).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Resume(ConfigArg { config }) => resume(&config).await,
        Command::Brake(command) => brake::run(command).await,
        Command::History(args) => history::run(args).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Explain(args) => explain::run(args).await,
    }
}

fn run(args: &RunArgs, format: LogFormat, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let settings = match Settings::load(&args.config.config, &process_env) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("zoom-dept-sync: {e}");
            return Exit::Usage.into();
        }
    };
    let keys = match args
        .with_ingest
        .then(|| ingest::keys(&settings, &process_env))
        .transpose()
    {
        Ok(keys) => keys,
        Err(exit) => return exit.into(),
    };
    telemetry::init(format);
    let result = runtime.block_on(async {
        // READY=1 once consuming, WATCHDOG=1 from the consume loop,
        // STOPPING=1 on a signal; the receiver, if any, lives in this
        // process and needs nothing more.
        let systemd = Arc::new(Systemd::from_env());
        let shutdown = shutdown::on_signals_telling(Arc::clone(&systemd));
        // The receiver shares the shutdown: on SIGTERM it stops accepting
        // and answers what is in flight while the consumer drains.
        let receiver = match keys {
            Some(keys) => Some(ingest::start(&settings, keys, shutdown.clone()).await?),
            None => None,
        };
        let ran = startup::run_telling(settings, shutdown.clone(), systemd).await;
        // The consumer may also end on an error: the receiver goes with it.
        shutdown.cancel();
        if let Some(receiver) = receiver {
            let _ = receiver.task.await;
        }
        ran
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ startup::StartError::Misconfigured(_)) => {
            tracing::error!(error = %e, "zoom-dept-sync cannot start; fix the configuration");
            Exit::Usage.into()
        }
        Err(e) => {
            tracing::error!(error = %e, "zoom-dept-sync failed");
            ExitCode::FAILURE
        }
    }
}

/// The process environment, as [`crate::config::EnvLookup`] wants it.
/// Secrets are read from it through [`crate::config::secret_var`], so each
/// may also come from a file (`X_FILE`).
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the config for a command that does not call Zoom: the Zoom secrets
/// need not be set (a stand-in fills in for each one that is set neither
/// directly nor as a file).
fn broker_settings(config: &std::path::Path) -> Result<Settings, Exit> {
    Settings::load(config, &without_zoom(&process_env)).map_err(config_error)
}

/// `env`, with a stand-in for each Zoom secret set neither directly nor as
/// a file. Empty counts as unset, as everywhere (compose passes `${X:-}`).
fn without_zoom(env: EnvLookup<'_>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let zoom_secret = matches!(
            name,
            "ZOOM_ACCOUNT_ID" | "ZOOM_CLIENT_ID" | "ZOOM_CLIENT_SECRET"
        );
        set(name).or_else(|| {
            (zoom_secret && set(&format!("{name}_FILE")).is_none()).then(|| "not-needed".to_owned())
        })
    }
}

/// Loads the config with every secret, as `run` does.
fn full_settings(config: &std::path::Path) -> Result<Settings, ConfigError> {
    Settings::load(config, &process_env)
}

fn config_error(e: ConfigError) -> Exit {
    eprintln!("zoom-dept-sync: {e}");
    Exit::Usage
}

async fn resume(config: &std::path::Path) -> Exit {
    let settings = match broker_settings(config) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    match crate::control::request_resume(settings.http.listen).await {
        Ok(answer) => {
            println!("{answer}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("zoom-dept-sync resume: {e}");
            Exit::Problems
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn commands_without_zoom_load_with_empty_zoom_variables() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"[departments]\nS = \"g\"\n").unwrap();
        let env = |name: &str| match name {
            "ZOOM_CLIENT_SECRET_FILE" | "ZOOM_CLIENT_ID" => Some(String::new()),
            _ => None,
        };
        Settings::load(f.path(), &without_zoom(&env)).expect("no Zoom secret is needed");
    }
}

/// A time given on the command line that is not RFC 3339.
#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 time (like 2026-11-26T10:00:00Z): {0}")]
pub struct NotRfc3339(time::error::Parse);

/// clap's parser for `--since` and `--until`.
pub fn rfc3339(text: &str) -> Result<time::OffsetDateTime, NotRfc3339> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(NotRfc3339)
}
