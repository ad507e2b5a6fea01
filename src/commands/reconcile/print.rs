//! The plan as a table with totals, or as JSON (`--json`, `--plan-out`).

use serde::Serialize;

use super::export::Unreadable;
use crate::commands::output;
use crate::commands::printable::Printable;
use crate::reconcile::{Entry, Plan};

/// Everything a run decided, as `--json` and `--plan-out` write it.
#[derive(Serialize)]
pub struct Report<'a> {
    pub run_id: &'a str,
    pub as_of: &'a str,
    /// `--apply` was given and the threshold let it through.
    pub apply: bool,
    pub max_changes: usize,
    #[serde(flatten)]
    pub plan: &'a Plan,
    pub unreadable_rows: &'a [Unreadable],
    /// The events published (or to be published with `--apply`).
    pub events: Vec<EventLine<'a>>,
    /// How many of `events` the broker confirmed, once `--apply` ran (the
    /// first ones, in order); absent before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<usize>,
}

#[derive(Serialize)]
pub struct EventLine<'a> {
    pub event_id: &'a str,
    pub email: &'a str,
    pub action: &'static str,
}

pub fn table(report: &Report<'_>) -> String {
    let rows = report.plan.entries.iter().map(row);
    let mut text = output::table(
        &[
            "person",
            "zoom id",
            "current managed groups",
            "wanted group",
            "action",
            "note",
        ],
        rows,
    );
    text.push('\n');
    text.push_str(&totals(report));
    for bad in report.unreadable_rows {
        text.push_str(&format!(
            "\nline {}: unreadable, left out: {}",
            bad.line,
            Printable(&bad.problem)
        ));
    }
    text
}

/// "1 unreadable row (line 3)" / "2 unreadable rows (lines 3, 7)".
pub fn unreadable_count(lines: &[u64]) -> String {
    let list: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let s = if lines.len() == 1 { "" } else { "s" };
    format!(
        "{} unreadable row{s} (line{s} {})",
        lines.len(),
        list.join(", ")
    )
}

fn row(entry: &Entry) -> Vec<String> {
    let groups = match entry.current_groups.as_slice() {
        [] => "-".to_owned(),
        groups => groups.join(", "),
    };
    vec![
        entry.email.clone(),
        output::opt(entry.zoom_user_id.as_deref()),
        groups,
        output::opt(entry.wanted_group.as_deref()),
        entry.action.as_str().to_owned(),
        entry
            .note
            .as_deref()
            .map_or_else(|| "-".into(), |n| output::short(n, 60)),
    ]
}

fn totals(report: &Report<'_>) -> String {
    let plan = report.plan;
    let per_action: Vec<String> = plan
        .totals
        .iter()
        .map(|(action, n)| format!("{} {n}", action.as_str()))
        .collect();
    format!(
        "totals: {}\n{} changes for {} managed members (limit {}); run {}",
        per_action.join(", "),
        plan.changes,
        plan.managed_members,
        report.max_changes,
        report.run_id
    )
}
