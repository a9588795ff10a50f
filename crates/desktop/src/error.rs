//! The desktop's error type and how each kind maps to HTTP.

use bytebot_protocol::ActionError;
use thiserror::Error;

/// Everything that can go wrong while serving a desktop request.
#[derive(Debug, Error)]
pub enum DesktopError {
    /// The request was understood but is not valid (HTTP 400).
    #[error("{0}")]
    BadInput(#[from] ActionError),
    /// The X server could not be reached or dropped the connection (HTTP 503).
    #[error("X display unavailable: {0}")]
    Unavailable(String),
    /// The X server refused or failed a request (HTTP 500).
    #[error("X request failed: {0}")]
    X(String),
    /// Something outside X failed: OCR, a launched program, the file system (HTTP 500).
    #[error("{0}")]
    Failed(String),
}

impl DesktopError {
    /// A bad-input error blamed on one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        DesktopError::BadInput(ActionError::field(field, message))
    }
}

impl From<x11rb::errors::ConnectionError> for DesktopError {
    fn from(e: x11rb::errors::ConnectionError) -> Self {
        DesktopError::Unavailable(e.to_string())
    }
}

impl From<x11rb::errors::ReplyError> for DesktopError {
    fn from(e: x11rb::errors::ReplyError) -> Self {
        match e {
            x11rb::errors::ReplyError::ConnectionError(c) => c.into(),
            x11rb::errors::ReplyError::X11Error(x) => {
                DesktopError::X(format!("{:?} in request {}", x.error_kind, x.major_opcode))
            }
        }
    }
}

impl From<x11rb::errors::ReplyOrIdError> for DesktopError {
    fn from(e: x11rb::errors::ReplyOrIdError) -> Self {
        match e {
            x11rb::errors::ReplyOrIdError::ConnectionError(c) => c.into(),
            x11rb::errors::ReplyOrIdError::X11Error(x) => {
                DesktopError::X(format!("{:?} in request {}", x.error_kind, x.major_opcode))
            }
            x11rb::errors::ReplyOrIdError::IdsExhausted => {
                DesktopError::X("X resource ids exhausted".into())
            }
        }
    }
}

impl From<x11rb::errors::ConnectError> for DesktopError {
    fn from(e: x11rb::errors::ConnectError) -> Self {
        DesktopError::Unavailable(e.to_string())
    }
}
