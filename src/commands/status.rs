//! `status`: what the queues hold and whether the daemon is ready.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::output::{self, opt};
use super::{Exit, broker_settings};
use crate::broker::admin::{Admin, QueueCounts};
use crate::broker::management::{self, QueueDetails};
use crate::triage::DeadLetterRow;

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
    admin.close().await;
    let (details, management_error) = match &settings.amqp.management_url {
        None => (None, None),
        Some(base) => {
            match management::queue_details(&settings.amqp, base, &settings.amqp.queue).await {
                Ok(details) => (Some(details), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
    };
    let status = Status {
        queue: settings.amqp.queue.clone(),
        input,
        details,
        management_error,
        dead_letter_queue,
        dead_letters: dead.map(|d| d.ready),
        dead_letters_by_reason: by_reason,
        readyz: crate::control::readiness(settings.http.listen).await,
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
        println!("management API: {e}");
    }
    println!(
        "dead-letter queue {}: {}",
        status.dead_letter_queue,
        opt(status.dead_letters)
    );
    for (reason, count) in &status.dead_letters_by_reason {
        println!("  {reason}: {count}");
    }
    match &status.readyz {
        Some((code, text)) => println!("daemon /readyz: {code} {}", text.trim()),
        None => println!("daemon /readyz: not reachable"),
    }
}
