//! Liveness and readiness.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready only while storage, bus and presence answer and the node is not
/// draining, so a load balancer stops sending new connections in time.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (database, bus, presence) =
        tokio::join!(state.store.ping(), state.bus.ping(), state.presence.ping());
    let draining = state.draining.load(Ordering::Relaxed);
    let check = |ok: bool| if ok { "ok" } else { "down" };
    let ready = database.is_ok() && bus.is_ok() && presence.is_ok() && !draining;
    let mut body = json!({
        "status": if ready { "ready" } else if draining { "draining" } else { "unavailable" },
        "checks": {
            "database": check(database.is_ok()),
            "bus": check(bus.is_ok()),
            "presence": check(presence.is_ok()),
        },
    });
    // What is down, in words an operator can act on (on a Redis Cluster,
    // which shard); backend errors name hosts, never credentials or users.
    let mut errors = serde_json::Map::new();
    if let Err(e) = &bus {
        errors.insert("bus".into(), e.to_string().into());
    }
    if let Err(e) = &presence {
        errors.insert("presence".into(), e.to_string().into());
    }
    for (what, error) in &errors {
        tracing::warn!(check = %what, error = %error.as_str().unwrap_or_default(), "not ready");
    }
    if !errors.is_empty() {
        body["errors"] = errors.into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
