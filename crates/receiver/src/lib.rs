//! The receiving half: an HTTP server that turns signed webhooks into events
//! on the input queue (`zoom-dept-sync ingest`, or `run --with-ingest`).
//!
//! `POST /v1/events` answers 202 only once the broker has confirmed the
//! event, and within [`ANSWER_WITHIN`] in every case (some senders give up
//! after 3 s): when the broker is down or slow the answer is 503 with
//! `Retry-After`, and the sender retries with the same `webhook-id`, which
//! [`idempotency`] turns into one message. `POST /v1/bamboohr` (only with
//! `[ingest.bamboohr]`) follows the same rules for BambooHR's webhooks: see
//! [`bamboohr`]. `/healthz`, `/readyz` (ready when it can publish) and
//! `/metrics` are the receiver's own, on a listener of their own
//! (`ingest.probe_listen`, loopback by default): the webhook port, open to
//! the senders, serves `/v1/...` only.

pub mod bamboohr;
mod events;
pub mod idempotency;
pub mod metrics;
pub mod settings;
pub mod signature;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::settings::IngestSettings;
use idempotency::Seen;
use metrics::IngestMetrics;
use signature::Secrets;
use zds_amqp::event_publisher::EventPublisher;
use zds_amqp::settings::AmqpSettings;
use zds_server::{Limits, ListenError, bind};

/// Every answer is sent within this, below the 3 s some senders wait.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(1800);

/// What every request shares.
pub struct Ingest {
    pub secrets: Secrets,
    pub publisher: EventPublisher,
    pub seen: Seen,
    pub metrics: IngestMetrics,
    /// `POST /v1/bamboohr`, when `[ingest.bamboohr]` is configured.
    pub bamboohr: Option<bamboohr::BambooHr>,
}

impl Ingest {
    pub fn new(amqp: &AmqpSettings, secrets: Secrets) -> Self {
        Self {
            secrets,
            publisher: EventPublisher::new(amqp),
            seen: Seen::default(),
            metrics: IngestMetrics::new(),
            bamboohr: None,
        }
    }

    /// Turns on `POST /v1/bamboohr`.
    pub fn with_bamboohr(mut self, bamboohr: bamboohr::BambooHr) -> Self {
        self.bamboohr = Some(bamboohr);
        self
    }
}

/// Where the receiver listens, and the limits of each of its listeners.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// `ingest.listen`: `POST /v1/...` only, the port senders reach.
    pub webhooks: SocketAddr,
    /// `ingest.probe_listen`: `/healthz`, `/readyz`, `/metrics`.
    pub probes: SocketAddr,
    pub limits: Limits,
}

impl Listen {
    pub fn from_settings(settings: &IngestSettings) -> Self {
        Self {
            webhooks: settings.listen,
            probes: settings.probe_listen,
            limits: settings.limits(),
        }
    }
}

/// A running receiver: where it listens, and its task (ends after
/// shutdown, once in-flight requests are answered).
pub struct Server {
    pub local_addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are.
    pub probe_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// [`serve_with`] webhooks on `listen`, probes on a free loopback port,
/// with the default limits.
pub async fn serve(
    listen: SocketAddr,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> Result<Server, ListenError> {
    let listen = Listen {
        webhooks: listen,
        probes: SocketAddr::from(([127, 0, 0, 1], 0)),
        limits: Limits::default(),
    };
    serve_with(listen, ingest, shutdown).await
}

/// Binds both listeners now (a taken port fails start-up) and serves until
/// `shutdown`: then it stops accepting and finishes in-flight requests.
pub async fn serve_with(
    listen: Listen,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> Result<Server, ListenError> {
    let (webhooks, local_addr) = bind(listen.webhooks, "ingest.listen").await?;
    let (probes, probe_addr) = bind(listen.probes, "ingest.probe_listen").await?;
    tracing::info!(listen = %local_addr, "receiving webhooks on POST /v1/events");
    tracing::info!(listen = %probe_addr, "serving the receiver's /healthz, /readyz and /metrics");
    let mut app = Router::new().route("/v1/events", post(events::receive));
    if ingest.bamboohr.is_some() {
        tracing::info!(listen = %local_addr, "receiving BambooHR webhooks on POST /v1/bamboohr");
        app = app.route("/v1/bamboohr", post(bamboohr::receive));
    }
    let app = app.with_state(Arc::clone(&ingest));
    let probe_app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::clone(&ingest));
    let keeper = tokio::spawn({
        let (ingest, shutdown) = (Arc::clone(&ingest), shutdown.clone());
        async move { ingest.publisher.keep(shutdown).await }
    });
    let webhooks = zds_server::spawn(webhooks, app, listen.limits, shutdown.clone());
    let probes = zds_server::spawn(probes, probe_app, listen.limits, shutdown);
    let task = tokio::spawn(async move {
        let _ = tokio::join!(webhooks, probes, keeper);
        ingest.publisher.close().await;
    });
    Ok(Server {
        local_addr,
        probe_addr,
        task,
    })
}

/// What the publisher last saw (kept fresh in the background): a probe
/// never opens a broker connection, and its text names no host or file.
async fn readyz(State(ingest): State<Arc<Ingest>>) -> impl IntoResponse {
    match ingest.publisher.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(ingest): State<Arc<Ingest>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ingest.metrics.encode(),
    )
}
