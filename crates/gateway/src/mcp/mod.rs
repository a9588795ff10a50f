//! The gateway as an MCP server (rmcp): tools `bytebot_capabilities`,
//! `bytebot_plan`, `bytebot_execute` and `bytebot_screenshot` over the same
//! transport-independent operations as the HTTP API.
//!
//! The model only plans. The confirm token of each plan stays here (see
//! [`Approvals`]); `bytebot_execute` spends it only after a person accepted
//! the exact plan through MCP elicitation. A client without elicitation gets
//! the approval URL instead, and the task runs once a person approved it
//! there (the service then executes without a token). A profile that
//! auto-approves a risk needs neither.
//!
//! Two protocol eras are served: with `initialize` (2025-xx) the question is
//! an `elicitation/create` request sent while the tool call waits; on
//! 2026-07-28, which forbids server-to-client requests, the tool answers with
//! `InputRequiredResult` and the client calls again with the person's answer
//! and our opaque `requestState` handle.
//!
//! Transports: streamable HTTP at `/mcp` behind the gateway's authentication
//! ([`http_service`]; the caller comes from the request's extensions), and
//! stdio for `bytebot mcp` ([`serve_stdio`], one fixed caller).

mod approvals;
mod render;
mod tools;

pub use approvals::Approvals;

use crate::auth::{AuthMethod, Caller, now_s};
use crate::config::LOCAL_KEY_ID;
use crate::error::ApiError;
use crate::service::{ExecuteRequest, ExecuteResponse, Gateway, PlanRequest, TaskView};
use base64::Engine;
use render::Next;
use rmcp::model::{
    BooleanSchema, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema,
    Implementation, InputRequest, InputRequests, InputRequiredResult, InputResponses, JsonObject,
    ListToolsResult, PaginatedRequestParams, PrimitiveSchemaDefinition, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Screenshots up to this size also come back as MCP image content.
const MAX_INLINE_IMAGE_BYTES: i64 = 1024 * 1024;
/// At most this many images per result.
const MAX_INLINE_IMAGES: usize = 4;
/// The boolean a person sets to approve.
const APPROVE_FIELD: &str = "approve";
/// Key of our one question in `InputRequests`.
const ASK_KEY: &str = "bytebot_approval";

/// Why `bytebot mcp` could not serve.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// `--key` names no configured key.
    #[error("{0}")]
    UnknownKey(String),
    /// The MCP handshake on stdin/stdout failed.
    #[error("MCP over stdio could not start: {0}")]
    Start(String),
    /// The server task ended abnormally.
    #[error("MCP over stdio stopped unexpectedly: {0}")]
    Stopped(String),
}

/// One MCP server instance (cheap to clone: a session or request gets its own).
#[derive(Clone)]
pub struct McpServer {
    gw: Arc<Gateway>,
    approvals: Arc<Approvals>,
    /// The stdio caller; `None` on HTTP, where each request carries its own.
    caller: Option<Caller>,
}

/// How this request can ask a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asking {
    /// `elicitation/create` while the call waits (protocols with `initialize`).
    Request,
    /// `InputRequiredResult` and a second call (2026-07-28 and later).
    InputRequired,
}

/// What a person answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Approved,
    Refused(String),
}

