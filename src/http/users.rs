//! `/users/*`: the caller's profile and other users' public profiles.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::store::{ProfilePatch, User};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users/me", get(me).patch(update_me))
        .route("/users/{id}", get(profile))
}

/// The caller sees their own email; nobody else's.
fn own_profile(user: &User, is_online: bool) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "avatar_url": user.avatar_url,
        "is_online": is_online,
        "last_seen": user.last_seen,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    })
}

async fn me(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<Value>> {
    let user = state
        .store
        .user(auth.id)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    Ok(Json(own_profile(
        &user,
        state.chat.is_online(auth.id).await,
    )))
}

#[derive(Deserialize)]
struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    username: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
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
                let name = name.trim();
                if name.is_empty() || name.chars().count() > MAX_USERNAME_CHARS {
                    return Err(ApiError::invalid_field(format!(
                        "username must be 1 to {MAX_USERNAME_CHARS} characters, or null"
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

async fn update_me(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<Json<Value>> {
    let patch = body.parse()?;
    let user = state
        .store
        .update_profile(auth.id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    Ok(Json(own_profile(
        &user,
        state.chat.is_online(auth.id).await,
    )))
}

async fn profile(
    State(state): State<AppState>,
    _auth: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Value>> {
    let user = state
        .store
        .user(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
    Ok(Json(json!({
        "id": user.id,
        "username": user.username,
        "avatar_url": user.avatar_url,
        "is_online": state.chat.is_online(id).await,
        "last_seen": user.last_seen,
    })))
}
