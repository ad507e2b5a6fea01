//! The HTTP client as the sync algorithm's [`ZoomDirectory`]: one event's
//! calls, sharing that event's retry budget and audit steps ([`Attempts`]).

use super::{Attempts, Client, Failure, ZoomUser};
use zds_core::event::ZoomUserId;
use zds_core::mapping::GroupId;
use zds_core::sync::{CallFailure, DirectoryUser, UserPath, ZoomDirectory};

/// One event's calls to Zoom.
pub struct Session<'a> {
    client: &'a Client,
    attempts: &'a Attempts,
}

impl<'a> Session<'a> {
    pub fn new(client: &'a Client, attempts: &'a Attempts) -> Self {
        Self { client, attempts }
    }
}

impl From<Failure> for CallFailure {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Rejected(e) => Self::Rejected(e.answer()),
            Failure::Exhausted(e) => Self::Exhausted(e.answer()),
            Failure::RateLimited { until } => Self::RateLimited {
                until: until.into_std(),
            },
            Failure::Auth(e) => Self::Auth(e.answer()),
            Failure::Stopped => Self::Stopped,
        }
    }
}

impl From<ZoomUser> for DirectoryUser {
    fn from(user: ZoomUser) -> Self {
        Self {
            id: user.id,
            group_ids: user.group_ids,
            primary_group_id: user.primary_group_id,
            email: user.email,
        }
    }
}

impl ZoomDirectory for Session<'_> {
    async fn get_user(&self, user: UserPath<'_>) -> Result<DirectoryUser, CallFailure> {
        let found = self.client.get_user(user, self.attempts).await?;
        Ok(found.into())
    }

    async fn move_member(
        &self,
        from: &GroupId,
        user: &ZoomUserId,
        to: &GroupId,
    ) -> Result<(), CallFailure> {
        Ok((self.client)
            .move_member(from, user, to, self.attempts)
            .await?)
    }

    async fn add_member(&self, group: &GroupId, user: &ZoomUserId) -> Result<(), CallFailure> {
        Ok(self.client.add_member(group, user, self.attempts).await?)
    }

    async fn remove_member(&self, group: &GroupId, user: &ZoomUserId) -> Result<(), CallFailure> {
        Ok(self
            .client
            .remove_member(group, user, self.attempts)
            .await?)
    }

    async fn set_primary(&self, group: &GroupId, user: &ZoomUserId) -> Result<(), CallFailure> {
        Ok(self.client.set_primary(group, user, self.attempts).await?)
    }
}
