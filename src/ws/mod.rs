//! WebSocket: the authenticated upgrade at `/api/v1/ws`, the per-connection
//! session, and the node-local hub that fans bus events out to sessions.

mod admit;
pub mod catchup;
mod cursor;
pub mod handle;
pub mod hub;
mod join;
mod probe;
mod session;
mod writer;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use crate::auth;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
pub use hub::Hub;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Authenticates before upgrading: a bad or missing token gets a 401 and no
/// socket. Browsers must come from an allowed origin (cross-site WebSocket
/// hijacking); clients that send no `Origin` are not browsers and may connect.
async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    identified: Option<Extension<auth::Identified>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = check_origin(&headers, &state.config.allowed_origins) {
        return e.into_response();
    }
    let identity = match identified {
        Some(Extension(auth::Identified(identity))) => identity,
        None => {
            let token = auth::bearer(&headers)
                .map(str::to_owned)
                .or_else(|| query_token(&uri));
            state.auth.authenticate(token.as_deref()).await
        }
    };
    let user = match identity {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::invalid_field(format!(
                "expected a WebSocket upgrade: {}",
                rejection.body_text()
            ))
            .into_response();
        }
    };
    let joined = join::Joined::new(&state, user.id).await;
    let limits = &state.config.limits;
    ws.max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        // Small buffers: an idle connection should cost a few KiB, not the
        // 128 KiB tungstenite reserves by default.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session::run(socket, state, user, joined))
}

/// The token a WebSocket upgrade carries in its query (`?token=`).
pub fn query_token(uri: &Uri) -> Option<String> {
    Query::<TokenQuery>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.token)
}

fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    let same_site = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
    if same_site || allowed.iter().any(|a| a == "*" || a == origin) {
        return Ok(());
    }
    Err(ApiError::new(ErrorCode::Forbidden, "origin not allowed"))
}
