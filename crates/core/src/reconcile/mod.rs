//! Drift repair, the pure part: an HR export, the department mapping and the
//! managed groups' members as Zoom lists them go in; a plan comes out, one
//! entry per person with the action that brings Zoom to the export. No HTTP,
//! no AMQP: `commands::reconcile` reads the CSV, asks Zoom, prints and
//! publishes, so every decision here is testable from plain values.
//!
//! Zoom's member listings only show people who are in a managed group. A
//! person of the export found in none may be in Zoom (in no managed group:
//! `add`) or not at all (`not-in-zoom`); the planner names those people
//! ([`Planner::lookups_needed`]) and the command asks Zoom about each one
//! before the plan is made.

mod events;
mod planner;
mod snapshot;
mod threshold;

use std::collections::BTreeMap;

use serde::Serialize;

pub use events::{Event, EventError, events};
pub use planner::Planner;
pub use snapshot::{GroupMember, Snapshot};
pub use threshold::{OverThreshold, check_threshold, default_max_changes};

/// One readable row of the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    /// The row's line in the file (the header is line 1).
    pub line: usize,
    pub email: String,
    pub department: String,
    pub zoom_user_id: Option<String>,
}

/// People named by rows of the export that could not be read. The plan
/// leaves them where they are: a move from another row of theirs could be
/// wrong, and a `leave` would remove someone who is in the export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Lower-cased email → the unreadable lines that name it.
    pub emails: BTreeMap<String, Vec<usize>>,
    /// Zoom id → the unreadable lines that name it.
    pub ids: BTreeMap<String, Vec<usize>>,
    /// Unreadable lines that name no one we can tell: they might be
    /// anyone's, so `--remove-unlisted` removes no one.
    pub unidentified: Vec<usize>,
}

impl Held {
    /// An unreadable `line` naming `email` and / or `id` (neither: it
    /// cannot say whom).
    pub fn add(&mut self, line: usize, email: Option<&str>, id: Option<&str>) {
        if let Some(email) = email {
            let lines = self.emails.entry(email.to_lowercase()).or_default();
            lines.push(line);
        }
        if let Some(id) = id {
            self.ids.entry(id.to_owned()).or_default().push(line);
        }
        if email.is_none() && id.is_none() {
            self.unidentified.push(line);
        }
    }

    /// The unreadable lines naming this email or id, sorted (empty: none).
    pub fn lines_of(&self, email: &str, id: Option<&str>) -> Vec<usize> {
        let by_email = self.emails.get(&email.to_lowercase());
        let by_id = id.and_then(|id| self.ids.get(id));
        let mut lines: Vec<usize> = by_email
            .into_iter()
            .chain(by_id)
            .flatten()
            .copied()
            .collect();
        lines.sort_unstable();
        lines.dedup();
        lines
    }
}

/// Whom to ask Zoom about (`GET /users/{id or email}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Who {
    Id(String),
    /// Lower-cased.
    Email(String),
}

/// What Zoom said about a person found in no managed group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// In Zoom; `groups` are all of the user's groups (managed or not).
    Found {
        id: String,
        groups: Vec<String>,
        /// The user's email, when Zoom's record has one.
        email: Option<String>,
    },
    /// Zoom does not know the user (1001 / 1010).
    NotFound,
}

/// What the plan does for one person. The order is the order of the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// In a managed group, not the wanted one.
    Move,
    /// In Zoom, in no managed group.
    Add,
    /// In the wanted group and in other managed groups too.
    RemoveExtra,
    /// Only in the wanted group, which is not their primary group.
    SetPrimary,
    Ok,
    UnmappedDepartment,
    NotInZoom,
    /// Two rows for one email, or an id and an email naming two users.
    Ambiguous,
    /// Named by a row that cannot be read: left where they are.
    UnreadableRow,
    /// In a managed group, not in the export.
    NotInExport,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Move => "move",
            Self::Add => "add",
            Self::RemoveExtra => "remove-extra",
            Self::SetPrimary => "set-primary",
            Self::Ok => "ok",
            Self::UnmappedDepartment => "unmapped-department",
            Self::NotInZoom => "not-in-zoom",
            Self::Ambiguous => "ambiguous",
            Self::UnreadableRow => "unreadable-row",
            Self::NotInExport => "not-in-export",
        }
    }

    /// Publishes an event with `--apply` (see [`events`]).
    pub fn is_change(self) -> bool {
        matches!(self, Self::Move | Self::Add | Self::RemoveExtra)
    }
}

/// One person's line of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub email: String,
    pub zoom_user_id: Option<String>,
    /// The export's department (for `not-in-export`: none).
    pub department: Option<String>,
    /// Managed groups the person is in now, sorted.
    pub current_groups: Vec<String>,
    /// The group the department maps to.
    pub wanted_group: Option<String>,
    pub action: Action,
    pub note: Option<String>,
    /// Export lines this entry comes from.
    pub lines: Vec<usize>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub entries: Vec<Entry>,
    /// Entries per action (actions with none are left out).
    pub totals: BTreeMap<Action, usize>,
    /// Distinct users in managed groups.
    pub managed_members: usize,
    /// Entries that publish an event with `--apply`.
    pub changes: usize,
    /// `set-primary` rows publish an event too: the daemon runs with
    /// `worker.set_primary`, so an event for someone already in the wanted
    /// group makes it their primary group.
    #[serde(skip)]
    pub publish_set_primary: bool,
    /// `--remove-unlisted`: `not-in-export` rows publish a `leave` event
    /// (false when an unreadable row cannot say whom it names).
    #[serde(skip)]
    pub remove_unlisted: bool,
}

impl Plan {
    /// With `worker.set_primary` on, `set-primary` rows become changes.
    pub fn with_set_primary(mut self, on: bool) -> Self {
        self.publish_set_primary = on;
        self.recounted()
    }

    /// `changes` counted again after an option changed what publishes.
    pub fn recounted(mut self) -> Self {
        self.changes = self
            .entries
            .iter()
            .filter(|e| self.publishes(e.action))
            .count();
        self
    }

    /// Whether `--apply` publishes an event for this action.
    pub fn publishes(&self, action: Action) -> bool {
        action.is_change()
            || (self.publish_set_primary && action == Action::SetPrimary)
            || (self.remove_unlisted && action == Action::NotInExport)
    }
}