impl McpServer {
    /// A server for `gw`; `caller` fixes who acts (stdio), else each HTTP
    /// request's authenticated caller is used.
    pub fn new(gw: Arc<Gateway>, approvals: Arc<Approvals>, caller: Option<Caller>) -> Self {
        Self {
            gw,
            approvals,
            caller,
        }
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        if let Some(c) = &self.caller {
            return Ok(c.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| {
                ErrorData::internal_error(
                    "no authenticated caller on this MCP request: /mcp must be served behind the gateway's authentication",
                    None,
                )
            })
    }

    async fn call(
        &self,
        req: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = self.caller(&ctx)?;
        let args = req.arguments.clone().unwrap_or_default();
        match req.name.as_ref() {
            tools::CAPABILITIES => Ok(self.capabilities(&caller)),
            tools::PLAN => Ok(self.plan(&caller, &args, &ctx).await),
            tools::EXECUTE => {
                let a: tools::ExecuteArgs = match tools::parse(&args) {
                    Ok(a) => a,
                    Err(e) => return Ok(failure(e)),
                };
                self.approve_and_run(&caller, Some(a.task_id), &req, &ctx)
                    .await
            }
            tools::SCREENSHOT => {
                if req.request_state.is_some() {
                    // The second round: the task was planned in the first.
                    return self.approve_and_run(&caller, None, &req, &ctx).await;
                }
                let plan = PlanRequest {
                    intent: "screenshot".into(),
                    args: Value::Object(args),
                };
                match self.gw.plan(&caller, plan).await {
                    Ok(p) => {
                        self.approvals.keep(
                            &caller.key_id,
                            &p.task_id,
                            p.confirm_token,
                            p.expires_at,
                            now_s(),
                        );
                        self.approve_and_run(&caller, Some(p.task_id), &req, &ctx)
                            .await
                    }
                    Err(e) => Ok(api_failure(&e)),
                }
            }
            other => Err(ErrorData::invalid_params(
                format!(
                    "unknown tool \"{other}\"; the tools are {}, {}, {} and {}",
                    tools::CAPABILITIES,
                    tools::PLAN,
                    tools::EXECUTE,
                    tools::SCREENSHOT
                ),
                None,
            )),
        }
    }

    fn capabilities(&self, caller: &Caller) -> CallToolResponse {
        match self.gw.capabilities(caller) {
            Ok(caps) => {
                let value = serde_json::to_value(&caps).unwrap_or(Value::Null);
                let text = serde_json::to_string_pretty(&caps).unwrap_or_default();
                complete(
                    format!(
                        "Key \"{}\" (profile \"{}\") may plan these intents; each runs only after approval unless needs_approval is false:\n{text}",
                        caps.key_id, caps.profile
                    ),
                    Some(value),
                    false,
                )
            }
            Err(e) => api_failure(&e),
        }
    }

    async fn plan(
        &self,
        caller: &Caller,
        args: &JsonObject,
        ctx: &RequestContext<RoleServer>,
    ) -> CallToolResponse {
        let a: tools::PlanArgs = match tools::parse(args) {
            Ok(a) => a,
            Err(e) => return failure(e),
        };
        let planned = self
            .gw
            .plan(
                caller,
                PlanRequest {
                    intent: a.intent,
                    args: a.args,
                },
            )
            .await;
        let mut p = match planned {
            Ok(p) => p,
            Err(e) => return api_failure(&e),
        };
        let now = now_s();
        // The token stays here; the model gets everything else.
        let token = std::mem::take(&mut p.confirm_token);
        self.approvals
            .keep(&caller.key_id, &p.task_id, token, p.expires_at, now);
        let next = if !p.needs_approval {
            Next::Auto
        } else if asking(ctx).is_some() {
            Next::Ask
        } else {
            Next::Url
        };
        let structured = json!({
            "task_id": p.task_id,
            "plan": p.plan,
            "est_risk": p.est_risk,
            "plan_digest": p.plan_digest,
            "expires_at": p.expires_at,
            "needs_approval": p.needs_approval,
            "approval_url": p.approval_url,
        });
        complete(render::plan_text(&p, next, now), Some(structured), false)
    }

    /// Runs a task once it is approved: by a person at the approval page,
    /// by the profile, or by the person answering here.
    async fn approve_and_run(
        &self,
        caller: &Caller,
        task_id: Option<String>,
        req: &CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let now = now_s();
        if let Some(handle) = &req.request_state {
            let Some(asked) = self.approvals.answer(handle, &caller.key_id, now) else {
                return Ok(failure(
                    "this approval answer belongs to no open question (unknown, already used, expired, or asked of another key); nothing ran — call the tool again to be asked again".into(),
                ));
            };
            if task_id.as_ref().is_some_and(|t| *t != asked) {
                return Ok(failure(format!(
                    "the approval answer is about task {asked}, not {}; nothing ran",
                    task_id.unwrap_or_default()
                )));
            }
            let answer = answer_from(req.input_responses.as_ref());
            return Ok(self.after_answer(caller, &asked, answer).await);
        }
        let Some(task_id) = task_id else {
            return Ok(failure("task_id is missing".into()));
        };
        let view = match self.gw.task(caller, &task_id).await {
            Ok(v) => v,
            Err(e) => return Ok(api_failure(&e)),
        };
        if view.state != "planned" {
            self.approvals.forget(&caller.key_id, &task_id);
            return Ok(failure(format!(
                "task {task_id} is {} and cannot run again; plan again with bytebot_plan",
                view.state
            )));
        }
        let auto = match self.gw.profile(caller) {
            Ok(p) => !p.needs_approval(view.est_risk),
            Err(e) => return Ok(api_failure(&e)),
        };
        if view.approved_by.is_some() || auto {
            return Ok(self.run(caller, &task_id, None).await);
        }
        let held = self.approvals.token(&caller.key_id, &task_id, now);
        match (held, asking(ctx)) {
            (Some(_), Some(Asking::InputRequired)) => {
                let handle = self
                    .approvals
                    .ask(&caller.key_id, &task_id, view.expires_at, now);
                self.gw.audit.record(
                    "mcp.approval.asked",
                    Some(&caller.key_id),
                    json!({"task_id": task_id, "via": "input_required"}),
                );
                let mut requests = InputRequests::new();
                requests.insert(
                    ASK_KEY.to_string(),
                    InputRequest::Elicitation(ElicitRequest::new(question(&view, now))),
                );
                Ok(InputRequiredResult::new(Some(requests), Some(handle)).into())
            }
            (Some(_), Some(Asking::Request)) => {
                self.gw.audit.record(
                    "mcp.approval.asked",
                    Some(&caller.key_id),
                    json!({"task_id": task_id, "via": "elicitation"}),
                );
                let wait =
                    Duration::from_secs(u64::try_from(view.expires_at - now).unwrap_or(0).max(1));
                let asked = ctx
                    .peer
                    .create_elicitation_with_timeout(question(&view, now), Some(wait))
                    .await;
                let answer = match asked {
                    Ok(result) => answer_of(&result),
                    Err(e) => {
                        return Ok(failure(format!(
                            "asking the person in this client failed ({e}); nothing ran. A person can approve at {} and you call bytebot_execute again",
                            approval_url(&self.gw, &task_id)
                        )));
                    }
                };
                Ok(self.after_answer(caller, &task_id, answer).await)
            }
            (held, asking) => {
                let why = match (held, asking) {
                    (None, Some(_)) => {
                        "this MCP server does not hold the task's confirm token (it was planned elsewhere), so it cannot ask here"
                    }
                    _ => {
                        "this client cannot ask the user (it did not declare the elicitation capability)"
                    }
                };
                Ok(waiting(&view, &approval_url(&self.gw, &task_id), why))
            }
        }
    }

    async fn after_answer(
        &self,
        caller: &Caller,
        task_id: &str,
        answer: Answer,
    ) -> CallToolResponse {
        let recorded = match &answer {
            Answer::Approved => "approved".to_string(),
            Answer::Refused(why) => why.clone(),
        };
        self.gw.audit.record(
            "mcp.approval.answered",
            Some(&caller.key_id),
            json!({"task_id": task_id, "answer": recorded}),
        );
        match answer {
            Answer::Approved => match self.approvals.token(&caller.key_id, task_id, now_s()) {
                Some(token) => self.run(caller, task_id, Some(token)).await,
                None => failure(format!(
                    "the plan of task {task_id} expired before it could run; nothing ran — plan again"
                )),
            },
            Answer::Refused(why) => complete(
                format!(
                    "The person did not approve task {task_id} ({why}). Nothing ran; the task stays planned until it expires. Plan again to change it."
                ),
                Some(json!({"task_id": task_id, "status": "not_approved", "reason": why})),
                false,
            ),
        }
    }

    /// Executes with the held token, or without one when a person or the
    /// profile already approved; the service checks which applies.
    async fn run(&self, caller: &Caller, task_id: &str, token: Option<String>) -> CallToolResponse {
        let req = ExecuteRequest {
            task_id: task_id.to_string(),
            confirm_token: token,
            intent: None,
            args: None,
        };
        match self.gw.execute(caller, req, true).await {
            Ok(mut r) => {
                self.approvals.forget(&caller.key_id, task_id);
                // The follow-up's token stays here, like a plan's: the model only learns the
                // task id, and the person approves when it calls bytebot_execute with it.
                if let Some(next) = r.next_plan.as_mut()
                    && let Some(token) = next.confirm_token.take()
                {
                    self.approvals.keep(
                        &caller.key_id,
                        &next.task_id,
                        token,
                        next.expires_at,
                        now_s(),
                    );
                }
                self.result(&r).await
            }
            Err(e) => {
                if matches!(
                    e.detail.code.as_str(),
                    "token_used" | "token_expired" | "not_found" | "wrong_key"
                ) {
                    self.approvals.forget(&caller.key_id, task_id);
                }
                api_failure(&e)
            }
        }
    }

    /// The result as text, structured JSON with absolute links, and the
    /// small screenshots as images.
    async fn result(&self, r: &ExecuteResponse) -> CallToolResponse {
        let public = self.gw.public_url();
        let mut content = vec![ContentBlock::text(render::result_text(r, &public))];
        let images = r
            .artifacts
            .iter()
            .filter(|a| a.media_type.starts_with("image/") && a.bytes <= MAX_INLINE_IMAGE_BYTES)
            .take(MAX_INLINE_IMAGES);
        for a in images {
            // An image that cannot be read is still reachable by its link.
            if let Ok(Some(row)) = self.gw.artifacts.get(&a.id).await
                && let Ok(bytes) = tokio::fs::read(&row.path).await
            {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                content.push(ContentBlock::image(data, a.media_type.clone()));
            }
        }
        let mut structured = serde_json::to_value(r).unwrap_or(Value::Null);
        if let Some(list) = structured
            .get_mut("artifacts")
            .and_then(Value::as_array_mut)
        {
            for a in list {
                if let Some(url) = a.get("url").and_then(Value::as_str) {
                    let abs = render::absolute(&public, url);
                    a["url"] = Value::String(abs);
                }
            }
        }
        let mut result = if r.status == "succeeded" || r.next_plan.is_some() {
            CallToolResult::success(content)
        } else {
            CallToolResult::error(content)
        };
        result.structured_content = Some(structured);
        result.into()
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("bytebot", env!("CARGO_PKG_VERSION")).with_title("bytebot desktop"),
            )
            .with_instructions(
                "bytebot drives a real Linux desktop. Call bytebot_plan to get an exact plan (nothing runs), \
                 show it to the user, then bytebot_execute with its task_id: it runs only after a person \
                 approves that exact plan (asked in this client, or at the approval URL). \
                 bytebot_screenshot does plan, approval and execution of a screenshot in one call.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::all()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::get(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, ctx).await
    }
}

/// Whether, and how, this request can ask the person: the client must have
/// declared form elicitation (at `initialize`, or in the request's own
/// metadata on 2026-07-28).
fn asking(ctx: &RequestContext<RoleServer>) -> Option<Asking> {
    let form = ctx
        .client_capabilities()
        .and_then(|c| c.elicitation)
        .is_some_and(|e| e.form.is_some() || e.url.is_none());
    if !form {
        return None;
    }
    let stateless = ctx.protocol_version().is_some_and(|v| !v.has_initialize());
    Some(if stateless {
        Asking::InputRequired
    } else {
        Asking::Request
    })
}

/// The approval question: the plan in words, one required boolean.
fn question(view: &TaskView, now: i64) -> ElicitRequestParams {
    let approve = BooleanSchema::new()
        .title("Approve and run this plan")
        .description("Check to run exactly the plan shown, once. Leave unchecked or decline to leave it unrun.")
        .with_default(false);
    let mut properties = std::collections::BTreeMap::new();
    properties.insert(
        APPROVE_FIELD.to_string(),
        PrimitiveSchemaDefinition::Boolean(approve),
    );
    let schema = ElicitationSchema::new(properties)
        .with_required(vec![APPROVE_FIELD.to_string()])
        .with_title("Approve bytebot plan");
    ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: render::approval_message(view, now),
        requested_schema: schema,
    }
}

