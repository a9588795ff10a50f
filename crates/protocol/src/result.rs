//! What actions answer, in Bytebot's shapes, and our batch result.

use serde::{Deserialize, Serialize};

/// `screenshot`: `{"image": "<base64 PNG>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screenshot {
    /// The PNG, base64 encoded.
    pub image: String,
}

/// `cursor_position`: `{"x": n, "y": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPosition {
    /// Pointer x in screen pixels.
    pub x: i32,
    /// Pointer y in screen pixels.
    pub y: i32,
}

/// `write_file`: `{"success": bool, "message": string}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    /// Whether the file was written.
    pub success: bool,
    /// What happened, or why not.
    pub message: String,
}

/// `read_file`: `{"success", "data"?, "name"?, "size"?, "mediaType"?, "message"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRead {
    /// Whether the file was read.
    pub success: bool,
    /// The content, base64 encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The file's name without its folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A MIME type guessed from the extension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Why the read failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl FileRead {
    /// A failed read with its reason.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            success: false,
            data: None,
            name: None,
            size: None,
            media_type: None,
            message: Some(message.into()),
        }
    }
}

/// The outcome of one action inside a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// Position in the batch, from 0.
    pub index: usize,
    /// The action's wire name.
    pub action: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it answered (screenshot, cursor position, file result), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in microseconds.
    pub elapsed_us: u64,
}

/// `POST /v1/actions`: one entry per action run; the batch stops at the first failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    /// True when every action succeeded.
    pub ok: bool,
    /// How many actions ran (the failing one included).
    pub completed: usize,
    /// How many actions were in the batch.
    pub total: usize,
    /// Each action that ran, in order.
    pub results: Vec<BatchItem>,
}
