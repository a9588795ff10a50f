//! The task API, shaped like Bytebot's agent: `POST/GET /tasks`, `/tasks/models`,
//! `/tasks/{id}`, `/tasks/{id}/messages`, `/takeover`, `/resume`, `/cancel`, `DELETE`, plus a
//! live event stream per task (SSE and WebSocket, resumable with `Last-Event-ID`).
//!
//! Every route needs the same token as the desktop (`Authorization: Bearer`, or the
//! `bytebot_token` cookie for the web UI). Errors are `{"error": {"code", "message",
//! "field"?}}`; an invalid task body is a 422 naming the field.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytebot_protocol::{Priority, TaskStatus, auth};
use bytebot_store::{AgentStoreError, TaskListQuery};
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::{Agent, TaskEvent, TaskRequest, Upload, parse_rfc3339_ms};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The agent.
    pub agent: Arc<Agent>,
    /// The token every request must carry.
    pub token: Arc<str>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

impl From<AgentStoreError> for ApiError {
    fn from(e: AgentStoreError) -> ApiError {
        let status = match &e {
            e if e.is_not_found() => StatusCode::NOT_FOUND,
            AgentStoreError::WrongStatus { .. } | AgentStoreError::LeaseLost { .. } => {
                StatusCode::CONFLICT
            }
            AgentStoreError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AgentStoreError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            _ => "store_unavailable",
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<bytebot_store::StoreError> for ApiError {
    fn from(e: bytebot_store::StoreError) -> ApiError {
        ApiError::from(AgentStoreError::Store(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(f) = self.field {
            body["error"]["field"] = Value::String(f);
        }
        (self.status, Json(body)).into_response()
    }
}

/// The routes, behind the token check.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/tasks",
            post(create_task)
                .get(list_tasks)
                .layer(axum::extract::DefaultBodyLimit::max(
                    MAX_UPLOAD_BYTES + 64 * 1024,
                )),
        )
        .route("/tasks/models", get(models))
        .route("/tasks/{id}", get(get_task).delete(delete_task))
        .route("/tasks/{id}/messages", get(messages))
        .route("/tasks/{id}/files/{file}", get(task_file))
        .route("/tasks/{id}/takeover", post(take_over))
        .route("/tasks/{id}/resume", post(resume))
        .route("/tasks/{id}/cancel", post(cancel))
        .route("/tasks/{id}/events", get(events_sse))
        .route("/tasks/{id}/events/ws", get(events_ws))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route(
            "/metrics",
            get(|State(s): State<ApiState>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    s.agent.metrics.render(),
                )
            }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see /tasks",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer);
    let cookie = || {
        auth::cookie_token(
            h.get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    };
    let ok = bearer
        .or_else(cookie)
        .is_some_and(|t| auth::token_matches(t, &state.token));
    if !ok {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong token: send Authorization: Bearer <token> (printed by `bytebot up`)",
        )
        .into_response();
    }
    next.run(req).await
}

async fn ready(State(s): State<ApiState>) -> Response {
    match s.agent.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

/// `POST /tasks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    description: String,
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default, rename = "type")]
    task_type: Option<String>,
    #[serde(default, alias = "scheduled_for")]
    scheduled_for: Option<String>,
}

/// Largest `POST /tasks` body with files (all files together, plus the fields).
pub const MAX_UPLOAD_BYTES: usize = 100 * 1024 * 1024;
/// Most files one task may bring.
const MAX_FILES: usize = 20;
/// Largest JSON body (a description is at most 20,000 bytes).
const MAX_JSON_BYTES: usize = 1024 * 1024;

/// `POST /tasks`: a JSON body, or `multipart/form-data` with the same fields as text parts and
/// the task's files as file parts (as Bytebot's UI sends them).
async fn create_task(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    use axum::extract::FromRequest;
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (b, files) = if multipart {
        let form = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|e| {
                ApiError::invalid("body", format!("not a readable multipart form: {e}"))
            })?;
        read_form(form).await?
    } else {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|e| ApiError::invalid("body", format!("cannot read the body: {e}")))?;
        if body.len() > MAX_JSON_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "a JSON task body is at most 1 MiB; send files as multipart/form-data",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(&body);
        (parse_create(de)?, Vec::new())
    };
    let request = check_create(b)?;
    let task = s
        .agent
        .create_with_files(request, files)
        .await
        .map_err(|e| ApiError::invalid("model", e))?;
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

