//! Bytebot's daemon API, answered exactly as bytebotd does: `POST
//! /computer-use` with 201 on success, 400 `{"statusCode", "message",
//! "error"}` for a bad body, 500 "Failed to execute computer action: …".

use super::AppState;
use crate::error::DesktopError;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytebot_protocol::{Action, DesktopEvent, parse_action};
use serde_json::{Value, json};
use std::time::Instant;

/// `POST /computer-use`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/computer-use", post(computer_use))
}

async fn computer_use(State(state): State<AppState>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(None, format!("body is not valid JSON: {e}")),
    };
    let action = match parse_action(value) {
        Ok(a) => a,
        Err(e) => return bad_request(e.field.as_deref(), e.to_string()),
    };
    match state.run_action(action).await {
        Ok(Some(result)) => (StatusCode::CREATED, Json(result)).into_response(),
        Ok(None) => StatusCode::CREATED.into_response(),
        Err(DesktopError::BadInput(e)) => bad_request(e.field.as_deref(), e.to_string()),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({
                "statusCode": 500,
                "message": format!("Failed to execute computer action: {e}"),
                "error": "Internal Server Error",
            })),
        )
            .into_response(),
    }
}

fn bad_request(field: Option<&str>, message: String) -> Response {
    let mut body = json!({ "statusCode": 400, "message": message, "error": "Bad Request" });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

impl AppState {
    /// Runs any of the sixteen actions, records metrics and publishes an
    /// event. Text is never logged: only the action's name and outcome.
    pub async fn run_action(&self, action: Action) -> Result<Option<Value>, DesktopError> {
        let name = action.name();
        let start = Instant::now();
        let result = match action.validate(&self.desktop.limits).map(|()| action) {
            Err(e) => Err(e.into()),
            Ok(Action::ReadFile(a)) => {
                let r =
                    crate::files::read_action(&self.workspace, self.config.max_file_bytes, &a.path)
                        .await;
                to_value(&r).map(Some)
            }
            Ok(Action::WriteFile(a)) => {
                let r = crate::files::write_action(
                    &self.workspace,
                    self.config.max_file_bytes,
                    &a.path,
                    &a.data,
                )
                .await;
                to_value(&r).map(Some)
            }
            Ok(Action::Application(a)) => {
                crate::apps::open(&self.desktop, &self.config.applications, &a.application)
                    .await
                    .map(|()| None)
            }
            Ok(other) => self.desktop.run(other).await,
        };
        let took = start.elapsed();
        let ok = result.is_ok();
        self.metrics.action(name, ok, took);
        self.events.publish(DesktopEvent::Action {
            action: name.to_string(),
            ok,
            elapsed_us: took.as_micros() as u64,
        });
        match &result {
            Ok(_) => tracing::debug!(
                action = name,
                took_us = took.as_micros() as u64,
                "action done"
            ),
            Err(e) => tracing::info!(action = name, error = %e, "action failed"),
        }
        result
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, DesktopError> {
    serde_json::to_value(v).map_err(|e| DesktopError::Failed(e.to_string()))
}
