//! The gateway's operations, independent of transport: the HTTP API and the
//! MCP server both call these. Plan → approve → execute, with the confirm
//! token bound to key id, plan digest and expiry, single-use, stored.

use crate::artifacts::{ArtifactRef, Artifacts};
use crate::audit::AuditLog;
use crate::auth::{Authenticator, Caller, now_s, token_hash};
use crate::bottle::{BOTTLE_DIR, Bottle};
use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::events::{EventBus, kind};
use crate::exec::{Executor, Outcome};
use crate::intents::{self, INTENTS, PlanCtx, PlanError};
use crate::metrics::Metrics;
use crate::plan::{Plan, Risk, Step};
use crate::policy::{Policy, Profile};
use axum::http::StatusCode;
use base64::Engine;
use bytebot_agent::desktop::DesktopClient;
use bytebot_store::{Store, TaskRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use utoipa::ToSchema;

/// `POST /plan` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"intent": "screenshot", "args": {"format": "png"}}))]
pub struct PlanRequest {
    /// One of `screenshot`, `open_app`, `browse`, `edit_file`, `run`, `task`, or `agent_step`
    /// (approve the step an agent task stopped at; `/execute` hands these out as `next_plan`).
    pub intent: String,
    /// The intent's arguments (see `/capabilities` for each schema).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Value,
}

/// `POST /plan` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanResponse {
    /// Id of the planned task.
    pub task_id: String,
    /// The steps, human-readable and exact.
    pub plan: Vec<Step>,
    /// Estimated risk.
    pub est_risk: Risk,
    /// Single-use token that approves exactly this plan for this key.
    pub confirm_token: String,
    /// When the token expires, unix seconds.
    pub expires_at: i64,
    /// SHA-256 of the plan's canonical JSON.
    pub plan_digest: String,
    /// Whether execute needs the token (false when the profile auto-approves this risk).
    pub needs_approval: bool,
    /// Where a person can approve this plan instead.
    pub approval_url: String,
}

/// `POST /execute` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The planned task.
    pub task_id: String,
    /// The token from `/plan`; may be left out when a person approved the
    /// task or the profile auto-approves its risk.
    #[serde(default)]
    pub confirm_token: Option<String>,
    /// If given, must equal the planned intent.
    #[serde(default)]
    pub intent: Option<String>,
    /// If given, must equal the planned arguments.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
}

/// What a step observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Observation {
    /// Step number, from 0.
    pub step: usize,
    /// Whether the step succeeded.
    pub ok: bool,
    /// What happened, in words.
    pub text: String,
    /// Step-specific details (exit code, window, bytes written…).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub data: Value,
}

/// `POST /execute` answer (and a finished task's result).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecuteResponse {
    /// The task.
    pub task_id: String,
    /// `succeeded`, `failed`, `cancelled`, `needs_approval` (an agent stopped before a risky
    /// step: see `next_plan`), or `running` (with `?wait=false`).
    pub status: String,
    /// One observation per step that ran.
    pub observations: Vec<Observation>,
    /// Files the task produced, with signed links.
    pub artifacts: Vec<ArtifactRefOut>,
    /// With `needs_approval`: the follow-up plan for the step the agent stopped at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_plan: Option<NextPlan>,
}

/// A follow-up plan a run stopped for: the one step an agent task wants to take that its
/// model's provider flagged (intent `agent_step`). Approve and execute it like any plan; cancel
/// it (`POST /tasks/{id}/cancel`) to cancel the agent task instead.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NextPlan {
    /// Id of the follow-up task.
    pub task_id: String,
    /// Its steps.
    pub plan: Vec<Step>,
    /// Its risk.
    pub est_risk: Risk,
    /// Its single-use token: only in the live `/execute` answer, never stored or in events
    /// (plan `agent_step` again, or have a person approve, to execute without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_token: Option<String>,
    /// When the token expires, unix seconds.
    pub expires_at: i64,
    /// Its digest.
    pub plan_digest: String,
    /// Where a person can approve it instead.
    pub approval_url: String,
    /// Why the run stopped, in the agent's words.
    pub reason: String,
}

