//! `publish`: validate events (JSON lines) with the daemon's own parser,
//! then publish them to the input queue with confirms.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use clap::Args;

use super::{ConfigArg, Exit, broker_settings};
use crate::broker::admin::Admin;
use crate::event::DepartmentChange;

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
    text: String,
}

pub async fn run(args: PublishArgs) -> Exit {
    let settings = match broker_settings(&args.config.config) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    let lines = match read_lines(args.file.as_deref()) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("zoom-dept-sync publish: {e}");
            return Exit::Usage;
        }
    };
    let mut invalid = 0;
    let mut to_send = Vec::new();
    for line in lines {
        match DepartmentChange::parse(line.text.as_bytes()) {
            Ok(_) => to_send.push(line),
            Err(e) => {
                invalid += 1;
                let action = if args.raw {
                    "sent anyway (--raw)"
                } else {
                    "not sent"
                };
                eprintln!("line {}: invalid event, {action}: {e}", line.number);
                if args.raw {
                    to_send.push(line);
                }
            }
        }
    }
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
            .publish_json(&settings.amqp.queue, line.text.as_bytes())
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

/// Non-blank lines with their numbers.
fn read_lines(file: Option<&std::path::Path>) -> std::io::Result<Vec<Line>> {
    let reader: Box<dyn BufRead> = match file {
        Some(path) => Box::new(BufReader::new(std::fs::File::open(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        })?)),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let mut lines = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let text = line?;
        if !text.trim().is_empty() {
            lines.push(Line {
                number: index + 1,
                text,
            });
        }
    }
    Ok(lines)
}
