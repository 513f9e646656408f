//! Liveness and readiness.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(livez))
        .routes(routes!(ready))
}

#[derive(Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// The seed's health check: the process answers.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, description = "The process is alive", body = Alive)))]
async fn health() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Liveness for an orchestrator: the process answers (never checks
/// dependencies, so a Redis outage does not restart every node).
#[utoipa::path(get, path = "/livez", tag = "health", security(()),
    responses((status = 200, description = "The process is alive", body = Alive)))]
async fn livez() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Readiness {
    /// `ready`, `draining` or `unavailable`.
    status: String,
    /// `ok` or `down` for `database`, `bus` and `presence`.
    checks: std::collections::BTreeMap<String, String>,
    /// What is down, in words an operator can act on; absent when ready.
    #[schema(required = false)]
    errors: Option<std::collections::BTreeMap<String, String>>,
}

/// Ready only while storage, bus and presence answer and the node is not
/// draining, so a load balancer stops sending new connections in time.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Storage, bus and presence answer", body = Readiness),
        (status = 503, description = "Draining, or a dependency is down", body = Readiness),
    ))]
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
