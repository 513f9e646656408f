//! `/attachments`: announce a file to upload, and fetch one. The bytes go
//! between the client and the file store through URLs that expire.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiJson, ApiPath, SignedInErrors};
use crate::auth::AuthUser;
use crate::chat::{Announced, Chat};
use crate::error::{ApiResult, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(announce))
        .routes(routes!(fetch))
}

#[derive(Deserialize, ToSchema)]
struct AnnounceBody {
    /// The file's name, as readers will see it (1 to 255 characters).
    name: String,
    /// Its size in bytes: what will be uploaded, at most
    /// `MAX_ATTACHMENT_BYTES`.
    size: i64,
    /// One of `ATTACHMENT_TYPES`.
    content_type: String,
    /// Images only: pixels, for a placeholder while it loads.
    #[serde(default)]
    width: Option<i32>,
    #[serde(default)]
    height: Option<i32>,
}

#[derive(Serialize, ToSchema)]
struct Upload {
    id: Uuid,
    /// `PUT` the bytes here, before `expires_at`. Relative URLs are the
    /// node's own (the embedded store).
    upload_url: String,
    expires_at: DateTime<Utc>,
}

/// Announces a file; the answer says where to upload it. Then send a
/// message with `"attachments": [id]`.
#[utoipa::path(post, path = "/attachments", tag = "attachments", request_body = AnnounceBody,
    responses(
        (status = 201, description = "Where to upload", body = Upload),
        (status = 400, description = "`invalid_json` or `invalid_field`: a bad name, size, type or dimension", body = ErrorBody),
        (status = 403, description = "`forbidden`: 20 attachments announced within `ATTACHMENT_URL_TTL` and not sent", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: above `MAX_ATTACHMENT_BYTES`", body = ErrorBody),
        SignedInErrors,
    ))]
async fn announce(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiJson(body): ApiJson<AnnounceBody>,
) -> ApiResult<(StatusCode, Json<Upload>)> {
    let announced = Announced {
        name: body.name,
        size: body.size,
        content_type: body.content_type,
        width: body.width,
        height: body.height,
    };
    let (id, url) = chat.announce_attachment(user.id, announced).await?;
    Ok((
        StatusCode::CREATED,
        Json(Upload {
            id,
            upload_url: url.url,
            expires_at: url.expires_at,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
struct DownloadLink {
    url: String,
    expires_at: DateTime<Utc>,
}

/// Fetches an attachment of a message the caller can read: a redirect to a
/// download URL that expires, or, with `Accept: application/json`, that
/// URL as JSON (for a page that sets an image's `src` itself).
#[utoipa::path(get, path = "/attachments/{id}", tag = "attachments",
    params(("id" = Uuid, Path, description = "The attachment")),
    responses(
        (status = 200, description = "With `Accept: application/json`: the download URL", body = DownloadLink),
        (status = 307, description = "Redirect to the download URL"),
        (status = 400, description = "`invalid_field`: not a UUID", body = ErrorBody),
        (status = 404, description = "`not_found`: no attachment the caller can read", body = ErrorBody),
        SignedInErrors,
    ))]
async fn fetch(
    State(chat): State<Arc<Chat>>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let url = chat.attachment_url(user.id, id).await?;
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    Ok(if json {
        Json(DownloadLink {
            url: url.url,
            expires_at: url.expires_at,
        })
        .into_response()
    } else {
        Redirect::temporary(&url.url).into_response()
    })
}
