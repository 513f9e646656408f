//! The REST API under `/api/v1`: one file per area, each with its `router()`.

mod attachments;
mod changes;
mod conversations;
pub mod dev;
mod health;
mod messages;
pub mod openapi;
pub mod readiness;
mod users;
pub mod web;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

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
        .merge(changes::router())
        .merge(attachments::router())
        .merge(users::router())
        .merge(dev::router(config, dev_secret))
        .routes(routes!(openapi::openapi))
        .routes(routes!(openapi::asyncapi));
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1", api)
        .split_for_parts();
    utoipa::Modify::modify(&openapi::Budgeted, &mut doc);
    router.layer(Extension(openapi::Served::new(&doc)))
}

/// A JSON body whose rejections are the API's error body. Only a JSON
/// object is taken: serde would otherwise read a struct from an array, by
/// position, which no client means and the API document does not allow.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        if !json {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let body = bytes::Bytes::from_request(request, state).await?;
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|&b| b != b'{') {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "the body must be a JSON object",
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&body)?;
        Ok(Self(value))
    }
}

/// `Query` whose rejections are the API's error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose rejections are the API's error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `application/json`, or a `+json` type, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if body_timed_out(&rejection) {
            return body_timeout();
        }
        let code = match &rejection {
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            JsonRejection::JsonDataError(_) => ErrorCode::InvalidField,
            _ => ErrorCode::InvalidJson,
        };
        ApiError::new(code, rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if body_timed_out(&rejection) {
            return body_timeout();
        }
        let code = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::InvalidJson,
        };
        ApiError::new(code, rejection.body_text())
    }
}

fn body_timeout() -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time",
    )
}

/// Whether reading the body failed because `REQUEST_BODY_TIMEOUT` passed.
fn body_timed_out(rejection: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
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

/// What every signed-in route may answer besides its own outcomes,
/// declared once for each route's document (which alone names the
/// variants: the answers themselves are `ApiError`s).
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub(crate) enum SignedInErrors {
    #[response(status = 401, description = "`unauthorized`: no or invalid token")]
    Unauthorized(crate::error::ErrorBody),
    #[response(
        status = 429,
        description = "`rate_limited`: the caller's budget is spent; retry after `Retry-After` seconds",
        headers(("Retry-After" = u64, description = "Seconds until the budget has room"))
    )]
    RateLimited(crate::error::ErrorBody),
    #[response(status = 500, description = "`internal`")]
    Internal(crate::error::ErrorBody),
    #[response(status = 503, description = "`unavailable`: storage is down")]
    Unavailable(crate::error::ErrorBody),
}

/// For a PATCH field: tells an absent field (keep) from an explicit `null`
/// (clear).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    <Option<String> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Paths a load balancer or orchestrator probes: never charged, so a flood
/// through the balancer's address cannot make it take a healthy node out.
const PROBES: [&str; 3] = ["/api/v1/health", "/api/v1/livez", "/api/v1/readyz"];

/// The longest a refused request is held before its 429.
const MAX_REFUSAL_HOLD: Duration = Duration::from_secs(1);

/// A request over a budget of `kind`: counted, and answered when the
/// budget would have admitted it, not at once, so a client looping on its
/// refusals learns of them no faster than its budget refills, instead of
/// spending the node (and the machine) on refusals as fast as it can ask.
pub(crate) async fn refused(over: crate::budget::OverBudget, kind: &'static str) -> ApiError {
    crate::metrics::rate_limited(kind);
    tokio::time::sleep(over.0.min(MAX_REFUSAL_HOLD)).await;
    ApiError::rate_limited(over)
}

/// Admission: finds who is asking (the token is verified once, here, and
/// handed to the handler) and charges the request to their budget, or to
/// the address it came from when it carries no valid token. Over budget
/// is 429 with `Retry-After`, sent once the budget has room again (at most
/// `MAX_REFUSAL_HOLD` later).
pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if PROBES.contains(&path) {
        return next.run(request).await;
    }
    let token = crate::auth::bearer(request.headers())
        .map(str::to_owned)
        .or_else(|| match path {
            // Browsers cannot set headers on a WebSocket: the upgrade may
            // carry its token in the query.
            "/api/v1/ws" => crate::ws::query_token(request.uri()),
            _ => None,
        });
    let identity = match token {
        Some(token) => Some(state.auth.authenticate(Some(&token)).await),
        None => None,
    };
    let charged = match &identity {
        Some(Ok(user)) => state
            .budgets
            .charge_user(user.id)
            .map_err(|over| (over, "rest")),
        _ => {
            let address = client_address(&request, state.config.limits.trust_forwarded_for);
            state
                .budgets
                .charge_address(address)
                .map_err(|over| (over, "anonymous"))
        }
    };
    if let Err((over, kind)) = charged {
        return refused(over, kind).await.into_response();
    }
    if let Some(identity) = identity {
        request
            .extensions_mut()
            .insert(crate::auth::Identified(identity));
    }
    next.run(request).await
}

/// The address a request came from: the peer, or behind a trusted load
/// balancer the last `X-Forwarded-For` entry (the one it appended; the
/// entries before it are whatever the client sent).
fn client_address(request: &Request, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| {
            request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
        })
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|list| list.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok());
    forwarded.unwrap_or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(peer)| peer.ip())
    })
}

/// Counts requests by route template, method and status. Every label comes
/// from a closed set: a raw path would carry ids, and a raw method is
/// whatever an anonymous peer types (each new value would be a series kept
/// for the life of the process).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::http_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// The standard methods by name; anything else is `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        use axum::http::Method;
        assert_eq!(super::method_label(&Method::PATCH), "PATCH");
        let made_up = Method::from_bytes(b"XQ7ZRANDOM").unwrap();
        assert_eq!(super::method_label(&made_up), "other");
    }

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
            ("changes.rs", include_str!("changes.rs")),
            ("attachments.rs", include_str!("attachments.rs")),
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
