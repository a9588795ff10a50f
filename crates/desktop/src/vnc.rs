//! Live view: x11vnc on loopback, `/websockify` and `/novnc/`. (Being written.)

use crate::http::AppState;
use axum::Router;

/// Routes `/websockify` and `/novnc/`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
