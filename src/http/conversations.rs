//! `/conversations/*`: groups and their members. The rules live in
//! `chat::groups`; this file only reads requests and shapes answers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::chat::Chat;
use crate::error::ApiResult;
use crate::store::{Group, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", post(create))
        .route("/conversations/{id}", get(read).patch(update))
        .route("/conversations/{id}/members", post(add_members))
        .route(
            "/conversations/{id}/members/{user_id}",
            delete(remove_member).patch(set_role),
        )
}

#[derive(Deserialize)]
struct CreateBody {
    title: String,
    #[serde(default)]
    avatar_url: Option<String>,
    member_ids: Vec<Uuid>,
}

async fn create(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    let group = chat
        .create_group(
            user.id,
            &body.title,
            body.avatar_url.as_deref(),
            &body.member_ids,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(group)))
}

async fn read(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Group>> {
    Ok(Json(chat.group(user.id, id).await?))
}

#[derive(Deserialize)]
struct UpdateBody {
    #[serde(default)]
    title: Option<String>,
    /// Absent keeps the avatar; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    avatar_url: Option<Option<String>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

async fn update(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Json<Group>> {
    let avatar = body.avatar_url.as_ref().map(Option::as_deref);
    Ok(Json(
        chat.update_group(user.id, id, body.title.as_deref(), avatar)
            .await?,
    ))
}

#[derive(Deserialize)]
struct MembersBody {
    user_ids: Vec<Uuid>,
}

async fn add_members(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<MembersBody>,
) -> ApiResult<Json<Group>> {
    Ok(Json(chat.add_members(user.id, id, &body.user_ids).await?))
}

async fn remove_member(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath((id, member)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    chat.remove_member(user.id, id, member).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RoleBody {
    role: Role,
}

async fn set_role(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath((id, member)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<RoleBody>,
) -> ApiResult<Json<Group>> {
    Ok(Json(chat.set_role(user.id, id, member, body.role).await?))
}
