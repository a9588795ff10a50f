//! Errors a client can cause, in a shape every server can render.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A request that was understood as JSON but is not a valid action.
///
/// `field` is the JSON path of the offending value (`coordinates.x`,
/// `keys[2]`, `action`), so clients and people can see exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionError {
    /// JSON path of the value that was wrong, when one value is to blame.
    pub field: Option<String>,
    /// What was wrong and what is allowed instead.
    pub message: String,
}

impl ActionError {
    /// An error blamed on one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// Prefixes the field path, e.g. to place an action's error inside a batch.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field.take() {
            Some(f) if f.starts_with('[') => format!("{prefix}{f}"),
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_string(),
        });
        self
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ActionError {}

/// The JSON error body of our own (`/v1`) endpoints:
/// `{"error": code, "message": text, "field"?: path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code such as `bad_request` or `unauthorized`.
    pub error: String,
    /// A sentence for a person: what was wrong and what to do.
    pub message: String,
    /// The JSON path of the offending value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
