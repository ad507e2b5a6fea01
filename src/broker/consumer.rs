//! One session's consume loop: take deliveries in order, hand each to the
//! worker as its own task, settle it with its own acker; pause consuming
//! while Zoom cannot take calls.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::pause::{DEAD_LETTER_RETRY_WAIT, PauseRequest, wait_out_pause};
use super::settle::{Settled, Settler};
use super::{Daemon, Session};
use crate::outcome::{Outcome, RequeueCause};
use crate::worker::Processed;

const CONSUMER_TAG: &str = "zoom-dept-sync";

/// Why a session's loop ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was asked for; in-flight work is settled or requeued.
    Shutdown,
    /// The connection or the consumer is gone; the supervisor reconnects.
    Lost(String),
}

pub(super) async fn consume(
    session: &Session,
    daemon: &Daemon,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let mut deliveries = match start_consuming(session).await {
        Ok(consumer) => consumer,
        Err(e) => return SessionEnd::Lost(format!("cannot consume: {e}")),
    };
    daemon.health.consuming();
    let settler = Arc::new(Settler::new(
        session.publishing.clone(),
        session.topology.clone(),
    ));
    let tracker = TaskTracker::new();
    let abandon = CancellationToken::new();
    let pause = Arc::new(PauseRequest::new());
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    let mut down_since: Option<Instant> = None;

    let end = loop {
        if let Some((cause, why)) = pause.take() {
            stop_consuming(session, &mut deliveries).await;
            let resumed = wait_out_pause(daemon, cause, &why, &pause, shutdown).await;
            daemon.health.resumed();
            if !resumed {
                break SessionEnd::Shutdown;
            }
            deliveries = match start_consuming(session).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    break SessionEnd::Lost(format!("cannot consume again after a pause: {e}"));
                }
            };
            tracing::info!("resumed consuming");
            continue;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            _ = watchdog.tick() => {
                if session.connection.status().connected() {
                    if down_since.take().is_some() {
                        tracing::info!("broker connection recovered");
                        daemon.health.consuming();
                    }
                } else {
                    let since = *down_since.get_or_insert_with(|| {
                        tracing::warn!("broker connection lost; lapin is recovering it");
                        daemon.health.broker_down("broker connection lost; recovering");
                        Instant::now()
                    });
                    if since.elapsed() > daemon.recovery_timeout {
                        break SessionEnd::Lost("the connection did not recover in time".into());
                    }
                }
            }
            _ = pause.wait() => {}
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    dispatch(delivery, daemon, &settler, &tracker, &Stops { shutdown, abandon: &abandon }, &pause);
                }
                Some(Err(e)) => break SessionEnd::Lost(format!("consumer failed: {e}")),
                None => {
                    tracing::error!(queue = %session.topology.queue, "the broker cancelled the consumer: was the queue deleted?");
                    break SessionEnd::Lost("the broker cancelled the consumer".into());
                }
            },
        }
    };
    daemon.health.broker_down(match &end {
        SessionEnd::Shutdown => "shutting down".to_owned(),
        SessionEnd::Lost(why) => why.clone(),
    });

    // Take no more; what is buffered but not dispatched goes back to the
    // broker when the channel closes.
    let _ = session
        .consuming
        .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
        .await;
    tracker.close();
    if let SessionEnd::Shutdown = end {
        let grace = daemon.shutdown_grace;
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

async fn start_consuming(session: &Session) -> Result<Consumer, lapin::Error> {
    session
        .consuming
        .basic_consume(
            session.topology.queue.as_str().into(),
            CONSUMER_TAG.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Cancels the consumer and hands back what it had buffered, so no delivery
/// sits unacked through a pause (RabbitMQ's consumer timeout is 30 minutes;
/// a daily rate limit is longer).
async fn stop_consuming(session: &Session, deliveries: &mut Consumer) {
    if let Err(e) = session
        .consuming
        .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
        .await
    {
        tracing::warn!(error = %e, "cannot cancel the consumer");
    }
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    let mut handed_back = 0;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await
    {
        let _ = delivery.nack(requeue).await;
        handed_back += 1;
    }
    tracing::info!(handed_back, "stopped consuming");
}

/// The two ways a delivery's task is told to give its delivery back.
struct Stops<'a> {
    /// Shutdown began: events not started yet go back at once.
    shutdown: &'a CancellationToken,
    /// The grace is over: events still running go back too.
    abandon: &'a CancellationToken,
}

/// Spawns one delivery's processing and settling.
fn dispatch(
    delivery: Delivery,
    daemon: &Daemon,
    settler: &Arc<Settler>,
    tracker: &TaskTracker,
    stops: &Stops<'_>,
    pause: &Arc<PauseRequest>,
) {
    daemon.metrics.events_consumed.inc();
    // In delivery order: this is what keeps one user's events in sequence.
    let prepared = daemon.worker.prepare(&delivery.data);
    let (daemon, settler, shutdown, abandon, pause) = (
        daemon.clone(),
        Arc::clone(settler),
        stops.shutdown.clone(),
        stops.abandon.clone(),
        Arc::clone(pause),
    );
    // Every line logged while this event is processed carries its id.
    let span = tracing::info_span!(
        "event",
        event_id = prepared.event_id().map_or("-", |id| id.as_str()),
        delivery_tag = delivery.delivery_tag,
        redelivered = delivery.redelivered
    );
    tracker.spawn(
        async move {
            let admitted = tokio::select! {
                admitted = daemon.worker.admit(prepared) => admitted,
                _ = shutdown.cancelled() => {
                    let settled = settler.abandon(&delivery).await;
                    tracing::info!(?settled, "shutting down: event not started, handed back to the broker");
                    return;
                }
            };
            daemon.metrics.events_in_flight.inc();
            let processed = tokio::select! {
                processed = daemon.worker.process(&admitted) => Some(processed),
                _ = abandon.cancelled() => None,
            };
            let Some(processed) = processed else {
                let settled = settler.abandon(&delivery).await;
                tracing::warn!(?settled, "shutdown grace over: event handed back to the broker");
                daemon.metrics.events_in_flight.dec();
                return;
            };
            match &processed.outcome {
                Outcome::Requeue { cause, why } => pause.set(*cause, why),
                Outcome::Applied | Outcome::Added | Outcome::AlreadyApplied => pause.zoom_worked(),
                _ => {}
            }
            let settled = settler.settle(&delivery, &processed).await;
            match &settled {
                Settled::DeadLetterFailed(error) if !error.repaired => pause.set(
                    RequeueCause::DeadLetterQueueUnavailable {
                        until: Instant::now() + DEAD_LETTER_RETRY_WAIT,
                    },
                    &format!("dead letters cannot be published: {}", error.why),
                ),
                Settled::DeadLetterFailed(_) => {}
                Settled::NotSettled(_) => {}
                _ => daemon.metrics.record_outcome(&processed.outcome),
            }
            drop(admitted);
            daemon.metrics.events_in_flight.dec();
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
    let user = event.map_or_else(|| "-".to_owned(), |e| e.user.to_string());
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
        (_, Settled::NotSettled(_) | Settled::DeadLetterFailed(_)) => {
            line!(error, "event not settled; the broker will redeliver it")
        }
        (Outcome::DeadLetter(_), _) => line!(warn, "event dead-lettered"),
        (Outcome::Requeue { .. }, _) => line!(warn, "event requeued"),
        _ => line!(info, "event processed"),
    }
}
