//! A task's conversation: messages as content blocks (JSON), and summaries that stand in for
//! older messages once the context grows too long.
//!
//! Message ids increase in the order messages are committed, so `messages(task, after, …)`
//! never skips one: SQLite has one writer at a time; on PostgreSQL an append first locks its
//! task's row, so appends to one task commit in id order.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::agent_sql::{check_limit, is_foreign_key_violation, now_ms};
use crate::agent_tasks::task_what;
use crate::{AgentStoreError, Backend, Store, StoreError};

/// Most messages one [`Store::messages`] call returns.
pub const MAX_MESSAGE_PAGE: u32 = 1000;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person (or the agent's tool results, which go back as the user's turn).
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    fn parse(text: &str) -> Result<Role, String> {
        match text {
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            other => Err(format!("message role {other:?} is not user or assistant")),
        }
    }
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MessageRow {
    /// Increasing id; pass the last one seen as `after_id` to page.
    pub id: i64,
    /// The task it belongs to.
    pub task_id: String,
    /// Who wrote it.
    pub role: Role,
    /// Its content blocks (images as blob keys, never bytes).
    pub content: Value,
    /// What the agent keeps beside it (e.g. the provider's reasoning state), if anything.
    pub state: Option<Value>,
    /// The summary that covers it, once one does.
    pub summary_id: Option<i64>,
    /// When it was stored (unix ms).
    pub created_at: i64,
}

/// One summary of a task's older messages.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SummaryRow {
    /// Increasing id.
    pub id: i64,
    /// The task it belongs to.
    pub task_id: String,
    /// The summary text.
    pub content: String,
    /// The id of the last message it covers.
    pub covers_up_to: i64,
    /// When it was stored (unix ms).
    pub created_at: i64,
}

