//! `/messages/*`: history, conversation list, search, stats, mark-read.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::chat::Chat;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/messages/conversation", get(conversation))
        .route("/messages/conversations", get(conversations))
        .route("/messages/search", get(search))
        .route("/messages/stats", get(stats))
        .route("/messages/mark-read", post(mark_read))
}

/// The seed's `with_user=` (a direct conversation), or `conversation_id=`
/// (a group, or a direct conversation by its id); exactly one.
#[derive(Deserialize)]
struct ConversationQuery {
    with_user: Option<Uuid>,
    conversation_id: Option<Uuid>,
    limit: Option<u32>,
    before: Option<Uuid>,
}

async fn conversation(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ConversationQuery>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(
        json!({"messages": page.items, "has_more": page.has_more}),
    ))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<u32>,
}

async fn conversations(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Value>> {
    let list = chat.conversations(user.id, q.limit).await?;
    Ok(Json(json!({"conversations": list})))
}

#[derive(Deserialize)]
struct SearchQuery {
    query: String,
    limit: Option<u32>,
}

async fn search(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let messages = chat.search(user.id, &q.query, q.limit).await?;
    Ok(Json(json!({"messages": messages})))
}

async fn stats(State(chat): State<Arc<Chat>>, user: AuthUser) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(chat.stats(user.id).await?).map_err(|_| ApiError::internal())?,
    ))
}

#[derive(Deserialize)]
struct MarkRead {
    message_ids: Vec<Uuid>,
}

/// More ids than this in one request is a client bug, not a use case.
const MAX_MARK_READ: usize = 1000;

async fn mark_read(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiJson(body): ApiJson<MarkRead>,
) -> ApiResult<Json<Value>> {
    if body.message_ids.len() > MAX_MARK_READ {
        return Err(ApiError::invalid_field(format!(
            "at most {MAX_MARK_READ} message_ids per request"
        )));
    }
    let updated = chat.mark_read(user.id, &body.message_ids).await?;
    Ok(Json(json!({"updated": updated})))
}
