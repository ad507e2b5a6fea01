//! Who is in which managed group, as Zoom listed it: the listings of every
//! managed group folded into one record per user.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::mapping::GroupId;

/// A member of a group as `GET /groups/{id}/members` lists it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct GroupMember {
    pub id: String,
    #[serde(default)]
    pub email: String,
    /// Whether this group is the user's primary group, when an answer says
    /// so. Zoom's documented answer has no such field (fixture
    /// `zoom/groups.members.list.200.json`): `None` there, so a primary
    /// group is never inferred from its absence.
    #[serde(default)]
    pub primary_group: Option<bool>,
}

/// One user found in at least one managed group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedUser {
    pub id: String,
    pub email: String,
    pub groups: BTreeSet<GroupId>,
    /// The managed group listed as the user's primary group, if any (a
    /// primary group outside the mapping is not listed).
    pub primary: Option<GroupId>,
    /// Whether the listings said anything about primary groups at all.
    /// Zoom's documented List group members answer does not, so then a
    /// primary group is unknown, not "none" (and no drift in it is seen).
    pub primary_reported: bool,
}

/// Every user of the managed groups, by id and by lower-cased email.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    users: BTreeMap<String, ManagedUser>,
    by_email: HashMap<String, String>,
}

impl Snapshot {
    /// Folds the listings of the managed groups (group → its members).
    pub fn new(members: &BTreeMap<GroupId, Vec<GroupMember>>) -> Self {
        let mut snapshot = Self::default();
        for (group, listed) in members {
            for member in listed {
                snapshot.add(group, member);
            }
        }
        snapshot
    }

    fn add(&mut self, group: &GroupId, member: &GroupMember) {
        let user = self
            .users
            .entry(member.id.clone())
            .or_insert_with(|| ManagedUser {
                id: member.id.clone(),
                email: member.email.clone(),
                groups: BTreeSet::new(),
                primary: None,
                primary_reported: false,
            });
        user.groups.insert(group.clone());
        if let Some(primary) = member.primary_group {
            user.primary_reported = true;
            if primary {
                user.primary = Some(group.clone());
            }
        }
        if !member.email.is_empty() {
            self.by_email
                .insert(member.email.to_lowercase(), member.id.clone());
        }
    }

    pub fn by_id(&self, id: &str) -> Option<&ManagedUser> {
        self.users.get(id)
    }

    pub fn by_email(&self, email: &str) -> Option<&ManagedUser> {
        self.by_email
            .get(&email.to_lowercase())
            .and_then(|id| self.users.get(id))
    }

    /// Distinct users in managed groups.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user, sorted by id.
    pub fn users(&self) -> impl Iterator<Item = &ManagedUser> {
        self.users.values()
    }
}