impl NextPlan {
    /// The follow-up from a fresh plan answer.
    pub fn from_plan(p: PlanResponse, reason: String) -> NextPlan {
        NextPlan {
            task_id: p.task_id,
            plan: p.plan,
            est_risk: p.est_risk,
            confirm_token: Some(p.confirm_token),
            expires_at: p.expires_at,
            plan_digest: p.plan_digest,
            approval_url: p.approval_url,
            reason,
        }
    }

    /// The same without its token, for the store and the event stream.
    fn without_token(&self) -> NextPlan {
        NextPlan {
            confirm_token: None,
            ..self.clone()
        }
    }
}

/// Artifact reference in results (same as [`ArtifactRef`], kept for the schema name).
pub type ArtifactRefOut = ArtifactRef;

/// `GET /tasks/{id}` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskView {
    /// The task.
    pub task_id: String,
    /// Its intent.
    pub intent: String,
    /// Its arguments.
    #[schema(value_type = Object)]
    pub args: Value,
    /// `planned`, `running`, `succeeded`, `failed`, `cancelled`, `needs_approval` or `expired`.
    pub state: String,
    /// The plan.
    pub plan: Vec<Step>,
    /// Its risk.
    pub est_risk: Risk,
    /// Its digest.
    pub plan_digest: String,
    /// Token expiry, unix seconds.
    pub expires_at: i64,
    /// Who approved it at the approval page, if anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Observations of a finished task.
    pub observations: Vec<Observation>,
    /// With state `needs_approval`: the follow-up plan (without its token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_plan: Option<NextPlan>,
    /// Its artifacts.
    pub artifacts: Vec<ArtifactRef>,
    /// Created, unix seconds.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
}

/// One intent as `/capabilities` describes it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IntentInfo {
    /// JSON Schema of its `args`.
    #[schema(value_type = Object)]
    pub args: Value,
    /// Its risk.
    pub risk: Risk,
    /// Whether executing it needs approval under this caller's profile.
    pub needs_approval: bool,
}

/// `GET /capabilities` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Capabilities {
    /// Capability names this caller has (`screenshot`, `app.open`, `browser`, `fs.read`, `fs.write`, `shell`, `agent`).
    pub caps: Vec<String>,
    /// Allowed intents with their argument schemas and risks.
    pub intents: BTreeMap<String, IntentInfo>,
    /// Limits that apply to this caller.
    #[schema(value_type = Object)]
    pub limits: Value,
    /// The caller's key id and profile.
    pub key_id: String,
    /// Its policy profile.
    pub profile: String,
}

/// Everything the gateway needs, shared by all requests.
pub struct Gateway {
    /// Settings.
    pub config: GatewayConfig,
    /// The policy.
    pub policy: Policy,
    /// Keys and nonce cache.
    pub auth: Authenticator,
    /// The store.
    pub store: Store,
    /// Event numbering, storage and broadcast.
    pub events: EventBus,
    /// Artifact files and links.
    pub artifacts: Artifacts,
    /// The audit log.
    pub audit: AuditLog,
    /// The desktop.
    pub desktop: DesktopClient,
    /// The workspace folder (for `run`).
    pub workspace: PathBuf,
    /// The sandbox every `run` executes in.
    pub bottle: Bottle,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Base URL for links (set from the bound address when not configured).
    public_url: std::sync::RwLock<String>,
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Set when the server stops, so open event streams end and a graceful
    /// shutdown does not wait for them forever.
    stopping: watch::Sender<bool>,
    /// The agent the `task` intent hands over to, when one runs in this process.
    agent: std::sync::OnceLock<Arc<bytebot_agent::service::Agent>>,
}

/// Where the gateway keeps its files.
pub struct Paths {
    /// Data folder (artifacts, audit log, link key, and the bottle's files in `bottle/`).
    pub data_dir: PathBuf,
    /// Workspace folder.
    pub workspace: PathBuf,
}

