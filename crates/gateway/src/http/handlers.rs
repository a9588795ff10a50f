//! Request handlers: small, each parses its input, calls the service and
//! shapes the answer. Bodies are parsed here (not by axum's `Json`) so every
//! malformed body gets our error shape with the field at fault.

use super::AppState;
use crate::artifacts::LinkError;
use crate::auth::{AuthError, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::service::{
    Capabilities, ExecuteRequest, ExecuteResponse, PlanRequest, PlanResponse, TaskView,
};
use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;

/// Parses a JSON body; errors name the field (422) or the position (400).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut de);
    if parsed.is_ok()
        && let Err(e) = de.end()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        ));
    }
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("the body is not valid JSON: {inner}"),
                ))
            } else {
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                Err(ApiError::unprocessable(&field, format!("{field}: {inner}")))
            }
        }
    }
}

/// What this caller may do under the policy.
#[utoipa::path(get, path = "/capabilities", operation_id = "capabilities",
    description = "What this caller may do: capabilities, the intents it may plan with their argument schemas and risks, and limits.",
    responses((status = 200, description = "The caller's capabilities", body = Capabilities),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn capabilities(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Capabilities>, ApiError> {
    s.gw.capabilities(&caller).map(Json)
}

/// Plans an intent.
#[utoipa::path(post, path = "/plan", operation_id = "plan",
    description = "Plan an intent (screenshot, open_app, browse, edit_file, run, task). Nothing runs: the answer is the exact plan, its risk, and a single-use confirm token that /execute needs. Show the plan to the user and execute only after they approve.",
    request_body = PlanRequest,
    responses((status = 200, description = "The plan and its confirm token", body = PlanResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Denied by policy (the rule is named)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Bad arguments (the field is named)", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 502, description = "The desktop failed while planning", body = ErrorBody),
        (status = 503, description = "A needed part (agent, store) is unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn plan(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<PlanResponse>, ApiError> {
    let req: PlanRequest = parse_body(&body)?;
    s.gw.plan(&caller, req).await.map(Json)
}

/// `?wait=` of `/execute`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ExecuteQuery {
    /// `false` answers 202 at once; the events tell the rest. Default true.
    #[serde(default)]
    pub wait: Option<bool>,
}

/// Executes an approved plan.
#[utoipa::path(post, path = "/execute", operation_id = "execute",
    description = "Execute the stored plan of a task with its confirm token. The plan is never rebuilt from this request: intent/args, if sent, must equal the plan's. Tokens are single-use and expire.",
    request_body = ExecuteRequest, params(ExecuteQuery),
    responses((status = 200, description = "The task ran; its status, observations and artifacts", body = ExecuteResponse),
        (status = 202, description = "Started (wait=false)", body = ExecuteResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Approval required, or the task belongs to another key", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Token used, not for this task, or args differ from the plan", body = ErrorBody),
        (status = 410, description = "The confirm token expired", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Bad fields", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn execute(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ExecuteQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::unprocessable(
            "wait",
            format!("wait: {}; use wait=true or wait=false", e.body_text()),
        )
    })?;
    let req: ExecuteRequest = parse_body(&body)?;
    let wait = q.wait.unwrap_or(true);
    let result = s.gw.execute(&caller, req, wait).await?;
    let status = if wait {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(result)).into_response())
}

/// A task's state, plan and results.
#[utoipa::path(get, path = "/tasks/{id}", operation_id = "get_task",
    description = "A task: its state, plan, observations and artifacts (with fresh signed links).",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The task", body = TaskView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such task for this key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn task(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    s.gw.task(&caller, &id).await.map(Json)
}

/// Cancels a task.
#[utoipa::path(post, path = "/tasks/{id}/cancel", operation_id = "cancel_task",
    description = "Cancel a planned or running task (a running program is killed). Finished tasks stay as they are.",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The task after the cancel", body = TaskView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such task for this key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    s.gw.cancel(&caller, &id).await.map(Json)
}

