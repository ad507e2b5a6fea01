//! `dead-letters list | show | replay | purge`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;

use super::output::{self, opt, when};
use super::output_file::{OutputFile, OutputFileError};
use super::printable::Printable;
use super::{ConfigArg, Exit, broker_settings};
use crate::broker::admin::{Admin, AdminError, Step, SweepLimits};
use crate::broker::topology::Topology;
use crate::config::{QueueType, Settings};
use crate::triage::{self, DeadLetterRow, Filter, GroupBy, StoredMessage};

#[derive(Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters (reading changes nothing), or count them by group.
    List {
        #[command(flatten)]
        select: Select,
        /// Counts, first and last failure and a sample event per group.
        #[arg(long, value_enum)]
        group_by: Option<GroupBy>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every header and the pretty-printed body of one event's dead letters.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        event_id: String,
    },
    /// Put selected dead letters back on the input queue.
    Replay {
        #[command(flatten)]
        select: Select,
        /// Say what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Messages per second, at most.
        #[arg(long)]
        rate: Option<f64>,
        /// Skip messages already replayed this many times (the loop guard).
        #[arg(long, default_value_t = 3)]
        max_replays: i64,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Drop selected dead letters, after writing them to a file.
    Purge {
        #[command(flatten)]
        select: Select,
        /// Where to write what is dropped (JSON lines: headers, base64 body):
        /// a new file, mode 0600; an existing path (or symlink) is refused.
        #[arg(long, required_unless_present = "no_export")]
        export: Option<PathBuf>,
        /// Drop without writing them anywhere.
        #[arg(long)]
        no_export: bool,
        /// Needed when no filter is given.
        #[arg(long)]
        all: bool,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// The filters `list`, `replay` and `purge` share.
#[derive(Args)]
pub struct Select {
    #[command(flatten)]
    config: ConfigArg,
    /// `failure-reason`, or `broker:<x-death reason>` for the broker's own.
    /// Any other value is refused with the list (it would match nothing).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::triage::REASONS))]
    reason: Option<String>,
    /// Zoom's error code.
    #[arg(long)]
    code: Option<i64>,
    /// Zoom's HTTP status (100 to 599).
    #[arg(long, value_parser = clap::value_parser!(i64).range(100..=599))]
    status: Option<i64>,
    #[arg(long)]
    event_id: Option<String>,
    /// Failed at or after this RFC 3339 time.
    #[arg(long, value_parser = super::rfc3339)]
    since: Option<OffsetDateTime>,
    /// Failed at or before this RFC 3339 time.
    #[arg(long, value_parser = super::rfc3339)]
    until: Option<OffsetDateTime>,
    /// At most this many messages.
    #[arg(long)]
    limit: Option<usize>,
}

impl Select {
    fn filter(&self) -> Filter {
        Filter {
            reason: self.reason.clone(),
            code: self.code,
            status: self.status,
            event_id: self.event_id.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

pub async fn run(command: DeadLetterCommand) -> Exit {
    let result = match command {
        DeadLetterCommand::List {
            select,
            group_by,
            json,
        } => list(&select, group_by, json).await,
        DeadLetterCommand::Show { config, event_id } => show(&config.config, &event_id).await,
        DeadLetterCommand::Replay {
            select,
            dry_run,
            rate,
            max_replays,
            yes,
        } => {
            let replay = Replay {
                dry_run,
                rate,
                max_replays,
                yes,
            };
            replay.run(&select).await
        }
        DeadLetterCommand::Purge {
            select,
            export,
            no_export: _,
            all,
            yes,
        } => purge(&select, export.as_deref(), all, yes).await,
    };
    result.unwrap_or_else(|exit| exit)
}

/// Connects and makes sure reading the dead-letter queue cannot count
/// toward a delivery limit: it must be declared as the daemon declares it
/// (on a cluster, a quorum queue with an out-of-reach limit), or be a plain
/// classic queue, which has no limit (one declared before the dead-letter
/// queue followed `amqp.queue_type`).
async fn open(config: &Path, command: &str) -> Result<(Settings, Admin), Exit> {
    let settings = broker_settings(config)?;
    let admin = Admin::connect(&settings.amqp, command)
        .await
        .map_err(problem)?;
    let topology = Topology::new(&settings.amqp);
    let queue = settings.amqp.dead_letter_queue();
    if let Err(why) = admin.check_arguments(&topology, &queue).await {
        let why = why.to_string();
        if why.contains("does not exist") {
            eprintln!(
                "zoom-dept-sync: dead-letter queue {queue} does not exist (the daemon declares it when it starts)"
            );
            return Err(Exit::Problems);
        }
        if why.contains("ACCESS_REFUSED") || why.contains("ACCESS-REFUSED") {
            eprintln!(
                "zoom-dept-sync: the broker refused to check dead-letter queue {queue} ({why}): \
                 the toolbox's user needs configure and read on it (docs/deployment.md, \"Least privilege\")"
            );
            return Err(Exit::Problems);
        }
        if admin.is_plain_classic(&queue).await {
            if settings.amqp.queue_type != QueueType::Classic {
                eprintln!(
                    "zoom-dept-sync: warning: dead-letter queue {queue} is a classic queue: on a RabbitMQ cluster it \
                     lives on one node and is lost with it (docs/deployment.md: Running on a RabbitMQ cluster)"
                );
            }
            return Ok((settings, admin));
        }
        eprintln!(
            "zoom-dept-sync: dead-letter queue {queue} is not declared as the daemon declares it ({why}). \
             Reading it hands every message back, which a quorum queue's delivery limit counts (RabbitMQ 4 \
             drops a message read 20 times); move its messages to a queue declared as the daemon declares it first"
        );
        return Err(Exit::Problems);
    }
    check_no_delivery_limit_policy(&settings, &queue).await?;
    Ok((settings, admin))
}

/// A policy's `delivery-limit` on a quorum dead-letter queue wins over the
/// daemon's out-of-reach one (the smaller applies), and every read counts
/// one delivery before RabbitMQ 4.3: reading could drop dead letters. Only
/// the management API shows policies; without `amqp.management_url` the
/// command says it could not check.
async fn check_no_delivery_limit_policy(settings: &Settings, queue: &str) -> Result<(), Exit> {
    if settings.amqp.queue_type != QueueType::Quorum {
        return Ok(());
    }
    let Some(base) = settings.amqp.management_url.as_deref() else {
        eprintln!(
            "zoom-dept-sync: warning: cannot check that no policy sets a delivery-limit on dead-letter queue {queue} \
             (set amqp.management_url): such a policy would drop dead letters read that many times"
        );
        return Ok(());
    };
    let details = crate::broker::management::queue_details(&settings.amqp, base, queue).await;
    match details.map(|d| d.policy_delivery_limit) {
        Ok(Some(limit))
            if limit < i64::from(crate::broker::topology::DEAD_LETTER_DELIVERY_LIMIT) =>
        {
            eprintln!(
                "zoom-dept-sync: a policy sets delivery-limit {limit} on dead-letter queue {queue}: each read hands every \
                 message back, which RabbitMQ before 4.3 counts, so reading could drop dead letters. Exclude the queue \
                 from that policy (docs/deployment.md: Running on a RabbitMQ cluster), then read it"
            );
            Err(Exit::Problems)
        }
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!(
                "zoom-dept-sync: warning: cannot check the dead-letter queue's policies: {e}"
            );
            Ok(())
        }
    }
}

pub(super) fn problem(e: AdminError) -> Exit {
    eprintln!("zoom-dept-sync: {e}");
    Exit::Problems
}

async fn rows(
    settings: &Settings,
    admin: &Admin,
) -> Result<Vec<(StoredMessage, DeadLetterRow)>, Exit> {
    let messages = admin
        .peek(&settings.amqp.dead_letter_queue())
        .await
        .map_err(problem)?;
    Ok(messages
        .into_iter()
        .map(|m| {
            let row = DeadLetterRow::of(&m);
            (m, row)
        })
        .collect())
}

/// Every dead letter with its row, read without changing the queue.
async fn read_all(
    config: &Path,
    command: &str,
) -> Result<Vec<(StoredMessage, DeadLetterRow)>, Exit> {
    let (settings, admin) = open(config, command).await?;
    let all = rows(&settings, &admin).await;
    admin.close().await;
    all
}

async fn list(select: &Select, group_by: Option<GroupBy>, json: bool) -> Result<Exit, Exit> {
    let filter = select.filter();
    let selected: Vec<DeadLetterRow> = read_all(&select.config.config, "dead-letters list")
        .await?
        .into_iter()
        .map(|(_, row)| row)
        .filter(|row| filter.matches(row))
        .take(select.limit.unwrap_or(usize::MAX))
        .collect();
    match (group_by, json) {
        (Some(by), true) => println!("{}", output::json(&triage::group(&selected, by))),
        (Some(by), false) => println!("{}", group_table(&triage::group(&selected, by))),
        (None, true) => println!("{}", output::json(&selected)),
        (None, false) => {
            println!("{}", rows_table(&selected));
            println!("{} dead letters", selected.len());
        }
    }
    Ok(Exit::Ok)
}

fn rows_table(rows: &[DeadLetterRow]) -> String {
    let header = [
        "event id",
        "user",
        "departments",
        "reason",
        "status",
        "code",
        "message",
        "failed at",
        "attempts",
        "replays",
    ];
    output::table(
        &header,
        rows.iter().map(|r| {
            vec![
                r.event_id.clone(),
                r.user.clone(),
                format!(
                    "{} → {}",
                    r.previous_department.as_deref().unwrap_or("?"),
                    r.new_department.as_deref().unwrap_or("?")
                ),
                r.reason.clone(),
                opt(r.http_status),
                opt(r.zoom_code),
                r.message
                    .as_deref()
                    .map_or("-".into(), |m| output::short(m, 48)),
                when(r.failed_at),
                opt(r.attempts),
                r.replay_count.to_string(),
            ]
        }),
    )
}

fn group_table(groups: &[triage::Group]) -> String {
    let header = [
        "group",
        "count",
        "first failed at",
        "last failed at",
        "sample event id",
    ];
    output::table(
        &header,
        groups.iter().map(|g| {
            vec![
                g.key.clone(),
                g.count.to_string(),
                when(g.first_failed_at),
                when(g.last_failed_at),
                g.sample_event_id.clone(),
            ]
        }),
    )
}

async fn show(config: &Path, event_id: &str) -> Result<Exit, Exit> {
    let found: Vec<StoredMessage> = read_all(config, "dead-letters show")
        .await?
        .into_iter()
        .filter(|(_, row)| row.event_id == event_id)
        .map(|(message, _)| message)
        .collect();
    if found.is_empty() {
        eprintln!("no dead letter with event id {event_id}");
        return Ok(Exit::Problems);
    }
    for message in &found {
        println!("position in the dead-letter queue: {}", message.position);
        if let Some(id) = &message.message_id {
            println!("message-id: {}", Printable(id));
        }
        println!("headers:\n{}", output::json(&message.headers));
        let body = match serde_json::from_slice::<serde_json::Value>(&message.body) {
            Ok(value) => output::json(&value),
            Err(_) => Printable(&String::from_utf8_lossy(&message.body)).to_string(),
        };
        if message.is_whole() {
            println!("body:\n{body}\n");
        } else {
            let (shown, len) = (message.body.len(), message.body_len);
            println!("body (its first {shown} of {len} bytes):\n{body}\n");
        }
    }
    Ok(Exit::Ok)
}

/// `dead-letters replay` options.
struct Replay {
    dry_run: bool,
    rate: Option<f64>,
    max_replays: i64,
    yes: bool,
}

/// What a replay found for each selected message.
#[derive(Default)]
struct ReplayPlan {
    replay: usize,
    /// Event id and why it stays.
    skipped: Vec<(String, String)>,
}

impl Replay {
    async fn run(&self, select: &Select) -> Result<Exit, Exit> {
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            eprintln!("zoom-dept-sync: --rate must be above 0");
            return Err(Exit::Usage);
        }
        let (settings, admin) = open(&select.config.config, "dead-letters replay").await?;
        let result = self.replay(select, &settings, &admin).await;
        admin.close().await;
        result
    }

    async fn replay(
        &self,
        select: &Select,
        settings: &Settings,
        admin: &Admin,
    ) -> Result<Exit, Exit> {
        let plan = self.plan(select, rows(settings, admin).await?.iter().map(|(_, r)| r));
        for (id, why) in &plan.skipped {
            println!("skip {}: {why}", Printable(id));
        }
        if self.dry_run {
            println!(
                "dry run: would replay {}, skip {}",
                plan.replay,
                plan.skipped.len()
            );
            return Ok(Exit::Ok);
        }
        if plan.replay == 0 {
            println!("nothing to replay (skipped {})", plan.skipped.len());
            return Ok(Exit::Ok);
        }
        confirm(self.yes, &format!("Replay {} dead letters?", plan.replay))?;
        let progress = progress(plan.replay);
        let replay_id = replay_id();
        let filter = select.filter();
        let (mut taken, limit) = (0, select.limit.unwrap_or(usize::MAX));
        let input = settings.amqp.queue.clone();
        let summary = admin
            .sweep(
                &settings.amqp.dead_letter_queue(),
                &sweep_limits(settings, self.rate),
                |m| {
                    let row = DeadLetterRow::of(m);
                    if !filter.matches(&row)
                        || row.is_too_large()
                        || row.replay_count >= self.max_replays
                        || taken >= limit
                    {
                        return Step::Keep;
                    }
                    taken += 1;
                    progress.inc(1);
                    let edit =
                        triage::replay_edit(&m.headers, &replay_id, OffsetDateTime::now_utc());
                    Step::MoveTo {
                        queue: input.clone(),
                        edit,
                    }
                },
            )
            .await;
        progress.finish_and_clear();
        let summary = summary.map_err(problem)?;
        let left = admin
            .counts(&settings.amqp.dead_letter_queue())
            .await
            .ok()
            .flatten();
        println!(
            "replayed {}, skipped {}, left in the dead-letter queue {} (replay-id {replay_id})",
            summary.moved,
            plan.skipped.len(),
            opt(left.map(|c| c.ready)),
        );
        Ok(stopped_early(summary.stopped))
    }

    fn plan<'a>(
        &self,
        select: &Select,
        rows: impl Iterator<Item = &'a DeadLetterRow>,
    ) -> ReplayPlan {
        let filter = select.filter();
        let mut plan = ReplayPlan::default();
        for row in rows.filter(|r| filter.matches(r)) {
            if row.is_too_large() {
                // The daemon would only reject it again (no loop, but no use).
                let why = format!(
                    "over the {}-byte limit: the daemon would reject it again; fix the producer",
                    crate::event::MAX_PAYLOAD_BYTES
                );
                plan.skipped.push((row.event_id.clone(), why));
            } else if row.replay_count >= self.max_replays {
                let why = format!(
                    "replayed {} times already (--max-replays)",
                    self.max_replays
                );
                plan.skipped.push((row.event_id.clone(), why));
            } else if plan.replay < select.limit.unwrap_or(usize::MAX) {
                plan.replay += 1;
            }
        }
        plan
    }
}

pub(super) fn stopped_early(stopped: bool) -> Exit {
    if stopped {
        eprintln!("stopped early (signal or the broker's consumer timeout): run it again to go on");
        Exit::Problems
    } else {
        Exit::Ok
    }
}

/// A sweep stops on SIGINT/SIGTERM after the message in hand, and before
/// the messages it holds meet the broker's consumer timeout.
pub(super) fn sweep_limits(settings: &Settings, rate: Option<f64>) -> SweepLimits {
    let timeout = settings.amqp.consumer_timeout();
    SweepLimits {
        rate,
        stop: crate::shutdown::on_signals(),
        hold_for: timeout.saturating_sub(timeout / 10 + Duration::from_secs(30)),
    }
}

fn replay_id() -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    format!("replay-{now}-{:08x}", fastrand::u32(..))
}

/// Asks on a terminal; elsewhere `--yes` is required.
fn confirm(yes: bool, question: &str) -> Result<(), Exit> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("zoom-dept-sync: {question} Not a terminal: add --yes");
        return Err(Exit::Usage);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        eprintln!("nothing done");
        Err(Exit::Ok)
    }
}

