//! `ingest`: the webhook receiver alone; and the receiver's start-up shared
//! with `run --with-ingest`. It does not call Zoom, so the ZOOM_* secrets
//! need not be set; its own secret, `ZDS_INGEST_SECRET`, must be.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Exit, broker_settings};
use crate::config::{INGEST_SECRET_VAR, Settings};
use crate::ingest::signature::Secrets;
use crate::ingest::{self, Ingest, Server};
use crate::shutdown;
use crate::telemetry::{self, LogFormat};

/// `ZDS_INGEST_SECRET`, or one line naming it and exit 2.
pub fn secrets() -> Result<Secrets, Exit> {
    let value = std::env::var(INGEST_SECRET_VAR).unwrap_or_default();
    Secrets::parse(&value).map_err(|e| {
        eprintln!(
            "zoom-dept-sync: configuration error: environment variable {INGEST_SECRET_VAR} {e} \
             (one or more whsec_<base64> values, space-separated)"
        );
        Exit::Usage
    })
}

/// Starts the receiver on `ingest.listen`, stopping with `shutdown`.
pub async fn start(
    settings: &Settings,
    secrets: Secrets,
    shutdown: CancellationToken,
) -> Result<Server, String> {
    let ingest = Arc::new(Ingest::new(&settings.amqp, secrets));
    ingest::serve(settings.ingest.listen, ingest, shutdown).await
}

/// `zoom-dept-sync ingest --config FILE`: serves until SIGTERM or SIGINT,
/// then answers the requests in flight and exits.
pub fn main(config: &Path, format: LogFormat, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let (settings, secrets) = match broker_settings(config).and_then(|s| Ok((s, secrets()?))) {
        Ok(loaded) => loaded,
        Err(exit) => return exit.into(),
    };
    telemetry::init(format);
    runtime.block_on(async {
        let shutdown = shutdown::on_signals();
        match start(&settings, secrets, shutdown).await {
            Ok(server) => {
                let _ = server.task.await;
                tracing::info!("ingest stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest failed");
                ExitCode::FAILURE
            }
        }
    })
}
