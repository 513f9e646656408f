//! `/users/*`: the caller's profile and other users' public profiles.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiQuery, SignedInErrors};
use crate::auth::AuthUser;
use crate::chat::{Chat, Profile};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use crate::store::{Block, Person, ProfilePatch, User};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, update_me))
        .routes(routes!(profile))
        .routes(routes!(block, unblock))
        .routes(routes!(blocks))
        .routes(routes!(search))
}

/// The caller's profile (created on first sight of a valid token).
#[utoipa::path(get, path = "/users/me", tag = "users",
    responses(
        (status = 200, description = "The caller's profile", body = User),
        (status = 404, description = "`not_found`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn me(State(chat): State<Arc<Chat>>, auth: AuthUser) -> ApiResult<Json<User>> {
    Ok(Json(chat.own_profile(auth.id).await?))
}

/// Absent keeps a field, `null` clears it.
#[derive(Deserialize, ToSchema)]
struct PatchBody {
    /// 1 to 50 characters (not all spaces), no control or invisible
    /// formatting characters, or null.
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<String>, required = false, max_length = 50,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]*$")]
    username: Option<Option<String>>,
    /// An http(s) URL without spaces or control characters, or null.
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<String>, required = false, max_length = 2048,
        pattern = r"^https?://[^\s\x00-\x1f\x7f-\x9f]*$")]
    avatar_url: Option<Option<String>>,
}

const MAX_USERNAME_CHARS: usize = 50;

impl PatchBody {
    fn parse(self) -> ApiResult<ProfilePatch> {
        let username = match self.username {
            Some(Some(name)) => {
                let name = crate::chat::text::name(&name, MAX_USERNAME_CHARS).map_err(|_| {
                    ApiError::invalid_field(format!(
                        "username must be 1 to {MAX_USERNAME_CHARS} characters, {}, or null",
                        crate::chat::text::NAME_RULE
                    ))
                })?;
                Some(Some(name))
            }
            other => other,
        };
        let avatar_url = match self.avatar_url {
            Some(Some(url)) => Some(Some(crate::chat::avatar_url(&url)?)),
            other => other,
        };
        Ok(ProfilePatch {
            username,
            avatar_url,
        })
    }
}

/// Changes the caller's username or avatar.
#[utoipa::path(patch, path = "/users/me", tag = "users", request_body = PatchBody,
    responses(
        (status = 200, description = "The updated profile", body = User),
        (status = 400, description = "`invalid_json` or `invalid_field`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body above MAX_BODY_BYTES", body = ErrorBody),
        SignedInErrors,
    ))]
async fn update_me(
    State(chat): State<Arc<Chat>>,
    auth: AuthUser,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<Json<User>> {
    Ok(Json(chat.update_profile(auth.id, &body.parse()?).await?))
}

/// Another user's public profile. `is_online` and `last_seen` show only
/// once that user has talked to the caller (sent them a message, or posted
/// in a small group they share); a user who blocked the caller is not
/// found.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The public profile", body = Profile),
        (status = 400, description = "`invalid_field`: not a UUID", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        SignedInErrors,
    ))]
async fn profile(
    State(chat): State<Arc<Chat>>,
    auth: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(chat.profile(auth.id, id).await?))
}

/// Whether the caller now blocks the user.
#[derive(Serialize, ToSchema)]
struct Blocking {
    user_id: Uuid,
    blocked: bool,
}

/// Blocks a user: they can no longer message the caller, type to them, add
/// them to a group or see their presence or profile, and get the answers a
/// user that does not exist gets. Blocking twice changes nothing.
#[utoipa::path(post, path = "/users/{id}/block", tag = "users",
    params(("id" = Uuid, Path, description = "The user to block")),
    responses(
        (status = 200, description = "Blocked", body = Blocking),
        (status = 400, description = "`invalid_field`: not a UUID, or yourself", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        SignedInErrors,
    ))]
async fn block(
    State(chat): State<Arc<Chat>>,
    auth: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Blocking>> {
    chat.block(auth.id, id).await?;
    Ok(Json(Blocking {
        user_id: id,
        blocked: true,
    }))
}

/// Unblocks a user (one not blocked: no change).
#[utoipa::path(delete, path = "/users/{id}/block", tag = "users",
    params(("id" = Uuid, Path, description = "The user to unblock")),
    responses(
        (status = 200, description = "Not blocked", body = Blocking),
        (status = 400, description = "`invalid_field`: not a UUID", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        SignedInErrors,
    ))]
async fn unblock(
    State(chat): State<Arc<Chat>>,
    auth: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Blocking>> {
    chat.unblock(auth.id, id).await?;
    Ok(Json(Blocking {
        user_id: id,
        blocked: false,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BlocksQuery {
    /// How many, default 50; clamped to 1 to 100.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct BlockList {
    blocks: Vec<Block>,
}

/// The users the caller has blocked, most recent first.
#[utoipa::path(get, path = "/users/me/blocks", tag = "users", params(BlocksQuery),
    responses(
        (status = 200, description = "Blocked users", body = BlockList),
        (status = 400, description = "`invalid_field`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn blocks(
    State(chat): State<Arc<Chat>>,
    auth: AuthUser,
    ApiQuery(q): ApiQuery<BlocksQuery>,
) -> ApiResult<Json<BlockList>> {
    Ok(Json(BlockList {
        blocks: chat.blocked_users(auth.id, q.limit).await?,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// The start of a username, 1 to 64 characters, any case.
    q: Option<String>,
    /// The `id` of the last user of the previous page.
    after: Option<Uuid>,
    /// How many, default 50; clamped to 1 to 100.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct People {
    users: Vec<Person>,
    /// More match: ask again with `after` set to the last user's `id`.
    has_more: bool,
}

/// Finds people by the start of their username, any case, ordered by name:
/// whom to start a chat with. The caller and anyone who blocked the caller
/// are never listed. Searches have a budget of their own per user
/// (`USER_SEARCH_PER_SEC`, `USER_SEARCH_BURST`), on top of the request
/// budget, so the directory cannot be listed quickly.
#[utoipa::path(get, path = "/users/search", tag = "users", params(SearchQuery),
    responses(
        (status = 200, description = "A page of people", body = People),
        (status = 400, description = "`invalid_field`: no `q`, or one longer than 64 characters", body = ErrorBody),
        SignedInErrors,
    ))]
async fn search(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<People>> {
    if let Err(over) = state.budgets.charge_search(auth.id) {
        return Err(super::refused(over, "search").await);
    }
    let page = state
        .chat
        .search_people(auth.id, q.q.as_deref().unwrap_or(""), q.after, q.limit)
        .await?;
    Ok(Json(People {
        users: page.items,
        has_more: page.has_more,
    }))
}
