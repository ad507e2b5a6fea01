//! The plan: one entry per person of the export, then one per member of a
//! managed group the export does not name.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::snapshot::{ManagedUser, Snapshot};
use super::{Action, Entry, ExportRow, Held, Lookup, Plan, Who};
use crate::mapping::{GroupId, Mapping};

/// What `--remove-unlisted` does to a `not-in-export` member.
pub const UNLISTED_LEAVES: &str = "--remove-unlisted: leaves every managed group (a `leave` event)";

pub struct Planner<'a> {
    rows: &'a [ExportRow],
    mapping: &'a Mapping,
    snapshot: &'a Snapshot,
    remove_unlisted: bool,
    held: Held,
}

/// Where a row's person is in the managed groups' listings.
enum Found<'a> {
    Managed(&'a ManagedUser),
    /// The row's id and email name two different users.
    Conflict(String),
    /// In no managed group: Zoom must be asked.
    Unknown(Who),
}

/// What is known of a user's primary group.
#[derive(Clone, Copy)]
enum Primary<'a> {
    Listed(Option<&'a GroupId>),
    /// Found by a lookup, or listed by Zoom's documented answers, which do
    /// not say.
    Unknown,
}

impl<'a> Planner<'a> {
    pub fn new(rows: &'a [ExportRow], mapping: &'a Mapping, snapshot: &'a Snapshot) -> Self {
        Self {
            rows,
            mapping,
            snapshot,
            remove_unlisted: false,
            held: Held::default(),
        }
    }

    /// People named by unreadable rows: planned as `unreadable-row`, left
    /// where they are. A row that cannot say whom it names stops every
    /// `--remove-unlisted` removal.
    pub fn hold(self, held: Held) -> Self {
        Self { held, ..self }
    }

    /// `--remove-unlisted` was asked: say on each `not-in-export` entry why
    /// it is not done.
    pub fn remove_unlisted(self, remove_unlisted: bool) -> Self {
        Self {
            remove_unlisted,
            ..self
        }
    }

    /// People to look up in Zoom before [`Planner::plan`]: one row, a mapped
    /// department, and in no managed group.
    pub fn lookups_needed(&self) -> Vec<Who> {
        let ambiguous = self.ambiguous_ids();
        let mut needed: Vec<Who> = self
            .people()
            .into_iter()
            .filter_map(|rows| match rows.as_slice() {
                [row] if !self.has_ambiguous_id(row, &ambiguous) => Some(*row),
                _ => None,
            })
            .filter(|row| self.mapping.group_of(&row.department).is_some())
            .filter_map(|row| match self.find(row) {
                Found::Unknown(who) => Some(who),
                _ => None,
            })
            .collect();
        needed.sort();
        needed.dedup();
        needed
    }

    /// The plan, given Zoom's answers for [`Planner::lookups_needed`].
    pub fn plan(&self, lookups: &HashMap<Who, Lookup>) -> Plan {
        let ambiguous = self.ambiguous_ids();
        let mut matched = HashSet::new();
        let mut entries = Vec::new();
        for rows in self.people() {
            let entry = match rows.as_slice() {
                [row] if !self.has_ambiguous_id(row, &ambiguous) => {
                    self.held_back(self.single(row, lookups, &mut matched))
                }
                [] => continue,
                [first, ..] => self.ambiguous(first, &rows, &mut matched),
            };
            entries.push(entry);
        }
        for user in self.snapshot.users() {
            if !matched.contains(user.id.as_str()) {
                entries.push(self.unlisted(user));
            }
        }
        let mut totals = BTreeMap::new();
        for entry in &entries {
            *totals.entry(entry.action).or_insert(0) += 1;
        }
        Plan {
            changes: 0,
            managed_members: self.snapshot.len(),
            entries,
            totals,
            publish_set_primary: false,
            remove_unlisted: self.removes_unlisted(),
        }
        .recounted()
    }

