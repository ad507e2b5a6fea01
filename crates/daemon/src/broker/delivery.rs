//! One delivery's life: its place in its person's line, the checks before it
//! may start, processing, settling, and handing back.
//!
//! Every task waits for its turn, even one that will not run: a delivery
//! goes back to the broker only after the earlier events of its person have
//! been settled or handed back, so they come back in their order.

use std::sync::Arc;

use lapin::message::Delivery;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::Daemon;
use super::pause::show_quarantine;
use super::session::{Refusal, SessionCtx};
use super::settle::Settled;
use crate::worker::{Admitted, Prepared, Processed, RunLimits};
use zds_core::outcome::{FailureReason, Outcome, RequeueCause};

/// Spawns one delivery's task. Parsing and taking a place in line happen
/// here, synchronously, so they follow delivery order.
pub(super) fn dispatch(
    delivery: Delivery,
    generation: u64,
    daemon: &Daemon,
    ctx: &Arc<SessionCtx>,
    tracker: &TaskTracker,
) -> JoinHandle<()> {
    daemon.metrics.events_consumed.inc();
    let prepared = daemon.worker.prepare(&delivery.data);
    let event_id = prepared.event_id().map(|id| id.as_str().to_owned());
    let over_limit = event_id
        .as_deref()
        .and_then(|id| daemon.redeliveries.over_limit(id, delivery.redelivered));
    ctx.dispatched();
    let span = tracing::info_span!(
        "event",
        event_id = event_id.as_deref().unwrap_or("-"),
        delivery_tag = delivery.delivery_tag,
        redelivered = delivery.redelivered
    );
    let task = Task {
        delivery,
        event_id,
        generation,
        received: Instant::now(),
        over_limit,
        daemon: daemon.clone(),
        ctx: Arc::clone(ctx),
    };
    tracker.spawn(task.run(prepared).instrument(span))
}

struct Task {
    delivery: Delivery,
    event_id: Option<String>,
    generation: u64,
    received: Instant,
    over_limit: Option<u32>,
    daemon: Daemon,
    ctx: Arc<SessionCtx>,
}

impl Task {
    async fn run(self, mut prepared: Prepared) {
        prepared.wait_turn().await;
        if let Some(refusal) = self.ctx.refusal(self.generation) {
            return self.give_up(refusal).await;
        }
        let admitted = tokio::select! {
            admitted = self.daemon.worker.admit(&mut prepared) => admitted,
            _ = self.ctx.lost.cancelled() => return self.give_up(Refusal::Lost).await,
            _ = self.ctx.shutdown.cancelled() => {
                return self.give_up(Refusal::HandBack("shutting down: event not started")).await;
            }
        };
        let Some(admitted) = admitted else {
            return self.give_up(Refusal::Lost).await;
        };
        if let Some(refusal) = self.ctx.refusal(self.generation) {
            return self.give_up(refusal).await;
        }
        let settle_by = self.received + self.ctx.hold_limit;
        if Instant::now() + self.ctx.run_time > settle_by {
            // It waited so long that it might not settle before the broker's
            // consumer timeout: back to the queue, and the line behind it too.
            self.ctx.end_generation(self.generation);
            self.ctx.drain.request(None);
            return self
                .give_up(Refusal::HandBack(
                    "waited too long to start: handed back before the consumer timeout",
                ))
                .await;
        }
        self.ctx.started_or_gave_up();
        self.daemon.metrics.events_in_flight.inc();
        self.process(&admitted, settle_by).await;
        self.daemon.metrics.events_in_flight.dec();
        // The turn is released only now, after settling and any drain request.
        drop(admitted);
    }

    async fn process(&self, admitted: &Admitted, settle_by: Instant) {
        let processed = match self.over_limit {
            Some(count) => self.daemon.worker.refuse(
                admitted,
                FailureReason::RedeliveryLimit,
                format!("delivered {count} times without being settled"),
            ),
            None => {
                let limits = RunLimits {
                    stop: self.ctx.lost.child_token(),
                    settle_by,
                    brake_exempt: super::settle::approved_as_large(&self.delivery),
                    redelivered: self.delivery.redelivered,
                };
                tokio::select! {
                    processed = self.daemon.worker.process(admitted, &limits) => processed,
                    _ = self.ctx.abandon.cancelled() => {
                        let settled = self.hand_back().await;
                        tracing::warn!(?settled, "shutdown grace over: event handed back to the broker");
                        return;
                    }
                }
            }
        };
        let settled = self.ctx.settler.settle(&self.delivery, &processed).await;
        self.after_settling(&processed, &settled);
        log_outcome(&processed, &settled);
    }

