//! `reconcile`: repairs drift between an HR export and Zoom. It reads the
//! export and the managed groups' members, prints a plan, and with
//! `--apply` publishes one event per change to the input queue, so the
//! daemon makes the changes with its ordering, rate limits, retries and
//! dead letters. It never writes to Zoom itself. The decisions are in
//! `crate::reconcile`; this module does the reading, printing and sending.

mod export;
mod fetch;
mod print;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::output_file::OutputFile;
use super::{ConfigArg, Exit, full_settings, output};
use crate::broker::admin::Admin;
use crate::config::Settings;
use crate::reconcile::{self, Event, Plan, Planner, Snapshot};
use crate::zoom::Client;
use crate::zoom::NoMetrics;
use export::{Columns, Export};
use print::{EventLine, Report};

/// The header that ties a published event to its run (the audit trail's
/// `run_id`).
pub const RUN_ID_HEADER: &str = "reconcile-run-id";

#[derive(Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The HR export: CSV with a header row.
    #[arg(long)]
    hr_export: PathBuf,
    /// Publish one event per change (without it nothing changes).
    #[arg(long)]
    apply: bool,
    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the plan as JSON to this file: a new file, mode 0600; an
    /// existing path (or symlink) is refused before anything is read.
    #[arg(long)]
    plan_out: Option<PathBuf>,
    #[arg(long, default_value = "email")]
    email_column: String,
    #[arg(long, default_value = "department")]
    department_column: String,
    /// The Zoom user id column [default: zoom_user_id, when present].
    #[arg(long)]
    id_column: Option<String>,
    /// When the export was taken (RFC 3339): the events' `occurred_at`.
    #[arg(long, value_parser = parse_time)]
    as_of: Option<OffsetDateTime>,
    /// Refuse `--apply` past this many changes [default: 20 % of managed
    /// members, at most 500].
    #[arg(long)]
    max_changes: Option<usize>,
    /// Apply even past `--max-changes`.
    #[arg(long)]
    allow_large: bool,
    /// Remove managed members missing from the export from every managed
    /// group (with --apply, each gets a `leave` event).
    #[arg(long)]
    remove_unlisted: bool,
    /// Apply even with unreadable rows: the people they name stay where
    /// they are (without it, `--apply` refuses while any row is unreadable).
    #[arg(long)]
    skip_unreadable: bool,
}

fn parse_time(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text, &Rfc3339)
}

pub async fn run(args: ReconcileArgs) -> Exit {
    match reconcile(args).await {
        Ok(exit) | Err(exit) => exit,
    }
}

async fn reconcile(args: ReconcileArgs) -> Result<Exit, Exit> {
    let settings = full_settings(&args.config.config).map_err(super::config_error)?;
    let mut plan_out = plan_file(&args)?;
    let export = read_export(&args)?;
    let client = crate::clients::zoom(&settings, Arc::new(NoMetrics)).map_err(|e| {
        eprintln!("zoom-dept-sync reconcile: {e}");
        Exit::Usage
    })?;
    let plan = make_plan(&args, &settings, &client, &export)
        .await?
        .with_set_primary(settings.worker.set_primary);
    let run_id = run_id();
    let as_of = args.as_of.unwrap_or_else(OffsetDateTime::now_utc);
    let as_of = output::when(Some(as_of));
    let events = reconcile::events(&plan, &settings.mapping, &run_id, &as_of).map_err(|e| {
        eprintln!("zoom-dept-sync reconcile: {e}");
        Exit::Problems
    })?;
    let threshold = reconcile::check_threshold(
        plan.changes,
        plan.managed_members,
        args.max_changes,
        args.allow_large,
    );
    let refusals = refusals(&args, &export, threshold);
    let report = Report {
        run_id: &run_id,
        as_of: &as_of,
        apply: args.apply && refusals.is_empty(),
        max_changes: args
            .max_changes
            .unwrap_or_else(|| reconcile::default_max_changes(plan.managed_members)),
        plan: &plan,
        unreadable_rows: &export.unreadable,
        events: event_lines(&events),
        published: None,
    };
    show(&args, &report, plan_out.as_mut())?;
    warn_unidentified(&args, &export);
    let mut exit = problems_if(!export.unreadable.is_empty());
    if args.apply {
        if !refusals.is_empty() {
            for refusal in refusals {
                eprintln!("zoom-dept-sync reconcile: refused: {refusal}");
            }
            return Ok(Exit::Problems);
        }
        let (sent, published) = send(&args, &settings, &events, &run_id).await;
        exit = worse(exit, sent);
        // The plan file says what was published, not only what was meant.
        let report = Report {
            published: Some(published),
            ..report
        };
        write_plan(plan_out.as_mut(), &report)?;
    }
    Ok(exit)
}

/// Why `--apply` must publish nothing: unreadable rows (unless
/// `--skip-unreadable`), a plan over the threshold.
fn refusals(
    args: &ReconcileArgs,
    export: &Export,
    threshold: Result<(), reconcile::OverThreshold>,
) -> Vec<String> {
    let mut refusals = Vec::new();
    if !args.apply {
        return refusals;
    }
    if !export.unreadable.is_empty() && !args.skip_unreadable {
        let lines: Vec<u64> = export.unreadable.iter().map(|u| u.line).collect();
        refusals.push(format!(
            "{}; nothing published; fix them, or add --skip-unreadable to leave the \
             people they name where they are",
            print::unreadable_count(&lines)
        ));
    }
    if let Err(over) = threshold {
        refusals.push(over.to_string());
    }
    refusals
}

