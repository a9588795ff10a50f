//! Our own API beside Bytebot's: screenshots with format, quality, region
//! and scale; the screen's resolution; batches; settle; windows; health,
//! readiness and metrics.

use super::AppState;
use super::error::ApiError;
use crate::encode::{EncodeOptions, Format};
use crate::x11::capture::Region;
use crate::x11::randr::ResolutionError;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use bytebot_protocol::{BatchItem, BatchResult, parse_action};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `/v1/*`, `/health`, `/ready`, `/metrics`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/screen", get(screen))
        .route("/v1/screen/resolution", put(set_resolution))
        .route("/v1/screenshot", get(screenshot))
        .route("/v1/actions", post(batch))
        .route("/v1/settle", post(settle))
        .route("/v1/windows", get(windows))
        .route("/v1/windows/{id}/focus", post(focus_window))
        .route("/v1/windows/minimize-all", post(minimize_all))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.desktop.on_session(|s| s.sync()).await {
        Ok(()) => {
            Json(json!({ "status": "ready", "display": state.desktop.display() })).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": e.to_string() })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn screen(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (w, h, range) = state
        .desktop
        .on_session(|s| {
            let (w, h) = s.screen_size()?;
            // Without RandR the size is fixed; say so with a null range.
            let range = match s.size_range() {
                Ok(r) => Some(r),
                Err(ResolutionError::Desktop(e)) => return Err(e),
                Err(_) => None,
            };
            Ok((w, h, range))
        })
        .await?;
    Ok(Json(json!({
        "width": w,
        "height": h,
        "display": state.desktop.display(),
        "resolution_range": range,
    })))
}

impl From<ResolutionError> for ApiError {
    fn from(e: ResolutionError) -> Self {
        match e {
            ResolutionError::BadSize { field, message } => ApiError::bad_field(field, message),
            ResolutionError::Unsupported(m) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", m)
            }
            ResolutionError::Refused(m) => ApiError::new(StatusCode::CONFLICT, "refused", m),
            ResolutionError::Desktop(e) => e.into(),
        }
    }
}

/// Reads `{"width": W, "height": H}`, naming the field that is wrong.
fn resolution_body(body: &[u8]) -> Result<(u32, u32), ApiError> {
    const EXPECTED: &str = "expected {\"width\": 1280, \"height\": 960}";
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_field("body", format!("is not JSON ({e}); {EXPECTED}")))?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::bad_field(
            "body",
            format!("is not a JSON object; {EXPECTED}"),
        ));
    };
    if let Some(extra) = object.keys().find(|k| *k != "width" && *k != "height") {
        return Err(ApiError::bad_field(
            extra,
            format!("unknown field \"{extra}\"; {EXPECTED}"),
        ));
    }
    let (min_w, min_h) = crate::x11::randr::MIN_SIZE;
    // The floor is ours, so it is checked before asking the X server.
    let dim = |field: &str, min: u16| -> Result<u32, ApiError> {
        let Some(v) = object.get(field) else {
            return Err(ApiError::bad_field(
                field,
                format!("is missing; {EXPECTED}"),
            ));
        };
        match v.as_u64() {
            Some(n) if n < u64::from(min) => Err(ApiError::bad_field(
                field,
                format!("{n} is too small; the smallest screen we set is {min_w}x{min_h}"),
            )),
            Some(n) => u32::try_from(n)
                .map_err(|_| ApiError::bad_field(field, format!("{n} is too large"))),
            None => Err(ApiError::bad_field(
                field,
                format!("{v} is not a positive whole number of pixels; {EXPECTED}"),
            )),
        }
    };
    Ok((dim("width", min_w)?, dim("height", min_h)?))
}

/// `PUT /v1/screen/resolution`: changes the screen size through RandR.
async fn set_resolution(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (width, height) = resolution_body(&body)?;
    let outcome = state
        .desktop
        .on_session(move |s| match s.set_resolution(width, height) {
            // Connection failures go through the session so it reconnects.
            Err(ResolutionError::Desktop(e)) => Err(e),
            other => Ok(other),
        })
        .await?;
    let (w, h) = outcome?;
    tracing::info!(width = w, height = h, "screen resolution changed");
    Ok(Json(
        json!({ "width": w, "height": h, "display": state.desktop.display() }),
    ))
}

/// Query of `GET /v1/screenshot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShotQuery {
    format: Option<Format>,
    quality: Option<u8>,
    max_width: Option<u32>,
    x: Option<u32>,
    y: Option<u32>,
    width: Option<u32>,
    height: Option<u32>,
    /// `json` for `{"image": base64, ...}` instead of the raw image.
    encoding: Option<String>,
    /// Draw the mouse pointer into the image.
    cursor: Option<bool>,
}