/// Only an explicit accept with `approve: true` approves.
fn answer_of(result: &ElicitResult) -> Answer {
    match result.action {
        ElicitationAction::Accept => {
            let approved = result
                .content
                .as_ref()
                .and_then(|c| c.get(APPROVE_FIELD))
                .and_then(Value::as_bool)
                == Some(true);
            if approved {
                Answer::Approved
            } else {
                Answer::Refused("accepted without checking \"approve\"".into())
            }
        }
        ElicitationAction::Decline => Answer::Refused("declined".into()),
        ElicitationAction::Cancel => Answer::Refused("cancelled".into()),
        _ => Answer::Refused("an answer this server does not know".into()),
    }
}

fn answer_from(responses: Option<&InputResponses>) -> Answer {
    let Some(raw) = responses.and_then(|r| r.get(ASK_KEY)) else {
        return Answer::Refused("no answer to the approval question was sent".into());
    };
    match serde_json::from_value::<ElicitResult>(raw.clone()) {
        Ok(result) => answer_of(&result),
        Err(e) => Answer::Refused(format!("the answer could not be read: {e}")),
    }
}

fn approval_url(gw: &Gateway, task_id: &str) -> String {
    format!("{}/approve/{task_id}", gw.public_url())
}

fn waiting(view: &TaskView, url: &str, why: &str) -> CallToolResponse {
    complete(
        format!(
            "Task {} (risk {}) is waiting for approval: {why}. Nothing has run. A person opens {url} , checks the plan and approves it with an approver key; then call bytebot_execute with task_id \"{}\" again. The plan expires at unix time {}.",
            view.task_id,
            view.est_risk.as_str(),
            view.task_id,
            view.expires_at
        ),
        Some(json!({
            "task_id": view.task_id,
            "status": "awaiting_approval",
            "approval_url": url,
            "expires_at": view.expires_at,
        })),
        false,
    )
}

