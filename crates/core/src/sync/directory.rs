//! What the sync algorithm needs from Zoom, in the domain's terms.
//!
//! The algorithm ([`super::apply`]) sees Zoom only through
//! [`ZoomDirectory`]: the Zoom client crate implements it for the
//! daemon (`zoom::Session`), [`super::in_memory::InMemoryDirectory`] for the
//! unit tests. Nothing here knows HTTP, retries or rate limits: a call either
//! succeeds or ends in one [`CallFailure`] after the adapter's own retries.

use std::future::Future;

use crate::event::{Email, ZoomUserId};
use crate::mapping::GroupId;
use crate::outcome::ZoomAnswer;

/// Which user a lookup names.
#[derive(Debug, Clone, Copy)]
pub enum UserPath<'a> {
    Id(&'a ZoomUserId),
    Email(&'a Email),
}

/// What a user lookup tells the algorithm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: String,
    pub group_ids: Vec<String>,
    /// The user's primary group, when the answer reports it.
    pub primary_group_id: Option<String>,
    pub email: Option<String>,
}

/// How one call ended when it did not succeed, after the adapter's retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallFailure {
    /// 400, 404, other 4xx: the event cannot be applied as it is.
    #[error("Zoom rejected the call: {0}")]
    Rejected(ZoomAnswer),
    /// A transient failure outlasted the retry budget.
    #[error("Zoom kept failing past the retry budget: {0}")]
    Exhausted(ZoomAnswer),
    /// Zoom's rate limit holds calls back past the retry budget.
    #[error("Zoom's rate limit holds calls back past the retry budget")]
    RateLimited { until: std::time::Instant },
    /// Credentials or scopes are wrong: not the event's fault.
    #[error("Zoom refused the credentials or scopes: {0}")]
    Auth(ZoomAnswer),
    /// The event is no longer wanted: no call was started.
    #[error("stopped before the call")]
    Stopped,
}

impl CallFailure {
    /// Zoom's answer when the call was rejected with one of these HTTP statuses.
    pub(crate) fn rejected_with(&self, statuses: &[u16]) -> Option<&ZoomAnswer> {
        match self {
            Self::Rejected(answer) if answer.status.is_some_and(|s| statuses.contains(&s)) => {
                Some(answer)
            }
            _ => None,
        }
    }
}

/// One event's view of Zoom: the five calls the algorithm makes.
///
/// The futures are `Send` so the daemon can run events on any worker thread.
pub trait ZoomDirectory: Sync {
    /// `GET /users/{id or email}`.
    fn get_user(
        &self,
        user: UserPath<'_>,
    ) -> impl Future<Output = Result<DirectoryUser, CallFailure>> + Send;
    /// `PATCH /groups/{from}/members/{user}` with `action: move`.
    fn move_member(
        &self,
        from: &GroupId,
        user: &ZoomUserId,
        to: &GroupId,
    ) -> impl Future<Output = Result<(), CallFailure>> + Send;
    /// `POST /groups/{group}/members`.
    fn add_member(
        &self,
        group: &GroupId,
        user: &ZoomUserId,
    ) -> impl Future<Output = Result<(), CallFailure>> + Send;
    /// `DELETE /groups/{group}/members/{user}`.
    fn remove_member(
        &self,
        group: &GroupId,
        user: &ZoomUserId,
    ) -> impl Future<Output = Result<(), CallFailure>> + Send;
    /// `PATCH /groups/{group}/members/{user}` with `action: set_primary`.
    fn set_primary(
        &self,
        group: &GroupId,
        user: &ZoomUserId,
    ) -> impl Future<Output = Result<(), CallFailure>> + Send;
}
