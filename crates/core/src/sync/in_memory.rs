//! A Zoom account in memory, answering as Zoom's reference documents (the
//! same codes as zoom-fake: 404 / 1001 for an unknown user, 404 / 4131 for a
//! membership that does not exist), and recording every call.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::{CallFailure, DirectoryUser, UserPath, ZoomDirectory};
use crate::event::ZoomUserId;
use crate::mapping::GroupId;
use crate::outcome::ZoomAnswer;

#[derive(Default)]
pub(crate) struct InMemoryDirectory {
    users: Mutex<BTreeMap<String, DirectoryUser>>,
    calls: Mutex<Vec<String>>,
    /// Failures handed out before the state is consulted, in call order.
    scripted: Mutex<VecDeque<(String, CallFailure)>>,
}

pub(crate) fn rejected(status: u16, code: i64) -> CallFailure {
    CallFailure::Rejected(ZoomAnswer {
        status: Some(status),
        code: Some(code),
        message: format!("code {code}"),
        message_from_zoom: true,
    })
}

impl InMemoryDirectory {
    /// A user with this id, email and groups.
    pub(crate) fn with_user(self, id: &str, email: &str, groups: &[&str]) -> Self {
        let user = DirectoryUser {
            id: id.into(),
            group_ids: groups.iter().map(|g| (*g).into()).collect(),
            primary_group_id: None,
            email: Some(email.into()),
        };
        self.users.lock().unwrap().insert(id.into(), user);
        self
    }

    /// The next call starting with `prefix` (e.g. `"PATCH"`) fails so.
    pub(crate) fn failing(self, prefix: &str, failure: CallFailure) -> Self {
        self.scripted
            .lock()
            .unwrap()
            .push_back((prefix.into(), failure));
        self
    }

    /// Every call, in order, as `METHOD path[ body]`.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The groups of a user, sorted.
    pub(crate) fn groups_of(&self, id: &str) -> Vec<String> {
        let mut groups = self.users.lock().unwrap()[id].group_ids.clone();
        groups.sort();
        groups
    }

    fn record(&self, call: String) -> Result<(), CallFailure> {
        self.calls.lock().unwrap().push(call.clone());
        let mut scripted = self.scripted.lock().unwrap();
        match scripted
            .iter()
            .position(|(p, _)| call.starts_with(p.as_str()))
        {
            Some(i) => Err(scripted.remove(i).expect("found").1),
            None => Ok(()),
        }
    }

    fn with_member<T>(
        &self,
        user: &str,
        change: impl FnOnce(&mut DirectoryUser) -> Result<T, CallFailure>,
    ) -> Result<T, CallFailure> {
        let mut users = self.users.lock().unwrap();
        let found = users.get_mut(user).ok_or_else(|| rejected(404, 1001))?;
        change(found)
    }
}

impl ZoomDirectory for InMemoryDirectory {
    async fn get_user(&self, user: UserPath<'_>) -> Result<DirectoryUser, CallFailure> {
        let segment = match user {
            UserPath::Id(id) => id.as_str().to_owned(),
            UserPath::Email(email) => email.as_str().to_owned(),
        };
        self.record(format!("GET /users/{segment}"))?;
        let users = self.users.lock().unwrap();
        users
            .values()
            .find(|u| u.id == segment || u.email.as_deref() == Some(segment.as_str()))
            .cloned()
            .ok_or_else(|| rejected(404, 1001))
    }

    async fn move_member(
        &self,
        from: &GroupId,
        user: &ZoomUserId,
        to: &GroupId,
    ) -> Result<(), CallFailure> {
        self.record(format!(
            "PATCH /groups/{from}/members/{} move {to}",
            user.as_str()
        ))?;
        self.with_member(user.as_str(), |u| {
            let i = (u.group_ids.iter())
                .position(|g| g == from.as_str())
                .ok_or_else(|| rejected(404, 4131))?;
            u.group_ids[i] = to.as_str().into();
            u.group_ids.dedup();
            Ok(())
        })
    }

    async fn add_member(&self, group: &GroupId, user: &ZoomUserId) -> Result<(), CallFailure> {
        self.record(format!("POST /groups/{group}/members {}", user.as_str()))?;
        self.with_member(user.as_str(), |u| {
            if !u.group_ids.iter().any(|g| g == group.as_str()) {
                u.group_ids.push(group.as_str().into());
            }
            Ok(())
        })
    }

    async fn remove_member(&self, group: &GroupId, user: &ZoomUserId) -> Result<(), CallFailure> {
        self.record(format!("DELETE /groups/{group}/members/{}", user.as_str()))?;
        self.with_member(user.as_str(), |u| {
            let before = u.group_ids.len();
            u.group_ids.retain(|g| g != group.as_str());
            if u.group_ids.len() == before {
                return Err(rejected(404, 4131));
            }
            Ok(())
        })
    }

    async fn set_primary(&self, group: &GroupId, user: &ZoomUserId) -> Result<(), CallFailure> {
        self.record(format!(
            "PATCH /groups/{group}/members/{} set_primary",
            user.as_str()
        ))?;
        self.with_member(user.as_str(), |u| {
            u.primary_group_id = Some(group.as_str().into());
            Ok(())
        })
    }
}
