//! One task, step by step: model call → tool calls → results, each committed before the next.
//!
//! The stored conversation is the only state: after a crash the runner reads it back, answers
//! any call that was in flight with "not known to have run" and a fresh screenshot (never
//! repeating it blindly), and carries on. Caps (iterations, cost) and loop detection end in
//! NEEDS_HELP with a message, never in an endless loop.

use std::sync::Arc;
use std::time::Duration;

use bytebot_protocol::TaskStatus;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::act::{self, Produced};
use crate::context;
use crate::desktop::{DesktopClient, DesktopError};
use crate::model::{
    Block, Call, ChatMessage, ComputerAction, Image, ModelRequest, ModelResponse, ModelSpec,
    ProviderError, Role, ToolCall, ToolResult,
};
use crate::screen::{self, Scale};
use crate::service::Agent;
use crate::tools::{self, AgentCall, FinalStatus};

/// Said for calls after a failure in the same turn (Anthropic's batch rule, applied to all).
pub const NOT_EXECUTED: &str = "Not executed: an earlier computer action in this turn failed.";

/// Said for a call that was in flight when the agent stopped.
pub const IN_FLIGHT: &str = "Not known to have run: the agent restarted while this call was in flight. Look at this fresh screenshot before repeating it.";

/// Said with the fresh screenshot when a task resumes.
pub const RESUMED: &str =
    "The task resumed (after a pause, a hand-back or a restart). This is the screen now.";

/// Said when the model ends its turn without a tool call (once; the second time the task goes
/// to review).
const NUDGE: &str =
    "Continue with a tool call. When the task is done or you are stuck, call set_task_status.";

/// How a run ended (the task's status is already written).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task reached a status where it waits or is done.
    Finished(TaskStatus),
    /// The run was stopped from outside (cancel, lost lease, takeover, shutdown).
    Stopped(&'static str),
}