fn parse_create<'de, D: serde::Deserializer<'de>>(de: D) -> Result<CreateBody, ApiError>
where
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_string() } else { path };
        ApiError::invalid(&field, format!("{}; expected {{\"description\": \"…\", \"model\"?, \"priority\"?: LOW|MEDIUM|HIGH|URGENT, \"type\"?: IMMEDIATE|SCHEDULED, \"scheduledFor\"?: RFC 3339}}", e.inner()))
    })
}

/// The text parts become the JSON body's fields (a `model` part may be Bytebot's JSON
/// object); parts with a file name are the task's files.
async fn read_form(
    mut form: axum::extract::Multipart,
) -> Result<(CreateBody, Vec<Upload>), ApiError> {
    let mut fields = serde_json::Map::new();
    let mut files = Vec::new();
    let mut total = 0usize;
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| upload_error(&e.to_string()))?;
        let Some(field) = field else { break };
        let part = field.name().unwrap_or_default().to_string();
        if let Some(raw_name) = field.file_name().map(str::to_string) {
            if files.len() == MAX_FILES {
                return Err(ApiError::invalid(
                    &part,
                    format!("at most {MAX_FILES} files per task"),
                ));
            }
            let name = upload_name(&raw_name).map_err(|why| ApiError::invalid(&part, why))?;
            let media_type = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_string();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| upload_error(&e.to_string()))?;
            total += bytes.len();
            files.push(Upload {
                name,
                media_type,
                bytes: bytes.to_vec(),
            });
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| ApiError::invalid(&part, format!("is not UTF-8 text: {e}")))?;
            total += text.len();
            let value = match part.as_str() {
                "model" if text.trim_start().starts_with('{') => serde_json::from_str(&text)
                    .map_err(|e| ApiError::invalid("model", format!("is not JSON: {e}")))?,
                _ => Value::String(text),
            };
            fields.insert(part, value);
        }
        if total > MAX_UPLOAD_BYTES {
            return Err(upload_error("length limit exceeded"));
        }
    }
    let body = parse_create(Value::Object(fields))?;
    Ok((body, files))
}

fn upload_error(why: &str) -> ApiError {
    if why.contains("limit") {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the files of one task may be {} MiB in all",
                MAX_UPLOAD_BYTES >> 20
            ),
        )
    } else {
        ApiError::invalid("body", format!("the multipart form is broken: {why}"))
    }
}

/// A safe file name from an uploaded one: its last path component, without control
/// characters, not `.` or `..`, at most 255 bytes.
fn upload_name(raw: &str) -> Result<String, String> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("the file name {raw:?} names no file"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("the file name {raw:?} has control characters"));
    }
    if name.len() > 255 {
        return Err("a file name is at most 255 bytes".into());
    }
    Ok(name.to_string())
}

/// Checks a create body and turns it into a request.
fn check_create(b: CreateBody) -> Result<TaskRequest, ApiError> {
    if b.description.trim().is_empty() {
        return Err(ApiError::invalid(
            "description",
            "is empty; say what the agent should do",
        ));
    }
    if b.description.len() > 20_000 {
        return Err(ApiError::invalid("description", "is over 20,000 bytes"));
    }
    let priority = match &b.priority {
        Some(p) => Priority::parse(p).map_err(|e| ApiError::invalid("priority", e))?,
        None => Priority::Medium,
    };
    // Bytebot sends the model as an object {provider, name, title}; we take its name too.
    let model = match &b.model {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).map(str::to_string),
        Some(_) => return Err(ApiError::invalid("model", "must be a model id string")),
    };
    let scheduled_for = match &b.scheduled_for {
        Some(t) => Some(parse_rfc3339_ms(t).map_err(|e| ApiError::invalid("scheduledFor", e))?),
        None => None,
    };
    match b
        .task_type
        .as_deref()
        .map(bytebot_protocol::TaskType::parse)
    {
        Some(Err(e)) => return Err(ApiError::invalid("type", e)),
        Some(Ok(bytebot_protocol::TaskType::Scheduled)) if scheduled_for.is_none() => {
            return Err(ApiError::invalid(
                "scheduledFor",
                "a SCHEDULED task needs scheduledFor",
            ));
        }
        _ => {}
    }
    Ok(TaskRequest {
        description: b.description,
        model,
        priority,
        scheduled_for,
        created_by: "local".into(),
        parent_id: None,
    })
}