/// A person approves a plan.
#[utoipa::path(post, path = "/approve/{task_id}", operation_id = "approve_task",
    description = "A person approves a planned task (approver keys only), for clients that cannot ask the user themselves. The task can then be executed without its confirm token.",
    params(("task_id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The approved task", body = TaskView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "This key may not approve", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is no longer planned", body = ErrorBody),
        (status = 410, description = "The plan expired", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(task_id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    s.gw.approve(&caller, &task_id).await.map(Json)
}

/// The approval page a person opens from an approval URL.
#[utoipa::path(get, path = "/approve/{task_id}", operation_id = "approval_page",
    description = "An HTML page showing the plan with an Approve button (for a signed-in person).",
    params(("task_id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approval_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(task_id): Path<String>,
) -> Result<Html<String>, ApiError> {
    let view = s.gw.task(&caller, &task_id).await?;
    let steps: String = view
        .plan
        .iter()
        .map(|st| {
            let exact = serde_json::to_string_pretty(&st.action).unwrap_or_default();
            format!(
                "<li><p>{}</p><pre>{}</pre></li>",
                escape(&st.summary),
                escape(&exact)
            )
        })
        .collect();
    let can_approve = view.state == "planned";
    let button = if can_approve {
        format!(
            "<button id=approve>Approve</button><p id=result></p><script>document.getElementById('approve').onclick=async()=>{{const r=await fetch('/approve/{id}',{{method:'POST',credentials:'same-origin'}});document.getElementById('result').textContent=r.ok?'Approved. The caller can now execute it.':'Failed: '+(await r.text());}}</script>",
            id = escape(&view.task_id)
        )
    } else {
        format!(
            "<p>This task is {} and cannot be approved.</p>",
            escape(&view.state)
        )
    };
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>Approve {id}</title><h1>Approve plan {id}</h1><p>Intent <b>{intent}</b>, risk <b>{risk}</b>, digest <code>{digest}</code></p><ol>{steps}</ol>{button}",
        id = escape(&view.task_id),
        intent = escape(&view.intent),
        risk = view.est_risk.as_str(),
        digest = escape(&view.plan_digest),
    )))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `?exp=&sig=` of an artifact link.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LinkQuery {
    /// Expiry, unix seconds.
    pub exp: Option<i64>,
    /// Signature of the link.
    pub sig: Option<String>,
}

/// An artifact's bytes.
#[utoipa::path(get, path = "/artifacts/{id}", operation_id = "get_artifact",
    description = "The bytes of an artifact with its content type. Use the signed link from a result (no key needed until it expires) or a key that owns the task.",
    params(("id" = String, Path, description = "Artifact id"), LinkQuery),
    responses((status = 200, description = "The bytes, with the artifact's media type (screenshots: image/png or image/jpeg; program output: text/plain)",
            content((Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (String = "text/plain; charset=utf-8"), (Vec<u8> = "application/octet-stream"))),
        (status = 401, description = "No valid link or key", body = ErrorBody),
        (status = 403, description = "The link's signature is wrong", body = ErrorBody),
        (status = 404, description = "No such artifact", body = ErrorBody),
        (status = 410, description = "The link expired", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn artifact(
    State(s): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let gw = &s.gw;
    let q = query.map(|Query(q)| q).unwrap_or(LinkQuery {
        exp: None,
        sig: None,
    });
    let row = gw.artifacts.get(&id).await?;
    match (q.exp, q.sig.as_deref()) {
        (Some(exp), Some(sig)) => match gw.artifacts.check_link(&id, exp, sig) {
            Ok(()) => {}
            Err(LinkError::Expired) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "link_expired",
                    "this artifact link expired; GET /tasks/{id} gives fresh links",
                ));
            }
            Err(LinkError::BadSignature) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "bad_link",
                    "this artifact link's signature is wrong",
                ));
            }
        },
        _ => {
            let (parts, _) = req.into_parts();
            let refused =
                |e: AuthError| ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string());
            let (caller, receipt) = super::identify(gw, &parts, &[]).await.map_err(refused)?;
            receipt.confirm().await.map_err(refused)?;
            let visible = row.as_ref().is_some_and(|r| {
                r.key_id == caller.key_id
                    || gw
                        .policy
                        .profile(&caller.profile)
                        .is_some_and(crate::policy::Profile::is_approver)
            });
            if !visible {
                return Err(ApiError::not_found("artifact", &id));
            }
        }
    }
    let Some(row) = row else {
        return Err(ApiError::not_found("artifact", &id));
    };
    let file = tokio::fs::File::open(&row.path).await.map_err(|e| {
        ApiError::internal(format!("artifact {id} is recorded but unreadable: {e}"))
    })?;
    let body = Body::from_stream(tokio_util_stream(file));
    Ok((
        [
            (header::CONTENT_TYPE, row.media_type.clone()),
            (header::CONTENT_LENGTH, row.bytes.to_string()),
            (header::CACHE_CONTROL, "private, max-age=300".to_string()),
            (
                header::HeaderName::from_static("x-content-type-options"),
                "nosniff".to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Streams a file in chunks without loading it whole.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

/// Liveness.
#[utoipa::path(get, path = "/health", operation_id = "health",
    description = "Liveness: the gateway answers.",
    responses((status = 200, description = "Alive", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store and the desktop answer.
#[utoipa::path(get, path = "/ready", operation_id = "ready",
    description = "Readiness: the store and the desktop answer.",
    responses((status = 200, description = "Ready", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Not ready; says which part", body = Object)),
    security(("bearer" = [])))]
pub async fn ready(State(s): State<AppState>) -> Response {
    let gw = Arc::clone(&s.gw);
    let (store, desktop) = tokio::join!(gw.store.ping(), gw.desktop.ready());
    let body = json!({
        "store": store.as_ref().map_or_else(|e| e.to_string(), |()| "ok".into()),
        "desktop": if desktop { "ok" } else { "unreachable" },
    });
    let status = if store.is_ok() && desktop {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics",
    description = "Prometheus text metrics.",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.gw.metrics.render(),
    )
        .into_response()
}

/// Unknown routes get our error shape.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no route {} {}; see /openapi.json",
            req.method(),
            req.uri().path()
        ),
    )
}
