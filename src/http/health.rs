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
    let body = json!({
        "status": if ready { "ready" } else if draining { "draining" } else { "unavailable" },
        "checks": {
            "database": check(database.is_ok()),
            "bus": check(bus.is_ok()),
            "presence": check(presence.is_ok()),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
