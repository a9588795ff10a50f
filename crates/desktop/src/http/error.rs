//! Error responses of our own endpoints: `{"error", "message", "field"?}`.

use crate::error::DesktopError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytebot_protocol::ErrorBody;

/// An error with the HTTP status it answers with.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    /// 401 for a missing or wrong token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong token; send `Authorization: Bearer <token>` (the token is printed at start and set by BYTEBOT_TOKEN)",
        )
    }

    /// 400 blamed on one field.
    pub fn bad_field(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "bad_request", message);
        e.body.field = Some(field.to_string());
        e
    }

    /// Any status with a code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: code.to_string(),
                message: message.into(),
                field: None,
            },
        }
    }
}

impl From<DesktopError> for ApiError {
    fn from(e: DesktopError) -> Self {
        match e {
            DesktopError::BadInput(a) => Self {
                status: StatusCode::BAD_REQUEST,
                body: ErrorBody {
                    error: "bad_request".into(),
                    message: a.to_string(),
                    field: a.field,
                },
            },
            DesktopError::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "display_unavailable", m)
            }
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "action_failed",
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<bytebot_protocol::ActionError> for ApiError {
    fn from(e: bytebot_protocol::ActionError) -> Self {
        DesktopError::BadInput(e).into()
    }
}