/// `GET /tasks` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    statuses: Option<String>,
    search: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_tasks(
    State(s): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::invalid(
            "query",
            format!(
                "{}; allowed: status, statuses (comma-separated), search, limit (1-200), cursor",
                e.body_text()
            ),
        )
    })?;
    let mut statuses = Vec::new();
    for part in q
        .status
        .iter()
        .chain(q.statuses.iter())
        .flat_map(|s| s.split(','))
        .filter(|p| !p.trim().is_empty())
    {
        statuses.push(TaskStatus::parse(part.trim()).map_err(|e| ApiError::invalid("status", e))?);
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is out of range; 1 to 200"),
        ));
    }
    let page = s
        .agent
        .store
        .list_agent_tasks(&TaskListQuery {
            statuses,
            search: q.search.filter(|t| !t.trim().is_empty()),
            created_by: None,
            limit,
            cursor: q.cursor,
        })
        .await?;
    Ok(
        Json(json!({"tasks": page.items, "total": page.total, "next_cursor": page.next_cursor}))
            .into_response(),
    )
}

async fn models(State(s): State<ApiState>) -> Json<Value> {
    let models: Vec<Value> = s
        .agent
        .catalog
        .models
        .iter()
        .map(|m| {
            json!({
                "provider": m.provider,
                "name": m.id,
                "title": m.title,
                "kind": m.kind,
                "computer_tool": m.computer_tool,
                "vision": m.vision,
                "price": m.price,
                "default": s.agent.catalog.default_model.as_deref() == Some(m.id.as_str()),
            })
        })
        .collect();
    Json(Value::Array(models))
}

async fn get_task(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let task = s.agent.store.get_agent_task(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {id:?}"),
        )
    })?;
    let usage = s.agent.store.usage_by_model(&id).await?;
    let files: Vec<Value> = s
        .agent
        .store
        .task_files(&id)
        .await?
        .into_iter()
        .map(|f| json!({"id": f.id, "name": f.name, "mediaType": f.media_type, "size": f.size, "sha256": f.sha256}))
        .collect();
    let mut v = serde_json::to_value(&task).unwrap_or(Value::Null);
    v["usage_by_model"] = serde_json::to_value(usage).unwrap_or(Value::Null);
    v["files"] = Value::Array(files);
    Ok(Json(v).into_response())
}