fn complete(text: String, structured: Option<Value>, is_error: bool) -> CallToolResponse {
    let content = vec![ContentBlock::text(text)];
    let mut result = if is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = structured;
    result.into()
}

fn failure(message: String) -> CallToolResponse {
    complete(message, None, true)
}

fn api_failure(e: &ApiError) -> CallToolResponse {
    complete(
        render::error_text(e),
        serde_json::to_value(crate::error::ErrorBody {
            error: e.detail.clone(),
        })
        .ok(),
        true,
    )
}

/// The `/mcp` endpoint: rmcp's streamable HTTP service over [`McpServer`].
pub type McpService = StreamableHttpService<McpServer, LocalSessionManager>;

/// The streamable HTTP service for `/mcp`. Mount it inside the
/// authenticated router: every request then carries its [`Caller`].
/// Clones share sessions and held tokens.
pub fn http_service(gw: Arc<Gateway>) -> McpService {
    let approvals = Arc::new(Approvals::default());
    // Sessions (protocols with `initialize`) must outlive a person's think
    // time while a tool call waits for their answer.
    let idle = Duration::from_secs(gw.config.confirm_ttl_s.saturating_add(60).max(300));
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(idle);
    // The Host allow-list guards unauthenticated local servers against DNS
    // rebinding; here every request must carry a key (a rebinding page has
    // neither the token nor the host-bound cookie), and the gateway is
    // reached under names we cannot list (public_url, proxies, containers).
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(gw.config.max_body_bytes);
    StreamableHttpService::new(
        move || {
            Ok(McpServer::new(
                Arc::clone(&gw),
                Arc::clone(&approvals),
                None,
            ))
        },
        Arc::new(sessions),
        config,
    )
}

