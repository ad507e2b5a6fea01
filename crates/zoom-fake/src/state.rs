//! The account's groups and users, and the operations Zoom's group-member
//! APIs perform on them. Every operation checks what Zoom checks, in Zoom's
//! order (the group, then the user, then membership), and returns a typed
//! [`Rejection`] that the routes turn into Zoom's status, code and message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::seed::FakeConfig;

/// Why Zoom refuses a call, with its error code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Rejection {
    /// Zoom's documented text (fixture `zoom/error.4130.json`).
    #[error("A group with this {0} does not exist.")]
    GroupNotFound(String),
    #[error("User does not exist: {0}.")]
    UserNotFound(String),
    /// `PATCH` on a group the user is not in: 404, code 4131, as Zoom's
    /// reference lists for Update a group member.
    #[error("Group member does not exist.")]
    NotMember,
    /// `DELETE` of a membership that does not exist: the same (fixture
    /// `zoom/error.4131.json`).
    #[error("Group member does not exist.")]
    NotMemberToRemove,
    #[error("{0}")]
    BadRequest(String),
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::GroupNotFound(_)
            | Rejection::UserNotFound(_)
            | Rejection::NotMember
            | Rejection::NotMemberToRemove => 404,
            Rejection::BadRequest(_) => 400,
        }
    }

    pub fn code(&self) -> u32 {
        match self {
            Rejection::GroupNotFound(_) => 4130,
            Rejection::UserNotFound(_) => 1001,
            Rejection::NotMember | Rejection::NotMemberToRemove => 4131,
            Rejection::BadRequest(_) => 300,
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    members: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct User {
    email: String,
    first_name: String,
    last_name: String,
    groups: BTreeSet<String>,
    primary: Option<String>,
}

/// A user as `GET /users/{id}` shows it: fields of Zoom's documented
/// answer only (fixture `zoom/users.get.200.json`), which has no primary
/// group (the fake keeps one, shown in `/_state` only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub group_ids: Vec<String>,
}

/// A group as `GET /groups` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub id: String,
    pub name: String,
    pub total_members: usize,
}

/// A member as `GET /groups/{id}/members` lists it (with `type`, added
/// when rendered): Zoom's documented fields, no primary-group flag
/// (fixture `zoom/groups.members.list.200.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// One page of a sorted listing; `more` when items follow the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
    pub more: bool,
}

/// A group in `/_state`: member ids sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

/// A user in `/_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub id: String,
    pub email: String,
    pub groups: Vec<String>,
    pub primary_group: Option<String>,
}

/// Who `POST /groups/{id}/members` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRef {
    Id(String),
    Email(String),
}

/// Groups, users and who is in what. Membership is stored both ways (group
/// → members for paging, user → groups for lookups) and every operation
/// changes both.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    groups: BTreeMap<String, Group>,
    users: BTreeMap<String, User>,
    /// Lower-cased email → id.
    by_email: HashMap<String, String>,
}

impl Directory {
    /// The account a (validated) seed describes.
    pub fn from_seed(seed: &FakeConfig) -> Self {
        let mut dir = Directory::default();
        for g in &seed.groups {
            let group = Group {
                name: g.name.clone(),
                members: BTreeSet::new(),
            };
            dir.groups.insert(g.id.clone(), group);
        }
        for u in &seed.users {
            dir.by_email.insert(u.email.to_lowercase(), u.id.clone());
            for g in &u.groups {
                if let Some(group) = dir.groups.get_mut(g) {
                    group.members.insert(u.id.clone());
                }
            }
            let user = User {
                email: u.email.clone(),
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
                groups: u.groups.iter().cloned().collect(),
                primary: u.primary_group.clone(),
            };
            dir.users.insert(u.id.clone(), user);
        }
        dir
    }

    fn group_exists(&self, id: &str) -> Result<(), Rejection> {
        match self.groups.contains_key(id) {
            true => Ok(()),
            false => Err(Rejection::GroupNotFound(id.to_owned())),
        }
    }

    fn user_mut(&mut self, id: &str) -> Result<&mut User, Rejection> {
        self.users
            .get_mut(id)
            .ok_or_else(|| Rejection::UserNotFound(id.to_owned()))
    }

