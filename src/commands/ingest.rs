//! `ingest`: the webhook receiver alone; and the receiver's start-up shared
//! with `run --with-ingest`. It does not call Zoom, so the ZOOM_* secrets
//! need not be set; its own secret, `ZDS_INGEST_SECRET`, must be, and with
//! `[ingest.bamboohr]` also `BAMBOOHR_WEBHOOK_KEY` and `BAMBOOHR_API_KEY`
//! (each of them, like every secret, also as `X_FILE`).
//!
//! Under systemd (`Type=notify`) the receiver sends `READY=1` once it
//! listens and `STOPPING=1` on SIGTERM, but no watchdog pings: it has no
//! loop of its own that could hang unseen (each request is a task of its
//! own, answered or refused within [`crate::ingest::ANSWER_WITHIN`]), and a
//! timer task pinging would prove nothing. Its liveness check is
//! `GET /healthz`, which the sender's retries and a probe exercise.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Exit, broker_settings, process_env};
use secrecy::SecretString;

use crate::config::{
    BAMBOOHR_API_KEY_VAR, BAMBOOHR_WEBHOOK_KEY_VAR, EnvLookup, INGEST_SECRET_VAR, Settings,
    secret_var,
};
use crate::ingest::bamboohr::BambooHr;
use crate::ingest::bamboohr::signature::WebhookKey;
use crate::ingest::signature::Secrets;
use crate::ingest::{self, Ingest, Server};
use crate::shutdown;
use crate::startup::StartError;
use crate::systemd::Systemd;
use crate::telemetry::{self, LogFormat};

/// The receiver's secrets, read from the environment at start-up.
pub struct Keys {
    secrets: Secrets,
    /// The webhook key and the API key, when `[ingest.bamboohr]` is set.
    bamboohr: Option<(WebhookKey, SecretString)>,
}

/// Every secret the receiver's config asks for, or one line naming the
/// first one missing and exit 2.
pub fn keys(settings: &Settings, env: EnvLookup<'_>) -> Result<Keys, Exit> {
    let secrets = secrets(env)?;
    let bamboohr = match settings.ingest.bamboohr {
        None => None,
        Some(_) => {
            let key = WebhookKey::new(&required(env, BAMBOOHR_WEBHOOK_KEY_VAR)?)
                .ok_or_else(|| missing(BAMBOOHR_WEBHOOK_KEY_VAR))?;
            Some((key, required(env, BAMBOOHR_API_KEY_VAR)?.into()))
        }
    };
    Ok(Keys { secrets, bamboohr })
}

/// A secret variable (or its `_FILE`): one line and exit 2 when it cannot
/// be read.
fn read(env: EnvLookup<'_>, name: &str) -> Result<Option<String>, Exit> {
    secret_var(env, name).map_err(super::config_error)
}

fn required(env: EnvLookup<'_>, name: &str) -> Result<String, Exit> {
    read(env, name)?
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| missing(name))
}

fn missing(name: &str) -> Exit {
    eprintln!(
        "zoom-dept-sync: configuration error: environment variable {name} is not set or empty, \
         nor a file named by {name}_FILE ([ingest.bamboohr] is configured, and BambooHR's \
         secrets come from the environment)"
    );
    Exit::Usage
}

/// `ZDS_INGEST_SECRET`, or one line naming it and exit 2.
fn secrets(env: EnvLookup<'_>) -> Result<Secrets, Exit> {
    let value = read(env, INGEST_SECRET_VAR)?.unwrap_or_default();
    Secrets::parse(&value).map_err(|e| {
        eprintln!(
            "zoom-dept-sync: configuration error: environment variable {INGEST_SECRET_VAR} {e} \
             (one or more whsec_<base64> values, space-separated)"
        );
        Exit::Usage
    })
}

