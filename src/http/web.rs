//! The browser client at `/`: three files compiled into the binary, so the
//! one run command serves a working chat. A strict Content-Security-Policy
//! allows only this origin (and, with attachments in an object store, that
//! store, for uploads and pictures): no other request, no inline script.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");

/// The policy; `files`: the origin of the object store attachments live in.
pub fn policy(files: Option<&str>) -> String {
    let files = files.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'{files}; \
         img-src 'self' data:{files}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

pub fn router(files: Option<&str>) -> Router<AppState> {
    let policy = HeaderValue::from_str(&policy(files)).expect("an origin is a valid header");
    let serve = |content_type: &'static str, body: &'static str| {
        let policy = policy.clone();
        get(move || async move { asset(content_type, body, policy) })
    };
    Router::new()
        .route("/", serve("text/html; charset=utf-8", INDEX))
        .route("/app.js", serve("text/javascript; charset=utf-8", SCRIPT))
        .route("/style.css", serve("text/css; charset=utf-8", STYLE))
}

fn asset(content_type: &'static str, body: &'static str, policy: HeaderValue) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CONTENT_SECURITY_POLICY, policy),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}