fn message_from_row(row: &AnyRow) -> Result<MessageRow, sqlx::Error> {
    let role: String = row.try_get(2)?;
    let content: String = row.try_get(3)?;
    let state: Option<String> = row.try_get(4)?;
    let json = |text: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| sqlx::Error::Decode(format!("message JSON: {e}").into()))
    };
    Ok(MessageRow {
        id: row.try_get(0)?,
        task_id: row.try_get(1)?,
        role: Role::parse(&role).map_err(|e| sqlx::Error::Decode(e.into()))?,
        content: json(&content)?,
        state: state.as_deref().map(json).transpose()?,
        summary_id: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

fn summary_from_row(row: &AnyRow) -> Result<SummaryRow, sqlx::Error> {
    Ok(SummaryRow {
        id: row.try_get(0)?,
        task_id: row.try_get(1)?,
        content: row.try_get(2)?,
        covers_up_to: row.try_get(3)?,
        created_at: row.try_get(4)?,
    })
}

/// Where in `value` image bytes were put inline (a `data:…;base64,` URL, or a `{"type":
/// "base64", "data": …}` source as Anthropic sends them), if anywhere.
fn inline_bytes(value: &Value, path: &mut String) -> bool {
    match value {
        Value::String(s) => s.starts_with("data:") && s.contains(";base64,"),
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("base64") && map.contains_key("data")
            {
                return true;
            }
            map.iter().any(|(k, v)| {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                let found = inline_bytes(v, path);
                if !found {
                    path.truncate(len);
                }
                found
            })
        }
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = inline_bytes(v, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    }
}

fn check_no_inline_bytes(what: &str, value: &Value) -> Result<(), AgentStoreError> {
    let mut path = String::new();
    if inline_bytes(value, &mut path) {
        let at = if path.is_empty() {
            "$".to_owned()
        } else {
            format!("${path}")
        };
        return Err(AgentStoreError::invalid(
            format!("{what} holds image bytes inline at {at}"),
            "put the bytes in the blob store (Blobs::put) and keep only the blob key in the message",
        ));
    }
    Ok(())
}

impl Store {
    /// Appends a message to a task and returns it with its id. `content` and `state` are JSON;
    /// images in them must be blob keys: inline image bytes (data URLs, base64 sources) are
    /// refused. A task that does not exist gives `StoreError::NotFound`.
    pub async fn append_message(
        &self,
        task_id: &str,
        role: Role,
        content: &Value,
        state: Option<&Value>,
    ) -> Result<MessageRow, AgentStoreError> {
        check_no_inline_bytes("the message's content", content)?;
        if let Some(state) = state {
            check_no_inline_bytes("the message's state", state)?;
        }
        let op = |step: &str| format!("append_message(task {task_id:?}): {step}");
        let insert = sqlx::query(
            "INSERT INTO agent_messages (task_id, role, content, state, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, task_id, role, content, state, summary_id, created_at",
        )
        .bind(task_id.to_owned())
        .bind(role.as_str())
        .bind(content.to_string())
        .bind(state.map(Value::to_string))
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
                // Serialises appends to this task until commit, so ids commit in order.
                let task = sqlx::query("SELECT 1 FROM agent_tasks WHERE id = $1 FOR NO KEY UPDATE")
                    .bind(task_id.to_owned())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| StoreError::query(op("lock"), e))?;
                if task.is_none() {
                    return Err(AgentStoreError::not_found(task_what(task_id)));
                }
                let row = insert.fetch_one(&mut *tx).await.map_err(missing)?;
                tx.commit()
                    .await
                    .map_err(|e| StoreError::query(op("commit"), e))?;
                row
            }
        };
        message_from_row(&row).map_err(|e| StoreError::query(op("read"), e).into())
    }

    /// The task's messages with `id > after_id`, oldest first, at most `limit`
    /// (1..=[`MAX_MESSAGE_PAGE`]). Page on by passing the last id as `after_id`.
    pub async fn messages(
        &self,
        task_id: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<MessageRow>, AgentStoreError> {
        let limit = check_limit("messages", limit, MAX_MESSAGE_PAGE)?;
        let op = || format!("messages(task {task_id:?}, after {after_id})");
        let rows = sqlx::query(
            "SELECT id, task_id, role, content, state, summary_id, created_at FROM agent_messages \
             WHERE task_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(task_id.to_owned())
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        if rows.is_empty() {
            // Tell "no more messages" from "no such task".
            self.require_agent_task(task_id).await?;
        }
        rows.iter()
            .map(message_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::query(op(), e).into())
    }

    /// Stores a summary of the task's messages up to and including message `covers_up_to`
    /// (which must be one of its messages) and marks those not yet summarised as covered by
    /// it, in one transaction.
    pub async fn insert_summary(
        &self,
        task_id: &str,
        content: &str,
        covers_up_to: i64,
    ) -> Result<SummaryRow, AgentStoreError> {
        let op = |step: &str| format!("insert_summary(task {task_id:?}): {step}");
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| StoreError::query(op("begin"), e))?;
        // The insert comes first: a SQLite transaction must write before it reads.
        let row = sqlx::query(
            "INSERT INTO agent_summaries (task_id, content, covers_up_to, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id, task_id, content, covers_up_to, created_at",
        )
        .bind(task_id.to_owned())
        .bind(content.to_owned())
        .bind(covers_up_to)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                AgentStoreError::not_found(task_what(task_id))
            } else {
                StoreError::query(op("insert"), e).into()
            }
        })?;
        let summary = summary_from_row(&row).map_err(|e| StoreError::query(op("read"), e))?;
        let covered: i64 =
            sqlx::query("SELECT COUNT(*) FROM agent_messages WHERE id = $1 AND task_id = $2")
                .bind(covers_up_to)
                .bind(task_id.to_owned())
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| StoreError::query(op("check"), e))?;
        if covered == 0 {
            return Err(AgentStoreError::invalid(
                format!("message {covers_up_to} is not a message of agent task {task_id:?}"),
                "give the id of the last message the summary covers",
            ));
        }
        sqlx::query(
            "UPDATE agent_messages SET summary_id = $1 \
             WHERE task_id = $2 AND id <= $3 AND summary_id IS NULL",
        )
        .bind(summary.id)
        .bind(task_id.to_owned())
        .bind(covers_up_to)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::query(op("mark"), e))?;
        tx.commit()
            .await
            .map_err(|e| StoreError::query(op("commit"), e))?;
        Ok(summary)
    }

    /// The task's newest summary, if it has one.
    pub async fn latest_summary(
        &self,
        task_id: &str,
    ) -> Result<Option<SummaryRow>, AgentStoreError> {
        let op = || format!("latest_summary(task {task_id:?})");
        let row = sqlx::query(
            "SELECT id, task_id, content, covers_up_to, created_at FROM agent_summaries \
             WHERE task_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(task_id.to_owned())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        row.as_ref()
            .map(summary_from_row)
            .transpose()
            .map_err(|e| StoreError::query(op(), e).into())
    }

    /// Marks the task's messages with ids in `first_id..=last_id` as covered by summary
    /// `summary_id` (replacing an older mark) and returns how many changed. The summary must
    /// belong to the task.
    pub async fn mark_summarised(
        &self,
        task_id: &str,
        summary_id: i64,
        first_id: i64,
        last_id: i64,
    ) -> Result<u64, AgentStoreError> {
        let op = || format!("mark_summarised(task {task_id:?}, summary {summary_id})");
        let done = sqlx::query(
            "UPDATE agent_messages SET summary_id = $2 \
             WHERE task_id = $1 AND id >= $3 AND id <= $4 \
             AND EXISTS (SELECT 1 FROM agent_summaries WHERE id = $2 AND task_id = $1)",
        )
        .bind(task_id.to_owned())
        .bind(summary_id)
        .bind(first_id)
        .bind(last_id)
        .execute(self.pool())
        .await
        .map_err(|e| StoreError::query(op(), e))?;
        if done.rows_affected() == 0 {
            let found = sqlx::query("SELECT 1 FROM agent_summaries WHERE id = $1 AND task_id = $2")
                .bind(summary_id)
                .bind(task_id.to_owned())
                .fetch_optional(self.pool())
                .await
                .map_err(|e| StoreError::query(op(), e))?;
            if found.is_none() {
                return Err(AgentStoreError::not_found(format!(
                    "summary {summary_id} of agent task {task_id:?}"
                )));
            }
        }
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_image_bytes_are_found() {
        let ok = serde_json::json!([{"type": "image", "image": {"blob": "k", "media_type": "image/png"}}]);
        assert!(check_no_inline_bytes("content", &ok).is_ok());
        let data_url = serde_json::json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]);
        let e = check_no_inline_bytes("content", &data_url).unwrap_err();
        assert!(e.to_string().contains("at $[0].image_url.url"), "{e}");
        let anthropic = serde_json::json!({"source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}});
        let e = check_no_inline_bytes("content", &anthropic).unwrap_err();
        assert!(e.to_string().contains("at $.source"), "{e}");
    }
}