/// How long the receiver's first connection may take at start-up before
/// it serves anyway (503 until the background check connects).
const FIRST_CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Starts the receiver on `ingest.listen` and its probes on
/// `ingest.probe_listen`, stopping with `shutdown`.
pub async fn start(
    settings: &Settings,
    keys: Keys,
    shutdown: CancellationToken,
) -> Result<Server, StartError> {
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
    // A broker that refuses the login at start-up stops it here (exit 2);
    // one merely down is retried in the background while it serves 503.
    let first = tokio::time::Instant::now() + FIRST_CONNECT_WITHIN;
    ingest
        .publisher
        .connect_first(first)
        .await
        .map_err(StartError::Misconfigured)?;
    Ok(ingest::serve_with(
        ingest::Listen::from_settings(&settings.ingest),
        ingest,
        shutdown,
    )
    .await?)
}

/// `zoom-dept-sync ingest --config FILE`: serves until SIGTERM or SIGINT,
/// then answers the requests in flight and exits.
pub fn main(config: &Path, format: LogFormat, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let loaded = broker_settings(config).and_then(|s| {
        let keys = keys(&s, &process_env)?;
        Ok((s, keys))
    });
    let (settings, keys) = match loaded {
        Ok(loaded) => loaded,
        Err(exit) => return exit.into(),
    };
    telemetry::init(format);
    runtime.block_on(async {
        let systemd = Arc::new(Systemd::from_env());
        if let Some(timeout) = systemd.watchdog() {
            tracing::warn!(
                watchdog_ms = timeout.as_millis() as u64,
                "WatchdogSec= is set, but the receiver sends no watchdog pings: \
                 systemd will restart it every time; remove WatchdogSec= from its unit"
            );
        }
        let shutdown = shutdown::on_signals_telling(Arc::clone(&systemd));
        match start(&settings, keys, shutdown).await {
            Ok(server) => {
                systemd.ready(&format!("receiving webhooks on {}", server.local_addr));
                let _ = server.task.await;
                tracing::info!("ingest stopped");
                ExitCode::SUCCESS
            }
            Err(e @ StartError::Misconfigured(_)) => {
                tracing::error!(error = %e, "zoom-dept-sync ingest cannot start; fix the configuration");
                Exit::Usage.into()
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest failed");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn settings(bamboohr: bool) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let section = if bamboohr {
            "[ingest.bamboohr]\ncompany_domain = \"acme\"\n"
        } else {
            ""
        };
        std::fs::write(&path, format!("{section}[departments]\nSales = \"g\"\n")).unwrap();
        Settings::load(&path, &|name| {
            name.starts_with("ZOOM_")
                .then(|| "x".to_owned())
                .filter(|_| !name.ends_with("_FILE"))
        })
        .unwrap()
    }

    #[test]
    fn every_receiver_secret_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = std::collections::BTreeMap::new();
        for (name, value) in [
            (INGEST_SECRET_VAR, SECRET),
            (BAMBOOHR_WEBHOOK_KEY_VAR, "webhook-key"),
            (BAMBOOHR_API_KEY_VAR, "api-key"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{value}\n")).unwrap();
            vars.insert(format!("{name}_FILE"), path.display().to_string());
        }
        let env = |name: &str| vars.get(name).cloned();
        let keys = keys(&settings(true), &env).unwrap_or_else(|_| panic!("keys from files"));
        assert!(keys.bamboohr.is_some());

        vars.insert(INGEST_SECRET_VAR.to_owned(), SECRET.to_owned());
        let env = |name: &str| vars.get(name).cloned();
        assert!(
            matches!(keys_result(&settings(false), &env), Err(Exit::Usage)),
            "both ZDS_INGEST_SECRET and ZDS_INGEST_SECRET_FILE"
        );
    }

    #[test]
    fn an_unreadable_receiver_secret_file_is_a_usage_error() {
        let env = |name: &str| {
            (name == "ZDS_INGEST_SECRET_FILE").then(|| "/nonexistent/zds/ingest".to_owned())
        };
        assert!(matches!(
            keys_result(&settings(false), &env),
            Err(Exit::Usage)
        ));
    }

    /// `keys` with the keys dropped: `Keys` has no `Debug` (it holds secrets).
    fn keys_result(settings: &Settings, env: EnvLookup<'_>) -> Result<(), Exit> {
        keys(settings, env).map(|_| ())
    }
}
