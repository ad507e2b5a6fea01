//! `history`: what happened to one person, from the audit trail's stream
//! (`outcomes.stream`). Reading a stream consumes nothing, so this can be
//! run any number of times, from any point.

use std::ops::ControlFlow;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::output::{json, short, table};
use super::{ConfigArg, Exit, broker_settings};
use crate::broker::admin::Admin;

/// How long the stream may stay quiet before the reading is done: a
/// stream has no end, only "nothing more yet".
const IDLE: Duration = Duration::from_secs(1);

#[derive(Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["email", "user"])))]
pub struct HistoryArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The person's email (case-insensitive).
    #[arg(long)]
    email: Option<String>,
    /// The person's Zoom user id.
    #[arg(long)]
    user: Option<String>,
    /// Only outcomes from this time on (RFC 3339); the whole stream otherwise.
    #[arg(long, value_parser = super::rfc3339)]
    since: Option<OffsetDateTime>,
    /// JSON (the outcome records as published) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: HistoryArgs) -> Exit {
    let settings = match broker_settings(&args.config.config) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    let Some(stream) = settings.outcomes.stream.clone() else {
        eprintln!(
            "zoom-dept-sync history: outcomes.stream is not set in the config: there is no trail to read"
        );
        return Exit::Usage;
    };
    let started = OffsetDateTime::now_utc();
    let mut records = Vec::new();
    let mut unreadable = 0;
    // Records published after this command started end the reading, so a
    // busy trail cannot keep it going; `--since` is applied to each record
    // (the broker's offset only finds the chunk it starts in).
    let visit = |body: &[u8]| {
        let Ok(record) = serde_json::from_slice::<Value>(body) else {
            unreadable += 1;
            return ControlFlow::Continue(());
        };
        let at = processed_at(&record);
        if at.is_some_and(|at| at > started) {
            return ControlFlow::Break(());
        }
        let recent = args
            .since
            .is_none_or(|since| at.is_none_or(|at| at >= since));
        if recent && is_about(&record, &args) {
            records.push(record);
        }
        ControlFlow::Continue(())
    };
    let read = async {
        let admin = Admin::connect(&settings.amqp, "history").await?;
        let read = admin.read_stream(&stream, args.since, IDLE, visit).await;
        admin.close().await;
        read
    };
    if let Err(e) = read.await {
        eprintln!("zoom-dept-sync history: {e}");
        return Exit::Problems;
    }
    if unreadable > 0 {
        eprintln!(
            "zoom-dept-sync history: {unreadable} messages in {stream} are not outcome records (skipped)"
        );
    }
    if args.json {
        println!("{}", json(&records));
    } else {
        print_table(&records, &args);
    }
    Exit::Ok
}

fn processed_at(record: &Value) -> Option<OffsetDateTime> {
    let at = record["processed_at"].as_str()?;
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

fn is_about(record: &Value, args: &HistoryArgs) -> bool {
    let field = |name: &str| record[name].as_str().unwrap_or_default();
    match (&args.email, &args.user) {
        (Some(email), _) => field("email").eq_ignore_ascii_case(email),
        (None, Some(user)) => field("user") == user,
        (None, None) => false,
    }
}

fn print_table(records: &[Value], args: &HistoryArgs) {
    let who = args
        .email
        .as_deref()
        .or(args.user.as_deref())
        .unwrap_or("-");
    if records.is_empty() {
        println!("no outcomes for {who} in the trail");
        return;
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows = records.iter().map(|r| {
        let from: Vec<&str> = r["from_groups"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let error = &r["error"];
        vec![
            text(&r["processed_at"]),
            text(&r["event_id"]),
            text(&r["result"]),
            text(&r["action"]),
            format!("{} → {}", from.join(", "), text(&r["to_group"])),
            steps(&r["steps"]),
            if error.is_null() {
                "-".into()
            } else {
                short(
                    &format!(
                        "{} {}: {}",
                        text(&error["reason"]),
                        error["code"],
                        text(&error["recommended_action"])
                    ),
                    80,
                )
            },
            text(&r["run_id"]),
        ]
    });
    let header = [
        "processed at",
        "event id",
        "result",
        "action",
        "groups",
        "steps",
        "error",
        "reconcile run",
    ];
    println!("{}", table(&header, rows));
    println!("{} outcomes for {who}", records.len());
}

/// `move 204, delete 204`: each call and its status.
fn steps(steps: &Value) -> String {
    let Some(steps) = steps.as_array() else {
        return "-".into();
    };
    let parts: Vec<String> = steps
        .iter()
        .map(|s| {
            let status = s["status"]
                .as_u64()
                .map_or_else(|| "no answer".to_owned(), |v| v.to_string());
            format!("{} {status}", s["step"].as_str().unwrap_or("?"))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}
