//! Development sign-in for the browser client: a name in, a token out.
//!
//! It exists only on a node in development auth mode (no `JWT_SECRET`, no
//! JWKS), which itself only ever listens on loopback. With real auth
//! configured the token route is never registered, so nothing of it is
//! reachable.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiJson;
use crate::chat::Chat;
use crate::config::{Config, Secret};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

const DEV_USERS: Uuid = Uuid::from_u128(0x6f63_6861_7464_6576_0000_0000_0000_0001);

/// Whether this node may hand out development tokens.
pub fn enabled(config: &Config) -> bool {
    config.auth.is_development() && config.server_host.is_loopback()
}

pub fn router(config: &Config, secret: Option<Secret>) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new().routes(routes!(dev_config));
    match secret {
        Some(secret) if enabled(config) => router.merge(
            OpenApiRouter::new()
                .routes(routes!(sign_in))
                .layer(Extension(secret)),
        ),
        _ => router,
    }
}

#[derive(Serialize, ToSchema)]
struct DevConfig {
    /// Whether `POST /dev/token` exists on this node.
    dev_signin: bool,
}

/// Whether this node offers development sign-in (the browser client asks).
#[utoipa::path(get, path = "/dev/config", tag = "dev", security(()),
    responses((status = 200, description = "Development sign-in on or off", body = DevConfig)))]
async fn dev_config(State(config): State<Arc<Config>>) -> Json<DevConfig> {
    Json(DevConfig {
        dev_signin: enabled(&config),
    })
}

#[derive(Deserialize, ToSchema)]
struct SignIn {
    /// 1 to 32 letters, digits, spaces, dots, dashes or underscores.
    name: String,
}

#[derive(Serialize, ToSchema)]
struct DevToken {
    /// A 12-hour token for this name's user.
    token: String,
    user_id: Uuid,
}

/// The same name always gets the same user, so two windows can be "alice"
/// and "bob" again after a restart.
#[utoipa::path(post, path = "/dev/token", tag = "dev", security(()), request_body = SignIn,
    responses(
        (status = 200, description = "A token", body = DevToken),
        (status = 400, description = "`invalid_json` or `invalid_field`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ))]
async fn sign_in(
    State(chat): State<Arc<Chat>>,
    Extension(secret): Extension<Secret>,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Json<DevToken>> {
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
    chat.register(id, &email, name).await?;
    let token = crate::auth::mint(
        &secret,
        id,
        &email,
        std::time::Duration::from_secs(12 * 3600),
    );
    Ok(Json(DevToken { token, user_id: id }))
}
