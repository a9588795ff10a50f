//! Find-text and click-text by OCR. (Being written.)

use crate::http::AppState;
use axum::Router;

/// Routes `/v1/find-text` and `/v1/click-text`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