/// Ends the service's open streams and sessions (at server shutdown):
/// clients keep an MCP stream open for as long as they run, and a graceful
/// shutdown would otherwise wait for them forever.
pub fn stop(service: &McpService) {
    service.config.cancellation_token.cancel();
}

/// Who `bytebot mcp` acts as: the main token's key `local` (profile
/// `gateway.local_profile`), or the configured key `key_id`.
pub fn acting_as(gw: &Gateway, key_id: Option<&str>) -> Result<Caller, McpError> {
    let wanted = key_id.unwrap_or(LOCAL_KEY_ID);
    let found = gw
        .auth
        .profiles()
        .find(|(id, _)| *id == wanted)
        .map(|(id, profile)| (id.to_string(), profile.to_string()));
    match found {
        // Whoever runs `bytebot mcp` can read the config and its main token;
        // that is what a bearer caller proves, so it is recorded as one.
        Some((key_id, profile)) => Ok(Caller {
            key_id,
            profile,
            method: AuthMethod::Bearer,
        }),
        None => {
            let known: Vec<&str> = gw.auth.profiles().map(|(id, _)| id).collect();
            Err(McpError::UnknownKey(format!(
                "--key {wanted}: no such key; the keys are {} (gateway.keys in the config, plus \"{LOCAL_KEY_ID}\")",
                known.join(", ")
            )))
        }
    }
}

