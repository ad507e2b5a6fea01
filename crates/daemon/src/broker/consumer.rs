//! One session's consume loop: take deliveries in order, hand each to its
//! own task ([`super::delivery`]), and drain, pause and probe when a task
//! hands an event back.
//!
//! Deliveries are numbered by *generation*: one per `basic.consume`. A drain
//! ends the generation (the consumer is cancelled) and every task of it that
//! has not started hands its delivery back, after the earlier events of its
//! person. Consuming resumes, as a new generation, only when all of them
//! have: so no later event of a person runs before one that went back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Consumer;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicGetOptions};
use lapin::types::FieldTable;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::delivery;
use super::pause::{wait_for_brake, wait_for_resume, wait_out_pause};
pub use super::session::SessionEnd;
use super::session::{DrainRequest, SessionCtx};
use super::{Daemon, Session};
use zds_core::outcome::RequeueCause;

const CONSUMER_TAG: &str = "zoom-dept-sync";
/// After the grace, how long handed-back events get to reach the broker.
const HAND_BACK_TIME: Duration = Duration::from_secs(2);
/// How long buffered deliveries are awaited after a consumer is cancelled.
const BUFFERED_WAIT: Duration = Duration::from_millis(200);

pub(super) async fn consume(
    session: &Session,
    daemon: &Daemon,
    ctx: &Arc<SessionCtx>,
) -> SessionEnd {
    let tracker = TaskTracker::new();
    let end = run(session, daemon, ctx, &tracker).await;
    daemon.health.broker_down(match &end {
        SessionEnd::Shutdown => "shutting down".to_owned(),
        SessionEnd::Lost(why) => why.clone(),
    });
    match &end {
        SessionEnd::Lost(_) => ctx.lost.cancel(),
        SessionEnd::Shutdown => finish(session, daemon, ctx, &tracker).await,
    }
    end
}

/// Consume, drain, pause, probe, consume again, until the session ends.
async fn run(
    session: &Session,
    daemon: &Daemon,
    ctx: &Arc<SessionCtx>,
    tracker: &TaskTracker,
) -> SessionEnd {
    let mut generation = 0;
    let mut pending: Option<DrainRequest> = None;
    loop {
        if let Err(end) = wait_until_clear(
            session,
            daemon,
            ctx,
            tracker,
            &mut generation,
            pending.take(),
        )
        .await
        {
            return end;
        }
        generation += 1;
        let mut deliveries = match start_consuming(session).await {
            Ok(consumer) => consumer,
            Err(e) => return SessionEnd::Lost(format!("cannot consume: {e}")),
        };
        daemon.health.resumed();
        daemon.health.consuming();
        let request =
            match take_until_drain(daemon, ctx, tracker, &mut deliveries, generation).await {
                Ok(request) => request,
                Err(end) => return end,
            };
        tracing::info!(
            paused = request.pause.is_some(),
            quarantined = daemon.quarantines.active().is_some(),
            "an event went back to the broker or consuming stops: draining"
        );
        drain(session, daemon, ctx, tracker, &mut deliveries, generation).await;
        if ctx.lost.is_cancelled() {
            return lost(ctx);
        }
        if ctx.shutdown.is_cancelled() {
            return SessionEnd::Shutdown;
        }
        // Requests raised while draining belong to this drain.
        pending = Some(match ctx.drain.take() {
            Some(more) if more.pause.is_some() => more,
            _ => request,
        });
    }
}

/// Before consuming: waits out a quarantine (until `resume`) or a pause,
/// then lets one event probe (half-open); again while the probe fails.
async fn wait_until_clear(
    session: &Session,
    daemon: &Daemon,
    ctx: &Arc<SessionCtx>,
    tracker: &TaskTracker,
    generation: &mut u64,
    mut pending: Option<DrainRequest>,
) -> Result<(), SessionEnd> {
    loop {
        // The quarantine outlives sessions: a new session waits too.
        // Waiting for an operator or a timer, by design: fed throughout.
        if daemon.quarantines.active().is_some() {
            daemon.systemd.pinging(wait_for_resume(daemon, ctx)).await?;
        } else if let Some(engaged) = daemon.worker.brake().engaged() {
            daemon
                .systemd
                .pinging(wait_for_brake(daemon, ctx, &engaged))
                .await?;
        } else if let Some(pause) = pending
            .take()
            .and_then(|r| r.pause)
            // Released while draining: nothing left to wait for.
            .filter(|(cause, _)| *cause != RequeueCause::Brake)
        {
            let resumed = tokio::select! {
                resumed = daemon.systemd.pinging(
                    wait_out_pause(daemon, &ctx.drain, &pause, &ctx.shutdown),
                ) => resumed,
                _ = ctx.lost.cancelled() => return Err(lost(ctx)),
            };
            if !resumed {
                return Err(SessionEnd::Shutdown);
            }
        } else {
            return Ok(());
        }
        *generation += 1;
        pending = probe(session, daemon, ctx, tracker, *generation).await?;
        // Whatever the probe did, later events are judged by the window.
        daemon.quarantines.end_probe();
    }
}

