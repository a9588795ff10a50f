//! The agent's shared state: store, blobs, providers, the live event bus, and the operations
//! the API and the workers share (create, finish, cancel, take over, resume).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytebot_protocol::{Control, Priority, TaskStatus, TaskType};
use bytebot_store::{AgentStoreError, AgentTask, Blobs, NewAgentTask, Store};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, watch};

use crate::config::{AgentConfig, Catalog};
use crate::desktop::{DesktopClient, DesktopError};
use crate::model::Provider;
use crate::tools::CreateTask;
use crate::webhook::Webhook;

/// One event on a task's live stream (also stored, so a stream resumes with Last-Event-ID).
#[derive(Debug, Clone, Serialize)]
pub struct TaskEvent {
    /// Global, increasing id.
    pub id: i64,
    /// The task.
    pub task_id: String,
    /// `message`, `status`, `usage`, `tool_call`, `model_error`, …
    pub kind: String,
    /// The payload.
    pub data: Value,
}

impl From<bytebot_store::TaskEventRow> for TaskEvent {
    fn from(r: bytebot_store::TaskEventRow) -> TaskEvent {
        TaskEvent {
            id: r.id,
            task_id: r.task_id,
            kind: r.kind,
            data: r.data,
        }
    }
}

/// The agent's shared state.
pub struct Agent {
    /// The database.
    pub store: Store,
    /// Screenshots and uploads.
    pub blobs: Blobs,
    /// The `[agent]` config.
    pub config: AgentConfig,
    /// Models and providers, checked.
    pub catalog: Catalog,
    /// Provider clients by provider name.
    pub providers: BTreeMap<String, Arc<dyn Provider>>,
    /// Live events (the store has them too).
    pub events: broadcast::Sender<TaskEvent>,
    /// Wakes idle workers when a task is queued.
    pub queued: Notify,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Stop switches of the runs in this process, by task id.
    runs: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Screen sizes by desktop URL.
    screens: Mutex<HashMap<String, (u32, u32)>>,
    webhook: Option<Webhook>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("models", &self.catalog.ids())
            .finish_non_exhaustive()
    }
}

/// A file given with a new task (the API checked its name and size).
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its name: a plain file name, no folders.
    pub name: String,
    /// Its content type.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A request to create a task, checked by the API.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    /// What to do.
    pub description: String,
    /// Model id (the default when absent).
    pub model: Option<String>,
    /// Queue priority.
    pub priority: Priority,
    /// When to start (unix ms), for SCHEDULED tasks.
    pub scheduled_for: Option<i64>,
    /// Who asked (key id).
    pub created_by: String,
    /// The task that created it, for follow-ups.
    pub parent_id: Option<String>,
}

impl Agent {
    /// Builds the shared state; provider clients are made from the catalog.
    pub fn new(store: Store, blobs: Blobs, config: AgentConfig, catalog: Catalog) -> Agent {
        let providers = crate::providers::build(&catalog);
        let webhook = config.webhook.as_ref().and_then(Webhook::from_config);
        Agent {
            store,
            blobs,
            config,
            catalog,
            providers,
            events: broadcast::channel(1024).0,
            queued: Notify::new(),
            metrics: crate::metrics::Metrics::new(),
            runs: Mutex::new(HashMap::new()),
            screens: Mutex::new(HashMap::new()),
            webhook,
        }
    }

    /// Stores an event and broadcasts it. A store failure is logged, not fatal: the step it
    /// describes is already committed.
    pub async fn publish(&self, task_id: &str, kind: &str, data: Value) {
        match self.store.append_task_event(task_id, kind, &data).await {
            Ok(row) => {
                let _ = self.events.send(TaskEvent {
                    id: row.id,
                    task_id: task_id.to_string(),
                    kind: kind.to_string(),
                    data,
                });
            }
            Err(e) => {
                tracing::warn!(task = task_id, kind, error = %e, "could not store a task event")
            }
        }
    }

