//! Development sign-in for the browser client: a name in, a token out.
//!
//! It exists only on a node in development auth mode (no `JWT_SECRET`, no
//! JWKS), which itself only ever listens on loopback. With real auth
//! configured the token route is never registered, so nothing of it is
//! reachable.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiJson;
use crate::app::AppState;
use crate::config::{Config, Secret};
use crate::error::{ApiError, ApiResult};
use crate::store::ProfilePatch;

const DEV_USERS: Uuid = Uuid::from_u128(0x6f63_6861_7464_6576_0000_0000_0000_0001);

/// Whether this node may hand out development tokens.
pub fn enabled(config: &Config) -> bool {
    config.auth.is_development() && config.server_host.is_loopback()
}

pub fn router(config: &Config, secret: Option<Secret>) -> Router<AppState> {
    let on = enabled(config);
    let router = Router::new().route(
        "/dev/config",
        get(move || async move { Json(json!({"dev_signin": on})) }),
    );
    match secret {
        Some(secret) if on => router.route(
            "/dev/token",
            post(move |state: State<AppState>, body: ApiJson<SignIn>| {
                sign_in(state, body, secret.clone())
            }),
        ),
        _ => router,
    }
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
}

/// The same name always gets the same user, so two windows can be "alice"
/// and "bob" again after a restart.
async fn sign_in(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignIn>,
    secret: Secret,
) -> ApiResult<Json<Value>> {
    let name = body.name.trim();
    let valid = !name.is_empty()
        && name.chars().count() <= 32
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
    if !valid {
        return Err(ApiError::invalid_field(
            "name must be 1 to 32 letters, digits, spaces, dots, dashes or underscores",
        ));
    }
    let id = Uuid::new_v5(&DEV_USERS, name.to_lowercase().as_bytes());
    let email = format!("{}@dev.invalid", id.simple());
    state.store.upsert_user(id, &email).await?;
    let patch = ProfilePatch {
        username: Some(Some(name.to_owned())),
        avatar_url: None,
    };
    state.store.update_profile(id, &patch).await?;
    let token = crate::auth::mint(
        &secret,
        id,
        &email,
        std::time::Duration::from_secs(12 * 3600),
    );
    Ok(Json(json!({"token": token, "user_id": id})))
}
