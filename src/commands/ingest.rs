//! `ingest`: the webhook receiver alone; and the receiver's start-up shared
//! with `run --with-ingest`. It does not call Zoom, so the ZOOM_* secrets
//! need not be set; its own secret, `ZDS_INGEST_SECRET`, must be, and with
//! `[ingest.bamboohr]` also `BAMBOOHR_WEBHOOK_KEY` and `BAMBOOHR_API_KEY`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Exit, broker_settings};
use secrecy::SecretString;

use crate::config::{BAMBOOHR_API_KEY_VAR, BAMBOOHR_WEBHOOK_KEY_VAR, INGEST_SECRET_VAR, Settings};
use crate::ingest::bamboohr::BambooHr;
use crate::ingest::bamboohr::signature::WebhookKey;
use crate::ingest::signature::Secrets;
use crate::ingest::{self, Ingest, Server};
use crate::shutdown;
use crate::telemetry::{self, LogFormat};

/// The receiver's secrets, read from the environment at start-up.
pub struct Keys {
    secrets: Secrets,
    /// The webhook key and the API key, when `[ingest.bamboohr]` is set.
    bamboohr: Option<(WebhookKey, SecretString)>,
}

/// Every secret the receiver's config asks for, or one line naming the
/// first one missing and exit 2.
pub fn keys(settings: &Settings) -> Result<Keys, Exit> {
    let secrets = secrets()?;
    let bamboohr = match settings.ingest.bamboohr {
        None => None,
        Some(_) => {
            let key = WebhookKey::new(&required(BAMBOOHR_WEBHOOK_KEY_VAR)?)
                .ok_or_else(|| missing(BAMBOOHR_WEBHOOK_KEY_VAR))?;
            Some((key, required(BAMBOOHR_API_KEY_VAR)?.into()))
        }
    };
    Ok(Keys { secrets, bamboohr })
}

fn required(name: &str) -> Result<String, Exit> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| missing(name))
}

fn missing(name: &str) -> Exit {
    eprintln!(
        "zoom-dept-sync: configuration error: environment variable {name} is not set \
         ([ingest.bamboohr] is configured, and BambooHR's secrets come from the environment)"
    );
    Exit::Usage
}

/// `ZDS_INGEST_SECRET`, or one line naming it and exit 2.
fn secrets() -> Result<Secrets, Exit> {
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
    keys: Keys,
    shutdown: CancellationToken,
) -> Result<Server, String> {
    let mut ingest = Ingest::new(&settings.amqp, keys.secrets);
    if let (Some(hr), Some((key, api_key))) = (&settings.ingest.bamboohr, keys.bamboohr) {
        ingest = ingest.with_bamboohr(BambooHr::new(
            hr,
            &settings.retry,
            key,
            api_key,
            !settings.zoom.allow_insecure_http,
        )?);
    }
    let ingest = Arc::new(ingest);
    ingest::serve(settings.ingest.listen, ingest, shutdown).await
}

/// `zoom-dept-sync ingest --config FILE`: serves until SIGTERM or SIGINT,
/// then answers the requests in flight and exits.
pub fn main(config: &Path, format: LogFormat, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let loaded = broker_settings(config).and_then(|s| {
        let keys = keys(&s)?;
        Ok((s, keys))
    });
    let (settings, keys) = match loaded {
        Ok(loaded) => loaded,
        Err(exit) => return exit.into(),
    };
    telemetry::init(format);
    runtime.block_on(async {
        let shutdown = shutdown::on_signals();
        match start(&settings, keys, shutdown).await {
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