    /// Rows grouped by lower-cased email, in the order of their first row.
    fn people(&self) -> Vec<Vec<&'a ExportRow>> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut people: Vec<Vec<&ExportRow>> = Vec::new();
        for row in self.rows {
            let key = row.email.to_lowercase();
            match index.get(&key) {
                Some(&i) => people[i].push(row),
                None => {
                    index.insert(key, people.len());
                    people.push(vec![row]);
                }
            }
        }
        people
    }

    /// Zoom ids that rows of different emails claim.
    fn ambiguous_ids(&self) -> HashSet<&'a str> {
        let mut emails: HashMap<&str, HashSet<String>> = HashMap::new();
        for row in self.rows {
            if let Some(id) = row.zoom_user_id.as_deref() {
                emails
                    .entry(id)
                    .or_default()
                    .insert(row.email.to_lowercase());
            }
        }
        emails
            .into_iter()
            .filter(|(_, e)| e.len() > 1)
            .map(|(id, _)| id)
            .collect()
    }

    fn has_ambiguous_id(&self, row: &ExportRow, ambiguous: &HashSet<&str>) -> bool {
        row.zoom_user_id
            .as_deref()
            .is_some_and(|id| ambiguous.contains(id))
    }

    fn find(&self, row: &ExportRow) -> Found<'a> {
        let by_email = self.snapshot.by_email(&row.email);
        let Some(id) = row.zoom_user_id.as_deref() else {
            return by_email.map_or_else(
                || Found::Unknown(Who::Email(row.email.to_lowercase())),
                Found::Managed,
            );
        };
        match (self.snapshot.by_id(id), by_email) {
            (_, Some(other)) if other.id != id => Found::Conflict(format!(
                "zoom_user_id {id} is not the Zoom user of {} ({})",
                row.email, other.id
            )),
            // The id is someone else's: moving it would move that person.
            (Some(user), _) if !user.email.eq_ignore_ascii_case(&row.email) => {
                Found::Conflict(format!(
                    "zoom_user_id {id} belongs to {}, not {}",
                    user.email, row.email
                ))
            }
            (Some(user), _) => Found::Managed(user),
            (None, _) => Found::Unknown(Who::Id(id.to_owned())),
        }
    }

    fn single(
        &self,
        row: &ExportRow,
        lookups: &HashMap<Who, Lookup>,
        matched: &mut HashSet<String>,
    ) -> Entry {
        let wanted = self.mapping.group_of(&row.department);
        let mut entry = Entry {
            email: row.email.clone(),
            zoom_user_id: row.zoom_user_id.clone(),
            department: Some(row.department.clone()),
            current_groups: Vec::new(),
            wanted_group: wanted.map(|g| g.to_string()),
            action: Action::Ok,
            note: None,
            lines: vec![row.line],
        };
        self.mark_named(row, matched);
        let found = self.find(row);
        if let Found::Managed(user) = &found {
            entry.zoom_user_id = Some(user.id.clone());
            entry.current_groups = names(&user.groups);
        }
        let (action, note) = match (wanted, found) {
            (_, Found::Conflict(note)) => (Action::Ambiguous, Some(note)),
            (None, _) => (
                Action::UnmappedDepartment,
                Some(format!("{:?} has no group in the mapping", row.department)),
            ),
            (Some(to), Found::Managed(user)) => {
                let primary = match user.primary_reported {
                    true => Primary::Listed(user.primary.as_ref()),
                    false => Primary::Unknown,
                };
                decide(&user.groups, primary, to)
            }
            (Some(to), Found::Unknown(who)) => match lookups.get(&who) {
                Some(Lookup::Found {
                    email: Some(email), ..
                }) if row.zoom_user_id.is_some() && !email.eq_ignore_ascii_case(&row.email) => (
                    Action::Ambiguous,
                    Some(format!(
                        "zoom_user_id {} belongs to {email}, not {}",
                        row.zoom_user_id.as_deref().unwrap_or_default(),
                        row.email
                    )),
                ),
                Some(Lookup::Found { id, groups, .. }) => {
                    let managed = self.managed(groups);
                    entry.zoom_user_id = Some(id.clone());
                    entry.current_groups = names(&managed);
                    decide(&managed, Primary::Unknown, to)
                }
                Some(Lookup::NotFound) => (Action::NotInZoom, None),
                None => (Action::NotInZoom, Some("not looked up in Zoom".into())),
            },
        };
        entry.action = action;
        entry.note = note;
        entry
    }

    fn ambiguous(
        &self,
        first: &ExportRow,
        rows: &[&ExportRow],
        matched: &mut HashSet<String>,
    ) -> Entry {
        let mut entry = Entry {
            email: first.email.clone(),
            zoom_user_id: first.zoom_user_id.clone(),
            department: None,
            current_groups: Vec::new(),
            wanted_group: None,
            action: Action::Ambiguous,
            note: None,
            lines: rows.iter().map(|r| r.line).collect(),
        };
        // Whoever the rows name is accounted for: not also `not-in-export`.
        for row in rows {
            self.mark_named(row, matched);
            if let Found::Managed(user) = self.find(row) {
                entry.zoom_user_id = Some(user.id.clone());
                entry.current_groups = names(&user.groups);
            }
        }
        let departments: Vec<&str> = rows.iter().map(|r| r.department.as_str()).collect();
        entry.note = Some(if rows.len() > 1 {
            format!(
                "{} rows for this email ({})",
                rows.len(),
                departments.join(", ")
            )
        } else {
            "its zoom_user_id is on rows of another email too".to_owned()
        });
        entry
    }

    /// Users a row names by id or by email are in the export: never
    /// `not-in-export`, even when the row is ambiguous.
    fn mark_named(&self, row: &ExportRow, matched: &mut HashSet<String>) {
        let by_id = row
            .zoom_user_id
            .as_deref()
            .and_then(|id| self.snapshot.by_id(id));
        for user in [by_id, self.snapshot.by_email(&row.email)]
            .into_iter()
            .flatten()
        {
            matched.insert(user.id.clone());
        }
    }

    /// `--remove-unlisted` was asked and every unreadable row says whom it
    /// names (one that cannot might be any `not-in-export` member's).
    fn removes_unlisted(&self) -> bool {
        self.remove_unlisted && self.held.unidentified.is_empty()
    }

    /// A row's entry, unless an unreadable row names the same person: then
    /// `unreadable-row`, and nothing changes for them.
    fn held_back(&self, mut entry: Entry) -> Entry {
        let held = self
            .held
            .lines_of(&entry.email, entry.zoom_user_id.as_deref());
        if held.is_empty() || entry.action == Action::Ambiguous {
            return entry;
        }
        entry.note = Some(format!("{}: left where they are", unreadable_lines(&held)));
        entry.action = Action::UnreadableRow;
        entry.lines.extend(held);
        entry
    }

    fn unlisted(&self, user: &ManagedUser) -> Entry {
        let held = self.held.lines_of(&user.email, Some(&user.id));
        let (action, note) = if !held.is_empty() {
            let note = format!("{}: left where they are", unreadable_lines(&held));
            (Action::UnreadableRow, Some(note))
        } else if self.remove_unlisted && !self.removes_unlisted() {
            let note = format!(
                "--remove-unlisted: not removed: {} cannot say whom it names",
                unreadable_lines(&self.held.unidentified)
            );
            (Action::NotInExport, Some(note))
        } else {
            let note = self.remove_unlisted.then(|| UNLISTED_LEAVES.to_owned());
            (Action::NotInExport, note)
        };
        Entry {
            email: user.email.clone(),
            zoom_user_id: Some(user.id.clone()),
            department: None,
            current_groups: names(&user.groups),
            wanted_group: None,
            action,
            note,
            lines: held,
        }
    }

    fn managed(&self, groups: &[String]) -> BTreeSet<GroupId> {
        groups
            .iter()
            .filter_map(|g| GroupId::parse(g).ok())
            .filter(|g| self.mapping.is_managed(g))
            .collect()
    }
}

