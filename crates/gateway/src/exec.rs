//! Runs a stored plan step by step, publishing events as it goes. Every
//! step is the exact action that was approved; nothing is rebuilt from a
//! request.

use crate::artifacts::ArtifactRef;
use crate::auth::Caller;
use crate::events::kind;
use crate::intents::Action;
use crate::intents::run::{NetworkRules, RunSpec};
use crate::plan::Plan;
use crate::service::{Gateway, NextPlan, Observation, PlanRequest};
use bytebot_protocol::TaskStatus;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::watch;

/// Largest piece of stdout/stderr quoted in an observation; the whole
/// output is an artifact.
const QUOTE_BYTES: usize = 16 * 1024;

/// Media type of a provenance artifact: a DSSE envelope around an in-toto statement.
pub const PROVENANCE_MEDIA_TYPE: &str = bytebot_bottle::provenance::PAYLOAD_TYPE;

/// How a run ended.
pub struct Outcome {
    /// `succeeded`, `failed`, `cancelled`, or `needs_approval` (see `next_plan`).
    pub status: &'static str,
    /// One per step that ran.
    pub observations: Vec<Observation>,
    /// Artifacts produced.
    pub artifacts: Vec<ArtifactRef>,
    /// The plan the run stopped for: an agent's risky step, to approve like any plan.
    pub next_plan: Option<NextPlan>,
}

/// Runs one task's plan.
pub struct Executor<'a> {
    /// The gateway.
    pub gw: &'a Gateway,
    /// The task.
    pub task_id: &'a str,
    /// Its key.
    pub key_id: &'a str,
    /// Who executes it (follow-up plans are made for the same caller and profile).
    pub caller: &'a Caller,
    /// Set to true when the task is cancelled.
    pub cancel: watch::Receiver<bool>,
}

struct StepResult {
    text: String,
    data: Value,
    /// Set when the step stopped for a person's approval of a follow-up plan.
    next: Option<NextPlan>,
}

impl StepResult {
    fn done(text: impl Into<String>, data: Value) -> StepResult {
        StepResult {
            text: text.into(),
            data,
            next: None,
        }
    }
}

