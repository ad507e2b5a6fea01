//! `brake refuse`: the held burst goes to the dead-letter queue instead of
//! to Zoom, each event as a dead letter with reason `brake_refused`, from
//! where `dead-letters replay --reason brake_refused` can bring it back.

use std::path::Path;

use clap::Subcommand;
use time::OffsetDateTime;

use super::dead_letters::{problem, stopped_early, sweep_limits};
use super::{ConfigArg, Exit, broker_settings};
use crate::broker::admin::{Admin, Step};
use crate::config::Settings;
use crate::triage;

#[derive(Subcommand)]
pub enum BrakeCommand {
    /// Move the events the brake holds (everything on the input queue now)
    /// to the dead-letter queue as `brake_refused`, then clear the brake.
    Refuse {
        #[command(flatten)]
        config: ConfigArg,
        /// Required: the held events are not applied (a replay brings them back).
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(command: BrakeCommand) -> Exit {
    match command {
        BrakeCommand::Refuse { config, yes } => refuse(&config.config, yes)
            .await
            .unwrap_or_else(|exit| exit),
    }
}

async fn refuse(config: &Path, yes: bool) -> Result<Exit, Exit> {
    if !yes {
        eprintln!(
            "zoom-dept-sync: brake refuse dead-letters every held event instead of applying it: add --yes"
        );
        return Err(Exit::Usage);
    }
    let settings = broker_settings(config)?;
    let readyz = crate::control::readiness(settings.http.listen).await;
    if !crate::control::brake_engaged(readyz.as_ref()) {
        let said = readyz.map_or("not reachable".into(), |(code, text)| {
            format!("{code} {}", text.lines().next().unwrap_or_default())
        });
        eprintln!(
            "zoom-dept-sync: the brake is not engaged (daemon /readyz: {said}): nothing held to refuse"
        );
        return Err(Exit::Problems);
    }
    let admin = Admin::connect(&settings.amqp, "brake refuse")
        .await
        .map_err(problem)?;
    let result = move_held(&settings, &admin).await;
    admin.close().await;
    result
}

/// Moves the messages on the input queue now (not those published while it
/// runs) to the dead-letter queue, each confirmed there before it is acked.
async fn move_held(settings: &Settings, admin: &Admin) -> Result<Exit, Exit> {
    let queue = &settings.amqp.queue;
    let held = match admin.counts(queue).await.map_err(problem)? {
        None => {
            eprintln!("zoom-dept-sync: input queue {queue} does not exist");
            return Err(Exit::Problems);
        }
        Some(counts) if counts.consumers > 0 => {
            eprintln!(
                "zoom-dept-sync: input queue {queue} has {} consumers: the brake was released meanwhile, nothing refused",
                counts.consumers
            );
            return Err(Exit::Problems);
        }
        Some(counts) => counts.ready as usize,
    };
    let dead_letter_queue = settings.amqp.dead_letter_queue();
    let mut taken = 0;
    let summary = admin
        .sweep(queue, &sweep_limits(settings, None), |_| {
            if taken >= held {
                return Step::Stop;
            }
            taken += 1;
            Step::MoveTo {
                queue: dead_letter_queue.clone(),
                edit: triage::refusal_edit(queue, OffsetDateTime::now_utc()),
            }
        })
        .await
        .map_err(problem)?;
    println!(
        "refused {} held events: moved to {dead_letter_queue} as brake_refused \
         (`dead-letters replay --reason brake_refused` brings them back)",
        summary.moved
    );
    // Stopping at the count taken at the start is no early stop.
    let interrupted = summary.stopped && summary.moved < held;
    if interrupted {
        // Held events are left: the brake stays on, so running it again
        // finds it engaged and finishes the job.
        return Ok(stopped_early(true));
    }
    // Consuming goes on without a release window; the window starts empty.
    match crate::control::request_brake_clear(settings.http.listen).await {
        Ok(answer) => println!("{answer}; the daemon consumes again, and the brake counts afresh"),
        Err(e) => eprintln!(
            "zoom-dept-sync brake refuse: the daemon did not clear its brake ({e}); run `zoom-dept-sync resume`"
        ),
    }
    Ok(stopped_early(false))
}
