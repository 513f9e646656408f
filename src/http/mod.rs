//! The REST API under `/api/v1`: one file per area, each with its `router()`.

mod conversations;
pub mod dev;
mod health;
mod messages;
pub mod openapi;
mod users;
pub mod web;

use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// The `/api/v1` REST routes and their OpenAPI document, built together:
/// each area registers its handlers with `routes!`, which adds a route and
/// its description at once, so the served document lists exactly the
/// routes this node serves (at `/api/v1/openapi.json`). `dev_secret` is the
/// development-mode signing secret, used only when [`dev::enabled`].
pub fn router(
    config: &crate::config::Config,
    dev_secret: Option<crate::config::Secret>,
) -> Router<AppState> {
    let api = OpenApiRouter::new()
        .merge(health::router())
        .merge(conversations::router())
        .merge(messages::router())
        .merge(users::router())
        .merge(dev::router(config, dev_secret))
        .routes(routes!(openapi::openapi))
        .routes(routes!(openapi::asyncapi));
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1", api)
        .split_for_parts();
    router.layer(Extension(openapi::Served::new(&doc)))
}

/// `Json` whose rejections are the API's error body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose rejections are the API's error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose rejections are the API's error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            JsonRejection::JsonDataError(_) => ErrorCode::InvalidField,
            _ => ErrorCode::InvalidJson,
        };
        ApiError::new(code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid_field(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid_field(rejection.body_text())
    }
}

/// Counts requests by route template (never the raw path, which would carry
/// ids) and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::http_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    /// A REST route registered with plain `.route()` would be served but
    /// missing from the OpenAPI document: the areas register through
    /// `routes!` only. (`web.rs` serves the browser client, not the API.)
    #[test]
    fn rest_areas_register_routes_only_with_their_description() {
        let areas = [
            ("conversations.rs", include_str!("conversations.rs")),
            ("dev.rs", include_str!("dev.rs")),
            ("health.rs", include_str!("health.rs")),
            ("messages.rs", include_str!("messages.rs")),
            ("openapi.rs", include_str!("openapi.rs")),
            ("users.rs", include_str!("users.rs")),
            ("mod.rs", include_str!("mod.rs")),
        ];
        for (file, text) in areas {
            // The code only: not comments, not this test's own needles.
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            for call in [".route(", ".route_service(", ".nest_service("] {
                assert!(!code.contains(call), "{file} registers a route with {call}");
            }
        }
    }
}
