//! One session's consume loop: take deliveries in order, hand each to the
//! worker as its own task, settle it with its own acker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::settle::{Settled, Settler};
use super::{RECOVERY_LIMIT, Session};
use crate::config::Settings;
use crate::outcome::Outcome;
use crate::worker::{Processed, Worker};

const CONSUMER_TAG: &str = "zoom-dept-sync";

/// Why a session's loop ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was asked for; in-flight work is settled or requeued.
    Shutdown,
    /// The connection or the consumer is gone; the supervisor reconnects.
    Lost(String),
}

/// "Take no more deliveries until …", set when an event is requeued because
/// of Zoom's rate limit or credentials, so the daemon does not spin.
#[derive(Default)]
struct Pause(Mutex<Option<Instant>>);

impl Pause {
    fn until(&self, resume_at: Instant) {
        let mut until = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_none_or(|u| u < resume_at) {
            *until = Some(resume_at);
        }
    }

    fn current(&self) -> Option<Instant> {
        let until = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|u| *u > Instant::now())
    }
}

pub(super) async fn consume(
    session: &Session,
    settings: &Settings,
    worker: &Arc<Worker>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let mut deliveries = match session
        .consuming
        .basic_consume(
            session.topology.queue.as_str().into(),
            CONSUMER_TAG.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(consumer) => consumer,
        Err(e) => return SessionEnd::Lost(format!("cannot consume: {e}")),
    };
    let settler = Arc::new(Settler::new(
        session.publishing.clone(),
        session.topology.clone(),
    ));
    let tracker = TaskTracker::new();
    let abandon = CancellationToken::new();
    let pause = Arc::new(Pause::default());
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    let mut down_since: Option<Instant> = None;

    let end = loop {
        if let Some(until) = pause.current() {
            tracing::warn!(
                resume_in_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                "pausing consumption"
            );
            tokio::select! {
                _ = tokio::time::sleep_until(until) => continue,
                _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            _ = watchdog.tick() => {
                if session.connection.status().connected() {
                    down_since = None;
                } else if down_since.get_or_insert_with(Instant::now).elapsed() > RECOVERY_LIMIT {
                    break SessionEnd::Lost("the connection did not recover in time".into());
                }
            }
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    dispatch(delivery, worker, &settler, &tracker, &abandon, &pause);
                }
                Some(Err(e)) => break SessionEnd::Lost(format!("consumer failed: {e}")),
                None => break SessionEnd::Lost("the broker cancelled the consumer (was the queue deleted?)".into()),
            },
        }
    };

    // Take no more; what is buffered but not dispatched goes back to the
    // broker when the channel closes.
    let _ = session
        .consuming
        .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
        .await;
    tracker.close();
    if let SessionEnd::Shutdown = end {
        let grace = settings.worker.shutdown_grace();
        tracing::info!(
            in_flight = tracker.len(),
            grace_secs = grace.as_secs(),
            "shutting down: finishing in-flight events"
        );
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over: requeueing what is still in flight"
            );
            abandon.cancel();
            tracker.wait().await;
        }
    }
    end
}

/// Spawns one delivery's processing and settling.
fn dispatch(
    delivery: Delivery,
    worker: &Arc<Worker>,
    settler: &Arc<Settler>,
    tracker: &TaskTracker,
    abandon: &CancellationToken,
    pause: &Arc<Pause>,
) {
    // In delivery order: this is what keeps one user's events in sequence.
    let prepared = worker.prepare(&delivery.data);
    let (worker, settler, abandon, pause) = (
        Arc::clone(worker),
        Arc::clone(settler),
        abandon.clone(),
        Arc::clone(pause),
    );
    let span = tracing::info_span!(
        "event",
        delivery_tag = delivery.delivery_tag,
        redelivered = delivery.redelivered
    );
    tracker.spawn(
        async move {
            let processed = tokio::select! {
                processed = worker.process(prepared) => processed,
                _ = abandon.cancelled() => {
                    let settled = settler.abandon(&delivery).await;
                    tracing::warn!(?settled, "shutdown grace over: event handed back to the broker");
                    return;
                }
            };
            if let Outcome::Requeue { resume_at: Some(at), .. } = &processed.outcome {
                pause.until(*at);
            }
            let settled = settler.settle(&delivery, &processed).await;
            log_outcome(&processed, &settled);
        }
        .instrument(span),
    );
}

/// One line per event, with everything an operator needs to follow it.
fn log_outcome(processed: &Processed, settled: &Settled) {
    let event = processed.event.as_ref();
    let event_id = processed
        .event_id
        .as_ref()
        .map(|id| id.as_str())
        .unwrap_or("-");
    let user = event.map(|e| e.user.to_string()).unwrap_or_default();
    let previous_department = event
        .and_then(|e| e.previous_department.as_ref())
        .map(|d| d.as_str())
        .unwrap_or("-");
    let new_department = event.map(|e| e.new_department.as_str()).unwrap_or("-");
    let from_group = processed
        .from_group
        .as_ref()
        .map(|g| g.as_str())
        .unwrap_or("-");
    let to_group = processed
        .to_group
        .as_ref()
        .map(|g| g.as_str())
        .unwrap_or("-");
    let elapsed_ms = processed.elapsed.as_millis() as u64;
    macro_rules! line {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                event_id,
                user,
                previous_department,
                new_department,
                from_group,
                to_group,
                attempts = processed.attempts,
                elapsed_ms,
                outcome = %processed.outcome,
                ?settled,
                $msg
            )
        };
    }
    match (&processed.outcome, settled) {
        (_, Settled::NotSettled(_)) => {
            line!(error, "event not settled; the broker will redeliver it")
        }
        (Outcome::DeadLetter(_), _) => line!(warn, "event dead-lettered"),
        (Outcome::Requeue { .. }, _) => line!(warn, "event requeued"),
        _ => line!(info, "event processed"),
    }
}
