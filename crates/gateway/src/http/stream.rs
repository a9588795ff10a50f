//! Live events over SSE (`/events`) and WebSocket (`/events/ws`). Both
//! replay stored events after `Last-Event-ID` (or `?after=`) first, then
//! follow the live broadcast, skipping anything already sent.

use super::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::events::Event;
use crate::service::Gateway;
use axum::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

/// How many stored events one backlog query reads.
const PAGE: i64 = 500;

/// Which events to stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only this task's events (default: every task of this key).
    pub task_id: Option<String>,
    /// Resume after this event id (same as the `Last-Event-ID` header).
    pub after: Option<i64>,
}

struct Cursor {
    gw: Arc<Gateway>,
    task_id: Option<String>,
    key_id: Option<String>,
    last: i64,
    backlog: VecDeque<Event>,
    caught_up: bool,
    live: broadcast::Receiver<Arc<Event>>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Cursor {
    fn wants(&self, e: &Event) -> bool {
        e.id > self.last
            && self.task_id.as_ref().is_none_or(|t| *t == e.task_id)
            && self.key_id.as_ref().is_none_or(|k| *k == e.key_id)
    }

    async fn refill(&mut self) -> Result<(), ApiError> {
        let (rows, caught_up) = self
            .gw
            .events
            .backlog(
                self.last,
                self.task_id.as_deref(),
                self.key_id.as_deref(),
                PAGE,
            )
            .await?;
        self.caught_up = caught_up;
        self.backlog.extend(rows);
        Ok(())
    }

    /// The next event to send, or `None` when the stream should end.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                if self.wants(&e) {
                    self.last = e.id;
                    return Some(e);
                }
                continue;
            }
            if !self.caught_up {
                if self.refill().await.is_err() {
                    return None;
                }
                continue;
            }
            let received = tokio::select! {
                r = self.live.recv() => r,
                _ = self.stopping.wait_for(|s| *s) => return None,
            };
            match received {
                Ok(e) => {
                    if self.wants(&e) {
                        self.last = e.id;
                        return Some((*e).clone());
                    }
                }
                // Fell behind the broadcast: read what was missed from the store.
                Err(RecvError::Lagged(_)) => self.caught_up = false,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Subscriber count for the metric, decremented when the stream ends.
struct Counted(Arc<Gateway>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.metrics.subscribers(-1);
    }
}

async fn open_cursor(
    gw: &Arc<Gateway>,
    caller: &Caller,
    q: &EventsQuery,
    headers: &HeaderMap,
) -> Result<Cursor, ApiError> {
    let header_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::unprocessable(
                    "Last-Event-ID",
                    "Last-Event-ID: must be an event id (an integer)",
                )
            })
        })
        .transpose()?;
    if let Some(task_id) = &q.task_id {
        // 404 for tasks this key cannot see.
        gw.task(caller, task_id).await?;
    }
    let approver = gw
        .policy
        .profile(&caller.profile)
        .is_some_and(crate::policy::Profile::is_approver);
    // Subscribe before reading the store so nothing falls in between.
    let live = gw.events.subscribe();
    let last = match header_id.or(q.after) {
        Some(id) => id,
        // A task's stream starts at its beginning; the all-tasks stream at now
        // (the watermark: everything above it is still to be broadcast).
        None if q.task_id.is_some() => 0,
        None => gw.events.watermark(),
    };
    gw.metrics.subscribers(1);
    Ok(Cursor {
        gw: Arc::clone(gw),
        task_id: q.task_id.clone(),
        key_id: if approver {
            None
        } else {
            Some(caller.key_id.clone())
        },
        last,
        backlog: VecDeque::new(),
        caught_up: false,
        live,
        stopping: gw.stopping(),
    })
}

/// Server-Sent Events.
#[utoipa::path(get, path = "/events", operation_id = "events",
    description = "Server-Sent Events of tasks (plan.created, plan.approved, step.started, step.output, step.finished, artifact, task.finished, error). Every event has an id; reconnect with Last-Event-ID to miss nothing.",
    params(EventsQuery, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this id")),
    responses((status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 422, description = "Bad Last-Event-ID", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sse(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::unprocessable("query", e.body_text()))?;
    let cursor = open_cursor(&s.gw, &caller, &q, &headers).await?;
    let counted = Counted(Arc::clone(&s.gw));
    let stream = futures_util::stream::unfold((cursor, counted), |(mut c, counted)| async move {
        let e = c.next().await?;
        let data = serde_json::to_string(&e).unwrap_or_default();
        let sse = axum::response::sse::Event::default()
            .id(e.id.to_string())
            .event(e.kind)
            .data(data);
        Some((Ok::<_, std::convert::Infallible>(sse), (c, counted)))
    });
    Ok(Sse::new(stream_box(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn stream_box<S: Stream + Send + 'static>(
    s: S,
) -> std::pin::Pin<Box<dyn Stream<Item = S::Item> + Send>> {
    Box::pin(s)
}

/// The same events over WebSocket, one JSON text message each.
#[utoipa::path(get, path = "/events/ws", operation_id = "events_ws",
    description = "The same events over a WebSocket: one JSON text message per event ({id, task_id, kind, data, ts_ms}). Resume with ?after=ID.",
    params(EventsQuery),
    responses((status = 101, description = "Switching to WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn websocket(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "not_websocket",
            format!("{}; connect with a WebSocket client", e.body_text()),
        )
    })?;
    let Query(q) = query.map_err(|e| ApiError::unprocessable("query", e.body_text()))?;
    let cursor = open_cursor(&s.gw, &caller, &q, &headers).await?;
    let counted = Counted(Arc::clone(&s.gw));
    Ok(upgrade.on_upgrade(move |socket| pump(socket, cursor, counted)))
}

async fn pump(mut socket: WebSocket, mut cursor: Cursor, _counted: Counted) {
    loop {
        tokio::select! {
            e = cursor.next() => {
                let Some(e) = e else { break };
                let text = serde_json::to_string(&e).unwrap_or_default();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            }
        }
    }
}
