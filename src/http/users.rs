//! `/users/*`: the caller's profile and other users' public profiles.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::store::{ProfilePatch, User};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, update_me))
        .routes(routes!(profile))
}

/// The caller's own profile (the only place an email is shown), with
/// `is_online` from presence rather than the stored flag.
fn own_profile(user: User, is_online: bool) -> User {
    User { is_online, ..user }
}

/// Another user's public profile: no email.
#[derive(Serialize, ToSchema)]
struct PublicProfile {
    id: Uuid,
    username: Option<String>,
    avatar_url: Option<String>,
    is_online: bool,
    last_seen: DateTime<Utc>,
}

/// The caller's profile (created on first sight of a valid token).
#[utoipa::path(get, path = "/users/me", tag = "users",
    responses(
        (status = 200, description = "The caller's profile", body = User),
        (status = 401, description = "`unauthorized`: no or invalid token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`: storage is down", body = ErrorBody),
    ))]
async fn me(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<User>> {
    let user = state
        .store
        .user(auth.id)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    Ok(Json(own_profile(user, state.chat.is_online(auth.id).await)))
}

/// Absent keeps a field, `null` clears it.
#[derive(Deserialize, ToSchema)]
struct PatchBody {
    /// 1 to 50 characters (not all spaces), no control or invisible
    /// formatting characters, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false, max_length = 50,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]*$")]
    username: Option<Option<String>>,
    /// An http(s) URL without spaces or control characters, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false, max_length = 2048,
        pattern = r"^https?://[^\s\x00-\x1f\x7f-\x9f]*$")]
    avatar_url: Option<Option<String>>,
}

/// Tells an absent field (keep) from an explicit `null` (clear).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

const MAX_USERNAME_CHARS: usize = 50;

impl PatchBody {
    fn parse(self) -> ApiResult<ProfilePatch> {
        let username = match self.username {
            Some(Some(name)) => {
                let raw_chars = name.chars().count();
                let name = name.trim();
                if name.is_empty()
                    || raw_chars > MAX_USERNAME_CHARS
                    || name.contains(crate::chat::text::refused_in_name)
                {
                    return Err(ApiError::invalid_field(format!(
                        "username must be 1 to {MAX_USERNAME_CHARS} characters, {}, or null",
                        crate::chat::text::NAME_RULE
                    )));
                }
                Some(Some(name.to_owned()))
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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body above MAX_BODY_BYTES", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
async fn update_me(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<Json<User>> {
    let patch = body.parse()?;
    let user = state
        .store
        .update_profile(auth.id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    Ok(Json(own_profile(user, state.chat.is_online(auth.id).await)))
}

/// Another user's public profile.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The public profile", body = PublicProfile),
        (status = 400, description = "`invalid_field`: not a UUID", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
async fn profile(
    State(state): State<AppState>,
    _auth: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<PublicProfile>> {
    let user = state
        .store
        .user(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
    Ok(Json(PublicProfile {
        id: user.id,
        username: user.username,
        avatar_url: user.avatar_url,
        is_online: state.chat.is_online(id).await,
        last_seen: user.last_seen,
    }))
}