impl Gateway {
    /// Builds the gateway: loads the policy, checks that every key's profile
    /// exists, opens the audit log and artifact folder.
    pub async fn new(
        config: GatewayConfig,
        policy: Policy,
        main_token: &str,
        store: Store,
        paths: Paths,
    ) -> Result<Arc<Self>, String> {
        let auth = Authenticator::new(&config, main_token, store.clone()).await?;
        for (id, profile) in auth.profiles() {
            if policy.profile(profile).is_none() {
                let known: Vec<&str> = policy.profile_names().collect();
                return Err(format!(
                    "gateway: key \"{id}\" uses profile \"{profile}\", which the policy does not define (profiles: {})",
                    known.join(", ")
                ));
            }
        }
        let events = EventBus::new(store.clone())
            .await
            .map_err(|e| format!("store: cannot read events: {e}"))?;
        let link_key = load_or_create_key(&paths.data_dir.join("gateway-link.key"))?;
        let artifacts = Artifacts::new(
            paths.data_dir.join("artifacts"),
            link_key,
            config.artifact_ttl_s,
            store.clone(),
        )
        .map_err(|e| format!("cannot create the artifact folder: {e}"))?;
        let audit = AuditLog::open(&paths.data_dir.join("audit.log"))
            .map_err(|e| format!("cannot open the audit log: {e}"))?;
        let desktop_token = config
            .desktop_token
            .clone()
            .unwrap_or_else(|| main_token.to_string());
        let desktop = DesktopClient::new(&config.desktop_url, &desktop_token)
            .map_err(|e| format!("cannot build the desktop client: {e}"))?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen))
            .trim_end_matches('/')
            .to_string();
        let bottle = Bottle::new(config.bottle_init.clone(), paths.data_dir.join(BOTTLE_DIR));
        Ok(Arc::new(Self {
            config,
            policy,
            auth,
            store,
            events,
            artifacts,
            audit,
            desktop,
            workspace: paths.workspace,
            bottle,
            metrics: Metrics::new(),
            public_url: std::sync::RwLock::new(public_url),
            running: Mutex::new(HashMap::new()),
            agent: std::sync::OnceLock::new(),
            stopping: watch::channel(false).0,
        }))
    }

    /// A receiver that turns true when the server begins to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Tells open event streams to end (the server is stopping).
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Base URL for links a person opens.
    pub fn public_url(&self) -> String {
        self.public_url
            .read()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// Uses the address actually bound (port 0 → a real port) for links,
    /// unless `public_url` is configured.
    pub fn bound_to(&self, addr: std::net::SocketAddr) {
        if self.config.public_url.is_none()
            && let Ok(mut u) = self.public_url.write()
        {
            *u = format!("http://{addr}");
        }
    }

    /// The caller's profile (it exists: checked at start).
    pub fn profile(&self, caller: &Caller) -> Result<&Profile, ApiError> {
        self.policy.profile(&caller.profile).ok_or_else(|| {
            ApiError::internal(format!(
                "profile \"{}\" vanished from the policy",
                caller.profile
            ))
        })
    }

    /// Lets the `task` intent hand over to `agent` (only the first call counts).
    pub fn attach_agent(&self, agent: Arc<bytebot_agent::service::Agent>) {
        let _ = self.agent.set(agent);
    }

    /// The agent, when one is attached and has a model to run tasks with.
    pub fn agent(&self) -> Option<&Arc<bytebot_agent::service::Agent>> {
        self.agent
            .get()
            .filter(|a| a.catalog.default_model.is_some())
    }

    /// What this caller may do.
    pub fn capabilities(&self, caller: &Caller) -> Result<Capabilities, ApiError> {
        let profile = self.profile(caller)?;
        let mut intents = BTreeMap::new();
        let allowed = |name: &str| match name {
            "task" | intents::AGENT_STEP => {
                self.agent().is_some() && profile.check_intent("task").is_ok()
            }
            _ => profile.check_intent(name).is_ok(),
        };
        for name in INTENTS.into_iter().chain([intents::AGENT_STEP]) {
            if !allowed(name) {
                continue;
            }
            if let Some((args, risk)) = intents::intent_schema(name) {
                intents.insert(
                    name.to_string(),
                    IntentInfo {
                        args,
                        risk,
                        needs_approval: profile.needs_approval(risk),
                    },
                );
            }
        }
        let caps = profile
            .caps()
            .into_iter()
            .filter(|c| *c != "agent" || self.agent().is_some())
            .map(str::to_string)
            .collect();
        let run = profile.run_limits();
        Ok(Capabilities {
            caps,
            intents,
            limits: json!({
                "timeout_s": run.timeout_s,
                "max_timeout_s": run.max_timeout_s,
                "max_upload_bytes": self.config.max_body_bytes,
                "max_output_bytes": run.max_output_bytes,
                "memory_mb": run.memory_mb,
                "processes": run.processes,
                "network": run.network,
                "network_private": run.network_private,
                "confirm_ttl_s": self.config.confirm_ttl_s,
                "artifact_ttl_s": self.config.artifact_ttl_s,
                "rate_limit_per_minute": profile.rate_limit().per_minute,
            }),
            key_id: caller.key_id.clone(),
            profile: caller.profile.clone(),
        })
    }

    /// Plans a request; stores the task and its token hash.
    pub async fn plan(&self, caller: &Caller, req: PlanRequest) -> Result<PlanResponse, ApiError> {
        let profile = self.profile(caller)?;
        let ctx = PlanCtx {
            profile,
            desktop: &self.desktop,
            workspace: &self.workspace,
            bottle: &self.bottle,
            browser_app: &self.config.browser_app,
            agent: self.agent().map(|a| a.as_ref()),
            key_id: &caller.key_id,
        };
        let plan = match intents::plan(&ctx, &req.intent, &req.args).await {
            Ok(p) => p,
            Err(e) => {
                let err = plan_error(e);
                self.metrics.plan(&req.intent, err.detail.code.as_str());
                self.audit.record(
                    "plan.refused",
                    Some(&caller.key_id),
                    json!({"intent": req.intent, "code": err.detail.code, "rule": err.detail.rule, "reason": err.detail.message}),
                );
                return Err(err);
            }
        };
        let digest = plan.digest();
        let task_id = format!("t_{}", uuid::Uuid::now_v7().simple());
        let token = new_token();
        let now = now_s();
        let expires_at = now + self.config.confirm_ttl_s as i64;
        let needs_approval = profile.needs_approval(plan.risk);
        let row = TaskRow {
            id: task_id.clone(),
            key_id: caller.key_id.clone(),
            intent: plan.intent.clone(),
            args_json: plan.args.to_string(),
            plan_json: serde_json::to_string(&plan)
                .map_err(|e| ApiError::internal(format!("cannot encode the plan: {e}")))?,
            plan_digest: digest.clone(),
            risk: plan.risk.as_str().to_string(),
            state: "planned".into(),
            token_hash: hex::encode(token_hash(&token)),
            expires_at,
            approved_at: None,
            approved_by: None,
            token_used_at: None,
            result_json: None,
            created_at: now,
            updated_at: now,
        };
        let event = json!({"intent": plan.intent, "plan": plan.steps, "est_risk": plan.risk, "plan_digest": digest, "expires_at": expires_at});
        let (stored, published) = tokio::join!(
            self.store.insert_task(&row),
            self.events
                .publish(&task_id, &caller.key_id, kind::PLAN_CREATED, event)
        );
        stored?;
        published?;
        self.metrics.plan(&plan.intent, "planned");
        self.audit.record(
            "plan.created",
            Some(&caller.key_id),
            json!({"task_id": task_id, "intent": plan.intent, "risk": plan.risk, "plan_digest": digest}),
        );
        Ok(PlanResponse {
            approval_url: format!("{}/approve/{task_id}", self.public_url()),
            task_id,
            plan: plan.steps,
            est_risk: plan.risk,
            confirm_token: token,
            expires_at,
            plan_digest: digest,
            needs_approval,
        })
    }

    async fn own_task(&self, caller: &Caller, id: &str) -> Result<TaskRow, ApiError> {
        let task = self.store.get_task(id).await?;
        match task {
            Some(t) if t.key_id == caller.key_id || self.is_approver(caller) => Ok(t),
            _ => Err(ApiError::not_found("task", id)),
        }
    }

    fn is_approver(&self, caller: &Caller) -> bool {
        self.policy
            .profile(&caller.profile)
            .is_some_and(Profile::is_approver)
    }

    /// Checks everything that binds an execute call to its plan, then claims
    /// the task atomically (exactly one of concurrent callers wins).
    async fn authorize_execute(
        &self,
        caller: &Caller,
        req: &ExecuteRequest,
    ) -> Result<(TaskRow, Plan, &'static str), ApiError> {
        let task = self.store.get_task(&req.task_id).await?;
        let Some(task) = task else {
            return Err(ApiError::not_found("task", &req.task_id));
        };
        if task.key_id != caller.key_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_key",
                "this task was planned by another key; a confirm token only works for the key that planned it",
            ));
        }
        let plan: Plan = serde_json::from_str(&task.plan_json)
            .map_err(|e| ApiError::internal(format!("stored plan unreadable: {e}")))?;
        if plan.digest() != task.plan_digest {
            return Err(ApiError::internal(
                "the stored plan does not match its digest; refusing to run it",
            ));
        }
        if let Some(intent) = &req.intent
            && intent != &plan.intent
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "plan_mismatch",
                format!(
                    "intent \"{intent}\" differs from the approved plan's \"{}\"; execute runs only the stored plan — plan again to change it",
                    plan.intent
                ),
            )
            .with_field("intent"));
        }
        if let Some(args) = &req.args
            && args != &plan.args
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "plan_mismatch",
                "args differ from the approved plan's; execute runs only the stored plan — plan again to change them",
            )
            .with_field("args"));
        }
        let approved_via = match &req.confirm_token {
            Some(token) => {
                let presented = hex::encode(token_hash(token));
                if !bool::from(presented.as_bytes().ct_eq(task.token_hash.as_bytes())) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "token_mismatch",
                        "this confirm token was not issued for this task and plan",
                    )
                    .with_field("confirm_token"));
                }
                "token"
            }
            None if task.approved_at.is_some() => "person",
            None if !self.profile(caller)?.needs_approval(plan.risk) => "auto",
            None => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "approval_required",
                    format!(
                        "this {} risk plan needs approval: send the confirm_token from /plan, or have a person approve it at /approve/{}",
                        plan.risk.as_str(),
                        task.id
                    ),
                )
                .with_field("confirm_token"));
            }
        };
        if task.token_used_at.is_some() || task.state != "planned" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "token_used",
                format!(
                    "task {} was already executed or cancelled (state {}); a confirm token works once — plan again",
                    task.id, task.state
                ),
            ));
        }
        let now = now_s();
        if now > task.expires_at {
            return Err(ApiError::new(
                StatusCode::GONE,
                "token_expired",
                format!(
                    "the confirm token expired {} s ago; plan again",
                    now - task.expires_at
                ),
            ));
        }
        if !self.store.claim_task(&task.id, now).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "token_used",
                format!(
                    "task {} is already being executed; a confirm token works once",
                    task.id
                ),
            ));
        }
        Ok((task, plan, approved_via))
    }

    /// Executes the stored plan. With `wait == false` it returns at once
    /// with status `running`; the events tell the rest.
    pub async fn execute(
        self: &Arc<Self>,
        caller: &Caller,
        req: ExecuteRequest,
        wait: bool,
    ) -> Result<ExecuteResponse, ApiError> {
        let (task, plan, via) = match self.authorize_execute(caller, &req).await {
            Ok(v) => v,
            Err(e) => {
                self.metrics.execution("unknown", e.detail.code.as_str());
                self.audit.record(
                    "execute.refused",
                    Some(&caller.key_id),
                    json!({"task_id": req.task_id, "code": e.detail.code, "reason": e.detail.message}),
                );
                return Err(e);
            }
        };
        self.audit.record(
            "execute.approved",
            Some(&caller.key_id),
            json!({"task_id": task.id, "intent": plan.intent, "via": via, "plan_digest": task.plan_digest}),
        );
        let (cancel_tx, cancel_rx) = watch::channel(false);
        if let Ok(mut running) = self.running.lock() {
            running.insert(task.id.clone(), cancel_tx);
        }
        let gw = Arc::clone(self);
        let caller = caller.clone();
        // The task is claimed: from here on nothing may wait in the request
        // future, or a client hanging up would leave it `running` forever.
        let run = async move {
            if let Err(e) = gw
                .events
                .publish(
                    &task.id,
                    &task.key_id,
                    kind::PLAN_APPROVED,
                    json!({"via": via, "plan_digest": task.plan_digest}),
                )
                .await
            {
                tracing::error!(task_id = task.id, error = %e, "cannot store the plan.approved event");
            }
            let executor = Executor {
                gw: &gw,
                task_id: &task.id,
                key_id: &task.key_id,
                caller: &caller,
                cancel: cancel_rx,
            };
            let outcome = executor.run(&plan).await;
            gw.finish(&task, &plan, outcome).await
        };
        // Always its own task: an approved run must not stop half-way (task
        // left `running`, no task.finished) because the client hung up and
        // the request future was dropped.
        let task_id = req.task_id.clone();
        let handle = tokio::spawn(async move {
            let result = run.await;
            if let Err(e) = &result {
                tracing::error!(task_id, error = %e.detail.message, "execution failed");
            }
            result
        });
        if wait {
            handle.await.map_err(|e| {
                ApiError::internal(format!("the execution task ended abnormally: {e}"))
            })?
        } else {
            Ok(ExecuteResponse {
                task_id: req.task_id,
                status: "running".into(),
                observations: Vec::new(),
                artifacts: Vec::new(),
                next_plan: None,
            })
        }
    }

    async fn finish(
        &self,
        task: &TaskRow,
        plan: &Plan,
        outcome: Outcome,
    ) -> Result<ExecuteResponse, ApiError> {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&task.id);
        }
        let response = ExecuteResponse {
            task_id: task.id.clone(),
            status: outcome.status.to_string(),
            observations: outcome.observations,
            artifacts: outcome.artifacts,
            next_plan: outcome.next_plan,
        };
        // A confirm token is a secret: stored and published only as its hash (in its task).
        let next_plan = response.next_plan.as_ref().map(NextPlan::without_token);
        let result_json = serde_json::to_string(&ExecuteResponse {
            next_plan: next_plan.clone(),
            ..response.clone()
        })
        .unwrap_or_default();
        // A cancel that raced the end keeps the task cancelled; either way
        // the observations are kept, so GET /tasks shows what the run did.
        let current = self.store.get_task(&task.id).await?;
        let state = match current.as_ref().map(|t| t.state.as_str()) {
            None | Some("running") => Some(response.status.as_str()),
            Some("cancelled") => Some("cancelled"),
            Some(_) => None,
        };
        if let Some(state) = state {
            self.store
                .set_task_state(&task.id, state, Some(&result_json), now_s())
                .await?;
        }
        self.events
            .publish(
                &task.id,
                &task.key_id,
                kind::TASK_FINISHED,
                json!({"status": response.status, "observations": response.observations, "artifacts": response.artifacts, "next_plan": next_plan}),
            )
            .await?;
        self.metrics.execution(&plan.intent, &response.status);
        self.audit.record(
            "execute.finished",
            Some(&task.key_id),
            json!({"task_id": task.id, "intent": plan.intent, "status": response.status}),
        );
        Ok(response)
    }

    /// A task as the caller may see it.
    pub async fn task(&self, caller: &Caller, id: &str) -> Result<TaskView, ApiError> {
        let t = self.own_task(caller, id).await?;
        let plan: Plan = serde_json::from_str(&t.plan_json)
            .map_err(|e| ApiError::internal(format!("stored plan unreadable: {e}")))?;
        let result: Option<ExecuteResponse> = t
            .result_json
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        let state = if t.state == "planned" && now_s() > t.expires_at {
            "expired".to_string()
        } else {
            t.state.clone()
        };
        Ok(TaskView {
            task_id: t.id.clone(),
            intent: t.intent,
            args: plan.args,
            state,
            plan: plan.steps,
            est_risk: plan.risk,
            plan_digest: t.plan_digest,
            expires_at: t.expires_at,
            approved_by: t.approved_by,
            next_plan: result.as_ref().and_then(|r| r.next_plan.clone()),
            observations: result.map(|r| r.observations).unwrap_or_default(),
            artifacts: self.artifacts.of_task(&t.id).await?,
            created_at: t.created_at,
            updated_at: t.updated_at,
        })
    }

    /// Cancels a planned or running task.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<TaskView, ApiError> {
        let t = self.own_task(caller, id).await?;
        let state = self.store.cancel_task(&t.id, now_s()).await?;
        if state.as_deref() == Some("cancelled") {
            self.cancel_agent_step(&t).await;
            if let Ok(running) = self.running.lock()
                && let Some(tx) = running.get(&t.id)
            {
                let _ = tx.send(true);
            }
            self.audit.record(
                "task.cancelled",
                Some(&caller.key_id),
                json!({"task_id": t.id}),
            );
        }
        self.task(caller, id).await
    }

    /// Refusing an agent's risky step (cancelling its `agent_step` plan) cancels the agent task:
    /// left waiting, it would go on unwatched or hang forever.
    async fn cancel_agent_step(&self, t: &TaskRow) {
        if t.intent != intents::AGENT_STEP || t.state != "planned" {
            return;
        }
        let Some(agent) = self.agent() else {
            return;
        };
        let agent_task = serde_json::from_str::<Value>(&t.args_json)
            .ok()
            .and_then(|a| a["agent_task_id"].as_str().map(str::to_string));
        if let Some(agent_task) = agent_task {
            match agent.cancel(&agent_task).await {
                Ok(_) => self.audit.record(
                    "agent_task.cancelled",
                    Some(&t.key_id),
                    json!({"task_id": t.id, "agent_task_id": agent_task}),
                ),
                Err(e) => {
                    tracing::warn!(task_id = t.id, agent_task, error = %e, "cannot cancel the agent task")
                }
            }
        }
    }

    /// A person approves a planned task (approver profiles only).
    pub async fn approve(&self, caller: &Caller, id: &str) -> Result<TaskView, ApiError> {
        if !self.is_approver(caller) {
            self.audit.record(
                "approve.refused",
                Some(&caller.key_id),
                json!({"task_id": id}),
            );
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_an_approver",
                format!(
                    "key \"{}\" (profile \"{}\") may not approve plans; a person approves with an approver key (policy: \"approver\": true)",
                    caller.key_id, caller.profile
                ),
            ));
        }
        let t = self.own_task(caller, id).await?;
        let now = now_s();
        if now > t.expires_at {
            return Err(ApiError::new(
                StatusCode::GONE,
                "token_expired",
                "this plan expired before it was approved; plan again",
            ));
        }
        if !self.store.approve_task(&t.id, &caller.key_id, now).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_planned",
                format!("task {} is {} and can no longer be approved", t.id, t.state),
            ));
        }
        self.events
            .publish(
                &t.id,
                &t.key_id,
                kind::PLAN_APPROVED,
                json!({"via": "person", "by": caller.key_id, "plan_digest": t.plan_digest}),
            )
            .await?;
        self.audit.record(
            "plan.approved",
            Some(&caller.key_id),
            json!({"task_id": t.id, "plan_digest": t.plan_digest}),
        );
        self.task(caller, id).await
    }
}

/// Maps a planning failure to its API status.
fn plan_error(e: PlanError) -> ApiError {
    match e {
        PlanError::BadArgs { field, reason } => {
            ApiError::unprocessable(&field, format!("{field}: {reason}"))
        }
        PlanError::UnknownIntent(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_intent",
            e.to_string(),
        )
        .with_field("intent"),
        PlanError::Denied(d) => ApiError::new(
            StatusCode::FORBIDDEN,
            "denied",
            format!("denied by policy: {}", d.reason),
        )
        .with_rule(d.rule),
        PlanError::Unavailable(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
        }
        PlanError::Desktop(d) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "desktop_failed", d.to_string())
        }
    }
}

/// A random confirm token (256 bits, URL-safe).
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "ct_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Reads the artifact-link key, creating a random one (0600) on first start.
fn load_or_create_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(bytes) = std::fs::read(path)
        && bytes.len() >= 32
    {
        return Ok(bytes);
    }
    let key: [u8; 32] = rand::random();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(&key)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key.to_vec())
}