/// The action for a person in `groups` (managed ones) who should be in `to`.
fn decide(
    groups: &BTreeSet<GroupId>,
    primary: Primary<'_>,
    to: &GroupId,
) -> (Action, Option<String>) {
    let others: Vec<String> = groups
        .iter()
        .filter(|g| *g != to)
        .map(|g| g.to_string())
        .collect();
    match (groups.contains(to), others.is_empty()) {
        _ if groups.is_empty() => (Action::Add, None),
        (true, true) => match primary {
            Primary::Listed(Some(p)) if p == to => (Action::Ok, None),
            Primary::Unknown => (Action::Ok, None),
            Primary::Listed(_) => (
                Action::SetPrimary,
                Some(format!(
                    "{to} is not the primary group; published only with worker.set_primary"
                )),
            ),
        },
        (true, false) => (
            Action::RemoveExtra,
            Some(format!("leaves {}", others.join(", "))),
        ),
        (false, _) if others.len() == 1 => (Action::Move, None),
        (false, _) => (
            Action::Move,
            Some(format!(
                "in {} managed groups; ends in {to} only",
                others.len()
            )),
        ),
    }
}

/// "unreadable line 3" / "unreadable lines 3, 7".
fn unreadable_lines(lines: &[usize]) -> String {
    let list: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let s = if lines.len() == 1 { "" } else { "s" };
    format!("unreadable line{s} {}", list.join(", "))
}