async fn screenshot(
    State(state): State<AppState>,
    query: Result<Query<ShotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_field(
            "query",
            format!("{}; allowed: format=png|jpeg, quality=1..100, max_width, x, y, width, height, encoding=json, cursor=true", e.body_text()),
        )
    })?;
    let quality = q.quality.unwrap_or(80);
    if !(1..=100).contains(&quality) {
        return Err(ApiError::bad_field(
            "quality",
            format!("{quality} is out of range; expected 1 to 100"),
        ));
    }
    if q.max_width == Some(0) {
        return Err(ApiError::bad_field("max_width", "must be at least 1"));
    }
    let region = match (q.x, q.y, q.width, q.height) {
        (None, None, None, None) => None,
        (x, y, Some(width), Some(height)) => Some(Region {
            x: x.unwrap_or(0),
            y: y.unwrap_or(0),
            width,
            height,
        }),
        _ => {
            return Err(ApiError::bad_field(
                "width",
                "a region needs width and height (x and y default to 0)",
            ));
        }
    };
    let opts = EncodeOptions {
        format: q.format.unwrap_or_default(),
        quality,
        max_width: q.max_width,
        cursor: q.cursor.unwrap_or(false),
    };
    let (shot, region) = state.desktop.screenshot(region, opts).await?;
    let scale = format!("{}", shot.scale);
    if q.encoding.as_deref() == Some("json") {
        return Ok(Json(json!({
            "image": base64::engine::general_purpose::STANDARD.encode(&shot.bytes),
            "format": opts.format,
            "width": shot.width,
            "height": shot.height,
            "scale": shot.scale,
            "region": region,
        }))
        .into_response());
    }
    let mut response = shot.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(opts.format.mime()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in [
        ("x-bytebot-scale", scale),
        (
            "x-bytebot-region",
            format!(
                "{},{},{},{}",
                region.x, region.y, region.width, region.height
            ),
        ),
        ("x-bytebot-size", format!("{}x{}", shot.width, shot.height)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}

/// Body of `POST /v1/actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    actions: Vec<Value>,
}

/// Most actions in one batch.
const MAX_BATCH: usize = 1000;

async fn batch(State(state): State<AppState>, body: Bytes) -> Result<Json<BatchResult>, ApiError> {
    let body: BatchBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_field(
            "actions",
            format!("{e}; expected {{\"actions\": [{{\"action\": \"click_mouse\", ...}}, ...]}}"),
        )
    })?;
    if body.actions.is_empty() || body.actions.len() > MAX_BATCH {
        return Err(ApiError::bad_field(
            "actions",
            format!(
                "has {} actions; expected 1 to {MAX_BATCH}",
                body.actions.len()
            ),
        ));
    }
    // Refuse the whole batch before running anything if any action is malformed.
    let mut actions = Vec::with_capacity(body.actions.len());
    for (i, v) in body.actions.into_iter().enumerate() {
        let action = parse_action(v).map_err(|e| e.within(&format!("actions[{i}]")))?;
        action
            .validate(&state.desktop.limits)
            .map_err(|e| e.within(&format!("actions[{i}]")))?;
        actions.push(action);
    }
    let total = actions.len();
    let mut results = Vec::with_capacity(total);
    for (index, action) in actions.into_iter().enumerate() {
        let name = action.name().to_string();
        let start = Instant::now();
        let outcome = state.run_action(action).await;
        let elapsed_us = start.elapsed().as_micros() as u64;
        let ok = outcome.is_ok();
        results.push(match outcome {
            Ok(result) => BatchItem {
                index,
                action: name,
                ok,
                result,
                error: None,
                elapsed_us,
            },
            Err(e) => BatchItem {
                index,
                action: name,
                ok,
                result: None,
                error: Some(e.to_string()),
                elapsed_us,
            },
        });
        if !ok {
            break;
        }
    }
    let completed = results.len();
    Ok(Json(BatchResult {
        ok: results.iter().all(|r| r.ok),
        completed,
        total,
        results,
    }))
}

/// Body of `POST /v1/settle`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    #[serde(default = "default_quiet")]
    quiet_ms: u64,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

fn default_quiet() -> u64 {
    150
}

fn default_timeout() -> u64 {
    5_000
}

async fn settle(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body: SettleBody = if body.is_empty() {
        SettleBody {
            quiet_ms: default_quiet(),
            timeout_ms: default_timeout(),
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_field(
                "body",
                format!("{e}; expected {{\"quiet_ms\": 150, \"timeout_ms\": 5000}}"),
            )
        })?
    };
    if body.quiet_ms > 60_000 || body.timeout_ms > 60_000 {
        return Err(ApiError::bad_field(
            "timeout_ms",
            "quiet_ms and timeout_ms must be at most 60000",
        ));
    }
    let s = state
        .desktop
        .settle(
            Duration::from_millis(body.quiet_ms),
            Duration::from_millis(body.timeout_ms),
        )
        .await;
    Ok(Json(json!(s)))
}

async fn windows(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = state.desktop.on_session(|s| s.windows()).await?;
    Ok(Json(json!({ "windows": list })))
}

async fn focus_window(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_window_id(&id)?;
    state
        .desktop
        .on_session(move |s| {
            if !s.windows()?.iter().any(|w| w.id == id) {
                return Err(crate::error::DesktopError::field(
                    "id",
                    format!("no window {id}; GET /v1/windows lists them"),
                ));
            }
            s.focus_window(id)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_window_id(s: &str) -> Result<u32, ApiError> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    };
    parsed.ok_or_else(|| {
        ApiError::bad_field(
            "id",
            format!("\"{s}\" is not a window id (decimal or 0x hex)"),
        )
    })
}

async fn minimize_all(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.desktop.on_session(|s| s.show_desktop()).await?;
    Ok(StatusCode::NO_CONTENT)
}
