//! `/conversations/*`: groups and their members. The rules live in
//! `chat::groups`; this file only reads requests and shapes answers.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiJson, ApiPath, SignedInErrors};
use crate::auth::AuthUser;
use crate::chat::Chat;
use crate::error::{ApiResult, ErrorBody};
use crate::state::AppState;
use crate::store::{Group, Role};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(read, update))
        .routes(routes!(add_members))
        .routes(routes!(remove_member, set_role))
}

#[derive(Deserialize, ToSchema)]
struct CreateBody {
    /// 1 to 100 characters (not all spaces), no control or invisible
    /// formatting characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]*$"
    )]
    title: String,
    /// An http(s) URL without spaces or control characters.
    #[serde(default)]
    #[schema(max_length = 2048, pattern = r"^https?://[^\s\x00-\x1f\x7f-\x9f]*$")]
    avatar_url: Option<String>,
    /// The other members (the caller becomes the owner), each once.
    #[schema(min_items = 1)]
    member_ids: Vec<Uuid>,
}

/// Creates a group; every member's sessions get `conversation_created`.
#[utoipa::path(post, path = "/conversations", tag = "conversations", request_body = CreateBody,
    responses(
        (status = 201, description = "The new group", body = Group),
        (status = 400, description = "`invalid_json` or `invalid_field`", body = ErrorBody),
        (status = 404, description = "`recipient_not_found`: a member is not a known user", body = ErrorBody),
        (status = 409, description = "`too_many_members`: above MAX_GROUP_MEMBERS", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        SignedInErrors,
    ))]
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

/// A group (or direct conversation) with its members; members only.
#[utoipa::path(get, path = "/conversations/{id}", tag = "conversations",
    params(("id" = Uuid, Path, description = "The conversation")),
    responses(
        (status = 200, description = "The conversation", body = Group),
        (status = 400, description = "`invalid_field`: not a UUID, or a bad value", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member, or not allowed to", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or member", body = ErrorBody),
        SignedInErrors,
    ))]
async fn read(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Group>> {
    Ok(Json(chat.group(user.id, id).await?))
}

#[derive(Deserialize, ToSchema)]
struct UpdateBody {
    /// 1 to 100 characters (not all spaces), no control or invisible
    /// formatting characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]*$"
    )]
    title: Option<String>,
    /// Absent keeps the avatar; `null` clears it; else an http(s) URL
    /// without spaces or control characters.
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<String>, required = false, max_length = 2048,
        pattern = r"^https?://[^\s\x00-\x1f\x7f-\x9f]*$")]
    avatar_url: Option<Option<String>>,
}

/// Changes a group's title or avatar (admins and owners).
#[utoipa::path(patch, path = "/conversations/{id}", tag = "conversations",
    params(("id" = Uuid, Path, description = "The conversation")), request_body = UpdateBody,
    responses(
        (status = 200, description = "The updated group", body = Group),
        (status = 400, description = "`invalid_field`: not a UUID, or a bad value", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member, or not allowed to", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or member", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        SignedInErrors,
    ))]
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

#[derive(Deserialize, ToSchema)]
struct MembersBody {
    /// Each once.
    #[schema(min_items = 1)]
    user_ids: Vec<Uuid>,
}

/// Adds members (admins and owners); every member gets `member_added`.
#[utoipa::path(post, path = "/conversations/{id}/members", tag = "conversations",
    params(("id" = Uuid, Path, description = "The conversation")), request_body = MembersBody,
    responses(
        (status = 200, description = "The group with its new members", body = Group),
        (status = 400, description = "`invalid_field`: not a UUID, or a bad value", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member, or not allowed to", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or member", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 409, description = "`too_many_members`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn add_members(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<MembersBody>,
) -> ApiResult<Json<Group>> {
    Ok(Json(chat.add_members(user.id, id, &body.user_ids).await?))
}

/// Removes a member, or leaves when it is the caller.
#[utoipa::path(delete, path = "/conversations/{id}/members/{user_id}", tag = "conversations",
    params(("id" = Uuid, Path, description = "The conversation"), ("user_id" = Uuid, Path, description = "The member")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`invalid_field`: not a UUID, or a bad value", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member, or not allowed to", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or member", body = ErrorBody),
        SignedInErrors,
    ))]
async fn remove_member(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath((id, member)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    chat.remove_member(user.id, id, member).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
struct RoleBody {
    role: Role,
}

/// Sets a member's role (owners).
#[utoipa::path(patch, path = "/conversations/{id}/members/{user_id}", tag = "conversations",
    params(("id" = Uuid, Path, description = "The conversation"), ("user_id" = Uuid, Path, description = "The member")), request_body = RoleBody,
    responses(
        (status = 200, description = "The group", body = Group),
        (status = 400, description = "`invalid_field`: not a UUID, or a bad value", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member, or not allowed to", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or member", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn set_role(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath((id, member)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<RoleBody>,
) -> ApiResult<Json<Group>> {
    Ok(Json(chat.set_role(user.id, id, member, body.role).await?))
}