fn names(groups: &BTreeSet<GroupId>) -> Vec<String> {
    groups.iter().map(|g| g.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::GroupMember;

    fn mapping() -> Mapping {
        let table = BTreeMap::from([
            ("Engineering".to_owned(), "grp_eng".to_owned()),
            ("Sales".to_owned(), "grp_sales".to_owned()),
        ]);
        Mapping::new(&table).unwrap()
    }

    fn row(line: usize, email: &str, department: &str, id: Option<&str>) -> ExportRow {
        ExportRow {
            line,
            email: email.into(),
            department: department.into(),
            zoom_user_id: id.map(Into::into),
        }
    }

    /// (id, email, primary).
    type Listed<'a> = (&'a str, &'a str, bool);

    /// (group, its members).
    fn snapshot(groups: &[(&str, &[Listed<'_>])]) -> Snapshot {
        let members = groups
            .iter()
            .map(|(g, members)| {
                let members = members
                    .iter()
                    .map(|(id, email, primary)| GroupMember {
                        id: (*id).into(),
                        email: (*email).into(),
                        primary_group: Some(*primary),
                    })
                    .collect();
                (GroupId::parse(g).unwrap(), members)
            })
            .collect();
        Snapshot::new(&members)
    }

    fn actions(plan: &Plan) -> Vec<(&str, Action)> {
        plan.entries
            .iter()
            .map(|e| (e.email.as_str(), e.action))
            .collect()
    }

    fn plan_of(rows: &[ExportRow], snapshot: &Snapshot, lookups: &[(Who, Lookup)]) -> Plan {
        let mapping = mapping();
        let lookups = lookups.iter().cloned().collect();
        Planner::new(rows, &mapping, snapshot).plan(&lookups)
    }

    /// An id that names someone else than the row's email is never acted on:
    /// it would move the other person.
    #[test]
    fn an_id_that_belongs_to_another_email_is_ambiguous() {
        let zoom = snapshot(&[("grp_eng", &[("u2", "bob@x.com", true)])]);
        let rows = [
            row(2, "alice@x.com", "Sales", Some("u2")),
            row(3, "carol@x.com", "Sales", Some("u9")),
        ];
        let lookups = [(
            Who::Id("u9".into()),
            Lookup::Found {
                id: "u9".into(),
                groups: vec![],
                email: Some("dave@x.com".into()),
            },
        )];
        let plan = plan_of(&rows, &zoom, &lookups);
        let actions: Vec<(&str, Action)> = plan
            .entries
            .iter()
            .map(|e| (e.email.as_str(), e.action))
            .collect();
        assert!(
            actions.contains(&("alice@x.com", Action::Ambiguous))
                && actions.contains(&("carol@x.com", Action::Ambiguous)),
            "{actions:?}"
        );
        assert_eq!(plan.changes, 0);
    }

    #[test]
    fn each_action_for_people_in_managed_groups() {
        let zoom = snapshot(&[
            (
                "grp_eng",
                &[
                    ("u1", "a@x.com", true),
                    ("u2", "b@x.com", true),
                    ("u3", "c@x.com", false),
                ],
            ),
            (
                "grp_sales",
                &[
                    ("u2", "b@x.com", false),
                    ("u4", "d@x.com", false),
                    ("u5", "e@x.com", true),
                ],
            ),
        ]);
        let rows = [
            row(2, "a@x.com", "Sales", None),       // eng → sales
            row(3, "b@x.com", "Sales", None),       // in both
            row(4, "c@x.com", "Engineering", None), // not primary
            row(5, "e@x.com", "sales ", None),      // ok
            row(6, "a2@x.com", "Legal", None),      // unmapped
        ];
        let plan = plan_of(&rows, &zoom, &[]);
        assert_eq!(
            actions(&plan),
            [
                ("a@x.com", Action::Move),
                ("b@x.com", Action::RemoveExtra),
                ("c@x.com", Action::SetPrimary),
                ("e@x.com", Action::Ok),
                ("a2@x.com", Action::UnmappedDepartment),
                ("d@x.com", Action::NotInExport),
            ]
        );
        assert_eq!(plan.entries[0].note, None, "a plain move");
        assert_eq!(plan.entries[1].current_groups, ["grp_eng", "grp_sales"]);
        assert_eq!(plan.entries[1].note.as_deref(), Some("leaves grp_eng"));
        assert_eq!((plan.changes, plan.managed_members), (2, 5));
        assert_eq!(plan.totals[&Action::NotInExport], 1);
        assert!(!plan.totals.contains_key(&Action::Add));
    }

    #[test]
    fn people_in_no_managed_group_are_looked_up() {
        let zoom = snapshot(&[("grp_eng", &[("u1", "a@x.com", true)])]);
        let rows = [
            row(2, "New@X.com", "Sales", None),
            row(3, "gone@x.com", "Sales", None),
            row(4, "id@x.com", "Sales", Some("u9")),
            row(5, "unmapped@x.com", "Legal", None),
            row(6, "a@x.com", "Engineering", None),
        ];
        let mapping = mapping();
        let planner = Planner::new(&rows, &mapping, &zoom);
        assert_eq!(
            planner.lookups_needed(),
            [
                Who::Id("u9".into()),
                Who::Email("gone@x.com".into()),
                Who::Email("new@x.com".into()),
            ]
        );
        let found = |id: &str, groups: &[&str]| Lookup::Found {
            id: id.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            email: None,
        };
        let lookups = HashMap::from([
            (Who::Email("new@x.com".into()), found("u7", &["grp_other"])),
            (Who::Email("gone@x.com".into()), Lookup::NotFound),
            (Who::Id("u9".into()), found("u9", &["grp_sales"])),
        ]);
        let plan = planner.plan(&lookups);
        assert_eq!(
            actions(&plan),
            [
                ("New@X.com", Action::Add),
                ("gone@x.com", Action::NotInZoom),
                ("id@x.com", Action::Ok),
                ("unmapped@x.com", Action::UnmappedDepartment),
                ("a@x.com", Action::Ok),
            ]
        );
        assert_eq!(plan.entries[0].zoom_user_id.as_deref(), Some("u7"));
        assert!(
            plan.entries[0].current_groups.is_empty(),
            "unmanaged left out"
        );
    }

    #[test]
    fn emails_match_case_insensitively() {
        let zoom = snapshot(&[("grp_eng", &[("u1", "Jane.Doe@X.com", true)])]);
        let rows = [
            row(2, "jane.doe@x.COM", "Engineering", None),
            row(3, "BOB@x.com", "Sales", None),
            row(4, "bob@X.com", "Engineering", None),
        ];
        let plan = plan_of(&rows, &zoom, &[]);
        assert_eq!(
            actions(&plan),
            [
                ("jane.doe@x.COM", Action::Ok),
                ("BOB@x.com", Action::Ambiguous),
            ]
        );
        assert_eq!(plan.entries[1].lines, [3, 4]);
        assert_eq!(
            plan.entries[1].note.as_deref(),
            Some("2 rows for this email (Sales, Engineering)")
        );
    }

    #[test]
    fn an_id_of_another_user_or_of_two_emails_is_ambiguous() {
        let zoom = snapshot(&[(
            "grp_eng",
            &[("u1", "a@x.com", true), ("u2", "b@x.com", true)],
        )]);
        let rows = [
            row(2, "a@x.com", "Engineering", Some("u2")),
            row(3, "c@x.com", "Sales", Some("u5")),
            row(4, "d@x.com", "Sales", Some("u5")),
        ];
        let plan = plan_of(&rows, &zoom, &[]);
        assert_eq!(
            actions(&plan),
            [
                ("a@x.com", Action::Ambiguous),
                ("c@x.com", Action::Ambiguous),
                ("d@x.com", Action::Ambiguous),
            ],
            "u1 and u2 are both named, so neither is not-in-export: {plan:#?}"
        );
    }

    #[test]
    fn a_move_from_several_groups_and_an_add_and_unlisted_notes() {
        let zoom = snapshot(&[
            (
                "grp_eng",
                &[("u1", "a@x.com", true), ("u3", "c@x.com", true)],
            ),
            ("grp_sales", &[("u1", "a@x.com", false)]),
        ]);
        let table = BTreeMap::from([
            ("Engineering".to_owned(), "grp_eng".to_owned()),
            ("Sales".to_owned(), "grp_sales".to_owned()),
            ("Support".to_owned(), "grp_sup".to_owned()),
        ]);
        let mapping = Mapping::new(&table).unwrap();
        let rows = [row(2, "a@x.com", "Support", None)];
        let plan = Planner::new(&rows, &mapping, &zoom)
            .remove_unlisted(true)
            .plan(&HashMap::new());
        assert_eq!(plan.entries[0].action, Action::Move);
        assert_eq!(
            plan.entries[0].note.as_deref(),
            Some("in 2 managed groups; ends in grp_sup only")
        );
        assert_eq!(plan.entries[1].action, Action::NotInExport);
        assert_eq!(plan.entries[1].note.as_deref(), Some(UNLISTED_LEAVES));
    }

    /// People named by unreadable rows stay where they are: no move from a
    /// readable row of theirs, no leave from `--remove-unlisted`.
    #[test]
    fn people_of_unreadable_rows_are_held() {
        let zoom = snapshot(&[
            (
                "grp_eng",
                &[
                    ("u1", "a@x.com", true),
                    ("u2", "b@x.com", true),
                    ("u3", "c@x.com", true),
                    ("u4", "d@x.com", true),
                ],
            ),
            ("grp_sales", &[("u5", "e@x.com", true)]),
        ]);
        let rows = [
            row(2, "A@x.com", "Sales", None),
            row(4, "e@x.com", "Engineering", None),
        ];
        let mut held = Held::default();
        held.add(3, Some("a@x.com"), None);
        held.add(5, Some("B@X.com"), None);
        held.add(6, None, Some("u3"));
        let mapping = mapping();
        let plan = Planner::new(&rows, &mapping, &zoom)
            .remove_unlisted(true)
            .hold(held)
            .plan(&HashMap::new());
        assert_eq!(
            actions(&plan),
            [
                ("A@x.com", Action::UnreadableRow),
                ("e@x.com", Action::Move),
                ("b@x.com", Action::UnreadableRow),
                ("c@x.com", Action::UnreadableRow),
                ("d@x.com", Action::NotInExport),
            ]
        );
        assert_eq!(plan.entries[0].lines, [2, 3]);
        assert_eq!(plan.entries[2].lines, [5]);
        assert_eq!(plan.changes, 2, "the move and d's leave");
    }

    /// A row that cannot say whom it names might be anyone's: no one is
    /// removed, the other changes stay.
    #[test]
    fn an_unidentified_row_stops_every_removal() {
        let zoom = snapshot(&[(
            "grp_eng",
            &[("u1", "a@x.com", true), ("u2", "b@x.com", true)],
        )]);
        let rows = [row(2, "a@x.com", "Sales", None)];
        let mut held = Held::default();
        held.add(3, None, None);
        let mapping = mapping();
        let plan = Planner::new(&rows, &mapping, &zoom)
            .remove_unlisted(true)
            .hold(held)
            .plan(&HashMap::new());
        assert_eq!(
            actions(&plan),
            [("a@x.com", Action::Move), ("b@x.com", Action::NotInExport)]
        );
        assert_eq!(plan.changes, 1, "the move only");
        assert!(!plan.remove_unlisted);
        let note = plan.entries[1].note.as_deref().unwrap();
        assert!(note.contains("line 3"), "{note}");
    }
}