/// Serves MCP on stdin/stdout as `caller` until the client closes stdin.
/// Nothing else may write to stdout meanwhile (logs go to stderr).
pub async fn serve_stdio(gw: Arc<Gateway>, caller: Caller) -> Result<(), McpError> {
    let server = McpServer::new(gw, Arc::new(Approvals::default()), Some(caller));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| McpError::Stopped(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::plan::{Risk, Step};

    fn view() -> TaskView {
        TaskView {
            task_id: "t_9".into(),
            intent: "run".into(),
            args: json!({"argv": ["echo", "hi"]}),
            state: "planned".into(),
            plan: vec![Step {
                summary: "Run [\"echo\", \"hi\"]".into(),
                action: json!({"op": "run", "argv": ["echo", "hi"], "cwd": "."}),
            }],
            est_risk: Risk::High,
            plan_digest: "d".repeat(64),
            expires_at: 700,
            approved_by: None,
            observations: vec![],
            next_plan: None,
            artifacts: vec![],
            created_at: 100,
            updated_at: 100,
        }
    }

    #[test]
    fn only_an_explicit_accept_with_approve_true_approves() {
        let accept =
            |content: Value| ElicitResult::new(ElicitationAction::Accept).with_content(content);
        assert_eq!(
            answer_of(&accept(json!({"approve": true}))),
            Answer::Approved
        );
        assert!(matches!(
            answer_of(&accept(json!({"approve": false}))),
            Answer::Refused(_)
        ));
        assert!(matches!(
            answer_of(&accept(json!({"approve": "true"}))),
            Answer::Refused(_)
        ));
        assert!(matches!(answer_of(&accept(json!({}))), Answer::Refused(_)));
        assert!(matches!(
            answer_of(&ElicitResult::new(ElicitationAction::Accept)),
            Answer::Refused(_)
        ));
        assert_eq!(
            answer_of(
                &ElicitResult::new(ElicitationAction::Decline)
                    .with_content(json!({"approve": true}))
            ),
            Answer::Refused("declined".into())
        );
        assert_eq!(
            answer_of(&ElicitResult::new(ElicitationAction::Cancel)),
            Answer::Refused("cancelled".into())
        );
    }

    #[test]
    fn input_responses_are_read_from_our_key_only() {
        let mut r = InputResponses::new();
        r.insert(
            "other".into(),
            json!({"action": "accept", "content": {"approve": true}}),
        );
        assert!(matches!(answer_from(Some(&r)), Answer::Refused(_)));
        r.insert(
            ASK_KEY.into(),
            json!({"action": "accept", "content": {"approve": true}}),
        );
        assert_eq!(answer_from(Some(&r)), Answer::Approved);
        r.insert(ASK_KEY.into(), json!({"action": "sure"}));
        assert!(matches!(answer_from(Some(&r)), Answer::Refused(_)));
        assert!(matches!(answer_from(None), Answer::Refused(_)));
    }

    #[test]
    fn the_question_shows_the_plan_and_asks_one_required_boolean() {
        let q = serde_json::to_value(question(&view(), 100)).unwrap();
        assert_eq!(q["mode"], "form");
        let message = q["message"].as_str().unwrap();
        assert!(
            message.contains("t_9") && message.contains("risk high"),
            "{message}"
        );
        assert!(message.contains("\"argv\":[\"echo\",\"hi\"]"), "{message}");
        assert!(message.contains("expires in 600 s"), "{message}");
        let schema = &q["requestedSchema"];
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["approve"]));
        assert_eq!(schema["properties"]["approve"]["type"], "boolean");
        assert_eq!(schema["properties"]["approve"]["default"], false);
    }

    #[test]
    fn waiting_names_the_url_and_runs_nothing() {
        let r = waiting(&view(), "http://gw/approve/t_9", "no elicitation");
        let CallToolResponse::Complete(r) = r else {
            panic!("not complete")
        };
        let text = r.content[0].as_text().unwrap().text.clone();
        assert!(
            text.contains("http://gw/approve/t_9") && text.contains("Nothing has run"),
            "{text}"
        );
        assert_eq!(r.structured_content.unwrap()["status"], "awaiting_approval");
        assert_eq!(r.is_error, Some(false));
    }
}
