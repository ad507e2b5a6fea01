//! `status`: what the queues hold and whether the daemon is ready; while
//! the brake holds, what it holds, by department and target group.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::output::{self, opt};
use super::printable::Printable;
use super::{Exit, broker_settings};
use crate::brake::Held;
use crate::broker::admin::{Admin, QueueCounts};
use crate::broker::management::{self, QueueDetails};
use crate::config::Settings;
use crate::triage::DeadLetterRow;

/// At most this many held events are read (and handed back) by one `status`.
const HELD_PEEK_CAP: usize = 10_000;

#[derive(Serialize)]
struct Status {
    queue: String,
    input: Option<QueueCounts>,
    /// From the management API, when `amqp.management_url` is set.
    details: Option<QueueDetails>,
    management_error: Option<String>,
    dead_letter_queue: String,
    dead_letters: Option<u32>,
    dead_letters_by_reason: BTreeMap<String, usize>,
    /// `GET /readyz` of the daemon at `http.listen`: status and text.
    readyz: Option<(u16, String)>,
    /// Why `/readyz` did not answer, naming the URL called.
    readyz_error: Option<String>,
    /// What the brake holds on the input queue, read only while `/readyz`
    /// says it is engaged (the daemon's consumer is cancelled then).
    held: Option<Held>,
    held_error: Option<String>,
}

pub async fn run(config: &Path, json: bool) -> Exit {
    let settings = match broker_settings(config) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    let admin = match Admin::connect(&settings.amqp, "status").await {
        Ok(admin) => admin,
        Err(e) => {
            eprintln!("zoom-dept-sync: {e}");
            return Exit::Problems;
        }
    };
    let dead_letter_queue = settings.amqp.dead_letter_queue();
    let input = admin.counts(&settings.amqp.queue).await.ok().flatten();
    let dead = admin.counts(&dead_letter_queue).await.ok().flatten();
    let mut by_reason = BTreeMap::new();
    if dead.is_some() {
        for message in admin.peek(&dead_letter_queue).await.unwrap_or_default() {
            *by_reason
                .entry(DeadLetterRow::of(&message).reason)
                .or_insert(0) += 1;
        }
    }
    let (readyz, readyz_error) = match crate::control::try_readiness(settings.http.listen).await {
        Ok(readyz) => (Some(readyz), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (held, held_error) = match held(&settings, &admin, readyz.as_ref()).await {
        Ok(held) => (held, None),
        Err(e) => (None, Some(e.to_string())),
    };
    admin.close().await;
    let (details, management_error) = details(&settings).await;
    let status = Status {
        queue: settings.amqp.queue.clone(),
        input,
        details,
        management_error,
        dead_letter_queue,
        dead_letters: dead.map(|d| d.ready),
        dead_letters_by_reason: by_reason,
        readyz,
        readyz_error,
        held,
        held_error,
    };
    if json {
        println!("{}", output::json(&status));
    } else {
        print_text(&status);
    }
    let ready = status.readyz.as_ref().is_some_and(|(code, _)| *code == 200);
    if status.input.is_some() && ready {
        Exit::Ok
    } else {
        Exit::Problems
    }
}

async fn details(settings: &Settings) -> (Option<QueueDetails>, Option<String>) {
    let Some(base) = &settings.amqp.management_url else {
        return (None, None);
    };
    match management::queue_details(&settings.amqp, base, &settings.amqp.queue).await {
        Ok(details) => (Some(details), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// Why the held events could not be read.
#[derive(Debug, thiserror::Error)]
enum HeldError {
    #[error("input queue {0} missing")]
    NoQueue(String),
    #[error(
        "not read: input queue {queue} has {consumers} consumers although /readyz says the brake is engaged"
    )]
    Consumed { queue: String, consumers: u32 },
    #[error("{0}")]
    Broker(#[from] crate::broker::admin::AdminError),
}

/// The held events, peeked, when the brake holds: `/readyz` says so and the
/// input queue has no consumer (a peek beside a consumer would take its
/// deliveries). `Ok(None)` when nothing is held.
async fn held(
    settings: &Settings,
    admin: &Admin,
    readyz: Option<&(u16, String)>,
) -> Result<Option<Held>, HeldError> {
    if !crate::control::brake_engaged(readyz) {
        return Ok(None);
    }
    // Counted now, after /readyz: the consumer must be gone.
    match admin.counts(&settings.amqp.queue).await.ok().flatten() {
        None => return Err(HeldError::NoQueue(settings.amqp.queue.clone())),
        Some(counts) if counts.consumers > 0 => {
            return Err(HeldError::Consumed {
                queue: settings.amqp.queue.clone(),
                consumers: counts.consumers,
            });
        }
        Some(_) => {}
    }
    let (messages, capped) = admin
        .peek_at_most(&settings.amqp.queue, HELD_PEEK_CAP)
        .await?;
    let mut held = Held::of(&settings.mapping, messages.iter().map(|m| &m.body[..]));
    held.capped = capped;
    Ok(Some(held))
}

fn print_held(status: &Status) {
    if let Some(e) = &status.held_error {
        println!("held by the brake: {}", Printable(e));
    }
    let Some(held) = &status.held else {
        return;
    };
    let more = if held.capped {
        format!(" (only the first {HELD_PEEK_CAP} read; more wait)")
    } else {
        String::new()
    };
    println!("held by the brake: {} events{more}", held.events);
    for (target, count) in &held.by_target {
        println!("  {}: {count}", Printable(target));
    }
}

fn print_text(status: &Status) {
    match (&status.input, &status.details) {
        (Some(_), Some(d)) => println!(
            "input queue {}: {} ready, {} unacked, {} consumers ({} active, {} waiting)",
            status.queue,
            d.messages_ready,
            d.messages_unacknowledged,
            d.consumers,
            d.active_consumers,
            d.waiting_consumers
        ),
        (Some(c), None) => println!(
            "input queue {}: {} ready, {} consumers (set amqp.management_url for unacked and active/waiting consumers)",
            status.queue, c.ready, c.consumers
        ),
        (None, _) => println!("input queue {}: missing", status.queue),
    }
    if let Some(e) = &status.management_error {
        println!("{e}");
    }
    println!(
        "dead-letter queue {}: {}",
        status.dead_letter_queue,
        opt(status.dead_letters)
    );
    for (reason, count) in &status.dead_letters_by_reason {
        println!("  {}: {count}", Printable(reason));
    }
    match &status.readyz {
        Some((code, text)) => {
            // Its lines stay lines (the second gives the rates); each is escaped.
            let lines: Vec<String> = text
                .trim()
                .lines()
                .map(|line| Printable(line).to_string())
                .collect();
            println!("daemon /readyz: {code} {}", lines.join("\n"));
        }
        None => println!(
            "daemon /readyz: not reachable: {}",
            opt(status.readyz_error.as_deref())
        ),
    }
    print_held(status);
}
