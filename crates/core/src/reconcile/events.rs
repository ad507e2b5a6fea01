//! The plan's changes as the daemon's own events, so they go through its
//! ordering, rate limits, retries and dead letters like any HR event.
//!
//! - `move` from one managed group: `previous_department` names a
//!   department of that group, so the daemon moves with one `PATCH`.
//! - `move` from several, `add`, `remove-extra`: no `previous_department`;
//!   the daemon looks the user up and moves, adds, or (already in the
//!   target) leaves the other managed groups.
//!
//! Every event carries the export's email and, when known, the Zoom id (so
//! the daemon needs no email lookup).

use serde_json::{Map, Value};

use super::{Action, Entry, Plan};
use crate::event::DepartmentChange;
use crate::mapping::{GroupId, Mapping};

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: String,
    pub email: String,
    pub action: Action,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// A change the daemon's parser would refuse (never expected: the rows
/// were checked when read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event for {email} would be invalid: {detail}")]
pub struct EventError {
    pub email: String,
    pub detail: String,
}

/// One event per change of `plan`, numbered from 1:
/// `reconcile-<run_id>-<n>`, `occurred_at` = `as_of` (RFC 3339).
pub fn events(
    plan: &Plan,
    mapping: &Mapping,
    run_id: &str,
    as_of: &str,
) -> Result<Vec<Event>, EventError> {
    let departments = mapping.departments_by_group();
    plan.entries
        .iter()
        .filter(|e| plan.publishes(e.action))
        .enumerate()
        .map(|(n, entry)| {
            let event_id = format!("reconcile-{run_id}-{}", n + 1);
            let previous = previous_department(entry, &departments);
            let body = body(entry, &event_id, previous, as_of);
            DepartmentChange::parse(&body).map_err(|e| EventError {
                email: entry.email.clone(),
                detail: e.detail,
            })?;
            Ok(Event {
                event_id,
                email: entry.email.clone(),
                action: entry.action,
                body,
            })
        })
        .collect()
}

/// A department of the person's one managed group, for a `move` from it;
/// none when the source is not one known group.
fn previous_department<'a>(
    entry: &Entry,
    departments: &'a std::collections::BTreeMap<String, Vec<String>>,
) -> Option<&'a str> {
    match (entry.action, entry.current_groups.as_slice()) {
        (Action::Move, [group]) => departments
            .get(GroupId::parse(group).ok()?.as_str())?
            .first()
            .map(String::as_str),
        _ => None,
    }
}

fn body(entry: &Entry, event_id: &str, previous: Option<&str>, as_of: &str) -> Vec<u8> {
    let mut event = Map::new();
    let mut put = |key: &str, value: &str| {
        event.insert(key.to_owned(), Value::from(value));
    };
    put("event_id", event_id);
    if let Some(id) = &entry.zoom_user_id {
        put("zoom_user_id", id);
    }
    put("email", &entry.email);
    if let Some(previous) = previous {
        put("previous_department", previous);
    }
    if entry.action == Action::NotInExport {
        // Not in the export: out of every managed group, no new department.
        put("action", "leave");
    } else {
        put(
            "new_department",
            entry.department.as_deref().unwrap_or_default(),
        );
    }
    put("occurred_at", as_of);
    serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::reconcile::GroupMember;
    use crate::reconcile::{ExportRow, Planner, Snapshot};

    #[test]
    fn each_change_is_one_event_the_daemon_parses() {
        let table = BTreeMap::from([
            ("Engineering".to_owned(), "grp_eng".to_owned()),
            ("Sales".to_owned(), "grp_sales".to_owned()),
        ]);
        let mapping = Mapping::new(&table).unwrap();
        let member = |id: &str, email: &str| GroupMember {
            id: id.into(),
            email: email.into(),
            primary_group: Some(true),
        };
        let members = BTreeMap::from([
            (
                GroupId::parse("grp_eng").unwrap(),
                vec![member("u1", "a@x.com"), member("u2", "b@x.com")],
            ),
            (
                GroupId::parse("grp_sales").unwrap(),
                vec![member("u2", "b@x.com")],
            ),
        ]);
        let snapshot = Snapshot::new(&members);
        let row = |line, email: &str, department: &str| ExportRow {
            line,
            email: email.into(),
            department: department.into(),
            zoom_user_id: None,
        };
        let rows = [row(2, "a@x.com", "Sales"), row(3, "b@x.com", "Sales")];
        let plan = Planner::new(&rows, &mapping, &snapshot).plan(&HashMap::new());
        let events = events(&plan, &mapping, "r1", "2026-11-26T09:00:00Z").unwrap();
        let bodies: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::from_slice(&e.body).unwrap())
            .collect();
        assert_eq!(
            bodies,
            [
                serde_json::json!({"event_id": "reconcile-r1-1", "zoom_user_id": "u1",
                    "email": "a@x.com", "previous_department": "engineering",
                    "new_department": "Sales", "occurred_at": "2026-11-26T09:00:00Z"}),
                serde_json::json!({"event_id": "reconcile-r1-2", "zoom_user_id": "u2",
                    "email": "b@x.com", "new_department": "Sales",
                    "occurred_at": "2026-11-26T09:00:00Z"}),
            ]
        );
        assert_eq!(events[1].action, Action::RemoveExtra);
    }
}