    /// The screen size of a desktop (asked once, then remembered).
    pub async fn screen_size(&self, desktop: &DesktopClient) -> Result<(u32, u32), DesktopError> {
        let key = desktop.base().to_string();
        if let Some(s) = self.screens.lock().ok().and_then(|m| m.get(&key).copied()) {
            return Ok(s);
        }
        let s = desktop.screen_size().await?;
        if let Ok(mut m) = self.screens.lock() {
            m.insert(key, s);
        }
        Ok(s)
    }

    /// Forgets remembered screen sizes (after a resolution change).
    pub fn forget_screens(&self) {
        if let Ok(mut m) = self.screens.lock() {
            m.clear();
        }
    }

    /// Queues a new task. Unknown models get an error naming the configured ones.
    pub async fn create(&self, req: TaskRequest) -> Result<AgentTask, String> {
        self.create_with_files(req, Vec::new()).await
    }

    /// Queues a new task with files for it. The bytes go to the blob store and each file gets a
    /// row; no worker sees the task before all of them are recorded (it is created under a
    /// person's control and handed to the assistant last), and a failure removes what was
    /// written.
    pub async fn create_with_files(
        &self,
        req: TaskRequest,
        files: Vec<Upload>,
    ) -> Result<AgentTask, String> {
        if files.is_empty() {
            return self.insert_task(req, None, Control::Assistant).await;
        }
        let id = uuid::Uuid::now_v7().to_string();
        self.insert_task(req, Some(id.clone()), Control::User)
            .await?;
        if let Err(e) = self.record_files(&id, files).await {
            if let Ok(keys) = self.store.delete_agent_task(&id).await {
                for key in keys {
                    let _ = self.blobs.delete(&key).await;
                }
            }
            let _ = self.blobs.delete_prefix(&format!("tasks/{id}/")).await;
            return Err(e);
        }
        let task = self
            .store
            .set_task_control(&id, Control::Assistant)
            .await
            .map_err(|e| e.to_string())?;
        self.queued.notify_waiters();
        Ok(task)
    }

    async fn record_files(&self, task_id: &str, files: Vec<Upload>) -> Result<(), String> {
        for f in files {
            let file_id = uuid::Uuid::now_v7().to_string();
            let key = format!("tasks/{task_id}/files/{file_id}");
            let size = f.bytes.len() as i64;
            let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&f.bytes));
            self.blobs
                .put(&key, f.bytes)
                .await
                .map_err(|e| format!("cannot store the file {:?}: {e}", f.name))?;
            self.store
                .insert_task_file(&bytebot_store::NewTaskFile {
                    id: Some(file_id),
                    task_id: task_id.to_string(),
                    name: f.name,
                    media_type: f.media_type,
                    size,
                    sha256,
                    blob_key: key,
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn insert_task(
        &self,
        req: TaskRequest,
        id: Option<String>,
        control: Control,
    ) -> Result<AgentTask, String> {
        let model = match req.model {
            Some(m) => m,
            None => self.catalog.default_model.clone().ok_or_else(|| {
                "no model is configured: set ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY or OLLAMA_HOST, or add [agent] models to the config".to_string()
            })?,
        };
        if self.catalog.model(&model).is_none() {
            return Err(format!(
                "unknown model \"{model}\"; configured: {}",
                self.catalog.ids().join(", ")
            ));
        }
        let task = self
            .store
            .insert_agent_task(&NewAgentTask {
                id,
                description: req.description,
                priority: req.priority,
                task_type: if req.scheduled_for.is_some() {
                    TaskType::Scheduled
                } else {
                    TaskType::Immediate
                },
                scheduled_for: req.scheduled_for,
                model,
                control,
                fallback_models: Vec::new(),
                created_by: req.created_by,
                parent_id: req.parent_id,
                created_at: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        self.publish(&task.id, "status", json!({"status": task.status}))
            .await;
        self.queued.notify_waiters();
        Ok(task)
    }

    /// `create_task` from a model: a follow-up of `parent`.
    pub async fn create_follow_up(&self, parent: &str, c: CreateTask) -> Result<String, String> {
        let priority = match c.priority.as_deref() {
            Some(p) => Priority::parse(p)?,
            None => Priority::Medium,
        };
        let scheduled_for = match c.scheduled_for.as_deref() {
            Some(t) => Some(parse_rfc3339_ms(t)?),
            None => None,
        };
        let parent_task = self
            .store
            .get_agent_task(parent)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the parent task is gone")?;
        let task = self
            .create(TaskRequest {
                description: c.description,
                model: Some(parent_task.model),
                priority,
                scheduled_for,
                created_by: parent_task.created_by,
                parent_id: Some(parent.to_string()),
            })
            .await?;
        Ok(task.id)
    }

    /// Registers a run; the returned receiver turns true when it must stop.
    pub fn start_run(&self, task_id: &str) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(task_id.to_string(), tx);
        }
        rx
    }

    /// Forgets a finished run.
    pub fn end_run(&self, task_id: &str) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(task_id);
        }
    }

