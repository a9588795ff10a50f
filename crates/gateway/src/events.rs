//! Task events: numbered, stored, and broadcast live. A subscriber that
//! reconnects with `Last-Event-ID` gets what it missed from the store, then
//! the live stream. Events of one task are published one after another by
//! its executor, so each task's events arrive in id order; events of
//! different tasks may interleave.

use bytebot_store::{EventRow, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// The kinds of event the spec names.
pub mod kind {
    /// A plan was made.
    pub const PLAN_CREATED: &str = "plan.created";
    /// A plan was approved (by token at execute, or by a person).
    pub const PLAN_APPROVED: &str = "plan.approved";
    /// A step began.
    pub const STEP_STARTED: &str = "step.started";
    /// Output of a running step (stdout/stderr chunks).
    pub const STEP_OUTPUT: &str = "step.output";
    /// A step ended.
    pub const STEP_FINISHED: &str = "step.finished";
    /// An artifact was stored.
    pub const ARTIFACT: &str = "artifact";
    /// The task ended.
    pub const TASK_FINISHED: &str = "task.finished";
    /// Something failed.
    pub const ERROR: &str = "error";
}

/// One event as subscribers see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    /// Increasing id (the SSE `id:`).
    pub id: i64,
    /// Task it belongs to.
    pub task_id: String,
    /// One of the kinds in [`kind`].
    pub kind: String,
    /// Kind-specific data.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Key that owns the task (not sent to clients).
    #[serde(skip)]
    pub key_id: String,
}

impl Event {
    fn from_row(row: EventRow) -> Self {
        Event {
            id: row.id,
            task_id: row.task_id,
            kind: row.kind,
            data: serde_json::from_str(&row.data_json).unwrap_or(Value::Null),
            ts_ms: row.ts_ms,
            key_id: row.key_id,
        }
    }
}

/// Numbers, stores and broadcasts events.
pub struct EventBus {
    store: Store,
    next: AtomicI64,
    live: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    /// Continues numbering after the highest stored id.
    pub async fn new(store: Store) -> Result<Self, StoreError> {
        let max = store.max_event_id().await?;
        let (live, _) = broadcast::channel(4096);
        Ok(Self {
            store,
            next: AtomicI64::new(max + 1),
            live,
        })
    }

    /// Stores (group-committed) and then broadcasts one event, so a live
    /// subscriber never sees an event a reconnect could not find again.
    pub async fn publish(
        &self,
        task_id: &str,
        key_id: &str,
        kind: &str,
        data: Value,
    ) -> Result<Arc<Event>, StoreError> {
        let event = Event {
            id: self.next.fetch_add(1, Ordering::SeqCst),
            task_id: task_id.to_string(),
            kind: kind.to_string(),
            data,
            ts_ms: now_ms(),
            key_id: key_id.to_string(),
        };
        self.store
            .append_event(&EventRow {
                id: event.id,
                task_id: event.task_id.clone(),
                key_id: event.key_id.clone(),
                kind: event.kind.clone(),
                data_json: event.data.to_string(),
                ts_ms: event.ts_ms,
            })
            .await?;
        let event = Arc::new(event);
        // No subscribers is fine: the store has it.
        let _ = self.live.send(Arc::clone(&event));
        Ok(event)
    }

    /// A live receiver; subscribe before reading the backlog so nothing falls between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Stored events after `after`, filtered.
    pub async fn backlog(
        &self,
        after: i64,
        task_id: Option<&str>,
        key_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = self.store.events_after(after, task_id, key_id, limit).await?;
        Ok(rows.into_iter().map(Event::from_row).collect())
    }

    /// How many live subscribers there are.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