/// A progress bar on a terminal (indicatif hides it elsewhere).
fn progress(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar
}

async fn purge(select: &Select, export: Option<&Path>, all: bool, yes: bool) -> Result<Exit, Exit> {
    let filter = select.filter();
    if filter.is_empty() && !all {
        eprintln!("zoom-dept-sync: purge with no filter drops every dead letter: add --all");
        return Err(Exit::Usage);
    }
    if !yes {
        eprintln!("zoom-dept-sync: purge cannot be undone: add --yes");
        return Err(Exit::Usage);
    }
    let mut file = match export
        .map(|path| OutputFile::create("--export", path))
        .transpose()
    {
        Ok(file) => file,
        Err(e) => {
            eprintln!("zoom-dept-sync: {e}");
            return Err(Exit::Usage);
        }
    };
    let (settings, admin) = open(&select.config.config, "dead-letters purge").await?;
    let (mut taken, limit) = (0, select.limit.unwrap_or(usize::MAX));
    let mut export_error = None;
    let summary = admin
        .sweep(
            &settings.amqp.dead_letter_queue(),
            &sweep_limits(&settings, None),
            |m| {
                if !filter.matches(&DeadLetterRow::of(m)) || taken >= limit {
                    return Step::Keep;
                }
                if let Some(file) = file.as_mut()
                    && let Err(e) = export_line(file, m)
                {
                    export_error = Some(e);
                    return Step::Stop;
                }
                taken += 1;
                Step::Drop
            },
        )
        .await;
    admin.close().await;
    let summary = summary.map_err(problem)?;
    if let Some(e) = export_error {
        eprintln!("zoom-dept-sync: cannot write the export, stopped: {e}");
        return Ok(Exit::Problems);
    }
    match export {
        Some(path) if summary.dropped > 0 => println!(
            "purged {} dead letters (written to {})",
            summary.dropped,
            path.display()
        ),
        _ => println!("purged {} dead letters", summary.dropped),
    }
    Ok(stopped_early(summary.stopped))
}

/// One JSON line per dropped message, on disk before the message is acked.
fn export_line(file: &mut OutputFile, message: &StoredMessage) -> Result<(), OutputFileError> {
    let line = serde_json::json!({
        "headers": message.headers,
        "message_id": message.message_id,
        "body_base64": STANDARD.encode(&message.body),
    });
    file.write_line(&line.to_string())
}