fn lost(ctx: &SessionCtx) -> SessionEnd {
    SessionEnd::Lost(ctx.lost_reason())
}

/// Dispatches deliveries until a task asks for a drain or the session ends.
async fn take_until_drain(
    daemon: &Daemon,
    ctx: &Arc<SessionCtx>,
    tracker: &TaskTracker,
    deliveries: &mut Consumer,
    generation: u64,
) -> Result<DrainRequest, SessionEnd> {
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return Err(SessionEnd::Shutdown),
            _ = ctx.lost.cancelled() => return Err(lost(ctx)),
            _ = ctx.drain.wait() => {
                if let Some(request) = ctx.drain.take() {
                    return Ok(request);
                }
            }
            // The watchdog's heartbeat, from this loop: idle, it still wakes
            // for it; stuck, it stops. Before the deliveries, which a flood
            // would keep ready.
            _ = daemon.systemd.ping_due() => daemon.systemd.ping(),
            next = deliveries.next() => match next {
                Some(Ok(d)) => {
                    delivery::dispatch(d, generation, daemon, ctx, tracker);
                }
                Some(Err(e)) => return Err(SessionEnd::Lost(format!("consumer failed: {e}"))),
                None => {
                    tracing::error!("the broker cancelled the consumer: was the queue deleted?");
                    return Err(SessionEnd::Lost("the broker cancelled the consumer".into()));
                }
            },
        }
    }
}

/// Ends `generation`: cancels the consumer, hands back what it had buffered
/// and every task of it that has not started, and waits until they have.
async fn drain(
    session: &Session,
    daemon: &Daemon,
    ctx: &Arc<SessionCtx>,
    tracker: &TaskTracker,
    deliveries: &mut Consumer,
    generation: u64,
) {
    ctx.end_generation(generation);
    cancel_consumer(session).await;
    // Buffered deliveries go through the same line, so each goes back after
    // the earlier events of its person.
    while let Ok(Some(Ok(d))) = tokio::time::timeout(BUFFERED_WAIT, deliveries.next()).await {
        delivery::dispatch(d, generation, daemon, ctx, tracker);
    }
    // Tasks wait behind their person's running event, which no delivery may
    // outlast: fed up to that bound.
    let waited = async {
        tokio::select! {
            _ = ctx.all_started() => {}
            _ = ctx.lost.cancelled() => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    };
    daemon
        .systemd
        .pinging_until(Instant::now() + daemon.hold_limit, waited)
        .await;
    tracing::info!("drained: every event not started went back to the broker");
}

/// Half-open: after a pause, one event goes first. `Some` when it failed
/// again (pause longer), `None` when consuming may resume.
async fn probe(
    session: &Session,
    daemon: &Daemon,
    ctx: &Arc<SessionCtx>,
    tracker: &TaskTracker,
    generation: u64,
) -> Result<Option<DrainRequest>, SessionEnd> {
    let got = session
        .consuming
        .basic_get(
            session.topology.queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .map_err(|e| SessionEnd::Lost(format!("cannot take a probe event: {e}")))?;
    let Some(message) = got else {
        return Ok(None);
    };
    // Only what the probe itself asks for counts.
    let _ = ctx.drain.take();
    tracing::info!("probing with one event before consuming again");
    let task = delivery::dispatch(message.delivery, generation, daemon, ctx, tracker);
    // One event's run, which no delivery may outlast: fed up to that bound.
    let ran = async {
        tokio::select! {
            _ = task => Ok(()),
            _ = ctx.shutdown.cancelled() => Err(SessionEnd::Shutdown),
            _ = ctx.lost.cancelled() => Err(lost(ctx)),
        }
    };
    daemon
        .systemd
        .pinging_until(Instant::now() + daemon.hold_limit, ran)
        .await?;
    Ok(ctx.drain.take())
}

/// Shutdown: events not started went back already (their tasks see the
/// shutdown); running ones get the grace, then go back too.
async fn finish(session: &Session, daemon: &Daemon, ctx: &SessionCtx, tracker: &TaskTracker) {
    cancel_consumer(session).await;
    tracker.close();
    let grace = daemon.shutdown_grace;
    tracing::info!(
        in_flight = tracker.len(),
        grace_secs = grace.as_secs(),
        "shutting down: finishing in-flight events"
    );
    // No watchdog pings: systemd disarms the watchdog once the service is
    // stopping (its TimeoutStopSec= bounds this instead).
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_flight = tracker.len(),
            "grace period over: requeueing what is still in flight"
        );
        ctx.abandon.cancel();
        let _ = tokio::time::timeout(HAND_BACK_TIME, tracker.wait()).await;
    }
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

/// Takes no more deliveries. Bounded: a broker that does not answer must not
/// hold up a drain or a shutdown.
async fn cancel_consumer(session: &Session) {
    let cancel = session
        .consuming
        .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default());
    match tokio::time::timeout(HAND_BACK_TIME, cancel).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot cancel the consumer"),
        Err(_) => tracing::warn!("the broker did not confirm the consumer's cancellation"),
    }
}