impl Executor<'_> {
    async fn publish(&self, kind: &str, data: Value) {
        if let Err(e) = self
            .gw
            .events
            .publish(self.task_id, self.key_id, kind, data)
            .await
        {
            tracing::error!(task_id = self.task_id, error = %e, "cannot store an event");
        }
    }

    /// Runs every step in order; stops at the first failure or a cancel.
    pub async fn run(self, plan: &Plan) -> Outcome {
        let mut observations = Vec::new();
        let mut artifacts = Vec::new();
        let mut status = "succeeded";
        let mut next_plan = None;
        for (i, step) in plan.steps.iter().enumerate() {
            if *self.cancel.borrow() {
                status = "cancelled";
                break;
            }
            self.publish(
                kind::STEP_STARTED,
                json!({"step": i, "summary": step.summary}),
            )
            .await;
            let action: Result<Action, _> = serde_json::from_value(step.action.clone());
            let result = match action {
                // A run watches the cancel itself: it stops the sandbox and still records it.
                Ok(action @ Action::Run { .. }) => self.step(i, &action, &mut artifacts).await,
                Ok(action) => {
                    let mut cancel = self.cancel.clone();
                    tokio::select! {
                        r = self.step(i, &action, &mut artifacts) => r,
                        _ = cancel.wait_for(|c| *c) => Err("cancelled".to_string()),
                    }
                }
                Err(e) => Err(format!("the stored step is not a known action: {e}")),
            };
            let (ok, obs) = match result {
                Ok(r) => {
                    next_plan = r.next;
                    (
                        true,
                        Observation {
                            step: i,
                            ok: true,
                            text: r.text,
                            data: r.data,
                        },
                    )
                }
                Err(message) => (
                    false,
                    Observation {
                        step: i,
                        ok: false,
                        text: message,
                        data: Value::Null,
                    },
                ),
            };
            self.publish(
                kind::STEP_FINISHED,
                json!({"step": i, "ok": ok, "text": obs.text, "data": obs.data}),
            )
            .await;
            observations.push(obs);
            if next_plan.is_some() {
                // The rest waits for the person: the follow-up plan continues from here.
                status = "needs_approval";
                break;
            }
            if !ok {
                status = if *self.cancel.borrow() {
                    "cancelled"
                } else {
                    "failed"
                };
                if status == "failed" {
                    self.publish(
                        kind::ERROR,
                        json!({"step": i, "message": observations.last().map(|o| o.text.clone())}),
                    )
                    .await;
                }
                break;
            }
        }
        Outcome {
            status,
            observations,
            artifacts,
            next_plan,
        }
    }

    async fn artifact(
        &self,
        artifacts: &mut Vec<ArtifactRef>,
        kind_name: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactRef, String> {
        let a = self
            .gw
            .artifacts
            .put(self.task_id, self.key_id, kind_name, media_type, bytes)
            .await?;
        self.publish(
            kind::ARTIFACT,
            serde_json::to_value(&a).unwrap_or(Value::Null),
        )
        .await;
        artifacts.push(a.clone());
        Ok(a)
    }

    async fn step(
        &self,
        index: usize,
        action: &Action,
        artifacts: &mut Vec<ArtifactRef>,
    ) -> Result<StepResult, String> {
        let desktop = &self.gw.desktop;
        match action {
            Action::FocusWindow { title } => {
                let w = find_window(self.gw, title).await?;
                desktop.focus(w.id).await.map_err(|e| e.to_string())?;
                Ok(StepResult::done(
                    format!("focused the window \"{}\"", w.title),
                    json!({"window_id": w.id, "title": w.title}),
                ))
            }
            Action::Screenshot { format, window } => {
                let region = match window {
                    Some(title) => {
                        let w = find_window(self.gw, title).await?;
                        Some((w.x, w.y, w.width, w.height))
                    }
                    None => None,
                };
                let bytes = desktop
                    .screenshot(format.as_str(), region)
                    .await
                    .map_err(|e| e.to_string())?;
                let media = format!("image/{}", format.as_str());
                let a = self
                    .artifact(artifacts, "screenshot", &media, bytes)
                    .await?;
                Ok(StepResult::done(
                    format!("took a screenshot ({} bytes): {}", a.bytes, a.url),
                    json!({"artifact_id": a.id}),
                ))
            }
            Action::OpenApp { app, args } => {
                desktop
                    .open_app(app, args)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(StepResult::done(
                    format!("opened {app}"),
                    json!({"app": app}),
                ))
            }
            Action::Settle => {
                desktop.settle().await.map_err(|e| e.to_string())?;
                Ok(StepResult::done("the screen settled", Value::Null))
            }
            Action::WriteFile {
                path,
                content,
                original_sha256,
                ..
            } => {
                let now = desktop.read_file(path).await.map_err(|e| e.to_string())?;
                let now_sha = now.as_ref().map(|b| hex::encode(Sha256::digest(b)));
                if &now_sha != original_sha256 {
                    return Err(format!(
                        "{path} changed since the plan was made; nothing was written — plan again to see the new diff"
                    ));
                }
                let len = content.len();
                desktop
                    .write_file(path, content.clone().into_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(StepResult::done(
                    format!("wrote {len} bytes to {path}"),
                    json!({"path": path, "bytes": len}),
                ))
            }
            Action::Run {
                argv,
                cwd,
                env,
                timeout_s,
                memory_mb,
                max_output_bytes,
                processes,
                network: _,
                network_allow,
                network_private,
            } => {
                let spec = RunSpec {
                    argv: argv.clone(),
                    workspace: self.gw.workspace.clone(),
                    cwd: Some(cwd.clone()),
                    env: env.clone(),
                    timeout: Duration::from_secs(*timeout_s),
                    max_output_bytes: *max_output_bytes,
                    memory_mb: *memory_mb,
                    processes: *processes,
                    network: NetworkRules {
                        allow: network_allow.clone(),
                        private: network_private.clone(),
                    },
                };
                self.run_program(index, &spec, artifacts).await
            }
            Action::Agent { prompt, model } => self.hand_to_agent(index, prompt, model).await,
            Action::AgentStep {
                agent_task_id,
                call_id,
                ..
            } => self.approve_agent_step(index, agent_task_id, call_id).await,
        }
    }

    /// Queues the approved prompt as an agent task and follows it (see [`Self::follow_agent`]).
    async fn hand_to_agent(
        &self,
        index: usize,
        prompt: &str,
        model: &Option<String>,
    ) -> Result<StepResult, String> {
        let agent = self.agent()?;
        // Subscribe first so no event of the new task is missed.
        let events = agent.events.subscribe();
        let task = agent
            .create(bytebot_agent::service::TaskRequest {
                description: prompt.to_string(),
                model: model.clone(),
                priority: bytebot_protocol::Priority::Medium,
                scheduled_for: None,
                created_by: format!("gateway:{}", self.key_id),
                parent_id: None,
            })
            .await?;
        self.follow_agent(index, &task.id, events).await
    }

    /// Lets a waiting agent task run the step a person just approved (the plan's exact call),
    /// then follows it on.
    async fn approve_agent_step(
        &self,
        index: usize,
        task_id: &str,
        call_id: &str,
    ) -> Result<StepResult, String> {
        let agent = self.agent()?;
        // The approval is for one question: if the task moved on (cancelled, resumed by a
        // person, asking about another call), running it now would approve something else.
        let pending = self.pending_question(task_id).await?;
        let still_waiting = pending
            .as_ref()
            .is_some_and(|q| q["call_id"].as_str() == Some(call_id));
        if !still_waiting {
            return Err(format!(
                "agent task {task_id} is no longer waiting for approval of call {call_id}; nothing was run"
            ));
        }
        let events = agent.events.subscribe();
        agent
            .resume(
                task_id,
                Some(format!(
                    "A person approved this step through the gateway (key {}).",
                    self.key_id
                )),
                true,
            )
            .await
            .map_err(|e| format!("cannot resume agent task {task_id}: {e}"))?;
        self.follow_agent(index, task_id, events).await
    }

    /// The safety question agent task `task_id` waits on, if any.
    async fn pending_question(&self, task_id: &str) -> Result<Option<Value>, String> {
        Ok(self
            .agent()?
            .safety_state(task_id)
            .await
            .map_err(|e| format!("cannot read agent task {task_id}: {e}"))?
            .pending)
    }

    fn agent(&self) -> Result<&bytebot_agent::service::Agent, String> {
        self.gw.agent().map(|a| a.as_ref()).ok_or_else(|| {
            "the agent is not available in this gateway; nothing was run".to_string()
        })
    }

    /// Follows an agent task to its end, relaying its steps as `step.output` events. A task
    /// that stops before a step its model's provider flagged comes back as a follow-up
    /// `agent_step` plan for this caller to approve; one that stops for any other reason ends
    /// the step with the agent's reason and task id.
    async fn follow_agent(
        &self,
        index: usize,
        task_id: &str,
        mut events: tokio::sync::broadcast::Receiver<bytebot_agent::service::TaskEvent>,
    ) -> Result<StepResult, String> {
        let agent = self.agent()?;
        let mut cancel = self.cancel.clone();
        loop {
            // The watch guard must not live across an await, so the cancel arm yields only a
            // marker.
            let event = tokio::select! {
                e = events.recv() => Some(e),
                () = async { let _ = cancel.wait_for(|c| *c).await; } => None,
            };
            let Some(event) = event else {
                let _ = agent.cancel(task_id).await;
                return Err(format!("cancelled; agent task {task_id} was cancelled too"));
            };
            let e = match event {
                Ok(e) if e.task_id == task_id => e,
                Ok(_) => continue,
                // Missed some relayed events; the final state is read from the store below.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err("the agent stopped".into());
                }
            };
            self.publish(
                kind::STEP_OUTPUT,
                json!({"step": index, "agent_task_id": task_id, "agent_event": e.kind, "data": e.data}),
            )
            .await;
            if e.kind != "status" {
                continue;
            }
            let status = e.data["status"].as_str().unwrap_or_default();
            let Ok(status) = TaskStatus::parse(status) else {
                continue;
            };
            let message = e.data["result"]["message"]
                .as_str()
                .or_else(|| e.data["error"].as_str())
                .unwrap_or_default()
                .to_string();
            let data = json!({"agent_task_id": task_id, "status": status, "message": message});
            return match status {
                TaskStatus::Completed | TaskStatus::NeedsReview => Ok(StepResult::done(
                    format!("the agent finished ({status}): {message}"),
                    data,
                )),
                TaskStatus::NeedsHelp => self.needs_help(index, task_id, &message).await,
                TaskStatus::Failed | TaskStatus::Cancelled => Err(format!(
                    "the agent task {task_id} ended {status}: {message}"
                )),
                TaskStatus::Pending | TaskStatus::Running => continue,
            };
        }
    }

    /// An agent task stopped for a person: a flagged step becomes a follow-up plan; anything
    /// else ends the step with the agent's reason.
    async fn needs_help(
        &self,
        index: usize,
        task_id: &str,
        message: &str,
    ) -> Result<StepResult, String> {
        let pending = self.pending_question(task_id).await?;
        let Some(call_id) = pending.as_ref().and_then(|q| q["call_id"].as_str()) else {
            return Err(format!(
                "the agent needs a person (task {task_id}): {message}; resume it at the agent's /tasks/{task_id}/resume"
            ));
        };
        let request = PlanRequest {
            intent: crate::intents::AGENT_STEP.to_string(),
            args: json!({"agent_task_id": task_id, "call_id": call_id}),
        };
        let next = self.gw.plan(self.caller, request).await.map_err(|e| {
            format!(
                "the agent stopped before a flagged step (task {task_id}: {message}), and its approval plan could not be made: {}",
                e.detail.message
            )
        })?;
        // The person decides on the provider's own words, not on the agent's resume hint.
        let warnings: Vec<&str> = pending
            .as_ref()
            .and_then(|q| q["checks"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|c| c["message"].as_str())
            .collect();
        let reason = if warnings.is_empty() {
            message.to_string()
        } else {
            warnings.join("; ")
        };
        let next = NextPlan::from_plan(next, reason);
        self.publish(
            kind::STEP_OUTPUT,
            json!({"step": index, "agent_task_id": task_id, "next_task_id": next.task_id, "plan": next.plan, "est_risk": next.est_risk}),
        )
        .await;
        Ok(StepResult {
            text: format!(
                "the agent stopped before a step its model's provider flagged ({message}); nothing of it ran. Approve plan {} to let it run, or cancel that plan to cancel the agent task",
                next.task_id
            ),
            data: json!({"agent_task_id": task_id, "status": TaskStatus::NeedsHelp, "message": message, "next_task_id": next.task_id}),
            next: Some(next),
        })
    }

    /// Runs a program in the bottle, then publishes its output (the sandbox hands it over when
    /// the run ends), stores stdout, stderr and the signed provenance record as artifacts, and
    /// says how the run ended.
    async fn run_program(
        &self,
        index: usize,
        spec: &RunSpec,
        artifacts: &mut Vec<ArtifactRef>,
    ) -> Result<StepResult, String> {
        let bottle_id = format!("{}-{index}", self.task_id);
        let label = format!(
            "gateway task {} step {index} (key {})",
            self.task_id, self.key_id
        );
        let mut cancel = self.cancel.clone();
        let cancelled = async move {
            // A dropped sender (the gateway going away) is no cancel.
            if cancel.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let out = self
            .gw
            .bottle
            .run(spec, &bottle_id, &label, cancelled)
            .await
            .map_err(|e| e.to_string())?;
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if !bytes.is_empty() {
                self.publish(
                    kind::STEP_OUTPUT,
                    json!({"step": index, "stream": name, "text": String::from_utf8_lossy(bytes)}),
                )
                .await;
            }
        }
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if !bytes.is_empty() {
                self.artifact(artifacts, name, "text/plain; charset=utf-8", bytes.clone())
                    .await?;
            }
        }
        let provenance = match &out.provenance {
            Ok(p) => {
                let a = self
                    .artifact(
                        artifacts,
                        "provenance",
                        PROVENANCE_MEDIA_TYPE,
                        p.record.clone(),
                    )
                    .await?;
                json!({"path": p.path, "artifact_id": a.id, "subjects": p.subjects})
            }
            Err(e) => json!({"error": e}),
        };
        let data = json!({
            "exit_code": out.exit_code,
            "signal": out.signal,
            "timed_out": out.timed_out,
            "duration_ms": out.duration_ms,
            "stdout": quote(&out.stdout),
            "stderr": quote(&out.stderr),
            "stdout_truncated": out.stdout_truncated,
            "stderr_truncated": out.stderr_truncated,
            "output_flood": out.output_flood,
            "oom_killed": out.oom_killed,
            "process_limit_hit": out.process_limit_hit,
            "bottle_id": out.bottle_id,
            "cancelled": out.cancelled,
            "egress": out.egress,
            "warnings": out.warnings,
            "provenance": provenance,
        });
        let ended = match (out.timed_out, out.output_flood, out.exit_code, out.signal) {
            _ if out.cancelled => "was cancelled and its sandbox killed".to_string(),
            (true, _, _, _) => format!(
                "timed out after {} s and was killed",
                spec.timeout.as_secs()
            ),
            (_, true, _, _) => "flooded its output far past the cap and was killed".to_string(),
            (_, _, Some(code), _) => format!("exited with code {code}"),
            (_, _, None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended".to_string(),
        };
        let record = match &out.provenance {
            Ok(p) => format!("provenance record: {}", p.path.display()),
            Err(e) => format!("no provenance record: {e}"),
        };
        let text = format!(
            "{:?} {ended} in the bottle ({record})\nstdout:\n{}\nstderr:\n{}",
            spec.argv,
            quote(&out.stdout),
            quote(&out.stderr)
        );
        // Every run leaves a signed record; one that could not be written fails the step.
        if out.exit_code == Some(0) && !out.timed_out && !out.output_flood && out.provenance.is_ok()
        {
            Ok(StepResult::done(text, data))
        } else {
            Err(text)
        }
    }
}

fn quote(bytes: &[u8]) -> String {
    let end = bytes.len().min(QUOTE_BYTES);
    let mut s = String::from_utf8_lossy(&bytes[..end]).into_owned();
    if bytes.len() > QUOTE_BYTES {
        s.push_str("\n… (the rest is in the artifact)");
    }
    s
}

async fn find_window(gw: &Gateway, title: &str) -> Result<bytebot_agent::desktop::Window, String> {
    let wanted = title.to_lowercase();
    let windows = gw.desktop.windows().await.map_err(|e| e.to_string())?;
    windows
        .into_iter()
        .find(|w| w.title.to_lowercase().contains(&wanted))
        .ok_or_else(|| format!("no window has a title containing \"{title}\""))
}
