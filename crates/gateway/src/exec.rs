//! Runs a stored plan step by step, publishing events as it goes. Every
//! step is the exact action that was approved; nothing is rebuilt from a
//! request.

use crate::artifacts::ArtifactRef;
use crate::events::kind;
use crate::intents::Action;
use crate::intents::run::{self, RunSpec, Stream};
use crate::plan::Plan;
use crate::service::{Gateway, Observation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Largest piece of stdout/stderr quoted in an observation; the whole
/// output is an artifact.
const QUOTE_BYTES: usize = 16 * 1024;

/// How a run ended.
pub struct Outcome {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: &'static str,
    /// One per step that ran.
    pub observations: Vec<Observation>,
    /// Artifacts produced.
    pub artifacts: Vec<ArtifactRef>,
}

/// Runs one task's plan.
pub struct Executor<'a> {
    /// The gateway.
    pub gw: &'a Gateway,
    /// The task.
    pub task_id: &'a str,
    /// Its key.
    pub key_id: &'a str,
    /// Set to true when the task is cancelled.
    pub cancel: watch::Receiver<bool>,
}

struct StepResult {
    text: String,
    data: Value,
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
                Ok(r) => (
                    true,
                    Observation {
                        step: i,
                        ok: true,
                        text: r.text,
                        data: r.data,
                    },
                ),
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
                Ok(StepResult {
                    text: format!("focused the window \"{}\"", w.title),
                    data: json!({"window_id": w.id, "title": w.title}),
                })
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
                Ok(StepResult {
                    text: format!("took a screenshot ({} bytes): {}", a.bytes, a.url),
                    data: json!({"artifact_id": a.id}),
                })
            }
            Action::OpenApp { app, args } => {
                desktop
                    .open_app(app, args)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(StepResult {
                    text: format!("opened {app}"),
                    data: json!({"app": app}),
                })
            }
            Action::Settle => {
                desktop.settle().await.map_err(|e| e.to_string())?;
                Ok(StepResult {
                    text: "the screen settled".into(),
                    data: Value::Null,
                })
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
                Ok(StepResult {
                    text: format!("wrote {len} bytes to {path}"),
                    data: json!({"path": path, "bytes": len}),
                })
            }
            Action::Run {
                argv,
                cwd,
                env,
                timeout_s,
                memory_mb,
                max_output_bytes,
                ..
            } => {
                let spec = RunSpec {
                    argv: argv.clone(),
                    workspace: self.gw.workspace.clone(),
                    cwd: Some(cwd.clone()),
                    env: env.clone(),
                    timeout: Duration::from_secs(*timeout_s),
                    max_output_bytes: *max_output_bytes,
                    memory_mb: *memory_mb,
                };
                self.run_program(index, &spec, artifacts).await
            }
            Action::Agent { prompt, model } => self.hand_to_agent(index, prompt, model).await,
        }
    }

    /// Queues the approved prompt as an agent task and follows it to its end, relaying its
    /// steps as `step.output` events. A task that stops for a person (NEEDS_HELP) ends the
    /// step with the agent's reason and task id, so the caller can look and resume it there.
    async fn hand_to_agent(
        &self,
        index: usize,
        prompt: &str,
        model: &Option<String>,
    ) -> Result<StepResult, String> {
        use bytebot_protocol::TaskStatus;
        let Some(agent) = self.gw.agent() else {
            return Err("the agent is not available in this gateway; nothing was run".into());
        };
        // Subscribe first so no event of the new task is missed.
        let mut events = agent.events.subscribe();
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
        let mut cancel = self.cancel.clone();
        loop {
            // The watch guard must not live across an await, so the cancel arm yields only a
            // marker.
            let event = tokio::select! {
                e = events.recv() => Some(e),
                () = async { let _ = cancel.wait_for(|c| *c).await; } => None,
            };
            let Some(event) = event else {
                let _ = agent.cancel(&task.id).await;
                return Err(format!(
                    "cancelled; agent task {} was cancelled too",
                    task.id
                ));
            };
            let e = match event {
                Ok(e) if e.task_id == task.id => e,
                Ok(_) => continue,
                // Missed some relayed events; the final state is read from the store below.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err("the agent stopped".into());
                }
            };
            self.publish(
                kind::STEP_OUTPUT,
                json!({"step": index, "agent_task_id": task.id, "agent_event": e.kind, "data": e.data}),
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
            let data = json!({"agent_task_id": task.id, "status": status, "message": message});
            return match status {
                TaskStatus::Completed | TaskStatus::NeedsReview => Ok(StepResult {
                    text: format!("the agent finished ({status}): {message}"),
                    data,
                }),
                TaskStatus::NeedsHelp => Err(format!(
                    "the agent needs a person (task {}): {message}; resume it at the agent's /tasks/{}/resume",
                    task.id, task.id
                )),
                TaskStatus::Failed | TaskStatus::Cancelled => Err(format!(
                    "the agent task {} ended {status}: {message}",
                    task.id
                )),
                TaskStatus::Pending | TaskStatus::Running => continue,
            };
        }
    }

    async fn run_program(
        &self,
        index: usize,
        spec: &RunSpec,
        artifacts: &mut Vec<ArtifactRef>,
    ) -> Result<StepResult, String> {
        // Output arrives on the runner's thread of control; events are published
        // from here so a slow store never blocks the child's pipes.
        let (tx, mut rx) = mpsc::unbounded_channel::<(Stream, Vec<u8>)>();
        let runner = run::run(spec, move |stream, chunk: &[u8]| {
            let _ = tx.send((stream, chunk.to_vec()));
        });
        tokio::pin!(runner);
        let output = loop {
            tokio::select! {
                out = &mut runner => break out,
                Some((stream, chunk)) = rx.recv() => self.output_event(index, stream, &chunk).await,
            }
        };
        while let Ok((stream, chunk)) = rx.try_recv() {
            self.output_event(index, stream, &chunk).await;
        }
        let out = output.map_err(|e| e.to_string())?;
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if !bytes.is_empty() {
                self.artifact(artifacts, name, "text/plain; charset=utf-8", bytes.clone())
                    .await?;
            }
        }
        let data = json!({
            "exit_code": out.exit_code,
            "signal": out.signal,
            "timed_out": out.timed_out,
            "duration_ms": out.duration_ms,
            "stdout": quote(&out.stdout),
            "stderr": quote(&out.stderr),
            "stdout_truncated": out.stdout_truncated,
            "stderr_truncated": out.stderr_truncated,
        });
        let ended = match (out.timed_out, out.exit_code, out.signal) {
            (true, _, _) => format!(
                "timed out after {} s and was killed",
                spec.timeout.as_secs()
            ),
            (_, Some(code), _) => format!("exited with code {code}"),
            (_, None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended".to_string(),
        };
        let text = format!(
            "{:?} {ended}\nstdout:\n{}\nstderr:\n{}",
            spec.argv,
            quote(&out.stdout),
            quote(&out.stderr)
        );
        if out.exit_code == Some(0) && !out.timed_out {
            Ok(StepResult { text, data })
        } else {
            Err(text)
        }
    }

    async fn output_event(&self, index: usize, stream: Stream, chunk: &[u8]) {
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        self.publish(
            kind::STEP_OUTPUT,
            json!({"step": index, "stream": name, "text": String::from_utf8_lossy(chunk)}),
        )
        .await;
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