    /// Tells a run in this process to stop now.
    pub fn stop_run(&self, task_id: &str) {
        if let Ok(runs) = self.runs.lock()
            && let Some(tx) = runs.get(task_id)
        {
            let _ = tx.send(true);
        }
    }

    /// Writes a run's final status, fenced on the worker's lease, and notifies.
    pub async fn finish(
        &self,
        task_id: &str,
        worker: &str,
        status: TaskStatus,
        result: Option<Value>,
        error: Option<String>,
    ) -> Result<(), AgentStoreError> {
        let task = self
            .store
            .finish_task(task_id, worker, status, result.as_ref(), error.as_deref())
            .await?;
        self.metrics.task_finished(status.as_str());
        self.publish(
            task_id,
            "status",
            json!({"status": status, "result": result, "error": error}),
        )
        .await;
        if let Some(hook) = &self.webhook
            && matches!(
                status,
                TaskStatus::Completed
                    | TaskStatus::NeedsHelp
                    | TaskStatus::NeedsReview
                    | TaskStatus::Failed
            )
        {
            hook.send(&task);
        }
        Ok(())
    }

    /// Cancels a task: stops its run at once and marks it CANCELLED.
    pub async fn cancel(&self, task_id: &str) -> Result<AgentTask, AgentStoreError> {
        let task = self
            .store
            .set_task_status(
                task_id,
                &[
                    TaskStatus::Pending,
                    TaskStatus::Running,
                    TaskStatus::NeedsHelp,
                    TaskStatus::NeedsReview,
                ],
                TaskStatus::Cancelled,
            )
            .await?;
        self.stop_run(task_id);
        self.publish(task_id, "status", json!({"status": task.status}))
            .await;
        Ok(task)
    }

    /// A person takes over: the agent stops acting until hand back.
    pub async fn take_over(&self, task_id: &str) -> Result<AgentTask, AgentStoreError> {
        let task = self.store.set_task_control(task_id, Control::User).await?;
        self.stop_run(task_id);
        self.publish(task_id, "control", json!({"control": "USER"}))
            .await;
        Ok(task)
    }

