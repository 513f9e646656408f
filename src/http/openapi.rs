//! The REST API described as OpenAPI 3.1, built from the handlers'
//! `#[utoipa::path]` annotations as the router registers them (one
//! `routes!` call adds a route and its description together), and served at
//! `/api/v1/openapi.json`.

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Serialize;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::error::ErrorBody;
use crate::store::{ConversationKind, Message};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ochat REST API",
        description = "History, conversations, groups, profiles and health of an ochat node. \
            Live messaging is the WebSocket at `/api/v1/ws`, described in `/api/v1/asyncapi.json`. \
            Every error is `{\"error\":{\"code\",\"message\"}}` with the status its code implies.",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// `Authorization: Bearer <jwt>` on every operation that does not opt out.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Answers every operation may give beside its own: 429 when the caller's
/// budget is spent (every request is charged), and 408 when a request body
/// does not arrive within `REQUEST_BODY_TIMEOUT`. Added here once rather
/// than to each handler's list, once the routes have added their
/// operations (a modifier on [`ApiDoc`] would run before they exist).
pub struct Budgeted;

impl Modify for Budgeted {
    fn modify(&self, doc: &mut Document) {
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder, header::Header};
        let error = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
        };
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let probe = operation
                    .tags
                    .as_ref()
                    .is_some_and(|tags| tags.iter().any(|t| t == "health"));
                if !probe {
                    let limited = error("`rate_limited`: the caller's request budget is spent")
                        .header(
                            "Retry-After",
                            Header::new(
                                utoipa::openapi::ObjectBuilder::new()
                                    .schema_type(utoipa::openapi::schema::Type::Integer),
                            ),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .insert("429".into(), RefOr::T(limited));
                }
                if operation.request_body.is_some() {
                    operation.responses.responses.insert(
                        "408".into(),
                        RefOr::T(
                            error("`request_timeout`: the body did not arrive in time").build(),
                        ),
                    );
                }
            }
        }
    }
}

/// The finished document as served: built once, when the router is.
#[derive(Clone)]
pub struct Served(pub Bytes);

impl Served {
    pub fn new(doc: &Document) -> Self {
        Self(Bytes::from(
            doc.to_pretty_json().expect("the document serialises"),
        ))
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this node's REST API", content_type = "application/json", body = Object))
)]
pub async fn openapi(Extension(doc): Extension<Served>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}

/// The WebSocket protocol as data: every frame's JSON Schema.
#[utoipa::path(
    get,
    path = "/asyncapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The AsyncAPI 3.0 document of the WebSocket protocol", content_type = "application/json", body = Object))
)]
pub async fn asyncapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../docs/asyncapi.json"),
    )
}

/// One entry of `GET /messages/conversations`: a direct conversation (the
/// seed's fields) or a group. Written by `ConversationSummary`'s
/// `Serialize`; Schemathesis checks every answer against this.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ConversationEntry {
    Direct(DirectEntry),
    Group(GroupEntry),
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct DirectEntry {
    conversation_id: Uuid,
    #[schema(inline)]
    kind: ConversationKind,
    /// The other person.
    user_id: Uuid,
    username: Option<String>,
    avatar_url: Option<String>,
    last_message: Option<Message>,
    unread_count: i64,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct GroupEntry {
    conversation_id: Uuid,
    #[schema(inline)]
    kind: ConversationKind,
    title: String,
    member_count: i64,
    avatar_url: Option<String>,
    /// None until the first message.
    last_message: Option<Message>,
    unread_count: i64,
}
