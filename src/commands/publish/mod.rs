//! `publish`: validate events (JSON lines) with the daemon's own parser,
//! then publish them to the input queue with confirms.

mod lines;

use std::path::PathBuf;

use clap::Args;

use super::{ConfigArg, Exit, broker_settings};
use crate::broker::admin::Admin;
use crate::event::DepartmentChange;
use lines::{MAX_LINE_BYTES, Text};

#[derive(Args)]
pub struct PublishArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// JSON lines, one event each; standard input when left out.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Send invalid lines too (they end in the dead-letter queue).
    #[arg(long)]
    raw: bool,
}

/// A line to send, with its number (from 1).
struct Line {
    number: usize,
    text: Vec<u8>,
}

pub async fn run(args: PublishArgs) -> Exit {
    let settings = match broker_settings(&args.config.config) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    let lines = match lines::read(args.file.as_deref()) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("zoom-dept-sync publish: {e}");
            return Exit::Usage;
        }
    };
    let (to_send, invalid) = validate(lines, args.raw);
    let sent = match send(&settings, &to_send).await {
        Ok(sent) => sent,
        Err(sent) => {
            println!("published {sent} of {} before the error", to_send.len());
            return Exit::Problems;
        }
    };
    println!(
        "published {sent} events to {}; {invalid} invalid lines",
        settings.amqp.queue
    );
    if invalid > 0 {
        Exit::Problems
    } else {
        Exit::Ok
    }
}

/// The lines to send, and how many are invalid (each reported): a line
/// too long to keep is never sent; another invalid one only with `--raw`.
fn validate(lines: Vec<lines::Line>, raw: bool) -> (Vec<Line>, usize) {
    let mut invalid = 0;
    let mut to_send = Vec::new();
    for line in lines {
        let text = match line.text {
            Text::Kept(text) => text,
            Text::TooLong(len) => {
                invalid += 1;
                eprintln!(
                    "line {}: invalid event, not sent: line is {len} bytes, over the \
                     {MAX_LINE_BYTES}-byte line limit (not kept, so not sent even with --raw)",
                    line.number
                );
                continue;
            }
        };
        let line = Line {
            number: line.number,
            text,
        };
        if let Err(e) = DepartmentChange::parse(&line.text) {
            invalid += 1;
            let action = if raw {
                "sent anyway (--raw)"
            } else {
                "not sent"
            };
            eprintln!("line {}: invalid event, {action}: {e}", line.number);
            if !raw {
                continue;
            }
        }
        to_send.push(line);
    }
    (to_send, invalid)
}

/// Publishes in order, each confirmed; `Err` holds how many went out.
async fn send(settings: &crate::config::Settings, lines: &[Line]) -> Result<usize, usize> {
    let admin = Admin::connect(&settings.amqp, "publish")
        .await
        .map_err(|e| {
            eprintln!("zoom-dept-sync publish: {e}");
            0usize
        })?;
    let publisher = admin.publisher().await.map_err(|e| {
        eprintln!("zoom-dept-sync publish: {e}");
        0usize
    })?;
    for (sent, line) in lines.iter().enumerate() {
        if let Err(e) = publisher
            .publish_json(&settings.amqp.queue, &line.text)
            .await
        {
            eprintln!("line {}: {e}", line.number);
            admin.close().await;
            return Err(sent);
        }
    }
    admin.close().await;
    Ok(lines.len())
}