    /// Hands back (or resumes a task that needed help): the agent continues with a fresh
    /// screenshot; `note` (what the person did) goes into the history first.
    pub async fn resume(
        &self,
        task_id: &str,
        note: Option<String>,
        acknowledge_safety_checks: bool,
    ) -> Result<AgentTask, AgentStoreError> {
        // Always noted, so the model knows and the iteration allowance starts again.
        let text = match note {
            Some(note) => format!("{} {note}", crate::context::HANDED_BACK),
            None => crate::context::HANDED_BACK.to_string(),
        };
        let content =
            serde_json::to_value(vec![crate::model::Block::Text { text }]).unwrap_or(Value::Null);
        let Some(current) = self.store.get_agent_task(task_id).await? else {
            return Err(AgentStoreError::Store(
                bytebot_store::StoreError::NotFound {
                    what: format!("agent task {task_id:?}"),
                },
            ));
        };
        if current.status.is_terminal() {
            return Err(AgentStoreError::WrongStatus {
                id: task_id.to_string(),
                actual: current.status,
                expected: "PENDING, RUNNING, NEEDS_HELP or NEEDS_REVIEW".into(),
            });
        }
        self.store
            .append_message(task_id, bytebot_store::Role::User, &content, None)
            .await?;
        if acknowledge_safety_checks {
            self.publish(task_id, "safety_ack", json!({"by": "person"}))
                .await;
        }
        let mut task = self
            .store
            .set_task_control(task_id, Control::Assistant)
            .await?;
        if matches!(task.status, TaskStatus::NeedsHelp | TaskStatus::NeedsReview) {
            task = self
                .store
                .set_task_status(
                    task_id,
                    &[TaskStatus::NeedsHelp, TaskStatus::NeedsReview],
                    TaskStatus::Pending,
                )
                .await?;
        }
        self.publish(
            task_id,
            "control",
            json!({"control": "ASSISTANT", "status": task.status}),
        )
        .await;
        self.queued.notify_waiters();
        Ok(task)
    }

    /// What the task's events say about safety checks, read in one pass: the calls it stopped
    /// to ask about, whether a person approved after the last question (a `safety_ack` event
    /// after the last `safety_check` event), and the question still waiting for an answer.
    pub async fn safety_state(&self, task_id: &str) -> Result<SafetyState, AgentStoreError> {
        let mut state = SafetyState::default();
        let (mut asked_at, mut approved_at, mut resumed_at) = (0, 0, 0);
        for r in self.task_events(task_id).await? {
            match r.kind.as_str() {
                "safety_check" => {
                    asked_at = r.id;
                    if let Some(id) = r.data["call_id"].as_str() {
                        state.asked.insert(id.to_string());
                    }
                    state.pending = Some(r.data);
                }
                "safety_ack" => approved_at = r.id,
                // Resume and take-over both answer whatever was asked before them.
                "control" => resumed_at = r.id,
                _ => {}
            }
        }
        state.approved = approved_at > asked_at;
        if resumed_at > asked_at {
            state.pending = None;
        }
        Ok(state)
    }

    /// Every stored event of a task, oldest first.
    pub async fn task_events(
        &self,
        task_id: &str,
    ) -> Result<Vec<bytebot_store::TaskEventRow>, AgentStoreError> {
        const PAGE: u32 = 1000;
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |r: &bytebot_store::TaskEventRow| r.id);
            let rows = self
                .store
                .task_events_after(Some(task_id), after, PAGE)
                .await?;
            let n = rows.len();
            all.extend(rows);
            if n < PAGE as usize {
                return Ok(all);
            }
        }
    }
}

/// A task's safety-check history, read from its events (see [`Agent::safety_state`]).
#[derive(Debug, Default)]
pub struct SafetyState {
    /// A person approved the last checks the task stopped for.
    pub approved: bool,
    /// Calls the task stopped to ask about.
    pub asked: std::collections::HashSet<String>,
    /// The question no one has answered yet (no resume or take-over since): the
    /// `safety_check` event's data (`call_id`, `call`, `checks`).
    pub pending: Option<Value>,
}

/// `2026-11-24T09:00:00Z` (or with an offset) → unix ms.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("\"{text}\" is not an RFC 3339 time like 2026-11-24T09:00:00Z ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-24T09:00:00Z"),
            Ok(1_795_510_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-24T10:00:00.5+01:00"),
            Ok(1_795_510_800_500)
        );
        assert!(parse_rfc3339_ms("tomorrow").is_err());
        assert!(parse_rfc3339_ms("2026-13-01T00:00:00Z").is_err());
    }
}