/// `--remove-unlisted` with a row that cannot say whom it names: no one
/// is removed, and the operator is told why.
fn warn_unidentified(args: &ReconcileArgs, export: &Export) {
    let unidentified: Vec<u64> = export
        .unreadable
        .iter()
        .filter(|u| u.person.is_none())
        .map(|u| u.line)
        .collect();
    if args.remove_unlisted && !unidentified.is_empty() {
        eprintln!(
            "zoom-dept-sync reconcile: --remove-unlisted: no one removed: {} cannot say \
             whom they name (it might be any not-in-export member)",
            print::unreadable_count(&unidentified)
        );
    }
}

fn read_export(args: &ReconcileArgs) -> Result<Export, Exit> {
    let columns = Columns {
        email: args.email_column.clone(),
        department: args.department_column.clone(),
        id: args.id_column.clone(),
    };
    export::read(&args.hr_export, &columns).map_err(|e| {
        eprintln!("zoom-dept-sync reconcile: {e}");
        Exit::Usage
    })
}

/// Lists the managed groups, looks up who is in none of them, plans.
async fn make_plan(
    args: &ReconcileArgs,
    settings: &Settings,
    client: &Client,
    export: &Export,
) -> Result<Plan, Exit> {
    let failed = |e: fetch::FetchError| {
        eprintln!("zoom-dept-sync reconcile: {e}");
        Exit::Problems
    };
    let members = fetch::members(client, &settings.mapping)
        .await
        .map_err(failed)?;
    let snapshot = Snapshot::new(&members);
    let planner = Planner::new(&export.rows, &settings.mapping, &snapshot)
        .remove_unlisted(args.remove_unlisted)
        .hold(export.held());
    let lookups = fetch::lookups(client, &planner.lookups_needed())
        .await
        .map_err(failed)?;
    Ok(planner.plan(&lookups))
}

/// Prints the plan and writes `--plan-out`.
fn show(
    args: &ReconcileArgs,
    report: &Report<'_>,
    plan_out: Option<&mut OutputFile>,
) -> Result<(), Exit> {
    let json = output::json(report);
    if args.json {
        println!("{json}");
    } else {
        println!("{}", print::table(report));
    }
    write_plan(plan_out, report)
}

/// `--plan-out`, created before anything is read, so an existing path
/// stops the run before it costs a Zoom call.
fn plan_file(args: &ReconcileArgs) -> Result<Option<OutputFile>, Exit> {
    args.plan_out
        .as_deref()
        .map(|path| OutputFile::create("--plan-out", path))
        .transpose()
        .map_err(|e| {
            eprintln!("zoom-dept-sync reconcile: {e}");
            Exit::Usage
        })
}

/// `--plan-out`: the JSON plan (again after publishing, with `published`).
fn write_plan(plan_out: Option<&mut OutputFile>, report: &Report<'_>) -> Result<(), Exit> {
    if let Some(file) = plan_out {
        file.replace(&format!("{}\n", output::json(report)))
            .map_err(|e| {
                eprintln!("zoom-dept-sync reconcile: {e}");
                Exit::Problems
            })?;
    }
    Ok(())
}

/// Publishes every event in order, each confirmed.
/// Returns how it ended and how many events the broker confirmed.
async fn send(
    args: &ReconcileArgs,
    settings: &Settings,
    events: &[Event],
    run_id: &str,
) -> (Exit, usize) {
    let queue = &settings.amqp.queue;
    let connected = async {
        let admin = Admin::connect(&settings.amqp, "reconcile").await?;
        let publisher = admin.publisher().await?;
        Ok::<_, crate::broker::admin::AdminError>((admin, publisher))
    };
    let (admin, publisher) = match connected.await {
        Ok(both) => both,
        Err(e) => {
            eprintln!("zoom-dept-sync reconcile: nothing published: {e}");
            return (Exit::Problems, 0);
        }
    };
    let mut sent = 0;
    for event in events {
        let mut headers = vec![(RUN_ID_HEADER, run_id)];
        if args.allow_large {
            // Approved as large already: the daemon's brake lets it through.
            headers.push((crate::broker::settle::ALLOW_LARGE_HEADER, "true"));
        }
        let published = publisher
            .publish_event(queue, &event.body, &event.event_id, &headers)
            .await;
        if let Err(e) = published {
            eprintln!(
                "zoom-dept-sync reconcile: {e}; published {sent} of {}",
                events.len()
            );
            admin.close().await;
            return (Exit::Problems, sent);
        }
        sent += 1;
    }
    admin.close().await;
    let line = format!("published {sent} events to {queue} (run {run_id})");
    if args.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    (Exit::Ok, sent)
}

fn event_lines(events: &[Event]) -> Vec<EventLine<'_>> {
    events
        .iter()
        .map(|e| EventLine {
            event_id: &e.event_id,
            email: &e.email,
            action: e.action.as_str(),
        })
        .collect()
}

/// `<unix seconds>-<8 hex digits>`: sorts by time, unique enough per run.
fn run_id() -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    format!("{now}-{:08x}", fastrand::u32(..))
}

fn problems_if(problems: bool) -> Exit {
    if problems { Exit::Problems } else { Exit::Ok }
}

fn worse(a: Exit, b: Exit) -> Exit {
    if a == Exit::Ok { b } else { a }
}
