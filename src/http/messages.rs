//! `/messages/*`: history, conversation list, search, stats, mark-read.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::openapi::ConversationEntry;
use super::{ApiJson, ApiQuery, SignedInErrors};
use crate::auth::AuthUser;
use crate::chat::Chat;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use crate::store::{ConversationSummary, Message, Stats};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(conversation))
        .routes(routes!(conversations))
        .routes(routes!(search))
        .routes(routes!(stats))
        .routes(routes!(mark_read))
}

/// The seed's `with_user=` (a direct conversation), or `conversation_id=`
/// (a group, or a direct conversation by its id); exactly one.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConversationQuery {
    /// The other person of a direct conversation.
    with_user: Option<Uuid>,
    /// A group, or a direct conversation by its id.
    conversation_id: Option<Uuid>,
    /// Page size, default 50; clamped to 1 to 100.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
    /// Messages older than this message id.
    before: Option<Uuid>,
}

/// A page of history, newest first.
#[derive(Serialize, ToSchema)]
struct MessagePage {
    messages: Vec<Message>,
    has_more: bool,
}

/// A conversation's history, newest first.
#[utoipa::path(get, path = "/messages/conversation", tag = "messages", params(ConversationQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "`invalid_field`: neither or both of `with_user` and `conversation_id`, or a bad value", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user, conversation or `before` message", body = ErrorBody),
        SignedInErrors,
    ))]
async fn conversation(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ConversationQuery>,
) -> ApiResult<Json<MessagePage>> {
    let page = match (q.with_user, q.conversation_id) {
        (Some(peer), None) => chat.conversation(user.id, peer, q.before, q.limit).await?,
        (None, Some(id)) => chat.history(user.id, id, q.before, q.limit).await?,
        (None, None) => {
            return Err(ApiError::invalid_field(
                "give `with_user` or `conversation_id`",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "give either `with_user` or `conversation_id`, not both",
            ));
        }
    };
    Ok(Json(MessagePage {
        messages: page.items,
        has_more: page.has_more,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LimitQuery {
    /// How many, default 50; clamped to 1 to 100.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct ConversationList {
    #[schema(value_type = Vec<ConversationEntry>)]
    conversations: Vec<ConversationSummary>,
}

/// The caller's conversations, most recent first.
#[utoipa::path(get, path = "/messages/conversations", tag = "messages", params(LimitQuery),
    responses(
        (status = 200, description = "Direct conversations and groups", body = ConversationList),
        (status = 400, description = "`invalid_field`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn conversations(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<ConversationList>> {
    let conversations = chat.conversations(user.id, q.limit).await?;
    Ok(Json(ConversationList { conversations }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// Words to find (all of them), in messages the caller sent or received.
    #[param(min_length = 1)]
    query: String,
    /// How many, default 50; clamped to 1 to 100.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct SearchResults {
    messages: Vec<Message>,
}

/// Full-text search over the caller's messages, newest first.
#[utoipa::path(get, path = "/messages/search", tag = "messages", params(SearchQuery),
    responses(
        (status = 200, description = "Matching messages", body = SearchResults),
        (status = 400, description = "`invalid_field`: no words to search for, or a bad value", body = ErrorBody),
        SignedInErrors,
    ))]
async fn search(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<SearchResults>> {
    let messages = chat.search(user.id, &q.query, q.limit).await?;
    Ok(Json(SearchResults { messages }))
}

/// The caller's message counts.
#[utoipa::path(get, path = "/messages/stats", tag = "messages",
    responses(
        (status = 200, description = "Counts", body = Stats),
        SignedInErrors,
    ))]
async fn stats(State(chat): State<Arc<Chat>>, user: AuthUser) -> ApiResult<Json<Stats>> {
    Ok(Json(chat.stats(user.id).await?))
}

#[derive(Deserialize, ToSchema)]
struct MarkRead {
    /// Messages sent to the caller; at most 1000.
    message_ids: Vec<Uuid>,
}

#[derive(Serialize, ToSchema)]
struct Updated {
    /// How many of them turned read now (already read ones do not count).
    updated: usize,
}

/// More ids than this in one request is a client bug, not a use case.
const MAX_MARK_READ: usize = 1000;

/// Marks messages sent to the caller as read; their senders get receipts.
#[utoipa::path(post, path = "/messages/mark-read", tag = "messages", request_body = MarkRead,
    responses(
        (status = 200, description = "How many turned read", body = Updated),
        (status = 400, description = "`invalid_json` or `invalid_field`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn mark_read(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiJson(body): ApiJson<MarkRead>,
) -> ApiResult<Json<Updated>> {
    if body.message_ids.len() > MAX_MARK_READ {
        return Err(ApiError::invalid_field(format!(
            "at most {MAX_MARK_READ} message_ids per request"
        )));
    }
    let updated = chat.mark_read(user.id, &body.message_ids).await?;
    Ok(Json(Updated { updated }))
}
