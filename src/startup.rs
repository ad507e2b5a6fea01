//! Wires the parts together; `main` and the integration tests both start the
//! daemon through [`run`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::broker;
use crate::config::Settings;
use crate::worker::Worker;

/// Runs the daemon until `shutdown` is cancelled and in-flight work is
/// settled or handed back.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), String> {
    let worker = Arc::new(Worker::new(&settings)?);
    tracing::info!(
        queue = %settings.amqp.queue,
        dead_letter_queue = %settings.amqp.dead_letter_queue(),
        concurrency = settings.worker.concurrency,
        requests_per_second = settings.zoom.requests_per_second,
        "zoom-dept-sync starting"
    );
    broker::run(Arc::new(settings), worker, shutdown).await;
    tracing::info!("zoom-dept-sync stopped");
    Ok(())
}
