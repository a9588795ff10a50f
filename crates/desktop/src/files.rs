//! Files confined to the workspace folder. (Being written: see routes.)

use crate::http::AppState;
use axum::Router;

/// Routes under `/v1/files`.
pub fn routes() -> Router<AppState> {
    Router::new()
}

use bytebot_protocol::{FileRead, FileWrite};
use std::path::Path;

/// Bytebot's `read_file`: never an HTTP error, `success:false` with a reason.
pub async fn read_action(_workspace: &Path, _max_bytes: usize, _path: &str) -> FileRead {
    FileRead::failed("not implemented yet")
}

/// Bytebot's `write_file`: never an HTTP error, `success:false` with a reason.
pub async fn write_action(_workspace: &Path, _max_bytes: usize, _path: &str, _data: &str) -> FileWrite {
    FileWrite { success: false, message: "not implemented yet".into() }
}
