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
//! `/metrics` are the receiver's own.

pub mod bamboohr;
mod events;
pub mod idempotency;
pub mod metrics;
pub mod signature;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::event_publisher::EventPublisher;
use crate::config::AmqpSettings;
use idempotency::Seen;
use metrics::IngestMetrics;
use signature::Secrets;

/// Every answer is sent within this, below the 3 s some senders wait.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(1800);
/// `/readyz` waits at most this for a connection.
const READY_WITHIN: Duration = Duration::from_secs(1);

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

/// A running receiver: where it listens, and its task (ends after
/// shutdown, once in-flight requests are answered).
pub struct Server {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` now (a taken port fails start-up) and serves until
/// `shutdown`: then it stops accepting and finishes in-flight requests.
pub async fn serve(
    listen: SocketAddr,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> Result<Server, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on ingest.listen = {listen}: {e}"))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("ingest.listen = {listen}: {e}"))?;
    tracing::info!(listen = %local_addr, "receiving webhooks on POST /v1/events");
    let mut app = Router::new().route("/v1/events", post(events::receive));
    if ingest.bamboohr.is_some() {
        tracing::info!(listen = %local_addr, "receiving BambooHR webhooks on POST /v1/bamboohr");
        app = app.route("/v1/bamboohr", post(bamboohr::receive));
    }
    let app = app
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::clone(&ingest));
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "ingest HTTP server failed");
        }
        ingest.publisher.close().await;
    });
    Ok(Server { local_addr, task })
}

async fn readyz(State(ingest): State<Arc<Ingest>>) -> impl IntoResponse {
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    match ingest.publisher.ready(deadline).await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot publish: {e}\n"),
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