/// `GET /tasks/{id}/files/{file}`: a file given with the task, as it was uploaded.
async fn task_file(
    State(s): State<ApiState>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("task {id:?} has no file {file:?}"),
        )
    };
    let row = s
        .agent
        .store
        .get_task_file(&file)
        .await?
        .filter(|f| f.task_id == id)
        .ok_or_else(missing)?;
    let bytes = s.agent.blobs.get(&row.blob_key).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "blob_unavailable",
            format!("cannot read the file's bytes: {e}"),
        )
    })?;
    // Served as a download, never rendered: an uploaded HTML file must not run in our origin.
    // An ASCII name for old clients, the exact one (RFC 6266 / 5987) for the rest.
    let ascii: String = row
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        crate::desktop::encode_query(&row.name).replace('/', "%2F")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /tasks/{id}/messages` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn messages(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::invalid(
            "query",
            format!(
                "{}; allowed: after (message id), limit (1-500)",
                e.body_text()
            ),
        )
    })?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is out of range; 1 to 500"),
        ));
    }
    if s.agent.store.get_agent_task(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {id:?}"),
        ));
    }
    let rows = s
        .agent
        .store
        .messages(&id, q.after.unwrap_or(0), limit)
        .await?;
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({"messages": rows, "next_after": next})).into_response())
}

async fn take_over(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.agent.take_over(&id).await?).into_response())
}

/// `POST /tasks/{id}/resume` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    #[serde(default)]
    message: Option<String>,
    /// Approves the provider's safety checks the task stopped for.
    #[serde(default)]
    acknowledge_safety_checks: bool,
}

async fn resume(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ResumeBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResumeBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(
                "body",
                format!("{e}; expected {{\"message\"?: \"what changed\", \"acknowledge_safety_checks\"?: true}}"),
            )
        })?
    };
    Ok(Json(
        s.agent
            .resume(&id, b.message, b.acknowledge_safety_checks)
            .await?,
    )
    .into_response())
}

async fn cancel(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(s.agent.cancel(&id).await?).into_response())
}

async fn delete_task(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.agent.stop_run(&id);
    let keys = s.agent.store.delete_agent_task(&id).await?;
    for key in keys {
        if let Err(e) = s.agent.blobs.delete(&key).await {
            tracing::warn!(task = %id, key, error = %e, "could not delete a blob of a deleted task");
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Where a stream starts: `Last-Event-ID` (SSE reconnects) or `?after=`.
#[derive(Debug, Deserialize)]
struct StreamQuery {
    after: Option<i64>,
}

fn start_after(headers: &HeaderMap, q: &StreamQuery) -> i64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.after)
        .unwrap_or(0)
}

/// Stored events after `after`, then live ones, without gaps or repeats.
fn task_events(agent: Arc<Agent>, task_id: String, after: i64) -> impl Stream<Item = TaskEvent> {
    // Subscribe before reading the backlog so nothing falls between the two.
    let mut live = agent.events.subscribe();
    async_stream(move |tx| async move {
        let mut last = after;
        if !send_stored(&agent, &task_id, &mut last, &tx).await {
            return;
        }
        loop {
            match live.recv().await {
                Ok(e) if e.task_id == task_id && e.id > last => {
                    last = e.id;
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Fell behind the broadcast: catch up from the store.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if !send_stored(&agent, &task_id, &mut last, &tx).await {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

/// Sends the stored events after `*last`, page by page; false when the stream is gone or the
/// store failed.
async fn send_stored(
    agent: &Agent,
    task_id: &str,
    last: &mut i64,
    tx: &tokio::sync::mpsc::Sender<TaskEvent>,
) -> bool {
    const PAGE: u32 = 500;
    loop {
        let Ok(rows) = agent
            .store
            .task_events_after(Some(task_id), *last, PAGE)
            .await
        else {
            return false;
        };
        let n = rows.len();
        for r in rows {
            *last = r.id;
            if tx.send(TaskEvent::from(r)).await.is_err() {
                return false;
            }
        }
        if n < PAGE as usize {
            return true;
        }
    }
}

/// A stream fed by a task through a channel (no extra crate for generators).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = TaskEvent>
where
    F: FnOnce(tokio::sync::mpsc::Sender<TaskEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn events_sse(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if s.agent.store.get_agent_task(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {id:?}"),
        ));
    }
    let after = start_after(&headers, &q);
    let stream = futures_util::StreamExt::map(task_events(Arc::clone(&s.agent), id, after), |e| {
        Ok(Event::default()
            .id(e.id.to_string())
            .event(e.kind.clone())
            .data(
                json!({"id": e.id, "task_id": e.task_id, "kind": e.kind, "data": e.data})
                    .to_string(),
            ))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn events_ws(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if s.agent.store.get_agent_task(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {id:?}"),
        ));
    }
    let after = start_after(&headers, &q);
    let agent = Arc::clone(&s.agent);
    Ok(ws.on_upgrade(move |socket| pump_ws(socket, agent, id, after)))
}

async fn pump_ws(mut socket: WebSocket, agent: Arc<Agent>, id: String, after: i64) {
    let mut events = std::pin::pin!(task_events(agent, id, after));
    while let Some(e) = futures_util::StreamExt::next(&mut events).await {
        let text =
            json!({"id": e.id, "task_id": e.task_id, "kind": e.kind, "data": e.data}).to_string();
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
}
