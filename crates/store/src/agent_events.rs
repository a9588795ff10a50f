//! A task's events (status changes, steps, screenshots taken, …), kept so a live stream can
//! resume after the last id a client saw.
//!
//! Ids are global and increase in commit order, so a reader that saw id N has seen every
//! event below N: SQLite has one writer at a time, and on PostgreSQL an append holds a lock
//! on the table (readers are not blocked) until it commits, so a later id never commits first.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::agent_sql::{check_limit, is_foreign_key_violation, now_ms};
use crate::agent_tasks::task_what;
use crate::{AgentStoreError, Backend, Store, StoreError};

/// Most events one [`Store::task_events_after`] call returns.
pub const MAX_EVENT_PAGE: u32 = 1000;

/// One stored task event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskEventRow {
    /// Global, increasing id (the SSE event id).
    pub id: i64,
    /// The task it is about.
    pub task_id: String,
    /// What happened, e.g. `task.status` or `message.created`.
    pub kind: String,
    /// The details (JSON).
    pub data: Value,
    /// When it was stored (unix ms).
    pub created_at: i64,
}

fn event_from_row(row: &AnyRow) -> Result<TaskEventRow, sqlx::Error> {
    let data: String = row.try_get(3)?;
    Ok(TaskEventRow {
        id: row.try_get(0)?,
        task_id: row.try_get(1)?,
        kind: row.try_get(2)?,
        data: serde_json::from_str(&data)
            .map_err(|e| sqlx::Error::Decode(format!("event data: {e}").into()))?,
        created_at: row.try_get(4)?,
    })
}

impl Store {
    /// Appends an event to a task and returns it with its id. A task that does not exist
    /// gives `StoreError::NotFound`.
    pub async fn append_task_event(
        &self,
        task_id: &str,
        kind: &str,
        data: &Value,
    ) -> Result<TaskEventRow, AgentStoreError> {
        if kind.is_empty() {
            return Err(AgentStoreError::invalid(
                format!("an event of agent task {task_id:?} has no kind"),
                "name what happened, e.g. task.status",
            ));
        }
        let op = |step: &str| format!("append_task_event(task {task_id:?}, {kind:?}): {step}");
        let insert = sqlx::query(
            "INSERT INTO agent_task_events (task_id, kind, data, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id, task_id, kind, data, created_at",
        )
        .bind(task_id.to_owned())
        .bind(kind.to_owned())
        .bind(data.to_string())
        .bind(now_ms());
        let missing = |e: sqlx::Error| {
            if is_foreign_key_violation(&e) {
                AgentStoreError::not_found(task_what(task_id))
            } else {
                StoreError::query(op("insert"), e).into()
            }
        };
        let row = match self.backend() {
            Backend::Sqlite => insert.fetch_one(self.pool()).await.map_err(missing)?,
            Backend::Postgres => {
                let mut tx = self
                    .pool()
                    .begin()
                    .await
                    .map_err(|e| StoreError::query(op("begin"), e))?;
                // EXCLUSIVE blocks other writers of the table, not its readers.
                sqlx::query("LOCK TABLE agent_task_events IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::query(op("lock"), e))?;
                let row = insert.fetch_one(&mut *tx).await.map_err(missing)?;
                tx.commit()
                    .await
                    .map_err(|e| StoreError::query(op("commit"), e))?;
                row
            }
        };
        event_from_row(&row).map_err(|e| StoreError::query(op("read"), e).into())
    }

    /// Events with `id > after_id`, oldest first, of one task or (with `None`) of all tasks,
    /// at most `limit` (1..=[`MAX_EVENT_PAGE`]). Asking for the events of a task that does not
    /// exist gives `StoreError::NotFound`.
    pub async fn task_events_after(
        &self,
        task_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<TaskEventRow>, AgentStoreError> {
        let limit = check_limit("task_events_after", limit, MAX_EVENT_PAGE)?;
        let op = || format!("task_events_after(task {task_id:?}, after {after_id})");
        let query = match task_id {
            Some(task_id) => sqlx::query(
                "SELECT id, task_id, kind, data, created_at FROM agent_task_events \
                 WHERE task_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(task_id.to_owned())
            .bind(after_id)
            .bind(limit),
            None => sqlx::query(
                "SELECT id, task_id, kind, data, created_at FROM agent_task_events \
                 WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after_id)
            .bind(limit),
        };
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(|e| StoreError::query(op(), e))?;
        if let (true, Some(task_id)) = (rows.is_empty(), task_id) {
            self.require_agent_task(task_id).await?;
        }
        rows.iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::query(op(), e).into())
    }

    /// The highest task event id stored, 0 when there is none: where a stream that wants
    /// only new events starts.
    pub async fn max_task_event_id(&self) -> Result<i64, AgentStoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM agent_task_events")
            .fetch_one(self.pool())
            .await
            .map_err(|e| StoreError::query("max_task_event_id", e))?;
        row.try_get(0)
            .map_err(|e| StoreError::query("max_task_event_id", e).into())
    }
}
