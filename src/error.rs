//! The one error type clients see, and its mappings to HTTP responses and
//! WebSocket `error` frames.
//!
//! Internal details (SQL errors, Redis errors) are logged where they happen
//! and never copied into a client-facing message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Machine-readable error codes, exactly as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    UnknownType,
    InvalidField,
    ContentEmpty,
    ContentTooLong,
    RecipientNotFound,
    NotFound,
    Forbidden,
    RateLimited,
    Unavailable,
    Internal,
    /// REST only: no or invalid token (the socket is refused before upgrade).
    Unauthorized,
    /// REST only: request body above `MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// A group would pass `MAX_GROUP_MEMBERS`.
    TooManyMembers,
    /// REST only: the request body did not arrive within
    /// `REQUEST_BODY_TIMEOUT`.
    RequestTimeout,
    /// Storage failed while a message was being committed and did not come
    /// back in time to tell: it may be stored. Resending with the same
    /// `client_id` is safe and settles it.
    OutcomeUnknown,
    /// The message was deleted: it cannot be edited or reacted to.
    MessageDeleted,
    /// The message carries `MAX_REACTIONS_PER_MESSAGE` distinct emojis.
    TooManyReactions,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        Self::InvalidJson,
        Self::UnknownType,
        Self::InvalidField,
        Self::ContentEmpty,
        Self::ContentTooLong,
        Self::RecipientNotFound,
        Self::NotFound,
        Self::Forbidden,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
        Self::Unauthorized,
        Self::PayloadTooLarge,
        Self::TooManyMembers,
        Self::RequestTimeout,
        Self::OutcomeUnknown,
        Self::MessageDeleted,
        Self::TooManyReactions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidField => "invalid_field",
            Self::ContentEmpty => "content_empty",
            Self::ContentTooLong => "content_too_long",
            Self::RecipientNotFound => "recipient_not_found",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TooManyMembers => "too_many_members",
            Self::RequestTimeout => "request_timeout",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::MessageDeleted => "message_deleted",
            Self::TooManyReactions => "too_many_reactions",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson
            | Self::UnknownType
            | Self::InvalidField
            | Self::ContentEmpty
            | Self::ContentTooLong => StatusCode::BAD_REQUEST,
            Self::RecipientNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::OutcomeUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // The request is well formed; the group's current state refuses it.
            Self::TooManyMembers | Self::MessageDeleted | Self::TooManyReactions => {
                StatusCode::CONFLICT
            }
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// An error a client may see: a code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: when to try again (REST's `Retry-After`).
    pub retry_after_secs: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    /// Over a request budget.
    pub fn rate_limited(over: crate::budget::OverBudget) -> Self {
        let secs = over.retry_after_secs();
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry in {secs} s"),
            )
        }
    }
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "storage is unavailable; nothing was stored, retry",
        )
    }
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// Every REST error: `{"error":{"code","message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    code: ErrorCode,
    /// A sentence for people; match on `code`.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "storage unavailable");
                Self::unavailable()
            }
            StoreError::Uncertain(e) => {
                tracing::warn!(error = %e, "commit outcome unknown");
                Self::new(
                    ErrorCode::OutcomeUnknown,
                    "storage failed while committing; the message may be stored: resend with the same client_id",
                )
            }
            StoreError::NotFound(what) => Self::not_found(what),
            StoreError::Internal(e) => {
                tracing::error!(error = %e, "storage error");
                Self::internal()
            }
        }
    }
}
