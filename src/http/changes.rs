//! `/messages/{id}`: edit, delete for everyone, react and unreact. The
//! WebSocket's `edit`, `delete`, `react` and `unreact` frames call the same
//! `Chat::change`.

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
use crate::store::{ChangeKind, Message};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(edit, delete))
        .routes(routes!(react, unreact))
}

#[derive(Deserialize, ToSchema)]
struct EditBody {
    /// The new text: 1 to `MAX_MESSAGE_CHARS` characters once trimmed.
    content: String,
    /// An idempotency key (1 to 64 characters): repeating it answers the
    /// edit already made.
    #[serde(default)]
    client_id: Option<String>,
}

/// Edits one of the caller's messages; everyone who can read it gets
/// `message_updated`.
#[utoipa::path(patch, path = "/messages/{id}", tag = "messages",
    params(("id" = Uuid, Path, description = "The message")), request_body = EditBody,
    responses(
        (status = 200, description = "The message as edited", body = Message),
        (status = 400, description = "`invalid_json`, `invalid_field`, `content_empty` or `content_too_long`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the sender, or the edit window has passed", body = ErrorBody),
        (status = 404, description = "`not_found`: no message the caller can read", body = ErrorBody),
        (status = 409, description = "`message_deleted`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn edit(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<EditBody>,
) -> ApiResult<Json<Message>> {
    let kind = ChangeKind::Edit {
        content: body.content,
    };
    let changed = chat
        .change(user.id, None, id, kind, body.client_id.as_deref())
        .await?;
    Ok(Json(changed.message().clone()))
}

/// Deletes a message for everyone (its sender, or a group's owner or
/// admins): its content leaves storage, a tombstone keeps its id, sender
/// and times. Deleting it again changes nothing.
#[utoipa::path(delete, path = "/messages/{id}", tag = "messages",
    params(("id" = Uuid, Path, description = "The message")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_field`: not a UUID", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the sender nor a group admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no message the caller can read", body = ErrorBody),
        SignedInErrors,
    ))]
async fn delete(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    chat.change(user.id, None, id, ChangeKind::Delete, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reacts to a message the caller can read with one emoji (URL-encoded),
/// or a `:shortcode:`; reacting again with the same one changes nothing.
#[utoipa::path(put, path = "/messages/{id}/reactions/{emoji}", tag = "messages",
    params(("id" = Uuid, Path, description = "The message"), ("emoji" = String, Path, description = "One emoji, or a :shortcode: of at most 32 characters")),
    responses(
        (status = 204, description = "The caller's reaction is there"),
        (status = 400, description = "`invalid_field`: not a UUID, or not an emoji", body = ErrorBody),
        (status = 404, description = "`not_found`: no message the caller can read", body = ErrorBody),
        (status = 409, description = "`message_deleted` or `too_many_reactions`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn react(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath((id, emoji)): ApiPath<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    chat.change(user.id, None, id, ChangeKind::React { emoji }, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes the caller's reaction back; if there is none, nothing changes.
#[utoipa::path(delete, path = "/messages/{id}/reactions/{emoji}", tag = "messages",
    params(("id" = Uuid, Path, description = "The message"), ("emoji" = String, Path, description = "One emoji, or a :shortcode: of at most 32 characters")),
    responses(
        (status = 204, description = "The caller's reaction is gone"),
        (status = 400, description = "`invalid_field`: not a UUID, or not an emoji", body = ErrorBody),
        (status = 404, description = "`not_found`: no message the caller can read", body = ErrorBody),
        SignedInErrors,
    ))]
async fn unreact(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath((id, emoji)): ApiPath<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    chat.change(user.id, None, id, ChangeKind::Unreact { emoji }, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
