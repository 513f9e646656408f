//! People: another user's profile as the asker may see it, blocking, and
//! the introduction a first direct message makes. Who may see whom is
//! decided here, for REST and WebSocket alike.

use std::time::Duration;

use uuid::Uuid;

use super::{Chat, page_limit, presence_frame};
use crate::bus::Envelope;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{self, Block};

/// The answer for a user that does not exist, and for one who blocked the
/// asker: the two must not be told apart.
pub(super) fn no_user(id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::RecipientNotFound,
        format!("no user with id {id}"),
    )
}

/// Another user's profile as the asker may see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    /// `false` unless this user has talked to the asker.
    pub is_online: bool,
    /// `null` unless this user has talked to the asker.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// Pairs remembered as introduced: past this the set starts again (a pair
/// introduced twice costs presence frames the receiving nodes drop).
const INTRODUCED_CAP: usize = 100_000;

/// How long an introduction waits for presence.
const INTRODUCE_WITHIN: Duration = Duration::from_secs(2);

impl Chat {
    /// A message makes its sender someone who has talked to its other
    /// participants (the recipient, or the members of a group within
    /// `PRESENCE_GROUP_LIMIT`), so they are told the sender's presence now,
    /// rather than at the sender's next transition (which, for a sender
    /// who stays online, may be hours away). Once per sender and
    /// conversation per node; in the background, so no ack waits on
    /// presence.
    pub(super) fn introduce(
        &self,
        sender: Uuid,
        conversation: Uuid,
        participants: impl Iterator<Item = Uuid>,
    ) {
        {
            let mut introduced = self.introduced.lock().expect("not poisoned");
            if introduced.contains(&(sender, conversation)) {
                return;
            }
            if introduced.len() >= INTRODUCED_CAP {
                introduced.clear();
            }
            introduced.insert((sender, conversation));
        }
        let listeners: Vec<Uuid> = participants.filter(|u| *u != sender).collect();
        let (presence, bus, store) = (self.presence.clone(), self.bus.clone(), self.store.clone());
        self.tasks.spawn(async move {
            // A sender who blocked a participant keeps their presence from
            // them, as `contacts` does.
            let pairs: Vec<(Uuid, Uuid)> = listeners.iter().map(|l| (sender, *l)).collect();
            let Ok(blocked) = store.blocked(&pairs).await else {
                return;
            };
            let listeners: Vec<Uuid> = listeners
                .into_iter()
                .filter(|l| !blocked.contains(&(sender, *l)))
                .collect();
            if listeners.is_empty() {
                return;
            }
            // An offline sender is what the participants assume already;
            // settling them would only mint a version for nothing (and an
            // offline frame that may overtake their next online one).
            let online = tokio::time::timeout(INTRODUCE_WITHIN, presence.is_online(sender)).await;
            if !matches!(online, Ok(Ok(true))) {
                return;
            }
            let settled = tokio::time::timeout(INTRODUCE_WITHIN, presence.settle(sender)).await;
            let Ok(Ok(t)) = settled else {
                // The sender's next transition, or a repair, tells them.
                return;
            };
            let (frame, order) = presence_frame(&t);
            let event = Envelope::new(&frame, None).ordered(order);
            let events = listeners.into_iter().map(|l| (l, event.clone())).collect();
            if let Err(e) = bus.publish(events).await {
                tracing::debug!(error = %e, "could not introduce a sender's presence");
            }
        });
    }

    /// Whether `blocker` has blocked `user`.
    pub(super) async fn blocks(&self, blocker: Uuid, user: Uuid) -> ApiResult<bool> {
        Ok(!self.store.blocked(&[(blocker, user)]).await?.is_empty())
    }

    /// Another user's public profile, as `me` may see it: a user who
    /// blocked `me` does not exist for them, and presence (`is_online`,
    /// `last_seen`) shows only once that user has talked to `me`.
    pub async fn profile(&self, me: Uuid, id: Uuid) -> ApiResult<Profile> {
        if id != me && self.blocks(id, me).await? {
            return Err(ApiError::not_found(format!("no user with id {id}")));
        }
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
        let visible = id == me
            || self
                .store
                .talked_to(id, me, self.limits.presence_group_limit)
                .await?;
        let is_online = visible && self.is_online(id).await;
        Ok(Profile {
            id: user.id,
            username: user.username,
            avatar_url: user.avatar_url,
            is_online,
            last_seen: visible.then_some(user.last_seen),
        })
    }

    /// `me` blocks `user`: they can no longer message `me`, type to `me`,
    /// add `me` to a group or see `me`'s presence or profile.
    pub async fn block(&self, me: Uuid, user: Uuid) -> ApiResult<()> {
        if user == me {
            return Err(ApiError::invalid_field("you cannot block yourself"));
        }
        if self.store.user(user).await?.is_none() {
            return Err(ApiError::not_found(format!("no user with id {user}")));
        }
        Ok(self.store.block(me, user, store::now()).await?)
    }

    pub async fn unblock(&self, me: Uuid, user: Uuid) -> ApiResult<()> {
        if self.store.user(user).await?.is_none() {
            return Err(ApiError::not_found(format!("no user with id {user}")));
        }
        Ok(self.store.unblock(me, user).await?)
    }

    pub async fn blocked_users(&self, me: Uuid, limit: Option<u32>) -> ApiResult<Vec<Block>> {
        Ok(self.store.blocks(me, page_limit(limit)).await?)
    }
}
