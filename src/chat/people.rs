//! People: another user's profile as the asker may see it, and blocking.
//! Who may see whom is decided here, for REST and WebSocket alike.

use uuid::Uuid;

use super::{Chat, page_limit};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{self, Block, Page, Person, ProfilePatch, User};

/// The longest start of a name one may search for, in characters.
pub const MAX_NAME_QUERY: usize = 64;

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

impl Chat {
    /// Makes `id` a user with `email`, named `username` (the development
    /// sign-in, which has no identity provider to create them).
    pub async fn register(&self, id: Uuid, email: &str, username: &str) -> ApiResult<()> {
        self.store.upsert_user(id, email).await?;
        let patch = ProfilePatch {
            username: Some(Some(username.to_owned())),
            avatar_url: None,
        };
        self.store.update_profile(id, &patch).await?;
        Ok(())
    }

    /// The caller's own profile (the only place an email is shown), with
    /// `is_online` from presence rather than the stored flag.
    pub async fn own_profile(&self, me: Uuid) -> ApiResult<User> {
        let user = self.store.user(me).await?;
        self.as_own(me, user).await
    }

    /// Changes the caller's username or avatar; answers their own profile.
    pub async fn update_profile(&self, me: Uuid, patch: &ProfilePatch) -> ApiResult<User> {
        let user = self.store.update_profile(me, patch).await?;
        self.as_own(me, user).await
    }

    async fn as_own(&self, me: Uuid, user: Option<User>) -> ApiResult<User> {
        let user = user.ok_or_else(|| ApiError::not_found("user not found"))?;
        Ok(User {
            is_online: self.is_online(me).await,
            ..user
        })
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

    /// People whose username starts with `query` (any case; SQLite folds
    /// ASCII letters only), by name, a page at a time after the user
    /// `after`. Never `me`, nor anyone who blocked `me`.
    pub async fn search_people(
        &self,
        me: Uuid,
        query: &str,
        after: Option<Uuid>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Person>> {
        let query = query.trim();
        if query.is_empty() || query.chars().count() > MAX_NAME_QUERY {
            return Err(ApiError::invalid_field(format!(
                "q must be 1 to {MAX_NAME_QUERY} characters"
            )));
        }
        Ok(self
            .store
            .search_users(me, query, after, page_limit(limit))
            .await?)
    }

    pub async fn blocked_users(&self, me: Uuid, limit: Option<u32>) -> ApiResult<Vec<Block>> {
        Ok(self.store.blocks(me, page_limit(limit)).await?)
    }
}