    /// Records the outcome and, for an event that went back, asks for a drain
    /// before the turn is released.
    fn after_settling(&self, processed: &Processed, settled: &Settled) {
        let id = self.event_id.as_deref();
        let went_back = |pause: Option<(RequeueCause, String)>| {
            if let Some(id) = id {
                self.daemon.redeliveries.handed_back(id);
            }
            // Synchronously, before the turn is released: the person's next
            // event, already taken, must see it and go back too.
            self.ctx.end_generation(self.generation);
            self.ctx.drain.request(pause);
        };
        match (settled, &processed.outcome) {
            // The delivery's fate is the broker's now: nothing after it in
            // this session may run ahead of its redelivery.
            (Settled::NotSettled(why), _) => self.ctx.lose(why.clone()),
            (Settled::DeadLetterFailed(error), _) => went_back((!error.repaired).then(|| {
                (
                    RequeueCause::PublishingUnavailable,
                    format!("dead letters cannot be published: {}", error.why),
                )
            })),
            (Settled::OutcomeFailed(error), _) => went_back((!error.repaired).then(|| {
                (
                    RequeueCause::PublishingUnavailable,
                    format!("outcome records cannot be published: {}", error.why),
                )
            })),
            (_, Outcome::Requeue { cause, why }) => went_back(Some((*cause, why.clone()))),
            (_, Outcome::Abandoned { .. }) => went_back(None),
            (_, outcome) => self.settled_for_good(processed, outcome),
        }
    }

    /// An event that will not come back: counts toward the metrics, the
    /// redelivery records and the quarantine window. A window that trips
    /// drains like a hand-back (every event not started goes back, in
    /// order), and consuming waits for `resume`.
    fn settled_for_good(&self, processed: &Processed, outcome: &Outcome) {
        // Zoom answered: a pause's probe succeeded. A repeat settled from
        // memory made no call, so it proves nothing about Zoom.
        if matches!(
            outcome,
            Outcome::Applied | Outcome::Added | Outcome::AlreadyApplied
        ) && processed.attempts > 0
        {
            self.ctx.drain.zoom_worked();
        }
        if let Some(id) = self.event_id.as_deref() {
            self.daemon.redeliveries.settled(id);
        }
        self.daemon.metrics.record_outcome(outcome);
        let department = processed.event.as_ref().map(|e| e.new_department.as_str());
        let group = processed.to_group.as_ref().map(|g| g.as_str());
        let tripped = self
            .daemon
            .quarantines
            .record(outcome, department, group, |q| {
                show_quarantine(&self.daemon, q)
            });
        if tripped.is_some() {
            // Synchronously, before the turn is released, as for a hand-back.
            self.ctx.end_generation(self.generation);
            self.ctx.drain.request(None);
        }
    }

    async fn give_up(self, refusal: Refusal) {
        self.ctx.started_or_gave_up();
        // Never started: its redelivery is not the event's fault.
        if let Some(id) = &self.event_id {
            self.daemon.redeliveries.handed_back(id);
        }
        match refusal {
            Refusal::Lost => {
                tracing::info!("session lost before the event started: the broker redelivers it")
            }
            Refusal::HandBack(why) => {
                let settled = self.hand_back().await;
                tracing::info!(?settled, "{why}: handed back to the broker");
            }
        }
    }

    async fn hand_back(&self) -> Settled {
        if let Some(id) = &self.event_id {
            self.daemon.redeliveries.handed_back(id);
        }
        self.ctx.settler.abandon(&self.delivery).await
    }
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
    let from_group = processed.from_group.as_ref().map_or("-", |g| g.as_str());
    let to_group = processed.to_group.as_ref().map_or("-", |g| g.as_str());
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
        (_, Settled::NotSettled(_) | Settled::DeadLetterFailed(_) | Settled::OutcomeFailed(_)) => {
            line!(error, "event not settled; the broker will redeliver it")
        }
        (Outcome::DeadLetter(_), _) => line!(warn, "event dead-lettered"),
        (Outcome::Requeue { .. } | Outcome::Abandoned { .. }, _) => {
            line!(warn, "event requeued")
        }
        _ => line!(info, "event processed"),
    }
}
