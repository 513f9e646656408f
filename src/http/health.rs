//! Liveness and readiness.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

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
struct Readiness {
    /// `ready`, `draining` or `unavailable`.
    status: &'static str,
    /// `ok` or `down` for `database`, `bus` and `presence`.
    checks: Checks,
}

#[derive(Serialize, ToSchema)]
struct Checks {
    database: &'static str,
    bus: &'static str,
    presence: &'static str,
}

/// Ready only while storage, bus and presence answer and the node is not
/// draining, so a load balancer stops sending new connections in time.
///
/// The endpoint is public (a load balancer calls it without a token), so
/// the body names the failing part only. Why it failed (a host, a Redis
/// Cluster shard) goes to the log, and per-shard failures to
/// `ochat_redis_shard_errors_total`: error text carries internal addresses.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Storage, bus and presence answer", body = Readiness),
        (status = 503, description = "Draining, or a dependency is down", body = Readiness),
    ))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (database, bus, presence) = state
        .readiness
        .check(&*state.store, &*state.bus, &*state.presence)
        .await;
    let draining = state.draining.load(Ordering::Relaxed);
    let check = |ok: bool| if ok { "ok" } else { "down" };
    let ready = database && bus && presence && !draining;
    let body = Readiness {
        status: if ready {
            "ready"
        } else if draining {
            "draining"
        } else {
            "unavailable"
        },
        checks: Checks {
            database: check(database),
            bus: check(bus),
            presence: check(presence),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
