//! Input tracking through XRecord. (Being written.)

use crate::http::AppState;
use axum::Router;

/// Routes `/v1/events`, `/v1/input-tracking/*` and Bytebot's `/input-tracking/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