    /// `PATCH … {"action":"move"}`: from `from` to `to`. A user whose primary
    /// group was `from` has `to` as primary afterwards, as in Zoom.
    pub fn move_member(&mut self, from: &str, user: &str, to: &str) -> Result<(), Rejection> {
        self.group_exists(from)?;
        self.group_exists(to)?;
        let u = self.user_mut(user)?;
        if !u.groups.remove(from) {
            return Err(Rejection::NotMember);
        }
        u.groups.insert(to.to_owned());
        if u.primary.as_deref() == Some(from) {
            u.primary = Some(to.to_owned());
        }
        self.set_member(from, user, false);
        self.set_member(to, user, true);
        Ok(())
    }

    /// `PATCH … {"action":"set_primary"}`.
    pub fn set_primary(&mut self, group: &str, user: &str) -> Result<(), Rejection> {
        self.group_exists(group)?;
        let u = self.user_mut(user)?;
        if !u.groups.contains(group) {
            return Err(Rejection::NotMember);
        }
        u.primary = Some(group.to_owned());
        Ok(())
    }

    /// `POST /groups/{id}/members`: all or nothing; members already in the
    /// group are listed as added, as Zoom does. Returns the ids.
    pub fn add_members(
        &mut self,
        group: &str,
        refs: &[MemberRef],
    ) -> Result<Vec<String>, Rejection> {
        self.group_exists(group)?;
        let ids = refs
            .iter()
            .map(|r| match r {
                MemberRef::Id(id) if self.users.contains_key(id) => Ok(id.clone()),
                MemberRef::Email(email) => self
                    .by_email
                    .get(&email.to_lowercase())
                    .cloned()
                    .ok_or_else(|| Rejection::UserNotFound(email.clone())),
                MemberRef::Id(id) => Err(Rejection::UserNotFound(id.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        for id in &ids {
            if let Some(u) = self.users.get_mut(id) {
                u.groups.insert(group.to_owned());
            }
            self.set_member(group, id, true);
        }
        Ok(ids)
    }

    /// `DELETE /groups/{id}/members/{user}`; a removed primary group leaves
    /// the user without one.
    pub fn remove_member(&mut self, group: &str, user: &str) -> Result<(), Rejection> {
        self.group_exists(group)?;
        let u = self.user_mut(user)?;
        if !u.groups.remove(group) {
            return Err(Rejection::NotMemberToRemove);
        }
        if u.primary.as_deref() == Some(group) {
            u.primary = None;
        }
        self.set_member(group, user, false);
        Ok(())
    }

    fn set_member(&mut self, group: &str, user: &str, member: bool) {
        if let Some(g) = self.groups.get_mut(group) {
            if member {
                g.members.insert(user.to_owned());
            } else {
                g.members.remove(user);
            }
        }
    }

    /// `GET /users/{id or email}`; emails match case-insensitively.
    pub fn user(&self, lookup: &str) -> Result<UserView, Rejection> {
        let id = match self.users.contains_key(lookup) {
            true => Some(lookup),
            false => self
                .by_email
                .get(&lookup.to_lowercase())
                .map(String::as_str),
        };
        let found = id.and_then(|id| self.users.get_key_value(id));
        let (id, u) = found.ok_or_else(|| Rejection::UserNotFound(lookup.to_owned()))?;
        Ok(UserView {
            id: id.clone(),
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            group_ids: u.groups.iter().cloned().collect(),
        })
    }

    /// Groups sorted by id, after `after`.
    pub fn groups_page(&self, after: Option<&str>, size: usize) -> Page<GroupSummary> {
        let range = self
            .groups
            .range::<str, _>((bound(after), Bound::Unbounded));
        let mut items = Vec::with_capacity(size.min(self.groups.len()));
        let mut more = false;
        for (id, g) in range {
            if items.len() == size {
                more = true;
                break;
            }
            items.push(GroupSummary {
                id: id.clone(),
                name: g.name.clone(),
                total_members: g.members.len(),
            });
        }
        Page {
            items,
            total: self.groups.len(),
            more,
        }
    }

    /// A group's members sorted by id, after `after`.
    pub fn members_page(
        &self,
        group: &str,
        after: Option<&str>,
        size: usize,
    ) -> Result<Page<MemberView>, Rejection> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| Rejection::GroupNotFound(group.to_owned()))?;
        let range = g.members.range::<str, _>((bound(after), Bound::Unbounded));
        let mut items = Vec::with_capacity(size.min(g.members.len()));
        let mut more = false;
        for id in range {
            let Some(u) = self.users.get(id) else {
                continue;
            };
            if items.len() == size {
                more = true;
                break;
            }
            items.push(MemberView {
                id: id.clone(),
                email: u.email.clone(),
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
            });
        }
        Ok(Page {
            items,
            total: g.members.len(),
            more,
        })
    }

    /// Every group and user, sorted by id (`/_state`).
    pub fn snapshot(&self) -> (Vec<GroupState>, Vec<UserState>) {
        let groups = self
            .groups
            .iter()
            .map(|(id, g)| GroupState {
                id: id.clone(),
                name: g.name.clone(),
                members: g.members.iter().cloned().collect(),
            })
            .collect();
        let users = self
            .users
            .iter()
            .map(|(id, u)| UserState {
                id: id.clone(),
                email: u.email.clone(),
                groups: u.groups.iter().cloned().collect(),
                primary_group: u.primary.clone(),
            })
            .collect();
        (groups, users)
    }
}

fn bound(after: Option<&str>) -> Bound<&str> {
    after.map_or(Bound::Unbounded, Bound::Excluded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> Directory {
        let seed = FakeConfig::default()
            .group("eng", "Engineering")
            .group("sales", "Sales")
            .user("u1", "Jane@Example.com", &["eng"])
            .user("u2", "bob@example.com", &["eng", "sales"]);
        Directory::from_seed(&seed)
    }

    #[test]
    fn a_move_changes_both_sides_and_carries_the_primary_group() {
        let mut dir = directory();
        dir.move_member("eng", "u1", "sales").expect("move");
        let user = dir.user("u1").expect("user");
        assert_eq!(user.group_ids, ["sales"]);
        let (groups, users) = dir.snapshot();
        assert_eq!(users[0].primary_group.as_deref(), Some("sales"));
        assert_eq!(groups[0].members, ["u2"]);
        assert_eq!(groups[1].members, ["u1", "u2"]);
    }

    #[test]
    fn checks_come_in_zooms_order() {
        let mut dir = directory();
        let err = dir
            .move_member("nope", "ghost", "sales")
            .expect_err("group");
        assert_eq!((err.status(), err.code()), (404, 4130));
        let err = dir.move_member("eng", "u1", "nope").expect_err("target");
        assert_eq!(err, Rejection::GroupNotFound("nope".into()));
        let err = dir.move_member("eng", "ghost", "sales").expect_err("user");
        assert_eq!(
            (err.code(), err.to_string()),
            (1001, "User does not exist: ghost.".into())
        );
        let err = dir.move_member("sales", "u1", "eng").expect_err("member");
        assert_eq!((err.status(), err.code()), (404, 4131));
        let err = dir.remove_member("sales", "u1").expect_err("member");
        assert_eq!((err.status(), err.code()), (404, 4131));
    }

    #[test]
    fn adding_is_all_or_nothing_and_finds_emails() {
        let mut dir = directory();
        let refs = [
            MemberRef::Email("JANE@example.com".into()),
            MemberRef::Id("ghost".into()),
        ];
        assert!(dir.add_members("sales", &refs).is_err());
        assert_eq!(dir.user("u1").expect("u1").group_ids, ["eng"]);
        let ids = dir.add_members("sales", &refs[..1]).expect("add");
        assert_eq!(ids, ["u1"]);
        assert_eq!(
            dir.user("jane@EXAMPLE.com").expect("u1").group_ids,
            ["eng", "sales"]
        );
    }

    #[test]
    fn removing_the_primary_group_leaves_none() {
        let mut dir = directory();
        let primary = |dir: &Directory| dir.snapshot().1[1].primary_group.clone();
        dir.remove_member("eng", "u2").expect("remove");
        assert_eq!(primary(&dir), None);
        dir.set_primary("sales", "u2").expect("set primary");
        assert_eq!(primary(&dir).as_deref(), Some("sales"));
    }

    #[test]
    fn pages_follow_on_from_the_last_id() {
        let dir = directory();
        let first = dir.members_page("eng", None, 1).expect("page");
        assert_eq!(
            (first.items[0].id.as_str(), first.more, first.total),
            ("u1", true, 2)
        );
        let second = dir.members_page("eng", Some("u1"), 1).expect("page");
        assert_eq!((second.items[0].id.as_str(), second.more), ("u2", false));
    }
}