/// What can stop a run that is not the task's fault.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed; the task keeps its last committed step.
    #[error("{0}")]
    Store(#[from] bytebot_store::AgentStoreError),
    /// The blob store failed (a screenshot could not be kept or read).
    #[error("{0}")]
    Blob(#[from] bytebot_store::BlobError),
    /// The desktop could not be reached for a screenshot.
    #[error("desktop: {0}")]
    Desktop(#[from] DesktopError),
}

/// Everything one run needs.
pub struct Run<'a> {
    /// Shared agent state.
    pub agent: &'a Agent,
    /// The desktop this task drives.
    pub desktop: &'a DesktopClient,
    /// The task id.
    pub task_id: String,
    /// Our worker id (the lease owner).
    pub worker: String,
    /// Becomes true when the run must stop (cancel, lost lease, shutdown).
    pub stop: watch::Receiver<bool>,
    /// Screenshot width for the task's model (set at the start of [`Run::go`]).
    pub shot_width: Option<u32>,
}

/// One screenshot, kept as a blob and as bytes for this step.
struct Shot {
    image: Image,
}

/// The system prompt: what the agent is and how to finish.
fn system_prompt(screen: (u32, u32), display: (u32, u32)) -> String {
    format!(
        "You operate a Linux desktop (screen {}x{}, shown to you as {}x{} screenshots; use the \
         screenshot's coordinates). Use the computer tool for mouse and keyboard; prefer \
         click_text to click a visible label. Take a screenshot when unsure. When the task is \
         done call set_task_status with status \"completed\" and a short summary; if you cannot \
         go on, call it with \"needs_help\" and say what a person must do.",
        screen.0, screen.1, display.0, display.1
    )
}

impl Run<'_> {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Runs the task until it finishes, needs a person, or is stopped.
    pub async fn go(mut self) -> Result<Outcome, RunError> {
        let store = &self.agent.store;
        let Some(task) = store.get_agent_task(&self.task_id).await? else {
            return Ok(Outcome::Stopped("the task was deleted"));
        };
        if let Some(spec) = self.agent.catalog.model(&task.model).cloned() {
            self.shot_width = Some(self.scale_for(&spec).await?.image.0);
        }
        let (mut history, mut ids) = self.load().await?;
        let mut summary = store
            .latest_summary(&self.task_id)
            .await?
            .map(|r| (r.covers_up_to, r.content));
        // Calls that were in flight when the agent stopped: not repeated, answered honestly.
        let open = context::unanswered(&history);
        if open.iter().any(|c| !c.safety_checks.is_empty()) {
            // The run stopped for a person's approval of a provider's safety check; they
            // resumed the task, approving it or not.
            let safety = self.agent.safety_state(&self.task_id).await?;
            let mut approved = safety.approved;
            let mut failed = false;
            let mut finish = None;
            for call in open {
                let checked = !call.safety_checks.is_empty();
                if checked && approved && !failed && finish.is_none() {
                    // One approval covers the checks it was asked for, nothing later.
                    approved = false;
                    let (r, done) = self.execute(&call, true).await?;
                    failed = r.is_error;
                    finish = done;
                    let m = user(vec![Block::ToolResult(r)]);
                    ids.push(self.append(&m).await?);
                    history.push(m);
                    continue;
                }
                if checked && !failed && !safety.asked.contains(&call.id) {
                    // A later call with its own checks: ask again, it waits unanswered.
                    return self.ask_approval(&call).await;
                }
                let result = if failed {
                    error_result(&call.id, NOT_EXECUTED)
                } else if !call.safety_checks.is_empty() && !approved {
                    failed = true;
                    error_result(
                        &call.id,
                        &format!(
                            "Not executed: a person did not approve the safety check ({}).",
                            checks_text(&call)
                        ),
                    )
                } else {
                    let (r, done) = self.execute(&call, false).await?;
                    failed = r.is_error;
                    finish = finish.or(done);
                    r
                };
                let m = user(vec![Block::ToolResult(result)]);
                ids.push(self.append(&m).await?);
                history.push(m);
            }
            if let Some((status, message)) = finish {
                return self.finish_with(status, message).await;
            }
        } else if history.is_empty() || open.is_empty() {
            // A new task starts with the screen in view (saving the model a screenshot turn);
            // a resumed one (after a hand-back, a crash or help) continues from the screen as
            // it is now, not as the history last showed it.
            let shot = self.screenshot().await?;
            let text = if history.is_empty() {
                let mut text = task.description.clone();
                if let Some(files) = self.place_files().await? {
                    text.push_str("\n\n");
                    text.push_str(&files);
                }
                text
            } else {
                let mut text = RESUMED.to_string();
                if let Some(done) = self.persons_input(&task.model).await? {
                    text.push(' ');
                    text.push_str(&done);
                }
                text
            };
            let m = user(vec![
                Block::Text { text },
                Block::Image { image: shot.image },
            ]);
            ids.push(self.append(&m).await?);
            history.push(m);
        } else {
            let shot = self.screenshot().await?;
            for call in open {
                let r = ToolResult {
                    call_id: call.id.clone(),
                    is_error: true,
                    text: Some(IN_FLIGHT.into()),
                    image: Some(shot.image.clone()),
                    url: None,
                    acknowledged_safety_checks: vec![],
                };
                let m = user(vec![Block::ToolResult(r)]);
                ids.push(self.append(&m).await?);
                history.push(m);
            }
        }

        let mut nudged = false;
        let mut last_sig: Option<(String, u64)> = None;
        let mut repeats = 0u32;
        loop {
            if self.stopped() {
                return Ok(Outcome::Stopped("stopped"));
            }
            let Some(task) = store.get_agent_task(&self.task_id).await? else {
                return Ok(Outcome::Stopped("the task was deleted"));
            };
            if task.status != TaskStatus::Running {
                return Ok(Outcome::Stopped("the task left RUNNING"));
            }
            if task.control == bytebot_protocol::Control::User {
                return Ok(Outcome::Stopped("a person took over"));
            }
            let iterations = context::iterations_since_hand_back(&history);
            let cfg = &self.agent.config;
            if iterations >= cfg.max_iterations {
                return self
                    .finish(
                        TaskStatus::NeedsHelp,
                        None,
                        Some(format!(
                            "stopped after {iterations} model calls (agent.max_iterations); resume to allow more"
                        )),
                    )
                    .await;
            }
            if task.cost_usd >= cfg.max_cost_usd {
                return self
                    .finish(
                        TaskStatus::NeedsHelp,
                        None,
                        Some(format!(
                            "stopped at ${:.4}, over the ${:.2} cost cap (agent.max_cost_usd)",
                            task.cost_usd, cfg.max_cost_usd
                        )),
                    )
                    .await;
            }

            let ctx = self
                .context_for_model(&task, &history, &ids, &mut summary)
                .await?;
            let response = match self
                .call_model(&task.model, &task.fallback_models, &ctx)
                .await?
            {
                Ok(r) => r,
                // Stopped while the model was thinking: the answer is dropped, not an error.
                Err(_) if self.stopped() => return Ok(Outcome::Stopped("stopped")),
                Err(e) => {
                    return self
                        .finish(TaskStatus::NeedsHelp, None, Some(e.to_string()))
                        .await;
                }
            };
            let (spec, mut answer) = response;
            let scale = self.scale_for(&spec).await?;
            context::map_calls(&mut answer.content, |p| scale.to_screen(p));
            let assistant = ChatMessage {
                role: Role::Assistant,
                content: answer.content.clone(),
                state: answer.state.clone(),
            };
            ids.push(self.append(&assistant).await?);
            history.push(assistant);

            let calls: Vec<ToolCall> = answer
                .content
                .iter()
                .filter_map(|b| match b {
                    Block::ToolCall(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            if calls.is_empty() {
                let said = text_of(&answer.content);
                if nudged {
                    return self
                        .finish(
                            TaskStatus::NeedsReview,
                            Some(json!({"message": said})),
                            None,
                        )
                        .await;
                }
                nudged = true;
                let m = user(vec![Block::Text { text: NUDGE.into() }]);
                ids.push(self.append(&m).await?);
                history.push(m);
                continue;
            }
            nudged = false;

            let mut failed = false;
            let mut finish: Option<(FinalStatus, String)> = None;
            for call in calls {
                if !call.safety_checks.is_empty() && !failed && !self.stopped() {
                    // Never acknowledged by us: this and the later calls wait, unanswered,
                    // until a person approves or refuses on resume.
                    return self.ask_approval(&call).await;
                }
                let result = if self.stopped() {
                    error_result(
                        &call.id,
                        "Not executed: the task was stopped before this call.",
                    )
                } else if failed {
                    error_result(&call.id, NOT_EXECUTED)
                } else {
                    let (result, done) = self.execute(&call, false).await?;
                    let kind = match &call.call {
                        Call::Computer { .. } => "computer",
                        Call::Function { name, .. } => name.as_str(),
                    };
                    let kind = if tools::NAMES.contains(&kind) || kind == "computer" {
                        kind
                    } else {
                        "other"
                    };
                    self.agent.metrics.tool_call(kind, !result.is_error);
                    if let Some(d) = done {
                        finish = Some(d);
                    }
                    if result.is_error {
                        failed = true;
                    }
                    // Loop detection: the same computer call on a screen that did not change.
                    if let (Call::Computer { actions }, Some(img)) = (&call.call, &result.image) {
                        let sig = serde_json::to_string(actions).unwrap_or_default();
                        let hash = img.blob.as_deref().map_or(0, hash_str);
                        if last_sig.as_ref() == Some(&(sig.clone(), hash)) {
                            repeats += 1;
                        } else {
                            repeats = 0;
                        }
                        last_sig = Some((sig, hash));
                    }
                    result
                };
                let m = user(vec![Block::ToolResult(result)]);
                ids.push(self.append(&m).await?);
                history.push(m);
            }
            if self.stopped() {
                return Ok(Outcome::Stopped("stopped"));
            }
            if let Some((status, message)) = finish {
                return self.finish_with(status, message).await;
            }
            if repeats + 1 >= self.agent.config.loop_limit {
                return self
                    .finish(
                        TaskStatus::NeedsHelp,
                        None,
                        Some(format!(
                            "the same action was repeated {} times and the screen did not change; a person should look",
                            repeats + 1
                        )),
                    )
                    .await;
            }
        }
    }

    /// What the model is shown: the conversation, or the task and a summary of the steps it
    /// covers followed by the later messages. When that passes `agent.summarize_at` of the
    /// model's context window, the older complete turns are summarised (and the summary
    /// stored) so the context stays bounded however long the task runs.
    async fn context_for_model(
        &self,
        task: &bytebot_store::AgentTask,
        history: &[ChatMessage],
        ids: &[i64],
        summary: &mut Option<(i64, String)>,
    ) -> Result<Vec<ChatMessage>, RunError> {
        let build = |summary: &Option<(i64, String)>| match summary {
            None => history.to_vec(),
            Some((covers, text)) => {
                let mut out = vec![user(vec![Block::Text {
                    text: format!("{}\n\n{}{text}", task.description, context::SUMMARY_HEADING),
                }])];
                out.extend(
                    history
                        .iter()
                        .zip(ids)
                        .filter(|(_, id)| **id > *covers)
                        .map(|(m, _)| m.clone()),
                );
                out
            }
        };
        let ctx = build(summary);
        let Some(spec) = self.agent.catalog.model(&task.model) else {
            return Ok(ctx);
        };
        let limit = (spec.context_tokens as f64 * self.agent.config.summarize_at) as u64;
        if context::estimate_tokens(&ctx) <= limit {
            return Ok(ctx);
        }
        // Keep the newest turns that fit in a third of the budget; summarise the rest.
        let Some(cut) =
            context::summary_cut(history, ids, summary.as_ref().map(|s| s.0), limit / 3)
        else {
            return Ok(ctx);
        };
        let covered: Vec<ChatMessage> = history
            .iter()
            .zip(ids)
            .take(cut)
            .filter(|(_, id)| summary.as_ref().is_none_or(|s| **id > s.0))
            .map(|(m, _)| m.clone())
            .collect();
        let text = context::summarize(summary.as_ref().map(|s| s.1.as_str()), &covered);
        let covers_up_to = ids[cut - 1];
        self.agent
            .store
            .insert_summary(&self.task_id, &text, covers_up_to)
            .await?;
        self.agent
            .publish(
                &self.task_id,
                "summary",
                json!({"covers_up_to": covers_up_to, "chars": text.len()}),
            )
            .await;
        *summary = Some((covers_up_to, text));
        Ok(build(summary))
    }

    /// The stored conversation with each message's id.
    async fn load(&self) -> Result<(Vec<ChatMessage>, Vec<i64>), RunError> {
        let store = &self.agent.store;
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let rows = store.messages(&self.task_id, after, 500).await?;
            let n = rows.len();
            for row in rows {
                after = row.id;
                let role = match row.role {
                    bytebot_store::Role::Assistant => Role::Assistant,
                    bytebot_store::Role::User => Role::User,
                };
                let Ok(content) = serde_json::from_value::<Vec<Block>>(row.content) else {
                    tracing::warn!(task = %self.task_id, message = row.id, "a stored message does not parse; left out");
                    continue;
                };
                let state = row.state.and_then(|s| serde_json::from_value(s).ok());
                ids.push(row.id);
                out.push(ChatMessage {
                    role,
                    content,
                    state,
                });
            }
            if n < 500 {
                return Ok((out, ids));
            }
        }
    }

    /// Commits one message and tells the live stream; returns its id.
    async fn append(&self, m: &ChatMessage) -> Result<i64, RunError> {
        let content = serde_json::to_value(&m.content).unwrap_or(Value::Null);
        let state = m.state.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let (role, name) = match m.role {
            Role::User => (bytebot_store::Role::User, "user"),
            Role::Assistant => (bytebot_store::Role::Assistant, "assistant"),
        };
        let row = self
            .agent
            .store
            .append_message(&self.task_id, role, &content, state.as_ref())
            .await?;
        self.agent
            .publish(
                &self.task_id,
                "message",
                json!({"id": row.id, "role": name, "content": content}),
            )
            .await;
        Ok(row.id)
    }

    /// A fresh screenshot of the whole screen at the size the task's model takes, stored as a
    /// blob.
    async fn screenshot(&self) -> Result<Shot, RunError> {
        let s = self.desktop.screenshot_scaled(self.shot_width).await?;
        self.store_shot(s.png, s.width, s.height).await
    }

    async fn store_shot(&self, png: Vec<u8>, width: u32, height: u32) -> Result<Shot, RunError> {
        let hash = xxhash_rust::xxh3::xxh3_64(&png);
        let key = format!("tasks/{}/shots/{:016x}.png", self.task_id, hash);
        let data: Arc<[u8]> = Arc::from(png);
        self.agent.blobs.put(&key, data.to_vec()).await?;
        Ok(Shot {
            image: Image {
                media_type: "image/png".into(),
                width,
                height,
                blob: Some(key),
                data: Some(data),
            },
        })
    }

    async fn scale_for(&self, spec: &ModelSpec) -> Result<Scale, RunError> {
        let screen = self.agent.screen_size(self.desktop).await?;
        Ok(Scale {
            screen,
            image: screen::fit(screen, spec.image_limit),
        })
    }

    /// Calls the task's model, then each fallback, until one answers. Records usage and cost.
    /// The error is the last provider's, with the earlier ones named.
    async fn call_model(
        &self,
        model: &str,
        fallback: &[String],
        history: &[ChatMessage],
    ) -> Result<Result<(ModelSpec, ModelResponse), ProviderError>, RunError> {
        let agent = self.agent;
        let mut chain: Vec<&str> = vec![model];
        for f in fallback.iter().chain(agent.catalog.fallback.iter()) {
            if !chain.contains(&f.as_str()) {
                chain.push(f);
            }
        }
        let mut last_error = None;
        for id in chain {
            let Some(spec) = agent.catalog.model(id).cloned() else {
                continue;
            };
            let Some(provider) = agent.providers.get(&spec.provider).cloned() else {
                continue;
            };
            let scale = self.scale_for(&spec).await?;
            let mut messages = context::merge_roles(history.to_vec());
            let needed = context::prune_images(&mut messages, agent.config.keep_screenshots);
            self.load_images(&mut messages, &needed).await?;
            for m in &mut messages {
                context::map_calls(&mut m.content, |p| scale.to_image(p));
            }
            let system = system_prompt(scale.screen, scale.image);
            let functions = tools::definitions();
            let request = ModelRequest {
                model: &spec,
                system: &system,
                messages: &messages,
                functions: &functions,
                display: crate::model::Display {
                    width: scale.image.0,
                    height: scale.image.1,
                },
                max_tokens: 4096,
            };
            let started = std::time::Instant::now();
            let mut stop = self.stop.clone();
            let answer = tokio::select! {
                r = provider.step(request) => r,
                _ = stop.wait_for(|s| *s) => return Ok(Err(ProviderError::Timeout { provider: spec.provider.clone(), after: started.elapsed() })),
            };
            match answer {
                Ok(r) => {
                    let cost = spec.price.map_or(0.0, |p| p.cost(&r.usage));
                    agent
                        .metrics
                        .model_call(&spec.id, "ok", started.elapsed(), cost);
                    let u = &r.usage;
                    agent
                        .store
                        .add_task_usage(
                            &self.task_id,
                            &bytebot_store::NewUsage {
                                provider: spec.provider.clone(),
                                model: spec.id.clone(),
                                input_tokens: u.input_tokens as i64,
                                output_tokens: u.output_tokens as i64,
                                cache_creation_input_tokens: u.cache_creation_input_tokens as i64,
                                cache_read_input_tokens: u.cache_read_input_tokens as i64,
                                cost_usd: cost,
                            },
                        )
                        .await?;
                    agent
                        .publish(
                            &self.task_id,
                            "usage",
                            json!({"model": spec.id, "usage": r.usage, "cost_usd": cost, "ms": started.elapsed().as_millis() as u64}),
                        )
                        .await;
                    return Ok(Ok((spec, r)));
                }
                Err(e) => {
                    agent
                        .metrics
                        .model_call(&spec.id, e.code(), started.elapsed(), 0.0);
                    tracing::warn!(task = %self.task_id, model = %spec.id, error = %e, "model call failed; trying the next model");
                    agent
                        .publish(
                            &self.task_id,
                            "model_error",
                            json!({"model": spec.id, "code": e.code(), "message": e.to_string()}),
                        )
                        .await;
                    last_error = Some(e);
                }
            }
        }
        Ok(Err(last_error.unwrap_or_else(|| ProviderError::Rejected {
            provider: "agent".into(),
            status: 0,
            message: format!(
                "model \"{model}\" is not configured; configured: {}",
                agent.catalog.ids().join(", ")
            ),
        })))
    }

    /// Loads the bytes of the images a model will see, scaled to its image size.
    async fn load_images(
        &self,
        messages: &mut [ChatMessage],
        needed: &[String],
    ) -> Result<(), RunError> {
        let mut cache: std::collections::HashMap<String, Arc<[u8]>> =
            std::collections::HashMap::new();
        for key in needed {
            if cache.contains_key(key) {
                continue;
            }
            // Screenshots are stored at the size the task's model takes, so they are sent as
            // they are (no decode and re-encode per call).
            let bytes = self.agent.blobs.get(key).await?;
            cache.insert(key.clone(), Arc::from(bytes));
        }
        for m in messages {
            for b in &mut m.content {
                let img = match b {
                    Block::Image { image } => Some(image),
                    Block::ToolResult(r) => r.image.as_mut(),
                    _ => None,
                };
                if let Some(img) = img
                    && let Some(data) = img.blob.as_ref().and_then(|k| cache.get(k))
                {
                    img.data = Some(Arc::clone(data));
                }
            }
        }
        Ok(())
    }

    /// Runs one call; returns its result and, for set_task_status, how the task ends.
    async fn execute(
        &self,
        call: &ToolCall,
        acknowledged: bool,
    ) -> Result<(ToolResult, Option<(FinalStatus, String)>), RunError> {
        let agent = self.agent;
        agent
            .publish(
                &self.task_id,
                "tool_call",
                json!({"id": call.id, "call": call.call}),
            )
            .await;
        match &call.call {
            Call::Computer { actions } => {
                let mut zoom: Option<(i32, i32, u32, u32)> = None;
                let mut texts = Vec::new();
                for a in actions {
                    if let Err(reason) = act::check(a) {
                        return self.failed(&call.id, &reason).await.map(|r| (r, None));
                    }
                    // Cancel and take-over stop at once, even inside a long wait.
                    let mut stop = self.stop.clone();
                    let ran = tokio::select! {
                        r = act::run(self.desktop, a, &agent.config.browser_app) => r,
                        _ = stop.wait_for(|s| *s) => {
                            return Ok((error_result(&call.id, "Stopped: the task was cancelled or a person took over."), None));
                        }
                    };
                    match ran {
                        Ok(Produced::Nothing) => {}
                        Ok(Produced::Text(t)) => texts.push(t),
                        Ok(Produced::Region { region }) => zoom = Some(region),
                        Err(e) => {
                            return self
                                .failed(&call.id, &format!("{} failed: {e}", action_name(a)))
                                .await
                                .map(|r| (r, None));
                        }
                    }
                }
                if actions.iter().any(act::changes_screen) {
                    let _ = self.desktop.settle_for(agent.config.settle_quiet_ms).await;
                }
                let shot = match zoom {
                    Some((x, y, w, h)) => {
                        let png = self.desktop.screenshot("png", Some((x, y, w, h))).await?;
                        self.store_shot(png, w, h).await?
                    }
                    None => self.screenshot().await?,
                };
                Ok((
                    ToolResult {
                        call_id: call.id.clone(),
                        is_error: false,
                        text: (!texts.is_empty()).then(|| texts.join("\n")),
                        image: Some(shot.image),
                        url: None,
                        acknowledged_safety_checks: if acknowledged {
                            call.safety_checks.clone()
                        } else {
                            Vec::new()
                        },
                    },
                    None,
                ))
            }
            Call::Function { name, arguments } if name == crate::model::INVALID_CALL => {
                let reason = arguments
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the call could not be understood");
                Ok((
                    error_result(&call.id, &format!("Invalid call: {reason}")),
                    None,
                ))
            }
            Call::Function { name, arguments } => match tools::parse(name, arguments) {
                Err(reason) => Ok((error_result(&call.id, &reason), None)),
                Ok(parsed) => self.function(&call.id, parsed).await,
            },
        }
    }

    /// A failed call: the reason plus a fresh screenshot so the model sees the state.
    async fn failed(&self, id: &str, reason: &str) -> Result<ToolResult, RunError> {
        let shot = self.screenshot().await?;
        let mut r = error_result(id, reason);
        r.image = Some(shot.image);
        Ok(r)
    }

    async fn function(
        &self,
        id: &str,
        call: AgentCall,
    ) -> Result<(ToolResult, Option<(FinalStatus, String)>), RunError> {
        let ok = |text: String| ToolResult {
            call_id: id.to_string(),
            is_error: false,
            text: Some(text),
            image: None,
            url: None,
            acknowledged_safety_checks: vec![],
        };
        let d = self.desktop;
        Ok(match call {
            AgentCall::SetTaskStatus(s) => {
                (ok("Status recorded.".into()), Some((s.status, s.message)))
            }
            AgentCall::CreateTask(c) => match self.agent.create_follow_up(&self.task_id, c).await {
                Ok(new_id) => (ok(format!("Created task {new_id}.")), None),
                Err(e) => (error_result(id, &e), None),
            },
            AgentCall::ReadFile(f) => match d.read_file(&f.path).await {
                Ok(Some(bytes)) => match String::from_utf8(bytes) {
                    Ok(text) => (ok(text), None),
                    Err(e) => (
                        error_result(
                            id,
                            &format!("{} is not text ({} bytes)", f.path, e.as_bytes().len()),
                        ),
                        None,
                    ),
                },
                Ok(None) => (
                    error_result(id, &format!("{} does not exist", f.path)),
                    None,
                ),
                Err(e) => (error_result(id, &e.to_string()), None),
            },
            AgentCall::WriteFile(f) => match d.write_file(&f.path, f.content.into_bytes()).await {
                Ok(()) => (ok(format!("Wrote {}.", f.path)), None),
                Err(e) => (error_result(id, &e.to_string()), None),
            },
            AgentCall::FindText(f) => match d.find_text(&f.text).await {
                Ok(v) => (ok(v.get("matches").cloned().unwrap_or(v).to_string()), None),
                Err(e) => (error_result(id, &e.to_string()), None),
            },
            AgentCall::WaitForText(f) => {
                let limit = Duration::from_millis(f.timeout_ms.unwrap_or(10_000).min(30_000));
                let started = std::time::Instant::now();
                loop {
                    match d.find_text(&f.text).await {
                        Ok(v)
                            if v.get("matches")
                                .and_then(Value::as_array)
                                .is_some_and(|m| !m.is_empty()) =>
                        {
                            break (ok(v["matches"].to_string()), None);
                        }
                        Ok(_) if started.elapsed() < limit && !self.stopped() => {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Ok(_) => {
                            break (
                                error_result(
                                    id,
                                    &format!(
                                        "\"{}\" did not appear within {} ms",
                                        f.text,
                                        limit.as_millis()
                                    ),
                                ),
                                None,
                            );
                        }
                        Err(e) => break (error_result(id, &e.to_string()), None),
                    }
                }
            }
            AgentCall::ClickText(c) => {
                let button = c.button.as_deref().unwrap_or("left");
                match d
                    .click_text(&c.text, button, c.clicks.unwrap_or(1), c.index.unwrap_or(0))
                    .await
                {
                    Ok(v) => {
                        let _ = d.settle_for(self.agent.config.settle_quiet_ms).await;
                        let shot = self.screenshot().await?;
                        let mut r = ok(format!(
                            "Clicked {}",
                            v.get("clicked").cloned().unwrap_or(Value::Null)
                        ));
                        r.image = Some(shot.image);
                        (r, None)
                    }
                    Err(e) => (self.failed(id, &e.to_string()).await?, None),
                }
            }
        })
    }

    /// Ends the task as the model asked with `set_task_status`.
    async fn finish_with(&self, status: FinalStatus, message: String) -> Result<Outcome, RunError> {
        match status {
            FinalStatus::Completed => {
                self.finish(
                    TaskStatus::Completed,
                    Some(json!({"message": message})),
                    None,
                )
                .await
            }
            FinalStatus::NeedsHelp => {
                self.finish(TaskStatus::NeedsHelp, None, Some(message))
                    .await
            }
        }
    }

    /// Stops for a person to approve the provider's safety checks on `call`.
    async fn ask_approval(&self, call: &ToolCall) -> Result<Outcome, RunError> {
        self.agent
            .publish(
                &self.task_id,
                "safety_check",
                json!({"call_id": call.id, "call": call.call, "checks": call.safety_checks}),
            )
            .await;
        self.finish(
            TaskStatus::NeedsHelp,
            None,
            Some(format!(
                "the model's provider asks a person to approve this action first: {}. Resume with {{\"acknowledge_safety_checks\": true}} to run it, or without to refuse it",
                checks_text(call)
            )),
        )
        .await
    }

    /// Copies the files given with the task into the desktop's workspace (`uploads/<task>/`)
    /// and says where they are; `None` when there are none.
    async fn place_files(&self) -> Result<Option<String>, RunError> {
        let files = self.agent.store.task_files(&self.task_id).await?;
        if files.is_empty() {
            return Ok(None);
        }
        let folder = format!("uploads/{}", self.task_id);
        let mut listed = Vec::new();
        for f in &files {
            let bytes = self.agent.blobs.get(&f.blob_key).await?;
            self.desktop
                .write_file(&format!("{folder}/{}", f.name), bytes)
                .await?;
            listed.push(format!("{} ({} bytes, {})", f.name, f.size, f.media_type));
        }
        Ok(Some(format!(
            "Files given with this task are in the workspace folder {folder}/: {}. read_file reads text files there.",
            listed.join(", ")
        )))
    }

    /// What a person did since they last took the task over, in `model`'s image coordinates.
    async fn persons_input(&self, model: &str) -> Result<Option<String>, RunError> {
        let events = self.agent.task_events(&self.task_id).await?;
        let scale = match self.agent.catalog.model(model).cloned() {
            Some(spec) => Some(self.scale_for(&spec).await?),
            None => None,
        };
        Ok(crate::takeover::describe(&events, scale))
    }

    /// Writes the final status (fenced on our lease) and tells the stream and the webhook.
    async fn finish(
        &self,
        status: TaskStatus,
        result: Option<Value>,
        error: Option<String>,
    ) -> Result<Outcome, RunError> {
        self.agent
            .finish(&self.task_id, &self.worker, status, result, error)
            .await?;
        Ok(Outcome::Finished(status))
    }
}

fn user(content: Vec<Block>) -> ChatMessage {
    ChatMessage {
        role: Role::User,
        content,
        state: None,
    }
}

fn checks_text(call: &ToolCall) -> String {
    call.safety_checks
        .iter()
        .map(|c| format!("{} [{}]", c.message, c.code))
        .collect::<Vec<_>>()
        .join("; ")
}

fn error_result(id: &str, text: &str) -> ToolResult {
    ToolResult {
        call_id: id.to_string(),
        is_error: true,
        text: Some(text.to_string()),
        image: None,
        url: None,
        acknowledged_safety_checks: vec![],
    }
}

fn text_of(content: &[Block]) -> String {
    content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn action_name(a: &ComputerAction) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "the action".into())
}

fn hash_str(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}
