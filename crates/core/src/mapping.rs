//! Department → Zoom group, and the plan for one event. No I/O here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::event::{DepartmentChange, is_zoom_id};

/// A Zoom group id from the mapping; checked at start-up to be safe in a URL
/// path, so it can only come from the operator's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(String);

/// Why the operator's department table cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{0:?} is not a Zoom group id ([A-Za-z0-9_-], 1 to 64 characters)")]
    NotAGroupId(String),
    #[error("the department mapping is empty: add a [departments] table or departments_file")]
    Empty,
    #[error("departments: a department name is empty")]
    EmptyName,
    #[error("departments.{department:?}: {source}")]
    BadGroup {
        department: String,
        source: Box<MappingError>,
    },
    #[error("departments: {0:?} is listed twice (names match case-insensitively)")]
    Twice(String),
}

impl GroupId {
    pub fn parse(s: &str) -> Result<Self, MappingError> {
        if is_zoom_id(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(MappingError::NotAGroupId(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The operator's department → group table.
#[derive(Debug, Clone)]
pub struct Mapping {
    by_department: HashMap<String, GroupId>,
    managed: HashSet<GroupId>,
}

/// What processing one event takes, before any call is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Source known and different from the target: one `PATCH` move.
    Move { from: GroupId, to: GroupId },
    /// Source unknown: Zoom must be asked which managed group the user is in.
    Lookup { to: GroupId },
    /// Source and target are the same group: nothing to do.
    AlreadyThere { group: GroupId },
    /// `new_department` has no group.
    Unmapped,
    /// A `leave` event: out of every managed group (Zoom must be asked which).
    Leave,
}

/// Names match case-insensitively after trimming white space (SPEC).
fn normalize(department: &str) -> String {
    department.trim().to_lowercase()
}

impl Mapping {
    /// Builds the table; fails on an empty table, a bad group id or two
    /// spellings of one department.
    pub fn new(table: &BTreeMap<String, String>) -> Result<Self, MappingError> {
        if table.is_empty() {
            return Err(MappingError::Empty);
        }
        let mut by_department = HashMap::new();
        for (department, group) in table {
            let key = normalize(department);
            if key.is_empty() {
                return Err(MappingError::EmptyName);
            }
            let group = GroupId::parse(group).map_err(|e| MappingError::BadGroup {
                department: department.clone(),
                source: Box::new(e),
            })?;
            if by_department.insert(key, group).is_some() {
                return Err(MappingError::Twice(department.clone()));
            }
        }
        let managed = by_department.values().cloned().collect();
        Ok(Self {
            by_department,
            managed,
        })
    }

    pub fn group_of(&self, department: &str) -> Option<&GroupId> {
        self.by_department.get(&normalize(department))
    }

    /// Groups named in the mapping: the only groups the daemon ever changes.
    pub fn is_managed(&self, group: &GroupId) -> bool {
        self.managed.contains(group)
    }

    /// Each mapped group with its departments (as matched: trimmed,
    /// lower-case), in a stable order.
    pub fn departments_by_group(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (department, group) in &self.by_department {
            groups
                .entry(group.as_str().to_owned())
                .or_default()
                .push(department.clone());
        }
        for departments in groups.values_mut() {
            departments.sort();
        }
        groups
    }

    pub fn plan(&self, change: &DepartmentChange) -> Plan {
        if change.leave {
            return Plan::Leave;
        }
        let Some(to) = self.group_of(change.new_department.as_str()).cloned() else {
            return Plan::Unmapped;
        };
        match change
            .previous_department
            .as_ref()
            .and_then(|d| self.group_of(d.as_str()))
        {
            Some(from) if *from == to => Plan::AlreadyThere { group: to },
            Some(from) => Plan::Move {
                from: from.clone(),
                to,
            },
            None => Plan::Lookup { to },
        }
    }
}

/// What happens to an event whose `new_department` has no group
/// (`worker.unmapped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmapped {
    DeadLetter,
    Skip,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        let table = BTreeMap::from([
            ("Engineering".to_owned(), "grp_eng".to_owned()),
            ("Sales".to_owned(), "grp_sales".to_owned()),
            ("Field Sales".to_owned(), "grp_sales".to_owned()),
        ]);
        Mapping::new(&table).unwrap()
    }

    fn change(previous: Option<&str>, new: &str) -> DepartmentChange {
        let json = serde_json::json!({
            "event_id": "e", "zoom_user_id": "u",
            "previous_department": previous, "new_department": new,
        });
        DepartmentChange::parse(json.to_string().as_bytes()).unwrap()
    }

    fn group(s: &str) -> GroupId {
        GroupId::parse(s).unwrap()
    }

    #[test]
    fn names_match_case_insensitively_after_trimming() {
        let m = mapping();
        assert_eq!(m.group_of("  engineering "), Some(&group("grp_eng")));
        assert_eq!(m.group_of("SALES"), Some(&group("grp_sales")));
        assert_eq!(m.group_of("Marketing"), None);
    }

    #[test]
    fn plans_each_case() {
        let m = mapping();
        assert_eq!(
            m.plan(&change(Some("engineering"), "Sales")),
            Plan::Move {
                from: group("grp_eng"),
                to: group("grp_sales")
            }
        );
        assert_eq!(
            m.plan(&change(None, "Sales")),
            Plan::Lookup {
                to: group("grp_sales")
            }
        );
        assert_eq!(
            m.plan(&change(Some("Marketing"), "Sales")),
            Plan::Lookup {
                to: group("grp_sales")
            }
        );
        assert_eq!(
            m.plan(&change(Some("Sales"), "Field Sales")),
            Plan::AlreadyThere {
                group: group("grp_sales")
            }
        );
        assert_eq!(m.plan(&change(Some("Sales"), "Marketing")), Plan::Unmapped);
    }

    #[test]
    fn rejects_bad_tables() {
        assert!(
            Mapping::new(&BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let bad = BTreeMap::from([("Eng".to_owned(), "../x".to_owned())]);
        assert!(
            Mapping::new(&bad)
                .unwrap_err()
                .to_string()
                .contains("Zoom group id")
        );
        let twice = BTreeMap::from([
            ("Eng".to_owned(), "g1".to_owned()),
            ("eng ".to_owned(), "g2".to_owned()),
        ]);
        assert!(
            Mapping::new(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn only_mapped_groups_are_managed() {
        let m = mapping();
        assert!(m.is_managed(&group("grp_eng")));
        assert!(!m.is_managed(&group("grp_other")));
    }
}
